//! Error types of the processing layer.

use spanflow_otlp::TraceRequest;

/// A processor configuration that cannot be turned into a running processor.
///
/// Returned by [`Chain::from_config`](crate::Chain::from_config) and by each
/// processor's `from_config`; says which processor and what is wrong so a
/// relay can point at the offending entry of its configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorConfigError {
    /// A glob pattern did not compile (cargo feature `regex`).
    #[cfg(feature = "regex")]
    #[error("processor `{processor}`: invalid glob `{pattern}`")]
    Glob {
        /// Name of the processor whose configuration holds the pattern.
        processor: String,
        /// The pattern as written.
        pattern: String,
        /// What globset said.
        #[source]
        source: globset::Error,
    },
    /// A regular expression did not compile (cargo feature `regex`).
    #[cfg(feature = "regex")]
    #[error("processor `{processor}`: invalid regex `{pattern}`")]
    Regex {
        /// Name of the processor whose configuration holds the pattern.
        processor: String,
        /// The pattern as written.
        pattern: String,
        /// What the regex crate said.
        #[source]
        source: Box<regex::Error>,
    },
    /// A value is outside its allowed range or combination.
    #[error("processor `{processor}`: {message}")]
    Invalid {
        /// Name of the processor whose configuration is wrong.
        processor: String,
        /// What is wrong, in lower case.
        message: String,
    },
    /// Two processors in one chain have the same name.
    #[error("duplicate processor name `{0}`")]
    DuplicateName(String),
    /// The configuration asks for something this build left out: enable the named cargo
    /// feature (of `spanflow-process`, or the same-named one of the `spanflow` facade).
    #[error("{what} needs the `{feature}` cargo feature, which this build does not enable")]
    FeatureDisabled {
        /// What was asked for.
        what: &'static str,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
}

impl ProcessorConfigError {
    pub(crate) fn invalid(processor: &str, message: impl Into<String>) -> Self {
        ProcessorConfigError::Invalid {
            processor: processor.to_owned(),
            message: message.into(),
        }
    }
}

/// A batch that could not be processed.
///
/// The batch is lost to the pipeline (that is the price of a panicking
/// processor: one batch, never the pipeline), but the error says which
/// processor failed so the caller can count and log it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// A processor panicked while handling the batch.
    #[error("processor `{processor}` panicked: {message}")]
    Panicked {
        /// Name of the processor that panicked.
        processor: String,
        /// The panic payload, if it was a string.
        message: String,
    },
    /// A processor reported a failure it could not recover from.
    #[error("processor `{processor}` failed: {message}")]
    Failed {
        /// Name of the processor that failed.
        processor: String,
        /// What went wrong, in lower case.
        message: String,
    },
}

impl ProcessError {
    /// The name of the processor that failed.
    pub fn processor(&self) -> &str {
        match self {
            ProcessError::Panicked { processor, .. } | ProcessError::Failed { processor, .. } => {
                processor
            }
        }
    }
}

/// A batch the [`Scheduler`](crate::Scheduler) refused; the batch is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The scheduler is shutting down or has shut down.
    #[error("scheduler is shut down")]
    ShutDown(TraceRequest),
}

impl std::fmt::Debug for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleError::ShutDown(req) => f
                .debug_struct("ShutDown")
                .field("spans", &req.span_count())
                .finish(),
        }
    }
}

impl ScheduleError {
    /// Takes back the batch that was not accepted.
    pub fn into_inner(self) -> TraceRequest {
        match self {
            ScheduleError::ShutDown(req) => req,
        }
    }
}

/// Turns a panic payload into something printable.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
