//! Every capf command block in README.md and docs/ runs as written (issue #19 point 5).
//!
//! A command block is a fenced block whose first command line starts with `capf ` or
//! `cargo run` (transcripts, whose lines start with `$ `, and output samples are not
//! commands). The blocks of one file run in order, in one bash script with `set -e`,
//! in a new directory of their own:
//!
//! * README.md from nothing, as a new user types it (each block a recipe of its own,
//!   in a directory of its own);
//! * every other document on a node that is initialised (`capf init`) and serving
//!   (`capf serve &`), with what the text assumes the operator did before (a base
//!   document placed, a phone enrolled).
//!
//! `cargo run --release --` stands for `capf`, and `cargo run --release --example
//! phone --` for the phone simulator (both already built by `cargo test`). What the
//! harness changes is where things listen: `capf serve` is given free ports on
//! 127.0.0.1 instead of 0.0.0.0:3804, 6970 and 127.0.0.1:9380 (tests touch only the
//! loopback, and run side by side), and the phone simulator is pointed at that port. Everything else runs
//! as written, so a renamed option, a missing step or a wrong order fails here.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The command blocks of `markdown`, in order.
fn command_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
            continue;
        }
        if let Some(block) = current.as_mut() {
            block.push(line);
        }
    }
    blocks
        .into_iter()
        .filter(|block| {
            let first = block
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            first.is_some_and(|l| l.starts_with("capf ") || l.starts_with("cargo run"))
        })
        .map(|block| {
            block
                .join("\n")
                .replace("cargo run --release --example phone --", "phone")
                .replace("cargo run --release --", "capf")
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory holding `capf` and `phone` wrappers that run the built binaries with
/// the listeners moved to free loopback ports.
fn wrappers(dir: &Path, capf_port: u16, http_port: u16, metrics_port: u16) -> PathBuf {
    let capf = PathBuf::from(env!("CARGO_BIN_EXE_capf"));
    let phone = capf
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("phone{}", std::env::consts::EXE_SUFFIX));
    assert!(
        phone.exists(),
        "{} is missing: `cargo test` builds the examples",
        phone.display()
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // `serve` anywhere in the arguments: drop the listen options the document gives
    // and listen on the loopback ports instead.
    let capf_wrapper = format!(
        r#"#!/usr/bin/env bash
args=()
serve=0
while [ $# -gt 0 ]; do
    case "$1" in
        serve) serve=1; args+=("$1") ;;
        --listen|--http|--tftp|--metrics) shift ;;
        *) args+=("$1") ;;
    esac
    shift
done
if [ $serve = 1 ]; then
    args+=(--listen 127.0.0.1:{capf_port} --http 127.0.0.1:{http_port} --metrics 127.0.0.1:{metrics_port})
fi
exec "{capf}" "${{args[@]}}"
"#,
        capf = capf.display()
    );
    let phone_wrapper = format!(
        "#!/usr/bin/env bash\nexec \"{}\" --addr 127.0.0.1:{capf_port} \"$@\"\n",
        phone.display()
    );
    for (name, text) in [("capf", capf_wrapper), ("phone", phone_wrapper)] {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs the command blocks of `doc` (relative to the repository) after `prelude`: in
/// one directory, in order, or (`fresh_per_block`) each in a new directory, for
/// documents whose blocks are separate recipes.
fn run_blocks(doc: &str, prelude: &str, fresh_per_block: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(doc)).unwrap();
    let blocks = command_blocks(&text);
    assert!(!blocks.is_empty(), "{doc} has no capf command block");
    let scripts: Vec<Vec<String>> = if fresh_per_block {
        blocks.into_iter().map(|b| vec![b]).collect()
    } else {
        vec![blocks]
    };
    for blocks in scripts {
        run_script(doc, prelude, &blocks);
    }
}

fn run_script(doc: &str, prelude: &str, blocks: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let bin = wrappers(dir.path(), free_port(), free_port(), free_port());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; exit $status' EXIT\n",
    );
    script.push_str(prelude);
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- block {}' >&2\n{block}\n", i + 1));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("HOME", dir.path())
        .env_remove("CAPF_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the command blocks of {doc} failed ({})\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node that is initialised and serving, for documents that describe running one.
const SERVING: &str =
    "capf init --node-name capf.example.net >/dev/null\ncapf serve 2>serve.log &\n";

#[test]
fn the_readme_runs_from_a_fresh_directory() {
    run_blocks("README.md", "", true);
}

#[test]
fn the_operations_guide_runs_on_a_serving_node() {
    // The guide reads the status of a phone that has enrolled: SEP001122334477.
    let enrolled = "capf device add SEP001122334477 --operation install --auth null >/dev/null\n\
                    phone SEP001122334477 --out phone >/dev/null\n";
    run_blocks("docs/operations.md", &format!("{SERVING}{enrolled}"), false);
}

#[test]
fn the_encrypted_configuration_guide_runs_on_a_serving_node() {
    // Step 2 of the guide: the operator places the phone's base document.
    let place = "mkdir -p capf-data/tftp\n\
                 printf '<device><fullConfig>true</fullConfig></device>' \
                 > capf-data/tftp/SEP001122334455.cnf.xml\n";
    run_blocks(
        "docs/encrypted-config.md",
        &format!("{SERVING}{place}"),
        false,
    );
}

#[test]
fn the_lifecycle_guide_runs_on_a_serving_node_with_renewal_on() {
    // The guide's first step: renew_before_days set in capf.toml before serving.
    let renewal_on = "capf init --node-name capf.example.net >/dev/null\n\
                      sed -i 's/^renew_before_days = 0$/renew_before_days = 30/' capf-data/capf.toml\n\
                      grep -q '^renew_before_days = 30$' capf-data/capf.toml\n\
                      capf serve 2>serve.log &\n";
    run_blocks("docs/lifecycle.md", renewal_on, false);
}

#[test]
fn the_migration_guide_runs_with_a_bat_export() {
    // The guide's step 2: the operator downloaded a BAT export from CUCM.
    let export = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cucm-bat-all-details.csv");
    let prelude = format!("cp '{}' cucm-export.csv\n", export.display());
    run_blocks("docs/migrating-from-cucm.md", &prelude, false);
}

#[test]
fn blocks_are_found_and_transcripts_are_not_commands() {
    let doc = "text\n```\ncapf device list\n```\n```\n$ capf doctor\nOK   x\n```\n\
               ```toml\nlisten = \"x\"\n```\n```sh\n# comment\ncargo run --release -- serve &\n```\n";
    assert_eq!(
        command_blocks(doc),
        vec![
            "capf device list".to_string(),
            "# comment\ncapf serve &".to_string()
        ]
    );
}

#[test]
fn the_cluster_guide_runs_on_a_serving_node() {
    // The operator chose the passphrase of the node identity file and keeps it in a
    // file only they can read (the guide's scripted variant of the prompt).
    let passphrase = "(umask 077; printf '%s\\n' 'a passphrase for the guide' > node-passphrase)\n";
    run_blocks("docs/cluster.md", &format!("{SERVING}{passphrase}"), false);
}

/// The documents the tests above run; a new document with command blocks must join.
const RUN: [&str; 6] = [
    "README.md",
    "docs/migrating-from-cucm.md",
    "docs/operations.md",
    "docs/encrypted-config.md",
    "docs/lifecycle.md",
    "docs/cluster.md",
];

#[test]
fn every_document_with_command_blocks_is_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    for dir in ["docs", "docs/modules"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    for path in docs {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            command_blocks(&text).is_empty() || RUN.contains(&name.as_str()),
            "{name} has capf command blocks: run them in tests/docs_commands.rs"
        );
    }
}
