//! capf's certificate authority: its identities and the LSCs it issues.
//!
//! * [`init_identities`] creates the CAPF certificate (the TLS server identity on port
//!   3804 and the LSC issuer) and the TFTP signing identity in the data directory.
//! * [`Ca`] is the loaded CAPF identity: it serves TLS and issues LSCs for the public
//!   keys phones generate ([`Ca::issue_lsc`], capf-protocol.md §9).
//! * [`check_public_key`] decides whether a phone's new key is the one it was asked
//!   for (R15); [`cert_info`] describes any certificate for the store.

mod files;
mod identity;
mod info;
mod issue;
mod keys;
mod names;
pub mod recovery;
mod rekey;
mod revocation;
pub mod rollover;
pub mod signing;
pub mod web;

#[cfg(test)]
mod tests;

pub use files::{certificate_pem, pem};
pub(crate) use files::{open_new, parse_certificate, replace};
pub use identity::{init_identities, InitOptions};
pub use info::cert_info;
pub use keys::{check_public_key, key_identity, KeyError};
pub use revocation::CRL_VALIDITY_SECS;

use crate::ca::signing::CertSigningKey;
use crate::model::KeySpec;
use rcgen::{CertificateParams, Issuer, KeyPair, PublicKeyData};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use x509_parser::parse_x509_certificate;

/// File names inside the certificates directory (design.md, "Data directory").
pub const CAPF_CERT_FILE: &str = "capf.pem";
pub const CAPF_KEY_FILE: &str = "capf.key";
pub const TFTP_CERT_FILE: &str = "tftp.pem";
pub const TFTP_KEY_FILE: &str = "tftp.key";
/// The ITL recovery identity (`recovery`).
pub const RECOVERY_CERT_FILE: &str = "itl-recovery.pem";
pub const RECOVERY_KEY_FILE: &str = "itl-recovery.key";
/// Present while the recovery certificate is being introduced to phones that knew only
/// the signer; holds the Unix time it was first listed.
pub const INTRODUCED_FILE: &str = "itl-recovery.introduced";
/// Where retired identities are kept, owner only (`rollover`, `recovery`).
pub const RETIRED_DIR: &str = "retired";

/// LSC lifetimes capf accepts: one to twenty years.
pub const LSC_VALIDITY_DAYS: std::ops::RangeInclusive<u32> = 365..=7305;

/// How far notBefore is set back from the issuing moment. A phone whose clock runs a
/// little behind capf's would otherwise hold a certificate that is "not yet valid" and
/// fail its first TLS connection to call control; five minutes covers ordinary drift
/// without meaningfully extending the certificate's life.
pub(crate) const CLOCK_SKEW_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA rollover: {0}")]
    Rollover(String),
    #[error("{0} already exists (use --force to replace it)")]
    Exists(PathBuf),
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the private key in {0} does not belong to the certificate in {1}")]
    KeyMismatch(PathBuf, PathBuf),
    #[error("{0} cannot issue certificates: {1}")]
    NotACa(PathBuf, String),
    #[error("LSC validity of {0} days is outside {min}..={max} days", min = LSC_VALIDITY_DAYS.start(), max = LSC_VALIDITY_DAYS.end())]
    Validity(u32),
    #[error("the CAPF subject cannot be reproduced as an issuer name: {0}")]
    IssuerName(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    UnsupportedKey(KeyError),
    #[error("cannot issue an LSC for a {0} key: the signing backend cannot encode it")]
    CannotIssueFor(KeySpec),
    #[error("invalid node name {0:?}")]
    NodeName(String),
    #[error("invalid device name {0:?}")]
    DeviceName(String),
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("issued certificate failed its self-check: {0}")]
    SelfCheck(&'static str),
}

