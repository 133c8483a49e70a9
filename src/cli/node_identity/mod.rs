//! `capf node export`, `join` and `sync`: every node of a cluster presents the same
//! CAPF CA and signs with the same signer (issue #17, docs/cluster.md "Node identity").
//!
//! `export` seals what a new node needs into one file under a passphrase
//! ([`sealed`]): everything under `certs/` (the CAPF CA, the file signer, the ITL
//! recovery identity, a staged or previous CA, retired identities, the MIC and SUDI
//! anchors the operator added, the web admin's certificate) and `capf.toml`. `join`
//! opens it into a new data directory, with the node's own `node_name` and the
//! cluster's `store`; `sync` carries a rollover step to a node that already runs
//! (`sync.rs`). None runs over the admin socket: they read and write files, never the
//! store. What they share is here: reading the file, checking its pairs, writing its
//! entries through a staging directory.

pub mod sealed;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rustls_pki_types::pem::PemObject;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{private, secret};
use crate::ca::{self, recovery, rollover};
use crate::settings::{DataDir, Settings};
use sealed::{Entry, Payload, CERTS_DIR, SETTINGS_PATH};

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Write the CAPF CA, the file signer, the rest of certs/ and capf.toml into one
    /// file sealed with a passphrase, for `capf node join` on a new node. The file
    /// holds the CA's private key: keep it offline, delete it once the node has joined.
    #[command(
        after_help = "Examples:\n  capf node export --out capf-node.enc                      # asks for the passphrase twice\n  capf node export --out capf-node.enc --passphrase-file /root/node-passphrase"
    )]
    Export(ExportArgs),
    /// Set a new node's data directory up from a file of `capf node export`: the same
    /// CAPF CA and signer, the same settings, this node's name and the shared store.
    #[command(
        after_help = "Example:\n  capf --data /var/lib/capf node join capf-node.enc --store postgres://capf@db.example.net/capf --node-name capf-b.example.net"
    )]
    Join(JoinArgs),
    /// Bring this node's certs/ up to date from a file of `capf node export` taken on
    /// the node where a CAPF CA or signer rollover step was made; this node's
    /// capf.toml (its name, store and listeners) stays. Restart the node afterwards.
    #[command(
        after_help = "Example, after `capf ca rollover` on node A:\n  capf node export --out capf-node.enc            # on A\n  capf --data /var/lib/capf node sync capf-node.enc # on every other node, then restart it"
    )]
    Sync(SyncArgs),
}

/// Where the passphrase comes from: the terminal unless one of these is given.
#[derive(Args, Debug)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of standard input (for scripts).
    #[arg(long, conflicts_with = "passphrase_file")]
    pub passphrase_stdin: bool,
    /// Read the passphrase from the first line of FILE (for scripts).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    fn source(&self) -> secret::Source<'_> {
        match (&self.passphrase_file, self.passphrase_stdin) {
            (Some(path), _) => secret::Source::File(path),
            (None, true) => secret::Source::Stdin,
            (None, false) => secret::Source::Prompt,
        }
    }
}

