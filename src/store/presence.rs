//! A node's presence in a shared store: while it serves, each node holds the lease
//! `node:<node_name>` and renews it well before it expires. What needs to know that no
//! node serves from a store (`capf store migrate`, which must read a store that does
//! not change under it) reads [`Cluster::live_nodes`](super::Cluster::live_nodes).
//!
//! A node that stops releases its lease; one that dies is gone from the list once its
//! lease expires (`TTL`).

use super::Store;
use std::future::Future;
use std::time::Duration;

/// Leases of nodes are this prefix and the node's name.
pub const LEASE_PREFIX: &str = "node:";

/// How long a node counts as present after it last renewed.
const TTL: Duration = Duration::from_secs(30);

/// How often a node renews: three times per `TTL`, so a slow database round trip
/// does not make a serving node look gone.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Holds this node's presence lease until `shutdown`, then releases it.
pub async fn announce(store: Store, node_name: String, shutdown: impl Future<Output = ()>) {
    let key = format!("{LEASE_PREFIX}{node_name}");
    // The lease's holder is this process, so a second node that was given the same
    // name by mistake is noticed rather than sharing the lease.
    let holder = super::holder(&node_name);
    tokio::pin!(shutdown);
    let mut warned = false;
    loop {
        let (store2, key2, holder2) = (store.clone(), key.clone(), holder.clone());
        let renewed = tokio::task::spawn_blocking(move || {
            store2
                .cluster()
                .map_or(Ok(true), |cluster| cluster.try_lease(&key2, &holder2, TTL))
        })
        .await;
        match renewed {
            Ok(Ok(true)) => warned = false,
            Ok(Ok(false)) if !warned => {
                warned = true;
                tracing::error!(
                    "another running node has the node_name {node_name:?}: give every \
                     node of a cluster a name of its own (node_name in capf.toml)"
                );
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!("cannot renew this node's presence in the store: {e}");
            }
            _ => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        store
            .cluster()
            .map(|cluster| cluster.release_lease(&key, &holder))
    })
    .await;
}
