//! Why batching does or doesn't pay: the time of one llama.cpp decode step as the number of
//! sequences in it grows, for the KV-cache layouts the engine could use.
//!
//! `cargo bench -p slmkit --bench decode_shapes -- MODEL.gguf [THREADS]`
//!
//! This talks to llama.cpp directly (no slmkit worker, no sampling), so the figures separate
//! llama.cpp's own cost of a batch from whatever the engine adds around it.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
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
    stale_tokens: i32,
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
    let mut batch = LlamaBatch::new(512, 1);
    let mut times = Vec::new();
    for run in 0..3i32 {
        let _ = context.clear_kv_cache_seq(Some(0), Some(2000), None);
        batch.clear();
        for offset in 0..45i32 {
            batch.add(LlamaToken((run * 7 + offset * 5) % vocab), 2000 + offset, &[0], offset == 44).expect("batch");
        }
        let started = Instant::now();
        context.decode(&mut batch).expect("suffix");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = context.clear_kv_cache_seq(Some(0), None, None);
    times.sort_by(f64::total_cmp);
    (cold_ms, times[1])
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
    if layout.stale_tokens > 0 {
        fill(&mut context, 8, layout.stale_tokens, 13, vocab);
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
            stale_tokens: 0,
            flash_attention: -1,
        },
        Layout {
            name: "unified, flash attention off",
            unified: true,
            cells_per_sequence: 4096,
            stale_tokens: 0,
            flash_attention: 0,
        },
        Layout {
            name: "unified, 8 x 4096, 2,000 stale tokens",
            unified: true,
            cells_per_sequence: 4096,
            stale_tokens: 2000,
            flash_attention: -1,
        },
        Layout {
            name: "unified, 2,000 stale, flash attention off",
            unified: true,
            cells_per_sequence: 4096,
            stale_tokens: 2000,
            flash_attention: 0,
        },
        Layout {
            name: "per-sequence streams, 8 x 4096",
            unified: false,
            cells_per_sequence: 4096,
            stale_tokens: 0,
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
    for layout in layouts {
        let mut context = context_for(&model, &backend, &layout, threads, vocab);
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
}
