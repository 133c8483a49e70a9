//! Attacks from the same machine (issue #13): another local user, a damaged store, a
//! phone that knows only a device name. Each test performs the attack against the real
//! binary (or a real `capf serve`) with real files, sockets and TLS.
//!
//! "Another user" is uid 65534 (nobody) or an unnamed uid, which the tests become by
//! running a process under it; that needs root. Run as an ordinary user, those tests
//! check what they can and say that they skipped the rest.

mod common;

use capf::phone::{connector, Phone};
use capf::protocol::Reason;
use common::cli::{capf, init, json, ok, Serving};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// -- 9. a damaged store ---------------------------------------------------------------

/// A data directory with devices and events, and its store's files.
fn populated(dir: &Path) -> PathBuf {
    let data = init(dir);
    for i in 0..20 {
        ok(&capf(
            &data,
            &[
                "device",
                "add",
                &format!("SEP0011223344{i:02X}"),
                "--operation",
                "install",
                "--auth",
                "null",
            ],
        ));
    }
    data
}

/// `capf`, killed if it runs for more than 30 s (a `serve` that started anyway).
fn capf_bounded(data: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CAPF_DATA")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("capf {args:?} still running after 30 s");
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Truncated store files: every command that needs the store fails with a message
/// that names the store and says how to restore it, with exit status 1 (no panic, no
/// 101); `capf serve` refuses to start.
#[test]
fn a_truncated_store_is_refused_by_every_command_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let clean = populated(&dir.path().join("clean"));
    let db = clean.join("db");
    let snapshot = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("snap."));
    // sled's log file is allocated in whole segments and this store fills only the
    // start of it: these cuts all take away records.
    let mut damage = vec![
        ("db".to_string(), 0),
        ("db".to_string(), 100),
        ("db".to_string(), 1000),
        ("conf".to_string(), 10),
    ];
    if let Some(snapshot) = snapshot {
        damage.push((snapshot.clone(), 0));
        damage.push((snapshot, 100));
    }
    for (n, (file, len)) in damage.into_iter().enumerate() {
        let data = dir.path().join(format!("damaged-{n}"));
        copy_tree(&clean, &data);
        let store = data.join("db");
        std::fs::OpenOptions::new()
            .write(true)
            .open(store.join(&file))
            .unwrap()
            .set_len(len)
            .unwrap();
        let backup = dir.path().join(format!("backup-{n}"));
        for args in [
            vec!["device", "list"],
            vec!["device", "show", "SEP001122334400"],
            vec!["device", "add", "SEP0011223344FF", "--auth", "null"],
            vec!["events"],
            vec!["keys", "list"],
            vec!["backup", backup.to_str().unwrap()],
            vec!["serve", "--listen", "127.0.0.1:0", "--http", "off"],
        ] {
            let out = capf_bounded(&data, &args);
            let err = String::from_utf8_lossy(&out.stderr);
            let what = format!("{file} cut to {len}, capf {args:?}");
            assert_eq!(out.status.code(), Some(1), "{what}: {err}");
            assert!(
                err.contains(&format!("the store at {} is damaged", store.display())),
                "{what}: {err}"
            );
            assert!(err.contains("capf backup"), "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert!(
                !err.contains("capf listening"),
                "{what}: served anyway: {err}"
            );
        }
    }
}

// -- 4. null authentication is asked for, not assumed ---------------------------------

/// `device add NAME --operation install` without `--auth`: a phone that knows only the
/// name (null authentication) is refused and gets no certificate; the string the
/// command printed (also in `--json`) enrolls it.
#[tokio::test]
async fn a_device_added_without_auth_cannot_be_enrolled_by_name_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let out = ok(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--operation", "install"],
    ));
    let server = Serving::start(&data);
    let capf_cert = CertificateDer::from_pem_file(data.join("certs/capf.pem")).unwrap();
    let connector = connector(&[capf_cert]).unwrap();
    let by_name = |name: &str| {
        let mut phone = Phone::new(name);
        phone.password = None;
        phone
    };
    let outcome = by_name("SEP001122334455")
        .run(server.addr(), &connector)
        .await
        .unwrap();
    assert!(
        outcome.issued.is_none(),
        "a certificate for the name alone: {:?}",
        outcome.end_reason
    );
    assert_ne!(outcome.end_reason, Some(Reason::UpdateCertificate));

    // The printed string is the one that enrolls it.
    let string = out
        .lines()
        .find_map(|l| l.strip_prefix("authentication string for SEP001122334455: "))
        .expect("the generated string is printed")
        .to_string();
    let mut phone = Phone::new("SEP001122334455");
    phone.password = Some(string);
    let outcome = phone.run(server.addr(), &connector).await.unwrap();
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    assert!(outcome.issued.is_some());

    // With --json (here through the running server) the string is a field of its own.
    let added = json(&capf(
        &data,
        &[
            "device",
            "add",
            "SEP001122334466",
            "--operation",
            "install",
            "--json",
        ],
    ));
    assert_eq!(added["auth"], "string");
    assert!(added["generated_auth_string"].is_string(), "{added}");
    assert_eq!(added["generated_auth_string"], added["auth_string"]);
    let outcome = by_name("SEP001122334466")
        .run(server.addr(), &connector)
        .await
        .unwrap();
    assert!(outcome.issued.is_none());
    drop(server);

    // Null authentication is still there for whoever asks for it.
    let out = ok(&capf(
        &data,
        &[
            "device",
            "add",
            "SEP001122334477",
            "--operation",
            "install",
            "--auth",
            "null",
        ],
    ));
    assert!(!out.contains("authentication string for"), "{out}");
}
