//! A minimal OTLP client for `load`, `demo` and tests: sends pre-encoded requests over gRPC
//! (with the relay's bytes codec) or HTTP (protobuf or JSON), and classifies the answer.

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use crate::receiver::grpc::{BytesCodec, EXPORT_PATH};
use crate::tools::traffic::Payload;

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProto,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

/// What the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken; `rejected` spans were refused as invalid (partial success).
    Accepted {
        /// Spans refused in partial_success.
        rejected: u64,
    },
    /// Try again after the hint (gRPC UNAVAILABLE / RetryInfo, HTTP 429/503 / Retry-After).
    RetryLater {
        /// The server's hint, if any.
        after: Option<Duration>,
    },
    /// A final error: the request will never succeed.
    Failed {
        /// Status and message.
        message: String,
    },
}

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URL.
    #[error("invalid endpoint `{0}`")]
    Endpoint(String),
}

/// An OTLP client over one transport.
#[derive(Debug, Clone)]
pub struct OtlpClient {
    inner: Inner,
    gzip: bool,
}

#[derive(Debug, Clone)]
enum Inner {
    Grpc(Channel),
    Http {
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        uri: http::Uri,
        json: bool,
    },
}

impl OtlpClient {
    /// A client for `endpoint`: for gRPC `http://host:port`; for HTTP `http://host:port` (the
    /// path `/v1/traces` is added when missing). Connects lazily.
    pub fn new(transport: Transport, endpoint: &str, gzip: bool) -> Result<Self, ClientError> {
        let inner = match transport {
            Transport::Grpc => Inner::Grpc(
                Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?
                    .tcp_nodelay(true)
                    .connect_lazy(),
            ),
            Transport::HttpProto | Transport::HttpJson => {
                let full = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
                    endpoint.to_owned()
                } else {
                    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                };
                let uri: http::Uri = full
                    .parse()
                    .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?;
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Inner::Http {
                    client: Box::new(Client::builder(TokioExecutor::new()).build(connector)),
                    uri,
                    json: transport == Transport::HttpJson,
                }
            }
        };
        Ok(Self { inner, gzip })
    }

    /// Sends one request and waits for the answer (at most `timeout`).
    pub async fn send(&self, payload: &Payload, timeout: Duration) -> Answer {
        match tokio::time::timeout(timeout, self.send_inner(payload)).await {
            Ok(answer) => answer,
            Err(_) => Answer::RetryLater { after: None },
        }
    }

    async fn send_inner(&self, payload: &Payload) -> Answer {
        match &self.inner {
            Inner::Grpc(channel) => {
                self.send_grpc(channel.clone(), payload.protobuf.clone())
                    .await
            }
            Inner::Http { client, uri, json } => {
                let body = if *json {
                    &payload.json
                } else {
                    &payload.protobuf
                };
                self.send_http(client, uri, *json, body.clone()).await
            }
        }
    }

    async fn send_grpc(&self, channel: Channel, body: Bytes) -> Answer {
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
        if self.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        if let Err(e) = grpc.ready().await {
            return Answer::RetryLater { after: None }.tap_log(&e.to_string());
        }
        let path = PathAndQuery::from_static(EXPORT_PATH);
        match grpc
            .unary(tonic::Request::new(body), path, BytesCodec)
            .await
        {
            Ok(resp) => {
                let rejected = ExportTraceServiceResponse::decode(resp.into_inner())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_spans.max(0) as u64);
                Answer::Accepted { rejected }
            }
            Err(status) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Aborted => Answer::RetryLater {
                    after: tonic_types::StatusExt::get_details_retry_info(&status)
                        .and_then(|info| info.retry_delay),
                },
                code => Answer::Failed {
                    message: format!("{code:?}: {}", status.message()),
                },
            },
        }
    }

    async fn send_http(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        uri: &http::Uri,
        json: bool,
        body: Bytes,
    ) -> Answer {
        let content_type = if json {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        let mut builder =
            http::Request::post(uri.clone()).header(http::header::CONTENT_TYPE, content_type);
        let body = if self.gzip {
            builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
            gzip(&body)
        } else {
            body
        };
        let request = match builder.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Answer::Failed {
                    message: e.to_string(),
                };
            }
        };
        let response = match client.request(request).await {
            Ok(r) => r,
            Err(e) => return Answer::RetryLater { after: None }.tap_log(&e.to_string()),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Answer::RetryLater { after: None }.tap_log(&e.to_string()),
        };
        match status.as_u16() {
            200 => {
                let rejected = if json {
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| {
                            let r = v.get("partialSuccess")?.get("rejectedSpans")?.clone();
                            r.as_str()
                                .and_then(|s| s.parse().ok())
                                .or_else(|| r.as_u64())
                        })
                        .unwrap_or(0)
                } else {
                    ExportTraceServiceResponse::decode(bytes)
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| p.rejected_spans.max(0) as u64)
                };
                Answer::Accepted { rejected }
            }
            429 | 502 | 503 | 504 => Answer::RetryLater { after: retry_after },
            code => Answer::Failed {
                message: format!("http {code}: {}", String::from_utf8_lossy(&bytes)),
            },
        }
    }
}

trait TapLog {
    fn tap_log(self, why: &str) -> Self;
}

impl TapLog for Answer {
    fn tap_log(self, why: &str) -> Self {
        tracing::debug!(error = why, "request not answered, will retry");
        self
    }
}

fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    Bytes::from(enc.finish().unwrap_or_default())
}
