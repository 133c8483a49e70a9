//! The live connections of a listener, and which one gives way when it is full.
//!
//! A connection is cheap to hold (a socket and a small task; 1,000 idle ones cost
//! about 14 MiB), but a listener still needs a cap, and a hard cap alone lets anyone
//! who opens that many connections and says nothing lock every phone out. So every
//! connection holds a [`Slot`], and a slot is either *waiting* (TCP accepted, but the
//! TLS handshake, the first CAPF message or the HTTP request head has not arrived) or
//! has *made progress*. When the cap is reached, the oldest waiting connection is
//! closed for the new one; connections from addresses in bad standing
//! (`standing.rs`: more stalled than progressed lately) go before the others. A
//! connection that made progress is never closed this way: it is bounded by the
//! protocol's own timeouts. Only when every slot has made progress is a new
//! connection closed at once.
//!
//! So a waiting connection lives at least until `cap` newer ones arrive, or until its
//! deadline: a phone, which finishes its handshake and sends its first message in
//! milliseconds, is not pushed out by clients that stay silent, however many.
//!
//! The slot also serves as the shutdown barrier: [`Connections::drained`] completes
//! when every slot has been dropped.

use super::standing::Standing;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often, at most, a full listener says so in the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connections of one listener (or of listeners that share a cap).
pub struct Connections {
    what: &'static str,
    cap: usize,
    inner: Mutex<Inner>,
    /// Slots not yet dropped, including those that gave way and are still closing.
    live: watch::Sender<usize>,
}

#[derive(Debug)]
struct Inner {
    next_id: u64,
    /// Slots that made progress.
    progressed: usize,
    /// Waiting slots, oldest (lowest id) first.
    waiting: BTreeMap<u64, Waiting>,
    /// The waiting slots of each address.
    by_addr: HashMap<IpAddr, BTreeSet<u64>>,
    /// For every address in bad standing with waiting slots: its oldest one. The
    /// first entry is the next to give way. Standing is judged when it changes, so an
    /// address whose window ended may linger here; it is checked again before use.
    suspects: BTreeSet<(u64, IpAddr)>,
    /// Where each address sits in `suspects`.
    suspect_at: HashMap<IpAddr, u64>,
    standing: Standing,
    /// Connections closed to make room since the last warning, and when that was.
    gave_way: u64,
    warned: Option<Instant>,
}

#[derive(Debug)]
struct Waiting {
    addr: IpAddr,
    give_way: Arc<Notify>,
    /// Waiting again after serving ([`Slot::wait_again`]): giving way is then no stall
    /// of its address.
    served: bool,
}

impl Inner {
    fn len(&self) -> usize {
        self.progressed + self.waiting.len()
    }

    /// Puts `addr` back in its place among the suspects, or out of them, after its
    /// standing or its waiting slots changed.
    fn refresh(&mut self, addr: IpAddr, now: Instant) {
        if let Some(head) = self.suspect_at.remove(&addr) {
            self.suspects.remove(&(head, addr));
        }
        if !self.standing.suspect(addr, now) {
            return;
        }
        if let Some(&head) = self.by_addr.get(&addr).and_then(BTreeSet::first) {
            self.suspects.insert((head, addr));
            self.suspect_at.insert(addr, head);
        }
    }

    /// Takes waiting slot `id` out of the table; `None` if it was not waiting.
    fn take(&mut self, id: u64, now: Instant) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        if let Some(ids) = self.by_addr.get_mut(&waiting.addr) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_addr.remove(&waiting.addr);
            }
        }
        self.refresh(waiting.addr, now);
        Some(waiting)
    }

    /// A new waiting slot for `addr`, the newest of all.
    fn wait(&mut self, addr: IpAddr, served: bool, now: Instant) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let give_way = Arc::new(Notify::new());
        self.waiting.insert(
            id,
            Waiting {
                addr,
                give_way: give_way.clone(),
                served,
            },
        );
        self.by_addr.entry(addr).or_default().insert(id);
        self.refresh(addr, now);
        (id, give_way)
    }

    /// The next waiting slot to give way: the oldest from an address in bad standing,
    /// else the oldest of all.
    fn next_to_give_way(&mut self, now: Instant) -> Option<u64> {
        while let Some(&(id, addr)) = self.suspects.first() {
            if self.standing.suspect(addr, now) {
                return Some(id);
            }
            self.refresh(addr, now);
        }
        self.waiting.first_key_value().map(|(id, _)| *id)
    }
}

