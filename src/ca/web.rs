//! The web admin's HTTPS identity: `certs/web.pem` and `certs/web.key` (0600).
//!
//! Self-signed, on purpose not issued by the CAPF CA: a browser that trusted the CAPF
//! CA to recognise the web admin would also trust every certificate that CA mints
//! (every phone's LSC) for any web site. The operator instead trusts (pins) this one
//! certificate, or puts a certificate of their own PKI in its place: capf creates the
//! pair only when it is missing, and renews only a certificate it made itself, when it
//! is within [`RENEW_WITHIN_DAYS`] of its end (docs/web-admin.md).
//!
//! ECDSA P-256 (browsers need nothing older), names `node_name`, `localhost`,
//! `127.0.0.1` and `::1`.

use super::files::{self, CERT_MODE, KEY_MODE};
use super::{random_serial, CaError, CLOCK_SKEW_SECS};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// The common name capf gives its own web certificates: how it tells them from an
/// operator's.
pub const WEB_CN_PREFIX: &str = "capf web admin";
/// 825 days, the longest validity browsers have accepted for server certificates.
const WEB_LIFETIME: Duration = Duration::days(825);
/// capf's own web certificate is replaced at start when it ends within this many days.
pub const RENEW_WITHIN_DAYS: i64 = 30;

/// Creates `cert` and `key` when either is missing (or, for a certificate capf made,
/// when it ends within [`RENEW_WITHIN_DAYS`]). Returns whether it wrote a new pair.
pub fn ensure(cert: &Path, key: &Path, node_name: &str, now: i64) -> Result<bool, CaError> {
    if cert.exists() && key.exists() {
        let der = files::read_certificate(cert)?;
        let info = super::cert_info(&der)?;
        let ours = info.subject.contains(WEB_CN_PREFIX) && info.subject == info.issuer;
        if !ours || info.not_after - now > RENEW_WITHIN_DAYS * 86_400 {
            return Ok(false);
        }
    }
    let (cert_pem, key_pem) = web_identity(node_name)?;
    files::write_atomically(key, key_pem.as_bytes(), KEY_MODE)?;
    files::write_atomically(cert, cert_pem.as_bytes(), CERT_MODE)?;
    Ok(true)
}

/// A new self-signed web certificate and its key, both PEM.
fn web_identity(node_name: &str) -> Result<(String, String), CaError> {
    let node_name = node_name.trim();
    if node_name.is_empty() {
        return Err(CaError::NodeName(node_name.into()));
    }
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, format!("{WEB_CN_PREFIX} {node_name}"));
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = now - Duration::seconds(CLOCK_SKEW_SECS);
    params.not_after = now + WEB_LIFETIME;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut names = Vec::new();
    for name in [node_name, "localhost", "127.0.0.1", "::1"] {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.try_into()
                    .map_err(|_| CaError::NodeName(name.to_string()))?,
            ),
        };
        if !names.contains(&san) {
            names.push(san);
        }
    }
    params.subject_alt_names = names;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_web_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("web.pem"), dir.path().join("web.key"));
        let now = crate::model::now();
        assert!(super::ensure(&cert, &key, "capf.example.net", now).unwrap());
        let first = std::fs::read(&cert).unwrap();
        assert!(!super::ensure(&cert, &key, "capf.example.net", now).unwrap());
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Near its end, capf's own certificate is replaced.
        let late = now + 824 * 86_400;
        assert!(super::ensure(&cert, &key, "capf.example.net", late).unwrap());
        assert_ne!(std::fs::read(&cert).unwrap(), first);
    }
}
