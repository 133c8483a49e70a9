//! `capf store migrate` through the binary as an operator runs it (issue #17 point 4):
//! a node's sled store, with phones enrolled over TLS, an LSC revoked and a web
//! account, moves to PostgreSQL and back; each time every listing reads the same, a
//! node serving from the new store carries on (a phone enrolls, and its event comes
//! after every copied one), and the migration refuses while a node serves from its
//! source.
//!
//! The database is the one `.ci/postgres.sh` starts (`CAPF_TEST_POSTGRES`); the test
//! creates a database of its own in it. Without it the test says SKIPPED, except under
//! CI, where it fails.

mod common;

use common::cli::{
    add_null_install, capf, enroll_phone, fails, init, json, ok, serve_refuses, Serving,
};
use serde_json::Value;
use std::path::Path;

fn set_store(data: &Path, url: &str) {
    let file = data.join("capf.toml");
    let toml = std::fs::read_to_string(&file).unwrap();
    let line = toml
        .lines()
        .find(|l| l.starts_with("store = "))
        .expect("capf.toml names its store")
        .to_string();
    let toml = toml.replace(&line, &format!("store = {url:?}"));
    std::fs::write(&file, toml).unwrap();
}

/// What an operator sees of a store: every device, the whole audit trail, the serials
/// on the CRL.
fn listings(data: &Path) -> (Value, Value, Vec<String>) {
    let crl_file = data.join("listed.crl");
    ok(&capf(
        data,
        &["crl", "--der", "--out", crl_file.to_str().unwrap()],
    ));
    let der = std::fs::read(&crl_file).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial_as_string())
        .collect();
    (
        json(&capf(data, &["device", "list", "--json"])),
        json(&capf(data, &["events", "--json"])),
        revoked,
    )
}

fn last_event_id(events: &Value) -> u64 {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().expect("events have ids"))
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_to_postgresql_and_back_and_nodes_carry_on() {
    let Some(url) = common::new_database("migrate").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    for name in ["SEP00000000E001", "SEP00000000E002", "SEP00000000E003"] {
        add_null_install(&data, name);
    }
    // A web admin account, to be carried along (its password comes from stdin).
    let mut add_user = std::process::Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(&data)
        .args(["admin-user", "add", "operator", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    add_user
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough passphrase\n")
        .unwrap();
    assert!(add_user.wait_with_output().unwrap().status.success());

    // Two phones enroll on sled; the second one's LSC is revoked.
    let node = Serving::start(&data);
    for name in ["SEP00000000E001", "SEP00000000E002"] {
        enroll_phone(node.addr(), &data, &capf::phone::Phone::new(name)).await;
    }
    // While it serves, the store is not copied.
    let refused = fails(&capf(&data, &["store", "migrate", "--to", &url]));
    assert!(refused.contains("a node serves from"), "{refused}");
    ok(&capf(
        &data,
        &[
            "device",
            "revoke",
            "SEP00000000E002",
            "--reason",
            "key-compromise",
        ],
    ));
    assert!(node.stop().success());
    let on_sled = listings(&data);
    assert_eq!(on_sled.2.len(), 1, "the revoked LSC is on the CRL");

    // sled -> PostgreSQL.
    let report = json(&capf(&data, &["store", "migrate", "--to", &url, "--json"]));
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["source"]["kind"], "sled");
    assert_eq!(report["destination"]["kind"], "postgres");
    let records = &report["records"];
    assert_eq!(records["devices"], 3, "{report}");
    assert_eq!(records["web_accounts"], 1, "{report}");
    assert_eq!(records["serials"], 2, "{report}");
    assert_eq!(records["lsc_keys"], 2, "{report}");
    assert_eq!(
        records["events"].as_u64().unwrap(),
        on_sled.1.as_array().unwrap().len() as u64
    );
    // A second run finds the destination full and leaves it as it is.
    let again = fails(&capf(&data, &["store", "migrate", "--to", &url]));
    assert!(again.contains("not empty"), "{again}");

    set_store(&data, &url);
    assert_eq!(listings(&data), on_sled, "PostgreSQL reads as sled did");

    // No node starts on a store that a migration is copying.
    {
        use capf::store::presence::MIGRATION;
        let store = capf::store::Store::from(capf::store::PgStore::open(&url).unwrap());
        let cluster = store.cluster().unwrap();
        let ttl = std::time::Duration::from_secs(30);
        assert!(cluster
            .announce(MIGRATION, "test/1", MIGRATION, ttl)
            .unwrap());
        let refused = serve_refuses(
            &data,
            &[
                "--listen",
                "127.0.0.1:0",
                "--http",
                "off",
                "--metrics",
                "off",
            ],
        );
        assert!(refused.contains("is copying this store"), "{refused}");
        cluster.withdraw(MIGRATION, "test/1").unwrap();
    }

    // A node on PostgreSQL enrolls the third phone; its events follow the copied ones.
    let node = Serving::start(&data);
    enroll_phone(
        node.addr(),
        &data,
        &capf::phone::Phone::new("SEP00000000E003"),
    )
    .await;
    let back_dir = dir.path().join("db.back");
    let back = back_dir.to_str().unwrap();
    let refused = fails(&capf(&data, &["store", "migrate", "--to", back]));
    assert!(
        refused.contains("nodes serve from the source store") && refused.contains("capf.test"),
        "{refused}"
    );
    assert!(!back_dir.exists(), "nothing is created when refused");
    assert!(node.stop().success());
    let on_postgres = listings(&data);
    assert!(last_event_id(&on_postgres.1) > last_event_id(&on_sled.1));
    assert_eq!(
        on_postgres.0.as_array().unwrap().len(),
        3,
        "{}",
        on_postgres.0
    );

    // PostgreSQL -> sled, into a new directory, which then becomes the node's store.
    let out = ok(&capf(&data, &["store", "migrate", "--to", back]));
    assert!(out.contains("verified"), "{out}");
    std::fs::rename(data.join("db"), dir.path().join("db.old")).unwrap();
    std::fs::rename(&back_dir, data.join("db")).unwrap();
    set_store(&data, "");
    assert_eq!(listings(&data), on_postgres, "sled reads as PostgreSQL did");
    // And it serves: the enrolled phones' records are what a node reads at start.
    let node = Serving::start(&data);
    assert!(node.stop().success());
}

/// A record that does not decode is not carried into another store: the copy stops,
/// names it, and the directory it made for the copy is gone again. Needs no
/// PostgreSQL (sled to sled).
#[test]
fn a_record_that_does_not_decode_stops_the_copy_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    add_null_install(&data, "SEP00000000E101");
    {
        let db = sled::open(data.join("db")).unwrap();
        db.open_tree("devices")
            .unwrap()
            .insert("SEP00000000E102", &b"{\"v\":1,\"device\":"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let target = dir.path().join("copy");
    let err = fails(&capf(
        &data,
        &["store", "migrate", "--to", target.to_str().unwrap()],
    ));
    assert!(err.contains("devices/SEP00000000E102"), "{err}");
    assert!(err.contains("was removed again"), "{err}");
    assert!(!target.exists(), "no half-filled store is left");
    // Once the record is gone, the same copy goes through.
    ok(&capf(&data, &["device", "remove", "SEP00000000E102"]));
    let out = ok(&capf(
        &data,
        &["store", "migrate", "--to", target.to_str().unwrap()],
    ));
    assert!(out.contains("verified"), "{out}");
    assert!(out.contains("devices       1"), "{out}");
}
