//! OTLP/JSON-lines exporters: a size-rotated file and standard output.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::ExportBuildError;
use crate::{ExportBatch, ExportError, ExportOutcome, Exporter};

pub use crate::config::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES};

/// Writes each batch as one OTLP/JSON line (`ExportTraceServiceRequest`) to a file.
///
/// Before a line would make the file larger than `max_bytes`, the file is rotated:
/// `path.{n-1}` → `path.{n}` … `path` → `path.1`, keeping `max_files` rotated files. A line
/// longer than `max_bytes` still goes whole into a fresh file. Writes run on tokio's
/// blocking pool.
///
/// ```
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// use spanflow_export::{ExportBatch, Exporter, FileExporter};
/// let path = std::env::temp_dir().join(format!("spanflow-doc-{}.jsonl", std::process::id()));
/// let e = FileExporter::builder(&path).max_bytes(1 << 20).build().unwrap();
/// let empty = prost::Message::encode_to_vec(
///     &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default());
/// rt.block_on(e.export(ExportBatch::new(empty.into(), 0))).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"resourceSpans\":[]}\n");
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug)]
pub struct FileExporter {
    name: String,
    state: Arc<Mutex<FileState>>,
}

#[derive(Debug)]
struct FileState {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    max_files: usize,
}

impl FileState {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let numbered = |n: usize| {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let oldest = numbered(self.max_files);
            if oldest.exists() {
                std::fs::remove_file(&oldest)?;
            }
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl FileExporter {
    /// A builder writing to `path`.
    pub fn builder(path: impl AsRef<Path>) -> FileExporterBuilder {
        FileExporterBuilder {
            path: path.as_ref().to_path_buf(),
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// Builder of [`FileExporter`].
#[derive(Debug)]
pub struct FileExporterBuilder {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
}

impl FileExporterBuilder {
    /// Rotate before a write would make the file larger than this.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }
    /// Number of rotated files kept (`path.1` … `path.n`).
    pub fn max_files(mut self, max_files: usize) -> Self {
        self.max_files = max_files;
        self
    }
    /// Open (append to) the file, creating it and its directory if they do not exist.
    pub fn build(self) -> Result<FileExporter, ExportBuildError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ExportBuildError::File {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| ExportBuildError::File {
                path: self.path.display().to_string(),
                source,
            })?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileExporter {
            name: format!("file {}", self.path.display()),
            state: Arc::new(Mutex::new(FileState {
                path: self.path,
                file,
                written,
                max_bytes: self.max_bytes.max(1),
                max_files: self.max_files,
            })),
        })
    }
}

fn json_line(batch: &ExportBatch) -> Result<Vec<u8>, ExportError> {
    let mut line = crate::json::request_to_json(&batch.body)?;
    line.push(b'\n');
    Ok(line)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExportError::Io(std::io::Error::other(e)))?
        .map_err(ExportError::Io)
}

impl Exporter for FileExporter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let line = json_line(&batch)?;
        let state = Arc::clone(&self.state);
        blocking(move || state.lock().write_line(&line)).await?;
        Ok(ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn shutdown(&self) -> Result<(), ExportError> {
        let state = Arc::clone(&self.state);
        blocking(move || state.lock().file.sync_data()).await
    }
}

/// Writes each batch as one OTLP/JSON line to standard output.
#[derive(Debug, Default)]
pub struct StdoutExporter {
    _private: (),
}

impl StdoutExporter {
    /// A stdout exporter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Exporter for StdoutExporter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let line = json_line(&batch)?;
        blocking(move || std::io::stdout().lock().write_all(&line)).await?;
        Ok(ExportOutcome::all_accepted(batch.spans))
    }

    fn name(&self) -> &str {
        "stdout"
    }
}
