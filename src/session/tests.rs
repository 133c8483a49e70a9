//! Whole conversations of capf-protocol.md §8, byte for byte, without a network.

use super::*;
use crate::model::*;
use crate::protocol::*;

const ID: u32 = 0x0000_0102;
const NOW: UnixTime = 1_800_000_000;
const NAME: &str = "SEP001122334455";

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn start() -> Session {
    let (session, step) = Session::new(ID, "192.0.2.7:50000", SessionPolicy::default());
    // V1: AUTH_REQUEST, version 3, auth type NONE.
    assert_eq!(
        step.send.unwrap(),
        hex("55 01 00 00 01 02 00 08 07 00 01 03 08 00 01 00")
    );
    assert_eq!(step.next, Next::Read(Wait::Message));
    session
}

/// Feeds raw client bytes through the header check and the message handler.
fn feed(session: &mut Session, bytes: &[u8]) -> Step {
    let raw: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
    match session.check_header(&raw, NOW) {
        Ok(header) => session.on_message(&header, &bytes[HEADER_LEN..], NOW),
        Err(step) => step,
    }
}

fn send(session: &mut Session, msg: ClientMessage) -> Step {
    feed(session, &msg.encode(ID).unwrap())
}

fn auth(name: &str, password: Option<&str>, version: Option<u8>) -> ClientMessage {
    ClientMessage::AuthResponse(AuthResponse {
        version,
        device_name: Some(name.into()),
        password: password.map(|p| p.as_bytes().to_vec()),
        reason: Some(Reason::UpdateCertificate),
        ..Default::default()
    })
}

fn device(op: Operation, mode: AuthMode) -> DeviceRecord {
    let mut d = DeviceRecord::new(NAME);
    d.operation = op;
    d.auth = mode;
    if mode == AuthMode::String {
        d.auth_string = Some("123456".into());
    }
    d.status = OperationStatus::Pending;
    d
}

fn end_reason(step: &Step) -> u8 {
    assert_eq!(step.next, Next::Close);
    let bytes = step.send.as_ref().expect("END_SESSION sent");
    assert_eq!(bytes[1], Command::EndSession.to_u8());
    assert_eq!(&bytes[2..6], &ID.to_be_bytes());
    *bytes.last().unwrap()
}

/// Applies a step's commit to `rec` the way the store would.
fn apply(step: &Step, rec: &mut DeviceRecord) {
    if let Some(commit) = &step.commit {
        if let Some(change) = &commit.change {
            assert_eq!(
                commit.device.as_deref(),
                Some(rec.name.as_str()),
                "change without its device"
            );
            change.apply(rec);
        }
    }
}

fn fake_cert(serial: &str) -> EnrolledCert {
    EnrolledCert {
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        public_key: vec![1, 2, 3],
        md5: "00".repeat(16),
        sha256: "00".repeat(32),
        serial: serial.into(),
        not_before: NOW,
        not_after: NOW + 86_400,
        key: KeySpec::Rsa { bits: 2048 },
        issuer: "CN=CAPF-test".into(),
        subject: format!("CN={NAME}"),
    }
}

/// Authenticates `rec` with the given message and returns the step after lookup.
fn authenticate_with(session: &mut Session, msg: ClientMessage, rec: Option<DeviceRecord>) -> Step {
    let step = send(session, msg);
    assert_eq!(step.next, Next::LookupDevice(NAME.into()));
    assert!(step.send.is_none());
    session.on_device(rec, NOW)
}

