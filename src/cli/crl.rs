//! `capf crl`: the CAPF CA's certificate revocation list, as the node serves it at
//! `GET /capf.crl`, for verifiers that load it from a file.

use anyhow::{Context, Result};
use clap::Args;
use std::process::ExitCode;

use super::Ctx;
use crate::ca::Ca;
use crate::settings::Settings;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  capf crl --out capf.crl\n  capf crl | openssl crl -noout -text\n  openssl crl -in capf.crl -CAfile capf-data/certs/capf.pem -verify -noout"
)]
pub struct CrlArgs {
    /// Write it to this file instead of stdout (replaced, never written through; 0644,
    /// a CRL is public).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// DER instead of PEM.
    #[arg(long)]
    pub der: bool,
}

pub fn run(ctx: &mut Ctx, args: CrlArgs) -> Result<ExitCode> {
    let settings = Settings::load(ctx.data)?;
    let ca = Ca::load(&ctx.data.certs(), settings.lsc_validity_days)?;
    let der = ca.revocation_list(&ctx.store.revocations()?, ctx.now)?;
    let bytes = if args.der {
        der
    } else {
        crate::ca::pem("X509 CRL", &der).into_bytes()
    };
    match args.out {
        Some(path) => {
            let path = ctx.path(&path);
            crate::ca::replace(&path, &bytes, 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => ctx.out.write_all(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}
