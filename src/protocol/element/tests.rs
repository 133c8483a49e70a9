use super::*;

fn decode(payload: &[u8]) -> Result<Elements<'_>, ProtocolError> {
    Elements::decode(payload)
}

#[test]
fn empty_payload_has_no_elements() {
    let elements = decode(&[]).unwrap();
    assert_eq!(elements.reason, None);
    assert!(elements.skipped_tags.is_empty());
}

#[test]
fn truncated_element_header_reports_its_offset() {
    assert_eq!(decode(&[0x07]), Err(ProtocolError::TruncatedElement(0)));
    assert_eq!(
        decode(&[0x07, 0x00, 0x01, 0x03, 0x01, 0x00]),
        Err(ProtocolError::TruncatedElement(4))
    );
}

#[test]
fn value_beyond_the_payload_is_an_overrun() {
    assert_eq!(
        decode(&[0x0D, 0x00, 0x05, b'S', b'E', 0x00]),
        Err(ProtocolError::ElementOverrun { tag: 13, len: 5 })
    );
    assert_eq!(
        decode(&[0x09, 0xFF, 0xFF]),
        Err(ProtocolError::ElementOverrun { tag: 9, len: 65535 })
    );
}

#[test]
fn fixed_size_elements_reject_other_lengths() {
    for t in [1u8, 3, 7, 8, 17, 18] {
        assert_eq!(
            decode(&[t, 0x00, 0x02, 0x01, 0x01]),
            Err(ProtocolError::BadFixedLength {
                tag: t,
                len: 2,
                expected: 1
            }),
            "tag {t}"
        );
        assert_eq!(
            decode(&[t, 0x00, 0x00]),
            Err(ProtocolError::BadFixedLength {
                tag: t,
                len: 0,
                expected: 1
            }),
            "tag {t}"
        );
    }
    assert_eq!(
        decode(&[0x0A, 0x00, 0x01, 0x08]),
        Err(ProtocolError::BadFixedLength {
            tag: 10,
            len: 1,
            expected: 2
        })
    );
    assert_eq!(
        decode(&[0x0A, 0x00, 0x03, 0x00, 0x08, 0x00]),
        Err(ProtocolError::BadFixedLength {
            tag: 10,
            len: 3,
            expected: 2
        })
    );
}

#[test]
fn unknown_tags_are_skipped_and_reported_once() {
    let payload = [
        0x05, 0x00, 0x02, 0xAA, 0xBB, // CERTIFICATE_ID, unknown encoding
        0x07, 0x00, 0x01, 0x03, // VERSION
        0x0C, 0x00, 0x00, // RETRY_DELAY, empty
        0x05, 0x00, 0x01, 0x00, // CERTIFICATE_ID again
        0x13, 0x00, 0x01, 0x03, // DIGEST_TYPE
        0xC8, 0x00, 0x00, // 200
        0x0E, 0x00, 0x00, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x00, // 14, 15, 0
    ];
    let elements = decode(&payload).unwrap();
    assert_eq!(elements.version, Some(3));
    assert_eq!(elements.skipped_tags, vec![5, 12, 19, 200, 14, 15, 0]);
}

