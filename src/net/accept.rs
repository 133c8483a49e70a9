//! The accept loop shared by the CAPF listeners and the HTTP server.

use super::connections::{Connections, Slot};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections until `shutdown` completes. A peer `admit` refuses is closed at
/// once; every other connection gets a slot in `connections` (the oldest waiting
/// connection giving way when the table is full, see `connections.rs`) and is handed
/// to `serve` on its own task, which holds the slot until it finishes. Only when every
/// slot belongs to a connection that made progress is the new one closed at once.
/// Accept errors (usually out of file descriptors) back off instead of spinning.
pub async fn accept_until<F, Fut>(
    listener: &TcpListener,
    connections: &Arc<Connections>,
    what: &str,
    shutdown: impl Future<Output = ()>,
    admit: impl Fn(SocketAddr) -> bool,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Slot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if !admit(peer) {
            continue;
        }
        let Some(slot) = connections.admit(peer.ip()) else {
            tracing::warn!(%peer, "{what} connection cap reached, every connection in session; connection closed");
            continue;
        };
        tokio::spawn(serve(tcp, peer, slot));
    }
}
