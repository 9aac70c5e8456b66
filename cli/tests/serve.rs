//! `slmkit serve` on port 0, exercised over real HTTP (and by slmkit's own OpenAI client).

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use slmkit::types::{ChatCompletionRequest, ChatMessage, StreamOptions};
use slmkit::{Config, RemoteBackend, RemoteConfig};
use slmkit_cli::server::{app, serve, ServerConfig};
use slmkit_testserver::{Behavior, TestServer};

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: &str, server: ServerConfig) -> Running {
    let client = Config::from_toml_str(config).unwrap().build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        app(client, &server),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    Running { base, stop: Some(stop), task }
}

fn fixture() -> String {
    format!("{}/../core/tests/fixtures/tiny-chatml.gguf", env!("CARGO_MANIFEST_DIR"))
}

fn local_and_remote(llm: &TestServer) -> String {
    format!(
        "[slm]\nbackend = \"local\"\nmodel = {:?}\ncontext = 1024\n\n[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n",
        fixture(),
        llm.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_streamed_and_schema_requests_through_an_openai_client() {
    let llm = TestServer::start().await;
    let running = start(&local_and_remote(&llm), ServerConfig::default()).await;
    // slmkit's remote backend is itself an OpenAI client: point it at the server.
    let client = RemoteBackend::new(RemoteConfig::new(&running.base, "any")).unwrap();

    let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("Extract: order 7 is late")]);
    request.max_tokens = Some(60);
    request.seed = Some(1);
    request.response_format = Some(slmkit::types::ResponseFormat::json_schema(
        "o",
        json!({"type": "object", "properties": {"late": {"type": "boolean"}}, "required": ["late"], "additionalProperties": false}),
    ));
    let completion = client.create(&request).await.unwrap();
    let value: Value = serde_json::from_str(completion.content()).unwrap();
    assert!(value["late"].is_boolean());
    assert_eq!(completion.extra["slmkit"]["tier"], "slm");

    let mut streamed = ChatCompletionRequest::new(vec![ChatMessage::user(
        "Design the architecture of a trading platform and discuss the trade-offs.",
    )]);
    streamed.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
    let chunks: Vec<_> = client.create_stream(&streamed).await.unwrap().collect().await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    let text: String = chunks.iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect();
    assert!(text.starts_with("echo: Design the architecture"), "routed to the LLM: {text}");
    assert!(chunks.last().unwrap().usage.is_some(), "usage on the final chunk");
    drop(running.stop);
}

