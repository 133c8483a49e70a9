//! What a CUCM administrator trips over in the first hour (issue #19), each point run
//! through the real binary as an operator runs it.

mod common;

use common::cli::{capf, fails, init, json, ok, serve_child};
use std::io::BufRead;
use std::process::{Command, Stdio};

/// Imports `count` devices SEP000000000000… with null authentication.
fn import_fleet(dir: &std::path::Path, data: &std::path::Path, count: usize) {
    let mut csv = String::from("name,operation,auth,auth_string,key,encrypted_config\n");
    for i in 0..count {
        csv.push_str(&format!("SEP{i:012X},install,null,,rsa:2048,false\n"));
    }
    let file = dir.join("fleet.csv");
    std::fs::write(&file, csv).unwrap();
    ok(&capf(data, &["device", "import", file.to_str().unwrap()]));
}

/// `capf device list | head -1`: the reader goes away after one line; capf must end
/// quietly (no "Broken pipe" message, no failure status of its own).
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    // More than a pipe buffer of output, so that capf is still writing when the
    // reader leaves.
    import_fleet(dir.path(), &data, 3000);
    for args in [
        &["device", "list"][..],
        &["device", "list", "--json"],
        &["events"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capf"))
            .arg("--data")
            .arg(&data)
            .args(args)
            .env_remove("CAPF_DATA")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is dropped here, as `head -1` exits.
        let out = child.wait_with_output().unwrap();
        let quiet = out.status.success()
            || out.status.signal() == Some(libc_sigpipe())
            || out.status.code() == Some(141);
        assert!(quiet, "{args:?}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}

/// `capf serve` with `args`, its stderr lines sent to the receiver; killed on drop.
struct Logged(std::process::Child, std::sync::mpsc::Receiver<String>);

impl Logged {
    fn start(data: &std::path::Path, args: &[&str]) -> Logged {
        let (child, lines) = serve_child(data, args);
        Logged(child, lines)
    }

    /// Every log line until `quiet` passes without one (or the process ends).
    fn lines_until_quiet(&self, quiet: std::time::Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.1.recv_timeout(quiet) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `http = "off"` in capf.toml turns HTTP off (it was a syntax error); a removed line
/// is the default, and `capf settings` says so.
#[test]
fn every_listener_can_be_turned_off_in_capf_toml() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    std::fs::write(
        data.join("capf.toml"),
        "node_name = \"capf.test\"\nlisten = \"127.0.0.1:0\"\nhttp = \"off\"\ntftp = \"off\"\nlegacy_listen = \"off\"\nmetrics = \"off\"\n",
    )
    .unwrap();
    let settings = json(&capf(&data, &["settings", "--json"]));
    assert_eq!(settings["http"], "off");
    assert_eq!(settings["tftp"], "off");
    assert_eq!(settings["legacy_listen"], "off");
    assert_eq!(settings["metrics"], "off");

    let serving = Logged::start(&data, &[]);
    let log = serving.lines_until_quiet(std::time::Duration::from_secs(3));
    assert!(
        log.iter().any(|l| l.contains("capf listening on")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("HTTP")), "{log:#?}");
    drop(serving);

    std::fs::write(data.join("capf.toml"), "node_name = \"capf.test\"\n").unwrap();
    let settings = json(&capf(&data, &["settings", "--json"]));
    assert_eq!(
        settings["http"], "0.0.0.0:6970",
        "a removed line is the default"
    );
    let text = ok(&capf(&data, &["settings"]));
    assert!(text.contains("\"off\""), "{text}");
}

/// Small things: SEP names are 12 hex digits, a string with a mode that never reads
/// it is refused, errors name the option given, completions offer --operation's
/// values, and a busy port is reported once.
#[test]
fn small_things_are_refused_with_the_right_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let err = fails(&capf(
        &data,
        &["device", "add", "SEP00112233445G", "--auth", "null"],
    ));
    assert!(err.contains("exactly 12 hex digits"), "{err}");
    let err = fails(&capf(
        &data,
        &[
            "device",
            "add",
            "SEP001122334455",
            "--auth",
            "null",
            "--auth-string",
            "1234",
        ],
    ));
    assert!(
        err.contains("--auth null does not use an authentication string"),
        "{err}"
    );
    let err = fails(&capf(&data, &["device", "list", "--expires-within", "6y"]));
    assert!(err.contains("invalid --expires-within '6y'"), "{err}");
    assert!(!err.contains("--deadline"), "{err}");
    let err = fails(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--operation", "instal"],
    ));
    assert!(err.contains("install"), "{err}");
    let bash = ok(&capf(&data, &["completions", "bash"]));
    assert!(
        bash.contains("install delete troubleshoot none"),
        "completion values"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let err = fails(&capf(&data, &["serve", "--listen", &port, "--http", "off"]));
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
}

/// Deadlines: a past one is refused, `none` clears, a date alone is the end of that
/// day (UTC), the node default applies, and list, show and the CSV carry it.
#[test]
fn deadlines_are_checked_cleared_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let add = [
        "device",
        "add",
        "SEP001122334455",
        "--auth",
        "null",
        "--operation",
        "install",
    ];
    let err = fails(&capf(
        &data,
        &[&add[..], &["--deadline", "2020-01-01T00:00:00Z"]].concat(),
    ));
    assert!(err.contains("is in the past"), "{err}");
    ok(&capf(
        &data,
        &[&add[..], &["--deadline", "2099-12-31"]].concat(),
    ));
    let show = json(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    ));
    assert_eq!(show["deadline"], "2099-12-31T23:59:59Z");
    let csv = ok(&capf(&data, &["device", "export", "--csv"]));
    assert!(csv.contains(",2099-12-31T23:59:59Z\n"), "{csv}");
    let table = ok(&capf(&data, &["device", "list"]));
    assert!(
        table.contains("DEADLINE") && table.contains("2099-12-31T23:59:59Z"),
        "{table}"
    );
    ok(&capf(
        &data,
        &["device", "set", "SEP001122334455", "--deadline", "none"],
    ));
    let show = json(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    ));
    assert!(show["deadline"].is_null(), "{show}");

    // The node default ("operation completes by") applies to a new operation.
    let toml = std::fs::read_to_string(data.join("capf.toml")).unwrap();
    let toml = toml.replace("default_deadline_days = 0", "default_deadline_days = 14");
    std::fs::write(data.join("capf.toml"), toml).unwrap();
    ok(&capf(
        &data,
        &["device", "set", "SEP001122334455", "--operation", "delete"],
    ));
    let show = json(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    ));
    assert!(show["deadline"].is_string(), "{show}");
}

