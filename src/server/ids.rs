//! Session ids: random, and unique among live sessions (R17, §3).
//!
//! Random rather than a counter because the SUDI proof signs the session id: a
//! predictable id would let a captured proof be replayed after a restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct SessionIds {
    live: Arc<Mutex<HashSet<u32>>>,
}

/// A session id held for the life of a session; released on drop.
pub struct SessionId {
    id: u32,
    live: Arc<Mutex<HashSet<u32>>>,
}

impl SessionIds {
    /// Draws a fresh id, re-drawing on collision with a live one (and never 0).
    pub fn allocate(&self) -> SessionId {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let id: u32 = rand::random();
            if id != 0 && live.insert(id) {
                return SessionId {
                    id,
                    live: self.live.clone(),
                };
            }
        }
    }

    pub fn live(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl SessionId {
    pub fn get(&self) -> u32 {
        self.id
    }
}

impl Drop for SessionId {
    fn drop(&mut self) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_while_live_and_released_on_drop() {
        let ids = SessionIds::default();
        let held: Vec<_> = (0..1000).map(|_| ids.allocate()).collect();
        let distinct: HashSet<u32> = held.iter().map(|h| h.get()).collect();
        assert_eq!(distinct.len(), 1000);
        assert!(!distinct.contains(&0));
        assert_eq!(ids.live(), 1000);
        drop(held);
        assert_eq!(ids.live(), 0);
    }
}
