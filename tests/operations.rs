//! Operating capf: bulk import/export, selections, filters, events, backup, and the
//! same commands through a running server's admin socket.

mod common;

use common::cli::{capf, fails, init, json, ok, Serving};
use serde_json::Value;
use std::process::Command;

const HEADER: &str = "name,operation,auth,auth_string,key,encrypted_config\n";

/// Imports `count` devices SEP000000000000… with `operation`; returns the output.
fn import_fleet(
    dir: &std::path::Path,
    data: &std::path::Path,
    count: usize,
    operation: &str,
) -> String {
    let mut csv = String::from(HEADER);
    for i in 0..count {
        csv.push_str(&format!("SEP{i:012X},{operation},null,,rsa:2048,false\n"));
    }
    let file = dir.join("fleet.csv");
    std::fs::write(&file, csv).unwrap();
    ok(&capf(data, &["device", "import", file.to_str().unwrap()]))
}

#[test]
fn import_is_all_or_nothing_and_names_every_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let file = dir.path().join("phones.csv");
    std::fs::write(
        &file,
        format!(
            "{HEADER}SEP000000000001,install,null,,rsa:2048,false\n\
             SEP000000000002,instal,null,,rsa:2048,false\n\
             SEP000000000003,install,string,12x,rsa:2048,false\n\
             SEP000000000004,install,null,,\"ec-preferred:p256,rsa:2048\",maybe\n\
             SEP000000000001,none,null,,rsa:2048,false\n"
        ),
    )
    .unwrap();
    let err = fails(&capf(&data, &["device", "import", file.to_str().unwrap()]));
    assert!(err.contains("4 bad row(s); nothing was imported"), "{err}");
    assert!(err.contains("line 3: field operation = 'instal'"), "{err}");
    assert!(
        err.contains("line 4:") && err.contains("4–10 digits"),
        "{err}"
    );
    assert!(
        err.contains("line 5: field encrypted_config = 'maybe'"),
        "{err}"
    );
    assert!(
        err.contains("line 6: field name = 'SEP000000000001': listed twice"),
        "{err}"
    );
    assert!(!err.contains("line 2:"), "{err}");
    let list = json(&capf(&data, &["device", "list", "--json"]));
    assert_eq!(list, Value::Array(vec![]), "nothing written");

    // A wrong header is refused before any row is read.
    std::fs::write(&file, "name,op\nSEP000000000001,install\n").unwrap();
    let err = fails(&capf(&data, &["device", "import", file.to_str().unwrap()]));
    assert!(err.contains("line 1: header must be exactly"), "{err}");
}

#[test]
fn dry_run_writes_nothing_and_import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let file = dir.path().join("phones.csv");
    std::fs::write(
        &file,
        format!(
            "{HEADER}SEP000000000001,install,null,,rsa:2048,true\n\
             sep0000000000aa,install,string,,\"ec-preferred:p256,rsa:2048\",false\n\
             CSFjdoe,none,string,4321,ec:p384,false\n"
        ),
    )
    .unwrap();
    let out = ok(&capf(
        &data,
        &["device", "import", file.to_str().unwrap(), "--dry-run"],
    ));
    assert!(
        out.contains("3 to add, 0 to update, 0 unchanged; nothing written"),
        "{out}"
    );
    assert_eq!(
        json(&capf(&data, &["device", "list", "--json"])),
        Value::Array(vec![])
    );

    let out = ok(&capf(&data, &["device", "import", file.to_str().unwrap()]));
    assert!(out.contains("imported 3: 3 added"), "{out}");
    assert!(
        out.contains("authentication string for SEP0000000000AA: "),
        "{out}"
    );
    let show = json(&capf(
        &data,
        &["device", "show", "SEP0000000000AA", "--json"],
    ));
    assert_eq!(show["auth"], "string");
    assert_eq!(show["key"], "ec-preferred:p256,rsa:2048");
    let generated = show["auth_string"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 8);

    // Export carries the generated string; importing it elsewhere recreates the fleet.
    let csv = ok(&capf(&data, &["device", "export", "--csv"]));
    // Export writes the deadline column too (import takes files with or without it).
    assert!(
        csv.starts_with("name,operation,auth,auth_string,key,encrypted_config,deadline\n"),
        "{csv}"
    );
    assert!(csv.contains(&generated));
    let exported = dir.path().join("export.csv");
    std::fs::write(&exported, &csv).unwrap();
    let other = dir.path().join("other");
    ok(&capf(&other, &["init"]));
    ok(&capf(
        &other,
        &["device", "import", exported.to_str().unwrap()],
    ));
    assert_eq!(ok(&capf(&other, &["device", "export", "--csv"])), csv);

    // Re-importing the same file changes nothing.
    let out = ok(&capf(
        &data,
        &["device", "import", exported.to_str().unwrap()],
    ));
    assert!(out.contains("0 added, 0 updated, 3 unchanged"), "{out}");
}