/// A blank CSV field leaves an existing device's value alone; the dry run shows each
/// change as before → after.
#[test]
fn a_blank_csv_field_means_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    ok(&capf(
        &data,
        &[
            "device",
            "add",
            "SEP001122334455",
            "--auth",
            "string",
            "--auth-string",
            "1234",
            "--encrypted-config",
            "--key",
            "rsa:2048",
        ],
    ));
    let file = dir.path().join("edit.csv");
    std::fs::write(
        &file,
        "name,operation,auth,auth_string,key,encrypted_config\nSEP001122334455,install,,,,\n",
    )
    .unwrap();
    let out = ok(&capf(
        &data,
        &["device", "import", file.to_str().unwrap(), "--dry-run"],
    ));
    assert!(
        out.contains("update    SEP001122334455: operation none → install"),
        "{out}"
    );
    assert!(!out.contains("encrypted_config"), "{out}");
    ok(&capf(&data, &["device", "import", file.to_str().unwrap()]));
    let show = json(&capf(
        &data,
        &["device", "show", "SEP001122334455", "--json"],
    ));
    assert_eq!(show["operation"], "install");
    assert_eq!(show["encrypted_config"], true, "blank kept encryption on");
    assert_eq!(show["auth"], "string");
    assert_eq!(show["auth_string"], "1234");
}

