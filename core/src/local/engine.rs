//! The local engine: one worker thread owning a llama.cpp context, driven through an async API.
//!
//! `LlamaContext` and `LlamaSampler` are not `Send`, so they live on the worker thread for
//! their whole life. Callers hand it jobs over a bounded queue and read events back over a
//! channel. The worker decodes every active request's next token in one llama.cpp batch
//! (each request is a sequence of a unified KV cache).
//!
//! Prefix reuse: when a request ends, its sequence's KV state is snapshotted into host memory
//! (see [`super::prefix_store`]) and its cells are freed, so the KV cache holds only running
//! requests and every decode step attends over their cells alone. A new request starts from
//! whichever shares the longest prefix with its prompt: a snapshot, restored into its sequence,
//! or a running sequence, whose cells `seq_cp` shares with it (a unified cache shares cells
//! instead of duplicating them). A request arriving while another one is still reading the
//! same long prefix waits for it instead of reading it a second time.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::grammar::OutputConstraint;
use super::model::{backend, LoadedModel, LocalModel};
use super::output::{Scan, StopScanner, Utf8Assembler};
use super::prefix_store::{common_prefix, PrefixStore};
pub(crate) use super::sampling::Sampling;
use super::sampling::{build_samplers, pick, timed, GrammarSamplers, Penalties, Picking, Stage};
use crate::error::{Error, Result};
use crate::schema::SchemaLimits;
use crate::types::FinishReason;

/// How a local engine is sized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    /// Requests decoded together, each in its own KV-cache sequence. Default 4.
    pub slots: usize,
    /// The context window of each request, prompt and output together. Default: the model's
    /// trained context, capped at 4096.
    pub context_per_slot: Option<u32>,
    /// Tokens of finished requests' KV state kept in host memory, so a later request sharing
    /// a prefix (system prompt, tools, earlier turns) skips re-reading it; the least recently
    /// used snapshots are dropped beyond this. A token costs what it costs in the KV cache:
    /// `2 × layers × KV heads × head size × 2` bytes (12 KiB for Qwen2.5-0.5B, 56 KiB for
    /// 7B). Default: four context windows. The KV cache itself is `slots × context_per_slot`
    /// cells, allocated once.
    pub prefix_cache_tokens: Option<u32>,
    /// Requests that may wait for a slot before new ones are refused with
    /// [`Error::Overloaded`]. Default 64.
    pub queue_capacity: usize,
    /// CPU threads for llama.cpp. Default: the available parallelism. llama.cpp's own default
    /// of 4 oversubscribes small machines.
    pub threads: Option<u32>,
    /// Tokens per llama.cpp decode call. Default 512.
    pub batch_size: u32,
    /// Bounds on the schemas a request may turn into a grammar, and on the time that takes.
    pub schema_limits: SchemaLimits,
    /// Masks every candidate with the output grammar before sampling, instead of checking the
    /// sampled token first. Slower, same greedy output: for tests and benches only.
    #[doc(hidden)]
    pub full_grammar: bool,
    /// Penalties for requests that set none of their own (`frequency_penalty`,
    /// `presence_penalty`, `repeat_penalty`). Default: none.
    pub penalties: Penalties,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            slots: 4,
            context_per_slot: None,
            prefix_cache_tokens: None,
            queue_capacity: 64,
            threads: None,
            batch_size: 512,
            schema_limits: SchemaLimits::default(),
            full_grammar: false,
            penalties: Penalties::NONE,
        }
    }
}

const DEFAULT_CONTEXT_CAP: u32 = 4096;

/// Default host-memory prefix budget, in context windows.
const DEFAULT_PREFIX_CACHE_WINDOWS: u32 = 4;

/// A request waits for another that is reading the same prompt prefix only when the wait saves
/// at least this many tokens of prompt processing.
const MIN_SHARED_WAIT: usize = 32;

