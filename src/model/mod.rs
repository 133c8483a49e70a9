//! The records the store keeps, and the vocabulary they are written in.
//!
//! These types are shared by everything that reasons about a device: the session
//! (which decides what happens to a phone), the CLI (which renders them) and the
//! configuration companion (which reads the enrolled certificate). Only `store`
//! persists them. They are plain data: no handle to the database lives here.
//!
//! Also here: the clock ([`now`]) and the changes a session asks the store to make
//! ([`Commit`], [`DeviceChange`]), so that trust, ca, the store and the configuration
//! files all speak one vocabulary without depending on each other.
//!
//! Words follow CUCM's phone page (operation, authentication mode, key order,
//! "operation completes by") and its Certificate Operation Status column, so an
//! administrator who knows CUCM can read `capf device show` without a glossary.

mod change;
pub mod display;
mod network;

pub use change::{Commit, DeviceChange};
pub use network::Network;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Version of the encoded `DeviceRecord`. Bump it when a field changes meaning, and
/// teach `store` to read the older versions.
pub const DEVICE_SCHEMA_VERSION: u32 = 1;

/// Seconds since the Unix epoch, UTC. Every time in the store is one of these, so the
/// session can be driven with an injected clock.
pub type UnixTime = i64;

/// Wall-clock time, for everything that is not a unit test (sessions, the store, the
/// CLI, the delivery servers).
pub fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The certificate operation an administrator scheduled for a phone (CUCM's
/// "Certificate Operation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// No pending operation: the phone authenticates and is sent away with reason 0.
    None,
    /// Install/Upgrade: the phone generates a key and receives a new LSC.
    Install,
    /// Delete the phone's LSC.
    Delete,
    /// Troubleshoot: fetch the certificate the phone holds, for inspection.
    Troubleshoot,
}

/// How a phone proves who it is (CUCM's "Authentication Mode").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// By Null String: knowing the device name is enough.
    Null,
    /// By Authentication String: the user types a digit string on the phone.
    String,
    /// By Existing Certificate, precedence to LSC (falls back to the MIC).
    Lsc,
    /// By Existing Certificate, precedence to MIC (falls back to the LSC).
    Mic,
}

/// The curves a phone can be asked to generate a key on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EcCurve {
    P256,
    P384,
    P521,
}

/// What kind of key the phone generates (CUCM's "Key Order", with RSA size and EC curve).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "kebab-case")]
pub enum KeyOrder {
    /// RSA only, with this modulus size in bits (1024, 2048, 3072 or 4096).
    Rsa { bits: u16 },
    /// EC only, on this curve.
    Ec { curve: EcCurve },
    /// EC preferred, RSA backup: EC for clients that can do it (protocol version 3),
    /// RSA of `bits` for older clients.
    EcPreferred { curve: EcCurve, bits: u16 },
}

/// A concrete key: what an enrolled certificate holds, or what a phone was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alg", rename_all = "lowercase")]
pub enum KeySpec {
    Rsa { bits: u16 },
    Ec { curve: EcCurve },
}

/// Which certificate of a phone a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// Locally Significant Certificate, issued by capf.
    Lsc,
    /// Manufacturing Installed Certificate, issued by Cisco.
    Mic,
}

/// Where a device stands with its scheduled operation, in CUCM's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum OperationStatus {
    /// Nothing has been scheduled yet, or the last operation was cleared.
    None,
    /// Scheduled, not yet completed.
    Pending,
    UpgradeSuccess,
    UpgradeFailed(String),
    DeleteSuccess,
    DeleteFailed(String),
    TroubleshootSuccess,
    TroubleshootFailed(String),
}

/// A certificate capf knows for a phone, with everything derived from it that
/// operators and the configuration companion need. Built by `ca::cert_info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolledCert {
    /// The certificate exactly as issued or received (DER).
    #[serde(with = "b64")]
    pub der: Vec<u8>,
    /// The phone's public key: SubjectPublicKeyInfo DER, as found in the certificate.
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// Lowercase hex MD5 of `der`: what phones compare with `certHash`.
    pub md5: String,
    /// Lowercase hex SHA-256 of `der`.
    pub sha256: String,
    /// Lowercase hex of the serial number's unsigned magnitude.
    pub serial: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub key: KeySpec,
    /// Issuer distinguished name, RFC 4514 style, for display.
    pub issuer: String,
    /// Subject distinguished name, RFC 4514 style, for display.
    pub subject: String,
}

