//! Every input in the fuzz corpora and seeds (`fuzz/corpus`, `fuzz/seeds`) through the same
//! entry points the fuzz targets call, so a parser change that breaks on an input the fuzzers
//! once found interesting fails here, in the normal suite, without nightly. Plus the crashes the
//! fuzzers found, each as its own test.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use slmkit::{Error, LocalModel, ModelOptions};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "seeds"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else { continue };
        files.extend(entries.map(|entry| entry.unwrap().path()).filter(|path| path.is_file()));
    }
    files.sort();
    files
}

fn replay(target: &str, entry: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds or corpus for {target} in {}", fuzz_dir().display());
    for file in files {
        entry(&std::fs::read(&file).unwrap());
    }
}

#[test]
fn the_request_corpus_replays() {
    replay("request_json", slmkit::fuzzing::request_json);
}

#[test]
fn the_sse_corpus_replays() {
    replay("sse", slmkit::fuzzing::sse);
}

#[test]
fn the_config_corpus_replays() {
    replay("config_toml", slmkit::fuzzing::config_toml);
}

#[test]
fn the_gguf_corpus_replays() {
    replay("gguf", slmkit::fuzzing::gguf);
}

#[test]
fn the_tool_call_corpus_replays() {
    replay("tool_calls", slmkit::fuzzing::tool_calls);
}

/// A GGUF whose one metadata value is an array of arrays `depth` deep.
fn nested_arrays_gguf(depth: usize) -> Vec<u8> {
    const ARRAY: u32 = 9;
    const UINT32: u32 = 4;
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes()); // version
    bytes.extend(0u64.to_le_bytes()); // tensors
    bytes.extend(1u64.to_le_bytes()); // metadata entries
    bytes.extend(4u64.to_le_bytes());
    bytes.extend(b"deep");
    bytes.extend(ARRAY.to_le_bytes());
    for _ in 0..depth {
        bytes.extend(ARRAY.to_le_bytes()); // the items are arrays...
        bytes.extend(1u64.to_le_bytes()); // ...one each
    }
    bytes.extend(UINT32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(7u32.to_le_bytes());
    bytes
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("slmkit-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn deeply_nested_gguf_arrays_are_a_load_error_not_a_stack_overflow() {
    // 200,000 levels cost the file 2.4 MB; walked recursively they overflowed the stack and
    // killed the process before the pre-flight check bounded the nesting.
    let path = write_temp("nested.gguf", &nested_arrays_gguf(200_000));
    let loaded = LocalModel::load(&path, &ModelOptions::default());
    std::fs::remove_file(&path).unwrap();
    match loaded {
        Err(Error::ModelLoad { reason, .. }) => assert!(reason.contains("nested"), "{reason}"),
        Err(other) => panic!("expected a ModelLoad error, got {other}"),
        Ok(_) => panic!("a file with no tensors must not load"),
    }
}
