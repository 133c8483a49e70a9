//! The trust model under attack (docs/trust.md "What capf guarantees"): each test
//! performs one attack on a real node over real TLS, concurrently where the attack is
//! concurrent, and checks the promise held.

mod common;

use capf::model::{AuthMode, Event, KeyOrder, Operation, OperationStatus};
use capf::phone::{http_request, Phone, PhoneKey};
use capf::phone_config::format::enc;
use capf::protocol::{
    CertificateType, ClientMessage, CurveId, KeyGenerateRequest, KeyType, Reason,
    WrappedCertificate, HEADER_LEN,
};
use common::{install, TestNode, DOC, P256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Barrier;

const VICTIM: &str = "SEP00AABBCCDDEE";

/// Runs `phone` against `node` `n` times at once; returns the END_SESSION reasons.
async fn burst(node: &Arc<TestNode>, phones: Vec<Phone>) -> Vec<Option<Reason>> {
    let tasks: Vec<_> = phones
        .into_iter()
        .map(|phone| {
            let node = node.clone();
            tokio::spawn(async move {
                let run = phone.run(node.addr, &node.connector);
                match tokio::time::timeout(Duration::from_secs(60), run).await {
                    Ok(Ok(outcome)) => outcome.end_reason,
                    _ => None,
                }
            })
        })
        .collect();
    let mut reasons = Vec::new();
    for task in tasks {
        reasons.push(task.await.unwrap());
    }
    reasons
}

/// Opens `phones.len()` sessions, waits until every one has its AUTH_REQUEST, then
/// sends all AUTH_RESPONSEs at the same moment; returns the END_SESSION reasons. This
/// is the attack at its sharpest: every guess arrives before any is counted.
async fn synchronized_burst(node: &Arc<TestNode>, phones: Vec<Phone>) -> Vec<u8> {
    let barrier = Arc::new(Barrier::new(phones.len()));
    let tasks: Vec<_> = phones
        .into_iter()
        .map(|phone| {
            let node = node.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let attack = async {
                    let (mut tls, id) = node.open_session().await;
                    let auth = ClientMessage::AuthResponse(phone.auth_response(id).unwrap())
                        .encode(id)
                        .unwrap();
                    barrier.wait().await;
                    tls.write_all(&auth).await.unwrap();
                    let mut reply = Vec::new();
                    let _ = tls.read_to_end(&mut reply).await;
                    assert_eq!(reply.len(), HEADER_LEN + 4, "one END_SESSION: {reply:02x?}");
                    reply[HEADER_LEN + 3]
                };
                tokio::time::timeout(Duration::from_secs(60), attack)
                    .await
                    .expect("the burst ends in time")
            })
        })
        .collect();
    let mut reasons = Vec::new();
    for task in tasks {
        reasons.push(task.await.unwrap());
    }
    reasons
}

fn events(node: &TestNode) -> Vec<Event> {
    node.store.events(None, None, None).unwrap()
}

/// Point 2: a burst of concurrent wrong strings gets at most `max_auth_failures`
/// evaluated, and the device is then locked: the right string is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_strings_are_evaluated_at_most_max_auth_failures_times() {
    let node = TestNode::start_with(|s| {
        // This test is about the device lockout, not the address limit.
        s.max_failures_per_address = 1_000_000;
        s.max_sessions = 1024;
    })
    .await;
    let max = capf::settings::Settings::default().max_auth_failures;
    node.add(install(VICTIM, AuthMode::String, P256));
    let node = Arc::new(node);

    let phones: Vec<Phone> = (0..200)
        .map(|i| Phone {
            password: Some(format!("{:06}", 200_000 + i)),
            ..Phone::new(VICTIM)
        })
        .collect();
    let reasons = synchronized_burst(&node, phones).await;
    assert!(
        reasons.iter().all(|r| *r == Reason::InvalidElement.to_u8()),
        "every wrong string ends with END 7: {reasons:?}"
    );

    let evaluated = events(&node)
        .iter()
        .filter(|e| e.result.starts_with("Authentication Failed"))
        .count();
    assert!(
        evaluated <= max as usize,
        "{evaluated} strings evaluated, limit {max}"
    );
    assert_eq!(evaluated, max as usize, "the lockout was reached");
    let rec = node.device(VICTIM);
    assert!(rec.locked_until.is_some(), "the device is locked");

    // Inside the lockout the right string is refused without evaluation.
    let right = Phone {
        password: Some("123456".into()),
        ..Phone::new(VICTIM)
    };
    let outcome = node.run(&right).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert!(outcome.issued.is_none());
    assert_eq!(node.device(VICTIM).operation, Operation::Install);
}

