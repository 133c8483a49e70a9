//! The CERTIFICATE element value (capf-protocol.md §4.2): inner records of
//! `0x01` · u16 BE (DER length + 2) · `0x00` · certificate type · DER.
//!
//! Clients disagree on how they read it: some skip five bytes and parse the rest as
//! one DER certificate, one parses the inner record as a TLV. Encoding therefore
//! satisfies both (outer length D + 5, inner length D + 2), and decoding accepts only
//! values on which both readings agree.

use super::codec::Reader;
use super::element::tag;
use super::wire::{CertificateType, ProtocolError, WrappedCertificate};

const INNER_RECORD_TAG: u8 = 0x01;
/// The `0x00` and the certificate type byte in front of the DER.
const RECORD_PREFIX_LEN: usize = 2;

fn malformed(why: &'static str) -> ProtocolError {
    ProtocolError::Malformed(tag::CERTIFICATE, why)
}

impl WrappedCertificate {
    /// Decodes a CERTIFICATE value. Every inner record must be well-formed; the first
    /// one is returned. (Whether a client ever sends several, e.g. LSC and MIC, is
    /// unknown; the first is the one every known client sends.)
    pub(crate) fn decode_value(value: &[u8]) -> Result<WrappedCertificate, ProtocolError> {
        let mut reader = Reader::new(value);
        let mut first = None;
        while !reader.is_empty() {
            if reader.u8() != Some(INNER_RECORD_TAG) {
                return Err(malformed("inner record tag is not 1"));
            }
            let len = reader
                .u16()
                .ok_or(malformed("inner record header is truncated"))?;
            let record = reader
                .take(usize::from(len))
                .ok_or(malformed("inner record overruns the element"))?;
            let certificate = decode_record(record)?;
            first.get_or_insert(certificate);
        }
        first.ok_or(malformed("no inner record"))
    }

    /// Encodes one inner record: outer length D + 5, inner length D + 2.
    pub(crate) fn encode_value(&self) -> Result<Vec<u8>, ProtocolError> {
        let inner_len = RECORD_PREFIX_LEN + self.der.len();
        let encoded_inner_len = u16::try_from(inner_len)
            .map_err(|_| ProtocolError::TooLongToEncode(3 + 3 + inner_len))?;
        let mut value = Vec::with_capacity(3 + inner_len);
        value.push(INNER_RECORD_TAG);
        value.extend_from_slice(&encoded_inner_len.to_be_bytes());
        value.push(0x00);
        value.push(self.cert_type.to_u8());
        value.extend_from_slice(&self.der);
        Ok(value)
    }
}

fn decode_record(record: &[u8]) -> Result<WrappedCertificate, ProtocolError> {
    let mut reader = Reader::new(record);
    let (Some(reserved), Some(cert_type)) = (reader.u8(), reader.u8()) else {
        return Err(malformed("inner record is shorter than its prefix"));
    };
    if reserved != 0x00 {
        return Err(malformed("inner record prefix does not start with 0"));
    }
    let der = reader.rest();
    check_one_der_sequence(der)?;
    Ok(WrappedCertificate {
        cert_type: CertificateType::from_u8(cert_type),
        der: der.to_vec(),
    })
}

/// Checks that `der` is exactly one DER SEQUENCE: tag 0x30, a definite minimal length,
/// and content that ends where `der` ends. (The certificate inside is parsed by
/// whoever uses it; this check pins down where it ends, which is what the wrapper
/// lengths must agree with.)
fn check_one_der_sequence(der: &[u8]) -> Result<(), ProtocolError> {
    let mut reader = Reader::new(der);
    if reader.u8() != Some(0x30) {
        return Err(malformed("certificate is not a DER SEQUENCE"));
    }
    let content_len = match reader.u8() {
        None => return Err(malformed("DER length is missing")),
        Some(short) if short < 0x80 => usize::from(short),
        Some(0x80) => return Err(malformed("DER indefinite length")),
        Some(long) => {
            let count = usize::from(long & 0x7F);
            if count > 4 {
                return Err(malformed("DER length is too long"));
            }
            let bytes = reader
                .take(count)
                .ok_or(malformed("DER length is truncated"))?;
            let len = bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b));
            if bytes.first() == Some(&0) || len < 0x80 {
                return Err(malformed("DER length is not minimal"));
            }
            len
        }
    };
    match reader.remaining().cmp(&content_len) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(malformed("DER certificate is truncated")),
        std::cmp::Ordering::Greater => Err(malformed("bytes after the DER certificate")),
    }
}

#[cfg(test)]
mod tests;
