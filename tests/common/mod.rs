//! A capf node running in-process on 127.0.0.1 with a temporary data directory, and
//! helpers to talk to it like a phone.
#![allow(dead_code)]

pub mod cli;

use capf::ca::Ca;
use capf::model::{AuthMode, DeviceRecord, EcCurve, Event, KeyOrder, Operation, OperationStatus};
use capf::node::{stopped, Node};
use capf::phone::{connector, Outcome, Phone};
use capf::settings::{DataDir, Settings};
use capf::store::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// A phone's base configuration document, as an operator puts it in `tftp/`.
pub const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<device>
  <fullConfig>true</fullConfig>
  <deviceProtocol>SIP</deviceProtocol>
  <ipAddressMode>0</ipAddressMode>
  <loadInformation>SIP75.9-4-2SR3-1S</loadInformation>
  <sipProfile>
    <sipLines>
      <line button="1">
        <name>1001</name>
        <authPassword>s3cret</authPassword>
      </line>
    </sipLines>
  </sipProfile>
</device>
"#;

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub data: DataDir,
    pub store: Store,
    pub addr: SocketAddr,
    /// The legacy TLS listener, when the settings ask for one.
    pub legacy_addr: Option<SocketAddr>,
    /// Configuration delivery over HTTP and TFTP, when the settings ask for them.
    pub http_addr: Option<SocketAddr>,
    pub tftp_addr: Option<SocketAddr>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), when the settings ask
    /// for one (off unless a test turns it on).
    pub metrics_addr: Option<SocketAddr>,
    /// The web admin, when the settings ask for it.
    pub web_addr: Option<SocketAddr>,
    pub capf_cert: CertificateDer<'static>,
    pub connector: TlsConnector,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after letting the test adjust its settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestNode {
        Self::start_prepared(adjust, |_| {}).await
    }

    /// Starts a node after adjusting its settings and preparing its data directory
    /// (e.g. adding trust anchors) between `init` and start.
    pub async fn start_prepared(
        adjust: impl FnOnce(&mut Settings),
        prepare: impl FnOnce(&DataDir),
    ) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("capf-data"));
        let mut settings = Settings {
            node_name: "capf.test".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            http: None,
            metrics: None,
            ..Settings::default()
        };
        adjust(&mut settings);
        let store = capf::cli::initialise(
            &data,
            &settings,
            Some("Example".into()),
            Some("Voice".into()),
            false,
        )
        .unwrap();
        prepare(&data);
        Self::bind_in(dir, data, settings, store).await
    }

    /// Another node of this one's cluster: a copy of its data directory (the same CA,
    /// signer and documents, as `capf node join` sets up), serving from the same
    /// store, which must be a shared one (`settings.store`).
    pub async fn another_node(&self, adjust: impl FnOnce(&mut Settings)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.data.root())
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let data = DataDir::new(dir.path().join("capf-data"));
        let mut settings = Settings::load(&data).unwrap();
        settings.node_name = "capf-b.test".into();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        adjust(&mut settings);
        assert!(
            !settings.store.is_empty(),
            "another node needs a shared store"
        );
        let store = Store::open_configured(&data.db(), &settings.store).unwrap();
        Self::bind_in(dir, data, settings, store).await
    }

    async fn bind_in(
        dir: tempfile::TempDir,
        data: DataDir,
        settings: Settings,
        store: Store,
    ) -> TestNode {
        let ca = Ca::load(&data.certs(), settings.lsc_validity_days).unwrap();
        let capf_cert = CertificateDer::from(ca.certificate_der().to_vec());
        let node = Node::bind(&data, settings, store.clone(), capf::cli::web_commands())
            .await
            .unwrap();
        let addr = node.capf_addr().unwrap();
        let legacy_addr = node.legacy_addr();
        let http_addr = node.http_addr();
        let tftp_addr = node.tftp_addr();
        let metrics_addr = node.metrics_addr();
        let web_addr = node.web_addr();
        let (shutdown, rx) = watch::channel(false);
        let tasks = vec![tokio::spawn(node.run(stopped(rx)))];
        let connector = connector(std::slice::from_ref(&capf_cert)).unwrap();
        TestNode {
            dir,
            data,
            store,
            addr,
            legacy_addr,
            http_addr,
            tftp_addr,
            metrics_addr,
            web_addr,
            capf_cert,
            connector,
            shutdown,
            tasks,
        }
    }

    pub fn add(&self, rec: DeviceRecord) {
        self.store.add_device(&rec, event(&rec.name)).unwrap();
    }

    pub fn device(&self, name: &str) -> DeviceRecord {
        self.store.get_device(name).unwrap().expect("device exists")
    }

    /// Opens TLS as a phone would and reads AUTH_REQUEST; returns the stream and the
    /// session id, for tests that then speak (or misspeak) the protocol by hand.
    pub async fn open_session(
        &self,
    ) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, u32) {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("capf").unwrap();
        let mut tls = self.connector.connect(name, tcp).await.unwrap();
        let mut hello = [0u8; 16];
        tls.read_exact(&mut hello).await.unwrap();
        assert_eq!(hello[1], capf::protocol::Command::AuthRequest.to_u8());
        let id = u32::from_be_bytes([hello[2], hello[3], hello[4], hello[5]]);
        (tls, id)
    }

    pub async fn run(&self, phone: &Phone) -> Outcome {
        phone
            .run(self.addr, &self.connector)
            .await
            .expect("phone session")
    }

    /// Writes the base document `<name>.cnf.xml`.
    pub fn document(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.data.tftp().join(format!("{name}.cnf.xml")), bytes).unwrap();
    }

    /// The TFTP signer's certificate (DER), which phones learn from the ITL.
    pub fn signer_certificate(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(self.data.tftp_cert())
            .unwrap()
            .to_vec()
    }

    /// This node stopped and started again on its data directory and store, as a
    /// restart of `capf serve` does (its listeners on new ports).
    pub async fn restarted(self) -> TestNode {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let settings = Settings::load(&self.data).unwrap();
        Self::bind_in(self.dir, self.data, settings, self.store).await
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A device scheduled for an install, as an operator adds it (an authentication
/// string, when the mode needs one, is 123456).
pub fn install(name: &str, auth: AuthMode, key: KeyOrder) -> DeviceRecord {
    let mut d = DeviceRecord::new(name);
    d.operation = Operation::Install;
    d.auth = auth;
    d.key_order = key;
    d.status = OperationStatus::Pending;
    if auth == AuthMode::String {
        d.auth_string = Some("123456".into());
    }
    d
}

/// The key order most tests use: EC P-256.
pub const P256: KeyOrder = KeyOrder::Ec {
    curve: EcCurve::P256,
};

pub fn event(name: &str) -> Event {
    Event {
        id: 0,
        time: 0,
        actor: "test".into(),
        device: Some(name.into()),
        action: "device-add".into(),
        result: "added".into(),
        details: Default::default(),
    }
}

/// `doc` as a node named `node_name` serves it in full: capf's node, port 3804 and
/// `capf_auth_mode` spliced into the CAPF section (issue #19 point 1).
pub fn served_as(doc: &str, node_name: &str, capf_auth_mode: u8) -> String {
    use capf::phone_config::format::capf_section::{splice, CapfFacts};
    let facts = CapfFacts {
        node_name,
        capf_port: 3804,
        capf_auth_mode,
    };
    String::from_utf8(splice(doc.as_bytes(), &facts).unwrap()).unwrap()
}

/// `doc` as [`TestNode`] (named `capf.test`) serves it in full.
pub fn served(doc: &str, capf_auth_mode: u8) -> String {
    served_as(doc, "capf.test", capf_auth_mode)
}

/// A phone that authenticates by the LSC `der` it holds with its `key` (no string).
pub fn phone_with_lsc(name: &str, der: &[u8], key: &capf::phone::PhoneKey) -> Phone {
    let mut phone = Phone::new(name);
    phone.password = None;
    phone.credential = Some((
        capf::protocol::WrappedCertificate {
            cert_type: capf::protocol::CertificateType::Lsc,
            der: der.to_vec(),
        },
        key.clone(),
    ));
    phone
}

/// A new database in the PostgreSQL cluster `.ci/postgres.sh` starts for the tests, as a `store =` URL; `None` (SKIPPED) outside CI.
pub async fn new_database(test: &str) -> Option<String> {
    let Ok(url) = std::env::var("CAPF_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CAPF_TEST_POSTGRES is not set under CI: .ci/run starts a cluster with .ci/postgres.sh"
        );
        eprintln!("SKIPPED: {test} (set CAPF_TEST_POSTGRES, see .ci/postgres.sh)");
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("capf_{test}_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}
