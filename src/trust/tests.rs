//! Real keys, real X.509 (rcgen), real signatures; no mocks.
//!
//! The test PKI mirrors a MIC hierarchy: an EC P-384 "manufacturing root" signs an
//! RSA-2048 intermediate (ECDSA-SHA384), which signs RSA and EC device certificates
//! (sha256WithRSA). A separate self-signed CAPF certificate issues LSCs.

use std::sync::OnceLock;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SignatureAlgorithm, SubjectPublicKeyInfo, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Pkcs1v15Sign};
use sha1::Sha1;
use sha2::{Digest, Sha512};
use time::OffsetDateTime;

use super::anchors::parse_certificate;
use super::chain::check_issued_by;
use super::*;
use crate::model::CertKind;
use crate::protocol::{
    AuthResponse, CertificateType, HashId, Sha2SignedData, SudiData, WrappedCertificate,
};

/// 2027-01-15, inside every test certificate's validity and every shipped CA's.
const NOW: UnixTime = 1_800_000_000;
const DAY: i64 = 86_400;
const DEVICE: &str = "SEP001122334455";
const STRICT: ChainPolicy = ChainPolicy {
    allow_expired: false,
};
const LENIENT: ChainPolicy = ChainPolicy {
    allow_expired: true,
};

/// RSA keys are slow to generate, so each test binary makes them once.
struct Keys {
    /// Intermediate CA key, RSA-2048, PKCS#8.
    intermediate: Vec<u8>,
    /// Another RSA-2048 CA key, for a CA that copies the intermediate's name.
    impostor: Vec<u8>,
    /// A 1024-bit device key, the size of old MICs.
    rsa_1024: rsa::PrivateKey,
    /// A 2048-bit device key with e = 3, the exponent that makes suffix-only checks forgeable.
    rsa_e3: rsa::PrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = &mut rand::rng();
        let pkcs8 = |key: rsa::PrivateKey| key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        Keys {
            intermediate: pkcs8(rsa::PrivateKey::new(rng, 2048).unwrap()),
            impostor: pkcs8(rsa::PrivateKey::new(rng, 2048).unwrap()),
            rsa_1024: rsa::PrivateKey::new(rng, 1024).unwrap(),
            rsa_e3: rsa::PrivateKey::new_with_exp(rng, 2048, BoxedUint::from(3u64)).unwrap(),
        }
    })
}

fn time(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap()
}

fn params(cn: &str, not_before: UnixTime, not_after: UnixTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::OrganizationName, "Test Manufacturing");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = time(not_before);
    p.not_after = time(not_after);
    p
}

fn ca_params(cn: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut p = params(cn, NOW - 3650 * DAY, NOW + 3650 * DAY);
    p.is_ca = IsCa::Ca(constraint);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = params(cn, NOW - 365 * DAY, NOW + 365 * DAY);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p
}

fn spki_of(key: &rsa::PrivateKey) -> Vec<u8> {
    key.to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Signs a certificate for the key `spki_der` with `issuer`.
fn issue(params: CertificateParams, spki_der: &[u8], issuer: &Issuer<'_, KeyPair>) -> Vec<u8> {
    let spki = SubjectPublicKeyInfo::from_der(spki_der).unwrap();
    params.signed_by(&spki, issuer).unwrap().der().to_vec()
}

fn ec_key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).unwrap()
}

fn intermediate_key() -> KeyPair {
    let der = keys().intermediate.as_slice();
    KeyPair::from_pkcs8_der_and_sign_algo(&der.into(), &PKCS_RSA_SHA256).unwrap()
}

/// Root and intermediate certificates plus an issuer for device certificates.
struct Pki {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        Pki::with(BasicConstraints::Unconstrained, NOW + 3650 * DAY)
    }

    fn with(root_constraint: BasicConstraints, intermediate_not_after: UnixTime) -> Pki {
        let root_key = ec_key(&PKCS_ECDSA_P384_SHA384);
        let root_params = ca_params("Test Root CA", root_constraint);
        let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let root = Issuer::new(root_params, root_key);

        let inter_key = intermediate_key();
        let mut inter_params = ca_params("Test Manufacturing CA", BasicConstraints::Constrained(0));
        inter_params.not_after = time(intermediate_not_after);
        let intermediate_der = inter_params
            .signed_by(&inter_key, &root)
            .unwrap()
            .der()
            .to_vec();
        Pki {
            root_der,
            intermediate_der,
            intermediate: Issuer::new(inter_params, inter_key),
        }
    }

    fn anchors(&self) -> AnchorSet {
        let mut set = AnchorSet::new();
        set.add(AnchorCert::from_der(&self.root_der, "root").unwrap());
        set.add(AnchorCert::from_der(&self.intermediate_der, "intermediate").unwrap());
        set
    }

    /// Writes root and intermediate into `dir/test-chain.pem`, as an operator would.
    fn write_pem(&self, dir: &std::path::Path) {
        let both = crate::ca::certificate_pem(&self.root_der)
            + &crate::ca::certificate_pem(&self.intermediate_der);
        std::fs::write(dir.join("test-chain.pem"), both).unwrap();
    }

    fn mic(&self, cn: &str, spki_der: &[u8]) -> Vec<u8> {
        issue(leaf_params(cn), spki_der, &self.intermediate)
    }
}

