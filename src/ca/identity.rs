//! Creating capf's two identities (`capf init`).
//!
//! * The CAPF certificate: the TLS server certificate phones see on port 3804 and the
//!   issuer of their LSCs. Its shape follows what Cisco requires of CAPF certificates
//!   (capf-protocol.md §2): a CA limited to issuing end-entity certificates.
//! * The TFTP identity: signs configuration files and the ITL. It is a separate key so
//!   that the key phones trust for files is not the key that mints certificates.
//!
//! * The ITL recovery identity (`ca::recovery`): a second, long-lived key listed as
//!   SAST in every ITL, so the TFTP signer can be replaced without phones losing trust.
//!
//! All are RSA-2048 with SHA-256 signatures: the oldest phones speak static-RSA TLS
//! and verify nothing else. ring cannot generate RSA keys, so the rsa crate does.

use super::files::{self, CERT_MODE, KEY_MODE};
use super::{
    random_serial, CaError, CAPF_CERT_FILE, CAPF_KEY_FILE, CLOCK_SKEW_SECS, INTRODUCED_FILE,
    RECOVERY_CERT_FILE, RECOVERY_KEY_FILE, TFTP_CERT_FILE, TFTP_KEY_FILE,
};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// What `capf init` is told about the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Host name or IP address phones use to reach this node (CUCM's processNodeName).
    pub node_name: String,
    pub organization: Option<String>,
    pub org_unit: Option<String>,
    /// Replace existing identities. Phones trusting the old CAPF certificate will
    /// refuse the new one until their trust list is updated.
    pub force: bool,
}

const RSA_BITS: usize = 2048;
/// Ten years, leap days included.
const IDENTITY_LIFETIME: Duration = Duration::days(3653);
/// Twenty years: the recovery identity must outlive every signer it vouches for, as
/// CUCM's ITLRecovery certificate does.
const RECOVERY_LIFETIME: Duration = Duration::days(7305);

/// Generates the CAPF, TFTP and ITL recovery identities and writes `capf.pem`,
/// `capf.key`, `tftp.pem`, `tftp.key`, `itl-recovery.pem` and `itl-recovery.key` into
/// `certs_dir` (created if missing). Refuses to replace any existing file unless
/// `opts.force`. Every identity is generated before the first file is written, so a
/// bad option or a failed key generation leaves the directory untouched.
pub fn init_identities(certs_dir: &Path, opts: &InitOptions) -> Result<(), CaError> {
    let paths = [
        CAPF_CERT_FILE,
        CAPF_KEY_FILE,
        TFTP_CERT_FILE,
        TFTP_KEY_FILE,
        RECOVERY_CERT_FILE,
        RECOVERY_KEY_FILE,
    ]
    .map(|name| certs_dir.join(name));
    if !opts.force {
        if let Some(existing) = paths.iter().find(|p| p.exists()) {
            return Err(CaError::Exists(existing.clone()));
        }
    }
    let capf = capf_identity(opts)?;
    let tftp = tftp_identity(opts)?;
    let recovery = recovery_identity(opts)?;

    // Owner only: the directory holds the private keys.
    let mut dir = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(dir.recursive(true), 0o700);
    dir.create(certs_dir)
        .map_err(|e| CaError::io(certs_dir, e))?;
    let [capf_cert, capf_key, tftp_cert, tftp_key, recovery_cert, recovery_key] = &paths;
    capf.write(capf_cert, capf_key)?;
    tftp.write(tftp_cert, tftp_key)?;
    recovery.write(recovery_cert, recovery_key)?;
    // A re-initialised node's first ITL is accepted by nobody who held the old one
    // anyway: nothing is being introduced.
    let _ = std::fs::remove_file(certs_dir.join(INTRODUCED_FILE));
    Ok(())
}

/// A generated certificate and its key, both PEM.
pub(super) struct Identity {
    pub(super) cert_pem: String,
    pub(super) key_pem: rsa::pkcs8::der::zeroize::Zeroizing<String>,
}

impl Identity {
    /// Writes the pair, the key first: a crash in between leaves a pair that loading
    /// rejects as mismatched rather than a certificate without its key.
    pub(super) fn write(&self, cert: &Path, key: &Path) -> Result<(), CaError> {
        files::write_atomically(key, self.key_pem.as_bytes(), KEY_MODE)?;
        files::write_atomically(cert, self.cert_pem.as_bytes(), CERT_MODE)
    }
}

pub(super) fn capf_identity(opts: &InitOptions) -> Result<Identity, CaError> {
    let cn = format!("CAPF-{}", random_hex_label());
    let mut params = base_params(&cn, opts)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // keyEncipherment is for static-RSA TLS, which the oldest phones still use.
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let node_name = opts.node_name.trim();
    let node = match node_name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(dns_name(node_name)?),
    };
    params.subject_alt_names = vec![node, SanType::DnsName(dns_name(&cn.to_lowercase())?)];
    self_signed(params)
}

pub(super) fn tftp_identity(opts: &InitOptions) -> Result<Identity, CaError> {
    let cn = format!("TFTP-{}", random_hex_label());
    let mut params = base_params(&cn, opts)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    self_signed(params)
}

/// The ITL recovery identity: signs ITLs only, so it asks for nothing but signatures,
/// and lives twenty years.
pub(super) fn recovery_identity(opts: &InitOptions) -> Result<Identity, CaError> {
    let cn = format!("ITLRecovery-{}", random_hex_label());
    let mut params = base_params(&cn, opts)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = Vec::new();
    params.not_after = params.not_before + RECOVERY_LIFETIME;
    self_signed(params)
}

/// Subject, serial, validity and EKU shared by every identity.
fn base_params(cn: &str, opts: &InitOptions) -> Result<CertificateParams, CaError> {
    if opts.node_name.trim().is_empty() {
        return Err(CaError::NodeName(opts.node_name.clone()));
    }
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, cn);
    if let Some(o) = &opts.organization {
        subject.push(DnType::OrganizationName, o.as_str());
    }
    if let Some(ou) = &opts.org_unit {
        subject.push(DnType::OrganizationalUnitName, ou.as_str());
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = now - Duration::seconds(CLOCK_SKEW_SECS);
    params.not_after = now + IDENTITY_LIFETIME;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn self_signed(params: CertificateParams) -> Result<Identity, CaError> {
    let key = rsa::PrivateKey::new(&mut rand::rng(), RSA_BITS)
        .map_err(|e| CaError::KeyGeneration(e.to_string()))?;
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| CaError::KeyGeneration(e.to_string()))?;
    let key_der = key
        .to_pkcs8_der()
        .map_err(|e| CaError::KeyGeneration(e.to_string()))?;
    let signer = KeyPair::try_from(key_der.as_bytes())?;
    let cert = params.self_signed(&signer)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem,
    })
}

fn dns_name(name: &str) -> Result<Ia5String, CaError> {
    Ia5String::try_from(name).map_err(|_| CaError::NodeName(name.into()))
}

/// Eight random lowercase hex digits, making each installation's names distinct.
fn random_hex_label() -> String {
    let mut bytes = [0u8; 4];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}