/// Everything capf knows about one phone. Encoded with `DEVICE_SCHEMA_VERSION`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device name as the phone sends it (`SEP` + 12 hex digits for hardware phones).
    pub name: String,
    pub operation: Operation,
    pub auth: AuthMode,
    /// The authentication string for `AuthMode::String`. Secret: never logged,
    /// compared in constant time, shown only by `device show` and `device export`.
    #[serde(default)]
    pub auth_string: Option<String>,
    pub key_order: KeyOrder,
    /// "Operation completes by": after this the operation is refused as a late request.
    #[serde(default)]
    pub deadline: Option<UnixTime>,
    /// Serve this phone its configuration encrypted to its key.
    #[serde(default)]
    pub encrypted_config: bool,
    pub status: OperationStatus,
    /// When a phone last opened a session for this device (successful or not).
    #[serde(default)]
    pub last_attempt: Option<UnixTime>,
    /// Consecutive failed authentications (reset by a success).
    #[serde(default)]
    pub failed_auth: u32,
    /// While set and in the future, every attempt fails without being evaluated.
    #[serde(default)]
    pub locked_until: Option<UnixTime>,
    /// The LSC the phone holds, as far as capf knows.
    #[serde(default)]
    pub lsc: Option<EnrolledCert>,
    /// The MIC the phone presented or returned.
    #[serde(default)]
    pub mic: Option<EnrolledCert>,
    /// An LSC capf issued and sent, whose storage the phone has not confirmed. It never
    /// counts as installed; it is kept so the serial can be accounted for.
    #[serde(default)]
    pub unconfirmed_lsc: Option<EnrolledCert>,
    /// The last certificate a troubleshoot fetch returned that capf does not trust (it
    /// does not chain to capf or a manufacturing anchor, or names another device). Shown
    /// to the operator, never used to authenticate or to encrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_untrusted: Option<EnrolledCert>,
    /// Serials of this device's LSCs that capf revoked (replaced, deleted or revoked by
    /// hand): none of them is ever trusted for this device again, whoever presents it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_serials: Vec<String>,
}

impl DeviceRecord {
    /// A new device with CUCM's defaults: no operation, null string, RSA-2048.
    pub fn new(name: impl Into<String>) -> Self {
        DeviceRecord {
            name: name.into(),
            operation: Operation::None,
            auth: AuthMode::Null,
            auth_string: None,
            key_order: KeyOrder::Rsa { bits: 2048 },
            deadline: None,
            encrypted_config: false,
            status: OperationStatus::None,
            last_attempt: None,
            failed_auth: 0,
            locked_until: None,
            lsc: None,
            mic: None,
            unconfirmed_lsc: None,
            revoked_serials: Vec::new(),
            fetched_untrusted: None,
        }
    }

    /// The certificate the configuration companion uses: the LSC if one is installed,
    /// otherwise the MIC capf recorded.
    pub fn phone_certificate(&self) -> Option<&EnrolledCert> {
        self.lsc.as_ref().or(self.mic.as_ref())
    }

    /// Whether the device is locked out at `now`.
    pub fn is_locked(&self, now: UnixTime) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

/// What happened, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Assigned by the store when the event is appended (monotonic).
    #[serde(default)]
    pub id: u64,
    pub time: UnixTime,
    /// Who acted: `cli:<user>`, `admin:<user>`, or `phone:<peer address>`.
    pub actor: String,
    /// The device concerned, if any.
    pub device: Option<String>,
    /// What was done, e.g. `device-add`, `session`, `lsc-issued`.
    pub action: String,
    /// The result in words, e.g. `Upgrade Success` or `Upgrade Failed: Invalid Authentication String`.
    pub result: String,
    /// Extra structured facts (auth mode, operation, reason code, serial, ...).
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// What capf knows about an issued serial number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialState {
    /// Sent to the phone, storage not confirmed.
    Unconfirmed,
    /// The phone confirmed it stored the certificate.
    Installed,
    /// Replaced by a newer LSC, or deleted from the phone.
    Superseded,
}

/// An entry of the issued-serial index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialRecord {
    pub device: String,
    pub state: SerialState,
    pub issued: UnixTime,
    /// Set once capf has revoked the certificate: it is then on the CRL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// When and why capf revoked a certificate (RFC 5280 §5.3.1 reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub time: UnixTime,
    pub reason: RevocationReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    Unspecified,
    /// The phone (and its key) was lost or stolen.
    KeyCompromise,
    AffiliationChanged,
    /// Replaced by a newer LSC (renewal, re-enrollment).
    Superseded,
    /// The device was removed, or deleted its LSC.
    CessationOfOperation,
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
        })
    }
}

