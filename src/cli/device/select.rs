//! `capf device set` and `capf device remove`, on one device or on a selection (like
//! BAT's "update phones by query"): which devices a selection takes, the check of
//! every device before any is written, `--dry-run` (each change as before → after),
//! and one authentication string per device for `--generate-auth-string`.

use anyhow::{bail, Result};
use clap::Args;
use std::collections::HashMap;
use std::process::ExitCode;

use super::options::{admin_event, changes, generate_auth_string, normalise_name, parse_duration};
use super::{report, DeviceOptions};
use crate::cli::{render, Ctx};
use crate::model::{DeviceRecord, Event, UnixTime};

/// A selection writes this many devices per store transaction, as the import does:
/// bounded memory, and phones enrolling meanwhile wait briefly at most.
const SET_BATCH: usize = 10_000;

/// Which devices a command takes when it is not given one name. Every criterion given
/// must match (they narrow, as `device list`'s filters do).
#[derive(Args, Debug, Default, Clone)]
pub struct Selection {
    /// Every phone.
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// Phones whose status contains this text (e.g. failed, pending, "upgrade
    /// success", locked).
    #[arg(long = "status", id = "select_status", conflicts_with = "name")]
    pub status: Option<String>,
    /// Phones whose name starts with this prefix.
    #[arg(long, conflicts_with = "name")]
    pub prefix: Option<String>,
    /// Phones whose LSC expires within this period (e.g. 30d, 12h).
    #[arg(
        long = "expires-within",
        id = "select_expires_within",
        conflicts_with = "name"
    )]
    pub expires_within: Option<String>,
}

/// The ids clap knows a selection by, for `required_unless_present_any`.
pub const SELECTION_IDS: [&str; 4] = ["all", "select_status", "prefix", "select_expires_within"];

