//! The vocabulary of the wire (capf-protocol.md §3–§4): the header, the code tables
//! (commands, reasons, element values) and the composite element values. Both the
//! element layer and the messages speak it; it depends on neither.

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
