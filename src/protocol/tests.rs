//! Whole-message tests: the test vectors of capf-protocol.md §12 in both directions,
//! message-level failures, and randomized decoding and round trips.

use rand::RngExt;

use super::*;

const SESSION: u32 = 0x0000_0102;

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text.split_whitespace().collect::<String>()).unwrap()
}

fn split(message: &[u8]) -> Result<(Header, &[u8]), ProtocolError> {
    let (head, payload) = message
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(ProtocolError::TruncatedElement(0))?;
    let header = Header::decode(head)?;
    header.check_payload_cap(DEFAULT_MAX_PAYLOAD)?;
    Ok((header, payload))
}

fn decode_client(message: &[u8]) -> Result<ClientMessage, ProtocolError> {
    let (header, payload) = split(message)?;
    ClientMessage::decode(&header, payload)
}

fn decode_server(message: &[u8]) -> Result<ServerMessage, ProtocolError> {
    let (header, payload) = split(message)?;
    ServerMessage::decode(&header, payload)
}

fn definite_len(len: usize) -> Vec<u8> {
    match len {
        0..=0x7F => vec![len as u8],
        0x80..=0xFF => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

/// A DER SEQUENCE with `content_len` content bytes (at most 65535). The content is an
/// OCTET STRING of filler whenever one fits exactly.
pub(crate) fn der_sequence(content_len: usize) -> Vec<u8> {
    let mut content: Vec<u8> = (0..content_len).map(|i| i as u8).collect();
    for header_len in 2..=4 {
        let Some(filler) = content_len.checked_sub(header_len) else {
            break;
        };
        let filler_len = definite_len(filler);
        if filler_len.len() + 1 == header_len {
            content[0] = 0x04;
            content[1..header_len].copy_from_slice(&filler_len);
            break;
        }
    }
    [vec![0x30], definite_len(content_len), content].concat()
}

fn lsc(der: Vec<u8>) -> WrappedCertificate {
    WrappedCertificate {
        cert_type: CertificateType::Lsc,
        der,
    }
}

/// Checks both directions of a canonical vector.
fn server_vector(message: ServerMessage, wire: &[u8]) {
    assert_eq!(message.encode(SESSION).unwrap(), wire);
    assert_eq!(decode_server(wire), Ok(message));
}

fn client_vector(message: ClientMessage, wire: &[u8]) {
    assert_eq!(message.encode(SESSION).unwrap(), wire);
    assert_eq!(decode_client(wire), Ok(message));
}

#[test]
fn v1_auth_request() {
    server_vector(
        ServerMessage::AuthRequest {
            version: PROTOCOL_VERSION,
            auth_type: Some(AuthType::None),
        },
        &bytes("55 01 00 00 01 02 00 08 07 00 01 03 08 00 01 00"),
    );
}

#[test]
fn auth_request_without_auth_type_carries_version_only() {
    server_vector(
        ServerMessage::AuthRequest {
            version: 3,
            auth_type: None,
        },
        &bytes("55 01 00 00 01 02 00 04 07 00 01 03"),
    );
}

fn sep_auth_response() -> AuthResponse {
    AuthResponse {
        version: Some(3),
        device_name: Some("SEP001122334455".to_string()),
        password: Some(b"123456".to_vec()),
        reason: Some(Reason::UpdateCertificate),
        ..AuthResponse::default()
    }
}

const V2: &str = "55 02 00 00 01 02 00 25 01 00 01 01 07 00 01 03 0B 00 07 31 32 33 34 35 36 00
    0D 00 10 53 45 50 30 30 31 31 32 32 33 33 34 34 35 35 00";

#[test]
fn v2_auth_response_with_password() {
    client_vector(ClientMessage::AuthResponse(sep_auth_response()), &bytes(V2));
}

#[test]
fn v3_legacy_auth_response_in_client_order() {
    let wire = bytes(
        "55 02 00 00 01 02 00 1B 07 00 01 02 0D 00 10 53 45 50 30 30 31 31 32 32 33 33
         34 34 35 35 00 01 00 01 01",
    );
    let expected = ClientMessage::AuthResponse(AuthResponse {
        version: Some(2),
        password: None,
        ..sep_auth_response()
    });
    assert_eq!(decode_client(&wire), Ok(expected.clone()));
    // Re-encoding puts REASON first (ascending tags): same length, other order.
    let canonical = expected.encode(SESSION).unwrap();
    assert_eq!(canonical.len(), wire.len());
    assert_eq!(&canonical[8..12], &bytes("01 00 01 01")[..]);
}

#[test]
fn v4_key_generate_request_rsa() {
    server_vector(
        ServerMessage::KeyGenerateRequest(KeyGenerateRequest {
            key_size: Some(2048),
            key_type: Some(KeyType::Rsa),
            curve: None,
        }),
        &bytes("55 03 00 00 01 02 00 09 0A 00 02 08 00 11 00 01 00"),
    );
    // The version-2 form CUCM sent: KEY_SIZE only.
    server_vector(
        ServerMessage::KeyGenerateRequest(KeyGenerateRequest {
            key_size: Some(2048),
            key_type: None,
            curve: None,
        }),
        &bytes("55 03 00 00 01 02 00 05 0A 00 02 08 00"),
    );
}

#[test]
fn v5_key_generate_request_ec() {
    server_vector(
        ServerMessage::KeyGenerateRequest(KeyGenerateRequest {
            key_size: None,
            key_type: Some(KeyType::Ec),
            curve: Some(CurveId::Secp384r1),
        }),
        &bytes("55 03 00 00 01 02 00 08 11 00 01 01 12 00 01 01"),
    );
}

#[test]
fn v6_request_in_progress() {
    client_vector(
        ClientMessage::RequestInProgress,
        &bytes("55 11 00 00 01 02 00 00"),
    );
}

const P256_GENERATOR_SPKI: &str = "30 59 30 13 06 07 2A 86 48 CE 3D 02 01 06 08 2A 86 48 CE 3D 03 01 07 03 42 00 04
    6B 17 D1 F2 E1 2C 42 47 F8 BC E6 E5 63 A4 40 F2 77 03 7D 81 2D EB 33 A0 F4 A1 39 45 D8 98 C2 96
    4F E3 42 E2 FE 1A 7F 9B 8E E7 EB 4A 7C 0F 9E 16 2B CE 33 57 6B 31 5E CE CB B6 40 68 37 BF 51 F5";

#[test]
fn v7_key_generate_response_p256() {
    let spki = bytes(P256_GENERATOR_SPKI);
    assert_eq!(spki.len(), 91);
    let wire = [bytes("55 04 00 00 01 02 00 5E 09 00 5B"), spki.clone()].concat();
    assert_eq!(wire.len(), 102);
    client_vector(
        ClientMessage::KeyGenerateResponse {
            public_key: Some(spki),
            reason: None,
        },
        &wire,
    );
}

#[test]
fn v8_store_certificate_request() {
    let der = der_sequence(782);
    assert_eq!(der.len(), 786);
    let message = ServerMessage::StoreCertificateRequest(lsc(der.clone()));
    let wire = message.encode(SESSION).unwrap();
    assert_eq!(wire.len(), 806);
    assert_eq!(
        &wire[..24],
        &bytes("55 09 00 00 01 02 03 1E 03 00 01 01 04 03 17 01 03 14 00 01 30 82 03 0E")[..]
    );
    assert_eq!(&wire[20..], &der[..]);
    assert_eq!(decode_server(&wire), Ok(message));
}

#[test]
fn store_certificate_payload_is_der_length_plus_12() {
    // The CUCM capture cross-check of §12: DER 979 → payload 0x03DF, element 0x03D8,
    // inner 0x03D5.
    let der = der_sequence(975);
    assert_eq!(der.len(), 979);
    let wire = ServerMessage::StoreCertificateRequest(lsc(der))
        .encode(SESSION)
        .unwrap();
    assert_eq!(&wire[6..8], &[0x03, 0xDF]);
    assert_eq!(&wire[12..17], &bytes("04 03 D8 01 03")[..]);
    assert_eq!(wire[17], 0xD5);
}

#[test]
fn v9_store_certificate_response() {
    client_vector(
        ClientMessage::StoreCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
        },
        &bytes("55 0A 00 00 01 02 00 04 01 00 01 01"),
    );
}

#[test]
fn v10_end_session_and_the_other_endings() {
    let endings = [
        (Reason::UnknownDevice, 0x09),
        (Reason::NoAction, 0x00),
        (Reason::UpdateCertificate, 0x01),
        (Reason::InvalidElement, 0x07),
    ];
    for (reason, code) in endings {
        let mut wire = bytes("55 0F 00 00 01 02 00 04 01 00 01 00");
        wire[11] = code;
        server_vector(ServerMessage::EndSession(reason), &wire);
    }
}

#[test]
fn fetch_and_delete_requests_are_empty() {
    server_vector(
        ServerMessage::FetchCertificateRequest,
        &bytes("55 0B 00 00 01 02 00 00"),
    );
    server_vector(
        ServerMessage::DeleteCertificateRequest,
        &bytes("55 0D 00 00 01 02 00 00"),
    );
}

#[test]
fn fetch_certificate_response_with_and_without_certificate() {
    let der = der_sequence(50);
    let mut wire = bytes("55 0C 00 00 01 02 00 40 01 00 01 01 04 00 39 01 00 36 00 01");
    wire.extend_from_slice(&der);
    client_vector(
        ClientMessage::FetchCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
            certificate: Some(lsc(der)),
        },
        &wire,
    );
    client_vector(
        ClientMessage::FetchCertificateResponse {
            reason: Some(Reason::InvalidElement),
            certificate: None,
        },
        &bytes("55 0C 00 00 01 02 00 04 01 00 01 07"),
    );
}

