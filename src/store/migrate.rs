//! Moving a store's records into another store, whichever backends they are
//! (`capf store migrate`, docs/cluster.md "Moving between stores").
//!
//! Every record is copied as it is: devices, the audit trail with its ids, the serial
//! index with its revocations, the key index, the web admin's accounts. The copy is
//! verified by an [`Inventory`] of each side: the number of records of each kind and
//! a SHA-256 over every record in key order, each record in the one encoding both
//! backends decode to (`codec.rs`). So a record that the destination stores in another
//! shape (PostgreSQL's `jsonb` reorders keys) still counts as the same record, and a
//! record lost, added or changed on the way does not.
//!
//! A record that does not decode is not copied: the copy stops and names it. It
//! would be garbage on the other side too; `capf device remove` removes it first.

use super::{Store, StoreError, WebAccount};
use crate::model::{DeviceRecord, Event, SerialRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One record of any kind, as [`Backend::load`](super::Backend::load) takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Device(Box<DeviceRecord>),
    /// With its id, which the destination keeps.
    Event(Event),
    Serial(String, SerialRecord),
    /// An entry of the key index: the index key and the device it names.
    LscKey([u8; 32], String),
    WebAccount(WebAccount),
}

/// The kinds of record, in the order they are copied and digested.
pub const KINDS: [&str; 5] = ["devices", "events", "serials", "lsc_keys", "web_accounts"];

impl Record {
    fn kind(&self) -> usize {
        match self {
            Record::Device(_) => 0,
            Record::Event(_) => 1,
            Record::Serial(..) => 2,
            Record::LscKey(..) => 3,
            Record::WebAccount(_) => 4,
        }
    }

    /// The record's key and body as the digest reads them.
    fn canonical(&self) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        Ok(match self {
            Record::Device(rec) => (rec.name.as_bytes().to_vec(), json(rec)?),
            Record::Event(event) => (event.id.to_be_bytes().to_vec(), json(event)?),
            Record::Serial(serial, rec) => (serial.as_bytes().to_vec(), json(rec)?),
            Record::LscKey(key, device) => (key.to_vec(), device.as_bytes().to_vec()),
            Record::WebAccount(account) => (account.name.as_bytes().to_vec(), json(account)?),
        })
    }
}

fn json(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

/// What a store holds: how many records of each kind, and a digest of all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub devices: u64,
    pub events: u64,
    pub serials: u64,
    pub lsc_keys: u64,
    pub web_accounts: u64,
    /// SHA-256, hex, over every record in kind and key order.
    pub sha256: String,
}

impl Inventory {
    pub fn records(&self) -> u64 {
        self.devices + self.events + self.serials + self.lsc_keys + self.web_accounts
    }
}

/// Builds an [`Inventory`] from records fed in kind and key order.
struct Tally {
    counts: [u64; 5],
    digest: Sha256,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            counts: [0; 5],
            digest: Sha256::new(),
        }
    }

    fn add(&mut self, record: &Record) -> Result<(), StoreError> {
        let kind = record.kind();
        let (key, body) = record.canonical()?;
        self.counts[kind] += 1;
        // Kind and lengths first, so that no two sequences of records hash alike.
        self.digest.update([kind as u8]);
        for part in [&key, &body] {
            self.digest.update((part.len() as u64).to_be_bytes());
            self.digest.update(part);
        }
        Ok(())
    }

    fn finish(self) -> Inventory {
        let [devices, events, serials, lsc_keys, web_accounts] = self.counts;
        Inventory {
            devices,
            events,
            serials,
            lsc_keys,
            web_accounts,
            sha256: hex::encode(self.digest.finalize()),
        }
    }
}

/// How many records go into the destination per transaction.
const BATCH: usize = 512;

