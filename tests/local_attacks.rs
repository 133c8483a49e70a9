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
use common::cli::{capf, fails, init, json, ok, Serving};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// -- 9. a damaged store ---------------------------------------------------------------

/// A data directory with devices and events, and its store's files.
fn populated(dir: &Path) -> PathBuf {
    let data = init(dir);
    for i in 0..20 {
        common::cli::add_null_install(&data, &format!("SEP0011223344{i:02X}"));
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
    let out = common::cli::add_null_install(&data, "SEP001122334477");
    assert!(!out.contains("authentication string for"), "{out}");
}

// -- 5. backup and the other files capf writes ----------------------------------------

/// The other local user of these tests.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A temporary directory every user may enter (not list or write), for tests that
/// play another user.
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o711);
    dir
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Every path under `dir` (and `dir`), depth first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    if std::fs::symlink_metadata(dir).unwrap().is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            found.extend(walk(&entry.unwrap().path()));
        }
    }
    found
}

/// Nothing under `dir` can be read, entered or written by anyone but its owner.
fn assert_private(dir: &Path) {
    for path in walk(dir) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        assert!(
            !meta.file_type().is_symlink(),
            "{} is a symlink",
            path.display()
        );
        assert_eq!(
            meta.mode() & 0o7777,
            expected,
            "{} is {:o}",
            path.display(),
            meta.mode() & 0o7777
        );
    }
}

/// Another user prepares the backup directory (0777, theirs, empty) and, as soon as
/// capf starts writing into it, plants a file of their own where the CA key will go
/// and a symlink where `capf.toml` will go. capf must refuse the directory outright.
#[test]
fn backup_refuses_a_directory_another_user_prepared() {
    let dir = shared_tempdir();
    let data = init(dir.path());
    ok(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--auth-string", "4711"],
    ));
    let trap = dir.path().join("trap");
    std::fs::create_dir(&trap).unwrap();
    chmod(&trap, 0o777);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();

    let attacker = is_root().then(|| {
        chown(&trap, NOBODY);
        let script = r#"
            end=$(( $(date +%s) + 30 ))
            while [ "$(date +%s)" -lt "$end" ]; do
                chmod 777 "$1" 2>/dev/null
                if [ -e "$1/db" ]; then
                    mkdir "$1/certs" 2>/dev/null
                    : > "$1/certs/capf.key"; chmod 666 "$1/certs/capf.key"
                    ln -s "$2" "$1/capf.toml"
                    exit 0
                fi
            done"#;
        Command::new("sh")
            .args(["-c", script, "attacker"])
            .arg(&trap)
            .arg(&victim)
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .unwrap()
    });

    let out = capf(&data, &["backup", trap.to_str().unwrap()]);
    if let Some(mut attacker) = attacker {
        let _ = attacker.kill();
        let _ = attacker.wait();
    }
    let err = fails(&out);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "written through a symlink"
    );
    for path in walk(&trap) {
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !text.contains("PRIVATE KEY"),
                "key written to {}",
                path.display()
            );
        }
    }
    assert!(!trap.join("db").exists(), "nothing written into the trap");
}

/// A backup directory that capf would create under a parent others can write to (no
/// sticky bit) could be swapped for theirs right after: refused.
#[test]
fn backup_refuses_a_parent_other_users_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let target = open.join("backup");
    let err = fails(&capf(&data, &["backup", target.to_str().unwrap()]));
    assert!(err.contains("not safe to write under"), "{err}");
    assert!(!target.exists());

    // The same directory made private is fine, and so is one under a sticky parent.
    chmod(&open, 0o700);
    ok(&capf(&data, &["backup", target.to_str().unwrap()]));
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    ok(&capf(
        &data,
        &["backup", sticky.join("b").to_str().unwrap()],
    ));
}

/// The backup holds the CA key and every authentication string: directories 0700,
/// files 0600 (the store's own files included), whether the CLI writes it or a
/// running server does.
#[test]
fn nothing_a_backup_writes_is_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    std::fs::write(data.join("tftp/SEP001122334455.cnf.xml"), common::DOC).unwrap();
    ok(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--auth-string", "4711"],
    ));

    let local = dir.path().join("local");
    ok(&capf(&data, &["backup", local.to_str().unwrap()]));
    assert_private(&local);
    let db = std::fs::read(local.join("db/db")).unwrap();
    assert!(
        db.windows(4).any(|w| w == b"4711"),
        "the store copy holds the string (so its mode matters)"
    );

    let server = Serving::start(&data);
    let served = dir.path().join("served");
    ok(&capf(&data, &["backup", served.to_str().unwrap()]));
    drop(server);
    assert_private(&served);
    assert_eq!(
        ok(&capf(&served, &["device", "export", "--csv"])),
        ok(&capf(&data, &["device", "export", "--csv"])),
        "the backup is a working data directory"
    );
}

