//! The setters the OTLP/gRPC and OTLP/HTTP exporter builders share, written once.
//!
//! Both builders hold the same client options under the same field names (`name`,
//! `compression`, `headers`, `connect_timeout`, `ca_pem`, `identity`); the endpoint and the
//! timeout mean something different per protocol, so each builder writes those itself.

/// Expands, inside an exporter builder's `impl`, to its shared setters.
macro_rules! client_setters {
    () => {
        /// Exporter name for logs and stats (default: the protocol and the endpoint).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.name = Some(name.into());
            self
        }
        /// Request body compression ([`build`](Self::build) fails when this build left it out).
        pub fn compression(mut self, compression: $crate::config::Compression) -> Self {
            self.compression = compression;
            self
        }
        /// Add headers (gRPC metadata) sent with every request.
        pub fn headers<K: Into<String>, V: Into<String>>(
            mut self,
            headers: impl IntoIterator<Item = (K, V)>,
        ) -> Self {
            self.headers
                .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
            self
        }
        /// Add one header (gRPC metadata entry) sent with every request.
        pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.headers([(name, value)])
        }
        /// TCP connect timeout.
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connect_timeout = timeout;
            self
        }
        /// Trust these PEM CA certificate(s) (for `https` endpoints) in addition to the system
        /// roots; when the system has no root certificates, only these.
        /// [`build`](Self::build) fails when the PEM holds no certificate.
        pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.ca_pem = Some(pem.into());
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
            self.identity = Some($crate::tls::ClientIdentity {
                certificate: certificate.into(),
                key: key.into(),
            });
            self
        }
    };
}

pub(crate) use client_setters;
