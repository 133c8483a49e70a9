//! A CAPF client that behaves like a phone (feature `phone-sim`, on only for the
//! examples and tests). Used by `examples/phone.rs`, the load generator and the
//! integration tests, so all of them speak to the
//! server exactly as a phone would: TLS verified against the CAPF certificate (and
//! nothing else, like a phone trusting its ITL), one message per write, keys generated
//! on request.

pub use crate::server::client::{
    http_get, http_request, tftp_get, tftp_get_with, FetchError, HttpConnection, HttpResponse,
};

use crate::protocol::{
    AuthResponse, ClientMessage, Command, CurveId, HashId, Header, KeyGenerateRequest, KeyType,
    Reason, ServerMessage, Sha2SignedData, SudiData, WrappedCertificate, HEADER_LEN,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::Generate;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Error)]
pub enum PhoneError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error("server sent {0:?} where the phone did not expect it")]
    Unexpected(Command),
    #[error("server message carries session id {got}, expected {expected}")]
    WrongSessionId { got: u32, expected: u32 },
    #[error("key generation: {0}")]
    Key(String),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// A private key the phone holds.
#[derive(Clone)]
pub enum PhoneKey {
    Rsa(rsa::PrivateKey),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

impl PhoneKey {
    /// Generates the key a KEY_GENERATE_REQUEST asks for. Like the reverse-engineered
    /// clients, a request without KEY_TYPE means RSA.
    pub fn generate(request: &KeyGenerateRequest) -> Result<PhoneKey, PhoneError> {
        let mut rng = rand::rng();
        match (request.key_type, request.curve) {
            (Some(KeyType::Ec), Some(CurveId::Secp256r1)) => {
                Ok(PhoneKey::P256(p256::SecretKey::generate_from_rng(&mut rng)))
            }
            (Some(KeyType::Ec), Some(CurveId::Secp384r1)) => {
                Ok(PhoneKey::P384(p384::SecretKey::generate_from_rng(&mut rng)))
            }
            (Some(KeyType::Ec), Some(CurveId::Secp521r1)) => {
                Ok(PhoneKey::P521(p521::SecretKey::generate_from_rng(&mut rng)))
            }
            (Some(KeyType::Ec), other) => {
                Err(PhoneError::Key(format!("unsupported curve {other:?}")))
            }
            (None | Some(KeyType::Rsa), _) => {
                let bits = request.key_size.unwrap_or(2048);
                if ![512, 1024, 2048, 3072, 4096].contains(&bits) {
                    return Err(PhoneError::Key(format!("unsupported RSA size {bits}")));
                }
                rsa::PrivateKey::new(&mut rng, usize::from(bits))
                    .map(PhoneKey::Rsa)
                    .map_err(|e| PhoneError::Key(e.to_string()))
            }
            (Some(KeyType::Unknown(t)), _) => Err(PhoneError::Key(format!("unknown key type {t}"))),
        }
    }

    /// Whether this key answers `request` (so a pre-generated key can be reused).
    pub fn matches(&self, request: &KeyGenerateRequest) -> bool {
        match (self, request.key_type, request.curve) {
            (PhoneKey::Rsa(k), None | Some(KeyType::Rsa), _) => {
                use rsa::traits::PublicKeyParts;
                request.key_size.unwrap_or(2048) as usize == k.n().bit_width() as usize
            }
            (PhoneKey::P256(_), Some(KeyType::Ec), Some(CurveId::Secp256r1)) => true,
            (PhoneKey::P384(_), Some(KeyType::Ec), Some(CurveId::Secp384r1)) => true,
            (PhoneKey::P521(_), Some(KeyType::Ec), Some(CurveId::Secp521r1)) => true,
            _ => false,
        }
    }

    /// The SubjectPublicKeyInfo DER the phone sends in PUBLIC_KEY.
    pub fn public_key_der(&self) -> Result<Vec<u8>, PhoneError> {
        let doc = match self {
            PhoneKey::Rsa(k) => k.to_public_key().to_public_key_der(),
            PhoneKey::P256(k) => k.public_key().to_public_key_der(),
            PhoneKey::P384(k) => k.public_key().to_public_key_der(),
            PhoneKey::P521(k) => k.public_key().to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec())
            .map_err(|e| PhoneError::Key(e.to_string()))
    }

