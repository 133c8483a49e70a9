//! The phone's journey over real HTTP, real TLS and a real sled store: partial
//! configuration, CAPF enrollment, the partial with the new certHash, the encrypted
//! configuration decrypted with the phone's new key.

mod common;

use capf::model::{AuthMode, DeviceRecord, EcCurve, KeyOrder};
use capf::phone::{http_request, HttpResponse, Phone, PhoneKey};
use capf::phone_config::format::enc;
use capf::phone_config::format::itl::{self, Role};
use capf::phone_config::format::sgn::{self, FileKind};
use capf::phone_config::{Digest, Signer};
use capf::settings::DataDir;
use capf::settings::Settings;
use common::{TestNode, DOC};
use md5::Digest as _;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "SEP001122334455";

/// A node with HTTP delivery on an ephemeral port.
struct Companion {
    node: TestNode,
    http: SocketAddr,
}

impl Companion {
    async fn start() -> Companion {
        Self::start_with(|_| {}).await
    }

    /// Starts after letting the test change the data directory (e.g. break the signer).
    async fn start_with(prepare: impl FnOnce(&DataDir)) -> Companion {
        let node =
            TestNode::start_prepared(|s| s.http = Some("127.0.0.1:0".parse().unwrap()), prepare)
                .await;
        let http = node.http_addr.expect("HTTP delivery");
        Companion { node, http }
    }

    fn document(&self, name: &str, bytes: &[u8]) {
        self.node.document(name, bytes);
    }

