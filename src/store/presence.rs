//! A node's presence in a shared store: while it serves, each node keeps a row of
//! the `nodes` table with its `node_name` and the digest of the certificates it
//! presents ([`crate::ca::identity_digest`]), renewed well before it expires.
//!
//! Two things read it: what must know that no node serves from a store (`capf store
//! migrate`, which needs a store that does not change under it), and the health
//! check, which reports a node whose certificates differ from this one's: a node
//! left behind by a CA or signer rollover would hand phones an ITL or files they do
//! not trust (docs/cluster.md "Node identity").
//!
//! A node that stops removes its row; one that dies is gone once its row expires
//! ([`TTL`]).

use super::{LiveNode, Store};
use std::future::Future;
use std::time::Duration;

/// How long a node counts as present after it last renewed.
pub const TTL: Duration = Duration::from_secs(30);

/// How often a node renews: three times per `TTL`, so a slow database round trip
/// does not make a serving node look gone.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The name and identity under which `capf store migrate` marks a shared store it is
/// copying from or into: no node starts on it meanwhile, and the migration refuses a
/// store that has any row (a node, or another migration).
pub const MIGRATION: &str = "capf store migrate";

/// The row of a migration running on the store, if any.
pub fn migration(nodes: &[LiveNode]) -> Option<&LiveNode> {
    nodes.iter().find(|n| n.identity == MIGRATION)
}

/// The live nodes whose certificates differ from `identity` (a migration's row is
/// not a node).
pub fn differing<'a>(nodes: &'a [LiveNode], identity: &str) -> Vec<&'a LiveNode> {
    nodes
        .iter()
        .filter(|n| n.identity != identity && n.identity != MIGRATION)
        .collect()
}

/// Keeps this node's presence, with the digest of its certificates `identity`, until
/// `shutdown`, then removes it. Logs once when another node presents other
/// certificates, and when another running node has this node's name.
pub async fn announce(
    store: Store,
    node_name: String,
    identity: String,
    shutdown: impl Future<Output = ()>,
) {
    // The row's holder is this process, so a second node that was given the same
    // name by mistake is noticed rather than sharing the row.
    let holder = super::holder(&node_name);
    tokio::pin!(shutdown);
    let mut warned_name = false;
    let mut warned_store = false;
    let mut reported: Vec<LiveNode> = Vec::new();
    loop {
        let (name2, holder2, identity2) = (node_name.clone(), holder.clone(), identity.clone());
        let renewed = store
            .in_cluster(move |cluster| {
                let announced = cluster.announce(&name2, &holder2, &identity2, TTL)?;
                Ok((announced, cluster.live_nodes()?))
            })
            .await;
        match renewed {
            Ok(None) => break,
            Ok(Some((announced, nodes))) => {
                warned_store = false;
                if !announced && !warned_name {
                    tracing::error!(
                        "another running node has the node_name {node_name:?}: give every \
                         node of a cluster a name of its own (node_name in capf.toml)"
                    );
                }
                warned_name = !announced;
                let differ: Vec<LiveNode> =
                    differing(&nodes, &identity).into_iter().cloned().collect();
                for node in differ.iter().filter(|n| !reported.contains(n)) {
                    tracing::error!(
                        node = %node.name,
                        "node {} presents other certificates than this node ({}): phones \
                         moving between them may stop trusting their files. Bring every node \
                         to the same certs/ (`capf node export` on the node that was rolled \
                         over, `capf node sync` on the others, then restart them)",
                        node.name,
                        node_name
                    );
                }
                reported = differ;
            }
            Err(e) if !warned_store => {
                warned_store = true;
                tracing::warn!("cannot renew this node's presence in the store: {e}");
            }
            _ => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    let _ = store
        .in_cluster(move |cluster| cluster.withdraw(&node_name, &holder))
        .await;
}
