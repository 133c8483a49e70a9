//! The one error type of the configuration companion.

use std::path::PathBuf;

/// Why a file could not be built, parsed, verified or decrypted.
///
/// Every variant names the thing that is wrong in words an operator can act on; none
/// carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// E3: a 16-bit length field cannot describe the value. Files are never truncated.
    #[error("{what} is {len} bytes, more than a 16-bit length field can describe")]
    TooLong { what: &'static str, len: usize },

    /// E13: the build time does not fit the `u32` timestamp of the format.
    #[error("time {0} is outside the u32 timestamp range (1970 to 2106)")]
    TimestampOutOfRange(i64),

    /// A file does not follow the layout of config-files.md.
    #[error("malformed file at offset {offset}: {reason}")]
    Malformed { offset: usize, reason: String },

    #[error("signature does not verify")]
    BadSignature,

    /// A certificate that cannot be used where it was given.
    #[error("certificate: {0}")]
    Certificate(String),

    /// E6: the signing identity cannot be used.
    #[error("signer: {0}")]
    Signer(String),

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// E1/E2/E4: the device document is not one capf will sign, encrypt or excerpt.
    #[error("device document: {0}")]
    Document(String),

    /// E5: there is no key transport to EC keys.
    #[error("the phone key is EC; encrypted configuration needs an RSA key")]
    EcPhoneKey,

    #[error("phone key: {0}")]
    PhoneKey(String),

    #[error("encryption: {0}")]
    Encrypt(String),

    /// V4: an `.enc.sgn` that does not decrypt to the document it claims to hold.
    #[error("decryption: {0}")]
    Decrypt(String),

    /// E6: signed names are not served without signing material.
    #[error("no signer is configured")]
    NoSigner,

    /// The ITL must carry the CAPF certificate, or phones cannot trust port 3804.
    #[error("no CAPF certificate is configured")]
    NoCapfCertificate,

    /// A build was asked for a plan that serves nothing.
    #[error("nothing to build: {0}")]
    NotServed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(offset: usize, reason: impl Into<String>) -> Self {
        Error::Malformed {
            offset,
            reason: reason.into(),
        }
    }
}
