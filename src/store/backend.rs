//! What a store backend offers, whichever database holds the records: sled
//! ([`SledStore`](super::sled_store::SledStore), the default, one node) or PostgreSQL
//! ([`PgStore`](super::PgStore), several nodes; docs/cluster.md "Store backends").
//!
//! Callers never hold a backend: they hold a [`Store`](super::Store), which puts the
//! conveniences both share (paged iteration, generic closures, the key index check)
//! on top of this trait once. A backend implements the primitives: a transaction
//! ([`Backend::transact`], in which `txn.rs` writes every device change once for
//! both, each with its audit event), and reads of bounded pages.
//!
//! Every method blocks until the database has answered. On PostgreSQL that is a
//! network round trip: callers on the async runtime use `spawn_blocking` or the
//! [`Writer`](super::Writer) thread, as they already do for sled's flushes.
//!
//! Closures are `&dyn Fn` (a trait object must be object-safe) and may run more than
//! once: both databases run a transaction again when it conflicts with another.

use super::migrate::Record;
use super::txn::DeviceTxn;
use super::{SessionKey, StoreError, WebAccount, WebSession};
use crate::model::{DeviceRecord, Event, SerialRecord, UnixTime};
use std::path::Path;

/// A device of a page, by name, or why its record does not decode.
pub type NamedRecord = (String, Result<DeviceRecord, StoreError>);

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

    /// Runs `f` as one transaction over the backend's primitive reads and writes, in
    /// which the store's writes are written once (`txn.rs`), and commits it. `f` runs
    /// again when the transaction conflicts with another (sled: a concurrent
    /// transaction; PostgreSQL: a deadlock or serialization failure), so it may run
    /// more than once.
    fn transact(
        &self,
        f: &dyn Fn(&dyn DeviceTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The device the key index names for `key` (an index key of `key_index`), which
    /// may no longer hold it.
    fn indexed_key_holder(&self, key: &[u8; 32]) -> Result<Option<String>, StoreError>;

    /// The whole key index, in key order (what `capf store migrate` copies).
    fn lsc_keys(&self) -> Result<Vec<([u8; 32], String)>, StoreError>;

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

    // -- web admin sessions ---------------------------------------------------------

    /// The web admin session stored under `key`.
    fn web_session(&self, key: &SessionKey) -> Result<Option<WebSession>, StoreError>;

    /// Stores (or replaces) the session under `key`. Sessions are not audited and not
    /// durable on their own: a session lost in a crash only means a new login.
    fn put_web_session(&self, key: &SessionKey, session: &WebSession) -> Result<(), StoreError>;

    fn remove_web_session(&self, key: &SessionKey) -> Result<(), StoreError>;

    /// Every session, by key.
    fn web_sessions(&self) -> Result<Vec<(SessionKey, WebSession)>, StoreError>;

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

    /// Makes everything committed so far durable. A no-op where a commit is already
    /// durable (PostgreSQL with `synchronous_commit` on).
    fn flush(&self) -> Result<(), StoreError>;

    /// Stores `records` as they are, in one transaction: events keep their ids (and
    /// later events get higher ones), devices their key index as given. For filling an
    /// empty store (`capf store migrate`); a record already there is replaced.
    fn load(&self, records: &[Record]) -> Result<(), StoreError>;

    /// What nodes sharing this store agree on besides records; `None` for a store one
    /// process owns (sled).
    fn cluster(&self) -> Option<&dyn super::Cluster> {
        None
    }

    /// A consistent copy of everything into a new store in `dir` (sled); PostgreSQL
    /// refuses: its own tools (`pg_dump`, base backups) do it.
    fn backup_to(&self, dir: &Path) -> Result<(), StoreError>;
}
