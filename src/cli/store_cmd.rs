//! `capf store migrate --to TARGET`: moves a node's store between the embedded sled
//! store and PostgreSQL (docs/cluster.md "Moving between stores").
//!
//! The source is the store the data directory is configured with (`store` in
//! capf.toml: empty for its sled store, or a PostgreSQL URL). Nothing may serve from it
//! meanwhile: sled's own lock says so for sled, the nodes' presence leases for
//! PostgreSQL. The copy is then verified record by record: both sides' counts and
//! digests must agree (`store/migrate.rs`), and a source that changed on the way is
//! reported, not passed over.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::private;
use crate::settings::{DataDir, Settings};
use crate::store::migrate::{self, Inventory};
use crate::store::presence;
use crate::store::{Store, StoreError};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy every record of this node's store into another store (sled to
    /// PostgreSQL, or back), verified by counts and a digest of every record.
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  capf store migrate --to postgres://capf@db.example.net/capf\n  capf store migrate --to capf-data/db.sled     # from PostgreSQL back to sled\n\nStop `capf serve` on every node that uses the source first. The destination must be\nempty: a PostgreSQL database without capf records, or a directory that does not\nexist yet. Then set `store` in capf.toml to the destination (empty for the data\ndirectory's own db) and start the nodes again."
)]
pub struct MigrateArgs {
    /// Where to copy the records: a postgres:// URL, or a directory for a new sled
    /// store.
    #[arg(long, value_name = "URL|DIR")]
    pub to: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(data: &DataDir, cmd: StoreCommand) -> Result<ExitCode> {
    match cmd {
        StoreCommand::Migrate(args) => migrate_store(data, args),
    }
}

fn is_postgres_url(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

fn migrate_store(data: &DataDir, args: MigrateArgs) -> Result<ExitCode> {
    let settings = Settings::load(data)?;
    let source = open_source(data, &settings)?;
    let (destination, created) = open_destination(data, &settings, &args.to)?;
    let copied = copy_verified(&source, &destination);
    let copied = match (copied, created) {
        (Ok(copied), _) => copied,
        // A sled directory made for this copy and left half-filled is of no use to
        // anyone, and holds authentication strings: it goes.
        (Err(e), Some(dir)) => {
            drop(destination);
            return Err(match std::fs::remove_dir_all(&dir) {
                Ok(()) => e.context(format!("{} was removed again", dir.display())),
                Err(rm) => e.context(format!("remove {} by hand ({rm})", dir.display())),
            });
        }
        (Err(e), None) => return Err(e),
    };
    print_report(data, &source, &destination, &args, &copied)
}

/// Copies `source` into `destination` and checks the copy (and, for a shared source,
/// that the source did not change meanwhile). Returns what was copied.
fn copy_verified(source: &Store, destination: &Store) -> Result<Inventory> {
    refuse_if_served(destination, "destination")?;
    // From here no node starts on either store (`node::refuse_during_migration`).
    let mut marks = [
        MigrationMark::place(source)?,
        MigrationMark::place(destination)?,
    ];

    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let copied = migrate::copy(source, destination, |n| {
        for mark in marks.iter_mut().flatten() {
            mark.renew();
        }
        if progress {
            eprint!("\rcopied {n} records");
        }
    })
    .context("copying the records")?;
    if progress {
        eprintln!();
    }
    let written = migrate::inventory(destination).context("reading the destination back")?;
    if written != copied {
        bail!(
            "the destination does not hold what was read from the source \
             (source {}, destination {}): do not use it; empty it and run the migration again",
            summary(&copied),
            summary(&written)
        );
    }
    // sled's lock kept the source as it was; a PostgreSQL source is read once more,
    // so that a node started meanwhile cannot have changed it unnoticed.
    if source.cluster().is_some() {
        for mark in marks.iter_mut().flatten() {
            mark.renew();
        }
        refuse_if_served(source, "source")?;
        let now = migrate::inventory(source).context("reading the source again")?;
        if now != copied {
            bail!(
                "the source changed while it was copied (a node served from it?): \
                 empty the destination and run the migration again with every node stopped"
            );
        }
    }
    Ok(copied)
}

fn print_report(
    data: &DataDir,
    source: &Store,
    destination: &Store,
    args: &MigrateArgs,
    copied: &Inventory,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "source": { "kind": source.kind(), "location": source.location() },
            "destination": { "kind": destination.kind(), "location": destination.location() },
            "records": copied,
            "verified": true,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(
            out,
            "copied {} records from {} {} to {} {}",
            copied.records(),
            source.kind(),
            source.location(),
            destination.kind(),
            destination.location()
        )?;
        for (kind, count) in migrate::KINDS.iter().zip(counts(copied)) {
            writeln!(out, "  {kind:<13} {count}")?;
        }
        writeln!(
            out,
            "verified: the destination holds the same records (sha256 {})",
            copied.sha256
        )?;
        let store_setting = if destination.kind() == "sled" {
            format!("empty (and move {} to {})", args.to, data.db().display())
        } else {
            format!("\"{}\" (with its password)", destination.location())
        };
        writeln!(
            out,
            "next: set store in {} to {store_setting}, then start capf serve",
            data.settings_file().display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn counts(inventory: &Inventory) -> [u64; 5] {
    [
        inventory.devices,
        inventory.events,
        inventory.serials,
        inventory.lsc_keys,
        inventory.web_accounts,
    ]
}

fn summary(inventory: &Inventory) -> String {
    let counts = counts(inventory)
        .iter()
        .zip(migrate::KINDS)
        .map(|(n, kind)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{counts}, sha256 {}", &inventory.sha256[..16])
}

/// The store this data directory is configured with, as long as no node serves from it.
fn open_source(data: &DataDir, settings: &Settings) -> Result<Store> {
    if settings.store.is_empty() && !data.db().exists() {
        bail!(
            "no capf store in {} (nothing to migrate; pass --data for another data directory)",
            data.root().display()
        );
    }
    let source = match Store::open_configured(&data.db(), &settings.store) {
        Err(StoreError::Locked(_)) => bail!(
            "a node serves from {} (capf serve holds the store): stop it first, the \
             migration needs a store that does not change while it is copied",
            data.db().display()
        ),
        other => other.context("opening the source store")?,
    };
    refuse_if_served(&source, "source")?;
    Ok(source)
}

/// The empty store to copy into, and the directory made for it (sled).
fn open_destination(
    data: &DataDir,
    settings: &Settings,
    target: &str,
) -> Result<(Store, Option<PathBuf>)> {
    if is_postgres_url(target) {
        if target == settings.store {
            bail!("the destination is the store this node already uses");
        }
        let store = Store::open_configured(Path::new(""), target).with_context(|| {
            format!(
                "opening the destination {}",
                crate::settings::redact_store_url(target)
            )
        })?;
        return Ok((store, None));
    }
    if target.contains("://") {
        bail!("--to takes a postgres:// URL or a directory for a sled store, not {target:?}");
    }
    let dir = PathBuf::from(target);
    if settings.store.is_empty() && same_path(&dir, &data.db()) {
        bail!("the destination is the store this node already uses");
    }
    private::create_new_private_dir(&dir, "the destination of a migration to sled")?;
    let store = Store::open(&dir).context("creating the destination store")?;
    // sled creates its files with the default mode; they hold authentication strings.
    private::restrict_tree(&dir)?;
    Ok((store, Some(dir)))
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A migration's row in a shared store's `nodes` (`store/presence.rs`), kept while it
/// copies and removed when it ends, whatever the outcome.
struct MigrationMark<'a> {
    store: &'a Store,
    holder: String,
    renewed: std::time::Instant,
}

impl<'a> MigrationMark<'a> {
    /// Marks `store` if it is shared; `None` for sled, which its lock guards.
    fn place(store: &'a Store) -> Result<Option<MigrationMark<'a>>> {
        let Some(cluster) = store.cluster() else {
            return Ok(None);
        };
        let holder = crate::store::holder(presence::MIGRATION);
        let ttl = presence::TTL;
        if !cluster.announce(presence::MIGRATION, &holder, presence::MIGRATION, ttl)? {
            bail!(
                "another `capf store migrate` is copying {} now",
                store.location()
            );
        }
        Ok(Some(MigrationMark {
            store,
            holder,
            renewed: std::time::Instant::now(),
        }))
    }

    /// Renews the row when a third of its lifetime has passed.
    fn renew(&mut self) {
        if self.renewed.elapsed() < presence::TTL / 3 {
            return;
        }
        if let Some(cluster) = self.store.cluster() {
            let _ = cluster.announce(
                presence::MIGRATION,
                &self.holder,
                presence::MIGRATION,
                presence::TTL,
            );
        }
        self.renewed = std::time::Instant::now();
    }
}

impl Drop for MigrationMark<'_> {
    fn drop(&mut self) {
        if let Some(cluster) = self.store.cluster() {
            let _ = cluster.withdraw(presence::MIGRATION, &self.holder);
        }
    }
}

/// Refuses a shared store that some node serves from now (this migration's own row
/// aside).
fn refuse_if_served(store: &Store, which: &str) -> Result<()> {
    let Some(cluster) = store.cluster() else {
        return Ok(());
    };
    let nodes: Vec<String> = cluster
        .live_nodes()?
        .into_iter()
        .filter(|n| n.identity != presence::MIGRATION)
        .map(|n| n.name)
        .collect();
    if !nodes.is_empty() {
        bail!(
            "nodes serve from the {which} store {} now ({}): stop capf serve on every one \
             of them first (a node that died counts for 30 s)",
            store.location(),
            nodes.join(", ")
        );
    }
    Ok(())
}