pub(crate) struct Job {
    pub prompt: Vec<LlamaToken>,
    pub sampling: Sampling,
    pub constraint: OutputConstraint,
    pub max_tokens: u32,
    pub stops: Vec<String>,
    pub events: UnboundedSender<Event>,
    place: Arc<QueuePlace>,
}

/// A job's place in the engine's queue, given back exactly once: when the worker takes the
/// job into a slot, or when its caller drops [`JobEvents`] (a cancelled call), whichever comes
/// first. So a cancelled call stops counting against the queue the moment it is cancelled.
struct QueuePlace {
    held: AtomicBool,
    queued: Arc<AtomicUsize>,
}

impl QueuePlace {
    fn release(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The events of a submitted job. Dropping it cancels the job: its queue place is freed at
/// once, and the worker drops the job at its next step.
pub(crate) struct JobEvents {
    receiver: UnboundedReceiver<Event>,
    place: Arc<QueuePlace>,
}

impl JobEvents {
    pub(crate) async fn recv(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }
}

impl Drop for JobEvents {
    fn drop(&mut self) {
        self.place.release();
    }
}

/// What the worker reports about a job.
#[derive(Debug)]
pub(crate) enum Event {
    /// Decoded text, in order. Never splits a UTF-8 character or a stop string.
    Text(String),
    Finished {
        reason: FinishReason,
        completion_tokens: u32,
        /// Prompt tokens whose KV state was reused from an earlier request.
        cached_prompt_tokens: u32,
        /// This request's share of the engine's compute time: its part of each batched decode
        /// (split by the tokens it put in the batch) and its own sampling. Time spent queued or
        /// waiting for a slot is not in it, so the shares never add up to more than the time
        /// the engine was busy.
        busy: Duration,
    },
    Failed(Error),
}

/// A running engine. Clones share the worker; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct LocalEngine {
    shared: Arc<EngineShared>,
}

struct EngineShared {
    model: LocalModel,
    jobs: Mutex<Option<Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    /// Nanoseconds the worker has spent decoding and sampling, since it started.
    busy_ns: Arc<AtomicU64>,
    queue_capacity: usize,
    context_window: u32,
    full_grammar: bool,
    schema_limits: SchemaLimits,
    penalties: Penalties,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The process that started the worker thread (see `Drop`).
    owner_pid: u32,
}

impl Drop for EngineShared {
    fn drop(&mut self) {
        // Closing the queue lets the worker finish what it holds and exit.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(worker) = self.worker.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            if std::process::id() == self.owner_pid {
                let _ = worker.join();
            } else {
                // A forked child inherits this engine but not its thread: joining would
                // panic, so the handle is let go.
                std::mem::forget(worker);
            }
        }
    }
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("model", &self.shared.model)
            .field("context_window", &self.shared.context_window)
            .finish_non_exhaustive()
    }
}

/// llama.cpp may mutate the model while creating a context, so contexts are made one at a time.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

type EngineRegistry =
    Mutex<std::collections::HashMap<(std::path::PathBuf, EngineOptions), std::sync::Weak<EngineShared>>>;

fn engines() -> &'static EngineRegistry {
    static ENGINES: std::sync::OnceLock<EngineRegistry> = std::sync::OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

impl LocalEngine {
    /// The engine already running `model` with these options in this process, or a new one.
    ///
    /// Clients configured alike share one engine, so they share its KV cache (a prefix one
    /// client's request left behind serves another's) and its memory, instead of each holding
    /// a context of its own.
    ///
    /// # Errors
    /// As [`LocalEngine::start`].
    pub fn shared(model: LocalModel, options: EngineOptions) -> Result<Self> {
        let key = (model.path().to_owned(), options.clone());
        let mut registry = engines().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = registry.get(&key).and_then(std::sync::Weak::upgrade) {
            if shared.owner_pid == std::process::id() && shared.model.shares_weights_with(&model) {
                return Ok(LocalEngine { shared });
            }
        }
        let engine = Self::start(model, options)?;
        registry.retain(|_, engine| engine.strong_count() > 0);
        registry.insert(key, Arc::downgrade(&engine.shared));
        Ok(engine)
    }

