//! The adaptive router through the client, against real HTTP servers on loopback: outcome
//! statistics learnt from the ledger, `explain`'s posterior and expected costs, explicit
//! feedback, and the statistics file across a restart.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use slmkit::routing::adaptive::AdaptiveConfig;
use slmkit::types::{ChatCompletionRequest, ChatMessage, ResponseFormat};
use slmkit::{
    Backend, CallMetadata, Client, Error, Ledger, Pricing, RemoteBackend, RemoteConfig, RetryPolicy, RoutingConfig,
    Tier,
};
use slmkit_testserver::{Behavior, TestServer};

fn per_token(input: f64, output: f64) -> Pricing {
    Pricing::PerToken { input_usd_per_million: input, output_usd_per_million: output, joules_per_token: None }
}

fn remote(server: &TestServer, model: &str) -> Backend {
    let mut config = RemoteConfig::new(server.base_url(), model);
    config.request_timeout = Duration::from_secs(5);
    Backend::Remote(RemoteBackend::new(config).unwrap())
}

fn client(slm: &TestServer, llm: &TestServer, ledger: &Path) -> Client {
    let routing = RoutingConfig {
        adaptive: true,
        learning: AdaptiveConfig { probe_rate: 0.0, seed: Some(11), ..AdaptiveConfig::default() },
        ..RoutingConfig::default()
    };
    Client::builder()
        .slm(remote(slm, "small"), per_token(0.1, 0.2))
        .llm(remote(llm, "big"), per_token(2.5, 10.0))
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .ledger(Ledger::with_file(ledger).unwrap())
        .routing(routing)
        .build()
        .unwrap()
}

fn tagged(task: &str, text: &str) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![
        ChatMessage::system("Classify the ticket into one of: billing, bug, other. Reply in JSON."),
        ChatMessage::user(text),
    ]);
    request.response_format = Some(ResponseFormat::JsonObject);
    request.max_tokens = Some(50);
    request.metadata = Some(serde_json::Map::from_iter([("slmkit_task".into(), Value::from(task))]));
    request
}