/// capf's own CA and the TrustAnchors built around it.
struct Capf {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Capf {
    fn new() -> Capf {
        let key = ec_key(&PKCS_ECDSA_P256_SHA256);
        let mut p = ca_params("CAPF-test", BasicConstraints::Constrained(0));
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "CAPF-test");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        Capf {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    fn lsc(&self, cn: &str, spki_der: &[u8]) -> Vec<u8> {
        issue(leaf_params(cn), spki_der, &self.issuer)
    }
}

fn signature_input(device: &str, cert: &[u8]) -> Vec<u8> {
    [device.as_bytes(), &[0], cert].concat()
}

/// A client's RSA proof: PKCS#1 type-1 padding over the bare digest (§7.5).
fn rsa_bare<D: Digest>(key: &rsa::PrivateKey, input: &[u8]) -> Vec<u8> {
    key.sign(Pkcs1v15Sign::new_unprefixed(), &D::digest(input))
        .unwrap()
}

fn rsa_proofs(key: &rsa::PrivateKey, device: &str, cert: &[u8]) -> (Vec<u8>, Sha2SignedData) {
    let input = signature_input(device, cert);
    (
        rsa_bare::<Sha1>(key, &input),
        Sha2SignedData {
            hash: HashId::Sha512,
            signature: rsa_bare::<Sha512>(key, &input),
        },
    )
}

fn flip_bit(mut sig: Vec<u8>, index: usize) -> Vec<u8> {
    let len = sig.len();
    sig[index % len] ^= 0x01;
    sig
}

// ---------------------------------------------------------------------------
// Possession proofs

#[test]
fn rsa_1024_proofs_over_the_bare_digest_are_accepted() {
    let pki = Pki::new();
    let key = &keys().rsa_1024;
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(key));
    let (sha1, sha2) = rsa_proofs(key, DEVICE, &cert);
    verify_possession(DEVICE, &cert, &sha1, &sha2).unwrap();
}

#[test]
fn ec_proofs_are_accepted_on_each_curve() {
    let capf = Capf::new();
    let p256_key = ec_key(&PKCS_ECDSA_P256_SHA256);
    let cert = capf.lsc(DEVICE, &p256_key.subject_public_key_info());
    let signer = p256::ecdsa::SigningKey::from_pkcs8_der(&p256_key.serialize_der()).unwrap();
    let input = signature_input(DEVICE, &cert);
    let sign = |digest: &[u8]| -> Vec<u8> {
        let sig: p256::ecdsa::Signature = signer.sign_prehash(digest).unwrap();
        sig.to_der().as_bytes().to_vec()
    };
    let sha1 = sign(&Sha1::digest(&input));
    let sha2 = Sha2SignedData {
        hash: HashId::Sha512,
        signature: sign(&Sha512::digest(&input)),
    };
    verify_possession(DEVICE, &cert, &sha1, &sha2).unwrap();

    // A flipped bit in either EC signature is refused.
    let bad = flip_bit(sha1.clone(), sha1.len() - 1);
    assert!(verify_possession(DEVICE, &cert, &bad, &sha2).is_err());
    let bad2 = Sha2SignedData {
        signature: flip_bit(sha2.signature.clone(), sha2.signature.len() - 1),
        ..sha2.clone()
    };
    assert!(verify_possession(DEVICE, &cert, &sha1, &bad2).is_err());

    let p384_key = ec_key(&PKCS_ECDSA_P384_SHA384);
    let cert = capf.lsc(DEVICE, &p384_key.subject_public_key_info());
    let signer = p384::ecdsa::SigningKey::from_pkcs8_der(&p384_key.serialize_der()).unwrap();
    let input = signature_input(DEVICE, &cert);
    let sign = |digest: &[u8]| -> Vec<u8> {
        let sig: p384::ecdsa::Signature = signer.sign_prehash(digest).unwrap();
        sig.to_der().as_bytes().to_vec()
    };
    let sha2 = Sha2SignedData {
        hash: HashId::Sha512,
        signature: sign(&Sha512::digest(&input)),
    };
    verify_possession(DEVICE, &cert, &sign(&Sha1::digest(&input)), &sha2).unwrap();
}

#[test]
fn a_flipped_bit_in_either_rsa_signature_is_refused() {
    let pki = Pki::new();
    let key = &keys().rsa_1024;
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(key));
    let (sha1, sha2) = rsa_proofs(key, DEVICE, &cert);
    for index in [0, 17, sha1.len() - 1] {
        let bad = flip_bit(sha1.clone(), index);
        assert!(matches!(
            verify_possession(DEVICE, &cert, &bad, &sha2),
            Err(TrustError::BadSignature(_))
        ));
        let bad2 = Sha2SignedData {
            signature: flip_bit(sha2.signature.clone(), index),
            ..sha2.clone()
        };
        assert!(matches!(
            verify_possession(DEVICE, &cert, &sha1, &bad2),
            Err(TrustError::BadSignature(_))
        ));
    }
    // Proofs made for another device name do not transfer.
    assert!(verify_possession("SEP001122334456", &cert, &sha1, &sha2).is_err());
}