    async fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path).await
    }

    async fn request(&self, method: &str, path: &str) -> HttpResponse {
        http_request(&self.http.to_string(), method, path)
            .await
            .unwrap()
    }

    fn signer_certificate(&self) -> Vec<u8> {
        self.node.signer_certificate()
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

fn device(encrypted: bool, key: KeyOrder) -> DeviceRecord {
    let mut d = common::install(NAME, AuthMode::Null, key);
    d.encrypted_config = encrypted;
    d
}

const RSA: KeyOrder = KeyOrder::Rsa { bits: 2048 };

/// The verified body of a served `.sgn`.
fn signed_body(c: &Companion, response: &HttpResponse) -> String {
    assert_eq!(response.status, 200);
    signed_body_of(c, &response.body)
}

/// The verified body of the `.sgn` file `bytes`.
fn signed_body_of(c: &Companion, bytes: &[u8]) -> String {
    let file = sgn::parse(bytes, FileKind::Sgn).unwrap();
    assert_eq!(file.filename, format!("{NAME}.cnf.xml.sgn"));
    sgn::verify(&file, &c.signer_certificate()).unwrap();
    String::from_utf8(file.body.to_vec()).unwrap()
}

fn cert_hash(body: &str) -> &str {
    let start = body.find("<certHash>").unwrap() + "<certHash>".len();
    let end = body.find("</certHash>").unwrap();
    &body[start..end]
}

#[tokio::test]
async fn the_encrypted_configuration_journey() {
    let c = Companion::start().await;
    c.node.add(device(true, RSA));
    c.document(NAME, DOC.as_bytes());
    let sgn_path = format!("/{NAME}.cnf.xml.sgn");
    let enc_path = format!("/{NAME}.cnf.xml.enc.sgn");

    // 1. No key known: the partial, with an empty hash, sends the phone to CAPF.
    let first = c.get(&sgn_path).await;
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let body = signed_body(&c, &first);
    assert_eq!(cert_hash(&body), "");
    assert!(body.contains("<fullConfig>false</fullConfig>"));
    assert!(body.contains("<encrConfig>true</encrConfig>"));
    assert!(body.contains("<processNodeName>capf.test</processNodeName>"));
    assert!(body.contains("<phonePort>3804</phonePort>"));
    assert!(body.contains("<capfAuthMode>2</capfAuthMode>"));
    for secret in ["s3cret", "sipProfile", "authPassword", "deviceProtocol"] {
        assert!(!body.contains(secret), "the partial leaks {secret}");
    }
    assert_eq!(c.get(&enc_path).await.status, 404);
    let plain = c.get(&format!("/{NAME}.cnf.xml")).await;
    assert_eq!(plain.status, 200);
    assert!(!String::from_utf8_lossy(&plain.body).contains("s3cret"));

    // 2. CAPF enrollment.
    let outcome = c.node.run(&Phone::new(NAME)).await;
    let (der, key) = outcome.issued.expect("LSC issued");
    let stored = c.node.device(NAME).lsc.expect("LSC stored");
    assert_eq!(stored.der, der);

    // 3. The next partial carries the new certificate's MD5 (read fresh from the store).
    let body = signed_body(&c, &c.get(&sgn_path).await);
    assert_eq!(cert_hash(&body), stored.md5);
    assert_eq!(stored.md5, hex::encode(md5::Md5::digest(&der)));
    assert!(body.contains("<capfAuthMode>0</capfAuthMode>"));

    // 4. The encrypted configuration, signed by the TFTP signer, decrypts with the
    // phone's new key to the base document byte for byte.
    let encrypted = c.get(&enc_path).await;
    assert_eq!(encrypted.status, 200);
    assert_eq!(encrypted.header("cache-control"), Some("no-store"));
    let file = sgn::parse(&encrypted.body, FileKind::EncSgn).unwrap();
    assert_eq!(file.filename, format!("{NAME}.cnf.xml.enc.sgn"));
    sgn::verify(&file, &c.signer_certificate()).unwrap();
    let PhoneKey::Rsa(key) = key else {
        panic!("an RSA key was ordered")
    };
    // The install succeeded, so no operation is pending: capfAuthMode 0.
    assert_eq!(
        enc::decrypt(&encrypted.body, &key).unwrap(),
        common::served(DOC, 0).as_bytes()
    );

    // HEAD: the same headers, no body.
    let head = c.request("HEAD", &enc_path).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(encrypted.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    c.stop().await;
}

/// A document exported from CUCM: its CAPF section names the old publisher.
const CUCM_DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<device xsi:type=\"axl:XIPPhone\" ctiid=\"12\">\n\
  <fullConfig>true</fullConfig>\n\
  <capfAuthMode>0</capfAuthMode>\n\
  <capfList>\n\
    <capf>\n\
      <phonePort>5555</phonePort>\n\
      <processNodeName>cucm-pub.example.com</processNodeName>\n\
    </capf>\n\
  </capfList>\n\
  <sipProfile><authPassword>s3cret</authPassword></sipProfile>\n\
</device>\n";

/// #19 point 1: with encryption off the phone gets its base document in full, with
/// capf's node, port and (an install pending, null auth) capfAuthMode 2 written into
/// its CAPF section, and every other byte as the operator wrote it.
#[tokio::test]
async fn encryption_off_serves_the_full_document_sending_the_phone_to_capf() {
    let c = Companion::start().await;
    c.node.add(device(false, RSA));
    c.document(NAME, CUCM_DOC.as_bytes());
    let expected = CUCM_DOC
        .replace("<capfAuthMode>0<", "<capfAuthMode>2<")
        .replace("<phonePort>5555<", "<phonePort>3804<")
        .replace(">cucm-pub.example.com<", ">capf.test<");
    let body = signed_body(&c, &c.get(&format!("/{NAME}.cnf.xml.sgn")).await);
    assert_eq!(body, expected);
    assert_eq!(c.get(&format!("/{NAME}.cnf.xml.enc.sgn")).await.status, 404);
    assert_eq!(
        c.get(&format!("/{NAME}.cnf.xml")).await.body,
        expected.as_bytes()
    );

    // Once the phone has its LSC nothing is pending: capfAuthMode goes back to 0.
    let outcome = c.node.run(&Phone::new(NAME)).await;
    assert!(outcome.issued.is_some());
    let body = signed_body(&c, &c.get(&format!("/{NAME}.cnf.xml.sgn")).await);
    assert_eq!(
        body,
        expected.replace("<capfAuthMode>2<", "<capfAuthMode>0<")
    );
    c.stop().await;
}

#[tokio::test]
async fn an_ec_certificate_gets_the_partial_only() {
    let c = Companion::start().await;
    c.node.add(device(
        true,
        KeyOrder::Ec {
            curve: EcCurve::P256,
        },
    ));
    c.document(NAME, DOC.as_bytes());
    let outcome = c.node.run(&Phone::new(NAME)).await;
    assert!(outcome.issued.is_some());
    assert!(c.node.device(NAME).lsc.is_some());
    let body = signed_body(&c, &c.get(&format!("/{NAME}.cnf.xml.sgn")).await);
    assert_eq!(cert_hash(&body), "", "an EC key is no usable certificate");
    assert!(!body.contains("s3cret"));
    assert_eq!(c.get(&format!("/{NAME}.cnf.xml.enc.sgn")).await.status, 404);
    c.stop().await;
}

#[tokio::test]
async fn missing_and_broken_documents_are_not_found() {
    let c = Companion::start().await;
    c.node.add(device(true, RSA));
    let unknown = "SEPAABBCCDDEEFF";
    for suffix in [".cnf.xml", ".cnf.xml.sgn", ".cnf.xml.enc.sgn"] {
        assert_eq!(c.get(&format!("/{NAME}{suffix}")).await.status, 404);
        assert_eq!(c.get(&format!("/{unknown}{suffix}")).await.status, 404);
    }
    c.document(NAME, b"<device><fullConfig>true</device>");
    for suffix in [".cnf.xml", ".cnf.xml.sgn", ".cnf.xml.enc.sgn"] {
        let r = c.get(&format!("/{NAME}{suffix}")).await;
        assert_eq!(r.status, 404, "{suffix}");
        assert!(!String::from_utf8_lossy(&r.body).contains("fullConfig"));
    }
    c.stop().await;
}

#[tokio::test]
async fn only_request_names_are_served() {
    let c = Companion::start().await;
    c.node.add(device(false, RSA));
    c.document(NAME, DOC.as_bytes());
    for path in [
        "/../capf-data/certs/capf.key",
        "/..%2fcerts%2fcapf.key",
        "/%2e%2e/certs/capf.key",
        "/%2e%2e%2fcerts%2ftftp.key",
        &format!("/{NAME}.cnf.xml/../x"),
        &format!("//{NAME}.cnf.xml"),
        &format!("/tftp/{NAME}.cnf.xml"),
        &format!("/{NAME}.cnf.xml?x=1"),
        &format!("{NAME}.cnf.xml"),
        "http://127.0.0.1/ITLFile.tlv",
        "/certs/capf.key",
        "/capf.toml",
        "/",
        &format!("/ITL{NAME}.tlv"),
        "/CTLFile.tlv",
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let post = c.request("POST", &format!("/{NAME}.cnf.xml")).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        c.request("DELETE", &format!("/{NAME}.cnf.xml"))
            .await
            .status,
        405
    );

    // A request head larger than the bound gets no file.
    let mut tcp = tokio::net::TcpStream::connect(c.http).await.unwrap();
    let huge = format!(
        "GET /{NAME}.cnf.xml HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = tcp.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"));

    // Garbage is a bad request.
    let mut tcp = tokio::net::TcpStream::connect(c.http).await.unwrap();
    tcp.write_all(b"hello\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"));
    c.stop().await;
}

