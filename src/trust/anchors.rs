//! The certificates capf trusts: the issuer of LSCs, and the roots of MICs and SUDIs.

use std::fs;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::TrustError;

/// The public Cisco manufacturing and SUDI CA certificates, compiled into the binary so
/// the running node never depends on where the source tree was (certs/cisco/README.md
/// lists their chains and where each copy was checked).
const SHIPPED_CISCO_CAS: [(&str, &str); 7] = [
    (
        "Cisco_Root_CA_2048.pem",
        include_str!("../../certs/cisco/Cisco_Root_CA_2048.pem"),
    ),
    (
        "Cisco_Manufacturing_CA.pem",
        include_str!("../../certs/cisco/Cisco_Manufacturing_CA.pem"),
    ),
    (
        "ACT2_SUDI_CA.pem",
        include_str!("../../certs/cisco/ACT2_SUDI_CA.pem"),
    ),
    (
        "Cisco_Root_CA_M2.pem",
        include_str!("../../certs/cisco/Cisco_Root_CA_M2.pem"),
    ),
    (
        "Cisco_Manufacturing_CA_SHA2.pem",
        include_str!("../../certs/cisco/Cisco_Manufacturing_CA_SHA2.pem"),
    ),
    (
        "Cisco_Root_CA_2099.pem",
        include_str!("../../certs/cisco/Cisco_Root_CA_2099.pem"),
    ),
    (
        "High_Assurance_SUDI_CA.pem",
        include_str!("../../certs/cisco/High_Assurance_SUDI_CA.pem"),
    ),
];

/// One trusted certificate, checked to parse when it was added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorCert {
    der: Vec<u8>,
    subject: String,
    source: String,
}

