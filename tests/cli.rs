//! The CLI contract of design.md, exercised through the real binary.

mod common;

use common::cli::{capf, fails, ok, Serving};
use serde_json::Value;

#[test]
fn init_creates_identities_with_private_keys_0600_and_refuses_to_repeat() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    ok(&capf(&data, &["init", "--node-name", "capf.example.net"]));
    for key in ["certs/capf.key", "certs/tftp.key"] {
        let mode = std::fs::metadata(data.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    assert!(data.join("certs/capf.pem").exists() && data.join("certs/tftp.pem").exists());
    let settings = std::fs::read_to_string(data.join("capf.toml")).unwrap();
    assert!(settings.contains("capf.example.net"));

    let err = fails(&capf(&data, &["init"]));
    assert!(err.contains("already initialised"), "{err}");
    assert!(
        err.contains("capf.toml"),
        "settings first, not --force: {err}"
    );

    let pem = ok(&capf(&data, &["cert", "--pem"]));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn device_lifecycle_and_json_contract() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    ok(&capf(&data, &["init", "--node-name", "capf.test"]));

    ok(&capf(
        &data,
        &[
            "device",
            "add",
            "sep001122334455",
            "--operation",
            "install",
            "--auth",
            "string",
            "--auth-string",
            "1234",
            "--key",
            "ec-preferred:p256,rsa:2048",
            "--deadline",
            "+7d",
        ],
    ));
    let err = fails(&capf(&data, &["device", "add", "SEP001122334455"]));
    assert!(err.contains("already exists"), "{err}");

    let show: Value = serde_json::from_str(&ok(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    )))
    .unwrap();
    assert_eq!(show["name"], "SEP001122334455", "MAC upper-cased");
    assert_eq!(show["operation"], "install");
    assert_eq!(show["auth"], "string");
    assert_eq!(show["status"], "Operation Pending");
    assert_eq!(show["key"], "ec-preferred:p256,rsa:2048");
    assert!(
        show["lsc"].is_null() && show["mic"].is_null(),
        "no certificate: null"
    );

    let err = fails(&capf(
        &data,
        &["device", "set", "SEP001122334455", "--auth-string", "12ab"],
    ));
    assert!(err.contains("4–10 digits"), "{err}");
    let err = fails(&capf(
        &data,
        &["device", "set", "SEP001122334455", "--encrypted-config"],
    ));
    assert!(err.contains("RSA"), "{err}");

    let out = ok(&capf(
        &data,
        &["device", "add", "SEP0011223344AA", "--generate-auth-string"],
    ));
    assert!(
        out.contains("authentication string for SEP0011223344AA: "),
        "{out}"
    );

    ok(&capf(
        &data,
        &["device", "set", "SEP001122334455", "--operation", "delete"],
    ));
    let list: Value =
        serde_json::from_str(&ok(&capf(&data, &["device", "list", "--json"]))).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "SEP001122334455");
    assert_eq!(list[0]["operation"], "delete");

    let keys: Value = serde_json::from_str(&ok(&capf(&data, &["keys", "list", "--json"]))).unwrap();
    assert_eq!(keys, Value::Array(vec![]));

    ok(&capf(&data, &["device", "remove", "SEP001122334455"]));
    let err = fails(&capf(&data, &["device", "show", "SEP001122334455"]));
    assert!(err.contains("not found"), "{err}");
    let err = fails(&capf(&data, &["device", "add", "../etc"]));
    assert!(err.contains("invalid device name"), "{err}");
}

#[test]
fn serve_initialises_an_empty_directory_and_a_second_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    // Any directory but the default ./capf-data is initialised only when asked.
    let err = fails(&capf(
        &data,
        &["serve", "--listen", "127.0.0.1:0", "--http", "off"],
    ));
    assert!(
        err.contains("not a capf data directory") && err.contains("capf --data"),
        "{err}"
    );
    assert!(!data.join("certs").exists(), "nothing created");
    let first = Serving::start_with(&data, &["--init"]);
    assert!(data.join("certs/capf.pem").exists());

    let err = fails(&capf(
        &data,
        &["serve", "--listen", "127.0.0.1:0", "--http", "off"],
    ));
    assert!(err.contains("another capf process"), "{err}");

    // While it serves, store commands go through the admin socket, with the same
    // output and exit codes as without a server.
    assert!(data.join("admin.sock").exists());
    let out = ok(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--operation", "install"],
    ));
    assert!(out.contains("Operation Pending"), "{out}");
    let show: Value = serde_json::from_str(&ok(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    )))
    .unwrap();
    assert_eq!(show["operation"], "install");
    let err = fails(&capf(&data, &["device", "add", "SEP001122334455"]));
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&capf(&data, &["device", "show", "SEP00112233FFFF"]));
    assert!(err.contains("not found"), "{err}");

    // SIGTERM: a graceful stop with status 0.
    let status = first.stop();
    assert!(status.success(), "clean shutdown: {status}");
    assert!(
        !data.join("admin.sock").exists(),
        "socket removed on clean shutdown"
    );

    // Without the server the same commands open the store directly and see the same data.
    let show: Value = serde_json::from_str(&ok(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    )))
    .unwrap();
    assert_eq!(show["operation"], "install");
}
