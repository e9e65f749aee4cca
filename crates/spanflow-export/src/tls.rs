//! PEM certificates and keys for the exporters' TLS (cargo feature `tls`), shared by the gRPC
//! and HTTP exporters.

#[cfg(feature = "tls")]
use crate::error::ExportBuildError;

/// A client certificate and its private key, both PEM, for mutual TLS (both exporters).
///
/// Kept in every build so the builders take one whatever the features; without `tls`, using
/// it is a `FeatureDisabled` build error (an https endpoint is needed for it).
#[derive(Clone)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct ClientIdentity {
    pub(crate) certificate: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in logs.
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl ClientIdentity {
    /// Refuses PEMs without a certificate or without a private key (tonic would only find out
    /// at the first handshake).
    pub(crate) fn check(&self) -> Result<(), ExportBuildError> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject as _;

        if certificates(&self.certificate)? == 0 {
            return Err(ExportBuildError::Tls(
                "no certificate in the client certificate PEM".into(),
            ));
        }
        PrivateKeyDer::from_pem_slice(&self.key)
            .map(drop)
            .map_err(|e| ExportBuildError::Tls(format!("client key: {e}")))
    }
}

/// The number of certificates of a PEM bundle; an error when it holds none (both exporters
/// check this, so a CA file that is not PEM is refused instead of silently trusting nothing
/// more).
#[cfg(feature = "tls")]
pub(crate) fn ca_certificates(pem: &[u8]) -> Result<usize, ExportBuildError> {
    match certificates(pem)? {
        0 => Err(ExportBuildError::Tls(
            "no certificate in the given PEM".into(),
        )),
        n => Ok(n),
    }
}

/// Counts the certificates of a PEM bundle; other sections (keys) are skipped.
#[cfg(feature = "tls")]
fn certificates(pem: &[u8]) -> Result<usize, ExportBuildError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| ExportBuildError::Tls(format!("cannot read PEM: {e}")))?;
        n += 1;
    }
    Ok(n)
}
