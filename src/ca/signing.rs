//! RSA private-key operations on OpenSSL, for the two signatures every enrollment
//! costs: the TLS handshake's (through rustls) and the LSC's (through rcgen).
//!
//! Why not ring, which does everything else here: on this project's hardware
//! OpenSSL's RSA-2048 signature takes about 60 % of ring's time (OpenSSL 3 has an
//! AVX-512 IFMA implementation; ring's fastest path is the older MULX one), and the
//! capacity limit administrators are promised is stated in OpenSSL's own figure
//! (`openssl speed rsa2048`). OpenSSL blinds RSA private-key operations. EC keys stay
//! on ring, which is fast for them.

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};
use rustls::crypto::KeyProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::fmt;
use std::sync::Arc;

/// An RSA private key held by OpenSSL.
#[derive(Clone)]
pub struct RsaKey(PKey<Private>);

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaKey({} bits)", self.0.bits())
    }
}

/// How a signature is padded and hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaPadding {
    Pkcs1,
    /// RSASSA-PSS with MGF1 over the same hash and a salt as long as the hash (what
    /// TLS 1.3 requires).
    Pss,
}

impl RsaKey {
    /// The key in `der` (PKCS#8 or PKCS#1) if it is an RSA key; `None` for any other
    /// kind of key or for bytes OpenSSL cannot read.
    pub fn from_der(der: &[u8]) -> Option<RsaKey> {
        let key = PKey::private_key_from_der(der)
            .or_else(|_| openssl::rsa::Rsa::private_key_from_der(der).and_then(PKey::from_rsa))
            .ok()?;
        RsaKey::from_pkey(key)
    }

    /// `key` if it is an RSA key whose primes match its modulus (a key that fails
    /// this would sign garbage).
    pub fn from_pkey(key: PKey<Private>) -> Option<RsaKey> {
        let rsa = key.rsa().ok()?;
        rsa.check_key().ok()?.then_some(RsaKey(key))
    }

    pub fn sign(
        &self,
        digest: MessageDigest,
        padding: RsaPadding,
        message: &[u8],
    ) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut signer = Signer::new(digest, &self.0)?;
        if padding == RsaPadding::Pss {
            signer.set_rsa_padding(Padding::PKCS1_PSS)?;
            signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            signer.set_rsa_mgf1_md(digest)?;
        }
        signer.update(message)?;
        signer.sign_to_vec()
    }
}

// -- rustls ---------------------------------------------------------------------------

/// ring's provider, except that RSA server keys sign on OpenSSL.
pub fn tls_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::CryptoProvider {
        key_provider: &OpenSslRsaKeys,
        ..rustls::crypto::ring::default_provider()
    }
}

/// Loads RSA keys for OpenSSL and hands every other key to ring.
#[derive(Debug)]
struct OpenSslRsaKeys;

impl KeyProvider for OpenSslRsaKeys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        match RsaKey::from_der(key_der.secret_der()) {
            Some(key) => Ok(Arc::new(TlsRsaKey(key))),
            None => rustls::crypto::ring::default_provider()
                .key_provider
                .load_private_key(key_der),
        }
    }
}

#[derive(Debug)]
struct TlsRsaKey(RsaKey);

/// Strongest first, as ring orders them; rustls offers only PSS under TLS 1.3.
const TLS_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

fn scheme_parts(scheme: SignatureScheme) -> Option<(MessageDigest, RsaPadding)> {
    Some(match scheme {
        SignatureScheme::RSA_PSS_SHA512 => (MessageDigest::sha512(), RsaPadding::Pss),
        SignatureScheme::RSA_PSS_SHA384 => (MessageDigest::sha384(), RsaPadding::Pss),
        SignatureScheme::RSA_PSS_SHA256 => (MessageDigest::sha256(), RsaPadding::Pss),
        SignatureScheme::RSA_PKCS1_SHA512 => (MessageDigest::sha512(), RsaPadding::Pkcs1),
        SignatureScheme::RSA_PKCS1_SHA384 => (MessageDigest::sha384(), RsaPadding::Pkcs1),
        SignatureScheme::RSA_PKCS1_SHA256 => (MessageDigest::sha256(), RsaPadding::Pkcs1),
        _ => return None,
    })
}