/// `init` into a directory it did not create: another user's, or one others can
/// write to (and so may have filled), is refused. What it creates is private.
#[test]
fn init_refuses_a_directory_others_could_have_prepared() {
    let dir = shared_tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let err = fails(&capf(&open, &["init", "--node-name", "capf.test"]));
    assert!(err.contains("can be written by other users"), "{err}");
    assert!(!open.join("certs").exists());

    if is_root() {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chmod(&theirs, 0o700);
        chown(&theirs, NOBODY);
        let err = fails(&capf(&theirs, &["init", "--node-name", "capf.test"]));
        assert!(err.contains("belongs to uid 65534"), "{err}");
        assert!(!theirs.join("certs").exists());
    } else {
        eprintln!("not root: another user's directory not tried");
    }

    let data = init(dir.path());
    for path in walk(&data) {
        let m = mode(&path);
        let public_cert = path.extension().is_some_and(|e| e == "pem");
        assert_eq!(
            m & 0o077 & !if public_cert { 0o044 } else { 0 },
            0,
            "{} is {m:o}",
            path.display()
        );
    }
}

/// `config build` / `itl build` write into an operator's directory, which may be
/// shared: symlinks planted at the names they use are replaced, never written through.
#[test]
fn config_and_itl_build_do_not_write_through_planted_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    std::fs::write(data.join("tftp/SEP001122334455.cnf.xml"), common::DOC).unwrap();
    ok(&capf(
        &data,
        &["device", "add", "SEP001122334455", "--auth", "null"],
    ));
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    for name in [
        "SEP001122334455.cnf.xml.sgn",
        ".SEP001122334455.cnf.xml.sgn.tmp",
        "ITLFile.tlv",
        ".ITLFile.tlv.tmp",
    ] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    let out_arg = out.to_str().unwrap();
    ok(&capf(
        &data,
        &["config", "build", "SEP001122334455", "--out", out_arg],
    ));
    ok(&capf(&data, &["itl", "build", "--out", out_arg]));
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "written through a symlink"
    );
    for name in ["SEP001122334455.cnf.xml.sgn", "ITLFile.tlv"] {
        let meta = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is a file of its own");
        assert!(meta.len() > 0);
    }
}

// -- 10. the admin socket -------------------------------------------------------------

/// A uid with no name and no rights to the data directory.
const STRANGER: u32 = 4242;

/// `capf` run as `uid`.
fn capf_as(uid: u32, data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CAPF_DATA")
        .env_remove("SUDO_USER")
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run capf")
}

/// The socket's mode is not the only gate: with the data directory opened up by
/// mistake (0755, socket 0777), a user who is neither root nor the data directory's
/// owner is refused by uid, and nothing runs. The owner is served, and the audit trail
/// names whoever connected by the uid the kernel reports, not by what the client says.
#[test]
fn the_admin_socket_serves_only_root_and_the_data_directory_owner() {
    if !is_root() {
        eprintln!("not root: cannot play another user; skipped");
        return;
    }
    let dir = shared_tempdir();
    let data = init(dir.path());
    // The data directory belongs to nobody (say, a dedicated service user), though the
    // server runs as root.
    chown(&data, NOBODY);
    let server = Serving::start(&data);
    chmod(&data, 0o755);
    chmod(&data.join("admin.sock"), 0o777);

    let out = capf_as(
        STRANGER,
        &data,
        &["device", "add", "SEP001122334455", "--auth", "null"],
    );
    let err = fails(&out);
    assert!(err.contains("refused") && err.contains("uid 4242"), "{err}");
    assert_ne!(out.status.code(), Some(101));
    let list = json(&capf(&data, &["device", "list", "--json"]));
    assert_eq!(
        list,
        serde_json::json!([]),
        "the stranger's command did not run"
    );

    ok(&capf_as(
        NOBODY,
        &data,
        &["device", "add", "SEP001122334455", "--auth", "null"],
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(&data)
        .args(["device", "add", "SEP001122334466", "--auth", "null"])
        .env("USER", "mallory")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    ok(&out);
    let events = json(&capf(&data, &["events", "--json"]));
    let actors: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actors,
        ["cli:nobody (uid 65534)", "cli:root (uid 0)"],
        "actors by kernel uid"
    );
    drop(server);
}

/// Without a server, the audit trail also names the real uid, not `$USER`.
#[test]
fn the_audit_trail_does_not_take_the_user_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(&data)
        .args(["device", "add", "SEP001122334455", "--auth", "null"])
        .env("USER", "mallory")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    ok(&out);
    let events = json(&capf(&data, &["events", "--json"]));
    let actor = events[0]["actor"].as_str().unwrap();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert!(actor.starts_with("cli:"), "{actor}");
    assert!(actor.ends_with(&format!("(uid {uid})")), "{actor}");
    assert!(!actor.contains("mallory"), "{actor}");
}
