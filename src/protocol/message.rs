//! Typed messages, and how each message maps to elements.

use super::element::{tag, Elements, MessageWriter};
use super::wire::*;

/// AUTH_RESPONSE (C→S).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthResponse {
    /// VERSION, absent in some legacy clients.
    pub version: Option<u8>,
    /// DEVICE_NAME without its NUL terminator. `None` when absent.
    pub device_name: Option<String>,
    /// PASSWORD without its NUL terminator. `None` when absent (treat like empty).
    pub password: Option<Vec<u8>>,
    /// REASON (always 1 from real clients; meaningless).
    pub reason: Option<Reason>,
    pub certificate: Option<WrappedCertificate>,
    /// SIGNED_DATA: raw SHA-1 signature (§4.4).
    pub signed_data: Option<Vec<u8>>,
    pub sha2_signed_data: Option<Sha2SignedData>,
    pub sudi: Option<SudiData>,
}

/// KEY_GENERATE_REQUEST (S→C).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGenerateRequest {
    pub key_size: Option<u16>,
    pub key_type: Option<KeyType>,
    pub curve: Option<CurveId>,
}

/// Messages the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// VERSION, and AUTH_TYPE when `auth_type` is set.
    AuthRequest {
        version: u8,
        auth_type: Option<AuthType>,
    },
    KeyGenerateRequest(KeyGenerateRequest),
    /// CERTIFICATE_TYPE (taken from the wrapper) and CERTIFICATE.
    StoreCertificateRequest(WrappedCertificate),
    FetchCertificateRequest,
    DeleteCertificateRequest,
    EndSession(Reason),
}

/// Messages a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    AuthResponse(AuthResponse),
    /// PUBLIC_KEY (SPKI DER) on success; REASON without a key on failure.
    KeyGenerateResponse {
        public_key: Option<Vec<u8>>,
        reason: Option<Reason>,
    },
    StoreCertificateResponse {
        reason: Option<Reason>,
    },
    FetchCertificateResponse {
        reason: Option<Reason>,
        certificate: Option<WrappedCertificate>,
    },
    DeleteCertificateResponse {
        reason: Option<Reason>,
    },
    RequestInProgress,
}

impl ServerMessage {
    pub fn command(&self) -> Command {
        match self {
            ServerMessage::AuthRequest { .. } => Command::AuthRequest,
            ServerMessage::KeyGenerateRequest(_) => Command::KeyGenerateRequest,
            ServerMessage::StoreCertificateRequest(_) => Command::StoreCertificateRequest,
            ServerMessage::FetchCertificateRequest => Command::FetchCertificateRequest,
            ServerMessage::DeleteCertificateRequest => Command::DeleteCertificateRequest,
            ServerMessage::EndSession(_) => Command::EndSession,
        }
    }

    /// Header and payload in one buffer, elements in ascending tag order (R14).
    pub fn encode(&self, session_id: u32) -> Result<Vec<u8>, ProtocolError> {
        let mut w = MessageWriter::new();
        match self {
            ServerMessage::AuthRequest { version, auth_type } => {
                w.u8_element(tag::VERSION, *version)?;
                if let Some(auth_type) = auth_type {
                    w.u8_element(tag::AUTH_TYPE, auth_type.to_u8())?;
                }
            }
            ServerMessage::KeyGenerateRequest(request) => {
                if let Some(size) = request.key_size {
                    w.element(tag::KEY_SIZE, &size.to_be_bytes())?;
                }
                if let Some(key_type) = request.key_type {
                    w.u8_element(tag::KEY_TYPE, key_type.to_u8())?;
                }
                if let Some(curve) = request.curve {
                    w.u8_element(tag::CURVE, curve.to_u8())?;
                }
            }
            ServerMessage::StoreCertificateRequest(certificate) => {
                w.u8_element(tag::CERTIFICATE_TYPE, certificate.cert_type.to_u8())?;
                w.element(tag::CERTIFICATE, &certificate.encode_value()?)?;
            }
            ServerMessage::FetchCertificateRequest | ServerMessage::DeleteCertificateRequest => {}
            ServerMessage::EndSession(reason) => w.u8_element(tag::REASON, reason.to_u8())?,
        }
        w.finish(self.command(), session_id)
    }

    /// Decodes a server message (used by the phone simulator and tests).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ServerMessage, ProtocolError> {
        let e = decode_elements(header, payload)?;
        Ok(match header.command {
            Command::AuthRequest => ServerMessage::AuthRequest {
                version: e.version.ok_or(ProtocolError::Missing(tag::VERSION))?,
                auth_type: e.auth_type,
            },
            Command::KeyGenerateRequest => ServerMessage::KeyGenerateRequest(KeyGenerateRequest {
                key_size: e.key_size,
                key_type: e.key_type,
                curve: e.curve,
            }),
            // The certificate type travels twice; the wrapper's copy is the one clients
            // read (§9), so CERTIFICATE_TYPE is not required.
            Command::StoreCertificateRequest => ServerMessage::StoreCertificateRequest(
                e.certificate
                    .ok_or(ProtocolError::Missing(tag::CERTIFICATE))?,
            ),
            Command::FetchCertificateRequest => ServerMessage::FetchCertificateRequest,
            Command::DeleteCertificateRequest => ServerMessage::DeleteCertificateRequest,
            Command::EndSession => {
                ServerMessage::EndSession(e.reason.ok_or(ProtocolError::Missing(tag::REASON))?)
            }
            other => return Err(ProtocolError::UnexpectedCommand(other.to_u8())),
        })
    }
}

