use super::backend_tests::each_backend;
use super::*;
use crate::model::*;
use md5::Md5;
use rcgen::PublicKeyData;
use sha2::{Digest, Sha256};
use std::time::Instant;

pub(super) fn event(device: &str, action: &str, time: UnixTime) -> Event {
    Event {
        id: 0,
        time,
        actor: "cli:test".into(),
        device: Some(device.into()),
        action: action.into(),
        result: "ok".into(),
        details: Default::default(),
    }
}

/// A session's change, applied the way the store writer applies a batch of one.
pub(super) fn apply(
    store: &Store,
    device: Option<&str>,
    event: Event,
    serials: &[(String, SerialRecord)],
    change: Option<DeviceChange>,
) -> Result<(), StoreError> {
    let commit = Commit {
        device: device.map(String::from),
        change,
        event,
        serials: serials.to_vec(),
        durable: false,
    };
    store.apply_changes(&[&commit])
}

/// An authentication failure that never locks: the count goes up by one.
pub(super) fn failure() -> Option<DeviceChange> {
    Some(DeviceChange::AuthFailed {
        now: 5,
        status: None,
        max_failures: u32::MAX,
        lockout_secs: 0,
    })
}

/// A real self-signed certificate, described the way `ca::cert_info` describes one.
pub(super) fn enrolled(name: &str, serial: &str) -> EnrolledCert {
    let issued = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let der = issued.cert.der().to_vec();
    EnrolledCert {
        public_key: issued.signing_key.subject_public_key_info(),
        md5: hex::encode(Md5::digest(&der)),
        sha256: hex::encode(Sha256::digest(&der)),
        serial: serial.into(),
        not_before: 1_700_000_000,
        not_after: 1_900_000_000,
        key: KeySpec::Ec {
            curve: EcCurve::P256,
        },
        issuer: format!("CN={name}"),
        subject: format!("CN={name}"),
        der,
    }
}

pub(super) fn full_record(name: &str) -> DeviceRecord {
    DeviceRecord {
        operation: Operation::Install,
        auth: AuthMode::String,
        auth_string: Some("123456".into()),
        key_order: KeyOrder::EcPreferred {
            curve: EcCurve::P384,
            bits: 3072,
        },
        deadline: Some(1_800_000_000),
        encrypted_config: true,
        status: OperationStatus::UpgradeFailed("Invalid Authentication String".into()),
        last_attempt: Some(1_750_000_000),
        failed_auth: 2,
        locked_until: Some(1_750_000_600),
        lsc: Some(enrolled(name, "0a1b2c")),
        mic: Some(enrolled(name, "ff00")),
        unconfirmed_lsc: None,
        ..DeviceRecord::new(name)
    }
}

pub(super) fn serial_entry(device: &str, state: SerialState) -> SerialRecord {
    SerialRecord {
        device: device.into(),
        state,
        issued: 1_750_000_000,
        revoked: None,
    }
}

/// The import's batch write: what `f` makes of each device, given the stored one.
fn install_all(names: &[String], store: &Store) -> Result<Vec<Upsert>, StoreError> {
    store.upsert_devices(
        names,
        |name| name,
        |name, current| {
            let mut rec = current
                .cloned()
                .unwrap_or_else(|| DeviceRecord::new(name.as_str()));
            rec.operation = Operation::Install;
            Ok((rec, event(name, "device-import", 1)))
        },
    )
}

#[test]
fn adding_twice_is_refused_and_writes_no_second_event() {
    each_backend(
        "adding_twice_is_refused_and_writes_no_second_event",
        |store| {
            let rec = DeviceRecord::new("SEP001122334455");
            store.add_device(&rec, event(&rec.name, "add", 1)).unwrap();

            let mut changed = rec.clone();
            changed.operation = Operation::Delete;
            let err = store
                .add_device(&changed, event(&rec.name, "add", 2))
                .unwrap_err();
            assert!(matches!(err, StoreError::Exists(ref n) if n == "SEP001122334455"));
            assert_eq!(store.get_device(&rec.name).unwrap(), Some(rec));
            assert_eq!(store.events(None, None, None).unwrap().len(), 1);
        },
    );
}

