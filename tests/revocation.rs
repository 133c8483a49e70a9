//! Revocation and the CRL (issue #14 point 4), through the binary and real phones:
//! replaced, revoked and removed LSCs are on the CRL that `capf crl` writes and the node
//! serves at /capf.crl, OpenSSL verifies it under the CAPF certificate, new LSCs carry
//! the configured distribution point, and a revoked LSC never authenticates again.

mod common;

use capf::phone::{http_get, Phone, PhoneKey};
use capf::protocol::Reason;
use common::cli::{capf, fails, json, ok, Serving};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

async fn enroll(addr: SocketAddr, data: &Path, name: &str) -> (Vec<u8>, PhoneKey) {
    common::cli::enroll_phone(addr, data, &Phone::new(name)).await
}

fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(cert.raw_serial())
        .trim_start_matches('0')
        .to_owned()
}

fn install(data: &Path, name: &str) {
    ok(&capf(
        data,
        &[
            "device",
            "set",
            name,
            "--operation",
            "install",
            "--auth",
            "null",
        ],
    ));
}

/// The serials on a DER CRL, lowercase hex without leading zeros.
fn crl_serials(der: &[u8]) -> Vec<String> {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| {
            hex::encode(r.raw_serial())
                .trim_start_matches('0')
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_revoked_and_removed_lscs_are_on_a_crl_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());
    let http_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://capf.test:{http_port}/capf.crl");
    let toml = data.join("capf.toml");
    let settings = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("crl_url = \"\"", &format!("crl_url = \"{url}\""));
    std::fs::write(&toml, settings).unwrap();
    let http = format!("127.0.0.1:{http_port}");
    let serving = Serving::start_with(&data, &["--http", &http]);
    let addr = serving.addr();

    // A phone enrolls, then re-enrolls: its first LSC is replaced.
    common::cli::add_null_install(&data, "SEP00000000B001");
    let (first, _) = enroll(addr, &data, "SEP00000000B001").await;
    let (_, cert) = x509_parser::parse_x509_certificate(&first).unwrap();
    let points = format!("{:?}", cert.extensions());
    assert!(points.contains(&url), "the LSC names the CRL: {points}");
    install(&data, "SEP00000000B001");
    let (second, second_key) = enroll(addr, &data, "SEP00000000B001").await;

    // The phone is lost: its current LSC is revoked by hand.
    let said = ok(&capf(
        &data,
        &[
            "device",
            "revoke",
            "SEP00000000B001",
            "--reason",
            "key-compromise",
        ],
    ));
    assert!(said.contains(&serial_of(&second)), "{said}");
    let shown = json(&capf(
        &data,
        &["device", "show", "SEP00000000B001", "--json"],
    ));
    assert!(shown["lsc"].is_null(), "{shown}");
    let err = fails(&capf(&data, &["device", "revoke", "SEP00000000B001"]));
    assert!(err.contains("holds no LSC"), "{err}");
    // `capf status` counts both: the superseded first LSC and the revoked second.
    let status = json(&capf(&data, &["status", "--json"]));
    assert_eq!(status["crl"]["revoked"], 2, "{status}");
    assert!(status["crl"]["last_revocation"].is_string(), "{status}");

    // The revoked LSC never authenticates again.
    ok(&capf(
        &data,
        &[
            "device",
            "set",
            "SEP00000000B001",
            "--operation",
            "install",
            "--auth",
            "lsc",
        ],
    ));
    let thief = common::phone_with_lsc("SEP00000000B001", &second, &second_key);
    let outcome = common::cli::run_phone(addr, &data, &thief).await;
    assert!(outcome.issued.is_none());
    assert_ne!(outcome.end_reason, Some(Reason::UpdateCertificate));

    // Another phone enrolls and its device is removed.
    common::cli::add_null_install(&data, "SEP00000000B002");
    let (removed, _) = enroll(addr, &data, "SEP00000000B002").await;
    ok(&capf(&data, &["device", "remove", "SEP00000000B002"]));

    let expected = [serial_of(&first), serial_of(&second), serial_of(&removed)];

    // Served over HTTP, DER.
    let served = http_get(&format!("http://{http}/capf.crl")).await.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/pkix-crl"));
    let mut listed = crl_serials(&served.body);
    listed.sort();
    let mut wanted = expected.to_vec();
    wanted.sort();
    assert_eq!(listed, wanted);

    // Written by `capf crl`, and verified by OpenSSL under the CAPF certificate.
    let crl = dir.path().join("capf.crl");
    ok(&capf(&data, &["crl", "--out", crl.to_str().unwrap()]));
    let capf_pem = data.join("certs/capf.pem");
    let verify = Command::new("openssl")
        .args(["crl", "-noout", "-verify", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(&capf_pem)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let said = String::from_utf8_lossy(&verify.stderr).to_string()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && said.contains("verify OK"),
        "{said}"
    );
    let text = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_lowercase();
    for serial in &expected {
        assert!(text.contains(serial.as_str()), "{serial} not in\n{text}");
    }
    assert!(text.contains("key compromise"), "{text}");
    assert!(text.contains("superseded"), "{text}");
    serving.stop();
}
