//! The signing identity: an RSA certificate and its private key.
//!
//! The file formats only know RSASSA-PKCS1-v1_5 (tag 10 = 0) with SHA-1 or SHA-512
//! (tag 8), and only four modulus sizes (tag 11). Everything that would make a signed
//! file unusable is caught when the signer is loaded (E6), so that a broken signer
//! disables the signed outputs at startup instead of producing bad files later.
//!
//! The private key lives in OpenSSL, for every digest and modulus size: one backend,
//! and the one that makes signing cheap enough that an encrypted configuration costs
//! little more than its signature. ring signs neither SHA-1 nor below 2048 bits, and
//! the pure-Rust rsa crate signs about eight times slower than OpenSSL. OpenSSL's RSA
//! private-key operation is blinded and constant-time, so the rsa crate's timing
//! side channel (RUSTSEC-2023-0071, "Marvin") is on no path that uses this key.
//! Verification, which needs no secret, stays with the rsa crate.

use crate::ca::signing::{RsaKey, RsaPadding};
use crate::model::Digest;
use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::identity::{bit_length, CertIdentity, KeyBits};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey};
use rsa::BoxedUint;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::path::Path;

/// An RSA signing identity (the TFTP or SAST certificate and its key).
pub struct Signer {
    certificate: Vec<u8>,
    identity: CertIdentity,
    digest: Digest,
    modulus_index: u8,
    signature_len: usize,
    /// Checked at load: an RSA key (not RSA-PSS) whose public half is the certificate's.
    key: RsaKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.identity.subject)
            .field("digest", &self.digest)
            .field("signature_len", &self.signature_len)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads a PEM certificate (the first one in the file) and a PKCS#8 PEM key.
    pub fn load(cert_pem: &Path, key_pem: &Path, digest: Digest) -> Result<Signer> {
        let certificate = CertificateDer::from_pem_file(cert_pem)
            .map_err(|e| Error::Signer(format!("{}: {e}", cert_pem.display())))?;
        let key = PrivatePkcs8KeyDer::from_pem_file(key_pem).map_err(|e| {
            Error::Signer(format!(
                "{}: not a PKCS#8 private key (BEGIN PRIVATE KEY): {e}",
                key_pem.display()
            ))
        })?;
        Signer::from_der(certificate.to_vec(), key.secret_pkcs8_der(), digest)
    }

    /// Builds a signer from a DER certificate and a PKCS#8 DER key, with the E6 checks:
    /// RSA, a modulus of 512, 1024, 2048 or 4096 bits, no 512-bit key with SHA-512, and
    /// a key that matches the certificate.
    pub fn from_der(certificate: Vec<u8>, pkcs8: &[u8], digest: Digest) -> Result<Signer> {
        let identity = CertIdentity::from_der(&certificate)?;
        let KeyBits::Rsa {
            modulus, exponent, ..
        } = &identity.key
        else {
            return Err(Error::Signer(
                "the certificate key is EC; signed files can only carry RSA signatures".into(),
            ));
        };
        let bits = bit_length(modulus);
        let modulus_index = match bits {
            512 => 0,
            1024 => 1,
            2048 => 2,
            4096 => 3,
            _ => {
                return Err(Error::Signer(format!(
                    "a {bits}-bit RSA key cannot be described by tag 11 (512, 1024, 2048 or 4096)"
                )))
            }
        };
        if bits == 512 && digest == Digest::Sha512 {
            return Err(Error::Signer(
                "a 512-bit key cannot produce a SHA-512 PKCS#1 signature".into(),
            ));
        }
        let key = PKey::private_key_from_pkcs8(pkcs8)
            .map_err(|e| Error::Signer(format!("not a PKCS#8 private key: {e}")))?;
        if key.id() != Id::RSA {
            return Err(Error::Signer(
                "the private key is not an RSA key for PKCS#1 v1.5 signatures".into(),
            ));
        }
        let private = key
            .rsa()
            .map_err(|e| Error::Signer(format!("not an RSA private key: {e}")))?;
        if private.n().to_vec() != **modulus || private.e().to_vec() != **exponent {
            return Err(Error::Signer(
                "the private key does not match the certificate".into(),
            ));
        }
        let key = RsaKey::from_pkey(key).ok_or_else(|| {
            Error::Signer(
                "the private key is inconsistent (its primes do not match its modulus)".into(),
            )
        })?;
        Ok(Signer {
            certificate,
            identity,
            digest,
            modulus_index,
            signature_len: bits / 8,
            key,
        })
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    pub fn identity(&self) -> &CertIdentity {
        &self.identity
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Tag 11: the signature is `64 · 2^index` bytes.
    pub fn modulus_index(&self) -> u8 {
        self.modulus_index
    }

    /// Tag 12's length: the modulus size in bytes.
    pub fn signature_len(&self) -> usize {
        self.signature_len
    }

    /// RSASSA-PKCS1-v1_5 with the DigestInfo prefix, over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: openssl::error::ErrorStack| Error::Signer(format!("signing failed: {e}"));
        let digest = match self.digest {
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Sha512 => MessageDigest::sha512(),
        };
        let signature = self
            .key
            .sign(digest, RsaPadding::Pkcs1, message)
            .map_err(failed)?;
        if signature.len() != self.signature_len {
            return Err(Error::Signer(format!(
                "signature is {} bytes, expected {}",
                signature.len(),
                self.signature_len
            )));
        }
        Ok(signature)
    }
}