impl rustls::sign::SigningKey for TlsRsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let scheme = TLS_SCHEMES.into_iter().find(|s| offered.contains(s))?;
        Some(Box::new(TlsRsaSigner {
            key: self.0.clone(),
            scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct TlsRsaSigner {
    key: RsaKey,
    scheme: SignatureScheme,
}

impl rustls::sign::Signer for TlsRsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let (digest, padding) = scheme_parts(self.scheme)
            .ok_or_else(|| rustls::Error::General("unsupported signature scheme".into()))?;
        self.key
            .sign(digest, padding, message)
            .map_err(|e| rustls::Error::General(format!("RSA signing failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

// -- rcgen ----------------------------------------------------------------------------

/// A certificate-signing key for rcgen: rcgen's own key pair describes the public half
/// and signs with EC keys; RSA signatures (PKCS#1 v1.5, rcgen's RSA algorithms) are
/// made by OpenSSL.
pub struct CertSigningKey {
    public: rcgen::KeyPair,
    rsa: Option<RsaKey>,
}

impl CertSigningKey {
    pub fn new(key_pair: rcgen::KeyPair, pkcs8_der: &[u8]) -> CertSigningKey {
        let rsa = key_pair
            .is_compatible(&rcgen::PKCS_RSA_SHA256)
            .then(|| RsaKey::from_der(pkcs8_der))
            .flatten();
        CertSigningKey {
            public: key_pair,
            rsa,
        }
    }
}

impl rcgen::PublicKeyData for CertSigningKey {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.public.algorithm()
    }
}

impl rcgen::SigningKey for CertSigningKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let alg = self.public.algorithm();
        let digest = if alg == &rcgen::PKCS_RSA_SHA256 {
            Some(MessageDigest::sha256())
        } else if alg == &rcgen::PKCS_RSA_SHA384 {
            Some(MessageDigest::sha384())
        } else if alg == &rcgen::PKCS_RSA_SHA512 {
            Some(MessageDigest::sha512())
        } else {
            None
        };
        match (&self.rsa, digest) {
            (Some(key), Some(digest)) => key
                .sign(digest, RsaPadding::Pkcs1, msg)
                .map_err(|_| rcgen::Error::RemoteKeyError),
            _ => self.public.sign(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{self, UnparsedPublicKey};

    fn rsa_pkcs8() -> Vec<u8> {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        PKey::from_rsa(rsa).unwrap().private_key_to_pkcs8().unwrap()
    }

    fn public_key(pkcs8: &[u8]) -> Vec<u8> {
        let pair = ring::rsa::KeyPair::from_pkcs8(pkcs8).unwrap();
        use ring::signature::KeyPair as _;
        pair.public_key().as_ref().to_vec()
    }

    #[test]
    fn every_tls_scheme_verifies_with_ring() {
        let der = rsa_pkcs8();
        let key = OpenSslRsaKeys
            .load_private_key(PrivateKeyDer::Pkcs8(der.clone().into()))
            .unwrap();
        let public = public_key(&der);
        let verifiers: [(SignatureScheme, &dyn signature::VerificationAlgorithm); 6] = [
            (
                SignatureScheme::RSA_PSS_SHA512,
                &signature::RSA_PSS_2048_8192_SHA512,
            ),
            (
                SignatureScheme::RSA_PSS_SHA384,
                &signature::RSA_PSS_2048_8192_SHA384,
            ),
            (
                SignatureScheme::RSA_PSS_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA512,
                &signature::RSA_PKCS1_2048_8192_SHA512,
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA384,
                &signature::RSA_PKCS1_2048_8192_SHA384,
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        ];
        for (scheme, verifier) in verifiers {
            let signer = key.choose_scheme(&[scheme]).expect("scheme offered");
            assert_eq!(signer.scheme(), scheme);
            let sig = signer.sign(b"handshake transcript").unwrap();
            UnparsedPublicKey::new(verifier, &public)
                .verify(b"handshake transcript", &sig)
                .unwrap_or_else(|_| panic!("{scheme:?} does not verify"));
            assert!(UnparsedPublicKey::new(verifier, &public)
                .verify(b"handshake transcripT", &sig)
                .is_err());
        }
        assert!(key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .is_none());
    }

    #[test]
    fn ec_keys_are_left_to_ring() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = OpenSslRsaKeys
            .load_private_key(PrivateKeyDer::Pkcs8(ec.serialize_der().into()))
            .unwrap();
        assert_eq!(key.algorithm(), SignatureAlgorithm::ECDSA);
        assert!(RsaKey::from_der(&ec.serialize_der()).is_none());
    }

    #[test]
    fn certificates_are_signed_by_openssl_and_verify() {
        use rcgen::{PublicKeyData, SigningKey};
        let der = rsa_pkcs8();
        let pair = rcgen::KeyPair::try_from(der.as_slice()).unwrap();
        let key = CertSigningKey::new(pair, &der);
        assert!(key.rsa.is_some());
        let sig = key.sign(b"tbsCertificate").unwrap();
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key.der_bytes())
            .verify(b"tbsCertificate", &sig)
            .unwrap();
    }
}