    /// Whether `self` and `other` are one engine (see [`LocalEngine::shared`]).
    pub fn is_same_engine(&self, other: &LocalEngine) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Starts a worker thread with its own context over `model`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for impossible options; [`Error::Inference`] when llama.cpp
    /// cannot create the context (e.g. out of memory).
    pub fn start(model: LocalModel, options: EngineOptions) -> Result<Self> {
        if options.slots == 0 || options.slots > 64 {
            return Err(Error::invalid_request("engine slots must be from 1 to 64", Some("slots")));
        }
        if options.batch_size < 8 {
            return Err(Error::invalid_request("engine batch_size must be at least 8", Some("batch_size")));
        }
        let trained = model.context_length().max(1);
        let context_window = options.context_per_slot.unwrap_or(trained.min(DEFAULT_CONTEXT_CAP));
        if context_window < 16 || context_window > trained {
            return Err(Error::invalid_request(
                format!(
                    "context_per_slot must be from 16 to the model's trained context ({trained}), got {context_window}"
                ),
                Some("context_per_slot"),
            ));
        }
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
            .max(1);
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let worker_config = WorkerConfig {
            slots: options.slots,
            context_window,
            prefix_cache_tokens: options
                .prefix_cache_tokens
                .unwrap_or(context_window.saturating_mul(DEFAULT_PREFIX_CACHE_WINDOWS)),
            threads,
            batch_size: options.batch_size,
        };
        let loaded = model.shared();
        let worker_busy = Arc::clone(&busy_ns);
        let worker = std::thread::Builder::new()
            .name(format!("slmkit-engine-{}", model.name()))
            .spawn(move || run_worker(loaded, worker_config, jobs_rx, ready_tx, worker_busy))
            .map_err(|err| Error::Io { context: "cannot start the engine thread".into(), source: err })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                let _ = worker.join();
                return Err(err);
            }
            Err(_) => {
                let _ = worker.join();
                return Err(Error::Inference("the engine thread died while starting".into()));
            }
        }
        Ok(LocalEngine {
            shared: Arc::new(EngineShared {
                model,
                jobs: Mutex::new(Some(jobs_tx)),
                queued,
                busy_ns,
                queue_capacity: options.queue_capacity,
                context_window,
                full_grammar: options.full_grammar,
                penalties: options.penalties,
                schema_limits: options.schema_limits,
                worker: Mutex::new(Some(worker)),
                owner_pid: std::process::id(),
            }),
        })
    }

    /// The model this engine runs.
    pub fn model(&self) -> &LocalModel {
        &self.shared.model
    }

    /// The context window of one request: prompt plus output.
    pub fn context_window(&self) -> u32 {
        self.shared.context_window
    }

    /// Whether jobs use the full-grammar sampling path ([`EngineOptions::full_grammar`]).
    pub(crate) fn full_grammar(&self) -> bool {
        self.shared.full_grammar
    }

    /// The penalties for requests that set none of their own.
    pub(crate) fn default_penalties(&self) -> Penalties {
        self.shared.penalties
    }

    /// The bounds on request schemas this engine enforces.
    pub fn schema_limits(&self) -> &SchemaLimits {
        &self.shared.schema_limits
    }

    /// Requests waiting for a slot right now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The time the engine has spent decoding and sampling since it started: the sum of every
    /// request's `busy` share, and the most any energy estimate may be charged for.
    pub fn busy_time(&self) -> Duration {
        Duration::from_nanos(self.shared.busy_ns.load(Ordering::Relaxed))
    }

    /// Queues a job; its events arrive on the returned receiver.
    pub(crate) fn submit(
        &self,
        prompt: Vec<LlamaToken>,
        sampling: Sampling,
        constraint: OutputConstraint,
        max_tokens: u32,
        stops: Vec<String>,
    ) -> Result<JobEvents> {
        let jobs = self.shared.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = jobs.as_ref().ok_or(Error::EngineStopped)?;
        // The count, not the channel, bounds the queue: a cancelled job leaves the count at
        // once (see `QueuePlace`) though it stays in the channel until the worker drains it.
        let capacity = self.shared.queue_capacity.max(1);
        let queued = &self.shared.queued;
        if queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < capacity).then_some(n + 1)).is_err() {
            return Err(Error::Overloaded { queued: capacity, capacity });
        }
        let place = Arc::new(QueuePlace { held: AtomicBool::new(true), queued: Arc::clone(queued) });
        let (events, receiver) = unbounded_channel();
        let job = Job { prompt, sampling, constraint, max_tokens, stops, events, place: Arc::clone(&place) };
        match sender.send(job) {
            Ok(()) => Ok(JobEvents { receiver, place }),
            Err(_) => {
                place.release();
                Err(Error::EngineStopped)
            }
        }
    }
}

