//! `capf serve`: run the CAPF node.

use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::ca::Ca;
use crate::server::http::HttpServer;
use crate::server::tftp::TftpServer;
use crate::server::CapfListener;
use crate::settings::{DataDir, Settings};
use crate::store::{Store, StoreError};
use crate::tftp::service::ConfigService;
use crate::trust::TrustAnchors;

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
    /// Log format: text or json (overrides capf.toml's log_format).
    #[arg(long)]
    pub log_format: Option<String>,
    /// Also listen on ADDR with TLS 1.0–1.3 on OpenSSL, for phones that need TLS 1.0
    /// (overrides capf.toml's legacy_listen; needs the legacy-tls build; see
    /// docs/legacy-tls.md).
    #[arg(long, value_name = "ADDR")]
    pub legacy_tls_listen: Option<SocketAddr>,
}

pub fn serve(data: &DataDir, args: ServeArgs) -> Result<ExitCode> {
    let mut settings = Settings::load(data)?;
    init_logging(args.log_format.as_deref().unwrap_or(&settings.log_format))?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if let Some(addr) = args.legacy_tls_listen {
        settings.legacy_listen = Some(addr);
    }
    settings.validate().map_err(anyhow::Error::msg)?;
    if settings.legacy_listen.is_some() && !cfg!(feature = "legacy-tls") {
        anyhow::bail!(
            "legacy_listen / --legacy-tls-listen needs capf built with `--features legacy-tls`"
        );
    }
    if let Some(http) = &args.http {
        settings.http = address_or_off("--http", http)?;
    }
    if let Some(tftp) = &args.tftp {
        settings.tftp = address_or_off("--tftp", tftp)?;
    }
    let store = if data.is_initialised() {
        let store = match Store::open(&data.db()) {
            Ok(s) => s,
            Err(StoreError::Locked(_)) => anyhow::bail!(
                "another capf process is serving {} (only one process can own the store)",
                data.root().display()
            ),
            Err(e) => return Err(e.into()),
        };
        // Every record is read once before anything is served: a damaged store stops
        // the server here rather than failing phones and commands one by one.
        store.check()?;
        store
    } else {
        tracing::info!("initialising {}", data.root().display());
        super::init::initialise(data, &settings, None, None, false)?
    };
    let ca = Ca::load(&data.certs(), settings.lsc_validity_days)?;
    let trust = load_trust(data, &ca)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // One shutdown signal for every component: the CAPF listener and the admin socket.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        // One configuration service for HTTP and TFTP, loaded only if either runs.
        let service = (settings.http.is_some() || settings.tftp.is_some()).then(|| {
            let service = ConfigService::load(data, &settings, store.clone());
            if let Err(e) = service.signer() {
                tracing::error!(
                    "signed configuration files and the ITL are not served: {e} \
                     (fix certs/tftp.pem and certs/tftp.key, then restart)"
                );
            }
            Arc::new(service)
        });
        let http = match (settings.http, &service) {
            (Some(addr), Some(service)) => {
                let server = HttpServer::bind(addr, service.clone()).await?;
                tracing::info!(
                    "configuration files served over HTTP on {}",
                    server.local_addr()?
                );
                Some(tokio::spawn(server.run(stopped(stop_rx.clone()))))
            }
            _ => None,
        };
        let tftp = match (settings.tftp, &service) {
            (Some(addr), Some(service)) => {
                let server = TftpServer::bind(addr, service.clone()).await?;
                tracing::info!(
                    "configuration files served over TFTP on {}",
                    server.local_addr()?
                );
                Some(tokio::spawn(server.run(stopped(stop_rx.clone()))))
            }
            _ => None,
        };
        let legacy_listen = settings.legacy_listen;
        let listener = CapfListener::bind(settings, store.clone(), ca, trust).await?;
        let legacy = bind_legacy(&listener, legacy_listen).await?;
        let admin = super::admin::AdminSocket::bind(data)?;
        tracing::info!(
            "capf listening on {} (data {})",
            listener.local_addr()?,
            data.root().display()
        );
        let admin = tokio::spawn(admin.serve(data.clone(), store, stopped(stop_rx.clone())));
        let legacy = legacy.map(|l| tokio::spawn(l.run(stopped(stop_rx.clone()))));
        listener.run(stopped(stop_rx)).await;
        if let Some(task) = http {
            if let Err(e) = task.await {
                tracing::error!("http task: {e}");
            }
        }
        if let Some(task) = tftp {
            if let Err(e) = task.await {
                tracing::error!("tftp task: {e}");
            }
        }
        if let Some(legacy) = legacy {
            if let Err(e) = legacy.await {
                tracing::error!("legacy listener task: {e}");
            }
        }
        if let Err(e) = admin.await {
            tracing::error!("admin socket task: {e}");
        }
        tracing::info!("capf stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A listen address from the command line, or `None` for `off`.
fn address_or_off(flag: &str, value: &str) -> Result<Option<SocketAddr>> {
    match value {
        "off" | "none" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .with_context(|| format!("invalid {flag} '{addr}' (ADDR:PORT or off)")),
    }
}

/// The legacy TLS listener beside `listener`, if one is configured.
#[cfg(feature = "legacy-tls")]
async fn bind_legacy(
    listener: &CapfListener,
    addr: Option<SocketAddr>,
) -> Result<Option<CapfListener>> {
    match addr {
        Some(addr) => Ok(Some(listener.bind_legacy(addr).await?)),
        None => Ok(None),
    }
}

#[cfg(not(feature = "legacy-tls"))]
async fn bind_legacy(_: &CapfListener, _: Option<SocketAddr>) -> Result<Option<CapfListener>> {
    Ok(None)
}

/// What certificate authentication trusts: capf's own CAPF certificate for LSCs; the
/// Cisco manufacturing CAs built into the binary plus `certs/trust/*.pem` for MICs.
pub fn load_trust(data: &DataDir, ca: &Ca) -> Result<TrustAnchors> {
    let mut trust = TrustAnchors::new(ca.certificate_der())?.with_shipped_cisco_roots();
    let added = trust.add_pem_dir(&data.trust())?;
    tracing::info!(
        "trust: {} MIC anchors ({added} from {})",
        trust.mic_anchors().len(),
        data.trust().display()
    );
    Ok(trust)
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
