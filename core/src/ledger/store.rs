//! The ledger store: records in memory (the newest [`DEFAULT_MEMORY_LIMIT`]), running totals,
//! and, optionally, a JSONL file appended by a writer thread.
//!
//! Recording never does I/O on the caller's thread: the line goes down a channel to the
//! writer, which writes whole lines (a crash leaves at most a torn last line, which
//! [`read_jsonl`] skips) and flushes after each batch. [`Ledger::flush`] waits for it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use super::record::AttemptRecord;
use super::report::{CallEnd, Report, Totals};
use crate::error::{Error, Result};

/// Records kept in memory by default; the JSONL file, if any, keeps everything.
pub const DEFAULT_MEMORY_LIMIT: usize = 100_000;

/// Keeps records in memory (the newest `memory_limit`) and running totals, and, optionally,
/// appends each record to a JSONL file through a writer thread. Cheap to clone; clones share
/// everything. The last clone to go flushes the file.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Shared>,
}

struct Shared {
    memory: Mutex<Memory>,
    file: Option<FileWriter>,
    /// Set when the process is stopping: attempts cut off from here on were not cancelled by
    /// their callers (see [`Ledger::mark_shutting_down`]).
    shutting_down: std::sync::atomic::AtomicBool,
    /// Where every record also goes (the fleet's stream), once set.
    sink: std::sync::OnceLock<Arc<dyn RecordSink>>,
    observers: RwLock<Vec<Arc<dyn RecordObserver>>>,
}

/// Told of every record as it is recorded (the router's outcome statistics). Called on the
/// recording thread, outside the ledger's lock: it must be quick and must not record.
pub trait RecordObserver: Send + Sync {
    fn observe(&self, record: &AttemptRecord);
}

/// Somewhere besides memory and the file that every record is handed to, such as the fleet
/// ledger's Redis stream. `append` must not wait on I/O: it runs on the caller's thread.
pub trait RecordSink: Send + Sync {
    fn append(&self, record: &AttemptRecord);

    /// Waits (bounded) until what was appended has left, where the sink can say.
    fn flush(&self) {}
}

struct Memory {
    records: VecDeque<AttemptRecord>,
    memory_limit: usize,
    totals: Totals,
    /// Records ever recorded, evicted ones included: the mark [`Ledger::records_since`] takes.
    recorded: u64,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::in_memory()
    }
}

impl Ledger {
    /// A ledger kept in memory only.
    pub fn in_memory() -> Self {
        Ledger::new(DEFAULT_MEMORY_LIMIT, None)
    }

