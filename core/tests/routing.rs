//! The router on labelled agent calls: the development set it was tuned on, and a held-out
//! set it never saw during tuning.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use slmkit::ledger::Tier;
use slmkit::route_eval::{evaluate, read_labelled};
use slmkit::routing::{Router, RoutingConfig, SlmProfile};

fn set(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/routing").join(name)
}

/// The reference SLM of the labels: text only, 8,192-token window, reached by estimate.
fn router() -> Router {
    let slm = SlmProfile { context_window: 8192, tokenizer: None, supports_tools: true, supports_images: false };
    Router::new(&RoutingConfig::default(), Some(slm), true).unwrap()
}

#[test]
fn the_default_router_scores_at_least_85_percent_on_the_dev_set() {
    let calls = read_labelled(&set("devset.jsonl")).unwrap();
    assert_eq!(calls.len(), 58);
    let evaluation = evaluate(&router(), &calls).unwrap();
    println!("{evaluation}");
    assert!(evaluation.correct as f64 / evaluation.total as f64 >= 0.85, "{evaluation}");
}

#[test]
fn the_router_generalises_to_held_out_calls() {
    let calls = read_labelled(&set("heldout.jsonl")).unwrap();
    let evaluation = evaluate(&router(), &calls).unwrap();
    println!("{evaluation}");
    assert!(evaluation.correct as f64 / evaluation.total as f64 >= 0.8, "{evaluation}");
}

#[test]
fn calls_that_cannot_succeed_on_the_slm_never_go_there() {
    // Image parts and prompts beyond the window are hard limits, whatever the wording says.
    let router = router();
    for call in read_labelled(&set("devset.jsonl")).unwrap() {
        let decision = router.decide(&call.request).unwrap();
        let json = serde_json::to_string(&call.request).unwrap();
        if json.contains("\"image_url\"") || decision.prompt_tokens > 8192 {
            assert_eq!(decision.tier, Tier::Llm, "{}: {:?}", call.id, decision.reasons);
            assert!(decision.signals.is_empty(), "decided by a hard limit, not a score");
        }
    }
}

#[test]
fn explain_reports_each_signal_and_the_score_adds_up() {
    let router = router();
    for call in read_labelled(&set("devset.jsonl")).unwrap() {
        let decision = router.decide(&call.request).unwrap();
        if let Some(score) = decision.score {
            let sum: f64 = decision.signals.iter().map(|signal| signal.contribution).sum();
            assert!((sum - score).abs() < 1e-9, "{}", call.id);
            assert_eq!(decision.tier == Tier::Llm, score > decision.threshold);
            assert!(!decision.reasons.is_empty());
        }
    }
}
