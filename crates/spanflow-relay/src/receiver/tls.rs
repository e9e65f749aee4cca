//! TLS for the receivers and the metrics server: rustls (ring) through tokio-rustls, with an
//! optional client CA (mTLS) and certificate reload without a restart ([`super::reload`]).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::reload::{LoadError, Reloadable, load_and_watch};
use crate::config::TlsConfig;

/// ALPN for gRPC: HTTP/2 only.
pub(crate) const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN for the HTTP servers: HTTP/2 or HTTP/1.1.
pub(crate) const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A server's TLS settings, reloaded when the files change.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    config: Arc<Reloadable<ServerConfig>>,
}

impl Tls {
    /// Loads `cfg`'s files now (an error names the file) and watches them for changes; abort
    /// the returned task to stop watching.
    pub(crate) fn load(
        what: &'static str,
        cfg: &TlsConfig,
        alpn: &'static [&'static [u8]],
    ) -> Result<(Self, JoinHandle<()>), LoadError> {
        let mut files = vec![cfg.cert_file.clone(), cfg.key_file.clone()];
        files.extend(cfg.client_ca_file.clone());
        let (config, task) = load_and_watch(what, files, cfg.reload_interval.0, move |contents| {
            server_config(contents, alpn)
        })?;
        Ok((Self { config }, task))
    }

    /// An acceptor with the current certificate.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.get())
    }
}

/// Builds a server configuration from the contents of the certificate, key and (optionally)
/// client CA files, in that order.
fn server_config(contents: &[Vec<u8>], alpn: &[&[u8]]) -> Result<ServerConfig, LoadError> {
    let invalid =
        |what: &str, e: &dyn std::fmt::Display| LoadError::Invalid(format!("{what}: {e}"));
    let [cert, key, rest @ ..] = contents else {
        return Err(LoadError::Invalid(
            "certificate and key files are required".into(),
        ));
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("cert_file", &e))?;
    if certs.is_empty() {
        return Err(LoadError::Invalid(
            "cert_file: no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid("key_file", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", &e))?;
    let builder = match rest.first() {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| invalid("client_ca_file", &e))?;
                roots.add(c).map_err(|e| invalid("client_ca_file", &e))?;
            }
            if roots.is_empty() {
                return Err(LoadError::Invalid(
                    "client_ca_file: no PEM certificate in it".into(),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid("client_ca_file", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid("cert_file and key_file", &e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_files_are_refused_with_the_key_named() {
        let err = server_config(&[b"nope".to_vec(), b"nope".to_vec()], ALPN_H2).unwrap_err();
        assert!(err.to_string().contains("cert_file"), "{err}");
        let err = server_config(&[], ALPN_H2).unwrap_err();
        assert!(err.to_string().contains("required"), "{err}");
    }
}
