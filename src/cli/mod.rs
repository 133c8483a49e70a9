//! The `capf` command line (design.md "CLI contract": scripts depend on these names
//! and JSON fields — extend, never rename).
//!
//! Parsing produces a typed `Command`; each group lives in its own file and renders
//! human output and `--json` output from the same data.

mod admin;
mod admin_user;
mod backup;
mod ca;
mod config;
mod crl;
mod device;
mod doctor;
mod events;
mod init;
mod inspect;
mod keys;
mod node_identity;
mod private;
mod render;
mod renew;
mod secret;
mod serve;
mod settings_cmd;
mod signer;
mod status;
mod store_cmd;

pub use device::{parse_import, ParsedRow};
pub use init::initialise;
/// The node identity file (`capf node export|join`), for tests and tools.
pub use node_identity::sealed as node_identity_file;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::model::UnixTime;
pub use crate::net::Listening;
use crate::settings::DataDir;
use crate::store::{Store, StoreError};

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
    /// The audit trail: who scheduled what, and every session outcome.
    Events(events::EventsArgs),
    /// A consistent copy of the data directory, taken while serving.
    Backup(backup::BackupArgs),
    /// The effective node settings and where each comes from.
    Settings(settings_cmd::SettingsArgs),
    /// Shell completions for bash, zsh, fish, elvish or powershell.
    #[command(after_help = "Example:\n  capf completions bash > /etc/bash_completion.d/capf")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Build a phone's configuration files as the node serves them.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Build the Identity Trust List the node serves.
    #[command(subcommand)]
    Itl(config::ItlCommand),
    /// Print and verify a .sgn, .enc.sgn or .tlv file; decrypt an .enc.sgn.
    Inspect(inspect::InspectArgs),
    /// Check that phones can enroll and get their encrypted configuration.
    Doctor(doctor::DoctorArgs),
    /// The node's health: devices by status, expiring LSCs, late operations, capf's
    /// certificates. Exit status 0 ok, 1 warning, 2 critical.
    Status(status::StatusArgs),
    /// CAPF CA rollover: stage, activate and retire a CAPF certificate without
    /// resetting phones.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// The file signer and the ITL recovery certificate: replace the signer without
    /// resetting phones.
    #[command(subcommand)]
    Signer(signer::SignerCommand),
    /// The CAPF CA's certificate revocation list (revoked and replaced LSCs), PEM.
    Crl(crl::CrlArgs),
    /// Automatic LSC renewal (renew_before_days in capf.toml): what is due, and
    /// scheduling it by hand.
    #[command(subcommand)]
    Renew(renew::RenewCommand),
    /// The web admin's accounts (docs/web-admin.md).
    #[command(subcommand)]
    AdminUser(admin_user::AdminUserCommand),
    /// Node identity for a cluster: export the CAPF CA, the signer and the shared
    /// settings as one file sealed with a passphrase, and set a new node up from it
    /// (docs/cluster.md).
    #[command(subcommand)]
    Node(node_identity::NodeCommand),
    /// The store itself: move it between the embedded sled store and PostgreSQL
    /// (docs/cluster.md).
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
}

/// Everything a store-backed command needs. The same command runs either in the CLI
/// process (no server running: it opens the store itself) or inside `capf serve` for a
/// request that came over the admin socket; only `Ctx` differs, so output, exit codes
/// and errors are the same either way.
pub struct Ctx<'a> {
    pub data: &'a DataDir,
    pub store: &'a Store,
    /// Standard output of the command, buffered (the admin socket streams it to the
    /// client).
    pub out: &'a mut dyn Write,
    /// Who is acting, for the audit trail: `cli:<name> (uid N)` (see [`actor_for`]).
    pub actor: String,
    /// The client's working directory: relative paths in arguments are resolved
    /// against it, not against the server's.
    pub cwd: PathBuf,
    pub now: UnixTime,
    /// Show progress on stderr (only when run locally on a terminal).
    pub progress: bool,
    /// The operator's UTC offset in seconds, for times shown in local time.
    pub utc_offset: i32,
    /// Where the node listens, when the command runs inside it (through the admin
    /// socket); `None` when run here, which means no node serves this data directory
    /// (it would hold the store).
    pub serving: Option<Listening>,
}

impl Ctx<'_> {
    /// A path argument as the operator meant it.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.cwd.join(p)
        }
    }
}

