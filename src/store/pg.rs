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

use super::accounts::{
    decode as decode_account, decode_session, decode_session_entry, encode as encode_account,
    encode_session,
};
use super::backend::{AccountUpdate, Backend, EventFilter, NamedRecord};
use super::cluster::{AddressLimit, Cluster, LiveNode, Reservation};
use super::codec::{decode_device, decode_serial, encode_event, encode_serial, serial_key};
use super::key_index::{certified_keys, index_key};
use super::migrate::Record;
use super::txn::DeviceTxn;
use super::{encode_new_device, SessionKey, StoreError, WebAccount, WebSession};
use crate::model::{DeviceRecord, Event, SerialRecord};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

mod embedded {
    refinery::embed_migrations!("src/store/pg_migrations");
}

/// Bounds every wait on the database that the URL leaves unbounded: connecting, a
/// statement (and the locks it waits for), and a connection whose peer went away
/// without a word (TCP keepalives every few seconds, and unacknowledged data given up
/// after [`ANSWER_WITHIN`]): a failover or a cut network then shows as errors within
/// seconds, and the next call connects again.
fn bound_waits(config: &mut tokio_postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(ANSWER_WITHIN);
    }
    // tokio-postgres's own idle time is two hours; a URL that chose another, or
    // turned keepalives off, keeps its choice.
    if config.get_keepalives() && config.get_keepalives_idle() == Duration::from_secs(7200) {
        config
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
    }
    let options = config.get_options().unwrap_or("").to_string();
    if !options.contains("statement_timeout") {
        let timeout = format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis());
        config.options(format!("{options} {timeout}").trim());
    }
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
    idle: Mutex<Vec<Connection>>,
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
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::PostgresSetup(format!("bad PostgreSQL URL: {e}")))?;
        bound_waits(&mut config);
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
    pub(crate) fn drop_schema(&self) -> Result<(), StoreError> {
        let schema = self.inner.schema.as_deref().expect("a store in a schema");
        let conn = self.conn()?;
        let client = &conn.held().client;
        block_on(client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")))??;
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
        let client = wait(task, MIGRATIONS_WITHIN)?
            .map_err(|e| StoreError::PostgresSetup(e.to_string()))??;
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Connection::new(client));
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
        block_on(task)?.map_err(|e| StoreError::PostgresSetup(e.to_string()))?
    }

    /// An idle connection, or a new one; it goes back to the pool when dropped.
    fn conn(&self) -> Result<Conn<'_>, StoreError> {
        ABANDONED.set(false);
        let idle = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.client.is_closed())
        };
        let connection = match idle {
            Some(connection) => connection,
            None => Connection::new(self.connect()?),
        };
        Ok(Conn {
            store: self,
            connection: Some(connection),
        })
    }

    /// Runs `f` as one transaction, again on a deadlock or serialization failure.
    fn transact<T>(&self, f: impl Fn(&Txn<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            let Connection { client, statements } = conn.held_mut();
            let result = (|| {
                let t = Txn {
                    txn: block_on(client.transaction())??,
                    statements,
                    deferred: Default::default(),
                };
                let out = f(&t)?;
                t.send_deferred()?;
                block_on(t.txn.commit())??;
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
        let connection = conn.held();
        let statement = prepared(&connection.statements, sql, || {
            connection.client.prepare(sql)
        })?;
        Ok(block_on(connection.client.query(&statement, params))??)
    }
}

/// A connection and the statements prepared on it.
struct Connection {
    client: Client,
    /// By SQL text: each statement is parsed and planned by the server once per
    /// connection, and every later run of it is one round trip instead of two (a
    /// statement given as text is prepared, then run).
    statements: std::cell::RefCell<HashMap<String, Statement>>,
}

impl Connection {
    fn new(client: Client) -> Connection {
        Connection {
            client,
            statements: Default::default(),
        }
    }
}

/// More distinct statements than capf has mean something is off: start over.
const MAX_PREPARED: usize = 256;

/// The statement prepared for `sql` on this connection, prepared now by `prepare` if
/// it was not yet.
fn prepared<F: Future<Output = Result<Statement, tokio_postgres::Error>>>(
    statements: &std::cell::RefCell<HashMap<String, Statement>>,
    sql: &str,
    prepare: impl FnOnce() -> F,
) -> Result<Statement, StoreError> {
    if let Some(statement) = statements.borrow().get(sql) {
        return Ok(statement.clone());
    }
    let statement = block_on(prepare())??;
    let mut statements = statements.borrow_mut();
    if statements.len() >= MAX_PREPARED {
        statements.clear();
    }
    statements.insert(sql.to_string(), statement.clone());
    Ok(statement)
}

/// A pooled connection.
struct Conn<'a> {
    store: &'a PgStore,
    connection: Option<Connection>,
}

impl Conn<'_> {
    fn held(&self) -> &Connection {
        self.connection.as_ref().expect("held until dropped")
    }

    fn held_mut(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("held until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let abandoned = ABANDONED.replace(false);
        let reusable = |c: &Connection| !c.client.is_closed() && !abandoned;
        if let Some(connection) = self.connection.take().filter(reusable) {
            let mut idle = self
                .store
                .inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            idle.push(connection);
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

/// How long the store waits for one answer of the database (a statement, a commit, a
/// new connection) before the call fails: a database that is down, partitioned away or
/// frozen fails the session that needed it instead of holding it (and the runtime
/// thread it blocks) without end. More than [`STATEMENT_TIMEOUT`], so that a slow
/// statement normally ends with the server's own error on a connection still usable.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// What the server allows one statement, lock waits included (`statement_timeout`,
/// unless the URL's `options` set it).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting may take (`connect_timeout`, unless the URL sets it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the schema migrations of [`PgStore::open`] may take.
const MIGRATIONS_WITHIN: Duration = Duration::from_secs(120);

std::thread_local! {
    /// Set when this thread gave up waiting for an answer: the connection it was
    /// using may still deliver that answer later, so it is not used again
    /// ([`Conn`]'s drop closes it instead of pooling it).
    static ABANDONED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`wait`] for one answer of the database, within [`ANSWER_WITHIN`].
fn block_on<F: Future>(future: F) -> Result<F::Output, StoreError> {
    wait(future, ANSWER_WITHIN)
}

/// Waits for `future` on this thread, parking it in between, for at most `within`.
/// The futures waited on here only exchange messages with connections driven by the
/// store's runtime, so they need no runtime of their own.
fn wait<F: Future>(future: F, within: Duration) -> Result<F::Output, StoreError> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let deadline = std::time::Instant::now() + within;
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            ABANDONED.set(true);
            return Err(StoreError::PostgresTimeout(within));
        }
        // Woken by the waker, or at the deadline (or spuriously: polled again).
        std::thread::park_timeout(left);
    }
}

/// The transactional view, with the operations of `mod.rs`'s `Txn` over tables.
///
/// Writes whose answer nothing waits for (a device's record, its key index entries,
/// serials, events) are deferred and sent together before the next read and before
/// the commit, pipelined on the connection: a session change is then one round trip
/// for its reads and one for its writes rather than one per statement. PostgreSQL
/// runs them in the order given; the first that fails fails the transaction.
struct Txn<'a> {
    txn: tokio_postgres::Transaction<'a>,
    statements: &'a std::cell::RefCell<HashMap<String, Statement>>,
    deferred: std::cell::RefCell<Vec<Deferred>>,
}

