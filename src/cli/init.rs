//! `capf init` and `capf cert`.

use anyhow::{Context, Result};
use clap::Args;
use std::process::ExitCode;

use crate::ca::{self, Ca, InitOptions};
use crate::settings::{DataDir, Settings};

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  capf --data /var/lib/capf init --node-name capf.example.net --org 'Example Ltd'"
)]
pub struct InitArgs {
    /// Host name or address phones use to reach this node (published in capfList).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Organisation (O) for the CAPF and TFTP certificates; copied into every LSC.
    #[arg(long)]
    pub org: Option<String>,
    /// Organisational unit (OU) for the CAPF and TFTP certificates.
    #[arg(long)]
    pub org_unit: Option<String>,
    /// Replace an existing CAPF identity. Every enrolled phone then needs a new LSC and
    /// a new ITL: only do this on purpose (`capf ca rollover` replaces the CAPF
    /// certificate without resetting phones).
    #[arg(long, conflicts_with = "upgrade")]
    pub force: bool,
    /// Bring a node initialised by an older capf up to date, keeping every identity:
    /// adds the ITL recovery certificate and the web admin's HTTPS certificate
    /// (`capf serve` does this at start too).
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  capf cert --pem > capf.pem")]
pub struct CertArgs {
    /// Print the certificate as PEM only (for other tools).
    #[arg(long)]
    pub pem: bool,
}

pub fn init(data: &DataDir, args: InitArgs) -> Result<ExitCode> {
    if args.upgrade {
        if !data.is_initialised() {
            anyhow::bail!(
                "{} is not initialised: there is nothing to upgrade (run `capf init`)",
                data.root().display()
            );
        }
        let settings = Settings::load(data)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let upgraded = upgrade(data, &settings, now)?;
        if upgraded.web {
            println!(
                "added the web admin's HTTPS certificate (certs/web.pem, key certs/web.key); \
                 the web admin stays off until `web` is set in capf.toml (docs/web-admin.md)"
            );
        }
        if upgraded.recovery {
            println!(
                "added the ITL recovery certificate (certs/{}). Phones learn it with their \
                 next ITL, which the current signer still signs; `capf signer show` says \
                 when the signer can be rolled over (docs/lifecycle.md)",
                ca::recovery::RECOVERY_CERT_FILE
            );
        } else if !upgraded.web {
            println!("{} is up to date", data.root().display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if data.is_initialised() && !args.force {
        // Usually the operator wants to change a setting or start the node: say how,
        // and keep --force (a new identity no enrolled phone trusts) for last.
        anyhow::bail!(
            "{dir} is already initialised: its CAPF identity exists. To change a node \
             setting (node_name, ports, ...) edit {dir}/capf.toml (`capf --data {dir} \
             settings` shows them) and restart `capf serve`; to run the node, \
             `capf --data {dir} serve`. To replace the CAPF certificate without \
             resetting phones, `capf ca rollover` (docs/lifecycle.md); `init --force` \
             replaces every identity at once, which no enrolled phone trusts",
            dir = data.root().display()
        );
    }
    let mut settings = Settings::load(data)?;
    if let Some(name) = args.node_name {
        settings.node_name = name;
    }
    initialise(data, &settings, args.org, args.org_unit, args.force)?;
    let ca = Ca::load(&data.certs(), settings.lsc_validity_days)?;
    println!("initialised {}", data.root().display());
    print_summary(&ca, &settings);
    Ok(ExitCode::SUCCESS)
}

/// Creates everything `serve` needs in `data` and returns the new store, still open:
/// used by `init` and by `serve` on an empty directory. Handing the store on matters:
/// sled releases its directory lock asynchronously after the last handle is dropped, so
/// closing it here and reopening it at once can find it still locked.
pub fn initialise(
    data: &DataDir,
    settings: &Settings,
    organization: Option<String>,
    org_unit: Option<String>,
    force: bool,
) -> Result<crate::store::Store> {
    // The data directory holds private keys and authentication strings: capf creates
    // it 0700, or takes an existing one only if it is its own and nobody else could
    // have put anything in it.
    let parent = match data.root().parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    super::private::check_ancestors(parent)?;
    super::private::ensure_private_dir(data.root())?;
    super::private::ensure_private_dir(&data.certs())?;
    for dir in [data.trust(), data.tftp()] {
        super::private::create_private_dir_if_missing(&dir)?;
    }
    ca::init_identities(
        &data.certs(),
        &InitOptions {
            node_name: settings.node_name.clone(),
            organization,
            org_unit,
            force,
        },
    )?;
    crate::ca::web::ensure(
        &data.web_cert(),
        &data.web_key(),
        &settings.node_name,
        crate::model::now(),
    )?;
    settings.save(data)?;
    if !settings.store.is_empty() {
        return Ok(crate::store::Store::open_configured(
            &data.db(),
            &settings.store,
        )?);
    }
    super::private::create_private_dir_if_missing(&data.db())?;
    let store = crate::store::Store::open(&data.db())?;
    store.flush()?;
    // sled creates its files with the default mode; they hold authentication strings.
    super::private::restrict_tree(&data.db())?;
    Ok(store)
}

/// What [`upgrade`] added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    /// The ITL recovery certificate.
    pub recovery: bool,
    /// The web admin's HTTPS certificate (new, or capf's own renewed near its end).
    pub web: bool,
}

/// What an older node lacks, added without touching its identities: the ITL recovery
/// certificate (`ca::recovery::ensure`), with the O and OU of the file signer, and the
/// web admin's certificate (`ca::web::ensure`).
pub fn upgrade(data: &DataDir, settings: &Settings, now: i64) -> Result<Upgraded> {
    let (organization, org_unit) = std::fs::read(data.tftp_cert())
        .ok()
        .and_then(|pem| {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(&pem).ok()
        })
        .map(|der| super::ca::subject_names(&der))
        .unwrap_or_default();
    let opts = InitOptions {
        node_name: settings.node_name.clone(),
        organization,
        org_unit,
        force: false,
    };
    let recovery = ca::recovery::ensure(&data.certs(), &opts, now)?;
    let web = ca::web::ensure(&data.web_cert(), &data.web_key(), &settings.node_name, now)?;
    Ok(Upgraded { recovery, web })
}

pub fn cert(data: &DataDir, args: CertArgs) -> Result<ExitCode> {
    let settings = Settings::load(data)?;
    if !data.is_initialised() {
        anyhow::bail!(
            "{} has no CAPF certificate (run `capf init` first)",
            data.root().display()
        );
    }
    let ca = Ca::load(&data.certs(), settings.lsc_validity_days)?;
    if args.pem {
        print!("{}", ca.certificate_pem());
    } else {
        print_summary(&ca, &settings);
        print!("{}", ca.certificate_pem());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(ca: &Ca, settings: &Settings) {
    match ca::cert_info(ca.certificate_der()) {
        Ok(info) => {
            println!("CAPF certificate: {}", info.subject);
            println!("  serial:     {}", info.serial);
            println!("  not after:  {}", super::render::time(info.not_after));
            println!("  SHA-256:    {}", info.sha256);
            println!("  MD5:        {}", info.md5);
        }
        Err(e) => println!("CAPF certificate: unreadable ({e})"),
    }
    println!("node name:    {}", settings.node_name);
    println!("CAPF listens: {}", settings.listen);
}
