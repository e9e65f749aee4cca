//! Values built from files (certificates, credentials) that are rebuilt when the files change,
//! without a restart. The files are read every interval and compared with what was loaded, so
//! replacing them in place, renaming over them or swapping a Kubernetes secret's symlink all
//! work; a change that does not load (a half-written key, a bad line) is logged and the
//! previous value kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::task::JoinHandle;

/// A value that a background task may replace; readers take the current one.
#[derive(Debug)]
pub(crate) struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    /// The value now.
    pub(crate) fn get(&self) -> Arc<T> {
        self.current.read().clone()
    }
}

/// Why files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The contents are not usable.
    #[error("{0}")]
    Invalid(String),
}

fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, LoadError> {
    files
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

/// Loads `build(contents of files)` now (an error here is the caller's to report), then
/// checks the files every `interval` on the current runtime and rebuilds the value when their
/// contents change. `what` names the value in logs. Abort the returned task to stop it.
pub(crate) fn load_and_watch<T, F>(
    what: &'static str,
    files: Vec<PathBuf>,
    interval: Duration,
    build: F,
) -> Result<(Arc<Reloadable<T>>, JoinHandle<()>), LoadError>
where
    T: Send + Sync + 'static,
    F: Fn(&[Vec<u8>]) -> Result<T, LoadError> + Send + 'static,
{
    let mut loaded = read_all(&files)?;
    let value = Arc::new(Reloadable {
        current: RwLock::new(Arc::new(build(&loaded)?)),
    });
    if files.is_empty() {
        return Ok((value, tokio::spawn(async {})));
    }
    let target = value.clone();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = match read_all(&files) {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: keeping the loaded version");
                    continue;
                }
            };
            if now == loaded {
                continue;
            }
            match build(&now) {
                Ok(v) => {
                    *target.current.write() = Arc::new(v);
                    tracing::info!(files = ?files, "{what}: reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: changed but does not load; keeping the loaded version");
                }
            }
            // Not retried until the files change again.
            loaded = now;
        }
    });
    Ok((value, task))
}
