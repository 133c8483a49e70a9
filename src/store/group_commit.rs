//! Group commit: many sessions waiting for durability share one flush.
//!
//! Two reasons not to call sled's `flush_async` per commit. It deadlocks: concurrent
//! `flush_async` calls can occupy every sled I/O thread with flushes that wait for a
//! log write queued behind them on the same pool (spacejam/sled#1308, open in 0.34.7;
//! seen here as a hung server under 32 concurrent enrollments). And each flush is an
//! fsync: one per enrollment caps throughput at the disk's sync rate.
//!
//! Instead one flush runs at a time, as a plain `flush()` on a blocking thread, and a
//! caller whose write happened before a flush *started* is covered by it: while a flush
//! runs, everyone who arrives queues; when it ends, the first in the queue starts one
//! flush for all of them. Every caller still returns only after a flush that began
//! after its write has completed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct GroupCommit {
    /// Number of flushes started; held while one runs, so flushes never overlap.
    started: tokio::sync::Mutex<u64>,
    /// Copy of `started`, readable without waiting for the running flush.
    started_seen: AtomicU64,
    /// Number of the last flush that completed successfully.
    completed: AtomicU64,
}

impl GroupCommit {
    /// Returns once everything written before the call is durable. `flush` makes all
    /// writes so far durable; it runs on a blocking thread.
    pub(super) async fn flush<E, F>(self: &Arc<Self>, flush: F) -> Result<(), E>
    where
        F: FnOnce() -> Result<(), E> + Send + 'static,
        E: Send + 'static + From<tokio::task::JoinError>,
    {
        // Any flush numbered `wanted` or later starts after this point, so after the
        // caller's write.
        let wanted = self.started_seen.load(Ordering::SeqCst) + 1;
        let mut started = self.started.lock().await;
        if self.completed.load(Ordering::SeqCst) >= wanted {
            return Ok(());
        }
        *started += 1;
        let number = *started;
        self.started_seen.store(number, Ordering::SeqCst);
        tokio::task::spawn_blocking(flush).await??;
        self.completed.store(number, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[derive(Debug)]
    struct Failed;
    impl From<tokio::task::JoinError> for Failed {
        fn from(_: tokio::task::JoinError) -> Self {
            Failed
        }
    }

    /// A flush that takes 20 ms and records how far the "log" was when it started.
    fn slow_flush(
        log: &Arc<AtomicUsize>,
        durable: &Arc<AtomicUsize>,
        flushes: &Arc<AtomicUsize>,
    ) -> impl FnOnce() -> Result<(), Failed> + Send + 'static {
        let (log, durable, flushes) = (log.clone(), durable.clone(), flushes.clone());
        move || {
            let upto = log.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            durable.fetch_max(upto, Ordering::SeqCst);
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_caller_returns_after_its_write_is_durable_and_flushes_are_shared() {
        let group = Arc::new(GroupCommit::default());
        let log = Arc::new(AtomicUsize::new(0));
        let durable = Arc::new(AtomicUsize::new(0));
        let flushes = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (group, log, durable, flushes) =
                    (group.clone(), log.clone(), durable.clone(), flushes.clone());
                tokio::spawn(async move {
                    let mine = log.fetch_add(1, Ordering::SeqCst) + 1;
                    group
                        .flush(slow_flush(&log, &durable, &flushes))
                        .await
                        .unwrap();
                    assert!(
                        durable.load(Ordering::SeqCst) >= mine,
                        "returned before write {mine} was flushed"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 64, "{n} flushes for 64 commits: nothing was shared");
    }

    #[tokio::test]
    async fn a_failed_flush_is_not_counted_as_durable() {
        let group = Arc::new(GroupCommit::default());
        assert!(group.flush(|| Err::<(), _>(Failed)).await.is_err());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        group
            .flush(move || {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<(), Failed>(())
            })
            .await
            .unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "the next caller flushes again"
        );
    }
}
