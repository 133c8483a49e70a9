//! The PostgreSQL store backend (docs/cluster.md "Store backends"): the sled trees as
//! tables of one database that several capf nodes share.
//!
//! The schema is under versioned migrations (`pg_migrations/`, run by refinery when a
//! store is opened, under an advisory lock so that nodes starting together do not run
//! them twice). Records are the JSON of `codec.rs`, in `jsonb` columns: one codec for
//! both backends.
//!
//! The store's interface is synchronous (the session writer is a thread of its own,
//! and sled answers in microseconds), while the PostgreSQL client, tokio-postgres, is
//! asynchronous. Its connections therefore run on a small runtime of their own (one
//! thread, `store-postgres`), and each call waits for its answer with a plain
//! thread-parking `block_on`. That works from any thread, including the writer and a
//! runtime worker (which the `postgres` crate's own `block_on` would panic on), and
//! the async callers of a later step can await the same client directly.
//!
//! Transactions are `READ COMMITTED` with the rows they read-modify-write locked
//! (`SELECT ... FOR UPDATE`): a device is changed by one node at a time, and a
//! transaction that meets a deadlock or serialization failure is run again, as sled
//! re-runs a transaction's closure on conflict. A commit returns once PostgreSQL has
//! made it durable (`synchronous_commit` on, the default): that is the writer's flush.

use super::backend::{Backend, DeviceUpdate};
use super::codec::{decode_device, encode_device, encode_event, encode_serial, serial_key};
use super::key_index::{certified_keys, index_key};
use super::{encode_new_device, StoreError};
use crate::model::{Commit, DeviceRecord, Event, SerialRecord, UnixTime};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

mod embedded {
    refinery::embed_migrations!("src/store/pg_migrations");
}

/// Key of the advisory lock held while migrations run ("capf" in ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7066;

/// How many times a transaction that failed on a conflict with another one is run
/// again before the error is returned.
const MAX_RETRIES: usize = 20;

/// Handle to a PostgreSQL store. Cheap to clone; connections are pooled.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    /// Tests put each store in a schema of its own (`search_path`).
    schema: Option<String>,
    /// The runtime that drives the connections.
    runtime: tokio::runtime::Handle,
    /// Idle connections, reused by the next call.
    idle: Mutex<Vec<Client>>,
    /// Dropped with the last handle: the runtime thread then ends (and drops its
    /// runtime on its own thread, which may not happen on a runtime worker).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, or a Unix
    /// socket directory as `host`) and brings its schema up to date.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_in_schema(url, None)
    }

    /// [`PgStore::open`] with every table in `schema` (created if needed), e.g. one
    /// schema per test in a shared database. Schema names are `[a-z0-9_]+`.
    pub fn open_in_schema(url: &str, schema: Option<&str>) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::PostgresSetup(format!("bad PostgreSQL URL: {e}")))?;
        if let Some(schema) = schema {
            let valid = !schema.is_empty()
                && schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(StoreError::PostgresSetup(format!(
                    "bad schema name {schema:?}"
                )));
            }
        }
        let (runtime, stop) = start_runtime()?;
        let store = PgStore {
            inner: Arc::new(Inner {
                config,
                schema: schema.map(String::from),
                runtime,
                idle: Mutex::new(Vec::new()),
                _stop: stop,
            }),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The schema given to [`PgStore::open_in_schema`].
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// The versions of the migrations applied to the database, in order.
    pub fn applied_migrations(&self) -> Result<Vec<i32>, StoreError> {
        Ok(self
            .query(
                "SELECT version FROM refinery_schema_history ORDER BY version",
                &[],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// Drops the store's schema with everything in it (tests clean up after themselves).
    #[cfg(test)]
    pub(super) fn drop_schema(&self) -> Result<(), StoreError> {
        let schema = self.inner.schema.as_deref().expect("a store in a schema");
        let conn = self.conn()?;
        let client = conn.client.as_ref().expect("held until dropped");
        block_on(client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")))?;
        Ok(())
    }

    /// Runs the migrations not yet applied, one node at a time.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.connect()?;
        let schema = self.inner.schema.clone();
        let task = self.inner.runtime.spawn(async move {
            client
                .batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .await
                .map_err(StoreError::from)?;
            if let Some(schema) = schema {
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .await?;
            }
            let report = embedded::migrations::runner()
                .run_async(&mut client)
                .await
                .map_err(|e| StoreError::PostgresSetup(format!("schema migration failed: {e}")));
            client
                .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .await?;
            report.map(|_| client)
        });
        let client = block_on(task).map_err(|e| StoreError::PostgresSetup(e.to_string()))??;
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client);
        Ok(())
    }

    /// A new connection, driven by the store's runtime.
    fn connect(&self) -> Result<Client, StoreError> {
        let config = self.inner.config.clone();
        let schema = self.inner.schema.clone();
        let task = self.inner.runtime.spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("PostgreSQL connection ended: {e}");
                }
            });
            if let Some(schema) = schema {
                client
                    .batch_execute(&format!("SET search_path TO {schema}"))
                    .await?;
            }
            Ok::<_, StoreError>(client)
        });
        block_on(task).map_err(|e| StoreError::PostgresSetup(e.to_string()))?
    }

    /// An idle connection, or a new one; it goes back to the pool when dropped.
    fn conn(&self) -> Result<Conn<'_>, StoreError> {
        let idle = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match idle {
            Some(client) => client,
            None => self.connect()?,
        };
        Ok(Conn {
            store: self,
            client: Some(client),
        })
    }

    /// Runs `f` as one transaction, again on a deadlock or serialization failure.
    fn transact<T>(&self, f: impl Fn(&Txn<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            let client = conn.client.as_mut().expect("held until dropped");
            let result = (|| {
                let t = Txn {
                    txn: block_on(client.transaction())?,
                };
                let out = f(&t)?;
                block_on(t.txn.commit())?;
                Ok(out)
            })();
            match result {
                Err(StoreError::Postgres(e)) if retryable(&e) && attempt < MAX_RETRIES => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn()?;
        let client = conn.client.as_ref().expect("held until dropped");
        Ok(block_on(client.query(sql, params))?)
    }
}

/// A pooled connection.
struct Conn<'a> {
    store: &'a PgStore,
    client: Option<Client>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            let mut idle = self
                .store
                .inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            idle.push(client);
        }
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The connections' runtime, on a thread of its own that ends when `stop` is dropped.
fn start_runtime() -> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), StoreError>
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (started, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("store-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            let _ = started.send(Ok(runtime.handle().clone()));
            let _ = runtime.block_on(stopped);
        })
        .map_err(StoreError::WriterStart)?;
    let handle = handle
        .recv()
        .map_err(|_| StoreError::PostgresSetup("the PostgreSQL runtime did not start".into()))?
        .map_err(StoreError::WriterStart)?;
    Ok((handle, stop))
}

