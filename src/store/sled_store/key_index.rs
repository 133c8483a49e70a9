//! The `lsc_keys` tree of the sled store (see `store/key_index.rs` for why the index
//! exists and what a lookup checks).

use super::{SledStore, StoreError, Txn, TxnResult};
use crate::model::DeviceRecord;
use crate::store::codec::decode_device;
use crate::store::key_index::{certified_keys, index_key};

/// Key in `meta` saying every device written before the index existed is in it.
const INDEXED: &[u8] = b"lsc_keys_indexed";

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

impl SledStore {
    pub(super) fn indexed_key_holder(&self, key: &[u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(self
            .lsc_keys
            .get(key)?
            .map(|name| String::from_utf8_lossy(&name).into_owned()))
    }

    pub(super) fn lsc_keys(&self) -> Result<Vec<([u8; 32], String)>, StoreError> {
        self.lsc_keys
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let key = <[u8; 32]>::try_from(k.as_ref()).map_err(|_| StoreError::Corrupt {
                    key: format!("lsc_keys/{}", hex::encode(&k)),
                    reason: format!("index key is {} bytes, not 32", k.len()),
                })?;
                Ok((key, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
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
        for kv in self.devices.iter() {
            let (k, v) = kv?;
            let Ok(rec) = decode_device(&k, &v) else {
                continue;
            };
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
