//! The store: the only owner of persistent state.
//!
//! Callers hold a [`Store`], a cheap handle to one of two backends behind the
//! [`Backend`] trait (`backend.rs`):
//! * sled (`sled_store/`), embedded in the data directory's `db`: the default, one node;
//! * PostgreSQL (`pg.rs`), shared by several nodes (docs/cluster.md).
//!
//! The records are the same on both (the JSON of `codec.rs`): devices, the audit
//! trail, the issued-serial index with revocations, the key index, the web admin's
//! accounts. Every state change commits together with its audit event (and serial
//! index entries) in one transaction, so a crash can never leave one without the
//! other; a read-modify-write ([`Store::update_devices`]) reads inside its
//! transaction and never loses a concurrent edit.
//!
//! What both backends share is written once, here: iteration over pages, the generic
//! closures callers pass, the key index check. A backend only implements primitives.

mod accounts;
mod backend;
#[cfg(test)]
pub(crate) mod backend_tests;
mod cluster;
mod codec;
mod key_index;
pub mod migrate;
mod pg;
pub mod presence;
mod sled_store;
#[cfg(test)]
mod tests;
mod txn;
mod writer;

pub use accounts::{SessionKey, WebAccount, WebSession};
pub use backend::{Backend, EventFilter};
pub use cluster::{holder, AddressLimit, Cluster, LiveNode, Reservation};
pub use pg::PgStore;
pub use sled_store::{damage_reason, SledStore};
pub use writer::Writer;

use crate::model::{
    Commit, DeviceRecord, Event, Revocation, RevocationReason, SerialRecord, UnixTime,
};
use codec::encode_device;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;
use txn::DeviceTxn;

#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process (usually a running `capf serve`) holds the database lock.
    #[error("the store at {0} is in use by another process (is `capf serve` running?)")]
    Locked(PathBuf),
    #[error("device {0} not found")]
    NotFound(String),
    #[error("device {0} already exists")]
    Exists(String),
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("a device name cannot be empty")]
    EmptyName,
    /// The caller's update refused to apply; nothing was written.
    #[error("update of device {device} refused: {reason}")]
    Refused { device: String, reason: String },
    #[error("cannot encode record: {0}")]
    Encode(serde_json::Error),
    /// The store's files are damaged (truncated, corrupted): capf will not use it.
    #[error(
        "the store at {} is damaged ({reason}); capf will not use it. Restore it from a \
         backup: stop capf, move {} aside and put the db directory of your latest \
         `capf backup` in its place (or run capf with --data set to the backup)",
        path.display(),
        path.display()
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("web admin account {0} already exists")]
    AccountExists(String),
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("a store task did not complete: {0}")]
    FlushTask(#[from] tokio::task::JoinError),
    #[error("store flush failed: {0}")]
    FlushFailed(String),
    #[error("cannot sync the store to disk: {0}")]
    Sync(std::io::Error),
    #[error("cannot open the store's log file for syncing: {0}")]
    LogFile(std::io::Error),
    #[error("cannot start the store writer: {0}")]
    WriterStart(std::io::Error),
    #[error("the store writer did not record the change (see the log)")]
    WriterStopped,
    #[error("PostgreSQL store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database did not answer in time (down, unreachable or overloaded).
    #[error("PostgreSQL store: no answer within {} s", .0.as_secs())]
    PostgresTimeout(std::time::Duration),
    /// Connecting to or setting up the PostgreSQL store failed (bad URL, schema
    /// migration).
    #[error("PostgreSQL store: {0}")]
    PostgresSetup(String),
    /// A transaction met another and must run again (sled); never leaves the store.
    #[error("a store transaction conflicted with another")]
    TxnConflict,
    /// What the backend in use does not do, and what does it instead.
    #[error("{0}")]
    Unsupported(String),
}

/// What [`Store::upsert_devices`] did with one device.
#[derive(Debug, PartialEq, Eq)]
pub enum Upsert {
    /// It was new; this record was stored.
    Added(DeviceRecord),
    /// It existed; this record replaced it.
    Updated(DeviceRecord),
    /// The record asked for is the one stored: nothing was written.
    Unchanged,
}

/// Encodes a record that is about to be written under its own name.
fn encode_new_device(rec: &DeviceRecord) -> Result<Vec<u8>, StoreError> {
    if rec.name.is_empty() {
        return Err(StoreError::EmptyName);
    }
    encode_device(rec)
}

