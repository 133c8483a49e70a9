//! The sled store: the embedded default, one node, in the data directory's `db`.
//!
//! Trees (design.md "Store model"):
//! * `devices`: device name -> versioned `DeviceRecord`.
//! * `events`:  big-endian u64 id (monotonic) -> `Event`, append-only audit trail
//!   (read in `events`).
//! * `serials`: issued serial (lowercase hex) -> `SerialRecord`, with revocations
//!   (`serials`).
//! * `lsc_keys`: SHA-256 of a key's identity -> the device whose LSC holds it
//!   (see `key_index`).
//! * `meta`:    the next event id.
//! * `web_sessions`: SHA-256 of a session token -> `WebSession`, the web admin's
//!   sessions (written one at a time, in no transaction; not in backups).
//! * `web_accounts`: account name -> `WebAccount`, the web admin's operators (read
//!   and written in `accounts`).
//!
//! Every state change commits together with its audit event (and serial index
//! entries) in one sled transaction, so a crash can never leave one without the other.
//! sled runs transactions one at a time and re-runs a transaction's closure on
//! conflict, so a read-modify-write such as [`SledStore::update_devices`] never loses a
//! concurrent edit.

mod accounts;
mod events;
mod key_index;
mod serials;
#[cfg(test)]
mod tests;

use super::accounts::encode as encode_account;
use super::backend::{AccountUpdate, Backend, EventFilter, NamedRecord};
use super::codec::{
    decode_device, decode_serial, encode_event, encode_serial, event_key, serial_key,
};
use super::migrate::Record;
use super::txn::DeviceTxn;
use super::{encode_new_device, SessionKey, StoreError, WebAccount, WebSession};
use crate::model::{DeviceRecord, Event, SerialRecord};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::Transactional;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// Tree names. Every transaction spans all six.
const DEVICES: &str = "devices";
const EVENTS: &str = "events";
const SERIALS: &str = "serials";
const LSC_KEYS: &str = "lsc_keys";
const META: &str = "meta";
const WEB_ACCOUNTS: &str = "web_accounts";
/// Not one of the six of a transaction: a session is written alone.
const WEB_SESSIONS: &str = "web_sessions";

/// Key in `meta` of the id the next event gets. Ids start at 1 (0 means "not stored").
const NEXT_EVENT_ID: &[u8] = b"next_event_id";

/// Handle to the database. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    devices: sled::Tree,
    events: sled::Tree,
    serials: sled::Tree,
    lsc_keys: sled::Tree,
    meta: sled::Tree,
    web_accounts: sled::Tree,
    web_sessions: sled::Tree,
    /// Writers share it, a backup takes it alone: sled iterators are not snapshots, so
    /// this is what makes a backup a consistent picture of all trees. Only this process
    /// can write (sled's lock), so an in-process lock is enough.
    write_gate: Arc<RwLock<()>>,
    /// sled's log file, for `fdatasync` (see [`SledStore::flush`]).
    log_file: Arc<std::fs::File>,
    /// The store's directory, for messages.
    dir: Arc<Path>,
}

/// The transactional view of the six trees.
struct Txn<'a> {
    devices: &'a TransactionalTree,
    events: &'a TransactionalTree,
    serials: &'a TransactionalTree,
    lsc_keys: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    web_accounts: &'a TransactionalTree,
}

type TxnResult<T> = ConflictableTransactionResult<T, StoreError>;

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// A [`StoreError`] inside a transaction aborts it.
impl From<StoreError> for ConflictableTransactionError<StoreError> {
    fn from(e: StoreError) -> Self {
        ConflictableTransactionError::Abort(e)
    }
}

/// The other way, for the primitives of [`DeviceTxn`], whose errors are
/// [`StoreError`]s: a conflict travels as [`StoreError::TxnConflict`] through the
/// shared writes of `store/txn.rs`, and [`Backend::transact`] turns it back into one,
/// so sled runs the transaction again.
impl From<ConflictableTransactionError<StoreError>> for StoreError {
    fn from(e: ConflictableTransactionError<StoreError>) -> Self {
        match e {
            ConflictableTransactionError::Abort(e) => e,
            ConflictableTransactionError::Storage(e) => StoreError::Sled(e),
            ConflictableTransactionError::Conflict => StoreError::TxnConflict,
        }
    }
}

