//! The audit trail: reading the `events` tree (events are written by the transactions
//! that make the changes they describe, in `mod.rs`).

use super::codec::decode_event;
use super::{Store, StoreError};
use crate::model::{Event, UnixTime};

impl Store {
    /// Events in id order: those about `device` (if given) at or after `since` (if
    /// given). With `limit`, the most recent `limit` of them.
    pub fn events(
        &self,
        device: Option<&str>,
        since: Option<UnixTime>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, StoreError> {
        let mut found = Vec::new();
        for kv in self.events.iter().rev() {
            if limit.is_some_and(|l| found.len() >= l) {
                break;
            }
            let (k, v) = kv?;
            let event = decode_event(&k, &v)?;
            if event_wanted(&event, device, since) {
                found.push(event);
            }
        }
        found.reverse();
        Ok(found)
    }

    /// The events at or after `since`, newest first, read backwards from the newest
    /// and stopping at the first older one (ids follow time), so the cost is what is
    /// recent, not the whole trail.
    pub fn events_since(&self, since: UnixTime) -> Result<Vec<Event>, StoreError> {
        let mut found = Vec::new();
        for kv in self.events.iter().rev() {
            let (k, v) = kv?;
            let event = decode_event(&k, &v)?;
            if event.time < since {
                break;
            }
            found.push(event);
        }
        Ok(found)
    }

    /// [`Store::events`] without a limit, decoded one at a time: for listings of any
    /// length (a million-row import alone appends a million events).
    pub fn events_in_order(
        &self,
        device: Option<String>,
        since: Option<UnixTime>,
    ) -> impl Iterator<Item = Result<Event, StoreError>> {
        self.events.iter().filter_map(move |kv| {
            let event = kv
                .map_err(StoreError::from)
                .and_then(|(k, v)| decode_event(&k, &v));
            match event {
                Ok(e) if !event_wanted(&e, device.as_deref(), since) => None,
                other => Some(other),
            }
        })
    }
}

/// Whether `event` is about `device` (if given) and at or after `since` (if given).
fn event_wanted(event: &Event, device: Option<&str>, since: Option<UnixTime>) -> bool {
    device.is_none_or(|d| event.device.as_deref() == Some(d))
        && since.is_none_or(|s| event.time >= s)
}

impl Store {
    /// Events newest first, starting below id `before` (all when `None`), decoded one
    /// at a time: the audit page reads a page and stops.
    pub fn events_newest_first(
        &self,
        before: Option<u64>,
    ) -> impl Iterator<Item = Result<Event, StoreError>> {
        let end = super::codec::event_key(before.unwrap_or(u64::MAX));
        self.events.range(..end).rev().map(|kv| {
            let (k, v) = kv?;
            decode_event(&k, &v)
        })
    }
}
