//! OTLP/HTTP exporter (reqwest with rustls): protobuf or JSON bodies, gzip/zstd, headers.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::client_options::ClientOptions;
use crate::config::{Compression, DEFAULT_HTTP_ENDPOINT, DEFAULT_TIMEOUT, append_traces_path};
use crate::error::ExportBuildError;
use crate::grpc::{error_chain, rpc_status_message};
#[cfg(feature = "tls")]
use crate::tls::ClientIdentity;
use crate::{ExportBatch, ExportError, ExportOutcome, Exporter};

/// Body encoding of OTLP/HTTP requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpEncoding {
    /// `application/x-protobuf`: the batch bytes as they are.
    #[default]
    Protobuf,
    /// `application/json`: OTLP/JSON, converted per request.
    Json,
}

/// Exports batches over OTLP/HTTP (`POST <endpoint>`).
///
/// ```
/// use spanflow_export::{Compression, HttpEncoding, OtlpHttpExporter};
/// let e = OtlpHttpExporter::builder()
///     .base_endpoint("http://127.0.0.1:4318/")
///     .encoding(HttpEncoding::Json)
///     .compression(Compression::Gzip)
///     .header("authorization", "Bearer x")
///     .build()
///     .unwrap();
/// assert_eq!(e.url(), "http://127.0.0.1:4318/v1/traces");
/// ```
#[derive(Debug)]
pub struct OtlpHttpExporter {
    name: String,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    encoding: HttpEncoding,
    compression: Compression,
    timeout: Duration,
}

impl OtlpHttpExporter {
    /// A builder with the defaults (`http://localhost:4318/v1/traces`, protobuf, 10 s timeout).
    pub fn builder() -> OtlpHttpExporterBuilder {
        OtlpHttpExporterBuilder::default()
    }

    /// The URL requests are posted to.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    fn body(&self, batch: &ExportBatch) -> Result<Bytes, ExportError> {
        match self.encoding {
            // Shared with every other backend compressing this batch the same way.
            HttpEncoding::Protobuf => batch.compressed(self.compression, false),
            HttpEncoding::Json => {
                let json = crate::json::request_to_json(&batch.body)?;
                ExportBatch::new(Bytes::from(json), batch.spans).compressed(self.compression, false)
            }
        }
    }
}

impl Exporter for OtlpHttpExporter {
    async fn export(&self, batch: ExportBatch) -> Result<ExportOutcome, ExportError> {
        let body = self.body(&batch)?;
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ExportError::Timeout(self.timeout)
                } else if e.is_connect() {
                    ExportError::Transport(error_chain(&e))
                } else {
                    ExportError::Interrupted(error_chain(&e))
                }
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ExportError::Timeout(self.timeout)
            } else {
                ExportError::Interrupted(error_chain(&e))
            }
        })?;
        if status.is_success() {
            return Ok(partial_success(&batch, &body, is_json));
        }
        let message = if is_json {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        } else {
            rpc_status_message(&body).filter(|m| !m.is_empty())
        }
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            text.chars().take(256).collect()
        });
        Err(ExportError::Http {
            status: status.as_u16(),
            message,
            retry_after,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Read `partial_success` from a 2xx response body (empty body: all accepted).
fn partial_success(batch: &ExportBatch, body: &[u8], is_json: bool) -> ExportOutcome {
    if body.is_empty() {
        return ExportOutcome::all_accepted(batch.spans);
    }
    if is_json {
        let v: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return ExportOutcome::all_accepted(batch.spans),
        };
        let Some(p) = v.get("partialSuccess") else {
            return ExportOutcome::all_accepted(batch.spans);
        };
        // int64 is a string in OTLP/JSON, but accept a number too.
        let rejected = match p.get("rejectedSpans") {
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
            _ => 0,
        };
        let message = p
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        return ExportOutcome::partial(batch.spans, rejected, message);
    }
    match ExportTraceServiceResponse::decode(body) {
        Ok(ExportTraceServiceResponse {
            partial_success: Some(p),
        }) => ExportOutcome::partial(batch.spans, p.rejected_spans, p.error_message),
        _ => ExportOutcome::all_accepted(batch.spans),
    }
}

/// `Retry-After` (RFC 9110 §10.2.3) as a delay from now: delay-seconds, or an HTTP-date
/// (IMF-fixdate, or the obsolete RFC 850 and asctime forms) minus the current time, zero when
/// the date has passed. A value in neither form yields `None`, so the computed backoff applies.
fn parse_retry_after(v: &str) -> Option<Duration> {
    parse_retry_after_at(v, SystemTime::now())
}

/// [`parse_retry_after`] with the current time given.
fn parse_retry_after_at(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Overlong digit strings (beyond u64) are garbage, not "forever".
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let date = httpdate::parse_http_date(v).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Builder of [`OtlpHttpExporter`].
#[derive(Debug)]
pub struct OtlpHttpExporterBuilder {
    endpoint: String,
    encoding: HttpEncoding,
    timeout: Duration,
    client: ClientOptions,
}

impl Default for OtlpHttpExporterBuilder {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_HTTP_ENDPOINT.to_string(),
            encoding: HttpEncoding::Protobuf,
            timeout: DEFAULT_TIMEOUT,
            client: ClientOptions::default(),
        }
    }
}

