//! `slmkit eval`: checkable agent tasks run through a client, judged, and added up: per task
//! kind and overall, accuracy, SLM first-try success, attempts, escalations, latency, tokens,
//! cost, energy, and the all-LLM counterfactual with the net saving.
//!
//! - [`tasks`]: the task file (JSONL), every line checked before anything runs;
//! - [`check`]: the check types and how an answer is judged;
//! - [`run`]: the run, one task at a time, with each call's ledger records;
//! - [`report`]: the result (JSON), its table, and two runs compared.
//!
//! # The task file
//!
//! One JSON object per line (blank lines skipped):
//! `{"id": "...", "kind": "...", "request": {chat-completions request}, "check": {...}}`, and
//! optionally `"note"`. Other keys, duplicate ids, invalid requests and unknown check types are
//! errors naming the line. `tests/eval/FORMAT.md` is the full description.
//!
//! | `check.type` | fields | right when |
//! |---|---|---|
//! | `json_fields` | `fields` | the answer is a JSON object holding each listed field, loosely equal |
//! | `json_equal` | `value` | the answer's JSON equals `value` (numbers as numbers, strings exact) |
//! | `label` | `labels`, `expected` | exactly one label appears as a whole word (case-insensitive), and it is `expected` |
//! | `tool_call` | `name`, `arguments` | a tool call named `name` holds each listed argument, loosely equal |
//! | `contains_all` | `terms` | every term appears, case-insensitive |
//! | `regex` | `pattern` | the pattern matches somewhere in the answer |
//!
//! Loosely equal ([`check::loosely_equal`]): strings trimmed and compared ignoring case,
//! numbers as numbers, arrays item by item, objects key by key. JSON answers may be wrapped in
//! one Markdown code fence; anything else around the JSON makes them wrong.
//!
//! # Bare mode
//!
//! [`EvalOptions::bare`] asks the bare model (the `pipeline: "bare"` hint, see
//! [`crate::hints::is_bare`]): the SLM alone, one attempt, no validators, and no grammar (a
//! schema or forced tool call is stated in the prompt instead), so a pair of runs shows what
//! the pipeline adds over the model.
//!
//! ```no_run
//! # async fn demo(client: slmkit::Client) -> slmkit::Result<()> {
//! use slmkit::eval::{read_tasks, run_tasks, EvalOptions};
//!
//! let tasks = read_tasks("tests/eval/agent_tasks.jsonl")?;
//! let result = run_tasks(&client, &tasks, &EvalOptions::default(), |_| {}).await;
//! println!("{}", result.to_table());
//! # Ok(()) }
//! ```

pub mod check;
pub mod report;
pub mod run;
pub mod tasks;

pub use check::{Check, Verdict};
pub use report::{EvalResult, Summary, TaskResult};
pub use run::{preflight, run_tasks, EvalOptions, PREFLIGHT_TIMEOUT};
pub use tasks::{parse_tasks, read_tasks, Task};