#[test]
fn delete_response_and_failed_key_generation() {
    client_vector(
        ClientMessage::DeleteCertificateResponse {
            reason: Some(Reason::InvalidElement),
        },
        &bytes("55 0E 00 00 01 02 00 04 01 00 01 07"),
    );
    client_vector(
        ClientMessage::KeyGenerateResponse {
            public_key: None,
            reason: Some(Reason::InvalidElement),
        },
        &bytes("55 04 00 00 01 02 00 04 01 00 01 07"),
    );
}

fn auth_payload(auth: AuthResponse) -> Vec<u8> {
    let wire = ClientMessage::AuthResponse(auth.clone())
        .encode(SESSION)
        .unwrap();
    assert_eq!(decode_client(&wire), Ok(ClientMessage::AuthResponse(auth)));
    wire[HEADER_LEN..].to_vec()
}

#[test]
fn sha2_signed_data_element_fragment() {
    let signature: Vec<u8> = (0..256).map(|i| (i * 7) as u8).collect();
    let payload = auth_payload(AuthResponse {
        sha2_signed_data: Some(Sha2SignedData {
            hash: HashId::Sha512,
            signature: signature.clone(),
        }),
        ..AuthResponse::default()
    });
    assert_eq!(payload, [bytes("14 01 03 03 01 00"), signature].concat());
}

