//! The audit trail of the sled store: reading the `events` tree (events are written by
//! the transactions that make the changes they describe, in `mod.rs`).

use super::{SledStore, StoreError};
use crate::model::Event;
use crate::store::backend::EventFilter;
use crate::store::codec::{decode_event, event_key};

impl SledStore {
    pub(super) fn events_newest_first(
        &self,
        before: Option<u64>,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let end = event_key(before.unwrap_or(u64::MAX));
        let mut found = Vec::new();
        for kv in self.events.range(..end).rev() {
            if found.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let event = decode_event(&k, &v)?;
            // Ids follow time: everything further back is older still.
            if filter.since.is_some_and(|s| event.time < s) {
                break;
            }
            if filter.matches(&event) {
                found.push(event);
            }
        }
        Ok(found)
    }

    pub(super) fn events_oldest_first(
        &self,
        after: u64,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = event_key(after.saturating_add(1));
        let mut found = Vec::new();
        for kv in self.events.range(start..) {
            if found.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let event = decode_event(&k, &v)?;
            if filter.matches(&event) {
                found.push(event);
            }
        }
        Ok(found)
    }
}
