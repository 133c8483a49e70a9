//! A running node: everything `capf serve` starts, in one place, so the integration
//! tests start exactly what production starts.
//!
//! [`Node::bind`] loads the CAPF identity and the trust anchors from the data directory
//! and binds every listener the settings name: CAPF on 3804 (and the legacy TLS port),
//! the configuration delivery over HTTP and TFTP, and the admin listener of `/metrics`,
//! `/healthz` and `/readyz`. [`Node::run`] serves them until the shutdown future
//! completes, then waits for each to finish its sessions. The admin socket belongs to
//! the CLI (`cli::admin`); `serve` runs it beside the node.

use crate::ca::Ca;
use crate::metrics::server::{MetricsServer, Node as AdminNode, Serving};
use crate::metrics::Metrics;
use crate::phone_config::crl::RevocationList;
use crate::phone_config::http::HttpServer;
use crate::phone_config::kept::KeptFiles;
use crate::phone_config::service::ConfigService;
use crate::phone_config::tftp::TftpServer;
use crate::server::CapfListener;
use crate::settings::{DataDir, Settings};
use crate::store::{Store, StoreError};
use crate::trust::TrustAnchors;
use anyhow::Result;
use rustls_pki_types::pem::PemObject;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// How often the running node re-assesses its health (docs/operations.md "Status").
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every listener of a node, bound and ready to run.
pub struct Node {
    /// For the health watch (`health::watch`) and the renewal scheduler.
    store: Store,
    data: DataDir,
    /// LSC renewal, when `renew_before_days` turns it on, and this node's name (the
    /// holder of the renewal lease in a shared store).
    renewal: Option<(crate::renewal::Policy, String)>,
    /// This node's `node_name` and the digest of its certificates: its presence in a
    /// shared store.
    node_name: String,
    identity: String,
    capf: CapfListener,
    legacy: Option<CapfListener>,
    http: Option<HttpServer>,
    tftp: Option<TftpServer>,
    /// `/metrics`, `/healthz`, `/readyz`; `None` when off or when its address could not
    /// be bound.
    admin: Option<MetricsServer>,
    /// What `/readyz` reports of the listeners.
    serving: Serving,
    /// The web admin, when `web` is set (off by default).
    web: Option<crate::web::WebServer>,
}