    /// A ledger that also appends to `path` (created if missing).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened for appending, or the writer thread cannot
    /// be started.
    pub fn with_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io { context: format!("cannot open ledger file {}", path.display()), source })?;
        Ok(Ledger::new(DEFAULT_MEMORY_LIMIT, Some(FileWriter::start(path, file)?)))
    }

    /// An in-memory ledger keeping only the newest `memory_limit` records (the running totals
    /// keep counting everything).
    pub fn with_memory_limit(memory_limit: usize) -> Self {
        Ledger::new(memory_limit, None)
    }

    fn new(memory_limit: usize, file: Option<FileWriter>) -> Self {
        let memory = Memory { records: VecDeque::new(), memory_limit, totals: Totals::default(), recorded: 0 };
        Ledger {
            inner: Arc::new(Shared {
                memory: Mutex::new(memory),
                file,
                shutting_down: Default::default(),
                sink: std::sync::OnceLock::new(),
                observers: RwLock::new(Vec::new()),
            }),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Only pushes and reads happen under this lock, never I/O.
        self.inner.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `observer`, told of every record from now on.
    pub fn observe(&self, observer: Arc<dyn RecordObserver>) {
        self.inner.observers.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(observer);
    }

    /// The JSONL file the ledger appends to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.file.as_ref().map(|file| file.path.as_path())
    }

    /// Adds a record, and hands it to the file's writer, if there is one. Never waits on I/O.
    pub fn record(&self, record: AttemptRecord) {
        if let Some(file) = &self.inner.file {
            file.append(&record);
        }
        if let Some(sink) = self.inner.sink.get() {
            sink.append(&record);
        }
        for observer in self.inner.observers.read().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            observer.observe(&record);
        }
        let mut memory = self.memory();
        memory.totals.add(&record);
        memory.recorded += 1;
        memory.records.push_back(record);
        while memory.records.len() > memory.memory_limit {
            memory.records.pop_front();
        }
    }

    /// Counts how a call ended (the running totals' failed calls and escalations).
    pub(crate) fn end_call(&self, end: CallEnd) {
        self.memory().totals.end_call(end);
    }

    /// The records in memory, oldest first.
    pub fn records(&self) -> Vec<AttemptRecord> {
        self.memory().records.iter().cloned().collect()
    }

    /// How many records have been recorded so far (evicted ones included): a mark for
    /// [`Ledger::records_since`].
    pub fn recorded(&self) -> u64 {
        self.memory().recorded
    }

    /// The records recorded after `mark` (a [`Ledger::recorded`] reading) that are still in
    /// memory, oldest first. How `slmkit eval` finds a failed call's attempts, which no
    /// response names.
    pub fn records_since(&self, mark: u64) -> Vec<AttemptRecord> {
        let memory = self.memory();
        let first_in_memory = memory.recorded - memory.records.len() as u64;
        let skip = usize::try_from(mark.saturating_sub(first_in_memory)).unwrap_or(usize::MAX);
        memory.records.iter().skip(skip).cloned().collect()
    }

    /// The newest served record of `call_id` still in memory.
    pub fn served_record(&self, call_id: &str) -> Option<AttemptRecord> {
        self.memory().records.iter().rev().find(|record| record.served && record.call_id == call_id).cloned()
    }

    /// The report over the records in memory.
    pub fn report(&self) -> Report {
        Report::over(&self.memory().records)
    }

    /// Everything recorded since the ledger was opened, evicted records included. Never
    /// lower than an earlier reading.
    pub fn totals(&self) -> Totals {
        self.memory().totals.clone()
    }

    /// Waits until every record recorded so far is written to the file (a no-op without one).
    /// Blocks the calling thread: from async code, call it in `spawn_blocking`.
    pub fn flush(&self) {
        if let Some(file) = &self.inner.file {
            file.flush();
        }
        if let Some(sink) = self.inner.sink.get() {
            sink.flush();
        }
    }

    /// Also hands every record from now on to `sink`. Once per ledger (clones included): a
    /// second sink is refused and returned.
    ///
    /// # Errors
    /// The sink back, when one is already set.
    pub fn also_to(&self, sink: Arc<dyn RecordSink>) -> std::result::Result<(), Arc<dyn RecordSink>> {
        self.inner.sink.set(sink)
    }

    /// Says the process is shutting down: attempts dropped from now on are recorded as cut
    /// off by the shutdown, not as cancelled by their callers. `slmkit serve` calls it when its
    /// shutdown grace period is over, just before it stops the requests still running.
    pub fn mark_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`Ledger::mark_shutting_down`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Writes that failed since the ledger was opened (they are logged as warnings too).
    /// Exact after [`Ledger::flush`].
    pub fn write_errors(&self) -> u64 {
        self.inner.file.as_ref().map_or(0, |file| file.errors.load(Ordering::Relaxed))
    }
}

/// What the writer thread is asked to do.
enum Job {
    /// A record as one JSON line, newline included.
    Line(String),
    /// Answer once everything before this is written.
    Flush(mpsc::Sender<()>),
}

/// The JSONL file and the thread that appends to it.
struct FileWriter {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    errors: Arc<AtomicU64>,
    path: PathBuf,
}

/// Lines written in one go at most; more wait for the next batch.
const BATCH_BYTES: usize = 1 << 20;

