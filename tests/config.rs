//! `capf config build`, `capf itl build` and `capf inspect` through the real binary.

mod common;

use capf::ca::Ca;
use capf::model::Event;
use capf::phone::PhoneKey;
use capf::protocol::KeyGenerateRequest;
use capf::settings::DataDir;
use capf::store::Store;
use std::path::{Path, PathBuf};
use std::process::Output;

const NAME: &str = "SEP001122334455";
const DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device>\n  <fullConfig>true</fullConfig>\n  <loadInformation>SIP75</loadInformation>\n  <sipProfile><authPassword>s3cret</authPassword></sipProfile>\n</device>\n";

struct Node {
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("capf-data");
        let node = Node { dir, data };
        node.ok(&["init", "--node-name", "capf.example.net"]);
        std::fs::create_dir_all(node.data.join("tftp")).unwrap();
        std::fs::write(node.data.join(format!("tftp/{NAME}.cnf.xml")), DOC).unwrap();
        node
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn capf(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_capf"))
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.capf(args);
        assert!(
            out.status.success(),
            "capf {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.capf(args);
        assert!(!out.status.success(), "capf {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Adds the device, scheduled for install with encrypted configuration on.
    fn add_encrypted(&self) {
        self.ok(&[
            "device",
            "add",
            NAME,
            "--operation",
            "install",
            "--encrypted-config",
        ]);
    }

    fn build(&self) -> String {
        self.ok(&["config", "build", NAME, "--out", "out"])
    }

    /// Stores an RSA-2048 LSC for the device, as an enrollment would (no server is
    /// running, so the store can be opened directly), and writes the phone's key.
    fn enroll(&self) -> PathBuf {
        let data = DataDir::new(&self.data);
        let key = rsa_key();
        let ca = Ca::load(&data.certs(), 5 * 365).unwrap();
        let lsc = ca
            .issue_lsc(NAME, &key.public_key_der().unwrap(), 1_700_000_000)
            .unwrap();
        let store = Store::open(&data.db()).unwrap();
        let mut rec = store.get_device(NAME).unwrap().unwrap();
        rec.lsc = Some(lsc);
        store
            .put_device(
                &rec,
                Event {
                    id: 0,
                    time: 0,
                    actor: "test".into(),
                    device: Some(NAME.into()),
                    action: "session".into(),
                    result: "Upgrade Success".into(),
                    details: Default::default(),
                },
            )
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let path = self.dir.path().join("phone.key");
        std::fs::write(&path, key.to_pem().unwrap()).unwrap();
        path
    }
}

fn rsa_key() -> PhoneKey {
    PhoneKey::generate(&KeyGenerateRequest {
        key_size: Some(2048),
        key_type: None,
        curve: None,
    })
    .unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Flips one byte of a copy of `file`, `from_end` bytes before its end.
fn tampered(file: &Path, from_end: usize) -> PathBuf {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() - from_end;
    bytes[at] ^= 0x01;
    let copy = file.with_file_name(format!(
        "tampered-{}",
        file.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&copy, bytes).unwrap();
    copy
}

#[test]
fn encrypted_config_without_a_key_builds_the_partial_alone() {
    let node = Node::new();
    node.add_encrypted();
    let said = node.build();
    assert!(said.contains("partial"), "{said}");
    let sgn = node.out().join(format!("{NAME}.cnf.xml.sgn"));
    assert!(sgn.exists());
    assert!(!node.out().join(format!("{NAME}.cnf.xml.enc.sgn")).exists());

    let shown = node.ok(&["inspect", path_str(&sgn)]);
    assert!(shown.contains("signature:      OK"), "{shown}");
    assert!(shown.contains(&format!("filename:       {NAME}.cnf.xml.sgn")));
    assert!(shown.contains("<certHash></certHash>"));
    assert!(shown.contains("<processNodeName>capf.example.net</processNodeName>"));
    assert!(!shown.contains("s3cret"));
}

#[test]
fn a_known_rsa_key_adds_the_encrypted_file_which_inspect_decrypts() {
    let node = Node::new();
    node.ok(&["device", "add", NAME, "--encrypted-config"]);
    let key = node.enroll();
    node.build();
    let enc = node.out().join(format!("{NAME}.cnf.xml.enc.sgn"));
    let shown = node.ok(&["inspect", path_str(&enc), "--key", path_str(&key)]);
    assert!(shown.contains("version:        2.0"), "{shown}");
    assert!(shown.contains("encryption:     AES-128-CBC"));
    assert!(shown.contains("signature:      OK"));
    // No operation pending: capf's CAPF section with capfAuthMode 0.
    let served = common::served_as(DOC, "capf.example.net", 0);
    assert!(shown.ends_with(&served), "{shown}");
    // Without the key: verified, not decrypted.
    let shown = node.ok(&["inspect", path_str(&enc)]);
    assert!(!shown.contains("s3cret"));

    // The partial now carries the certificate's MD5.
    let sgn = node.out().join(format!("{NAME}.cnf.xml.sgn"));
    let shown = node.ok(&["inspect", path_str(&sgn)]);
    let keys = node.ok(&["keys", "show", NAME, "--json"]);
    let md5 = serde_json::from_str::<serde_json::Value>(&keys).unwrap()["lsc"]["md5"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        shown.contains(&format!("<certHash>{md5}</certHash>")),
        "{shown}"
    );

    // Another phone's key does not decrypt it.
    let other = node.dir.path().join("other.key");
    let other_key = rsa_key();
    std::fs::write(&other, other_key.to_pem().unwrap()).unwrap();
    node.fails(&["inspect", path_str(&enc), "--key", path_str(&other)]);
}

#[test]
fn encryption_off_builds_the_full_signed_document() {
    let node = Node::new();
    node.ok(&["device", "add", NAME]);
    let said = node.build();
    assert!(said.contains("full"), "{said}");
    assert!(!node.out().join(format!("{NAME}.cnf.xml.enc.sgn")).exists());
    let shown = node.ok(&[
        "inspect",
        path_str(&node.out().join(format!("{NAME}.cnf.xml.sgn"))),
    ]);
    let served = common::served_as(DOC, "capf.example.net", 0);
    assert!(shown.ends_with(&served), "{shown}");
    assert!(served.contains("<processNodeName>capf.example.net</processNodeName>"));
}

#[test]
fn a_missing_or_broken_base_document_is_an_error() {
    let node = Node::new();
    node.ok(&["device", "add", NAME]);
    std::fs::write(node.data.join(format!("tftp/{NAME}.cnf.xml")), "<device>").unwrap();
    node.fails(&["config", "build", NAME, "--out", "out"]);
    std::fs::remove_file(node.data.join(format!("tftp/{NAME}.cnf.xml"))).unwrap();
    let err = node.fails(&["config", "build", NAME, "--out", "out"]);
    assert!(err.contains("no base document"), "{err}");
    assert!(!node.out().join(format!("{NAME}.cnf.xml.sgn")).exists());
}

#[test]
fn itl_build_and_inspect() {
    let node = Node::new();
    let said = node.ok(&["itl", "build", "--out", "out"]);
    assert!(said.contains("ITLFile.tlv"), "{said}");
    let itl = node.out().join("ITLFile.tlv");
    let shown = node.ok(&["inspect", path_str(&itl)]);
    assert!(shown.contains("role 0 (SAST)"), "{shown}");
    assert!(shown.contains("role 3 (TFTP)"));
    assert!(shown.contains("role 4 (CAPF)"));
    assert!(shown.contains("signature:      OK (SAST record)"));
    node.fails(&["inspect", path_str(&tampered(&itl, 1))]);
}

#[test]
fn inspect_refuses_tampered_files_and_the_wrong_signer() {
    let node = Node::new();
    node.ok(&["device", "add", NAME]);
    node.build();
    let sgn = node.out().join(format!("{NAME}.cnf.xml.sgn"));
    let err = node.fails(&["inspect", path_str(&tampered(&sgn, 3))]);
    assert!(err.contains("signature"), "{err}");
    let capf = node.data.join("certs/capf.pem");
    node.fails(&["inspect", path_str(&sgn), "--cert", path_str(&capf)]);
    let truncated = node.out().join(format!("cut-{NAME}.cnf.xml.sgn"));
    std::fs::write(&truncated, &std::fs::read(&sgn).unwrap()[..40]).unwrap();
    node.fails(&["inspect", path_str(&truncated)]);
    let unknown = node.out().join("notes.txt");
    std::fs::write(&unknown, "x").unwrap();
    node.fails(&["inspect", path_str(&unknown)]);
}

/// #19 point 8: doctor checks what phones get from the running node, over its HTTP
/// and TFTP listeners; a phone without encryption is a choice, not a failure; `--json`.
#[test]
fn doctor_checks_what_the_running_node_serves() {
    let node = Node::new();
    node.add_encrypted();
    let files = ["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"];
    let serving = common::cli::Serving::start_with(&node.data, &files);
    let out = node.capf(&["doctor", NAME]);
    assert!(!out.status.success(), "no certificate is stored yet");
    let said = String::from_utf8(out.stdout).unwrap();
    for line in [
        "OK   capf serve is running on",
        "OK   CAPF certificate is a CA",
        "OK   CAPF listener 127.0.0.1:",
        "OK   ITLFile.tlv over HTTP from 127.0.0.1:",
        "OK   ITLFile.tlv over TFTP from 127.0.0.1:",
        "OK   encrypted config for SEP001122334455 is on",
        "     capf writes into every configuration of SEP001122334455: processNodeName capf.example.net, phonePort 3804, capfAuthMode 1",
        "is the partial and sends the phone to capf: capf.example.net:3804 (capfAuthMode 1)",
        "FAIL certHash served equals the MD5 of the phone's stored certificate: no certificate is stored yet",
    ] {
        assert!(said.contains(line), "{line}\n{said}");
    }
    assert_eq!(
        said.matches("is the partial and sends the phone").count(),
        2,
        "{said}"
    );
    serving.stop();

    // The store can only be written here while the node is down.
    node.enroll();
    let serving = common::cli::Serving::start_with(&node.data, &files);
    let said = node.ok(&["doctor", NAME]);
    assert!(
        said.contains("OK   certHash served equals the MD5"),
        "{said}"
    );
    assert!(
        said.contains("OK   SEP001122334455.cnf.xml.enc.sgn over HTTP from 127.0.0.1:"),
        "{said}"
    );
    assert!(said.contains("OK   SEP001122334455.cnf.xml.enc.sgn over TFTP from 127.0.0.1:"));
    assert!(said.contains("last session:"), "{said}");

    // Encryption off: the full configuration, which still sends the phone to capf.
    node.ok(&["device", "set", NAME, "--encrypted-config", "false"]);
    let said = node.ok(&["doctor", NAME]);
    assert!(
        said.contains("OK   encrypted config for SEP001122334455 is off: the phone gets its full configuration, signed"),
        "{said}"
    );
    assert!(
        said.contains(
            "is the full configuration and sends the phone to capf: capf.example.net:3804"
        ),
        "{said}"
    );
    assert!(!said.contains("FAIL"), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&node.ok(&["doctor", NAME, "--json"])).unwrap();
    assert_eq!(json["ok"], true);
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["result"] != "fail"), "{json}");
    assert!(checks.iter().any(|c| c["check"]
        .as_str()
        .unwrap()
        .starts_with("ITLFile.tlv over TFTP")));
    serving.stop();

    // The node down: said as a failure; the files are checked as built here.
    let out = node.capf(&["doctor", "--json"]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks[0]["result"], "fail", "{json}");
    assert!(checks[0]["check"]
        .as_str()
        .unwrap()
        .starts_with("capf serve is running"));
    assert!(checks.iter().any(|c| c["check"]
        .as_str()
        .unwrap()
        .starts_with("ITLFile.tlv (built here: the node is not running)")));
}

/// #13 point 7: doctor names base documents whose device capf does not know (they are
/// not served, but hold that phone's secrets), and fails when the node would serve them.
#[test]
fn doctor_reports_base_documents_without_a_device() {
    let node = Node::new();
    let said = String::from_utf8(node.capf(&["doctor"]).stdout).unwrap();
    assert!(
        said.contains(&format!(
            "WARN base documents without a device (not served; they still hold secrets): {NAME}"
        )),
        "{said}"
    );
    node.add_encrypted();
    let said = String::from_utf8(node.capf(&["doctor"]).stdout).unwrap();
    assert!(said.contains("OK   every base document in"), "{said}");

    node.ok(&["device", "remove", NAME]);
    let toml = node.data.join("capf.toml");
    let settings = std::fs::read_to_string(&toml).unwrap().replace(
        "serve_unknown_devices_plaintext = false",
        "serve_unknown_devices_plaintext = true",
    );
    std::fs::write(&toml, settings).unwrap();
    let said = String::from_utf8(node.capf(&["doctor"]).stdout).unwrap();
    assert!(
        said.contains("FAIL base documents without a device, served in plaintext to anyone"),
        "{said}"
    );
}

/// Writes an RSA-2048 certificate valid only between the two times, and its PKCS#8 key.
fn dated_identity(cert: &Path, key: &Path, not_before: i64, not_after: i64) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let pkcs8 = openssl::pkey::PKey::from_rsa(rsa)
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    let pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["tftp.example.net".into()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let issued = params.self_signed(&pair).unwrap();
    std::fs::write(cert, issued.pem()).unwrap();
    std::fs::write(key, pair.serialize_pem()).unwrap();
}

#[test]
fn doctor_checks_the_certificates_dates() {
    let node = Node::new();
    let said = String::from_utf8(node.capf(&["doctor"]).stdout).unwrap();
    assert!(said.contains("OK   CAPF certificate valid until"), "{said}");
    assert!(
        said.contains("OK   TFTP signer certificate valid until"),
        "{said}"
    );
    assert!(!said.contains("renew it soon"), "{said}");

    let certs = node.data.join("certs");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (cert, key) = (certs.join("tftp.pem"), certs.join("tftp.key"));
    dated_identity(&cert, &key, now - 400 * 86_400, now - 86_400);
    let out = node.capf(&["doctor"]);
    assert!(!out.status.success());
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("FAIL TFTP signer certificate expired on"),
        "{said}"
    );

    dated_identity(&cert, &key, now - 86_400, now + 10 * 86_400);
    let said = String::from_utf8(node.capf(&["doctor"]).stdout).unwrap();
    assert!(
        said.contains("OK   TFTP signer certificate valid until"),
        "{said}"
    );
    assert!(said.contains(" days: renew it soon"), "{said}");
}
