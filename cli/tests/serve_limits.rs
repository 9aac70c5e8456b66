//! `slmkit serve` against hostile and careless clients (issue 18): slow and half-sent
//! requests, idle connections, too many connections, bad schemas, and a shutdown that cuts
//! requests off. Raw TCP sockets where HTTP clients would hide what the server does.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slmkit::{Config, Outcome, SHUTDOWN_REASON};
use slmkit_cli::server::{app, serve_with, ServerConfig};
use slmkit_testserver::{Behavior, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Running {
    address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    ledger: slmkit::Ledger,
}

async fn start(config: &str, server: ServerConfig, grace: Duration) -> Running {
    let client = Config::from_toml_str(config).unwrap().build().unwrap();
    let ledger = client.ledger().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let marking = ledger.clone();
    let task = tokio::spawn(serve_with(
        listener,
        app(client, &server),
        server.limits(),
        async {
            let _ = stopped.await;
        },
        grace,
        move || marking.mark_shutting_down(),
    ));
    Running { address, stop: Some(stop), task, ledger }
}

fn llm_only(llm: &TestServer) -> String {
    format!("[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n", llm.base_url())
}

fn fixture() -> String {
    format!("{}/../core/tests/fixtures/tiny-chatml.gguf", env!("CARGO_MANIFEST_DIR"))
}

fn limits(header_s: f64, body_s: f64, idle_s: f64, max_connections: usize) -> ServerConfig {
    ServerConfig {
        header_timeout_s: header_s,
        body_timeout_s: body_s,
        idle_timeout_s: idle_s,
        max_connections,
        ..ServerConfig::default()
    }
}

/// Reads until the server closes the connection (or resets it); what it sent, if anything.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&received).into_owned())
}

async fn chat(address: &str, body: &Value) -> (u16, Value) {
    let response =
        reqwest::Client::new().post(format!("http://{address}/v1/chat/completions")).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "hello"}]})
}

/// Finding 3: 200 connections that each sent half a request line are closed after the
/// header timeout, while a normal request is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let llm = TestServer::start().await;
    let running = start(&llm_only(&llm), limits(1.0, 30.0, 60.0, 1024), Duration::from_secs(5)).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&running.address).await.unwrap();
        stream.write_all(b"POST /v1/chat/completions HTT").await.unwrap();
        slow.push(stream);
    }
    let (status, body) = chat(&running.address, &hello()).await;
    assert_eq!(status, 200, "{body}");
    for stream in &mut slow {
        // Generous: the timeout is 1 s; before the fix they stayed open 45 s and more.
        let closed = read_to_close(stream, Duration::from_secs(20)).await;
        assert!(closed.is_some(), "a half-sent request was still open after {:?}", started.elapsed());
    }
    // An idle connection that sends nothing is closed by the idle timeout instead (60 s here),
    // so it is still open now.
    let mut idle = TcpStream::connect(&running.address).await.unwrap();
    assert!(read_to_close(&mut idle, Duration::from_millis(500)).await.is_none());
    drop(running.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_bodies_time_out() {
    let llm = TestServer::start().await;
    let running = start(&llm_only(&llm), limits(30.0, 1.0, 1.0, 1024), Duration::from_secs(5)).await;
    let mut idle = TcpStream::connect(&running.address).await.unwrap();
    assert!(read_to_close(&mut idle, Duration::from_secs(20)).await.is_some(), "an idle connection stayed open");

    // Both routes that read a JSON body share the timeout (the Responses route once lacked it).
    for (path, start_of_body) in [("chat/completions", "{\"messages\""), ("responses", "{\"input\"")] {
        let mut slow_body = TcpStream::connect(&running.address).await.unwrap();
        let head = format!(
            "POST /v1/{path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{start_of_body}",
            running.address
        );
        slow_body.write_all(head.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut slow_body, Duration::from_secs(20)).await.expect("answered and closed");
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("body_timeout_s"), "{path}: {answer}");
    }
    drop(running.stop);
}

/// Connections beyond `max_connections` get a 503 at once; when one closes, requests work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_with_503() {
    let llm = TestServer::start().await;
    let running = start(&llm_only(&llm), limits(30.0, 30.0, 60.0, 4), Duration::from_secs(5)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&running.address).await.unwrap());
    }
    // The server has accepted them by the time one more is refused; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&running.address).await.unwrap();
    let answer = read_to_close(&mut extra, Duration::from_secs(10)).await.expect("refused and closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    held.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = chat(&running.address, &hello()).await;
    assert_eq!(status, 200, "{body}");
    drop(running.stop);
}

