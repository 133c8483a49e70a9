//! What capf records about a certificate: the DER itself plus the facts operators and
//! the configuration companion look up (hashes, serial, validity, key, names).

use super::keys::key_spec;
use super::CaError;
use crate::model::EnrolledCert;
use md5::Md5;
use sha2::{Digest, Sha256};
use x509_parser::parse_x509_certificate;

/// Describes the DER certificate `der`. The certificate must parse completely, with
/// nothing after it: phones' own parsers refuse trailing bytes, and a record must
/// describe exactly what is stored.
pub fn cert_info(der: &[u8]) -> Result<EnrolledCert, CaError> {
    let (rest, cert) =
        parse_x509_certificate(der).map_err(|e| CaError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::Certificate(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    let public_key = cert.public_key().raw.to_vec();
    let key = key_spec(&public_key).map_err(CaError::UnsupportedKey)?;
    Ok(EnrolledCert {
        der: der.to_vec(),
        md5: hex::encode(Md5::digest(der)),
        sha256: hex::encode(Sha256::digest(der)),
        serial: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        public_key,
    })
}

/// Lowercase hex of the serial's content octets without leading zero bytes (the sign
/// octet DER adds in front of a high bit), so it reads like the number itself.
fn serial_hex(raw: &[u8]) -> String {
    match raw.iter().position(|&b| b != 0) {
        Some(first) => hex::encode(&raw[first..]),
        None => "00".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_strips_sign_octet_only() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x7f, 0x00]), "7f00");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "00");
    }
}