/// Selections: dry run with before → after and a count, --expires-within, and
/// remove on a selection; remove and --clear-lockout say what they dropped.
#[test]
fn selections_dry_run_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    import_fleet(dir.path(), &data, 3);
    let out = ok(&capf(
        &data,
        &[
            "device",
            "set",
            "--all",
            "--operation",
            "delete",
            "--dry-run",
        ],
    ));
    assert!(
        out.contains("SEP000000000000: operation install → delete"),
        "{out}"
    );
    assert!(
        out.ends_with("dry run: 3 of 3 selected devices would change; nothing written\n"),
        "{out}"
    );
    let err = fails(&capf(
        &data,
        &[
            "device",
            "set",
            "--expires-within",
            "30d",
            "--operation",
            "none",
        ],
    ));
    assert!(
        err.contains("no device matches"),
        "no LSC, nothing expires: {err}"
    );

    let out = ok(&capf(
        &data,
        &[
            "device",
            "remove",
            "--prefix",
            "SEP00000000000",
            "--dry-run",
        ],
    ));
    assert!(
        out.ends_with("dry run: 3 devices would be removed; nothing written\n"),
        "{out}"
    );
    ok(&capf(
        &data,
        &["device", "set", "SEP000000000001", "--clear-lockout"],
    ));
    let out = ok(&capf(
        &data,
        &["device", "remove", "--prefix", "SEP00000000000"],
    ));
    assert!(out.ends_with("removed 3 of 3 selected devices\n"), "{out}");
    let events = json(&capf(
        &data,
        &["events", "--device", "SEP000000000001", "--json"],
    ));
    let remove = events.as_array().unwrap().last().unwrap();
    assert_eq!(remove["action"], "device-remove");
    assert_eq!(remove["details"]["status"], "Operation Pending", "{remove}");
}

/// A locked phone is found by `--status locked` and says so in list and show; JSON
/// adds `locked_out`; clearing the lockout records what it cleared.
#[test]
fn a_locked_phone_is_visible_and_its_clearing_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    import_fleet(dir.path(), &data, 2);
    {
        let store = capf::store::Store::open(&data.join("db")).unwrap();
        let mut rec = store.get_device("SEP000000000001").unwrap().unwrap();
        rec.failed_auth = 10;
        rec.locked_until = Some(capf::model::now() + 600);
        let event = capf::model::Event {
            id: 0,
            time: capf::model::now(),
            actor: "test".into(),
            device: Some(rec.name.clone()),
            action: "lockout".into(),
            result: "locked".into(),
            details: Default::default(),
        };
        store.put_device(&rec, event).unwrap();
        store.flush().unwrap();
    }
    let out = ok(&capf(&data, &["device", "list", "--status", "locked"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("SEP000000000001") && out.contains("Locked Out until"),
        "{out}"
    );
    let show = ok(&capf(&data, &["device", "show", "SEP000000000001"]));
    assert!(show.contains("Locked Out until"), "{show}");
    let show = json(&capf(
        &data,
        &["device", "show", "SEP000000000001", "--json"],
    ));
    assert_eq!(show["locked_out"], true);
    assert_eq!(show["status"], "Operation Pending", "JSON status as it was");

    ok(&capf(
        &data,
        &["device", "set", "SEP000000000001", "--clear-lockout"],
    ));
    let events = json(&capf(
        &data,
        &["events", "--device", "SEP000000000001", "--json"],
    ));
    let set = events.as_array().unwrap().last().unwrap();
    assert_eq!(set["details"]["failed_auth_cleared"], 10, "{set}");
    assert!(set["details"]["lockout_cleared"].is_string(), "{set}");
}
