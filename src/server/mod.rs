//! The CAPF listener: TLS on port 3804, one task per phone driving a `Session`.
//! With the `legacy-tls` feature a second listener (OpenSSL, down to TLS 1.0) can run
//! beside it on its own port, sharing everything but the TLS layer.
//!
//! Built like mini-redis' server, with one change: every connection holds a slot in
//! the listener's connection table (`net::Connections`, the cap `max_sessions`), and
//! when the table is full the oldest connection still waiting for its TLS handshake or
//! its first message gives way to the new one, so clients that connect and say
//! nothing cannot keep a phone out. Shutdown falls out of ownership: when every slot
//! is dropped, every session has finished. Shutdown stops accepting, then waits up to
//! the grace period for sessions in flight.

pub mod client;
mod driver;
mod ids;
mod tls;
mod turns;

pub use ids::SessionIds;

use crate::ca::Ca;
use crate::metrics::Metrics;
use crate::model::Network;
use crate::net::{accept_until, BindError, Connections, FailureLimiter};
use crate::session::SessionPolicy;
use crate::settings::Settings;
use crate::store::{Store, Writer};
use crate::trust::TrustAnchors;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tls::Acceptor;
use tokio::net::TcpListener;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[cfg(feature = "legacy-tls")]
    #[error("legacy TLS configuration: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// What every session task shares.
pub struct Shared {
    pub store: Store,
    /// Where sessions record their changes (many to a transaction).
    pub writer: Writer,
    pub ca: Arc<Ca>,
    pub settings: Settings,
    pub policy: SessionPolicy,
    pub ids: SessionIds,
    /// Failed sessions per peer address.
    pub failures: FailureLimiter,
    /// One authentication in flight per device.
    pub turns: turns::DeviceTurns,
    /// The keys capf itself holds (its CAPF CA, the file signer), by
    /// [`crate::ca::key_identity`], with what each is. The protocol carries no proof
    /// that a phone possesses the key it sends, so capf refuses to certify these.
    pub own_keys: Vec<(Vec<u8>, &'static str)>,
    /// Where each session's outcome is counted (`/metrics`).
    pub metrics: Arc<Metrics>,
}

/// A bound CAPF listener, ready to run.
pub struct CapfListener {
    listener: TcpListener,
    acceptor: Acceptor,
    /// Networks whose clients this listener serves; empty serves everyone.
    allow: Vec<Network>,
    shared: Arc<Shared>,
    /// The connection table (the session cap), shared by every CAPF listener of the
    /// node.
    connections: Arc<Connections>,
}

impl CapfListener {
    /// Binds the listener of `settings.listen` with the CAPF identity of `ca`, trusting
    /// `trust` for certificate authentication.
    pub async fn bind(
        settings: Settings,
        store: Store,
        ca: Arc<Ca>,
        trust: TrustAnchors,
        own_keys: Vec<(Vec<u8>, &'static str)>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let acceptor = Acceptor::rustls(&ca)?;
        let listener = bind(settings.listen).await?;
        let connections = Connections::new("CAPF", settings.max_sessions);
        let settings_failures = (
            settings.max_failures_per_address,
            settings.address_window_seconds,
        );
        // Longer than an authentication can take (a message each way); shorter only
        // matters for a node that died holding a turn.
        let attempt_ttl = settings.message_timeout() * 3;
        let shared = Arc::new(Shared {
            writer: Writer::start(&store)?,
            turns: turns::DeviceTurns::new(&store, &settings.node_name, attempt_ttl),
            failures: FailureLimiter::new(
                settings_failures.0,
                Duration::from_secs(settings_failures.1),
            )
            .across_nodes(&store, &settings.node_name, attempt_ttl),
            store,
            ca,
            policy: session_policy(&settings, Some(Arc::new(trust))),
            settings,
            ids: SessionIds::default(),
            own_keys,
            metrics,
        });
        Ok(CapfListener {
            listener,
            acceptor,
            allow: Vec::new(),
            shared,
            connections,
        })
    }

    /// Binds the legacy TLS listener (docs/legacy-tls.md) on `addr`, serving only
    /// `legacy_allow`. It shares this listener's state: session ids, the session cap,
    /// the failure limiter, the store and the CA.
    #[cfg(feature = "legacy-tls")]
    pub async fn bind_legacy(&self, addr: SocketAddr) -> Result<CapfListener, ServerError> {
        let legacy = CapfListener {
            listener: bind(addr).await?,
            acceptor: Acceptor::openssl(&self.shared.ca)?,
            allow: self.shared.settings.legacy_allow.clone(),
            shared: self.shared.clone(),
            connections: self.connections.clone(),
        };
        let local = legacy.local_addr().map_err(|source| BindError {
            addr,
            error: source,
        })?;
        let allow: Vec<String> = legacy.allow.iter().map(Network::to_string).collect();
        let allow = if allow.is_empty() {
            "any".to_string()
        } else {
            allow.join(",")
        };
        tracing::warn!(
            addr = %local,
            allow = %allow,
            "legacy TLS listener: TLS 1.0 and static-RSA CBC suites at OpenSSL security level 0"
        );
        Ok(legacy)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts phones until `shutdown` completes, then waits up to the grace period for
    /// the sessions in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let admit = |peer: SocketAddr| {
            if !self.allows(peer) {
                tracing::info!(%peer, "address not in legacy_allow; connection closed");
                return false;
            }
            let now = tokio::time::Instant::now().into_std();
            if !self.shared.failures.allows(peer.ip(), now) {
                tracing::info!(%peer, "too many failed sessions from this address; connection closed");
                return false;
            }
            true
        };
        let serve = |tcp, peer, slot| {
            let acceptor = self.acceptor.clone();
            let shared = self.shared.clone();
            async move { driver::serve_connection(&shared, acceptor, tcp, peer, slot).await }
        };
        let connections = &self.connections;
        accept_until(&self.listener, connections, "CAPF", shutdown, admit, serve).await;

        // Connections still in their handshake or before their first message have no
        // session to finish.
        self.connections.close_waiting();
        let grace = self.shared.settings.shutdown_grace();
        tracing::info!("shutting down: waiting up to {grace:?} for sessions in flight");
        if tokio::time::timeout(grace, self.connections.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} sessions still running after the grace period; closing them",
                self.shared.ids.live()
            );
        }
        if let Err(e) = self.shared.store.flush_async().await {
            tracing::error!("final store flush failed: {e}");
        }
    }

    fn allows(&self, peer: SocketAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(peer.ip()))
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| {
        BindError {
            addr,
            error: source,
        }
        .into()
    })
}

/// The session policy the node settings imply, with the trust anchors for certificate
/// authentication.
fn session_policy(settings: &Settings, trust: Option<Arc<TrustAnchors>>) -> SessionPolicy {
    SessionPolicy {
        max_payload: settings.max_payload,
        max_auth_failures: settings.max_auth_failures,
        lockout_secs: settings.lockout_seconds,
        trust,
        allow_expired_mic: settings.allow_expired_mic,
        require_sudi: settings.require_sudi,
    }
}
