use super::*;
use crate::protocol::tests::der_sequence;

fn wrap(inner_tag: u8, inner_len: u16, prefix: [u8; 2], der: &[u8]) -> Vec<u8> {
    let mut value = vec![inner_tag];
    value.extend_from_slice(&inner_len.to_be_bytes());
    value.extend_from_slice(&prefix);
    value.extend_from_slice(der);
    value
}

fn lsc(der: Vec<u8>) -> WrappedCertificate {
    WrappedCertificate {
        cert_type: CertificateType::Lsc,
        der,
    }
}

#[test]
fn real_certificate_round_trips_with_spec_lengths() {
    let certified = rcgen::generate_simple_self_signed(vec!["capf.test".to_string()]).unwrap();
    let der = certified.cert.der().to_vec();
    let value = lsc(der.clone()).encode_value().unwrap();
    assert_eq!(value.len(), der.len() + 5);
    assert_eq!(&value[..5], &wrap(1, der.len() as u16 + 2, [0, 1], &[])[..]);
    assert_eq!(&value[5..], &der[..]);
    assert_eq!(WrappedCertificate::decode_value(&value), Ok(lsc(der)));
}

#[test]
fn mic_type_is_carried() {
    let der = der_sequence(40);
    let value = wrap(1, der.len() as u16 + 2, [0, 2], &der);
    let decoded = WrappedCertificate::decode_value(&value).unwrap();
    assert_eq!(decoded.cert_type, CertificateType::Mic);
    assert_eq!(decoded.encode_value().unwrap(), value);
}

#[test]
fn der_lengths_in_every_form_are_accepted() {
    for content_len in [0, 1, 0x7F, 0x80, 0xFF, 0x100, 782, 4000] {
        let der = der_sequence(content_len);
        let value = wrap(1, der.len() as u16 + 2, [0, 1], &der);
        assert_eq!(
            WrappedCertificate::decode_value(&value),
            Ok(lsc(der)),
            "content {content_len}"
        );
    }
}

#[test]
fn wrapper_lengths_must_agree_with_the_der() {
    let der = der_sequence(100);
    let d = der.len() as u16;
    let cases: [(Vec<u8>, &str); 6] = [
        (wrap(2, d + 2, [0, 1], &der), "inner record tag is not 1"),
        (
            wrap(1, d + 3, [0, 1], &der),
            "inner record overruns the element",
        ),
        (wrap(1, d + 1, [0, 1], &der), "DER certificate is truncated"),
        (
            [wrap(1, d + 2, [0, 1], &der), vec![0x00]].concat(),
            "inner record tag is not 1",
        ),
        (
            [wrap(1, d + 2, [0, 1], &der), vec![0x01, 0x00]].concat(),
            "inner record header is truncated",
        ),
        (
            wrap(1, d + 2, [1, 1], &der),
            "inner record prefix does not start with 0",
        ),
    ];
    for (value, why) in cases {
        assert_eq!(
            WrappedCertificate::decode_value(&value),
            Err(malformed(why))
        );
    }
    assert_eq!(
        WrappedCertificate::decode_value(&[]),
        Err(malformed("no inner record"))
    );
    assert_eq!(
        WrappedCertificate::decode_value(&[1, 0, 1, 0]),
        Err(malformed("inner record is shorter than its prefix"))
    );
}

#[test]
fn trailing_bytes_after_the_der_are_refused() {
    let mut der = der_sequence(100);
    der.push(0x00);
    let value = wrap(1, der.len() as u16 + 2, [0, 1], &der);
    assert_eq!(
        WrappedCertificate::decode_value(&value),
        Err(malformed("bytes after the DER certificate"))
    );
}

#[test]
fn non_der_content_is_refused() {
    let cases: [(&[u8], &str); 7] = [
        (&[], "certificate is not a DER SEQUENCE"),
        (&[0x31, 0x00], "certificate is not a DER SEQUENCE"),
        (&[0x30], "DER length is missing"),
        (&[0x30, 0x80, 0x00, 0x00], "DER indefinite length"),
        (
            &[0x30, 0x81, 0x05, 1, 2, 3, 4, 5],
            "DER length is not minimal",
        ),
        (&[0x30, 0x82, 0x00, 0x80], "DER length is not minimal"),
        (&[0x30, 0x85, 0, 0, 0, 0, 1], "DER length is too long"),
    ];
    for (der, why) in cases {
        let value = wrap(1, der.len() as u16 + 2, [0, 1], der);
        assert_eq!(
            WrappedCertificate::decode_value(&value),
            Err(malformed(why)),
            "{der:02x?}"
        );
    }
    let value = wrap(1, 4, [0, 1], &[0x30, 0x82]);
    assert_eq!(
        WrappedCertificate::decode_value(&value),
        Err(malformed("DER length is truncated"))
    );
}

#[test]
fn several_records_are_all_checked_and_the_first_is_taken() {
    let first = der_sequence(10);
    let second = der_sequence(20);
    let value = [
        wrap(1, first.len() as u16 + 2, [0, 1], &first),
        wrap(1, second.len() as u16 + 2, [0, 2], &second),
    ]
    .concat();
    assert_eq!(
        WrappedCertificate::decode_value(&value),
        Ok(lsc(first.clone()))
    );

    let broken = [
        wrap(1, first.len() as u16 + 2, [0, 1], &first),
        wrap(1, 4, [0, 2], &[0x31, 0x00]),
    ]
    .concat();
    assert_eq!(
        WrappedCertificate::decode_value(&broken),
        Err(malformed("certificate is not a DER SEQUENCE"))
    );
}

#[test]
fn oversized_certificate_is_not_encoded() {
    assert_eq!(
        lsc(vec![0x30; 65534]).encode_value(),
        Err(ProtocolError::TooLongToEncode(65542))
    );
}
