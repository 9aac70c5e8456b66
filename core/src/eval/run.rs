//! Running tasks through a client, one at a time, and judging each answer.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::report::{EvalResult, TaskResult};
use super::tasks::Task;
use crate::client::{Backend, Client};
use crate::error::{Error, Result};
use crate::hints::HINT_FIELD;
use crate::ledger::{AttemptRecord, FeedbackSource, Outcome};
use crate::metadata::CallMetadata;
use crate::tier::Tier;
use crate::types::ChatCompletion;

/// How a run goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// Ask the bare model: every request carries `{"slmkit": {"pipeline": "bare"}}` (see
    /// [`crate::hints::is_bare`]): the SLM alone, one attempt, no validators, no grammar.
    pub bare: bool,
}

/// How long [`Client::evaluate`] waits to reach a remote endpoint that answers first.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// Runs `tasks` (see [`crate::eval::parse_tasks`] / [`crate::eval::read_tasks`]) through
    /// this client, one at a time, and adds up the results: the call the bindings'
    /// `evaluate` make. The ledger keeps every attempt, as for any call.
    ///
    /// # Errors
    /// As [`preflight`]: a remote endpoint that answers first and cannot be reached. Failed
    /// calls are not errors: each counts as a wrong task, with its reason.
    pub async fn evaluate(&self, tasks: &[Task], options: &EvalOptions) -> Result<EvalResult> {
        preflight(self, PREFLIGHT_TIMEOUT).await?;
        Ok(run_tasks(self, tasks, options, |_| {}).await)
    }
}

/// The longest answer kept in a [`TaskResult`], in characters.
const ANSWER_CHARS: usize = 2000;

/// Runs `tasks` through `client` one at a time, so each call's latency is its own and its
/// ledger records are the ones recorded while it ran, and judges each answer. A task whose
/// call fails counts as wrong, with the error as its reason; the run never stops early.
/// `progress` sees each result as it is made.
///
/// Sharing `client` with other callers during a run mixes their ledger records into the
/// failed tasks' figures (a failed call's records are found by when they were recorded).
pub async fn run_tasks(
    client: &Client,
    tasks: &[Task],
    options: &EvalOptions,
    mut progress: impl FnMut(&TaskResult),
) -> EvalResult {
    let mut results = Vec::with_capacity(tasks.len());
    // Each run is its own caller: a second run of the same tasks on this client is not a
    // re-ask of the first run's answers (which would reject them and retry every task).
    let caller = crate::types::new_id("slmkit-eval-");
    for task in tasks {
        let result = run_task(client, task, options, &caller).await;
        progress(&result);
        results.push(result);
    }
    let name = |tier: Tier| client.tier(tier).map(|config| config.backend.model());
    EvalResult::new(if options.bare { "bare" } else { "pipeline" }, name(Tier::Slm), name(Tier::Llm), results)
}

async fn run_task(client: &Client, task: &Task, options: &EvalOptions, caller: &str) -> TaskResult {
    let mut request = task.request.clone();
    request.user.get_or_insert_with(|| caller.to_owned());
    if options.bare {
        match request.extra.get_mut(HINT_FIELD) {
            Some(Value::Object(hints)) => {
                hints.insert("pipeline".into(), json!("bare"));
            }
            _ => {
                request.extra.insert(HINT_FIELD.into(), json!({"pipeline": "bare"}));
            }
        }
    }
    let ledger = client.ledger();
    let mark = ledger.recorded();
    let started = Instant::now();
    let answered = client.create(&request).await;
    let latency = started.elapsed();
    let since = ledger.records_since(mark);
    let mut result = TaskResult::new(task, latency.as_secs_f64() * 1000.0);
    match answered {
        Ok(completion) => {
            let metadata = CallMetadata::of(&completion.extra);
            let records: Vec<AttemptRecord> = match &metadata {
                Some(metadata) => since.into_iter().filter(|record| record.call_id == metadata.call_id).collect(),
                None => since,
            };
            result.add_records(&records);
            if let Some(metadata) = metadata {
                result.served_by = metadata.tier;
                result.cache = Some(metadata.cache);
                result.slm_first_try = metadata
                    .attempts
                    .first()
                    .is_some_and(|first| first.tier == Tier::Slm && first.outcome == Outcome::Ok);
            }
            let verdict = task.check.judge(&completion);
            if let Some(call_id) = CallMetadata::of(&completion.extra).map(|metadata| metadata.call_id) {
                // The check's verdict teaches the adaptive router; a call the ledger no longer
                // holds has nothing to teach.
                let _unknown_call =
                    client.judge(&call_id, verdict.correct, verdict.reason.clone(), FeedbackSource::Eval);
            }
            result.correct = verdict.correct;
            result.reason = verdict.reason;
            result.answer = Some(shown_answer(&completion));
        }
        Err(err) => {
            result.add_records(&since);
            result.reason = Some(format!("the call failed: {err}"));
            result.error = Some(err.to_string());
            result.error_kind = Some(err.kind().to_owned());
        }
    }
    result
}