impl FromStr for RevocationReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
        ]
        .into_iter()
        .find(|r| r.to_string() == s.to_ascii_lowercase())
        .ok_or_else(|| {
            format!(
                "unknown revocation reason '{s}' (expected key-compromise, superseded, \
                 cessation-of-operation, affiliation-changed or unspecified)"
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Text forms used by the CLI, the CSV import and the JSON renderers.

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::None => "none",
            Operation::Install => "install",
            Operation::Delete => "delete",
            Operation::Troubleshoot => "troubleshoot",
        })
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Operation::None),
            "install" | "upgrade" | "install/upgrade" => Ok(Operation::Install),
            "delete" => Ok(Operation::Delete),
            "troubleshoot" | "fetch" => Ok(Operation::Troubleshoot),
            _ => Err(format!(
                "unknown operation '{s}' (expected install, delete, troubleshoot or none)"
            )),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Null => "null",
            AuthMode::String => "string",
            AuthMode::Lsc => "lsc",
            AuthMode::Mic => "mic",
        })
    }
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "null" | "null-string" => Ok(AuthMode::Null),
            "string" | "auth-string" => Ok(AuthMode::String),
            "lsc" => Ok(AuthMode::Lsc),
            "mic" => Ok(AuthMode::Mic),
            _ => Err(format!(
                "unknown authentication mode '{s}' (expected null, string, lsc or mic)"
            )),
        }
    }
}

impl EcCurve {
    pub fn name(self) -> &'static str {
        match self {
            EcCurve::P256 => "p256",
            EcCurve::P384 => "p384",
            EcCurve::P521 => "p521",
        }
    }
}

impl FromStr for EcCurve {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "secp256r1" | "prime256v1" => Ok(EcCurve::P256),
            "p384" | "p-384" | "secp384r1" => Ok(EcCurve::P384),
            "p521" | "p-521" | "secp521r1" => Ok(EcCurve::P521),
            _ => Err(format!("unknown curve '{s}' (expected p256, p384 or p521)")),
        }
    }
}

/// RSA sizes a phone may be asked for. 512 is refused: it cannot sign SHA-512 proofs
/// (capf-protocol.md §7.3) and offers no security.
pub const RSA_SIZES: [u16; 4] = [1024, 2048, 3072, 4096];

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa { bits } => write!(f, "rsa:{bits}"),
            KeySpec::Ec { curve } => write!(f, "ec:{}", curve.name()),
        }
    }
}

impl FromStr for KeySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (alg, param) = s
            .split_once(':')
            .ok_or_else(|| format!("bad key '{s}' (expected rsa:BITS or ec:CURVE)"))?;
        match alg.to_ascii_lowercase().as_str() {
            "rsa" => {
                let bits: u16 = param
                    .parse()
                    .map_err(|_| format!("bad RSA size '{param}' in '{s}'"))?;
                if !RSA_SIZES.contains(&bits) {
                    return Err(format!(
                        "unsupported RSA size {bits} in '{s}' (expected 1024, 2048, 3072 or 4096)"
                    ));
                }
                Ok(KeySpec::Rsa { bits })
            }
            "ec" => Ok(KeySpec::Ec {
                curve: param.parse()?,
            }),
            _ => Err(format!("bad key '{s}' (expected rsa:BITS or ec:CURVE)")),
        }
    }
}

impl fmt::Display for KeyOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrder::Rsa { bits } => write!(f, "rsa:{bits}"),
            KeyOrder::Ec { curve } => write!(f, "ec:{}", curve.name()),
            KeyOrder::EcPreferred { curve, bits } => {
                write!(f, "ec-preferred:{},rsa:{bits}", curve.name())
            }
        }
    }
}