/// Every record of `store`, in kind and key order, a batch at a time.
fn for_each_batch(
    store: &Store,
    mut f: impl FnMut(&[Record]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut push = |record: Record, batch: &mut Vec<Record>| {
        batch.push(record);
        if batch.len() == BATCH {
            f(batch)?;
            batch.clear();
        }
        Ok::<_, StoreError>(())
    };
    for device in store.devices() {
        push(Record::Device(Box::new(device?)), &mut batch)?;
    }
    for event in store.events_in_order(None, None) {
        push(Record::Event(event?), &mut batch)?;
    }
    for (serial, rec) in store.serials()? {
        push(Record::Serial(serial, rec), &mut batch)?;
    }
    for (key, device) in store.backend.lsc_keys()? {
        push(Record::LscKey(key, device), &mut batch)?;
    }
    for account in store.web_accounts()? {
        push(Record::WebAccount(account), &mut batch)?;
    }
    if !batch.is_empty() {
        f(&batch)?;
    }
    Ok(())
}

/// Reads every record of `store` and says what it holds.
pub fn inventory(store: &Store) -> Result<Inventory, StoreError> {
    let mut tally = Tally::new();
    for_each_batch(store, |batch| batch.iter().try_for_each(|r| tally.add(r)))?;
    Ok(tally.finish())
}

/// Whether `store` holds no record at all.
pub fn is_empty(store: &Store) -> Result<bool, StoreError> {
    Ok(store.devices().next().is_none()
        && store.events(None, None, Some(1))?.is_empty()
        && store.serials()?.is_empty()
        && store.backend.lsc_keys()?.is_empty()
        && store.web_accounts()?.is_empty())
}

/// Copies every record of `source` into `destination`, which must be empty, a batch
/// per transaction; `progress` hears the number of records copied so far. Returns the
/// inventory of what was read. The caller compares it with the destination's
/// [`inventory`] (and keeps the source from changing meanwhile).
pub fn copy(
    source: &Store,
    destination: &Store,
    mut progress: impl FnMut(u64),
) -> Result<Inventory, StoreError> {
    if !is_empty(destination)? {
        return Err(StoreError::Unsupported(format!(
            "the destination store {} is not empty: capf copies only into an empty store",
            destination.location()
        )));
    }
    let mut tally = Tally::new();
    let mut copied = 0;
    for_each_batch(source, |batch| {
        batch.iter().try_for_each(|r| tally.add(r))?;
        destination.backend.load(batch)?;
        copied += batch.len() as u64;
        progress(copied);
        Ok(())
    })?;
    destination.flush()?;
    Ok(tally.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RevocationReason, SerialState};
    use crate::store::backend_tests::{postgres_store, postgres_url};
    use crate::store::tests::{enrolled, event, full_record, serial_entry};

    /// A store with something of every kind: devices with LSCs (so the key index has
    /// entries), a revoked LSC, an audit trail, a web account.
    fn fill(store: &Store) {
        for (name, serial) in [("SEP0A", "0a"), ("SEP0B", "0b"), ("SEP0C", "0c")] {
            let mut rec = full_record(name);
            rec.lsc = Some(enrolled(name, serial));
            store
                .add_device(&rec, event(name, "device-add", 10))
                .unwrap();
            crate::store::tests::apply(
                store,
                Some(name),
                event(name, "install", 11),
                &[(
                    serial.to_string(),
                    serial_entry(name, SerialState::Installed),
                )],
                None,
            )
            .unwrap();
        }
        store
            .revoke_device("SEP0B", RevocationReason::KeyCompromise, 12, |_, _| {
                event("SEP0B", "revoke", 12)
            })
            .unwrap();
        let account = WebAccount {
            name: "operator".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created: 13,
            failed_logins: 1,
            locked_until: None,
            last_login: Some(14),
        };
        store
            .add_web_account(&account, event("operator", "admin-user-add", 13))
            .unwrap();
    }

    /// Copies a filled `source` into an empty `destination` and checks that the
    /// destination answers every read as the source does, and goes on from there.
    fn copies_faithfully(source: &Store, destination: &Store) {
        let route = format!("{} -> {}", source.kind(), destination.kind());
        fill(source);
        let copied = copy(source, destination, |_| {}).unwrap();
        assert_eq!(inventory(destination).unwrap(), copied, "{route}");
        assert_eq!(inventory(source).unwrap(), copied, "{route}");
        assert_eq!(
            (
                copied.devices,
                copied.serials,
                copied.lsc_keys,
                copied.web_accounts
            ),
            (3, 3, 3, 1),
            "{route}"
        );
        assert_eq!(copied.events, 3 + 3 + 1 + 1, "{route}");

        assert_eq!(
            destination.list_devices().unwrap(),
            source.list_devices().unwrap()
        );
        assert_eq!(
            destination.events(None, None, None).unwrap(),
            source.events(None, None, None).unwrap(),
            "{route}: the same events with the same ids"
        );
        assert_eq!(destination.revocations().unwrap().len(), 1, "{route}");
        assert_eq!(destination.serials().unwrap(), source.serials().unwrap());
        assert_eq!(
            destination.web_accounts().unwrap(),
            source.web_accounts().unwrap()
        );
        let key = &source.get_device("SEP0A").unwrap().unwrap().lsc.unwrap();
        assert_eq!(
            destination.device_holding_key(&key.public_key).unwrap(),
            Some("SEP0A".into()),
            "{route}: the key index came along"
        );
        // New events come after the copied ones.
        let last = source.events(None, None, Some(1)).unwrap()[0].id;
        destination
            .record_event(event("SEP0A", "later", 20))
            .unwrap();
        assert!(destination.events(None, None, Some(1)).unwrap()[0].id > last);

        // Into a store that is not empty: refused, nothing written.
        let before = inventory(destination).unwrap();
        assert!(matches!(
            copy(source, destination, |_| {}),
            Err(StoreError::Unsupported(m)) if m.contains("not empty")
        ));
        assert_eq!(inventory(destination).unwrap(), before, "{route}");
    }

    #[test]
    fn a_store_is_copied_record_for_record_between_backends() {
        let dir = tempfile::tempdir().unwrap();
        let sled = |name: &str| Store::open(&dir.path().join(name)).unwrap();
        copies_faithfully(&sled("a"), &sled("b"));
        if let Some(url) = postgres_url("migrate_copy") {
            let pg = postgres_store(&url, "migrate_to");
            copies_faithfully(&sled("c"), &Store::from(pg.clone()));
            let back = postgres_store(&url, "migrate_from");
            copies_faithfully(&Store::from(back.clone()), &sled("d"));
            pg.drop_schema().unwrap();
            back.drop_schema().unwrap();
        }
    }

    #[test]
    fn the_inventory_notices_any_record_changed_added_or_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fill(&store);
        let original = inventory(&store).unwrap();
        assert_eq!(
            inventory(&store).unwrap(),
            original,
            "reading changes nothing"
        );

        // One field of one device.
        store
            .update_devices(&["SEP0C".to_string()], |rec| {
                rec.failed_auth += 1;
                Ok(Some(event("SEP0C", "x", 30)))
            })
            .unwrap();
        let changed = inventory(&store).unwrap();
        assert_ne!(changed.sha256, original.sha256);
        assert_eq!(changed.devices, original.devices);

        // A device removed (its event is added too, but the digest names the change).
        store
            .remove_device("SEP0C", event("SEP0C", "remove", 31))
            .unwrap();
        let removed = inventory(&store).unwrap();
        assert_eq!(removed.devices, original.devices - 1);
        assert_ne!(removed.sha256, changed.sha256);
    }
}