/// How many records a lazy listing reads per round trip.
const PAGE: usize = 512;

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Transactions through this store (any clone) that recorded a revocation: what
    /// tells the CRL it kept is behind (`phone_config::crl`).
    revoking_writes: Arc<AtomicU64>,
}

impl From<SledStore> for Store {
    fn from(store: SledStore) -> Store {
        Store::with_backend(Arc::new(store))
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Store {
        Store::with_backend(Arc::new(store))
    }
}

impl Store {
    fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            revoking_writes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many transactions through this store have recorded a revocation since it
    /// was opened. Only this process's: another node's revocations are not counted.
    pub fn revoking_writes(&self) -> u64 {
        self.revoking_writes.load(Ordering::Acquire)
    }

    /// Opens (creating if needed) the sled store in `dir`: see [`SledStore::open`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        SledStore::open(dir).map(Store::from)
    }

    /// Opens the store a node is configured with: the PostgreSQL database at `url`
    /// (`store = "postgres://..."` in capf.toml), or the sled store in `dir` when
    /// `url` is empty.
    pub fn open_configured(dir: &Path, url: &str) -> Result<Store, StoreError> {
        if url.is_empty() {
            Store::open(dir)
        } else {
            PgStore::open(url).map(Store::from)
        }
    }

    /// `sled` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// The directory, or the database URL without its password.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// See [`Backend::check`].
    pub fn check(&self) -> Result<(), StoreError> {
        self.backend.check()
    }

    /// See [`Backend::probe`].
    pub fn probe(&self) -> Result<(), StoreError> {
        self.backend.probe()
    }

    // -- devices ------------------------------------------------------------------

