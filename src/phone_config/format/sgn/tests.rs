use super::*;
use crate::phone_config::testpki::{pki, signer, SEP_DOC};

const NOW: UnixTime = 1_700_000_000;
const NAME: &str = "SEP001122334455.cnf.xml.sgn";

fn verifies(file: &[u8], certificate: &[u8]) -> bool {
    parse(file, FileKind::Sgn)
        .and_then(|f| verify(&f, certificate))
        .is_ok()
}

#[test]
fn full_document_matches_the_section_8_2_layout() {
    let file = build(&signer(Digest::Sha1), NAME, SEP_DOC.as_bytes(), NOW).unwrap();
    assert_eq!(file.len(), 1079);
    assert_eq!(&file[0..10], &[1, 0, 2, 1, 0, 2, 0, 2, 1, 0xA8]);
    assert_eq!(&file[10..16], &[3, 0, 0x5F, 4, 0, 0x20]);
    assert_eq!(&file[16..48], b"CN=tftp,OU=Voice,O=Example,C=NZ\0");
    assert_eq!(&file[48..51], &[5, 0, 0x10]);
    assert_eq!(file[51..67].to_vec(), (0x10..0x20).collect::<Vec<u8>>());
    assert_eq!(&file[67..70], &[6, 0, 0x26]);
    assert_eq!(&file[70..108], b"CN=Example CA,OU=Voice,O=Example,C=NZ\0");
    assert_eq!(
        &file[108..126],
        &[7, 0, 15, 8, 0, 1, 1, 9, 0, 8, 10, 0, 1, 0, 11, 0, 1, 2]
    );
    assert_eq!(&file[126..129], &[12, 1, 0]);
    assert_eq!(&file[385..388], &[14, 0, 0x1C]);
    assert_eq!(&file[388..416], b"SEP001122334455.cnf.xml.sgn\0");
    assert_eq!(&file[416..419], &[15, 0, 4]);
    assert_eq!(&file[419..423], &(NOW as u32).to_be_bytes());
    assert_eq!(file[423], 0x0D);
    assert_eq!(&file[424..], SEP_DOC.as_bytes());

    let parsed = parse(&file, FileKind::Sgn).unwrap();
    assert_eq!(parsed.header_length, 424);
    assert_eq!(parsed.signature_offset, 126);
    assert_eq!(parsed.pad_bytes, 1);
    assert_eq!(parsed.filename, NAME);
    assert_eq!(parsed.timestamp, NOW as u32);
    assert_eq!(parsed.signer_version, None);
    assert_eq!(parsed.body, SEP_DOC.as_bytes());
    let mut signed = file[..126].to_vec();
    signed.extend_from_slice(&file[385..]);
    assert_eq!(parsed.signed_message(), signed);
    assert_eq!(signed.len(), 820);
    verify(&parsed, &pki().signer.der).unwrap();
}

#[test]
fn header_names_are_the_signer_identity() {
    let s = signer(Digest::Sha1);
    let file = build(&s, NAME, b"x", NOW).unwrap();
    let parsed = parse(&file, FileKind::Sgn).unwrap();
    assert_eq!(parsed.signer_name, s.identity().subject);
    assert_eq!(parsed.issuer_name, s.identity().issuer);
    assert_eq!(parsed.serial, s.identity().serial.as_slice());
}

#[test]
fn every_single_byte_flip_breaks_verification() {
    let file = build(&signer(Digest::Sha1), NAME, SEP_DOC.as_bytes(), NOW).unwrap();
    assert!(verifies(&file, &pki().signer.der));
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        assert!(
            !verifies(&bad, &pki().signer.der),
            "flip at {i} still verifies"
        );
    }
}

#[test]
fn a_different_certificate_does_not_verify() {
    let file = build(&signer(Digest::Sha1), NAME, b"<device/>", NOW).unwrap();
    let parsed = parse(&file, FileKind::Sgn).unwrap();
    assert!(matches!(
        verify(&parsed, &pki().capf),
        Err(Error::BadSignature)
    ));
}

#[test]
fn builds_are_deterministic_for_a_fixed_clock() {
    let s = signer(Digest::Sha1);
    assert_eq!(
        build(&s, NAME, SEP_DOC.as_bytes(), NOW).unwrap(),
        build(&s, NAME, SEP_DOC.as_bytes(), NOW).unwrap()
    );
}

