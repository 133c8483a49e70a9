//! Inputs the fuzzers (fuzz/, docs/fuzzing.md) found, kept as regression tests: each
//! one runs through the same entry point as its fuzz target and must give an error or
//! a well-formed answer, never a panic.
//!
//! `write_fuzz_seeds` (ignored) regenerates the seed corpora under fuzz/seeds from the
//! spec test vectors and small valid files built by capf itself.

use capf::model::{AuthMode, DeviceRecord, EcCurve, KeyOrder, Operation, OperationStatus};
use capf::phone_config::format::{enc, itl, sgn};
use capf::phone_config::{Digest, Signer};
use capf::protocol::{ClientMessage, ServerMessage, HEADER_LEN, PROTOCOL_ID};
use capf::session::{Next, Session, SessionPolicy, Step};
use capf::settings::{DataDir, Settings};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use std::path::{Path, PathBuf};

const NOW: i64 = 1_800_000_000;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

// ----------------------------------------------------------------------------------
// Seed corpora.

/// capf-protocol.md §12, V1–V10 (V8 is built below with a real certificate).
const CLIENT_VECTORS: [&str; 4] = [
    // V2: AUTH_RESPONSE with a password.
    "55 02 00 00 01 02 00 25 01 00 01 01 07 00 01 03 0B 00 07 31 32 33 34 35 36 00
     0D 00 10 53 45 50 30 30 31 31 32 32 33 33 34 34 35 35 00",
    // V3: AUTH_RESPONSE from a version-2 client.
    "55 02 00 00 01 02 00 1B 07 00 01 02 0D 00 10 53 45 50 30 30 31 31 32 32 33 33
     34 34 35 35 00 01 00 01 01",
    // V6: REQUEST_IN_PROGRESS.
    "55 11 00 00 01 02 00 00",
    // V9: STORE_CERTIFICATE_RESPONSE, stored.
    "55 0A 00 00 01 02 00 04 01 00 01 01",
];

/// V7: KEY_GENERATE_RESPONSE with the P-256 base point.
const V7: &str = "55 04 00 00 01 02 00 5E 09 00 5B
    30 59 30 13 06 07 2A 86 48 CE 3D 02 01 06 08 2A 86 48 CE 3D 03 01 07 03 42 00 04
    6B 17 D1 F2 E1 2C 42 47 F8 BC E6 E5 63 A4 40 F2 77 03 7D 81 2D EB 33 A0 F4 A1 39 45 D8 98 C2 96
    4F E3 42 E2 FE 1A 7F 9B 8E E7 EB 4A 7C 0F 9E 16 2B CE 33 57 6B 31 5E CE CB B6 40 68 37 BF 51 F5";

const SERVER_VECTORS: [&str; 4] = [
    "55 01 00 00 01 02 00 08 07 00 01 03 08 00 01 00",
    "55 03 00 00 01 02 00 09 0A 00 02 08 00 11 00 01 00",
    "55 03 00 00 01 02 00 08 11 00 01 01 12 00 01 01",
    "55 0F 00 00 01 02 00 04 01 00 01 09",
];

const BASE_CONFIG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<device xsi:type="axl:XIPPhone" ctiid="12">
  <fullConfig>true</fullConfig>
  <ipAddressMode>0</ipAddressMode>
  <loadInformation>sip88xx.14-2-1-0101-30</loadInformation>
  <capfAuthMode>0</capfAuthMode>
  <capfList><capf><phonePort>3804</phonePort><processNodeName>old</processNodeName></capf></capfList>
  <devicePool><name>Default &amp; more</name><![CDATA[raw <text>]]></devicePool>
  <!-- comment -->
</device>
"#;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// One session-target event carrying a whole message, ids and length patched.
fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![3];
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

fn session_seed(config: u8, messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![config];
    for m in messages {
        out.extend(frame(m));
    }
    out
}

