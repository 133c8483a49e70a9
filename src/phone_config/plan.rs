//! What the configuration service serves for a requested name (config-files.md §6),
//! and the bytes of it.
//!
//! [`decide`] is the decision table as a pure function of the request, the device
//! record and whether a base document exists; [`build`] turns the decision into bytes.
//! Both take their inputs as arguments and keep nothing: the device certificate may
//! have changed since the last request (E11). [`BuildKey`] is the digest of exactly
//! what [`build`] reads, under which the configuration service keeps signed files.

use crate::model::{AuthMode, DeviceRecord, EnrolledCert, Operation, OperationStatus, UnixTime};
use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::capf_section::CapfFacts;
use crate::phone_config::format::checked::CheckedDocument;
use crate::phone_config::format::enc;
use crate::phone_config::format::identity::parse_certificate_shallow;
use crate::phone_config::format::itl::{self, ITL_FILE};
use crate::phone_config::format::partial::PartialFacts;
use crate::phone_config::format::sgn;
use crate::phone_config::signer::Signer;
// The `Digest` trait, for the MD5 of certificates.
use rand::CryptoRng;
use sha2::Digest as _;
use x509_parser::public_key::PublicKey;

/// The three names of a device's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigForm {
    /// `SEP<MAC>.cnf.xml`
    Plain,
    /// `SEP<MAC>.cnf.xml.sgn`
    Signed,
    /// `SEP<MAC>.cnf.xml.enc.sgn`
    Encrypted,
}

impl ConfigForm {
    fn suffix(self) -> &'static str {
        match self {
            ConfigForm::Plain => ".cnf.xml",
            ConfigForm::Signed => ".cnf.xml.sgn",
            ConfigForm::Encrypted => ".cnf.xml.enc.sgn",
        }
    }
}

/// A requested name capf knows how to answer (E12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A device configuration; `mac` is 12 uppercase hex digits.
    Config { mac: String, form: ConfigForm },
    /// `ITLFile.tlv`.
    TrustList,
    /// `ITLSEP<MAC>.tlv`.
    DeviceTrustList { mac: String },
    /// `CTLFile.tlv` or `CTLSEP<MAC>.tlv`.
    CertificateTrustList,
}

impl Request {
    /// Recognises a requested name: `SEP` + 12 hex digits (any case) + a known suffix,
    /// or a trust-list name. Anything else — other suffixes, path separators, `..` —
    /// is not a name capf serves.
    pub fn parse(name: &str) -> Option<Request> {
        if name.contains(['/', '\\']) || name.contains("..") {
            return None;
        }
        match name {
            ITL_FILE => return Some(Request::TrustList),
            "CTLFile.tlv" => return Some(Request::CertificateTrustList),
            _ => {}
        }
        if let Some(mac) = name
            .strip_prefix("ITLSEP")
            .and_then(|r| r.strip_suffix(".tlv"))
        {
            return mac_of(mac).map(|mac| Request::DeviceTrustList { mac });
        }
        if let Some(mac) = name
            .strip_prefix("CTLSEP")
            .and_then(|r| r.strip_suffix(".tlv"))
        {
            return mac_of(mac).map(|_| Request::CertificateTrustList);
        }
        let rest = name.strip_prefix("SEP")?;
        let (mac, suffix) = (rest.get(..12)?, rest.get(12..)?);
        let form = [ConfigForm::Plain, ConfigForm::Signed, ConfigForm::Encrypted]
            .into_iter()
            .find(|f| f.suffix() == suffix)?;
        mac_of(mac).map(|mac| Request::Config { mac, form })
    }

    /// The device record's name, `SEP` + MAC, for device requests.
    pub fn device_name(&self) -> Option<String> {
        match self {
            Request::Config { mac, .. } | Request::DeviceTrustList { mac } => {
                Some(format!("SEP{mac}"))
            }
            Request::TrustList | Request::CertificateTrustList => None,
        }
    }