impl From<sled::transaction::UnabortableTransactionError> for StoreError {
    fn from(e: sled::transaction::UnabortableTransactionError) -> Self {
        ConflictableTransactionError::from(e).into()
    }
}

impl Txn<'_> {
    /// Reserves `count` consecutive event ids and returns the first.
    fn reserve_event_ids(&self, count: u64) -> TxnResult<u64> {
        let first = match self.meta.get(NEXT_EVENT_ID)? {
            None => 1,
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    abort(StoreError::Corrupt {
                        key: "meta/next_event_id".into(),
                        reason: format!("{} bytes, not 8", v.len()),
                    })
                })?,
        };
        self.meta
            .insert(NEXT_EVENT_ID, &(first + count).to_be_bytes()[..])?;
        Ok(first)
    }
}

impl DeviceTxn for Txn<'_> {
    fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        match self.devices.get(name.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_device(name.as_bytes(), &v)?)),
        }
    }

    fn insert_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<bool, StoreError> {
        if self.devices.get(rec.name.as_bytes())?.is_some() {
            return Ok(false);
        }
        self.put_device(rec, encoded)?;
        Ok(true)
    }

    fn put_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<(), StoreError> {
        self.devices.insert(rec.name.as_bytes(), encoded)?;
        Ok(self.index_keys(rec)?)
    }

    fn remove_device(&self, name: &str) -> Result<Option<Option<DeviceRecord>>, StoreError> {
        Ok(self
            .devices
            .remove(name.as_bytes())?
            .map(|raw| decode_device(name.as_bytes(), &raw).ok()))
    }

    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        let key = serial_key(serial);
        match self.serials.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_serial(key.as_bytes(), &v)?)),
        }
    }

    fn put_serials(&self, serials: &[(String, SerialRecord)]) -> Result<(), StoreError> {
        for (serial, rec) in serials {
            let encoded = encode_serial(rec)?;
            self.serials
                .insert(serial_key(serial).as_bytes(), encoded)?;
        }
        Ok(())
    }

    fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        let id = self.reserve_event_ids(1)?;
        let mut event = event.clone();
        event.id = id;
        self.events
            .insert(&event_key(id)[..], encode_event(&event)?)?;
        Ok(())
    }
}

/// sled's page cache. Its default (1 GiB) lets a large store take a gigabyte of RAM on
/// a small appliance; a device record is ~1.6 KiB, so this keeps tens of thousands of
/// devices hot while point lookups of the rest stay in the microseconds.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// sled 0.34 keeps its whole log (every tree) in this file of the store directory.
const SLED_LOG_FILE: &str = "db";

/// How long `SledStore::open` waits for a lock that may be on its way out.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