impl FromStr for KeyOrder {
    type Err = String;
    /// `rsa:2048`, `ec:p256`, or `ec-preferred:p256,rsa:2048` (the RSA backup defaults
    /// to 2048 when omitted).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("ec-preferred:") {
            let (curve, rsa) = match rest.split_once(',') {
                Some((c, r)) => (c, Some(r)),
                None => (rest, None),
            };
            let curve: EcCurve = curve.parse()?;
            let bits = match rsa {
                None => 2048,
                Some(r) => match r.parse::<KeySpec>()? {
                    KeySpec::Rsa { bits } => bits,
                    KeySpec::Ec { .. } => {
                        return Err(format!("bad key order '{s}': the backup must be rsa:BITS"))
                    }
                },
            };
            return Ok(KeyOrder::EcPreferred { curve, bits });
        }
        match s.parse::<KeySpec>()? {
            KeySpec::Rsa { bits } => Ok(KeyOrder::Rsa { bits }),
            KeySpec::Ec { curve } => Ok(KeyOrder::Ec { curve }),
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertKind::Lsc => "lsc",
            CertKind::Mic => "mic",
        })
    }
}

impl OperationStatus {
    /// Every [`OperationStatus::label`], in order.
    pub const LABELS: [&'static str; 8] = [
        "none",
        "pending",
        "upgrade_success",
        "upgrade_failed",
        "delete_success",
        "delete_failed",
        "troubleshoot_success",
        "troubleshoot_failed",
    ];

    /// The state without its reason, as a metric label (`capf_devices{status}`).
    pub fn label(&self) -> &'static str {
        match self {
            OperationStatus::None => "none",
            OperationStatus::Pending => "pending",
            OperationStatus::UpgradeSuccess => "upgrade_success",
            OperationStatus::UpgradeFailed(_) => "upgrade_failed",
            OperationStatus::DeleteSuccess => "delete_success",
            OperationStatus::DeleteFailed(_) => "delete_failed",
            OperationStatus::TroubleshootSuccess => "troubleshoot_success",
            OperationStatus::TroubleshootFailed(_) => "troubleshoot_failed",
        }
    }
}

impl fmt::Display for OperationStatus {
    /// CUCM's Certificate Operation Status text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperationStatus::None => f.write_str("None"),
            OperationStatus::Pending => f.write_str("Operation Pending"),
            OperationStatus::UpgradeSuccess => f.write_str("Upgrade Success"),
            OperationStatus::UpgradeFailed(r) => write!(f, "Upgrade Failed: {r}"),
            OperationStatus::DeleteSuccess => f.write_str("Delete Success"),
            OperationStatus::DeleteFailed(r) => write!(f, "Delete Failed: {r}"),
            OperationStatus::TroubleshootSuccess => f.write_str("Troubleshoot Success"),
            OperationStatus::TroubleshootFailed(r) => write!(f, "Troubleshoot Failed: {r}"),
        }
    }
}

/// The digest of tags 8 and 26. Value 2 (SHA-256) is never written: nothing shows
/// phones accept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    /// CUCM's default, understood by every phone.
    Sha1,
    /// Only for deployments whose phones all support it.
    Sha512,
}

impl Digest {
    /// The value of tags 8 and 26.
    pub fn id(self) -> u8 {
        match self {
            Digest::Sha1 => 1,
            Digest::Sha512 => 3,
        }
    }

    pub fn from_id(id: u8) -> Option<Digest> {
        match id {
            1 => Some(Digest::Sha1),
            3 => Some(Digest::Sha512),
            _ => None,
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Digest::Sha1 => <sha1::Sha1 as sha2::Digest>::digest(data).to_vec(),
            Digest::Sha512 => <sha2::Sha512 as sha2::Digest>::digest(data).to_vec(),
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha512 => 64,
        }
    }
}

/// Base64 (standard alphabet) for byte fields, so the encoded records stay readable.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_orders_parse_and_print_round_trip() {
        for s in ["rsa:2048", "ec:p256", "ec-preferred:p384,rsa:3072"] {
            let k: KeyOrder = s.parse().unwrap();
            assert_eq!(k.to_string(), s);
        }
        assert_eq!(
            "ec-preferred:p256".parse::<KeyOrder>().unwrap(),
            KeyOrder::EcPreferred {
                curve: EcCurve::P256,
                bits: 2048
            }
        );
        assert!("rsa:512".parse::<KeyOrder>().is_err());
        assert!("rsa:abc".parse::<KeyOrder>().is_err());
        assert!("ec:p999".parse::<KeyOrder>().is_err());
        assert!("ec-preferred:p256,ec:p384".parse::<KeyOrder>().is_err());
    }

    #[test]
    fn status_reads_like_cucm() {
        assert_eq!(
            OperationStatus::UpgradeFailed("Invalid Authentication String".into()).to_string(),
            "Upgrade Failed: Invalid Authentication String"
        );
        assert_eq!(OperationStatus::Pending.to_string(), "Operation Pending");
    }
}
