//! `slmkit::eval`: every check type judged (edge cases included), task files checked line by
//! line, and whole runs on the tiny fixture model (the SLM) with the loopback test server as
//! the LLM: per-kind counts, escalations, an erroring task counted wrong with its reason, the
//! bare mode, and an unreachable endpoint.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use slmkit::eval::{parse_tasks, preflight, run_tasks, Check, EvalOptions, EvalResult};
use slmkit::types::ChatCompletion;
use slmkit::validate::RegexMatches;
use slmkit::{
    Backend, Client, EngineOptions, Error, LocalEngine, LocalModel, ModelOptions, Pricing, RemoteBackend, RemoteConfig,
    RetryPolicy, Tier,
};
use slmkit_testserver::{Behavior, TestServer};

// ---- checks ----

fn answer(content: &str) -> ChatCompletion {
    completion(json!({"role": "assistant", "content": content}))
}

fn tool_answer(calls: &[(&str, &str)]) -> ChatCompletion {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, (name, arguments))| {
            json!({"id": format!("call_{index}"), "type": "function", "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    completion(json!({"role": "assistant", "content": null, "tool_calls": calls}))
}

fn completion(message: Value) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }))
    .unwrap()
}

fn check(value: Value) -> Check {
    let check: Check = serde_json::from_value(value).unwrap();
    check.validate().unwrap();
    check
}

fn right(check: &Check, completion: &ChatCompletion) -> bool {
    let verdict = check.judge(completion);
    assert_eq!(verdict.correct, verdict.reason.is_none(), "a wrong answer has a reason: {verdict:?}");
    verdict.correct
}

