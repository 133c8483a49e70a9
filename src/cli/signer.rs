//! `capf signer`: the file signer and the ITL recovery identity (`ca::recovery`): which
//! key signs the ITL, and replacing the signer without resetting phones.

use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;

use super::{render, Ctx};
use crate::ca::recovery::{self, ItlSigning, INTRODUCTION_DAYS, RECOVERY_CERT_FILE};
use crate::ca::InitOptions;
use crate::settings::Settings;

#[derive(Subcommand, Debug)]
pub enum SignerCommand {
    /// The file signer and the ITL recovery certificate, and which of them signs the ITL.
    #[command(after_help = "Examples:\n  capf signer show\n  capf signer show --json")]
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Replace the file signer (certs/tftp.*): the next ITL, signed by the recovery
    /// identity phones already trust, lists the new one. Restart `capf serve` after.
    #[command(after_help = "Example:\n  capf signer rollover && systemctl restart capf")]
    Rollover {
        /// Roll over although the recovery certificate has been in the ITL for less
        /// than a week: phones that have not loaded that ITL reject the new one.
        #[arg(long)]
        force: bool,
    },
}

#[derive(serde::Serialize)]
struct CertView {
    role: &'static str,
    subject: String,
    serial: String,
    not_after: String,
    md5: String,
}

pub fn run(ctx: &mut Ctx, cmd: SignerCommand) -> Result<ExitCode> {
    match cmd {
        SignerCommand::Show { json } => show(ctx, json),
        SignerCommand::Rollover { force } => rollover(ctx, force),
    }
}

fn show(ctx: &mut Ctx, json: bool) -> Result<ExitCode> {
    let certs = ctx.data.certs();
    let signing = recovery::itl_signing(&certs);
    let mut views = Vec::new();
    for (role, path) in [
        ("signer", ctx.data.tftp_cert()),
        ("recovery", certs.join(RECOVERY_CERT_FILE)),
    ] {
        let Ok(der) = super::ca::read(&path) else {
            continue;
        };
        let info = crate::ca::cert_info(&der)?;
        views.push(CertView {
            role,
            subject: info.subject,
            serial: info.serial,
            not_after: render::time(info.not_after),
            md5: info.md5,
        });
    }
    if json {
        let value = serde_json::json!({ "itl": signing, "certificates": views });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let said = match signing {
        ItlSigning::Recovery => {
            "signed by the recovery certificate: `capf signer rollover` can replace the signer at any time".to_string()
        }
        ItlSigning::Introducing { since } => {
            let days = (ctx.now - since).max(0) / 86_400;
            format!(
                "signed by the signer while phones learn the recovery certificate (listed since {}, {days} day(s)); \
                 `capf signer rollover` after {INTRODUCTION_DAYS} days",
                render::time(since)
            )
        }
        ItlSigning::SignerOnly => {
            "signed by the signer, no recovery certificate: run `capf init --upgrade`".to_string()
        }
    };
    writeln!(ctx.out, "ITL: {said}")?;
    for v in views {
        writeln!(
            ctx.out,
            "{:<9} {}  serial {}  valid until {}  MD5 {}",
            v.role, v.subject, v.serial, v.not_after, v.md5
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn rollover(ctx: &mut Ctx, force: bool) -> Result<ExitCode> {
    let settings = Settings::load(ctx.data)?;
    // The ITL naming the new signer must be signed by the recovery key: one that cannot
    // sign (a lost or mismatched key file) would leave the new signer to sign it, which
    // no phone accepts.
    let certs = ctx.data.certs();
    if certs.join(RECOVERY_CERT_FILE).exists() {
        crate::phone_config::signer::Signer::load(
            &certs.join(RECOVERY_CERT_FILE),
            &certs.join(recovery::RECOVERY_KEY_FILE),
            settings.config_digest,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "the ITL recovery identity cannot sign ({e}); phones would accept no ITL \
                 naming a new signer. Restore certs/{RECOVERY_CERT_FILE} and its key from a backup"
            )
        })?;
    }
    // The new signer repeats the old one's O and OU when it can be read; a lost or
    // broken signer (what this command is for) falls back to the CAPF certificate's.
    let names_from = super::ca::read(&ctx.data.tftp_cert())
        .or_else(|_| super::ca::read(&ctx.data.capf_cert()))?;
    let (organization, org_unit) = super::ca::subject_names(&names_from);
    let rolled = recovery::roll_signer(
        &ctx.data.certs(),
        &InitOptions {
            node_name: settings.node_name.clone(),
            organization,
            org_unit,
            force: false,
        },
        ctx.now,
        force,
    )?;
    if let Some(old) = &rolled.retired {
        writeln!(ctx.out, "the old signer is kept as {}", old.display())?;
    }
    writeln!(
        ctx.out,
        "a new file signer is in place (certs/tftp.pem). Restart `capf serve`: the next ITL, \
         signed by the recovery certificate, lists the new signer, and every phone accepts it \
         at its next boot or configuration reset before it verifies a file the new signer \
         signed.{}",
        if rolled.forced_introduction {
            " Phones that have not loaded an ITL listing the recovery certificate will \
             reject it: delete their ITL by hand (docs/lifecycle.md)."
        } else {
            ""
        }
    )?;
    Ok(ExitCode::SUCCESS)
}