#[test]
fn sudi_data_element_fragment() {
    let certificate = vec![0xC5; 1000];
    let sha1 = vec![0x51; 256];
    let sha512 = vec![0x52; 256];
    let payload = auth_payload(AuthResponse {
        sudi: Some(SudiData {
            certificate: certificate.clone(),
            sha1_signature: sha1.clone(),
            sha2_hash: HashId::Sha512,
            sha2_signature: sha512.clone(),
        }),
        ..AuthResponse::default()
    });
    assert_eq!(payload.len(), 3 + 1521);
    let expected = [
        bytes("10 05 F1 00 03 E8"),
        certificate,
        bytes("01 01 00"),
        sha1,
        bytes("03 01 00"),
        sha512,
    ]
    .concat();
    assert_eq!(payload, expected);
}

#[test]
fn certificate_element_fragment_with_a_real_lsc() {
    let certified = rcgen::generate_simple_self_signed(vec!["SEP001122334455".into()]).unwrap();
    let der = certified.cert.der().to_vec();
    let c = der.len();
    let payload = auth_payload(AuthResponse {
        certificate: Some(lsc(der.clone())),
        signed_data: Some(vec![0x5A; 64]),
        ..sep_auth_response()
    });
    let mut expected = vec![0x01, 0x00, 0x01, 0x01, 0x04];
    expected.extend_from_slice(&((c + 5) as u16).to_be_bytes());
    expected.push(0x01);
    expected.extend_from_slice(&((c + 2) as u16).to_be_bytes());
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.extend_from_slice(&der);
    expected.extend_from_slice(&bytes("06 00 40"));
    assert_eq!(&payload[..expected.len()], &expected[..]);
    assert_eq!(
        &payload[expected.len() + 64..][..4],
        &bytes("07 00 01 03")[..]
    );
}

