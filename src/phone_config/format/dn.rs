//! The one distinguished-name formatter (config-files.md §1.1).
//!
//! `.sgn` headers and ITL records name the same certificates; phones treat the names
//! as opaque identifiers, so the strings must be byte-identical wherever they appear.
//! Every name in every file therefore comes from [`format_name`].

use crate::phone_config::error::{Error, Result};
use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::x509::X509Name;

/// OID of x500UniqueIdentifier, the one attribute whose value is a BIT STRING.
const X500_UNIQUE_IDENTIFIER: &str = "2.5.4.45";

/// Renders `name` as `KEY=value` items in DER order, joined with `,` (no spaces).
///
/// Not RFC 4514 order: that would reverse the RDN sequence. The NUL terminator is
/// added by the element writer, not here.
pub fn format_name(name: &X509Name<'_>) -> Result<String> {
    let mut items = Vec::new();
    for rdn in name.iter_rdn() {
        for attribute in rdn.iter() {
            let oid = attribute.attr_type().to_id_string();
            let key = short_name(&oid).unwrap_or(&oid);
            let value = attribute.attr_value();
            let item = if oid == X500_UNIQUE_IDENTIFIER && value.tag() == Tag::BitString {
                format!("{key}=#{}", hex::encode(bit_string_bytes(value)?))
            } else {
                format!("{key}={}", escape(&decode_string(&oid, value)?))
            };
            items.push(item);
        }
    }
    Ok(items.join(","))
}

/// Whether any character-string value of `name` holds a NUL. §1.1 can write one
/// (`\00`), but E9 refuses such certificates, so identities check this first.
pub fn contains_nul(name: &X509Name<'_>) -> bool {
    name.iter_attributes().any(|attribute| {
        let oid = attribute.attr_type().to_id_string();
        decode_string(&oid, attribute.attr_value()).is_ok_and(|v| v.contains('\0'))
    })
}

/// The attribute keys §1.1 writes by name; every other attribute uses its dotted OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The BIT STRING's value bytes, without the leading unused-bits octet.
fn bit_string_bytes<'a>(value: &'a Any<'_>) -> Result<&'a [u8]> {
    match value.data.split_first() {
        Some((0, bits)) => Ok(bits),
        _ => Err(Error::Certificate(
            "x500UniqueIdentifier is not a whole number of bytes".into(),
        )),
    }
}

/// Decodes the character-string types a certificate name may use.
///
/// TeletexString is read as ISO 8859-1, which is what certificate tools that write it
/// put in it; BMPString is UTF-16BE and UniversalString is UTF-32BE.
fn decode_string(oid: &str, value: &Any<'_>) -> Result<String> {
    let bytes: &[u8] = value.data;
    let not_text = || Error::Certificate(format!("name attribute {oid} is not valid text"));
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => String::from_utf8(bytes.to_vec()).map_err(|_| not_text()),
        Tag::TeletexString => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return Err(not_text());
            }
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| not_text())
        }
        Tag::UniversalString => {
            if !bytes.len().is_multiple_of(4) {
                return Err(not_text());
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or_else(not_text)
        }
        other => Err(Error::Certificate(format!(
            "name attribute {oid} has a value of type {other:?}, not a string"
        ))),
    }
}