impl SledStore {
    /// Opens (creating if needed) the database in `dir`. Fails with
    /// [`StoreError::Locked`] while another process or handle has it open.
    ///
    /// sled lets go of its directory lock asynchronously: a handle dropped a moment ago
    /// (by this process, or by a process that is exiting) can still hold it. A lock is
    /// therefore retried for up to `LOCK_PATIENCE` before it counts as held.
    ///
    /// Damaged files (truncated, corrupted) give [`StoreError::Damaged`], also when
    /// sled panics on them rather than reporting an error: the panic is caught here
    /// and its message goes into the error, not onto the terminal.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        match catch_quietly(|| SledStore::open_unchecked(dir)) {
            Ok(opened) => opened.map_err(|e| damaged(dir, e)),
            Err(panic) => Err(StoreError::Damaged {
                path: dir.to_path_buf(),
                reason: format!("the store library failed reading it: {panic}"),
            }),
        }
    }

    fn open_unchecked(dir: &Path) -> Result<SledStore, StoreError> {
        let started = std::time::Instant::now();
        let db = loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_BYTES)
                .open()
                .map_err(|e| open_error(dir, e));
            match opened {
                Err(StoreError::Locked(_)) if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => break other?,
            }
        };
        let store = SledStore {
            devices: db.open_tree(DEVICES)?,
            events: db.open_tree(EVENTS)?,
            serials: db.open_tree(SERIALS)?,
            lsc_keys: db.open_tree(LSC_KEYS)?,
            meta: db.open_tree(META)?,
            web_accounts: db.open_tree(WEB_ACCOUNTS)?,
            web_sessions: db.open_tree(WEB_SESSIONS)?,
            log_file: Arc::new(
                std::fs::File::open(dir.join(SLED_LOG_FILE)).map_err(StoreError::LogFile)?,
            ),
            db,
            write_gate: Arc::new(RwLock::new(())),
            dir: Arc::from(dir),
        };
        store.index_existing_keys()?;
        Ok(store)
    }

    /// Reads every record that serving phones depends on once (devices, serials, the
    /// event counter), so that damage sled only notices when it reads a page shows
    /// now, as [`StoreError::Damaged`]: `capf serve` checks before it serves anything.
    /// The audit trail is not read (it only grows, and phones never read it); damage
    /// there shows when it is listed. Panics are caught as in [`SledStore::open`].
    pub fn check(&self) -> Result<(), StoreError> {
        let dir = &*self.dir;
        let read_all = || -> Result<(), StoreError> {
            for tree in [&self.devices, &self.serials, &self.lsc_keys, &self.meta] {
                for kv in tree.iter() {
                    kv?;
                }
            }
            Ok(())
        };
        match catch_quietly(read_all) {
            Ok(checked) => checked.map_err(|e| damaged(dir, e)),
            Err(panic) => Err(StoreError::Damaged {
                path: dir.to_path_buf(),
                reason: format!("the store library failed reading it: {panic}"),
            }),
        }
    }

    /// Writes `bytes` as the record of `name`, as damage would (tests of the callers).
    #[cfg(test)]
    pub(in crate::store) fn insert_raw_device(&self, name: &str, bytes: &[u8]) {
        self.devices.insert(name, bytes).unwrap();
    }

    // -----------------------------------------------------------------------------

    /// Runs `f` as one transaction over all trees, mapping sled's errors to ours.
    fn transact<T>(&self, f: impl Fn(&Txn<'_>) -> TxnResult<T>) -> Result<T, StoreError> {
        let _shared = self.shared_write();
        let trees = (
            &self.devices,
            &self.events,
            &self.serials,
            &self.lsc_keys,
            &self.meta,
            &self.web_accounts,
        );
        trees
            .transaction(|(devices, events, serials, lsc_keys, meta, web_accounts)| {
                f(&Txn {
                    devices,
                    events,
                    serials,
                    lsc_keys,
                    meta,
                    web_accounts,
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })
    }

    fn shared_write(&self) -> RwLockReadGuard<'_, ()> {
        self.write_gate.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn check(&self) -> Result<(), StoreError> {
        SledStore::check(self)
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.devices.first()?;
        Ok(())
    }

    fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        match self.devices.get(name.as_bytes())? {
            None => Ok(None),
            Some(v) => decode_device(name.as_bytes(), &v).map(Some),
        }
    }

    fn devices_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NamedRecord>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.as_bytes().to_vec()),
            _ => Bound::Included(prefix.as_bytes().to_vec()),
        };
        let mut page = Vec::new();
        for kv in self.devices.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = kv?;
            if page.len() >= limit || !k.starts_with(prefix.as_bytes()) {
                break;
            }
            page.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode_device(&k, &v),
            ));
        }
        Ok(page)
    }

    /// O(n): sled counts by iterating.
    fn device_count(&self) -> Result<usize, StoreError> {
        Ok(self.devices.len())
    }

    fn indexed_key_holder(&self, key: &[u8; 32]) -> Result<Option<String>, StoreError> {
        SledStore::indexed_key_holder(self, key)
    }

    fn lsc_keys(&self) -> Result<Vec<([u8; 32], String)>, StoreError> {
        SledStore::lsc_keys(self)
    }

    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        SledStore::serial(self, serial)
    }

    fn serials(&self) -> Result<Vec<(String, SerialRecord)>, StoreError> {
        SledStore::serials(self)
    }

    fn web_account(&self, name: &str) -> Result<Option<WebAccount>, StoreError> {
        SledStore::web_account(self, name)
    }

    fn web_session(&self, key: &SessionKey) -> Result<Option<WebSession>, StoreError> {
        SledStore::web_session(self, key)
    }

    fn put_web_session(&self, key: &SessionKey, session: &WebSession) -> Result<(), StoreError> {
        SledStore::put_web_session(self, key, session)
    }

    fn remove_web_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        SledStore::remove_web_session(self, key)
    }

    fn web_sessions(&self) -> Result<Vec<(SessionKey, WebSession)>, StoreError> {
        SledStore::web_sessions(self)
    }

    fn web_accounts(&self) -> Result<Vec<WebAccount>, StoreError> {
        SledStore::web_accounts(self)
    }

    fn add_web_account(&self, account: &WebAccount, event: Event) -> Result<(), StoreError> {
        SledStore::add_web_account(self, account, event)
    }

    fn remove_web_account(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        SledStore::remove_web_account(self, name, event)
    }

    fn update_web_account(&self, name: &str, f: AccountUpdate<'_>) -> Result<bool, StoreError> {
        SledStore::update_web_account(self, name, f)
    }

    fn record_event(&self, event: Event) -> Result<(), StoreError> {
        SledStore::record_event(self, event)
    }

    fn events_newest_first(
        &self,
        before: Option<u64>,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        SledStore::events_newest_first(self, before, filter, limit)
    }

    fn events_oldest_first(
        &self,
        after: u64,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        SledStore::events_oldest_first(self, after, filter, limit)
    }

    fn transact(
        &self,
        f: &dyn Fn(&dyn DeviceTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        SledStore::transact(self, |t| {
            f(t).map_err(|e| match e {
                StoreError::TxnConflict => ConflictableTransactionError::Conflict,
                e => ConflictableTransactionError::Abort(e),
            })
        })
    }

    fn load(&self, records: &[Record]) -> Result<(), StoreError> {
        self.transact(|t| {
            let mut next_event_id = None;
            for record in records {
                match record {
                    Record::Device(rec) => {
                        t.devices
                            .insert(rec.name.as_bytes(), encode_new_device(rec)?)?;
                    }
                    Record::Event(event) => {
                        t.events
                            .insert(&event_key(event.id)[..], encode_event(event)?)?;
                        next_event_id = next_event_id.max(Some(event.id + 1));
                    }
                    Record::Serial(serial, rec) => {
                        t.serials
                            .insert(serial_key(serial).as_bytes(), encode_serial(rec)?)?;
                    }
                    Record::LscKey(key, device) => {
                        t.lsc_keys.insert(&key[..], device.as_bytes())?;
                    }
                    Record::WebAccount(account) => {
                        t.web_accounts
                            .insert(account.name.as_bytes(), encode_account(account)?)?;
                    }
                }
            }
            if let Some(next) = next_event_id {
                let first_free = t.reserve_event_ids(0)?;
                if next > first_free {
                    t.meta.insert(NEXT_EVENT_ID, &next.to_be_bytes()[..])?;
                }
            }
            Ok(())
        })
    }

    /// Writes everything committed so far to disk. sled otherwise flushes in the
    /// background every 500 ms; call this before telling a phone its change is stored.
    ///
    /// sled's `flush` ends with `sync_file_range` on Linux, which waits for the pages
    /// to be written but neither flushes the drive's write cache nor the file's
    /// metadata: after a power cut the change could still be gone. (Only sled's
    /// 500 ms background flusher calls `fsync`.) So the log file is `fdatasync`ed
    /// here as well; any descriptor of the file will do. (sled writes a log item over
    /// about 128 KiB to a file of its own under `blobs/`, unsynced; capf's records are
    /// a few KiB, and no store measured here has had a blob.)
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.log_file.sync_data().map_err(StoreError::Sync)?;
        Ok(())
    }

    /// Copies all trees into a new database in `dir` (which must not hold one yet),
    /// as they are at one instant: writers wait until the copy is done.
    fn backup_to(&self, dir: &Path) -> Result<(), StoreError> {
        let _alone = self.write_gate.write().unwrap_or_else(|p| p.into_inner());
        let target = sled::Config::new()
            .path(dir)
            .create_new(true)
            .open()
            .map_err(|e| open_error(dir, e))?;
        for (name, from) in [
            (DEVICES, &self.devices),
            (EVENTS, &self.events),
            (SERIALS, &self.serials),
            (LSC_KEYS, &self.lsc_keys),
            (META, &self.meta),
            (WEB_ACCOUNTS, &self.web_accounts),
        ] {
            let mut batch = sled::Batch::default();
            for kv in from.iter() {
                let (k, v) = kv?;
                batch.insert(k, v);
            }
            target.open_tree(name)?.apply_batch(batch)?;
        }
        target.flush()?;
        // As in `flush`: sled's own flush does not reach the drive (nor, for a new
        // file, its metadata).
        for synced in [dir.join(SLED_LOG_FILE), dir.join("conf"), dir.to_path_buf()] {
            std::fs::File::open(synced)
                .and_then(|f| f.sync_all())
                .map_err(StoreError::Sync)?;
        }
        Ok(())
    }
}

