//! The client side of what phones do, for `capf doctor` (which checks the running
//! node as a phone meets it) and the phone simulator: CAPF's TLS as a phone does it
//! (trust exactly the CAPF certificate(s) a phone learned from its ITL, no host name
//! check), and fetching files over HTTP ([`http`]) and TFTP ([`tftp`]).

mod http;
mod tftp;

pub use http::http_get;
// The phone simulator reads headers and sends other methods; doctor only GETs.
#[cfg(feature = "phone-sim")]
pub use http::{http_request, HttpConnection, HttpResponse};
pub use tftp::tftp_get;
// The load generator asks for the block size phones use.
#[cfg(feature = "phone-sim")]
pub use tftp::tftp_get_with;

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("HTTP: {0}")]
    Http(String),
    #[error("TFTP: {0}")]
    Tftp(String),
}

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// A TLS connector that trusts exactly the given CAPF certificate(s) and, like a phone,
/// does not check the host name: the phone trusts the certificate through its ITL.
pub fn connector(trust: &[CertificateDer<'static>]) -> Result<TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in trust {
        roots.add(cert.clone())?;
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PhoneVerifier {
            pinned: trust.iter().map(|c| c.to_vec()).collect(),
            inner,
        }))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What a phone checks: the CAPF certificate is trusted by identity (its ITL entry), so
/// a presented certificate equal to a trusted one is accepted as is. That matters because
/// the CAPF certificate is itself a CA (CUCM requires CA:TRUE), which WebPKI refuses as
/// an end entity. Anything else gets full chain verification, minus the host name.
#[derive(Debug)]
struct PhoneVerifier {
    pinned: Vec<Vec<u8>>,
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for PhoneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_slice() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