#[test]
fn ten_thousand_rows_import_in_one_go() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let out = import_fleet(dir.path(), &data, 10_000, "install");
    assert!(out.contains("imported 10000: 10000 added"), "{out}");
    let list = json(&capf(
        &data,
        &["device", "list", "--json", "--prefix", "SEP0000000027"],
    ));
    assert_eq!(list.as_array().unwrap().len(), 16);
}

#[test]
fn selections_filters_and_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    for name in ["SEP0011AA000001", "SEP0011AA000002", "SEP0022BB000001"] {
        ok(&capf(&data, &["device", "add", name]));
    }
    let out = ok(&capf(
        &data,
        &[
            "device",
            "set",
            "--prefix",
            "SEP0011",
            "--operation",
            "install",
            "--deadline",
            "+7d",
        ],
    ));
    assert_eq!(out.lines().count(), 3, "two devices and the summary: {out}");
    assert!(out.ends_with("changed 2 of 2 selected devices\n"), "{out}");
    let pending = json(&capf(
        &data,
        &["device", "list", "--json", "--status", "pending"],
    ));
    let names: Vec<_> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["SEP0011AA000001", "SEP0011AA000002"]);
    let installs = json(&capf(
        &data,
        &["device", "list", "--json", "--operation", "install"],
    ));
    assert_eq!(installs.as_array().unwrap().len(), 2);
    assert!(installs[0]["deadline"].is_string());
    let expiring = json(&capf(
        &data,
        &["device", "list", "--json", "--expires-within", "30d"],
    ));
    assert_eq!(
        expiring,
        Value::Array(vec![]),
        "no LSC yet, nothing expires"
    );

    let table = ok(&capf(&data, &["device", "list"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATUS"),
        "{table}"
    );

    let err = fails(&capf(
        &data,
        &[
            "device",
            "set",
            "--status",
            "no such status",
            "--operation",
            "delete",
        ],
    ));
    assert!(err.contains("no device matches"), "{err}");

    let events = json(&capf(
        &data,
        &["events", "--device", "SEP0011AA000001", "--json"],
    ));
    let actions: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["device-add", "device-set"]);
    assert!(events[1]["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(events[1]["details"]["operation"], "install");
    let text = ok(&capf(&data, &["events", "--since", "-1h"]));
    assert_eq!(text.lines().count(), 5, "{text}");
    let none = json(&capf(&data, &["events", "--since", "+1d", "--json"]));
    assert_eq!(none, Value::Array(vec![]));
}

/// Every selected device is checked before any is changed.
#[test]
fn a_selection_that_one_device_cannot_take_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    ok(&capf(&data, &["device", "add", "SEP0011AA000001"]));
    ok(&capf(
        &data,
        &["device", "add", "SEP0011AA000002", "--key", "ec:p256"],
    ));
    let err = fails(&capf(
        &data,
        &["device", "set", "--all", "--encrypted-config"],
    ));
    assert!(
        err.contains("nothing changed: 1 of 2 devices") && err.contains("SEP0011AA000002"),
        "{err}"
    );
    let list = json(&capf(&data, &["device", "list", "--json"]));
    for device in list.as_array().unwrap() {
        assert_eq!(device["encrypted_config"], false, "{device}");
    }
    let events = json(&capf(&data, &["events", "--json"]));
    assert_eq!(events.as_array().unwrap().len(), 2, "only the two adds");

    // --generate-auth-string on a selection: each device its own string, printed
    // once as CSV, and stored as printed.
    let out = ok(&capf(
        &data,
        &[
            "device",
            "set",
            "--prefix",
            "SEP0011",
            "--auth",
            "string",
            "--generate-auth-string",
        ],
    ));
    let rows: Vec<_> = out.lines().collect();
    assert_eq!(rows[0], "name,auth_string", "{out}");
    assert_eq!(rows.len(), 3, "{out}");
    let mut strings = Vec::new();
    for row in &rows[1..] {
        let (name, string) = row.split_once(',').unwrap();
        let shown = json(&capf(&data, &["device", "show", name, "--json"]));
        assert_eq!(shown["auth_string"], string, "{name}");
        strings.push(string);
    }
    assert_ne!(strings[0], strings[1], "one string per device");
    // On one device, the string printed is the string stored.
    let out = ok(&capf(
        &data,
        &["device", "set", "SEP0011AA000001", "--generate-auth-string"],
    ));
    let printed = out
        .lines()
        .find_map(|l| l.strip_prefix("authentication string for SEP0011AA000001: "))
        .unwrap()
        .to_string();
    let shown = json(&capf(
        &data,
        &["device", "show", "SEP0011AA000001", "--json"],
    ));
    assert_eq!(shown["auth"], "string");
    assert_eq!(shown["auth_string"], printed.as_str());
}

/// A selection larger than one store transaction (10,000 devices) lands entirely.
#[test]
fn a_fleet_wide_set_spans_several_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let count = 10_001;
    import_fleet(dir.path(), &data, count, "none");

    let out = ok(&capf(
        &data,
        &["device", "set", "--all", "--operation", "install"],
    ));
    assert_eq!(
        out.lines().count(),
        count + 1,
        "one line per device, one summary"
    );
    let pending = ok(&capf(
        &data,
        &["device", "list", "--status", "pending", "--json"],
    ));
    assert_eq!(
        pending.matches("\"name\":").count(),
        count,
        "every device is pending"
    );
}