    pub fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.backend.get_device(name)
    }

    /// All devices in name order, read a page at a time (for large stores).
    pub fn devices(&self) -> impl Iterator<Item = Result<DeviceRecord, StoreError>> + '_ {
        self.devices_from("", None)
    }

    /// Devices whose name starts with `prefix`, in name order, from the first one after
    /// `after` (or the first with the prefix), read a page at a time: a caller that
    /// stops early reads only what it took, for a page of a large fleet.
    pub fn devices_from(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<DeviceRecord, StoreError>> + '_ {
        let prefix = prefix.to_string();
        let mut last = after.map(String::from);
        pages(move || {
            let page = self.backend.devices_page(&prefix, last.as_deref(), PAGE)?;
            if let Some((name, _)) = page.last() {
                last = Some(name.clone());
            }
            Ok(page)
        })
        .map(|named| named.and_then(|(_, rec)| rec))
    }

    /// All devices in name order.
    pub fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices().collect()
    }

    /// Number of devices (sled counts by iterating).
    pub fn device_count(&self) -> Result<usize, StoreError> {
        self.backend.device_count()
    }

    /// Adds a new device; [`StoreError::Exists`] if the name is taken.
    pub fn add_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        let encoded = encode_new_device(rec)?;
        self.write(|t| txn::add_device(t, rec, &encoded, &event))
    }

    /// Inserts or replaces a device.
    pub fn put_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        let encoded = encode_new_device(rec)?;
        self.write(|t| txn::put_device(t, rec, &encoded, &event))
    }

    /// Applies `f` to each named device in one transaction and stores the result with
    /// the event `f` returns. `f` may pass a device over (`Ok(None)`, e.g. it no
    /// longer matches a selection); a name no longer in the store is passed over too.
    /// Passed-over devices come back as `None`. Each record is read inside the
    /// transaction, so a concurrent change (a phone that just enrolled) is never
    /// overwritten with an older copy. If `f` refuses any device, nothing is written.
    /// `f` may run more than once per device.
    pub fn update_devices<F>(
        &self,
        names: &[String],
        f: F,
    ) -> Result<Vec<Option<DeviceRecord>>, StoreError>
    where
        F: Fn(&mut DeviceRecord) -> Result<Option<Event>, String>,
    {
        self.write(|t| txn::update_devices(t, names, &f))
    }

    /// Removes a device; `false` (and no event) if there was none. Its LSCs go on the
    /// CRL; its serial index entries stay: they account for certificates that exist.
    pub fn remove_device(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        self.remove_device_with(name, |_| event.clone())
    }

    /// Removes a device with the event `f` makes of it as it is at commit time (so
    /// the event can name what went: its serials; `None` for a record that no longer
    /// decodes, which can still be removed); `false` (and no event) if there was none.
    pub fn remove_device_with(
        &self,
        name: &str,
        f: impl Fn(Option<&DeviceRecord>) -> Event,
    ) -> Result<bool, StoreError> {
        self.write(|t| txn::remove_device(t, name, &f))
    }

    /// Sets many devices at once, in one transaction (one batch of the CSV import).
    ///
    /// For every item, named by `name`, `f` gets the device as it is at commit time
    /// (`None` if there is none) and returns the record to store with its event. A
    /// record equal to the current one is not written and its event dropped, so
    /// repeating a call changes nothing. `f` may refuse: then nothing of this call is
    /// written and the reason comes back as [`StoreError::Refused`]. It may run more
    /// than once and may not rename a device. Callers keep batches to about ten
    /// thousand devices (sled holds a transaction in memory).
    pub fn upsert_devices<T, F>(
        &self,
        items: &[T],
        name: impl Fn(&T) -> &str,
        f: F,
    ) -> Result<Vec<Upsert>, StoreError>
    where
        F: Fn(&T, Option<&DeviceRecord>) -> Result<(DeviceRecord, Event), String>,
    {
        let names: Vec<&str> = items.iter().map(name).collect();
        let f = |index: usize, current: Option<&DeviceRecord>| f(&items[index], current);
        self.write(|t| txn::upsert_devices(t, &names, &f))
    }

    /// Revokes the LSCs `name` holds (installed and unconfirmed), in one transaction
    /// with the event `f` makes of the device as it was: the device no longer holds
    /// them (so they neither authenticate nor receive configuration), its
    /// `revoked_serials` keep them from ever coming back, and the serial index puts
    /// them on the CRL. Returns the revoked serials; `None` if there is no such device.
    pub fn revoke_device(
        &self,
        name: &str,
        reason: RevocationReason,
        now: UnixTime,
        f: impl Fn(&DeviceRecord, &[String]) -> Event,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.write(|t| txn::revoke_device(t, name, reason, now, &f))
    }

    /// The device whose LSC (current, or sent and unconfirmed) holds the key
    /// `spki_der`, if any (see `key_index.rs`).
    pub fn device_holding_key(&self, spki_der: &[u8]) -> Result<Option<String>, StoreError> {
        let Some(key) = key_index::index_key(spki_der) else {
            return Ok(None);
        };
        let Some(name) = self.backend.indexed_key_holder(&key)? else {
            return Ok(None);
        };
        let holds = self.get_device(&name)?.is_some_and(|rec| {
            key_index::certified_keys(&rec)
                .any(|cert| key_index::index_key(&cert.public_key) == Some(key))
        });
        Ok(holds.then_some(name))
    }

    // -- serials ------------------------------------------------------------------

    pub fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        self.backend.serial(serial)
    }

    /// The whole serial index, in serial order.
    pub fn serials(&self) -> Result<Vec<(String, SerialRecord)>, StoreError> {
        self.backend.serials()
    }

    /// Every revoked serial with its revocation, in serial order: the CRL's content.
    pub fn revocations(&self) -> Result<Vec<(String, Revocation)>, StoreError> {
        Ok(self
            .serials()?
            .into_iter()
            .filter_map(|(serial, rec)| Some((serial, rec.revoked?)))
            .collect())
    }

    // -- web sessions (see `web::session`) ---------------------------------------

    pub fn web_session(&self, key: &SessionKey) -> Result<Option<WebSession>, StoreError> {
        self.backend.web_session(key)
    }

    pub fn put_web_session(
        &self,
        key: &SessionKey,
        session: &WebSession,
    ) -> Result<(), StoreError> {
        self.backend.put_web_session(key, session)
    }

    pub fn remove_web_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.backend.remove_web_session(key)
    }

    /// Every session, by key.
    pub fn web_sessions(&self) -> Result<Vec<(SessionKey, WebSession)>, StoreError> {
        self.backend.web_sessions()
    }

    // -- web accounts -------------------------------------------------------------

    pub fn web_account(&self, name: &str) -> Result<Option<WebAccount>, StoreError> {
        self.backend.web_account(name)
    }

    /// Every account, in name order.
    pub fn web_accounts(&self) -> Result<Vec<WebAccount>, StoreError> {
        self.backend.web_accounts()
    }

    /// Adds an account with its event; [`StoreError::AccountExists`] if the name is
    /// taken.
    pub fn add_web_account(&self, account: &WebAccount, event: Event) -> Result<(), StoreError> {
        self.backend.add_web_account(account, event)
    }

    /// Removes an account with its event; `false` (and no event) if there was none.
    pub fn remove_web_account(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        self.backend.remove_web_account(name, event)
    }

    /// Applies `f` to the account as it is inside one transaction and stores it with
    /// the event `f` returns (if any). `None` if there is no such account. `f` may run
    /// more than once; what its last run returned comes back.
    pub fn update_web_account<T>(
        &self,
        name: &str,
        f: impl Fn(&mut WebAccount) -> (Option<Event>, T),
    ) -> Result<Option<T>, StoreError> {
        let out = std::cell::RefCell::new(None);
        let found = self.backend.update_web_account(name, &|account| {
            let (event, value) = f(account);
            *out.borrow_mut() = Some(value);
            event
        })?;
        Ok(if found { out.into_inner() } else { None })
    }

    // -- audit trail --------------------------------------------------------------

    /// Appends an event that changes nothing else (a refused login, a web request
    /// that was turned away).
    pub fn record_event(&self, event: Event) -> Result<(), StoreError> {
        self.backend.record_event(event)
    }

    /// Events in id order: those about `device` (if given) at or after `since` (if
    /// given). With `limit`, the most recent `limit` of them.
    pub fn events(
        &self,
        device: Option<&str>,
        since: Option<UnixTime>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, StoreError> {
        let filter = EventFilter { device, since };
        match limit {
            Some(limit) => {
                let mut newest = self.backend.events_newest_first(None, filter, limit)?;
                newest.reverse();
                Ok(newest)
            }
            None => self
                .events_in_order(device.map(String::from), since)
                .collect(),
        }
    }

    /// The events at or after `since`, newest first: the cost is what is recent, not
    /// the whole trail.
    pub fn events_since(&self, since: UnixTime) -> Result<Vec<Event>, StoreError> {
        let filter = EventFilter {
            device: None,
            since: Some(since),
        };
        let mut before = None;
        pages(move || {
            let page = self.backend.events_newest_first(before, filter, PAGE)?;
            before = page.last().map(|e| e.id);
            Ok(page)
        })
        .collect()
    }

    /// [`Store::events`] without a limit, read a page at a time: for listings of any
    /// length (a million-row import alone appends a million events).
    pub fn events_in_order(
        &self,
        device: Option<String>,
        since: Option<UnixTime>,
    ) -> impl Iterator<Item = Result<Event, StoreError>> + '_ {
        let mut after = 0;
        pages(move || {
            let filter = EventFilter {
                device: device.as_deref(),
                since,
            };
            let page = self.backend.events_oldest_first(after, filter, PAGE)?;
            if let Some(last) = page.last() {
                after = last.id;
            }
            Ok(page)
        })
    }

    /// Events newest first, starting below id `before` (all when `None`), read a page
    /// at a time: the audit page reads a page and stops.
    pub fn events_newest_first(
        &self,
        before: Option<u64>,
    ) -> impl Iterator<Item = Result<Event, StoreError>> + '_ {
        let mut before = before;
        pages(move || {
            let page = self
                .backend
                .events_newest_first(before, EventFilter::default(), PAGE)?;
            if let Some(last) = page.last() {
                before = Some(last.id);
            }
            Ok(page)
        })
    }

    // -- the session writer and durability ------------------------------------------

    /// See [`Backend::flush`]: call before telling a phone its change is stored.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.backend.flush()
    }

    /// [`Store::flush`] without blocking the runtime. Sessions do not come here; their
    /// changes are flushed by the [`Writer`], many at once.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush()).await?
    }

    /// See [`Backend::backup_to`].
    pub fn backup_to(&self, dir: &Path) -> Result<(), StoreError> {
        self.backend.backup_to(dir)
    }

    /// What nodes sharing this store agree on besides records (leases, the per-address
    /// limit); `None` when one process owns the store (sled).
    pub fn cluster(&self) -> Option<&dyn Cluster> {
        self.backend.cluster()
    }

    /// Whether nodes share this store over the network (PostgreSQL): each read is
    /// then a round trip, not a lookup in this process's memory.
    pub fn is_shared(&self) -> bool {
        self.cluster().is_some()
    }

    /// Runs `f` on [`Store::cluster`] without waiting for it, for what a session hands
    /// back as it ends (a device's turn, an address's attempt): a round trip to the
    /// shared database must not hold the runtime worker that ends the session. On the
    /// blocking pool when called from the runtime, in place otherwise (a test, or a
    /// `Drop` after the runtime is gone). Nothing to do for a store one process owns.
    /// What `f` hands back expires on its own should it never run (a node stopped
    /// at that moment), as after a crash.
    pub fn in_cluster_later(&self, f: impl FnOnce(&dyn Cluster) + Send + 'static) {
        if !self.is_shared() {
            return;
        }
        let store = self.clone();
        let run = move || {
            if let Some(cluster) = store.cluster() {
                f(cluster);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(run)),
            Err(_) => run(),
        }
    }

    /// Runs `f` on [`Store::cluster`] from the async runtime, off its workers (each
    /// call is a database round trip, which can take seconds); `Ok(None)` for a store
    /// one process owns.
    pub async fn in_cluster<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Cluster) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        self.read_async(move |store| store.cluster().map(f).transpose())
            .await
    }

    /// Runs the reads of `f` from the async runtime. A store one process owns (sled)
    /// answers from memory in microseconds, so `f` runs in place; a shared database
    /// answers after a network round trip, so there `f` runs on the blocking pool
    /// rather than holding a runtime worker, and every session and request queued on
    /// it, for that long.
    pub async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if !self.is_shared() {
            return f(self);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store)).await?
    }

    /// The session writer's batch: all of `changes` in one transaction, in order, or
    /// none of them.
    pub(crate) fn apply_changes(&self, changes: &[&Commit]) -> Result<(), StoreError> {
        self.write(|t| txn::apply_changes(t, changes))
    }

    /// Runs `f` as one transaction of the backend (`txn.rs` holds the writes) and
    /// returns what its last run, the one committed, returned.
    fn write<T>(
        &self,
        f: impl Fn(&dyn DeviceTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = std::cell::RefCell::new(None);
        let revoked = std::cell::Cell::new(false);
        self.backend.transact(&|t| {
            *out.borrow_mut() = Some(f(&Watched {
                t,
                revoked: &revoked,
            })?);
            Ok(())
        })?;
        if revoked.get() {
            self.revoking_writes.fetch_add(1, Ordering::AcqRel);
        }
        Ok(out
            .into_inner()
            .expect("a committed transaction ran its body"))
    }
}

