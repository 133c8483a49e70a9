//! The session writer: one thread applies the changes of every session, many to a
//! transaction, and makes the durable ones durable with one flush.
//!
//! Why a thread of its own rather than a transaction per change on the blocking pool:
//! a sled transaction is not cheap in the way that matters under load. Each one seals
//! sled's log buffer and hands its write to sled's I/O pool, which wakes all seven of
//! its threads (a `notify_all`); every transaction also reads and writes the next event
//! id, so concurrent ones conflict and re-run; and each hop to the blocking pool and
//! back is two more thread switches. Measured at 32 concurrent enrollments, the server
//! switched threads 34 times per enrollment. Here, changes that arrive while the thread
//! is busy wait in its queue and go into the next transaction together, and the flush
//! that follows covers all of them (a group commit): the busier the node, the more each
//! transaction and each fsync carries.
//!
//! Durability is unchanged: a durable change is answered only after a flush that began
//! after its transaction committed. A change is never reported written before its
//! transaction has committed.

use super::{Store, StoreError};
use crate::model::Commit;
use std::sync::mpsc;

/// At most this many changes share one transaction, so a burst is written in
/// bounded pieces.
const MAX_BATCH: usize = 256;

struct Job {
    change: Commit,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Handle to the writer thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread for `store`. On PostgreSQL, a batch is one
    /// transaction and its commit is the flush (`Backend::flush` does nothing there).
    pub fn start(store: &Store) -> Result<Writer, StoreError> {
        let store = store.clone();
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_all(&store, &queue))
            .map_err(StoreError::WriterStart)?;
        Ok(Writer { jobs })
    }

    /// Records `change`: its event and, when it names a device that still exists, the
    /// device's change and serial index entries. Returns once it is committed (and on
    /// disk, if durable).
    ///
    /// A device that no longer exists (removed by an operator mid-session) is not
    /// recreated: its event is still recorded.
    pub async fn write(&self, change: Commit) -> Result<(), StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { change, done })
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// The thread: takes what is queued, writes it, answers, until every handle is gone.
fn write_all(store: &Store, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        drain(queue, &mut batch);
        if batch.iter().any(|job| job.change.durable) {
            // Group commit. A flush costs the same for one commit as for many (a log
            // write, its sync and a wake-up of sled's I/O threads), but this thread,
            // woken by the first commit, runs before the sessions that would send the
            // next ones: on a loaded core every flush carried one enrollment. Yielding
            // once lets them run first; on an idle machine it returns at once.
            std::thread::yield_now();
            drain(queue, &mut batch);
        }
        // A panic (a bug in sled or here) fails this batch's sessions, whose answers
        // are dropped with it, but must not stop every later session from recording
        // anything while the node keeps accepting phones.
        let written =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_batch(store, batch)));
        if written.is_err() {
            tracing::error!("the store writer panicked; that batch of session changes failed");
        }
    }
}