#[test]
fn header_refuses_a_wrong_protocol_id() {
    let mut wire = bytes(V2);
    wire[0] = 0x56;
    assert_eq!(
        decode_client(&wire),
        Err(ProtocolError::BadProtocolId(0x56))
    );
}

#[test]
fn header_fields_are_big_endian() {
    let header = Header::decode(&[0x55, 0x0F, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02]).unwrap();
    assert_eq!(
        header,
        Header {
            command: Command::EndSession,
            session_id: 0xDEAD_BEEF,
            payload_len: 0x0102,
        }
    );
    assert_eq!(
        header.encode(),
        [0x55, 0x0F, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02]
    );
    let unknown = Header::decode(&[0x55, 0xFE, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(unknown.command, Command::Unknown(0xFE));
}

#[test]
fn payload_cap_is_checked_against_the_announcement() {
    let header = |payload_len| Header {
        command: Command::AuthResponse,
        session_id: SESSION,
        payload_len,
    };
    assert_eq!(
        header(32 * 1024).check_payload_cap(DEFAULT_MAX_PAYLOAD),
        Ok(())
    );
    assert_eq!(
        header(32 * 1024 + 1).check_payload_cap(DEFAULT_MAX_PAYLOAD),
        Err(ProtocolError::PayloadTooLarge {
            announced: 32769,
            cap: DEFAULT_MAX_PAYLOAD
        })
    );
    assert_eq!(
        header(0).check_payload_cap(0),
        Ok(()),
        "an empty payload fits any cap"
    );
}

#[test]
fn payload_must_be_the_announced_length() {
    let wire = bytes(V2);
    let (header, payload) = split(&wire).unwrap();
    assert_eq!(
        ClientMessage::decode(&header, &payload[1..]),
        Err(ProtocolError::LengthMismatch {
            announced: 37,
            actual: 36
        })
    );
    let longer = [payload, &[0]].concat();
    assert_eq!(
        ServerMessage::decode(&header, &longer),
        Err(ProtocolError::LengthMismatch {
            announced: 37,
            actual: 38
        })
    );
}

#[test]
fn each_side_decodes_only_the_other_sides_commands() {
    let header = |command| Header {
        command,
        session_id: SESSION,
        payload_len: 0,
    };
    for v in 0..=255u8 {
        let command = Command::from_u8(v);
        let client = ClientMessage::decode(&header(command), &[]);
        let server = ServerMessage::decode(&header(command), &[]);
        let client_sends = [2, 4, 10, 12, 14, 17].contains(&v);
        let server_sends = [1, 3, 9, 11, 13, 15].contains(&v);
        assert_eq!(
            client.err() == Some(ProtocolError::UnexpectedCommand(v)),
            !client_sends,
            "client command {v}"
        );
        assert_eq!(
            matches!(server, Err(ProtocolError::UnexpectedCommand(c)) if c == v),
            !server_sends,
            "server command {v}"
        );
    }
}

#[test]
fn server_messages_need_their_deciding_element() {
    let missing = |wire: &str, t: u8| {
        assert_eq!(decode_server(&bytes(wire)), Err(ProtocolError::Missing(t)));
    };
    missing("55 01 00 00 01 02 00 04 08 00 01 00", tag::VERSION);
    missing("55 09 00 00 01 02 00 04 03 00 01 01", tag::CERTIFICATE);
    missing("55 0F 00 00 01 02 00 00", tag::REASON);
}

#[test]
fn unknown_tags_and_foreign_elements_do_not_change_the_message() {
    // V9 plus RETRY_DELAY (12), tag 200, a DEVICE_NAME and a KEY_SIZE, none of which
    // belong to a STORE_CERTIFICATE_RESPONSE.
    let wire = bytes(
        "55 0A 00 00 01 02 00 19 0C 00 02 00 1E 01 00 01 01 C8 00 00
         0D 00 05 53 45 50 31 00 0A 00 02 08 00",
    );
    assert_eq!(
        decode_client(&wire),
        Ok(ClientMessage::StoreCertificateResponse {
            reason: Some(Reason::UpdateCertificate)
        })
    );
}

#[test]
fn element_errors_surface_through_message_decoding() {
    // V2 with DEVICE_NAME's terminator replaced: not NUL-terminated.
    let mut wire = bytes(V2);
    let last = wire.len() - 1;
    wire[last] = b'6';
    assert_eq!(
        decode_client(&wire),
        Err(ProtocolError::Malformed(
            tag::DEVICE_NAME,
            "not NUL-terminated"
        ))
    );
    // V2 with a second VERSION appended.
    let mut wire = [bytes(V2), bytes("07 00 01 03")].concat();
    wire[7] += 4;
    assert_eq!(
        decode_client(&wire),
        Err(ProtocolError::Duplicate(tag::VERSION))
    );
    // V2 truncated inside DEVICE_NAME, with the header adjusted to match.
    let mut wire = bytes(V2);
    wire.truncate(wire.len() - 3);
    wire[7] -= 3;
    assert_eq!(
        decode_client(&wire),
        Err(ProtocolError::ElementOverrun { tag: 13, len: 16 })
    );
}

#[test]
fn oversized_messages_are_not_encoded() {
    let store = ServerMessage::StoreCertificateRequest(lsc(der_sequence(65530)));
    assert!(matches!(
        store.encode(SESSION),
        Err(ProtocolError::TooLongToEncode(n)) if n > 65535
    ));
    let auth = ClientMessage::AuthResponse(AuthResponse {
        signed_data: Some(vec![0; 40_000]),
        sha2_signed_data: Some(Sha2SignedData {
            hash: HashId::Sha512,
            signature: vec![0; 30_000],
        }),
        ..AuthResponse::default()
    });
    assert!(matches!(
        auth.encode(SESSION),
        Err(ProtocolError::TooLongToEncode(n)) if n > 65535
    ));
}

#[test]
fn code_tables_follow_the_spec_and_keep_unknown_values() {
    for v in 0..=255u8 {
        assert_eq!(Command::from_u8(v).to_u8(), v);
        assert_eq!(Reason::from_u8(v).to_u8(), v);
        assert_eq!(AuthType::from_u8(v).to_u8(), v);
        assert_eq!(CertificateType::from_u8(v).to_u8(), v);
        assert_eq!(KeyType::from_u8(v).to_u8(), v);
        assert_eq!(CurveId::from_u8(v).to_u8(), v);
        assert_eq!(HashId::from_u8(v).to_u8(), v);
    }
    assert_eq!(Command::from_u8(0), Command::Unknown(0));
    assert_eq!(Command::from_u8(17), Command::RequestInProgress);
    assert_eq!(Command::from_u8(23), Command::SignCertificateResponse);
    assert_eq!(Command::from_u8(24), Command::Unknown(24));
    assert_eq!(Reason::from_u8(7), Reason::InvalidElement);
    assert_eq!(Reason::from_u8(2), Reason::Unknown(2));
    assert_eq!(AuthType::from_u8(4), AuthType::Mic);
    assert_eq!(AuthType::from_u8(5), AuthType::Unknown(5));
    assert_eq!(CertificateType::from_u8(0), CertificateType::Unknown(0));
    assert_eq!(CertificateType::from_u8(2), CertificateType::Mic);
    assert_eq!(KeyType::from_u8(1), KeyType::Ec);
    assert_eq!(CurveId::from_u8(2), CurveId::Secp521r1);
    assert_eq!(CurveId::from_u8(3), CurveId::Unknown(3));
    assert_eq!(HashId::from_u8(3), HashId::Sha512);
    assert_eq!(HashId::from_u8(0), HashId::Unknown(0));
}

#[test]
fn device_names_are_checked_for_safe_characters_and_length() {
    for good in [
        "SEP001122334455",
        "CSFJSMITH",
        "a",
        "x_y.z-1",
        &"A".repeat(64),
    ] {
        assert!(valid_device_name(good), "{good}");
    }
    for bad in [
        "",
        &"A".repeat(65),
        "SEP 001",
        "../etc/passwd",
        "SEP/1",
        "SEPé",
        "name\\n",
        "a;b",
        "a\u{0}",
    ] {
        assert!(!valid_device_name(bad), "{bad:?}");
    }
}

// ---- randomized ----

type Rng = rand::rngs::ThreadRng;

fn random_bytes(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; rng.random_range(0..=max_len)];
    rng.fill(&mut out[..]);
    out
}

fn maybe<T>(rng: &mut Rng, make: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    rng.random_bool(0.6).then(|| make(rng))
}

fn random_text(rng: &mut Rng) -> String {
    const CHARS: &[char] = &[
        'S', 'E', 'P', '0', '9', 'a', '_', '.', '-', ' ', 'é', '☎', '\n',
    ];
    let len = rng.random_range(0..20);
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())])
        .collect()
}

