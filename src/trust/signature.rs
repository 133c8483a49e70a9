//! Public keys and signature checks, for X.509 chains and for CAPF proofs.
//!
//! RSA goes through the `rsa` crate rather than ring because ring refuses moduli under
//! 2048 bits, and old MICs and LSCs have 1024-bit keys; the Cisco Root CA 2048 has e = 3,
//! which the `rsa` crate accepts. ECDSA goes through the RustCrypto curve crates, which
//! (unlike ring) also cover P-521.

use p256::pkcs8::DecodePublicKey;
use rsa::signature::hazmat::PrehashVerifier;
use rsa::Pkcs1v15Sign;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::TrustError;

/// The digests capf meets in certificates and proofs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub(crate) fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for part in parts {
                d.update(part);
            }
            d.finalize().to_vec()
        }
        match self {
            HashAlg::Sha1 => run::<Sha1>(parts),
            HashAlg::Sha256 => run::<Sha256>(parts),
            HashAlg::Sha384 => run::<Sha384>(parts),
            HashAlg::Sha512 => run::<Sha512>(parts),
        }
    }

    /// The standard RSASSA-PKCS1-v1_5 scheme, with the DigestInfo prefix for this hash.
    fn pkcs1_with_digest_info(self) -> Pkcs1v15Sign {
        match self {
            HashAlg::Sha1 => Pkcs1v15Sign::new::<Sha1>(),
            HashAlg::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            HashAlg::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            HashAlg::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        }
    }
}

/// A verification key taken from a SubjectPublicKeyInfo.
pub(crate) enum PublicKey {
    Rsa(rsa::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Parses an RSA (1024 to 8192 bits, odd e from 3) or EC P-256/P-384/P-521 key.
    /// Each decoder checks the algorithm and curve OIDs, so at most one succeeds.
    pub(crate) fn from_spki(spki_der: &[u8]) -> Result<PublicKey, TrustError> {
        if let Ok(key) = rsa::PublicKey::from_public_key_der(spki_der) {
            return Ok(PublicKey::Rsa(key));
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der) {
            return Ok(PublicKey::P256(key));
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der) {
            return Ok(PublicKey::P384(key));
        }
        if let Ok(key) = p521::ecdsa::VerifyingKey::from_public_key_der(spki_der) {
            return Ok(PublicKey::P521(key));
        }
        Err(TrustError::UnsupportedKey(
            "not RSA (1024-8192 bits) or EC P-256/P-384/P-521".into(),
        ))
    }

    pub(crate) fn is_rsa(&self) -> bool {
        matches!(self, PublicKey::Rsa(_))
    }

    /// An X.509 signature: standard RSASSA-PKCS1-v1_5 (DigestInfo form) or DER ECDSA.
    pub(crate) fn verify_x509(&self, hash: HashAlg, message: &[u8], signature: &[u8]) -> bool {
        let digest = hash.digest(&[message]);
        match self {
            PublicKey::Rsa(key) => key
                .verify(hash.pkcs1_with_digest_info(), &digest, signature)
                .is_ok(),
            _ => self.verify_ecdsa(&digest, signature),
        }
    }

    /// A CAPF proof (capf-protocol.md §7.5). RSA: the recovered block must equal, in all
    /// k bytes, `00 01 FF.. 00 H` (the clients' bare-digest form) or the standard
    /// DigestInfo form. The `rsa` crate's PKCS#1 v1.5 verifier requires
    /// `len(sig) == k` and `sig < n`, rebuilds the whole block and compares every byte
    /// with constant-time equality, and demands at least 8 FF bytes, so a signature that
    /// only matches in its last hLen bytes (the forgery that suffix-only servers accept
    /// with e = 3) is refused. EC: DER ECDSA over the digest, truncated to the curve
    /// order by the verifier.
    pub(crate) fn verify_proof(&self, hash: HashAlg, message: &[u8], signature: &[u8]) -> bool {
        let digest = hash.digest(&[message]);
        match self {
            PublicKey::Rsa(key) => {
                key.verify(Pkcs1v15Sign::new_unprefixed(), &digest, signature)
                    .is_ok()
                    || key
                        .verify(hash.pkcs1_with_digest_info(), &digest, signature)
                        .is_ok()
            }
            _ => self.verify_ecdsa(&digest, signature),
        }
    }

    fn verify_ecdsa(&self, digest: &[u8], der_signature: &[u8]) -> bool {
        match self {
            PublicKey::Rsa(_) => false,
            PublicKey::P256(key) => p256::ecdsa::DerSignature::try_from(der_signature)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::DerSignature::try_from(der_signature)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
            PublicKey::P521(key) => p521::ecdsa::DerSignature::try_from(der_signature)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
        }
    }
}
