//! The accept loop shared by the CAPF listeners and the HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Accepts connections until `shutdown` completes. A peer `admit` refuses, or one
/// beyond the permits of `limit`, is closed at once; every other connection is handed
/// to `serve` on its own task, holding a permit until it finishes. Accept errors
/// (usually out of file descriptors) back off instead of spinning.
pub async fn accept_until<F, Fut>(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    what: &str,
    shutdown: impl Future<Output = ()>,
    admit: impl Fn(SocketAddr) -> bool,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
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
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{what} connection cap reached; connection closed");
            continue;
        };
        let connection = serve(tcp, peer);
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
}
