//! The admin listener on real sockets (issue #16 point 1): `/metrics` parsed as
//! Prometheus reads it, before and after a phone enrolls and fetches its files;
//! `/healthz` and `/readyz`; and where it listens: only where it is told, never on a
//! phone-facing port, nowhere when off.

mod common;

use capf::model::{AuthMode, DeviceRecord, KeyOrder};
use capf::phone::{http_request, tftp_get, HttpResponse, Phone};
use capf::protocol::Reason;
use common::cli::Serving;
use common::{TestNode, DOC};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

const ENROLLS: &str = "SEP00000000A001";
const GUESSED: &str = "SEP00000000A002";

fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(&addr.to_string(), "GET", path).await.unwrap()
}

/// `/metrics`, parsed by a Prometheus text parser.
async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    let content_type = r
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(content_type, Some(capf::metrics::CONTENT_TYPE));
    let text = String::from_utf8(r.body).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample `name` with exactly `labels`; 0 when there is none.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape.samples.iter().find(|s| {
        s.metric == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    });
    match found.map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(v))
        | Some(prometheus_parse::Value::Gauge(v))
        | Some(prometheus_parse::Value::Untyped(v)) => *v,
        Some(other) => panic!("{name}: unexpected {other:?}"),
        None => 0.0,
    }
}

/// A device scheduled for an install with the string 123456, its configuration
/// encrypted (to an RSA key: that is what phones decrypt with).
fn install(name: &str) -> DeviceRecord {
    let mut d = common::install(name, AuthMode::String, KeyOrder::Rsa { bits: 2048 });
    d.encrypted_config = true;
    d
}

#[tokio::test]
async fn counters_move_as_a_phone_enrolls_and_fetches_its_files() {
    let node = TestNode::start_with(|s| {
        s.http = local();
        s.tftp = local();
        s.metrics = local();
    })
    .await;
    let admin = node.metrics_addr.expect("admin listener");
    let http = node.http_addr.unwrap();
    node.add(install(ENROLLS));
    node.add(install(GUESSED));
    node.document(ENROLLS, DOC.as_bytes());

    assert_eq!(get(admin, "/healthz").await.status, 200);
    assert_eq!(get(admin, "/healthz").await.body, b"ok\n");
    let ready = get(admin, "/readyz").await;
    assert_eq!(
        (ready.status, ready.body.as_slice()),
        (200, &b"ready\n"[..])
    );

    let before = scrape(admin).await;
    // Read from the store and the certificates at scrape time.
    assert_eq!(
        value(&before, "capf_devices", &[("status", "pending")]),
        2.0
    );
    assert_eq!(
        value(&before, "capf_devices", &[("status", "upgrade_success")]),
        0.0
    );
    let now = capf::model::now() as f64;
    for certificate in ["capf_ca", "file_signer", "itl_recovery"] {
        let t = value(
            &before,
            "capf_certificate_expiry_timestamp_seconds",
            &[("certificate", certificate)],
        );
        assert!(t > now + 300.0 * 86_400.0, "{certificate}: {t}");
    }
    assert_eq!(
        value(
            &before,
            "capf_certificate_expiry_timestamp_seconds",
            &[("certificate", "earliest_lsc")]
        ),
        0.0,
        "no LSC yet"
    );

    // One phone enrolls with its string; another guesses a wrong one.
    let mut phone = Phone::new(ENROLLS);
    phone.password = Some("123456".into());
    let outcome = node.run(&phone).await;
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    let mut guess = Phone::new(GUESSED);
    guess.password = Some("000000".into());
    assert_eq!(
        node.run(&guess).await.end_reason,
        Some(Reason::InvalidElement)
    );

    // Its files: the ITL twice (the second from the cache), the encrypted
    // configuration over HTTP, the ITL over TFTP; and a name that is not served.
    for _ in 0..2 {
        assert_eq!(get(http, "/ITLFile.tlv").await.status, 200);
    }
    let enc = get(http, &format!("/{ENROLLS}.cnf.xml.enc.sgn")).await;
    assert_eq!(enc.status, 200);
    let partial = get(http, &format!("/{ENROLLS}.cnf.xml.sgn")).await;
    assert_eq!(partial.status, 200);
    assert_eq!(get(http, "/nothing.here").await.status, 404);
    let tftp = node.tftp_addr.unwrap();
    let itl = tokio::time::timeout(Duration::from_secs(20), tftp_get(tftp, "ITLFile.tlv", None))
        .await
        .expect("TFTP within 20 s")
        .unwrap();
    assert!(!itl.is_empty());

    let after = scrape(admin).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let sessions = "capf_sessions_total";
    assert_eq!(
        moved(sessions, &[("auth", "string"), ("outcome", "success")]),
        1.0
    );
    assert_eq!(
        moved(sessions, &[("auth", "string"), ("outcome", "failure")]),
        1.0
    );
    assert_eq!(
        moved(sessions, &[("auth", "null"), ("outcome", "success")]),
        0.0
    );
    assert_eq!(moved("capf_enrollments_total", &[]), 1.0);
    let reason = [("reason", "invalid_auth_string")];
    assert_eq!(moved("capf_session_failures_total", &reason), 1.0);
    assert_eq!(moved("capf_enrollment_failures_total", &reason), 1.0);
    assert_eq!(moved("capf_lockouts_total", &[]), 0.0);
    let files = "capf_files_served_total";
    assert_eq!(moved(files, &[("kind", "itl"), ("transport", "http")]), 2.0);
    assert_eq!(
        moved(files, &[("kind", "enc_sgn"), ("transport", "http")]),
        1.0
    );
    assert_eq!(moved(files, &[("kind", "itl"), ("transport", "tftp")]), 1.0);
    assert_eq!(
        moved(files, &[("kind", "other"), ("transport", "http")]),
        0.0,
        "a 404 is no file"
    );
    assert!(moved("capf_config_cache_hits_total", &[]) >= 2.0);
    assert!(moved("capf_config_cache_misses_total", &[]) >= 2.0);
    assert_eq!(moved("capf_session_duration_seconds_count", &[]), 2.0);
    assert!(
        moved(
            "capf_file_build_duration_seconds_count",
            &[("kind", "enc_sgn")]
        ) >= 1.0
    );
    node.stop().await;
}

