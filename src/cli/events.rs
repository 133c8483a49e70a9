//! `capf events`: the audit trail.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

use super::{render, Ctx};
use crate::model::Event;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  capf events --device SEP001122334455\n  capf events --since -1d --json | jq '.[] | select(.action==\"session\")'"
)]
pub struct EventsArgs {
    /// Only events about this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Only events at or after this time: RFC 3339, or relative to now (-1d, -12h, -30m).
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// At most this many (the most recent).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &mut Ctx, args: EventsArgs) -> Result<ExitCode> {
    let device = args
        .device
        .as_deref()
        .map(super::device::normalise_name)
        .transpose()?;
    let since = args
        .since
        .as_deref()
        .map(|s| match s.strip_prefix('-') {
            Some(rel) => super::device::parse_duration("--since", rel).map(|d| ctx.now - d),
            None => super::device::parse_time("--since", s, ctx.now),
        })
        .transpose()?;
    // Without a limit the whole trail is streamed, one event at a time.
    let events: Box<dyn Iterator<Item = Result<Event>>> = match args.limit {
        Some(limit) => Box::new(
            ctx.store
                .events(device.as_deref(), since, Some(limit))?
                .into_iter()
                .map(Ok),
        ),
        None => Box::new(
            ctx.store
                .events_in_order(device, since)
                .map(|e| e.map_err(anyhow::Error::from)),
        ),
    };
    if args.json {
        render::json_array(ctx.out, events)?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in events {
        let e = e?;
        let details: Vec<String> = e
            .details
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        writeln!(
            ctx.out,
            "{} #{:<6} {:<24} {:<18} {:<20} {}{}",
            render::local_time(e.time, ctx.utc_offset),
            e.id,
            e.actor,
            e.device.as_deref().unwrap_or("-"),
            e.action,
            e.result,
            if details.is_empty() {
                String::new()
            } else {
                format!("  [{}]", details.join(" "))
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