/// A transaction that notes whether it stored a revoked serial.
struct Watched<'a> {
    t: &'a dyn DeviceTxn,
    revoked: &'a std::cell::Cell<bool>,
}

impl DeviceTxn for Watched<'_> {
    fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.t.device(name)
    }

    fn insert_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<bool, StoreError> {
        self.t.insert_device(rec, encoded)
    }

    fn put_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<(), StoreError> {
        self.t.put_device(rec, encoded)
    }

    fn remove_device(&self, name: &str) -> Result<Option<Option<DeviceRecord>>, StoreError> {
        self.t.remove_device(name)
    }

    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        self.t.serial(serial)
    }

    fn put_serials(&self, serials: &[(String, SerialRecord)]) -> Result<(), StoreError> {
        if serials.iter().any(|(_, rec)| rec.revoked.is_some()) {
            self.revoked.set(true);
        }
        self.t.put_serials(serials)
    }

    fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        self.t.append_event(event)
    }
}

/// An iterator over the items of pages fetched by `next_page` until one comes back
/// short (or empty); an error is the last item.
fn pages<T>(
    mut next_page: impl FnMut() -> Result<Vec<T>, StoreError>,
) -> impl Iterator<Item = Result<T, StoreError>> {
    let mut buffered = std::collections::VecDeque::new();
    let mut done = false;
    std::iter::from_fn(move || {
        if buffered.is_empty() && !done {
            match next_page() {
                Ok(page) => {
                    done = page.len() < PAGE;
                    buffered.extend(page);
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
        buffered.pop_front().map(Ok)
    })
}
