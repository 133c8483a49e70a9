//! `capf device add|set|show|list|remove`: CUCM's phone-page CAPF settings.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::process::ExitCode;

mod bulk;
mod options;

pub use bulk::{parse_import, ParsedRow};
pub use options::{normalise_name, parse_deadline, DeviceOptions};

use super::render;
use super::Ctx;
use options::{admin_event, generate_auth_string};

/// `device set` on a selection writes this many devices per store transaction, as the
/// import does: bounded memory, and phones enrolling meanwhile wait briefly at most.
const SET_BATCH: usize = 10_000;
use crate::model::{DeviceRecord, Event, Operation, UnixTime};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Add a phone and (optionally) schedule a certificate operation for it. Without
    /// --auth (or a string) the phone authenticates with a generated authentication
    /// string, printed once: null authentication must be asked for.
    #[command(
        after_help = "Examples:\n  capf device add SEP001122334455 --operation install                 # prints its authentication string\n  capf device add SEP001122334455 --operation install --auth null     # anyone who knows the name may enroll\n  capf device add SEP001122334466 --operation install --auth string --generate-auth-string --key ec-preferred:p256,rsa:2048"
    )]
    Add {
        name: String,
        #[command(flatten)]
        options: DeviceOptions,
        /// Print the device as `device show --json` does, plus `generated_auth_string`.
        #[arg(long)]
        json: bool,
    },
    /// Change CAPF settings of one phone, or of every phone a selection matches (like
    /// BAT's "update phones by query"). Only the options given change.
    #[command(
        after_help = "Examples:\n  capf device set SEP001122334455 --operation delete\n  capf device set --status failed --operation install --deadline +7d\n  capf device set --prefix SEP0011 --auth null"
    )]
    Set {
        /// The phone to change (or use --all, --status, --prefix).
        #[arg(required_unless_present_any = ["all", "select_status", "prefix"])]
        name: Option<String>,
        #[command(flatten)]
        options: DeviceOptions,
        /// Clear a brute-force lockout and the failed-attempt count.
        #[arg(long)]
        clear_lockout: bool,
        /// Every phone.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Phones whose status contains this text (e.g. failed, pending, "upgrade success").
        #[arg(long = "status", id = "select_status", conflicts_with = "name")]
        status: Option<String>,
        /// Phones whose name starts with this prefix.
        #[arg(long, conflicts_with = "name")]
        prefix: Option<String>,
    },
    /// Show one phone: settings, status, enrolled certificates.
    #[command(after_help = "Example:\n  capf device show SEP001122334455 --json")]
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List phones as a table, or as JSON for scripts.
    #[command(
        after_help = "Examples:\n  capf device list --status failed\n  capf device list --expires-within 30d --json | jq -r '.[].name'"
    )]
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: ListFilter,
    },
    /// Remove a phone and everything capf holds for it.
    #[command(after_help = "Example:\n  capf device remove SEP001122334455")]
    Remove { name: String },
    /// Add or update many phones from a CSV file; a file with any bad row changes nothing.
    #[command(
        after_help = "The first line must be exactly:\n  name,operation,auth,auth_string,key,encrypted_config\nAn empty auth_string with auth `string` generates one.\n\nEvery row is checked before anything is written. Devices are then written 10,000 at a\ntime: if writing stops on a store error (disk full, I/O), or the server is killed, the\ndevices written so far stay. Importing the same file again completes it: rows already\nstored as the file describes them are left alone and counted unchanged (a phone that\nfinished its operation in between is scheduled again: check with --dry-run).\n\nExample:\n  capf device import phones.csv --dry-run && capf device import phones.csv"
    )]
    Import {
        file: std::path::PathBuf,
        /// Validate and print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write every phone's settings in the import format (CSV) or as JSON.
    #[command(after_help = "Example:\n  capf device export --csv > phones.csv")]
    Export {
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Filters for `device list`.
#[derive(Args, Debug, Default)]
pub struct ListFilter {
    /// Status contains this text (case-insensitive): pending, failed, success, ...
    #[arg(long)]
    pub status: Option<String>,
    /// Scheduled operation.
    #[arg(long)]
    pub operation: Option<Operation>,
    /// Key type of the enrolled LSC, or of the key order when none: rsa or ec.
    #[arg(long)]
    pub key: Option<String>,
    /// Name starts with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// LSC expires within this period (e.g. 30d, 12h).
    #[arg(long)]
    pub expires_within: Option<String>,
}

impl ListFilter {
    fn matches(&self, d: &DeviceRecord, now: UnixTime) -> Result<bool> {
        if let Some(s) = &self.status {
            if !status_matches(d, s) {
                return Ok(false);
            }
        }
        if self.operation.is_some_and(|o| o != d.operation) {
            return Ok(false);
        }
        if let Some(p) = &self.prefix {
            if !d.name.starts_with(p.as_str()) {
                return Ok(false);
            }
        }
        if let Some(k) = &self.key {
            let alg = match d.lsc.as_ref().map(|c| c.key) {
                Some(spec) => spec.to_string(),
                None => d.key_order.to_string(),
            };
            if !alg.starts_with(&k.to_ascii_lowercase()) {
                return Ok(false);
            }
        }
        if let Some(w) = &self.expires_within {
            let limit = parse_deadline(&format!("+{}", w.trim_start_matches('+')), now)?;
            if d.lsc.as_ref().is_none_or(|c| c.not_after > limit) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn status_matches(d: &DeviceRecord, text: &str) -> bool {
    d.status
        .to_string()
        .to_ascii_lowercase()
        .contains(&text.to_ascii_lowercase())
}

pub fn run(ctx: &mut Ctx, cmd: DeviceCommand) -> Result<ExitCode> {
    let store = ctx.store;
    let now = ctx.now;
    match cmd {
        DeviceCommand::Add {
            name,
            mut options,
            json,
        } => {
            let name = normalise_name(&name)?;
            // Null authentication lets anyone who knows the device name enroll as that
            // phone: it is never the default. A device added without a mode gets a
            // generated string (whatever its operation, so that scheduling an install
            // later does not fall back to null either).
            if options.auth.is_none() && options.auth_string.is_none() {
                options.generate_auth_string = true;
            }
            let mut rec = DeviceRecord::new(&name);
            let generated = options.apply(&mut rec, now)?;
            let event = admin_event(ctx, &name, "device-add", &rec);
            store.add_device(&rec, event)?;
            if json {
                serde_json::to_writer_pretty(
                    &mut *ctx.out,
                    &render::AddedJson {
                        device: render::DeviceJson(rec),
                        generated_auth_string: generated,
                    },
                )?;
                writeln!(ctx.out)?;
            } else {
                report(ctx, &rec, generated)?;
            }
        }
        DeviceCommand::Set {
            name,
            mut options,
            clear_lockout,
            all,
            status,
            prefix,
        } => {
            if options.generate_auth_string && name.is_none() {
                bail!("--generate-auth-string changes one device at a time (use device import for many)");
            }
            // Drawn once, so that the string printed is the one stored even if the
            // store re-runs the update.
            let generated = options.generate_auth_string.then(generate_auth_string);
            if let Some(s) = &generated {
                options.auth_string = Some(s.clone());
                options.generate_auth_string = false;
            }
            let change = |rec: &mut DeviceRecord| -> Result<()> {
                options.apply(rec, now)?;
                if clear_lockout {
                    rec.failed_auth = 0;
                    rec.locked_until = None;
                }
                Ok(())
            };
            let selected = |rec: &DeviceRecord| {
                name.is_some()
                    || all
                    || status.as_deref().is_some_and(|s| status_matches(rec, s))
                    || prefix.as_deref().is_some_and(|p| rec.name.starts_with(p))
            };
            // The names alone are kept (a fleet of a million is never in memory), and
            // every device is checked before any is changed.
            let mut names = Vec::new();
            let mut refused = Vec::new();
            let mut check = |mut rec: DeviceRecord| {
                if let Err(e) = change(&mut rec) {
                    refused.push(format!("{}: {e}", rec.name));
                }
                names.push(rec.name);
            };
            match &name {
                Some(name) => {
                    let name = normalise_name(name)?;
                    let Some(rec) = store.get_device(&name)? else {
                        bail!("device {name} not found (add it with `capf device add {name}`)");
                    };
                    check(rec);
                }
                None => {
                    for rec in store.devices() {
                        let rec = rec?;
                        if selected(&rec) {
                            check(rec);
                        }
                    }
                }
            }
            if names.is_empty() {
                bail!("no device matches the selection");
            }
            if let Some(first) = refused.first() {
                bail!(
                    "nothing changed: {} of {} devices cannot take this change; first: {first}",
                    refused.len(),
                    names.len()
                );
            }
            let single = name.is_some();
            let mut changed = 0;
            for batch in names.chunks(SET_BATCH) {
                let updated = store
                    .update_devices(batch, |rec| {
                        // A device whose status changed since the scan may no longer
                        // be one the operator selected.
                        if !selected(rec) {
                            return Ok(None);
                        }
                        change(rec).map_err(|e| e.to_string())?;
                        Ok(Some(admin_event(ctx, &rec.name, "device-set", rec)))
                    })
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{e} (stopped after changing {changed} of {} devices)",
                            names.len()
                        )
                    })?;
                for rec in updated.into_iter().flatten() {
                    changed += 1;
                    if single {
                        report(ctx, &rec, generated.clone())?;
                    } else {
                        writeln!(ctx.out, "{:<20} {}", rec.name, rec.status)?;
                    }
                }
            }
            if changed == 0 {
                bail!("no device was changed: the selection was removed or changed meanwhile");
            }
        }
        DeviceCommand::Show { name, json } => {
            let name = normalise_name(&name)?;
            let rec = get(store, &name)?;
            if json {
                serde_json::to_writer_pretty(&mut *ctx.out, &render::DeviceJson(rec))?;
                writeln!(ctx.out)?;
            } else {
                write!(ctx.out, "{}", render::device_text(&rec))?;
            }
        }
        DeviceCommand::List { json, filter } => {
            // Streamed: a fleet of a million devices is never in memory at once (the
            // table keeps only its cells, to size the columns).
            let selected = store.devices().filter_map(|d| match d {
                Ok(d) => filter.matches(&d, now).map(|m| m.then_some(d)).transpose(),
                Err(e) => Some(Err(e.into())),
            });
            if json {
                render::json_array(ctx.out, selected.map(|d| d.map(render::DeviceJson)))?;
            } else {
                render::device_table(ctx.out, selected)?;
            }
        }
        DeviceCommand::Remove { name } => {
            let name = normalise_name(&name)?;
            let event = Event {
                id: 0,
                time: now,
                actor: ctx.actor.clone(),
                device: Some(name.clone()),
                action: "device-remove".into(),
                result: "Removed".into(),
                details: Default::default(),
            };
            if !store.remove_device(&name, event)? {
                bail!("device {name} not found");
            }
            writeln!(ctx.out, "removed {name}")?;
        }
        DeviceCommand::Import { file, dry_run } => {
            let path = ctx.path(&file);
            return bulk::import(ctx, &path, dry_run);
        }
        DeviceCommand::Export { csv: _, json } => return bulk::export(ctx, json),
    }
    Ok(ExitCode::SUCCESS)
}

fn get(store: &Store, name: &str) -> Result<DeviceRecord> {
    store
        .get_device(name)?
        .ok_or_else(|| anyhow::anyhow!("device {name} not found"))
}

fn report(ctx: &mut Ctx, rec: &DeviceRecord, generated: Option<String>) -> Result<()> {
    if let Some(s) = generated {
        // Printed once; the operator hands it to the phone's user.
        writeln!(ctx.out, "authentication string for {}: {s}", rec.name)?;
    }
    write!(ctx.out, "{}", render::device_text(rec))?;
    Ok(())
}
