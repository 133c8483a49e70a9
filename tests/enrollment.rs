//! End-to-end enrollment over real TLS on 127.0.0.1 with a real sled store.

mod common;

use capf::model::{
    AuthMode, DeviceRecord, EcCurve, KeyOrder, KeySpec, Operation, OperationStatus, SerialState,
};
use capf::phone::Phone;
use capf::protocol::{CertificateType, Reason, WrappedCertificate, HEADER_LEN};
use common::{install, TestNode};
use md5::Digest;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "SEP001122334455";

#[tokio::test]
async fn rsa_2048_install_with_authentication_string() {
    let node = TestNode::start().await;
    node.add(install(
        NAME,
        AuthMode::String,
        KeyOrder::Rsa { bits: 2048 },
    ));
    let mut phone = Phone::new(NAME);
    phone.password = Some("123456".into());
    phone.in_progress = 3;
    let outcome = node.run(&phone).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let (der, _key) = outcome.issued.expect("LSC issued");

    let rec = node.device(NAME);
    let lsc = rec.lsc.expect("LSC recorded");
    assert_eq!(
        lsc.der, der,
        "the store holds exactly what the phone received"
    );
    assert_eq!(lsc.md5, hex::encode(md5::Md5::digest(&der)));
    assert_eq!(lsc.sha256, hex::encode(sha2::Sha256::digest(&der)));
    assert_eq!(lsc.key, KeySpec::Rsa { bits: 2048 });
    assert_eq!(rec.status, OperationStatus::UpgradeSuccess);
    assert_eq!(rec.operation, Operation::None);
    assert!(rec.unconfirmed_lsc.is_none());
    let serial = node
        .store
        .serial(&lsc.serial)
        .unwrap()
        .expect("serial indexed");
    assert_eq!(serial.state, SerialState::Installed);
    assert_eq!(serial.device, NAME);

    let events = node.store.events(Some(NAME), None, None).unwrap();
    assert!(events.iter().any(|e| e.result == "Upgrade Success"));
    node.stop().await;
}

#[tokio::test]
async fn ec_p256_install_with_null_string_and_issued_lsc_matches_section_9() {
    let node = TestNode::start().await;
    node.add(install(
        NAME,
        AuthMode::Null,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    ));
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let (der, key) = outcome.issued.expect("LSC issued");
    let rec = node.device(NAME);
    assert_eq!(
        rec.lsc.as_ref().unwrap().key,
        KeySpec::Ec {
            curve: EcCurve::P256
        }
    );

    // §9 profile, read with x509-parser.
    use x509_parser::prelude::*;
    let (rest, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        cert.public_key().raw,
        key.public_key_der().unwrap().as_slice(),
        "the LSC carries exactly the phone's key"
    );
    let cn: Vec<_> = cert.subject().iter_common_name().collect();
    assert_eq!(cn[0].as_str().unwrap(), NAME);
    let (_, capf) = X509Certificate::from_der(node.capf_cert.as_ref()).unwrap();
    assert_eq!(cert.issuer(), capf.subject(), "issuer is the CAPF subject");
    cert.verify_signature(Some(capf.public_key())).unwrap();
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature() && ku.value.key_encipherment());
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(eku
        .value
        .other
        .iter()
        .any(|o| o.to_id_string() == "1.3.6.1.5.5.7.3.5"));
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(matches!(san.value.general_names[0], GeneralName::URI(u) if u == NAME));
    let serial = cert.raw_serial();
    assert!(serial.len() <= 16 && serial[0] & 0x80 == 0);

    // An independent verifier: OpenSSL, as a TLS client certificate.
    verify_with_openssl(&node, &der);
    node.stop().await;
}

fn verify_with_openssl(node: &TestNode, der: &[u8]) {
    let Ok(out) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        eprintln!("openssl not installed: independent verification skipped");
        return;
    };
    assert!(out.status.success());
    let dir = node.dir.path();
    std::fs::write(dir.join("lsc.der"), der).unwrap();
    let conv = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(dir.join("lsc.der"))
        .arg("-out")
        .arg(dir.join("lsc.pem"))
        .status()
        .unwrap();
    assert!(conv.success());
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(node.data.capf_cert())
        .arg(dir.join("lsc.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OK"),
        "openssl verify: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn ec_preferred_device_gives_a_version_2_client_rsa() {
    let node = TestNode::start().await;
    node.add(install(
        NAME,
        AuthMode::Null,
        KeyOrder::EcPreferred {
            curve: EcCurve::P256,
            bits: 2048,
        },
    ));
    let mut phone = Phone::new(NAME);
    phone.version = Some(2);
    phone.password = None;
    phone.in_progress = 0;
    let outcome = node.run(&phone).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    assert_eq!(
        node.device(NAME).lsc.unwrap().key,
        KeySpec::Rsa { bits: 2048 }
    );
    node.stop().await;
}