/// RFC 4514 value escaping, exactly as §1.1 lists it and nothing more: a backslash
/// before `\ " + , ; < >`, before a leading `#` or space and before a trailing space;
/// NUL becomes `\00`. Everything else, non-ASCII included, is written raw.
fn escape(value: &str) -> String {
    let count = value.chars().count();
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\0' => out.push_str("\\00"),
            '\\' | '"' | '+' | ',' | ';' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == count => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    /// DER of one AttributeTypeAndValue.
    fn atv(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut inner = vec![0x06, oid.len() as u8];
        inner.extend_from_slice(oid);
        inner.push(tag);
        inner.push(value.len() as u8);
        inner.extend_from_slice(value);
        let mut out = vec![0x30, inner.len() as u8];
        out.extend(inner);
        out
    }

    /// DER of a Name made of RDNs, each a SET of attributes.
    fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut seq = Vec::new();
        for rdn in rdns {
            let set: Vec<u8> = rdn.concat();
            seq.push(0x31);
            seq.push(set.len() as u8);
            seq.extend(set);
        }
        let mut out = vec![0x30, seq.len() as u8];
        out.extend(seq);
        out
    }

    fn render(der: &[u8]) -> String {
        let (_, parsed) = X509Name::from_der(der).unwrap();
        format_name(&parsed).unwrap()
    }

    #[test]
    fn nul_is_detected_in_decoded_values_only() {
        let with_nul = name(&[vec![atv(CN, 0x0C, b"n\0l")]]);
        let escaped_text = name(&[
            vec![atv(CN, 0x0C, b"\\00")],
            vec![atv(OU, 0x1E, &[0, b'a'])],
        ]);
        assert!(contains_nul(&X509Name::from_der(&with_nul).unwrap().1));
        assert!(!contains_nul(&X509Name::from_der(&escaped_text).unwrap().1));
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const OU: &[u8] = &[0x55, 0x04, 0x0B];
    const O: &[u8] = &[0x55, 0x04, 0x0A];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const EMAIL: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01];
    const UNIQUE_ID: &[u8] = &[0x55, 0x04, 0x2D];

    #[test]
    fn attributes_follow_der_order_joined_by_commas() {
        let der = name(&[
            vec![atv(CN, 0x0C, b"tftp")],
            vec![atv(OU, 0x0C, b"Voice")],
            vec![atv(O, 0x0C, b"Example")],
            vec![atv(C, 0x13, b"NZ")],
        ]);
        assert_eq!(render(&der), "CN=tftp,OU=Voice,O=Example,C=NZ");
    }

    #[test]
    fn multi_valued_rdns_become_separate_items_and_unknown_oids_are_dotted() {
        let der = name(&[
            vec![atv(CN, 0x0C, b"a"), atv(EMAIL, 0x16, b"x@y.z")],
            vec![atv(C, 0x13, b"NZ")],
        ]);
        assert_eq!(render(&der), "CN=a,1.2.840.113549.1.9.1=x@y.z,C=NZ");
    }

    #[test]
    fn escaping_is_exactly_the_listed_rfc4514_rules() {
        let der = name(&[
            vec![atv(CN, 0x0C, b"#a,b+c\"d\\e;f<g>h=i ")],
            vec![atv(OU, 0x0C, b" lead")],
            vec![atv(O, 0x0C, "Zürich\u{7}".as_bytes())],
            vec![atv(C, 0x0C, b"")],
            vec![atv(CN, 0x0C, b"n\0l")],
            vec![atv(CN, 0x0C, b"mid#dle sp")],
        ]);
        assert_eq!(
            render(&der),
            "CN=\\#a\\,b\\+c\\\"d\\\\e\\;f\\<g\\>h=i\\ ,OU=\\ lead,O=Zürich\u{7},C=,CN=n\\00l,CN=mid#dle sp"
        );
    }

    #[test]
    fn other_string_types_are_decoded() {
        let der = name(&[
            vec![atv(CN, 0x1E, &[0x00, b'b', 0x00, 0xE9])],
            vec![atv(OU, 0x14, &[b'x', 0xE9])],
            vec![atv(O, 0x1C, &[0, 0, 0, b'u'])],
        ]);
        assert_eq!(render(&der), "CN=bé,OU=xé,O=u");
    }

    #[test]
    fn unique_identifier_is_hex_of_its_bits() {
        let der = name(&[vec![atv(UNIQUE_ID, 0x03, &[0x00, 0xAB, 0x01])]]);
        assert_eq!(render(&der), "2.5.4.45=#ab01");
    }

    #[test]
    fn non_string_values_are_refused() {
        let der = name(&[vec![atv(CN, 0x02, &[0x01])]]);
        let (_, parsed) = X509Name::from_der(&der).unwrap();
        assert!(format_name(&parsed).is_err());
    }
}
