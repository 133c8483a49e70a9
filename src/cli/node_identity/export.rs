//! `capf node export`: what a new node needs, sealed into one file under a passphrase.

use super::*;

pub(super) fn export(data: &DataDir, args: ExportArgs) -> Result<ExitCode> {
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