#[test]
fn backup_restores_to_the_same_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    ok(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--operation", "install"],
    ));
    let backup = dir.path().join("backup");
    ok(&capf(&data, &["backup", backup.to_str().unwrap()]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(backup.join("certs/capf.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "keys stay private in the backup");
    assert_eq!(
        ok(&capf(&backup, &["device", "export", "--csv"])),
        ok(&capf(&data, &["device", "export", "--csv"]))
    );
    assert_eq!(
        ok(&capf(&backup, &["cert", "--pem"])),
        ok(&capf(&data, &["cert", "--pem"])),
        "same CAPF identity"
    );
    let err = fails(&capf(&data, &["backup", backup.to_str().unwrap()]));
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn every_store_command_works_through_the_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let file = dir.path().join("phones.csv");
    std::fs::write(
        &file,
        format!("{HEADER}SEP000000000001,install,null,,rsa:2048,false\n"),
    )
    .unwrap();
    let _server = Serving::start(&data);

    // A relative path is resolved against the client's directory, not the server's.
    let out = Command::new(env!("CARGO_BIN_EXE_capf"))
        .current_dir(dir.path())
        .args([
            "--data",
            data.to_str().unwrap(),
            "device",
            "import",
            "phones.csv",
        ])
        .output()
        .unwrap();
    assert!(ok(&out).contains("imported 1: 1 added"));
    ok(&capf(
        &data,
        &["device", "set", "SEP000000000001", "--operation", "delete"],
    ));
    let csv = ok(&capf(&data, &["device", "export", "--csv"]));
    assert!(csv.contains("SEP000000000001,delete,null"), "{csv}");
    let list = json(&capf(
        &data,
        &["device", "list", "--json", "--operation", "delete"],
    ));
    assert_eq!(list[0]["name"], "SEP000000000001");
    let table = ok(&capf(&data, &["device", "list"]));
    assert!(
        table.lines().nth(1).unwrap().starts_with("SEP000000000001"),
        "{table}"
    );
    let events = json(&capf(&data, &["events", "--json"]));
    let actors: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.iter().all(|a| a.contains("(uid ")), "{actors:?}");
    let keys = json(&capf(&data, &["keys", "list", "--json"]));
    assert_eq!(keys, Value::Array(vec![]));
    let backup = dir.path().join("live-backup");
    ok(&capf(&data, &["backup", backup.to_str().unwrap()]));
    assert!(ok(&capf(&backup, &["device", "export", "--csv"])).contains("SEP000000000001,delete"));
    let err = fails(&capf(&data, &["device", "remove", "SEP0000000000FF"]));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn settings_show_their_source_and_completions_generate() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let out = ok(&capf(&data, &["settings"]));
    assert!(
        out.contains("node_name = \"capf.test\"  # capf.toml"),
        "{out}"
    );
    let toml_path = data.join("capf.toml");
    std::fs::write(&toml_path, "node_name = \"x.example\"\n").unwrap();
    let out = ok(&capf(&data, &["settings"]));
    assert!(out.contains("message_timeout = 10  # default"), "{out}");
    std::fs::write(&toml_path, "message_timeout = 99\n").unwrap();
    let err = fails(&capf(&data, &["settings"]));
    assert!(err.contains("message_timeout = 99"), "{err}");

    let bash = ok(&capf(&data, &["completions", "bash"]));
    assert!(bash.contains("capf") && bash.contains("device"));
}

#[test]
fn every_subcommand_help_has_an_example() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["init"],
        vec!["serve"],
        vec!["cert"],
        vec!["device", "add"],
        vec!["device", "set"],
        vec!["device", "show"],
        vec!["device", "list"],
        vec!["device", "remove"],
        vec!["device", "import"],
        vec!["device", "export"],
        vec!["keys", "list"],
        vec!["keys", "show"],
        vec!["events"],
        vec!["backup"],
        vec!["settings"],
        vec!["completions"],
        vec!["config", "build"],
        vec!["itl", "build"],
        vec!["inspect"],
        vec!["doctor"],
    ] {
        let mut full = args.clone();
        full.push("--help");
        let out = ok(&capf(dir.path(), &full));
        assert!(
            out.contains("Example"),
            "{args:?} --help has no example:\n{out}"
        );
    }
}