    /// The canonical name the file is served and signed under (MAC in uppercase).
    pub fn served_name(&self) -> String {
        match self {
            Request::Config { mac, form } => format!("SEP{mac}{}", form.suffix()),
            Request::TrustList => ITL_FILE.to_owned(),
            Request::DeviceTrustList { mac } => format!("ITLSEP{mac}.tlv"),
            Request::CertificateTrustList => "CTLFile.tlv".to_owned(),
        }
    }
}

fn mac_of(text: &str) -> Option<String> {
    (text.len() == 12 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_uppercase())
}

/// Why a request is answered *not found* (HTTP 404, TFTP error 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotFound {
    /// No base document exists for the device.
    NoDocument,
    /// `.enc.sgn` while encryption is off: Cisco answers not found and the phone falls
    /// back to `.sgn`.
    EncryptionOff,
    /// `.enc.sgn` with encryption on but no stored RSA certificate (E5); the partial
    /// sends the phone to CAPF instead. Never a plaintext fallback.
    NoUsableCertificate,
    /// `ITLSEP<MAC>.tlv`: phones then fall back to `ITLFile.tlv` (§7.5).
    DeviceTrustList,
    /// No CTL is configured; capf publishes none.
    NoCtl,
    /// The device is not in the store: a base document left behind (or never added)
    /// is not served to whoever asks for its name (fail closed).
    UnknownDevice,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotFound::NoDocument => "no base document for the device",
            NotFound::EncryptionOff => "encrypted configuration is off for the device",
            NotFound::NoUsableCertificate => "no RSA certificate is known for the device",
            NotFound::DeviceTrustList => "per-device trust lists are not published",
            NotFound::NoCtl => "no CTL is configured",
            NotFound::UnknownDevice => "the device is not in capf's store",
        })
    }
}

/// What to serve for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// The base document with capf's CAPF facts spliced in (`capf_section`).
    FullUnsigned {
        capf_auth_mode: u8,
    },
    FullSigned {
        capf_auth_mode: u8,
    },
    /// The partial configuration, unsigned (`.cnf.xml` while encryption is on).
    PartialUnsigned {
        cert_hash: Option<String>,
        capf_auth_mode: u8,
    },
    /// The partial configuration as `.sgn`.
    PartialSigned {
        cert_hash: Option<String>,
        capf_auth_mode: u8,
    },
    /// The full configuration encrypted to the phone certificate's RSA key.
    Encrypted {
        /// The certificate's SubjectPublicKeyInfo (DER).
        phone_key: Vec<u8>,
        capf_auth_mode: u8,
    },
    Itl,
    NotFound(NotFound),
}

impl Served {
    /// Whether building it costs a signature: the `.sgn` files, the `.enc.sgn` and the
    /// ITL.
    pub fn is_signed(&self) -> bool {
        match self {
            Served::FullSigned { .. }
            | Served::PartialSigned { .. }
            | Served::Encrypted { .. }
            | Served::Itl => true,
            Served::FullUnsigned { .. } | Served::PartialUnsigned { .. } | Served::NotFound(_) => {
                false
            }
        }
    }

    /// Whether it is built from the device's base document: every configuration file.
    pub fn reads_document(&self) -> bool {
        !matches!(self, Served::Itl | Served::NotFound(_))
    }
}

