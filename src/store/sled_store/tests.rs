//! What only the sled store does: its on-disk envelope, damage, locking, reopening,
//! backups, and the key index of a store written before the index existed. The
//! behaviour both backends share is tested on both in `store/tests.rs`.

use super::*;
use crate::model::*;
use crate::store::codec::encode_device;
use crate::store::tests::{apply, enrolled, event, full_record, serial_entry};
use crate::store::Store;
use tempfile::tempdir;

/// The sled store in `dir`, raw (for its trees) and behind the store's handle.
fn open(dir: &Path) -> (SledStore, Store) {
    let raw = SledStore::open(dir).unwrap();
    (raw.clone(), Store::from(raw))
}

#[test]
fn full_record_round_trips_in_a_versioned_envelope() {
    let dir = tempdir().unwrap();
    let (raw, store) = open(dir.path());
    let rec = full_record("SEP001122334455");
    store
        .add_device(&rec, event(&rec.name, "device-add", 1))
        .unwrap();

    assert_eq!(store.get_device(&rec.name).unwrap(), Some(rec.clone()));
    assert_eq!(store.get_device("SEP000000000000").unwrap(), None);

    let raw = raw.devices.get(rec.name.as_bytes()).unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["v"], DEVICE_SCHEMA_VERSION);
    assert_eq!(json["device"]["name"], "SEP001122334455");
}

