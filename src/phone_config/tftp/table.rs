//! The TFTP transfer table: which transfers run, what each source address may be sent
//! before it proves it is real, and which transfer gives way to a new request.
//!
//! A read request is one datagram whose source anyone can forge, and it makes the
//! server send (and send again) a block of up to 516 bytes. So, per source address:
//!
//! * at most [`MAX_PER_SOURCE`] transfers run at once; a new request from an address
//!   that has them all takes the place of its stalest one if that one has not been
//!   acknowledged yet or has waited [`STALE`] for an acknowledgement, and is dropped
//!   otherwise (the client sends its request again);
//! * the bytes sent in transfers the address has not acknowledged yet draw on a budget
//!   of [`BUDGET`] bytes, refilled at [`REFILL_PER_SEC`]. The first acknowledgement of a
//!   transfer proves the address is real (it had to receive the packet to learn the
//!   transfer's port) and gives back what that transfer drew; an honest phone, which
//!   acknowledges within a round trip, never runs the budget down.
//!
//! And when the whole table ([`super::MAX_TRANSFERS`]) is full, the stalest transfer
//! (one never acknowledged first, then the longest without an acknowledgement) gives
//! way, so a new request is always answered.
//!
//! None of this refuses an address: phones behind one NAT share it, and all the
//! address-level rules only choose which of its transfers goes first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Transfers one source address may have at once.
pub const MAX_PER_SOURCE: usize = 8;
/// Bytes a source address may be sent, unacknowledged, before it proves it is real.
pub const BUDGET: u64 = 8 * 1024;
/// How fast that budget refills, bytes per second.
pub const REFILL_PER_SEC: u64 = 1024;
/// How long a transfer may wait for an acknowledgement before another request from
/// its address may take its place.
pub const STALE: Duration = Duration::from_secs(2);
/// Source addresses whose budgets are remembered at once; past it, full budgets are
/// forgotten first, then those of addresses with no transfer (memory stays bounded
/// under a flood of forged sources).
const MAX_SOURCES: usize = 65_536;

pub struct Table {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u64,
    transfers: HashMap<u64, Entry>,
    sources: HashMap<IpAddr, Source>,
}

struct Entry {
    addr: IpAddr,
    /// Start, or the last acknowledgement.
    progress: Instant,
    /// Acknowledged at least once.
    proven: bool,
    /// Bytes this transfer drew from its address's budget.
    drawn: u64,
    give_way: Arc<Notify>,
}

impl Entry {
    /// The order in which transfers give way: never acknowledged first, then the
    /// longest without an acknowledgement (then the oldest).
    fn staleness(&self) -> (bool, Instant) {
        (self.proven, self.progress)
    }
}

struct Source {
    transfers: usize,
    budget: u64,
    refilled: Instant,
}

impl Source {
    fn new(now: Instant) -> Source {
        Source {
            transfers: 0,
            budget: BUDGET,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.refilled);
        let earned = elapsed.as_millis() as u64 * REFILL_PER_SEC / 1000;
        if earned > 0 {
            self.budget = (self.budget + earned).min(BUDGET);
            self.refilled = now;
        }
    }
}

/// One transfer's place in the table; it leaves the table when dropped.
pub struct Ticket {
    table: Arc<Table>,
    id: u64,
    give_way: Arc<Notify>,
}

/// Why a request got no transfer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its address has [`MAX_PER_SOURCE`] transfers, all of them progressing.
    #[error("every transfer of this address is progressing")]
    SourceBusy,
}

