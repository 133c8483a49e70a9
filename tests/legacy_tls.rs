//! The legacy TLS listener: TLS 1.0 with static-RSA AES-CBC reaches the same session
//! code as the default listener, and only on its own port.
#![cfg(feature = "legacy-tls")]

mod common;

use capf::model::{AuthMode, DeviceRecord, Operation, OperationStatus};
use capf::phone::Phone;
use capf::protocol::Reason;
use common::TestNode;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "SEP001122334455";

/// A node with a legacy listener on an ephemeral port; `message_timeout` is short
/// because `s_client` never answers AUTH_REQUEST and the server ends by timeout.
async fn legacy_node(allow: &[&str]) -> TestNode {
    let allow = allow.iter().map(|n| n.parse().unwrap()).collect();
    TestNode::start_with(|s| {
        s.legacy_listen = Some("127.0.0.1:0".parse().unwrap());
        s.legacy_allow = allow;
        s.message_timeout = 1;
    })
    .await
}

/// `openssl s_client` forced to one protocol and cipher, stdin closed, bounded in time.
/// `None` when openssl is not installed.
async fn s_client(addr: SocketAddr, protocol: &str, cipher: &str) -> Option<Output> {
    let child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args([
            protocol,
            "-cipher",
            &format!("{cipher}@SECLEVEL=0"),
            "-ign_eof",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let Ok(child) = child else {
        eprintln!("openssl not on PATH: s_client check skipped");
        return None;
    };
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("s_client finishes once the server closes")
        .unwrap();
    Some(out)
}

/// Whether `bytes` holds an AUTH_REQUEST (version 3, auth type NONE) for any session id.
fn has_auth_request(bytes: &[u8]) -> bool {
    bytes.windows(16).any(|w| {
        w[..2] == [0x55, 0x01]
            && w[6..] == [0x00, 0x08, 0x07, 0x00, 0x01, 0x03, 0x08, 0x00, 0x01, 0x00]
    })
}

#[tokio::test]
async fn s_client_speaks_tls_1_0_to_1_2_with_static_rsa_cbc_on_the_legacy_listener() {
    let node = legacy_node(&[]).await;
    let addr = node.legacy_addr.unwrap();
    for (protocol, cipher, version) in [
        ("-tls1", "AES128-SHA", "TLSv1"),
        ("-tls1", "AES256-SHA", "TLSv1"),
        ("-tls1_1", "AES128-SHA", "TLSv1.1"),
        ("-tls1_2", "AES256-SHA", "TLSv1.2"),
    ] {
        let Some(out) = s_client(addr, protocol, cipher).await else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Protocol  : {version}\n")),
            "{protocol} {cipher}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&format!("Cipher    : {cipher}\n")), "{text}");
        assert!(
            has_auth_request(&out.stdout),
            "{protocol} {cipher}: no AUTH_REQUEST in {text}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn the_default_listener_refuses_tls_1_0() {
    let node = legacy_node(&[]).await;
    let Some(out) = s_client(node.addr, "-tls1", "AES128-SHA").await else {
        return;
    };
    assert!(
        !out.status.success(),
        "the rustls listener completed TLS 1.0"
    );
    assert!(!has_auth_request(&out.stdout));
    node.stop().await;
}

/// A TLS 1.0 client that, like an old phone, trusts the CAPF certificate.
async fn tls10_client(node: &TestNode) -> tokio_openssl::SslStream<tokio::net::TcpStream> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder
        .set_min_proto_version(Some(SslVersion::TLS1))
        .unwrap();
    builder
        .set_max_proto_version(Some(SslVersion::TLS1))
        .unwrap();
    builder.set_cipher_list("AES128-SHA@SECLEVEL=0").unwrap();
    builder.set_ca_file(node.data.capf_cert()).unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    let ssl = builder
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("capf")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(node.legacy_addr.unwrap())
        .await
        .unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut tls).connect().await.unwrap();
    tls
}

fn name_element(name: &str) -> Vec<u8> {
    let mut v = vec![13];
    v.extend_from_slice(&(name.len() as u16 + 1).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v
}

#[tokio::test]
async fn a_tls_1_0_session_is_served_by_the_session_code_and_audited() {
    let node = legacy_node(&["127.0.0.0/8"]).await;
    node.add(DeviceRecord::new(NAME));

    let mut tls = tls10_client(&node).await;
    assert_eq!(tls.ssl().version_str(), "TLSv1");
    let mut hello = [0u8; 16];
    tls.read_exact(&mut hello).await.unwrap();
    assert!(has_auth_request(&hello));
    // AUTH_RESPONSE: version 3 and the device name, under the server's session id.
    let mut payload = vec![7, 0, 1, 3];
    payload.extend(name_element(NAME));
    let mut msg = vec![0x55, 2];
    msg.extend_from_slice(&hello[2..6]);
    msg.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    msg.extend(payload);
    tls.write_all(&msg).await.unwrap();
    tls.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply))
        .await
        .expect("server ends the session");
    assert_eq!(reply.get(1), Some(&15), "END_SESSION: {reply:02x?}");
    assert_eq!(reply.last(), Some(&0), "reason 0, no action: {reply:02x?}");

    let events = node.store.events(Some(NAME), None, None).unwrap();
    let session = events
        .iter()
        .find(|e| e.action == "session")
        .expect("session event");
    assert_eq!(session.details["tls"], "TLSv1");
    assert_eq!(session.details["cipher"], "TLS_RSA_WITH_AES_128_CBC_SHA");
    assert_eq!(session.details["legacy_tls"], true);
    node.stop().await;
}

#[tokio::test]
async fn the_phone_enrolls_over_the_legacy_listener() {
    let node = legacy_node(&["127.0.0.1/32"]).await;
    node.add(common::install(NAME, AuthMode::Null, common::P256));

    let outcome = Phone::new(NAME)
        .run(node.legacy_addr.unwrap(), &node.connector)
        .await
        .unwrap();
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let (der, _) = outcome.issued.expect("LSC issued");
    let rec = node.device(NAME);
    assert_eq!(rec.lsc.unwrap().der, der);
    assert_eq!(rec.status, OperationStatus::UpgradeSuccess);

    let events = node.store.events(Some(NAME), None, None).unwrap();
    let success = events
        .iter()
        .find(|e| e.result == "Upgrade Success")
        .expect("success event");
    assert_eq!(success.details["tls"], "TLSv1.3");
    assert_eq!(success.details["legacy_tls"], true);

    // The same node's default listener records its sessions as not legacy.
    let mut rec = node.device(NAME);
    rec.operation = Operation::None;
    node.store.put_device(&rec, common::event(NAME)).unwrap();
    assert_eq!(
        node.run(&Phone::new(NAME)).await.end_reason,
        Some(Reason::NoAction)
    );
    let events = node.store.events(Some(NAME), None, None).unwrap();
    let last = events.iter().rev().find(|e| e.action == "session").unwrap();
    assert_eq!(last.result, "No Pending Operation");
    assert_eq!(last.details["tls"], "TLSv1.3");
    assert!(!last.details.contains_key("legacy_tls"));
    node.stop().await;
}

#[tokio::test]
async fn addresses_outside_legacy_allow_are_closed_before_tls() {
    let node = legacy_node(&["10.1.0.0/16"]).await;
    node.add(DeviceRecord::new(NAME));
    let mut tcp = tokio::net::TcpStream::connect(node.legacy_addr.unwrap())
        .await
        .unwrap();
    // A ClientHello start; the server must close without answering.
    let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05]).await;
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
        .await
        .expect("closed at once, not after the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(Phone::new(NAME)
        .run(node.legacy_addr.unwrap(), &node.connector)
        .await
        .is_err());

    // The default listener is not fenced.
    assert_eq!(
        node.run(&Phone::new(NAME)).await.end_reason,
        Some(Reason::NoAction)
    );
    node.stop().await;
}