    /// A proof as phones make it (§7.5): RSA with PKCS#1 type-1 padding over the bare
    /// digest (no DigestInfo), or ECDSA over the digest, DER-encoded.
    pub fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, PhoneError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let key_error = |e: &dyn std::fmt::Display| PhoneError::Key(e.to_string());
        match self {
            PhoneKey::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new_unprefixed(), digest)
                .map_err(|e| key_error(&e)),
            PhoneKey::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                    .sign_prehash(digest)
                    .map_err(|e| key_error(&e))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            PhoneKey::P384(k) => {
                let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                    .sign_prehash(digest)
                    .map_err(|e| key_error(&e))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            PhoneKey::P521(k) => {
                let sig: p521::ecdsa::Signature =
                    p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                        .map_err(|e| key_error(&e))?
                        .sign_prehash(digest)
                        .map_err(|e| key_error(&e))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }

    /// PKCS#8 PEM of the private key.
    pub fn to_pem(&self) -> Result<String, PhoneError> {
        let pem = match self {
            PhoneKey::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            PhoneKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            PhoneKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
            PhoneKey::P521(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string())
            .map_err(|e| PhoneError::Key(e.to_string()))
    }
}

/// How the simulated phone behaves in one session.
#[derive(Clone)]
pub struct Phone {
    pub name: String,
    /// The authentication string typed on the keypad; `None` omits PASSWORD entirely
    /// (as the softphone client does).
    pub password: Option<String>,
    /// Protocol version to announce; `None` omits VERSION.
    pub version: Option<u8>,
    /// REQUEST_IN_PROGRESS messages to send before the key.
    pub in_progress: u32,
    /// Use this key when it matches the request instead of generating one.
    pub key: Option<PhoneKey>,
    /// The certificate returned on a troubleshoot (fetch) request.
    pub certificate: Option<WrappedCertificate>,
    /// What to answer STORE_CERTIFICATE_REQUEST with.
    pub store_reply: Reason,
    /// Close the connection instead of answering STORE_CERTIFICATE_REQUEST.
    pub drop_before_store_reply: bool,
    /// The phone's socket timeout.
    pub timeout: Duration,
    /// Authenticate by existing certificate: the certificate (LSC or MIC) and its key.
    pub credential: Option<(WrappedCertificate, PhoneKey)>,
    /// A SUDI certificate and its RSA key; the proof signs the session id.
    pub sudi: Option<(Vec<u8>, rsa::PrivateKey)>,
    /// Test hooks for hostile phones: flip a bit in the SHA-1 proof, or leave out the
    /// SHA-512 proof.
    pub tamper_proof: bool,
    pub omit_sha2_proof: bool,
}

impl Phone {
    pub fn new(name: impl Into<String>) -> Phone {
        Phone {
            name: name.into(),
            password: Some(String::new()),
            version: Some(3),
            in_progress: 1,
            key: None,
            certificate: None,
            store_reply: Reason::UpdateCertificate,
            drop_before_store_reply: false,
            timeout: Duration::from_secs(10),
            credential: None,
            sudi: None,
            tamper_proof: false,
            omit_sha2_proof: false,
        }
    }

    /// The AUTH_RESPONSE this phone sends in session `session_id`.
    pub fn auth_response(&self, session_id: u32) -> Result<AuthResponse, PhoneError> {
        let mut response = AuthResponse {
            version: self.version,
            device_name: Some(self.name.clone()),
            password: self.password.as_ref().map(|p| p.as_bytes().to_vec()),
            reason: Some(Reason::UpdateCertificate),
            ..AuthResponse::default()
        };
        if let Some((cert, key)) = &self.credential {
            // §7.1: the signed input is the device name, its NUL, then the certificate.
            let input = [self.name.as_bytes(), &[0], &cert.der].concat();
            let mut sha1 = key.sign_digest(&<sha1::Sha1 as sha2::Digest>::digest(&input))?;
            if self.tamper_proof {
                if let Some(last) = sha1.last_mut() {
                    *last ^= 1;
                }
            }
            response.certificate = Some(cert.clone());
            response.signed_data = Some(sha1);
            if !self.omit_sha2_proof {
                response.sha2_signed_data = Some(Sha2SignedData {
                    hash: HashId::Sha512,
                    signature: key.sign_digest(&<sha2::Sha512 as sha2::Digest>::digest(&input))?,
                });
            }
        }
        if let Some((der, key)) = &self.sudi {
            // §7.4: the session id in little-endian order, then the SUDI certificate.
            let input = [&session_id.to_le_bytes()[..], der].concat();
            let key = PhoneKey::Rsa(key.clone());
            response.sudi = Some(SudiData {
                certificate: der.clone(),
                sha1_signature: key.sign_digest(&<sha1::Sha1 as sha2::Digest>::digest(&input))?,
                sha2_hash: HashId::Sha512,
                sha2_signature: key.sign_digest(&<sha2::Sha512 as sha2::Digest>::digest(&input))?,
            });
        }
        Ok(response)
    }
}

/// What happened in a session, from the phone's side.
#[derive(Default)]
pub struct Outcome {
    /// The END_SESSION reason, or `None` if the server closed without one.
    pub end_reason: Option<Reason>,
    /// Server commands in the order received.
    pub commands: Vec<Command>,
    /// The LSC received (DER) with the key it was issued for.
    pub issued: Option<(Vec<u8>, PhoneKey)>,
    /// The server asked the phone to delete its LSC.
    pub delete_requested: bool,
    /// TLS version negotiated.
    pub tls_version: String,
}

/// A TLS connector that trusts exactly the given CAPF certificate(s), as a phone
/// trusts its ITL (see [`capf::server::client`]).
pub fn connector(trust: &[CertificateDer<'static>]) -> Result<TlsConnector, PhoneError> {
    Ok(crate::server::client::connector(trust)?)
}

impl Phone {
    /// Runs one CAPF session against `addr`.
    pub async fn run(
        &self,
        addr: SocketAddr,
        connector: &TlsConnector,
    ) -> Result<Outcome, PhoneError> {
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| PhoneError::Timeout)??;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("capf").map_err(|e| PhoneError::Key(e.to_string()))?;
        let mut tls = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| PhoneError::Timeout)??;
        let mut outcome = Outcome {
            tls_version: tls
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            ..Outcome::default()
        };

        let mut session_id = None;
        let mut pending_key: Option<PhoneKey> = None;
        loop {
            let Some((header, msg)) = self.read(&mut tls, session_id).await? else {
                return Ok(outcome);
            };
            session_id = Some(header.session_id);
            let id = header.session_id;
            outcome.commands.push(msg.command());
            let reply = match msg {
                ServerMessage::AuthRequest { .. } => {
                    ClientMessage::AuthResponse(self.auth_response(id)?)
                }
                ServerMessage::KeyGenerateRequest(request) => {
                    for _ in 0..self.in_progress {
                        write(&mut tls, &ClientMessage::RequestInProgress, id).await?;
                    }
                    let key = match &self.key {
                        Some(k) if k.matches(&request) => k.clone(),
                        _ => PhoneKey::generate(&request)?,
                    };
                    let public_key = key.public_key_der()?;
                    pending_key = Some(key);
                    ClientMessage::KeyGenerateResponse {
                        public_key: Some(public_key),
                        reason: None,
                    }
                }
                ServerMessage::StoreCertificateRequest(cert) => {
                    if self.drop_before_store_reply {
                        outcome.issued = pending_key.take().map(|k| (cert.der, k));
                        return Ok(outcome);
                    }
                    outcome.issued = pending_key.take().map(|k| (cert.der, k));
                    ClientMessage::StoreCertificateResponse {
                        reason: Some(self.store_reply),
                    }
                }
                ServerMessage::FetchCertificateRequest => match &self.certificate {
                    Some(c) => ClientMessage::FetchCertificateResponse {
                        reason: Some(Reason::UpdateCertificate),
                        certificate: Some(c.clone()),
                    },
                    None => ClientMessage::FetchCertificateResponse {
                        reason: Some(Reason::InvalidElement),
                        certificate: None,
                    },
                },
                ServerMessage::DeleteCertificateRequest => {
                    outcome.delete_requested = true;
                    ClientMessage::DeleteCertificateResponse {
                        reason: Some(if self.certificate.is_some() {
                            Reason::UpdateCertificate
                        } else {
                            Reason::InvalidElement
                        }),
                    }
                }
                ServerMessage::EndSession(reason) => {
                    outcome.end_reason = Some(reason);
                    let _ = tls.shutdown().await;
                    return Ok(outcome);
                }
            };
            write(&mut tls, &reply, id).await?;
        }
    }

    /// Reads one server message; `None` when the server closed the connection.
    async fn read<S: tokio::io::AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        expected_id: Option<u32>,
    ) -> Result<Option<(Header, ServerMessage)>, PhoneError> {
        let mut raw = [0u8; HEADER_LEN];
        match tokio::time::timeout(self.timeout, stream.read_exact(&mut raw)).await {
            Err(_) => return Err(PhoneError::Timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        let header = Header::decode(&raw)?;
        if let Some(expected) = expected_id {
            if header.session_id != expected {
                return Err(PhoneError::WrongSessionId {
                    got: header.session_id,
                    expected,
                });
            }
        }
        let mut payload = vec![0u8; usize::from(header.payload_len)];
        tokio::time::timeout(self.timeout, stream.read_exact(&mut payload))
            .await
            .map_err(|_| PhoneError::Timeout)??;
        Ok(Some((header, ServerMessage::decode(&header, &payload)?)))
    }
}

async fn write<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &ClientMessage,
    session_id: u32,
) -> Result<(), PhoneError> {
    stream.write_all(&msg.encode(session_id)?).await?;
    stream.flush().await?;
    Ok(())
}
