//! `capf serve`: run the CAPF node.

use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::node::{stopped, Node};
use crate::settings::{DataDir, Settings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  capf serve\n  capf --data /var/lib/capf serve --listen 0.0.0.0:3804 --http off\n  capf serve --tftp 0.0.0.0:69"
)]
pub struct ServeArgs {
    /// CAPF listener address (overrides capf.toml; default 0.0.0.0:3804).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP configuration delivery address, or `off` (default 0.0.0.0:6970).
    #[arg(long)]
    pub http: Option<String>,
    /// TFTP configuration delivery address (e.g. 0.0.0.0:69), or `off` (the default;
    /// port 69 needs privileges).
    #[arg(long)]
    pub tftp: Option<String>,
    /// Admin listener of /metrics, /healthz and /readyz, or `off` (overrides
    /// capf.toml's metrics; default 127.0.0.1:9380). It has no authentication.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// The web admin's HTTPS address (e.g. 127.0.0.1:8443), or `off` (overrides
    /// capf.toml's web; off by default; docs/web-admin.md).
    #[arg(long, value_name = "ADDR")]
    pub web: Option<String>,
    /// Log format: text or json (overrides capf.toml's log_format).
    #[arg(long)]
    pub log_format: Option<String>,
    /// The store: a `postgres://user@host:port/database` URL shared by several nodes
    /// (overrides capf.toml's store; docs/cluster.md). Default: the embedded store in
    /// the data directory.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Also listen on ADDR with TLS 1.0–1.3 on OpenSSL, for phones that need TLS 1.0
    /// (overrides capf.toml's legacy_listen; needs the legacy-tls build; see
    /// docs/legacy-tls.md).
    /// `off` turns off a legacy listener capf.toml configures.
    #[arg(long, value_name = "ADDR")]
    pub legacy_tls_listen: Option<String>,
    /// Initialise the data directory first if it is not yet one (as `capf init` with
    /// defaults). Without it, only the default ./capf-data is initialised by `serve`.
    #[arg(long)]
    pub init: bool,
}

/// The data directory `serve` may initialise without `--init`: the default, so that
/// `capf serve` alone is a working node on a fresh machine.
const DEFAULT_DATA: &str = "capf-data";

pub fn serve(data: &DataDir, args: ServeArgs) -> Result<ExitCode> {
    let mut settings = Settings::load(data)?;
    init_logging(args.log_format.as_deref().unwrap_or(&settings.log_format))?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if let Some(addr) = &args.legacy_tls_listen {
        settings.legacy_listen = address_or_off("--legacy-tls-listen", addr)?;
    }
    if let Some(addr) = &args.metrics {
        settings.metrics = address_or_off("--metrics", addr)?;
    }
    settings.validate().map_err(anyhow::Error::msg)?;
    if let Some(http) = &args.http {
        settings.http = address_or_off("--http", http)?;
    }
    if let Some(tftp) = &args.tftp {
        settings.tftp = address_or_off("--tftp", tftp)?;
    }
    if let Some(web) = &args.web {
        settings.web = address_or_off("--web", web)?;
    }
    let store = if data.is_initialised() {
        let store = crate::node::open_store(data, &settings)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let upgraded = super::init::upgrade(data, &settings, now)?;
        if upgraded.web {
            tracing::info!("wrote the web admin's HTTPS certificate (certs/web.pem)");
        }
        if upgraded.recovery {
            tracing::info!(
                "added the ITL recovery certificate; the signer keeps signing the ITL while \
                 phones learn it (capf signer show)"
            );
        }
        store
    } else if !args.init && data.root() != std::path::Path::new(DEFAULT_DATA) {
        // A mistyped --data (capf-dta) would otherwise get a new CAPF identity that
        // no phone trusts, and the node would look healthy.
        anyhow::bail!(
            "{dir} is not a capf data directory (no certs/capf.pem). If you meant an \
             existing node, check --data or CAPF_DATA; to create a new node here, run \
             `capf --data {dir} init --node-name NAME` (or `capf serve --init`)",
            dir = data.root().display()
        );
    } else {
        tracing::info!("initialising {}", data.root().display());
        super::init::initialise(data, &settings, None, None, false)?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // One shutdown signal for every component: the node and the admin socket.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let node = Node::bind(data, settings, store.clone(), super::web_commands()).await?;
        let admin = super::admin::AdminSocket::bind(data)?;
        tracing::info!(
            "capf listening on {} (data {})",
            node.capf_addr()?,
            data.root().display()
        );
        let listening = super::Listening {
            capf: node.capf_addr()?,
            http: node.http_addr(),
            tftp: node.tftp_addr(),
        };
        let admin = admin.serve(data.clone(), store, listening, stopped(stop_rx.clone()));
        let admin = tokio::spawn(admin);
        node.run(stopped(stop_rx)).await;
        if let Err(e) = admin.await {
            tracing::error!("admin socket task: {e}");
        }
        tracing::info!("capf stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A listen address from the command line, or `None` for `off` (the same words as
/// in capf.toml).
fn address_or_off(flag: &str, value: &str) -> Result<Option<SocketAddr>> {
    crate::settings::listener::parse(value)
        .map_err(|_| anyhow::anyhow!("invalid {flag} '{value}' (ADDR:PORT or off)"))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Logs go to stderr (stdout stays free for command output); colours only on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        "text" => builder.try_init(),
        "json" => builder.json().try_init(),
        other => anyhow::bail!("invalid --log-format '{other}' (text or json)"),
    }
    .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
