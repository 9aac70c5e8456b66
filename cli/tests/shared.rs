//! `[shared]`: several `slmkit serve` processes on one real `redis-server` (started here on
//! free loopback ports, in temporary folders), answering from one loopback LLM test server.
//! Nothing is skipped: without `redis-server` on the PATH every test fails, saying how to
//! install it (`make setup`).

// Tests stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slmkit::ledger::{read_jsonl, Report};
use slmkit_testserver::{Behavior, TestServer};
use support::{Serve, TempDir};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` on a loopback port, in its own folder; killed when dropped.
struct Redis {
    port: u16,
    password: Option<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    fn start(password: Option<&str>) -> Redis {
        let mut redis =
            Redis { port: free_port(), password: password.map(str::to_owned), dir: TempDir::new("redis"), child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts it (again, on the same port) and waits until it answers.
    fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command.spawn().unwrap_or_else(|err| {
            panic!("cannot start redis-server ({err}): install it with `make setup` (apt-get install redis-server)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis::Client::open(self.url()).unwrap().get_connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    fn answer_keys(&self) -> Vec<String> {
        redis::cmd("KEYS").arg("slmkit:answer:*").query(&mut self.connection()).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `slmkit serve` process with `llm` as its LLM tier and the `[shared]` (and other) sections
/// in `shared`.
fn start(llm: &TestServer, shared: &str) -> Serve {
    try_start(llm, shared).unwrap_or_else(|err| panic!("slmkit serve did not start: {err}"))
}

/// [`start`]; `Err` with its stderr when it exits before listening.
fn try_start(llm: &TestServer, shared: &str) -> Result<Serve, String> {
    try_start_with(llm, shared, &[])
}

/// [`try_start`] with extra environment variables.
fn try_start_with(llm: &TestServer, shared: &str, env: &[(&str, &str)]) -> Result<Serve, String> {
    let config = |ledger: &Path| {
        format!(
            "[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"k\"\n\n[ledger]\npath = {:?}\n\n{shared}\n",
            llm.base_url(),
            ledger.display().to_string(),
        )
    };
    Serve::start(config, &[&[("SLMKIT_LOG", "info")][..], env].concat())
}

fn shared_section(redis: &Redis, extra: &str) -> String {
    format!("[shared]\nredis_url = \"{}\"\n{extra}", redis.url())
}

/// A deterministic request from `user` (distinct users: a repeat is not a re-ask).
fn request(content: &str, user: &str) -> Value {
    json!({"model": "big", "temperature": 0, "user": user, "messages": [{"role": "user", "content": content}]})
}

async fn ask(http: &reqwest::Client, serve: &Serve, body: &Value) -> Value {
    let response = http.post(format!("{}/chat/completions", serve.base)).json(body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    response.json().await.unwrap()
}

fn content(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_make_one_backend_call_and_the_fleet_report_sums_their_ledgers() {
    let redis = Redis::start(None);
    let llm = TestServer::start().await;
    // Slow enough that every request arrives while the one call is in flight.
    llm.set_default(Behavior::reply("the one answer", 10, 3).delayed(800));
    let mut a = start(&llm, &shared_section(&redis, ""));
    let mut b = start(&llm, &shared_section(&redis, ""));
    let http = reqwest::Client::new();

    let calls = (0..50).map(|index| {
        let (http, serve) = (&http, if index % 2 == 0 { &a } else { &b });
        async move { ask(http, serve, &request("what is 2+2?", &format!("agent-{index}"))).await }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(llm.request_count(), 1, "50 identical requests over two processes: one backend call");
    assert!(answers.iter().all(|answer| content(answer) == "the one answer"));
    let hits = |serve_index: usize| {
        answers
            .iter()
            .enumerate()
            .filter(|(index, answer)| index % 2 == serve_index && answer["slmkit"]["cache"] == "hit")
            .count()
    };
    assert_eq!(hits(0) + hits(1), 49, "every answer but the one made is a hit");
    assert!(hits(0) == 25 || hits(1) == 25, "the process that did not call served only hits");

    // An answer cached by one is a hit in the other, later too.
    let later = ask(&http, &b, &request("what is 2+2?", "late-agent")).await;
    assert_eq!(later["slmkit"]["cache"], "hit");
    assert_eq!(llm.request_count(), 1);

    // The fleet report (over HTTP and from the command) equals the sum of both JSONL ledgers.
    // The stream is shipped off the call path: poll until both processes' records are in.
    let deadline = Instant::now() + Duration::from_secs(20);
    let fleet: Value = loop {
        let report: Value =
            http.get(format!("{}/slmkit/report?scope=fleet", a.base)).send().await.unwrap().json().await.unwrap();
        if report["calls"] == 51 {
            break report;
        }
        assert!(Instant::now() < deadline, "the fleet stream never held both ledgers: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a.stop();
    b.stop();
    let (mut records, warnings) = read_jsonl(&a.ledger).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    records.extend(read_jsonl(&b.ledger).unwrap().0);
    assert_eq!(records.len(), 51, "one attempt and 50 hits");
    let local = serde_json::to_value(Report::from_records(&records)).unwrap();
    for field in
        ["calls", "attempts", "served_from_cache", "served_by_llm", "escalations", "failed_calls", "prompt_tokens"]
    {
        assert_eq!(fleet[field], local[field], "{field}: fleet {fleet} vs ledgers {local}");
    }
    for field in ["llm_cost_usd", "cache_saved_usd", "counterfactual_llm_cost_usd"] {
        let (fleet, local) = (fleet[field].as_f64().unwrap_or(0.0), local[field].as_f64().unwrap_or(0.0));
        assert!((fleet - local).abs() < 1e-9, "{field}: {fleet} vs {local}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_slmkit"))
        .args(["report", "--json", "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let from_command: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_command["calls"], local["calls"]);
    assert_eq!(from_command["attempts"], local["attempts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_answer_is_deleted_fleet_wide() {
    let redis = Redis::start(None);
    let llm = TestServer::start().await;
    llm.push([Behavior::reply_text("first, rejected"), Behavior::reply_text("second")]);
    let a = start(&llm, &shared_section(&redis, ""));
    let b = start(&llm, &shared_section(&redis, ""));
    let http = reqwest::Client::new();
    let question = "name a colour";

    assert_eq!(content(&ask(&http, &a, &request(question, "agent")).await), "first, rejected");
    let in_b = ask(&http, &b, &request(question, "other")).await;
    assert_eq!((content(&in_b), &in_b["slmkit"]["cache"]), ("first, rejected", &json!("hit")), "B holds it now");
    // The same caller re-sends the identical request to A: a re-ask, rejecting the answer.
    let reask = ask(&http, &a, &request(question, "agent")).await;
    assert_eq!(content(&reask), "second");
    assert_eq!(llm.request_count(), 2);
    // B's copy goes too (the eviction is published); poll: the message crosses processes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    loop {
        round += 1;
        let answer = ask(&http, &b, &request(question, &format!("other-{round}"))).await;
        if content(&answer) != "first, rejected" {
            assert_eq!(content(&answer), "second");
            break;
        }
        assert!(Instant::now() < deadline, "B still serves the rejected answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_run_fails_no_call_warns_once_and_reconnects() {
    let mut redis = Redis::start(None);
    let llm = TestServer::start().await;
    let mut a = start(&llm, &shared_section(&redis, ""));
    let http = reqwest::Client::new();
    let mut index = 0;
    let mut asked = |http: reqwest::Client| {
        index += 1;
        let body = request(&format!("question {index}"), "agent");
        let base = a.base.clone();
        async move {
            let response = http.post(format!("{base}/chat/completions")).json(&body).send().await.unwrap();
            response.status().as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(asked(http.clone()).await, 200);
    }
    assert_eq!(redis.answer_keys().len(), 5, "answers reach L2 while Redis is up");
    redis.kill();
    for _ in 0..20 {
        assert_eq!(asked(http.clone()).await, 200, "a call failed because Redis was down");
    }
    let metrics = http.get(format!("{}/metrics", a.base.trim_end_matches("/v1"))).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let errors: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("slmkit_shared_errors_total "))
        .expect("the shared errors counter")
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{metrics}");
    redis.restart();
    // Reconnection: new answers reach the fresh (empty) Redis again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(asked(http.clone()).await, 200);
        if !redis.answer_keys().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected: {}", a.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop();
    let log = a.stderr();
    assert_eq!(log.matches("shared store unavailable").count(), 1, "one warning per outage:\n{log}");
    assert!(log.contains("shared store reachable again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_with_sigkill_blocks_the_others_only_until_its_lock_expires() {
    let redis = Redis::start(None);
    let llm = TestServer::start().await;
    // The first call hangs in the backend; the lock holder dies with it.
    llm.push([Behavior::reply_text("never delivered").delayed(60_000)]);
    llm.set_default(Behavior::reply_text("from the survivor"));
    let section = shared_section(&redis, "lock_ttl_ms = 2000\n");
    let mut holder = start(&llm, &section);
    let survivor = start(&llm, &section);
    let http = reqwest::Client::new();
    let body = request("a slow question", "agent");
    let holder_call = tokio::spawn({
        let (http, url, body) = (http.clone(), format!("{}/chat/completions", holder.base), body.clone());
        async move { http.post(url).json(&body).send().await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while llm.request_count() == 0 {
        assert!(Instant::now() < deadline, "the holder never called the backend");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let locks: Vec<String> = redis::cmd("KEYS").arg("slmkit:lock:*").query(&mut redis.connection()).unwrap();
    assert_eq!(locks.len(), 1, "the holder holds the request's lock");
    holder.kill_9();
    assert!(holder_call.await.unwrap().is_err(), "the holder's caller lost its connection");
    let started = Instant::now();
    let answer = ask(&http, &survivor, &request("a slow question", "other")).await;
    assert_eq!(content(&answer), "from the survivor");
    assert!(started.elapsed() < Duration::from_secs(30), "waited past the lock's expiry");
    assert_eq!(llm.request_count(), 2);
}

fn start_fails(llm: &TestServer, shared: &str) -> String {
    match try_start(llm, shared) {
        Ok(serve) => panic!("started with {shared}: {}", serve.stderr()),
        Err(stderr) => stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_refusing_redis_is_an_error_when_required_else_a_warning() {
    let llm = TestServer::start().await;
    let nothing = format!("redis://127.0.0.1:{}", free_port());
    let required = format!("[shared]\nredis_url = \"{nothing}\"\nrequired = true\n");
    let stderr = start_fails(&llm, &required);
    assert!(stderr.contains("[shared] required") && stderr.contains(&nothing), "{stderr}");

    let optional = start(&llm, &format!("[shared]\nredis_url = \"{nothing}\"\n"));
    assert!(optional.stderr().contains("shared store unreachable at start-up"), "{}", optional.stderr());
    let http = reqwest::Client::new();
    assert_eq!(content(&ask(&http, &optional, &request("still served", "agent")).await), "echo: still served");

    let guarded = Redis::start(Some("right-password"));
    let wrong = format!("redis://:wrong-password@127.0.0.1:{}", guarded.port);
    let stderr = start_fails(&llm, &format!("[shared]\nredis_url = \"{wrong}\"\nrequired = true\n"));
    assert!(stderr.contains("[shared] required"), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "the password leaked: {stderr}");
    let right = start(&llm, &format!("[shared]\nredis_url = \"{}\"\nrequired = true\n", guarded.url()));
    assert_eq!(content(&ask(&http, &right, &request("with the password", "agent")).await), "echo: with the password");
}

/// An SLM tier on `slm` and the adaptive router, for a serve process's configuration.
fn adaptive_sections(slm: &TestServer) -> String {
    format!(
        "[slm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"small\"\napi_key = \"k\"\n\n\
         [retry]\nslm_attempts = 1\ninitial_backoff_ms = 1\nmax_backoff_ms = 2\n\n\
         [routing]\nadaptive = true\n\n[routing.learning]\nprobe_rate = 0.0\nseed = 5\n",
        slm.base_url()
    )
}

/// A JSON classification tagged with one task (a routine call: the SLM's by the heuristic).
fn classification(text: &str) -> Value {
    json!({"model": "auto", "max_tokens": 50, "response_format": {"type": "json_object"},
           "metadata": {"slmkit_task": "Classify"},
           "messages": [{"role": "system", "content": "Classify the ticket into one of: billing, bug, other. Reply in JSON."},
                        {"role": "user", "content": text}]})
}

/// The adaptive router's view of the `Classify` cluster, through `POST /v1/slmkit/explain`.
async fn posterior(http: &reqwest::Client, serve: &Serve) -> Value {
    let response =
        http.post(format!("{}/slmkit/explain", serve.base)).json(&classification("ticket")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let decision: Value = response.json().await.unwrap();
    assert!(decision["adaptive"].is_object(), "the adaptive router decides: {decision}");
    decision["adaptive"].clone()
}

/// The parts of a posterior that rest on evidence (the sample differs per call).
fn evidence(view: &Value) -> (Value, Value, Value, Value) {
    (
        view["slm_calls"].clone(),
        view["posterior_alpha"].clone(),
        view["posterior_beta"].clone(),
        view["signals"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_and_feedback_in_one_process_teach_the_other_and_redis_down_changes_nothing_else() {
    let mut redis = Redis::start(None);
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    // The SLM answers the first call well (then it is told it was wrong), and fails the rest.
    slm.push([Behavior::reply_text("{\"label\": \"billing\"}")]);
    slm.set_default(Behavior::reply_text("not json at all"));
    llm.set_default(Behavior::reply_text("{\"label\": \"bug\"}"));
    let sections = format!("{}\n{}", shared_section(&redis, "routing_sync_ms = 50\n"), adaptive_sections(&slm));
    let mut a = start(&llm, &sections);
    let b = start(&llm, &sections);
    let http = reqwest::Client::new();
    let fresh = posterior(&http, &b).await;
    assert_eq!(fresh["slm_calls"], 0);

    let first = ask(&http, &a, &classification("ticket 0")).await;
    assert_eq!(first["slmkit"]["tier"], "slm", "{first}");
    let call_id = first["slmkit"]["call_id"].as_str().unwrap();
    let judge = |correct: bool| {
        let request = http.post(format!("{}/slmkit/feedback", a.base));
        async move {
            let response = request.json(&json!({"call_id": call_id, "correct": correct})).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    judge(false).await;
    for index in 1..6 {
        ask(&http, &a, &classification(&format!("ticket {index}"))).await;
    }
    let in_a = posterior(&http, &a).await;
    assert!(in_a["slm_calls"].as_u64().unwrap() >= 1, "{in_a}");
    assert_eq!(in_a["signals"]["caller_feedback"], 1, "{in_a}");

    // B learns A's evidence (through Redis, within a few periods), counted once: it stays put
    // however many times it is read again, and A does not count its own evidence twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    while evidence(&posterior(&http, &b).await) != evidence(&in_a) {
        assert!(Instant::now() < deadline, "B never learnt A's outcomes: {} vs {in_a}", posterior(&http, &b).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(evidence(&posterior(&http, &b).await), evidence(&in_a), "read again: still counted once");
    assert_eq!(evidence(&posterior(&http, &a).await), evidence(&in_a), "A's own evidence, once");

    // A flushed Redis is rebuilt by the next publications.
    redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members: Vec<String> =
            redis::cmd("ZRANGE").arg("slmkit:{routing}:members").arg(0).arg(-1).query(&mut redis.connection()).unwrap();
        if members.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the routing state never came back after a flush: {members:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(evidence(&posterior(&http, &b).await), evidence(&in_a), "after a flush");

    // Redis down: calls go on, A keeps learning locally, B keeps what it learnt; one warning.
    redis.kill();
    for index in 6..9 {
        ask(&http, &a, &classification(&format!("ticket {index}"))).await;
    }
    judge(true).await;
    let later = posterior(&http, &a).await;
    assert_eq!(later["signals"]["caller_feedback"], 2, "A learns on alone: {later}");
    assert_eq!(evidence(&posterior(&http, &b).await), evidence(&in_a), "B keeps the fleet's evidence");
    a.stop();
    let log = a.stderr();
    assert_eq!(log.matches("shared store unavailable").count(), 1, "one warning per outage:\n{log}");
}

/// A `redis-server` that speaks only TLS, its certificate signed by a CA made here with openssl.
struct TlsRedis {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = TempDir::new("redis-tls");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "openssl {args:?} failed");
        };
        let days = ["-days", "2"];
        openssl(
            &[
                &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"][..],
                &days,
                &["-subj", "/CN=slmkit test CA"],
            ]
            .concat(),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(dir.0.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(
            &[
                &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"][..],
                &["-out", "server.pem", "-extfile", "san.ext"],
                &days,
            ]
            .concat(),
        );
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"])
            .args(["--tls-auth-clients", "no"])
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start redis-server ({err}): install it with `make setup`"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server (TLS) did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsRedis { port, dir, child }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rediss://`: the fleet works over TLS when the server's CA is trusted (through the platform
/// trust store, here `SSL_CERT_FILE`), and a required store it cannot trust stops start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_shares_answers_over_tls_and_an_untrusted_certificate_is_refused() {
    let redis = TlsRedis::start();
    let llm = TestServer::start().await;
    let shared = format!("[shared]\nredis_url = \"rediss://127.0.0.1:{}\"\nrequired = true\n", redis.port);
    let stderr = match try_start(&llm, &shared) {
        Ok(serve) => panic!("trusted a certificate from an unknown CA: {}", serve.stderr()),
        Err(stderr) => stderr,
    };
    assert!(stderr.contains("[shared] required"), "{stderr}");

    let ca = redis.dir.0.join("ca.pem");
    let trust = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let a = try_start_with(&llm, &shared, &trust).unwrap_or_else(|err| panic!("over TLS: {err}"));
    let b = try_start_with(&llm, &shared, &trust).unwrap_or_else(|err| panic!("over TLS: {err}"));
    let http = reqwest::Client::new();
    let first = ask(&http, &a, &request("asked over tls", "agent-a")).await;
    let second = ask(&http, &b, &request("asked over tls", "agent-b")).await;
    assert_eq!(content(&first), content(&second));
    assert_eq!(second["slmkit"]["cache"], "hit", "b read a's answer from Redis, over TLS");
    assert_eq!(llm.request_count(), 1);
}