#[tokio::test]
async fn the_router_learns_explains_takes_feedback_and_remembers() {
    let dir = std::env::temp_dir().join(format!("slmkit-adaptive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.jsonl");
    let _ = std::fs::remove_file(&ledger);
    let _ = std::fs::remove_file(dir.join("ledger.routing.json"));
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    slm.set_default(Behavior::reply_text("not json at all"));
    llm.set_default(Behavior::reply_text("{\"label\": \"billing\"}"));

    let client = client(&slm, &llm, &ledger);
    let fresh = client.explain(&tagged("Classify", "ticket 0")).unwrap();
    assert_eq!(fresh.task_key.as_ref().unwrap().key, "tag:Classify");
    let view = fresh.adaptive.expect("the adaptive router decides scored calls");
    assert_eq!((fresh.tier, view.slm_calls), (Tier::Slm, 0), "{:?}", fresh.reasons);
    assert!(view.prior_mean > 0.7, "a JSON classification is routine by the heuristic: {view:?}");

    // The SLM never produces JSON: every call escalates, until the cluster falls under the floor.
    let mut escalated = 0;
    for n in 0..8 {
        let completion = client.create(&tagged("Classify", &format!("ticket {n}"))).await.unwrap();
        let meta = CallMetadata::of(&completion.extra).unwrap();
        if meta.attempts.first().is_some_and(|attempt| attempt.tier == Tier::Slm) {
            escalated += 1;
        }
    }
    assert!((1..8).contains(&escalated), "escalated {escalated} of 8 calls before learning");
    let learnt = client.explain(&tagged("Classify", "ticket 99")).unwrap();
    let view = learnt.adaptive.clone().unwrap();
    assert_eq!(learnt.tier, Tier::Llm, "{:?}", learnt.reasons);
    assert_eq!((view.slm_calls, view.escalation_rate), (escalated, 1.0));
    assert!(view.posterior_mean < 0.7 && view.posterior_mean < view.prior_mean, "{view:?}");
    assert!(view.slm_first_cost_usd > 0.0 && view.llm_cost_usd > 0.0, "{view:?}");
    assert!(learnt.reasons[0].contains("below the floor"), "{:?}", learnt.reasons);
    assert_eq!(view.signals.validation, escalated);

    // A cluster the SLM answers: the validators say yes, the caller's feedback says no.
    slm.push([Behavior::reply_text("{\"label\": \"bug\"}")]);
    let answered = client.create(&tagged("Extract", "ticket 7")).await.unwrap();
    let meta = CallMetadata::of(&answered.extra).unwrap();
    assert_eq!(meta.tier, Some(Tier::Slm));
    client.feedback(&meta.call_id, false, Some("wrong label".into())).unwrap();
    let unknown = client.feedback("call-nope", true, None).unwrap_err();
    assert!(matches!(unknown, Error::InvalidRequest { .. }), "{unknown:?}");
    let extract = client.outcome_stats().unwrap().get("tag:Extract", "small").unwrap();
    assert_eq!((extract.signals.validation, extract.signals.caller_feedback), (1, 1));
    assert!(extract.slm_success.failures > extract.slm_success.successes, "{extract:?}");
    client.ledger().flush();
    let (records, _) = slmkit::ledger::read_jsonl(&ledger).unwrap();
    let feedback = records.iter().find(|record| record.outcome == slmkit::Outcome::Feedback).unwrap();
    assert_eq!(feedback.reason.as_deref(), Some("wrong label"));
    assert!(feedback.feedback.as_ref().is_some_and(|verdict| !verdict.correct));

    // A restart: the statistics come back from the file next to the ledger.
    drop(client);
    let restarted = reopen(&slm, &llm, &ledger);
    let view = restarted.explain(&tagged("Classify", "ticket 100")).unwrap().adaptive.unwrap();
    assert_eq!(view.slm_calls, escalated);
    drop(restarted);

    // A corrupt statistics file: a fresh start, not a failure.
    std::fs::write(dir.join("ledger.routing.json"), b"\x00garbage").unwrap();
    let fresh = reopen(&slm, &llm, &ledger);
    assert_eq!(fresh.explain(&tagged("Classify", "ticket 101")).unwrap().adaptive.unwrap().slm_calls, 0);
    drop(fresh);
    let _ = std::fs::remove_dir_all(&dir);
}

fn reopen(slm: &TestServer, llm: &TestServer, ledger: &Path) -> Client {
    client(slm, llm, ledger)
}

#[tokio::test]
async fn statistics_reach_their_file_while_the_client_runs_and_the_report_counts_signals() {
    let dir = std::env::temp_dir().join(format!("slmkit-adaptive-autosave-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.jsonl");
    let stats_file = dir.join("ledger.routing.json");
    let _ = std::fs::remove_file(&ledger);
    let _ = std::fs::remove_file(&stats_file);
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    slm.set_default(Behavior::reply_text("{\"label\": \"bug\"}"));
    let routing = RoutingConfig {
        adaptive: true,
        learning: AdaptiveConfig { probe_rate: 0.0, seed: Some(11), save_every_s: 0.05, ..AdaptiveConfig::default() },
        ..RoutingConfig::default()
    };
    let client = Client::builder()
        .slm(remote(&slm, "small"), per_token(0.1, 0.2))
        .llm(remote(&llm, "big"), per_token(2.5, 10.0))
        .ledger(Ledger::with_file(&ledger).unwrap())
        .routing(routing)
        .build()
        .unwrap();
    let answered = client.create(&tagged("Classify", "ticket 1")).await.unwrap();
    let call_id = CallMetadata::of(&answered.extra).unwrap().call_id;
    client.feedback(&call_id, false, Some("wrong label".into())).unwrap();
    // No close, no explicit save: the periodic save writes the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&stats_file).is_ok_and(|text| text.contains("tag:Classify")) {
        assert!(std::time::Instant::now() < deadline, "the statistics file never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.ledger().flush();
    let (records, _) = slmkit::ledger::read_jsonl(&ledger).unwrap();
    let report = slmkit::Report::from_records(&records);
    let cluster = report.clusters.iter().find(|cluster| cluster.task_key == "tag:Classify").unwrap();
    assert_eq!((cluster.validation, cluster.caller_feedback, cluster.eval), (1, 1, 0), "{report:?}");
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
}