#[test]
fn the_sha2_proof_must_be_sha512() {
    let pki = Pki::new();
    let key = &keys().rsa_1024;
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(key));
    let (sha1, sha2) = rsa_proofs(key, DEVICE, &cert);
    for hash in [HashId::Sha1, HashId::Sha256, HashId::Unknown(9)] {
        let relabelled = Sha2SignedData {
            hash,
            ..sha2.clone()
        };
        assert!(matches!(
            verify_possession(DEVICE, &cert, &sha1, &relabelled),
            Err(TrustError::UnsupportedHash(_))
        ));
    }
    // A SHA-1 signature in the SHA-2 slot does not pass as SHA-512.
    let sha1_as_sha2 = Sha2SignedData {
        hash: HashId::Sha512,
        signature: sha1.clone(),
    };
    assert!(verify_possession(DEVICE, &cert, &sha1, &sha1_as_sha2).is_err());
}

#[test]
fn missing_elements_are_refused() {
    let capf = Capf::new();
    let key = &keys().rsa_1024;
    let cert = capf.lsc(DEVICE, &spki_of(key));
    let (sha1, sha2) = rsa_proofs(key, DEVICE, &cert);
    let anchors = TrustAnchors::new(&capf.der).unwrap();
    let complete = AuthResponse {
        device_name: Some(DEVICE.into()),
        certificate: Some(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: cert.clone(),
        }),
        signed_data: Some(sha1),
        sha2_signed_data: Some(sha2),
        ..AuthResponse::default()
    };
    let check = |r: &AuthResponse| {
        verify_certificate_auth(r, CertKind::Lsc, 7, &anchors, NOW, &STRICT, false)
    };
    let info = check(&complete).unwrap();
    assert_eq!(info.anchor_source, "CAPF certificate");

    let mut r = complete.clone();
    r.sha2_signed_data = None;
    assert!(matches!(
        check(&r),
        Err(TrustError::Missing("SHA2_SIGNED_DATA"))
    ));
    let mut r = complete.clone();
    r.signed_data = None;
    assert!(matches!(check(&r), Err(TrustError::Missing("SIGNED_DATA"))));
    let mut r = complete.clone();
    r.certificate = None;
    assert!(matches!(check(&r), Err(TrustError::Missing("CERTIFICATE"))));
    let mut r = complete.clone();
    r.device_name = None;
    assert!(matches!(check(&r), Err(TrustError::Missing("DEVICE_NAME"))));
    // Empty signatures are signatures that do not verify.
    let mut r = complete.clone();
    r.signed_data = Some(Vec::new());
    assert!(matches!(check(&r), Err(TrustError::BadSignature(_))));
    // The same LSC presented for another device is not bound to it.
    let mut r = complete.clone();
    r.device_name = Some("SEP001122334456".into());
    assert!(matches!(check(&r), Err(TrustError::NotBound { .. })));
    // An LSC does not pass where a MIC is configured (different anchors).
    assert!(
        verify_certificate_auth(&complete, CertKind::Mic, 7, &anchors, NOW, &STRICT, false)
            .is_err()
    );
}

#[test]
fn digest_info_form_is_accepted_by_full_block_comparison() {
    let pki = Pki::new();
    let key = &keys().rsa_1024;
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(key));
    let input = signature_input(DEVICE, &cert);
    let sha1 = key
        .sign(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(&input))
        .unwrap();
    let sha2 = Sha2SignedData {
        hash: HashId::Sha512,
        signature: key
            .sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(&input))
            .unwrap(),
    };
    verify_possession(DEVICE, &cert, &sha1, &sha2).unwrap();
}

#[test]
fn a_block_with_garbage_before_the_digest_is_refused() {
    // Made with the private key: 00 01 FF.. 00 <garbage> H. The last hLen bytes are the
    // right digest, which is all a suffix-only server compares.
    let pki = Pki::new();
    let key = &keys().rsa_1024;
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(key));
    let input = signature_input(DEVICE, &cert);
    let garbage = Pkcs1v15Sign {
        hash_len: None,
        prefix: vec![0x5a; 19].into_boxed_slice(),
    };
    let sha1 = key.sign(garbage.clone(), &Sha1::digest(&input)).unwrap();
    let sha2 = Sha2SignedData {
        hash: HashId::Sha512,
        signature: key.sign(garbage, &Sha512::digest(&input)).unwrap(),
    };
    let (good_sha1, good_sha2) = rsa_proofs(key, DEVICE, &cert);
    assert!(matches!(
        verify_possession(DEVICE, &cert, &sha1, &good_sha2),
        Err(TrustError::BadSignature("SIGNED_DATA (SHA-1)"))
    ));
    assert!(matches!(
        verify_possession(DEVICE, &cert, &good_sha1, &sha2),
        Err(TrustError::BadSignature("SHA2_SIGNED_DATA (SHA-512)"))
    ));
}