/// Point 2: concurrent sessions from one address count against its limit while in
/// flight: 200 unknown names at once get at most `max_failures_per_address` looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unknown_names_from_one_address_are_evaluated_at_most_the_address_limit() {
    let node = TestNode::start_with(|s| s.max_sessions = 1024).await;
    let limit = capf::settings::Settings::default().max_failures_per_address;
    let node = Arc::new(node);
    let phones: Vec<Phone> = (0..200)
        .map(|i| Phone::new(format!("SEP{:012X}", 0xA0_0000_0000u64 + i)))
        .collect();
    let reasons = synchronized_burst(&node, phones).await;
    assert!(
        reasons
            .iter()
            .all(|r| *r != Reason::UpdateCertificate.to_u8()),
        "{reasons:?}"
    );
    let looked_up = events(&node)
        .iter()
        .filter(|e| e.result == "Unknown Device")
        .count();
    assert!(
        looked_up <= limit as usize,
        "{looked_up} unknown names evaluated, limit {limit}"
    );
}

/// Point 2 without its cost: a thousand honest phones behind one NAT address enroll at
/// once; attempts in flight never refuse them (they wait for a slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_honest_phones_behind_one_address_all_enroll() {
    const PHONES: u64 = 300;
    let node = TestNode::start_with(|s| s.max_sessions = 1024).await;
    for i in 0..PHONES {
        node.add(install(
            &format!("SEP{:012X}", 0xB0_0000_0000u64 + i),
            AuthMode::Null,
            P256,
        ));
    }
    let node = Arc::new(node);
    let phones: Vec<Phone> = (0..PHONES)
        .map(|i| Phone::new(format!("SEP{:012X}", 0xB0_0000_0000u64 + i)))
        .collect();
    let reasons = burst(&node, phones).await;
    let enrolled = reasons
        .iter()
        .filter(|r| **r == Some(Reason::UpdateCertificate))
        .count();
    assert_eq!(enrolled, PHONES as usize, "{reasons:?}");
    let first = node.device(&format!("SEP{:012X}", 0xB0_0000_0000u64));
    assert_eq!(first.status, OperationStatus::UpgradeSuccess);
}

