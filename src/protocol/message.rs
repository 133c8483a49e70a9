//! Header, element codes and typed messages. (Public API skeleton: the bodies marked
//! `todo!()` are filled in by the codec work.)

use thiserror::Error;

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

impl Command {
    pub fn from_u8(v: u8) -> Command {
        todo!("{v}")
    }
    pub fn to_u8(self) -> u8 {
        todo!()
    }
}

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

impl Reason {
    pub fn from_u8(v: u8) -> Reason {
        todo!("{v}")
    }
    pub fn to_u8(self) -> u8 {
        todo!()
    }
}

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

/// Certificate types (§5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificateType {
    Lsc,
    Mic,
    Unknown(u8),
}

/// Key types (§5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    Rsa,
    Ec,
    Unknown(u8),
}

/// Curve ids on the wire (§5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CurveId {
    Secp256r1,
    Secp384r1,
    Secp521r1,
    Unknown(u8),
}

/// Hash ids (§5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashId {
    Sha1,
    Sha256,
    Sha512,
    Unknown(u8),
}

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
        todo!("{bytes:?}")
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        todo!()
    }

    /// R4: refuse an announced payload over `cap` before reading it.
    pub fn check_payload_cap(&self, cap: usize) -> Result<(), ProtocolError> {
        todo!("{cap}")
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
        todo!()
    }

    /// Header and payload in one buffer, elements in ascending tag order (R14).
    pub fn encode(&self, session_id: u32) -> Result<Vec<u8>, ProtocolError> {
        todo!("{session_id}")
    }

    /// Decodes a server message (used by the phone simulator and tests).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ServerMessage, ProtocolError> {
        todo!("{header:?}{payload:?}")
    }
}

impl ClientMessage {
    pub fn command(&self) -> Command {
        todo!()
    }

    pub fn encode(&self, session_id: u32) -> Result<Vec<u8>, ProtocolError> {
        todo!("{session_id}")
    }

    /// Decodes a client message. A command that clients never send (or an unknown one)
    /// is `UnexpectedCommand`.
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ClientMessage, ProtocolError> {
        todo!("{header:?}{payload:?}")
    }
}
