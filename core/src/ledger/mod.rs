//! The retry-accounting ledger: one record per attempt, priced, and a report whose savings
//! are net of every retry and escalation.
//!
//! - [`record`]: the attempt record and its outcome;
//! - [`pricing`]: what a tier costs;
//! - [`store`]: the [`Ledger`] itself (memory, running totals, the JSONL file's writer thread)
//!   and the JSONL reader;
//! - [`report`]: the [`Report`] over records, and the running [`Totals`].

pub mod pricing;
pub mod record;
pub mod report;
pub mod store;

/// Re-exported from [`crate::tier`], where it lives now, so `slmkit::ledger::Tier` keeps working.
pub use crate::tier::Tier;
pub use pricing::Pricing;
pub use record::{AttemptRecord, FeedbackSource, Outcome, Verdict};
pub(crate) use report::CallEnd;
pub use report::{ClusterSignals, Report, Totals};
pub use store::{read_jsonl, Ledger, RecordObserver, RecordSink, DEFAULT_MEMORY_LIMIT};