fn random_certificate(rng: &mut Rng) -> WrappedCertificate {
    WrappedCertificate {
        cert_type: CertificateType::from_u8(rng.random()),
        der: der_sequence(rng.random_range(0..400)),
    }
}

fn random_reason(rng: &mut Rng) -> Option<Reason> {
    maybe(rng, |rng| Reason::from_u8(rng.random()))
}

fn random_auth_response(rng: &mut Rng) -> AuthResponse {
    AuthResponse {
        version: maybe(rng, |rng| rng.random()),
        device_name: maybe(rng, random_text),
        password: maybe(rng, |rng| {
            let mut password = random_bytes(rng, 16);
            password.retain(|&b| b != 0);
            password
        }),
        reason: random_reason(rng),
        certificate: maybe(rng, random_certificate),
        signed_data: maybe(rng, |rng| random_bytes(rng, 300)),
        sha2_signed_data: maybe(rng, |rng| Sha2SignedData {
            hash: HashId::from_u8(rng.random()),
            signature: random_bytes(rng, 300),
        }),
        sudi: maybe(rng, |rng| SudiData {
            certificate: random_bytes(rng, 300),
            sha1_signature: random_bytes(rng, 300),
            sha2_hash: HashId::from_u8(rng.random()),
            sha2_signature: random_bytes(rng, 300),
        }),
    }
}

