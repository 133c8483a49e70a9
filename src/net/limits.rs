//! Per-address limit on failed sessions (R10: "also limit failed sessions per peer
//! address"). The per-device lockout stops guessing one device's string; this stops one
//! address from guessing across many devices or enumerating device names.
//!
//! Two checks use one count. At accept, an address over the limit is closed at once
//! (cheap). Before an authentication is evaluated, the session reserves an attempt
//! ([`FailureLimiter::reserve`]): failures plus attempts in flight never exceed the
//! limit, so a burst of concurrent sessions cannot get more guesses evaluated than a
//! patient attacker. An honest phone is never refused for the attempts in flight of
//! others: it waits for a slot (evaluating one takes milliseconds), so a thousand phones
//! behind one NAT address all enroll.
//!
//! Nodes that share a store (docs/cluster.md) keep both counts there instead
//! ([`FailureLimiter::across_nodes`]), in one transaction per reservation, so that a
//! burst split across nodes gets no more guesses evaluated than one node would.

use crate::store::{AddressLimit, Reservation, Store};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once; past it, expired windows are dropped first and, if
/// that is not enough, the table starts over (memory stays bounded under a flood of
/// spoofed-looking sources; real attackers come from few addresses).
const MAX_TRACKED: usize = 65_536;

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Attempts reserved and not yet finished, per address (entries removed at 0).
    in_flight: Mutex<HashMap<IpAddr, u32>>,
    /// Woken whenever an attempt finishes, for the sessions waiting for a slot.
    released: tokio::sync::Notify,
    /// With a shared store: the counts every node keeps there, and this node's name.
    shared: Option<(Store, AddressLimit, String)>,
}

/// How often a session waiting for a slot asks a shared store again.
const SHARED_RETRY: Duration = Duration::from_millis(20);

/// Why [`FailureLimiter::reserve`] gave no slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address has used up its failures for this window.
    TooManyFailures,
    /// No slot came free within the wait.
    Busy,
}

/// One authentication attempt reserved for an address; released when dropped, counted
/// as a failure by [`AttemptSlot::failed`].
pub struct AttemptSlot<'a> {
    limiter: &'a FailureLimiter,
    addr: IpAddr,
    /// The reservation's holder in a shared store; `None` once it is settled.
    holder: Option<String>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            shared: None,
        }
    }

    /// The same limit kept in `store` when other nodes share it (a reserved attempt
    /// left unfinished stops counting after `attempt_ttl`: its node died).
    pub fn across_nodes(mut self, store: &Store, node: &str, attempt_ttl: Duration) -> Self {
        if store.cluster().is_some() {
            let limit = AddressLimit {
                max_failures: self.max_failures,
                window: self.window,
                attempt_ttl,
            };
            self.shared = Some((store.clone(), limit, node.to_string()));
        }
        self
    }

    /// [`FailureLimiter::reserve`] in a shared store. A store that does not answer
    /// gives no slot: nothing is evaluated that could not be counted.
    async fn reserve_shared(
        &self,
        addr: IpAddr,
        until: tokio::time::Instant,
    ) -> Result<AttemptSlot<'_>, Refusal> {
        let (store, limit, node) = self.shared.as_ref().expect("a shared store");
        let holder = crate::store::holder(node);
        let address = addr.to_string();
        loop {
            let (address2, holder2, limit2) = (address.clone(), holder.clone(), *limit);
            let reserved = store
                .in_cluster(move |cluster| cluster.reserve_attempt(&address2, &holder2, limit2))
                .await
                .map(|r| r.unwrap_or(Reservation::Busy));
            match reserved {
                Ok(Reservation::Reserved) => {
                    return Ok(AttemptSlot {
                        limiter: self,
                        addr,
                        holder: Some(holder),
                    })
                }
                Ok(Reservation::TooManyFailures) => return Err(Refusal::TooManyFailures),
                Ok(Reservation::Busy) => {}
                Err(e) => {
                    tracing::warn!(%addr, "cannot reserve an authentication attempt: {e}");
                    return Err(Refusal::Busy);
                }
            }
            if tokio::time::Instant::now() + SHARED_RETRY > until {
                return Err(Refusal::Busy);
            }
            tokio::time::sleep(SHARED_RETRY).await;
        }
    }

    /// Reserves one authentication attempt for `addr`, waiting up to `wait` while the
    /// attempts of others from the same address are in flight. Refused at once when the
    /// address has no failures left in its window.
    pub async fn reserve(&self, addr: IpAddr, wait: Duration) -> Result<AttemptSlot<'_>, Refusal> {
        let until = tokio::time::Instant::now() + wait;
        if self.shared.is_some() {
            return self.reserve_shared(addr, until).await;
        }
        loop {
            // Registered before the check, so a release between the check and the wait
            // is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                // The failures are read while the attempts in flight are locked. Read
                // before, an attempt that failed in between (its failure counted, its
                // slot then released) would be missed in the one and gone from the
                // other, and one more attempt than the limit would be let through.
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                let failures = self.failures_in_window(addr, Instant::now());
                if failures >= self.max_failures {
                    return Err(Refusal::TooManyFailures);
                }
                let pending = in_flight.entry(addr).or_insert(0);
                if failures.saturating_add(*pending) < self.max_failures {
                    *pending += 1;
                    return Ok(AttemptSlot {
                        limiter: self,
                        addr,
                        holder: None,
                    });
                }
            }
            if tokio::time::timeout_at(until, released).await.is_err() {
                return Err(Refusal::Busy);
            }
        }
    }

    fn failures_in_window(&self, addr: IpAddr, now: Instant) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&addr) {
            Some((start, count)) if now.duration_since(*start) < self.window => *count,
            _ => 0,
        }
    }

    fn release(&self, addr: IpAddr) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pending) = in_flight.get_mut(&addr) {
            *pending = pending.saturating_sub(1);
            if *pending == 0 {
                in_flight.remove(&addr);
            }
        }
        drop(in_flight);
        self.released.notify_waiters();
    }

    /// Whether `addr` may open a session now, by the failures this node has seen: the
    /// check at accept stays a memory read. With a shared store, failures on other
    /// nodes count at the reservation ([`FailureLimiter::reserve`]), which refuses
    /// before anything is evaluated.
    pub fn allows(&self, addr: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&addr) {
            Some((start, count)) => {
                now.duration_since(*start) >= self.window || *count < self.max_failures
            }
            None => true,
        }
    }

    /// Counts a failed session from `addr`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant) {
        if let Some((store, limit, node)) = &self.shared {
            count_in_cluster(store, addr, crate::store::holder(node), *limit);
        }
        self.count_failure(addr, now);
    }

    /// Counts a failure in this node's memory (what [`FailureLimiter::allows`] reads).
    fn count_failure(&self, addr: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&addr) {
            failures.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

impl AttemptSlot<'_> {
    /// The attempt failed: it counts against the address (the slot is released).
    pub fn failed(mut self) {
        if let (Some(holder), Some((store, limit, _))) = (self.holder.take(), &self.limiter.shared)
        {
            // Counted and released in one transaction, after this returns: until then
            // the attempt still holds its place, so no waiter sees it free uncounted.
            count_in_cluster(store, self.addr, holder, *limit);
            self.limiter.count_failure(self.addr, Instant::now());
            return;
        }
        // Counted before the slot is released, so no waiter sees a free slot in between.
        self.limiter.record_failure(self.addr, Instant::now());
    }
}