#[test]
#[ignore = "writes fuzz/seeds; run explicitly after a format change"]
fn write_fuzz_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("capf-data"));
    capf::cli::initialise(&data, &Settings::default(), None, None, false).unwrap();
    let ca = capf::ca::Ca::load(&data.certs(), 5 * 365).unwrap();
    let capf_der = ca.certificate_der().to_vec();

    // Protocol: every vector, plus a STORE_CERTIFICATE_REQUEST and a fetch response
    // carrying capf's real certificate (V8's shape).
    let wrapped = capf::protocol::WrappedCertificate {
        cert_type: capf::protocol::CertificateType::Lsc,
        der: capf_der.clone(),
    };
    let v8 = ServerMessage::StoreCertificateRequest(wrapped.clone())
        .encode(0x102)
        .unwrap();
    let fetched = ClientMessage::FetchCertificateResponse {
        reason: Some(capf::protocol::Reason::UpdateCertificate),
        certificate: Some(wrapped),
    }
    .encode(0x102)
    .unwrap();
    let deleted = ClientMessage::DeleteCertificateResponse {
        reason: Some(capf::protocol::Reason::UpdateCertificate),
    }
    .encode(0x102)
    .unwrap();
    let mut protocol: Vec<(String, Vec<u8>)> = CLIENT_VECTORS
        .iter()
        .chain(SERVER_VECTORS.iter())
        .chain([V7].iter())
        .enumerate()
        .map(|(i, v)| (format!("vector-{i}"), hex(v)))
        .collect();
    protocol.push(("v8-store-request".into(), v8));
    protocol.push(("fetch-response".into(), fetched.clone()));
    protocol.push(("delete-response".into(), deleted.clone()));
    let protocol: Vec<(&str, Vec<u8>)> = protocol
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    write_seeds("protocol_decode", &protocol);

    // Session: whole conversations of §8 (configuration byte, see the target).
    let [v2, v3, v6, v9] = CLIENT_VECTORS.map(hex);
    let v7 = hex(V7);
    write_seeds(
        "session",
        &[
            // Install, authentication string, RSA.
            (
                "install-string",
                session_seed(0x05, &[v2.clone(), v6.clone(), v7.clone(), v9.clone()]),
            ),
            // Install, null string, EC, legacy client.
            ("install-null-ec-v2", session_seed(0x11, &[v3.clone(), v7])),
            ("troubleshoot", session_seed(0x03, &[v2.clone(), fetched])),
            ("delete", session_seed(0x02, &[v2.clone(), deleted])),
            (
                "no-operation",
                session_seed(0x00, std::slice::from_ref(&v3)),
            ),
            (
                "unknown-device",
                session_seed(0x80, std::slice::from_ref(&v2)),
            ),
            ("timeout-after-keygen", {
                let mut s = session_seed(0x01, &[v3, v6]);
                s.push(4);
                s
            }),
        ],
    );

    // TFTP files, signed by capf's own signer.
    let signer = Signer::load(&data.tftp_cert(), &data.tftp_key(), Digest::Sha1).unwrap();
    let sgn_file = sgn::build(
        &signer,
        "SEP001122334455.cnf.xml.sgn",
        BASE_CONFIG.as_bytes(),
        NOW,
    )
    .unwrap();
    let itl_file = itl::build_standard(&signer, &capf_der, NOW).unwrap();
    let phone_key =
        rsa::PrivateKey::from_pkcs8_pem(include_str!("../fuzz/keys/phone-test-key.pem")).unwrap();
    let spki = phone_key
        .to_public_key()
        .to_public_key_der()
        .unwrap()
        .into_vec();
    let enc_file = enc::build(
        &signer,
        "SEP001122334455.cnf.xml.enc.sgn",
        BASE_CONFIG.as_bytes(),
        &spki,
        NOW,
        &mut rand::rng(),
    )
    .unwrap();
    write_seeds(
        "sgn_parse",
        &[
            ("config.sgn", sgn_file.clone()),
            ("config.enc.sgn", enc_file.clone()),
            ("ITLFile.tlv", itl_file.clone()),
        ],
    );
    write_seeds("itl_parse", &[("ITLFile.tlv", itl_file)]);
    write_seeds("enc_decrypt", &[("config.enc.sgn", enc_file)]);
    write_seeds(
        "device_document",
        &[
            ("base.xml", BASE_CONFIG.as_bytes().to_vec()),
            ("minimal.xml", b"<device/>".to_vec()),
        ],
    );
    write_seeds(
        "csv_import",
        &[
            (
                "rows.csv",
                b"name,operation,auth,auth_string,key,encrypted_config\n\
                  SEP001122334455,install,string,123456,rsa:2048,true\n\
                  sep00112233445a,delete,null,,ec:p256,no\n\
                  \"CSFUSER\",troubleshoot,mic,,\"ec-preferred:p384,rsa:2048\",0\n\
                  SEP0011223344AA,,string,,,\n"
                    .to_vec(),
            ),
            (
                "header-only.csv",
                b"name,operation,auth,auth_string,key,encrypted_config\n".to_vec(),
            ),
        ],
    );
}