/// Arithmetic modulo 2^(64·limbs) on little-endian u64 limbs, enough for a cube root.
fn mul_mod_pow2(a: &[u64], b: &[u64], limbs: usize) -> Vec<u64> {
    let mut out = vec![0u64; limbs];
    for (i, &x) in a.iter().enumerate().take(limbs) {
        let mut carry = 0u128;
        for (j, &y) in b.iter().enumerate().take(limbs - i) {
            let t = out[i + j] as u128 + (x as u128) * (y as u128) + carry;
            out[i + j] = t as u64;
            carry = t >> 64;
        }
    }
    out
}

fn limbs_from_be(bytes: &[u8], limbs: usize) -> Vec<u64> {
    let mut out = vec![0u64; limbs];
    for (i, byte) in bytes.iter().rev().enumerate() {
        out[i / 8] |= (*byte as u64) << (8 * (i % 8));
    }
    out
}

fn bit(x: &[u64], i: usize) -> bool {
    x[i / 64] >> (i % 64) & 1 == 1
}

/// The e = 3 forgery against suffix-only checks, made WITHOUT the private key: an s
/// with s³ ≡ H (mod 2^(8·hLen)) for odd H, found bit by bit. s < 2^(8·hLen), so
/// s³ < 2^(24·hLen) < n and s³ mod n ends in exactly H.
fn cube_root_forgery(digest: &[u8], k: usize) -> Vec<u8> {
    let bits = digest.len() * 8;
    let limbs = bits.div_ceil(64);
    let target = limbs_from_be(digest, limbs);
    let mut s = vec![0u64; limbs];
    s[0] = 1;
    for i in 1..bits {
        let cube = mul_mod_pow2(&mul_mod_pow2(&s, &s, limbs), &s, limbs);
        if bit(&cube, i) != bit(&target, i) {
            s[i / 64] |= 1 << (i % 64);
        }
    }
    let mut sig = vec![0u8; k];
    for (i, limb) in s.iter().enumerate() {
        for b in 0..8 {
            sig[k - 1 - (i * 8 + b)] = (limb >> (8 * b)) as u8;
        }
    }
    sig
}

/// What the open-source server does: s^e mod n, compare only the last hLen bytes.
fn suffix_only_accepts(sig: &[u8], digest: &[u8]) -> bool {
    // s³ is below n here (see cube_root_forgery), so no reduction is needed.
    let (zeros, sig) = sig.split_at(sig.len() - digest.len());
    assert!(zeros.iter().all(|&b| b == 0));
    let limbs = digest.len() * 3 / 8 + 1;
    let s = limbs_from_be(sig, limbs);
    let cube = mul_mod_pow2(&mul_mod_pow2(&s, &s, limbs), &s, limbs);
    let low = &limbs_from_be(digest, limbs);
    (0..digest.len() * 8).all(|i| bit(&cube, i) == bit(low, i))
}

#[test]
fn the_e3_suffix_forgery_is_refused() {
    let pki = Pki::new();
    let key = &keys().rsa_e3;
    assert_eq!(key.e(), &BoxedUint::from(3u64));
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(key));
    let k = key.size();
    // Pick a device name whose two digests are both odd, as the forgery needs.
    let (device, input) = (0..64u32)
        .map(|n| format!("SEP0011223344{n:02X}"))
        .map(|d| {
            let input = signature_input(&d, &cert);
            (d, input)
        })
        .find(|(_, input)| {
            Sha1::digest(input).last().unwrap() & 1 == 1
                && Sha512::digest(input).last().unwrap() & 1 == 1
        })
        .unwrap();
    let sha1_digest = Sha1::digest(&input);
    let sha512_digest = Sha512::digest(&input);
    let forged_sha1 = cube_root_forgery(&sha1_digest, k);
    let forged_sha2 = Sha2SignedData {
        hash: HashId::Sha512,
        signature: cube_root_forgery(&sha512_digest, k),
    };
    // The forgeries really do fool a suffix-only check...
    assert!(suffix_only_accepts(&forged_sha1, &sha1_digest));
    assert!(suffix_only_accepts(&forged_sha2.signature, &sha512_digest));
    // ...and not this one.
    assert!(verify_possession(&device, &cert, &forged_sha1, &forged_sha2).is_err());
    let (good_sha1, good_sha2) = rsa_proofs(key, &device, &cert);
    verify_possession(&device, &cert, &good_sha1, &good_sha2).unwrap();
    assert!(verify_possession(&device, &cert, &forged_sha1, &good_sha2).is_err());
    assert!(verify_possession(&device, &cert, &good_sha1, &forged_sha2).is_err());
}

// ---------------------------------------------------------------------------
// Chains