impl ClientMessage {
    pub fn command(&self) -> Command {
        match self {
            ClientMessage::AuthResponse(_) => Command::AuthResponse,
            ClientMessage::KeyGenerateResponse { .. } => Command::KeyGenerateResponse,
            ClientMessage::StoreCertificateResponse { .. } => Command::StoreCertificateResponse,
            ClientMessage::FetchCertificateResponse { .. } => Command::FetchCertificateResponse,
            ClientMessage::DeleteCertificateResponse { .. } => Command::DeleteCertificateResponse,
            ClientMessage::RequestInProgress => Command::RequestInProgress,
        }
    }

    pub fn encode(&self, session_id: u32) -> Result<Vec<u8>, ProtocolError> {
        let mut w = MessageWriter::new();
        match self {
            ClientMessage::AuthResponse(auth) => {
                if let Some(reason) = auth.reason {
                    w.u8_element(tag::REASON, reason.to_u8())?;
                }
                if let Some(certificate) = &auth.certificate {
                    w.element(tag::CERTIFICATE, &certificate.encode_value()?)?;
                }
                if let Some(signed) = &auth.signed_data {
                    w.element(tag::SIGNED_DATA, signed)?;
                }
                if let Some(version) = auth.version {
                    w.u8_element(tag::VERSION, version)?;
                }
                if let Some(password) = &auth.password {
                    w.text_element(tag::PASSWORD, password)?;
                }
                if let Some(name) = &auth.device_name {
                    w.text_element(tag::DEVICE_NAME, name.as_bytes())?;
                }
                if let Some(sudi) = &auth.sudi {
                    w.element(tag::SUDI_DATA, &sudi.encode_value()?)?;
                }
                if let Some(sha2) = &auth.sha2_signed_data {
                    w.element(tag::SHA2_SIGNED_DATA, &sha2.encode_value()?)?;
                }
            }
            ClientMessage::KeyGenerateResponse { public_key, reason } => {
                if let Some(reason) = reason {
                    w.u8_element(tag::REASON, reason.to_u8())?;
                }
                if let Some(key) = public_key {
                    w.element(tag::PUBLIC_KEY, key)?;
                }
            }
            ClientMessage::FetchCertificateResponse {
                reason,
                certificate,
            } => {
                if let Some(reason) = reason {
                    w.u8_element(tag::REASON, reason.to_u8())?;
                }
                if let Some(certificate) = certificate {
                    w.element(tag::CERTIFICATE, &certificate.encode_value()?)?;
                }
            }
            ClientMessage::StoreCertificateResponse { reason }
            | ClientMessage::DeleteCertificateResponse { reason } => {
                if let Some(reason) = reason {
                    w.u8_element(tag::REASON, reason.to_u8())?;
                }
            }
            ClientMessage::RequestInProgress => {}
        }
        w.finish(self.command(), session_id)
    }

    /// Decodes a client message. A command that clients never send (or an unknown one)
    /// is `UnexpectedCommand`.
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ClientMessage, ProtocolError> {
        let e = decode_elements(header, payload)?;
        Ok(match header.command {
            Command::AuthResponse => ClientMessage::AuthResponse(AuthResponse {
                version: e.version,
                device_name: e.device_name.map(str::to_owned),
                password: e.password.map(<[u8]>::to_vec),
                reason: e.reason,
                certificate: e.certificate,
                signed_data: e.signed_data.map(<[u8]>::to_vec),
                sha2_signed_data: e.sha2_signed_data,
                sudi: e.sudi,
            }),
            Command::KeyGenerateResponse => ClientMessage::KeyGenerateResponse {
                public_key: e.public_key.map(<[u8]>::to_vec),
                reason: e.reason,
            },
            Command::StoreCertificateResponse => {
                ClientMessage::StoreCertificateResponse { reason: e.reason }
            }
            Command::FetchCertificateResponse => ClientMessage::FetchCertificateResponse {
                reason: e.reason,
                certificate: e.certificate,
            },
            Command::DeleteCertificateResponse => {
                ClientMessage::DeleteCertificateResponse { reason: e.reason }
            }
            Command::RequestInProgress => ClientMessage::RequestInProgress,
            other => return Err(ProtocolError::UnexpectedCommand(other.to_u8())),
        })
    }
}

/// The checks shared by both directions: the payload is the one the header announced,
/// and its elements are well-formed (whether or not this message uses them).
fn decode_elements<'a>(header: &Header, payload: &'a [u8]) -> Result<Elements<'a>, ProtocolError> {
    let announced = usize::from(header.payload_len);
    if payload.len() != announced {
        return Err(ProtocolError::LengthMismatch {
            announced,
            actual: payload.len(),
        });
    }
    let elements = Elements::decode(payload)?;
    if !elements.skipped_tags.is_empty() {
        // R5: unknown tags cannot influence a decision, but newer firmware is worth noticing.
        tracing::info!(
            command = header.command.to_u8(),
            tags = ?elements.skipped_tags,
            "skipped unknown elements"
        );
    }
    Ok(elements)
}

/// R8: a device name that is safe to use in a file name, a query or a log line:
/// 1 to 64 bytes of `[A-Za-z0-9_.-]`.
pub fn valid_device_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
