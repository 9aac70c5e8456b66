//! Why batching does or doesn't pay: the time of one llama.cpp decode step as the number of
//! sequences in it grows, for the KV-cache layouts the engine could use.
//!
//! `cargo bench -p slmkit --bench decode_shapes -- MODEL.gguf [THREADS]`
//!
//! This talks to llama.cpp directly (no slmkit worker, no sampling), so the figures separate
//! llama.cpp's own cost of a batch from whatever the engine adds around it. It also prints what
//! a warm call's few new tokens cost by their number (llama.cpp's CPU flash attention only
//! takes its tiled path from 64 query tokens up), and what a host-memory snapshot of a
//! sequence costs to save and restore (the engine's prefix cache).

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

const STEPS: usize = 24;
const PROMPT: usize = 32;

struct Layout {
    name: &'static str,
    unified: bool,
    cells_per_sequence: u32,
    /// Tokens left in a ninth sequence, as a kept prefix would be.
    kept_tokens: i32,
    /// llama.cpp's flash-attention policy: -1 auto (on for the CPU), 0 off.
    flash_attention: std::os::raw::c_int,
}

fn decode_run(context: &mut LlamaContext<'_>, sequences: usize, vocab: i32) -> f64 {
    let mut batch = LlamaBatch::new(512, 8);
    for seq in 0..sequences {
        batch.clear();
        for position in 0..PROMPT {
            let token = LlamaToken(((seq * 31 + position * 7) as i32) % vocab);
            batch.add(token, position as i32, &[seq as i32], position + 1 == PROMPT).expect("batch");
        }
        context.decode(&mut batch).expect("prompt");
    }
    let mut step_ms = Vec::new();
    for step in 0..STEPS {
        batch.clear();
        for seq in 0..sequences {
            let token = LlamaToken(((seq * 17 + step * 3 + 5) as i32) % vocab);
            batch.add(token, (PROMPT + step) as i32, &[seq as i32], true).expect("batch");
        }
        let started = Instant::now();
        context.decode(&mut batch).expect("decode");
        step_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    step_ms.sort_by(f64::total_cmp);
    step_ms[step_ms.len() / 2]
}

/// Prompt processing: one 512-token batch, median of 3.
fn prompt_rate(context: &mut LlamaContext<'_>, vocab: i32) -> f64 {
    let mut batch = LlamaBatch::new(512, 1);
    let mut rates = Vec::new();
    for run in 0..3i32 {
        batch.clear();
        for position in 0..512i32 {
            let token = LlamaToken((run * 101 + position * 7) % vocab);
            batch.add(token, position, &[0], position == 511).expect("batch");
        }
        let started = Instant::now();
        context.decode(&mut batch).expect("prompt");
        rates.push(512.0 / started.elapsed().as_secs_f64());
        let _ = context.clear_kv_cache_seq(Some(0), None, None);
    }
    rates.sort_by(f64::total_cmp);
    rates[1]
}

/// Reads `count` tokens (ids `position * stride`) into sequence `seq` from position 0, in
/// decode calls of 500, as a prompt would be read.
fn fill(context: &mut LlamaContext<'_>, seq: i32, count: i32, stride: i32, vocab: i32) {
    let mut batch = LlamaBatch::new(512, 1);
    let mut position = 0i32;
    while position < count {
        batch.clear();
        for _ in 0..500.min(count - position) {
            batch.add(LlamaToken((position * stride) % vocab), position, &[seq], false).expect("batch");
            position += 1;
        }
        context.decode(&mut batch).expect("fill");
    }
}

/// A cold 2,000-token prompt, then a warm call's prompt: 45 new tokens after it, median of 3.
fn prefix_then_suffix_ms(context: &mut LlamaContext<'_>, vocab: i32) -> (f64, f64) {
    let cold = Instant::now();
    fill(context, 0, 2000, 11, vocab);
    let cold_ms = cold.elapsed().as_secs_f64() * 1000.0;
    let warm_ms = suffix_ms(context, 45, vocab);
    let _ = context.clear_kv_cache_seq(Some(0), None, None);
    (cold_ms, warm_ms)
}

/// `length` new tokens read after the 2,000 that sequence 0 holds, median of 3.
fn suffix_ms(context: &mut LlamaContext<'_>, length: i32, vocab: i32) -> f64 {
    let mut batch = LlamaBatch::new(512, 1);
    let mut times = Vec::new();
    for run in 0..3i32 {
        let _ = context.clear_kv_cache_seq(Some(0), Some(2000), None);
        batch.clear();
        for offset in 0..length {
            let token = LlamaToken((run * 7 + offset * 5) % vocab);
            batch.add(token, 2000 + offset, &[0], offset == length - 1).expect("batch");
        }
        let started = Instant::now();
        context.decode(&mut batch).expect("suffix");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = context.clear_kv_cache_seq(Some(0), Some(2000), None);
    times.sort_by(f64::total_cmp);
    times[1]
}

/// Saving a 2,000-token sequence's KV state to host memory and restoring it into another
/// sequence (what the engine does between requests), medians of 5 in ms, and its size in MB.
fn snapshot_ms(context: &mut LlamaContext<'_>, vocab: i32) -> (f64, f64, f64) {
    fill(context, 0, 2000, 11, vocab);
    let (mut saves, mut restores, mut megabytes) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..5 {
        let started = Instant::now();
        let state = context.state_seq_get(0, LlamaStateSeqFlags::empty()).expect("snapshot");
        saves.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        context.state_seq_set(&state, 1).expect("restore");
        restores.push(started.elapsed().as_secs_f64() * 1000.0);
        megabytes = state.byte_len() as f64 / 1e6;
        let _ = context.clear_kv_cache_seq(Some(1), None, None);
    }
    let _ = context.clear_kv_cache_seq(Some(0), None, None);
    saves.sort_by(f64::total_cmp);
    restores.sort_by(f64::total_cmp);
    (saves[2], restores[2], megabytes)
}

/// A context laid out as `layout` says, with a ninth sequence for its stale tokens.
fn context_for<'model>(
    model: &'model LlamaModel,
    backend: &LlamaBackend,
    layout: &Layout,
    threads: i32,
    vocab: i32,
) -> LlamaContext<'model> {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(layout.cells_per_sequence * 9))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(9)
        .with_kv_unified(layout.unified)
        .with_flash_attention_policy(layout.flash_attention)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut context = model.new_context(backend, params).expect("context");
    if layout.kept_tokens > 0 {
        fill(&mut context, 8, layout.kept_tokens, 13, vocab);
    }
    context
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--")).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: cargo bench -p slmkit --bench decode_shapes -- MODEL.gguf [THREADS]");
        return;
    };
    let threads: i32 = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let mut backend = LlamaBackend::init().expect("backend");
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).expect("model");
    let vocab = model.n_vocab();
    let layouts = [
        Layout {
            name: "unified, 8 x 4096 cells",
            unified: true,
            cells_per_sequence: 4096,
            kept_tokens: 0,
            flash_attention: -1,
        },
        Layout {
            name: "unified, flash attention off",
            unified: true,
            cells_per_sequence: 4096,
            kept_tokens: 0,
            flash_attention: 0,
        },
        Layout {
            name: "unified, 2,000 kept tokens",
            unified: true,
            cells_per_sequence: 4096,
            kept_tokens: 2000,
            flash_attention: -1,
        },
        Layout {
            name: "unified, 2,000 kept, flash attention off",
            unified: true,
            cells_per_sequence: 4096,
            kept_tokens: 2000,
            flash_attention: 0,
        },
        Layout {
            name: "unified, 24,000 kept tokens",
            unified: true,
            cells_per_sequence: 4096,
            kept_tokens: 24000,
            flash_attention: -1,
        },
        Layout {
            name: "per-sequence streams, 8 x 4096",
            unified: false,
            cells_per_sequence: 4096,
            kept_tokens: 0,
            flash_attention: -1,
        },
    ];
    if let Some(sequences) = std::env::var("DECODE_SHAPES_ONLY").ok().and_then(|n| n.parse::<usize>().ok()) {
        // For profilers: the first layout, one batch shape, many steps.
        let mut context = context_for(&model, &backend, &layouts[0], threads, vocab);
        for _ in 0..10 {
            let ms = decode_run(&mut context, sequences, vocab);
            println!("{sequences} sequences: {ms:.1} ms per step");
            context.clear_kv_cache();
        }
        return;
    }
    println!("llama.cpp decode step, {threads} threads, median ms of {STEPS} steps (aggregate tokens/s)");
    for layout in &layouts {
        let mut context = context_for(&model, &backend, layout, threads, vocab);
        let mut line = format!("  {:<42}", layout.name);
        line += &format!("  prompt: {:>5.1} t/s", prompt_rate(&mut context, vocab));
        let (cold, warm) = prefix_then_suffix_ms(&mut context, vocab);
        line += &format!("  2,000 cold: {cold:>6.0} ms  45 after them: {warm:>5.1} ms");
        for sequences in [1usize, 2, 4, 8] {
            let ms = decode_run(&mut context, sequences, vocab);
            line += &format!("  {sequences}: {ms:>6.1} ms ({:>5.1} t/s)", sequences as f64 * 1000.0 / ms);
            for seq in 0..sequences {
                let _ = context.clear_kv_cache_seq(Some(seq as u32), None, None);
            }
        }
        println!("{line}");
    }
    println!("A warm call's new tokens after 2,000 cached ones, by how many there are (ms, median of 3):");
    for layout in [&layouts[0], &layouts[1]] {
        let mut context = context_for(&model, &backend, layout, threads, vocab);
        fill(&mut context, 0, 2000, 11, vocab);
        let mut line = format!("  {:<42}", layout.name);
        for length in [32, 45, 63, 64, 96] {
            line += &format!("  {length}: {:>6.1}", suffix_ms(&mut context, length, vocab));
        }
        println!("{line}");
    }
    let mut context = context_for(&model, &backend, &layouts[0], threads, vocab);
    let (save, restore, megabytes) = snapshot_ms(&mut context, vocab);
    println!(
        "A 2,000-token sequence's KV state ({megabytes:.1} MB) to host memory and back, median of 5: \
         save {save:.1} ms, restore {restore:.1} ms"
    );
}