struct WorkerConfig {
    slots: usize,
    context_window: u32,
    prefix_cache_tokens: u32,
    threads: u32,
    batch_size: u32,
}

/// One request in flight on the worker.
struct Active {
    /// Tells this request apart from a later one in the same sequence.
    admission: u64,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the KV cache (or in the batch being decoded).
    prompt_done: usize,
    cached_prompt_tokens: usize,
    /// Set while the request waits for another to finish reading a prefix they share.
    waiting_for: Option<SharedPrefix>,
    /// Kept apart from `sampler` so the sampled token can be checked against it alone (see
    /// [`pick`]) and the UTF-8 mask can run between the two.
    grammar: Option<LlamaSampler>,
    sampler: LlamaSampler,
    /// Whether the chain is greedy, and whether to always mask with the grammar before
    /// sampling ([`EngineOptions::full_grammar`]).
    picking: Picking,
    next_token: Option<LlamaToken>,
    completion_tokens: u32,
    max_tokens: u32,
    /// This request's share of the engine's compute time so far (see [`Event::Finished`]).
    busy: Duration,
    utf8: Utf8Assembler,
    stops: StopScanner,
    events: UnboundedSender<Event>,
}

/// A prefix another request is reading into its sequence.
#[derive(Clone, Copy)]
struct SharedPrefix {
    sequence: usize,
    admission: u64,
    tokens: usize,
}

/// A KV-cache sequence and the tokens it holds (until its request's state is snapshotted).
struct Sequence {
    seq_id: i32,
    tokens: Vec<LlamaToken>,
    active: Option<Active>,
}

impl Sequence {
    fn reading_prompt(&self) -> Option<&Active> {
        self.active.as_ref().filter(|active| active.waiting_for.is_none() && active.next_token.is_none())
    }
}

