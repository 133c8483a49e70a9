//! What the configuration service serves for a requested name (config-files.md §6),
//! and the bytes of it.
//!
//! [`decide`] is the decision table as a pure function of the request, the device
//! record and whether a base document exists; [`build`] turns the decision into bytes.
//! Both read their inputs fresh every time: the device certificate may have changed
//! since the last request (E11), and nothing is cached here.

use crate::model::{AuthMode, DeviceRecord, EnrolledCert, Operation, OperationStatus, UnixTime};
use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::document::DeviceDocument;
use crate::phone_config::format::enc;
use crate::phone_config::format::identity::parse_certificate;
use crate::phone_config::format::itl::{self, ITL_FILE};
use crate::phone_config::format::partial::{self, PartialFacts};
use crate::phone_config::format::sgn;
use crate::phone_config::signer::Signer;
use md5::Digest as _;
use rand::CryptoRng;
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
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotFound::NoDocument => "no base document for the device",
            NotFound::EncryptionOff => "encrypted configuration is off for the device",
            NotFound::NoUsableCertificate => "no RSA certificate is known for the device",
            NotFound::DeviceTrustList => "per-device trust lists are not published",
            NotFound::NoCtl => "no CTL is configured",
        })
    }
}

/// What to serve for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    FullUnsigned,
    FullSigned,
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
    },
    Itl,
    NotFound(NotFound),
}

