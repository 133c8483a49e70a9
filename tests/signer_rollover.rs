//! ITL signer rollover (issue #14 point 3), through the binary: the file signer is
//! replaced and every ITL a phone is offered passes the phone's own rule
//! (`itl::verify_update`: signed by a SAST of the ITL it holds), checked with capf's
//! parser; and a node initialised without a recovery identity learns one first.

mod common;

use capf::model::{Digest, UnixTime};
use capf::phone::http_get;
use capf::phone_config::format::itl::{self, Role};
use capf::phone_config::format::sgn::{self, FileKind};
use capf::phone_config::signer::Signer;
use common::cli::{capf, fails, json, ok, Serving};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::TcpListener;
use std::path::Path;

const PHONE: &str = "SEP00000000D001";

fn pem(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

fn free_http() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

async fn fetch(http: &str, name: &str) -> Vec<u8> {
    let served = http_get(&format!("http://{http}/{name}")).await.unwrap();
    assert_eq!(served.status, 200, "{name}");
    served.body
}

/// The certificates `file` lists with `role`.
fn with_role(file: &[u8], role: Role) -> Vec<Vec<u8>> {
    itl::parse(file)
        .unwrap()
        .records
        .iter()
        .filter(|r| r.role == role.value())
        .map(|r| r.certificate.to_vec())
        .collect()
}

/// Whether a phone holding `held` accepts `new`.
fn accepts(held: &[u8], new: &[u8]) -> Result<(), String> {
    let (held, new) = (itl::parse(held).unwrap(), itl::parse(new).unwrap());
    itl::verify_update(&held, &new).map_err(|e| e.to_string())
}

/// The ITL an older capf (no recovery identity) served: what its phones hold.
fn signer_only_itl(data: &Path) -> Vec<u8> {
    let signer = Signer::load(
        &data.join("certs/tftp.pem"),
        &data.join("certs/tftp.key"),
        Digest::Sha1,
    )
    .unwrap();
    itl::build_standard(&signer, &pem(&data.join("certs/capf.pem")), now()).unwrap()
}

fn now() -> UnixTime {
    capf::model::now()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signer_rollover_is_accepted_by_phones_holding_the_last_itl() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());
    let http = free_http();
    let start = || Serving::start_with(&data, &["--http", &http]);
    ok(&capf(&data, &["device", "add", PHONE]));
    std::fs::write(data.join(format!("tftp/{PHONE}.cnf.xml")), common::DOC).unwrap();
    let old_signer = pem(&data.join("certs/tftp.pem"));
    let recovery = pem(&data.join("certs/itl-recovery.pem"));
    let shown = json(&capf(&data, &["signer", "show", "--json"]));
    assert_eq!(shown["itl"]["signed_by"], "recovery", "{shown}");

    // A new node: the ITL lists the signer and the recovery certificate as SAST, and
    // the recovery key signs it.
    let serving = start();
    let held = fetch(&http, "ITLFile.tlv").await;
    let list = itl::parse(&held).unwrap();
    itl::verify(&list).unwrap();
    assert_eq!(
        with_role(&held, Role::Sast),
        [old_signer.clone(), recovery.clone()]
    );
    assert_eq!(
        with_role(&held, Role::Tftp),
        std::slice::from_ref(&old_signer)
    );
    let recovery_serial = capf::ca::cert_info(&recovery).unwrap().serial;
    assert_eq!(
        hex::encode(list.header.serial),
        recovery_serial.to_lowercase()
    );
    serving.stop();

    // A recovery key that cannot sign stops the rollover: the new signer would have to
    // sign the ITL itself.
    let key = data.join("certs/itl-recovery.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let err = fails(&capf(&data, &["signer", "rollover"]));
    assert!(err.contains("recovery identity cannot sign"), "{err}");
    assert_eq!(pem(&data.join("certs/tftp.pem")), old_signer);
    std::fs::write(&key, saved).unwrap();

    // The signer is replaced, the old one kept under retired/.
    let said = ok(&capf(&data, &["signer", "rollover"]));
    assert!(said.contains("new file signer"), "{said}");
    let new_signer = pem(&data.join("certs/tftp.pem"));
    assert_ne!(new_signer, old_signer);
    let retired: Vec<_> = std::fs::read_dir(data.join("certs/retired"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        retired
            .iter()
            .any(|n| n.starts_with("tftp-") && n.ends_with(".pem")),
        "{retired:?}"
    );
    assert!(
        retired
            .iter()
            .any(|n| n.starts_with("tftp-") && n.ends_with(".key")),
        "{retired:?}"
    );

    // The phone holding the last ITL accepts the next one (signed by the recovery key
    // it trusts), which names the new signer; the configuration file it fetches next
    // verifies under that, and would not have under the ITL it held before.
    let serving = start();
    let next = fetch(&http, "ITLFile.tlv").await;
    accepts(&held, &next).unwrap();
    assert_eq!(
        with_role(&next, Role::Tftp),
        std::slice::from_ref(&new_signer)
    );
    assert_eq!(
        with_role(&next, Role::Sast),
        [new_signer.clone(), recovery.clone()]
    );
    let config = fetch(&http, &format!("{PHONE}.cnf.xml.sgn")).await;
    let signed = sgn::parse(&config, FileKind::Sgn).unwrap();
    sgn::verify(&signed, &new_signer).unwrap();
    assert!(sgn::verify(&signed, &old_signer).is_err());
    serving.stop();

    // Negative control: without the recovery identity, an ITL naming the new signer
    // could only be signed by it, and the phone would refuse it.
    let by_new_signer = Signer::load(
        &data.join("certs/tftp.pem"),
        &data.join("certs/tftp.key"),
        Digest::Sha1,
    )
    .unwrap();
    let unrecoverable =
        itl::build_standard(&by_new_signer, &pem(&data.join("certs/capf.pem")), now()).unwrap();
    let refused = accepts(&held, &unrecoverable).unwrap_err();
    assert!(refused.contains("no SAST"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_node_introduces_its_recovery_certificate_before_relying_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());
    let http = free_http();
    let start = || Serving::start_with(&data, &["--http", &http]);
    // A node from before the recovery identity, and the ITL its phones hold.
    for file in ["itl-recovery.pem", "itl-recovery.key"] {
        std::fs::remove_file(data.join("certs").join(file)).unwrap();
    }
    let held = signer_only_itl(&data);

    // It is reported, and nothing can be rolled over yet.
    let status = capf(&data, &["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("no ITL recovery certificate"),
        "{status:?}"
    );
    let err = fails(&capf(&data, &["signer", "rollover"]));
    assert!(
        err.contains("no readable ITL recovery certificate"),
        "{err}"
    );

    // The upgrade adds it once; it is introduced, not relied on.
    let said = ok(&capf(&data, &["init", "--upgrade"]));
    assert!(
        said.contains("added the ITL recovery certificate"),
        "{said}"
    );
    let said = ok(&capf(&data, &["init", "--upgrade"]));
    assert!(said.contains("up to date"), "{said}");
    let key_mode = std::fs::metadata(data.join("certs/itl-recovery.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );
    let shown = json(&capf(&data, &["signer", "show", "--json"]));
    assert_eq!(shown["itl"]["signed_by"], "introducing", "{shown}");
    let recovery = pem(&data.join("certs/itl-recovery.pem"));

    // Phones holding the old ITL accept the one that introduces it: still signed by
    // the signer they trust, now listing the recovery certificate as a second SAST.
    let serving = start();
    let introducing = fetch(&http, "ITLFile.tlv").await;
    accepts(&held, &introducing).unwrap();
    assert!(with_role(&introducing, Role::Sast).contains(&recovery));
    serving.stop();

    // Rolling the signer the same day is refused: a phone that has not loaded the
    // introducing ITL would be lost. Forced, it goes ahead and says so.
    let err = fails(&capf(&data, &["signer", "rollover"]));
    assert!(
        err.contains("0 day(s) only") && err.contains("--force"),
        "{err}"
    );
    let said = ok(&capf(&data, &["signer", "rollover", "--force"]));
    assert!(said.contains("delete their ITL by hand"), "{said}");
    let shown = json(&capf(&data, &["signer", "show", "--json"]));
    assert_eq!(shown["itl"]["signed_by"], "recovery", "{shown}");

    // A phone that loaded the introducing ITL accepts the next one; one that never did
    // cannot (the documented manual case).
    let serving = start();
    let next = fetch(&http, "ITLFile.tlv").await;
    accepts(&introducing, &next).unwrap();
    assert!(accepts(&held, &next).is_err());
    serving.stop();
}

#[test]
fn serve_gives_an_older_node_its_recovery_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());
    for file in ["itl-recovery.pem", "itl-recovery.key"] {
        std::fs::remove_file(data.join("certs").join(file)).unwrap();
    }
    let serving = Serving::start(&data);
    assert!(data.join("certs/itl-recovery.pem").exists());
    assert!(data.join("certs/itl-recovery.introduced").exists());
    serving.stop();
    let status = capf(&data, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
}
