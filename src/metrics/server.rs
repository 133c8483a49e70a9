//! The admin listener (`metrics` in capf.toml, default `127.0.0.1:9380`): `/metrics`,
//! `/healthz` and `/readyz` over plain HTTP, for monitoring systems and load
//! balancers, never for phones.
//!
//! It is the HTTP server of the configuration files (`phone_config::http`) with other
//! answers: the same request head limits (8 KiB, `http_head_timeout`), the same write
//! timeout and the same connection table, capped at [`MAX_CONNECTIONS`] (a scraper
//! needs one). It has no authentication: keep it on the loopback, or behind a proxy
//! that authenticates (docs/operations.md "Monitoring").

use super::{Metrics, CONTENT_TYPE};
use crate::net::{accept_until, BindError, Connections};
use crate::phone_config::http::{serve_connection, Answer, Response};
use crate::phone_config::service::ConfigService;
use crate::settings::DataDir;
use crate::store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Connections the admin listener holds at once; past it the oldest still waiting for
/// its request head gives way.
pub const MAX_CONNECTIONS: usize = 16;

/// Where the node stands, for `/readyz`.
#[derive(Clone, Default)]
pub struct Serving(Arc<AtomicU8>);

impl Serving {
    const STARTING: u8 = 0;
    const SERVING: u8 = 1;
    const STOPPING: u8 = 2;

    /// Every listener is bound and running (unless shutdown has begun already).
    pub fn started(&self) {
        let _ = self.0.compare_exchange(
            Self::STARTING,
            Self::SERVING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Shutdown has begun: no new phones are taken.
    pub fn stopping(&self) {
        self.0.store(Self::STOPPING, Ordering::Relaxed);
    }

    fn state(&self) -> Result<(), &'static str> {
        match self.0.load(Ordering::Relaxed) {
            Self::SERVING => Ok(()),
            Self::STARTING => Err("starting: the listeners are not running yet"),
            _ => Err("shutting down"),
        }
    }
}

/// What `/readyz` checks and `/metrics` reads.
pub struct Node {
    pub store: Store,
    pub data: DataDir,
    /// The configuration service, when HTTP or TFTP delivery runs: its signer must be
    /// usable for the node to be ready.
    pub service: Option<Arc<ConfigService>>,
    pub serving: Serving,
    /// The node's assessment, shared with the web admin's dashboard.
    pub health: Arc<crate::health::Latest>,
}

/// A bound admin listener, ready to run.
pub struct MetricsServer {
    listener: TcpListener,
    admin: Arc<Admin>,
    connections: Arc<Connections>,
    head_timeout: Duration,
}

impl MetricsServer {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        node: Node,
        head_timeout: Duration,
    ) -> Result<MetricsServer, BindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| BindError { addr, error })?;
        // The signer the service loaded at start stays the one it signs with: its dates
        // are read once.
        let signer_dates = node.service.as_ref().map(|service| {
            service
                .signer()
                .map_err(|e| format!("file signer unusable: {e}"))
                .and_then(|signer| {
                    crate::ca::cert_info(signer.certificate_der())
                        .map(|c| (c.not_before, c.not_after))
                        .map_err(|e| format!("file signer certificate unreadable: {e}"))
                })
        });
        Ok(MetricsServer {
            listener,
            admin: Arc::new(Admin {
                metrics,
                node,
                signer_dates,
            }),
            connections: Connections::new("admin", MAX_CONNECTIONS),
            head_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let head_timeout = self.head_timeout;
        let admin = self.admin.clone();
        let serve =
            |tcp, peer, slot| serve_connection(admin.clone(), head_timeout, tcp, peer, slot);
        accept_until(
            &self.listener,
            &self.connections,
            "admin",
            shutdown,
            |_| true,
            serve,
        )
        .await;
    }
}

struct Admin {
    metrics: Arc<Metrics>,
    node: Node,
    /// The loaded signer's notBefore and notAfter, or why there is no usable signer;
    /// `None` when the node delivers no files.
    signer_dates: Option<Result<(i64, i64), String>>,
}

impl Answer for Admin {
    const QUIET: bool = true;

    async fn answer(&self, method: &str, target: &str) -> Response {
        if method != "GET" && method != "HEAD" {
            return Response::error(405, "method not allowed");
        }
        // Scrapers may add a query (`?name[]=…`); the page is the same.
        let path = target.split('?').next().unwrap_or_default();
        match path {
            "/metrics" => {
                self.refresh().await;
                Response {
                    status: 200,
                    content_type: CONTENT_TYPE,
                    body: self.metrics.render().into_bytes().into(),
                    served: "metrics".into(),
                    written: None,
                }
            }
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => match self.ready().await {
                Ok(()) => Response::text(200, "ready\n"),
                Err(why) => Response::text(503, format!("not ready: {why}\n")),
            },
            _ => Response::error(404, "not an admin page"),
        }
    }
}

impl Admin {
    /// The device and certificate figures of the node's latest assessment, at most
    /// [`SCAN_EVERY`](super::SCAN_EVERY) old (one pass over every device record, what `capf status` does,
    /// shared with the web admin's dashboard).
    async fn refresh(&self) {
        match self.node.health.get().await {
            Ok(assessed) => self.metrics.set_node(&assessed.health, assessed.took),
            Err(e) => tracing::error!("metrics: cannot read the devices: {e:#}"),
        }
    }

    /// Whether the node can serve phones now, or the first reason it cannot. The
    /// store's answer is waited for off the reactor: a database that is down answers
    /// only when the store's own timeouts end the wait.
    async fn ready(&self) -> Result<(), String> {
        self.node.serving.state()?;
        let store = self.node.store.clone();
        let probed = tokio::task::spawn_blocking(move || store.probe())
            .await
            .map_err(|e| e.to_string())
            .and_then(|probed| probed.map_err(|e| e.to_string()));
        if let Err(e) = probed {
            let store = &self.node.store;
            return Err(format!(
                "the {} store {} does not answer: {e}",
                store.kind(),
                store.location()
            ));
        }
        if let Some(dates) = &self.signer_dates {
            let (not_before, not_after) = dates.clone()?;
            let now = crate::model::now();
            if now < not_before {
                return Err("file signer certificate not valid yet".into());
            }
            if not_after < now {
                return Err("file signer certificate expired".into());
            }
        }
        Ok(())
    }
}