/// The answer as the result shows it: the text, or the tool calls as JSON, cut to
/// [`ANSWER_CHARS`].
fn shown_answer(completion: &ChatCompletion) -> String {
    let calls = completion.choices.first().and_then(|choice| choice.message.tool_calls.as_ref());
    let text = match calls {
        Some(calls) if !calls.is_empty() => {
            let calls: Vec<Value> = calls
                .iter()
                .map(|call| json!({"name": call.function.name, "arguments": call.function.arguments}))
                .collect();
            let content = completion.content();
            let calls = Value::Array(calls).to_string();
            if content.trim().is_empty() {
                calls
            } else {
                format!("{content}\n{calls}")
            }
        }
        _ => completion.content().to_owned(),
    };
    match text.char_indices().nth(ANSWER_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Checks, before a run, that a remote tier that answers first (a remote SLM, or the LLM when
/// there is no SLM) can be reached: a run against a server that is not there would otherwise
/// report every task wrong. An unreachable LLM behind an SLM is not checked: its failures are
/// part of what the run measures (the tasks that needed it fail, each with its reason).
///
/// # Errors
/// [`Error::Connection`] naming the endpoint when a TCP connection cannot be made within
/// `timeout`; [`Error::Config`] for an endpoint URL without a host.
pub async fn preflight(client: &Client, timeout: Duration) -> Result<()> {
    let first = match client.tier(Tier::Slm) {
        Some(slm) => slm,
        None => match client.tier(Tier::Llm) {
            Some(llm) => llm,
            None => return Ok(()),
        },
    };
    let Backend::Remote(remote) = &first.backend else {
        return Ok(());
    };
    let url = remote.url();
    let address = host_and_port(url).ok_or_else(|| Error::Config(format!("{url} names no host")))?;
    let unreachable = |reason: String| Error::Connection { url: url.to_owned(), reason, source: None };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(unreachable(format!("nothing answers at {address} ({err}); is the server running?"))),
        Err(_) => Err(unreachable(format!("no connection to {address} within {} s", timeout.as_secs_f64()))),
    }
}

/// `host:port` of an http(s) URL, with the scheme's default port.
fn host_and_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return None;
    }
    // An IPv6 host is bracketed: its port follows the `]`.
    let has_port = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.contains("]:"),
        None => authority.contains(':'),
    };
    if has_port {
        return Some(authority.to_owned());
    }
    let port = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    Some(format!("{authority}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_takes_the_scheme_default() {
        assert_eq!(host_and_port("http://127.0.0.1:8080/v1/chat/completions").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host_and_port("https://api.openai.com/v1/chat/completions").as_deref(), Some("api.openai.com:443"));
        assert_eq!(host_and_port("http://localhost/v1").as_deref(), Some("localhost:80"));
        assert_eq!(host_and_port("http://[::1]:9/v1").as_deref(), Some("[::1]:9"));
        assert_eq!(host_and_port("http:///v1"), None);
    }
}