const PASSPHRASE: secret::Secret = secret::Secret {
    word: "passphrase",
    prompt: "passphrase of the node identity file",
    options: "--passphrase-stdin or --passphrase-file",
};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The file to write (0600). An existing file is refused unless --force.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing file at --out.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The file `capf node export` wrote.
    pub file: PathBuf,
    /// The store the cluster shares, written into this node's capf.toml
    /// (`postgres://user@host:port/database`).
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Host name or address phones use to reach this node (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The file `capf node export` wrote on the node that made the rollover step.
    pub file: PathBuf,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(data: &DataDir, cmd: NodeCommand) -> Result<ExitCode> {
    match cmd {
        NodeCommand::Export(args) => export::export(data, args),
        NodeCommand::Join(args) => join::join(data, args),
        NodeCommand::Sync(args) => sync::sync(data, args),
    }
}

mod export;
mod join;
mod sync;

/// Certificate and key pairs checked to belong together when present; the first two
/// must be.
const PAIRS: [(&str, &str); 6] = [
    (ca::CAPF_CERT_FILE, ca::CAPF_KEY_FILE),
    (ca::TFTP_CERT_FILE, ca::TFTP_KEY_FILE),
    (recovery::RECOVERY_CERT_FILE, recovery::RECOVERY_KEY_FILE),
    (rollover::NEXT_CERT_FILE, rollover::NEXT_KEY_FILE),
    (rollover::PREVIOUS_CERT_FILE, rollover::PREVIOUS_KEY_FILE),
    ("web.pem", "web.key"),
];

/// Each certificate and key pair the payload holds belongs together; the CAPF CA and
/// the signer are there.
fn check_pairs(payload: &Payload) -> Result<()> {
    for (i, (cert, key)) in PAIRS.iter().enumerate() {
        let required = i < 2;
        let cert_path = format!("{CERTS_DIR}/{cert}");
        let key_path = format!("{CERTS_DIR}/{key}");
        match (payload.file(&cert_path), payload.file(&key_path)) {
            (Some(cert_pem), Some(key_pem)) => ca::check_key_pair(
                Path::new(&cert_path),
                cert_pem,
                Path::new(&key_path),
                key_pem,
            )?,
            (None, None) if !required => {}
            (None, None) => bail!("{cert_path} and {key_path} are missing"),
            _ => bail!("{cert_path} and {key_path} must both be present, or neither"),
        }
    }
    Ok(())
}

/// Subject and SHA-256 of a certificate in the payload, for the summary.
fn identity(payload: &Payload, name: &str) -> serde_json::Value {
    let path = format!("{CERTS_DIR}/{name}");
    payload
        .file(&path)
        .and_then(|pem| ca::parse_certificate(Path::new(&path), pem).ok())
        .and_then(|der| ca::cert_info(&der).ok())
        .map(|info| serde_json::json!({"subject": info.subject, "sha256": info.sha256}))
        .unwrap_or(serde_json::Value::Null)
}

fn print_identity(label: &str, identity: &serde_json::Value) {
    println!(
        "  {:<8} {}  SHA-256 {}",
        format!("{label}:"),
        identity["subject"].as_str().unwrap_or("?"),
        identity["sha256"].as_str().unwrap_or("?")
    );
}

/// Appends every directory and file under `dir` (as `rel/...`) to `entries`, hidden
/// ones (the temporary names of files being written) left out. `total`: the bytes
/// read so far, bounded by what `join` accepts.
fn collect_dir(dir: &Path, rel: &str, total: &mut u64, entries: &mut Vec<Entry>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!(
                "{}: a file name that is not UTF-8 cannot be exported (rename it)",
                entry.path().display()
            );
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = format!("{rel}/{name}");
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // A symlinked file (an anchor linked in from elsewhere) is exported as the file
        // it names; a symlinked directory is not followed.
        let meta = if meta.file_type().is_symlink() {
            match std::fs::metadata(&path) {
                Ok(target) if target.is_file() => target,
                _ => {
                    eprintln!("capf: skipping {} (a symlink to no file)", path.display());
                    continue;
                }
            }
        } else {
            meta
        };
        if meta.is_dir() {
            entries.push(Entry::Dir { path: rel.clone() });
            collect_dir(&path, &rel, total, entries)?;
        } else if meta.is_file() {
            *total += meta.len();
            if *total > sealed::MAX_FILE {
                bail!(
                    "the files under {} exceed {} MiB, which `capf node join` refuses",
                    dir.display(),
                    sealed::MAX_FILE >> 20
                );
            }
            let mut data = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(sealed::MAX_FILE).read_to_end(&mut data))
                .with_context(|| format!("reading {}", path.display()))?;
            entries.push(Entry::File {
                path: rel,
                mode: meta.mode() & 0o777,
                data,
            });
        } else {
            eprintln!(
                "capf: skipping {} (not a file or directory)",
                path.display()
            );
        }
    }
    Ok(())
}

/// The payload of the file `capf node export` wrote, opened with the passphrase.
fn read_payload(path: &Path, passphrase: &PassphraseArgs) -> Result<Payload> {
    let file = read_bounded(path)?;
    let passphrase = secret::read(passphrase.source(), &PASSPHRASE)?;
    sealed::open(&file, &passphrase).with_context(|| format!("cannot open {}", path.display()))
}