#[test]
fn sha512_signatures_verify_with_both_key_sizes() {
    let p = pki();
    for keyed in [&p.signer, &p.signer_1024] {
        let s = Signer::from_der(keyed.der.clone(), &keyed.pkcs8, Digest::Sha512).unwrap();
        let file = build(&s, NAME, SEP_DOC.as_bytes(), NOW).unwrap();
        let parsed = parse(&file, FileKind::Sgn).unwrap();
        assert_eq!(parsed.digest, Digest::Sha512);
        assert_eq!(parsed.signature.len(), s.signature_len());
        assert_eq!(parsed.header_length % 4, 0);
        verify(&parsed, &keyed.der).unwrap();
    }
}

#[test]
fn bodies_over_64_kib_are_legal() {
    let body = vec![b'x'; 200 * 1024];
    let file = build(&signer(Digest::Sha1), NAME, &body, NOW).unwrap();
    let parsed = parse(&file, FileKind::Sgn).unwrap();
    assert_eq!(parsed.body.len(), body.len());
    verify(&parsed, &pki().signer.der).unwrap();
}

#[test]
fn timestamps_outside_u32_are_build_errors() {
    let s = signer(Digest::Sha1);
    for now in [-1, 1 << 32] {
        assert!(matches!(
            build(&s, NAME, b"", now),
            Err(Error::TimestampOutOfRange(t)) if t == now
        ));
    }
    let file = build(&s, NAME, b"", u32::MAX.into()).unwrap();
    assert_eq!(parse(&file, FileKind::Sgn).unwrap().timestamp, u32::MAX);
}

/// A header written by hand: tag 6 before 5, pad bytes between top-level elements.
fn hand_built(extra_tag: Option<u8>) -> Vec<u8> {
    let mut w = Writer::new();
    w.element(1, &[1, 0]).unwrap();
    w.u16(2, 0).unwrap();
    w.pad(1);
    w.container(3, |w| {
        w.string(4, "CN=a")?;
        w.string(6, "CN=b")?;
        w.element(5, &[7])
    })
    .unwrap();
    w.container(7, |w| {
        w.u8(8, 1)?;
        w.container(9, |w| {
            w.u8(10, 0)?;
            w.u8(11, 0)
        })
    })
    .unwrap();
    w.pad(2);
    w.element(12, &[0xAA; 64]).unwrap();
    w.element(15, &[0, 0, 0, 9]).unwrap();
    w.string(14, "a.sgn").unwrap();
    if let Some(tag) = extra_tag {
        w.element(tag, &[1, 0]).unwrap();
    }
    let pad = (4 - w.position() % 4) % 4;
    w.pad(pad);
    let len = w.position() as u16;
    w.patch_u16(8, len);
    w.extend(b"body");
    w.into_bytes()
}

#[test]
fn parser_accepts_other_orders_and_pads_anywhere_at_the_top() {
    let file = hand_built(None);
    let parsed = parse(&file, FileKind::Sgn).unwrap();
    assert_eq!(parsed.serial, &[7]);
    assert_eq!(parsed.issuer_name, "CN=b");
    assert_eq!(parsed.filename, "a.sgn");
    assert_eq!(parsed.body, b"body");
}

#[test]
fn parser_rejects_tags_foreign_to_the_format() {
    assert!(parse(&hand_built(Some(28)), FileKind::Sgn).is_err());
    assert!(
        parse(&hand_built(Some(28)), FileKind::Tlv).is_err(),
        "version 1.0 is not .tlv"
    );
    assert!(parse(&hand_built(Some(20)), FileKind::Sgn).is_err());
    assert!(
        parse(&hand_built(Some(14)), FileKind::Sgn).is_err(),
        "duplicate tag 14"
    );
}

#[test]
fn parser_rejects_truncated_and_misaligned_files() {
    let file = build(&signer(Digest::Sha1), NAME, b"<device/>", NOW).unwrap();
    for len in [0, 4, 9, 10, 200, 423] {
        assert!(
            parse(&file[..len], FileKind::Sgn).is_err(),
            "prefix of {len}"
        );
    }
    let mut bad = file.clone();
    bad[9] = 0xA9;
    assert!(parse(&bad, FileKind::Sgn).is_err());
    assert!(parse(&file, FileKind::EncSgn).is_err());
}

#[test]
fn the_format_follows_the_served_suffix() {
    assert_eq!(
        FileKind::from_name("SEP001122334455.cnf.xml.enc.sgn"),
        Some(FileKind::EncSgn)
    );
    assert_eq!(
        FileKind::from_name("SEP001122334455.cnf.xml.sgn"),
        Some(FileKind::Sgn)
    );
    assert_eq!(FileKind::from_name("ITLFile.tlv"), Some(FileKind::Tlv));
    assert_eq!(FileKind::from_name("SEP001122334455.cnf.xml"), None);
}