/// The decision table of §6.
///
/// Encryption is on when the device record asks for it; an unknown device gets the
/// plain configuration. The certificate whose MD5 goes into the partial and whose key
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
    if document.is_none() {
        return Served::NotFound(NotFound::NoDocument);
    }
    let Some(device) = device.filter(|d| d.encrypted_config) else {
        return match form {
            ConfigForm::Plain => Served::FullUnsigned,
            ConfigForm::Signed => Served::FullSigned,
            ConfigForm::Encrypted => Served::NotFound(NotFound::EncryptionOff),
        };
    };
    let usable = usable_certificate(device);
    let capf_auth_mode = capf_auth_mode(device, now);
    match form {
        ConfigForm::Encrypted => match usable {
            Some((_, phone_key)) => Served::Encrypted { phone_key },
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
/// cannot come from different sources, and the certificate is parsed once per request.
fn usable_certificate(device: &DeviceRecord) -> Option<(&EnrolledCert, Vec<u8>)> {
    let cert = device.phone_certificate()?;
    let parsed = parse_certificate(&cert.der).ok()?;
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
    /// The node name published in `capfList/capf/processNodeName`.
    pub node_name: &'a str,
    /// The CAPF port published in `capfList/capf/phonePort`.
    pub capf_port: u16,
}

/// Builds the bytes [`decide`] chose. The document is checked first (E1, E2, E4):
/// a document that fails is never served in any form, and the caller answers
/// *not found* or keeps its last good build.
pub fn build<R: CryptoRng + ?Sized>(
    request: &Request,
    served: &Served,
    document: Option<&[u8]>,
    inputs: &BuildInputs<'_>,
    now: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let name = request.served_name();
    let signer = || inputs.signer.ok_or(Error::NoSigner);
    let document = || {
        document
            .ok_or_else(|| Error::NotServed("no base document".into()))
            .and_then(DeviceDocument::parse)
    };
    let partial = |cert_hash: &Option<String>, capf_auth_mode: u8| {
        partial::build(
            &document()?,
            &PartialFacts {
                node_name: inputs.node_name,
                capf_port: inputs.capf_port,
                capf_auth_mode,
                cert_hash: cert_hash.as_deref(),
            },
        )
    };
    match served {
        Served::FullUnsigned => Ok(document()?.bytes().to_vec()),
        Served::FullSigned => sgn::build(signer()?, &name, document()?.bytes(), now),
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
        Served::Encrypted { phone_key } => {
            enc::build(signer()?, &name, document()?.bytes(), phone_key, now, rng)
        }
        Served::Itl => {
            let capf = inputs.capf_certificate.ok_or(Error::NoCapfCertificate)?;
            itl::build_standard(signer()?, capf, now)
        }
        Served::NotFound(reason) => Err(Error::NotServed(reason.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone_config::format::sgn::FileKind;
    use crate::phone_config::signer::Digest;
    use crate::phone_config::testpki::{enrolled, pki, signer, SEP_DOC};

    const NOW: UnixTime = 1_700_000_000;
    const MAC: &str = "001122334455";

    fn request(form: ConfigForm) -> Request {
        Request::Config {
            mac: MAC.into(),
            form,
        }
    }

    fn device(encrypted: bool, lsc: Option<&[u8]>) -> DeviceRecord {
        let mut d = DeviceRecord::new(format!("SEP{MAC}"));
        d.encrypted_config = encrypted;
        d.lsc = lsc.map(enrolled);
        d
    }

    fn spki_of(der: &[u8]) -> Vec<u8> {
        parse_certificate(der).unwrap().public_key().raw.to_vec()
    }

    fn md5_hex(der: &[u8]) -> String {
        hex::encode(md5::Md5::digest(der))
    }

    #[test]
    fn request_names_follow_e12() {
        assert_eq!(
            Request::parse("SEP00112233aabb.cnf.xml.sgn"),
            Some(Request::Config {
                mac: "00112233AABB".into(),
                form: ConfigForm::Signed
            })
        );
        assert_eq!(
            Request::parse("SEP00112233aabb.cnf.xml.enc.sgn")
                .unwrap()
                .served_name(),
            "SEP00112233AABB.cnf.xml.enc.sgn"
        );
        assert_eq!(
            Request::parse("SEP001122334455.cnf.xml")
                .unwrap()
                .device_name()
                .as_deref(),
            Some("SEP001122334455")
        );
        assert_eq!(Request::parse("ITLFile.tlv"), Some(Request::TrustList));
        assert_eq!(
            Request::parse("ITLSEP001122334455.tlv"),
            Some(Request::DeviceTrustList { mac: MAC.into() })
        );
        assert_eq!(
            Request::parse("CTLFile.tlv"),
            Some(Request::CertificateTrustList)
        );
        assert_eq!(
            Request::parse("CTLSEP001122334455.tlv"),
            Some(Request::CertificateTrustList)
        );
        for bad in [
            "SEP00112233445.cnf.xml",
            "SEP0011223344556.cnf.xml",
            "SEP00112233445G.cnf.xml",
            "SEP001122334455.cnf.xml.bak",
            "SEP001122334455.cnf",
            "../SEP001122334455.cnf.xml",
            "tftp/SEP001122334455.cnf.xml",
            "SEP001122334455.cnf.xml/..",
            "SEP..1122334455.cnf.xml",
            "SEP00\\122334455.cnf.xml",
            "XMLDefault.cnf.xml",
            "ITLSEP0011223344.tlv",
            "SEPé01122334455.cnf.xml",
            "",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn decision_table_rows() {
        let p = pki();
        let doc = Some(SEP_DOC.as_bytes());
        let plain = request(ConfigForm::Plain);
        let signed = request(ConfigForm::Signed);
        let encrypted = request(ConfigForm::Encrypted);
        let off = device(false, Some(&p.phone.der));
        let rsa = device(true, Some(&p.phone.der));
        let none = device(true, None);
        let ec = device(true, Some(&p.phone_ec));
        let hash = Some(md5_hex(&p.phone.der));

        for d in [None, Some(&off), Some(&rsa), Some(&none), Some(&ec)] {
            assert_eq!(decide(&Request::TrustList, d, doc, NOW), Served::Itl);
            assert_eq!(
                decide(&Request::DeviceTrustList { mac: MAC.into() }, d, doc, NOW),
                Served::NotFound(NotFound::DeviceTrustList)
            );
            assert_eq!(
                decide(&Request::CertificateTrustList, d, doc, NOW),
                Served::NotFound(NotFound::NoCtl)
            );
            assert_eq!(
                decide(&signed, d, None, NOW),
                Served::NotFound(NotFound::NoDocument)
            );
        }
        for d in [None, Some(&off)] {
            assert_eq!(decide(&plain, d, doc, NOW), Served::FullUnsigned);
            assert_eq!(decide(&signed, d, doc, NOW), Served::FullSigned);
            assert_eq!(
                decide(&encrypted, d, doc, NOW),
                Served::NotFound(NotFound::EncryptionOff)
            );
        }
        assert_eq!(
            decide(&plain, Some(&rsa), doc, NOW),
            Served::PartialUnsigned {
                cert_hash: hash.clone(),
                capf_auth_mode: 0
            }
        );
        assert_eq!(
            decide(&signed, Some(&rsa), doc, NOW),
            Served::PartialSigned {
                cert_hash: hash,
                capf_auth_mode: 0
            }
        );
        assert_eq!(
            decide(&encrypted, Some(&rsa), doc, NOW),
            Served::Encrypted {
                phone_key: spki_of(&p.phone.der)
            }
        );
        for d in [&none, &ec] {
            assert_eq!(
                decide(&plain, Some(d), doc, NOW),
                Served::PartialUnsigned {
                    cert_hash: None,
                    capf_auth_mode: 0
                }
            );
            assert_eq!(
                decide(&signed, Some(d), doc, NOW),
                Served::PartialSigned {
                    cert_hash: None,
                    capf_auth_mode: 0
                }
            );
            assert_eq!(
                decide(&encrypted, Some(d), doc, NOW),
                Served::NotFound(NotFound::NoUsableCertificate)
            );
        }
    }

    #[test]
    fn delivery_tells_the_operator_why_a_phone_gets_no_encrypted_file() {
        let p = pki();
        let off = device(false, Some(&p.phone.der));
        assert_eq!(delivery(&off), "full configuration (encryption off)");
        let rsa = device(true, Some(&p.phone.der));
        assert_eq!(
            delivery(&rsa),
            format!("encrypted to the phone's LSC ({})", md5_hex(&p.phone.der))
        );
        assert!(delivery(&device(true, None)).starts_with("partial only: no certificate known"));
        let ec = delivery(&device(true, Some(&p.phone_ec)));
        assert!(
            ec.starts_with("partial only:") && ec.contains("need RSA"),
            "{ec}"
        );
    }

    #[test]
    fn the_mic_is_used_when_no_lsc_is_installed() {
        let p = pki();
        let mut d = device(true, None);
        d.mic = Some(enrolled(&p.phone_1024.der));
        assert_eq!(
            decide(
                &request(ConfigForm::Encrypted),
                Some(&d),
                Some(b"<device/>"),
                NOW
            ),
            Served::Encrypted {
                phone_key: spki_of(&p.phone_1024.der)
            }
        );
    }

    #[test]
    fn capf_auth_mode_reflects_a_pending_operation() {
        let mut d = device(true, None);
        assert_eq!(capf_auth_mode(&d, NOW), 0);
        d.operation = Operation::Install;
        d.status = OperationStatus::Pending;
        for (auth, mode) in [
            (AuthMode::String, 1),
            (AuthMode::Null, 2),
            (AuthMode::Lsc, 3),
            (AuthMode::Mic, 4),
        ] {
            d.auth = auth;
            assert_eq!(capf_auth_mode(&d, NOW), mode);
        }
        d.status = OperationStatus::UpgradeFailed("Invalid Authentication String".into());
        assert_eq!(capf_auth_mode(&d, NOW), 4, "a failure stays pending");
        d.deadline = Some(NOW - 1);
        assert_eq!(capf_auth_mode(&d, NOW), 0, "past the deadline");
        d.deadline = Some(NOW);
        d.status = OperationStatus::UpgradeSuccess;
        assert_eq!(capf_auth_mode(&d, NOW), 0, "done");
        let served = decide(
            &request(ConfigForm::Signed),
            Some(&device_pending()),
            Some(b"<device/>"),
            NOW,
        );
        assert!(matches!(
            served,
            Served::PartialSigned {
                capf_auth_mode: 2,
                ..
            }
        ));
    }

    fn device_pending() -> DeviceRecord {
        let mut d = device(true, None);
        d.operation = Operation::Install;
        d.status = OperationStatus::Pending;
        d
    }

    fn inputs(signer: &Signer) -> BuildInputs<'_> {
        BuildInputs {
            signer: Some(signer),
            capf_certificate: Some(&pki().capf),
            node_name: "capf.example.net",
            capf_port: 3804,
        }
    }

    /// Decides and builds `form` for `device` with `document`.
    fn serve(
        form: ConfigForm,
        device: &DeviceRecord,
        document: &[u8],
        signer: &Signer,
    ) -> Result<Vec<u8>> {
        let request = request(form);
        let served = decide(&request, Some(device), Some(document), NOW);
        build(
            &request,
            &served,
            Some(document),
            &inputs(signer),
            NOW,
            &mut rand::rng(),
        )
    }

    #[test]
    fn encryption_off_serves_the_full_document_signed_and_unsigned() {
        let s = signer(Digest::Sha1);
        let d = device(false, Some(&pki().phone.der));
        assert_eq!(
            serve(ConfigForm::Plain, &d, SEP_DOC.as_bytes(), &s).unwrap(),
            SEP_DOC.as_bytes()
        );
        let file = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        let parsed = sgn::parse(&file, FileKind::Sgn).unwrap();
        assert_eq!(parsed.body, SEP_DOC.as_bytes());
        assert_eq!(parsed.filename, "SEP001122334455.cnf.xml.sgn");
        assert_eq!(parsed.timestamp, NOW as u32);
        sgn::verify(&parsed, &pki().signer.der).unwrap();
    }

    #[test]
    fn encryption_on_serves_a_signed_partial_and_the_encrypted_full_document() {
        let p = pki();
        let s = signer(Digest::Sha1);
        let d = device(true, Some(&p.phone.der));
        let file = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        let parsed = sgn::parse(&file, FileKind::Sgn).unwrap();
        assert_eq!(parsed.header_length, 424);
        assert_eq!(parsed.body.len(), 444);
        assert_eq!(file.len(), 868);
        sgn::verify(&parsed, &p.signer.der).unwrap();
        let body = std::str::from_utf8(parsed.body).unwrap();
        let hash = md5_hex(&p.phone.der);
        assert!(body.contains(&format!("  <certHash>{hash}</certHash>\n")));
        assert!(
            body.contains("<encrConfig>true</encrConfig>")
                && body.contains("<fullConfig>false</fullConfig>")
        );
        assert!(!body.contains("s3cret"));

        let unsigned = serve(ConfigForm::Plain, &d, SEP_DOC.as_bytes(), &s).unwrap();
        assert_eq!(unsigned, parsed.body);

        let encrypted = serve(ConfigForm::Encrypted, &d, SEP_DOC.as_bytes(), &s).unwrap();
        let parsed = sgn::parse(&encrypted, FileKind::EncSgn).unwrap();
        assert_eq!(parsed.filename, "SEP001122334455.cnf.xml.enc.sgn");
        sgn::verify(&parsed, &p.signer.der).unwrap();
        assert_eq!(
            enc::decrypt(&encrypted, &p.phone.key).unwrap(),
            SEP_DOC.as_bytes()
        );
    }

    #[test]
    fn the_sgn_signer_is_the_itl_tftp_record() {
        let p = pki();
        let s = signer(Digest::Sha1);
        let d = device(true, Some(&p.phone.der));
        let config = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        let config = sgn::parse(&config, FileKind::Sgn).unwrap();
        let served = decide(&Request::TrustList, Some(&d), None, NOW);
        let list = build(
            &Request::TrustList,
            &served,
            None,
            &inputs(&s),
            NOW,
            &mut rand::rng(),
        )
        .unwrap();
        let list = itl::parse(&list).unwrap();
        itl::verify(&list).unwrap();
        let tftp = list
            .records
            .iter()
            .find(|r| r.role == itl::Role::Tftp.value())
            .unwrap();
        assert_eq!(tftp.issuer, config.issuer_name);
        assert_eq!(tftp.subject, config.signer_name);
        assert_eq!(tftp.serial, config.serial);
        sgn::verify(&config, tftp.certificate).unwrap();
        let capf = list
            .records
            .iter()
            .find(|r| r.role == itl::Role::Capf.value())
            .unwrap();
        assert_eq!(capf.certificate, p.capf.as_slice());
    }

    #[test]
    fn a_new_certificate_changes_both_the_hash_and_the_wrap_key() {
        let p = pki();
        let s = signer(Digest::Sha1);
        let mut d = device(true, Some(&p.phone.der));
        let before = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        d.lsc = Some(enrolled(&p.phone_1024.der));
        let after = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        let hash_of = |file: &[u8]| {
            let body = sgn::parse(file, FileKind::Sgn).unwrap().body.to_vec();
            let body = String::from_utf8(body).unwrap();
            let start = body.find("<certHash>").unwrap() + 10;
            body[start..start + 32].to_owned()
        };
        assert_eq!(hash_of(&before), md5_hex(&p.phone.der));
        assert_eq!(hash_of(&after), md5_hex(&p.phone_1024.der));
        let encrypted = serve(ConfigForm::Encrypted, &d, SEP_DOC.as_bytes(), &s).unwrap();
        assert_eq!(
            enc::decrypt(&encrypted, &p.phone_1024.key).unwrap(),
            SEP_DOC.as_bytes()
        );
        assert!(enc::decrypt(&encrypted, &p.phone.key).is_err());
    }

    #[test]
    fn toggling_encryption_switches_between_full_and_partial() {
        let p = pki();
        let s = signer(Digest::Sha1);
        let mut d = device(true, Some(&p.phone.der));
        let on = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        assert_eq!(sgn::parse(&on, FileKind::Sgn).unwrap().body.len(), 444);
        d.encrypted_config = false;
        let off = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
        assert_eq!(
            sgn::parse(&off, FileKind::Sgn).unwrap().body,
            SEP_DOC.as_bytes()
        );
        assert!(matches!(
            serve(ConfigForm::Encrypted, &d, SEP_DOC.as_bytes(), &s),
            Err(Error::NotServed(_))
        ));
    }

    #[test]
    fn a_cucm_root_is_kept_byte_exact() {
        let p = pki();
        let s = signer(Digest::Sha1);
        let doc = SEP_DOC.replace(
            "<device>",
            "<device xsi:type=\"axl:XIPPhone\" ctiid=\"94\">",
        );
        let doc = doc.as_bytes();
        let mut d = device(false, Some(&p.phone.der));
        let full = serve(ConfigForm::Signed, &d, doc, &s).unwrap();
        assert_eq!(sgn::parse(&full, FileKind::Sgn).unwrap().body, doc);
        d.encrypted_config = true;
        let encrypted = serve(ConfigForm::Encrypted, &d, doc, &s).unwrap();
        assert_eq!(enc::decrypt(&encrypted, &p.phone.key).unwrap(), doc);
        let partial = serve(ConfigForm::Plain, &d, doc, &s).unwrap();
        assert!(partial.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device>\n"));
    }

    #[test]
    fn bad_documents_are_never_served() {
        let p = pki();
        let s = signer(Digest::Sha1);
        for doc in [
            "<device><a></device>",
            "<Default><a/></Default>",
            "<device/><x/>",
        ] {
            for encrypted in [false, true] {
                let d = device(encrypted, Some(&p.phone.der));
                for form in [ConfigForm::Plain, ConfigForm::Signed, ConfigForm::Encrypted] {
                    let result = serve(form, &d, doc.as_bytes(), &s);
                    if !encrypted && form == ConfigForm::Encrypted {
                        assert!(matches!(result, Err(Error::NotServed(_))));
                    } else {
                        assert!(matches!(result, Err(Error::Document(_))), "{doc} {form:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_bom_is_not_served() {
        let s = signer(Digest::Sha1);
        let d = device(false, None);
        let doc = [b"\xEF\xBB\xBF".as_slice(), SEP_DOC.as_bytes()].concat();
        assert_eq!(
            serve(ConfigForm::Plain, &d, &doc, &s).unwrap(),
            SEP_DOC.as_bytes()
        );
    }

    #[test]
    fn signed_names_need_signing_material() {
        let d = device(false, None);
        let request = request(ConfigForm::Signed);
        let served = decide(&request, Some(&d), Some(SEP_DOC.as_bytes()), NOW);
        let no_signer = BuildInputs {
            signer: None,
            capf_certificate: Some(&pki().capf),
            node_name: "capf.example.net",
            capf_port: 3804,
        };
        let result = build(
            &request,
            &served,
            Some(SEP_DOC.as_bytes()),
            &no_signer,
            NOW,
            &mut rand::rng(),
        );
        assert!(matches!(result, Err(Error::NoSigner)));
        let itl = build(
            &Request::TrustList,
            &Served::Itl,
            None,
            &no_signer,
            NOW,
            &mut rand::rng(),
        );
        assert!(matches!(itl, Err(Error::NoSigner)));
        let s = signer(Digest::Sha1);
        let no_capf = BuildInputs {
            capf_certificate: None,
            ..inputs(&s)
        };
        let itl = build(
            &Request::TrustList,
            &Served::Itl,
            None,
            &no_capf,
            NOW,
            &mut rand::rng(),
        );
        assert!(matches!(itl, Err(Error::NoCapfCertificate)));
    }
}