/// Entry point for `main`: runs the command, prints errors to stderr, maps them to a
/// non-zero exit status.
pub fn main() -> ExitCode {
    // Read the local UTC offset while the process is single-threaded (the only time the
    // platform lets it be read soundly).
    let _ = LOCAL_OFFSET.set(local_utc_offset_now());
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&argv);
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_closed_pipe();
    }
    match run(cli, argv) {
        Ok(code) => code,
        // A reader that stopped reading (`capf device list | head -1`) is not an
        // error of ours: exit quietly, as Unix tools do.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            eprintln!("capf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Restores the default SIGPIPE action, which the Rust runtime sets to "ignore": a
/// command whose reader went away (`| head -1`) then ends at once and silently, like
/// `ls` or `grep`, instead of failing its next write with "Broken pipe" (or
/// panicking inside `println!`). Not for `serve`: a phone or admin client closing
/// its socket must never end the server.
fn quiet_on_closed_pipe() {
    // SAFETY: called before any thread is started; SIG_DFL is always a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether `e` comes from writing to a pipe whose reader is gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs a parsed command line; `argv` is forwarded to a running server for
/// store-backed commands.
pub fn run(mut cli: Cli, mut argv: Vec<OsString>) -> Result<ExitCode> {
    let data = DataDir::new(cli.data);
    // A password is read and hashed here, where the operator types it: only the hash
    // goes on, to a running node or to the store.
    if let Command::AdminUser(cmd) = &mut cli.command {
        if let Some(arg) = admin_user::prepare(cmd)? {
            argv.push(arg.into());
        }
    }
    match cli.command {
        Command::Init(args) => init::init(&data, args),
        Command::Serve(args) => serve::serve(&data, args),
        Command::Cert(args) => init::cert(&data, args),
        Command::Settings(args) => settings_cmd::run(&data, args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "capf", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => inspect::inspect(&data, args),
        Command::Node(cmd) => node_identity::run(&data, cmd),
        Command::Store(cmd) => store_cmd::run(&data, cmd),
        store_command => {
            if let Some(code) = admin::forward(&data, &argv)? {
                return Ok(code);
            }
            let store = match try_open_store(&data)? {
                Some(store) => store,
                // A node that is starting holds the store a moment before its admin
                // socket answers (`capf serve &` and the next command at once).
                None => match admin::forward_when_up(&data, &argv, SERVE_STARTUP)? {
                    Some(code) => return Ok(code),
                    None => anyhow::bail!(
                        "the store in {} is held by another process whose admin socket does \
                         not answer (is an old `capf serve` still stopping?)",
                        data.root().display()
                    ),
                },
            };
            // Buffered: commands write in small pieces, and a locked stdout would
            // otherwise write every line separately.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut ctx = Ctx {
                data: &data,
                store: &store,
                out: &mut out,
                actor: actor_for(private::uid(), sudo_user().as_deref()),
                cwd: std::env::current_dir()?,
                now: crate::model::now(),
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                utc_offset: local_utc_offset(),
                serving: None,
            };
            let result = execute(&mut ctx, store_command);
            // What was written goes out before any error is printed.
            out.flush()?;
            let code = result.map_err(|e| name_damage(e, &data))?;
            store.flush().map_err(|e| name_damage(e.into(), &data))?;
            Ok(code)
        }
    }
}

/// How the web admin runs commands: as they run over the admin socket, with the
/// output collected and the store flushed after a success.
pub fn web_commands() -> crate::web::Commands {
    std::sync::Arc::new(run_for_web)
}

fn run_for_web(line: crate::web::CommandLine<'_>) -> (bool, String) {
    let argv = std::iter::once("capf".to_string()).chain(line.args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return (false, e.to_string()),
    };
    let mut out = Vec::new();
    let result = {
        let mut ctx = Ctx {
            data: line.data,
            store: line.store,
            out: &mut out,
            actor: line.actor,
            cwd: line.data.root().to_path_buf(),
            now: crate::model::now(),
            progress: false,
            utc_offset: 0,
            serving: line.serving,
        };
        execute(&mut ctx, cli.command)
    };
    let result = result.and_then(|code| {
        line.store.flush()?;
        Ok(code)
    });
    let mut printed = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(code) => (code == ExitCode::SUCCESS, printed),
        Err(e) => {
            printed.push_str(&format!("error: {e:#}"));
            (false, printed)
        }
    }
}

/// Runs a store-backed command in `ctx`.
pub fn execute(ctx: &mut Ctx, command: Command) -> Result<ExitCode> {
    match command {
        Command::Device(cmd) => device::run(ctx, cmd),
        Command::Keys(cmd) => keys::run(ctx, cmd),
        Command::Events(args) => events::run(ctx, args),
        Command::Backup(args) => backup::run(ctx, args),
        Command::Config(cmd) => config::run_config(ctx, cmd),
        Command::Itl(cmd) => config::run_itl(ctx, cmd),
        Command::Doctor(args) => doctor::run(ctx, args),
        Command::Status(args) => status::run(ctx, args),
        Command::Renew(cmd) => renew::run(ctx, cmd),
        Command::Crl(args) => crl::run(ctx, args),
        Command::Ca(cmd) => ca::run(ctx, cmd),
        Command::Signer(cmd) => signer::run(ctx, cmd),
        Command::AdminUser(cmd) => admin_user::run(ctx, cmd),
        Command::Init(_)
        | Command::Serve(_)
        | Command::Cert(_)
        | Command::Inspect(_)
        | Command::Settings(_)
        | Command::Node(_)
        | Command::Store(_)
        | Command::Completions { .. } => {
            anyhow::bail!("this command does not run over the admin socket")
        }
    }
}

static LOCAL_OFFSET: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// This machine's UTC offset, as read at start-up (0 where it could not be read).
pub(crate) fn local_utc_offset() -> i32 {
    LOCAL_OFFSET.get().copied().unwrap_or(0)
}

fn local_utc_offset_now() -> i32 {
    time::UtcOffset::current_local_offset()
        .map(|o| o.whole_seconds())
        .unwrap_or(0)
}

/// Who is acting, as the client tells a server (informational only: the server
/// records the uid the kernel reports, see [`actor_for`]).
pub(crate) fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// The `SUDO_USER` this process was run with, if any.
pub(crate) fn sudo_user() -> Option<String> {
    std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty())
}