/// One connection's place in its listener.
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    addr: IpAddr,
    progressed: bool,
    give_way: Arc<Notify>,
}

impl Connections {
    /// A listener's table of at most `cap` connections; `what` names it in the log.
    pub fn new(what: &'static str, cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            what,
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                next_id: 0,
                progressed: 0,
                waiting: BTreeMap::new(),
                by_addr: HashMap::new(),
                suspects: BTreeSet::new(),
                suspect_at: HashMap::new(),
                standing: Standing::new(),
                gave_way: 0,
                warned: None,
            }),
            live: watch::Sender::new(0),
        })
    }

    /// A slot for a new connection from `addr`. At the cap, the oldest waiting
    /// connection (one from an address in bad standing first) is told to give way;
    /// `None` when every slot belongs to a connection that made progress.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Slot> {
        let now = now();
        let mut inner = self.lock();
        if inner.len() >= self.cap {
            let id = inner.next_to_give_way(now)?;
            if let Some(oldest) = inner.take(id, now) {
                oldest.give_way.notify_one();
                if !oldest.served {
                    inner.standing.stalled(oldest.addr, now);
                    inner.refresh(oldest.addr, now);
                }
            }
            inner.gave_way += 1;
            if inner
                .warned
                .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
            {
                tracing::warn!(
                    "{} connection cap of {} reached: {} waiting connections closed to make \
                     room since the last such line",
                    self.what,
                    self.cap,
                    inner.gave_way
                );
                inner.warned = Some(now);
                inner.gave_way = 0;
            }
        }
        let (id, give_way) = inner.wait(addr, false, now);
        drop(inner);
        self.live.send_modify(|n| *n += 1);
        Some(Slot {
            connections: self.clone(),
            id,
            addr,
            progressed: false,
            give_way,
        })
    }

    /// Tells every waiting connection to close (at shutdown: they have no session to
    /// finish). Connections that made progress are left to end on their own.
    pub fn close_waiting(&self) {
        let mut inner = self.lock();
        inner.by_addr.clear();
        inner.suspects.clear();
        inner.suspect_at.clear();
        for (_, slot) in std::mem::take(&mut inner.waiting) {
            slot.give_way.notify_one();
        }
    }

    /// Connections in the table (those that gave way and are still closing excluded).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Completes once every slot has been dropped.
    pub async fn drained(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
    }

    /// Slots alive, including those closing after giving way.
    #[cfg(test)]
    fn live(&self) -> usize {
        *self.live.borrow()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Slot {
    /// Completes when this connection must close to make room for a newer one. Only a
    /// waiting connection is ever told to; wrap its waits in a `select!` with this.
    pub async fn give_way(&self) {
        self.give_way.notified().await;
    }

    /// Marks the connection as having made progress: from now on it is never closed to
    /// make room. `false` if it was already told to give way (it must close).
    pub fn progress(&mut self) -> bool {
        if self.progressed {
            return true;
        }
        let now = now();
        let mut inner = self.connections.lock();
        if inner.take(self.id, now).is_none() {
            return false;
        }
        inner.progressed += 1;
        inner.standing.progressed(self.addr, now);
        inner.refresh(self.addr, now);
        self.progressed = true;
        true
    }

    /// Puts a connection that made progress back among the waiting ones, as the
    /// newest: an HTTP connection kept open for its client's next request holds a
    /// slot nobody is using, so it must give way like a new one. Giving way then
    /// counts no stall against its address: a phone or a proxy that keeps its
    /// connection open did nothing wrong.
    pub fn wait_again(&mut self) {
        if !self.progressed {
            return;
        }
        let now = now();
        let mut inner = self.connections.lock();
        inner.progressed -= 1;
        let (id, give_way) = inner.wait(self.addr, true, now);
        drop(inner);
        self.id = id;
        self.give_way = give_way;
        self.progressed = false;
    }

    pub fn has_progressed(&self) -> bool {
        self.progressed
    }

    /// Counts a stall against the address (a handshake or request head that timed out
    /// or failed): it only moves the address's connections forward in the line to
    /// give way (see `standing.rs`), never refuses them.
    pub fn stalled(&self) {
        let now = now();
        let mut inner = self.connections.lock();
        inner.standing.stalled(self.addr, now);
        inner.refresh(self.addr, now);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut inner = self.connections.lock();
            if self.progressed {
                inner.progressed -= 1;
            } else {
                inner.take(self.id, now());
            }
        }
        self.connections.live.send_modify(|n| *n -= 1);
    }
}