impl Node {
    /// Loads the CA and trust anchors of `data` and binds every listener `settings`
    /// names. Nothing is served until [`Node::run`].
    /// `commands` runs what the web admin's pages ask for (`cli::web_commands`), when
    /// it is on.
    pub async fn bind(
        data: &DataDir,
        settings: Settings,
        store: Store,
        commands: crate::web::Commands,
    ) -> Result<Node> {
        refuse_during_migration(&store).await?;
        // One CA for the CAPF listener and the CRL the HTTP listener serves.
        let ca = Arc::new(
            Ca::load(&data.certs(), settings.lsc_validity_days)?.with_crl_url(&settings.crl_url),
        );
        let trust = load_trust(data, &ca)?;
        let metrics = Arc::new(Metrics::new());

        // One configuration service for HTTP and TFTP, loaded only if either runs.
        let service = (settings.http.is_some() || settings.tftp.is_some()).then(|| {
            let mut service =
                ConfigService::load(data, &settings, store.clone()).with_metrics(metrics.clone());
            if let Some(kept) = KeptFiles::open(data.kept_files()) {
                service = service.with_kept_files(kept);
            }
            let service = Arc::new(service);
            sweep_kept_files(service.clone(), store.clone());
            if let Err(e) = service.signer() {
                tracing::error!(
                    "signed configuration files and the ITL are not served: {e} \
                     (fix certs/tftp.pem and certs/tftp.key, then restart)"
                );
            }
            service
        });
        let http = match (settings.http, &service) {
            (Some(addr), Some(service)) => {
                let http = HttpServer::bind(
                    addr,
                    service.clone(),
                    settings.http_max_connections,
                    settings.http_head_timeout(),
                )
                .await?;
                // The CRL, signed by the CAPF CA, beside the files.
                Some(http.with_crl(RevocationList::new(ca.clone(), store.clone())))
            }
            _ => None,
        };
        let tftp = match (settings.tftp, &service) {
            (Some(addr), Some(service)) => Some(TftpServer::bind(addr, service.clone()).await?),
            _ => None,
        };
        let health =
            crate::health::Latest::new(store.clone(), data.clone(), crate::metrics::SCAN_EVERY);
        let web = match settings.web {
            Some(addr) => {
                let web = crate::web::WebServer::bind(
                    addr,
                    data,
                    store.clone(),
                    &settings,
                    commands,
                    health.clone(),
                );
                Some(web.await?)
            }
            None => None,
        };
        let own_keys = own_keys(data, &ca);
        check_open_file_limit(&settings);
        let renewal =
            crate::renewal::Policy::of(&settings).map(|p| (p, settings.node_name.clone()));
        let node_name = settings.node_name.clone();
        let identity = crate::ca::identity_digest(&data.certs())?;
        let legacy_listen = settings.legacy_listen;
        let metrics_addr = settings.metrics;
        let head_timeout = settings.http_head_timeout();
        let capf = CapfListener::bind(
            settings,
            store.clone(),
            ca,
            trust,
            own_keys,
            metrics.clone(),
        )
        .await?;
        let legacy = bind_legacy(&capf, legacy_listen).await?;
        let serving = Serving::default();
        // Last: a phone-facing port that cannot be bound stops the node before this.
        let admin = match metrics_addr {
            Some(addr) => {
                let node = AdminNode {
                    store: store.clone(),
                    data: data.clone(),
                    service: service.clone(),
                    serving: serving.clone(),
                    health: health.clone(),
                };
                match MetricsServer::bind(addr, metrics, node, head_timeout).await {
                    Ok(admin) => Some(admin),
                    // Phones come first: a monitoring port taken by something else
                    // does not keep them from their certificates and files.
                    Err(e) => {
                        tracing::error!(
                            "{e}: /metrics, /healthz and /readyz are not served \
                             (set `metrics` in capf.toml to a free address, or \"off\")"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Node {
            data: data.clone(),
            store,
            renewal,
            node_name,
            identity,
            capf,
            legacy,
            http,
            tftp,
            admin,
            serving,
            web,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// Where phones reach CAPF (useful when the settings asked for port 0).
    pub fn capf_addr(&self) -> std::io::Result<SocketAddr> {
        self.capf.local_addr()
    }

    pub fn legacy_addr(&self) -> Option<SocketAddr> {
        self.legacy.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|h| h.local_addr().ok())
    }

    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        self.tftp.as_ref().and_then(|t| t.local_addr().ok())
    }

    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|w| w.local_addr().ok())
    }

    /// Serves every listener until `shutdown` completes, then waits for each to end.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let serving = self.serving.clone();
        tokio::spawn(async move {
            shutdown.await;
            serving.stopping();
            let _ = stop_tx.send(true);
        });
        // The admin listener outlives the others' shutdown, so that `/readyz` says
        // "shutting down" while sessions finish; it stops once they have.
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = self.admin.map(|admin| {
            if let Ok(addr) = admin.local_addr() {
                tracing::info!("metrics and health served over HTTP on {addr}");
            }
            tokio::spawn(admin.run(stopped(admin_stop_rx)))
        });
        let mut tasks = Vec::new();
        if let Some(web) = self.web {
            let listening = crate::net::Listening {
                capf: self
                    .capf
                    .local_addr()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
                http: self.http.as_ref().and_then(|h| h.local_addr().ok()),
                tftp: self.tftp.as_ref().and_then(|t| t.local_addr().ok()),
            };
            if let Ok(addr) = web.local_addr() {
                tracing::info!("web admin on https://{addr}/");
            }
            let stop = stopped(stop_rx.clone());
            tasks.push(("web admin", tokio::spawn(web.run(listening, stop))));
        }
        if let Some(http) = self.http {
            if let Ok(addr) = http.local_addr() {
                tracing::info!("configuration files served over HTTP on {addr}");
            }
            tasks.push(("http", tokio::spawn(http.run(stopped(stop_rx.clone())))));
        }
        if let Some(tftp) = self.tftp {
            if let Ok(addr) = tftp.local_addr() {
                tracing::info!("configuration files served over TFTP on {addr}");
            }
            tasks.push(("tftp", tokio::spawn(tftp.run(stopped(stop_rx.clone())))));
        }
        tasks.push((
            "health watch",
            tokio::spawn(crate::health::watch(
                self.store.clone(),
                self.data,
                HEALTH_EVERY,
                stopped(stop_rx.clone()),
            )),
        ));
        if self.store.cluster().is_some() {
            tasks.push((
                "presence",
                tokio::spawn(crate::store::presence::announce(
                    self.store.clone(),
                    self.node_name.clone(),
                    self.identity.clone(),
                    stopped(stop_rx.clone()),
                )),
            ));
        }
        if let Some((policy, node_name)) = self.renewal {
            tasks.push((
                "renewal",
                tokio::spawn(crate::renewal::run(
                    self.store.clone(),
                    policy,
                    node_name,
                    crate::renewal::CHECK_EVERY,
                    stopped(stop_rx.clone()),
                )),
            ));
        }
        if let Some(legacy) = self.legacy {
            tasks.push((
                "legacy listener",
                tokio::spawn(legacy.run(stopped(stop_rx.clone()))),
            ));
        }
        self.serving.started();
        self.capf.run(stopped(stop_rx)).await;
        for (what, task) in tasks {
            if let Err(e) = task.await {
                tracing::error!("{what} task: {e}");
            }
        }
        let _ = admin_stop_tx.send(true);
        if let Some(task) = admin {
            if let Err(e) = task.await {
                tracing::error!("admin listener task: {e}");
            }
        }
    }
}

/// A shared store that `capf store migrate` is copying (from or into) is not served:
/// a node would read a half-copied store, or change one that is being copied.
async fn refuse_during_migration(store: &Store) -> Result<()> {
    let nodes = store.in_cluster(|cluster| cluster.live_nodes()).await?;
    if nodes.is_some_and(|nodes| crate::store::presence::migration(&nodes).is_some()) {
        anyhow::bail!(
            "`capf store migrate` is copying this store now: start the node once it has \
             finished (and, for its destination, once capf.toml names it)"
        );
    }
    Ok(())
}

/// Warns when the process may not open as many sockets as the connection caps allow.
/// The caps only protect phones if every connection up to them is accepted: past the
/// open-file limit `accept` fails before the oldest idle connection can make room.
fn check_open_file_limit(settings: &Settings) {
    let needed = settings.max_sessions
        + settings.http.map_or(0, |_| settings.http_max_connections)
        + settings
            .tftp
            .map_or(0, |_| crate::phone_config::tftp::MAX_TRANSFERS)
        // The store, the admin socket, the listeners and the log.
        + 64;
    let Some(limit) = open_file_limit() else {
        return;
    };
    if limit < needed as u64 {
        tracing::warn!(
            "the open-file limit ({limit}) is below what the connection caps need ({needed}): \
             raise it (LimitNOFILE= under systemd) or lower max_sessions / http_max_connections"
        );
    }
}

/// The soft limit on open files, from /proc/self/limits (Linux); `None` elsewhere or
/// when unlimited.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A future that completes once `rx` says stop.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Removes, in the background, the kept files no request will read again: those of
/// devices deleted while the node was down (or before it restarted). A device
/// the store cannot be asked about is taken as known.
fn sweep_kept_files(service: Arc<ConfigService>, store: Store) {
    tokio::task::spawn_blocking(move || {
        let Some(kept) = service.kept_files() else {
            return;
        };
        let removed = kept.sweep(|device| !matches!(store.get_device(device), Ok(None)));
        if removed > 0 {
            tracing::info!("removed {removed} kept files no device will fetch again");
        }
    });
}

/// The keys capf holds, which no phone may have certified as its own: the CAPF CA's,
/// the file signer's and the ITL recovery identity's (a signer that cannot be read is simply not listed; the delivery
/// servers report it).
fn own_keys(data: &DataDir, ca: &Ca) -> Vec<(Vec<u8>, &'static str)> {
    let read = |path: std::path::PathBuf| {
        rustls_pki_types::CertificateDer::from_pem_file(path)
            .ok()
            .map(|c| c.to_vec())
    };
    let certs = data.certs();
    let signer = read(data.tftp_cert());
    let recovery = read(certs.join(crate::ca::recovery::RECOVERY_CERT_FILE));
    [
        (
            Some(ca.certificate_der().to_vec()),
            "capf's own CAPF CA key",
        ),
        (
            crate::ca::rollover::next_certificate(&certs),
            "capf's staged CAPF CA key",
        ),
        (
            crate::ca::rollover::previous_certificate(&certs),
            "capf's previous CAPF CA key",
        ),
        (signer, "capf's configuration file signer key"),
        (recovery, "capf's ITL recovery key"),
    ]
    .into_iter()
    .filter_map(|(der, what)| {
        let spki = crate::ca::cert_info(&der?).ok()?.public_key;
        Some((crate::ca::key_identity(&spki).ok()?, what))
    })
    .collect()
}

/// Opens the store of an initialised data directory for serving. Every record is read
/// once before anything is served: a damaged store stops the server here rather than
/// failing phones and commands one by one.
pub fn open_store(data: &DataDir, settings: &Settings) -> Result<Store> {
    // A command run a moment earlier (`capf serve &` and then `capf device add` at once)
    // holds the store for as long as it runs: give it time before calling the store
    // taken by another node.
    let until = std::time::Instant::now() + COMMAND_PATIENCE;
    loop {
        match Store::open_configured(&data.db(), &settings.store) {
            Ok(s) => {
                s.check()?;
                return Ok(s);
            }
            Err(StoreError::Locked(_)) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(StoreError::Locked(_)) => anyhow::bail!(
                "another capf process is serving {} (only one process can own the store)",
                data.root().display()
            ),
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long `serve` waits for a command that holds the store to finish.
const COMMAND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// What certificate authentication trusts: capf's own CAPF certificate for LSCs; the
/// Cisco manufacturing CAs built into the binary plus `certs/trust/*.pem` for MICs.
pub fn load_trust(data: &DataDir, ca: &Ca) -> Result<TrustAnchors> {
    let mut trust = TrustAnchors::new(ca.certificate_der())?.with_shipped_cisco_roots();
    if let Some(previous) = crate::ca::rollover::previous_certificate(&data.certs()) {
        // A CA rollover is under way: LSCs of the previous CAPF CA still authenticate.
        trust.add_lsc_issuer(&previous, "previous CAPF certificate")?;
        tracing::info!("trust: LSCs of the previous CAPF certificate still authenticate (`capf ca retire` ends that)");
    }
    let added = trust.add_pem_dir(&data.trust())?;
    let added_sudi = trust.add_sudi_pem_dir(&data.sudi_trust())?;
    tracing::info!(
        "trust: {} MIC anchors ({added} from {}), {} SUDI anchors ({added_sudi} from {})",
        trust.mic_anchors().len(),
        data.trust().display(),
        trust.sudi_anchors().len(),
        data.sudi_trust().display()
    );
    Ok(trust)
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
async fn bind_legacy(_: &CapfListener, addr: Option<SocketAddr>) -> Result<Option<CapfListener>> {
    match addr {
        Some(_) => anyhow::bail!(
            "legacy_listen / --legacy-tls-listen needs capf built with `--features legacy-tls`"
        ),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_open_file_limit_is_read_on_linux() {
        assert!(super::open_file_limit().is_some_and(|n| n > 0));
    }
}
