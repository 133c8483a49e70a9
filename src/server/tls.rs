//! The TLS layer of a listener, the only part that differs between the default
//! listener (rustls: TLS 1.2 with ECDHE + AEAD, TLS 1.3) and the legacy one (OpenSSL:
//! down to TLS 1.0 with static-RSA CBC suites, for phones that speak nothing newer).
//! After the handshake both hand the same kind of stream to the same session code.

use super::ServerError;
use crate::ca::Ca;
use crate::session::TlsInfo;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A TLS stream of either backend.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Performs server handshakes with the CAPF identity.
#[derive(Clone)]
pub enum Acceptor {
    Rustls(TlsAcceptor),
    #[cfg(feature = "legacy-tls")]
    OpenSsl(openssl::ssl::SslAcceptor),
}

impl Acceptor {
    /// rustls with the ring provider: TLS 1.2 (ECDHE + AEAD) and TLS 1.3, no client
    /// certificate (devices authenticate inside the protocol, §2).
    pub fn rustls(ca: &Ca) -> Result<Acceptor, ServerError> {
        let (chain, key) = ca.tls_identity();
        let provider = Arc::new(crate::ca::signing::tls_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // A phone runs one CAPF session per operation and never resumes one: tickets
        // (two records after every handshake) and a session cache would only cost
        // writes and memory.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Acceptor::Rustls(TlsAcceptor::from(Arc::new(config))))
    }

    /// OpenSSL from TLS 1.0 to 1.3. Modern suites first and the server's order wins,
    /// so a phone gets the best it offers; static-RSA AES-CBC (TLS_RSA_WITH_AES_128/
    /// 256_CBC_SHA) is last, for phones with nothing else. Security level 0 because
    /// TLS 1.0 signs handshakes with MD5+SHA-1, which every higher level refuses
    /// ("no suitable signature algorithm"); `@SECLEVEL=0` must end the cipher string,
    /// as a later one overrides `set_security_level`.
    #[cfg(feature = "legacy-tls")]
    pub fn openssl(ca: &Ca) -> Result<Acceptor, ServerError> {
        use openssl::pkey::PKey;
        use openssl::ssl::{SslAcceptor, SslMethod, SslOptions, SslVersion};
        use openssl::x509::X509;

        const CIPHERS: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
            ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-SHA:AES256-SHA:@SECLEVEL=0";

        let (chain, key) = ca.tls_identity();
        let mut builder = SslAcceptor::mozilla_intermediate(SslMethod::tls_server())?;
        builder.clear_options(SslOptions::NO_TLSV1_3);
        builder.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
        builder.set_min_proto_version(Some(SslVersion::TLS1))?;
        builder.set_cipher_list(CIPHERS)?;
        for (i, der) in chain.iter().enumerate() {
            let cert = X509::from_der(der)?;
            if i == 0 {
                builder.set_certificate(&cert)?;
            } else {
                builder.add_extra_chain_cert(cert)?;
            }
        }
        let key = PKey::private_key_from_der(key.secret_der())?;
        builder.set_private_key(&key)?;
        builder.check_private_key()?;
        Ok(Acceptor::OpenSsl(builder.build()))
    }

    /// The server handshake on `tcp`, and what it negotiated.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<(Box<dyn Stream>, TlsInfo)> {
        match self {
            Acceptor::Rustls(acceptor) => {
                let tls = acceptor.accept(tcp).await?;
                let (_, conn) = tls.get_ref();
                let info = TlsInfo {
                    version: conn
                        .protocol_version()
                        .map(version_name)
                        .unwrap_or_default(),
                    cipher: conn
                        .negotiated_cipher_suite()
                        .map(|c| format!("{:?}", c.suite()))
                        .unwrap_or_default(),
                    legacy: false,
                };
                Ok((Box::new(tls), info))
            }
            #[cfg(feature = "legacy-tls")]
            Acceptor::OpenSsl(acceptor) => {
                let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(io::Error::other)?;
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).map_err(io::Error::other)?;
                std::pin::Pin::new(&mut tls)
                    .accept()
                    .await
                    .map_err(io::Error::other)?;
                let info = TlsInfo {
                    version: tls.ssl().version_str().to_string(),
                    cipher: tls
                        .ssl()
                        .current_cipher()
                        .map(|c| c.standard_name().unwrap_or(c.name()).to_string())
                        .unwrap_or_default(),
                    legacy: true,
                };
                Ok((Box::new(tls), info))
            }
        }
    }
}

/// Versions named as OpenSSL names them (`TLSv1.2`), so both listeners write the
/// same words into the audit trail.
fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        other => format!("{other:?}"),
    }
}
