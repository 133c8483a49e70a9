//! `capf config build` and `capf itl build`: write the files a phone would download,
//! built by the same service the HTTP delivery uses.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::device::normalise_name;
use super::Ctx;
use crate::phone_config::plan::{ConfigForm, NotFound, Request};
use crate::phone_config::service::{ConfigService, File, Refusal};
use crate::settings::Settings;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Build NAME.cnf.xml.sgn (and NAME.cnf.xml.enc.sgn when encrypted config is on
    /// and the phone's RSA certificate is known) from tftp/NAME.cnf.xml.
    #[command(after_help = "Example:\n  capf config build SEP001122334455 --out /srv/tftp")]
    Build {
        name: String,
        #[command(flatten)]
        out: OutDir,
    },
}

#[derive(Subcommand, Debug)]
pub enum ItlCommand {
    /// Build ITLFile.tlv: the signer as SAST and TFTP, and the CAPF certificate.
    #[command(after_help = "Example:\n  capf itl build --out /srv/tftp")]
    Build {
        #[command(flatten)]
        out: OutDir,
    },
}

#[derive(Args, Debug)]
pub struct OutDir {
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

pub fn run_config(ctx: &mut Ctx, cmd: ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Build { name, out } = cmd;
    let name = normalise_name(&name)?;
    let mac = name
        .strip_prefix("SEP")
        .filter(|mac| mac.len() == 12)
        .with_context(|| format!("{name}: configuration files exist only for SEP<MAC> devices"))?;
    let service = service(ctx)?;
    let document = service.document_path(&name);
    if !document.exists() {
        bail!(
            "no base document for {name}: place it at {}",
            document.display()
        );
    }
    let out = ctx.path(&out.out);
    let request = |form| Request::Config {
        mac: mac.to_owned(),
        form,
    };
    let signed = service
        .fetch(&request(ConfigForm::Signed), ctx.now)
        .with_context(|| format!("{name}.cnf.xml.sgn"))?;
    write(ctx, &out, &signed)?;
    match service.fetch(&request(ConfigForm::Encrypted), ctx.now) {
        Ok(file) => write(ctx, &out, &file)?,
        Err(Refusal::NotServed(NotFound::EncryptionOff)) => {}
        Err(Refusal::NotServed(reason @ NotFound::NoUsableCertificate)) => writeln!(
            ctx.out,
            "{name}.cnf.xml.enc.sgn not built: {reason}; the partial sends the phone to CAPF"
        )?,
        Err(e) => return Err(e).with_context(|| format!("{name}.cnf.xml.enc.sgn")),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_itl(ctx: &mut Ctx, cmd: ItlCommand) -> Result<ExitCode> {
    let ItlCommand::Build { out } = cmd;
    let service = service(ctx)?;
    let file = service
        .fetch(&Request::TrustList, ctx.now)
        .context("ITLFile.tlv")?;
    let out = ctx.path(&out.out);
    write(ctx, &out, &file)?;
    Ok(ExitCode::SUCCESS)
}

/// The service as `capf serve` would run it; a signer that cannot sign is an error
/// here, since every file these commands write is signed.
pub(super) fn service(ctx: &Ctx) -> Result<ConfigService> {
    let settings = Settings::load(ctx.data)?;
    let service = ConfigService::load(ctx.data, &settings, ctx.store.clone());
    if let Err(e) = service.signer() {
        bail!("{e} (the TFTP signer is certs/tftp.pem and certs/tftp.key)");
    }
    Ok(service)
}

/// Writes `file` under its served name, through a temporary file so a reader never
/// sees half a file. The temporary file is created exclusively under a random name and
/// renamed over the served name, so a symlink or file another user planted in `dir`
/// (an `--out` directory may be shared) is replaced, never written through. The files
/// are public, as phones fetch them unauthenticated: 0644 less the umask.
fn write(ctx: &mut Ctx, dir: &Path, file: &File) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(&file.name);
    crate::ca::replace(&path, &file.bytes, 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(
        ctx.out,
        "wrote {} ({}, {} bytes)",
        path.display(),
        file.kind,
        file.bytes.len()
    )?;
    Ok(())
}