/// Finding 8: a request still running when the grace period ends is recorded as cut off by
/// the shutdown, not as cancelled by its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_shutdown_is_recorded_as_such() {
    let llm = TestServer::start().await;
    llm.set_default(Behavior::reply_text("late").delayed(20_000));
    let mut running = start(&llm_only(&llm), ServerConfig::default(), Duration::from_millis(300)).await;
    let address = running.address.clone();
    let caller = tokio::spawn(async move { chat(&address, &hello()).await });
    while llm.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(running.stop.take());
    tokio::time::timeout(Duration::from_secs(20), &mut running.task).await.unwrap().unwrap().unwrap();
    running.ledger.flush();
    let records = running.ledger.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Cancelled);
    assert_eq!(records[0].reason.as_deref(), Some(SHUTDOWN_REASON));
    caller.abort();
}

/// Finding 6 through the server: with `on_overload = "reject"` a full engine queue is a 503
/// `server_overloaded`, nothing goes to the LLM, and `/metrics` counts each refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_rejections_are_503s_and_counted_in_metrics() {
    let llm = TestServer::start().await;
    let config = format!(
        "[retry]\nslm_attempts = 1\n\n[slm]\nbackend = \"local\"\nmodel = {:?}\ncontext = 2048\nslots = 1\nqueue = 1\non_overload = \"reject\"\n\n[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n",
        fixture(),
        llm.base_url()
    );
    let running = start(&config, ServerConfig::default(), Duration::from_secs(5)).await;
    let calls = (0..8).map(|n| {
        let address = running.address.clone();
        tokio::spawn(async move {
            let body = json!({"messages": [{"role": "user", "content": format!("write a long story {n}")}],
                              "max_tokens": 200, "slmkit": {"route": "slm"}});
            chat(&address, &body).await
        })
    });
    let mut refused = 0;
    for call in calls.collect::<Vec<_>>() {
        let (status, body) = call.await.unwrap();
        match status {
            200 => {}
            503 => {
                assert_eq!(body["error"]["type"], "server_overloaded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "eight calls into one slot and a queue of one must overflow");
    assert_eq!(llm.request_count(), 0, "reject never spills to the LLM");
    let metrics = reqwest::get(format!("http://{}/metrics", running.address)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("slmkit_overloaded_total {refused}\n")), "{metrics}");
    drop(running.stop);
}

/// Findings 1 and 2, and issue 19's `$defs`, through the server: bad schemas are 400s naming
/// the parameter, a huge one a 413, and instructor's nested model is served by the SLM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_checked_and_defs_refs_served_through_serve() {
    let llm = TestServer::start().await;
    let config = format!(
        "[retry]\nslm_attempts = 1\n\n[slm]\nbackend = \"local\"\nmodel = {:?}\ncontext = 2048\n\n[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n",
        fixture(),
        llm.base_url()
    );
    let running = start(&config, ServerConfig::default(), Duration::from_secs(5)).await;
    let with_format = |schema: Value| {
        json!({"messages": [{"role": "user", "content": "json please"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}})
    };
    let (status, body) = chat(&running.address, &with_format(json!({"type": 5}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "response_format.json_schema.schema");
    let values: Vec<String> = (0..100_000).map(|n| format!("v{n}")).collect();
    let (status, body) = chat(&running.address, &with_format(json!({"enum": values}))).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large");

    let parameters: Value = serde_json::from_str(INSTRUCTOR_TEAM_PARAMETERS).unwrap();
    let request = json!({
        "messages": [{"role": "user", "content": "Extract: team Otters, lead Ann (31), member Bo (40)."}],
        "tools": [{"type": "function", "function": {"name": "Team", "description": "Correctly extracted `Team`", "parameters": parameters}}],
        "tool_choice": {"type": "function", "function": {"name": "Team"}},
        "max_tokens": 120,
        "slmkit": {"route": "slm"}
    });
    let (status, body) = chat(&running.address, &request).await;
    // Before the fix: 400 "Pointer '/$defs/User' does not exist". A random-weight model may
    // run out of tokens mid-call (the SLM alone, forced, reports that as a validation failure).
    assert!(status == 200 || status == 422, "{status} {body}");
    assert!(!body.to_string().contains("does not exist"), "{body}");
    assert_eq!(llm.request_count(), 0, "nothing went to the LLM");
    drop(running.stop);
}

/// What instructor 1.x puts in `tools[0].function.parameters` for
/// `class User(BaseModel): name: str; age: int` and
/// `class Team(BaseModel): name: str; members: list[User]; lead: User`.
const INSTRUCTOR_TEAM_PARAMETERS: &str = r##"{
  "$defs": {
    "User": {
      "properties": {"name": {"title": "Name", "type": "string"}, "age": {"title": "Age", "type": "integer"}},
      "required": ["name", "age"],
      "title": "User",
      "type": "object"
    }
  },
  "properties": {
    "name": {"title": "Name", "type": "string"},
    "members": {"items": {"$ref": "#/$defs/User"}, "title": "Members", "type": "array"},
    "lead": {"$ref": "#/$defs/User"}
  },
  "required": ["name", "members", "lead"],
  "type": "object"
}"##;