/// What is wrong with the store's files, if `e` is sled saying they are damaged.
pub fn damage_reason(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Sled(sled::Error::Corruption { at, .. }) => Some(match at {
            Some(at) => format!("corrupted data at {at:?}"),
            None => "corrupted data".to_string(),
        }),
        StoreError::Sled(sled::Error::ReportableBug(bug)) => {
            Some(format!("inconsistent data: {bug}"))
        }
        StoreError::Sled(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Some(format!("a file ends early: {io}"))
        }
        _ => None,
    }
}

/// `e` as [`StoreError::Damaged`] for the store in `dir` if it says the files are
/// damaged; any other error as it is.
fn damaged(dir: &Path, e: StoreError) -> StoreError {
    match damage_reason(&e) {
        Some(reason) => StoreError::Damaged {
            path: dir.to_path_buf(),
            reason,
        },
        None => e,
    }
}

thread_local! {
    /// Set while [`catch_quietly`] runs on this thread: panics are caught, not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The message of the last panic caught quietly on this thread.
    static CAUGHT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, turning a panic into `Err(message)` without the default report on
/// stderr (a backtrace note means nothing to an operator whose store is damaged).
/// The panic hook is wrapped once per process and stays silent only on a thread
/// inside this function; panics anywhere else are reported as before.
fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static WRAP_HOOK: std::sync::Once = std::sync::Once::new();
    WRAP_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(std::cell::Cell::get) {
                let message = match (
                    info.payload().downcast_ref::<&str>(),
                    info.payload().downcast_ref::<String>(),
                ) {
                    (Some(s), _) => (*s).to_string(),
                    (_, Some(s)) => s.clone(),
                    _ => "panic".to_string(),
                };
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{message}{at}")));
            } else {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    result.map_err(|_| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| "panic".to_string())
    })
}

/// sled reports a held lock as a plain `io::Error` of kind `Other` whose message starts
/// with "could not acquire lock on" (sled 0.34 `Config::try_lock`, from fs2's
/// `try_lock_exclusive`); that message is the only thing that identifies it.
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::Other
                && io.to_string().starts_with("could not acquire lock on") =>
        {
            StoreError::Locked(dir.to_path_buf())
        }
        _ => StoreError::Sled(e),
    }
}
