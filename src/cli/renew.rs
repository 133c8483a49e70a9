//! `capf renew plan` and `capf renew now`: the renewal policy (`crate::renewal`) as
//! the operator sees it, and by hand.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::process::ExitCode;

use super::{render, Ctx};
use crate::renewal::{self, Due, Policy, State};
use crate::settings::Settings;

#[derive(Subcommand, Debug)]
pub enum RenewCommand {
    /// The devices whose LSC is due, and when each will be scheduled.
    #[command(after_help = "Examples:\n  capf renew plan\n  capf renew plan --json")]
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Schedule the due devices now, past the hourly rate.
    #[command(
        after_help = "Examples:\n  capf renew now --max 50\n  capf renew now\n  capf renew now --issuer previous    # after `capf ca activate`"
    )]
    Now {
        /// At most this many devices (soonest expiry first).
        #[arg(long)]
        max: Option<usize>,
        /// `previous`: every device holding an LSC of the previous CAPF certificate,
        /// due or not (after `capf ca activate`); works with renewal off too.
        #[arg(long, value_parser = ["previous"])]
        issuer: Option<String>,
    },
}

pub fn run(ctx: &mut Ctx, cmd: RenewCommand) -> Result<ExitCode> {
    let settings = Settings::load(ctx.data)?;
    if let RenewCommand::Now {
        max,
        issuer: Some(_),
    } = cmd
    {
        return renew_previous_issuer(ctx, &settings, max);
    }
    let Some(policy) = Policy::of(&settings) else {
        bail!(
            "LSC renewal is off (renew_before_days = 0 in {}); set it, e.g. \
             renew_before_days = 30, and restart `capf serve`",
            ctx.data.settings_file().display()
        );
    };
    match cmd {
        RenewCommand::Plan { json } => plan(ctx, &policy, json),
        RenewCommand::Now { max, .. } => {
            let actor = ctx.actor.clone();
            let names = renewal::schedule(
                ctx.store,
                &policy,
                ctx.now,
                max.unwrap_or(usize::MAX),
                &actor,
            )?;
            scheduled(ctx, "LSC renewal", &names, policy.auth)
        }
    }
}

/// When a waiting device will be scheduled: the policy takes them soonest expiry first,
/// `renew_per_hour` an hour, starting with what the current hour has left.
fn estimate(position: usize, budget: usize, policy: &Policy, now: i64) -> i64 {
    if position < budget {
        return now;
    }
    let hours = (position - budget) / policy.renew_per_hour as usize + 1;
    now + hours as i64 * 3600
}

fn plan(ctx: &mut Ctx, policy: &Policy, json: bool) -> Result<ExitCode> {
    let due = renewal::due_devices(ctx.store, policy, ctx.now)?;
    let budget = renewal::budget(ctx.store, policy, ctx.now)?;
    let mut waiting = 0;
    let rows: Vec<(Due, Option<i64>)> = due
        .into_iter()
        .map(|d| {
            let at = (d.state == State::Waiting).then(|| {
                let at = estimate(waiting, budget, policy, ctx.now);
                waiting += 1;
                at
            });
            (d, at)
        })
        .collect();
    if json {
        let devices: Vec<_> = rows
            .iter()
            .map(|(d, at)| {
                serde_json::json!({
                    "name": d.name,
                    "lsc_not_after": render::time(d.lsc_not_after),
                    "due": render::time(d.due),
                    "state": d.state,
                    "scheduled_by": at.map(render::time),
                })
            })
            .collect();
        let value = serde_json::json!({
            "policy": policy,
            "left_this_hour": budget,
            "devices": devices,
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        ctx.out,
        "renewal: {} days before expiry, at most {} an hour ({} left this hour), by {} authentication",
        policy.renew_before_days, policy.renew_per_hour, budget, policy.auth
    )?;
    if rows.is_empty() {
        writeln!(ctx.out, "no LSC is due")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        ctx.out,
        "{:<17} {:<22} {:<10} WHEN",
        "NAME", "LSC EXPIRES", "STATE"
    )?;
    for (d, at) in rows {
        let (state, when) = match d.state {
            State::Waiting => (
                "waiting",
                format!("by {}", render::time(at.unwrap_or(ctx.now))),
            ),
            State::Scheduled => ("scheduled", "install pending".to_string()),
            State::Skipped => ("skipped", "another operation is pending".to_string()),
        };
        writeln!(
            ctx.out,
            "{:<17} {:<22} {:<10} {when}",
            d.name,
            render::time(d.lsc_not_after),
            state
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `renew now --issuer previous`: every device still on the previous CAPF CA.
fn renew_previous_issuer(
    ctx: &mut Ctx,
    settings: &Settings,
    max: Option<usize>,
) -> Result<ExitCode> {
    let Some(previous) = crate::ca::rollover::previous_certificate(&ctx.data.certs()) else {
        bail!("there is no previous CAPF certificate (`capf ca activate` makes one)");
    };
    let issuer = crate::ca::cert_info(&previous)?.subject;
    let actor = ctx.actor.clone();
    let names = renewal::schedule_issued_by(
        ctx.store,
        &issuer,
        settings.renew_auth,
        ctx.now,
        max.unwrap_or(usize::MAX),
        &actor,
    )?;
    scheduled(
        ctx,
        "an LSC from the new CAPF certificate",
        &names,
        settings.renew_auth,
    )
}

/// Says what `renew now` scheduled: a summary line, then one name a line.
fn scheduled(
    ctx: &mut Ctx,
    what: &str,
    names: &[String],
    auth: crate::model::AuthMode,
) -> Result<ExitCode> {
    writeln!(
        ctx.out,
        "scheduled {what} for {} device(s), by {auth} authentication",
        names.len()
    )?;
    for name in names {
        writeln!(ctx.out, "  {name}")?;
    }
    Ok(ExitCode::SUCCESS)
}
