//! `capf ca`: the CAPF CA rollover (`ca::rollover`), step by step, with what each step
//! means for phones.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::process::ExitCode;

use super::{render, Ctx};
use crate::ca::rollover::{self, Phase};
use crate::ca::InitOptions;
use crate::settings::Settings;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Each CAPF certificate, its phase, validity and how many devices hold its LSCs.
    #[command(after_help = "Examples:\n  capf ca show\n  capf ca show --json")]
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Stage a new CAPF certificate: the ITL lists it beside the current one, so
    /// phones learn it at their next download while the current one still serves.
    #[command(after_help = "Example:\n  capf ca rollover")]
    Rollover,
    /// Make the staged certificate the one on port 3804 and the issuer of new LSCs
    /// (restart `capf serve` after); LSCs of the previous one still authenticate.
    #[command(after_help = "Example:\n  capf ca activate && systemctl restart capf")]
    Activate,
    /// Take the previous CAPF certificate out of the ITL and trust. Refused while
    /// devices still hold its LSCs, unless --force.
    #[command(after_help = "Examples:\n  capf ca retire\n  capf ca retire --force")]
    Retire {
        #[arg(long)]
        force: bool,
    },
}

/// One CAPF certificate as `ca show` reports it.
#[derive(serde::Serialize)]
struct CaView {
    role: &'static str,
    subject: String,
    not_after: String,
    md5: String,
    devices_with_lsc: usize,
}

pub fn run(ctx: &mut Ctx, cmd: CaCommand) -> Result<ExitCode> {
    let certs = ctx.data.certs();
    match cmd {
        CaCommand::Show { json } => show(ctx, json),
        CaCommand::Rollover => {
            let settings = Settings::load(ctx.data)?;
            let current = crate::ca::cert_info(&read(&ctx.data.capf_cert())?)?;
            let (organization, org_unit) = subject_names(&current.der);
            rollover::stage(
                &certs,
                &InitOptions {
                    node_name: settings.node_name.clone(),
                    organization,
                    org_unit,
                    force: false,
                },
            )?;
            writeln!(
                ctx.out,
                "staged a new CAPF certificate (certs/{}). The ITL now lists it beside the \
                 current one: restart `capf serve`, let every phone download the new ITL \
                 (at its next boot or configuration change), then run `capf ca activate`.",
                rollover::NEXT_CERT_FILE
            )?;
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Activate => {
            rollover::activate(&certs)?;
            writeln!(
                ctx.out,
                "the staged CAPF certificate is now the current one; the old one is the \
                 previous (still in the ITL, its LSCs still authenticate). Restart `capf \
                 serve`, then re-issue the old LSCs (`capf renew now --issuer previous`) \
                 and `capf ca retire` once none is left."
            )?;
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Retire { force } => {
            let Some(previous) = rollover::previous_certificate(&certs) else {
                bail!("there is no previous CAPF certificate to retire");
            };
            let holding = holders(ctx, &previous)?;
            if !holding.is_empty() && !force {
                bail!(
                    "{} device(s) still hold an LSC of the previous CAPF certificate (e.g. {}): \
                     they could no longer authenticate with it. Re-issue them first (`capf renew \
                     now --issuer previous`), or retire anyway with --force",
                    holding.len(),
                    holding
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let to = rollover::retire(&certs, ctx.now)?;
            writeln!(
                ctx.out,
                "retired the previous CAPF certificate (kept as {}); restart `capf serve`: the \
                 ITL then lists only the current one{}",
                to.display(),
                if holding.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} device(s) with its LSCs must enroll again by string or MIC",
                        holding.len()
                    )
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    Ok(rustls_pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .to_vec())
}

/// O and OU of a certificate's subject, for the next CAPF certificate to repeat.
pub(super) fn subject_names(der: &[u8]) -> (Option<String>, Option<String>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (None, None);
    };
    let subject = cert.subject();
    let organization = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let org_unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    (organization, org_unit)
}

/// The devices whose LSC (installed or unconfirmed) `ca` issued.
pub(super) fn holders(ctx: &Ctx, ca: &[u8]) -> Result<Vec<String>> {
    let subject = crate::ca::cert_info(ca)?.subject;
    let mut names = Vec::new();
    for rec in ctx.store.devices() {
        let rec = rec?;
        let issued = [rec.lsc.as_ref(), rec.unconfirmed_lsc.as_ref()]
            .into_iter()
            .flatten()
            .any(|c| c.issuer == subject);
        if issued {
            names.push(rec.name);
        }
    }
    Ok(names)
}

fn show(ctx: &mut Ctx, json: bool) -> Result<ExitCode> {
    let certs = ctx.data.certs();
    let phase = rollover::phase(&certs);
    let mut views = Vec::new();
    let roles = [
        ("current", Some(read(&ctx.data.capf_cert())?)),
        ("next", rollover::next_certificate(&certs)),
        ("previous", rollover::previous_certificate(&certs)),
    ];
    for (role, der) in roles {
        let Some(der) = der else { continue };
        let info = crate::ca::cert_info(&der)?;
        views.push(CaView {
            role,
            devices_with_lsc: holders(ctx, &der)?.len(),
            subject: info.subject,
            not_after: render::time(info.not_after),
            md5: info.md5,
        });
    }
    if json {
        let value = serde_json::json!({ "phase": phase, "certificates": views });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let said = match phase {
        Phase::Single => "single: one CAPF certificate",
        Phase::Staged => "staged: the ITL lists the next certificate; `capf ca activate` when phones have it",
        Phase::Activated => "activated: the previous certificate is still trusted; `capf ca retire` when no device holds its LSCs",
    };
    writeln!(ctx.out, "phase: {said}")?;
    for v in views {
        writeln!(
            ctx.out,
            "{:<9} {}  valid until {}  MD5 {}  devices with its LSCs: {}",
            v.role, v.subject, v.not_after, v.md5, v.devices_with_lsc
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
