//! The writes of the store, written once for both backends: each runs inside one
//! transaction of the backend ([`DeviceTxn`]), which supplies only the primitive reads
//! and writes of its database. What a write does (which records change together with
//! their audit event, what a revocation puts on the CRL) is therefore the same on sled
//! and on PostgreSQL by construction.

use super::codec::encode_device;
use super::{encode_new_device, StoreError, Upsert};
use crate::model::{Commit, DeviceRecord, Event, RevocationReason, SerialRecord, UnixTime};

/// A device update: the event to store with the changed record, `None` to pass the
/// device over, or a refusal.
pub type DeviceUpdate<'a> = &'a dyn Fn(&mut DeviceRecord) -> Result<Option<Event>, String>;

/// One item of an upsert, by its index, given the device as stored (if any): the
/// record to store and its event, or a refusal.
pub type DeviceUpsert<'a> =
    &'a dyn Fn(usize, Option<&DeviceRecord>) -> Result<(DeviceRecord, Event), String>;

/// The event of a removal, made of the device as it is at commit time (`None` for a
/// record that no longer decodes).
pub type RemovalEvent<'a> = &'a dyn Fn(Option<&DeviceRecord>) -> Event;

/// The event of a revocation, made of the device without its LSCs and the serials
/// revoked.
pub type RevocationEvent<'a> = &'a dyn Fn(&DeviceRecord, &[String]) -> Event;

/// One transaction of a backend, as [`Backend::transact`](super::Backend::transact)
/// hands it out. An error aborts the transaction ([`StoreError::TxnConflict`] has it
/// run again).
pub trait DeviceTxn {
    /// The device, locked until the transaction ends where the database locks rows.
    fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// Inserts a new device (already encoded) and indexes its keys; `false`, writing
    /// nothing, if the name is taken.
    fn insert_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<bool, StoreError>;

    /// Inserts or replaces a device (already encoded) and indexes its keys.
    fn put_device(&self, rec: &DeviceRecord, encoded: &[u8]) -> Result<(), StoreError>;

    /// Removes a device: `None` if there was none, `Some(None)` for a record that no
    /// longer decodes (it can still be removed).
    fn remove_device(&self, name: &str) -> Result<Option<Option<DeviceRecord>>, StoreError>;

    /// The serial's index entry, locked where the database locks rows.
    fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError>;

    fn put_serials(&self, serials: &[(String, SerialRecord)]) -> Result<(), StoreError>;

    /// Appends an event; its id is the backend's.
    fn append_event(&self, event: &Event) -> Result<(), StoreError>;
}

pub(super) fn add_device(
    t: &dyn DeviceTxn,
    rec: &DeviceRecord,
    encoded: &[u8],
    event: &Event,
) -> Result<(), StoreError> {
    if !t.insert_device(rec, encoded)? {
        return Err(StoreError::Exists(rec.name.clone()));
    }
    t.append_event(event)
}

pub(super) fn put_device(
    t: &dyn DeviceTxn,
    rec: &DeviceRecord,
    encoded: &[u8],
    event: &Event,
) -> Result<(), StoreError> {
    t.put_device(rec, encoded)?;
    t.append_event(event)
}

/// See [`Store::update_devices`](super::Store::update_devices).
pub(super) fn update_devices(
    t: &dyn DeviceTxn,
    names: &[String],
    f: DeviceUpdate<'_>,
) -> Result<Vec<Option<DeviceRecord>>, StoreError> {
    let mut updated = Vec::with_capacity(names.len());
    for name in names {
        let Some(mut rec) = t.device(name)? else {
            updated.push(None);
            continue;
        };
        let Some(event) = update_one(name, &mut rec, f)? else {
            updated.push(None);
            continue;
        };
        t.put_device(&rec, &encode_device(&rec)?)?;
        t.append_event(&event)?;
        updated.push(Some(rec));
    }
    Ok(updated)
}

/// Removes a device; its LSCs are no longer anyone's, so they go on the CRL.
pub(super) fn remove_device(
    t: &dyn DeviceTxn,
    name: &str,
    f: RemovalEvent<'_>,
) -> Result<bool, StoreError> {
    let Some(rec) = t.remove_device(name)? else {
        return Ok(false);
    };
    if let Some(rec) = &rec {
        let now = crate::model::now();
        for (serial, issued) in removed_lscs(rec) {
            let reason = RevocationReason::CessationOfOperation;
            revoke_serial(t, serial, name, issued, now, reason)?;
        }
    }
    t.append_event(&f(rec.as_ref()))?;
    Ok(true)
}

/// See [`Store::upsert_devices`](super::Store::upsert_devices).
pub(super) fn upsert_devices(
    t: &dyn DeviceTxn,
    names: &[&str],
    f: DeviceUpsert<'_>,
) -> Result<Vec<Upsert>, StoreError> {
    let mut outcomes = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let current = t.device(name)?;
        let Some((rec, event, existed)) = upsert_one(index, name, current, f)? else {
            outcomes.push(Upsert::Unchanged);
            continue;
        };
        t.put_device(&rec, &encode_new_device(&rec)?)?;
        t.append_event(&event)?;
        outcomes.push(upserted(rec, existed));
    }
    Ok(outcomes)
}

