//! `capf admin-user add|list|remove`: the web admin's accounts (docs/web-admin.md).
//!
//! The password is read where the operator types it, before the command goes to a
//! running node: `run` (in `cli/mod.rs`) hashes it with argon2id ([`prepare`]) and only
//! the hash travels, as the hidden `--password-hash`, over the admin socket or to the
//! local store. The store keeps the hash alone.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::process::ExitCode;

use super::{render, secret, Ctx};
use crate::model::Event;
use crate::store::WebAccount;
use crate::web::password;

#[derive(Subcommand, Debug)]
pub enum AdminUserCommand {
    /// Add a web admin account; the password is asked for twice on the terminal, or
    /// read from the first line of standard input with --password-stdin.
    #[command(
        after_help = "Examples:\n  capf admin-user add alice\n  printf '%s\\n' \"$PASSWORD\" | capf admin-user add alice --password-stdin"
    )]
    Add {
        name: String,
        /// Read the password from the first line of standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// The argon2id hash of the password (PHC string); set by capf itself once it
        /// has read the password.
        #[arg(long, hide = true)]
        password_hash: Option<String>,
    },
    /// List the web admin accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a web admin account; its sessions end at their next request.
    Remove { name: String },
}

/// Reads and hashes the password of `admin-user add` here, in the operator's process;
/// returns the argument to forward with the command (`--password-hash=…`), if any.
pub fn prepare(cmd: &mut AdminUserCommand) -> Result<Option<String>> {
    let AdminUserCommand::Add {
        name,
        password_stdin,
        password_hash,
    } = cmd
    else {
        return Ok(None);
    };
    if password_hash.is_some() {
        return Ok(None);
    }
    password::check_account_name(name)?;
    let source = if *password_stdin {
        secret::Source::Stdin
    } else {
        secret::Source::Prompt
    };
    let secret = secret::Secret {
        word: "password",
        prompt: &format!("password for {name}"),
        options: "--password-stdin",
    };
    let password = secret::read_new(source, &secret, password::check_password)?;
    let hash = password::hash_password(&password)?;
    *password_hash = Some(hash.clone());
    Ok(Some(format!("--password-hash={hash}")))
}

pub fn run(ctx: &mut Ctx, cmd: AdminUserCommand) -> Result<ExitCode> {
    match cmd {
        AdminUserCommand::Add {
            name,
            password_hash,
            ..
        } => {
            password::check_account_name(&name)?;
            let Some(hash) = password_hash else {
                bail!("no password was read (give it on a terminal or with --password-stdin)");
            };
            password::check_hash(&hash)?;
            let account = WebAccount {
                name: name.clone(),
                password_hash: hash,
                created: ctx.now,
                failed_logins: 0,
                locked_until: None,
                last_login: None,
            };
            ctx.store
                .add_web_account(&account, event(ctx, "admin-user-add", &name, "added"))?;
            writeln!(
                ctx.out,
                "added web admin account {name} (it logs in as web:{name} in the audit trail)"
            )?;
        }
        AdminUserCommand::List { json } => {
            let accounts = ctx.store.web_accounts()?;
            if json {
                let list: Vec<_> = accounts
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "name": a.name,
                            "created": render::time(a.created),
                            "last_login": a.last_login.map(render::time),
                            "locked_until": a.locked_until.filter(|t| *t > ctx.now).map(render::time),
                        })
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut *ctx.out, &list)?;
                writeln!(ctx.out)?;
            } else if accounts.is_empty() {
                writeln!(
                    ctx.out,
                    "no web admin accounts (add one with `capf admin-user add NAME`)"
                )?;
            } else {
                writeln!(
                    ctx.out,
                    "{:<24} {:<22} {:<22} LOCKED UNTIL",
                    "NAME", "CREATED", "LAST LOGIN"
                )?;
                for a in accounts {
                    writeln!(
                        ctx.out,
                        "{:<24} {:<22} {:<22} {}",
                        a.name,
                        render::time(a.created),
                        a.last_login.map_or("-".into(), render::time),
                        a.locked_until
                            .filter(|t| *t > ctx.now)
                            .map_or("-".into(), render::time)
                    )?;
                }
            }
        }
        AdminUserCommand::Remove { name } => {
            let removed = ctx
                .store
                .remove_web_account(&name, event(ctx, "admin-user-remove", &name, "removed"))?;
            if !removed {
                bail!("no web admin account {name}");
            }
            writeln!(ctx.out, "removed web admin account {name}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn event(ctx: &Ctx, action: &str, name: &str, result: &str) -> Event {
    let mut details = serde_json::Map::new();
    details.insert("account".into(), name.into());
    Event {
        id: 0,
        time: ctx.now,
        actor: ctx.actor.clone(),
        device: None,
        action: action.into(),
        result: result.into(),
        details,
    }
}