/// Point 3: a troubleshoot fetch never rewrites what capf trusts. With null
/// authentication anyone who knows the name can answer a scheduled fetch; whatever
/// certificate they return is shown, but capf keeps authenticating the real phone by its
/// LSC and keeps encrypting its configuration to the real phone's key.
#[tokio::test]
async fn a_troubleshoot_fetch_cannot_replace_the_certificate_capf_trusts() {
    let node = TestNode::start_with(|s| s.http = Some("127.0.0.1:0".parse().unwrap())).await;
    let http = node.http_addr.unwrap().to_string();
    let mut rec = install(VICTIM, AuthMode::Null, KeyOrder::Rsa { bits: 2048 });
    rec.encrypted_config = true;
    node.add(rec);
    node.document(VICTIM, DOC.as_bytes());
    let outcome = node.run(&Phone::new(VICTIM)).await;
    let (real_lsc, real_key) = outcome.issued.expect("the real phone enrolled");

    // The operator schedules a fetch, authenticated by null.
    let mut rec = node.device(VICTIM);
    rec.operation = Operation::Troubleshoot;
    rec.auth = AuthMode::Null;
    node.store.put_device(&rec, common::event(VICTIM)).unwrap();

    // The attacker answers it with a certificate of their own, for their own key.
    let attacker_key = rcgen::KeyPair::generate().unwrap();
    let attacker_cert = rcgen::CertificateParams::new(vec![VICTIM.to_string()])
        .unwrap()
        .self_signed(&attacker_key)
        .unwrap()
        .der()
        .to_vec();
    let attacker = Phone {
        certificate: Some(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: attacker_cert.clone(),
        }),
        ..Phone::new(VICTIM)
    };
    assert_eq!(node.run(&attacker).await.end_reason, Some(Reason::NoAction));

    let rec = node.device(VICTIM);
    assert_eq!(
        rec.lsc.as_ref().unwrap().der,
        real_lsc,
        "the LSC is unchanged"
    );
    assert_eq!(rec.fetched_untrusted.as_ref().unwrap().der, attacker_cert);
    let fetched = events(&node)
        .into_iter()
        .rev()
        .find(|e| e.result == "Troubleshoot Success")
        .unwrap();
    assert_eq!(fetched.details["trusted"], false);

    // The encrypted configuration is still for the real phone only.
    let file = http_request(&http, "GET", &format!("/{VICTIM}.cnf.xml.enc.sgn"))
        .await
        .unwrap();
    assert_eq!(file.status, 200);
    let PhoneKey::Rsa(real_key_rsa) = &real_key else {
        panic!("RSA")
    };
    assert_eq!(
        enc::decrypt(&file.body, real_key_rsa).unwrap(),
        common::served(DOC, 0).as_bytes()
    );

    // And the real phone still authenticates with its LSC.
    let mut rec = node.device(VICTIM);
    rec.operation = Operation::Install;
    rec.auth = AuthMode::Lsc;
    node.store.put_device(&rec, common::event(VICTIM)).unwrap();
    let mut phone = Phone::new(VICTIM);
    phone.password = None;
    phone.credential = Some((
        WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: real_lsc.clone(),
        },
        real_key.clone(),
    ));
    assert_eq!(
        node.run(&phone).await.end_reason,
        Some(Reason::UpdateCertificate)
    );

    // A fetch that returns the phone's own, capf-issued LSC is trusted and recorded.
    let rec = node.device(VICTIM);
    let current = rec.lsc.clone().unwrap();
    let mut rec = rec;
    rec.operation = Operation::Troubleshoot;
    rec.auth = AuthMode::Null;
    node.store.put_device(&rec, common::event(VICTIM)).unwrap();
    let honest = Phone {
        certificate: Some(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: current.der.clone(),
        }),
        ..Phone::new(VICTIM)
    };
    assert_eq!(node.run(&honest).await.end_reason, Some(Reason::NoAction));
    assert_eq!(node.device(VICTIM).lsc.unwrap().der, current.der);
    let fetched = events(&node)
        .into_iter()
        .rev()
        .find(|e| e.result == "Troubleshoot Success")
        .unwrap();
    assert_eq!(fetched.details["trusted"], true);
}

/// A TFTP read request for `name` (octet mode) and the opcode and error code of the
/// first reply: 3 = DATA (code = block number), 5 = ERROR.
async fn tftp_first_reply(server: std::net::SocketAddr, name: &str) -> (u16, u16) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(name.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    socket.send_to(&rrq, server).await.unwrap();
    let mut reply = [0u8; 600];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut reply))
        .await
        .expect("a TFTP reply")
        .unwrap();
    assert!(n >= 4);
    (
        u16::from_be_bytes([reply[0], reply[1]]),
        u16::from_be_bytes([reply[2], reply[3]]),
    )
}

/// Point 7: a device capf does not know gets nothing: a base document left behind after
/// `device remove`, or never added, is served neither over HTTP nor over TFTP, unless the
/// operator opts in with `serve_unknown_devices_plaintext`.
#[tokio::test]
async fn an_unknown_device_gets_no_configuration_unless_the_operator_opts_in() {
    for opt_in in [false, true] {
        let node = TestNode::start_with(|s| {
            s.http = Some("127.0.0.1:0".parse().unwrap());
            s.tftp = Some("127.0.0.1:0".parse().unwrap());
            s.serve_unknown_devices_plaintext = opt_in;
        })
        .await;
        let http = node.http_addr.unwrap().to_string();
        let tftp = node.tftp_addr.unwrap();
        // Never added, and removed after enrollment.
        node.document(VICTIM, DOC.as_bytes());
        const REMOVED: &str = "SEP00AABBCCDD01";
        node.add(install(REMOVED, AuthMode::Null, P256));
        node.document(REMOVED, DOC.as_bytes());
        assert!(node
            .store
            .remove_device(REMOVED, common::event(REMOVED))
            .unwrap());

        for name in [VICTIM, REMOVED] {
            for suffix in [".cnf.xml", ".cnf.xml.sgn", ".cnf.xml.enc.sgn"] {
                let got = http_request(&http, "GET", &format!("/{name}{suffix}"))
                    .await
                    .unwrap();
                let leaked = String::from_utf8_lossy(&got.body).contains("s3cret");
                if opt_in && suffix != ".cnf.xml.enc.sgn" {
                    assert_eq!(got.status, 200, "{name}{suffix} opted in");
                    assert!(leaked, "the operator asked for the plaintext");
                } else {
                    assert_eq!(got.status, 404, "{name}{suffix}");
                    assert!(!leaked);
                }
            }
            let (opcode, code) = tftp_first_reply(tftp, &format!("{name}.cnf.xml")).await;
            if opt_in {
                assert_eq!((opcode, code), (3, 1), "DATA block 1");
            } else {
                assert_eq!((opcode, code), (5, 1), "TFTP error 1, file not found");
            }
        }
        node.stop().await;
    }
}