/// The decision table of §6.
///
/// Encryption is on when the device record asks for it. A device capf does not know
/// gets nothing (its base document holds its secrets, and anyone can ask for any name);
/// the configuration service can be told to treat it as a known device without
/// encryption (`serve_unknown_devices_plaintext`). The certificate whose MD5 goes into the partial and whose key
/// wraps the `.enc.sgn` is [`DeviceRecord::phone_certificate`] (the LSC, else the MIC);
/// one with an EC key counts as no certificate (E5).
pub fn decide(
    request: &Request,
    device: Option<&DeviceRecord>,
    document: Option<&[u8]>,
    now: UnixTime,
) -> Served {
    let form = match request {
        Request::TrustList => return Served::Itl,
        Request::DeviceTrustList { .. } => return Served::NotFound(NotFound::DeviceTrustList),
        Request::CertificateTrustList => return Served::NotFound(NotFound::NoCtl),
        Request::Config { form, .. } => *form,
    };
    let Some(device) = device else {
        return Served::NotFound(NotFound::UnknownDevice);
    };
    if document.is_none() {
        return Served::NotFound(NotFound::NoDocument);
    }
    let capf_auth_mode = capf_auth_mode(device, now);
    if !device.encrypted_config {
        return match form {
            ConfigForm::Plain => Served::FullUnsigned { capf_auth_mode },
            ConfigForm::Signed => Served::FullSigned { capf_auth_mode },
            ConfigForm::Encrypted => Served::NotFound(NotFound::EncryptionOff),
        };
    }
    let usable = usable_certificate(device);
    match form {
        ConfigForm::Encrypted => match usable {
            Some((_, phone_key)) => Served::Encrypted {
                phone_key,
                capf_auth_mode,
            },
            None => Served::NotFound(NotFound::NoUsableCertificate),
        },
        ConfigForm::Plain | ConfigForm::Signed => {
            let cert_hash = usable.map(|(cert, _)| hex::encode(md5::Md5::digest(&cert.der)));
            if form == ConfigForm::Plain {
                Served::PartialUnsigned {
                    cert_hash,
                    capf_auth_mode,
                }
            } else {
                Served::PartialSigned {
                    cert_hash,
                    capf_auth_mode,
                }
            }
        }
    }
}

/// What the configuration service gives this device, and why, in words for
/// `capf device show`: the question an operator asks when a phone has no encrypted
/// configuration.
pub fn delivery(device: &DeviceRecord) -> String {
    if !device.encrypted_config {
        return "full configuration (encryption off)".into();
    }
    match (usable_certificate(device), device.phone_certificate()) {
        (Some((cert, _)), _) => {
            let which = if device.lsc.is_some() { "LSC" } else { "MIC" };
            format!("encrypted to the phone's {which} ({})", cert.md5)
        }
        (None, Some(cert)) => format!(
            "partial only: the phone's certificate has an {} key and encrypted files need RSA \
             (schedule an install with an RSA key order)",
            cert.key
        ),
        (None, None) => "partial only: no certificate known yet (the phone will run CAPF)".into(),
    }
}

/// The phone certificate and its SubjectPublicKeyInfo (DER), if that holds an RSA key.
/// The key is read from the certificate's DER itself, so the hash and the wrap key
/// cannot come from different sources, and the certificate is parsed once per request,
/// without its extensions (a boot storm asks this for every file).
fn usable_certificate(device: &DeviceRecord) -> Option<(&EnrolledCert, Vec<u8>)> {
    let cert = device.phone_certificate()?;
    let parsed = parse_certificate_shallow(&cert.der).ok()?;
    let spki = parsed.public_key();
    matches!(spki.parsed(), Ok(PublicKey::RSA(_))).then(|| (cert, spki.raw.to_vec()))
}

/// `capfAuthMode` (§5.1): the device's authentication mode while an operation is
/// pending (string 1, null 2, LSC 3, MIC 4), otherwise 0, which tells the phone to
/// compare `certHash` and run CAPF by itself only when it mismatches or is blank.
///
/// An operation is pending when one is scheduled, has not succeeded, and its deadline
/// ("operation completes by") has not passed; a failed attempt stays pending so the
/// phone retries, as in CUCM.
pub fn capf_auth_mode(device: &DeviceRecord, now: UnixTime) -> u8 {
    let succeeded = matches!(
        device.status,
        OperationStatus::UpgradeSuccess
            | OperationStatus::DeleteSuccess
            | OperationStatus::TroubleshootSuccess
    );
    let expired = device.deadline.is_some_and(|deadline| deadline < now);
    if device.operation == Operation::None || succeeded || expired {
        return 0;
    }
    match device.auth {
        AuthMode::String => 1,
        AuthMode::Null => 2,
        AuthMode::Lsc => 3,
        AuthMode::Mic => 4,
    }
}