fn random_client_message(rng: &mut Rng) -> ClientMessage {
    match rng.random_range(0..6) {
        0 => ClientMessage::AuthResponse(random_auth_response(rng)),
        1 => ClientMessage::KeyGenerateResponse {
            public_key: maybe(rng, |rng| random_bytes(rng, 600)),
            reason: random_reason(rng),
        },
        2 => ClientMessage::StoreCertificateResponse {
            reason: random_reason(rng),
        },
        3 => ClientMessage::FetchCertificateResponse {
            reason: random_reason(rng),
            certificate: maybe(rng, random_certificate),
        },
        4 => ClientMessage::DeleteCertificateResponse {
            reason: random_reason(rng),
        },
        _ => ClientMessage::RequestInProgress,
    }
}

fn random_server_message(rng: &mut Rng) -> ServerMessage {
    match rng.random_range(0..6) {
        0 => ServerMessage::AuthRequest {
            version: rng.random(),
            auth_type: maybe(rng, |rng| AuthType::from_u8(rng.random())),
        },
        1 => ServerMessage::KeyGenerateRequest(KeyGenerateRequest {
            key_size: maybe(rng, |rng| rng.random()),
            key_type: maybe(rng, |rng| KeyType::from_u8(rng.random())),
            curve: maybe(rng, |rng| CurveId::from_u8(rng.random())),
        }),
        2 => ServerMessage::StoreCertificateRequest(random_certificate(rng)),
        3 => ServerMessage::FetchCertificateRequest,
        4 => ServerMessage::DeleteCertificateRequest,
        _ => ServerMessage::EndSession(Reason::from_u8(rng.random())),
    }
}

