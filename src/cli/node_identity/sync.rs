//! `capf node sync`: an initialised node's `certs/` brought forward to those of the
//! node where a CAPF CA or signer rollover step was made; its `capf.toml` stays.

use super::*;

pub(super) fn sync(data: &DataDir, args: SyncArgs) -> Result<ExitCode> {
    if !data.is_initialised() {
        bail!(
            "{} holds no node yet: `capf node join` sets a new node up from the file",
            data.root().display()
        );
    }
    let payload = read_payload(&args.file, &args.passphrase)?;
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
    let lsc_validity_days = Settings::load(data)?.lsc_validity_days;
    staged(
        root,
        "sync",
        payload,
        lsc_validity_days,
        |staging, suffix| {
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
        },
    )?;
    Ok(())
}