/// A write waiting to be sent: its statement and its parameters, owned.
struct Deferred {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Txn<'_> {
    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        prepared(self.statements, sql, || self.txn.prepare(sql))
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.send_deferred()?;
        let statement = self.statement(sql)?;
        Ok(block_on(self.txn.query(&statement, params))??)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.send_deferred()?;
        let statement = self.statement(sql)?;
        Ok(block_on(self.txn.execute(&statement, params))??)
    }

    /// Queues a write for [`Txn::send_deferred`].
    fn defer(&self, sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>) {
        self.deferred.borrow_mut().push(Deferred { sql, params });
    }

    /// Sends the deferred writes, all before awaiting any answer (tokio-postgres
    /// pipelines the requests of futures polled together), and waits for every one.
    fn send_deferred(&self) -> Result<(), StoreError> {
        let writes = std::mem::take(&mut *self.deferred.borrow_mut());
        if writes.is_empty() {
            return Ok(());
        }
        let statements = writes
            .iter()
            .map(|w| self.statement(w.sql))
            .collect::<Result<Vec<_>, _>>()?;
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = writes
            .iter()
            .map(|w| {
                w.params
                    .iter()
                    .map(|p| &**p as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        let runs = statements
            .iter()
            .zip(&params)
            .map(|(statement, params)| Box::pin(self.txn.execute(statement, params)))
            .collect();
        block_on(all_in_order(runs))??;
        Ok(())
    }

    fn index_keys(&self, rec: &DeviceRecord) {
        for cert in certified_keys(rec) {
            let Some(key) = index_key(&cert.public_key) else {
                continue;
            };
            self.defer(
                "INSERT INTO lsc_keys (key, device) VALUES ($1, $2) ON CONFLICT (key) \
                 DO UPDATE SET device = EXCLUDED.device WHERE lsc_keys.device <> EXCLUDED.device",
                vec![Box::new(key.to_vec()), Box::new(rec.name.clone())],
            );
        }
    }
}

/// Polls every one of `runs` until all are done; the first error in their order, if
/// any, once the earlier ones have answered.
async fn all_in_order<F, T>(
    mut runs: Vec<std::pin::Pin<Box<F>>>,
) -> Result<(), tokio_postgres::Error>
where
    F: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let mut done = vec![false; runs.len()];
    std::future::poll_fn(|cx| {
        for (run, done) in runs.iter_mut().zip(done.iter_mut()) {
            if *done {
                continue;
            }
            match run.as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(_)) => *done = true,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                // Its answer comes before those of the later ones: they are polled to
                // send their requests, and their answers wait behind it.
                std::task::Poll::Pending => {}
            }
        }
        if done.iter().all(|d| *d) {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The primitives of `store/txn.rs` over tables; rows read for a change are locked
/// (`FOR UPDATE`), so a device or serial is changed by one node at a time.
impl DeviceTxn for Txn<'_> {
    fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let rows = self.query(
            "SELECT record::text FROM devices WHERE name = $1 FOR UPDATE",
            &[&name],
        )?;
        rows.first()
            .map(|row| decode_device(name.as_bytes(), row.get::<_, &str>(0).as_bytes()))
            .transpose()
    }

    fn insert_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<bool, StoreError> {
        let inserted = self.execute(
            "INSERT INTO devices (name, record) VALUES ($1, $2::text::jsonb) \
             ON CONFLICT (name) DO NOTHING",
            &[&rec.name, &utf8(encoded)],
        )?;
        if inserted == 1 {
            self.index_keys(rec);
        }
        Ok(inserted == 1)
    }

    fn put_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<(), StoreError> {
        self.defer(
            "INSERT INTO devices (name, record) VALUES ($1, $2::text::jsonb) \
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, \
             version = devices.version + 1",
            vec![
                Box::new(rec.name.clone()),
                Box::new(utf8(encoded).to_owned()),
            ],
        );
        self.index_keys(rec);
        Ok(())
    }

    fn remove_device(&self, name: &str) -> Result<Option<Option<DeviceRecord>>, StoreError> {
        let rows = self.query(
            "DELETE FROM devices WHERE name = $1 RETURNING record::text",
            &[&name],
        )?;
        Ok(rows
            .first()
            .map(|row| decode_device(name.as_bytes(), row.get::<_, &str>(0).as_bytes()).ok()))
    }

    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        let key = serial_key(serial);
        self.query(
            "SELECT record::text FROM serials WHERE serial = $1 FOR UPDATE",
            &[&key],
        )?
        .first()
        .map(|row| decode_serial(key.as_bytes(), row.get::<_, &str>(0).as_bytes()))
        .transpose()
    }

    fn put_serials(&self, serials: &[(String, SerialRecord)]) -> Result<(), StoreError> {
        for (serial, rec) in serials {
            let encoded = encode_serial(rec)?;
            self.defer(
                "INSERT INTO serials (serial, record) VALUES ($1, $2::text::jsonb) \
                 ON CONFLICT (serial) DO UPDATE SET record = EXCLUDED.record",
                vec![
                    Box::new(serial_key(serial)),
                    Box::new(utf8(&encoded).to_owned()),
                ],
            );
        }
        Ok(())
    }

    fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        let mut event = event.clone();
        // The id is the row's; the record's own is not stored.
        event.id = 0;
        let encoded = encode_event(&event)?;
        self.defer(
            "INSERT INTO events (time, device, record) VALUES ($1, $2, $3::text::jsonb)",
            vec![
                Box::new(event.time),
                Box::new(event.device),
                Box::new(utf8(&encoded).to_owned()),
            ],
        );
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

fn decode_device_row(row: &Row) -> Result<DeviceRecord, StoreError> {
    decode_device(
        row.get::<_, &str>(0).as_bytes(),
        row.get::<_, &str>(1).as_bytes(),
    )
}

fn decode_account_row(row: &Row) -> Result<WebAccount, StoreError> {
    decode_account(
        row.get::<_, &str>(0).as_bytes(),
        row.get::<_, &str>(1).as_bytes(),
    )
}

/// A row count or limit as PostgreSQL's bigint.
fn bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Backend for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> String {
        let config = &self.inner.config;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            port,
            config.get_dbname().unwrap_or("")
        )
    }

    /// The schema is brought up to date when the store is opened; this reads a row of
    /// each table, so that missing privileges show before a node serves.
    fn check(&self) -> Result<(), StoreError> {
        for table in ["devices", "events", "serials", "lsc_keys", "web_accounts"] {
            self.query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])?;
        }
        Ok(())
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[])?;
        Ok(())
    }

    fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let rows = self.query("SELECT record::text FROM devices WHERE name = $1", &[&name])?;
        rows.first()
            .map(|row| decode_device(name.as_bytes(), row.get::<_, &str>(0).as_bytes()))
            .transpose()
    }

    fn devices_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NamedRecord>, StoreError> {
        // A prefix as a range of the primary key (byte order, COLLATE "C"): names
        // from `prefix` up to the first name past every name that starts with it.
        let end = prefix_end(prefix);
        let rows = self.query(
            "SELECT name, record::text FROM devices \
             WHERE name >= $1 AND ($2::text IS NULL OR name < $2) \
             AND ($3::text IS NULL OR name > $3) ORDER BY name LIMIT $4",
            &[&prefix, &end, &after, &bigint(limit)],
        )?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, String>(0), decode_device_row(row)))
            .collect())
    }

    fn device_count(&self) -> Result<usize, StoreError> {
        let rows = self.query("SELECT count(*) FROM devices", &[])?;
        Ok(rows[0].get::<_, i64>(0) as usize)
    }

    fn lsc_keys(&self) -> Result<Vec<([u8; 32], String)>, StoreError> {
        self.query("SELECT key, device FROM lsc_keys ORDER BY key", &[])?
            .iter()
            .map(|row| {
                let key: &[u8] = row.get(0);
                let key = <[u8; 32]>::try_from(key).map_err(|_| StoreError::Corrupt {
                    key: format!("lsc_keys/{}", hex::encode(key)),
                    reason: format!("index key is {} bytes, not 32", key.len()),
                })?;
                Ok((key, row.get(1)))
            })
            .collect()
    }

    fn indexed_key_holder(&self, key: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let rows = self.query("SELECT device FROM lsc_keys WHERE key = $1", &[&&key[..]])?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        let key = serial_key(serial);
        self.query(
            "SELECT record::text FROM serials WHERE serial = $1",
            &[&key],
        )?
        .first()
        .map(|row| decode_serial(key.as_bytes(), row.get::<_, &str>(0).as_bytes()))
        .transpose()
    }

    fn serials(&self) -> Result<Vec<(String, SerialRecord)>, StoreError> {
        self.query(
            "SELECT serial, record::text FROM serials ORDER BY serial COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|row| {
            let serial: String = row.get(0);
            let rec = decode_serial(serial.as_bytes(), row.get::<_, &str>(1).as_bytes())?;
            Ok((serial, rec))
        })
        .collect()
    }

    fn web_account(&self, name: &str) -> Result<Option<WebAccount>, StoreError> {
        self.query(
            "SELECT name, record::text FROM web_accounts WHERE name = $1",
            &[&name],
        )?
        .first()
        .map(decode_account_row)
        .transpose()
    }

    fn web_session(&self, key: &SessionKey) -> Result<Option<WebSession>, StoreError> {
        self.query(
            "SELECT record::text FROM web_sessions WHERE key = $1",
            &[&key.as_slice()],
        )?
        .first()
        .map(|row| decode_session(key, row.get::<_, &str>(0).as_bytes()))
        .transpose()
    }

    fn put_web_session(&self, key: &SessionKey, session: &WebSession) -> Result<(), StoreError> {
        let encoded = encode_session(session)?;
        self.query(
            "INSERT INTO web_sessions (key, record) VALUES ($1, $2::text::jsonb) \
             ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
            &[&key.as_slice(), &utf8(&encoded)],
        )?;
        Ok(())
    }

    fn remove_web_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.query(
            "DELETE FROM web_sessions WHERE key = $1",
            &[&key.as_slice()],
        )?;
        Ok(())
    }

    fn web_sessions(&self) -> Result<Vec<(SessionKey, WebSession)>, StoreError> {
        self.query("SELECT key, record::text FROM web_sessions", &[])?
            .iter()
            .map(|row| decode_session_entry(row.get(0), row.get::<_, &str>(1).as_bytes()))
            .collect()
    }

    fn web_accounts(&self) -> Result<Vec<WebAccount>, StoreError> {
        self.query(
            "SELECT name, record::text FROM web_accounts ORDER BY name COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(decode_account_row)
        .collect()
    }

    fn add_web_account(&self, account: &WebAccount, event: Event) -> Result<(), StoreError> {
        let encoded = encode_account(account)?;
        self.transact(|t| {
            let inserted = t.execute(
                "INSERT INTO web_accounts (name, record) VALUES ($1, $2::text::jsonb) \
                 ON CONFLICT (name) DO NOTHING",
                &[&account.name, &utf8(&encoded)],
            )?;
            if inserted == 0 {
                return Err(StoreError::AccountExists(account.name.clone()));
            }
            t.append_event(&event)?;
            Ok(())
        })
    }

    fn remove_web_account(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        self.transact(|t| {
            if t.execute("DELETE FROM web_accounts WHERE name = $1", &[&name])? == 0 {
                return Ok(false);
            }
            t.append_event(&event)?;
            Ok(true)
        })
    }

    fn update_web_account(&self, name: &str, f: AccountUpdate<'_>) -> Result<bool, StoreError> {
        self.transact(|t| {
            let rows = t.query(
                "SELECT name, record::text FROM web_accounts WHERE name = $1 FOR UPDATE",
                &[&name],
            )?;
            let Some(row) = rows.first() else {
                return Ok(false);
            };
            let mut account = decode_account_row(row)?;
            let event = f(&mut account);
            let encoded = encode_account(&account)?;
            t.execute(
                "UPDATE web_accounts SET record = $2::text::jsonb WHERE name = $1",
                &[&name, &utf8(&encoded)],
            )?;
            if let Some(event) = event {
                t.append_event(&event)?;
            }
            Ok(true)
        })
    }

    fn record_event(&self, event: Event) -> Result<(), StoreError> {
        self.transact(|t| t.append_event(&event))
    }

    fn events_newest_first(
        &self,
        before: Option<u64>,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let before = before.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        self.query(
            "SELECT id, record::text FROM events \
             WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR device = $2) \
             AND ($3::bigint IS NULL OR time >= $3) ORDER BY id DESC LIMIT $4",
            &[&before, &filter.device, &filter.since, &bigint(limit)],
        )?
        .iter()
        .map(decode_event_row)
        .collect()
    }

    fn events_oldest_first(
        &self,
        after: u64,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.query(
            "SELECT id, record::text FROM events \
             WHERE id > $1 AND ($2::text IS NULL OR device = $2) \
             AND ($3::bigint IS NULL OR time >= $3) ORDER BY id LIMIT $4",
            &[&after, &filter.device, &filter.since, &bigint(limit)],
        )?
        .iter()
        .map(decode_event_row)
        .collect()
    }

    fn transact(
        &self,
        f: &dyn Fn(&dyn DeviceTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        PgStore::transact(self, |t| f(t))
    }

    /// One statement per kind of record, each with arrays of all of its rows.
    fn load(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut devices = (Vec::new(), Vec::new());
        let mut events = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut serials = (Vec::new(), Vec::new());
        let mut keys = (Vec::new(), Vec::new());
        let mut accounts = (Vec::new(), Vec::new());
        let text = |encoded: Vec<u8>| String::from_utf8(encoded).expect("serde_json writes UTF-8");
        for record in records {
            match record {
                Record::Device(rec) => {
                    devices.0.push(rec.name.clone());
                    devices.1.push(text(encode_new_device(rec)?));
                }
                Record::Event(event) => {
                    let id = i64::try_from(event.id).map_err(|_| StoreError::Corrupt {
                        key: format!("events/{}", event.id),
                        reason: "id beyond PostgreSQL's bigint".into(),
                    })?;
                    let mut stored = event.clone();
                    stored.id = 0;
                    events.0.push(id);
                    events.1.push(event.time);
                    events.2.push(event.device.clone());
                    events.3.push(text(encode_event(&stored)?));
                }
                Record::Serial(serial, rec) => {
                    serials.0.push(serial_key(serial));
                    serials.1.push(text(encode_serial(rec)?));
                }
                Record::LscKey(key, device) => {
                    keys.0.push(key.to_vec());
                    keys.1.push(device.clone());
                }
                Record::WebAccount(account) => {
                    accounts.0.push(account.name.clone());
                    accounts.1.push(text(encode_account(account)?));
                }
            }
        }
        self.transact(|t| {
            t.execute(
                "INSERT INTO devices (name, record) \
                 SELECT n, r::jsonb FROM unnest($1::text[], $2::text[]) AS u(n, r) \
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, \
                 version = devices.version + 1",
                &[&devices.0, &devices.1],
            )?;
            t.execute(
                "INSERT INTO events (id, time, device, record) OVERRIDING SYSTEM VALUE \
                 SELECT i, t, d, r::jsonb \
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(i, t, d, r) \
                 ON CONFLICT (id) DO UPDATE SET time = EXCLUDED.time, \
                 device = EXCLUDED.device, record = EXCLUDED.record",
                &[&events.0, &events.1, &events.2, &events.3],
            )?;
            if !events.0.is_empty() {
                // Later events get higher ids than every one loaded.
                t.execute(
                    "SELECT setval(pg_get_serial_sequence('events', 'id'), \
                     (SELECT max(id) FROM events))",
                    &[],
                )?;
            }
            t.execute(
                "INSERT INTO serials (serial, record) \
                 SELECT s, r::jsonb FROM unnest($1::text[], $2::text[]) AS u(s, r) \
                 ON CONFLICT (serial) DO UPDATE SET record = EXCLUDED.record",
                &[&serials.0, &serials.1],
            )?;
            t.execute(
                "INSERT INTO lsc_keys (key, device) \
                 SELECT k, d FROM unnest($1::bytea[], $2::text[]) AS u(k, d) \
                 ON CONFLICT (key) DO UPDATE SET device = EXCLUDED.device",
                &[&keys.0, &keys.1],
            )?;
            t.execute(
                "INSERT INTO web_accounts (name, record) \
                 SELECT n, r::jsonb FROM unnest($1::text[], $2::text[]) AS u(n, r) \
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                &[&accounts.0, &accounts.1],
            )?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }

    fn backup_to(&self, _dir: &Path) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "`capf backup` copies the embedded store; a PostgreSQL store is backed up with \
             PostgreSQL's own tools (pg_dump, or base backups with WAL archiving), and \
             `capf store migrate --to DIR` copies it into an embedded store"
                .into(),
        ))
    }
}

