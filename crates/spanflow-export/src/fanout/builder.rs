//! [`FanOutBuilder`]: the backends, their fallbacks and the spool, checked and started.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use spanflow_spool::Spool;

use super::queue::QueueState;
use super::settle::SettledCounters;
use super::{Backend, BackendConfig, Durable, FanOut, Shared, dispatch, log_limit};
use crate::Exporter;
use crate::error::ExportBuildError;
use crate::exporter::DynExporter;
use crate::stats::{BackendHealth, Counters, Health, Role};

struct Spec {
    name: String,
    exporter: Arc<dyn DynExporter>,
    config: BackendConfig,
    fallback_of: Option<usize>,
}

/// Builder of [`FanOut`].
#[derive(Default)]
pub struct FanOutBuilder {
    specs: Vec<Spec>,
    error: Option<String>,
    spool: Option<Arc<Spool>>,
}

impl std::fmt::Debug for FanOutBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutBuilder")
            .field(
                "backends",
                &self.specs.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FanOutBuilder {
    /// Add a primary backend: it receives every batch.
    pub fn backend(
        self,
        name: impl Into<String>,
        exporter: impl Exporter,
        config: BackendConfig,
    ) -> Self {
        self.backend_dyn(name, Arc::new(exporter), config)
    }

    /// [`FanOutBuilder::backend`] for an exporter already behind an `Arc<dyn DynExporter>`.
    pub fn backend_dyn(
        mut self,
        name: impl Into<String>,
        exporter: Arc<dyn DynExporter>,
        config: BackendConfig,
    ) -> Self {
        self.specs.push(Spec {
            name: name.into(),
            exporter,
            config,
            fallback_of: None,
        });
        self
    }

    /// Give the primary added last a fallback: batches that finally fail there (or overflow
    /// its queue under a drop policy) are sent here instead.
    pub fn fallback(
        self,
        name: impl Into<String>,
        exporter: impl Exporter,
        config: BackendConfig,
    ) -> Self {
        self.fallback_dyn(name, Arc::new(exporter), config)
    }

    /// [`FanOutBuilder::fallback`] for an exporter already behind an `Arc<dyn DynExporter>`.
    pub fn fallback_dyn(
        mut self,
        name: impl Into<String>,
        exporter: Arc<dyn DynExporter>,
        config: BackendConfig,
    ) -> Self {
        let primary = self.specs.iter().rposition(|s| s.fallback_of.is_none());
        let name = name.into();
        match primary {
            Some(p) if self.specs.iter().any(|s| s.fallback_of == Some(p)) => {
                self.error
                    .get_or_insert(format!("second fallback {name:?} for one primary"));
            }
            Some(p) => self.specs.push(Spec {
                name,
                exporter,
                config,
                fallback_of: Some(p),
            }),
            None => {
                self.error
                    .get_or_insert(format!("fallback {name:?} added before any backend"));
            }
        }
        self
    }

    /// Durable mode: batches enter through [`FanOut::append`], which writes them once to
    /// `spool`, and each primary backend reads them back through the spool reader of its own
    /// name (open the spool with the primaries' names as readers), acknowledging a record once
    /// it is exported or finally failed there (after its fallback, if it has one). Records a
    /// shutdown leaves unfinished stay in the spool and are exported after the next start.
    pub fn spool(mut self, spool: Arc<Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Start every backend's dispatcher on `handle`.
    pub fn build(self, handle: &Handle) -> Result<FanOut, ExportBuildError> {
        if let Some(e) = self.error {
            return Err(ExportBuildError::FanOut(e));
        }
        if !self.specs.iter().any(|s| s.fallback_of.is_none()) {
            return Err(ExportBuildError::FanOut("no backend".into()));
        }
        for (i, s) in self.specs.iter().enumerate() {
            if self.specs[..i].iter().any(|o| o.name == s.name) {
                return Err(ExportBuildError::FanOut(format!(
                    "duplicate backend name {:?}",
                    s.name
                )));
            }
            if s.config.queue == 0 || s.config.concurrency == 0 {
                return Err(ExportBuildError::FanOut(format!(
                    "backend {:?}: queue and concurrency must be at least 1",
                    s.name
                )));
            }
        }
        let fallbacks: Vec<Option<usize>> = (0..self.specs.len())
            .map(|i| self.specs.iter().position(|s| s.fallback_of == Some(i)))
            .collect();
        let names: Vec<String> = self.specs.iter().map(|s| s.name.clone()).collect();
        let primaries = self
            .specs
            .iter()
            .filter(|s| s.fallback_of.is_none())
            .count();
        let mut readers = Vec::with_capacity(self.specs.len());
        for s in &self.specs {
            readers.push(match (&self.spool, s.fallback_of) {
                (Some(spool), None) => {
                    let reader = spool.reader(&s.name).map_err(|_| {
                        ExportBuildError::FanOut(format!(
                            "backend {:?} has no reader in the spool (open it with every primary's name)",
                            s.name
                        ))
                    })?;
                    let initial = reader.committed();
                    Some((reader, initial))
                }
                _ => None,
            });
        }
        let durable = self.spool.map(|spool| Durable {
            first_new_seq: spool.stats().head,
            spool,
            tickets: Mutex::new(HashMap::new()),
            recovered: AtomicU64::new(0),
        });
        let backends: Vec<Backend> = self
            .specs
            .into_iter()
            .zip(readers)
            .enumerate()
            .map(|(index, (s, durable))| Backend {
                index,
                role: match s.fallback_of {
                    None => Role::Primary,
                    Some(p) => Role::Fallback {
                        of: names[p].clone(),
                    },
                },
                name: s.name,
                exporter: s.exporter,
                semaphore: Arc::new(Semaphore::new(s.config.concurrency)),
                state: Mutex::new(QueueState::new(s.config.queue)),
                config: s.config,
                available: Notify::new(),
                counters: Counters::default(),
                logs: log_limit::BackendLogs::new(),
                fallback: fallbacks[index],
                durable,
            })
            .collect();
        let health = watch::Sender::new(
            names
                .iter()
                .map(|name| BackendHealth {
                    name: name.clone(),
                    health: Health::Idle,
                })
                .collect(),
        );
        let shared = Arc::new(Shared {
            backends,
            durable,
            primaries,
            health,
            accepting: AtomicBool::new(true),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            shutdown: tokio::sync::Mutex::new(false),
            settled: SettledCounters::default(),
        });
        for (i, b) in shared.backends.iter().enumerate() {
            let task = Arc::clone(&shared);
            match b.durable {
                Some(_) => shared
                    .tracker
                    .spawn_on(dispatch::dispatch_spool(task, i), handle),
                None => shared.tracker.spawn_on(dispatch::dispatch(task, i), handle),
            };
        }
        Ok(FanOut { shared })
    }
}