impl Table {
    pub fn new(capacity: usize) -> Arc<Table> {
        Arc::new(Table {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                next_id: 0,
                transfers: HashMap::new(),
                sources: HashMap::new(),
            }),
        })
    }

    /// A place for a new transfer to `addr`, made by telling the stalest transfer of
    /// that address, or of the whole table, to give way when either is full.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Ticket, Refusal> {
        self.admit_at(addr, now())
    }

    fn admit_at(self: &Arc<Self>, addr: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        let mut inner = self.lock();
        let busy = inner.sources.get(&addr).map_or(0, |s| s.transfers);
        if busy >= MAX_PER_SOURCE {
            let stalest = inner
                .transfers
                .iter()
                .filter(|(_, e)| e.addr == addr)
                .min_by_key(|(id, e)| (e.staleness(), **id))
                .map(|(id, e)| (*id, e.proven && now.duration_since(e.progress) < STALE));
            match stalest {
                Some((id, false)) => inner.remove(id),
                _ => return Err(Refusal::SourceBusy),
            }
        }
        if inner.transfers.len() >= self.capacity {
            let stalest = inner
                .transfers
                .iter()
                .min_by_key(|(id, e)| (e.staleness(), **id))
                .map(|(id, _)| *id);
            if let Some(id) = stalest {
                inner.remove(id);
            }
        }
        if inner.sources.len() >= MAX_SOURCES && !inner.sources.contains_key(&addr) {
            inner.forget_sources(now);
        }
        inner
            .sources
            .entry(addr)
            .or_insert_with(|| Source::new(now))
            .transfers += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let give_way = Arc::new(Notify::new());
        inner.transfers.insert(
            id,
            Entry {
                addr,
                progress: now,
                proven: false,
                drawn: 0,
                give_way: give_way.clone(),
            },
        );
        Ok(Ticket {
            table: self.clone(),
            id,
            give_way,
        })
    }

    /// Transfers running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().transfers.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Takes transfer `id` out of the table and tells it to give way. What it drew
    /// stays drawn: those bytes were sent and never acknowledged.
    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.transfers.remove(&id) {
            entry.give_way.notify_one();
            if let Some(source) = self.sources.get_mut(&entry.addr) {
                source.transfers -= 1;
            }
        }
    }

    /// Makes room among the remembered budgets: full ones first (forgetting them
    /// changes nothing), then those of addresses with no transfer.
    fn forget_sources(&mut self, now: Instant) {
        self.sources.retain(|_, s| {
            s.refill(now);
            s.transfers > 0 || s.budget < BUDGET
        });
        if self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, s| s.transfers > 0);
        }
    }
}

impl Ticket {
    /// Completes when this transfer must end to make room for a new request.
    pub async fn give_way(&self) {
        self.give_way.notified().await;
    }

    /// Whether `bytes` more may be sent now: always once the transfer is acknowledged;
    /// before that, only within its address's budget (and then drawn from it).
    pub fn may_send(&self, bytes: usize) -> bool {
        self.may_send_at(bytes, now())
    }

    fn may_send_at(&self, bytes: usize, now: Instant) -> bool {
        let mut inner = self.table.lock();
        let Inner {
            transfers, sources, ..
        } = &mut *inner;
        let Some(entry) = transfers.get_mut(&self.id) else {
            return false;
        };
        if entry.proven {
            return true;
        }
        let Some(source) = sources.get_mut(&entry.addr) else {
            return false;
        };
        source.refill(now);
        let bytes = bytes as u64;
        if source.budget < bytes {
            return false;
        }
        source.budget -= bytes;
        entry.drawn += bytes;
        true
    }

    /// The client acknowledged a packet: the transfer is progressing, and its address
    /// is real, so what it drew from the budget goes back.
    pub fn acknowledged(&self) {
        self.acknowledged_at(now())
    }

    fn acknowledged_at(&self, now: Instant) {
        let mut inner = self.table.lock();
        let Inner {
            transfers, sources, ..
        } = &mut *inner;
        let Some(entry) = transfers.get_mut(&self.id) else {
            return;
        };
        entry.progress = now;
        if !entry.proven {
            entry.proven = true;
            if let Some(source) = sources.get_mut(&entry.addr) {
                source.budget = (source.budget + entry.drawn).min(BUDGET);
            }
            entry.drawn = 0;
        }
    }

