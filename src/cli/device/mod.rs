//! `capf device add|set|show|list|remove`: CUCM's phone-page CAPF settings.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::process::ExitCode;

mod bat;
mod bulk;
mod options;
mod select;

pub use bulk::parse_import;
pub use options::ParsedRow;
pub use options::{normalise_name, DeviceOptions};
pub(in crate::cli) use options::{parse_duration, parse_time};

use super::render;
use super::Ctx;
use options::admin_event;
use select::{Selection, SELECTION_IDS};

use crate::model::{DeviceRecord, Operation, UnixTime};
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
        after_help = "Examples:\n  capf device set SEP001122334455 --operation delete\n  capf device set --status failed --operation install --deadline +7d --dry-run\n  capf device set --prefix SEP0011 --auth null\n  capf device set --prefix SEP0011 --operation install --generate-auth-string > strings.csv\n  capf device set --expires-within 30d --operation install\n\nOn a selection, --generate-auth-string gives each device its own string and prints\nthem once, as CSV (name,auth_string)."
    )]
    Set {
        /// The phone to change (or use --all, --status, --prefix, --expires-within).
        #[arg(required_unless_present_any = SELECTION_IDS)]
        name: Option<String>,
        #[command(flatten)]
        options: DeviceOptions,
        /// Clear a brute-force lockout and the failed-attempt count.
        #[arg(long)]
        clear_lockout: bool,
        #[command(flatten)]
        selection: Selection,
        /// Check every device and print each change as before → after; write nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// Remove a phone, or every phone a selection matches, and everything capf holds
    /// for it.
    #[command(
        after_help = "Examples:\n  capf device remove SEP001122334455\n  capf device remove --prefix SEP0011 --dry-run"
    )]
    Remove {
        /// The phone to remove (or use --all, --status, --prefix, --expires-within).
        #[arg(required_unless_present_any = SELECTION_IDS)]
        name: Option<String>,
        #[command(flatten)]
        selection: Selection,
        /// Print what would be removed; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revoke a phone's LSC (a lost or stolen phone): it no longer authenticates to
    /// capf or receives its encrypted configuration, and it is on the CRL (`capf crl`,
    /// GET /capf.crl) for 802.1X, SIP-TLS and VPN verifiers.
    #[command(
        after_help = "Examples:\n  capf device revoke SEP001122334455 --reason key-compromise\n  capf device revoke SEP001122334455"
    )]
    Revoke {
        name: String,
        /// key-compromise (the default: a lost or stolen phone), superseded,
        /// cessation-of-operation, affiliation-changed or unspecified.
        #[arg(long, default_value = "key-compromise")]
        reason: crate::model::RevocationReason,
    },
    /// Add or update many phones from a CSV file; a file with any bad row changes nothing.
    #[command(
        after_help = "The first line must be exactly:\n  name,operation,auth,auth_string,key,encrypted_config,deadline\n(or the same without `,deadline`). A blank field leaves an existing device's value as\nit is; `none` clears a deadline. An empty auth_string with auth `string` generates one.\n\nA CUCM BAT phone export (Export Phones, All or Specific Details) is read as it is,\nrecognised by its Device Name or MAC Address column: its CAPF columns are mapped,\nother columns ignored, and rows of devices that never run CAPF (CTI ports, gateway\nports) skipped and counted (docs/migrating-from-cucm.md).\n\nEvery row is checked before anything is written. Devices are then written 10,000 at a\ntime: if writing stops on a store error (disk full, I/O), or the server is killed, the\ndevices written so far stay. Importing the same file again completes it: rows already\nstored as the file describes them are left alone and counted unchanged (a phone that\nfinished its operation in between is scheduled again: check with --dry-run).\n\nExample:\n  capf device import phones.csv --dry-run && capf device import phones.csv"
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
    #[arg(long, value_parser = options::operation_parser(), ignore_case = true)]
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
            if !status_matches(d, s, now) {
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
            let within = parse_duration("--expires-within", w.trim_start_matches('+'))?;
            let limit = now.saturating_add(within);
            if d.lsc.as_ref().is_none_or(|c| c.not_after > limit) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether the status as `device list` shows it (with "Locked Out until …" for a
/// locked device) contains `text`, ignoring case.
fn status_matches(d: &DeviceRecord, text: &str, now: UnixTime) -> bool {
    render::status_text(d, now)
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
            options.check_command_line()?;
            if options.auth.is_none() && options.auth_string.is_none() {
                options.generate_auth_string = true;
            }
            options.default_deadline = default_deadline(ctx)?;
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
            selection,
            dry_run,
        } => {
            options.check_command_line()?;
            options.default_deadline = default_deadline(ctx)?;
            let request = select::SetRequest {
                name,
                options,
                clear_lockout,
                selection,
                dry_run,
            };
            return select::set(ctx, request);
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
            // Checked before the first device: an empty store reports a bad period too.
            if let Some(w) = &filter.expires_within {
                parse_duration("--expires-within", w.trim_start_matches('+'))?;
            }
            // Streamed: a fleet of a million devices is never in memory at once (the
            // table keeps only its cells, to size the columns).
            let selected = store.devices().filter_map(|d| match d {
                Ok(d) => filter.matches(&d, now).map(|m| m.then_some(d)).transpose(),
                Err(e) => Some(Err(e.into())),
            });
            if json {
                render::json_array(ctx.out, selected.map(|d| d.map(render::DeviceJson)))?;
            } else {
                render::device_table(ctx.out, now, selected)?;
            }
        }
        DeviceCommand::Remove {
            name,
            selection,
            dry_run,
        } => return select::remove(ctx, name, selection, dry_run),
        DeviceCommand::Revoke { name, reason } => return revoke(ctx, &name, reason),
        DeviceCommand::Import { file, dry_run } => {
            let path = ctx.path(&file);
            return bulk::import(ctx, &path, dry_run);
        }
        DeviceCommand::Export { csv: _, json } => return bulk::export(ctx, json),
    }
    Ok(ExitCode::SUCCESS)
}

/// The node's default deadline (capf.toml `default_deadline_days`), in seconds.
fn default_deadline(ctx: &Ctx) -> Result<Option<i64>> {
    Ok(crate::settings::Settings::load(ctx.data)?.default_deadline())
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

/// `device revoke`: the device's LSCs revoked in one transaction with the event.
fn revoke(ctx: &mut Ctx, name: &str, reason: crate::model::RevocationReason) -> Result<ExitCode> {
    let name = normalise_name(name)?;
    let now = ctx.now;
    let revoked = ctx
        .store
        .revoke_device(&name, reason, now, |rec, serials| {
            let mut event = options::admin_event(ctx, &name, "revoke", rec);
            event
                .details
                .insert("serials".into(), serials.to_vec().into());
            event
                .details
                .insert("reason".into(), reason.to_string().into());
            event.result = format!("revoked {} LSC(s)", serials.len());
            event
        })?;
    match revoked {
        None => anyhow::bail!("device {name} not found"),
        Some(serials) if serials.is_empty() => {
            anyhow::bail!("device {name} holds no LSC: nothing to revoke")
        }
        Some(serials) => {
            writeln!(
                ctx.out,
                "revoked {name}: serial {} ({reason}); it is on the CRL from now on",
                serials.join(", ")
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