#[tokio::test]
async fn the_itl_lists_the_certificate_the_capf_listener_presents() {
    let c = Companion::start().await;
    let response = c.get("/ITLFile.tlv").await;
    assert_eq!(response.status, 200);
    let list = itl::parse(&response.body).unwrap();
    itl::verify(&list).unwrap();

    let tcp = tokio::net::TcpStream::connect(c.node.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("capf").unwrap();
    let tls = c.node.connector.connect(name, tcp).await.unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let capf: Vec<_> = list
        .records
        .iter()
        .filter(|r| r.role == Role::Capf.value())
        .collect();
    assert_eq!(capf.len(), 1);
    assert_eq!(capf[0].certificate, presented.as_slice());
    let tftp = list
        .records
        .iter()
        .find(|r| r.role == Role::Tftp.value())
        .unwrap();
    assert_eq!(tftp.certificate, c.signer_certificate().as_slice());
    c.stop().await;
}

#[tokio::test]
async fn a_large_configuration_round_trips() {
    let c = Companion::start().await;
    c.node.add(device(true, RSA));
    let filler: String = (0..6000)
        .map(|i| format!("  <line{i}>{}</line{i}>\n", "x".repeat(20)))
        .collect();
    let doc = DOC.replace("</device>", &format!("{filler}</device>"));
    assert!(doc.len() > 200 * 1024);
    c.document(NAME, doc.as_bytes());
    let outcome = c.node.run(&Phone::new(NAME)).await;
    let Some((_, PhoneKey::Rsa(key))) = outcome.issued else {
        panic!("an RSA LSC was issued")
    };
    let encrypted = c.get(&format!("/{NAME}.cnf.xml.enc.sgn")).await;
    assert_eq!(encrypted.status, 200);
    let served = common::served(&doc, 0);
    assert_eq!(
        enc::decrypt(&encrypted.body, &key).unwrap(),
        served.as_bytes()
    );

    let mut off = c.node.device(NAME);
    off.encrypted_config = false;
    c.node.store.put_device(&off, common::event(NAME)).unwrap();
    let body = signed_body(&c, &c.get(&format!("/{NAME}.cnf.xml.sgn")).await);
    assert_eq!(body, served);

    // Past the served-size limit the document is refused, never read whole or truncated.
    let huge = DOC.replace(
        "</device>",
        &format!(
            "<x>{}</x></device>",
            "y".repeat(capf::phone_config::plan::MAX_DOCUMENT as usize)
        ),
    );
    c.document(NAME, huge.as_bytes());
    let r = c.get(&format!("/{NAME}.cnf.xml.sgn")).await;
    assert_ne!(r.status, 200);
    assert!(r.body.len() < 1024);
    c.stop().await;
}

#[tokio::test]
async fn a_broken_signer_serves_no_signed_name() {
    let c = Companion::start_with(|data| {
        // E6: a key that does not match the certificate.
        let other = data.capf_cert().with_extension("key");
        std::fs::copy(other, data.tftp_key()).unwrap();
    })
    .await;
    let settings = Settings::load(&c.node.data).unwrap();
    assert!(Signer::load(
        &c.node.data.tftp_cert(),
        &c.node.data.tftp_key(),
        settings.config_digest
    )
    .is_err());
    assert_eq!(settings.config_digest, Digest::Sha1);
    c.node.add(device(false, RSA));
    c.document(NAME, DOC.as_bytes());
    assert_eq!(c.get(&format!("/{NAME}.cnf.xml.sgn")).await.status, 404);
    assert_eq!(c.get("/ITLFile.tlv").await.status, 404);
    assert_eq!(
        c.get(&format!("/{NAME}.cnf.xml")).await.body,
        common::served(DOC, 2).as_bytes()
    );
    c.stop().await;
}

/// #15 point 1: a file whose inputs are unchanged is served again byte for byte (the
/// `.enc.sgn` with the same AES key), and every change of what it is built from (the
/// device record, the base document) shows in the very next fetch.
#[tokio::test]
async fn unchanged_files_are_served_again_and_every_change_at_once() {
    let c = Companion::start().await;
    c.node.add(device(true, RSA));
    c.document(NAME, DOC.as_bytes());
    let sgn_path = format!("/{NAME}.cnf.xml.sgn");
    let enc_path = format!("/{NAME}.cnf.xml.enc.sgn");

    // The ITL and the first partial, fetched again after the clock has moved on by a
    // second: a new build would carry another timestamp.
    let itl = c.get("/ITLFile.tlv").await.body;
    let partial = c.get(&sgn_path).await.body;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(c.get("/ITLFile.tlv").await.body, itl);
    assert_eq!(c.get(&sgn_path).await.body, partial);
    let body = signed_body_of(&c, &partial);
    assert_eq!(cert_hash(&body), "");
    assert!(body.contains("<capfAuthMode>2</capfAuthMode>"));

    // The phone enrolls: a new LSC, and no operation pending any more.
    let Some((der, PhoneKey::Rsa(first_key))) = c.node.run(&Phone::new(NAME)).await.issued else {
        panic!("an RSA LSC was issued")
    };
    let enrolled = c.get(&sgn_path).await.body;
    assert_ne!(enrolled, partial);
    let body = signed_body_of(&c, &enrolled);
    assert_eq!(cert_hash(&body), hex::encode(md5::Md5::digest(&der)));
    assert!(body.contains("<capfAuthMode>0</capfAuthMode>"));
    let encrypted = c.get(&enc_path).await.body;
    assert_eq!(
        enc::decrypt(&encrypted, &first_key).unwrap(),
        common::served(DOC, 0).as_bytes()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        c.get(&enc_path).await.body,
        encrypted,
        "the same file, the same AES key"
    );
    assert_eq!(c.get(&sgn_path).await.body, enrolled);

    // The base document.
    let edited = DOC.replace("s3cret", "n3w-s3cret");
    c.document(NAME, edited.as_bytes());
    let encrypted_edited = c.get(&enc_path).await.body;
    assert_ne!(encrypted_edited, encrypted);
    assert_eq!(
        enc::decrypt(&encrypted_edited, &first_key).unwrap(),
        common::served(&edited, 0).as_bytes()
    );

    // An operation scheduled: capfAuthMode in the partial and in the .enc.sgn.
    let mut record = c.node.device(NAME);
    record.operation = capf::model::Operation::Install;
    record.status = capf::model::OperationStatus::Pending;
    c.node
        .store
        .put_device(&record, common::event(NAME))
        .unwrap();
    let scheduled = c.get(&sgn_path).await.body;
    assert_ne!(scheduled, enrolled);
    assert!(signed_body_of(&c, &scheduled).contains("<capfAuthMode>2</capfAuthMode>"));
    assert_eq!(
        enc::decrypt(&c.get(&enc_path).await.body, &first_key).unwrap(),
        common::served(&edited, 2).as_bytes()
    );

    // A new LSC: the phone enrolls again with a new key.
    let Some((der, PhoneKey::Rsa(second_key))) = c.node.run(&Phone::new(NAME)).await.issued else {
        panic!("an RSA LSC was issued")
    };
    let renewed = c.get(&sgn_path).await.body;
    assert_eq!(
        cert_hash(&signed_body_of(&c, &renewed)),
        hex::encode(md5::Md5::digest(&der))
    );
    let encrypted_renewed = c.get(&enc_path).await.body;
    assert!(enc::decrypt(&encrypted_renewed, &first_key).is_err());
    assert_eq!(
        enc::decrypt(&encrypted_renewed, &second_key).unwrap(),
        common::served(&edited, 0).as_bytes()
    );

    // Encryption off: the full document, and no .enc.sgn; on again: the partial.
    let mut record = c.node.device(NAME);
    record.encrypted_config = false;
    c.node
        .store
        .put_device(&record, common::event(NAME))
        .unwrap();
    assert_eq!(
        signed_body_of(&c, &c.get(&sgn_path).await.body),
        common::served(&edited, 0)
    );
    assert_eq!(c.get(&enc_path).await.status, 404);
    record.encrypted_config = true;
    c.node
        .store
        .put_device(&record, common::event(NAME))
        .unwrap();
    assert!(signed_body_of(&c, &c.get(&sgn_path).await.body).contains("<encrConfig>true<"));
    assert_eq!(c.get(&enc_path).await.status, 200);
    c.stop().await;
}

/// #15 point 1: past its budget the cache drops the least recently used files; it
/// never holds more (here 1 MiB, against 2.5 MiB of signed files).
#[tokio::test]
async fn the_file_cache_stays_within_its_budget() {
    let c = Companion::start().await;
    let settings = Settings {
        node_name: "capf.test".into(),
        config_cache_mib: 1,
        ..Settings::default()
    };
    let service = capf::phone_config::service::ConfigService::load(
        &c.node.data,
        &settings,
        c.node.store.clone(),
    );
    assert_eq!(service.cache().budget(), 1024 * 1024);
    let filler: String = (0..2500)
        .map(|i| format!("  <line{i}>{}</line{i}>\n", "x".repeat(20)))
        .collect();
    let doc = DOC.replace("</device>", &format!("{filler}</device>"));
    assert!(doc.len() > 100 * 1024);
    for n in 0..25 {
        let name = format!("SEP0000000000{n:02}");
        c.node.add(DeviceRecord::new(name.as_str()));
        c.document(&name, doc.as_bytes());
        let request =
            capf::phone_config::plan::Request::parse(&format!("{name}.cnf.xml.sgn")).unwrap();
        let file = service.fetch(&request, capf::model::now()).unwrap();
        assert!(file.bytes.len() > 100 * 1024);
        assert!(service.cache().bytes() <= service.cache().budget());
    }
    let kept = service.cache().len();
    assert!((5..25).contains(&kept), "{kept} files kept");
    c.stop().await;
}

/// #15: a power cut brings capf down with the phones. After the restart the files it
/// built before are served from its kept copies on disk, byte for byte (the `.enc.sgn`
/// with its AES key: a new build would draw another), not signed again; the copies of
/// a device deleted before the restart are removed.
#[tokio::test]
async fn a_restarted_node_serves_the_files_it_built_before() {
    let c = Companion::start().await;
    c.node.add(device(true, RSA));
    c.document(NAME, DOC.as_bytes());
    let Some((_, PhoneKey::Rsa(key))) = c.node.run(&Phone::new(NAME)).await.issued else {
        panic!("an RSA LSC was issued")
    };
    let paths = [
        "/ITLFile.tlv".to_owned(),
        format!("/{NAME}.cnf.xml.sgn"),
        format!("/{NAME}.cnf.xml.enc.sgn"),
    ];
    let mut before = Vec::new();
    for path in &paths {
        before.push(c.get(path).await.body);
    }
    let gone = "SEP00AABBCCDDEE";
    c.node.add(DeviceRecord::new(gone));
    c.document(gone, DOC.as_bytes());
    assert_eq!(c.get(&format!("/{gone}.cnf.xml.sgn")).await.status, 200);
    let kept = c.node.data.kept_files();
    // Copies are written beside the serving, at idle priority; bounded wait.
    let gone_copy = kept.join(format!("{gone}.cnf.xml.sgn"));
    for _ in 0..200 {
        if gone_copy.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone_copy.exists());
    assert!(c
        .node
        .store
        .remove_device(gone, common::event(gone))
        .unwrap());

    let node = c.node.restarted().await;
    let c = Companion {
        http: node.http_addr.expect("HTTP delivery"),
        node,
    };
    let mut after = Vec::new();
    for path in &paths {
        after.push(c.get(path).await.body);
    }
    assert_eq!(after, before);
    assert_eq!(
        enc::decrypt(&after[2], &key).unwrap(),
        common::served(DOC, 0).as_bytes()
    );
    // The sweep runs beside the listeners; bounded wait.
    let swept = gone_copy;
    for _ in 0..100 {
        if !swept.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!swept.exists(), "the deleted device's copy is removed");
    assert!(kept.join(format!("{NAME}.cnf.xml.enc.sgn")).exists());
    c.stop().await;
}