#[test]
fn rsa_install_with_authentication_string_commits_only_on_confirmation() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::String);
    // V2: AUTH_RESPONSE with password "123456".
    let step = feed(
        &mut s,
        &hex(
            "55 02 00 00 01 02 00 25 01 00 01 01 07 00 01 03 0B 00 07 31 32 33 34 35 36 00
              0D 00 10 53 45 50 30 30 31 31 32 32 33 33 34 34 35 35 00",
        ),
    );
    assert_eq!(step.next, Next::LookupDevice(NAME.into()));
    let step = s.on_device(Some(rec.clone()), NOW);
    // V4: KEY_GENERATE_REQUEST RSA 2048 with KEY_TYPE for a version-3 client.
    assert_eq!(
        step.send.unwrap(),
        hex("55 03 00 00 01 02 00 09 0A 00 02 08 00 11 00 01 00")
    );
    assert_eq!(step.next, Next::Read(Wait::KeyGeneration));

    // V6, any number of times: keep-alives that restart the key-generation timer.
    for _ in 0..3 {
        let step = feed(&mut s, &hex("55 11 00 00 01 02 00 00"));
        assert_eq!(
            step,
            Step {
                commit: None,
                send: None,
                next: Next::Read(Wait::KeyGeneration)
            }
        );
    }
    let spki = vec![0x30, 0x01, 0x00];
    let step = send(
        &mut s,
        ClientMessage::KeyGenerateResponse {
            public_key: Some(spki.clone()),
            reason: None,
        },
    );
    assert_eq!(
        step.next,
        Next::IssueLsc {
            device: NAME.into(),
            public_key: spki,
            key: KeySpec::Rsa { bits: 2048 }
        }
    );

    let cert = fake_cert("0a0b");
    let step = s.on_lsc_issued(Ok(cert.clone()), NOW);
    let commit = step.commit.as_ref().unwrap();
    assert!(!commit.durable);
    assert_eq!(commit.serials[0].0, "0a0b");
    assert_eq!(commit.serials[0].1.state, SerialState::Unconfirmed);
    apply(&step, &mut rec);
    assert!(rec.lsc.is_none(), "an unconfirmed LSC is never installed");
    assert_eq!(rec.unconfirmed_lsc.as_ref().unwrap().serial, "0a0b");
    let sent = step.send.as_ref().unwrap();
    assert_eq!(sent[1], Command::StoreCertificateRequest.to_u8());
    assert!(sent.ends_with(&cert.der));

    // V9: stored.
    let step = feed(&mut s, &hex("55 0A 00 00 01 02 00 04 01 00 01 01"));
    assert_eq!(end_reason(&step), 1);
    let commit = step.commit.as_ref().unwrap();
    assert!(
        commit.durable,
        "installed state must be durable before END_SESSION"
    );
    assert_eq!(commit.serials[0].1.state, SerialState::Installed);
    apply(&step, &mut rec);
    assert_eq!(rec.lsc.as_ref().unwrap().serial, "0a0b");
    assert!(rec.unconfirmed_lsc.is_none());
    assert_eq!(rec.operation, Operation::None);
    assert_eq!(rec.status, OperationStatus::UpgradeSuccess);
    assert!(s.is_ended());
    assert_eq!(s.summary().result, "Upgrade Success");
    assert_eq!(s.summary().outcome(), Outcome::Success);
}

#[test]
fn wrong_string_fails_counts_and_locks_out_after_the_limit() {
    let mut rec = device(Operation::Install, AuthMode::String);
    for attempt in 1..=10 {
        let mut s = start();
        let step = authenticate_with(
            &mut s,
            auth(NAME, Some("654321"), Some(3)),
            Some(rec.clone()),
        );
        assert_eq!(end_reason(&step), 7);
        assert_eq!(
            s.summary().outcome(),
            Outcome::Failure("invalid_auth_string")
        );
        assert_eq!(s.summary().lockout, attempt == 10, "attempt {attempt}");
        apply(&step, &mut rec);
        assert_eq!(
            rec.status,
            OperationStatus::UpgradeFailed("Invalid Authentication String".into())
        );
        if attempt < 10 {
            assert_eq!(rec.failed_auth, attempt);
            assert!(!rec.is_locked(NOW));
        }
    }
    assert!(rec.is_locked(NOW), "locked after 10 failures");
    assert_eq!(
        rec.operation,
        Operation::Install,
        "operation stays scheduled"
    );

    // While locked even the right string is refused without being evaluated.
    let mut s = start();
    let step = authenticate_with(
        &mut s,
        auth(NAME, Some("123456"), Some(3)),
        Some(rec.clone()),
    );
    assert_eq!(end_reason(&step), 7);
    assert!(matches!(
        step.commit.as_ref().unwrap().change,
        Some(DeviceChange::Attempted { .. })
    ));
    assert_eq!(s.summary().outcome(), Outcome::Failure("locked_out"));
    assert!(!s.summary().lockout, "already locked: no new lockout");

    // After the period it is evaluated again, and a success resets the count.
    let later = NOW + 601;
    let mut s = start();
    send(&mut s, auth(NAME, Some("123456"), Some(3)));
    let step = s.on_device(Some(rec.clone()), later);
    assert_eq!(step.next, Next::Read(Wait::KeyGeneration));
}

#[test]
fn absent_password_is_a_wrong_string() {
    let mut s = start();
    let step = authenticate_with(
        &mut s,
        auth(NAME, None, Some(3)),
        Some(device(Operation::Install, AuthMode::String)),
    );
    assert_eq!(end_reason(&step), 7);
}

