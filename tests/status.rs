//! `capf status` through the binary, as cron or a monitoring system runs it: the exit
//! status is 0 (ok), 1 (warning) or 2 (critical), and `--json` says why.

mod common;

use common::cli::{capf, init, json};

#[test]
fn status_exit_codes_follow_the_worst_finding() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());

    // A fresh node: certificates valid for years, nothing pending.
    let out = capf(&data, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = json(&out);
    assert_eq!(report["level"], "ok");
    assert_eq!(report["devices"], 0);
    assert_eq!(report["certificates"][0]["name"], "CAPF CA");

    // A device locked out after failed authentications is a warning.
    {
        let store = capf::store::Store::open(&data.join("db")).unwrap();
        let mut rec = capf::model::DeviceRecord::new("SEP001122334455");
        rec.locked_until = Some(capf::model::now() + 600);
        store
            .put_device(&rec, common::event("SEP001122334455"))
            .unwrap();
        store.flush().unwrap();
    }
    let out = capf(&data, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("status:                     warning"),
        "{text}"
    );
    assert!(text.contains("WARNING  1 devices are locked out"), "{text}");

    // capf's own signer certificate unreadable: critical.
    std::fs::write(data.join("certs/tftp.pem"), "not a certificate").unwrap();
    let out = capf(&data, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["level"], "critical");
    let findings = report["findings"].as_array().unwrap();
    assert!(findings
        .iter()
        .any(|f| f["message"] == "the TFTP signer certificate cannot be read"));
}
