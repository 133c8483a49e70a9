//! `capf node join`: a new node's data directory set up from an export, with its own
//! `node_name` and the cluster's store.

use super::*;

pub(super) fn join(data: &DataDir, args: JoinArgs) -> Result<ExitCode> {
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
    let payload = read_payload(&args.file, &args.passphrase)?;
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
    let (written, ()) = staged(
        root,
        "join",
        payload,
        settings.lsc_validity_days,
        |staging, _| {
            settings.save(staging)?;
            commit(data, staging)
        },
    )?;
    Ok(written)
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
