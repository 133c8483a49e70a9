//! Public keys: what a SubjectPublicKeyInfo holds, and whether a phone's freshly
//! generated key is the one it was asked for (capf-protocol.md §11, R15).
//!
//! The protocol has no proof of possession for the new key, so these structural checks
//! are all that stands between a confused or hostile client and a signed certificate.
//! Parsing is strict DER (the `der` crate): anything trailing, non-minimal integers or
//! padding bits in the key BIT STRING are refused.

use crate::model::{EcCurve, KeySpec};
use rsa::pkcs1::RsaPublicKeyRef;
use rsa::pkcs8::der::asn1::ObjectIdentifier;
use rsa::pkcs8::der::Decode;
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Why a public key was refused. The texts end up as the reason of a failed operation
/// ("Upgrade Failed: <reason>"), so they speak to an administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed public key: {0}")]
    Malformed(String),
    #[error("unsupported key algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("unsupported elliptic curve {0}")]
    UnsupportedCurve(String),
    #[error("an {got} key was sent but {expected} was requested")]
    WrongAlgorithm {
        got: &'static str,
        expected: KeySpec,
    },
    #[error("key size {got} does not match the requested {expected}")]
    WrongSize { got: usize, expected: u16 },
    #[error("curve {} does not match the requested {}", .got.name(), .expected.name())]
    WrongCurve { got: EcCurve, expected: EcCurve },
    #[error(
        "RSA public exponent {0} is not acceptable (it must be odd, at least 3 and below 2^32)"
    )]
    BadExponent(String),
    #[error("the EC point is not a valid point on {}", .0.name())]
    InvalidPoint(EcCurve),
}

/// A public key as far as capf cares: its kind and the material to validate it.
enum PublicKey<'a> {
    Rsa {
        modulus: &'a [u8],
        exponent: &'a [u8],
    },
    Ec {
        curve: EcCurve,
        point: &'a [u8],
    },
}

impl PublicKey<'_> {
    fn spec(&self) -> Result<KeySpec, KeyError> {
        match self {
            PublicKey::Rsa { modulus, .. } => {
                let bits = bit_length(modulus);
                let bits = u16::try_from(bits).map_err(|_| {
                    KeyError::Malformed(format!("RSA modulus of {bits} bits is absurdly large"))
                })?;
                Ok(KeySpec::Rsa { bits })
            }
            PublicKey::Ec { curve, .. } => Ok(KeySpec::Ec { curve: *curve }),
        }
    }
}

/// Checks that `spki_der` is a well-formed SubjectPublicKeyInfo holding exactly the
/// kind of key that was requested (R15): an RSA modulus of exactly the requested size
/// with an odd exponent in `3..2^32`, or a valid point on the requested curve.
pub fn check_public_key(spki_der: &[u8], expected: KeySpec) -> Result<(), KeyError> {
    let spki = parse_spki(spki_der)?;
    let key = classify(&spki)?;
    match (&key, expected) {
        (PublicKey::Rsa { modulus, exponent }, KeySpec::Rsa { bits }) => {
            let got = bit_length(modulus);
            if got != usize::from(bits) {
                return Err(KeyError::WrongSize {
                    got,
                    expected: bits,
                });
            }
            if modulus.last().is_none_or(|b| b & 1 == 0) {
                return Err(KeyError::Malformed("the RSA modulus is even".into()));
            }
            check_exponent(exponent)
        }
        (PublicKey::Ec { curve, point }, KeySpec::Ec { curve: wanted }) => {
            if *curve != wanted {
                return Err(KeyError::WrongCurve {
                    got: *curve,
                    expected: wanted,
                });
            }
            check_point(*curve, point)
        }
        (PublicKey::Rsa { .. }, expected @ KeySpec::Ec { .. }) => Err(KeyError::WrongAlgorithm {
            got: "RSA",
            expected,
        }),
        (PublicKey::Ec { .. }, expected @ KeySpec::Rsa { .. }) => Err(KeyError::WrongAlgorithm {
            got: "EC",
            expected,
        }),
    }
}

/// The kind and size of the key in `spki_der`, without judging its quality: used to
/// describe certificates (MICs included) rather than to accept new keys.
pub(crate) fn key_spec(spki_der: &[u8]) -> Result<KeySpec, KeyError> {
    let spki = parse_spki(spki_der)?;
    classify(&spki)?.spec()
}