#[tokio::test]
async fn the_capf_certificate_allows_static_rsa_key_exchange() {
    let node = TestNode::start().await;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(node.capf_cert.as_ref()).unwrap();
    let ku = cert.key_usage().unwrap().expect("keyUsage present");
    // TLS_RSA_* encrypts the premaster secret to the certificate's key (RFC 5246 §7.4.7.1).
    assert!(ku.value.key_encipherment(), "keyEncipherment");
    assert!(
        ku.value.digital_signature(),
        "digitalSignature (ECDHE suites)"
    );
    assert!(matches!(
        cert.public_key().parsed().unwrap(),
        x509_parser::public_key::PublicKey::RSA(_)
    ));
    node.stop().await;
}

#[tokio::test]
async fn capf_serve_runs_both_listeners_and_stops_cleanly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("capf-data");
    // Short timeouts: s_client never answers, so the server ends its session.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("capf.toml"), "message_timeout = 1\n").unwrap();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "off"])
        .args(["--legacy-tls-listen", "127.0.0.1:0", "--init"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = serve.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("legacy TLS listener") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                let _ = tx.send(addr);
            }
        }
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("serve logs the legacy listener")
        .expect("with its address");
    if let Some(out) = s_client(addr, "-tls1", "AES128-SHA").await {
        assert!(has_auth_request(&out.stdout), "TLS 1.0 session on {addr}");
    }

    let _ = std::process::Command::new("kill")
        .arg(serve.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = serve.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "clean shutdown: {status}");
}