fn run_worker(
    model: Arc<LoadedModel>,
    config: WorkerConfig,
    jobs: Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<()>>,
    busy_ns: Arc<AtomicU64>,
) {
    let context = match create_context(&model, &config) {
        Ok(context) => context,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut worker = Worker {
        model: LocalModel::from_shared(Arc::clone(&model)),
        context,
        sequences: (0..config.slots)
            .map(|index| Sequence { seq_id: index as i32, tokens: Vec::new(), active: None })
            .collect(),
        slots: config.slots,
        snapshots: PrefixStore::new(config.prefix_cache_tokens as usize),
        batch: LlamaBatch::new(config.batch_size as usize, 1),
        batch_size: config.batch_size as usize,
        clock: 0,
        busy_ns,
        grammars: GrammarSamplers::default(),
    };
    let mut queue_open = true;
    let mut waiting = VecDeque::new();
    loop {
        if worker.active_count() == 0 && waiting.is_empty() {
            if !queue_open {
                return;
            }
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        // Everything queued is taken off the channel each step, so a cancelled job's prompt is
        // freed at the next step rather than when a slot frees.
        while queue_open {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => queue_open = false,
            }
        }
        waiting.retain(|job: &Job| !job.events.is_closed());
        while worker.active_count() < worker.slots {
            let Some(job) = waiting.pop_front() else { break };
            job.place.release();
            worker.admit(job);
        }
        if worker.active_count() > 0 {
            worker.step();
        }
    }
}

fn create_context<'model>(model: &'model LoadedModel, config: &WorkerConfig) -> Result<LlamaContext<'model>> {
    let total = config
        .context_window
        .checked_mul(config.slots as u32)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| Error::invalid_request("context_per_slot × slots is too large", Some("slots")))?;
    let threads = i32::try_from(config.threads).unwrap_or(i32::MAX);
    let params = LlamaContextParams::default()
        .with_n_ctx(Some(total))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_seq_max(config.slots as u32)
        // One cell pool for every sequence: `seq_cp` then shares a prefix's cells.
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let _one_at_a_time = CONTEXT_CREATION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    model
        .llama
        .new_context(backend()?, params)
        .map_err(|err| Error::Inference(format!("cannot create a llama.cpp context of {total} tokens: {err}")))
}

struct Worker<'model> {
    model: LocalModel,
    context: LlamaContext<'model>,
    sequences: Vec<Sequence>,
    /// Requests decoded at once.
    slots: usize,
    snapshots: PrefixStore<LlamaToken, SeqState>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    clock: u64,
    /// Shared with [`LocalEngine::busy_time`].
    busy_ns: Arc<AtomicU64>,
    /// Parsed output grammars, cloned for each request that uses one.
    grammars: GrammarSamplers,
}