/// Who is acting, for the audit trail: `cli:<name> (uid N)`, the uid being the real
/// uid of the process (or, over the admin socket, of the peer as the kernel reports
/// it) and the name the one the system has for that uid (the number when it has
/// none). With `sudo_user`, `cli:<name> (uid N, SUDO_USER <user>)`: who ran the
/// command through sudo, as sudo recorded it (only root and the data directory's
/// owner can reach the store, and either could set it to anything).
pub(crate) fn actor_for(uid: u32, sudo_user: Option<&str>) -> String {
    let name = private::user_name(uid).unwrap_or_else(|| uid.to_string());
    match sudo_user {
        Some(sudo) => format!("cli:{name} (uid {uid}, SUDO_USER {sudo})"),
        None => format!("cli:{name} (uid {uid})"),
    }
}

/// An error caused by damaged store files says so first, naming the store and how to
/// restore it ([`StoreError::Damaged`]), followed by the error as it was.
pub(crate) fn name_damage(e: anyhow::Error, data: &DataDir) -> anyhow::Error {
    let reason = e
        .chain()
        .filter_map(|cause| cause.downcast_ref::<StoreError>())
        .find_map(crate::store::damage_reason);
    match reason {
        Some(reason) => e.context(StoreError::Damaged {
            path: data.db(),
            reason,
        }),
        None => e,
    }
}

/// Opens the store of an initialised data directory.
/// How long a command waits for a node that holds the store to answer on its admin
/// socket: a node opens its store, then binds its listeners, then the socket.
const SERVE_STARTUP: std::time::Duration = std::time::Duration::from_secs(15);

/// The store, or `None` while another process holds it.
fn try_open_store(data: &DataDir) -> Result<Option<Store>> {
    match open_store(data) {
        Ok(store) => Ok(Some(store)),
        Err(e) if matches!(e.downcast_ref(), Some(StoreError::Locked(_))) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn open_store(data: &DataDir) -> Result<Store> {
    let settings = crate::settings::Settings::load(data)?;
    if !settings.store.is_empty() {
        return Ok(Store::open_configured(&data.db(), &settings.store)?);
    }
    if !data.db().exists() {
        anyhow::bail!(
            "no capf store in {} (run `capf init` or `capf serve` first, or pass --data)",
            data.root().display()
        );
    }
    Ok(Store::open(&data.db())?)
}
