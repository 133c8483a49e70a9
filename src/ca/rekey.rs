//! Certificates for keys rcgen cannot encode (P-521 on the ring backend).
//!
//! rcgen writes the subject key's AlgorithmIdentifier itself and only knows the curves its
//! crypto backend signs with; ring has no P-521. The LSC profile does not depend on the
//! subject key at all, so capf lets rcgen build the certificate around a placeholder key,
//! then swaps the phone's SubjectPublicKeyInfo into the TBSCertificate and signs that
//! again with the CAPF key. The result is checked like every LSC (issuer and key bytes).

use super::CaError;
use rcgen::SigningKey;

/// A valid P-256 SubjectPublicKeyInfo (the curve's base point): only ever a placeholder
/// that is replaced before signing.
pub const PLACEHOLDER_SPKI: [u8; 91] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A,
    0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0x6B, 0x17, 0xD1, 0xF2, 0xE1,
    0x2C, 0x42, 0x47, 0xF8, 0xBC, 0xE6, 0xE5, 0x63, 0xA4, 0x40, 0xF2, 0x77, 0x03, 0x7D, 0x81, 0x2D,
    0xEB, 0x33, 0xA0, 0xF4, 0xA1, 0x39, 0x45, 0xD8, 0x98, 0xC2, 0x96, 0x4F, 0xE3, 0x42, 0xE2, 0xFE,
    0x1A, 0x7F, 0x9B, 0x8E, 0xE7, 0xEB, 0x4A, 0x7C, 0x0F, 0x9E, 0x16, 0x2B, 0xCE, 0x33, 0x57, 0x6B,
    0x31, 0x5E, 0xCE, 0xCB, 0xB6, 0x40, 0x68, 0x37, 0xBF, 0x51, 0xF5,
];

/// Position of subjectPublicKeyInfo among the TBSCertificate fields (after version,
/// serialNumber, signature, issuer, validity, subject).
const SPKI_INDEX: usize = 6;

/// Re-signs `template` (a certificate rcgen issued for `PLACEHOLDER_SPKI`) with
/// `spki_der` as its subject key.
pub fn with_subject_key(
    template: &[u8],
    spki_der: &[u8],
    key: &impl SigningKey,
) -> Result<Vec<u8>, CaError> {
    let bad = |what: &str| CaError::Certificate(format!("re-keying the LSC template: {what}"));
    let cert = children(sequence_content(template).ok_or_else(|| bad("certificate"))?)
        .ok_or_else(|| bad("certificate fields"))?;
    let [tbs, signature_algorithm, _signature] = cert.as_slice() else {
        return Err(bad("certificate has other than three fields"));
    };
    let mut fields = children(sequence_content(tbs).ok_or_else(|| bad("TBSCertificate"))?)
        .ok_or_else(|| bad("TBSCertificate fields"))?;
    if fields.get(SPKI_INDEX) != Some(&&PLACEHOLDER_SPKI[..]) {
        return Err(bad("placeholder key not where expected"));
    }
    fields[SPKI_INDEX] = spki_der;
    let tbs = wrap(0x30, &fields.concat());
    let signature = key
        .sign(&tbs)
        .map_err(|e| CaError::Certificate(format!("signing the LSC: {e}")))?;
    let bit_string = wrap(0x03, &[&[0u8][..], &signature].concat());
    Ok(wrap(
        0x30,
        &[&tbs[..], signature_algorithm, &bit_string].concat(),
    ))
}

/// The content of a DER SEQUENCE that is exactly `der`.
fn sequence_content(der: &[u8]) -> Option<&[u8]> {
    let (tag, header, len) = header(der)?;
    (tag == 0x30 && header + len == der.len()).then(|| &der[header..])
}

/// Splits DER content into its complete TLVs.
fn children(mut content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (_, header, len) = header(content)?;
        let (tlv, rest) = content.split_at_checked(header.checked_add(len)?)?;
        out.push(tlv);
        content = rest;
    }
    Some(out)
}

/// Tag, header length and content length of the TLV at the start of `der`.
fn header(der: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, usize::from(first)));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 4 {
        return None;
    }
    let bytes = der.get(2..2 + n)?;
    let len = bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((tag, 2 + n, len))
}

fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}
