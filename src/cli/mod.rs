//! The `capf` command line (design.md "CLI contract": scripts depend on these names
//! and JSON fields — extend, never rename).
//!
//! Parsing produces a typed `Command`; each group lives in its own file and renders
//! human output and `--json` output from the same data.

mod device;
mod init;
mod keys;
mod render;
mod serve;

pub use init::initialise;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::settings::DataDir;

#[derive(Parser, Debug)]
#[command(
    name = "capf",
    version,
    about = "A CAPF node for Cisco IP phones: enrolls phones over TLS on port 3804 and issues their LSCs",
    after_help = "Example:\n  capf serve                         # start on ./capf-data (initialised on first run)\n  capf device add SEP001122334455 --operation install --auth null"
)]
pub struct Cli {
    /// Data directory (store, certificates, settings).
    #[arg(long, global = true, env = "CAPF_DATA", default_value = "capf-data")]
    pub data: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory: CAPF certificate, TFTP signer, settings, store.
    Init(init::InitArgs),
    /// Run the CAPF service (initialises an empty data directory first).
    Serve(serve::ServeArgs),
    /// Print the CAPF certificate (the one phones must trust via the ITL).
    Cert(init::CertArgs),
    /// Schedule and inspect certificate operations per phone.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Inspect the certificates and public keys capf holds for phones.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Entry point for `main`: runs the command, prints errors to stderr, maps them to a
/// non-zero exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("capf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let data = DataDir::new(cli.data);
    match cli.command {
        Command::Init(args) => init::init(&data, args),
        Command::Serve(args) => serve::serve(&data, args),
        Command::Cert(args) => init::cert(&data, args),
        Command::Device(cmd) => device::run(&data, cmd),
        Command::Keys(cmd) => keys::run(&data, cmd),
    }
}

/// Who is acting, for the audit trail.
pub(crate) fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Opens the store of an initialised data directory.
pub(crate) fn open_store(data: &DataDir) -> Result<crate::store::Store> {
    if !data.db().exists() {
        anyhow::bail!(
            "no capf store in {} (run `capf init` or `capf serve` first, or pass --data)",
            data.root().display()
        );
    }
    Ok(crate::store::Store::open(&data.db())?)
}