#[test]
fn put_replaces_and_remove_deletes() {
    each_backend("put_replaces_and_remove_deletes", |store| {
        let mut rec = DeviceRecord::new("SEP001122334455");
        store.put_device(&rec, event(&rec.name, "put", 1)).unwrap();
        rec.operation = Operation::Troubleshoot;
        store.put_device(&rec, event(&rec.name, "put", 2)).unwrap();
        assert_eq!(store.get_device(&rec.name).unwrap(), Some(rec.clone()));
        assert_eq!(store.device_count().unwrap(), 1);

        assert!(store
            .remove_device(&rec.name, event(&rec.name, "remove", 3))
            .unwrap());
        assert!(!store
            .remove_device(&rec.name, event(&rec.name, "remove", 4))
            .unwrap());
        assert_eq!(store.get_device(&rec.name).unwrap(), None);
        let actions: Vec<_> = store
            .events(None, None, None)
            .unwrap()
            .into_iter()
            .map(|e| e.time)
            .collect();
        assert_eq!(actions, [1, 2, 3], "a remove of nothing is not audited");
    });
}

#[test]
fn update_commits_record_event_and_serials_together() {
    each_backend(
        "update_commits_record_event_and_serials_together",
        |store| {
            let mut rec = DeviceRecord::new("SEP001122334455");
            rec.failed_auth = 2;
            store.add_device(&rec, event(&rec.name, "add", 1)).unwrap();

            let lsc = enrolled(&rec.name, "0a1b2c");
            apply(
                store,
                Some(&rec.name),
                event(&rec.name, "lsc-issued", 2),
                &[(
                    "0A1B2C".into(),
                    serial_entry(&rec.name, SerialState::Installed),
                )],
                Some(DeviceChange::LscInstalled { now: 6, cert: lsc }),
            )
            .unwrap();
            let updated = store.get_device(&rec.name).unwrap().unwrap();

            assert_eq!(updated.failed_auth, 0, "the stored count of 2 was reset");
            assert_eq!(
                updated.lsc.as_ref().map(|c| c.serial.as_str()),
                Some("0a1b2c")
            );
            assert_eq!(updated.status, OperationStatus::UpgradeSuccess);
            let events = store.events(Some(&rec.name), None, None).unwrap();
            assert_eq!(events.len(), 2);
            assert_eq!(events[1].action, "lsc-issued");
            assert!(events[1].id > events[0].id && events[0].id > 0);
            assert_eq!(
                store.serial("0a1b2c").unwrap(),
                Some(serial_entry(&rec.name, SerialState::Installed))
            );
            assert_eq!(
                store.serial("0A1B2C").unwrap(),
                store.serial("0a1b2c").unwrap()
            );
            assert_eq!(
                store.serials().unwrap(),
                [(
                    "0a1b2c".to_string(),
                    serial_entry(&rec.name, SerialState::Installed)
                )]
            );
        },
    );
}

#[test]
fn concurrent_updates_are_never_lost() {
    each_backend("concurrent_updates_are_never_lost", |store| {
        store
            .add_device(&DeviceRecord::new("SEP1"), event("SEP1", "add", 0))
            .unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        apply(
                            store,
                            Some("SEP1"),
                            event("SEP1", "fail", 0),
                            &[],
                            failure(),
                        )
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.get_device("SEP1").unwrap().unwrap().failed_auth, 200);
        let ids: Vec<u64> = store
            .events(None, None, None)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids.len(), 201, "{}", store.kind());
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    });
}

#[test]
fn refused_or_impossible_updates_write_nothing() {
    each_backend("refused_or_impossible_updates_write_nothing", |store| {
        let rec = DeviceRecord::new("SEP001122334455");
        store.add_device(&rec, event(&rec.name, "add", 1)).unwrap();
        let serials = [(
            "abcd".to_string(),
            serial_entry(&rec.name, SerialState::Unconfirmed),
        )];

        // A device removed meanwhile is not recreated, nor are its serials written; the
        // event is kept.
        apply(
            store,
            Some("SEP000000000000"),
            event("SEP000000000000", "set", 4),
            &serials,
            None,
        )
        .unwrap();
        assert_eq!(store.get_device("SEP000000000000").unwrap(), None);

        assert_eq!(store.get_device(&rec.name).unwrap(), Some(rec));
        assert_eq!(store.events(None, None, None).unwrap().len(), 2);
        assert_eq!(store.serials().unwrap(), []);
        assert_eq!(store.device_count().unwrap(), 1);
    });
}