/// See [`Store::revoke_device`](super::Store::revoke_device).
pub(super) fn revoke_device(
    t: &dyn DeviceTxn,
    name: &str,
    reason: RevocationReason,
    now: UnixTime,
    f: RevocationEvent<'_>,
) -> Result<Option<Vec<String>>, StoreError> {
    let Some(mut rec) = t.device(name)? else {
        return Ok(None);
    };
    let held = take_lscs(&mut rec);
    for (serial, issued) in &held {
        revoke_serial(t, serial, name, *issued, now, reason)?;
    }
    let serials: Vec<String> = held.into_iter().map(|(s, _)| s).collect();
    let event = f(&rec, &serials);
    t.put_device(&rec, &encode_device(&rec)?)?;
    t.append_event(&event)?;
    Ok(Some(serials))
}

/// Marks `serial` revoked (creating its index entry if it has none), keeping the
/// first revocation if it already has one.
fn revoke_serial(
    t: &dyn DeviceTxn,
    serial: &str,
    device: &str,
    issued: UnixTime,
    now: UnixTime,
    reason: RevocationReason,
) -> Result<(), StoreError> {
    let rec = revoke(t.serial(serial)?, device, issued, now, reason);
    t.put_serials(&[(serial.to_owned(), rec)])
}

/// The session writer's batch (see [`Writer`](super::Writer)): for each change, the
/// device's update, event and serials; only the event if the device is gone.
pub(super) fn apply_changes(t: &dyn DeviceTxn, changes: &[&Commit]) -> Result<(), StoreError> {
    for change in changes {
        if let Some(name) = &change.device {
            if let Some(mut rec) = t.device(name)? {
                if let Some(device_change) = &change.change {
                    device_change.apply(&mut rec);
                }
                t.put_device(&rec, &encode_device(&rec)?)?;
                t.put_serials(&change.serials)?;
            }
        }
        t.append_event(&change.event)?;
    }
    Ok(())
}

/// One device of an update, as every backend runs it: the event `f` returns, or `None`
/// when `f` passes the device over; refused when `f` refuses or renames the device.
fn update_one(
    name: &str,
    rec: &mut DeviceRecord,
    f: DeviceUpdate<'_>,
) -> Result<Option<Event>, StoreError> {
    let event = f(rec).map_err(|reason| refused(name, reason))?;
    if event.is_some() && rec.name != name {
        return Err(refused(
            name,
            format!("it cannot be renamed to {:?}", rec.name),
        ));
    }
    Ok(event)
}

/// One item of an upsert, as every backend runs it: what to write (`None` when the
/// record asked for is the one stored), with its outcome.
fn upsert_one(
    index: usize,
    name: &str,
    current: Option<DeviceRecord>,
    f: DeviceUpsert<'_>,
) -> Result<Option<(DeviceRecord, Event, bool)>, StoreError> {
    let (rec, event) = f(index, current.as_ref()).map_err(|reason| refused(name, reason))?;
    if rec.name != name {
        return Err(refused(
            name,
            format!("it cannot be renamed to {:?}", rec.name),
        ));
    }
    if current.as_ref() == Some(&rec) {
        return Ok(None);
    }
    Ok(Some((rec, event, current.is_some())))
}

/// The outcome of an upsert that wrote `rec`.
fn upserted(rec: DeviceRecord, existed: bool) -> Upsert {
    if existed {
        Upsert::Updated(rec)
    } else {
        Upsert::Added(rec)
    }
}

/// The LSCs a revocation takes from `rec` (installed and unconfirmed), with when each
/// was issued; `rec` no longer holds them and remembers them as revoked.
fn take_lscs(rec: &mut DeviceRecord) -> Vec<(String, UnixTime)> {
    let held: Vec<(String, UnixTime)> = [rec.lsc.take(), rec.unconfirmed_lsc.take()]
        .into_iter()
        .flatten()
        .map(|c| (c.serial, c.not_before))
        .collect();
    for (serial, _) in &held {
        rec.note_revoked(serial);
    }
    held
}

/// The LSCs of a removed device: on the CRL from then on, as no longer anyone's.
fn removed_lscs(rec: &DeviceRecord) -> impl Iterator<Item = (&str, UnixTime)> {
    [rec.lsc.as_ref(), rec.unconfirmed_lsc.as_ref()]
        .into_iter()
        .flatten()
        .map(|c| (c.serial.as_str(), c.not_before))
}

/// The revocation a serial carries from now on: the first one if it has one.
fn revoke(
    current: Option<SerialRecord>,
    device: &str,
    issued: UnixTime,
    now: UnixTime,
    reason: RevocationReason,
) -> SerialRecord {
    use crate::model::{Revocation, SerialState};
    let mut rec = current.unwrap_or(SerialRecord {
        device: device.to_owned(),
        state: SerialState::Superseded,
        issued,
        revoked: None,
    });
    rec.state = SerialState::Superseded;
    rec.revoked.get_or_insert(Revocation { time: now, reason });
    rec
}

fn refused(name: &str, reason: String) -> StoreError {
    StoreError::Refused {
        device: name.to_string(),
        reason,
    }
}
