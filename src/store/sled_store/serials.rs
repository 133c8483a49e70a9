//! The issued-serial index of the sled store: every certificate capf signed is
//! accounted for in the `serials` tree, and a revoked one carries its time and reason
//! there, which is what the CRL lists.

use super::{SledStore, StoreError};
use crate::model::SerialRecord;
use crate::store::codec::{decode_serial, serial_key};

impl SledStore {
    pub(super) fn serial(&self, serial: &str) -> Result<Option<SerialRecord>, StoreError> {
        let key = serial_key(serial);
        match self.serials.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => decode_serial(key.as_bytes(), &v).map(Some),
        }
    }

    pub(super) fn serials(&self) -> Result<Vec<(String, SerialRecord)>, StoreError> {
        self.serials
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let rec = decode_serial(&k, &v)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), rec))
            })
            .collect()
    }
}
