//! CAPF CA rollover (issue #14 point 2), through the binary and real phones: stage,
//! activate, move the phones to the new CA, retire, with the ITL each phase serves
//! verified by capf's own parser and the phones' TLS trust shown at each step.

mod common;

use capf::phone::{connector, http_get, Phone, PhoneKey};
use capf::phone_config::format::itl::{self, Role};
use capf::protocol::Reason;
use common::cli::{capf, fails, json, ok, Serving};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

const A: &str = "SEP00000000C001";
const B: &str = "SEP00000000C002";

fn pem(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// The CAPF certificates the ITL served over HTTP lists, after verifying it.
async fn itl_capf_records(http: &str) -> Vec<Vec<u8>> {
    let served = http_get(&format!("http://{http}/ITLFile.tlv"))
        .await
        .unwrap();
    assert_eq!(served.status, 200);
    let list = itl::parse(&served.body).unwrap();
    itl::verify(&list).unwrap();
    list.records
        .iter()
        .filter(|r| r.role == Role::Capf.value())
        .map(|r| r.certificate.to_vec())
        .collect()
}

/// A phone that trusts exactly `trust` (its ITL's CAPF records).
async fn session(addr: SocketAddr, trust: &[Vec<u8>], phone: &Phone) -> capf::phone::Outcome {
    let trust: Vec<CertificateDer<'static>> = trust
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    phone.run(addr, &connector(&trust).unwrap()).await.unwrap()
}

fn with_lsc(name: &str, (der, key): &(Vec<u8>, PhoneKey)) -> Phone {
    common::phone_with_lsc(name, der, key)
}

fn issuer_of(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().as_raw().to_vec()
}

fn subject_of(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject().as_raw().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_rollover_keeps_every_phone_reaching_capf() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = format!("127.0.0.1:{port}");
    let start = || Serving::start_with(&data, &["--http", &http]);
    let old = pem(&data.join("certs/capf.pem"));

    // Two phones enroll under the first CAPF certificate.
    let serving = start();
    let mut lscs = Vec::new();
    for name in [A, B] {
        common::cli::add_null_install(&data, name);
        let outcome = session(
            serving.addr(),
            std::slice::from_ref(&old),
            &Phone::new(name),
        )
        .await;
        assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
        lscs.push(outcome.issued.unwrap());
    }
    assert_eq!(itl_capf_records(&http).await, std::slice::from_ref(&old));
    serving.stop();

    // Staged: the ITL lists both; the listener still presents the old one.
    ok(&capf(&data, &["ca", "rollover"]));
    let new = pem(&data.join("certs/capf-next.pem"));
    assert_ne!(new, old);
    let serving = start();
    assert_eq!(itl_capf_records(&http).await, [old.clone(), new.clone()]);
    let shown = json(&capf(&data, &["ca", "show", "--json"]));
    assert_eq!(shown["phase"], "staged");
    let mut probe = Phone::new("SEP00000000C0FF");
    probe.password = None;
    let outcome = session(serving.addr(), std::slice::from_ref(&old), &probe).await;
    assert!(
        outcome.tls_version.starts_with("TLS"),
        "old trust still connects"
    );
    let err = fails(&capf(&data, &["ca", "rollover"]));
    assert!(err.contains("already staged"), "{err}");
    serving.stop();

    // Activated: the new one serves and issues; both stay in the ITL.
    ok(&capf(&data, &["ca", "activate"]));
    assert_eq!(pem(&data.join("certs/capf.pem")), new);
    let serving = start();
    assert_eq!(itl_capf_records(&http).await, [new.clone(), old.clone()]);
    let learned = [new.clone(), old.clone()];

    // Every phone still on the old CA is scheduled; A re-enrolls with its old-CA LSC.
    let said = ok(&capf(&data, &["renew", "now", "--issuer", "previous"]));
    assert!(said.contains("for 2 device(s)"), "{said}");
    let outcome = session(serving.addr(), &learned, &with_lsc(A, &lscs[0])).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let (renewed, _) = outcome.issued.unwrap();
    assert_eq!(issuer_of(&renewed), subject_of(&new));
    assert_eq!(issuer_of(&lscs[0].0), subject_of(&old));

    // B still holds an old-CA LSC: retiring is refused until it moves too.
    let err = fails(&capf(&data, &["ca", "retire"]));
    assert!(
        err.contains("1 device(s) still hold") && err.contains(B),
        "{err}"
    );
    let outcome = session(serving.addr(), &learned, &with_lsc(B, &lscs[1])).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let shown = json(&capf(&data, &["ca", "show", "--json"]));
    assert_eq!(shown["phase"], "activated");
    let counts: Vec<(String, u64)> = shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["role"].as_str().unwrap().to_owned(),
                c["devices_with_lsc"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("current".to_string(), 2), ("previous".to_string(), 0)]
    );
    ok(&capf(&data, &["ca", "retire"]));
    serving.stop();

    // Retired: only the new one is listed, and old-CA LSCs no longer authenticate.
    let serving = start();
    assert_eq!(itl_capf_records(&http).await, std::slice::from_ref(&new));
    ok(&capf(
        &data,
        &[
            "device",
            "set",
            A,
            "--operation",
            "install",
            "--auth",
            "lsc",
        ],
    ));
    let outcome = session(
        serving.addr(),
        std::slice::from_ref(&new),
        &with_lsc(A, &lscs[0]),
    )
    .await;
    assert!(outcome.issued.is_none());
    assert!(data.join("certs/retired").read_dir().unwrap().count() >= 2);
    serving.stop();
}