#[tokio::test]
async fn wrong_string_is_refused_and_nothing_is_stored() {
    let node = TestNode::start().await;
    node.add(install(
        NAME,
        AuthMode::String,
        KeyOrder::Rsa { bits: 2048 },
    ));
    let mut phone = Phone::new(NAME);
    phone.password = Some("999999".into());
    let outcome = node.run(&phone).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert!(outcome.issued.is_none());
    let rec = node.device(NAME);
    assert!(rec.lsc.is_none() && rec.unconfirmed_lsc.is_none());
    assert_eq!(
        rec.status,
        OperationStatus::UpgradeFailed("Invalid Authentication String".into())
    );
    assert_eq!(rec.failed_auth, 1);
    assert_eq!(rec.operation, Operation::Install);
    node.stop().await;
}

#[tokio::test]
async fn unknown_device_and_no_operation() {
    let node = TestNode::start().await;
    let outcome = node.run(&Phone::new("SEP0000000000AA")).await;
    assert_eq!(outcome.end_reason, Some(Reason::UnknownDevice));

    node.add(DeviceRecord::new(NAME));
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.end_reason, Some(Reason::NoAction));
    node.stop().await;
}

#[tokio::test]
async fn troubleshoot_records_a_parsable_certificate_only() {
    let node = TestNode::start().await;
    let mut rec = DeviceRecord::new(NAME);
    rec.operation = Operation::Troubleshoot;
    node.add(rec);

    // Garbage where a certificate should be: refused, nothing recorded.
    let mut phone = Phone::new(NAME);
    phone.certificate = Some(WrappedCertificate {
        cert_type: CertificateType::Lsc,
        der: vec![0x30, 0x03, 0x02, 0x01, 0x05],
    });
    let outcome = node.run(&phone).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert!(node.device(NAME).lsc.is_none());

    // A real certificate is recorded with its hashes; self-signed, capf does not trust
    // it, so it is kept apart from the LSC (tests/attacks.rs has the trusted case).
    let key = rcgen::KeyPair::generate().unwrap();
    let der = rcgen::CertificateParams::new(vec![NAME.into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    phone.certificate = Some(WrappedCertificate {
        cert_type: CertificateType::Lsc,
        der: der.clone(),
    });
    let outcome = node.run(&phone).await;
    assert_eq!(outcome.end_reason, Some(Reason::NoAction));
    let rec = node.device(NAME);
    assert!(rec.lsc.is_none());
    let fetched = rec.fetched_untrusted.as_ref().unwrap();
    assert_eq!(fetched.der, der);
    assert_eq!(fetched.md5, hex::encode(md5::Md5::digest(&der)));
    assert_eq!(rec.status, OperationStatus::TroubleshootSuccess);
    node.stop().await;
}

#[tokio::test]
async fn delete_clears_the_lsc_after_the_phone_confirms() {
    let node = TestNode::start().await;
    node.add(install(
        NAME,
        AuthMode::Null,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    ));
    let outcome = node.run(&Phone::new(NAME)).await;
    let (der, _) = outcome.issued.unwrap();
    let serial = node.device(NAME).lsc.unwrap().serial;

    let mut rec = node.device(NAME);
    rec.operation = Operation::Delete;
    node.store.put_device(&rec, common::event(NAME)).unwrap();
    let mut phone = Phone::new(NAME);
    phone.certificate = Some(WrappedCertificate {
        cert_type: CertificateType::Lsc,
        der,
    });
    let outcome = node.run(&phone).await;
    assert!(outcome.delete_requested);
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let rec = node.device(NAME);
    assert!(rec.lsc.is_none());
    assert_eq!(rec.status, OperationStatus::DeleteSuccess);
    assert_eq!(
        node.store.serial(&serial).unwrap().unwrap().state,
        SerialState::Superseded
    );
    node.stop().await;
}

#[tokio::test]
async fn phone_dropping_before_confirmation_leaves_the_operation_pending() {
    let node = TestNode::start().await;
    node.add(install(
        NAME,
        AuthMode::Null,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    ));
    let mut phone = Phone::new(NAME);
    phone.drop_before_store_reply = true;
    let outcome = node.run(&phone).await;
    let (der, _) = outcome.issued.expect("certificate was sent");

    // The server notices the close; give it a moment to record the outcome.
    let rec = wait_for(&node, |r| {
        matches!(r.status, OperationStatus::UpgradeFailed(_))
    })
    .await;
    assert!(rec.lsc.is_none(), "never installed without confirmation");
    assert_eq!(rec.operation, Operation::Install);
    let unconfirmed = rec.unconfirmed_lsc.expect("issued LSC accounted for");
    assert_eq!(unconfirmed.der, der);
    assert_eq!(
        node.store
            .serial(&unconfirmed.serial)
            .unwrap()
            .unwrap()
            .state,
        SerialState::Unconfirmed
    );

    // The phone retries and succeeds; the first serial is superseded.
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    assert_eq!(
        node.store
            .serial(&unconfirmed.serial)
            .unwrap()
            .unwrap()
            .state,
        SerialState::Superseded
    );
    node.stop().await;
}

async fn wait_for(node: &TestNode, done: impl Fn(&DeviceRecord) -> bool) -> DeviceRecord {
    for _ in 0..100 {
        let rec = node.device(NAME);
        if done(&rec) {
            return rec;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "device never reached the expected state: {:?}",
        node.device(NAME).status
    );
}

/// Opens a TLS session, reads AUTH_REQUEST, sends what `craft` builds from the session
/// id, and returns the END_SESSION reason (or `None` if the server just closed).
async fn raw_session(node: &TestNode, craft: impl FnOnce(u32) -> Vec<u8>) -> Option<u8> {
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("capf").unwrap();
    let mut tls = node.connector.connect(name, tcp).await.unwrap();
    let mut hello = [0u8; 16];
    tls.read_exact(&mut hello).await.unwrap();
    let id = u32::from_be_bytes(hello[2..6].try_into().unwrap());
    let bytes = craft(id);
    let _ = tls.write_all(&bytes).await;
    let _ = tls.flush().await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "server must close within its timeouts");
    if reply.len() >= HEADER_LEN + 4 {
        assert_eq!(reply[0], 0x55);
        assert_eq!(reply[1], 15, "only END_SESSION may follow");
        assert_eq!(
            &reply[2..6],
            &id.to_be_bytes(),
            "server keeps its own session id"
        );
        Some(reply[HEADER_LEN + 3])
    } else {
        None
    }
}

fn msg(command: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x55, command];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn name_element(name: &[u8]) -> Vec<u8> {
    let mut v = vec![13];
    v.extend_from_slice(&(name.len() as u16 + 1).to_be_bytes());
    v.extend_from_slice(name);
    v.push(0);
    v
}

#[tokio::test]
async fn malformed_input_ends_with_7_or_a_close_and_the_server_keeps_serving() {
    let node = TestNode::start_with(|s| s.message_timeout = 1).await;
    node.add(DeviceRecord::new(NAME));
    let version3 = [7u8, 0, 1, 3];

    // R1: truncated header, then silence: the per-message timeout ends it with 7.
    assert_eq!(
        raw_session(&node, |id| msg(2, id, &[])[..5].to_vec()).await,
        Some(7)
    );
    // R2: wrong protocol id.
    assert_eq!(
        raw_session(&node, |id| {
            let mut m = msg(2, id, &version3);
            m[0] = 0x54;
            m
        })
        .await,
        Some(7)
    );
    // R3: someone else's session id.
    assert_eq!(
        raw_session(&node, |id| msg(2, id ^ 1, &version3)).await,
        Some(7)
    );
    // R4: announced payload over the cap, refused before reading it.
    assert_eq!(
        raw_session(&node, |id| {
            let mut m = msg(2, id, &[]);
            m[6] = 0xFF;
            m[7] = 0xFF;
            m
        })
        .await,
        Some(7)
    );
    // R4: a length that lies (more announced than sent): timeout, 7.
    assert_eq!(
        raw_session(&node, |id| {
            let mut m = msg(2, id, &version3);
            m[7] = 40;
            m
        })
        .await,
        Some(7)
    );
    // R4: element overrunning the payload; fixed-size element with a wrong length.
    assert_eq!(
        raw_session(&node, |id| msg(2, id, &[13, 0, 50, 0x41])).await,
        Some(7)
    );
    assert_eq!(
        raw_session(&node, |id| msg(2, id, &[7, 0, 2, 3, 0])).await,
        Some(7)
    );
    // R6: duplicate device name.
    assert_eq!(
        raw_session(&node, |id| {
            let mut p = name_element(NAME.as_bytes());
            p.extend(name_element(NAME.as_bytes()));
            msg(2, id, &p)
        })
        .await,
        Some(7)
    );
    // R7: a server-only command from the client.
    assert_eq!(raw_session(&node, |id| msg(9, id, &[])).await, Some(7));
    // R8: hostile device names.
    for bad in [&b"../../etc/passwd"[..], b"", &[0xFF, 0xFE], &[b'A'; 200]] {
        assert_eq!(
            raw_session(&node, |id| msg(2, id, &name_element(bad))).await,
            Some(7),
            "{bad:?}"
        );
    }
    // R12: version 4.
    assert_eq!(
        raw_session(&node, |id| {
            let mut p = vec![7, 0, 1, 4];
            p.extend(name_element(NAME.as_bytes()));
            msg(2, id, &p)
        })
        .await,
        Some(7)
    );
    // Unknown tags are skipped (R5): the session goes on to a normal ending.
    assert_eq!(
        raw_session(&node, |id| {
            let mut p = vec![19, 0, 2, 9, 9];
            p.extend(name_element(NAME.as_bytes()));
            p.extend([11, 0, 1, 0]);
            msg(2, id, &p)
        })
        .await,
        Some(0)
    );

    // And a real phone is still served.
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.end_reason, Some(Reason::NoAction));
    node.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_the_oldest_gives_way_at_the_cap() {
    let node = TestNode::start_with(|s| {
        s.handshake_timeout = 1;
        s.max_sessions = 2;
    })
    .await;
    node.add(DeviceRecord::new(NAME));

    // A TCP connection that never starts TLS is closed after the handshake timeout.
    let mut idle = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("closed within the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Two idle connections fill both slots: a third takes the place of the oldest,
    // which is closed at once (tests/attacks_net.rs has the floods).
    let mut a = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_millis(500), a.read(&mut buf))
        .await
        .expect("the oldest idle connection gave way at once")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // A phone, too, takes the place of an idle connection.
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.end_reason, Some(Reason::NoAction));
    drop((b, c));
    node.stop().await;
}

/// The default listener's refusal of TLS 1.0 is tested in tests/legacy_tls.rs (it needs
/// OpenSSL as the client).
#[tokio::test]
async fn a_phone_negotiates_tls_1_3() {
    let node = TestNode::start().await;
    node.add(DeviceRecord::new(NAME));
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.tls_version, "TLSv1_3");
    node.stop().await;
}

