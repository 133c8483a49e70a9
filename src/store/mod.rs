//! The sled store: the only owner of persistent state.
//!
//! Trees (design.md "Store model"):
//! * `devices`: device name -> versioned `DeviceRecord`.
//! * `events`:  big-endian u64 id (monotonic) -> `Event`, append-only audit trail.
//! * `serials`: issued serial (lowercase hex) -> `SerialRecord`.
//!
//! Every state change commits together with its audit event (and serial index
//! entries) in one sled transaction, so a crash can never leave one without the other.
//! (API skeleton: bodies marked `todo!()` are filled in by the store work.)

pub mod model;

pub use model::*;

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process (usually a running `capf serve`) holds the database lock.
    #[error("the store at {0} is in use by another process (is `capf serve` running?)")]
    Locked(PathBuf),
    #[error("device {0} not found")]
    NotFound(String),
    #[error("device {0} already exists")]
    Exists(String),
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
}

/// Handle to the database. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        todo!("{dir:?}")
    }

    pub fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        todo!("{name}{:?}", self.db.was_recovered())
    }
}

// Temporary signatures on main; the store work replaces this file.
#[allow(unused_variables)]
impl Store {
    pub fn update_device<F: Fn(&mut DeviceRecord)>(
        &self,
        name: &str,
        event: Event,
        serials: &[(String, SerialRecord)],
        f: F,
    ) -> Result<DeviceRecord, StoreError> {
        todo!()
    }
    pub fn append_event(&self, event: Event) -> Result<u64, StoreError> {
        todo!()
    }
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        todo!()
    }
}
#[allow(unused_variables)]
impl Store {
    pub fn flush(&self) -> Result<(), StoreError> {
        todo!()
    }
    pub fn add_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        todo!()
    }
    pub fn put_device(&self, rec: &DeviceRecord, event: Event) -> Result<(), StoreError> {
        todo!()
    }
    pub fn remove_device(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        todo!()
    }
    pub fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        todo!()
    }
}