#[test]
fn unknown_device_gets_reason_9_before_any_credential_check() {
    let mut s = start();
    let step = authenticate_with(&mut s, auth(NAME, Some("x"), Some(3)), None);
    // V10.
    assert_eq!(
        step.send.as_ref().unwrap(),
        &hex("55 0F 00 00 01 02 00 04 01 00 01 09")
    );
    let commit = step.commit.as_ref().unwrap();
    assert!(commit.device.is_none() && commit.change.is_none());
    assert_eq!(commit.event.result, "Unknown Device");
    assert_eq!(s.summary().outcome(), Outcome::Failure("unknown_device"));
}

#[test]
fn no_pending_operation_ends_with_reason_0() {
    let mut s = start();
    let step = authenticate_with(
        &mut s,
        auth(NAME, Some(""), Some(3)),
        Some(device(Operation::None, AuthMode::Null)),
    );
    assert_eq!(end_reason(&step), 0);
    assert_eq!(s.summary().outcome(), Outcome::NoOperation);
}

#[test]
fn legacy_client_without_password_gets_rsa_from_an_ec_preferred_device() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    rec.key_order = KeyOrder::EcPreferred {
        curve: EcCurve::P256,
        bits: 2048,
    };
    // V3: version 2, no password, REASON last.
    let step = feed(
        &mut s,
        &hex(
            "55 02 00 00 01 02 00 1B 07 00 01 02 0D 00 10 53 45 50 30 30 31 31 32 32 33 33
              34 34 35 35 00 01 00 01 01",
        ),
    );
    assert_eq!(step.next, Next::LookupDevice(NAME.into()));
    let step = s.on_device(Some(rec), NOW);
    // KEY_SIZE alone, as CUCM sent it to a version-2 client.
    assert_eq!(
        step.send.unwrap(),
        hex("55 03 00 00 01 02 00 05 0A 00 02 08 00")
    );
    let step = send(
        &mut s,
        ClientMessage::KeyGenerateResponse {
            public_key: Some(vec![0x30, 0x00]),
            reason: None,
        },
    );
    assert!(matches!(
        step.next,
        Next::IssueLsc {
            key: KeySpec::Rsa { bits: 2048 },
            ..
        }
    ));
}

#[test]
fn version_3_client_gets_ec_on_the_configured_curve() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    rec.key_order = KeyOrder::Ec {
        curve: EcCurve::P384,
    };
    let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec));
    // V5: KEY_TYPE EC, CURVE secp384r1.
    assert_eq!(
        step.send.unwrap(),
        hex("55 03 00 00 01 02 00 08 11 00 01 01 12 00 01 01")
    );
}

#[test]
fn ec_only_device_refuses_a_legacy_client() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    rec.key_order = KeyOrder::Ec {
        curve: EcCurve::P256,
    };
    let step = authenticate_with(&mut s, auth(NAME, None, Some(2)), Some(rec.clone()));
    assert_eq!(end_reason(&step), 7);
    apply(&step, &mut rec);
    assert_eq!(
        rec.status,
        OperationStatus::UpgradeFailed("Client Cannot Generate EC Keys".into())
    );
}

#[test]
fn phone_that_drops_after_receiving_its_certificate_leaves_the_operation_pending() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    send(
        &mut s,
        ClientMessage::KeyGenerateResponse {
            public_key: Some(vec![0x30, 0x00]),
            reason: None,
        },
    );
    let step = s.on_lsc_issued(Ok(fake_cert("01")), NOW);
    apply(&step, &mut rec);
    let step = s.on_eof(NOW);
    assert!(step.send.is_none());
    assert_eq!(step.next, Next::Close);
    apply(&step, &mut rec);
    assert!(rec.lsc.is_none());
    assert_eq!(rec.operation, Operation::Install);
    assert_eq!(
        rec.status,
        OperationStatus::UpgradeFailed("Connection Closed".into())
    );
    assert_eq!(rec.unconfirmed_lsc.as_ref().unwrap().serial, "01");
}

#[test]
fn phone_that_refuses_to_store_gets_reason_1_and_stays_pending() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    send(
        &mut s,
        ClientMessage::KeyGenerateResponse {
            public_key: Some(vec![0x30, 0x00]),
            reason: None,
        },
    );
    s.on_lsc_issued(Ok(fake_cert("01")), NOW);
    let step = send(
        &mut s,
        ClientMessage::StoreCertificateResponse {
            reason: Some(Reason::InvalidElement),
        },
    );
    assert_eq!(end_reason(&step), 1);
    apply(&step, &mut rec);
    assert!(rec.lsc.is_none());
    assert_eq!(rec.operation, Operation::Install);
}