/// Point 11: the protocol has no proof of possession for the new key, so a client could
/// send capf's own public keys and have them certified under a device name. capf refuses
/// its CAPF CA key and its file signer key.
#[tokio::test]
async fn capf_never_certifies_its_own_keys_for_a_phone() {
    use rsa::pkcs8::DecodePrivateKey;
    let node = TestNode::start().await;
    let keys = [
        node.data.capf_cert().with_extension("key"),
        node.data.tftp_key(),
    ];
    for (i, key_file) in keys.iter().enumerate() {
        let name = format!("SEP00AABBCCDD{i:02X}");
        node.add(install(&name, AuthMode::Null, KeyOrder::Rsa { bits: 2048 }));
        let pem = std::fs::read_to_string(key_file).unwrap();
        let stolen = rsa::PrivateKey::from_pkcs8_pem(&pem).expect("an RSA-2048 key");
        let phone = Phone {
            key: Some(PhoneKey::Rsa(stolen)),
            ..Phone::new(name.as_str())
        };
        let outcome = node.run(&phone).await;
        assert_eq!(
            outcome.end_reason,
            Some(Reason::InvalidElement),
            "{key_file:?}"
        );
        assert!(outcome.issued.is_none());
        let rec = node.device(&name);
        assert!(rec.lsc.is_none() && rec.unconfirmed_lsc.is_none());
        match rec.status {
            OperationStatus::UpgradeFailed(why) => {
                assert!(why.starts_with("Refused Key: the key is capf's "), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Point 11, the other half: a phone's key already certified for another device is
/// refused, so no one can have capf certify (and encrypt configurations to) a key that
/// someone else holds. The phone that holds it may re-enroll with it.
#[tokio::test]
async fn capf_never_certifies_another_devices_key() {
    let node = TestNode::start().await;
    let key = PhoneKey::generate(&KeyGenerateRequest {
        key_size: None,
        key_type: Some(KeyType::Ec),
        curve: Some(CurveId::Secp256r1),
    })
    .unwrap();
    const OWNER: &str = "SEP00AABBCCDD01";
    const THIEF: &str = "SEP00AABBCCDD02";
    for name in [OWNER, THIEF] {
        node.add(install(name, AuthMode::Null, P256));
    }
    let with_key = |name: &str| Phone {
        key: Some(key.clone()),
        ..Phone::new(name)
    };
    let owned = node.run(&with_key(OWNER)).await;
    assert_eq!(owned.end_reason, Some(Reason::UpdateCertificate));
    assert!(owned.issued.is_some());

    let stolen = node.run(&with_key(THIEF)).await;
    assert_eq!(stolen.end_reason, Some(Reason::InvalidElement));
    assert!(stolen.issued.is_none());
    let rec = node.device(THIEF);
    assert!(rec.lsc.is_none() && rec.unconfirmed_lsc.is_none());
    match rec.status {
        OperationStatus::UpgradeFailed(why) => assert_eq!(
            why,
            format!("Refused Key: the key is certified for device {OWNER}")
        ),
        other => panic!("{other:?}"),
    }

    // The owner re-installing with the key it holds is not an attack.
    let mut rec = node.device(OWNER);
    rec.operation = Operation::Install;
    node.store.put_device(&rec, common::event(OWNER)).unwrap();
    let again = node.run(&with_key(OWNER)).await;
    assert_eq!(again.end_reason, Some(Reason::UpdateCertificate));
    assert!(again.issued.is_some());
}