impl AnchorCert {
    /// Accepts one DER certificate with nothing after it. `source` says where it came
    /// from (a file name, "CAPF certificate") for error messages and `ChainInfo`.
    pub fn from_der(der: &[u8], source: impl Into<String>) -> Result<AnchorCert, TrustError> {
        let cert = parse_certificate(der)?;
        Ok(AnchorCert {
            subject: cert.subject().to_string(),
            der: der.to_vec(),
            source: source.into(),
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject, RFC 4514 style, for display.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A set of trusted certificates that paths are built in. Every member may end a path
/// (see `verify_chain`); members whose issuer is also present are validated up to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnchorSet {
    certs: Vec<AnchorCert>,
}

impl AnchorSet {
    pub fn new() -> AnchorSet {
        AnchorSet::default()
    }

    /// Adds a certificate unless a byte-identical one is already present.
    pub fn add(&mut self, cert: AnchorCert) {
        if !self.certs.iter().any(|c| c.der == cert.der) {
            self.certs.push(cert);
        }
    }

    /// Adds every certificate of a PEM document; returns how many it held.
    /// Anything other than CERTIFICATE blocks, or no block at all, is an error.
    pub fn add_pem(&mut self, pem: &[u8], source: &str) -> Result<usize, String> {
        let mut found = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            let der = item.map_err(|e| format!("bad PEM: {e}"))?;
            let cert = AnchorCert::from_der(der.as_ref(), source).map_err(|e| e.to_string())?;
            found.push(cert);
        }
        if found.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        let count = found.len();
        for cert in found {
            self.add(cert);
        }
        Ok(count)
    }

    pub fn certs(&self) -> &[AnchorCert] {
        &self.certs
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Both sets in one, for SUDI certificates (capf-protocol.md §7.4).
    pub fn union(&self, other: &AnchorSet) -> AnchorSet {
        let mut all = self.clone();
        for cert in &other.certs {
            all.add(cert.clone());
        }
        all
    }
}

/// The shipped CAs that issue SUDI certificates (IEEE 802.1AR device identities). Only
/// these, and SUDI anchors an operator adds, may vouch for a SUDI: never a MIC root (a
/// MIC is not a SUDI) nor capf (an LSC is not a SUDI).
const SHIPPED_SUDI_CAS: [&str; 2] = ["ACT2_SUDI_CA.pem", "High_Assurance_SUDI_CA.pem"];

/// Everything capf trusts, split by what it may vouch for: an LSC must chain to capf's
/// own CAPF certificate, never to a Cisco CA; a MIC must chain to a Cisco CA (or one an
/// operator added), never to capf; a SUDI must chain to a SUDI CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchors {
    lsc_issuers: AnchorSet,
    mic_anchors: AnchorSet,
    sudi_anchors: AnchorSet,
}

impl TrustAnchors {
    /// Trust for LSCs only: capf's CAPF certificate. MIC anchors start empty.
    pub fn new(capf_cert_der: &[u8]) -> Result<TrustAnchors, TrustError> {
        let mut lsc_issuers = AnchorSet::new();
        lsc_issuers.add(AnchorCert::from_der(capf_cert_der, "CAPF certificate")?);
        Ok(TrustAnchors {
            lsc_issuers,
            mic_anchors: AnchorSet::new(),
            sudi_anchors: AnchorSet::new(),
        })
    }

    /// Also trusts LSCs issued by `der`: the previous CAPF certificate during a CA
    /// rollover (`ca::rollover`), until it is retired.
    pub fn add_lsc_issuer(&mut self, der: &[u8], label: &str) -> Result<(), TrustError> {
        self.lsc_issuers.add(AnchorCert::from_der(der, label)?);
        Ok(())
    }

    /// Adds the Cisco CA certificates compiled into the binary to the MIC anchors, and
    /// the SUDI CAs among them to the SUDI anchors.
    pub fn with_shipped_cisco_roots(mut self) -> TrustAnchors {
        for (name, pem) in SHIPPED_CISCO_CAS {
            // The shipped files are tested to parse (tests::shipped_cisco_certificates_load);
            // a bad one would be a build defect, and skipping it only narrows trust.
            if let Err(reason) = self.mic_anchors.add_pem(pem.as_bytes(), name) {
                tracing::error!(file = name, %reason, "shipped Cisco CA certificate skipped");
            }
            if SHIPPED_SUDI_CAS.contains(&name) {
                if let Err(reason) = self.sudi_anchors.add_pem(pem.as_bytes(), name) {
                    tracing::error!(file = name, %reason, "shipped SUDI CA certificate skipped");
                }
            }
        }
        self
    }

    /// Adds every `*.pem` file of `dir` to the MIC anchors and returns how many
    /// certificates were read. A missing directory adds nothing. A file that cannot be
    /// read or holds anything but certificates fails the whole call, naming the file, so
    /// a typo never silently narrows or widens trust.
    pub fn add_pem_dir(&mut self, dir: &Path) -> Result<usize, TrustError> {
        add_pem_dir(&mut self.mic_anchors, dir)
    }

    /// Adds every `*.pem` file of `dir` to the SUDI anchors, as [`Self::add_pem_dir`]
    /// does for MICs. Kept apart so that a SUDI CA an operator adds never vouches for a
    /// MIC, nor a manufacturing CA for a SUDI.
    pub fn add_sudi_pem_dir(&mut self, dir: &Path) -> Result<usize, TrustError> {
        add_pem_dir(&mut self.sudi_anchors, dir)
    }

    pub fn lsc_issuers(&self) -> &AnchorSet {
        &self.lsc_issuers
    }

    pub fn mic_anchors(&self) -> &AnchorSet {
        &self.mic_anchors
    }

    pub fn sudi_anchors(&self) -> &AnchorSet {
        &self.sudi_anchors
    }
}

/// Adds every `*.pem` file of `dir` to `set`, all or nothing.
fn add_pem_dir(set: &mut AnchorSet, dir: &Path) -> Result<usize, TrustError> {
    let dir_error = |source| TrustError::AnchorDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(dir_error(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(dir_error)?.path();
        if path.extension().is_some_and(|ext| ext == "pem") {
            paths.push(path);
        }
    }
    paths.sort();

    let mut staged = set.clone();
    let mut count = 0;
    for path in paths {
        let file_error = |reason: String| TrustError::AnchorFile {
            path: path.clone(),
            reason,
        };
        let pem = fs::read(&path).map_err(|e| file_error(e.to_string()))?;
        count += staged
            .add_pem(&pem, &path.display().to_string())
            .map_err(file_error)?;
    }
    *set = staged;
    Ok(count)
}

/// Parses exactly one DER certificate.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, TrustError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(TrustError::BadCertificate(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(TrustError::BadCertificate(e.to_string())),
    }
}