/// The first string after every string that starts with `prefix` (byte order), or
/// `None` when there is none (an empty prefix, or one of only U+10FFFF).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The database's clock, in epoch seconds: every node compares times with it.
const NOW: &str = "extract(epoch from clock_timestamp())::double precision";

impl Cluster for PgStore {
    fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let rows = self.query(
            &format!(
                "INSERT INTO leases (key, holder, expires) VALUES ($1, $2, {NOW} + $3::float8) \
                 ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, \
                 expires = EXCLUDED.expires \
                 WHERE leases.expires <= {NOW} OR leases.holder = EXCLUDED.holder \
                 RETURNING key"
            ),
            &[&key, &holder, &ttl.as_secs_f64()],
        )?;
        Ok(!rows.is_empty())
    }

    fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.query(
            "DELETE FROM leases WHERE key = $1 AND holder = $2",
            &[&key, &holder],
        )?;
        Ok(())
    }

    /// One round trip: `capf_reserve_attempt` (V3) does the reservation's
    /// transaction inside the database.
    fn reserve_attempt(
        &self,
        address: &str,
        holder: &str,
        limit: AddressLimit,
    ) -> Result<Reservation, StoreError> {
        let max = i32::try_from(limit.max_failures).unwrap_or(i32::MAX);
        let rows = self.query(
            "SELECT capf_reserve_attempt($1, $2, $3, $4, $5)",
            &[
                &address,
                &holder,
                &max,
                &limit.window.as_secs_f64(),
                &limit.attempt_ttl.as_secs_f64(),
            ],
        )?;
        let answer: &str = rows.first().map(|row| row.get(0)).unwrap_or_default();
        match answer {
            "reserved" => Ok(Reservation::Reserved),
            "busy" => Ok(Reservation::Busy),
            "too_many_failures" => Ok(Reservation::TooManyFailures),
            other => Err(StoreError::PostgresSetup(format!(
                "capf_reserve_attempt answered {other:?}"
            ))),
        }
    }

    /// One round trip: `capf_attempt_failed` (V3).
    fn attempt_failed(
        &self,
        address: &str,
        holder: &str,
        limit: AddressLimit,
    ) -> Result<(), StoreError> {
        self.query(
            "SELECT capf_attempt_failed($1, $2, $3)",
            &[&address, &holder, &limit.window.as_secs_f64()],
        )?;
        Ok(())
    }

    fn announce(
        &self,
        node: &str,
        holder: &str,
        identity: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let rows = self.query(
            &format!(
                "INSERT INTO nodes (name, holder, identity, expires) \
                 VALUES ($1, $2, $3, {NOW} + $4::float8) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 identity = EXCLUDED.identity, expires = EXCLUDED.expires \
                 WHERE nodes.expires <= {NOW} OR nodes.holder = EXCLUDED.holder \
                 RETURNING name"
            ),
            &[&node, &holder, &identity, &ttl.as_secs_f64()],
        )?;
        Ok(!rows.is_empty())
    }

    fn withdraw(&self, node: &str, holder: &str) -> Result<(), StoreError> {
        self.query(
            "DELETE FROM nodes WHERE name = $1 AND holder = $2",
            &[&node, &holder],
        )?;
        Ok(())
    }

    fn live_nodes(&self) -> Result<Vec<LiveNode>, StoreError> {
        Ok(self
            .query(
                &format!(
                    "SELECT name, identity FROM nodes WHERE expires > {NOW} \
                     ORDER BY name COLLATE \"C\""
                ),
                &[],
            )?
            .iter()
            .map(|row| LiveNode {
                name: row.get(0),
                identity: row.get(1),
            })
            .collect())
    }

    fn release_attempt(&self, address: &str, holder: &str) -> Result<(), StoreError> {
        self.query(
            &format!(
                "DELETE FROM address_attempts WHERE (address = $1 AND holder = $2) \
                 OR expires <= {NOW}"
            ),
            &[&address, &holder],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_for_an_answer_that_never_comes_ends_and_abandons_the_connection() {
        ABANDONED.set(false);
        let waited = wait(std::future::pending::<()>(), Duration::from_millis(50));
        assert!(
            matches!(waited, Err(StoreError::PostgresTimeout(d)) if d == Duration::from_millis(50))
        );
        assert!(ABANDONED.get(), "the connection is not pooled again");
        ABANDONED.set(false);
        assert_eq!(wait(async { 7 }, Duration::from_millis(50)).unwrap(), 7);
        assert!(!ABANDONED.get());
    }

    #[test]
    fn every_wait_the_url_leaves_open_is_bounded_and_the_url_wins() {
        let mut config: tokio_postgres::Config = "postgres://capf@db/capf".parse().unwrap();
        bound_waits(&mut config);
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(config.get_tcp_user_timeout(), Some(&ANSWER_WITHIN));
        assert_eq!(config.get_options(), Some("-c statement_timeout=10000"));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));

        let mut config: tokio_postgres::Config =
            "postgres://capf@db/capf?connect_timeout=2&options=-c%20statement_timeout%3D500&keepalives_idle=60"
                .parse()
                .unwrap();
        bound_waits(&mut config);
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(config.get_options(), Some("-c statement_timeout=500"));
    }
}