#[test]
fn mic_chains_through_the_intermediate_to_the_root() {
    let pki = Pki::new();
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(&keys().rsa_1024));
    let info = verify_chain(&cert, &pki.anchors(), NOW, &STRICT).unwrap();
    assert_eq!(info.path.len(), 3);
    assert_eq!(info.anchor_source, "root");
    assert!(info.anchor_subject.contains("Test Root CA"));

    // An EC device key under the same RSA intermediate.
    let ec = ec_key(&PKCS_ECDSA_P256_SHA256);
    let cert = pki.mic("CP-8841-SEP001122334455", &ec.subject_public_key_info());
    verify_chain(&cert, &pki.anchors(), NOW, &STRICT).unwrap();

    // The intermediate alone is an anchor when its issuer is not in the set.
    let mut only_intermediate = AnchorSet::new();
    only_intermediate.add(AnchorCert::from_der(&pki.intermediate_der, "intermediate").unwrap());
    let info = verify_chain(&cert, &only_intermediate, NOW, &STRICT).unwrap();
    assert_eq!(info.anchor_source, "intermediate");
    // The root alone is not enough: the intermediate is not sent by the phone.
    let mut only_root = AnchorSet::new();
    only_root.add(AnchorCert::from_der(&pki.root_der, "root").unwrap());
    assert!(matches!(
        verify_chain(&cert, &only_root, NOW, &STRICT),
        Err(TrustError::UntrustedIssuer { .. })
    ));
}

#[test]
fn expired_mic_is_refused_unless_allowed() {
    let pki = Pki::new();
    let mut p = leaf_params("CP-7965G-SEP001122334455");
    p.not_after = time(NOW - DAY);
    let cert = issue(p, &spki_of(&keys().rsa_1024), &pki.intermediate);
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &STRICT),
        Err(TrustError::Expired { .. })
    ));
    verify_chain(&cert, &pki.anchors(), NOW, &LENIENT).unwrap();

    // Not yet valid stays refused either way.
    let mut p = leaf_params("CP-7965G-SEP001122334455");
    p.not_before = time(NOW + DAY);
    let cert = issue(p, &spki_of(&keys().rsa_1024), &pki.intermediate);
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &LENIENT),
        Err(TrustError::NotYetValid { .. })
    ));
}

#[test]
fn expired_intermediate_is_refused_unless_allowed() {
    let pki = Pki::with(BasicConstraints::Unconstrained, NOW - DAY);
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(&keys().rsa_1024));
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &STRICT),
        Err(TrustError::Expired { .. })
    ));
    verify_chain(&cert, &pki.anchors(), NOW, &LENIENT).unwrap();
}

#[test]
fn foreign_self_signed_certificate_is_refused() {
    let pki = Pki::new();
    let key = ec_key(&PKCS_ECDSA_P256_SHA256);
    let cert = leaf_params("CP-7965G-SEP001122334455")
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &LENIENT),
        Err(TrustError::UntrustedIssuer { .. })
    ));
    // A CA certificate of the set presented as a device certificate is refused too.
    assert!(matches!(
        verify_chain(&pki.intermediate_der, &pki.anchors(), NOW, &LENIENT),
        Err(TrustError::LeafIsCa { .. })
    ));
}

#[test]
fn impostor_intermediate_with_the_same_name_is_refused() {
    let pki = Pki::new();
    // Same subject and key type as the trusted intermediate, different key.
    let impostor_key =
        KeyPair::from_pkcs8_der_and_sign_algo(&keys().impostor.as_slice().into(), &PKCS_RSA_SHA256)
            .unwrap();
    let impostor = Issuer::new(
        ca_params("Test Manufacturing CA", BasicConstraints::Constrained(0)),
        impostor_key,
    );
    let cert = issue(
        leaf_params("CP-7965G-SEP001122334455"),
        &spki_of(&keys().rsa_1024),
        &impostor,
    );
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &LENIENT),
        Err(TrustError::ChainSignature { .. })
    ));
    // And a leaf under an intermediate the set does not know has no issuer.
    let stranger = Issuer::new(
        ca_params("Other Manufacturing CA", BasicConstraints::Constrained(0)),
        ec_key(&PKCS_ECDSA_P256_SHA256),
    );
    let cert = issue(leaf_params("x"), &spki_of(&keys().rsa_1024), &stranger);
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &LENIENT),
        Err(TrustError::UntrustedIssuer { .. })
    ));
}