#[test]
fn damaged_records_are_reported_as_corrupt() {
    let dir = tempdir().unwrap();
    let (raw, store) = open(dir.path());
    let good = DeviceRecord::new("SEPGOOD");
    store.add_device(&good, event("SEPGOOD", "add", 1)).unwrap();
    let body = serde_json::to_value(DeviceRecord::new("SEPNEWER")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "SEPGARBAGE",
            b"\xff\x00not json".to_vec(),
            "bad device envelope",
        ),
        (
            "SEPNEWER",
            serde_json::to_vec(&serde_json::json!({"v": 2, "device": body})).unwrap(),
            "schema version 2",
        ),
        (
            "SEPBADBODY",
            br#"{"v":1,"device":{"name":"SEPBADBODY"}}"#.to_vec(),
            "bad version 1 device record",
        ),
        (
            "SEPRENAMED",
            encode_device(&DeviceRecord::new("SEPOTHER")).unwrap(),
            "not its key",
        ),
    ];
    for (name, bytes, why) in cases {
        raw.devices.insert(name, bytes).unwrap();
        match store.get_device(name) {
            Err(StoreError::Corrupt { key, reason }) => {
                assert_eq!(key, format!("devices/{name}"));
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        raw.devices.remove(name).unwrap();
    }

    raw.devices.insert("SEPBAD", &b"{}"[..]).unwrap();
    assert!(matches!(
        store.list_devices(),
        Err(StoreError::Corrupt { .. })
    ));
    let results: Vec<_> = store.devices().collect();
    assert!(matches!(results[0], Err(StoreError::Corrupt { .. })));
    assert_eq!(results[1].as_ref().unwrap(), &good);

    raw.events.insert(&b"short"[..], &b"{}"[..]).unwrap();
    assert!(matches!(
        store.events(None, None, None),
        Err(StoreError::Corrupt { .. })
    ));
    raw.serials.insert("beef", &b"[]"[..]).unwrap();
    assert!(matches!(
        store.serial("BEEF"),
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn data_survives_a_reopen() {
    let dir = tempdir().unwrap();
    let rec = full_record("SEP001122334455");
    {
        let store = Store::open(dir.path()).unwrap();
        store.add_device(&rec, event(&rec.name, "add", 1)).unwrap();
        store.flush_async().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list_devices().unwrap(), [rec]);
    assert_eq!(store.events(None, None, None).unwrap().len(), 1);
}

#[test]
fn a_second_open_of_the_same_store_is_locked() {
    let dir = tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(err @ StoreError::Locked(_)) => {
            assert!(err.to_string().contains("capf serve"), "{err}");
        }
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    drop(store);
    Store::open(dir.path()).unwrap();
}

/// Opened by `another_process_sees_the_store_locked` in a child process.
const CHILD_STORE_DIR: &str = "CAPF_TEST_LOCKED_STORE_DIR";

#[test]
fn another_process_sees_the_store_locked() {
    let dir = tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::sled_store::tests::open_locked_store_in_child",
            "--ignored",
        ])
        .env(CHILD_STORE_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
#[ignore = "run as a child process by another_process_sees_the_store_locked"]
fn open_locked_store_in_child() {
    let dir = std::env::var_os(CHILD_STORE_DIR).unwrap();
    let err = Store::open(Path::new(&dir)).err();
    assert!(matches!(err, Some(StoreError::Locked(_))), "{err:?}");
}

#[test]
fn backup_is_a_complete_copy() {
    let dir = tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let rec = full_record("SEP001122334455");
    store.add_device(&rec, event(&rec.name, "add", 1)).unwrap();
    apply(
        &store,
        Some(&rec.name),
        event(&rec.name, "issued", 2),
        &[(
            "0a1b2c".into(),
            serial_entry(&rec.name, SerialState::Installed),
        )],
        Some(DeviceChange::Authenticated {
            now: 2,
            status: Some(OperationStatus::UpgradeSuccess),
            mic: None,
        }),
    )
    .unwrap();

    let backup_dir = dir.path().join("backup");
    store.backup_to(&backup_dir).unwrap();
    assert!(
        store.backup_to(&backup_dir).is_err(),
        "a backup never overwrites a database"
    );

    let backup = Store::open(&backup_dir).unwrap();
    assert_eq!(
        backup.list_devices().unwrap(),
        store.list_devices().unwrap()
    );
    assert_eq!(
        backup.events(None, None, None).unwrap(),
        store.events(None, None, None).unwrap()
    );
    assert_eq!(backup.serials().unwrap(), store.serials().unwrap());
    apply(&backup, None, event("x", "y", 3), &[], None).unwrap();
    assert_eq!(
        backup.events(None, None, None).unwrap().last().unwrap().id,
        3,
        "the backup's event ids continue"
    );
}

/// sled may panic on damaged files instead of returning an error; `Store::open`
/// catches that as `Damaged`. The catching itself: the panic comes back as the error's
/// reason, and nothing is left switched off for later panics on this thread.
#[test]
fn a_panic_inside_the_store_library_comes_back_as_a_message() {
    let caught = catch_quietly(|| -> u32 { panic!("index out of bounds: the len is 3") });
    let message = caught.unwrap_err();
    assert!(
        message.starts_with("index out of bounds: the len is 3 at "),
        "{message}"
    );
    assert_eq!(catch_quietly(|| 7), Ok(7));
    assert!(!QUIET.with(std::cell::Cell::get), "quiet only inside");
    let outside = std::panic::catch_unwind(|| panic!("reported as usual"));
    assert!(outside.is_err());
}

#[test]
fn a_transaction_that_fails_after_staging_writes_nothing() {
    let dir = tempdir().unwrap();
    let (raw, store) = open(dir.path());
    let names: Vec<String> = (0..1_000u64).map(|i| format!("SEP{i:012X}")).collect();
    // A damaged event counter makes the transaction abort after every device was
    // staged: none of them may land.
    raw.meta.insert(NEXT_EVENT_ID, &b"bad"[..]).unwrap();
    let err = store
        .upsert_devices(
            &names,
            |name| name,
            |name, _| Ok((DeviceRecord::new(name.as_str()), event(name, "add", 1))),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(store.device_count().unwrap(), 0);
}

#[test]
fn event_ids_are_contiguous_and_continue_after_a_reopen() {
    let dir = tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for time in 0..3 {
            apply(&store, None, event("SEPA", "session", time), &[], None).unwrap();
        }
    }
    let store = Store::open(dir.path()).unwrap();
    apply(&store, None, event("SEPA", "session", 3), &[], None).unwrap();
    let ids: Vec<u64> = store
        .events(None, None, None)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
}

#[test]
fn a_store_written_before_the_key_index_is_indexed_when_opened() {
    let dir = tempdir().unwrap();
    let (raw, store) = open(dir.path());
    let cert = enrolled("b", "02");
    let mut b = DeviceRecord::new("SEP000000000002");
    b.unconfirmed_lsc = Some(cert.clone());
    store.put_device(&b, event(&b.name, "set", 3)).unwrap();
    raw.lsc_keys.clear().unwrap();
    raw.meta.remove(b"lsc_keys_indexed").unwrap();
    assert_eq!(store.device_holding_key(&cert.public_key).unwrap(), None);
    drop((raw, store));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.device_holding_key(&cert.public_key).unwrap(),
        Some(b.name.clone())
    );
}