/// The key itself, whatever its encoding: the RSA modulus and exponent without leading
/// zeros, or the EC curve and its uncompressed point. Two SubjectPublicKeyInfos with
/// the same identity hold the same key, even if one spells it differently (a compressed
/// point, another AlgorithmIdentifier encoding).
pub fn key_identity(spki_der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let spki = parse_spki(spki_der)?;
    let trim = |b: &[u8]| -> Vec<u8> {
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[first..].to_vec()
    };
    match classify(&spki)? {
        PublicKey::Rsa { modulus, exponent } => {
            let mut id = b"rsa:".to_vec();
            id.extend(trim(modulus));
            id.push(b':');
            id.extend(trim(exponent));
            Ok(id)
        }
        PublicKey::Ec { curve, point } => {
            let invalid = |_| KeyError::InvalidPoint(curve);
            let uncompressed = match curve {
                EcCurve::P256 => p256::PublicKey::from_sec1_bytes(point)
                    .map_err(invalid)?
                    .to_sec1_bytes()
                    .to_vec(),
                EcCurve::P384 => p384::PublicKey::from_sec1_bytes(point)
                    .map_err(invalid)?
                    .to_sec1_bytes()
                    .to_vec(),
                EcCurve::P521 => p521::PublicKey::from_sec1_bytes(point)
                    .map_err(invalid)?
                    .to_sec1_bytes()
                    .to_vec(),
            };
            let mut id = format!("ec:{}:", curve.name()).into_bytes();
            id.extend(uncompressed);
            Ok(id)
        }
    }
}

fn parse_spki(spki_der: &[u8]) -> Result<SubjectPublicKeyInfoRef<'_>, KeyError> {
    SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| KeyError::Malformed(e.to_string()))
}

fn classify<'a>(spki: &SubjectPublicKeyInfoRef<'a>) -> Result<PublicKey<'a>, KeyError> {
    let key_bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
        KeyError::Malformed("the key BIT STRING is not a whole number of bytes".into())
    })?;
    let algorithm = &spki.algorithm;
    if algorithm.oid == RSA_ENCRYPTION {
        // RFC 3279 §2.3.1: the parameters are NULL. Refusing the absent form also keeps
        // the SPKI byte-identical once it is re-encoded into a certificate.
        if !algorithm.parameters.is_some_and(|p| p.is_null()) {
            return Err(KeyError::Malformed(
                "rsaEncryption parameters must be NULL".into(),
            ));
        }
        let key = RsaPublicKeyRef::from_der(key_bits)
            .map_err(|e| KeyError::Malformed(format!("RSAPublicKey: {e}")))?;
        Ok(PublicKey::Rsa {
            modulus: key.modulus.as_bytes(),
            exponent: key.public_exponent.as_bytes(),
        })
    } else if algorithm.oid == EC_PUBLIC_KEY {
        let curve_oid = algorithm
            .parameters_oid()
            .map_err(|_| KeyError::Malformed("EC parameters must name a curve".into()))?;
        let curve = match curve_oid {
            SECP256R1 => EcCurve::P256,
            SECP384R1 => EcCurve::P384,
            SECP521R1 => EcCurve::P521,
            other => return Err(KeyError::UnsupportedCurve(other.to_string())),
        };
        Ok(PublicKey::Ec {
            curve,
            point: key_bits,
        })
    } else {
        Err(KeyError::UnsupportedAlgorithm(algorithm.oid.to_string()))
    }
}

/// Number of significant bits of a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    let Some(first) = be.iter().position(|&b| b != 0) else {
        return 0;
    };
    let top = be[first];
    (be.len() - first - 1) * 8 + (8 - top.leading_zeros() as usize)
}

/// An exponent must be odd (an even one has no inverse modulo an even φ(n)), at least 3
/// (1 makes "encryption" the identity), and below 2^32: nothing legitimate uses more,
/// and huge exponents make every verification expensive.
fn check_exponent(exponent: &[u8]) -> Result<(), KeyError> {
    if bit_length(exponent) > 32 {
        return Err(KeyError::BadExponent(format!(
            "0x{}",
            hex::encode(exponent)
        )));
    }
    let value = exponent
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if value < 3 || value % 2 == 0 {
        return Err(KeyError::BadExponent(value.to_string()));
    }
    Ok(())
}

fn check_point(curve: EcCurve, point: &[u8]) -> Result<(), KeyError> {
    let valid = match curve {
        EcCurve::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
        EcCurve::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        EcCurve::P521 => p521::PublicKey::from_sec1_bytes(point).is_ok(),
    };
    if valid {
        Ok(())
    } else {
        Err(KeyError::InvalidPoint(curve))
    }
}
