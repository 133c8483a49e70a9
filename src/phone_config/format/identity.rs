//! What the files say about a certificate: its name strings, serial, key and own
//! signature, all derived from the DER in one place so that headers and trust-list
//! records for the same certificate cannot disagree.

use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::dn::{contains_nul, format_name};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// The public key of a certificate in the form ITL record tag 7 carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyBits {
    /// RSA: the PKCS#1 `RSAPublicKey` DER, plus the modulus and exponent magnitudes.
    Rsa {
        pkcs1: Vec<u8>,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// EC: the uncompressed point `04 ‖ X ‖ Y`.
    Ec { point: Vec<u8> },
}

impl KeyBits {
    /// The bytes record tag 7 holds.
    pub fn record_value(&self) -> &[u8] {
        match self {
            KeyBits::Rsa { pkcs1, .. } => pkcs1,
            KeyBits::Ec { point } => point,
        }
    }

    /// RSA modulus size in bits, or `None` for EC.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            KeyBits::Rsa { modulus, .. } => Some(bit_length(modulus)),
            KeyBits::Ec { .. } => None,
        }
    }
}

/// A certificate as the file formats describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// Subject, formatted by [`format_name`] (tag 4, record tag 3).
    pub subject: String,
    /// Issuer, formatted by [`format_name`] (tag 6, record tag 5).
    pub issuer: String,
    /// The serial's shortest unsigned big-endian magnitude (tag 5, record tag 6).
    pub serial: Vec<u8>,
    /// The subject public key (record tag 7).
    pub key: KeyBits,
    /// The certificate's own signatureValue bits (record tag 8).
    pub signature: Vec<u8>,
}

impl CertIdentity {
    /// Derives the identity, refusing what no phone could be given (E9): a serial that
    /// is zero or negative, and names holding a NUL, which every reader would cut short.
    pub fn from_der(der: &[u8]) -> Result<CertIdentity> {
        let cert = parse_certificate(der)?;
        let serial = serial_magnitude(cert.tbs_certificate.raw_serial())?;
        for (what, name) in [("subject", cert.subject()), ("issuer", cert.issuer())] {
            if contains_nul(name) {
                return Err(Error::Certificate(format!(
                    "{what} name contains an embedded NUL"
                )));
            }
        }
        let subject = format_name(cert.subject())?;
        let issuer = format_name(cert.issuer())?;
        for (what, name) in [("subject", &subject), ("issuer", &issuer)] {
            if !name.is_ascii() {
                tracing::warn!(
                    name = %name,
                    "certificate {what} name is not ASCII; how phones handle it is unknown"
                );
            }
        }
        let spki = cert.public_key();
        let key = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyBits::Rsa {
                pkcs1: spki.subject_public_key.data.to_vec(),
                modulus: strip_zeros(rsa.modulus).to_vec(),
                exponent: strip_zeros(rsa.exponent).to_vec(),
            },
            Ok(PublicKey::EC(point)) if point.data().first() == Some(&0x04) => KeyBits::Ec {
                point: point.data().to_vec(),
            },
            Ok(PublicKey::EC(_)) => {
                return Err(Error::Certificate(
                    "EC public key is not an uncompressed point".into(),
                ))
            }
            _ => {
                return Err(Error::Certificate(
                    "public key is neither RSA nor EC".into(),
                ))
            }
        };
        Ok(CertIdentity {
            subject,
            issuer,
            serial,
            key,
            signature: cert.signature_value.data.to_vec(),
        })
    }
}

/// Parses a whole DER certificate; trailing bytes are an error.
pub fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::Certificate(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(Error::Certificate(format!("not a DER certificate: {e}"))),
    }
}

/// [`parse_certificate`] without looking inside the extensions: for the paths that
/// read only the key or the names, and run for every configuration request (the
/// extensions are most of what a full parse costs).
pub fn parse_certificate_shallow(der: &[u8]) -> Result<X509Certificate<'_>> {
    use x509_parser::certificate::X509CertificateParser;
    use x509_parser::nom::Parser as _;
    match X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der)
    {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::Certificate(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(Error::Certificate(format!("not a DER certificate: {e}"))),
    }
}

/// The serial as the format writes it: no DER sign byte, no leading zeros.
fn serial_magnitude(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(Error::Certificate("serial number is negative".into()));
    }
    let magnitude = strip_zeros(raw);
    if magnitude.is_empty() {
        return Err(Error::Certificate("serial number is zero".into()));
    }
    Ok(magnitude.to_vec())
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Bit length of a big-endian magnitude without leading zero bytes.
pub(crate) fn bit_length(magnitude: &[u8]) -> usize {
    match magnitude.first() {
        Some(&top) => magnitude.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_lose_sign_bytes_and_reject_non_positive_values() {
        assert_eq!(
            serial_magnitude(&[0x00, 0x83, 0x01]).unwrap(),
            vec![0x83, 0x01]
        );
        assert_eq!(serial_magnitude(&[0x01]).unwrap(), vec![0x01]);
        assert!(serial_magnitude(&[0x00]).is_err());
        assert!(serial_magnitude(&[0xFF, 0x01]).is_err());
        assert!(serial_magnitude(&[]).is_err());
    }

    #[test]
    fn a_shallow_parse_reads_the_same_key_and_is_as_strict_about_the_encoding() {
        let pki = crate::phone_config::testpki::pki();
        let der = &pki.phone.der;
        let full = parse_certificate(der).unwrap();
        let shallow = parse_certificate_shallow(der).unwrap();
        assert_eq!(shallow.public_key().raw, full.public_key().raw);
        assert_eq!(shallow.subject().to_string(), full.subject().to_string());

        let mut trailing = der.clone();
        trailing.push(0);
        assert!(parse_certificate_shallow(&trailing).is_err());
        assert!(parse_certificate_shallow(der.get(..der.len() - 1).unwrap()).is_err());
    }

    #[test]
    fn bit_length_counts_from_the_top_set_bit() {
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0]), 9);
        assert_eq!(bit_length(&[]), 0);
    }
}