/// Tests make the writer panic with this event action, standing in for a bug in sled.
/// Adds what is queued now to `batch`, up to [`MAX_BATCH`].
fn drain(queue: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
const PANIC_FOR_TEST: &str = "panic-for-test";

fn write_batch(store: &Store, batch: Vec<Job>) {
    #[cfg(test)]
    if batch
        .iter()
        .any(|j| j.change.event.action == PANIC_FOR_TEST)
    {
        panic!("a bug");
    }
    let changes: Vec<&Commit> = batch.iter().map(|job| &job.change).collect();
    let outcomes = match store.apply_changes(&changes) {
        Ok(()) => batch.iter().map(|_| Ok(())).collect(),
        // One bad change (a corrupt record, say) must not fail its neighbours: write
        // each on its own to find out whose it is.
        Err(_) if batch.len() > 1 => changes
            .iter()
            .map(|change| store.apply_changes(std::slice::from_ref(change)))
            .collect(),
        Err(e) => vec![Err(e)],
    };
    drop(changes);

    let mut waiting = Vec::new();
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        if outcome.is_ok() && job.change.durable {
            waiting.push(job.done);
        } else {
            // The receiver may be gone (its session was cancelled): nothing to tell.
            let _ = job.done.send(outcome);
        }
    }
    if waiting.is_empty() {
        return;
    }
    let flushed = store.flush();
    for done in waiting {
        let _ = done.send(match &flushed {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::FlushFailed(e.to_string())),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceChange, DeviceRecord, Event, OperationStatus};
    use tempfile::tempdir;

    fn event(device: &str, action: &str) -> Event {
        Event {
            id: 0,
            time: 1,
            actor: "session:1".into(),
            device: Some(device.into()),
            action: action.into(),
            result: "ok".into(),
            details: Default::default(),
        }
    }

    fn mark(device: &str, durable: bool) -> Commit {
        Commit {
            device: Some(device.into()),
            change: Some(DeviceChange::Authenticated {
                now: 1,
                status: Some(OperationStatus::UpgradeSuccess),
                mic: None,
            }),
            event: event(device, "lsc-install"),
            serials: Vec::new(),
            durable,
        }
    }

    fn store_with(names: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for name in names {
            store
                .add_device(&DeviceRecord::new(*name), event(name, "device-add"))
                .unwrap();
        }
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_all_land_with_distinct_event_ids() {
        let names: Vec<String> = (0..64).map(|i| format!("SEP{i:012X}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_dir, store) = store_with(&refs);
        let writer = Writer::start(&store).unwrap();
        let tasks: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (writer, name) = (writer.clone(), name.clone());
                tokio::spawn(async move { writer.write(mark(&name, i % 2 == 0)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        for name in &names {
            let rec = store.get_device(name).unwrap().unwrap();
            assert_eq!(rec.status, OperationStatus::UpgradeSuccess, "{name}");
        }
        let events = store.events(None, None, None).unwrap();
        let ids: std::collections::BTreeSet<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(events.len(), 128);
        assert_eq!(ids.len(), 128, "every event has its own id");
    }

    #[tokio::test]
    async fn a_removed_device_is_not_recreated_but_its_event_is_kept() {
        let (_dir, store) = store_with(&[]);
        let writer = Writer::start(&store).unwrap();
        writer.write(mark("SEPGONE", true)).await.unwrap();
        assert_eq!(store.get_device("SEPGONE").unwrap(), None);
        let events = store.events(Some("SEPGONE"), None, None).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, "lsc-install");
    }

    /// A batch is one transaction; a corrupt record must fail only its own change.
    #[test]
    fn a_corrupt_record_fails_only_its_own_change_in_a_batch() {
        let dir = tempdir().unwrap();
        let raw = crate::store::SledStore::open(dir.path()).unwrap();
        let store = Store::from(raw.clone());
        for name in ["SEPGOOD1", "SEPGOOD2"] {
            store
                .add_device(&DeviceRecord::new(name), event(name, "device-add"))
                .unwrap();
        }
        raw.insert_raw_device("SEPBAD", b"{}");
        let mut answers = Vec::new();
        let batch = ["SEPGOOD1", "SEPBAD", "SEPGOOD2"]
            .iter()
            .map(|name| {
                let (done, answer) = tokio::sync::oneshot::channel();
                answers.push(answer);
                Job {
                    change: mark(name, true),
                    done,
                }
            })
            .collect();
        write_batch(&store, batch);

        let outcomes: Vec<_> = answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("answered"))
            .collect();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            matches!(outcomes[1], Err(StoreError::Corrupt { .. })),
            "{outcomes:?}"
        );
        for name in ["SEPGOOD1", "SEPGOOD2"] {
            let rec = store.get_device(name).unwrap().unwrap();
            assert_eq!(rec.status, OperationStatus::UpgradeSuccess);
        }
        assert_eq!(store.events(Some("SEPBAD"), None, None).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_panic_fails_its_change_and_the_writer_goes_on() {
        let (_dir, store) = store_with(&["SEPA"]);
        let writer = Writer::start(&store).unwrap();
        let mut bad = mark("SEPA", true);
        bad.event.action = PANIC_FOR_TEST.into();
        assert!(matches!(
            writer.write(bad).await,
            Err(StoreError::WriterStopped)
        ));
        writer.write(mark("SEPA", true)).await.unwrap();
        let rec = store.get_device("SEPA").unwrap().unwrap();
        assert_eq!(rec.status, OperationStatus::UpgradeSuccess);
    }

    #[tokio::test]
    async fn the_store_can_be_reopened_once_the_writer_is_dropped() {
        let dir = tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let writer = Writer::start(&store).unwrap();
        writer.write(mark("SEPX", true)).await.unwrap();
        drop((writer, store));
        // The thread lets go of its handle once it sees the queue closed.
        let store = (0..100)
            .find_map(|_| match Store::open(dir.path()) {
                Err(StoreError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                }
                other => Some(other.unwrap()),
            })
            .expect("the writer released the store");
        assert_eq!(store.events(None, None, None).unwrap().len(), 1);
    }
}