impl CaError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        CaError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn pem(path: &Path, reason: impl Into<String>) -> Self {
        CaError::Pem {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The CAPF identity, loaded: its certificate, its key, and what LSCs copy from it.
pub struct Ca {
    cert_der: Vec<u8>,
    key_der: PrivatePkcs8KeyDer<'static>,
    issuer: Issuer<'static, CertSigningKey>,
    /// Raw DER of the CAPF subject: every LSC's issuer field must equal it.
    subject_der: Vec<u8>,
    subject: String,
    /// O, OU, L, ST, C of the CAPF subject, repeated in every LSC subject.
    lsc_subject_tail: Vec<names::Attribute>,
    lsc_validity_days: u32,
    /// The CRL distribution point written into new LSCs (`crl_url`), if any.
    crl_url: Option<String>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .field("lsc_validity_days", &self.lsc_validity_days)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `capf.pem` and `capf.key` from `certs_dir`. The key may be PKCS#8 or
    /// PKCS#1; it must match the certificate, and the certificate must be a CA whose
    /// subject rcgen can reproduce exactly as an issuer name.
    pub fn load(certs_dir: &Path, lsc_validity_days: u32) -> Result<Ca, CaError> {
        if !LSC_VALIDITY_DAYS.contains(&lsc_validity_days) {
            return Err(CaError::Validity(lsc_validity_days));
        }
        let cert_path = certs_dir.join(CAPF_CERT_FILE);
        let key_path = certs_dir.join(CAPF_KEY_FILE);
        let cert_der = files::read_certificate(&cert_path)?;
        let key_der = files::read_private_key(&key_path)?;

        let (rest, cert) = parse_x509_certificate(&cert_der)
            .map_err(|e| CaError::pem(&cert_path, format!("bad certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(CaError::pem(
                &cert_path,
                "trailing bytes after the certificate",
            ));
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| CaError::NotACa(cert_path.clone(), e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaError::NotACa(
                cert_path,
                "basicConstraints CA:TRUE is missing".into(),
            ));
        }

        let key = KeyPair::try_from(&key_der)
            .map_err(|e| CaError::pem(&key_path, format!("unusable private key: {e}")))?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err(CaError::KeyMismatch(key_path, cert_path));
        }

        let subject_attributes = names::attributes(cert.subject())?;
        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = names::distinguished_name(&subject_attributes);
        let subject_der = cert.subject().as_raw().to_vec();
        let subject = cert.subject().to_string();

        Ok(Ca {
            issuer: Issuer::new(
                issuer_params,
                CertSigningKey::new(key, key_der.secret_pkcs8_der()),
            ),
            lsc_subject_tail: names::copied_to_lsc(&subject_attributes),
            subject_der,
            subject,
            cert_der,
            key_der,
            lsc_validity_days,
            crl_url: None,
        })
    }

    /// Writes a CRL distribution point for `url` into every LSC issued from now on
    /// (none for an empty `url`).
    pub fn with_crl_url(mut self, url: &str) -> Ca {
        self.crl_url = (!url.is_empty()).then(|| url.to_owned());
        self
    }

    /// The CAPF certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CAPF certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        files::certificate_pem(&self.cert_der)
    }

    /// Certificate chain and key for the TLS listener.
    pub fn tls_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(self.cert_der.clone())],
            PrivateKeyDer::Pkcs8(self.key_der.clone_key()),
        )
    }

    /// The CAPF certificate's subject, for display.
    pub fn subject(&self) -> String {
        self.subject.clone()
    }
}

/// Checks that `key_pem` (PEM, PKCS#8 or PKCS#1) is the private key of the certificate
/// in `cert_pem`, as [`Ca::load`] checks the files it loads; `cert_path` and `key_path`
/// name the two in errors. For identities that are not files yet or no longer
/// (`capf node export` and `join` check what they carry).
pub fn check_key_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), CaError> {
    let cert_der = files::parse_certificate(cert_path, cert_pem)?;
    let key_der = files::parse_private_key(key_path, key_pem)?;
    let (_, cert) = parse_x509_certificate(&cert_der)
        .map_err(|e| CaError::pem(cert_path, format!("bad certificate: {e}")))?;
    let key = KeyPair::try_from(&key_der)
        .map_err(|e| CaError::pem(key_path, format!("unusable private key: {e}")))?;
    if key.subject_public_key_info() != cert.public_key().raw {
        return Err(CaError::KeyMismatch(
            key_path.to_path_buf(),
            cert_path.to_path_buf(),
        ));
    }
    Ok(())
}

/// A random positive serial number of at most 16 bytes: 128 bits of randomness with
/// the top bit cleared, so the DER INTEGER needs no sign octet (capf-protocol.md §9),
/// and never zero (RFC 5280 §4.1.2.2 requires a positive number).
pub(crate) fn random_serial() -> [u8; 16] {
    loop {
        let mut serial = [0u8; 16];
        rand::fill(&mut serial);
        serial[0] &= 0x7f;
        if serial.iter().any(|&b| b != 0) {
            return serial;
        }
    }
}

/// The certificates of `certs` that phones see and trust (the CAPF CA with a staged
/// or previous one, the file signer, the ITL recovery certificate), as one digest:
/// nodes of a cluster present the same ones, and a node whose digest differs from
/// another's was left behind by a rollover (docs/cluster.md "Node identity").
pub fn identity_digest(certs: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for name in [
        CAPF_CERT_FILE,
        rollover::NEXT_CERT_FILE,
        rollover::PREVIOUS_CERT_FILE,
        TFTP_CERT_FILE,
        RECOVERY_CERT_FILE,
    ] {
        let pem = match std::fs::read(certs.join(name)) {
            Ok(pem) => Some(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        digest.update(name.as_bytes());
        match pem {
            Some(pem) => {
                digest.update([1]);
                digest.update(Sha256::digest(&pem));
            }
            None => digest.update([0]),
        }
    }
    Ok(hex::encode(digest.finalize()))
}