/// What a build needs besides the decision and the document.
#[derive(Clone, Copy, Debug)]
pub struct BuildInputs<'a> {
    /// The TFTP/SAST signer; without it no signed name can be served (E6).
    pub signer: Option<&'a Signer>,
    /// The certificate the CAPF listener presents, for the ITL's role-4 record.
    pub capf_certificate: Option<&'a [u8]>,
    /// During a CA rollover, the staged or previous CAPF certificate: listed in the ITL
    /// too.
    pub other_capf_certificate: Option<&'a [u8]>,
    /// The ITL recovery identity (`ca::recovery`): a second SAST in the ITL, and its
    /// signer once established.
    pub recovery: Option<itl::Recovery<'a>>,
    /// The node name published in `capfList/capf/processNodeName`.
    pub node_name: &'a str,
    /// The CAPF port published in `capfList/capf/phonePort`.
    pub capf_port: u16,
}

/// The digest of a service's [`BuildInputs`], part of every [`BuildKey`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputsDigest([u8; 32]);

impl BuildInputs<'_> {
    /// See [`InputsDigest`]. Every field is destructured without `..`, so a field added
    /// here does not compile until it is part of the digest.
    pub fn digest(&self) -> InputsDigest {
        let BuildInputs {
            signer,
            capf_certificate,
            other_capf_certificate,
            recovery,
            node_name,
            capf_port,
        } = self;
        let mut w = KeyWriter::new();
        // The certificate names the key (a signer whose key does not match its
        // certificate is refused at load); the digest is the one setting it signs with.
        w.optional(signer.map(Signer::certificate_der));
        w.tag(signer.map_or(0, |s| s.digest().id()));
        w.optional(*capf_certificate);
        w.optional(*other_capf_certificate);
        w.optional(recovery.map(|r| r.signer.certificate_der()));
        w.tag(recovery.map_or(0, |r| 1 + u8::from(r.signs)));
        w.bytes(node_name.as_bytes());
        w.bytes(&capf_port.to_be_bytes());
        InputsDigest(w.finish())
    }
}

/// A hash over tagged and length-prefixed values, so no two different inputs write
/// the same bytes.
///
/// BLAKE3, not SHA-256: every request for a kept file hashes its base document (tens
/// of KiB) to find it, and BLAKE3 hashes a document's 1 KiB chunks side by side, in
/// 4 us against SHA-256's 10 us for 18.6 KB, with the CPU's SHA instructions (SHA-256
/// was a tenth of the server's CPU per unchanged file). The digest never leaves the
/// process.
struct KeyWriter(blake3::Hasher);

impl KeyWriter {
    fn new() -> KeyWriter {
        KeyWriter(blake3::Hasher::new())
    }