// ----------------------------------------------------------------------------------
// Regressions.

/// 100,000 nested elements: the tree was built without a depth limit, and dropping or
/// rendering it recursed once per level, overflowing the stack.
#[test]
fn deeply_nested_base_config_is_refused() {
    let depth = 100_000;
    let mut xml = String::from("<device>");
    xml.push_str(&"<a>".repeat(depth));
    xml.push_str(&"</a>".repeat(depth));
    xml.push_str("</device>");
    let parsed = capf::phone_config::format::document::DeviceDocument::parse(xml.as_bytes());
    assert!(parsed.is_err(), "a document nested {depth} deep is refused");
}

/// Replays a `session` fuzz input (format in fuzz/fuzz_targets/session.rs, reduced to
/// what the kept inputs use: configuration bits for operation, null authentication and
/// EC key order; events with ids and length patched) and checks the target's
/// invariants.
fn replay_session(input: &[u8]) {
    const ID: u32 = 0x0000_0102;
    let (&config, mut rest) = input.split_first().unwrap();
    let mut rec = DeviceRecord::new("SEP001122334455");
    rec.operation = match config & 3 {
        0 => Operation::None,
        1 => Operation::Install,
        2 => Operation::Delete,
        _ => Operation::Troubleshoot,
    };
    rec.auth = AuthMode::Null;
    if (config >> 4) & 3 == 1 {
        rec.key_order = KeyOrder::Ec {
            curve: EcCurve::P256,
        };
    }
    rec.status = OperationStatus::Pending;
    let (mut session, step) = Session::new(ID, "192.0.2.7:50000", SessionPolicy::default());
    let mut closed = false;
    let follow = |session: &mut Session, mut step: Step, closed: &mut bool| loop {
        if let Some(bytes) = &step.send {
            assert!(!*closed, "sent {bytes:02x?} after Close");
            assert_eq!(bytes[0], PROTOCOL_ID);
            assert_eq!(&bytes[2..6], &ID.to_be_bytes());
        }
        step = match step.next {
            Next::Close => {
                *closed = true;
                return;
            }
            Next::Read(_) => return,
            Next::LookupDevice(_) => session.on_device(Some(rec.clone()), NOW),
            Next::IssueLsc { .. } => session.on_lsc_issued(Err("no CA here".into()), NOW),
        };
    };
    follow(&mut session, step, &mut closed);
    while let Some((&control, tail)) = rest.split_first() {
        assert_eq!(control & 3, 3, "kept inputs patch ids and lengths");
        let (len, tail) = tail.split_first_chunk::<2>().unwrap();
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let mut frame = frame.to_vec();
        let payload_len = u16::try_from(frame.len() - HEADER_LEN).unwrap();
        frame[0] = PROTOCOL_ID;
        frame[2..6].copy_from_slice(&ID.to_be_bytes());
        frame[6..8].copy_from_slice(&payload_len.to_be_bytes());
        let raw: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
        let step = match session.check_header(&raw, NOW) {
            Ok(header) => session.on_message(&header, &frame[HEADER_LEN..], NOW),
            Err(step) => step,
        };
        follow(&mut session, step, &mut closed);
    }
    assert!(closed, "the kept input ends the session");
}

/// A legacy client asked for an EC-only device is sent END 7; the key it then sends
/// anyway was answered with a second END_SESSION after `Next::Close`.
#[test]
fn nothing_is_sent_after_the_session_closed() {
    replay_session(include_bytes!("data/fuzz/session-reply-after-close.bin"));
}

/// A device name whose third byte falls inside a multi-byte character: the SEP-name
/// check sliced the string there and panicked.
#[test]
fn import_row_with_a_multibyte_name_is_an_error() {
    let rows = capf::cli::parse_import(&include_bytes!("data/fuzz/csv-multibyte-name.csv")[..])
        .expect("the header is valid");
    assert!(rows.iter().any(|(_, row)| row.is_err()));
    let rows = capf::cli::parse_import(
        "name,operation,auth,auth_string,key,encrypted_config\nSE\u{7c9}011223344AA,,,,,\n"
            .as_bytes(),
    )
    .unwrap();
    let (line, row) = &rows[0];
    assert_eq!(*line, 2);
    let err = row.as_ref().err().expect("an invalid name").to_string();
    assert!(err.contains("field name"), "{err}");
}