#[test]
fn events_are_monotonic_and_filterable() {
    each_backend("events_are_monotonic_and_filterable", |store| {
        for (i, device) in ["SEPA", "SEPB", "SEPA", "SEPB", "SEPA", "SEPB"]
            .iter()
            .enumerate()
        {
            apply(
                store,
                None,
                event(device, "session", 100 + i as i64),
                &[],
                None,
            )
            .unwrap();
        }
        let times = |events: Vec<Event>| events.iter().map(|e| e.time).collect::<Vec<_>>();
        let all = store.events(None, None, None).unwrap();
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(times(all), [100, 101, 102, 103, 104, 105]);
        assert_eq!(
            times(store.events(Some("SEPA"), None, None).unwrap()),
            [100, 102, 104]
        );
        assert_eq!(
            times(store.events(Some("SEPB"), Some(102), None).unwrap()),
            [103, 105]
        );
        assert_eq!(
            times(store.events(None, None, Some(2)).unwrap()),
            [104, 105],
            "a limit keeps the most recent"
        );
        assert_eq!(
            times(store.events(Some("SEPA"), Some(101), Some(1)).unwrap()),
            [104]
        );
        assert_eq!(store.events(Some("SEPC"), None, None).unwrap(), []);

        // The streamed reading finds the same events as the collected one.
        for (device, since) in [
            (None, None),
            (Some("SEPA"), None),
            (Some("SEPB"), Some(102)),
        ] {
            let streamed: Vec<Event> = store
                .events_in_order(device.map(String::from), since)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(streamed, store.events(device, since, None).unwrap());
        }
    });
}

#[test]
fn upsert_of_ten_thousand_is_all_or_nothing() {
    each_backend("upsert_of_ten_thousand_is_all_or_nothing", |store| {
        let names: Vec<String> = (0..10_000u64).map(|i| format!("SEP{i:012X}")).collect();

        // A refusal of the very last device takes the whole call with it.
        let last = names.last().unwrap().clone();
        let err = store
            .upsert_devices(
                &names,
                |name| name,
                |name, _| {
                    if *name == last {
                        return Err("no".into());
                    }
                    Ok((DeviceRecord::new(name.as_str()), event(name, "add", 1)))
                },
            )
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Refused { device, reason } if *device == last && reason == "no"),
            "{err}"
        );
        assert_eq!(store.device_count().unwrap(), 0);
        assert_eq!(store.events(None, None, None).unwrap(), []);

        let started = Instant::now();
        let outcomes = install_all(&names, store).unwrap();
        store.flush().unwrap();
        eprintln!("upsert of 10,000 devices: {:?}", started.elapsed());
        assert!(outcomes.iter().all(|o| matches!(o, Upsert::Added(_))));
        assert_eq!(store.device_count().unwrap(), 10_000);
        let listed = store.list_devices().unwrap();
        assert_eq!(
            listed.iter().map(|d| &d.name).collect::<Vec<_>>(),
            names.iter().collect::<Vec<_>>(),
            "listed in name order"
        );
        assert!(listed.iter().all(|d| d.operation == Operation::Install));
        assert_eq!(store.events(None, None, None).unwrap().len(), 10_000);
    });
}

