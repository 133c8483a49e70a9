//! `capf device add|set|show|list|remove`: CUCM's phone-page CAPF settings.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::process::ExitCode;

use super::render;
use super::Ctx;

/// `device set` on a selection writes this many devices per store transaction, as the
/// import does: bounded memory, and phones enrolling meanwhile wait briefly at most.
const SET_BATCH: usize = 10_000;
use crate::model::{AuthMode, DeviceRecord, Event, KeyOrder, Operation, OperationStatus, UnixTime};
use crate::protocol::valid_device_name;
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

/// The CAPF settings of CUCM's phone page.
#[derive(Args, Debug, Default)]
pub struct DeviceOptions {
    /// Certificate operation: install (install/upgrade), delete, troubleshoot, none.
    #[arg(long)]
    pub operation: Option<Operation>,
    /// Authentication mode: null (null string), string (authentication string),
    /// lsc / mic (existing certificate, LSC or MIC precedence). `device add` without
    /// it (or a string) generates an authentication string; null must be asked for.
    #[arg(long)]
    pub auth: Option<AuthMode>,
    /// Authentication string the user types on the phone (4–10 digits).
    #[arg(long, conflicts_with = "generate_auth_string")]
    pub auth_string: Option<String>,
    /// Generate a random authentication string and print it once.
    #[arg(long)]
    pub generate_auth_string: bool,
    /// Key order: rsa:2048, ec:p256, or ec-preferred:p256,rsa:2048.
    #[arg(long)]
    pub key: Option<KeyOrder>,
    /// Operation completes by: RFC 3339 (2026-12-31T17:00:00Z) or relative (+7d, +12h).
    #[arg(long)]
    pub deadline: Option<String>,
    /// Serve this phone its configuration encrypted to its key (needs an RSA key).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub encrypted_config: Option<bool>,
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
            return super::bulk::import(ctx, &path, dry_run);
        }
        DeviceCommand::Export { csv: _, json } => return super::bulk::export(ctx, json),
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

/// Device names as phones send them: `SEP` names upper-cased (the MAC is hex and
/// phones send it in upper case); anything else must already be a valid name (R8).
pub fn normalise_name(name: &str) -> Result<String> {
    let name = name.trim();
    // Compared as bytes: slicing the str at 3 panicked when a multi-byte character
    // straddled that offset (found by fuzzing the import file).
    let is_sep = name.len() == 15
        && name
            .as_bytes()
            .split_at_checked(3)
            .is_some_and(|(prefix, mac)| {
                prefix.eq_ignore_ascii_case(b"SEP") && mac.iter().all(u8::is_ascii_hexdigit)
            });
    let name = if is_sep {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    };
    if !valid_device_name(&name) {
        bail!("invalid device name '{name}' (1–64 characters of A-Z a-z 0-9 _ . -)");
    }
    Ok(name)
}

impl DeviceOptions {
    /// Applies the options to `rec`; returns a generated authentication string.
    pub fn apply(&self, rec: &mut DeviceRecord, now: UnixTime) -> Result<Option<String>> {
        let mut generated = None;
        if let Some(op) = self.operation {
            rec.operation = op;
            rec.status = match op {
                Operation::None => rec.status.clone(),
                _ => OperationStatus::Pending,
            };
        }
        if let Some(s) = &self.auth_string {
            validate_auth_string(s)?;
            rec.auth_string = Some(s.clone());
        }
        if self.generate_auth_string {
            let s = generate_auth_string();
            rec.auth_string = Some(s.clone());
            generated = Some(s);
        }
        match self.auth {
            Some(mode) => rec.auth = mode,
            // Giving a string implies authenticating with it.
            None if self.auth_string.is_some() || self.generate_auth_string => {
                rec.auth = AuthMode::String
            }
            None => {}
        }
        if rec.auth == AuthMode::String && rec.auth_string.is_none() {
            bail!("--auth string needs --auth-string DIGITS or --generate-auth-string");
        }
        if let Some(k) = self.key {
            rec.key_order = k;
        }
        if let Some(d) = &self.deadline {
            rec.deadline = Some(parse_deadline(d, now)?);
        }
        if let Some(e) = self.encrypted_config {
            rec.encrypted_config = e;
        }
        if rec.encrypted_config && !matches!(rec.key_order, KeyOrder::Rsa { .. }) {
            // config-files.md E5: encrypted files can only be wrapped to RSA keys.
            bail!(
                "encrypted config needs an RSA key, but the key order is {} (use --key rsa:2048)",
                rec.key_order
            );
        }
        Ok(generated)
    }
}