/// Verifies an RSASSA-PKCS1-v1_5 signature with the RSA key of a certificate.
///
/// Accepts 512-bit keys, which the format allows for SHA-1, so the size limits are
/// explicit rather than the rsa crate's defaults.
pub fn verify_signature(
    key: &KeyBits,
    digest: Digest,
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    let KeyBits::Rsa {
        modulus, exponent, ..
    } = key
    else {
        return Err(Error::Certificate(
            "the signing certificate's key is not RSA".into(),
        ));
    };
    let public = rsa::PublicKey::new_with_size_limits(
        BoxedUint::from_be_slice_vartime(modulus),
        BoxedUint::from_be_slice_vartime(exponent),
        512..=4096,
    )
    .map_err(|e| Error::Certificate(format!("unusable RSA key: {e}")))?;
    match digest {
        Digest::Sha1 => public.pkcs1v15_verify::<sha1::Sha1>(message, signature),
        Digest::Sha512 => public.pkcs1v15_verify::<sha2::Sha512>(message, signature),
    }
    .map_err(|_| Error::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::pem;
    use crate::phone_config::testpki::{pki, Keyed};

    fn from(keyed: &Keyed, digest: Digest) -> Result<Signer> {
        Signer::from_der(keyed.der.clone(), &keyed.pkcs8, digest)
    }

    #[test]
    fn loads_pem_files_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tftp.pem"), dir.path().join("tftp.key"));
        std::fs::write(&cert, pem("CERTIFICATE", &pki().signer.der)).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", &pki().signer.pkcs8)).unwrap();
        for digest in [Digest::Sha1, Digest::Sha512] {
            let signer = Signer::load(&cert, &key, digest).unwrap();
            assert_eq!(signer.modulus_index(), 2);
            assert_eq!(signer.signature_len(), 256);
            let signature = signer.sign(b"message").unwrap();
            verify_signature(&signer.identity().key, digest, b"message", &signature).unwrap();
            assert!(
                verify_signature(&signer.identity().key, digest, b"messagE", &signature).is_err()
            );
        }
    }

    /// PKCS#1 v1.5 signatures are deterministic, so OpenSSL's must be byte for byte
    /// what an independent implementation (the rsa crate) computes with the same key.
    #[test]
    fn signatures_equal_an_independent_pkcs1_v1_5_implementation() {
        let p = pki();
        for (keyed, digest) in [
            (&p.signer, Digest::Sha1),
            (&p.signer, Digest::Sha512),
            (&p.signer_1024, Digest::Sha1),
            (&p.signer_1024, Digest::Sha512),
            (&p.signer_512, Digest::Sha1),
        ] {
            let signature = from(keyed, digest).unwrap().sign(b"message").unwrap();
            let expected = match digest {
                Digest::Sha1 => keyed.key.pkcs1v15_sign::<sha1::Sha1>(b"message"),
                Digest::Sha512 => keyed.key.pkcs1v15_sign::<sha2::Sha512>(b"message"),
            }
            .unwrap();
            assert_eq!(signature, expected, "{digest:?}");
        }
    }

    #[test]
    fn refuses_missing_files_and_pkcs1_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tftp.pem"), dir.path().join("tftp.key"));
        assert!(Signer::load(&cert, &key, Digest::Sha1).is_err());
        std::fs::write(&cert, pem("CERTIFICATE", &pki().signer.der)).unwrap();
        std::fs::write(&key, pem("RSA PRIVATE KEY", &pki().signer.pkcs8)).unwrap();
        assert!(matches!(
            Signer::load(&cert, &key, Digest::Sha1),
            Err(Error::Signer(_))
        ));
    }

    #[test]
    fn a_512_bit_key_signs_sha1_only() {
        let signer = from(&pki().signer_512, Digest::Sha1).unwrap();
        assert_eq!(signer.modulus_index(), 0);
        let signature = signer.sign(b"m").unwrap();
        assert_eq!(signature.len(), 64);
        verify_signature(&signer.identity().key, Digest::Sha1, b"m", &signature).unwrap();
        assert!(matches!(
            from(&pki().signer_512, Digest::Sha512),
            Err(Error::Signer(_))
        ));
    }

    #[test]
    fn refuses_sizes_tag_11_cannot_express() {
        assert!(matches!(
            from(&pki().signer_1536, Digest::Sha1),
            Err(Error::Signer(_))
        ));
        assert_eq!(
            from(&pki().signer_1024, Digest::Sha1)
                .unwrap()
                .modulus_index(),
            1
        );
    }

    #[test]
    fn refuses_a_key_that_is_not_the_certificates() {
        let p = pki();
        let err = Signer::from_der(p.signer.der.clone(), &p.phone.pkcs8, Digest::Sha1).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    /// An RSA-PSS key can only make PSS signatures, which no phone verifies.
    #[test]
    fn refuses_rsa_pss_keys() {
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new_id(Id::RSA_PSS).unwrap();
        ctx.keygen_init().unwrap();
        ctx.set_rsa_keygen_bits(1024).unwrap();
        let pss = ctx.keygen().unwrap().private_key_to_pkcs8().unwrap();
        let err = Signer::from_der(pki().signer_1024.der.clone(), &pss, Digest::Sha1).unwrap_err();
        assert!(err.to_string().contains("not an RSA key"), "{err}");
    }

    #[test]
    fn refuses_ec_certificates() {
        let p = pki();
        let err = Signer::from_der(p.phone_ec.clone(), &p.phone.pkcs8, Digest::Sha1).unwrap_err();
        assert!(err.to_string().contains("EC"), "{err}");
    }
}
