//! `capf status`: the node's health in one screen, and an exit status for cron,
//! systemd timers and monitoring systems: 0 ok, 1 warning, 2 critical.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

use super::{render, Ctx};
use crate::health::{self, Health};

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 ok, 1 warning, 2 critical.\n\nExamples:\n  capf status\n  capf status --json | jq .level"
)]
pub struct StatusArgs {
    /// Print JSON (a stable object; see docs/operations.md).
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &mut Ctx, args: StatusArgs) -> Result<ExitCode> {
    let health = health::assess(ctx.store, ctx.data, ctx.now)?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&json(&health))?)?;
    } else {
        write!(ctx.out, "{}", text(&health))?;
    }
    Ok(ExitCode::from(health.level().exit_code()))
}

fn json(h: &Health) -> serde_json::Value {
    let time = |t: Option<i64>| t.map(render::time);
    serde_json::json!({
        "level": h.level().as_str(),
        "devices": h.devices,
        "by_status": h.by_status,
        "locked": h.locked,
        "pending": h.pending,
        "pending_past_deadline": h.past_deadline,
        "lsc": {
            "expired": h.lsc_expired,
            "expiring_within_30_days": h.lsc_expiring_30_days,
            "expiring_within_90_days": h.lsc_expiring_90_days,
            "earliest_not_after": time(h.earliest_lsc_not_after),
        },
        "crl": {
            "revoked": h.crl_revoked,
            "last_revocation": time(h.last_revocation),
            "built": "on request",
            "validity_days": crate::ca::CRL_VALIDITY_SECS / 86_400,
        },
        "certificates": h.certificates.iter().map(|c| serde_json::json!({
            "name": c.name,
            "not_before": time(c.not_before),
            "not_after": time(c.not_after),
        })).collect::<Vec<_>>(),
        "nodes": h.nodes.iter().map(|n| serde_json::json!({
            "name": n.name,
            "same_certificates": n.same_certificates,
        })).collect::<Vec<_>>(),
        "findings": h.findings.iter().map(|f| serde_json::json!({
            "level": f.level.as_str(),
            "message": f.message,
        })).collect::<Vec<_>>(),
    })
}

fn text(h: &Health) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<28}{v}\n"));
    line("status:", h.level().as_str().to_string());
    line("devices:", h.devices.to_string());
    for (status, count) in &h.by_status {
        line(&format!("  {status}:"), count.to_string());
    }
    line("pending operations:", h.pending.to_string());
    line("  past their deadline:", h.past_deadline.to_string());
    line("locked devices:", h.locked.to_string());
    line("LSCs expired:", h.lsc_expired.to_string());
    line(
        "LSCs expiring in 30 days:",
        h.lsc_expiring_30_days.to_string(),
    );
    line(
        "LSCs expiring in 90 days:",
        h.lsc_expiring_90_days.to_string(),
    );
    line(
        "earliest LSC expiry:",
        h.earliest_lsc_not_after.map_or("-".into(), render::time),
    );
    for c in &h.certificates {
        line(
            &format!("{} expires:", c.name),
            c.not_after.map_or("unreadable".into(), render::time),
        );
    }
    line(
        "CRL:",
        format!(
            "{} revoked, last {}; signed anew for each request (valid {} days)",
            h.crl_revoked,
            h.last_revocation.map_or("never".into(), render::time),
            crate::ca::CRL_VALIDITY_SECS / 86_400
        ),
    );
    if !h.nodes.is_empty() {
        let nodes: Vec<String> = h
            .nodes
            .iter()
            .map(|n| {
                let differs = if n.same_certificates {
                    ""
                } else {
                    " (other certificates)"
                };
                format!("{}{differs}", n.name)
            })
            .collect();
        line("nodes serving:", nodes.join(", "));
    }
    for f in &h.findings {
        out.push_str(&format!(
            "{:<8} {}\n",
            f.level.as_str().to_uppercase(),
            f.message
        ));
    }
    out
}
