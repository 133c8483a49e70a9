//! What a store backend offers, whichever database holds the records: sled
//! ([`SledStore`](super::sled_store::SledStore), the default, one node) or PostgreSQL
//! ([`PgStore`](super::PgStore), several nodes; docs/cluster.md "Store backends").
//!
//! Callers never hold a backend: they hold a [`Store`](super::Store), which puts the
//! conveniences both share (paged iteration, generic closures, the key index check)
//! on top of this trait once. A backend implements the primitives: each write is one
//! transaction that commits its audit event with it, each read a bounded page.
//!
//! Every method blocks until the database has answered. On PostgreSQL that is a
//! network round trip: callers on the async runtime use `spawn_blocking` or the
//! [`Writer`](super::Writer) thread, as they already do for sled's flushes.
//!
//! Closures are `&dyn Fn` (a trait object must be object-safe) and may run more than
//! once: both databases run a transaction again when it conflicts with another.

use super::{StoreError, Upsert, WebAccount};
use crate::model::{Commit, DeviceRecord, Event, RevocationReason, SerialRecord, UnixTime};
use std::path::Path;

/// A device of a page, by name, or why its record does not decode.
pub type NamedRecord = (String, Result<DeviceRecord, StoreError>);

/// A device update: the event to store with the changed record, `None` to pass the
/// device over, or a refusal.
pub type DeviceUpdate<'a> = &'a dyn Fn(&mut DeviceRecord) -> Result<Option<Event>, String>;

/// One item of an upsert, by its index, given the device as stored (if any): the
/// record to store and its event, or a refusal.
pub type DeviceUpsert<'a> =
    &'a dyn Fn(usize, Option<&DeviceRecord>) -> Result<(DeviceRecord, Event), String>;

/// The event of a removal, made of the device as it is at commit time (`None` for a
/// record that no longer decodes).
pub type RemovalEvent<'a> = &'a dyn Fn(Option<&DeviceRecord>) -> Event;

/// The event of a revocation, made of the device without its LSCs and the serials
/// revoked.
pub type RevocationEvent<'a> = &'a dyn Fn(&DeviceRecord, &[String]) -> Event;

/// A web account update: the event to store with it, if any.
pub type AccountUpdate<'a> = &'a dyn Fn(&mut WebAccount) -> Option<Event>;

/// Which events a page of the audit trail holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventFilter<'a> {
    /// Only events about this device.
    pub device: Option<&'a str>,
    /// Only events at or after this time.
    pub since: Option<UnixTime>,
}

impl EventFilter<'_> {
    pub fn matches(&self, event: &Event) -> bool {
        self.device
            .is_none_or(|d| event.device.as_deref() == Some(d))
            && self.since.is_none_or(|s| event.time >= s)
    }
}

/// One device of an update, as every backend runs it: the event `f` returns, or `None`
/// when `f` passes the device over; refused when `f` refuses or renames the device.
pub(super) fn update_one(
    name: &str,
    rec: &mut DeviceRecord,
    f: DeviceUpdate<'_>,
) -> Result<Option<Event>, StoreError> {
    let event = f(rec).map_err(|reason| refused(name, reason))?;
    if event.is_some() && rec.name != name {
        return Err(refused(
            name,
            format!("it cannot be renamed to {:?}", rec.name),
        ));
    }
    Ok(event)
}

/// One item of an upsert, as every backend runs it: what to write (`None` when the
/// record asked for is the one stored), with its outcome.
pub(super) fn upsert_one(
    index: usize,
    name: &str,
    current: Option<DeviceRecord>,
    f: DeviceUpsert<'_>,
) -> Result<Option<(DeviceRecord, Event, bool)>, StoreError> {
    let (rec, event) = f(index, current.as_ref()).map_err(|reason| refused(name, reason))?;
    if rec.name != name {
        return Err(refused(
            name,
            format!("it cannot be renamed to {:?}", rec.name),
        ));
    }
    if current.as_ref() == Some(&rec) {
        return Ok(None);
    }
    Ok(Some((rec, event, current.is_some())))
}

/// The outcome of an upsert that wrote `rec`.
pub(super) fn upserted(rec: DeviceRecord, existed: bool) -> Upsert {
    if existed {
        Upsert::Updated(rec)
    } else {
        Upsert::Added(rec)
    }
}

/// The LSCs a revocation takes from `rec` (installed and unconfirmed), with when each
/// was issued; `rec` no longer holds them and remembers them as revoked.
pub(super) fn take_lscs(rec: &mut DeviceRecord) -> Vec<(String, UnixTime)> {
    let held: Vec<(String, UnixTime)> = [rec.lsc.take(), rec.unconfirmed_lsc.take()]
        .into_iter()
        .flatten()
        .map(|c| (c.serial, c.not_before))
        .collect();
    for (serial, _) in &held {
        rec.note_revoked(serial);
    }
    held
}

/// The LSCs of a removed device: on the CRL from then on, as no longer anyone's.
pub(super) fn removed_lscs(rec: &DeviceRecord) -> impl Iterator<Item = (&str, UnixTime)> {
    [rec.lsc.as_ref(), rec.unconfirmed_lsc.as_ref()]
        .into_iter()
        .flatten()
        .map(|c| (c.serial.as_str(), c.not_before))
}