/// CUCM's rule: 4–10 digits.
pub(super) fn validate_auth_string(s: &str) -> Result<()> {
    if !(4..=10).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        bail!("invalid --auth-string: must be 4–10 digits");
    }
    Ok(())
}

pub(super) fn generate_auth_string() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// RFC 3339, or `+N` followed by d, h or m.
pub fn parse_deadline(s: &str, now: UnixTime) -> Result<UnixTime> {
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --deadline '{s}' (e.g. +7d, +12h, +30m)"))?;
        let secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            _ => bail!("invalid --deadline '{s}' (unit must be d, h or m)"),
        };
        return Ok(now.saturating_add(n.saturating_mul(secs)));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("invalid --deadline '{s}': {e} (expected RFC 3339 or +7d)"))?;
    Ok(t.unix_timestamp())
}

pub(super) fn admin_event(ctx: &Ctx, name: &str, action: &str, rec: &DeviceRecord) -> Event {
    let mut details = serde_json::Map::new();
    details.insert("operation".into(), rec.operation.to_string().into());
    details.insert("auth".into(), rec.auth.to_string().into());
    details.insert("key".into(), rec.key_order.to_string().into());
    details.insert("encrypted_config".into(), rec.encrypted_config.into());
    if let Some(d) = rec.deadline {
        details.insert("deadline".into(), render::time(d).into());
    }
    Event {
        id: 0,
        time: ctx.now,
        actor: ctx.actor.clone(),
        device: Some(name.to_string()),
        action: action.into(),
        result: rec.status.to_string(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_validated() {
        assert_eq!(
            normalise_name("sep00112233aabb").unwrap(),
            "SEP00112233AABB"
        );
        assert_eq!(normalise_name("CSFjdoe").unwrap(), "CSFjdoe");
        assert!(normalise_name("../etc").is_err());
        assert!(normalise_name("").is_err());
    }

    #[test]
    fn deadlines_parse_absolute_and_relative() {
        assert_eq!(parse_deadline("+7d", 1000).unwrap(), 1000 + 7 * 86_400);
        assert_eq!(parse_deadline("+2h", 0).unwrap(), 7200);
        assert_eq!(
            parse_deadline("2026-01-01T00:00:00Z", 0).unwrap(),
            1_767_225_600
        );
        assert!(parse_deadline("+7w", 0).is_err());
        assert!(parse_deadline("tomorrow", 0).is_err());
    }

    #[test]
    fn options_enforce_cucm_rules() {
        let mut rec = DeviceRecord::new("SEP001122334455");
        let opts = DeviceOptions {
            auth: Some(AuthMode::String),
            ..Default::default()
        };
        assert!(
            opts.apply(&mut rec, 0).is_err(),
            "string mode without a string"
        );

        let opts = DeviceOptions {
            auth_string: Some("12a4".into()),
            ..Default::default()
        };
        assert!(opts.apply(&mut rec, 0).is_err(), "non-digit string");

        let opts = DeviceOptions {
            generate_auth_string: true,
            operation: Some(Operation::Install),
            ..Default::default()
        };
        let s = opts.apply(&mut rec, 0).unwrap().unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(rec.auth, AuthMode::String);
        assert_eq!(rec.status, OperationStatus::Pending);

        let opts = DeviceOptions {
            key: Some("ec:p256".parse().unwrap()),
            encrypted_config: Some(true),
            ..Default::default()
        };
        assert!(opts.apply(&mut rec, 0).is_err(), "encryption needs RSA");
    }
}