#[test]
fn ca_flags_are_enforced() {
    // The root allows no CA below it, but the intermediate is one.
    let pki = Pki::with(BasicConstraints::Constrained(0), NOW + DAY);
    let cert = pki.mic("CP-7965G-SEP001122334455", &spki_of(&keys().rsa_1024));
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &STRICT),
        Err(TrustError::PathLength { .. })
    ));

    // An end-entity certificate cannot issue.
    let pki = Pki::new();
    let mut set = pki.anchors();
    let not_ca_key = ec_key(&PKCS_ECDSA_P256_SHA256);
    let not_ca_params = leaf_params("Not A CA");
    let not_ca_der = not_ca_params
        .self_signed(&not_ca_key)
        .unwrap()
        .der()
        .to_vec();
    set.add(AnchorCert::from_der(&not_ca_der, "not-ca").unwrap());
    let cert = issue(
        leaf_params("CP-7965G-SEP001122334455"),
        &spki_of(&keys().rsa_1024),
        &Issuer::new(not_ca_params, not_ca_key),
    );
    assert!(matches!(
        verify_chain(&cert, &set, NOW, &STRICT),
        Err(TrustError::NotCa { .. })
    ));

    // A device certificate whose key usage excludes signing cannot authenticate.
    let mut p = leaf_params("CP-7965G-SEP001122334455");
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let cert = issue(p, &spki_of(&keys().rsa_1024), &pki.intermediate);
    assert!(matches!(
        verify_chain(&cert, &pki.anchors(), NOW, &STRICT),
        Err(TrustError::KeyUsage { .. })
    ));
}

#[test]
fn lsc_chains_to_capf_only() {
    let capf = Capf::new();
    let pki = Pki::new();
    let anchors = TrustAnchors::new(&capf.der)
        .unwrap()
        .with_shipped_cisco_roots();
    let lsc = capf.lsc(DEVICE, &spki_of(&keys().rsa_1024));
    let info = verify_chain(&lsc, anchors.lsc_issuers(), NOW, &STRICT).unwrap();
    assert_eq!(info.anchor_subject, "CN=CAPF-test");
    assert!(verify_chain(&lsc, anchors.mic_anchors(), NOW, &LENIENT).is_err());
    let mic = pki.mic("CP-7965G-SEP001122334455", &spki_of(&keys().rsa_1024));
    assert!(verify_chain(&mic, anchors.lsc_issuers(), NOW, &LENIENT).is_err());
}

#[test]
fn garbage_is_a_parse_error_not_a_panic() {
    let capf = Capf::new();
    let anchors = TrustAnchors::new(&capf.der).unwrap();
    for bytes in [&b""[..], &[0x30], &[0x30, 0x82, 0xff, 0xff], &[0u8; 64]] {
        assert!(matches!(
            verify_chain(bytes, anchors.lsc_issuers(), NOW, &STRICT),
            Err(TrustError::BadCertificate(_))
        ));
        let sha2 = Sha2SignedData {
            hash: HashId::Sha512,
            signature: vec![1; 128],
        };
        assert!(verify_possession(DEVICE, bytes, &[1; 128], &sha2).is_err());
    }
    let mut trailing = capf.der.clone();
    trailing.push(0);
    assert!(TrustAnchors::new(&trailing).is_err());
}

// ---------------------------------------------------------------------------
// Shipped Cisco certificates and operator files

fn shipped(name: &str) -> Vec<u8> {
    let capf = Capf::new();
    let anchors = TrustAnchors::new(&capf.der)
        .unwrap()
        .with_shipped_cisco_roots();
    anchors
        .mic_anchors()
        .certs()
        .iter()
        .find(|c| c.source() == name)
        .unwrap_or_else(|| panic!("{name} not shipped"))
        .der()
        .to_vec()
}

#[test]
fn shipped_cisco_certificates_load() {
    let capf = Capf::new();
    let anchors = TrustAnchors::new(&capf.der)
        .unwrap()
        .with_shipped_cisco_roots();
    assert_eq!(anchors.mic_anchors().len(), 7);
    assert_eq!(anchors.lsc_issuers().len(), 1);
    let subjects: Vec<&str> = anchors
        .mic_anchors()
        .certs()
        .iter()
        .map(|c| c.subject())
        .collect();
    assert!(subjects.contains(&"O=Cisco Systems, CN=Cisco Root CA 2048"));
    assert!(subjects.contains(&"O=Cisco, CN=Cisco Manufacturing CA SHA2"));
}