#[test]
fn duplicates_of_deciding_elements_are_refused() {
    let once = |t: u8, value: &[u8]| {
        let mut e = vec![t];
        e.extend_from_slice(&(value.len() as u16).to_be_bytes());
        e.extend_from_slice(value);
        e
    };
    let der = [0x30, 0x03, 0x02, 0x01, 0x05];
    let mut wrapped = vec![0x01, 0x00, 0x07, 0x00, 0x01];
    wrapped.extend_from_slice(&der);
    let cases: Vec<(u8, Vec<u8>)> = vec![
        (tag::DEVICE_NAME, b"SEP001122334455\0".to_vec()),
        (tag::PASSWORD, b"1234\0".to_vec()),
        (tag::VERSION, vec![3]),
        (tag::CERTIFICATE, wrapped),
        (tag::SIGNED_DATA, vec![0xAB; 4]),
        (tag::SHA2_SIGNED_DATA, vec![3, 0, 1, 0xCD]),
        (
            tag::SUDI_DATA,
            vec![0, 0, 1, 0xAA, 1, 0, 1, 0xBB, 3, 0, 1, 0xCC],
        ),
        (tag::PUBLIC_KEY, vec![0x30, 0x00]),
        (tag::CERTIFICATE_TYPE, vec![1]),
        (tag::AUTH_TYPE, vec![0]),
        (tag::KEY_SIZE, vec![8, 0]),
        (tag::KEY_TYPE, vec![0]),
        (tag::CURVE, vec![0]),
    ];
    for (t, value) in cases {
        let single = once(t, &value);
        assert!(decode(&single).is_ok(), "tag {t} alone");
        let mut twice = single.clone();
        twice.extend_from_slice(&single);
        assert_eq!(decode(&twice).err(), Some(ProtocolError::Duplicate(t)));
    }
}

#[test]
fn a_repeated_reason_keeps_the_first() {
    let elements = decode(&[0x01, 0x00, 0x01, 0x01, 0x01, 0x00, 0x01, 0x07]).unwrap();
    assert_eq!(elements.reason, Some(Reason::UpdateCertificate));
}

#[test]
fn text_needs_exactly_one_terminating_nul() {
    for t in [tag::REASON_INFO, tag::PASSWORD, tag::DEVICE_NAME] {
        assert_eq!(
            decode(&[t, 0x00, 0x03, b'S', b'E', b'P']).err(),
            Some(ProtocolError::Malformed(t, "not NUL-terminated"))
        );
        assert_eq!(
            decode(&[t, 0x00, 0x00]).err(),
            Some(ProtocolError::Malformed(t, "not NUL-terminated"))
        );
        assert_eq!(
            decode(&[t, 0x00, 0x04, b'S', 0x00, b'P', 0x00]).err(),
            Some(ProtocolError::Malformed(t, "interior NUL"))
        );
        assert_eq!(
            decode(&[t, 0x00, 0x03, b'S', 0x00, 0x00]).err(),
            Some(ProtocolError::Malformed(t, "interior NUL"))
        );
    }
}

#[test]
fn empty_text_is_a_lone_nul() {
    let elements = decode(&[0x0B, 0x00, 0x01, 0x00, 0x0D, 0x00, 0x01, 0x00]).unwrap();
    assert_eq!(elements.password, Some(&b""[..]));
    assert_eq!(elements.device_name, Some(""));
}

#[test]
fn device_name_must_be_utf8_but_password_need_not() {
    assert_eq!(
        decode(&[0x0D, 0x00, 0x03, 0xC3, 0x28, 0x00]).err(),
        Some(ProtocolError::Malformed(13, "not UTF-8"))
    );
    let elements = decode(&[0x0B, 0x00, 0x03, 0xC3, 0x28, 0x00]).unwrap();
    assert_eq!(elements.password, Some(&[0xC3, 0x28][..]));
}

#[test]
fn writer_refuses_what_would_not_decode_back() {
    let mut writer = MessageWriter::new();
    assert_eq!(
        writer.text_element(tag::DEVICE_NAME, b"SEP\0X"),
        Err(ProtocolError::Malformed(13, "interior NUL"))
    );
    assert_eq!(
        writer.element(tag::PUBLIC_KEY, &vec![0; 65536]),
        Err(ProtocolError::TooLongToEncode(65539))
    );
}

#[test]
fn writer_refuses_a_payload_over_65535_bytes() {
    let mut writer = MessageWriter::new();
    writer.element(tag::PUBLIC_KEY, &vec![0; 65532]).unwrap();
    assert_eq!(writer.payload_len(), 65535);
    writer.u8_element(tag::REASON, 1).unwrap();
    assert_eq!(
        writer.finish(Command::EndSession, 1),
        Err(ProtocolError::TooLongToEncode(65539))
    );
}