#[tokio::test]
async fn the_admin_listener_answers_only_its_pages() {
    let node = TestNode::start_with(|s| {
        s.http = local();
        s.metrics = local();
    })
    .await;
    let admin = node.metrics_addr.unwrap();
    let http = node.http_addr.unwrap();
    assert!(![node.addr.port(), http.port()].contains(&admin.port()));
    // Phones' port: no admin page. Admin port: no phone file.
    for page in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get(http, page).await.status,
            404,
            "{page} on the phones' port"
        );
    }
    assert_eq!(get(admin, "/ITLFile.tlv").await.status, 404);
    assert_eq!(get(admin, "/metrics?x=1").await.status, 200);
    let post = http_request(&admin.to_string(), "POST", "/metrics")
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    let head = http_request(&admin.to_string(), "HEAD", "/healthz")
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    node.stop().await;
}

#[tokio::test]
async fn readyz_says_why_the_node_cannot_serve() {
    let node = TestNode::start_prepared(
        |s| {
            s.http = local();
            s.metrics = local();
        },
        |data| {
            // A signer key that does not match its certificate.
            let other = data.capf_cert().with_extension("key");
            std::fs::copy(other, data.tftp_key()).unwrap();
        },
    )
    .await;
    let admin = node.metrics_addr.unwrap();
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, 503);
    let body = String::from_utf8(ready.body).unwrap();
    assert!(body.starts_with("not ready: file signer"), "{body}");
    // Alive all the same.
    assert_eq!(get(admin, "/healthz").await.status, 200);
    node.stop().await;
}

#[tokio::test]
async fn a_wrong_string_until_lockout_is_counted() {
    let node = TestNode::start_with(|s| {
        s.metrics = local();
        s.max_auth_failures = 2;
    })
    .await;
    let admin = node.metrics_addr.unwrap();
    node.add(install(GUESSED));
    let mut guess = Phone::new(GUESSED);
    guess.password = Some("000000".into());
    for _ in 0..3 {
        node.run(&guess).await;
    }
    let m = scrape(admin).await;
    assert_eq!(value(&m, "capf_lockouts_total", &[]), 1.0);
    let failures = |reason| value(&m, "capf_session_failures_total", &[("reason", reason)]);
    assert_eq!(failures("invalid_auth_string"), 2.0);
    assert_eq!(failures("locked_out"), 1.0);
    assert_eq!(value(&m, "capf_devices_locked", &[]), 1.0);
    node.stop().await;
}

/// The TCP ports `pid` listens on, from /proc: its socket inodes matched against the
/// listening sockets of the machine.
#[cfg(target_os = "linux")]
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, inode is column 10.
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if inodes.contains(*inode) {
                let port = local.rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[cfg(target_os = "linux")]
#[test]
fn capf_serve_listens_for_metrics_only_where_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());

    // Off: the CAPF and HTTP listeners, nothing else.
    let serve = Serving::start_with(&data, &["--http", "127.0.0.1:0", "--metrics", "off"]);
    let ports = listening_ports(serve.pid());
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(ports.contains(&serve.addr().port()));
    assert_eq!(serve.stop().code(), Some(0));

    // On (a free port): one more listener, which is neither phone-facing port, and
    // the only one answering /healthz.
    let serve = Serving::start_with(
        &data,
        &["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let ports = listening_ports(serve.pid());
    assert_eq!(ports.len(), 3, "{ports:?}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answering: Vec<u16> = ports
        .iter()
        .filter(|port| **port != serve.addr().port())
        .filter(|port| {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            runtime.block_on(get(addr, "/healthz")).status == 200
        })
        .copied()
        .collect();
    assert_eq!(answering.len(), 1, "{ports:?}");
    assert_ne!(answering[0], serve.addr().port());
    assert_eq!(serve.stop().code(), Some(0));
}