impl FileWriter {
    fn start(path: PathBuf, file: File) -> Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let errors = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&errors);
        let shown = path.clone();
        let thread = std::thread::Builder::new()
            .name("slmkit-ledger".into())
            .spawn(move || write_lines(file, &shown, &queue, &counted))
            .map_err(|source| Error::Io { context: "cannot start the ledger writer thread".into(), source })?;
        Ok(FileWriter { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)), errors, path })
    }

    fn send(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok())
    }

    fn append(&self, record: &AttemptRecord) {
        match serde_json::to_string(record) {
            Ok(mut line) => {
                line.push('\n');
                if !self.send(Job::Line(line)) {
                    self.failed("the ledger writer thread has stopped");
                }
            }
            Err(err) => self.failed(&format!("cannot serialise a ledger record: {err}")),
        }
    }

    fn failed(&self, reason: &str) {
        tracing::warn!(path = %self.path.display(), reason, "cannot append to the ledger file");
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.send(Job::Flush(done)) {
            // An error here means the writer is gone, and so is anything left to wait for.
            let _ = wait.recv();
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written everything queued.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes what is queued, writes it as one batch of whole lines, flushes,
/// then answers any flush waiting on that batch.
fn write_lines(mut file: File, path: &Path, queue: &mpsc::Receiver<Job>, errors: &AtomicU64) {
    while let Ok(first) = queue.recv() {
        let mut batch = String::new();
        let mut lines = 0u64;
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Line(line) => {
                    batch.push_str(&line);
                    lines += 1;
                }
                Job::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(err) = file.write_all(batch.as_bytes()).and_then(|()| file.flush()) {
                tracing::warn!(path = %path.display(), %err, "cannot append to the ledger file");
                errors.fetch_add(lines, Ordering::Relaxed);
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}
/// Reads a ledger JSONL file. Lines that do not parse (a torn last line after a crash) are
/// skipped and returned as warnings, never fatal.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read at all.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<(Vec<AttemptRecord>, Vec<String>)> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|source| Error::Io { context: format!("cannot open ledger {}", path.display()), source })?;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line =
            line.map_err(|source| Error::Io { context: format!("cannot read ledger {}", path.display()), source })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<AttemptRecord>(&line) {
            Ok(record) => records.push(record),
            Err(err) => {
                let warning =
                    format!("{}:{}: skipped a line that is not a ledger record ({err})", path.display(), index + 1);
                tracing::warn!("{warning}");
                warnings.push(warning);
            }
        }
    }
    Ok((records, warnings))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tier::Tier;

    fn record(call: &str, attempt: u32, served: bool) -> AttemptRecord {
        AttemptRecord {
            served,
            cost_usd: 0.001,
            prompt_tokens: 10,
            ..AttemptRecord::new(call, attempt, Tier::Llm, "remote", "m", Some("a task tag long enough to fill pipes"))
        }
    }

    #[test]
    fn totals_keep_counting_after_the_memory_buffer_evicts() {
        let ledger = Ledger::with_memory_limit(3);
        let mut last = Totals::default();
        for call in 0..10 {
            ledger.record(record(&format!("c{call}"), 1, true));
            let totals = ledger.totals();
            assert!(totals.calls > last.calls && totals.attempts > last.attempts && totals.cost_usd > last.cost_usd);
            last = totals;
        }
        assert_eq!((last.calls, last.served_by_llm, last.prompt_tokens), (10, 10, 100));
        assert_eq!(ledger.records().len(), 3);
        assert_eq!(ledger.report().calls, 3, "the report covers the records in memory");
    }

    /// A ledger file nobody drains (a pipe whose reader is busy, a stalled disk) must not stall
    /// the caller: before the writer thread, the 65th KiB blocked `record` forever.
    #[test]
    fn recording_does_not_wait_for_the_file() {
        let dir = std::env::temp_dir().join(format!("slmkit-ledger-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("ledger.fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // The reader opens the pipe (opening its write end waits for one), then waits to be told to drain.
        let (drain, drain_now) = mpsc::channel::<()>();
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || {
            let mut pipe = File::open(reader_path).unwrap();
            drain_now.recv().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut pipe, &mut text).unwrap();
            text
        });
        let ledger = Ledger::with_file(&fifo).unwrap();
        let (done, finished) = mpsc::channel();
        let recorder = ledger.clone();
        std::thread::spawn(move || {
            // About 600 KB: far more than a pipe holds.
            for attempt in 1..=2000 {
                recorder.record(record("call", attempt, false));
            }
            done.send(()).unwrap();
        });
        let started = Instant::now();
        let recorded = finished.recv_timeout(Duration::from_secs(10));
        assert!(recorded.is_ok(), "record() blocked on the file for {:?}", started.elapsed());
        assert_eq!(ledger.records().len(), 2000);
        drain.send(()).unwrap();
        ledger.flush();
        assert_eq!(ledger.write_errors(), 0);
        drop(ledger);
        let text = reader.join().unwrap();
        assert_eq!(text.lines().count(), 2000);
        assert!(text.lines().all(|line| serde_json::from_str::<AttemptRecord>(line).is_ok()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flush_makes_the_file_complete_and_drop_flushes_too() {
        let path = std::env::temp_dir().join(format!("slmkit-ledger-flush-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let ledger = Ledger::with_file(&path).unwrap();
        for attempt in 1..=50 {
            ledger.record(record("call", attempt, attempt == 50));
        }
        ledger.flush();
        assert_eq!(read_jsonl(&path).unwrap().0, ledger.records());
        ledger.record(record("other", 1, true));
        drop(ledger);
        assert_eq!(read_jsonl(&path).unwrap().0.len(), 51);
        let _ = std::fs::remove_file(&path);
    }
}