/// The clock standing is kept on (tokio's, so tests with paused time agree).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    /// Whether `slot` has been told to give way (without waiting).
    fn told(slot: &Slot) -> bool {
        let notified = slot.give_way();
        tokio::pin!(notified);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        notified.as_mut().poll(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn the_oldest_waiting_connection_gives_way_and_progress_is_kept() {
        let table = Connections::new("test", 3);
        let mut a = table.admit(addr(1)).unwrap();
        let b = table.admit(addr(1)).unwrap();
        let c = table.admit(addr(1)).unwrap();
        assert!(a.progress(), "a made progress");
        assert_eq!(table.len(), 3);

        // Full: the oldest *waiting* one (b) gives way, not a.
        let d = table.admit(addr(1)).unwrap();
        assert!(told(&b) && !told(&a) && !told(&c));
        assert_eq!(table.len(), 3);
        assert_eq!(table.live(), 4, "b is still closing");
        let mut b = b;
        assert!(!b.progress(), "too late: b was told to give way");
        drop(b);

        let e = table.admit(addr(1)).unwrap();
        assert!(told(&c) && !told(&d));
        drop((c, e));
        let mut d = d;
        assert!(d.progress());
        // Every slot has made progress: a new connection is refused.
        let f = table.admit(addr(1)).unwrap();
        let mut f = f;
        assert!(f.progress());
        assert!(table.admit(addr(1)).is_none());
        drop((a, d, f));
        assert_eq!(table.live(), 0);
        tokio::time::timeout(Duration::from_secs(1), table.drained())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn connections_from_a_suspect_address_give_way_first() {
        let table = Connections::new("test", 2);
        let first = table.admit(addr(2)).unwrap();
        // A handshake that timed out puts the attacker's address in bad standing.
        first.stalled();
        drop(first);
        let phone = table.admit(addr(1)).unwrap();
        let attackers: Vec<Slot> = (0..10).map(|_| table.admit(addr(2)).unwrap()).collect();
        assert!(!told(&phone), "the phone is older, but in good standing");
        assert!(attackers[..9].iter().all(told), "each gave way to the next");
        assert!(!told(&attackers[9]));
    }

    #[tokio::test]
    async fn a_connection_waiting_again_gives_way_as_the_newest_and_without_a_stall() {
        let table = Connections::new("test", 2);
        let mut kept = table.admit(addr(1)).unwrap();
        assert!(kept.progress());
        let silent = table.admit(addr(2)).unwrap();
        // Served, now waiting for its client's next request: newer than `silent`.
        kept.wait_again();
        assert!(!kept.has_progressed());
        let _third = table.admit(addr(3)).unwrap();
        assert!(
            told(&silent) && !told(&kept),
            "the older waiting one went first"
        );
        let _fourth = table.admit(addr(3)).unwrap();
        assert!(told(&kept), "waiting again, it gives way too");
        assert!(!kept.progress(), "and must close");
        // Its address is in good standing: its next connection is not a suspect,
        // while the silent one's address is.
        let inner = table.lock();
        assert!(!inner.standing.suspect(addr(1), now()));
        assert!(inner.standing.suspect(addr(2), now()));
        drop(inner);
        drop(kept);
        assert_eq!(table.len(), 2);
    }

    #[tokio::test]
    async fn standing_is_judged_when_making_room_not_when_admitted() {
        let table = Connections::new("test", 4);
        // Three connections from one address, admitted in good standing, and a phone.
        let held: Vec<Slot> = (0..3).map(|_| table.admit(addr(2)).unwrap()).collect();
        let phone = table.admit(addr(1)).unwrap();
        // The address goes bad: its oldest give way first, in order, never the phone.
        held[0].stalled();
        let newer: Vec<Slot> = (0..3).map(|_| table.admit(addr(2)).unwrap()).collect();
        assert!(held.iter().all(told), "the older ones gave way in order");
        assert!(!newer.iter().any(told) && !told(&phone));
        let _more = table.admit(addr(2)).unwrap();
        assert!(told(&newer[0]) && !told(&phone));
        // At shutdown every waiting connection is told to close.
        table.close_waiting();
        assert!(told(&phone) && told(&newer[1]));
    }
}
