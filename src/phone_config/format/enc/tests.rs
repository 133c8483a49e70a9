use super::*;
use crate::model::Digest;
use crate::phone_config::testpki::{pki, signer, Keyed, SEP_DOC};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rsa::pkcs8::EncodePublicKey;

const NOW: UnixTime = 1_700_000_000;
const NAME: &str = "SEP001122334455.cnf.xml.enc.sgn";

fn spki(phone: &Keyed) -> Vec<u8> {
    phone
        .key
        .to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn encrypt(digest: Digest, phone: &Keyed, plaintext: &[u8]) -> Vec<u8> {
    build(
        &signer(digest),
        NAME,
        plaintext,
        &spki(phone),
        NOW,
        &mut rand::rng(),
    )
    .unwrap()
}

/// Decrypts with RustCrypto directly, following §4 rather than this module.
fn independent_decrypt(file: &[u8], key: &rsa::PrivateKey) -> Vec<u8> {
    let header_length = usize::from(u16::from_be_bytes([file[8], file[9]]));
    let find = |tag: u8, pattern: &[u8]| {
        let at = file[..header_length]
            .windows(pattern.len() + 1)
            .position(|w| w[0] == tag && &w[1..] == pattern)
            .unwrap();
        at + 1 + pattern.len()
    };
    let iv = &file[find(0x13, &[0, 16])..][..16];
    let n = usize::from(file[find(0x14, &[0, 2]) + 1]);
    let wrapped_at = find(0x19, &[1, 0]);
    let aes_key = key
        .decrypt(rsa::Pkcs1v15Encrypt, &file[wrapped_at..wrapped_at + 256])
        .unwrap();
    assert_eq!(aes_key.len(), 16);
    let mut body = file[header_length..].to_vec();
    let plain = Decryptor::new_from_slices(&aes_key, iv)
        .unwrap()
        .decrypt_padded::<NoPadding>(&mut body)
        .unwrap();
    assert!(plain[plain.len() - n..].iter().all(|&b| b == 0x0D));
    plain[..plain.len() - n].to_vec()
}

#[test]
fn section_8_3_layout_and_independent_decryption() {
    let p = pki();
    let file = encrypt(Digest::Sha1, &p.phone, SEP_DOC.as_bytes());
    assert_eq!(file.len(), 1420);
    assert_eq!(&file[0..10], &[1, 0, 2, 2, 0, 2, 0, 2, 2, 0xFC]);
    assert_eq!(&file[385..388], &[14, 0, 0x20]);
    assert_eq!(&file[388..420], b"SEP001122334455.cnf.xml.enc.sgn\0");
    assert_eq!(&file[420..423], &[15, 0, 4]);
    assert_eq!(&file[427..433], &[16, 1, 0x32, 17, 0, 0x1C]);
    assert_eq!(&file[433..440], &[18, 0, 1, 0, 19, 0, 16]);
    assert_eq!(&file[456..461], &[20, 0, 2, 0, 1]);
    assert_eq!(&file[461..464], &[21, 1, 0x10]);
    assert_eq!(
        &file[464..480],
        &[22, 0, 1, 0, 23, 0, 2, 8, 0, 24, 0, 1, 1, 25, 1, 0]
    );
    assert_eq!(&file[736..743], &[26, 0, 1, 1, 27, 0, 20]);
    assert_eq!(
        &file[743..763],
        Digest::Sha1.hash(SEP_DOC.as_bytes()).as_slice()
    );
    assert_eq!(file[763], 0x0D);

    let parsed = sgn::parse(&file, FileKind::EncSgn).unwrap();
    assert_eq!(parsed.header_length, 764);
    assert_eq!(parsed.body.len(), 656);
    sgn::verify(&parsed, &p.signer.der).unwrap();
    assert_eq!(independent_decrypt(&file, &p.phone.key), SEP_DOC.as_bytes());
    assert_eq!(decrypt(&file, &p.phone.key).unwrap(), SEP_DOC.as_bytes());
}

#[test]
fn section_8_3_variants() {
    let p = pki();
    let sha512 = encrypt(Digest::Sha512, &p.phone, SEP_DOC.as_bytes());
    let parsed = sgn::parse(&sha512, FileKind::EncSgn).unwrap();
    assert_eq!(parsed.header_length, 808);
    assert_eq!(
        parsed.encryption.as_ref().unwrap().plaintext_digest.len(),
        64
    );
    sgn::verify(&parsed, &p.signer.der).unwrap();
    assert_eq!(decrypt(&sha512, &p.phone.key).unwrap(), SEP_DOC.as_bytes());

    let small = encrypt(Digest::Sha1, &p.phone_1024, SEP_DOC.as_bytes());
    let parsed = sgn::parse(&small, FileKind::EncSgn).unwrap();
    assert_eq!(parsed.header_length, 636);
    assert_eq!(&small[427..430], &[16, 0, 178]);
    assert_eq!(parsed.encryption.unwrap().key_size_bits, 1024);
    assert_eq!(
        decrypt(&small, &p.phone_1024.key).unwrap(),
        SEP_DOC.as_bytes()
    );
}

#[test]
fn every_build_uses_a_fresh_key_and_iv() {
    let p = pki();
    let a = encrypt(Digest::Sha1, &p.phone, SEP_DOC.as_bytes());
    let b = encrypt(Digest::Sha1, &p.phone, SEP_DOC.as_bytes());
    let (a, b) = (
        sgn::parse(&a, FileKind::EncSgn).unwrap(),
        sgn::parse(&b, FileKind::EncSgn).unwrap(),
    );
    let (ea, eb) = (a.encryption.unwrap(), b.encryption.unwrap());
    assert_ne!(ea.iv, eb.iv);
    assert_ne!(ea.wrapped_key, eb.wrapped_key);
    assert_ne!(a.body, b.body);
    let ka = p
        .phone
        .key
        .decrypt(rsa::Pkcs1v15Encrypt, ea.wrapped_key)
        .unwrap();
    let kb = p
        .phone
        .key
        .decrypt(rsa::Pkcs1v15Encrypt, eb.wrapped_key)
        .unwrap();
    assert_ne!(ka, kb);
}

#[test]
fn the_injected_rng_decides_key_and_iv() {
    let p = pki();
    let s = signer(Digest::Sha1);
    let build_with = |seed| {
        build(
            &s,
            NAME,
            SEP_DOC.as_bytes(),
            &spki(&p.phone),
            NOW,
            &mut StdRng::seed_from_u64(seed),
        )
        .unwrap()
    };
    let key_iv_body = |file: &[u8]| {
        let parsed = sgn::parse(file, FileKind::EncSgn).unwrap();
        let info = parsed.encryption.unwrap();
        let key = p
            .phone
            .key
            .decrypt(rsa::Pkcs1v15Encrypt, info.wrapped_key)
            .unwrap();
        (key, info.iv.to_vec(), parsed.body.to_vec())
    };
    let (a, again, other) = (build_with(7), build_with(7), build_with(8));
    assert_eq!(key_iv_body(&a), key_iv_body(&again));
    let (key, iv, _) = key_iv_body(&a);
    let (other_key, other_iv, _) = key_iv_body(&other);
    assert_ne!(key, other_key);
    assert_ne!(iv, other_iv);
}

#[test]
fn phone_keys_outside_the_wrappable_sizes_are_refused() {
    let small = Rsa::generate(768).unwrap();
    let spki = openssl::pkey::PKey::from_rsa(small)
        .unwrap()
        .public_key_to_der()
        .unwrap();
    let err = build(
        &signer(Digest::Sha1),
        NAME,
        SEP_DOC.as_bytes(),
        &spki,
        NOW,
        &mut rand::rng(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("768-bit"), "{err}");
}

#[test]
fn block_aligned_plaintext_gets_a_whole_block_of_padding() {
    let p = pki();
    let doc = format!("<device>{}</device>\n", " ".repeat(32 - 18));
    assert_eq!(doc.len(), 32);
    let file = encrypt(Digest::Sha1, &p.phone, doc.as_bytes());
    let parsed = sgn::parse(&file, FileKind::EncSgn).unwrap();
    assert_eq!(parsed.encryption.unwrap().pad_count, 16);
    assert_eq!(parsed.body.len(), 48);
    assert_eq!(independent_decrypt(&file, &p.phone.key), doc.as_bytes());
    assert_eq!(decrypt(&file, &p.phone.key).unwrap(), doc.as_bytes());
}

#[test]
fn pad_counts_of_zero_or_over_16_are_rejected() {
    let p = pki();
    let file = encrypt(Digest::Sha1, &p.phone, SEP_DOC.as_bytes());
    for n in [0u16, 17, 0xFFFF] {
        let mut bad = file.clone();
        bad[459..461].copy_from_slice(&n.to_be_bytes());
        assert!(
            matches!(
                decrypt(&bad, &p.phone.key),
                Err(Error::Malformed { offset: 456, .. })
            ),
            "n = {n}"
        );
    }
}

#[test]
fn large_documents_round_trip() {
    let p = pki();
    let doc = format!("<device>{}</device>", "<x>y</x>".repeat(200 * 1024 / 8));
    assert!(doc.len() > 200 * 1024);
    let file = encrypt(Digest::Sha1, &p.phone, doc.as_bytes());
    sgn::verify(&sgn::parse(&file, FileKind::EncSgn).unwrap(), &p.signer.der).unwrap();
    assert_eq!(decrypt(&file, &p.phone.key).unwrap(), doc.as_bytes());
}

#[test]
fn ec_phone_keys_are_refused() {
    let cert = crate::phone_config::format::identity::parse_certificate(&pki().phone_ec).unwrap();
    let err = build(
        &signer(Digest::Sha1),
        NAME,
        b"<device/>",
        cert.public_key().raw,
        NOW,
        &mut rand::rng(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::EcPhoneKey));
}

#[test]
fn the_wrong_phone_key_or_a_tampered_body_does_not_decrypt() {
    let p = pki();
    let file = encrypt(Digest::Sha1, &p.phone, SEP_DOC.as_bytes());
    assert!(decrypt(&file, &p.phone_1024.key).is_err());
    assert!(decrypt(&file, &p.signer.key).is_err());
    let mut bad = file.clone();
    let last = bad.len() - 20;
    bad[last] ^= 1;
    assert!(decrypt(&bad, &p.phone.key).is_err());
}

#[test]
fn tampered_files_fail_to_verify_and_never_panic() {
    let p = pki();
    let file = encrypt(Digest::Sha1, &p.phone, SEP_DOC.as_bytes());
    for i in (0..file.len()).step_by(7) {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        let verified =
            sgn::parse(&bad, FileKind::EncSgn).and_then(|f| sgn::verify(&f, &p.signer.der));
        assert!(verified.is_err(), "flip at {i} still verifies");
        let _ = decrypt(&bad, &p.phone.key);
    }
    for len in (0..file.len()).step_by(13) {
        assert!(decrypt(&file[..len], &p.phone.key).is_err());
    }
}
