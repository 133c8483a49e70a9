//! Authentication by existing certificate (LSC or MIC), SUDI, lockout and per-address
//! limits, over real TLS against a real store.

mod common;

use capf::model::{
    AuthMode, CertKind, DeviceRecord, EcCurve, KeyOrder, Operation, OperationStatus, SerialState,
};
use capf::phone::{Phone, PhoneKey};
use capf::protocol::{CertificateType, Reason, WrappedCertificate};
use common::TestNode;
use md5::Digest;
use rsa::pkcs8::EncodePublicKey;

const NAME: &str = "SEP001122334455";
const OTHER: &str = "SEP00112233AAAA";

fn device(name: &str, auth: AuthMode, key: KeyOrder) -> DeviceRecord {
    let mut d = DeviceRecord::new(name);
    d.operation = Operation::Install;
    d.auth = auth;
    d.key_order = key;
    d
}

/// Enrolls `name` with a null string and returns its LSC and key.
async fn enroll(node: &TestNode, name: &str, key: KeyOrder) -> (Vec<u8>, PhoneKey) {
    node.add(device(name, AuthMode::Null, key));
    let outcome = node.run(&Phone::new(name)).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    outcome.issued.expect("LSC")
}

/// Schedules a re-key of `name` authenticated by its certificate.
fn schedule_rekey(node: &TestNode, name: &str, mode: AuthMode) {
    let mut rec = node.device(name);
    rec.auth = mode;
    rec.operation = Operation::Install;
    node.store.put_device(&rec, common::event(name)).unwrap();
}

fn with_lsc(name: &str, der: &[u8], key: &PhoneKey) -> Phone {
    let mut phone = Phone::new(name);
    phone.password = None;
    phone.credential = Some((
        WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: der.to_vec(),
        },
        key.clone(),
    ));
    phone
}

fn failed(node: &TestNode, name: &str) -> String {
    match node.device(name).status {
        OperationStatus::UpgradeFailed(reason) => reason,
        other => panic!("expected a failed upgrade, got {other:?}"),
    }
}

#[tokio::test]
async fn phones_re_enroll_with_their_own_lsc_rsa_and_ec() {
    let node = TestNode::start().await;
    for (name, key) in [
        (NAME, KeyOrder::Rsa { bits: 2048 }),
        (
            OTHER,
            KeyOrder::Ec {
                curve: EcCurve::P256,
            },
        ),
    ] {
        let (der, phone_key) = enroll(&node, name, key).await;
        let old_serial = node.device(name).lsc.unwrap().serial;
        schedule_rekey(&node, name, AuthMode::Lsc);
        let outcome = node.run(&with_lsc(name, &der, &phone_key)).await;
        assert_eq!(
            outcome.end_reason,
            Some(Reason::UpdateCertificate),
            "{name}"
        );
        let rec = node.device(name);
        let new = rec.lsc.unwrap();
        assert_ne!(new.serial, old_serial, "a new LSC with a new serial");
        assert_eq!(rec.status, OperationStatus::UpgradeSuccess);
        let old = node.store.serial(&old_serial).unwrap().unwrap();
        assert_eq!(old.state, SerialState::Superseded);
        let events = node.store.events(Some(name), None, None).unwrap();
        let success = events
            .iter()
            .rev()
            .find(|e| e.result == "Upgrade Success")
            .unwrap();
        assert_eq!(success.details["authenticated_by"], "lsc");
        assert_eq!(success.details["superseded"], old_serial.as_str());
    }
    node.stop().await;
}

#[tokio::test]
async fn another_devices_lsc_a_foreign_certificate_and_bad_proofs_are_refused() {
    let node = TestNode::start().await;
    let (der_a, key_a) = enroll(
        &node,
        NAME,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    )
    .await;
    let (der_b, key_b) = enroll(
        &node,
        OTHER,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    )
    .await;
    schedule_rekey(&node, NAME, AuthMode::Lsc);

    // OTHER's perfectly valid LSC, used to claim NAME: chains, signs, but is not NAME's.
    let outcome = node.run(&with_lsc(NAME, &der_b, &key_b)).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert_eq!(failed(&node, NAME), "Invalid LSC");

    // A self-signed certificate with the right name.
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut foreign = foreign;
    foreign
        .distinguished_name
        .push(rcgen::DnType::CommonName, NAME);
    let der = foreign.self_signed(&key).unwrap().der().to_vec();
    let p256 = p256::SecretKey::from_sec1_der(&sec1(&key)).unwrap();
    let outcome = node.run(&with_lsc(NAME, &der, &PhoneKey::P256(p256))).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert_eq!(failed(&node, NAME), "Invalid Credentials");

    // Its own LSC with one bit of the SHA-1 proof flipped.
    let mut phone = with_lsc(NAME, &der_a, &key_a);
    phone.tamper_proof = true;
    assert_eq!(
        node.run(&phone).await.end_reason,
        Some(Reason::InvalidElement)
    );
    assert_eq!(failed(&node, NAME), "Invalid LSC");

    // SHA-1 proof only, SHA-512 missing.
    let mut phone = with_lsc(NAME, &der_a, &key_a);
    phone.omit_sha2_proof = true;
    assert_eq!(
        node.run(&phone).await.end_reason,
        Some(Reason::InvalidElement)
    );
    assert_eq!(failed(&node, NAME), "Invalid LSC");

    // Nothing was issued by any of these.
    assert_eq!(node.device(NAME).lsc.unwrap().der, der_a);
    assert_eq!(node.device(NAME).failed_auth, 4);

    // And the genuine proof still works.
    let outcome = node.run(&with_lsc(NAME, &der_a, &key_a)).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    assert_eq!(node.device(NAME).failed_auth, 0);
    node.stop().await;
}