/// The revocation a serial carries from now on: the first one if it has one.
pub(super) fn revoke(
    current: Option<SerialRecord>,
    device: &str,
    issued: UnixTime,
    now: UnixTime,
    reason: RevocationReason,
) -> SerialRecord {
    use crate::model::{Revocation, SerialState};
    let mut rec = current.unwrap_or(SerialRecord {
        device: device.to_owned(),
        state: SerialState::Superseded,
        issued,
        revoked: None,
    });
    rec.state = SerialState::Superseded;
    rec.revoked.get_or_insert(Revocation { time: now, reason });
    rec
}

fn refused(name: &str, reason: String) -> StoreError {
    StoreError::Refused {
        device: name.to_string(),
        reason,
    }
}

pub trait Backend: Send + Sync {
    /// `sled` or `postgres`, for messages and test names.
    fn kind(&self) -> &'static str;

    /// Where the records are: the directory, or the database URL without its password.
    fn location(&self) -> String;

    /// Reads what serving phones depends on, so that damage shows before a node
    /// serves (sled: every device, serial and key record; PostgreSQL: the schema).
    fn check(&self) -> Result<(), StoreError>;

    /// One cheap read: whether the store answers at all (`/readyz`).
    fn probe(&self) -> Result<(), StoreError>;

    // -- devices --------------------------------------------------------------------

    fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// Up to `limit` devices whose names start with `prefix`, in name (byte) order,
    /// after `after` when given, each by its name: a record that no longer decodes is
    /// an error of its own, so that listings can pass it over and go on. Fewer than
    /// `limit` means there are no more.
    fn devices_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NamedRecord>, StoreError>;

    fn device_count(&self) -> Result<usize, StoreError>;

    /// Adds a new device with its event; [`StoreError::Exists`] if the name is taken.
    fn add_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError>;

    /// Inserts or replaces a device, with its event.
    fn put_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError>;

    /// See [`Store::update_devices`](super::Store::update_devices).
    fn update_devices(
        &self,
        names: &[String],
        f: DeviceUpdate<'_>,
    ) -> Result<Vec<Option<DeviceRecord>>, StoreError>;

    /// Removes a device and revokes its LSCs, with the event `f` makes; `false` (and
    /// no event) if there was none.
    fn remove_device_with(&self, name: &str, f: RemovalEvent<'_>) -> Result<bool, StoreError>;

    /// See [`Store::upsert_devices`](super::Store::upsert_devices); `names` are the
    /// items' device names, `f` gets an item's index.
    fn upsert_devices(
        &self,
        names: &[&str],
        f: DeviceUpsert<'_>,
    ) -> Result<Vec<Upsert>, StoreError>;

    /// See [`Store::revoke_device`](super::Store::revoke_device).
    fn revoke_device(
        &self,
        name: &str,
        reason: RevocationReason,
        now: UnixTime,
        f: RevocationEvent<'_>,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// The device the key index names for `key` (an index key of `key_index`), which
    /// may no longer hold it.
    fn indexed_key_holder(&self, key: &[u8; 32]) -> Result<Option<String>, StoreError>;

    // -- serials --------------------------------------------------------------------

    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError>;

    /// The whole serial index, in serial order.
    fn serials(&self) -> Result<Vec<(String, SerialRecord)>, StoreError>;

    // -- web accounts ---------------------------------------------------------------

    fn web_account(&self, name: &str) -> Result<Option<WebAccount>, StoreError>;

    /// Every account, in name order.
    fn web_accounts(&self) -> Result<Vec<WebAccount>, StoreError>;

    /// [`StoreError::AccountExists`] if the name is taken.
    fn add_web_account(&self, account: &WebAccount, event: Event) -> Result<(), StoreError>;

    /// `false` (and no event) if there was none.
    fn remove_web_account(&self, name: &str, event: Event) -> Result<bool, StoreError>;

    /// Applies `f` to the account inside one transaction and stores it with the event
    /// `f` returns; `false` if there is no such account.
    fn update_web_account(&self, name: &str, f: AccountUpdate<'_>) -> Result<bool, StoreError>;

    // -- audit trail ----------------------------------------------------------------

    /// Appends an event that changes nothing else.
    fn record_event(&self, event: Event) -> Result<(), StoreError>;

    /// Up to `limit` events matching `filter`, newest first, with ids below `before`
    /// when given. A `since` filter may end the page at the first older event (ids
    /// follow time), so a page is never a scan of the whole trail.
    fn events_newest_first(
        &self,
        before: Option<u64>,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Up to `limit` events matching `filter`, oldest first, with ids above `after`.
    fn events_oldest_first(
        &self,
        after: u64,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    // -- the session writer and durability -------------------------------------------

    /// The session writer's batch: all of `changes` in one transaction, in order, or
    /// none of them.
    fn apply_changes(&self, changes: &[&Commit]) -> Result<(), StoreError>;

    /// Makes everything committed so far durable. A no-op where a commit is already
    /// durable (PostgreSQL with `synchronous_commit` on).
    fn flush(&self) -> Result<(), StoreError>;

    /// What nodes sharing this store agree on besides records; `None` for a store one
    /// process owns (sled).
    fn cluster(&self) -> Option<&dyn super::Cluster> {
        None
    }

    /// A consistent copy of everything into a new store in `dir` (sled); PostgreSQL
    /// refuses: its own tools (`pg_dump`, base backups) do it.
    fn backup_to(&self, dir: &Path) -> Result<(), StoreError>;
}
