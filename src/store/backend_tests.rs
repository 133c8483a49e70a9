//! The same assertions against every store backend: sled in a temporary directory, and
//! PostgreSQL at `CAPF_TEST_POSTGRES` (`.ci/postgres.sh` starts a throwaway cluster),
//! each test in a schema of its own.
//!
//! Without `CAPF_TEST_POSTGRES` the PostgreSQL half says SKIPPED and passes, except
//! under CI (`CI` set), where it fails: `.ci/run` starts the cluster.

use super::*;
use crate::model::{DeviceChange, OperationStatus};
use std::sync::atomic::{AtomicU32, Ordering};

use super::tests::event;
use crate::model::Commit;

use crate::model::UnixTime;

/// The URL of the test PostgreSQL, or `None` (and a SKIPPED line) outside CI.
pub(crate) fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("CAPF_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CAPF_TEST_POSTGRES is not set under CI: .ci/run starts a cluster with .ci/postgres.sh"
            );
            eprintln!(
                "SKIPPED: {test} on PostgreSQL (set CAPF_TEST_POSTGRES, see .ci/postgres.sh)"
            );
            None
        }
    }
}

/// A PostgreSQL store in a new schema of the test database.
pub(crate) fn postgres_store(url: &str, test: &str) -> PgStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "t_{}_{}_{}_{}",
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            .to_ascii_lowercase(),
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    PgStore::open_in_schema(url, Some(&schema[..schema.len().min(63)])).unwrap()
}

/// Runs `test` against a fresh sled store, then a fresh PostgreSQL store.
pub(super) fn each_backend(name: &str, test: impl Fn(&Store)) {
    let dir = tempfile::tempdir().unwrap();
    test(&Store::open(dir.path()).unwrap());
    if let Some(url) = postgres_url(name) {
        let pg = postgres_store(&url, name);
        test(&Store::from(pg.clone()));
        pg.drop_schema().unwrap();
    }
}

fn names(store: &Store) -> Vec<String> {
    store
        .list_devices()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect()
}

#[test]
fn devices_are_added_read_listed_and_replaced() {
    each_backend("devices_crud", |store| {
        let kind = store.kind();
        assert_eq!(store.get_device("SEPB").unwrap(), None, "{kind}");
        for name in ["SEPB", "SEPA", "SEPC"] {
            store
                .add_device(&DeviceRecord::new(name), event(name, "device-add", 10))
                .unwrap();
        }
        assert!(
            matches!(
                store.add_device(&DeviceRecord::new("SEPA"), event("SEPA", "device-add", 11)),
                Err(StoreError::Exists(n)) if n == "SEPA"
            ),
            "{kind}"
        );
        assert!(
            matches!(
                store.put_device(&DeviceRecord::new(""), event("", "device-add", 11)),
                Err(StoreError::EmptyName)
            ),
            "{kind}"
        );
        assert_eq!(names(store), ["SEPA", "SEPB", "SEPC"], "{kind}: name order");

        let mut rec = DeviceRecord::new("SEPB");
        rec.auth_string = Some("123456".into());
        store
            .put_device(&rec, event("SEPB", "device-set", 12))
            .unwrap();
        assert_eq!(store.get_device("SEPB").unwrap(), Some(rec), "{kind}");

        // A refused add wrote no event; every other call wrote one, ids increasing.
        let events = store.events(None, None, None).unwrap();
        let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["device-add", "device-add", "device-add", "device-set"],
            "{kind}"
        );
        assert!(events.windows(2).all(|w| w[0].id < w[1].id), "{kind}");
        assert!(events[0].id > 0, "{kind}");
    });
}

