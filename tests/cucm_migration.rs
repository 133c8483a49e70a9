//! Coming from CUCM (issue #19 point 12, docs/migrating-from-cucm.md): a BAT phone
//! export imported as it is by `capf device import`, through the real binary.

mod common;

use common::cli::{capf, fails, init, json, ok};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Copies `tests/data/NAME` next to the data directory, as an operator copies the
/// file BAT wrote.
fn sample(dir: &Path, name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let to = dir.join(name);
    std::fs::copy(&from, &to).unwrap();
    to
}

fn show(data: &Path, name: &str) -> Value {
    json(&capf(data, &["device", "show", name, "--json"]))
}

fn names(data: &Path) -> Vec<String> {
    let list = json(&capf(data, &["device", "list", "--json"]));
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_all_details_export_imports_its_phones_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let file = sample(dir.path(), "cucm-bat-all-details.csv");
    let path = file.to_str().unwrap();

    // Dry run first: what would happen, nothing written.
    let out = ok(&capf(&data, &["device", "import", path, "--dry-run"]));
    assert!(
        out.contains(
            "CUCM BAT export: reading columns Device Name, Certificate Operation, \
             Authentication String, Operation Completes By; no column for \
             Authentication Mode, Key Order, Key Size (Bits), EC Key Size (Bits)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "add       SEP00D0BA112233 operation=install auth=string key=rsa:2048 \
             encrypted_config=false deadline=2099-12-31T17:00:00Z"
        ),
        "{out}"
    );
    assert!(
        out.contains("skip      TAPS-IVR-01 (line 5): not a phone or Jabber client"),
        "{out}"
    );
    assert!(
        out.contains("skip      AN0A1B2C3D4E5F000 (line 6): not a phone or Jabber client"),
        "{out}"
    );
    assert!(
        out.contains(
            "dry run: 4 to add, 0 to update, 0 unchanged, 2 skipped (not a phone or Jabber \
             client); nothing written"
        ),
        "{out}"
    );
    assert!(names(&data).is_empty(), "a dry run writes nothing");

    let out = ok(&capf(&data, &["device", "import", path]));
    assert!(
        out.contains(
            "imported 4: 4 added, 0 updated, 0 unchanged, 2 skipped (not a phone or Jabber \
             client)"
        ),
        "{out}"
    );
    assert_eq!(
        names(&data),
        [
            "CSFJSMITH",
            "SEP00D0BA112233",
            "SEP00D0BA112244",
            "SEP00D0BA112255"
        ]
    );

    // Install/Upgrade with CUCM's authentication string and deadline.
    let d = show(&data, "SEP00D0BA112233");
    assert_eq!(d["operation"], "install");
    assert_eq!(d["status"], "Operation Pending");
    assert_eq!(d["auth"], "string");
    assert_eq!(d["auth_string"], "4711");
    assert_eq!(d["key"], "rsa:2048");
    assert_eq!(d["deadline"], "2099-12-31T17:00:00Z");

    // No Pending Operation: no operation, and the old date is not carried over.
    let d = show(&data, "SEP00D0BA112244");
    assert_eq!(d["operation"], "none");
    assert_eq!(d["deadline"], Value::Null);

    // A Jabber client is a device capf enrolls.
    let d = show(&data, "CSFJSMITH");
    assert_eq!(d["operation"], "install");
    assert_eq!(d["auth_string"], "20250101");

    // A lower-case name is named as the phone sends it; "2099-12-31 08:30" is UTC.
    let d = show(&data, "SEP00D0BA112255");
    assert_eq!(d["operation"], "delete");
    assert_eq!(d["deadline"], "2099-12-31T08:30:00Z");

    // The same export again changes nothing.
    let out = ok(&capf(&data, &["device", "import", path]));
    assert!(
        out.contains("imported 4: 0 added, 0 updated, 4 unchanged, 2 skipped"),
        "{out}"
    );
}

#[test]
fn a_specific_details_export_carries_modes_and_key_orders() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    // A phone capf already knows, as after the All Details import above.
    ok(&capf(
        &data,
        &["device", "add", "SEP00D0BA112233", "--auth-string", "4711"],
    ));
    let file = sample(dir.path(), "cucm-bat-specific-details.csv");
    let path = file.to_str().unwrap();

    let out = ok(&capf(&data, &["device", "import", path, "--dry-run"]));
    assert!(
        out.contains(
            "update    SEP00D0BA112233: operation none → install, status None → Operation \
             Pending, auth string → mic, key rsa:2048 → ec-preferred:p384,rsa:2048, deadline \
             - → 2099-12-31T17:00:00Z"
        ),
        "{out}"
    );
    assert!(out.contains("1 skipped"), "{out}");

    let out = ok(&capf(&data, &["device", "import", path]));
    assert!(
        out.contains("imported 4: 3 added, 1 updated, 0 unchanged, 1 skipped"),
        "{out}"
    );
    // By Authentication String without a string: capf generates one, printed once.
    assert!(
        out.contains("authentication string for SEP00D0BA112277: "),
        "{out}"
    );

    let d = show(&data, "SEP00D0BA112233");
    assert_eq!(d["auth"], "mic");
    assert_eq!(d["auth_string"], "4711", "kept, as any import keeps it");
    assert_eq!(d["key"], "ec-preferred:p384,rsa:2048");

    let d = show(&data, "SEP00D0BA112244");
    assert_eq!(d["auth"], "lsc");
    assert_eq!(d["key"], "rsa:2048");
    assert_eq!(d["deadline"], "2099-06-30T09:00:00Z");

    let d = show(&data, "SEP00D0BA112266");
    assert_eq!(d["auth"], "null", "By Null String, asked for by the row");
    assert_eq!(d["key"], "ec:p256");

    let d = show(&data, "SEP00D0BA112277");
    assert_eq!(d["operation"], "troubleshoot");
    assert_eq!(d["auth"], "string");
    assert_eq!(d["key"], "rsa:4096");
    assert_eq!(d["auth_string"].as_str().unwrap().len(), 8);

    assert!(!names(&data).contains(&"CTI-REC-01".to_string()));
}

#[test]
fn a_bat_export_with_an_unknown_value_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let file = sample(dir.path(), "cucm-bat-specific-details.csv");
    let text = std::fs::read_to_string(&file).unwrap();
    // A value this capf does not know (say, from a later CUCM), and a pending
    // operation whose mode was left empty.
    let text = text.replacen("RSA Only,4096", "RSA Only,8192", 1).replacen(
        "By Null String,,EC Only",
        ",,EC Only",
        1,
    );
    std::fs::write(&file, text).unwrap();

    let err = fails(&capf(&data, &["device", "import", file.to_str().unwrap()]));
    assert!(err.contains("2 bad row(s); nothing was imported"), "{err}");
    assert!(
        err.contains(
            "line 5: column KEY SIZE (BITS) = '8192': capf asks phones for RSA keys of 1024, \
             2048, 3072 or 4096 bits"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "line 4: column CERTIFICATE OPERATION = 'Install/Upgrade' needs an \
             authentication mode: its AUTHENTICATION MODE is empty"
        ),
        "{err}"
    );
    assert!(names(&data).is_empty(), "nothing written");
}