/// Phones never resume a CAPF session, so the server offers no resumption: a client
/// that keeps sessions gets a full handshake the second time too.
#[tokio::test]
async fn a_second_connection_gets_a_full_handshake() {
    let node = TestNode::start().await;
    let name = rustls::pki_types::ServerName::try_from("capf.test").unwrap();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let mut tls = node.connector.connect(name.clone(), tcp).await.unwrap();
        // TLS 1.3 tickets arrive after the handshake: read the first CAPF message so
        // any ticket sent before it has been processed.
        let mut header = [0u8; HEADER_LEN];
        tls.read_exact(&mut header).await.unwrap();
        let (_, conn) = tls.get_ref();
        assert_eq!(
            conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "no resumption"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn an_operation_past_its_deadline_is_refused_as_a_late_request() {
    let node = TestNode::start().await;
    let mut rec = install(
        NAME,
        AuthMode::Null,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    );
    rec.deadline = Some(capf::model::now() - 60);
    node.add(rec);
    let outcome = node.run(&Phone::new(NAME)).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert!(outcome.issued.is_none());
    let rec = node.device(NAME);
    assert_eq!(
        rec.status,
        OperationStatus::UpgradeFailed("Late Request".into())
    );
    assert_eq!(
        rec.operation,
        Operation::Install,
        "still scheduled: the operator decides"
    );
    assert!(rec.last_attempt.is_some());
    node.stop().await;
}
