//! The unit of work of the export layer: one encoded request and what a backend said about it.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Compression, ExportError};

/// One pre-encoded OTLP `ExportTraceServiceRequest` and the number of spans inside it.
///
/// Cloning is cheap (a reference-count increment on [`Bytes`]): the fan-out hands the same
/// bytes to every backend and never copies them. Clones also share the compressed forms of
/// the body ([`ExportBatch::compressed`]): fanning a batch out to N backends that all use gzip
/// compresses it once, not N times.
///
/// ```
/// use spanflow_export::ExportBatch;
/// let batch = ExportBatch::new(bytes::Bytes::from_static(b""), 0);
/// let copy = batch.clone();
/// assert_eq!(copy.body.as_ptr(), batch.body.as_ptr()); // shared, not copied
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportBatch {
    /// The `ExportTraceServiceRequest` protobuf bytes, sent as they are.
    pub body: Bytes,
    /// Number of spans in `body`, used for accounting only (never re-counted by decoding).
    pub spans: usize,
    /// Compressed forms of `body`, computed on first use and shared by every clone.
    shared: SharedEncodings,
}

impl ExportBatch {
    /// A batch from encoded request bytes and their span count.
    pub fn new(body: Bytes, spans: usize) -> Self {
        let shared = SharedEncodings(Arc::new(Encodings {
            origin: body.clone(),
            ..Encodings::default()
        }));
        Self {
            body,
            spans,
            shared,
        }
    }

    /// `body` compressed with `compression` (gzip at the fast level, zstd at level 1),
    /// as a gRPC length-prefixed message when `grpc_frame` is set.
    ///
    /// Computed once per batch, compression and framing, and shared by every clone of the
    /// batch: a fan-out to several backends with the same compression compresses once.
    /// Without compression the body itself is returned (shared, not copied), framed or not
    /// as asked; framing then needs a copy, so gRPC sends prefix and body as two chunks
    /// instead (see [`crate::OtlpGrpcExporter`]). If `body` was replaced after the batch was
    /// built, the result is computed afresh and not cached.
    ///
    /// ```
    /// use spanflow_export::{Compression, ExportBatch};
    /// let batch = ExportBatch::new(bytes::Bytes::from(vec![7u8; 1000]), 1);
    /// let copy = batch.clone();
    /// let a = batch.compressed(Compression::Gzip, false).unwrap();
    /// let b = copy.compressed(Compression::Gzip, false).unwrap();
    /// assert_eq!(a.as_ptr(), b.as_ptr()); // compressed once, shared
    /// assert!(a.len() < 1000);
    /// ```
    pub fn compressed(
        &self,
        compression: Compression,
        grpc_frame: bool,
    ) -> Result<Bytes, ExportError> {
        let slot = match (compression, grpc_frame) {
            (Compression::None, false) => return Ok(self.body.clone()),
            (Compression::None, true) => return compress(&self.body, compression, true),
            (Compression::Gzip, false) => &self.shared.0.gzip,
            (Compression::Gzip, true) => &self.shared.0.gzip_framed,
            (Compression::Zstd, false) => &self.shared.0.zstd,
            (Compression::Zstd, true) => &self.shared.0.zstd_framed,
        };
        let origin = &self.shared.0.origin;
        if origin.as_ptr() != self.body.as_ptr() || origin.len() != self.body.len() {
            // `body` was replaced: the shared cache describes other bytes.
            return compress(&self.body, compression, grpc_frame);
        }
        // Concurrent callers wait for the first one instead of compressing again.
        slot.get_or_init(|| {
            compress(&self.body, compression, grpc_frame).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| ExportError::Io(std::io::Error::other(e)))
    }
}

/// The gRPC message prefix: compressed flag and big-endian length.
pub(crate) fn grpc_prefix(compressed: bool, len: usize) -> Result<[u8; 5], ExportError> {
    let len = u32::try_from(len).map_err(|_| {
        ExportError::InvalidBatch(format!("message of {len} bytes is too large for grpc"))
    })?;
    let mut p = [0u8; 5];
    p[0] = u8::from(compressed);
    p[1..].copy_from_slice(&len.to_be_bytes());
    Ok(p)
}

/// Compress `body` (and gRPC-frame it when asked) into a fresh buffer.
fn compress(body: &[u8], compression: Compression, grpc_frame: bool) -> Result<Bytes, ExportError> {
    let header = if grpc_frame { 5 } else { 0 };
    let mut out = BytesMut::with_capacity(header + body.len() / 4 + 64);
    out.put_bytes(0, header);
    let mut w = out.writer();
    match compression {
        Compression::None => w.write_all(body)?,
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut w, flate2::Compression::fast());
            enc.write_all(body)?;
            enc.finish()?;
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd::stream::copy_encode(body, &mut w, 1)?,
        // The exporters refuse to build with a compression this build left out.
        #[allow(unreachable_patterns)]
        other => {
            return Err(ExportError::InvalidBatch(format!(
                "compression {} needs the `{}` cargo feature",
                other.as_str(),
                other.feature().unwrap_or_default()
            )));
        }
    }
    let mut out = w.into_inner();
    if grpc_frame {
        let prefix = grpc_prefix(compression != Compression::None, out.len() - header)?;
        out[..header].copy_from_slice(&prefix);
    }
    Ok(out.freeze())
}