#[test]
fn upsert_reads_the_stored_record_and_writes_only_changes() {
    each_backend(
        "upsert_reads_the_stored_record_and_writes_only_changes",
        |store| {
            let enrolled_phone = DeviceRecord {
                operation: Operation::None,
                ..full_record("SEP000000000001")
            };
            store
                .add_device(&enrolled_phone, event(&enrolled_phone.name, "add", 1))
                .unwrap();
            let mut scheduled = DeviceRecord::new("SEP000000000002");
            scheduled.operation = Operation::Install;
            store
                .add_device(&scheduled, event(&scheduled.name, "add", 1))
                .unwrap();
            let names: Vec<String> = ["SEP000000000001", "SEP000000000002", "SEP000000000003"]
                .map(String::from)
                .to_vec();

            let outcomes = install_all(&names, store).unwrap();
            // The enrolled phone keeps its certificates: `f` saw the stored record.
            let mut expected = enrolled_phone.clone();
            expected.operation = Operation::Install;
            assert_eq!(outcomes[0], Upsert::Updated(expected.clone()));
            assert_eq!(outcomes[1], Upsert::Unchanged);
            assert_eq!(
                outcomes[2],
                Upsert::Added(DeviceRecord {
                    operation: Operation::Install,
                    ..DeviceRecord::new("SEP000000000003")
                })
            );
            assert_eq!(store.get_device(&expected.name).unwrap(), Some(expected));
            let events = store.events(None, None, None).unwrap();
            let imported: Vec<_> = events
                .iter()
                .filter(|e| e.action == "device-import")
                .map(|e| e.device.as_deref().unwrap())
                .collect();
            assert_eq!(
                imported,
                ["SEP000000000001", "SEP000000000003"],
                "no event for the unchanged one"
            );

            // Doing it again changes nothing and appends nothing.
            let again = install_all(&names, store).unwrap();
            assert!(again.iter().all(|o| *o == Upsert::Unchanged));
            assert_eq!(store.events(None, None, None).unwrap().len(), events.len());

            // A device may not be renamed.
            let err = store
                .upsert_devices(
                    &names[..1],
                    |name| name,
                    |_, _| Ok((DeviceRecord::new("OTHER"), event("OTHER", "x", 1))),
                )
                .unwrap_err();
            assert!(matches!(err, StoreError::Refused { .. }), "{err}");
            assert_eq!(store.get_device("OTHER").unwrap(), None);
        },
    );
}

#[test]
fn update_devices_skips_removed_names_and_a_refusal_writes_nothing() {
    each_backend(
        "update_devices_skips_removed_names_and_a_refusal_writes_nothing",
        |store| {
            for name in ["SEPA", "SEPB"] {
                store
                    .add_device(&DeviceRecord::new(name), event(name, "add", 1))
                    .unwrap();
            }
            let names: Vec<String> = ["SEPA", "SEPGONE", "SEPB"].map(String::from).to_vec();

            let refused = store.update_devices(&names, |rec| {
                if rec.name == "SEPB" {
                    return Err("no".into());
                }
                rec.operation = Operation::Install;
                Ok(Some(event(&rec.name, "set", 2)))
            });
            assert!(
                matches!(&refused, Err(StoreError::Refused { device, .. }) if device == "SEPB"),
                "{refused:?}"
            );
            assert_eq!(
                store.get_device("SEPA").unwrap().unwrap().operation,
                Operation::None,
                "SEPA was not written either"
            );

            let updated = store
                .update_devices(&names, |rec| {
                    if rec.name == "SEPB" {
                        return Ok(None);
                    }
                    rec.operation = Operation::Install;
                    Ok(Some(event(&rec.name, "set", 2)))
                })
                .unwrap();
            let updated: Vec<Option<&str>> = updated
                .iter()
                .map(|r| r.as_ref().map(|r| r.name.as_str()))
                .collect();
            assert_eq!(updated, [Some("SEPA"), None, None]);
            assert_eq!(store.get_device("SEPGONE").unwrap(), None, "not recreated");
            assert_eq!(
                store.get_device("SEPB").unwrap().unwrap().operation,
                Operation::None,
                "passed over"
            );
            assert_eq!(store.events(None, None, None).unwrap().len(), 3);
        },
    );
}

#[test]
fn the_key_index_names_the_device_that_still_holds_a_key() {
    each_backend(
        "the_key_index_names_the_device_that_still_holds_a_key",
        |store| {
            let cert = enrolled("a", "01");
            let mut a = DeviceRecord::new("SEP000000000001");
            a.lsc = Some(cert.clone());
            store.add_device(&a, event(&a.name, "add", 1)).unwrap();
            assert_eq!(
                store.device_holding_key(&cert.public_key).unwrap(),
                Some(a.name.clone())
            );
            assert_eq!(
                store
                    .device_holding_key(&enrolled("b", "02").public_key)
                    .unwrap(),
                None
            );

            // Deleted from the phone: the entry is stale and answers nobody.
            apply(
                store,
                Some(&a.name),
                event(&a.name, "delete", 2),
                &[],
                Some(DeviceChange::LscDeleted { now: 2 }),
            )
            .unwrap();
            assert_eq!(store.device_holding_key(&cert.public_key).unwrap(), None);
        },
    );
}

