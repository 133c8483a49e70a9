//! How records are laid out in the trees.
//!
//! Values are JSON so an operator can read a dump with ordinary tools. Device records
//! carry an explicit schema version (`{"v":1,"device":{...}}`): a record written by a
//! newer capf is refused as corrupt rather than half-understood. Event keys are the
//! big-endian id, so sled's byte order is id order.

use super::StoreError;
use crate::model::{DeviceRecord, Event, SerialRecord, DEVICE_SCHEMA_VERSION};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct DeviceEnvelopeRef<'a> {
    v: u32,
    device: &'a DeviceRecord,
}

/// Read in two steps so that the version is known before the body is interpreted.
#[derive(Deserialize)]
struct DeviceEnvelope {
    v: u32,
    device: serde_json::Value,
}

pub(super) fn encode_device(rec: &DeviceRecord) -> Result<Vec<u8>, StoreError> {
    let envelope = DeviceEnvelopeRef {
        v: DEVICE_SCHEMA_VERSION,
        device: rec,
    };
    serde_json::to_vec(&envelope).map_err(StoreError::Encode)
}

/// The common case read in one pass: a version 1 envelope with a valid body.
#[derive(Deserialize)]
struct DeviceEnvelopeV1 {
    v: u32,
    device: DeviceRecord,
}

/// Decodes the value stored under `key` in `devices`. The record's own name must be
/// the key it is stored under: anything else means the tree was damaged.
pub(super) fn decode_device(key: &[u8], value: &[u8]) -> Result<DeviceRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: format!("devices/{}", String::from_utf8_lossy(key)),
        reason,
    };
    // Every lookup and every listed device comes through here: parse straight into
    // the record, and take the two-step path below (whose errors say what is wrong)
    // only for anything that is not a well-formed version 1 record.
    let rec = match serde_json::from_slice::<DeviceEnvelopeV1>(value) {
        Ok(envelope) if envelope.v == 1 => envelope.device,
        _ => decode_device_in_two_steps(value, &corrupt)?,
    };
    if rec.name.as_bytes() != key {
        return Err(corrupt(format!(
            "record names device {:?}, not its key",
            rec.name
        )));
    }
    Ok(rec)
}

/// Reads the version first, then the body as that version describes it.
fn decode_device_in_two_steps(
    value: &[u8],
    corrupt: &dyn Fn(String) -> StoreError,
) -> Result<DeviceRecord, StoreError> {
    let envelope: DeviceEnvelope =
        serde_json::from_slice(value).map_err(|e| corrupt(format!("bad device envelope: {e}")))?;
    match envelope.v {
        1 => serde_json::from_value(envelope.device)
            .map_err(|e| corrupt(format!("bad version 1 device record: {e}"))),
        v => Err(corrupt(format!(
            "device schema version {v} is not supported (this capf reads version {DEVICE_SCHEMA_VERSION})"
        ))),
    }
}

pub(super) fn event_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(super) fn encode_event(event: &Event) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(event).map_err(StoreError::Encode)
}

/// Decodes an event; its id is the key it is stored under.
pub(super) fn decode_event(key: &[u8], value: &[u8]) -> Result<Event, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: format!("events/{}", hex::encode(key)),
        reason,
    };
    let id = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(format!("event key is {} bytes, not 8", key.len())))?;
    let mut event: Event =
        serde_json::from_slice(value).map_err(|e| corrupt(format!("bad event: {e}")))?;
    event.id = id;
    Ok(event)
}

/// Serial numbers are keyed in lowercase hex, however an operator typed them.
pub(super) fn serial_key(serial: &str) -> String {
    serial.to_ascii_lowercase()
}

pub(super) fn encode_serial(rec: &SerialRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rec).map_err(StoreError::Encode)
}

pub(super) fn decode_serial(key: &[u8], value: &[u8]) -> Result<SerialRecord, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: format!("serials/{}", String::from_utf8_lossy(key)),
        reason: format!("bad serial record: {e}"),
    })
}