/// The file, refused unread past [`sealed::MAX_FILE`].
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > sealed::MAX_FILE {
        bail!("{}: {}", path.display(), sealed::FileError::TooLarge);
    }
    let mut bytes = Vec::new();
    file.take(sealed::MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > sealed::MAX_FILE {
        bail!("{}: {}", path.display(), sealed::FileError::TooLarge);
    }
    Ok(bytes)
}

/// Writes the payload's `certs/` into a new private staging directory under `root`
/// (`.PREFIX-RANDOM`), loads it as `capf serve` will, and hands it to `commit` with
/// its random part; the staging directory is removed afterwards, whatever happened
/// (it is ours alone, and empty once committed). Returns the paths written.
fn staged<T>(
    root: &Path,
    prefix: &str,
    payload: &Payload,
    lsc_validity_days: u32,
    commit: impl FnOnce(&DataDir, &str) -> Result<T>,
) -> Result<(Vec<String>, T)> {
    let mut suffix = [0u8; 6];
    rand::fill(&mut suffix);
    let suffix = hex::encode(suffix);
    let staging = DataDir::new(root.join(format!(".{prefix}-{suffix}")));
    private::create_private_dir(staging.root())?;
    let result = (|| {
        let written = write_entries(staging.root(), payload)?;
        ca::Ca::load(&staging.certs(), lsc_validity_days)?;
        Ok((written, commit(&staging, &suffix)?))
    })();
    let _ = std::fs::remove_dir_all(staging.root());
    result
}

/// Creates every directory (0700) and file (its mode, a key 0600) of the payload under
/// `root`, each new: nothing existing is written through.
fn write_entries(root: &Path, payload: &Payload) -> Result<Vec<String>> {
    private::create_private_dir(&root.join(CERTS_DIR))?;
    let mut written = Vec::new();
    for entry in &payload.entries {
        // Checked by `sealed::open` already; checked again where it matters.
        sealed::check_path(entry.path(), matches!(entry, Entry::Dir { .. }))
            .map_err(|e| anyhow::anyhow!("refusing the file: {e}"))?;
        let path = entry.path();
        if path == SETTINGS_PATH {
            continue; // written from the joined settings
        }
        let target = root.join(path);
        create_parents(root, path)?;
        match entry {
            Entry::Dir { .. } => private::create_private_dir_if_missing(&target)?,
            Entry::File { mode, data, .. } => {
                let mode = file_mode(path, *mode);
                let mut file = ca::open_new(&target, mode)
                    .with_context(|| format!("creating {}", target.display()))?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .and_then(|()| file.write_all(data))
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing {}", target.display()))?;
                written.push(path.to_owned());
            }
        }
    }
    written.push(SETTINGS_PATH.to_owned());
    Ok(written)
}

/// The directories between `root` and the entry at `path`, created 0700 if missing.
fn create_parents(root: &Path, path: &str) -> Result<()> {
    let parts: Vec<&str> = path.split('/').collect();
    let mut dir = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        private::create_private_dir_if_missing(&dir)?;
    }
    Ok(())
}

/// A file's mode on the new node: what it had, without write or execute bits for
/// others, readable and writable by its owner; a private key is 0600 whatever it had.
fn file_mode(path: &str, recorded: u32) -> u32 {
    if path.ends_with(".key") {
        0o600
    } else {
        (recorded & 0o644) | 0o600
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_owner_only_and_nothing_is_writable_by_others() {
        assert_eq!(file_mode("certs/capf.key", 0o644), 0o600);
        assert_eq!(file_mode("certs/retired/capf-1.key", 0o640), 0o600);
        assert_eq!(file_mode("certs/capf.pem", 0o644), 0o644);
        assert_eq!(file_mode("certs/trust/a.pem", 0o777), 0o644);
        assert_eq!(file_mode("certs/itl-recovery.introduced", 0o400), 0o600);
        assert_eq!(file_mode("certs/trust/b.pem", 0o640), 0o640);
    }
}
