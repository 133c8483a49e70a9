//! What a store backend offers, whichever database holds the records: the sled
//! [`Store`] (the default, one node) or [`PgStore`](super::PgStore) (PostgreSQL,
//! several nodes; docs/cluster.md "Store backends").
//!
//! This is the part of the store that both backends implement today: devices
//! (get, list, add, put, update in a transaction), the audit trail (append, read) and
//! the session writer's batches of changes ([`Backend::apply_changes`]). The rest of
//! [`Store`] (serial index reads and revocation, web accounts, backups) moves behind
//! this trait as the PostgreSQL backend grows; callers keep using [`Store`] until then.
//!
//! Every method blocks until the database has answered. On PostgreSQL that is a
//! network round trip: callers on the async runtime use `spawn_blocking` or the
//! [`Writer`](super::Writer) thread, as they already do for sled's flushes.

use super::{Store, StoreError};
use crate::model::{Commit, DeviceRecord, Event, UnixTime};

/// A device update as [`Store::update_devices`] takes it, as a trait object.
pub type DeviceUpdate<'a> = &'a dyn Fn(&mut DeviceRecord) -> Result<Option<Event>, String>;

/// One device of an update, as every backend runs it: the event `f` returns, or `None`
/// when `f` passes the device over; refused when `f` refuses or renames the device.
pub(super) fn update_one(
    name: &str,
    rec: &mut DeviceRecord,
    f: DeviceUpdate<'_>,
) -> Result<Option<Event>, StoreError> {
    let refused = |reason: String| StoreError::Refused {
        device: name.to_string(),
        reason,
    };
    let event = f(rec).map_err(refused)?;
    if event.is_some() && rec.name != name {
        return Err(refused(format!("it cannot be renamed to {:?}", rec.name)));
    }
    Ok(event)
}

pub trait Backend: Send + Sync {
    /// `sled` or `postgres`, for messages and test names.
    fn kind(&self) -> &'static str;

    fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// All devices in name order.
    fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Adds a new device with its event; [`StoreError::Exists`] if the name is taken.
    fn add_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError>;

    /// Inserts or replaces a device, with its event.
    fn put_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError>;

    /// See [`Store::update_devices`]: one transaction, each record read inside it, a
    /// refusal writes nothing, `f` may run more than once.
    fn update_devices(
        &self,
        names: &[String],
        f: DeviceUpdate<'_>,
    ) -> Result<Vec<Option<DeviceRecord>>, StoreError>;

    /// Appends an event that changes nothing else.
    fn record_event(&self, event: Event) -> Result<(), StoreError>;

    /// Events in id order about `device` (if given) at or after `since` (if given);
    /// with `limit`, the most recent `limit` of them.
    fn events(
        &self,
        device: Option<&str>,
        since: Option<UnixTime>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, StoreError>;

    /// The session writer's batch: all of `changes` in one transaction, in order, or
    /// none of them.
    fn apply_changes(&self, changes: &[&Commit]) -> Result<(), StoreError>;

    /// Makes everything committed so far durable. A no-op where a commit is already
    /// durable (PostgreSQL with `synchronous_commit` on).
    fn flush(&self) -> Result<(), StoreError>;
}

impl Backend for Store {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Store::get_device(self, name)
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        Store::list_devices(self)
    }

    fn add_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        Store::add_device(self, rec, event)
    }

    fn put_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        Store::put_device(self, rec, event)
    }

    fn update_devices(
        &self,
        names: &[String],
        f: DeviceUpdate<'_>,
    ) -> Result<Vec<Option<DeviceRecord>>, StoreError> {
        Store::update_devices(self, names, f)
    }

    fn record_event(&self, event: Event) -> Result<(), StoreError> {
        Store::record_event(self, event)
    }

    fn events(
        &self,
        device: Option<&str>,
        since: Option<UnixTime>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, StoreError> {
        Store::events(self, device, since, limit)
    }

    fn apply_changes(&self, changes: &[&Commit]) -> Result<(), StoreError> {
        Store::apply_changes(self, changes)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }
}