impl Worker<'_> {
    fn active_count(&self) -> usize {
        self.sequences.iter().filter(|sequence| sequence.active.is_some()).count()
    }

    /// Starts a job from the sequence sharing the longest prefix with its prompt (see the
    /// module docs), or has it wait for a request that is still reading that prefix.
    fn admit(&mut self, job: Job) {
        if job.events.is_closed() {
            return;
        }
        let building_started = Instant::now();
        let built = build_samplers(&self.model, &job.sampling, &job.constraint, &mut self.grammars);
        let building = building_started.elapsed();
        self.count_busy(building);
        let (grammar, sampler) = match built {
            Ok(samplers) => samplers,
            Err(err) => {
                let _ = job.events.send(Event::Failed(err));
                return;
            }
        };
        self.clock += 1;
        let Some(target) = self.sequences.iter().position(|sequence| sequence.active.is_none()) else {
            let _ = job.events.send(Event::Failed(Error::Inference("no free sequence".into())));
            return;
        };
        let available = self.reusable_now(&job.prompt, target);
        let pending = self
            .sequences
            .iter()
            .enumerate()
            .filter_map(|(index, sequence)| {
                let active = sequence.reading_prompt()?;
                let tokens = reusable_prefix(&active.prompt, &job.prompt);
                Some(SharedPrefix { sequence: index, admission: active.admission, tokens })
            })
            .max_by_key(|shared| shared.tokens)
            .filter(|shared| shared.tokens >= available + MIN_SHARED_WAIT);
        self.sequences[target].active = Some(Active {
            admission: self.clock,
            prompt_done: 0,
            cached_prompt_tokens: 0,
            waiting_for: pending,
            prompt: job.prompt,
            grammar,
            sampler,
            picking: Picking::of(&job.sampling),
            next_token: None,
            completion_tokens: 0,
            max_tokens: job.max_tokens,
            busy: building,
            utf8: Utf8Assembler::default(),
            stops: StopScanner::new(job.stops),
            events: job.events,
        });
        if pending.is_none() {
            self.load_prefix(target);
        }
    }

    /// How much of `prompt` the best source could supply right now to the request in sequence
    /// `target`: a running sequence or a snapshot.
    fn reusable_now(&mut self, prompt: &[LlamaToken], target: usize) -> usize {
        let running = self.longest_running(prompt, target).map_or(0, |(reusable, _)| reusable);
        let stored = self.snapshots.longest_match(prompt).map_or(0, |(tokens, _)| reusable_prefix(tokens, prompt));
        running.max(stored)
    }

    /// The reusable length and index of the sequence other than `target` that can supply the
    /// most of `prompt`, if any can supply some.
    fn longest_running(&self, prompt: &[LlamaToken], target: usize) -> Option<(usize, usize)> {
        self.sequences
            .iter()
            .enumerate()
            .filter(|&(index, _)| index != target)
            .map(|(index, sequence)| (reusable_prefix(&sequence.tokens, prompt), index))
            .max()
            .filter(|&(reusable, _)| reusable > 0)
    }

    /// Fills the (empty) sequence `target` with the longest prefix of its request's prompt that
    /// a running sequence or a snapshot holds, and records how much that saved.
    fn load_prefix(&mut self, target: usize) {
        let Some(active) = self.sequences[target].active.as_ref() else { return };
        let prompt = &active.prompt;
        let running = self.longest_running(prompt, target);
        let stored = self
            .snapshots
            .longest_match(prompt)
            .map(|(tokens, state)| (reusable_prefix(tokens, prompt), tokens, state));
        let seq_id = self.sequences[target].seq_id;
        let reused = match (running, stored) {
            (running, Some((reusable, tokens, state))) if reusable > running.map_or(0, |(r, _)| r) => {
                let restored = self.context.state_seq_set(state, seq_id).is_ok()
                    && matches!(
                        self.context.clear_kv_cache_seq(Some(seq_id as u32), Some(reusable as u32), None),
                        Ok(true)
                    );
                if restored {
                    self.sequences[target].tokens = tokens[..reusable].to_vec();
                    reusable
                } else {
                    self.reset(target, 0)
                }
            }
            (Some((reusable, source)), _) => self.share_prefix(source, target, reusable),
            _ => 0,
        };
        if let Some(active) = self.sequences[target].active.as_mut() {
            active.prompt_done = reused;
            active.cached_prompt_tokens = reused;
        }
    }

    /// Puts the first `length` tokens of the running sequence `source` into the empty `target`
    /// and returns how many it holds.
    fn share_prefix(&mut self, source: usize, target: usize, length: usize) -> usize {
        let (from, to) = (self.sequences[source].seq_id, self.sequences[target].seq_id);
        if self.context.kv_cache_seq_cp(from, to, Some(0), Some(length as u32)).is_err() {
            return self.reset(target, 0);
        }
        self.sequences[target].tokens = self.sequences[source].tokens[..length].to_vec();
        length
    }

    /// Cuts sequence `index` to its first `keep` tokens and returns how many it holds.
    fn reset(&mut self, index: usize, keep: usize) -> usize {
        let sequence = &mut self.sequences[index];
        let seq_id = sequence.seq_id as u32;
        let kept =
            keep > 0 && matches!(self.context.clear_kv_cache_seq(Some(seq_id), Some(keep as u32), None), Ok(true));
        if !kept {
            let _ = self.context.clear_kv_cache_seq(Some(seq_id), None, None);
        }
        let held = if kept { keep } else { 0 };
        sequence.tokens.truncate(held);
        held
    }

    /// Ends sequence `index`'s request: its KV state goes to the snapshot store (unless a
    /// snapshot already holds it) and its cells are freed.
    fn release(&mut self, index: usize) {
        let sequence = &mut self.sequences[index];
        sequence.active = None;
        let tokens = std::mem::take(&mut sequence.tokens);
        if self.snapshots.would_add(&tokens) {
            if let Ok(state) = self.context.state_seq_get(sequence.seq_id, LlamaStateSeqFlags::empty()) {
                self.snapshots.insert(tokens, state);
            }
        }
        self.reset(index, 0);
    }

    /// Starts a waiting request once the request reading the prefix it waits for has read it
    /// (or stopped), from whatever holds the longest prefix by then.
    fn resolve_waits(&mut self) {
        for index in 0..self.sequences.len() {
            let Some(shared) = self.sequences[index].active.as_ref().and_then(|active| active.waiting_for) else {
                continue;
            };
            let source = &self.sequences[shared.sequence];
            let reader_still_reading =
                source.reading_prompt().is_some_and(|reader| reader.admission == shared.admission);
            let Some(active) = self.sequences[index].active.as_ref() else { continue };
            if reader_still_reading && reusable_prefix(&source.tokens, &active.prompt) < shared.tokens {
                continue;
            }
            if let Some(active) = self.sequences[index].active.as_mut() {
                active.waiting_for = None;
            }
            self.load_prefix(index);
        }
    }

    /// One decode call: the next token of every generating request, then prompt chunks.
    fn step(&mut self) {
        for index in 0..self.sequences.len() {
            if self.sequences[index].active.as_ref().is_some_and(|active| active.events.is_closed()) {
                self.release(index); // Cancelled: the caller dropped its receiver.
            }
        }
        self.resolve_waits();
        self.batch.clear();
        let mut logits_at: Vec<(usize, i32)> = Vec::new();
        // How many of the batch's tokens each sequence put in: its share of the decode's time.
        let mut batched = vec![0u32; self.sequences.len()];
        for (index, sequence) in self.sequences.iter_mut().enumerate() {
            let Some(active) = &sequence.active else { continue };
            if let Some(token) = active.next_token {
                let position = sequence.tokens.len() as i32;
                if self.batch.add(token, position, &[sequence.seq_id], true).is_ok() {
                    logits_at.push((index, self.batch.n_tokens() - 1));
                    sequence.tokens.push(token);
                    batched[index] += 1;
                }
            }
        }
        for (index, sequence) in self.sequences.iter_mut().enumerate() {
            let Some(active) = &mut sequence.active else { continue };
            if active.next_token.is_some() || active.waiting_for.is_some() {
                continue;
            }
            let room = self.batch_size.saturating_sub(self.batch.n_tokens() as usize);
            let remaining = active.prompt.len() - active.prompt_done;
            let take = room.min(remaining);
            for offset in 0..take {
                let token = active.prompt[active.prompt_done + offset];
                let is_last = active.prompt_done + offset + 1 == active.prompt.len();
                let position = sequence.tokens.len() as i32;
                if self.batch.add(token, position, &[sequence.seq_id], is_last).is_err() {
                    break;
                }
                sequence.tokens.push(token);
                batched[index] += 1;
                if is_last {
                    logits_at.push((index, self.batch.n_tokens() - 1));
                }
            }
            active.prompt_done += take;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        let decode_started = Instant::now();
        let decoded = self.context.decode(&mut self.batch);
        self.share_busy_time(decode_started.elapsed(), &batched);
        if let Err(err) = decoded {
            // The failed batch's KV state is unknown: drop every sequence in it.
            for index in 0..self.sequences.len() {
                if let Some(active) = self.sequences[index].active.take() {
                    let _ =
                        active.events.send(Event::Failed(Error::Inference(format!("llama.cpp decode failed: {err}"))));
                }
                self.reset(index, 0);
            }
            return;
        }
        for (index, batch_index) in logits_at {
            self.sample_into(index, batch_index);
        }
    }

    /// Adds `elapsed` to the engine's busy time ([`LocalEngine::busy_time`]).
    fn count_busy(&self, elapsed: Duration) {
        self.busy_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Splits `elapsed` over the sequences in the batch, by the tokens each put in it.
    fn share_busy_time(&mut self, elapsed: Duration, batched: &[u32]) {
        self.count_busy(elapsed);
        let total: u32 = batched.iter().sum();
        if total == 0 {
            return;
        }
        for (sequence, &tokens) in self.sequences.iter_mut().zip(batched) {
            if let (Some(active), true) = (sequence.active.as_mut(), tokens > 0) {
                active.busy += elapsed.mul_f64(f64::from(tokens) / f64::from(total));
            }
        }
    }

    fn sample_into(&mut self, index: usize, batch_index: i32) {
        let sampling_started = Instant::now();
        let sampled = self.sample(index, batch_index);
        let elapsed = sampling_started.elapsed();
        self.count_busy(elapsed);
        if let Some(active) = self.sequences[index].active.as_mut() {
            active.busy += elapsed;
        }
        match sampled {
            Sampled::Continues => {}
            Sampled::Finished(reason) => self.finish(index, reason),
            Sampled::Ended => self.release(index),
        }
    }

    /// Samples sequence `index`'s next token and passes its text on.
    fn sample(&mut self, index: usize, batch_index: i32) -> Sampled {
        let vocab = self.model.llama().vocab();
        let Some(active) = &mut self.sequences[index].active else { return Sampled::Continues };
        let picked = pick(
            &self.context,
            batch_index,
            &self.model,
            active.grammar.as_mut(),
            &mut active.sampler,
            active.utf8.pending(),
            active.picking,
        );
        let Some(token) = picked else {
            let _ = active.events.send(Event::Failed(Error::Inference("the sampler selected no token".into())));
            return Sampled::Ended;
        };
        let started = std::time::Instant::now();
        active.sampler.accept(token);
        let rejected = active.grammar.as_mut().is_some_and(|grammar| grammar.try_accept(token).is_err());
        timed(Stage::Accept, started);
        if rejected {
            let _ =
                active.events.send(Event::Failed(Error::Inference("the grammar rejected the sampled token".into())));
            return Sampled::Ended;
        }
        if vocab.is_eog(token) {
            return Sampled::Finished(FinishReason::Stop);
        }
        active.completion_tokens += 1;
        let text = active.utf8.push(self.model.piece(token));
        let (emit, stopped) = match active.stops.push(&text) {
            Scan::Continue(emit) => (emit, false),
            Scan::Stopped(emit) => (emit, true),
        };
        if !emit.is_empty() && active.events.send(Event::Text(emit)).is_err() {
            return Sampled::Ended; // The caller is gone.
        }
        if stopped {
            Sampled::Finished(FinishReason::Stop)
        } else if active.completion_tokens >= active.max_tokens {
            Sampled::Finished(FinishReason::Length)
        } else {
            active.next_token = Some(token);
            Sampled::Continues
        }
    }

    fn finish(&mut self, index: usize, reason: FinishReason) {
        let Some(active) = self.sequences[index].active.as_mut() else { return };
        let mut tail = active.utf8.finish();
        tail = match active.stops.push(&tail) {
            Scan::Continue(text) => text + &active.stops.finish(),
            Scan::Stopped(text) => text,
        };
        if !tail.is_empty() {
            let _ = active.events.send(Event::Text(tail));
        }
        let _ = active.events.send(Event::Finished {
            reason,
            completion_tokens: active.completion_tokens,
            cached_prompt_tokens: active.cached_prompt_tokens as u32,
            busy: active.busy,
        });
        self.release(index);
    }
}

/// What sampling a sequence's next token led to.
enum Sampled {
    Continues,
    Finished(FinishReason),
    /// The request failed or its caller left; its events say so where anyone listens.
    Ended,
}

/// How much of `prompt`'s KV state a sequence holding `tokens` can supply: their common prefix,
/// less the last prompt token, which is always decoded again because its logits start generation.
fn reusable_prefix(tokens: &[LlamaToken], prompt: &[LlamaToken]) -> usize {
    common_prefix(tokens, prompt).min(prompt.len().saturating_sub(1))
}
