//! Header, code tables and typed messages, and how each message maps to elements.

use thiserror::Error;

use super::element::{tag, Elements, MessageWriter};

/// Byte 0 of every CAPF message.
pub const PROTOCOL_ID: u8 = 0x55;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Default cap on an announced payload (R4). The largest legitimate message is well
/// under 10 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 32 * 1024;
/// The protocol version capf announces (always 3, capf-protocol.md §10 item 2).
pub const PROTOCOL_VERSION: u8 = 3;

/// Why bytes could not be decoded. Every variant ends the session with reason 7.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("wrong protocol id 0x{0:02x}")]
    BadProtocolId(u8),
    #[error("payload length {announced} exceeds the cap of {cap} bytes")]
    PayloadTooLarge { announced: usize, cap: usize },
    #[error("payload is {actual} bytes but the header announced {announced}")]
    LengthMismatch { announced: usize, actual: usize },
    #[error("truncated element header at payload offset {0}")]
    TruncatedElement(usize),
    #[error("element tag {tag} claims {len} bytes beyond the end of the payload")]
    ElementOverrun { tag: u8, len: usize },
    #[error("element tag {tag} has length {len}, expected {expected}")]
    BadFixedLength {
        tag: u8,
        len: usize,
        expected: usize,
    },
    #[error("element tag {0} appears more than once")]
    Duplicate(u8),
    #[error("element tag {0} is malformed: {1}")]
    Malformed(u8, &'static str),
    #[error("required element tag {0} is missing")]
    Missing(u8),
    #[error("message would be {0} bytes of payload, more than 65535")]
    TooLongToEncode(usize),
    #[error("command {0} is not a message this side decodes")]
    UnexpectedCommand(u8),
}

/// Command byte (capf-protocol.md §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    AuthRequest,
    AuthResponse,
    KeyGenerateRequest,
    KeyGenerateResponse,
    EncryptResponse,
    EncryptRequest,
    DecryptRequest,
    DecryptResponse,
    StoreCertificateRequest,
    StoreCertificateResponse,
    FetchCertificateRequest,
    FetchCertificateResponse,
    DeleteCertificateRequest,
    DeleteCertificateResponse,
    EndSession,
    RetryLater,
    RequestInProgress,
    StatusRequest,
    StatusResponse,
    AbortRequest,
    AbortResponse,
    SignCertificateRequest,
    SignCertificateResponse,
    Unknown(u8),
}

/// Defines `from_u8`/`to_u8` for a code table. Unassigned values decode to
/// `Unknown(v)` so the caller decides what an unknown code means; the match on
/// `self` is exhaustive, so a variant added without a wire value fails to compile.
macro_rules! wire_codes {
    ($ty:ident { $($variant:ident = $value:literal),* $(,)? }) => {
        impl $ty {
            pub fn from_u8(v: u8) -> $ty {
                match v {
                    $($value => $ty::$variant,)*
                    other => $ty::Unknown(other),
                }
            }

            pub fn to_u8(self) -> u8 {
                match self {
                    $($ty::$variant => $value,)*
                    $ty::Unknown(v) => v,
                }
            }
        }
    };
}

wire_codes!(Command {
    AuthRequest = 1,
    AuthResponse = 2,
    KeyGenerateRequest = 3,
    KeyGenerateResponse = 4,
    EncryptResponse = 5,
    EncryptRequest = 6,
    DecryptRequest = 7,
    DecryptResponse = 8,
    StoreCertificateRequest = 9,
    StoreCertificateResponse = 10,
    FetchCertificateRequest = 11,
    FetchCertificateResponse = 12,
    DeleteCertificateRequest = 13,
    DeleteCertificateResponse = 14,
    EndSession = 15,
    RetryLater = 16,
    RequestInProgress = 17,
    StatusRequest = 18,
    StatusResponse = 19,
    AbortRequest = 20,
    AbortResponse = 21,
    SignCertificateRequest = 22,
    SignCertificateResponse = 23,
});

/// Reason codes (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// 0: nothing was scheduled; also after a fetch.
    NoAction,
    /// 1: success / "update certificate".
    UpdateCertificate,
    /// 7: generic failure.
    InvalidElement,
    /// 9: device not known.
    UnknownDevice,
    Unknown(u8),
}

wire_codes!(Reason {
    NoAction = 0,
    UpdateCertificate = 1,
    InvalidElement = 7,
    UnknownDevice = 9,
});

/// AUTH_TYPE values (§5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthType {
    None,
    Password,
    NoPassword,
    Lsc,
    Mic,
    Unknown(u8),
}

wire_codes!(AuthType {
    None = 0,
    Password = 1,
    NoPassword = 2,
    Lsc = 3,
    Mic = 4,
});

/// Certificate types (§5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificateType {
    Lsc,
    Mic,
    Unknown(u8),
}

wire_codes!(CertificateType { Lsc = 1, Mic = 2 });

/// Key types (§5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    Rsa,
    Ec,
    Unknown(u8),
}

wire_codes!(KeyType { Rsa = 0, Ec = 1 });

/// Curve ids on the wire (§5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CurveId {
    Secp256r1,
    Secp384r1,
    Secp521r1,
    Unknown(u8),
}

wire_codes!(CurveId {
    Secp256r1 = 0,
    Secp384r1 = 1,
    Secp521r1 = 2,
});

/// Hash ids (§5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashId {
    Sha1,
    Sha256,
    Sha512,
    Unknown(u8),
}

wire_codes!(HashId {
    Sha1 = 1,
    Sha256 = 2,
    Sha512 = 3,
});

/// The 8-byte message header (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub command: Command,
    pub session_id: u32,
    pub payload_len: u16,
}

impl Header {
    /// Decodes a header. Fails only on a wrong protocol id (R2); the payload cap is
    /// checked by `check_payload_cap` so the caller can choose the cap.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
        let [id, command, s0, s1, s2, s3, l0, l1] = *bytes;
        if id != PROTOCOL_ID {
            return Err(ProtocolError::BadProtocolId(id));
        }
        Ok(Header {
            command: Command::from_u8(command),
            session_id: u32::from_be_bytes([s0, s1, s2, s3]),
            payload_len: u16::from_be_bytes([l0, l1]),
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [s0, s1, s2, s3] = self.session_id.to_be_bytes();
        let [l0, l1] = self.payload_len.to_be_bytes();
        [PROTOCOL_ID, self.command.to_u8(), s0, s1, s2, s3, l0, l1]
    }

    /// R4: refuse an announced payload over `cap` before reading it.
    pub fn check_payload_cap(&self, cap: usize) -> Result<(), ProtocolError> {
        let announced = usize::from(self.payload_len);
        if announced > cap {
            return Err(ProtocolError::PayloadTooLarge { announced, cap });
        }
        Ok(())
    }
}

/// A certificate inside a CERTIFICATE element (§4.2 wrapper).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedCertificate {
    pub cert_type: CertificateType,
    /// The DER certificate exactly as carried on the wire.
    pub der: Vec<u8>,
}

/// SHA2_SIGNED_DATA (§4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha2SignedData {
    pub hash: HashId,
    pub signature: Vec<u8>,
}

/// SUDI_DATA (§4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SudiData {
    /// DER SUDI certificate.
    pub certificate: Vec<u8>,
    /// Signature with SHA-1 over the SUDI input (§7.4).
    pub sha1_signature: Vec<u8>,
    /// Hash id of the second signature (3 = SHA-512 from every known client).
    pub sha2_hash: HashId,
    /// Signature with the hash `sha2_hash` over the same input.
    pub sha2_signature: Vec<u8>,
}

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
