//! `capf node export` and `capf node join` (issue #17 point 3): a second node gets the
//! first node's CAPF CA and signer byte for byte, and a wrong, damaged or hostile file
//! writes nothing. Only files are checked: no node is started, and the PostgreSQL
//! store named is never contacted.

mod common;

use capf::cli::node_identity_file::{self as sealed, Entry, KdfParams};
use common::cli::{capf, fails, init, ok};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PASSPHRASE: &str = "plenty of characters here";
const STORE: &str = "postgres://capf@127.0.0.1:1/x";

/// `capf --data DATA ARGS` with `input` on standard input.
fn capf_in(data: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CAPF_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run capf");
    // The command may refuse before reading: a closed pipe is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().expect("wait for capf")
}

fn join(data: &Path, file: &Path, passphrase: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "node",
        "join",
        file.to_str().unwrap(),
        "--store",
        STORE,
        "--passphrase-stdin",
    ];
    args.extend_from_slice(extra);
    capf_in(data, &args, &format!("{passphrase}\n"))
}

/// The names in `dir` that start with a dot (what a staging directory leaves behind).
fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Every file under `dir`, by path relative to it: bytes and permission bits; and
/// every directory's permission bits.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Option<Vec<u8>>, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                out.insert(rel, (None, mode));
                walk(root, &path, out);
            } else {
                out.insert(rel, (Some(std::fs::read(&path).unwrap()), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A node A with an operator's MIC anchor and a signer rollover's retired identity
/// beside what `init` creates, and its export.
fn exported(dir: &Path) -> (PathBuf, PathBuf) {
    let a = init(dir);
    let certs = a.join("certs");
    std::fs::copy(certs.join("tftp.pem"), certs.join("trust/extra-anchor.pem")).unwrap();
    std::fs::create_dir(certs.join("retired")).unwrap();
    std::fs::write(certs.join("retired/tftp-1.pem"), "old signer").unwrap();
    std::fs::write(certs.join("itl-recovery.introduced"), "1700000000\n").unwrap();
    // A temporary file of an interrupted write is not part of the identity.
    std::fs::write(certs.join(".capf.key.0123456789ab.tmp"), "half a key").unwrap();

    let file = dir.join("node.enc");
    let out = capf_in(
        &a,
        &[
            "node",
            "export",
            "--out",
            file.to_str().unwrap(),
            "--passphrase-stdin",
        ],
        &format!("{PASSPHRASE}\n"),
    );
    let text = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for shown in [&text, &stderr.to_string()] {
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(PASSPHRASE), "{shown}");
    }
    assert!(text.contains("private key"), "the warning: {text}");
    (a, file)
}

#[test]
fn a_joined_node_holds_the_same_identity_and_its_own_name_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, file) = exported(dir.path());
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..8], sealed::MAGIC);
    assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"));

    let b = dir.path().join("node-b");
    let out = join(&b, &file, PASSPHRASE, &["--node-name", "capf-b.test"]);
    let text = ok(&out);
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(PASSPHRASE),
        "{text}"
    );

    // certs/ byte for byte, with the modes; the temporary file stayed behind.
    let mut expected = tree(&a.join("certs"));
    expected.remove(Path::new(".capf.key.0123456789ab.tmp"));
    let got = tree(&b.join("certs"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, (data, mode)) in &got {
        let (want_data, want_mode) = &expected[path];
        assert!(data == want_data, "{} differs", path.display());
        if path.extension().is_some_and(|e| e == "key") {
            assert_eq!(*mode, 0o600, "{}", path.display());
        } else if data.is_none() {
            assert_eq!(*mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(mode, want_mode, "{}", path.display());
        }
    }
    for key in [
        "capf.key",
        "tftp.key",
        "itl-recovery.key",
        "web.key",
        "itl-recovery.introduced",
    ] {
        assert!(got.contains_key(Path::new(key)), "{key}");
    }
    let root_mode = std::fs::metadata(&b).unwrap().permissions().mode() & 0o777;
    assert_eq!(root_mode, 0o700);
    assert!(b.join("tftp").is_dir());
    assert!(!b.join("db").exists(), "the store is the cluster's");
    assert_eq!(
        hidden_entries(&b),
        Vec::<String>::new(),
        "no staging left behind"
    );

    // The settings: A's, with B's name and the cluster's store.
    let settings_a = capf::settings::Settings::load(&capf::settings::DataDir::new(&a)).unwrap();
    let settings_b = capf::settings::Settings::load(&capf::settings::DataDir::new(&b)).unwrap();
    assert_eq!(settings_b.node_name, "capf-b.test");
    assert_eq!(settings_b.store, STORE);
    assert_eq!(
        capf::settings::Settings {
            node_name: settings_a.node_name.clone(),
            store: settings_a.store.clone(),
            ..settings_b.clone()
        },
        settings_a
    );
    let mode = std::fs::metadata(b.join("capf.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // B presents A's CAPF certificate.
    assert_eq!(
        ok(&capf(&b, &["cert", "--pem"])),
        ok(&capf(&a, &["cert", "--pem"]))
    );

    // Joining again, or joining A itself: the same CA is there, nothing to do.
    for data in [&b, &a] {
        let before = tree(data);
        let again = ok(&join(data, &file, PASSPHRASE, &[]));
        assert!(again.contains("nothing to do"), "{again}");
        assert!(tree(data) == before, "nothing changed");
    }
}

#[test]
fn a_wrong_passphrase_or_a_damaged_file_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = exported(dir.path());

    let c = dir.path().join("node-c");
    let err = fails(&join(&c, &file, "plenty of characters hera", &[]));
    assert!(err.contains("wrong passphrase or damaged file"), "{err}");
    assert!(!c.exists(), "nothing was written");

    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let damaged = dir.path().join("damaged.enc");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = fails(&join(&c, &damaged, PASSPHRASE, &[]));
    assert!(err.contains("wrong passphrase or damaged file"), "{err}");
    assert!(!c.exists());

    let truncated = dir.path().join("truncated.enc");
    std::fs::write(&truncated, &std::fs::read(&file).unwrap()[..30]).unwrap();
    let err = fails(&join(&c, &truncated, PASSPHRASE, &[]));
    assert!(err.contains("truncated"), "{err}");

    let other = dir.path().join("other.enc");
    std::fs::write(&other, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let err = fails(&join(&c, &other, PASSPHRASE, &[]));
    assert!(err.contains("not a capf node identity file"), "{err}");

    // Too large to be one: refused before it is read.
    let big = dir.path().join("big.enc");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(sealed::MAX_FILE + 1)
        .unwrap();
    let err = fails(&join(&c, &big, PASSPHRASE, &[]));
    assert!(err.contains("larger than 16 MiB"), "{err}");
    assert!(!c.exists());
}

#[test]
fn a_file_naming_paths_outside_certs_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = exported(dir.path());
    let payload = sealed::open(&std::fs::read(&file).unwrap(), PASSPHRASE).unwrap();
    let fast = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let target = dir.path().join("node-e");
    let absolute = dir.path().join("escaped");
    for hostile in [
        "certs/../../escaped",
        "../escaped",
        "certs/../capf.toml.bak",
        absolute.to_str().unwrap(),
        "db/conf",
    ] {
        let mut bad = payload.clone();
        bad.entries.push(Entry::File {
            path: hostile.into(),
            mode: 0o644,
            data: b"planted".to_vec(),
        });
        let crafted = dir.path().join("crafted.enc");
        std::fs::write(&crafted, sealed::seal(&bad, PASSPHRASE, fast).unwrap()).unwrap();
        let err = fails(&join(&target, &crafted, PASSPHRASE, &[]));
        assert!(err.contains("refusing the file"), "{hostile}: {err}");
        assert!(!dir.path().join("escaped").exists(), "{hostile}");
        assert!(!target.exists(), "{hostile}");
    }
    // A directory entry that climbs is refused the same way.
    let mut bad = payload.clone();
    bad.entries.push(Entry::Dir {
        path: "certs/../../escaped".into(),
    });
    let crafted = dir.path().join("crafted.enc");
    std::fs::write(&crafted, sealed::seal(&bad, PASSPHRASE, fast).unwrap()).unwrap();
    let err = fails(&join(&target, &crafted, PASSPHRASE, &[]));
    assert!(err.contains("refusing the file"), "{err}");
    assert!(!dir.path().join("escaped").exists() && !target.exists());

    // The untouched payload, sealed the same way, joins: the refusals were the paths.
    let good = dir.path().join("good.enc");
    std::fs::write(&good, sealed::seal(&payload, PASSPHRASE, fast).unwrap()).unwrap();
    ok(&join(&target, &good, PASSPHRASE, &[]));
}

#[test]
fn join_refuses_another_identity_a_used_directory_and_a_bad_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = exported(dir.path());

    // Another node, another CA: never replaced.
    let f = dir.path().join("node-f");
    ok(&capf(&f, &["init", "--node-name", "capf-f.test"]));
    let before = tree(&f);
    let err = fails(&join(&f, &file, PASSPHRASE, &[]));
    assert!(
        err.contains("already initialised with another CAPF CA"),
        "{err}"
    );
    assert!(tree(&f) == before, "nothing changed");

    // A directory with something in it but no identity.
    let g = dir.path().join("node-g");
    std::fs::create_dir(&g).unwrap();
    std::fs::write(g.join("notes.txt"), "mine").unwrap();
    let err = fails(&join(&g, &file, PASSPHRASE, &[]));
    assert!(err.contains("is not empty"), "{err}");

    // The store: required, and a URL Settings accepts; refused before the passphrase.
    let h = dir.path().join("node-h");
    for store in ["", "/var/lib/capf/db", "mysql://db/capf"] {
        let out = capf_in(
            &h,
            &[
                "node",
                "join",
                file.to_str().unwrap(),
                "--store",
                store,
                "--passphrase-stdin",
            ],
            "",
        );
        let err = fails(&out);
        assert!(err.contains("store"), "{store}: {err}");
    }
    assert!(!h.exists());

    // The passphrase from a file; the node name defaults to the host name.
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
    let out = capf(
        &h,
        &[
            "node",
            "join",
            file.to_str().unwrap(),
            "--store",
            STORE,
            "--passphrase-file",
            passphrase.to_str().unwrap(),
            "--json",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(json["joined"], true);
    assert_eq!(
        json["node_name"],
        capf::settings::Settings::default().node_name
    );
    assert!(json["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "certs/capf.key"));
}

#[test]
fn export_refuses_a_short_passphrase_an_existing_file_and_an_empty_node() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path());
    let out_file = dir.path().join("node.enc");
    let export = |input: &str, extra: &[&str]| {
        let mut args = vec![
            "node",
            "export",
            "--out",
            out_file.to_str().unwrap(),
            "--passphrase-stdin",
        ];
        args.extend_from_slice(extra);
        capf_in(&a, &args, input)
    };
    let err = fails(&export("eleven char\n", &[]));
    assert!(err.contains("at least 12 characters"), "{err}");
    assert!(!out_file.exists());

    std::fs::write(&out_file, "precious").unwrap();
    let err = fails(&export(&format!("{PASSPHRASE}\n"), &[]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out_file).unwrap(), b"precious");
    ok(&export(&format!("{PASSPHRASE}\n"), &["--force"]));
    assert!(sealed::open(&std::fs::read(&out_file).unwrap(), PASSPHRASE).is_ok());

    // Without a terminal and without --passphrase-stdin/-file: refused, not hung.
    let out = capf(
        &a,
        &[
            "node",
            "export",
            "--out",
            dir.path().join("other.enc").to_str().unwrap(),
        ],
    );
    let err = fails(&out);
    assert!(err.contains("not a terminal"), "{err}");

    let empty = dir.path().join("empty");
    let err = fails(&capf(
        &empty,
        &[
            "node",
            "export",
            "--out",
            dir.path().join("x.enc").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("no CAPF certificate"), "{err}");
}

/// The files under `dir` and their bytes (modes aside: `join` and `sync` tighten them).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    tree(dir)
        .into_iter()
        .filter_map(|(path, (data, _))| Some((path, data?)))
        .collect()
}

fn export_to(data: &Path, file: &Path) {
    ok(&capf_in(
        data,
        &[
            "node",
            "export",
            "--out",
            file.to_str().unwrap(),
            "--force",
            "--passphrase-stdin",
        ],
        &format!("{PASSPHRASE}\n"),
    ));
}

fn sync(data: &Path, file: &Path) -> Output {
    capf_in(
        data,
        &["node", "sync", file.to_str().unwrap(), "--passphrase-stdin"],
        &format!("{PASSPHRASE}\n"),
    )
}

/// A CAPF CA rollover made on node A reaches node B through `export` and `sync`, step
/// by step; B's own settings stay; and a file that is behind B, or of another
/// cluster, changes nothing.
#[test]
fn a_node_left_behind_by_a_rollover_is_synced_forward_and_never_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, joined) = exported(dir.path());
    std::fs::remove_file(a.join("certs/.capf.key.0123456789ab.tmp")).unwrap();
    let b = dir.path().join("node-b");
    ok(&join(
        &b,
        &joined,
        PASSPHRASE,
        &["--node-name", "capf-b.test"],
    ));
    let settings_b = std::fs::read(b.join("capf.toml")).unwrap();

    // A stages a new CAPF CA; B follows.
    ok(&capf(&a, &["ca", "rollover"]));
    let staged = dir.path().join("staged.enc");
    export_to(&a, &staged);
    let out = ok(&sync(&b, &staged));
    assert!(out.contains("added capf-next.pem"), "{out}");
    assert!(
        contents(&b.join("certs")) == contents(&a.join("certs")),
        "B's certs/ are A's"
    );
    assert_eq!(std::fs::read(b.join("capf.toml")).unwrap(), settings_b);
    assert!(ok(&sync(&b, &staged)).contains("nothing to do"));
    assert_eq!(
        hidden_entries(&b),
        Vec::<String>::new(),
        "no staging left behind"
    );

    // The file from before the rollover is behind B now.
    let before = tree(&b);
    let refused = fails(&sync(&b, &joined));
    assert!(refused.contains("behind this node"), "{refused}");
    assert!(tree(&b) == before, "nothing changed");

    // A activates the new CA; B follows, and presents it.
    ok(&capf(&a, &["ca", "activate"]));
    let activated = dir.path().join("activated.enc");
    export_to(&a, &activated);
    ok(&sync(&b, &activated));
    assert_eq!(
        ok(&capf(&b, &["cert", "--pem"])),
        ok(&capf(&a, &["cert", "--pem"]))
    );
    assert!(contents(&b.join("certs")) == contents(&a.join("certs")));
    // Staged only: behind B now.
    let refused = fails(&sync(&b, &staged));
    assert!(refused.contains("behind this node"), "{refused}");

    // Another cluster's file.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other) = exported(other_dir.path());
    let before = tree(&b);
    let refused = fails(&sync(&b, &other));
    assert!(refused.contains("another cluster"), "{refused}");
    assert!(tree(&b) == before, "nothing changed");
}
