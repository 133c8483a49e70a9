//! The Identity Trust List `ITLFile.tlv` (config-files.md §7).
//!
//! A `.tlv` header (version 1.2, signer version tag 28) signed by the SAST
//! certificate, followed by one record per (certificate, role). Phones accept their
//! first ITL unverified and every later one only if a SAST they trust signed it
//! ([`verify_update`]), so capf lists two SAST keys, the signer and the recovery
//! identity (`ca::recovery`), and either can introduce a replacement for the other.

use crate::model::UnixTime;
use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::identity::{parse_certificate, CertIdentity};
use crate::phone_config::format::sgn::{self, FileKind, SignedFile};
use crate::phone_config::format::tlv::{
    length16, read_item, value_string, value_u16, Item, Writer,
};
use crate::phone_config::signer::{verify_signature, Signer};
use std::collections::BTreeMap;
use x509_parser::public_key::PublicKey;

/// The name the ITL is served and signed under.
pub const ITL_FILE: &str = "ITLFile.tlv";

/// Record tag 4 (`FUNCTION`). Values 5 and 6 are unknown and never emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Signs `.tlv` files.
    Sast,
    /// Call-control TLS.
    Ccm,
    /// CCM and TFTP in one certificate (never "SAST+TFTP").
    CcmTftp,
    /// Signs `.sgn` and `.enc.sgn`.
    Tftp,
    /// The CAPF TLS server on port 3804.
    Capf,
    AppServer,
    Tvs,
}

impl Role {
    pub fn value(self) -> u16 {
        match self {
            Role::Sast => 0,
            Role::Ccm => 1,
            Role::CcmTftp => 2,
            Role::Tftp => 3,
            Role::Capf => 4,
            Role::AppServer => 7,
            Role::Tvs => 21,
        }
    }

    pub fn from_value(value: u16) -> Option<Role> {
        Some(match value {
            0 => Role::Sast,
            1 => Role::Ccm,
            2 => Role::CcmTftp,
            3 => Role::Tftp,
            4 => Role::Capf,
            7 => Role::AppServer,
            21 => Role::Tvs,
            _ => return None,
        })
    }
}

/// The ITL capf publishes (§7.5) without a recovery identity: the signer as SAST
/// (role 0) and as TFTP (role 3), since one certificate holds both roles in a small
/// deployment, then the CAPF certificate (role 4).
pub fn build_standard(signer: &Signer, capf_certificate: &[u8], now: UnixTime) -> Result<Vec<u8>> {
    build_with_capf(signer, None, &[capf_certificate], now)
}

/// The recovery identity as an ITL lists it.
#[derive(Clone, Copy, Debug)]
pub struct Recovery<'a> {
    pub signer: &'a Signer,
    /// Whether it signs the ITL (`ca::recovery::ItlSigning::Recovery`), or only is
    /// listed while phones learn it.
    pub signs: bool,
}

/// The ITL capf publishes: the signer as SAST and TFTP, the recovery identity as a
/// second SAST, and every CAPF certificate phones must trust (during a CA rollover the
/// current one and the staged or previous one, `ca::rollover`). Signed by the recovery
/// identity when it signs, else by the signer.
pub fn build_with_capf(
    signer: &Signer,
    recovery: Option<Recovery<'_>>,
    capf_certificates: &[&[u8]],
    now: UnixTime,
) -> Result<Vec<u8>> {
    let own = signer.certificate_der();
    let mut records = vec![(own, Role::Sast), (own, Role::Tftp)];
    records.extend(recovery.map(|r| (r.signer.certificate_der(), Role::Sast)));
    records.extend(capf_certificates.iter().map(|c| (*c, Role::Capf)));
    let signing = match recovery {
        Some(Recovery {
            signer: recovery,
            signs: true,
        }) => recovery,
        _ => signer,
    };
    build(signing, &records, now)
}

/// Builds an ITL with one record per (certificate DER, role), in the order given,
/// signed by `signer` as the SAST.
pub fn build(signer: &Signer, records: &[(&[u8], Role)], now: UnixTime) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    for (certificate, role) in records {
        body.extend(record(certificate, *role)?);
    }
    sgn::build_signed(FileKind::Tlv, signer, ITL_FILE, &[], &body, now)
}

/// One record, tags in numeric order as CUCM writes them (§7.2). Tags 2 and 10 (DNS
/// name, IP address) are optional and not written.
fn record(certificate: &[u8], role: Role) -> Result<Vec<u8>> {
    let identity = CertIdentity::from_der(certificate)?;
    let mut w = Writer::new();
    w.u16(1, 0)?;
    w.string(3, &identity.subject)?;
    w.u16(4, role.value())?;
    w.string(5, &identity.issuer)?;
    w.element(6, &identity.serial)?;
    w.element(7, identity.key.record_value())?;
    w.element(8, &identity.signature)?;
    w.element(9, certificate)?;
    let length = length16("ITL record", w.position())?;
    w.patch_u16(3, length);
    Ok(w.into_bytes())
}

/// One parsed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where the record starts in the file.
    pub offset: usize,
    /// Tag 1: the record's whole size.
    pub length: usize,
    /// Tag 2, without its NUL.
    pub dns_name: Option<String>,
    /// Tag 3.
    pub subject: String,
    /// Tag 4.
    pub role: u16,
    /// Tag 5.
    pub issuer: String,
    /// Tag 6.
    pub serial: &'a [u8],
    /// Tag 7.
    pub public_key: &'a [u8],
    /// Tag 8 (absent for eToken records).
    pub signature: Option<&'a [u8]>,
    /// Tag 9.
    pub certificate: &'a [u8],
    /// Tag 10.
    pub ip_address: Option<&'a [u8]>,
}

