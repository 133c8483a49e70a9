//! Which device holds a key: the `lsc_keys` tree.
//!
//! The protocol carries no proof that a phone holds the private key of the public key
//! it sends, so capf refuses a new key that another device's certificate already
//! certifies (issue #13 point 11). Finding that device by scanning every record would
//! cost each enrollment a pass over the store, so the store keeps an index:
//! SHA-256 of the key's identity ([`crate::ca::key_identity`], the same for every
//! spelling of one key) -> the device name.
//!
//! Entries are only added, in the transaction that gives a device the certificate,
//! never removed: a lookup checks that the named device still holds the key, so a
//! stale entry (the device was re-keyed or removed) answers "nobody".

use super::{Store, StoreError, Txn, TxnResult};
use crate::model::{DeviceRecord, EnrolledCert};
use sha2::{Digest, Sha256};

/// Key in `meta` saying every device written before the index existed is in it.
const INDEXED: &[u8] = b"lsc_keys_indexed";

/// The index key of `spki_der`; `None` for a key capf cannot parse (it was never
/// issued a certificate by capf, so there is nothing to protect).
pub(super) fn index_key(spki_der: &[u8]) -> Option<[u8; 32]> {
    let identity = crate::ca::key_identity(spki_der).ok()?;
    Some(Sha256::digest(identity).into())
}

/// The certificates of `rec` whose keys capf has certified or will be asked to trust:
/// the current LSC and the one sent but not yet confirmed.
pub(super) fn certified_keys(rec: &DeviceRecord) -> impl Iterator<Item = &EnrolledCert> {
    rec.lsc.iter().chain(rec.unconfirmed_lsc.iter())
}

impl Txn<'_> {
    /// Records the keys of `rec`'s certificates as held by `rec`.
    pub(super) fn index_keys(&self, rec: &DeviceRecord) -> TxnResult<()> {
        for cert in certified_keys(rec) {
            let Some(key) = index_key(&cert.public_key) else {
                continue;
            };
            // Read before writing: most commits re-store an unchanged certificate.
            if self.lsc_keys.get(key)?.as_deref() != Some(rec.name.as_bytes()) {
                self.lsc_keys.insert(&key[..], rec.name.as_bytes())?;
            }
        }
        Ok(())
    }
}

impl Store {
    /// The device whose LSC (current, or sent and unconfirmed) holds the key
    /// `spki_der`, if any.
    pub fn device_holding_key(&self, spki_der: &[u8]) -> Result<Option<String>, StoreError> {
        let Some(key) = index_key(spki_der) else {
            return Ok(None);
        };
        let Some(name) = self.lsc_keys.get(key)? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        let holds = self.get_device(&name)?.is_some_and(|rec| {
            certified_keys(&rec).any(|cert| index_key(&cert.public_key) == Some(key))
        });
        Ok(holds.then_some(name))
    }

    /// Adds every device to the index once, for a store written before it existed.
    pub(super) fn index_existing_keys(&self) -> Result<(), StoreError> {
        if self.meta.get(INDEXED)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        // A record that no longer decodes is passed over: it holds no certificate capf
        // can use, and failing here would keep every command (`device remove` too)
        // from opening the store.
        for rec in self.devices().flatten() {
            for cert in certified_keys(&rec) {
                if let Some(key) = index_key(&cert.public_key) {
                    batch.insert(&key[..], rec.name.as_bytes());
                }
            }
        }
        self.lsc_keys.apply_batch(batch)?;
        self.meta.insert(INDEXED, &[1u8][..])?;
        Ok(())
    }
}