    /// Whether the client has acknowledged anything yet.
    pub fn proven(&self) -> bool {
        self.table
            .lock()
            .transfers
            .get(&self.id)
            .is_some_and(|e| e.proven)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if let Some(entry) = inner.transfers.remove(&self.id) {
            if let Some(source) = inner.sources.get_mut(&entry.addr) {
                source.transfers -= 1;
            }
        }
    }
}

/// tokio's clock, so tests with paused time agree.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    fn told(ticket: &Ticket) -> bool {
        let notified = ticket.give_way();
        tokio::pin!(notified);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        notified.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_source_keeps_at_most_its_share_and_its_stalest_gives_way() {
        let table = Table::new(100);
        let t0 = Instant::now();
        let first: Vec<Ticket> = (0..MAX_PER_SOURCE)
            .map(|_| table.admit_at(addr(1), t0).unwrap())
            .collect();
        // Never acknowledged: the oldest gives way to the ninth request.
        let ninth = table.admit_at(addr(1), t0).unwrap();
        assert!(told(&first[0]) && !told(&first[1]));
        assert_eq!(table.len(), MAX_PER_SOURCE);
        drop(first);
        drop(ninth);
        assert_eq!(table.len(), 0);

        // Acknowledged and progressing: a new request is dropped instead.
        let busy: Vec<Ticket> = (0..MAX_PER_SOURCE)
            .map(|_| table.admit_at(addr(2), t0).unwrap())
            .collect();
        busy.iter().for_each(|t| t.acknowledged_at(t0));
        assert_eq!(table.admit_at(addr(2), t0).err(), Some(Refusal::SourceBusy));
        // Other addresses are not affected.
        let other = table.admit_at(addr(3), t0).unwrap();
        // Once one has waited STALE for an acknowledgement, it gives way.
        let later = t0 + STALE;
        busy[1..].iter().for_each(|t| t.acknowledged_at(later));
        let _next = table.admit_at(addr(2), later).unwrap();
        assert!(told(&busy[0]) && !told(&busy[1]));
        drop(other);
    }

    #[test]
    fn a_full_table_answers_by_dropping_the_stalest_transfer() {
        let table = Table::new(3);
        let t0 = Instant::now();
        let proven = table.admit_at(addr(1), t0).unwrap();
        proven.acknowledged_at(t0);
        let a = table.admit_at(addr(2), t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let b = table.admit_at(addr(3), t1).unwrap();
        // Full: the unacknowledged one that waited longest goes, not the proven one.
        let _c = table.admit_at(addr(4), t1).unwrap();
        assert!(told(&a) && !told(&b) && !told(&proven));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn unacknowledged_bytes_draw_on_a_budget_an_acknowledgement_returns() {
        let table = Table::new(100);
        let t0 = Instant::now();
        let spoofed = table.admit_at(addr(1), t0).unwrap();
        let mut sent = 0;
        while spoofed.may_send_at(516, t0) {
            sent += 516;
        }
        assert_eq!(sent, BUDGET / 516 * 516, "{sent}");
        // Another transfer to the same address has nothing left...
        let honest = table.admit_at(addr(1), t0).unwrap();
        assert!(!honest.may_send_at(516, t0));
        // ...until the budget refills.
        let t1 = t0 + Duration::from_secs(1);
        assert!(honest.may_send_at(516, t1));
        assert!(!honest.may_send_at(1024, t1));
        // Its acknowledgement gives back what it drew, and lifts the budget for it.
        honest.acknowledged_at(t1);
        assert!(honest.proven());
        assert!(honest.may_send_at(65_468, t1));
        let third = table.admit_at(addr(1), t1).unwrap();
        assert!(third.may_send_at(516, t1), "516 bytes were given back");
        // Giving way returns nothing: those bytes were sent and never acknowledged.
        drop(spoofed);
        let fourth = table.admit_at(addr(1), t1).unwrap();
        assert!(!fourth.may_send_at(1024, t1), "960 bytes left, as before");
        // Another address has its own budget.
        let elsewhere = table.admit_at(addr(2), t1).unwrap();
        assert!(elsewhere.may_send_at(4096, t1));
    }
}
