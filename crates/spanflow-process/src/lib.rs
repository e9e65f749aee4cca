//! Span processing for spanflow: what happens to spans between intake and
//! export.
//!
//! This crate sits above the wire model ([`spanflow_otlp`]: batches kept as
//! OTLP protobuf bytes plus an index) and the lock-free primitives
//! ([`spanflow_lockfree`]), beside `spanflow-export` (siblings: neither knows
//! the other), and below the `spanflow` facade and the relay, which compose
//! it.
//!
//! It reads no protobuf itself. Processors read spans through
//! [`spanflow_otlp::SpanView`] (the fields keep/drop rules need in one pass
//! through [`SpanHead`], events and links through their views), drop them
//! with a keep-mask ([`TraceRequest::select`]) and edit attributes on the
//! wire ([`TraceRequest::rewrite`]); the only spans decoded into structs are
//! those [`Redact`] must mask inside an event or link.
//!
//! * [`Processor`]: takes a batch ([`TraceRequest`]), returns the batch to
//!   pass on. Built-ins: [`Filter`], [`AttributesProcessor`], [`Redact`],
//!   [`ProbabilisticSampler`], [`SpanStats`]; each is built from code or from
//!   serde configuration ([`ProcessorConfig`], tagged by `type`).
//! * [`Chain`]: processors in order, `Send + Sync`, with per-processor panic
//!   isolation and counts; [`Chain::process`] runs one batch on the calling
//!   thread.
//! * [`Scheduler`]: N named worker threads on a work-stealing deque
//!   ([`spanflow_lockfree::deque`]) running a chain over submitted batches,
//!   with a completion callback per batch.
//! * [`Parallelism`]: a dedicated, named rayon pool with a panic handler, used
//!   inside batches of at least [`DEFAULT_PARALLEL_CUTOFF`] spans.
//!
//! The API the layers above use:
//!
//! ```
//! use spanflow_otlp::TraceRequest;
//! use spanflow_process::{Chain, ProcessorConfig, Scheduler};
//!
//! let config: Vec<ProcessorConfig> = serde_json::from_str(r#"[
//!     {"type": "filter", "match_type": "glob", "span_names": ["GET /health*"]},
//!     {"type": "attributes", "actions": [{"key": "env", "action": "upsert", "value": "prod"}]},
//!     {"type": "probabilistic_sampler", "ratio": 0.1},
//!     {"type": "span_stats"}
//! ]"#)?;
//! let chain = Chain::from_config(&config)?;
//!
//! // Sequentially, on this thread:
//! let out = chain.process(TraceRequest::empty())?;
//! assert_eq!(out.span_count(), 0);
//!
//! // Or on worker threads:
//! let scheduler = Scheduler::new(chain, 2)?;
//! scheduler.submit(TraceRequest::empty(), |result| {
//!     let _batch = result.expect("no processor panicked");
//! })?;
//! scheduler.shutdown(); // drains everything submitted
//! let stats = scheduler.stats();
//! assert_eq!(stats.completed, 1);
//! assert_eq!(stats.chain.batches, 2);
//! assert!(scheduler.chain().span_stats("span_stats").is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod attributes;
mod chain;
mod config;
mod error;
mod filter;
mod matching;
mod processor;
mod redact;
mod sampler;
mod scheduler;
mod span_stats;
mod wire_edit;

/// The work-stealing deque the scheduler is built on.
use spanflow_lockfree::deque;

pub use attributes::{ActionKind, AttributeAction, AttributesConfig, AttributesProcessor, Scope};
pub use chain::{Chain, ChainBuilder, ChainStats};
pub use config::ProcessorConfig;
pub use error::{ProcessError, ProcessorConfigError, ScheduleError};
pub use filter::{Filter, FilterAction, FilterConfig, SpanKind, StatusCode};
pub use matching::{AttributeMatch, MatchType, Value};
pub use processor::{Context, DEFAULT_PARALLEL_CUTOFF, Parallelism, Processor, SpanPredicate};
pub use redact::{
    MASKED_COUNT_KEY, MAX_NESTING, REMOVED_COUNT_KEY, Redact, RedactConfig, RedactCounts,
};
pub use sampler::{ProbabilisticSampler, SamplerConfig};
pub use scheduler::{OnDone, Scheduler, SchedulerStats, Ticket};
pub use span_stats::{
    DurationHistogram, OVERFLOW_KEY, SpanStats, SpanStatsConfig, SpanStatsEntry, UNKNOWN_SERVICE,
};
pub use spanflow_otlp::{SpanHead, TraceRequest};