#[test]
fn key_generation_failures_and_refused_keys_end_with_7() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    let step = send(
        &mut s,
        ClientMessage::KeyGenerateResponse {
            public_key: None,
            reason: Some(Reason::InvalidElement),
        },
    );
    assert_eq!(end_reason(&step), 7);
    apply(&step, &mut rec);
    assert_eq!(
        rec.status,
        OperationStatus::UpgradeFailed("Key Generation Failed".into())
    );
    assert_eq!(
        s.summary().outcome(),
        Outcome::Failure("key_generation_failed")
    );

    let mut s = start();
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    send(
        &mut s,
        ClientMessage::KeyGenerateResponse {
            public_key: Some(vec![0x30, 0x00]),
            reason: None,
        },
    );
    let step = s.on_lsc_issued(
        Err("key size 1024 does not match the requested 2048".into()),
        NOW,
    );
    assert_eq!(end_reason(&step), 7);
    apply(&step, &mut rec);
    assert!(matches!(rec.status, OperationStatus::UpgradeFailed(ref r) if r.contains("1024")));
    assert!(rec.unconfirmed_lsc.is_none());
}

#[test]
fn timeout_while_waiting_for_the_key_ends_with_7() {
    let mut s = start();
    let mut rec = device(Operation::Install, AuthMode::Null);
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    let step = s.on_timeout(NOW);
    assert_eq!(end_reason(&step), 7);
    apply(&step, &mut rec);
    assert_eq!(rec.status, OperationStatus::UpgradeFailed("Timeout".into()));
    assert_eq!(rec.operation, Operation::Install);
    assert_eq!(s.summary().outcome(), Outcome::Failure("timeout"));
}

#[test]
fn failure_reasons_are_labels_from_the_fixed_list() {
    for (result, reason) in [
        ("Authentication Failed: Invalid MIC", "invalid_mic"),
        (
            "Authentication Failed: Invalid Credentials: SUDI Required",
            "sudi_required",
        ),
        ("Protocol Error: invalid device name", "protocol_error"),
        ("Upgrade Failed: Protocol Error", "protocol_error"),
        (
            "Upgrade Failed: Refused Key: the key is capf's own CAPF CA key",
            "key_refused",
        ),
        (
            "Refused: Too Many Failures From This Address",
            "address_limited",
        ),
        ("Refused: Busy: Other Attempts In Flight", "busy"),
        ("Aborted: store error", "aborted"),
        (
            "Delete Failed: Phone Did Not Delete The Certificate",
            "not_deleted",
        ),
        (
            "Troubleshoot Failed: No Certificate On Phone",
            "no_certificate",
        ),
        ("Upgrade Failed: key size 1024 does not match", "other"),
        ("", "other"),
    ] {
        let summary = Summary {
            result: result.into(),
            ..Summary::default()
        };
        assert_eq!(summary.outcome(), Outcome::Failure(reason), "{result}");
        assert!(crate::session::FAILURE_REASONS.contains(&reason));
    }
}

#[test]
fn delete_clears_the_lsc_only_when_the_phone_confirms() {
    let mut rec = device(Operation::Delete, AuthMode::Null);
    rec.lsc = Some(fake_cert("0c"));
    let mut s = start();
    let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    assert_eq!(step.send.unwrap(), hex("55 0D 00 00 01 02 00 00"));
    let step = s.on_eof(NOW);
    apply(&step, &mut rec);
    assert!(rec.lsc.is_some(), "no confirmation, nothing deleted");

    let mut s = start();
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    let step = send(
        &mut s,
        ClientMessage::DeleteCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
        },
    );
    assert_eq!(end_reason(&step), 1);
    let commit = step.commit.as_ref().unwrap();
    assert!(commit.durable);
    assert_eq!(
        commit.serials,
        vec![(
            "0c".to_string(),
            SerialRecord {
                device: NAME.into(),
                state: SerialState::Superseded,
                issued: NOW,
                revoked: Some(Revocation {
                    time: NOW,
                    reason: RevocationReason::CessationOfOperation
                }),
            }
        )]
    );
    apply(&step, &mut rec);
    assert!(rec.lsc.is_none());
    assert_eq!(rec.status, OperationStatus::DeleteSuccess);
    assert_eq!(rec.operation, Operation::None);
}