impl Selection {
    /// Whether `rec` is selected at `now`.
    pub fn matches(&self, rec: &DeviceRecord, now: UnixTime) -> Result<bool> {
        if let Some(s) = &self.status {
            if !super::status_matches(rec, s, now) {
                return Ok(false);
            }
        }
        if let Some(p) = &self.prefix {
            if !rec.name.starts_with(p.as_str()) {
                return Ok(false);
            }
        }
        if let Some(w) = &self.expires_within {
            let within = parse_duration("--expires-within", w.trim_start_matches('+'))?;
            let limit = now.saturating_add(within);
            if rec.lsc.as_ref().is_none_or(|c| c.not_after > limit) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The names of the devices `name` or the selection takes, each passed to
    /// `check` as it is now. The names alone are kept: a fleet of a million is never
    /// in memory.
    fn scan(
        &self,
        ctx: &Ctx,
        name: Option<&str>,
        mut check: impl FnMut(DeviceRecord) -> Result<()>,
    ) -> Result<Vec<String>> {
        let mut names = Vec::new();
        match name {
            Some(name) => {
                let name = normalise_name(name)?;
                let Some(rec) = ctx.store.get_device(&name)? else {
                    bail!("device {name} not found (add it with `capf device add {name}`)");
                };
                names.push(rec.name.clone());
                check(rec)?;
            }
            None => {
                // An invalid --expires-within is reported even on an empty store.
                if let Some(w) = &self.expires_within {
                    parse_duration("--expires-within", w.trim_start_matches('+'))?;
                }
                for rec in ctx.store.devices() {
                    let rec = rec?;
                    if self.matches(&rec, ctx.now)? {
                        names.push(rec.name.clone());
                        check(rec)?;
                    }
                }
            }
        }
        if names.is_empty() {
            bail!("no device matches the selection");
        }
        Ok(names)
    }
}

/// What `device set` was asked to do.
pub struct SetRequest {
    pub name: Option<String>,
    pub options: DeviceOptions,
    pub clear_lockout: bool,
    pub selection: Selection,
    pub dry_run: bool,
}

pub fn set(ctx: &mut Ctx, req: SetRequest) -> Result<ExitCode> {
    let SetRequest {
        name,
        mut options,
        clear_lockout,
        selection,
        dry_run,
    } = req;
    let now = ctx.now;
    let single = name.is_some();
    // Each device gets its own string, drawn once here, so that the string printed
    // is the one stored even if the store re-runs the update.
    let generate = std::mem::take(&mut options.generate_auth_string);
    let mut strings: HashMap<String, String> = HashMap::new();
    let change = |rec: &mut DeviceRecord, string: Option<&String>| -> Result<()> {
        match string {
            Some(s) => {
                let mut options = options.clone();
                options.auth_string = Some(s.clone());
                options.apply(rec, now)?;
            }
            None => {
                options.apply(rec, now)?;
            }
        }
        if clear_lockout {
            rec.failed_auth = 0;
            rec.locked_until = None;
        }
        Ok(())
    };

    // Phase 1: every device is checked before any is changed.
    let mut refused = Vec::new();
    let mut unchanged = 0usize;
    let mut preview = Vec::new();
    let names = selection.scan(ctx, name.as_deref(), |rec| {
        if generate {
            strings.insert(rec.name.clone(), generate_auth_string());
        }
        let mut after = rec.clone();
        match change(&mut after, strings.get(&rec.name)) {
            Err(e) => refused.push(format!("{}: {e}", rec.name)),
            Ok(()) if dry_run => {
                let diff = changes(&rec, &after);
                if diff.is_empty() {
                    unchanged += 1;
                    preview.push(format!("{}: no change", rec.name));
                } else {
                    preview.push(format!("{}: {}", rec.name, describe(&diff)));
                }
            }
            Ok(()) => {}
        }
        Ok(())
    })?;
    if let Some(first) = refused.first() {
        bail!(
            "nothing changed: {} of {} devices cannot take this change; first: {first}",
            refused.len(),
            names.len()
        );
    }
    if dry_run {
        for line in preview {
            writeln!(ctx.out, "{line}")?;
        }
        writeln!(
            ctx.out,
            "dry run: {} of {} selected devices would change; nothing written",
            names.len() - unchanged,
            names.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    // Phase 2: written in batches, each record read again inside its transaction.
    let mut changed = 0;
    if generate && !single {
        writeln!(ctx.out, "name,auth_string")?;
    }
    for batch in names.chunks(SET_BATCH) {
        let updated = ctx
            .store
            .update_devices(batch, |rec| {
                // A device whose status changed since the scan may no longer be one
                // the operator selected.
                if !single && !selection.matches(rec, now).map_err(|e| e.to_string())? {
                    return Ok(None);
                }
                let before = rec.clone();
                change(rec, strings.get(&rec.name)).map_err(|e| e.to_string())?;
                Ok(Some(set_event(ctx, &before, rec)))
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e} (stopped after changing {changed} of {} devices)",
                    names.len()
                )
            })?;
        for rec in updated.into_iter().flatten() {
            changed += 1;
            let string = strings.get(&rec.name).cloned();
            if single {
                report(ctx, &rec, string)?;
            } else if let Some(s) = string {
                // Printed once: CSV for handing out (name,auth_string).
                writeln!(ctx.out, "{},{s}", rec.name)?;
            } else {
                writeln!(
                    ctx.out,
                    "{:<20} {}",
                    rec.name,
                    render::status_text(&rec, now)
                )?;
            }
        }
    }
    if changed == 0 {
        bail!("no device was changed: the selection was removed or changed meanwhile");
    }
    if !single && !generate {
        writeln!(
            ctx.out,
            "changed {changed} of {} selected devices",
            names.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The audit event of `device set`: the device's settings as after, what changed
/// (before → after; an authentication string's value is never logged), and what
/// clearing a lockout cleared.
fn set_event(ctx: &Ctx, before: &DeviceRecord, after: &DeviceRecord) -> Event {
    let mut event = admin_event(ctx, &after.name, "device-set", after);
    let diff = changes(before, after);
    if !diff.is_empty() {
        let changed: serde_json::Map<_, _> = diff
            .into_iter()
            .map(|(field, from, to)| (field.to_string(), format!("{from} → {to}").into()))
            .collect();
        event.details.insert("changed".into(), changed.into());
    }
    if before.failed_auth != after.failed_auth {
        event
            .details
            .insert("failed_auth_cleared".into(), before.failed_auth.into());
    }
    if let (Some(t), None) = (before.locked_until, after.locked_until) {
        event
            .details
            .insert("lockout_cleared".into(), render::time(t).into());
    }
    event
}

fn describe(diff: &[(&str, String, String)]) -> String {
    diff.iter()
        .map(|(field, from, to)| format!("{field} {from} → {to}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `device remove` on one device or a selection.
pub fn remove(
    ctx: &mut Ctx,
    name: Option<String>,
    selection: Selection,
    dry_run: bool,
) -> Result<ExitCode> {
    let single = name.is_some();
    let mut preview = Vec::new();
    let named = name.as_deref().map(normalise_name).transpose()?;
    let undecodable = named.as_ref().filter(|n| {
        matches!(
            ctx.store.get_device(n),
            Err(crate::store::StoreError::Corrupt { .. })
        )
    });
    let names = match undecodable {
        // A record that no longer decodes can still be removed: that is how an
        // operator clears it (the store names it wherever it stops a listing or a
        // `store migrate`).
        Some(name) => {
            if dry_run {
                preview.push(format!("would remove {name} (its record does not decode)"));
            }
            vec![name.clone()]
        }
        None => selection.scan(ctx, name.as_deref(), |rec| {
            if dry_run {
                preview.push(format!(
                    "would remove {} ({}; LSC {})",
                    rec.name,
                    rec.status,
                    rec.lsc.as_ref().map_or("-", |c| c.serial.as_str())
                ));
            }
            Ok(())
        })?,
    };
    if dry_run {
        for line in preview {
            writeln!(ctx.out, "{line}")?;
        }
        writeln!(
            ctx.out,
            "dry run: {} devices would be removed; nothing written",
            names.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut removed = 0;
    for name in &names {
        let gone = ctx
            .store
            .remove_device_with(name, |rec| remove_event(ctx, name, rec))?;
        if gone {
            removed += 1;
            writeln!(ctx.out, "removed {name}")?;
        } else if single {
            bail!("device {name} not found");
        }
    }
    if !single {
        writeln!(
            ctx.out,
            "removed {removed} of {} selected devices",
            names.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The audit event of `device remove`: what capf held for the device and dropped.
fn remove_event(ctx: &Ctx, name: &str, rec: Option<&DeviceRecord>) -> Event {
    let mut details = serde_json::Map::new();
    match rec {
        Some(rec) => {
            for (field, cert) in [
                ("lsc_serial", &rec.lsc),
                ("mic_serial", &rec.mic),
                ("unconfirmed_lsc_serial", &rec.unconfirmed_lsc),
            ] {
                if let Some(c) = cert {
                    details.insert(field.into(), c.serial.clone().into());
                }
            }
            details.insert("operation".into(), rec.operation.to_string().into());
            details.insert("status".into(), rec.status.to_string().into());
            if rec.failed_auth > 0 {
                details.insert("failed_auth".into(), rec.failed_auth.into());
            }
        }
        None => {
            details.insert("record".into(), "undecodable".into());
        }
    }
    Event {
        id: 0,
        time: ctx.now,
        actor: ctx.actor.clone(),
        device: Some(name.to_string()),
        action: "device-remove".into(),
        result: "Removed".into(),
        details,
    }
}