#[test]
fn json_fields_compares_listed_fields_loosely() {
    let check =
        check(json!({"type": "json_fields", "fields": {"name": "Ada Lovelace", "age": 36, "tags": ["A", "b"]}}));
    assert!(right(&check, &answer(r#"{"name": " ada lovelace ", "age": 36.0, "tags": ["a", "B"], "extra": 1}"#)));
    assert!(right(
        &check,
        &answer("```json\n{\"name\": \"Ada Lovelace\", \"age\": 36, \"tags\": [\"a\", \"b\"]}\n```")
    ));
    // A number never equals a string, a missing field is wrong, and so is prose around the JSON.
    assert!(!right(&check, &answer(r#"{"name": "Ada Lovelace", "age": "36", "tags": ["a", "b"]}"#)));
    assert!(!right(&check, &answer(r#"{"name": "Ada Lovelace", "tags": ["a", "b"]}"#)));
    assert!(!right(&check, &answer(r#"Sure! {"name": "Ada Lovelace", "age": 36, "tags": ["a", "b"]}"#)));
    assert!(!right(&check, &answer(r#"{"name": "Ada Lovelace", "age": 36, "tags": ["b", "a"]}"#)), "order counts");
    assert!(!right(&check, &answer("[1, 2]")));
    assert!(!right(&check, &answer("")));
    let reason = check.judge(&answer(r#"{"name": "Ada", "age": 36, "tags": ["a", "b"]}"#)).reason.unwrap();
    assert!(reason.contains("\"name\""), "{reason}");
}

#[test]
fn json_equal_is_exact_but_for_key_order_and_number_form() {
    let check = check(json!({"type": "json_equal", "value": {"ok": true, "items": [1, 2], "name": "Bo"}}));
    assert!(right(&check, &answer(r#"{"name": "Bo", "items": [1.0, 2], "ok": true}"#)));
    assert!(!right(&check, &answer(r#"{"name": "bo", "items": [1, 2], "ok": true}"#)), "strings are exact");
    assert!(!right(&check, &answer(r#"{"name": "Bo", "items": [1, 2], "ok": true, "more": null}"#)));
    assert!(!right(&check, &answer(r#"{"name": "Bo", "items": [1, 2], "ok": "true"}"#)));
    assert!(!right(&check, &answer(r#"{"name": "Bo", "items": [1, 2], "ok": true"#)), "truncated JSON");
}

#[test]
fn label_needs_exactly_one_label_as_a_whole_word() {
    let check = check(json!({"type": "label", "labels": ["bug", "feature", "billing issue"], "expected": "bug"}));
    assert!(right(&check, &answer("Bug.")));
    assert!(right(&check, &answer("Category: bug")));
    assert!(!right(&check, &answer("debugging")), "a label inside a word does not count");
    assert!(!right(&check, &answer("bug or feature")), "two labels are ambiguous");
    assert!(!right(&check, &answer("feature")));
    assert!(!right(&check, &answer("")));
    let phrase = check_phrase();
    assert!(right(&phrase, &answer("This is a Billing Issue, clearly")));
    assert!(!right(&phrase, &answer("billing")));
}

fn check_phrase() -> Check {
    check(json!({"type": "label", "labels": ["bug", "billing issue"], "expected": "billing issue"}))
}

#[test]
fn tool_call_matches_name_and_listed_arguments() {
    let check = check(json!({"type": "tool_call", "name": "get_weather", "arguments": {"city": "Paris", "days": 3}}));
    assert!(right(&check, &tool_answer(&[("get_weather", r#"{"city": "paris", "days": 3, "units": "c"}"#)])));
    assert!(right(&check, &tool_answer(&[("lookup", "{}"), ("get_weather", r#"{"city": "Paris", "days": 3.0}"#)])));
    assert!(!right(&check, &tool_answer(&[("get_weather", r#"{"city": "Lyon", "days": 3}"#)])));
    assert!(!right(&check, &tool_answer(&[("get_weather", r#"{"city": "Paris"}"#)])));
    assert!(!right(&check, &tool_answer(&[("get_weather", "not json")])));
    assert!(!right(&check, &tool_answer(&[("get_time", r#"{"city": "Paris", "days": 3}"#)])));
    assert!(!right(&check, &answer(r#"{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}"#)));
    let name_only = self::check(json!({"type": "tool_call", "name": "get_weather"}));
    assert!(right(&name_only, &tool_answer(&[("get_weather", "{}")])));
}

#[test]
fn contains_all_and_regex() {
    let check = check(json!({"type": "contains_all", "terms": ["Checkout", "503"]}));
    assert!(right(&check, &answer("The checkout service returned HTTP 503 errors.")));
    assert!(!right(&check, &answer("The checkout service failed.")));
    let regex = self::check(json!({"type": "regex", "pattern": "(?i)^\\s*yes\\b"}));
    assert!(right(&regex, &answer("  Yes, it qualifies.")));
    assert!(!right(&regex, &answer("Eyes: no")));
}

#[test]
fn checks_that_cannot_work_are_refused() {
    let invalid = |value: Value| serde_json::from_value::<Check>(value).unwrap().validate().unwrap_err();
    assert!(invalid(json!({"type": "label", "labels": ["a", "b"], "expected": "c"})).contains("not one of"));
    assert!(invalid(json!({"type": "label", "labels": ["a"], "expected": "a"})).contains("two labels"));
    assert!(invalid(json!({"type": "regex", "pattern": "("})).contains("does not compile"));
    assert!(invalid(json!({"type": "contains_all", "terms": []})).contains("term"));
    assert!(invalid(json!({"type": "json_fields", "fields": {}})).contains("field"));
}

// ---- task files ----

fn line(id: &str, kind: &str, check: Value) -> String {
    json!({"id": id, "kind": kind, "request": {"messages": [{"role": "user", "content": "hi"}]}, "check": check})
        .to_string()
}

fn parse_error(text: &str) -> String {
    match parse_tasks(text, "tasks.jsonl") {
        Err(err @ Error::InvalidRequest { .. }) => err.to_string(),
        other => panic!("expected an invalid-request error, got {other:?}"),
    }
}

#[test]
fn task_files_are_checked_line_by_line_before_anything_runs() {
    let good = line("a", "k", json!({"type": "regex", "pattern": "x"}));
    let tasks =
        parse_tasks(&format!("{good}\n\n{}\n", line("b", "k2", json!({"type": "contains_all", "terms": ["x"]}))), "t")
            .unwrap();
    assert_eq!(tasks.iter().map(|task| (task.id.as_str(), task.line)).collect::<Vec<_>>(), [("a", 1), ("b", 3)]);

    let unknown = line("b", "k", json!({"type": "fuzzy", "x": 1}));
    let err = parse_error(&format!("{good}\n{unknown}\n"));
    assert!(err.contains("tasks.jsonl line 2") && err.contains("unknown check type \"fuzzy\""), "{err}");
    let err = parse_error(&format!("{good}\n{{not json\n"));
    assert!(err.contains("line 2") && err.contains("not JSON"), "{err}");
    let err = parse_error(&format!("{good}\n{good}\n"));
    assert!(err.contains("line 2") && err.contains("already used on line 1"), "{err}");
    let err = parse_error(
        &json!({"id": "a", "kind": "k", "request": {"messages": []}, "check": {"type": "regex", "pattern": "x"}})
            .to_string(),
    );
    assert!(err.contains("line 1") && err.contains("messages must not be empty"), "{err}");
    let err = parse_error(&json!({"id": "a", "kind": "k", "request": {"messages": [{"role": "user", "content": "hi"}]}, "check": {"type": "regex", "pattern": "x"}, "expect": 1}).to_string());
    assert!(err.contains("unknown key \"expect\""), "{err}");
    let err = parse_error(&line("a", "k", json!({"type": "label", "labels": ["x", "y"]})));
    assert!(err.contains("line 1") && err.contains("expected"), "{err}");
    assert!(parse_error("\n\n").contains("no tasks"));
}

#[test]
fn the_development_set_parses() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/eval/agent_tasks.jsonl");
    if !path.exists() {
        return;
    }
    let tasks = slmkit::eval::read_tasks(&path).unwrap();
    assert!(tasks.len() >= 8, "{} tasks", tasks.len());
}

// ---- runs ----

fn tiny_slm() -> Backend {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-chatml.gguf");
    let model = LocalModel::load(path, &ModelOptions::default()).unwrap();
    let options = EngineOptions { slots: 1, context_per_slot: Some(1024), ..EngineOptions::default() };
    Backend::Local(LocalEngine::start(model, options).unwrap())
}

fn remote(base_url: &str) -> Backend {
    let mut config = RemoteConfig::new(base_url, "big-model");
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    Backend::Remote(RemoteBackend::new(config).unwrap())
}

fn llm_price() -> Pricing {
    Pricing::PerToken { input_usd_per_million: 2.5, output_usd_per_million: 10.0, joules_per_token: None }
}

/// The tiny model as the SLM (every call starts there), the given endpoint as the LLM, and a
/// validator the tiny model's gibberish always fails on requests that ask for `ANSWER:`.
fn client(llm_base_url: &str) -> Client {
    let validator = RegexMatches::new("^ANSWER:").unwrap().when("Answer with ANSWER").unwrap();
    Client::builder()
        .slm(tiny_slm(), Pricing::local_default())
        .llm(remote(llm_base_url), llm_price())
        .validator(Arc::new(validator))
        .default_route(Tier::Slm)
        .retry(RetryPolicy {
            slm_attempts: 2,
            llm_attempts: 1,
            initial_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

/// Five tasks in three kinds: one that fails on the LLM (first, so the scripted 400 is its),
/// two escalated to the LLM, which echoes them (one right, one wrong), and two the SLM serves
/// under its grammar (a forced tool call, right by construction; a JSON answer, wrong).
fn task_file() -> String {
    let ask = |text: &str| json!({"messages": [{"role": "user", "content": format!("{text} Answer with ANSWER: and a label.")}], "max_tokens": 8, "temperature": 0});
    let city = json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}}, "required": ["city"], "additionalProperties": false});
    let tasks = [
        json!({"id": "fails", "kind": "classify", "request": ask("Is it alpha?"), "check": {"type": "label", "labels": ["alpha", "omega"], "expected": "alpha"}}),
        json!({"id": "echoed-right", "kind": "classify", "request": ask("Say alpha."), "check": {"type": "label", "labels": ["alpha", "omega"], "expected": "alpha"}}),
        json!({"id": "echoed-wrong", "kind": "classify", "request": ask("Say omega."), "check": {"type": "label", "labels": ["alpha", "zeta"], "expected": "zeta"}}),
        json!({"id": "tool", "kind": "tool", "request": {
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 160, "temperature": 0,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": city}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            "check": {"type": "tool_call", "name": "get_weather"}}),
        json!({"id": "json", "kind": "extract", "request": {
            "messages": [{"role": "user", "content": "Which city? Paris."}], "max_tokens": 96, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": city}}},
            "check": {"type": "json_fields", "fields": {"city": "Paris, France"}}}),
    ];
    tasks.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_run_adds_up_per_kind_and_counts_a_failed_call_wrong_with_its_reason() {
    let server = TestServer::start().await;
    server.push([Behavior::status(400)]);
    let client = client(&server.base_url());
    preflight(&client, Duration::from_secs(2)).await.unwrap();
    let tasks = parse_tasks(&task_file(), "tasks.jsonl").unwrap();
    let mut seen = Vec::new();
    let result = run_tasks(&client, &tasks, &EvalOptions::default(), |task| seen.push(task.id.clone())).await;
    assert_eq!(seen, ["fails", "echoed-right", "echoed-wrong", "tool", "json"]);
    assert_eq!(result.mode, "pipeline");
    let task = |id: &str| result.tasks.iter().find(|task| task.id == id).unwrap();

    let failed = task("fails");
    assert!(!failed.correct);
    assert!(failed.error.as_deref().unwrap().contains("400"), "{failed:?}");
    assert!(failed.reason.as_deref().unwrap().starts_with("the call failed"), "{failed:?}");
    // One or two SLM attempts (a rejected answer cut off by max_tokens escalates at once), then the LLM.
    assert!((2..=3).contains(&failed.attempts), "{failed:?}");
    assert!(failed.escalated && !failed.slm_first_try);

    let escalated = task("echoed-right");
    assert!(escalated.correct, "{escalated:?}");
    assert!((2..=3).contains(&escalated.attempts), "{escalated:?}");
    assert_eq!((escalated.escalated, escalated.served_by), (true, Some(Tier::Llm)));
    assert!(escalated.counterfactual_llm_cost_usd > 0.0 && escalated.cost_usd > 0.0);
    assert!(!task("echoed-wrong").correct);
    assert!(
        task("echoed-wrong").reason.as_deref().unwrap().contains("none of the labels"),
        "{:?}",
        task("echoed-wrong")
    );

    let tool = task("tool");
    assert!(tool.correct, "the grammar forces the named call: {tool:?}");
    assert_eq!((tool.attempts, tool.slm_first_try, tool.served_by), (1, true, Some(Tier::Slm)));
    let json = task("json");
    assert!(!json.correct && json.reason.as_deref().unwrap().contains("\"city\""), "{json:?}");
    assert!(json.slm_first_try, "the grammar makes valid JSON, which the validators pass: {json:?}");

    let classify = &result.kinds["classify"];
    assert_eq!((classify.tasks, classify.correct, classify.errors, classify.escalations), (3, 1, 1, 3));
    assert!((2.0..=3.0).contains(&classify.mean_attempts));
    assert_eq!(classify.slm_first_try, 0);
    assert_eq!((result.kinds["tool"].correct, result.kinds["extract"].correct), (1, 0));
    let overall = &result.overall;
    assert_eq!((overall.tasks, overall.correct, overall.errors, overall.slm_first_try), (5, 2, 1, 2));
    assert!((overall.accuracy - 0.4).abs() < 1e-9);
    assert!(overall.latency_p50_ms > 0.0 && overall.latency_p90_ms >= overall.latency_p50_ms);
    // The figures are the ledger's: every attempt of every call, failed ones included.
    let report = client.ledger().report();
    assert_eq!(u64::from(result.tasks.iter().map(|task| task.attempts).sum::<u32>()), report.attempts);
    assert_eq!(overall.prompt_tokens, report.prompt_tokens);
    assert!((overall.cost_usd - report.cost_usd).abs() < 1e-12);
    assert!((overall.net_saving_usd - (overall.counterfactual_llm_cost_usd - overall.cost_usd)).abs() < 1e-12);
    assert_eq!(server.request_count(), 3, "three calls reached the LLM");

    // The JSON result reads back, and the tables name what they show.
    let text = serde_json::to_string(&result).unwrap();
    let back: EvalResult = serde_json::from_str(&text).unwrap();
    assert_eq!(back, result);
    let table = result.to_table();
    assert!(
        table.contains("classify") && table.contains("overall") && table.contains("fails [classify] line 1"),
        "{table}"
    );

    // Bare: the SLM alone, one attempt, no validators, no escalation.
    let bare = run_tasks(&client, &tasks, &EvalOptions { bare: true }, |_| {}).await;
    assert_eq!(bare.mode, "bare");
    assert!(bare.tasks.iter().all(|task| task.attempts == 1 && !task.escalated && task.error.is_none()), "{bare:?}");
    assert!(bare.tasks.iter().all(|task| task.served_by == Some(Tier::Slm) && task.slm_first_try));
    assert_eq!(server.request_count(), 3, "a bare run never reaches the LLM");
    let bare_tool = bare.tasks.iter().find(|task| task.id == "tool").unwrap();
    assert!(!bare_tool.correct, "without the grammar the tiny model makes no tool call: {bare_tool:?}");

    // Any other pipeline value is refused before an attempt.
    let mut odd = tasks[0].request.clone();
    odd.extra.insert("slmkit".into(), json!({"pipeline": "naked"}));
    let err = client.create(&odd).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }) && err.to_string().contains("naked"), "{err}");
    let compared = EvalResult::compare(&result, &bare);
    assert!(
        compared.contains("pipeline") && compared.contains("bare") && compared.contains("accuracy: classify"),
        "{compared}"
    );
}

#[tokio::test]
async fn an_unreachable_llm_fails_only_the_tasks_that_need_it() {
    // A port that was free a moment ago: nothing listens there.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", listener.local_addr().unwrap())
    };
    let client = client(&dead);
    // The SLM answers first, so an unreachable LLM is not a reason to refuse the run.
    preflight(&client, Duration::from_secs(2)).await.unwrap();
    let tasks = parse_tasks(&task_file(), "tasks.jsonl").unwrap();
    let result = run_tasks(&client, &tasks[2..4], &EvalOptions::default(), |_| {}).await;
    let needs_llm = &result.tasks[0];
    assert!(!needs_llm.correct && needs_llm.error_kind.as_deref() == Some("connection"), "{needs_llm:?}");
    assert!(result.tasks[1].correct, "{:?}", result.tasks[1]);
    assert_eq!(result.overall.errors, 1);

    // With nothing before it, an unreachable endpoint stops the run before it starts.
    let llm_only = Client::builder().llm(remote(&dead), llm_price()).build().unwrap();
    let err = preflight(&llm_only, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err}");
    assert!(err.to_string().contains("is the server running"), "{err}");
}