/// Waits for `future` on this thread, parking it in between. The futures waited on
/// here only exchange messages with connections driven by the store's runtime, so
/// they need no runtime of their own.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => return out,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

/// The transactional view, with the operations of `mod.rs`'s `Txn` over tables.
struct Txn<'a> {
    txn: tokio_postgres::Transaction<'a>,
}

impl Txn<'_> {
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        Ok(block_on(self.txn.query(sql, params))?)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        Ok(block_on(self.txn.execute(sql, params))?)
    }

    /// The device, its row locked until the transaction ends.
    fn device_for_update(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let rows = self.query(
            "SELECT record::text FROM devices WHERE name = $1 FOR UPDATE",
            &[&name],
        )?;
        rows.first()
            .map(|row| decode_device(name.as_bytes(), row.get::<_, &str>(0).as_bytes()))
            .transpose()
    }

    /// Stores `rec` (already encoded) and indexes its certificates' keys.
    fn put_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO devices (name, record) VALUES ($1, $2::text::jsonb) \
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, \
             version = devices.version + 1",
            &[&rec.name, &utf8(encoded)],
        )?;
        self.index_keys(rec)
    }

    /// Inserts a new device; `false` (nothing written) if the name is taken.
    fn insert_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<bool, StoreError> {
        let inserted = self.execute(
            "INSERT INTO devices (name, record) VALUES ($1, $2::text::jsonb) \
             ON CONFLICT (name) DO NOTHING",
            &[&rec.name, &utf8(encoded)],
        )?;
        if inserted == 1 {
            self.index_keys(rec)?;
        }
        Ok(inserted == 1)
    }

    fn index_keys(&self, rec: &DeviceRecord) -> Result<(), StoreError> {
        for cert in certified_keys(rec) {
            let Some(key) = index_key(&cert.public_key) else {
                continue;
            };
            self.execute(
                "INSERT INTO lsc_keys (key, device) VALUES ($1, $2) ON CONFLICT (key) \
                 DO UPDATE SET device = EXCLUDED.device WHERE lsc_keys.device <> EXCLUDED.device",
                &[&&key[..], &rec.name],
            )?;
        }
        Ok(())
    }

    fn append_event(&self, event: &Event) -> Result<u64, StoreError> {
        let mut event = event.clone();
        // The id is the row's; the record's own is not read back.
        event.id = 0;
        let encoded = encode_event(&event)?;
        let rows = self.query(
            "INSERT INTO events (time, device, record) VALUES ($1, $2, $3::text::jsonb) \
             RETURNING id",
            &[&event.time, &event.device, &utf8(&encoded)],
        )?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    fn put_serials(&self, serials: &[(String, SerialRecord)]) -> Result<(), StoreError> {
        for (serial, rec) in serials {
            let encoded = encode_serial(rec)?;
            self.execute(
                "INSERT INTO serials (serial, record) VALUES ($1, $2::text::jsonb) \
                 ON CONFLICT (serial) DO UPDATE SET record = EXCLUDED.record",
                &[&serial_key(serial), &utf8(&encoded)],
            )?;
        }
        Ok(())
    }

    /// As `mod.rs`'s `Txn::apply_change`: the device's update, event and serials;
    /// only the event if the device is gone.
    fn apply_change(&self, change: &Commit) -> Result<(), StoreError> {
        if let Some(name) = &change.device {
            if let Some(mut rec) = self.device_for_update(name)? {
                if let Some(device_change) = &change.change {
                    device_change.apply(&mut rec);
                }
                let encoded = encode_device(&rec)?;
                self.put_device(&rec, &encoded)?;
                self.put_serials(&change.serials)?;
            }
        }
        self.append_event(&change.event)?;
        Ok(())
    }
}