/// Counts a failure of `addr` in the shared store (releasing `holder`'s attempt, if it
/// holds one), off the runtime's workers.
fn count_in_cluster(store: &Store, addr: IpAddr, holder: String, limit: AddressLimit) {
    store.in_cluster_later(move |cluster| {
        if let Err(e) = cluster.attempt_failed(&addr.to_string(), &holder, limit) {
            tracing::warn!(%addr, "cannot count a failed attempt: {e}");
        }
    });
}

impl Drop for AttemptSlot<'_> {
    fn drop(&mut self) {
        match (self.holder.take(), &self.limiter.shared) {
            (Some(holder), Some((store, _, _))) => {
                let addr = self.addr;
                store.in_cluster_later(move |cluster| {
                    if let Err(e) = cluster.release_attempt(&addr.to_string(), &holder) {
                        // It stops counting when it expires.
                        tracing::warn!(%addr, "cannot release an attempt: {e}");
                    }
                });
            }
            (None, Some(_)) => {}
            _ => self.limiter.release(self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_the_limit_until_its_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(a, t0));
            limiter.record_failure(a, t0);
        }
        assert!(!limiter.allows(a, t0 + Duration::from_secs(59)));
        assert!(limiter.allows(b, t0), "other addresses are not affected");
        assert!(limiter.allows(a, t0 + Duration::from_secs(60)));
        limiter.record_failure(a, t0 + Duration::from_secs(61));
        assert!(
            limiter.allows(a, t0 + Duration::from_secs(61)),
            "a new window starts at 1"
        );
    }

    #[tokio::test]
    async fn failures_and_attempts_in_flight_never_exceed_the_limit() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let wait = Duration::from_millis(50);
        let one = limiter.reserve(a, wait).await.unwrap();
        let two = limiter.reserve(a, wait).await.unwrap();
        let three = limiter.reserve(a, wait).await.unwrap();
        // All three slots in flight: a fourth waits, then is told the address is busy.
        assert_eq!(limiter.reserve(a, wait).await.err(), Some(Refusal::Busy));
        one.failed();
        two.failed();
        drop(three); // succeeded: frees its slot without counting
        let four = limiter.reserve(a, wait).await.unwrap();
        four.failed();
        assert_eq!(
            limiter.reserve(a, wait).await.err(),
            Some(Refusal::TooManyFailures)
        );
    }

    /// Attempts that fail while others reserve, on several threads at once: never more
    /// granted than the limit (a failure counted and its slot released between another
    /// attempt's two reads once let one more through).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_failures_never_let_more_than_the_limit_through() {
        const LIMIT: u32 = 5;
        for round in 0..200 {
            let limiter = std::sync::Arc::new(FailureLimiter::new(LIMIT, Duration::from_secs(60)));
            let a: IpAddr = "192.0.2.1".parse().unwrap();
            let tasks: Vec<_> = (0..24)
                .map(|_| {
                    let limiter = limiter.clone();
                    tokio::spawn(async move {
                        match limiter.reserve(a, Duration::from_secs(5)).await {
                            Ok(slot) => {
                                slot.failed();
                                1
                            }
                            Err(_) => 0,
                        }
                    })
                })
                .collect();
            let mut granted = 0;
            for task in tasks {
                granted += task.await.unwrap();
            }
            assert_eq!(granted, LIMIT, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_waiting_attempt_gets_the_slot_another_releases() {
        let limiter = std::sync::Arc::new(FailureLimiter::new(1, Duration::from_secs(60)));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limiter.reserve(a, Duration::from_secs(1)).await.unwrap();
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter
                    .reserve(a, Duration::from_secs(5))
                    .await
                    .map(drop)
                    .is_ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.unwrap(), "the waiter got the freed slot");
    }
}