    fn tag(&mut self, tag: u8) {
        self.0.update(&[tag]);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn optional(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.tag(0),
            Some(bytes) => {
                self.tag(1);
                self.bytes(bytes);
            }
        }
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Builds the bytes [`decide`] chose, from the base document and its check (E1, E2,
/// E4: a document that fails its check is never served in any form, and the caller
/// answers *not found* or keeps its last good build).
pub fn build<R: CryptoRng + ?Sized>(
    request: &Request,
    served: &Served,
    document: Option<(&[u8], &CheckedDocument)>,
    inputs: &BuildInputs<'_>,
    now: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let name = request.served_name();
    let signer = || inputs.signer.ok_or(Error::NoSigner);
    let document = || document.ok_or_else(|| Error::NotServed("no base document".into()));
    // The full document as served: capf's CAPF node, port and mode spliced in.
    let full = |capf_auth_mode: u8| {
        let (bytes, checked) = document()?;
        checked.splice(
            bytes,
            &CapfFacts {
                node_name: inputs.node_name,
                capf_port: inputs.capf_port,
                capf_auth_mode,
            },
        )
    };
    let partial = |cert_hash: &Option<String>, capf_auth_mode: u8| {
        document()?.1.partial(&PartialFacts {
            node_name: inputs.node_name,
            capf_port: inputs.capf_port,
            capf_auth_mode,
            cert_hash: cert_hash.as_deref(),
        })
    };
    match served {
        Served::FullUnsigned { capf_auth_mode } => full(*capf_auth_mode),
        Served::FullSigned { capf_auth_mode } => {
            sgn::build(signer()?, &name, &full(*capf_auth_mode)?, now)
        }
        Served::PartialUnsigned {
            cert_hash,
            capf_auth_mode,
        } => partial(cert_hash, *capf_auth_mode),
        Served::PartialSigned {
            cert_hash,
            capf_auth_mode,
        } => {
            let signer = signer()?;
            sgn::build(signer, &name, &partial(cert_hash, *capf_auth_mode)?, now)
        }
        Served::Encrypted {
            phone_key,
            capf_auth_mode,
        } => {
            let full = full(*capf_auth_mode)?;
            enc::build(signer()?, &name, &full, phone_key, now, rng)
        }
        Served::Itl => {
            let capf = inputs.capf_certificate.ok_or(Error::NoCapfCertificate)?;
            let capfs: Vec<&[u8]> = std::iter::once(capf)
                .chain(inputs.other_capf_certificate)
                .collect();
            itl::build_with_capf(signer()?, inputs.recovery, &capfs, now)
        }
        Served::NotFound(reason) => Err(Error::NotServed(reason.to_string())),
    }
}

/// Largest base configuration served. Real phone configurations are tens of KiB; the
/// format itself has no limit (config-files.md E3 asks for at least 200 KiB to work).
pub const MAX_DOCUMENT: u64 = 4 * 1024 * 1024;

/// The identity of a build: a BLAKE3 digest of everything [`build`] reads except the
/// clock and the random generator. Two builds under one key differ only in their
/// timestamp and, for an `.enc.sgn`, in its AES key and IV; any change of an input
/// (the device's decision, the document, the signer, the node's settings) is a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BuildKey([u8; 32]);

impl BuildKey {
    /// The key of `build(request, served, document, inputs, ..)`.
    ///
    /// Every input is destructured without `..`, so a field added to [`Served`] or
    /// [`BuildInputs`] does not compile until it is part of the key. Each value is
    /// written with its length or a tag first, so no two different inputs write the
    /// same bytes.
    ///
    /// `document` is the BLAKE3 digest of the base document's bytes, hashed on its own:
    /// from its first byte its chunks go through BLAKE3 side by side (twice as fast as
    /// after other bytes), and the service finds the document's check by it too.
    ///
    /// `inputs` is [`BuildInputs::digest`]: the same for every request a service
    /// answers, so the service computes it once rather than hashing its certificates
    /// (several KiB) on every request.
    pub fn of(
        request: &Request,
        served: &Served,
        document: Option<&blake3::Hash>,
        inputs: &InputsDigest,
    ) -> BuildKey {
        let mut w = KeyWriter::new();
        // The request enters the build only through the name it is served under.
        w.bytes(request.served_name().as_bytes());
        match served {
            Served::FullUnsigned { capf_auth_mode } => {
                w.tag(1);
                w.tag(*capf_auth_mode);
            }
            Served::FullSigned { capf_auth_mode } => {
                w.tag(2);
                w.tag(*capf_auth_mode);
            }
            Served::PartialUnsigned {
                cert_hash,
                capf_auth_mode,
            } => {
                w.tag(3);
                w.optional(cert_hash.as_deref().map(str::as_bytes));
                w.tag(*capf_auth_mode);
            }
            Served::PartialSigned {
                cert_hash,
                capf_auth_mode,
            } => {
                w.tag(4);
                w.optional(cert_hash.as_deref().map(str::as_bytes));
                w.tag(*capf_auth_mode);
            }
            Served::Encrypted {
                phone_key,
                capf_auth_mode,
            } => {
                w.tag(5);
                w.bytes(phone_key);
                w.tag(*capf_auth_mode);
            }
            Served::Itl => w.tag(6),
            Served::NotFound(reason) => {
                w.tag(7);
                w.bytes(reason.to_string().as_bytes());
            }
        }
        w.optional(document.map(|d| d.as_bytes().as_slice()));
        w.bytes(&inputs.0);
        BuildKey(w.finish())
    }

    /// The digest itself (what a kept file on disk records).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key for tests of the cache alone.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &[u8]) -> BuildKey {
        BuildKey(sha2::Sha256::digest(bytes).into())
    }
}

#[cfg(test)]
mod tests;
