//! `capf keys list|show`: the certificates and public keys capf holds for phones.

use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;

use super::render::{self, KeyJson};
use super::Ctx;
use crate::model::{CertKind, DeviceRecord, EnrolledCert};
use crate::store::StoreError;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Every enrolled certificate (LSC and MIC) with its key and hashes.
    #[command(
        after_help = "Example:\n  capf keys list --json | jq -r '.[] | select(.type==\"lsc\") | .md5'"
    )]
    List {
        #[arg(long)]
        json: bool,
    },
    /// The certificates of one phone.
    #[command(after_help = "Example:\n  capf keys show SEP001122334455 --pem > phone.pem")]
    Show {
        name: String,
        #[arg(long, conflicts_with = "pem")]
        json: bool,
        /// Print the certificates as PEM.
        #[arg(long)]
        pem: bool,
    },
}

fn certs(d: &DeviceRecord) -> impl Iterator<Item = (CertKind, &EnrolledCert)> {
    [
        (CertKind::Lsc, d.lsc.as_ref()),
        (CertKind::Mic, d.mic.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, c)| c.map(|c| (k, c)))
}

/// A device's enrolled certificates as `keys list` entries, LSC first; a device that
/// cannot be read is one error.
fn key_entries(device: Result<DeviceRecord, StoreError>) -> impl Iterator<Item = Result<KeyJson>> {
    let (device, error) = match device {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(anyhow::Error::from(e))),
    };
    let certs = device.into_iter().flat_map(|d| {
        let DeviceRecord { name, lsc, mic, .. } = d;
        [(CertKind::Lsc, lsc), (CertKind::Mic, mic)]
            .into_iter()
            .filter_map(move |(kind, cert)| {
                cert.map(|cert| KeyJson {
                    name: name.clone(),
                    kind,
                    cert,
                })
            })
    });
    error.map(Err).into_iter().chain(certs.map(Ok))
}

pub fn run(ctx: &mut Ctx, cmd: KeysCommand) -> Result<ExitCode> {
    let store = ctx.store;
    match cmd {
        KeysCommand::List { json } => {
            // Streamed device by device, like `device list`.
            let entries = store.devices().flat_map(key_entries);
            if json {
                render::json_array(ctx.out, entries)?;
            } else {
                writeln!(
                    ctx.out,
                    "{:<20} {:<4} {:<9} {:<32} {:<20}",
                    "NAME", "TYPE", "KEY", "MD5", "NOT AFTER"
                )?;
                for entry in entries {
                    let KeyJson { name, kind, cert } = entry?;
                    writeln!(
                        ctx.out,
                        "{:<20} {:<4} {:<9} {:<32} {:<20}",
                        name,
                        kind,
                        cert.key,
                        cert.md5,
                        render::time(cert.not_after)
                    )?;
                }
            }
        }
        KeysCommand::Show { name, json, pem } => {
            let name = super::device::normalise_name(&name)?;
            let Some(d) = store.get_device(&name)? else {
                anyhow::bail!("device {name} not found");
            };
            if json {
                let mut v = serde_json::json!({
                    "name": d.name,
                    "lsc": d.lsc.as_ref().map(render::cert_json),
                    "mic": d.mic.as_ref().map(render::cert_json),
                });
                // Only present when a troubleshoot fetch returned a certificate capf
                // does not trust (never used to authenticate or encrypt).
                if let Some(c) = &d.fetched_untrusted {
                    v["fetched_untrusted"] = serde_json::to_value(render::cert_json(c))?;
                }
                writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else if pem {
                if d.lsc.is_none() && d.mic.is_none() {
                    anyhow::bail!("device {name} has no enrolled certificate");
                }
                for (_, c) in certs(&d) {
                    write!(ctx.out, "{}", crate::ca::certificate_pem(&c.der))?;
                }
            } else {
                write!(ctx.out, "{}", render::device_text(&d))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