#[test]
fn shipped_cisco_chains_verify() {
    // (child, issuer): the chains of certs/cisco/README.md.
    let chains = [
        ("Cisco_Manufacturing_CA.pem", "Cisco_Root_CA_2048.pem"),
        ("ACT2_SUDI_CA.pem", "Cisco_Root_CA_2048.pem"),
        ("Cisco_Manufacturing_CA_SHA2.pem", "Cisco_Root_CA_M2.pem"),
        ("High_Assurance_SUDI_CA.pem", "Cisco_Root_CA_2099.pem"),
        ("Cisco_Root_CA_2048.pem", "Cisco_Root_CA_2048.pem"),
        ("Cisco_Root_CA_M2.pem", "Cisco_Root_CA_M2.pem"),
        ("Cisco_Root_CA_2099.pem", "Cisco_Root_CA_2099.pem"),
    ];
    for (child, issuer) in chains {
        let (child_der, issuer_der) = (shipped(child), shipped(issuer));
        let (child_cert, issuer_cert) = (
            parse_certificate(&child_der).unwrap(),
            parse_certificate(&issuer_der).unwrap(),
        );
        check_issued_by(&child_cert, &issuer_cert, 0, NOW, &STRICT)
            .unwrap_or_else(|e| panic!("{child} <- {issuer}: {e}"));
    }
    // The SHA-1 manufacturing chain ends in May 2029; later it needs allow_expired.
    let (child_der, issuer_der) = (
        shipped("Cisco_Manufacturing_CA.pem"),
        shipped("Cisco_Root_CA_2048.pem"),
    );
    let (child, issuer) = (
        parse_certificate(&child_der).unwrap(),
        parse_certificate(&issuer_der).unwrap(),
    );
    let in_2030 = 1_900_000_000;
    assert!(matches!(
        check_issued_by(&child, &issuer, 0, in_2030, &STRICT),
        Err(TrustError::Expired { .. })
    ));
    check_issued_by(&child, &issuer, 0, in_2030, &LENIENT).unwrap();
    // A CA from another hierarchy does not verify it.
    let m2_der = shipped("Cisco_Root_CA_M2.pem");
    let m2 = parse_certificate(&m2_der).unwrap();
    assert!(check_issued_by(&child, &m2, 0, NOW, &STRICT).is_err());
}

#[test]
fn operator_pem_directory_is_loaded_and_bad_files_are_named() {
    let capf = Capf::new();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    pki.write_pem(dir.path());
    std::fs::write(dir.path().join("notes.txt"), "not a certificate").unwrap();

    let mut anchors = TrustAnchors::new(&capf.der).unwrap();
    assert_eq!(anchors.add_pem_dir(dir.path()).unwrap(), 2);
    let mic = pki.mic("CP-7965G-SEP001122334455", &spki_of(&keys().rsa_1024));
    let info = verify_chain(&mic, anchors.mic_anchors(), NOW, &STRICT).unwrap();
    assert!(info.anchor_source.ends_with("test-chain.pem"));
    // A missing directory adds nothing.
    assert_eq!(anchors.add_pem_dir(&dir.path().join("absent")).unwrap(), 0);

    // A broken file fails the load, names the file, and leaves the anchors unchanged.
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut fresh = TrustAnchors::new(&capf.der).unwrap();
    let err = fresh.add_pem_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("broken.pem"), "{err}");
    assert!(fresh.mic_anchors().is_empty());
    std::fs::write(dir.path().join("broken.pem"), "hello").unwrap();
    let err = fresh.add_pem_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("broken.pem"), "{err}");
}

// ---------------------------------------------------------------------------
// SUDI

fn sudi_for(key: &rsa::PrivateKey, cert: &[u8], session_id: u32) -> SudiData {
    let input = [&session_id.to_le_bytes()[..], cert].concat();
    SudiData {
        certificate: cert.to_vec(),
        sha1_signature: rsa_bare::<Sha1>(key, &input),
        sha2_hash: HashId::Sha512,
        sha2_signature: rsa_bare::<Sha512>(key, &input),
    }
}

#[test]
fn sudi_is_bound_to_the_session_id_little_endian() {
    let capf = Capf::new();
    let key = &keys().rsa_1024;
    // The phone-emulating client sends its LSC as SUDI: the proof alone verifies.
    let lsc = capf.lsc(DEVICE, &spki_of(key));
    let sudi = sudi_for(key, &lsc, 0x0000_0102);
    verify_sudi_proof(0x0000_0102, &sudi).unwrap();
    assert!(matches!(
        verify_sudi_proof(0x0000_0103, &sudi),
        Err(TrustError::BadSignature(_))
    ));
    // Signed over the big-endian id: refused.
    let input_be = [&0x0000_0102u32.to_be_bytes()[..], &lsc].concat();
    let be = SudiData {
        sha1_signature: rsa_bare::<Sha1>(key, &input_be),
        sha2_signature: rsa_bare::<Sha512>(key, &input_be),
        ..sudi.clone()
    };
    assert!(verify_sudi_proof(0x0000_0102, &be).is_err());
    // Hash id other than SHA-512: refused.
    let sha256 = SudiData {
        sha2_hash: HashId::Sha256,
        ..sudi.clone()
    };
    assert!(matches!(
        verify_sudi_proof(0x0000_0102, &sha256),
        Err(TrustError::UnsupportedHash(_))
    ));
}

