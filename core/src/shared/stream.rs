//! The fleet ledger: every attempt record appended (`XADD … MAXLEN ~ N`) to the stream
//! `{prefix}ledger`, one JSON field `r` per entry, by a shipper task off the call path; and
//! the reader that gives back the whole fleet's records for a report.
//!
//! The local JSONL file stays each process's durable copy. While Redis is away, records wait
//! in a bounded backlog and are shipped when it returns; past the bound the oldest are dropped
//! from the stream (never from the file) and counted as errors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::streams::StreamRangeReply;
use tokio::sync::mpsc;

use super::{redacted, SharedStore, State};
use crate::error::{Error, Result};
use crate::ledger::{AttemptRecord, RecordSink};

/// Records held while Redis is away, at most.
const BACKLOG: usize = 100_000;
/// Records per `XADD` pipeline.
const BATCH: usize = 500;
/// A batch's budget: off the call path, so longer than a call's.
const SHIP_BUDGET: Duration = Duration::from_secs(2);

enum Job {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Hands each record to the shipper task on the store's runtime.
pub struct StreamSink {
    jobs: Mutex<mpsc::UnboundedSender<Job>>,
}

impl StreamSink {
    /// Starts the shipper for `store`'s stream.
    pub fn start(store: &SharedStore) -> Arc<StreamSink> {
        let (jobs, queue) = mpsc::unbounded_channel();
        let key = store.key("ledger", "").trim_end_matches(':').to_owned();
        store.runtime().spawn(ship(Arc::clone(store.state()), key, queue));
        Arc::new(StreamSink { jobs: Mutex::new(jobs) })
    }

    fn send(&self, job: Job) -> bool {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).send(job).is_ok()
    }
}

impl RecordSink for StreamSink {
    fn append(&self, record: &AttemptRecord) {
        if let Ok(line) = serde_json::to_string(record) {
            self.send(Job::Line(line));
        }
    }

    fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.send(Job::Flush(done)) {
            // Bounded: a Redis that is away must not hang a flush.
            let _ = wait.recv_timeout(SHIP_BUDGET * 2);
        }
    }
}

async fn ship(state: Arc<State>, key: String, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut backlog: VecDeque<String> = VecDeque::new();
    let mut open = true;
    while open || !backlog.is_empty() {
        let mut waiting = Vec::new();
        let next = if backlog.is_empty() {
            queue.recv().await
        } else {
            // Something is held back: try again soon even if nothing new comes.
            tokio::time::timeout(Duration::from_millis(200), queue.recv()).await.unwrap_or(None)
        };
        match next {
            Some(Job::Line(line)) => backlog.push_back(line),
            Some(Job::Flush(done)) => waiting.push(done),
            None if queue.is_closed() => open = false,
            None => {}
        }
        while let Ok(job) = queue.try_recv() {
            match job {
                Job::Line(line) => backlog.push_back(line),
                Job::Flush(done) => waiting.push(done),
            }
        }
        while backlog.len() > BACKLOG {
            backlog.pop_front();
            state.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        while !backlog.is_empty() {
            let batch: Vec<String> = backlog.iter().take(BATCH).cloned().collect();
            let max_len = state.config.stream_max_len;
            let stream = key.clone();
            let shipped = state
                .run("ledger stream", SHIP_BUDGET, |mut connection| async move {
                    let mut pipe = redis::pipe();
                    for line in &batch {
                        pipe.cmd("XADD")
                            .arg(&stream)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(max_len)
                            .arg("*")
                            .arg("r")
                            .arg(line)
                            .ignore();
                    }
                    pipe.query_async::<()>(&mut connection).await
                })
                .await
                .is_some();
            if !shipped {
                break;
            }
            let sent = backlog.len().min(BATCH);
            backlog.drain(..sent);
        }
        for done in waiting {
            let _ = done.send(());
        }
        if !open && !backlog.is_empty() && !state.healthy.load(std::sync::atomic::Ordering::SeqCst) {
            return; // Shutting down during an outage: the JSONL file has them.
        }
    }
}

/// Every record in the fleet ledger stream of the Redis at `url` (under `key_prefix`), oldest
/// first, and the entries that did not parse, as warnings.
///
/// # Errors
/// [`Error::SharedStore`] when Redis cannot be reached or read.
pub async fn fleet_records(url: &str, key_prefix: &str) -> Result<(Vec<AttemptRecord>, Vec<String>)> {
    let failed =
        |source| Error::SharedStore { context: format!("cannot read the fleet ledger at {}", redacted(url)), source };
    let client = redis::Client::open(url).map_err(failed)?;
    let mut connection = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| failed(redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting"))))?
        .map_err(failed)?;
    let key = format!("{key_prefix}ledger");
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        let Some(last) = page.ids.last().map(|entry| entry.id.clone()) else { break };
        for entry in &page.ids {
            match entry.get::<String>("r").map(|line| serde_json::from_str::<AttemptRecord>(&line)) {
                Some(Ok(record)) => records.push(record),
                Some(Err(err)) => warnings.push(format!("stream entry {}: {err}", entry.id)),
                None => warnings.push(format!("stream entry {} has no record field", entry.id)),
            }
        }
        start = format!("({last}");
    }
    Ok((records, warnings))
}
