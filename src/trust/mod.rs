//! Trust decisions for certificate-mode authentication (capf-protocol.md §7).
//!
//! A phone that authenticates "by existing certificate" sends a certificate (its LSC or
//! its MIC), two signatures proving it holds the certificate's key, and optionally a SUDI
//! block. This module answers, without any I/O, the four questions the session asks:
//!
//! * does the certificate chain to something capf trusts ([`verify_chain`], with the
//!   anchors in [`TrustAnchors`]);
//! * does the phone hold the key ([`verify_possession`], [`verify_sudi`]);
//! * does the certificate belong to the device that claims it ([`bound_to_device`]);
//! * and all of it at once for one AUTH_RESPONSE ([`verify_certificate_auth`]).
//!
//! Every failure is a [`TrustError`]; the session answers each one with END_SESSION 7
//! (R11) and logs the error text, which names certificates but never carries secrets.

mod anchors;
mod auth;
mod binding;
mod chain;
mod proof;
mod signature;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use thiserror::Error;

use crate::model::UnixTime;
use crate::protocol::HashId;

pub use anchors::TrustAnchors;
pub use auth::verify_certificate_auth;
pub use binding::bound_to_device;
pub use chain::{verify_chain, ChainPolicy, MAX_CHAIN_DEPTH};
#[cfg(test)]
use {
    anchors::{AnchorCert, AnchorSet},
    binding::sudi_bound_to_device,
    proof::{verify_possession, verify_sudi, verify_sudi_proof},
};

/// Why a certificate, a chain or a proof was not accepted.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error("trust anchor file {path}: {reason}")]
    AnchorFile { path: PathBuf, reason: String },
    #[error("cannot read trust anchor directory {path}: {source}")]
    AnchorDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("no trusted issuer named {issuer} for {subject}")]
    UntrustedIssuer { subject: String, issuer: String },
    #[error("signature on {subject} does not verify with the key of {issuer}")]
    ChainSignature { subject: String, issuer: String },
    #[error("{subject} expired at {not_after} (now {now})")]
    Expired {
        subject: String,
        not_after: UnixTime,
        now: UnixTime,
    },
    #[error("{subject} is not valid before {not_before} (now {now})")]
    NotYetValid {
        subject: String,
        not_before: UnixTime,
        now: UnixTime,
    },
    #[error("issuer {subject} is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotCa { subject: String },
    #[error("{subject} is a CA certificate, not a device certificate")]
    LeafIsCa { subject: String },
    #[error(
        "issuer {subject} has a pathLenConstraint of {limit} but {below} CA certificates below it"
    )]
    PathLength {
        subject: String,
        limit: u32,
        below: usize,
    },
    #[error("{subject}: key usage lacks {missing}")]
    KeyUsage {
        subject: String,
        missing: &'static str,
    },
    #[error("{subject}: unsupported critical extension {oid}")]
    CriticalExtension { subject: String, oid: String },
    #[error("no path from {subject} to a trust anchor within {MAX_CHAIN_DEPTH} certificates")]
    TooDeep { subject: String },
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("the SHA-2 signature uses hash id {0:?}; only SHA-512 (3) is accepted")]
    UnsupportedHash(HashId),
    #[error("{0} does not verify")]
    BadSignature(&'static str),
    #[error("SUDI proof is unverifiable: {0}")]
    Unverifiable(&'static str),
    #[error("AUTH_RESPONSE lacks {0}")]
    Missing(&'static str),
    #[error("device name is not usable in a signature input")]
    BadDeviceName,
    #[error("certificate {subject} does not belong to device {device}")]
    NotBound { subject: String, device: String },
}