#[test]
fn a_sudi_must_chain_to_a_sudi_ca_never_to_capf_or_a_mic_root() {
    let capf = Capf::new();
    let key = &keys().rsa_1024;
    let mut anchors = TrustAnchors::new(&capf.der)
        .unwrap()
        .with_shipped_cisco_roots();
    assert_eq!(anchors.sudi_anchors().len(), 2, "ACT2 and High Assurance");
    // An LSC is not a SUDI.
    let lsc = capf.lsc(DEVICE, &spki_of(key));
    assert!(matches!(
        verify_sudi(9, &sudi_for(key, &lsc, 9), &anchors, NOW, &STRICT),
        Err(TrustError::UntrustedIssuer { .. })
    ));
    // A MIC is not a SUDI, even once its CA is a trusted MIC anchor.
    let pki = Pki::new();
    let mic_dir = tempfile::tempdir().unwrap();
    pki.write_pem(mic_dir.path());
    anchors.add_pem_dir(mic_dir.path()).unwrap();
    let cert = pki.mic("SUDI-test", &spki_of(key));
    let sudi = sudi_for(key, &cert, 9);
    assert!(matches!(
        verify_sudi(9, &sudi, &anchors, NOW, &STRICT),
        Err(TrustError::UntrustedIssuer { .. })
    ));
    // The same CA added as a SUDI anchor vouches for it as a SUDI.
    anchors.add_sudi_pem_dir(mic_dir.path()).unwrap();
    verify_sudi(9, &sudi, &anchors, NOW, &STRICT).unwrap();
}

#[test]
fn a_sudi_is_bound_by_mac_or_by_the_mic_serial_number() {
    let key = &keys().rsa_1024;
    let pki = Pki::new();
    let named = pki.mic(&format!("CP-8845-{DEVICE}"), &spki_of(key));
    assert!(sudi_bound_to_device(&named, DEVICE, None));
    let other = pki.mic("CP-8845-SEP0000000000AA", &spki_of(key));
    assert!(!sudi_bound_to_device(&other, DEVICE, None));
    assert!(
        !sudi_bound_to_device(&other, DEVICE, Some(&named)),
        "no serialNumber attribute on either: nothing binds them"
    );
}

#[test]
fn ec_sudi_is_unverifiable() {
    let capf = Capf::new();
    let anchors = TrustAnchors::new(&capf.der).unwrap();
    let ec = ec_key(&PKCS_ECDSA_P256_SHA256);
    let lsc = capf.lsc(DEVICE, &ec.subject_public_key_info());
    let sudi = SudiData {
        certificate: lsc,
        sha1_signature: vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
        sha2_hash: HashId::Sha512,
        sha2_signature: vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
    };
    assert!(matches!(
        verify_sudi(1, &sudi, &anchors, NOW, &STRICT),
        Err(TrustError::Unverifiable(_))
    ));
}

// ---------------------------------------------------------------------------
// Binding

fn cert_named(cn: &str, sans: Vec<SanType>) -> Vec<u8> {
    let capf = Capf::new();
    let key = ec_key(&PKCS_ECDSA_P256_SHA256);
    let mut p = leaf_params(cn);
    p.subject_alt_names = sans;
    issue(p, &key.subject_public_key_info(), &capf.issuer)
}

#[test]
fn lsc_binding_is_exact_cn_equality() {
    let lsc = cert_named(DEVICE, vec![]);
    assert!(bound_to_device(&lsc, DEVICE, CertKind::Lsc));
    assert!(!bound_to_device(&lsc, "SEP001122334456", CertKind::Lsc));
    assert!(!bound_to_device(&lsc, "sep001122334455", CertKind::Lsc));
    assert!(!bound_to_device(&lsc, "SEP00112233445", CertKind::Lsc));
    let longer = cert_named("SEP001122334455X", vec![]);
    assert!(!bound_to_device(&longer, DEVICE, CertKind::Lsc));
    assert!(!bound_to_device(
        b"not a certificate",
        DEVICE,
        CertKind::Lsc
    ));
}

#[test]
fn mic_binding_finds_the_mac_in_the_cn_or_san() {
    let mic = cert_named("CP-7965G-SEP001122334455", vec![]);
    assert!(bound_to_device(&mic, DEVICE, CertKind::Mic));
    assert!(!bound_to_device(&mic, "SEP001122334456", CertKind::Mic));
    // Hex case does not matter.
    let lower = cert_named("CP-7965G-SEP00112233AABB", vec![]);
    assert!(bound_to_device(&lower, "SEP00112233aabb", CertKind::Mic));
    // A MAC inside a longer hex run is another identifier.
    let longer = cert_named("CP-7965G-SEP0011223344556", vec![]);
    assert!(!bound_to_device(&longer, DEVICE, CertKind::Mic));
    let shifted = cert_named("CP-7965G-SEPA001122334455", vec![]);
    assert!(!bound_to_device(&shifted, DEVICE, CertKind::Mic));
    // The name alone, or a SAN, is enough.
    let plain = cert_named(DEVICE, vec![]);
    assert!(bound_to_device(&plain, DEVICE, CertKind::Mic));
    let san = cert_named(
        "Cisco IP Phone",
        vec![SanType::DnsName(
            "SEP001122334455.phones".try_into().unwrap(),
        )],
    );
    assert!(bound_to_device(&san, DEVICE, CertKind::Mic));
    assert!(!bound_to_device(
        &cert_named("Cisco IP Phone", vec![]),
        DEVICE,
        CertKind::Mic
    ));
    // Devices without a SEP name have no MIC binding.
    assert!(!bound_to_device(&plain, "CSFJDOE", CertKind::Mic));
}
