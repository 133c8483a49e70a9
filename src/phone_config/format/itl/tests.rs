use super::*;
use crate::model::Digest;
use crate::phone_config::testpki::{pki, signer};

const NOW: UnixTime = 1_700_000_000;

fn standard() -> Vec<u8> {
    build_standard(&signer(Digest::Sha1), &pki().capf, NOW).unwrap()
}

#[test]
fn header_matches_section_8_5() {
    let file = standard();
    assert_eq!(
        &file[0..15],
        &[1, 0, 2, 1, 2, 2, 0, 2, 1, 0x9C, 0x1C, 0, 2, 1, 0]
    );
    assert_eq!(&file[15..18], &[3, 0, 0x5F]);
    assert_eq!(&file[18..21], &[4, 0, 0x20]);
    assert_eq!(
        &file[113..131],
        &[7, 0, 15, 8, 0, 1, 1, 9, 0, 8, 10, 0, 1, 0, 11, 0, 1, 2]
    );
    assert_eq!(&file[131..134], &[12, 1, 0]);
    assert_eq!(&file[390..405], b"\x0E\x00\x0CITLFile.tlv\0");
    assert_eq!(&file[405..408], &[15, 0, 4]);
    let list = parse(&file).unwrap();
    assert_eq!(list.header.header_length, 412);
    assert_eq!(list.header.pad_bytes, 0);
    assert_eq!(list.header.signer_version, Some([1, 0]));
    assert_eq!(list.header.signature_offset, 131);
    let mut signed = file[..131].to_vec();
    signed.extend_from_slice(&file[390..]);
    assert_eq!(list.header.signed_message(), signed);
}

#[test]
fn records_tile_the_file_and_match_their_certificates() {
    let p = pki();
    let file = standard();
    let list = parse(&file).unwrap();
    let roles: Vec<u16> = list.records.iter().map(|r| r.role).collect();
    assert_eq!(roles, [0, 3, 4]);
    assert_eq!(list.records[0].offset, 412);
    assert_eq!(list.records[0].length, 640 + p.signer.der.len());
    let length = (640 + p.signer.der.len()) as u16;
    assert_eq!(&file[412..415], &[1, 0, 2]);
    assert_eq!(&file[415..417], &length.to_be_bytes());
    let total: usize = list.records.iter().map(|r| r.length).sum();
    assert_eq!(412 + total, file.len());
    for record in &list.records {
        record.matches_certificate().unwrap();
        assert_eq!(record.public_key.len(), 270);
        assert_eq!(record.signature.map(<[u8]>::len), Some(256));
    }
    assert_eq!(list.records[0].certificate, p.signer.der.as_slice());
    assert_eq!(list.records[1].certificate, p.signer.der.as_slice());
    assert_eq!(list.records[2].certificate, p.capf.as_slice());
    assert_eq!(
        list.records[2].serial,
        (0x83..0x93).collect::<Vec<u8>>().as_slice()
    );
    // The SAST and TFTP records differ only in their role value.
    let (a, b) = (&list.records[0], &list.records[1]);
    let sast = &file[a.offset..a.offset + a.length];
    let tftp = &file[b.offset..b.offset + b.length];
    let differing: Vec<usize> = (0..sast.len()).filter(|&i| sast[i] != tftp[i]).collect();
    assert_eq!(differing, [5 + 35 + 4]);
    verify(&list).unwrap();
}

#[test]
fn byte_flips_anywhere_break_verification() {
    let file = standard();
    for i in (0..file.len()).step_by(5) {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        assert!(
            parse(&bad).and_then(|l| verify(&l)).is_err(),
            "flip at {i} still verifies"
        );
    }
}

#[test]
fn a_list_without_a_sast_record_does_not_verify() {
    let s = signer(Digest::Sha1);
    let file = build(
        &s,
        &[(s.certificate_der(), Role::Tftp), (&pki().capf, Role::Capf)],
        NOW,
    )
    .unwrap();
    let list = parse(&file).unwrap();
    assert!(matches!(verify(&list), Err(Error::Certificate(_))));
}

#[test]
fn sha512_lists_verify() {
    let file = build_standard(&signer(Digest::Sha512), &pki().capf, NOW).unwrap();
    let list = parse(&file).unwrap();
    assert_eq!(list.header.digest, Digest::Sha512);
    verify(&list).unwrap();
}

#[test]
fn ec_certificates_carry_their_uncompressed_point() {
    let s = signer(Digest::Sha1);
    let file = build(
        &s,
        &[
            (s.certificate_der(), Role::Sast),
            (&pki().phone_ec, Role::AppServer),
        ],
        NOW,
    )
    .unwrap();
    let list = parse(&file).unwrap();
    let ec = &list.records[1];
    assert_eq!(ec.role, 7);
    assert_eq!(ec.public_key.len(), 65);
    assert_eq!(ec.public_key[0], 0x04);
    ec.matches_certificate().unwrap();
    verify(&list).unwrap();
}

fn big_certificate(extension: usize) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(vec!["big.example".to_owned()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0; extension],
        ));
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn records_over_64_kib_are_refused() {
    let s = signer(Digest::Sha1);
    let fits_alone = big_certificate(65_000);
    assert!(fits_alone.len() <= 65535);
    for certificate in [fits_alone, big_certificate(70_000)] {
        let err = build(
            &s,
            &[
                (s.certificate_der(), Role::Sast),
                (&certificate, Role::AppServer),
            ],
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooLong { .. }), "{err}");
    }
}

#[test]
fn a_list_without_signer_version_parses() {
    let file = standard();
    // Remove tag 28 (5 bytes) and re-align the header with one pad byte: 408.
    let mut stripped = file[..10].to_vec();
    stripped.extend_from_slice(&file[15..412]);
    stripped.push(0x0D);
    stripped[8..10].copy_from_slice(&408u16.to_be_bytes());
    stripped.extend_from_slice(&file[412..]);
    let list = parse(&stripped).unwrap();
    assert_eq!(list.header.signer_version, None);
    assert_eq!(list.records.len(), 3);
}

#[test]
fn records_must_tile_the_file() {
    let mut file = standard();
    file.push(0);
    assert!(parse(&file).is_err());
    let file = standard();
    assert!(parse(&file[..file.len() - 1]).is_err());
}