#[test]
fn an_update_refused_for_one_device_writes_nothing() {
    each_backend("update_refused", |store| {
        let kind = store.kind();
        for name in ["SEPA", "SEPB"] {
            store
                .add_device(&DeviceRecord::new(name), event(name, "device-add", 1))
                .unwrap();
        }
        let all = vec!["SEPA".to_string(), "SEPB".to_string()];
        let refused = store.update_devices(&all, |rec: &mut DeviceRecord| {
            if rec.name == "SEPB" {
                return Err("no".into());
            }
            rec.auth_string = Some("1".into());
            Ok(Some(event(&rec.name, "device-set", 2)))
        });
        assert!(
            matches!(&refused, Err(StoreError::Refused { device, reason }) if device == "SEPB" && reason == "no"),
            "{kind}: {refused:?}"
        );
        assert_eq!(
            store.get_device("SEPA").unwrap().unwrap().auth_string,
            None,
            "{kind}"
        );
        assert_eq!(store.events(None, None, None).unwrap().len(), 2, "{kind}");

        let renamed = store.update_devices(&all[..1], |rec: &mut DeviceRecord| {
            rec.name = "SEPZ".into();
            Ok(Some(event("SEPZ", "device-set", 2)))
        });
        assert!(matches!(renamed, Err(StoreError::Refused { .. })), "{kind}");
        assert_eq!(names(store), ["SEPA", "SEPB"], "{kind}");
    });
}

#[test]
fn an_update_passes_over_missing_and_unselected_devices() {
    each_backend("update_passes_over", |store| {
        let kind = store.kind();
        for name in ["SEPA", "SEPB"] {
            store
                .add_device(&DeviceRecord::new(name), event(name, "device-add", 1))
                .unwrap();
        }
        let asked = ["SEPA", "SEPGONE", "SEPB"].map(String::from);
        let updated = store
            .update_devices(&asked, |rec: &mut DeviceRecord| {
                if rec.name == "SEPB" {
                    return Ok(None);
                }
                rec.auth_string = Some("654321".into());
                Ok(Some(event(&rec.name, "device-set", 2)))
            })
            .unwrap();
        assert_eq!(updated.len(), 3, "{kind}");
        assert_eq!(
            updated[0].as_ref().unwrap().auth_string.as_deref(),
            Some("654321"),
            "{kind}"
        );
        assert!(updated[1].is_none() && updated[2].is_none(), "{kind}");
        assert_eq!(store.get_device("SEPA").unwrap(), updated[0], "{kind}");
        assert_eq!(
            store.get_device("SEPB").unwrap(),
            Some(DeviceRecord::new("SEPB")),
            "{kind}"
        );
        assert_eq!(store.get_device("SEPGONE").unwrap(), None, "{kind}");
    });
}

#[test]
fn events_are_read_by_device_time_and_limit() {
    each_backend("events_read", |store| {
        let kind = store.kind();
        for (i, device) in ["SEPA", "SEPB", "SEPA", "SEPB", "SEPA"].iter().enumerate() {
            store
                .record_event(event(device, &format!("a{i}"), 100 + i as UnixTime))
                .unwrap();
        }
        let actions =
            |events: Vec<Event>| -> Vec<String> { events.into_iter().map(|e| e.action).collect() };
        assert_eq!(
            actions(store.events(Some("SEPA"), None, None).unwrap()),
            ["a0", "a2", "a4"],
            "{kind}"
        );
        assert_eq!(
            actions(store.events(None, Some(102), None).unwrap()),
            ["a2", "a3", "a4"],
            "{kind}"
        );
        assert_eq!(
            actions(store.events(None, None, Some(2)).unwrap()),
            ["a3", "a4"],
            "{kind}: the most recent, oldest first"
        );
        assert_eq!(
            actions(store.events(Some("SEPB"), Some(101), Some(1)).unwrap()),
            ["a3"],
            "{kind}"
        );
        let event = &store.events(None, None, Some(1)).unwrap()[0];
        assert_eq!(
            (
                event.time,
                event.actor.as_str(),
                event.device.as_deref(),
                event.result.as_str()
            ),
            (104, "cli:test", Some("SEPA"), "ok"),
            "{kind}"
        );
    });
}

