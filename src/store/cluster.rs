//! What nodes that share one store agree on besides records: who holds a lease (a
//! device's authentication turn, the renewal scheduler) and how many authentication
//! attempts an address has left (docs/cluster.md "Across nodes").
//!
//! Only a shared store has this ([`Store::cluster`](super::Store::cluster)): with sled,
//! one process owns the store, and the in-process turns and limiter are the whole
//! truth. Times are the database's clock, so nodes whose clocks differ agree.

use super::StoreError;
use std::time::Duration;

/// The per-address limit (settings `max_failures_per_address`,
/// `address_window_seconds`) and how long a reserved attempt may stay unfinished
/// before it no longer counts (a node that died mid-attempt).
#[derive(Clone, Copy, Debug)]
pub struct AddressLimit {
    pub max_failures: u32,
    pub window: Duration,
    pub attempt_ttl: Duration,
}

/// What [`Cluster::reserve_attempt`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    /// The address has used up its failures for this window.
    TooManyFailures,
    /// Failures plus attempts in flight reach the limit: try again shortly.
    Busy,
}

/// A node serving from a shared store, as it announced itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveNode {
    pub name: String,
    /// The digest of the certificates it presents ([`crate::ca::identity_digest`]).
    pub identity: String,
}

pub trait Cluster: Send + Sync {
    /// Takes the lease `key` for `holder` until `ttl` from now, unless someone else
    /// holds it unexpired. `holder` taking it again renews it.
    fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the lease up, if `holder` still holds it.
    fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    /// Reserves one authentication attempt of `address` for `holder`, in one
    /// transaction with every node's failures and attempts of that address.
    fn reserve_attempt(
        &self,
        address: &str,
        holder: &str,
        limit: AddressLimit,
    ) -> Result<Reservation, StoreError>;

    /// The attempt failed: counted against the address, and no longer in flight.
    fn attempt_failed(
        &self,
        address: &str,
        holder: &str,
        limit: AddressLimit,
    ) -> Result<(), StoreError>;

    /// The attempt ended without failing.
    fn release_attempt(&self, address: &str, holder: &str) -> Result<(), StoreError>;

    /// Records that `node` serves from this store until `ttl` from now, presenting the
    /// certificates of `identity` ([`crate::ca::identity_digest`]); renewed by calling
    /// again. `false` when another holder has the name and has not expired: two
    /// running nodes were given one `node_name`.
    fn announce(
        &self,
        node: &str,
        holder: &str,
        identity: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// `node` stops serving (if `holder` still holds its name).
    fn withdraw(&self, node: &str, holder: &str) -> Result<(), StoreError>;

    /// The nodes serving from this store now, in name order.
    fn live_nodes(&self) -> Result<Vec<LiveNode>, StoreError>;
}

/// A holder name no other node or session uses: the node's name and a random token.
pub fn holder(node: &str) -> String {
    format!("{node}/{:016x}", rand::random::<u64>())
}