#[test]
fn troubleshoot_keeps_an_untrusted_certificate_apart_and_records_only_what_parses() {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![NAME.to_string()]).unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();

    let mut rec = device(Operation::Troubleshoot, AuthMode::Null);
    let mut s = start();
    let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    assert_eq!(step.send.unwrap(), hex("55 0B 00 00 01 02 00 00"));
    let step = send(
        &mut s,
        ClientMessage::FetchCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
            certificate: Some(WrappedCertificate {
                cert_type: CertificateType::Lsc,
                der: der.clone(),
            }),
        },
    );
    assert_eq!(end_reason(&step), 0);
    apply(&step, &mut rec);
    // Self-signed, so not trusted: shown, never adopted as the device's LSC.
    assert!(rec.lsc.is_none());
    assert_eq!(rec.fetched_untrusted.as_ref().unwrap().der, der);
    assert_eq!(rec.status, OperationStatus::TroubleshootSuccess);
    let event = &step.commit.as_ref().unwrap().event;
    assert_eq!(event.details["trusted"], false);

    // A certificate that does not parse is not recorded.
    let mut rec = device(Operation::Troubleshoot, AuthMode::Null);
    let mut s = start();
    authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    let step = send(
        &mut s,
        ClientMessage::FetchCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
            certificate: Some(WrappedCertificate {
                cert_type: CertificateType::Lsc,
                der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            }),
        },
    );
    assert_eq!(end_reason(&step), 7);
    apply(&step, &mut rec);
    assert!(rec.lsc.is_none());
    assert_eq!(
        rec.status,
        OperationStatus::TroubleshootFailed("Invalid Certificate".into())
    );
}

#[test]
fn late_request_is_refused_and_says_so() {
    let mut rec = device(Operation::Install, AuthMode::Null);
    rec.deadline = Some(NOW - 1);
    let mut s = start();
    let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
    assert_eq!(end_reason(&step), 7);
    apply(&step, &mut rec);
    assert_eq!(
        rec.status,
        OperationStatus::UpgradeFailed("Late Request".into())
    );
}

#[test]
fn malformed_and_unexpected_input_ends_with_7() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong protocol id (R2)", hex("54 02 00 00 01 02 00 00")),
        ("wrong session id (R3)", hex("55 02 00 00 01 03 00 00")),
        ("payload over the cap (R4)", hex("55 02 00 00 01 02 FF FF")),
        (
            "element overrun (R4)",
            hex("55 02 00 00 01 02 00 04 0D 00 09 41"),
        ),
        (
            "fixed size wrong (R4)",
            hex("55 02 00 00 01 02 00 05 07 00 02 03 00"),
        ),
        ("server-only command (R7)", hex("55 01 00 00 01 02 00 00")),
        (
            "response in the wrong state (R7)",
            hex("55 0A 00 00 01 02 00 04 01 00 01 01"),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = start();
        let step = feed(&mut s, &bytes);
        assert_eq!(end_reason(&step), 7, "{what}");
        assert!(s.is_ended(), "{what}");
    }

    let bad_auth = vec![
        ("version 4 (R12)", auth(NAME, Some(""), Some(4))),
        (
            "no device name (R8)",
            ClientMessage::AuthResponse(AuthResponse {
                version: Some(3),
                ..Default::default()
            }),
        ),
        (
            "path in device name (R8)",
            auth("../../etc/passwd", Some(""), Some(3)),
        ),
    ];
    for (what, msg) in bad_auth {
        let mut s = start();
        let step = send(&mut s, msg);
        assert_eq!(end_reason(&step), 7, "{what}");
        assert!(
            step.commit.is_none(),
            "{what}: nothing recorded for an unnamed device"
        );
    }

    // Duplicate DEVICE_NAME (R6).
    let mut s = start();
    let step = feed(
        &mut s,
        &hex("55 02 00 00 01 02 00 0A 0D 00 02 41 00 0D 00 02 42 00"),
    );
    assert_eq!(end_reason(&step), 7);
}

#[test]
fn nothing_is_evaluated_after_end_session() {
    let mut s = start();
    let step = authenticate_with(&mut s, auth(NAME, None, Some(3)), None);
    assert_eq!(end_reason(&step), 9);
    let step = s.on_eof(NOW);
    assert_eq!(step, close());
    let step = s.on_timeout(NOW);
    assert_eq!(step, close());
}

#[test]
fn certificate_mode_without_trust_anchors_fails_closed() {
    let mut s = start();
    let mut msg = auth(NAME, None, Some(3));
    if let ClientMessage::AuthResponse(a) = &mut msg {
        a.sudi = Some(SudiData {
            certificate: vec![0x30, 0x00],
            sha1_signature: vec![],
            sha2_hash: crate::protocol::HashId::Sha512,
            sha2_signature: vec![],
        });
    }
    let step = authenticate_with(&mut s, msg, Some(device(Operation::Install, AuthMode::Lsc)));
    assert_eq!(end_reason(&step), 7);
}