#[test]
fn a_prefix_range_scan_reads_only_its_page() {
    each_backend("a_prefix_range_scan_reads_only_its_page", |store| {
        for name in [
            "SEP000000000001",
            "SEP001100000001",
            "SEP001100000002",
            "SEP001100000003",
            "SEP002200000001",
        ] {
            store
                .add_device(&DeviceRecord::new(name), event(name, "device-add", 1))
                .unwrap();
        }
        let names = |prefix: &str, after: Option<&str>| -> Vec<String> {
            store
                .devices_from(prefix, after)
                .map(|d| d.unwrap().name)
                .collect()
        };
        assert_eq!(
            names("SEP0011", None),
            ["SEP001100000001", "SEP001100000002", "SEP001100000003"]
        );
        assert_eq!(
            names("SEP0011", Some("SEP001100000001")),
            ["SEP001100000002", "SEP001100000003"]
        );
        // An `after` before the prefix starts at the prefix; one past it finds nothing.
        assert_eq!(names("SEP0011", Some("SEP0000")).len(), 3);
        assert!(names("SEP0011", Some("SEP0022")).is_empty());
        assert_eq!(names("", Some("SEP001100000003")), ["SEP002200000001"]);
        // Newest events first, from below an id.
        let ids: Vec<u64> = store
            .events_newest_first(Some(4))
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(ids, [3, 2, 1]);
    });
}

#[test]
fn accounts_are_added_once_updated_and_removed_with_their_events() {
    each_backend("accounts", |store| {
        let alice = WebAccount {
            name: "alice".into(),
            password_hash: "$argon2id$x".into(),
            created: 1,
            failed_logins: 0,
            locked_until: None,
            last_login: None,
        };
        let admin_event = |action: &str| Event {
            device: None,
            ..event("-", action, 1)
        };
        store
            .add_web_account(&alice, admin_event("admin-user-add"))
            .unwrap();
        assert!(matches!(
            store.add_web_account(&alice, admin_event("admin-user-add")),
            Err(StoreError::AccountExists(_))
        ));
        let n = store
            .update_web_account("alice", |a| {
                a.failed_logins += 1;
                (Some(admin_event("web-login")), a.failed_logins)
            })
            .unwrap();
        assert_eq!(n, Some(1));
        assert_eq!(
            store.update_web_account("bob", |_| (None, ())).unwrap(),
            None
        );
        assert_eq!(store.web_accounts().unwrap()[0].failed_logins, 1);
        assert!(store
            .remove_web_account("alice", admin_event("admin-user-remove"))
            .unwrap());
        assert!(!store
            .remove_web_account("alice", admin_event("admin-user-remove"))
            .unwrap());
        assert_eq!(store.web_account("alice").unwrap(), None);
        let actions: Vec<String> = store
            .events(None, None, None)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            ["admin-user-add", "web-login", "admin-user-remove"]
        );
    });
}

/// Listings read pages of `PAGE` records: one that spans several pages, with a
/// prefix, and the audit trail read both ways, lose and repeat nothing.
#[test]
fn listings_across_pages_lose_and_repeat_nothing() {
    each_backend("pages", |store| {
        let count = 2 * PAGE + 7;
        let names: Vec<String> = (0..count).map(|i| format!("SEP{i:012}")).collect();
        store
            .upsert_devices(
                &names,
                |name| name,
                |name, _| Ok((DeviceRecord::new(name.as_str()), event(name, "add", 1))),
            )
            .unwrap();
        let listed: Vec<String> = store.devices().map(|d| d.unwrap().name).collect();
        assert_eq!(listed, names, "{}", store.kind());
        assert_eq!(store.device_count().unwrap(), count);
        let prefixed = store.devices_from("SEP0000000005", None).count();
        assert_eq!(prefixed, 100, "SEP000000000500..599");
        let oldest_first: Vec<u64> = store
            .events_in_order(None, None)
            .map(|e| e.unwrap().id)
            .collect();
        let mut newest_first: Vec<u64> = store
            .events_newest_first(None)
            .map(|e| e.unwrap().id)
            .collect();
        newest_first.reverse();
        assert_eq!(oldest_first.len(), count);
        assert_eq!(oldest_first, newest_first);
        assert_eq!(store.events_since(1).unwrap().len(), count);
        assert_eq!(store.events_since(2).unwrap().len(), 0);
    });
}
