//! `capf admin-user add|list|remove`: the web admin's accounts (docs/web-admin.md).
//!
//! The password is read where the operator types it, before the command goes to a
//! running node: `run` (in `cli/mod.rs`) hashes it with argon2id ([`prepare`]) and only
//! the hash travels, as the hidden `--password-hash`, over the admin socket or to the
//! local store. The store keeps the hash alone.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use super::{render, Ctx};
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
    let password = if *password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if std::io::stdin().is_terminal() {
        let first = prompt(&format!("password for {name}: "))?;
        password::check_password(&first)?;
        let again = prompt("again: ")?;
        if first != again {
            bail!("the passwords differ; nothing was changed");
        }
        first
    } else {
        bail!("standard input is not a terminal: give the password with --password-stdin");
    };
    let hash = password::hash_password(&password)?;
    *password_hash = Some(hash.clone());
    Ok(Some(format!("--password-hash={hash}")))
}

/// Reads one line from the terminal without echoing it.
fn prompt(text: &str) -> Result<String> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let is_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if is_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: `quiet` is a valid termios read from this descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if is_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
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