#[tokio::test]
async fn sse_is_framed_as_openai_frames_it() {
    let llm = TestServer::start().await;
    let running = start(
        &format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url()),
        ServerConfig::default(),
    )
    .await;
    let body = reqwest::Client::new()
        .post(format!("{}/chat/completions", running.base))
        .json(&json!({"model": "x", "stream": true, "messages": [{"role": "user", "content": "hi there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(body.headers()["content-type"], "text/event-stream");
    let text = body.text().await.unwrap();
    let frames: Vec<&str> = text.split("\n\n").filter(|frame| !frame.is_empty()).collect();
    assert!(frames.iter().all(|frame| frame.starts_with("data: ")), "{text}");
    assert_eq!(*frames.last().unwrap(), "data: [DONE]");
    let first: Value = serde_json::from_str(&frames[0]["data: ".len()..]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
}

#[tokio::test]
async fn errors_use_openai_error_json() {
    let llm = TestServer::start().await;
    llm.push([Behavior::status(401)]);
    let server = ServerConfig { max_body_bytes: 2048, ..ServerConfig::default() };
    let running =
        start(&format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url()), server)
            .await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", running.base);

    let malformed =
        http.post(&url).header("content-type", "application/json").body("{\"messages\": [").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let error: Value = malformed.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("malformed request"), "{error}");
    assert!(error["error"].as_object().unwrap().keys().eq(["message", "type", "param", "code"].iter()));

    let invalid = http
        .post(&url)
        .json(&json!({"messages": [{"role": "user", "content": "x"}], "temperature": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let error: Value = invalid.json().await.unwrap();
    assert_eq!(error["error"]["param"], "temperature");

    let huge = http
        .post(&url)
        .json(&json!({"messages": [{"role": "user", "content": "x".repeat(5000)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    let upstream = http.post(&url).json(&json!({"messages": [{"role": "user", "content": "x"}]})).send().await.unwrap();
    assert_eq!(upstream.status(), 401, "the LLM's status passes through");
    let error: Value = upstream.json().await.unwrap();
    assert_eq!(error["error"]["code"], "authentication");
}

#[tokio::test]
async fn bearer_auth_models_health_metrics_and_report() {
    let llm = TestServer::start().await;
    let server = ServerConfig { api_key: Some("serve-secret".into()), ..ServerConfig::default() };
    let running =
        start(&format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url()), server)
            .await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", running.base);
    let body = json!({"messages": [{"role": "user", "content": "hello"}], "temperature": 0});
    assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 401);
    assert_eq!(http.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap().status(), 401);
    // Two agents (`user`) send the same request: the second is answered from the cache. (The
    // same agent re-sending it at once would be a re-ask: a rejection of the first answer.)
    for agent in ["architect", "engineer"] {
        let mut body = body.clone();
        body["user"] = json!(agent);
        let ok = http
            .post(&url)
            .bearer_auth("serve-secret")
            .header("X-Slmkit-Task", "WritePRD")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    assert_eq!(llm.request_count(), 1, "the repeat came from the cache");

    let root = running.base.trim_end_matches("/v1");
    assert_eq!(http.get(format!("{root}/healthz")).send().await.unwrap().status(), 200, "health needs no key");
    let authorized_json = |path: &str| {
        let request = http.get(format!("{}{path}", running.base)).bearer_auth("serve-secret");
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let models = authorized_json("/models").await;
    assert_eq!(models["data"][0]["id"], "big");
    let report = authorized_json("/slmkit/report").await;
    assert_eq!(report["calls"], 2);
    assert_eq!(report["served_from_cache"], 1);
    // With a key set, /metrics is behind it too (it shows call counts and cost).
    let metrics =
        http.get(format!("{root}/metrics")).bearer_auth("serve-secret").send().await.unwrap().text().await.unwrap();
    for expected in [
        "slmkit_calls_total{route=\"llm\"} 1",
        "slmkit_cache_hits_total 1",
        "slmkit_request_duration_seconds_count 2",
        "slmkit_attempts_total 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let llm = TestServer::start().await;
    llm.push([Behavior::reply_text("slow answer").delayed(500)]);
    let mut running = start(
        &format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url()),
        ServerConfig::default(),
    )
    .await;
    let url = format!("{}/chat/completions", running.base);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new().post(url).json(&json!({"messages": [{"role": "user", "content": "x"}]})).send().await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = running.stop.take().unwrap().send(());
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the request in flight at shutdown completed");
    tokio::time::timeout(Duration::from_secs(5), running.task).await.unwrap().unwrap().unwrap();
    let refused = reqwest::Client::new().get(running.base.replace("/v1", "/healthz")).send().await;
    assert!(refused.is_err(), "the server stopped accepting");
}

/// The cross-language error check, from the server's side: each failure in
/// tests/fixtures/error_classes.json answers with error JSON whose `slmkit.openai_class` is the
/// class the fixture names (the Python and Node suites read the same file).
#[tokio::test]
async fn error_json_names_the_shared_openai_class() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/error_classes.json");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let llm = TestServer::start().await;
    let running = start(
        &format!(
            "[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n\n[retry]\nllm_attempts = 1\n",
            llm.base_url()
        ),
        ServerConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    for case in cases["cases"].as_array().unwrap() {
        let script: Vec<Behavior> = serde_json::from_value(case["script"].clone()).unwrap();
        llm.push(script);
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for (key, value) in case.get("request").and_then(Value::as_object).into_iter().flatten() {
            body[key] = value.clone();
        }
        let response = http.post(format!("{}/chat/completions", running.base)).json(&body).send().await.unwrap();
        assert!(!response.status().is_success(), "{}", case["name"]);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["slmkit"]["openai_class"], case["class"], "{}: {error}", case["name"]);
        assert!(error["error"].as_object().unwrap().keys().eq(["message", "type", "param", "code"].iter()));
    }
}

/// `/metrics` counters never go down: before, they were computed from the ledger's in-memory
/// records, which are capped, so `*_total` fell once old records were dropped.
#[tokio::test]
async fn metrics_counters_stay_monotonic_when_the_ledger_evicts() {
    let llm = TestServer::start().await;
    let config = format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url());
    let client = Config::from_toml_str(&config)
        .unwrap()
        .builder()
        .unwrap()
        .ledger(slmkit::Ledger::with_memory_limit(2))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        app(client, &ServerConfig::default()),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let http = reqwest::Client::new();
    let calls = |metrics: &str| -> u64 {
        let line = metrics.lines().find(|line| line.starts_with("slmkit_calls_total{route=\"llm\"}")).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let mut last = 0;
    for index in 1..=5u64 {
        let body = json!({"messages": [{"role": "user", "content": format!("call {index}")}]});
        let answered = http.post(format!("{root}/v1/chat/completions")).json(&body).send().await.unwrap();
        assert_eq!(answered.status(), 200);
        let metrics = http.get(format!("{root}/metrics")).send().await.unwrap().text().await.unwrap();
        let now = calls(&metrics);
        assert!(now >= last, "slmkit_calls_total went down from {last} to {now}");
        last = now;
        assert!(metrics.contains(&format!("slmkit_attempts_total {index}")), "{metrics}");
    }
    assert_eq!(last, 5, "every call counted, though the ledger keeps 2 records");
}

/// Upstream failures keep their meaning through the server: a timeout is a 504 typed
/// `timeout`, and 429s that outlast the retries are a 429 typed `rate_limit_exceeded` (not
/// `invalid_request_error`, which tells an openai client the request itself was wrong).
#[tokio::test]
async fn upstream_timeouts_and_rate_limits_keep_their_types() {
    let llm = TestServer::start().await;
    let config = format!(
        "[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\nrequest_timeout_s = 0.3\n\
         [retry]\nllm_attempts = 1\n",
        llm.base_url()
    );
    let running = start(&config, ServerConfig::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", running.base);
    let body = json!({"messages": [{"role": "user", "content": "hello"}]});

    llm.push([Behavior::reply_text("late").delayed(2_000)]);
    let timed_out = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(timed_out.status(), 504);
    let error: Value = timed_out.json().await.unwrap();
    assert_eq!((error["error"]["type"].as_str(), error["error"]["code"].as_str()), (Some("timeout"), Some("timeout")));

    llm.push([Behavior::status(429)]);
    let limited = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let error: Value = limited.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_exceeded");
}

/// Hints are checked the same way wherever they come from: a body hint that is not an object
/// of known string hints is a 400 naming it, instead of being ignored (and taking a header
/// hint with it).
#[tokio::test]
async fn malformed_body_hints_are_rejected_like_malformed_header_hints() {
    let llm = TestServer::start().await;
    let running = start(
        &format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n", llm.base_url()),
        ServerConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", running.base);
    let user = json!([{"role": "user", "content": "hello"}]);
    for (hint, param) in [
        (json!("str"), "slmkit"),
        (json!({"route": 12}), "slmkit.route"),
        (json!({"route": "banana"}), "slmkit.route"),
        (json!({"colour": "red"}), "slmkit.colour"),
    ] {
        let response = http
            .post(&url)
            .header("X-Slmkit-Route", "llm")
            .json(&json!({"messages": user, "slmkit": hint}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{hint}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{hint}");
    }
    let header =
        http.post(&url).header("X-Slmkit-Route", "banana").json(&json!({"messages": user})).send().await.unwrap();
    assert_eq!(header.status(), 400);
    assert_eq!(llm.request_count(), 0);
}

/// A web page cannot drive the server: a cross-site form or `text/plain` POST (no CORS
/// preflight) gets a 415, any request carrying a web `Origin` not listed gets a 403, and a
/// listed origin passes.
#[tokio::test]
async fn browser_requests_need_json_and_an_allowed_origin() {
    let llm = TestServer::start().await;
    let config =
        format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n", llm.base_url());
    let server = ServerConfig { allowed_origins: vec!["https://app.example.com".into()], ..ServerConfig::default() };
    let running = start(&config, server).await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", running.base);
    let body = json!({"messages": [{"role": "user", "content": "hello"}]}).to_string();

    let plain = http.post(&url).header("content-type", "text/plain").body(body.clone()).send().await.unwrap();
    assert_eq!(plain.status(), 415);
    let untyped = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(untyped.status(), 415);
    let foreign = http
        .post(&url)
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let error: Value = foreign.json().await.unwrap();
    assert_eq!(error["error"]["code"], "origin_not_allowed");
    assert_eq!(llm.request_count(), 0, "nothing reached the paid tier");

    let allowed = http
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", "https://app.example.com")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}

/// `/metrics` shows call counts and cost: behind the key when there is one (unless made public).
#[tokio::test]
async fn metrics_need_the_key_when_auth_is_on() {
    let llm = TestServer::start().await;
    let config =
        format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n", llm.base_url());
    let http = reqwest::Client::new();
    let keyed = ServerConfig { api_key: Some("secret".into()), ..ServerConfig::default() };
    let running = start(&config, keyed.clone()).await;
    let metrics = running.base.replace("/v1", "/metrics");
    assert_eq!(http.get(&metrics).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&metrics).bearer_auth("secret").send().await.unwrap().status(), 200);
    assert_eq!(http.get(running.base.replace("/v1", "/healthz")).send().await.unwrap().status(), 200);

    let public = start(&config, ServerConfig { metrics_public: Some(true), ..keyed }).await;
    assert_eq!(http.get(public.base.replace("/v1", "/metrics")).send().await.unwrap().status(), 200);
    let open = start(&config, ServerConfig::default()).await;
    assert_eq!(http.get(open.base.replace("/v1", "/metrics")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn feedback_is_recorded_against_an_answered_call() {
    let llm = TestServer::start().await;
    let running = start(
        &format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n", llm.base_url()),
        ServerConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/chat/completions", running.base))
        .json(&json!({"messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call_id = answer["slmkit"]["call_id"].as_str().unwrap().to_owned();
    let url = format!("{}/slmkit/feedback", running.base);
    let ok =
        http.post(&url).json(&json!({"call_id": call_id, "correct": false, "reason": "wrong"})).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["recorded"], true);
    let unknown = http.post(&url).json(&json!({"call_id": "call-nope", "correct": true})).send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"]["param"], "call_id");
    let malformed = http.post(&url).json(&json!({"call_id": 7})).send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("call_id"));
    drop(running.stop);
}
