//! Distinguished names carried over from the CAPF certificate into the LSCs it issues.
//!
//! The issuer field of an LSC must be byte-for-byte the subject of the CAPF
//! certificate, or chain building fails on the phone and at call control; the LSC
//! subject copies O, OU, L, ST and C in their original order and string types
//! (capf-protocol.md §9). rcgen re-encodes names from its own model, so every
//! attribute is mapped to the rcgen value of the same ASN.1 string type.

use super::CaError;
use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{DistinguishedName, DnType, DnValue};
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Attribute types the LSC subject copies from the issuer, after its own CN.
const COPIED_TO_LSC: [&[u64]; 5] = [
    &[2, 5, 4, 10], // O
    &[2, 5, 4, 11], // OU
    &[2, 5, 4, 7],  // L
    &[2, 5, 4, 8],  // ST
    &[2, 5, 4, 6],  // C
];

/// One attribute of a name, in rcgen's terms.
pub(crate) type Attribute = (DnType, DnValue);

/// Every attribute of `name`, in order. Fails for names rcgen cannot reproduce
/// exactly: a multi-valued RDN, a repeated attribute type (rcgen keeps one value per
/// type), or a string type it does not know.
pub(crate) fn attributes(name: &X509Name<'_>) -> Result<Vec<Attribute>, CaError> {
    let mut out: Vec<Attribute> = Vec::new();
    for rdn in name.iter() {
        let mut values = rdn.iter();
        let (Some(attr), None) = (values.next(), values.next()) else {
            return Err(CaError::IssuerName(
                "a relative distinguished name holds other than one attribute".into(),
            ));
        };
        let (ty, value) = attribute(attr)?;
        if out.iter().any(|(seen, _)| *seen == ty) {
            return Err(CaError::IssuerName(format!(
                "attribute {} appears more than once",
                attr.attr_type()
            )));
        }
        out.push((ty, value));
    }
    Ok(out)
}

/// The rcgen model of `attributes`, keeping their order.
pub(crate) fn distinguished_name(attributes: &[Attribute]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in attributes {
        dn.push(ty.clone(), value.clone());
    }
    dn
}

/// The attributes of an issuer subject that an LSC subject repeats after its CN.
pub(crate) fn copied_to_lsc(issuer_subject: &[Attribute]) -> Vec<Attribute> {
    issuer_subject
        .iter()
        .filter(|(ty, _)| COPIED_TO_LSC.iter().any(|oid| *ty == DnType::from_oid(oid)))
        .cloned()
        .collect()
}

fn attribute(attr: &AttributeTypeAndValue<'_>) -> Result<Attribute, CaError> {
    let oid: Vec<u64> = attr
        .attr_type()
        .iter()
        .ok_or_else(|| CaError::IssuerName(format!("attribute type {}", attr.attr_type())))?
        .collect();
    let value = attr.attr_value();
    let data = value.data;
    let bad = |what: &str| CaError::IssuerName(format!("{what} in {}", attr.attr_type()));
    let text = || std::str::from_utf8(data).map_err(|_| bad("invalid text"));
    let dn_value = match value.header.tag() {
        Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
        Tag::PrintableString => DnValue::PrintableString(
            PrintableString::try_from(text()?).map_err(|_| bad("invalid PrintableString"))?,
        ),
        Tag::Ia5String => {
            DnValue::Ia5String(Ia5String::try_from(text()?).map_err(|_| bad("invalid IA5String"))?)
        }
        Tag::T61String => DnValue::TeletexString(
            TeletexString::try_from(text()?).map_err(|_| bad("invalid TeletexString"))?,
        ),
        Tag::BmpString => DnValue::BmpString(
            BmpString::from_utf16be(data.to_vec()).map_err(|_| bad("invalid BMPString"))?,
        ),
        Tag::UniversalString => DnValue::UniversalString(
            UniversalString::from_utf32be(data.to_vec())
                .map_err(|_| bad("invalid UniversalString"))?,
        ),
        other => return Err(bad(&format!("unsupported string type {other}"))),
    };
    Ok((DnType::from_oid(&oid), dn_value))
}