/// The codec writes JSON, which is UTF-8.
fn utf8(encoded: &[u8]) -> &str {
    std::str::from_utf8(encoded).expect("serde_json writes UTF-8")
}

fn decode_event_row(row: &Row) -> Result<Event, StoreError> {
    let id: i64 = row.get(0);
    let mut event: Event =
        serde_json::from_str(row.get::<_, &str>(1)).map_err(|e| StoreError::Corrupt {
            key: format!("events/{id}"),
            reason: format!("bad event: {e}"),
        })?;
    event.id = id as u64;
    Ok(event)
}

impl Backend for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let rows = self.query("SELECT record::text FROM devices WHERE name = $1", &[&name])?;
        rows.first()
            .map(|row| decode_device(name.as_bytes(), row.get::<_, &str>(0).as_bytes()))
            .transpose()
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.query("SELECT name, record::text FROM devices ORDER BY name", &[])?
            .iter()
            .map(|row| {
                decode_device(
                    row.get::<_, &str>(0).as_bytes(),
                    row.get::<_, &str>(1).as_bytes(),
                )
            })
            .collect()
    }

    fn add_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        let encoded = encode_new_device(rec)?;
        self.transact(|t| {
            if !t.insert_device(rec, &encoded)? {
                return Err(StoreError::Exists(rec.name.clone()));
            }
            t.append_event(&event)?;
            Ok(())
        })
    }

    fn put_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        let encoded = encode_new_device(rec)?;
        self.transact(|t| {
            t.put_device(rec, &encoded)?;
            t.append_event(&event)?;
            Ok(())
        })
    }

    fn update_devices(
        &self,
        names: &[String],
        f: DeviceUpdate<'_>,
    ) -> Result<Vec<Option<DeviceRecord>>, StoreError> {
        self.transact(|t| {
            let mut updated = Vec::with_capacity(names.len());
            for name in names {
                let Some(mut rec) = t.device_for_update(name)? else {
                    updated.push(None);
                    continue;
                };
                let Some(event) = super::backend::update_one(name, &mut rec, f)? else {
                    updated.push(None);
                    continue;
                };
                let encoded = encode_device(&rec)?;
                t.put_device(&rec, &encoded)?;
                t.append_event(&event)?;
                updated.push(Some(rec));
            }
            Ok(updated)
        })
    }

    fn record_event(&self, event: Event) -> Result<(), StoreError> {
        self.transact(|t| t.append_event(&event).map(drop))
    }

    fn events(
        &self,
        device: Option<&str>,
        since: Option<UnixTime>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut events = self
            .query(
                "SELECT id, record::text FROM events \
                 WHERE ($1::text IS NULL OR device = $1) AND ($2::bigint IS NULL OR time >= $2) \
                 ORDER BY id DESC LIMIT $3",
                &[&device, &since, &limit],
            )?
            .iter()
            .map(decode_event_row)
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    fn apply_changes(&self, changes: &[&Commit]) -> Result<(), StoreError> {
        self.transact(|t| {
            for change in changes {
                t.apply_change(change)?;
            }
            Ok(())
        })
    }

    /// A committed transaction is already durable.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