fn failed_auth(device: &str) -> Commit {
    Commit {
        device: Some(device.into()),
        change: Some(DeviceChange::AuthFailed {
            now: 5,
            status: None,
            max_failures: u32::MAX,
            lockout_secs: 0,
        }),
        event: event(device, "auth-failed", 5),
        serials: Vec::new(),
        durable: true,
    }
}

#[test]
fn a_batch_of_session_changes_is_applied_in_order_and_a_gone_device_keeps_its_event() {
    each_backend("apply_changes", |store| {
        let kind = store.kind();
        store
            .add_device(&DeviceRecord::new("SEPA"), event("SEPA", "device-add", 1))
            .unwrap();
        let (a, gone) = (failed_auth("SEPA"), failed_auth("SEPGONE"));
        store.apply_changes(&[&a, &gone, &a]).unwrap();
        store.flush().unwrap();
        assert_eq!(
            store.get_device("SEPA").unwrap().unwrap().failed_auth,
            2,
            "{kind}"
        );
        assert_eq!(store.get_device("SEPGONE").unwrap(), None, "{kind}");
        assert_eq!(
            store.events(Some("SEPGONE"), None, None).unwrap().len(),
            1,
            "{kind}"
        );
    });
}

/// PostgreSQL sends a change's writes together at its next read or at the commit
/// (pg.rs, `Txn::send_deferred`): one that fails there still fails the whole
/// transaction, and what the batch wrote before it is gone too.
#[test]
fn a_write_that_fails_when_sent_with_others_fails_its_whole_batch() {
    let Some(url) = postgres_url("deferred_write_fails") else {
        return;
    };
    let pg = postgres_store(&url, "deferred_write_fails");
    let store = Store::from(pg.clone());
    store
        .add_device(&DeviceRecord::new("SEPA"), event("SEPA", "device-add", 1))
        .unwrap();
    let first = failed_auth("SEPA");
    // jsonb cannot hold U+0000, so this event is refused by the database itself.
    let mut refused = failed_auth("SEPA");
    refused.event.action = "auth\0failed".into();
    let outcome = store.apply_changes(&[&first, &refused]);
    assert!(
        matches!(outcome, Err(StoreError::Postgres(_))),
        "{outcome:?}"
    );
    assert_eq!(store.get_device("SEPA").unwrap().unwrap().failed_auth, 0);
    assert_eq!(store.events(None, None, None).unwrap().len(), 1);
    // The connection goes on serving.
    store.apply_changes(&[&first]).unwrap();
    assert_eq!(store.get_device("SEPA").unwrap().unwrap().failed_auth, 1);
    pg.drop_schema().unwrap();
}

#[test]
fn the_writer_lands_concurrent_changes_with_distinct_event_ids() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec![Store::open(dir.path()).unwrap()];
    let postgres = postgres_url("writer").map(|url| postgres_store(&url, "writer"));
    if let Some(pg) = &postgres {
        backends.push(Store::from(pg.clone()));
    }
    for store in backends {
        let kind = store.kind();
        let names: Vec<String> = (0..32).map(|i| format!("SEP{i:012X}")).collect();
        for name in &names {
            store
                .add_device(
                    &DeviceRecord::new(name.as_str()),
                    event(name, "device-add", 1),
                )
                .unwrap();
        }
        let writer = Writer::start(&store).unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = names
                .iter()
                .map(|name| {
                    let (writer, name) = (writer.clone(), name.clone());
                    tokio::spawn(async move {
                        let mut change = failed_auth(&name);
                        change.change = Some(DeviceChange::Authenticated {
                            now: 1,
                            status: Some(OperationStatus::UpgradeSuccess),
                            mic: None,
                        });
                        writer.write(change).await
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        });
        for name in &names {
            let rec = store.get_device(name).unwrap().unwrap();
            assert_eq!(rec.status, OperationStatus::UpgradeSuccess, "{kind} {name}");
        }
        let ids: std::collections::BTreeSet<u64> = store
            .events(None, None, None)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids.len(), 64, "{kind}: every event has its own id");
    }
    if let Some(pg) = postgres {
        pg.drop_schema().unwrap();
    }
}

