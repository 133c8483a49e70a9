//! The issued-serial index and revocation: every certificate capf signed is accounted
//! for in the `serials` tree, and a revoked one carries its time and reason there, which
//! is what the CRL lists.

use super::codec::{decode_serial, encode_device, serial_key};
use super::{abort, Store, StoreError, Txn, TxnResult};
use crate::model::{
    DeviceRecord, Event, Revocation, RevocationReason, SerialRecord, SerialState, UnixTime,
};

impl Txn<'_> {
    /// Marks `serial` revoked (creating its index entry if it has none), keeping the
    /// first revocation if it already has one.
    pub(super) fn revoke_serial(
        &self,
        serial: &str,
        device: &str,
        issued: UnixTime,
        now: UnixTime,
        reason: RevocationReason,
    ) -> TxnResult<()> {
        let key = serial_key(serial);
        let mut rec = match self.serials.get(key.as_bytes())? {
            Some(v) => decode_serial(key.as_bytes(), &v).map_err(abort)?,
            None => SerialRecord {
                device: device.to_owned(),
                state: SerialState::Superseded,
                issued,
                revoked: None,
            },
        };
        rec.state = SerialState::Superseded;
        rec.revoked.get_or_insert(Revocation { time: now, reason });
        self.put_serials(&[(serial.to_owned(), rec)])
    }
}

impl Store {
    pub fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        let key = serial_key(serial);
        match self.serials.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => decode_serial(key.as_bytes(), &v).map(Some),
        }
    }

    /// The whole serial index, in key order.
    pub fn serials(&self) -> Result<Vec<(String, SerialRecord)>, StoreError> {
        self.serials
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let rec = decode_serial(&k, &v)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), rec))
            })
            .collect()
    }

    /// Revokes the LSCs `name` holds (installed and unconfirmed), in one transaction
    /// with the event `f` makes of the device as it was: the device no longer holds
    /// them (so they neither authenticate nor receive configuration), its
    /// `revoked_serials` keep them from ever coming back, and the serial index puts
    /// them on the CRL. Returns the revoked serials; `None` if there is no such device.
    pub fn revoke_device(
        &self,
        name: &str,
        reason: RevocationReason,
        now: UnixTime,
        f: impl Fn(&DeviceRecord, &[String]) -> Event,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.transact(|t| {
            let Some(mut rec) = t.device(name)? else {
                return Ok(None);
            };
            let held: Vec<(String, UnixTime)> = [rec.lsc.take(), rec.unconfirmed_lsc.take()]
                .into_iter()
                .flatten()
                .map(|c| (c.serial, c.not_before))
                .collect();
            let serials: Vec<String> = held.iter().map(|(s, _)| s.clone()).collect();
            for (serial, issued) in &held {
                t.revoke_serial(serial, name, *issued, now, reason)?;
                rec.note_revoked(serial);
            }
            let event = f(&rec, &serials);
            let encoded = encode_device(&rec).map_err(abort)?;
            t.put_device(&rec, &encoded)?;
            t.append_event(&event)?;
            Ok(Some(serials))
        })
    }

    /// Every revoked serial with its revocation, in serial order: the CRL's content.
    pub fn revocations(&self) -> Result<Vec<(String, Revocation)>, StoreError> {
        let mut revoked = Vec::new();
        for (serial, rec) in self.serials()? {
            if let Some(r) = rec.revoked {
                revoked.push((serial, r));
            }
        }
        Ok(revoked)
    }
}
