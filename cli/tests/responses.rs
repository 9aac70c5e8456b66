//! `POST /v1/responses` on `slmkit serve` (port 0), over raw HTTP.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use slmkit::Config;
use slmkit_cli::server::{app, serve, ServerConfig};
use slmkit_testserver::{Behavior, TestServer};

/// The server's `/v1` URL; the server stops when the sender is dropped.
async fn start(llm: &TestServer, server: ServerConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url());
    let client = Config::from_toml_str(&config).unwrap().build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    tokio::spawn(serve(listener, app(client, &server), shutdown, Duration::from_secs(5)));
    (base, stop)
}

/// The `(event, data)` pairs of an SSE body.
fn frames(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap_or_else(|| panic!("one line: {frame:?}"));
            let event = event.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line: {frame:?}"));
            let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("no data line: {frame:?}"));
            (event.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn whole_and_streamed_responses_behind_the_key() {
    let llm = TestServer::start().await;
    let (base, _stop) = start(&llm, ServerConfig { api_key: Some("k1".into()), ..ServerConfig::default() }).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/responses");
    let body = json!({"model": "x", "input": "hello there", "instructions": "be kind"});
    assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 401);

    let whole = http.post(&url).bearer_auth("k1").header("X-Slmkit-Task", "greet").json(&body).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let response: Value = whole.json().await.unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], "echo: hello there");
    assert_eq!(response["slmkit"]["tier"], "llm");
    assert!(response["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(llm.received()[0].body["messages"][0]["content"], "be kind");

    let streamed =
        http.post(&url).bearer_auth("k1").json(&json!({"input": "stream this", "stream": true})).send().await.unwrap();
    assert_eq!(streamed.status(), 200);
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    let frames = frames(&streamed.text().await.unwrap());
    for (index, (event, data)) in frames.iter().enumerate() {
        assert_eq!(data["type"], event.as_str(), "the event line names the data's type");
        assert_eq!(data["sequence_number"], index);
    }
    let events: Vec<&str> = frames.iter().map(|(event, _)| event.as_str()).collect();
    assert_eq!(
        events[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(events.last(), Some(&"response.completed"), "no [DONE] after it, as OpenAI sends");
    let text: String = frames
        .iter()
        .filter(|(event, _)| event == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: stream this");

    let report: Value =
        http.get(format!("{base}/slmkit/report")).bearer_auth("k1").send().await.unwrap().json().await.unwrap();
    assert_eq!(report["calls"], 2, "both calls are in the ledger: {report}");
}

#[tokio::test]
async fn refused_features_are_400s_naming_the_field() {
    let llm = TestServer::start().await;
    let (base, _stop) = start(&llm, ServerConfig::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/responses");
    for (body, param) in [
        (json!({"input": "hi", "previous_response_id": "resp_1"}), "previous_response_id"),
        (json!({"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": []}]}), "tools[0].type"),
        (json!({"input": "hi", "reasoning": {"effort": "high"}}), "reasoning"),
        (json!({"input": "hi", "stream": true, "background": true}), "background"),
        (json!({"input": "hi", "temperature": 7}), "temperature"),
    ] {
        let answer = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{body}");
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(param.split('[').next().unwrap()), "{error}");
    }
    let malformed =
        http.post(&url).header("content-type", "application/json").body("{\"input\": ").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let form = http.post(&url).header("content-type", "text/plain").body("{\"input\": \"hi\"}").send().await.unwrap();
    assert_eq!(form.status(), 415, "the browser guard applies as on chat");
    assert!(llm.received().is_empty());
}

#[tokio::test]
async fn a_stream_cut_after_content_ends_with_an_error_event() {
    let llm = TestServer::start().await;
    llm.push([Behavior::reply_text("a long answer in many chunks, cut in the middle").cut_after(3)]);
    let (base, _stop) = start(&llm, ServerConfig::default()).await;
    let streamed = reqwest::Client::new()
        .post(format!("{base}/responses"))
        .json(&json!({"input": "go", "stream": true}))
        .send()
        .await
        .unwrap();
    let frames = frames(&streamed.text().await.unwrap());
    let (event, data) = frames.last().unwrap();
    assert_eq!(event, "error", "{frames:?}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["sequence_number"], frames.len() - 1);
    assert!(!data["message"].as_str().unwrap().is_empty());
    assert!(frames.iter().any(|(event, _)| event == "response.output_text.delta"), "content came first: {frames:?}");
}
