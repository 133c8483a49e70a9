//! `capf settings`: the effective node settings and where each value comes from.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

use crate::settings::{DataDir, Settings};

#[derive(Args, Debug)]
#[command(
    after_help = "Settings live in capf-data/capf.toml; `capf serve --listen/--http/--web/--log-format` override them for one run.\n\nExample:\n  capf settings"
)]
pub struct SettingsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run(data: &DataDir, args: SettingsArgs) -> Result<ExitCode> {
    let settings = Settings::load(data)?;
    let file: toml::Table = match std::fs::read_to_string(data.settings_file()) {
        Ok(text) => text.parse().unwrap_or_default(),
        Err(_) => toml::Table::new(),
    };
    let mut effective = toml::Table::try_from(&settings)?;
    // The store URL may carry the database password: it stays in capf.toml.
    if let Some(toml::Value::String(url)) = effective.get_mut("store") {
        *url = crate::settings::redact_store_url(url);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&effective)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("# {}", data.settings_file().display());
    for (key, value) in &effective {
        let source = if file.contains_key(key) {
            "capf.toml"
        } else {
            "default"
        };
        println!("{key} = {value}  # {source}");
    }
    println!("# a listener (http, tftp, legacy_listen, web) is turned off with \"off\"; a removed line is its default");
    Ok(ExitCode::SUCCESS)
}