/// The compressed forms of one batch body.
#[derive(Default)]
struct Encodings {
    /// The body these forms were computed from (kept alive, so pointer equality proves it).
    origin: Bytes,
    gzip: OnceLock<Result<Bytes, String>>,
    gzip_framed: OnceLock<Result<Bytes, String>>,
    zstd: OnceLock<Result<Bytes, String>>,
    zstd_framed: OnceLock<Result<Bytes, String>>,
}

/// Shared cache of a batch; ignored by `PartialEq` and `Debug` (it is derived from `body`).
#[derive(Clone, Default)]
struct SharedEncodings(Arc<Encodings>);

impl PartialEq for SharedEncodings {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SharedEncodings {}

impl std::fmt::Debug for SharedEncodings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// What a backend reported for one request it accepted at the transport level.
///
/// OTLP lets a server accept a request but reject some of its spans (`partial_success`);
/// `rejected` counts those and `message` carries the server's explanation, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Spans the backend kept.
    pub accepted: u64,
    /// Spans the backend refused (`partial_success.rejected_spans`); never retried.
    pub rejected: u64,
    /// The server's `partial_success.error_message`, when not empty.
    pub message: Option<String>,
}

impl ExportOutcome {
    /// The outcome for a batch of `spans` spans of which the server rejected `rejected`.
    ///
    /// ```
    /// use spanflow_export::ExportOutcome;
    /// let o = ExportOutcome::partial(10, 3, String::new());
    /// assert_eq!((o.accepted, o.rejected, o.message), (7, 3, None));
    /// ```
    pub fn partial(spans: usize, rejected: i64, message: String) -> Self {
        let rejected = rejected.max(0) as u64;
        let spans = spans as u64;
        Self {
            accepted: spans.saturating_sub(rejected),
            rejected: rejected.min(spans),
            message: (!message.is_empty()).then_some(message),
        }
    }

    /// Every span of a batch of `spans` spans was accepted.
    pub fn all_accepted(spans: usize) -> Self {
        Self {
            accepted: spans as u64,
            rejected: 0,
            message: None,
        }
    }
}

// Every test compresses both ways.
#[cfg(all(test, feature = "gzip", feature = "zstd"))]
mod tests {
    use super::*;
    use std::io::Read;

    fn body() -> Bytes {
        Bytes::from(
            (0..50_000u32)
                .flat_map(|i| (i % 97).to_le_bytes())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn clones_compress_once_even_concurrently() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            for framed in [false, true] {
                let batch = ExportBatch::new(body(), 3);
                let ptrs: Vec<usize> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..4)
                        .map(|_| {
                            let b = batch.clone();
                            s.spawn(move || {
                                b.compressed(compression, framed).unwrap().as_ptr() as usize
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                assert!(
                    ptrs.windows(2).all(|w| w[0] == w[1]),
                    "{compression:?} {framed}"
                );
            }
        }
    }

    #[test]
    fn compressed_forms_decode_to_the_body() {
        let batch = ExportBatch::new(body(), 3);
        let gz = batch.compressed(Compression::Gzip, false).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, batch.body);
        let framed = batch.compressed(Compression::Zstd, true).unwrap();
        assert_eq!(framed[0], 1);
        let len = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, framed.len() - 5);
        assert_eq!(zstd::stream::decode_all(&framed[5..]).unwrap(), batch.body);
        let plain = batch.compressed(Compression::None, true).unwrap();
        assert_eq!(&plain[..5], &[0, 0, 3, 13, 64]);
        assert_eq!(&plain[5..], &batch.body[..]);
        let same = batch.compressed(Compression::None, false).unwrap();
        assert_eq!(same.as_ptr(), batch.body.as_ptr());
    }

    #[test]
    fn a_replaced_body_is_not_served_from_the_cache() {
        let mut batch = ExportBatch::new(body(), 3);
        let first = batch.compressed(Compression::Gzip, false).unwrap();
        batch.body = Bytes::from_static(b"other");
        let second = batch.compressed(Compression::Gzip, false).unwrap();
        assert_ne!(first, second);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&second[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"other");
        assert_eq!(batch, ExportBatch::new(Bytes::from_static(b"other"), 3));
    }
}