/// The tags of a well-formed payload, in wire order.
fn wire_tags(payload: &[u8]) -> Vec<u8> {
    let mut reader = Reader::new(payload);
    let mut tags = Vec::new();
    while let (Some(t), Some(len)) = (reader.u8(), reader.u16()) {
        tags.push(t);
        reader.take(usize::from(len)).unwrap();
    }
    assert!(reader.is_empty());
    tags
}

fn assert_canonical(wire: &[u8]) {
    let (header, payload) = split(wire).unwrap();
    assert_eq!(usize::from(header.payload_len), payload.len());
    let tags = wire_tags(payload);
    assert!(tags.windows(2).all(|w| w[0] < w[1]), "tags {tags:?}");
}

#[test]
fn random_messages_round_trip() {
    let mut rng = rand::rng();
    for _ in 0..3000 {
        let session_id = rng.random();
        let client = random_client_message(&mut rng);
        let wire = client.encode(session_id).unwrap();
        assert_canonical(&wire);
        let (header, payload) = split(&wire).unwrap();
        assert_eq!(header.session_id, session_id);
        assert_eq!(header.command, client.command());
        assert_eq!(ClientMessage::decode(&header, payload), Ok(client));

        let server = random_server_message(&mut rng);
        let wire = server.encode(session_id).unwrap();
        assert_canonical(&wire);
        let (header, payload) = split(&wire).unwrap();
        assert_eq!(header.command, server.command());
        assert_eq!(ServerMessage::decode(&header, payload), Ok(server));
    }
}

/// Damages a message the way a broken or hostile peer might.
fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        if wire.is_empty() {
            wire.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..wire.len());
        match rng.random_range(0..5) {
            0 => wire[at] ^= 1 << rng.random_range(0..8),
            1 => wire[at] = rng.random(),
            2 => wire.truncate(at),
            3 => wire.insert(at, rng.random()),
            _ => {
                wire.remove(at);
            }
        }
    }
}

/// Decodes `wire` in both directions, as the payload the header announces and as
/// whatever bytes follow it. Whatever decodes must re-encode to something that decodes
/// to the same message.
fn decode_anything(wire: &[u8]) {
    let Some((head, payload)) = wire.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let Ok(header) = Header::decode(head) else {
        return;
    };
    let announced = Header {
        payload_len: payload.len().min(65535) as u16,
        ..header
    };
    for header in [header, announced] {
        if let Ok(message) = ClientMessage::decode(&header, payload) {
            let again = message.encode(header.session_id).unwrap();
            assert_eq!(decode_client(&again), Ok(message));
        }
        if let Ok(message) = ServerMessage::decode(&header, payload) {
            let again = message.encode(header.session_id).unwrap();
            assert_eq!(decode_server(&again), Ok(message));
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = rand::rng();
    for _ in 0..5000 {
        let mut wire = if rng.random_bool(0.5) {
            random_client_message(&mut rng)
                .encode(rng.random())
                .unwrap()
        } else {
            random_server_message(&mut rng)
                .encode(rng.random())
                .unwrap()
        };
        mutate(&mut rng, &mut wire);
        decode_anything(&wire);

        // Pure noise behind a valid-looking header, with tags biased to known ones.
        let mut noise = vec![PROTOCOL_ID, rng.random_range(0..25), 0, 0, 1, 2, 0, 0];
        for _ in 0..rng.random_range(0..8) {
            let t = if rng.random_bool(0.8) {
                rng.random_range(0..22)
            } else {
                rng.random()
            };
            let value = random_bytes(&mut rng, 40);
            let len = if rng.random_bool(0.8) {
                value.len() as u16
            } else {
                rng.random_range(0..64)
            };
            noise.push(t);
            noise.extend_from_slice(&len.to_be_bytes());
            noise.extend_from_slice(&value);
        }
        decode_anything(&noise);
    }
}
