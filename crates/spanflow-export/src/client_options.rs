//! What the OTLP/gRPC and OTLP/HTTP exporters share: their client options, written once.
//!
//! Both builders hold a [`ClientOptions`] and expand [`client_setters!`] for its public setters;
//! [`ExporterConfig::build`](crate::ExporterConfig::build) fills one from configuration and hands
//! it to whichever builder the protocol picks. The endpoint and the timeout mean something
//! different per protocol, so each builder keeps those itself.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Compression;
use crate::tls::ClientIdentity;

/// The TCP connect timeout when none is set.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client's options other than its endpoint and request timeout.
#[derive(Clone, Debug)]
pub(crate) struct ClientOptions {
    /// Exporter name for logs and stats; `None`: the protocol and the endpoint.
    pub(crate) name: Option<String>,
    pub(crate) compression: Compression,
    /// Headers (gRPC metadata) sent with every request.
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) connect_timeout: Duration,
    /// PEM CA certificates trusted besides the system roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Client certificate and key for mutual TLS.
    pub(crate) identity: Option<ClientIdentity>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            name: None,
            compression: Compression::None,
            headers: BTreeMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_pem: None,
            identity: None,
        }
    }
}

/// Expands, inside the `impl` of an exporter builder with a `client: ClientOptions` field, to
/// the public setters of those options (rustdoc shows them on each builder).
macro_rules! client_setters {
    () => {
        /// Exporter name for logs and stats (default: the protocol and the endpoint).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.client.name = Some(name.into());
            self
        }
        /// Request body compression ([`build`](Self::build) fails when this build left it out).
        pub fn compression(mut self, compression: $crate::config::Compression) -> Self {
            self.client.compression = compression;
            self
        }
        /// Add headers (gRPC metadata) sent with every request.
        pub fn headers<K: Into<String>, V: Into<String>>(
            mut self,
            headers: impl IntoIterator<Item = (K, V)>,
        ) -> Self {
            self.client
                .headers
                .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
            self
        }
        /// Add one header (gRPC metadata entry) sent with every request.
        pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.headers([(name, value)])
        }
        /// TCP connect timeout (default 5 s).
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.client.connect_timeout = timeout;
            self
        }
        /// Trust these PEM CA certificate(s) (for `https` endpoints) in addition to the system
        /// roots; when the system has no root certificates, only these.
        /// [`build`](Self::build) fails when the PEM holds no certificate.
        pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.client.ca_pem = Some(pem.into());
            self
        }
        /// Present this client certificate (PEM, the leaf first, then its chain) and private
        /// key (PEM) to the server: mutual TLS (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
        /// `OTEL_EXPORTER_OTLP_CLIENT_KEY`). [`build`](Self::build) fails when the endpoint is
        /// not `https` or the PEMs hold no certificate or no key.
        pub fn client_identity_pem(
            mut self,
            certificate: impl Into<Vec<u8>>,
            key: impl Into<Vec<u8>>,
        ) -> Self {
            self.client.identity = Some($crate::tls::ClientIdentity {
                certificate: certificate.into(),
                key: key.into(),
            });
            self
        }
        /// Replaces every client option at once (configuration's path).
        pub(crate) fn client(mut self, options: $crate::client_options::ClientOptions) -> Self {
            self.client = options;
            self
        }
    };
}

pub(crate) use client_setters;