impl OtlpHttpExporterBuilder {
    crate::client_options::client_setters!();

    /// The full traces URL, used as it is (like `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into();
        self
    }
    /// A base URL to which `v1/traces` is appended (like `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn base_endpoint(mut self, base: impl AsRef<str>) -> Self {
        self.endpoint = append_traces_path(base.as_ref());
        self
    }
    /// Protobuf or JSON bodies.
    pub fn encoding(mut self, encoding: HttpEncoding) -> Self {
        self.encoding = encoding;
        self
    }
    /// Per-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validate everything and build the exporter.
    ///
    /// A compression or an `https` endpoint that this build left out (cargo features `gzip`,
    /// `zstd`, `tls`) is [`ExportBuildError::FeatureDisabled`].
    pub fn build(self) -> Result<OtlpHttpExporter, ExportBuildError> {
        self.client.compression.check_available()?;
        let url = reqwest::Url::parse(self.endpoint.trim()).map_err(|e| {
            ExportBuildError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            }
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ExportBuildError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason: format!("unsupported scheme {:?}", url.scheme()),
            });
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &self.client.headers {
            let invalid = |reason: String| ExportBuildError::InvalidHeader {
                name: k.clone(),
                reason,
            };
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let value = HeaderValue::from_str(v).map_err(|e| invalid(e.to_string()))?;
            headers.insert(name, value);
        }
        let content_type = match self.encoding {
            HttpEncoding::Protobuf => "application/x-protobuf",
            HttpEncoding::Json => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        match self.client.compression {
            Compression::None => {}
            Compression::Gzip => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Compression::Zstd => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.client.connect_timeout)
            .tcp_nodelay(true);
        if self.client.identity.is_some() && url.scheme() != "https" {
            return Err(ExportBuildError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason: "a client certificate (mTLS) needs an https endpoint".into(),
            });
        }
        #[cfg(feature = "tls")]
        let client = with_tls(
            client,
            self.client.ca_pem.as_deref(),
            self.client.identity.as_ref(),
        )?;
        #[cfg(not(feature = "tls"))]
        if url.scheme() == "https" {
            return Err(ExportBuildError::feature_disabled(
                "an https endpoint",
                "tls",
            ));
        }
        let client = client
            .build()
            .map_err(|e| ExportBuildError::Tls(error_chain(&e)))?;
        Ok(OtlpHttpExporter {
            name: self
                .client
                .name
                .unwrap_or_else(|| format!("otlp-http {url}")),
            client,
            url,
            headers,
            encoding: self.encoding,
            compression: self.client.compression,
            timeout: self.timeout,
        })
    }
}