/// Two handles on one database stand for two nodes: authentication failures counted
/// on both at once are all counted (the row lock), none lost to a concurrent write.
#[test]
fn failures_counted_on_two_nodes_at_once_are_all_counted() {
    let Some(url) = postgres_url("two_nodes") else {
        return;
    };
    let node_a = postgres_store(&url, "two_nodes");
    Store::from(node_a.clone())
        .add_device(&DeviceRecord::new("SEPA"), event("SEPA", "device-add", 1))
        .unwrap();
    let schema = node_a.schema().unwrap().to_string();
    let node_b = PgStore::open_in_schema(&url, Some(&schema)).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let node = if i % 2 == 0 {
                node_a.clone()
            } else {
                node_b.clone()
            };
            std::thread::spawn(move || {
                let change = failed_auth("SEPA");
                for _ in 0..20 {
                    Store::from(node.clone())
                        .apply_changes(&[&change, &change])
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(node_b.get_device("SEPA").unwrap().unwrap().failed_auth, 240);
    let events = Store::from(node_a.clone()).events(Some("SEPA"), None, None);
    assert_eq!(events.unwrap().len(), 241);
    node_a.drop_schema().unwrap();
}

/// Web admin sessions: stored, replaced, listed and removed by key, on both backends.
#[test]
fn web_sessions_are_kept_replaced_and_removed() {
    each_backend("web_sessions", |store| {
        let session = |account: &str, last_seen: UnixTime| WebSession {
            account: account.into(),
            csrf: "c".repeat(64),
            credential: "ab".repeat(32),
            created: 1,
            last_seen,
        };
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(store.web_session(&a).unwrap(), None);
        store.put_web_session(&a, &session("alice", 5)).unwrap();
        store.put_web_session(&b, &session("bob", 6)).unwrap();
        store.put_web_session(&a, &session("alice", 7)).unwrap();
        assert_eq!(store.web_session(&a).unwrap(), Some(session("alice", 7)));
        let mut all = store.web_sessions().unwrap();
        all.sort_by_key(|(k, _)| *k);
        assert_eq!(all, [(a, session("alice", 7)), (b, session("bob", 6))]);
        store.remove_web_session(&a).unwrap();
        store.remove_web_session(&a).unwrap();
        assert_eq!(store.web_session(&a).unwrap(), None);
        assert_eq!(store.web_sessions().unwrap().len(), 1);
    });
}

/// Opening a store again (a node restarting, a second node) applies no migration twice.
#[test]
fn migrations_run_once() {
    let Some(url) = postgres_url("migrations") else {
        return;
    };
    let first = postgres_store(&url, "migrations");
    Store::from(first.clone())
        .add_device(&DeviceRecord::new("SEPA"), event("SEPA", "device-add", 1))
        .unwrap();
    let schema = first.schema().unwrap().to_string();
    let again = PgStore::open_in_schema(&url, Some(&schema)).unwrap();
    assert_eq!(names(&Store::from(again.clone())), ["SEPA"]);
    assert_eq!(again.applied_migrations().unwrap(), [1, 2, 3, 4]);
    again.drop_schema().unwrap();
}

/// Leases: one holder at a time across nodes, renewed by its holder, taken over
/// once expired, given back.
#[test]
fn a_lease_has_one_holder_across_nodes_until_it_expires() {
    let Some(url) = postgres_url("leases") else {
        return;
    };
    let node_a = postgres_store(&url, "leases");
    let schema = node_a.schema().unwrap().to_string();
    let node_b = PgStore::open_in_schema(&url, Some(&schema)).unwrap();
    let long = std::time::Duration::from_secs(60);
    let short = std::time::Duration::from_millis(200);
    assert!(node_a.try_lease("device:SEPA", "a", long).unwrap());
    assert!(!node_b.try_lease("device:SEPA", "b", long).unwrap());
    assert!(
        node_b.try_lease("device:SEPB", "b", long).unwrap(),
        "another key"
    );
    assert!(
        node_a.try_lease("device:SEPA", "a", short).unwrap(),
        "renewed"
    );
    std::thread::sleep(short * 2);
    assert!(
        node_b.try_lease("device:SEPA", "b", long).unwrap(),
        "expired"
    );
    node_a.release_lease("device:SEPA", "a").unwrap();
    assert!(
        !node_a.try_lease("device:SEPA", "a", long).unwrap(),
        "not a's to give"
    );
    node_b.release_lease("device:SEPA", "b").unwrap();
    assert!(node_a.try_lease("device:SEPA", "a", long).unwrap());
    node_a.drop_schema().unwrap();
}

/// The per-address limit across nodes: reservations on two nodes at once never
/// exceed it, failures count wherever they happen, and a window ends.
#[test]
fn attempts_of_one_address_on_two_nodes_never_exceed_the_limit() {
    let Some(url) = postgres_url("address_limit") else {
        return;
    };
    let node_a = postgres_store(&url, "address_limit");
    let schema = node_a.schema().unwrap().to_string();
    let node_b = PgStore::open_in_schema(&url, Some(&schema)).unwrap();
    let limit = AddressLimit {
        max_failures: 3,
        window: std::time::Duration::from_secs(1),
        attempt_ttl: std::time::Duration::from_secs(60),
    };
    let addr = "192.0.2.7";
    // Twelve sessions on two nodes at once: three slots.
    let reserved: Vec<(PgStore, String)> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..12)
            .map(|i| {
                let node = if i % 2 == 0 { &node_a } else { &node_b };
                s.spawn(move || {
                    let holder = format!("s{i}");
                    let got = node.reserve_attempt(addr, &holder, limit).unwrap();
                    (got == Reservation::Reserved).then(|| (node.clone(), holder))
                })
            })
            .collect();
        tries
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(reserved.len(), 3);
    assert_eq!(
        node_a.reserve_attempt(addr, "late", limit).unwrap(),
        Reservation::Busy
    );
    // All three fail: the address is out of guesses on every node.
    for (node, holder) in &reserved {
        node.attempt_failed(addr, holder, limit).unwrap();
    }
    assert_eq!(
        node_b.reserve_attempt(addr, "late", limit).unwrap(),
        Reservation::TooManyFailures
    );
    assert_eq!(
        node_a.reserve_attempt("192.0.2.8", "other", limit).unwrap(),
        Reservation::Reserved,
        "other addresses are not affected"
    );
    std::thread::sleep(limit.window + std::time::Duration::from_millis(100));
    assert_eq!(
        node_b.reserve_attempt(addr, "next", limit).unwrap(),
        Reservation::Reserved,
        "a new window"
    );
    node_b.release_attempt(addr, "next").unwrap();
    node_a.drop_schema().unwrap();
}

/// A read from the runtime answers the same on both backends; on a shared database it
/// runs off the calling thread (a runtime worker must not wait out a round trip), on
/// sled in place.
#[test]
fn reads_from_the_runtime_leave_its_worker_free_on_a_shared_store() {
    each_backend("read_async", |store| {
        let kind = store.kind();
        store
            .add_device(&DeviceRecord::new("SEPR"), event("SEPR", "device-add", 10))
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let caller = std::thread::current().id();
        let (record, ran_on) = runtime
            .block_on(
                store.read_async(|s| Ok((s.get_device("SEPR")?, std::thread::current().id()))),
            )
            .unwrap();
        assert_eq!(record.map(|r| r.name).as_deref(), Some("SEPR"), "{kind}");
        assert_eq!(ran_on == caller, !store.is_shared(), "{kind}");
        let missing = runtime
            .block_on(store.read_async(|s| s.get_device("SEPNONE")))
            .unwrap();
        assert_eq!(missing, None, "{kind}");
    });
}
