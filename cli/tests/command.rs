//! The `slmkit` binary itself: `report` on a ledger file, and `serve` stopping on SIGTERM.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use slmkit::ledger::{AttemptRecord, Ledger, Outcome, Tier};
use slmkit_testserver::{Behavior, TestServer};

fn record(call: &str, attempt: u32, tier: Tier, outcome: Outcome, served: bool) -> AttemptRecord {
    AttemptRecord {
        outcome,
        prompt_tokens: 100,
        completion_tokens: 10,
        latency_ms: 1.0,
        cost_usd: 0.001,
        served,
        counterfactual_llm_cost_usd: served.then_some(0.01),
        ..AttemptRecord::new(call, attempt, tier, "remote", "m", None)
    }
}

#[test]
fn report_renders_a_ledger_file_as_a_table_and_as_json() {
    let path = std::env::temp_dir().join(format!("slmkit-cli-ledger-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ledger = Ledger::with_file(&path).unwrap();
    ledger.record(record("a", 1, Tier::Slm, Outcome::Ok, true));
    ledger.record(record("b", 1, Tier::Slm, Outcome::ValidationFailed, false));
    ledger.record(record("b", 2, Tier::Llm, Outcome::Ok, true));
    // The file is written by the ledger's writer thread: wait for it before appending to it.
    ledger.flush();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"{\"torn"))
        .unwrap();

    let json = Command::new(env!("CARGO_BIN_EXE_slmkit")).args(["report", "--json"]).arg(&path).output().unwrap();
    assert!(json.status.success());
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (report["calls"].as_u64(), report["attempts"].as_u64(), report["escalations"].as_u64()),
        (Some(2), Some(3), Some(1))
    );
    assert!(String::from_utf8_lossy(&json.stderr).contains("skipped a line"), "the torn line is a warning");

    let table = Command::new(env!("CARGO_BIN_EXE_slmkit")).arg("report").arg(&path).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("escalations SLM -> LLM") && table.contains("all-LLM counterfactual"), "{table}");

    let missing =
        Command::new(env!("CARGO_BIN_EXE_slmkit")).args(["report", "/nonexistent/ledger.jsonl"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open ledger"));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finishes_in_flight_requests_on_sigterm_and_exits_cleanly() {
    let llm = TestServer::start().await;
    llm.push([Behavior::reply_text("late but complete").delayed(800)]);
    let dir = std::env::temp_dir().join(format!("slmkit-cli-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("slmkit.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\n\n[ledger]\npath = \"ledger.jsonl\"\n",
            llm.base_url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slmkit"))
        .args(["serve", "--port", "0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");

    let url = format!("{base}/chat/completions");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "late but complete");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|line| line.contains("ledger flushed")), "{rest:?}");
    let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 1, "the in-flight call was recorded before exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The port is bound before any model loads: a clash is reported at once, naming the address,
/// even when loading the model would have failed too (or taken a minute).
#[test]
fn serve_reports_a_taken_port_with_its_address_before_loading_models() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = std::env::temp_dir().join(format!("slmkit-cli-port-{}.toml", std::process::id()));
    std::fs::write(&config, "[slm]\nbackend = \"local\"\nmodel = \"/nonexistent/model.gguf\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_slmkit"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("nonexistent"), "the port is checked before the model: {stderr}");
}
