//! Task keys on MetaGPT-shaped calls (`tests/routing/metagpt-calls.jsonl`, built from MetaGPT
//! 0.8.2's own templates by `tests/routing/metagpt/generate.py`): one key per template, and no
//! two templates on one key. `cargo test -p slmkit --test task_keys -- --nocapture` prints the
//! table.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use slmkit::routing::{task_key, KeySource};
use slmkit::types::ChatCompletionRequest;

#[test]
fn each_metagpt_template_is_one_key_and_no_two_share_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/routing/metagpt-calls.jsonl");
    let mut keys_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut templates_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut calls = 0;
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let template = row["template"].as_str().unwrap().to_owned();
        let request = ChatCompletionRequest::from_json(&row["request"].to_string()).unwrap();
        let key = task_key(&request);
        assert_eq!(key.source, KeySource::Template);
        keys_of.entry(template.clone()).or_default().insert(key.key.clone());
        templates_of.entry(key.key).or_default().insert(template);
        calls += 1;
    }
    println!("{calls} calls, {} templates, {} keys", keys_of.len(), templates_of.len());
    println!("| template | keys |");
    for (template, keys) in &keys_of {
        println!("| {template} | {} |", keys.len());
    }
    let split: Vec<_> = keys_of.iter().filter(|(_, keys)| keys.len() > 1).collect();
    let collided: Vec<_> = templates_of.values().filter(|templates| templates.len() > 1).collect();
    println!("templates split over several keys: {split:?}\nkeys shared by templates: {collided:?}");
    assert!(keys_of.len() >= 10 && calls >= 60, "the set is MetaGPT's templates, several fills each");
    assert!(split.is_empty() && collided.is_empty());
}
