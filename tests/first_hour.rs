//! What a CUCM administrator trips over in the first hour (issue #19), each point run
//! through the real binary as an operator runs it.

mod common;

use common::cli::{capf, init, json, ok};
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_capf"))
            .arg("--data")
            .arg(data)
            .arg("serve")
            .args(args)
            .env_remove("CAPF_DATA")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Logged(child, rx)
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
        "node_name = \"capf.test\"\nlisten = \"127.0.0.1:0\"\nhttp = \"off\"\ntftp = \"off\"\nlegacy_listen = \"off\"\n",
    )
    .unwrap();
    let settings = json(&capf(&data, &["settings", "--json"]));
    assert_eq!(settings["http"], "off");
    assert_eq!(settings["tftp"], "off");
    assert_eq!(settings["legacy_listen"], "off");

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
