//! `capf node export` and `capf node join`: every node of a cluster presents the same
//! CAPF CA and signs with the same signer (issue #17, docs/cluster.md "Node identity").
//!
//! `export` seals what a new node needs into one file under a passphrase
//! ([`sealed`]): everything under `certs/` (the CAPF CA, the file signer, the ITL
//! recovery identity, a staged or previous CA, retired identities, the MIC and SUDI
//! anchors the operator added, the web admin's certificate) and `capf.toml`. `join`
//! opens it into a new data directory, with the node's own `node_name` and the
//! cluster's `store`. Neither runs over the admin socket: they read and write files,
//! never the store.

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
        NodeCommand::Export(args) => export(data, args),
        NodeCommand::Join(args) => join(data, args),
        NodeCommand::Sync(args) => sync(data, args),
    }
}

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

fn export(data: &DataDir, args: ExportArgs) -> Result<ExitCode> {
    if !data.is_initialised() {
        bail!(
            "{} has no CAPF certificate: there is no node identity to export (run `capf init` \
             on the first node, or pass --data)",
            data.root().display()
        );
    }
    if std::fs::symlink_metadata(&args.out).is_ok() && !args.force {
        bail!(
            "{} already exists (name another file, or --force to replace it)",
            args.out.display()
        );
    }
    let settings = Settings::load(data)?;
    let payload = collect(data, &settings)?;
    payload.check()?;
    check_pairs(&payload).context(
        "exporting nothing: run the export again if a `capf ca` or `capf signer` command \
         changed the identities while they were read",
    )?;
    let passphrase = secret::read_new(args.passphrase.source(), &PASSPHRASE, |p| {
        Ok(sealed::check_passphrase(p)?)
    })?;
    let file = sealed::seal(&payload, &passphrase, sealed::KdfParams::EXPORT)?;
    if file.len() as u64 > sealed::MAX_FILE {
        bail!(
            "{} holds more than {} MiB, which `capf node join` refuses: what in certs/ is \
             that large?",
            data.certs().display(),
            sealed::MAX_FILE >> 20
        );
    }
    ca::replace(&args.out, &file, 0o600)
        .with_context(|| format!("writing {}", args.out.display()))?;

    let files: Vec<&str> = payload
        .entries
        .iter()
        .filter(|e| matches!(e, Entry::File { .. }))
        .map(Entry::path)
        .collect();
    let (capf, signer) = (
        identity(&payload, ca::CAPF_CERT_FILE),
        identity(&payload, ca::TFTP_CERT_FILE),
    );
    if args.json {
        let out = serde_json::json!({
            "file": args.out,
            "from_node": payload.from_node,
            "files": files,
            "capf_certificate": capf,
            "signer_certificate": signer,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "wrote {} (0600): {} files from {}, sealed with the passphrase",
            args.out.display(),
            files.len(),
            data.root().display()
        );
        print_identity("CAPF CA", &capf);
        print_identity("signer", &signer);
        println!(
            "It holds the CAPF CA's private key: whoever has it and the passphrase can issue \
             certificates your phones trust. Keep it offline and apart from the passphrase, \
             and delete it once the new node has joined (docs/cluster.md, \"Node identity\")."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The payload of `export`: every directory and file under `certs/` but hidden ones
/// (the temporary names of files being written), and the settings.
fn collect(data: &DataDir, settings: &Settings) -> Result<Payload> {
    let mut entries = Vec::new();
    collect_dir(&data.certs(), CERTS_DIR, &mut 0, &mut entries)?;
    let toml = match std::fs::read(data.settings_file()) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            toml::to_string_pretty(settings)?.into_bytes()
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", data.settings_file().display()))
        }
    };
    entries.push(Entry::File {
        path: SETTINGS_PATH.into(),
        mode: 0o600,
        data: toml,
    });
    Ok(Payload {
        version: sealed::FORMAT_VERSION.into(),
        created: crate::model::now(),
        from_node: settings.node_name.clone(),
        entries,
    })
}

/// `total`: the bytes read so far, bounded by what `join` accepts.
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

fn join(data: &DataDir, args: JoinArgs) -> Result<ExitCode> {
    // What can be refused without the passphrase is refused first.
    if args.store.is_empty() {
        bail!(
            "--store is empty: a node that joins shares the cluster's store \
             (postgres://user@host:port/database)"
        );
    }
    Settings {
        store: args.store.clone(),
        ..Settings::default()
    }
    .validate()
    .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let initialised = data.is_initialised();
    if !initialised {
        if let Some(first) = first_entry(data.root())? {
            bail!(
                "{} is not empty ({} is there) and holds no CAPF certificate: `capf node join` \
                 sets up a new node in an empty or missing data directory",
                data.root().display(),
                first
            );
        }
    }
    let file = read_bounded(&args.file)?;
    let passphrase = secret::read(args.passphrase.source(), &PASSPHRASE)?;
    let payload = sealed::open(&file, &passphrase)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    drop(passphrase);
    let capf_path = format!("{CERTS_DIR}/{}", ca::CAPF_CERT_FILE);
    let capf = identity(&payload, ca::CAPF_CERT_FILE);

    if initialised {
        let ours = std::fs::read(data.capf_cert())
            .with_context(|| format!("reading {}", data.capf_cert().display()))?;
        if payload.file(&capf_path) == Some(ours.as_slice()) {
            if args.json {
                let out = serde_json::json!({
                    "data": data.root(),
                    "joined": false,
                    "capf_certificate": capf,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "{} already holds this CAPF CA (SHA-256 {}): nothing to do",
                    data.root().display(),
                    capf["sha256"].as_str().unwrap_or("?")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "{} is already initialised with another CAPF CA: `capf node join` sets up a new \
             node in an empty or missing data directory, and never replaces an identity",
            data.root().display()
        );
    }

    let settings = joined_settings(&payload, args.node_name, &args.store)?;
    check_pairs(&payload)?;
    let written = write(data, &payload, &settings)?;

    let signer = identity(&payload, ca::TFTP_CERT_FILE);
    let store = crate::settings::redact_store_url(&settings.store);
    if args.json {
        let out = serde_json::json!({
            "data": data.root(),
            "joined": true,
            "from_node": payload.from_node,
            "node_name": settings.node_name,
            "store": store,
            "files": written,
            "capf_certificate": capf,
            "signer_certificate": signer,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} joined the cluster of {}: {} files written",
            data.root().display(),
            payload.from_node,
            written.len()
        );
        print_identity("CAPF CA", &capf);
        print_identity("signer", &signer);
        println!("  node name: {}", settings.node_name);
        println!("  store:     {store}");
        println!(
            "Next: start `capf serve` on this node; then delete {} (it holds the CA's private key).",
            args.file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sync(data: &DataDir, args: SyncArgs) -> Result<ExitCode> {
    if !data.is_initialised() {
        bail!(
            "{} holds no node yet: `capf node join` sets a new node up from the file",
            data.root().display()
        );
    }
    let file = read_bounded(&args.file)?;
    let passphrase = secret::read(args.passphrase.source(), &PASSPHRASE)?;
    let payload = sealed::open(&file, &passphrase)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    drop(passphrase);
    check_pairs(&payload)?;
    check_ahead(data, &payload)?;

    let ours = certs_digests(&collect_certs(&data.certs())?);
    let theirs = certs_digests(&payload.entries);
    let mut changed = Vec::new();
    for (path, digest) in &theirs {
        match ours.get(path) {
            Some(mine) if mine == digest => {}
            Some(_) => changed.push(format!("changed {path}")),
            None => changed.push(format!("added {path}")),
        }
    }
    for path in ours.keys().filter(|p| !theirs.contains_key(*p)) {
        changed.push(format!("removed {path}"));
    }
    if !changed.is_empty() {
        replace_certs(data, &payload)?;
    }
    let capf = identity(&payload, ca::CAPF_CERT_FILE);
    let signer = identity(&payload, ca::TFTP_CERT_FILE);
    if args.json {
        let out = serde_json::json!({
            "data": data.root(),
            "synced": !changed.is_empty(),
            "from_node": payload.from_node,
            "changes": changed,
            "capf_certificate": capf,
            "signer_certificate": signer,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if changed.is_empty() {
        println!(
            "{} already holds the certificates of {}: nothing to do",
            data.certs().display(),
            payload.from_node
        );
    } else {
        println!(
            "{} now holds the certificates of {}:",
            data.certs().display(),
            payload.from_node
        );
        for change in &changed {
            println!("  {change}");
        }
        print_identity("CAPF CA", &capf);
        print_identity("signer", &signer);
        println!(
            "Next: restart `capf serve` on this node (it loads its certificates at start); \
             then delete {}.",
            args.file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a file that is not this node's cluster, or that is behind this node: sync
/// only ever moves a node forward along the rollovers it shares with the file's node.
fn check_ahead(data: &DataDir, payload: &Payload) -> Result<()> {
    let read = |name: &str| std::fs::read(data.certs().join(name)).ok();
    let theirs = |name: &str| payload.file(&format!("{CERTS_DIR}/{name}"));
    let our_ca = read(ca::CAPF_CERT_FILE)
        .with_context(|| format!("reading {}", data.capf_cert().display()))?;
    let our_ca = Some(our_ca.as_slice());
    let retired = payload.entries.iter().any(|entry| {
        matches!(entry, Entry::File { path, data, .. }
            if path.starts_with(&format!("{CERTS_DIR}/{}/", ca::RETIRED_DIR))
                && Some(data.as_slice()) == our_ca)
    });
    if our_ca == theirs(rollover::NEXT_CERT_FILE) {
        bail!(
            "the file is behind this node: its node has staged the CAPF CA this node already \
             uses. Export from this node and sync the others from it instead"
        );
    }
    let same_ca = our_ca == theirs(ca::CAPF_CERT_FILE);
    if !same_ca && our_ca != theirs(rollover::PREVIOUS_CERT_FILE) && !retired {
        bail!(
            "the file holds another cluster's CAPF CA (this node's CA is neither its CA nor \
             one it rolled over from): `capf node sync` never replaces a node's identity \
             with an unrelated one"
        );
    }
    if same_ca {
        if let Some(staged) = read(rollover::NEXT_CERT_FILE) {
            if theirs(rollover::NEXT_CERT_FILE) != Some(staged.as_slice()) {
                bail!(
                    "this node has a staged CAPF CA ({}) that the file lacks: the file is \
                     behind this node. Export from this node and sync the others from it",
                    rollover::NEXT_CERT_FILE
                );
            }
        }
        let not_before = |pem: &[u8]| {
            rustls_pki_types::CertificateDer::from_pem_slice(pem)
                .ok()
                .and_then(|der| ca::cert_info(&der).ok())
                .map(|info| info.not_before)
        };
        let ours = read(ca::TFTP_CERT_FILE).and_then(|pem| not_before(&pem));
        let file = theirs(ca::TFTP_CERT_FILE).and_then(not_before);
        if let (Some(ours), Some(file)) = (ours, file) {
            if file < ours {
                bail!(
                    "the file's signer is older than this node's: the file is behind this \
                     node. Export from this node and sync the others from it"
                );
            }
        }
    }
    Ok(())
}

/// Every file under `certs` as `export` reads it (temporary files of interrupted
/// writes left out).
fn collect_certs(certs: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    collect_dir(certs, CERTS_DIR, &mut 0, &mut entries)?;
    Ok(entries)
}

/// The SHA-256 of every file of `entries` under certs/, by path relative to it: what
/// changes, without holding a second copy of the keys.
fn certs_digests(entries: &[Entry]) -> BTreeMap<String, [u8; 32]> {
    use sha2::{Digest, Sha256};
    entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::File { path, data, .. } => path
                .strip_prefix(&format!("{CERTS_DIR}/"))
                .map(|rel| (rel.to_owned(), Sha256::digest(data).into())),
            Entry::Dir { .. } => None,
        })
        .collect()
}

/// Puts the file's certs/ in place of this node's: written into a private staging
/// directory, loaded once, then swapped in with two renames; the old certs/ is then
/// removed (it holds private keys the node no longer uses).
fn replace_certs(data: &DataDir, payload: &Payload) -> Result<()> {
    let root = data.root();
    let mut suffix = [0u8; 6];
    rand::fill(&mut suffix);
    let suffix = hex::encode(suffix);
    let staging = DataDir::new(root.join(format!(".sync-{suffix}")));
    private::create_private_dir(staging.root())?;
    let result = (|| {
        write_entries(staging.root(), payload)?;
        let settings = Settings::load(data)?;
        ca::Ca::load(&staging.certs(), settings.lsc_validity_days)?;
        let old = root.join(format!(".certs-replaced-{suffix}"));
        std::fs::rename(data.certs(), &old)
            .with_context(|| format!("moving {} aside", data.certs().display()))?;
        if let Err(e) = std::fs::rename(staging.certs(), data.certs()) {
            let _ = std::fs::rename(&old, data.certs());
            return Err(e).context("moving the new certs/ into place");
        }
        std::fs::File::open(root)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", root.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
    })();
    let _ = std::fs::remove_dir_all(staging.root());
    result
}

/// The exported settings, with this node's name and the cluster's store.
fn joined_settings(payload: &Payload, node_name: Option<String>, store: &str) -> Result<Settings> {
    let text = payload.file(SETTINGS_PATH).unwrap_or_default();
    let text = std::str::from_utf8(text).context("capf.toml in the file is not UTF-8")?;
    let mut settings: Settings =
        toml::from_str(text).context("capf.toml in the file is not valid for this capf")?;
    settings.node_name = node_name.unwrap_or_else(|| Settings::default().node_name);
    settings.store = store.to_owned();
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("the joined settings are invalid: {e}"))?;
    Ok(settings)
}

/// The name of some entry of `dir`, if it exists and has any.
fn first_entry(dir: &Path) -> Result<Option<String>> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries
            .next()
            .transpose()
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.file_name().to_string_lossy().into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
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

/// Writes the payload into the new data directory `data`, whose root is missing or
/// empty: first into a private staging directory inside it, then renamed into place,
/// `capf.toml` and then `certs/` (its CAPF certificate is what makes a data directory
/// initialised). Returns the paths written.
fn write(data: &DataDir, payload: &Payload, settings: &Settings) -> Result<Vec<String>> {
    let root = data.root();
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    private::check_ancestors(parent)?;
    private::ensure_private_dir(root)?;
    let mut suffix = [0u8; 6];
    rand::fill(&mut suffix);
    let staging = DataDir::new(root.join(format!(".join-{}", hex::encode(suffix))));
    private::create_private_dir(staging.root())?;
    let result = (|| {
        let written = write_entries(staging.root(), payload)?;
        settings.save(&staging)?;
        // What `capf serve` will load, loaded once before it is in place.
        ca::Ca::load(&staging.certs(), settings.lsc_validity_days)?;
        commit(data, &staging)?;
        Ok(written)
    })();
    // Best effort: the staging directory is ours alone, and empty once committed.
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

fn commit(data: &DataDir, staging: &DataDir) -> Result<()> {
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))
    };
    rename(&staging.settings_file(), &data.settings_file())?;
    if let Err(e) = rename(&staging.certs(), &data.certs()) {
        let _ = std::fs::remove_file(data.settings_file());
        return Err(e);
    }
    // What `capf init` creates besides; the store is the cluster's.
    for dir in [data.trust(), data.tftp()] {
        private::create_private_dir_if_missing(&dir)?;
    }
    std::fs::File::open(data.root())
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", data.root().display()))
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
