//! The standing of a peer address: how many of its recent connections stalled (no TLS
//! handshake, no request head or no first message in time, or closed to make room)
//! against how many made progress.
//!
//! Standing never refuses anyone. Many phones share one NAT address, and a rule that
//! closed an address after some number of stalls would let one bad client behind the
//! NAT lock out every phone behind it. Standing only orders who gives way when a
//! listener is full (`connections.rs`): connections from an address that stalled more
//! than it progressed go first. An address full of honest phones progresses far more
//! than it stalls, so it keeps its place; one with an attacker behind it at worst
//! shares the attacker's place, which is plain oldest-first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most addresses tracked at once; past it, expired windows are dropped first and, if
/// that is not enough, the table starts over (as the failure limiter does).
const MAX_TRACKED: usize = 65_536;

/// How long stalls and progress are remembered.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Standing {
    peers: HashMap<IpAddr, Record>,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    start: Instant,
    stalled: u32,
    progressed: u32,
}

impl Standing {
    pub fn new() -> Self {
        Standing {
            peers: HashMap::new(),
        }
    }

    /// Whether `addr` stalled more connections than it progressed within the window.
    pub fn suspect(&self, addr: IpAddr, now: Instant) -> bool {
        self.peers
            .get(&addr)
            .is_some_and(|r| now.duration_since(r.start) < WINDOW && r.stalled > r.progressed)
    }

    /// A connection from `addr` stalled.
    pub fn stalled(&mut self, addr: IpAddr, now: Instant) {
        let record = self.record(addr, now);
        record.stalled = record.stalled.saturating_add(1);
    }

    /// A connection from `addr` made progress.
    pub fn progressed(&mut self, addr: IpAddr, now: Instant) {
        let record = self.record(addr, now);
        record.progressed = record.progressed.saturating_add(1);
    }

    /// The record of `addr` in the current window.
    fn record(&mut self, addr: IpAddr, now: Instant) -> &mut Record {
        if self.peers.len() >= MAX_TRACKED && !self.peers.contains_key(&addr) {
            self.peers
                .retain(|_, r| now.duration_since(r.start) < WINDOW);
            if self.peers.len() >= MAX_TRACKED {
                self.peers.clear();
            }
        }
        let fresh = Record {
            start: now,
            stalled: 0,
            progressed: 0,
        };
        let record = self.peers.entry(addr).or_insert(fresh);
        if now.duration_since(record.start) >= WINDOW {
            *record = fresh;
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_suspect_while_it_stalls_more_than_it_progresses() {
        let mut standing = Standing::new();
        let nat: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(
            !standing.suspect(nat, t0),
            "unknown addresses are in good standing"
        );
        standing.stalled(nat, t0);
        assert!(standing.suspect(nat, t0));
        // Phones behind the same address enroll: it is back in good standing.
        for _ in 0..5 {
            standing.progressed(nat, t0);
        }
        for _ in 0..4 {
            standing.stalled(nat, t0);
        }
        assert!(!standing.suspect(nat, t0), "5 stalls against 5 progressed");
        standing.stalled(nat, t0);
        assert!(standing.suspect(nat, t0));
        // The window ends: forgotten.
        assert!(!standing.suspect(nat, t0 + WINDOW));
        standing.stalled(nat, t0 + WINDOW);
        standing.progressed(nat, t0 + WINDOW);
        assert!(
            !standing.suspect(nat, t0 + WINDOW),
            "a new window starts at 0"
        );
    }
}