/// The SEC1 DER of an rcgen P-256 key (rcgen serialises PKCS#8).
fn sec1(key: &rcgen::KeyPair) -> Vec<u8> {
    use p256::pkcs8::DecodePrivateKey;
    let secret = p256::SecretKey::from_pkcs8_der(&key.serialize_der()).unwrap();
    secret.to_sec1_der().unwrap().to_vec()
}

/// A test manufacturing CA and a MIC it issues for an RSA phone key.
struct Factory {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Factory {
    fn new() -> Factory {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Manufacturing CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Factory {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn mic(&self, name: &str, key: &rsa::PrivateKey, expired: bool) -> Vec<u8> {
        let spki = key.to_public_key().to_public_key_der().unwrap();
        let spki = rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes()).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("CP-8841-{name}"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2015, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        params
            .signed_by(&spki, &self.issuer)
            .unwrap()
            .der()
            .to_vec()
    }
}

fn rsa_key() -> rsa::PrivateKey {
    rsa::PrivateKey::new(&mut rand::rng(), 2048).unwrap()
}

fn with_mic(name: &str, der: &[u8], key: &rsa::PrivateKey) -> Phone {
    let mut phone = Phone::new(name);
    phone.credential = Some((
        WrappedCertificate {
            cert_type: CertificateType::Mic,
            der: der.to_vec(),
        },
        PhoneKey::Rsa(key.clone()),
    ));
    phone
}

#[tokio::test]
async fn a_mic_from_a_trusted_manufacturer_gets_a_first_lsc_and_is_recorded() {
    let factory = Factory::new();
    let ca_pem = factory.ca_pem.clone();
    let node = TestNode::start_prepared(
        |_| {},
        |data| std::fs::write(data.trust().join("test-manufacturing.pem"), &ca_pem).unwrap(),
    )
    .await;
    let key = rsa_key();
    let mic = factory.mic(NAME, &key, false);
    node.add(device(NAME, AuthMode::Mic, KeyOrder::Rsa { bits: 2048 }));
    let outcome = node.run(&with_mic(NAME, &mic, &key)).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let rec = node.device(NAME);
    let stored = rec.mic.expect("MIC recorded, as CUCM does");
    assert_eq!(stored.der, mic);
    assert_eq!(stored.md5, hex::encode(md5::Md5::digest(&mic)));
    assert!(rec.lsc.is_some());
    let events = node.store.events(Some(NAME), None, None).unwrap();
    assert!(events.iter().any(|e| e.details.get("authenticated_by")
        == Some(&serde_json::Value::from(CertKind::Mic.to_string()))));

    // A MIC naming another phone chains too, but is not this phone's.
    let stolen = factory.mic(OTHER, &key, false);
    schedule_rekey(&node, NAME, AuthMode::Mic);
    assert_eq!(
        node.run(&with_mic(NAME, &stolen, &key)).await.end_reason,
        Some(Reason::InvalidElement)
    );
    assert_eq!(failed(&node, NAME), "Invalid MIC");
    node.stop().await;
}

#[tokio::test]
async fn an_expired_mic_is_refused_unless_the_node_allows_it() {
    let factory = Factory::new();
    let key = rsa_key();
    let mic = factory.mic(NAME, &key, true);
    for allow in [false, true] {
        let ca_pem = factory.ca_pem.clone();
        let node = TestNode::start_prepared(
            |s| s.allow_expired_mic = allow,
            |data| std::fs::write(data.trust().join("factory.pem"), &ca_pem).unwrap(),
        )
        .await;
        node.add(device(NAME, AuthMode::Mic, KeyOrder::Rsa { bits: 2048 }));
        let outcome = node.run(&with_mic(NAME, &mic, &key)).await;
        if allow {
            assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
        } else {
            assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
            assert_eq!(failed(&node, NAME), "Invalid MIC");
        }
        node.stop().await;
    }
}

/// The phone-emulating client (capf-protocol.md §4.6) sends its own LSC as the SUDI
/// certificate: served when SUDI is optional, refused under `require_sudi` (an LSC is
/// not a SUDI).
#[tokio::test]
async fn an_lsc_sent_as_sudi_passes_only_while_sudi_is_optional() {
    for (require_sudi, expected) in [
        (false, Reason::UpdateCertificate),
        (true, Reason::InvalidElement),
    ] {
        let node = TestNode::start_with(|s| s.require_sudi = require_sudi).await;
        let (der, key) = enroll(&node, NAME, KeyOrder::Rsa { bits: 2048 }).await;
        schedule_rekey(&node, NAME, AuthMode::Lsc);
        let PhoneKey::Rsa(rsa_key) = &key else {
            panic!("RSA key")
        };
        let mut phone = with_lsc(NAME, &der, &key);
        phone.sudi = Some((der.clone(), rsa_key.clone()));
        assert_eq!(node.run(&phone).await.end_reason, Some(expected));
        node.stop().await;
    }
}

/// #13 point 6: with `require_sudi`, only a SUDI from a SUDI CA that names this device
/// satisfies the policy: not an LSC, not a MIC (this phone's or another's), not another
/// device's SUDI.
#[tokio::test]
async fn require_sudi_accepts_only_a_sudi_ca_certificate_bound_to_the_device() {
    let sudi_ca = Factory::new();
    let factory = Factory::new();
    let (sudi_pem, mic_pem) = (sudi_ca.ca_pem.clone(), factory.ca_pem.clone());
    let node = TestNode::start_prepared(
        |s| s.require_sudi = true,
        |data| {
            std::fs::create_dir_all(data.sudi_trust()).unwrap();
            std::fs::write(data.sudi_trust().join("test-sudi.pem"), &sudi_pem).unwrap();
            std::fs::write(data.trust().join("test-manufacturing.pem"), &mic_pem).unwrap();
        },
    )
    .await;
    let key = rsa_key();
    let mic = factory.mic(NAME, &key, false);
    node.add(device(NAME, AuthMode::Mic, KeyOrder::Rsa { bits: 2048 }));
    let attempt = |sudi: &[u8]| {
        let mut phone = with_mic(NAME, &mic, &key);
        phone.sudi = Some((sudi.to_vec(), key.clone()));
        phone
    };

    // Required and missing.
    let outcome = node.run(&with_mic(NAME, &mic, &key)).await;
    assert_eq!(outcome.end_reason, Some(Reason::InvalidElement));
    assert_eq!(failed(&node, NAME), "Invalid Credentials: SUDI Required");

    // The phone's own MIC offered as its SUDI: chains only to a MIC anchor.
    assert_eq!(
        node.run(&attempt(&mic)).await.end_reason,
        Some(Reason::InvalidElement)
    );
    // Another device's MIC: the same.
    let other_mic = factory.mic(OTHER, &key, false);
    assert_eq!(
        node.run(&attempt(&other_mic)).await.end_reason,
        Some(Reason::InvalidElement)
    );
    // A real SUDI, but another device's.
    let other_sudi = sudi_ca.mic(OTHER, &key, false);
    assert_eq!(
        node.run(&attempt(&other_sudi)).await.end_reason,
        Some(Reason::InvalidElement)
    );
    assert_eq!(node.device(NAME).operation, Operation::Install);

    // This device's SUDI from the SUDI CA.
    let sudi = sudi_ca.mic(NAME, &key, false);
    assert_eq!(
        node.run(&attempt(&sudi)).await.end_reason,
        Some(Reason::UpdateCertificate)
    );
    node.stop().await;
}

#[tokio::test]
async fn lockout_refuses_even_the_right_string_until_cleared() {
    let node = TestNode::start_with(|s| s.max_auth_failures = 3).await;
    let mut rec = device(
        NAME,
        AuthMode::String,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    );
    rec.auth_string = Some("2468".into());
    node.add(rec);
    let mut wrong = Phone::new(NAME);
    wrong.password = Some("1111".into());
    for _ in 0..3 {
        assert_eq!(
            node.run(&wrong).await.end_reason,
            Some(Reason::InvalidElement)
        );
    }
    let rec = node.device(NAME);
    assert!(rec.locked_until.is_some_and(|t| t > capf::model::now()));
    let mut right = Phone::new(NAME);
    right.password = Some("2468".into());
    assert_eq!(
        node.run(&right).await.end_reason,
        Some(Reason::InvalidElement)
    );
    let events = node.store.events(Some(NAME), None, None).unwrap();
    assert!(events
        .iter()
        .any(|e| e.result == "Refused: Device Locked Out"));
    assert!(events.iter().any(|e| e.details.contains_key("lockout")));

    // The operator clears it (capf device set --clear-lockout does exactly this).
    let mut rec = node.device(NAME);
    rec.locked_until = None;
    rec.failed_auth = 0;
    node.store.put_device(&rec, common::event(NAME)).unwrap();
    assert_eq!(
        node.run(&right).await.end_reason,
        Some(Reason::UpdateCertificate)
    );
    node.stop().await;
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_cut_off() {
    let node = TestNode::start_with(|s| s.max_failures_per_address = 3).await;
    for i in 0..3 {
        let outcome = node.run(&Phone::new(format!("SEP00000000000{i}"))).await;
        assert_eq!(outcome.end_reason, Some(Reason::UnknownDevice));
    }
    // The next connection from 127.0.0.1 is closed before TLS.
    let result = Phone::new(NAME).run(node.addr, &node.connector).await;
    assert!(result.is_err(), "connection should be refused");
    node.stop().await;
}
