//! The router on labelled agent calls: the development set it was tuned on, and a held-out
//! set it never saw during tuning; and the calls real MetaGPT sent (recorded by
//! `tests/routing/metagpt/record.py`), a dev split the prior was tuned on and a held-out split
//! with other project ideas and some actions of its own.

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

/// A MetaGPT split's calls with the action each came from (`action` is never shown to the
/// router: `read_labelled` reads only `id`, `label` and `request`).
fn metagpt_actions(name: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(set(name)).unwrap();
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |key: &str| value[key].as_str().unwrap().to_owned();
            (field("id"), field("action"), field("idea"))
        })
        .collect()
}

/// 51/61 (83.6%) when written: its errors were read during tuning and gave one fix, so the
/// fresh split below is the clean check of the 85% target.
#[test]
fn the_router_scores_at_least_80_percent_on_the_metagpt_held_out_split() {
    let calls = read_labelled(&set("metagpt-heldout.jsonl")).unwrap();
    assert!(calls.len() >= 50, "{} calls", calls.len());
    let evaluation = evaluate(&router(), &calls).unwrap();
    println!("{evaluation}");
    assert!(evaluation.correct as f64 / evaluation.total as f64 >= 0.8, "{evaluation}");
    // Errors on the LLM side cost quality: keep them rare, not just the total right.
    assert!(evaluation.false_slm.len() * 10 <= calls.len(), "{evaluation}");
}

#[test]
fn the_router_scores_at_least_85_percent_on_metagpt_calls_recorded_after_tuning() {
    let calls = read_labelled(&set("metagpt-fresh.jsonl")).unwrap();
    assert!(calls.len() >= 50, "{} calls", calls.len());
    let evaluation = evaluate(&router(), &calls).unwrap();
    println!("{evaluation}");
    assert!(evaluation.correct as f64 / evaluation.total as f64 >= 0.85, "{evaluation}");
    assert!(evaluation.false_slm.len() * 10 <= calls.len(), "{evaluation}");
}

#[test]
fn the_router_scores_at_least_85_percent_on_the_metagpt_dev_split() {
    let calls = read_labelled(&set("metagpt-dev.jsonl")).unwrap();
    assert!(calls.len() >= 50, "{} calls", calls.len());
    let evaluation = evaluate(&router(), &calls).unwrap();
    println!("{evaluation}");
    assert!(evaluation.correct as f64 / evaluation.total as f64 >= 0.85, "{evaluation}");
}

#[test]
fn the_metagpt_splits_share_no_project_idea_and_the_held_out_one_has_actions_of_its_own() {
    let dev = metagpt_actions("metagpt-dev.jsonl");
    let mut held_out = metagpt_actions("metagpt-heldout.jsonl");
    held_out.extend(metagpt_actions("metagpt-fresh.jsonl"));
    let ideas = |calls: &[(String, String, String)]| {
        calls
            .iter()
            .map(|(_, _, idea)| idea.clone())
            .filter(|idea| idea != "research" && idea != "analysis")
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(ideas(&dev).is_disjoint(&ideas(&held_out)), "{:?} {:?}", ideas(&dev), ideas(&held_out));
    let dev_actions: std::collections::BTreeSet<_> = dev.iter().map(|(_, action, _)| action.as_str()).collect();
    let only_held_out: std::collections::BTreeSet<_> =
        held_out.iter().map(|(_, action, _)| action.as_str()).filter(|action| !dev_actions.contains(action)).collect();
    assert!(only_held_out.len() >= 4, "{only_held_out:?}");
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
    let sets = ["devset.jsonl", "metagpt-dev.jsonl", "metagpt-heldout.jsonl"];
    for call in sets.iter().flat_map(|name| read_labelled(&set(name)).unwrap()) {
        let decision = router.decide(&call.request).unwrap();
        if let Some(score) = decision.score {
            let sum: f64 = decision.signals.iter().map(|signal| signal.contribution).sum();
            assert!((sum - score).abs() < 1e-9, "{}", call.id);
            assert_eq!(decision.tier == Tier::Llm, score > decision.threshold);
            assert!(!decision.reasons.is_empty());
        }
    }
}
