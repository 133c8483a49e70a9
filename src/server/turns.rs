//! One authentication in flight per device.
//!
//! The lockout counts failures in the device record, which the store writes after the
//! attempt. Two sessions for one device evaluated at once would both read the record
//! before either failure is counted, so a burst of concurrent guesses could get more
//! strings evaluated than `max_auth_failures`. Each session therefore takes the device's
//! turn before it reads the record, and gives it back only once the outcome of its
//! authentication is committed: the next session reads a record that counts every
//! earlier attempt, and is refused without evaluation once the device is locked.
//!
//! Sessions for other devices never wait on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// The turns of every device with a session waiting or authenticating.
#[derive(Default)]
pub struct DeviceTurns {
    /// Entries exist only while some session holds or waits for the device's turn.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A device's turn: authentication of that device by other sessions waits until this
/// is dropped.
pub struct DeviceTurn<'a> {
    turns: &'a DeviceTurns,
    device: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl DeviceTurns {
    /// Waits for `device`'s turn.
    pub async fn take(&self, device: &str) -> DeviceTurn<'_> {
        let lock = self.table().entry(device.to_string()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        DeviceTurn {
            turns: self,
            device: device.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    /// Devices with a session waiting or authenticating.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for DeviceTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut table = self.turns.table();
        // The table's handle and ours: nobody else waits, so the entry can go.
        if Arc::strong_count(&self.lock) == 2 {
            table.remove(&self.device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_turn_per_device_and_none_left_behind() {
        let turns = Arc::new(DeviceTurns::default());
        let first = turns.take("SEPA").await;
        let _other_device = turns.take("SEPB").await;
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.take("SEPA").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "SEPA's second session waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(_other_device);
        assert_eq!(turns.len(), 0);
    }
}