/// rustls for `client`, trusting the system roots plus the CA `ca_pem`, and presenting
/// `identity` (mutual TLS) if given.
#[cfg(feature = "tls")]
fn with_tls(
    client: reqwest::ClientBuilder,
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
) -> Result<reqwest::ClientBuilder, ExportBuildError> {
    let mut client = client.use_rustls_tls();
    if let Some(pem) = ca_pem {
        crate::tls::ca_certificates(pem)?;
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ExportBuildError::Tls(error_chain(&e)))?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    if let Some(identity) = identity {
        identity.check()?;
        // reqwest (rustls) takes the key and the chain as one PEM.
        let mut pem = identity.key.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&identity.certificate);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| ExportBuildError::Tls(format!("client key: {}", error_chain(&e))))?;
        client = client.identity(identity);
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wed, 21 Oct 2015 07:28:00 GMT.
    fn oct_21_2015() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn retry_after_seconds() {
        let now = oct_21_2015();
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after_at("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after_at("120", now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_imf_fixdate_in_the_future_is_the_time_until_it() {
        let now = oct_21_2015();
        assert_eq!(
            parse_retry_after_at("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // Sub-second "now": the delay is exact, not rounded to whole seconds.
        assert_eq!(
            parse_retry_after_at(
                " Wed, 21 Oct 2015 07:28:02 GMT ",
                now + Duration::from_millis(250)
            ),
            Some(Duration::from_millis(1750))
        );
    }

    #[test]
    fn retry_after_date_in_the_past_or_now_means_retry_now() {
        let now = oct_21_2015();
        for past in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 07:27:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            assert_eq!(
                parse_retry_after_at(past, now),
                Some(Duration::ZERO),
                "{past}"
            );
        }
    }

    #[test]
    fn retry_after_obsolete_date_forms() {
        let now = oct_21_2015();
        // RFC 850.
        assert_eq!(
            parse_retry_after_at("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        // asctime (day padded with a space).
        assert_eq!(
            parse_retry_after_at("Wed Oct 21 07:28:10 2015", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after_at("Sun Nov  6 08:49:37 1994", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        let now = oct_21_2015();
        for garbage in [
            "",
            "   ",
            "soon",
            "-5",
            "1.5",
            "+3",
            "3s",
            "99999999999999999999999",
            "Wed, 21 Oct 2015 07:28:00",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "2015-10-21T07:28:00Z",
            "Wed, 21 Oct 2015 25:28:00 GMT",
            "\u{1F600}",
        ] {
            assert_eq!(parse_retry_after_at(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn json_partial_success_accepts_string_and_number() {
        let b = ExportBatch::new(Bytes::new(), 10);
        let o = partial_success(
            &b,
            br#"{"partialSuccess":{"rejectedSpans":"4","errorMessage":"x"}}"#,
            true,
        );
        assert_eq!((o.accepted, o.rejected), (6, 4));
        let o = partial_success(&b, br#"{"partialSuccess":{"rejectedSpans":2}}"#, true);
        assert_eq!((o.accepted, o.rejected), (8, 2));
        let o = partial_success(&b, b"", false);
        assert_eq!(o.accepted, 10);
    }

    #[test]
    fn bad_urls_are_build_errors() {
        assert!(
            OtlpHttpExporter::builder()
                .endpoint("not a url")
                .build()
                .is_err()
        );
        assert!(
            OtlpHttpExporter::builder()
                .endpoint("ftp://x/")
                .build()
                .is_err()
        );
    }

    #[test]
    fn https_with_system_roots_or_a_given_ca_builds() {
        let url = "https://collector:4318/v1/traces";
        assert!(OtlpHttpExporter::builder().endpoint(url).build().is_ok());
        let bad_ca = OtlpHttpExporter::builder()
            .endpoint(url)
            .ca_certificate_pem(b"not a pem".to_vec())
            .build();
        assert!(matches!(bad_ca, Err(ExportBuildError::Tls(_))));
        assert!(
            OtlpHttpExporter::builder()
                .header("bad header", "v")
                .build()
                .is_err()
        );
    }
}