impl Record<'_> {
    /// V6: tags 3, 5, 6, 7 and 8 are what capf would derive from tag 9.
    pub fn matches_certificate(&self) -> Result<()> {
        let identity = CertIdentity::from_der(self.certificate)?;
        let mismatch = |what: &str| {
            Err(Error::malformed(
                self.offset,
                format!("record {what} differs from its certificate"),
            ))
        };
        if self.subject != identity.subject {
            return mismatch("subject");
        }
        if self.issuer != identity.issuer {
            return mismatch("issuer");
        }
        if self.serial != identity.serial.as_slice() {
            return mismatch("serial");
        }
        if self.public_key != identity.key.record_value() {
            return mismatch("public key");
        }
        if self
            .signature
            .is_some_and(|s| s != identity.signature.as_slice())
        {
            return mismatch("signature");
        }
        Ok(())
    }
}

/// A parsed trust list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustList<'a> {
    pub header: SignedFile<'a>,
    pub records: Vec<Record<'a>>,
}

/// Parses an ITL or CTL: the `.tlv` header, then records that tile the rest of the
/// file exactly, each opening with its length and holding a parsable RSA or EC
/// certificate.
pub fn parse(file: &[u8]) -> Result<TrustList<'_>> {
    let header = sgn::parse(file, FileKind::Tlv)?;
    let mut records = Vec::new();
    let mut offset = header.header_length;
    while offset < file.len() {
        let record = parse_record(file, offset)?;
        offset += record.length;
        records.push(record);
    }
    Ok(TrustList { header, records })
}

fn parse_record(file: &[u8], offset: usize) -> Result<Record<'_>> {
    let length = match read_item(file, offset, file.len(), false)? {
        Item::Element { tag: 1, value, .. } => usize::from(value_u16(1, offset, value)?),
        _ => return Err(Error::malformed(offset, "a record must open with tag 1")),
    };
    let end = offset + length;
    if length < 5 || end > file.len() {
        return Err(Error::malformed(
            offset,
            format!("record length {length} does not fit the file"),
        ));
    }
    let mut elements: BTreeMap<u8, (usize, &[u8])> = BTreeMap::new();
    let mut pos = offset + 5;
    while pos < end {
        let Item::Element { tag, value, .. } = read_item(file, pos, end, false)? else {
            return Err(Error::malformed(pos, "pad byte inside a record"));
        };
        if !(2..=12).contains(&tag) {
            return Err(Error::malformed(
                pos,
                format!("tag {tag} is not a record tag"),
            ));
        }
        if elements.insert(tag, (pos, value)).is_some() {
            return Err(Error::malformed(
                pos,
                format!("record tag {tag} appears twice"),
            ));
        }
        pos += 3 + value.len();
    }
    let get = |tag: u8| {
        elements
            .get(&tag)
            .copied()
            .ok_or_else(|| Error::malformed(offset, format!("record tag {tag} is missing")))
    };
    let string = |tag: u8| -> Result<String> {
        let (at, value) = get(tag)?;
        value_string(tag, at, value)
    };
    let (at, role) = get(4)?;
    let role = value_u16(4, at, role)?;
    let (at, certificate) = get(9)?;
    let cert = parse_certificate(certificate).map_err(|e| Error::malformed(at, e.to_string()))?;
    if !matches!(
        cert.public_key().parsed(),
        Ok(PublicKey::RSA(_) | PublicKey::EC(_))
    ) {
        return Err(Error::malformed(
            at,
            "record certificate key is neither RSA nor EC",
        ));
    }
    let dns_name = match elements.get(&2) {
        Some(&(at, value)) => Some(value_string(2, at, value)?),
        None => None,
    };
    Ok(Record {
        offset,
        length,
        dns_name,
        subject: string(3)?,
        role,
        issuer: string(5)?,
        serial: get(6)?.1,
        public_key: get(7)?.1,
        signature: elements.get(&8).map(|&(_, v)| v),
        certificate,
        ip_address: elements.get(&10).map(|&(_, v)| v),
    })
}

/// Verifies the list with its own SAST record (§7.4): the last role-0 record whose
/// serial equals the header's tag 5 supplies the key.
pub fn verify(list: &TrustList<'_>) -> Result<()> {
    let sast = list
        .records
        .iter()
        .rfind(|r| r.role == Role::Sast.value() && r.serial == list.header.serial)
        .ok_or_else(|| {
            Error::Certificate("no SAST record matches the signer serial of the header".into())
        })?;
    let identity = CertIdentity::from_der(sast.certificate)?;
    verify_signature(
        &identity.key,
        list.header.digest,
        &list.header.signed_message(),
        list.header.signature,
    )
}

/// What a phone holding `held` does with `new` (§7.4): it accepts it only if a SAST
/// record of `held` names the new list's signer (serial and issuer) and its key
/// verifies the signature. capf has no Trust Verification Service, so there is no
/// other way in: this is the rule every ITL change must pass.
pub fn verify_update(held: &TrustList<'_>, new: &TrustList<'_>) -> Result<()> {
    let sast = held
        .records
        .iter()
        .filter(|r| r.role == Role::Sast.value())
        .rfind(|r| r.serial == new.header.serial && r.issuer == new.header.issuer_name)
        .ok_or_else(|| {
            Error::Certificate(format!(
                "the new ITL is signed by {:?}, which is no SAST of the ITL the phone holds",
                new.header.signer_name
            ))
        })?;
    sgn::verify(&new.header, sast.certificate)
}

#[cfg(test)]
mod tests;
