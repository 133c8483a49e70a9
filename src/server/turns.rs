//! One authentication in flight per device.
//!
//! The lockout counts failures in the device record, which the store writes after the
//! attempt. Two sessions for one device evaluated at once would both read the record
//! before either failure is counted, so a burst of concurrent guesses could get more
//! strings evaluated than `max_auth_failures`. Each session therefore takes the device's
//! turn before it reads the record, and gives it back only once the outcome of its
//! authentication is committed: the next session reads a record that counts every
//! earlier attempt, and is refused without evaluation once the device is locked.
//!
//! Sessions for other devices never wait on each other.
//!
//! Nodes that share a store (docs/cluster.md) each keep their own turns, and a turn
//! taken here is then also a lease in the store (`device:NAME`), so that one session
//! in the whole cluster authenticates a device at a time. The lease expires on its
//! own should the node die holding it.

use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// How often a session waiting for a device's turn held by another node asks again.
const LEASE_RETRY: Duration = Duration::from_millis(20);

/// How long a session waits for a store that does not answer before it ends.
const STORE_GRACE: Duration = Duration::from_secs(2);

/// Each device with a session holding or waiting for its turn, and that turn.
type Entries = HashMap<String, Arc<tokio::sync::Mutex<()>>>;
type Table = Mutex<Entries>;

/// The turns of every device with a session waiting or authenticating.
#[derive(Default)]
pub struct DeviceTurns {
    /// Entries exist only while some session holds or waits for the device's turn.
    turns: Arc<Table>,
    /// With a shared store: it, this node's name, and how long a lease lasts.
    shared: Option<(Store, String, Duration)>,
}

/// A device's turn: authentication of that device by other sessions waits until this
/// is dropped.
pub struct DeviceTurn<'a> {
    turns: &'a DeviceTurns,
    /// Always `Some` until dropped.
    held: Option<Held>,
    /// The store's lease, with a shared store: its key and holder.
    lease: Option<(String, String)>,
}

/// The turn as this node holds it: dropping it lets the next session of the device
/// go, and forgets the device when nobody else waits for it.
struct Held {
    table: Arc<Table>,
    device: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl DeviceTurns {
    /// Turns that are also leases in `store` when other nodes share it; a lease lasts
    /// `lease` (longer than an authentication can take: it ends early only for a node
    /// that died holding it).
    pub fn new(store: &Store, node: &str, lease: Duration) -> DeviceTurns {
        DeviceTurns {
            turns: Arc::default(),
            shared: store
                .is_shared()
                .then(|| (store.clone(), node.to_string(), lease)),
        }
    }

    /// Waits for `device`'s turn (callers bound the wait). A store that does not
    /// answer is waited for like a turn held elsewhere for [`STORE_GRACE`] (a failover
    /// that short goes unnoticed), then its error comes back: the session ends at once
    /// instead of when the phone gives up.
    pub async fn take(&self, device: &str) -> Result<DeviceTurn<'_>, StoreError> {
        let lock = self.table().entry(device.to_string()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        let mut turn = DeviceTurn {
            turns: self,
            held: Some(Held {
                table: self.turns.clone(),
                device: device.to_string(),
                lock,
                guard: Some(guard),
            }),
            lease: None,
        };
        if let Some((store, node, ttl)) = &self.shared {
            let key = format!("device:{device}");
            let holder = crate::store::holder(node);
            let mut failing_since = None;
            loop {
                let (key2, holder2, ttl2) = (key.clone(), holder.clone(), *ttl);
                let taken = store
                    .in_cluster(move |cluster| cluster.try_lease(&key2, &holder2, ttl2))
                    .await;
                match taken {
                    // (`None`: no cluster after all, so no lease to wait for.)
                    Ok(Some(true) | None) => break,
                    Ok(Some(false)) => failing_since = None,
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= STORE_GRACE {
                            return Err(e);
                        }
                    }
                }
                tokio::time::sleep(LEASE_RETRY).await;
            }
            turn.lease = Some((key, holder));
        }
        Ok(turn)
    }

    /// Devices with a session waiting or authenticating.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Entries> {
        lock_table(&self.turns)
    }
}

fn lock_table(table: &Table) -> std::sync::MutexGuard<'_, Entries> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for DeviceTurn<'_> {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        match (self.lease.take(), &self.turns.shared) {
            // The lease is given back off the runtime's workers (a round trip to the
            // database); the turn here is held until it is, so this node's next
            // session for the device waits on it rather than asking the store again
            // and again.
            // (Should the release never run, `held` goes with it.)
            (Some((key, holder)), Some((store, _, _))) => store.in_cluster_later(move |cluster| {
                if let Err(e) = cluster.release_lease(&key, &holder) {
                    // It expires on its own; until then the device's next session waits.
                    tracing::warn!(device = %held.device, "cannot give the device's turn back: {e}");
                }
                drop(held);
            }),
            _ => drop(held),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut table = lock_table(&self.table);
        // The table's handle and ours: nobody else waits, so the entry can go.
        if Arc::strong_count(&self.lock) == 2 {
            table.remove(&self.device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_turn_per_device_and_none_left_behind() {
        let turns = Arc::new(DeviceTurns::default());
        let first = turns.take("SEPA").await.unwrap();
        let _other_device = turns.take("SEPB").await.unwrap();
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.take("SEPA").await.unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "SEPA's second session waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(_other_device);
        assert_eq!(turns.len(), 0);
    }

    /// Two nodes on one shared store: a turn taken on one makes the other's session
    /// for that device wait until it is given back, and a turn left by a node that
    /// died (never given back) ends when its lease expires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_holds_across_nodes_sharing_a_store() {
        use crate::store::backend_tests::{postgres_store, postgres_url};
        let Some(url) = postgres_url("turns") else {
            return;
        };
        let pg = postgres_store(&url, "turns");
        let schema = pg.schema().unwrap().to_string();
        let node_a = Store::from(pg.clone());
        let node_b =
            Store::from(crate::store::PgStore::open_in_schema(&url, Some(&schema)).unwrap());
        let lease = Duration::from_millis(600);
        let a = Arc::new(DeviceTurns::new(&node_a, "a", lease));
        let b = Arc::new(DeviceTurns::new(&node_b, "b", lease));

        let on_a = a.take("SEPA").await.unwrap();
        let _other_device = b.take("SEPB").await.unwrap();
        let waiting = {
            let b = b.clone();
            tokio::spawn(async move {
                let _turn = b.take("SEPA").await.unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "B waits for A's turn on SEPA");
        drop(on_a);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();

        // A dies holding a turn: its lease is never released, and ends on its own.
        std::mem::forget(a.take("SEPC").await.unwrap());
        let started = std::time::Instant::now();
        let _on_b = tokio::time::timeout(Duration::from_secs(5), b.take("SEPC"))
            .await
            .expect("the lease expired");
        assert!(started.elapsed() >= Duration::from_millis(300), "B waited");

        // Given back off the runtime: the node's next session for the device takes the
        // turn as soon as the lease is released (it waits on the turn here, not on the
        // store), and the device is forgotten once nobody waits.
        for _ in 0..3 {
            let turn = tokio::time::timeout(Duration::from_millis(300), a.take("SEPD"))
                .await
                .expect("the turn came back before the lease would have expired")
                .unwrap();
            drop(turn);
        }
        let forgotten = async {
            // (SEPC's turn, forgotten above, stays: that node "died".)
            while a.table().contains_key("SEPD") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), forgotten)
            .await
            .expect("no turn left behind");
        pg.drop_schema().unwrap();
    }
}
