//! What a session records: the audit event of each step, in the store's vocabulary, and
//! the commit that carries it with the device change and serial index entries.

use super::Session;
use crate::model::{
    Commit, DeviceChange, EnrolledCert, Event, Revocation, RevocationReason, SerialRecord,
    SerialState, UnixTime,
};

impl Session {
    /// An entry of the serial index. `issued` is the certificate's own notBefore, so
    /// every state change of a serial keeps the same issue time.
    pub(super) fn serial_entry(
        &self,
        cert: &EnrolledCert,
        state: SerialState,
    ) -> (String, SerialRecord) {
        let record = SerialRecord {
            device: self.device_name(),
            state,
            issued: cert.not_before,
            revoked: None,
        };
        (cert.serial.clone(), record)
    }

    /// The entry of an LSC the phone no longer holds (replaced or deleted): superseded,
    /// and revoked, so it is on the CRL from now on.
    pub(super) fn revoked_entry(
        &self,
        cert: &EnrolledCert,
        reason: RevocationReason,
        now: UnixTime,
    ) -> (String, SerialRecord) {
        let (serial, mut record) = self.serial_entry(cert, SerialState::Superseded);
        record.revoked = Some(Revocation { time: now, reason });
        (serial, record)
    }

    /// A previously issued, never confirmed LSC is replaced by the new one.
    pub(super) fn superseded_unconfirmed(&self, now: UnixTime) -> Option<(String, SerialRecord)> {
        let old = self.device.as_ref()?.unconfirmed_lsc.as_ref()?;
        Some(self.revoked_entry(old, RevocationReason::Superseded, now))
    }

    pub(super) fn event(&self, action: &str, result: &str, now: UnixTime) -> Event {
        let mut details = serde_json::Map::new();
        details.insert("session".into(), self.id.into());
        if let Some(v) = self.summary.version {
            details.insert("version".into(), v.into());
        }
        if let Some(a) = self.summary.auth {
            details.insert("auth".into(), a.to_string().into());
        }
        if let Some(o) = self.summary.operation {
            details.insert("operation".into(), o.to_string().into());
        }
        if let Some(k) = self.summary.auth_certificate {
            details.insert("authenticated_by".into(), k.to_string().into());
        }
        if !self.tls.version.is_empty() {
            details.insert("tls".into(), self.tls.version.clone().into());
            details.insert("cipher".into(), self.tls.cipher.clone().into());
        }
        if self.tls.legacy {
            details.insert("legacy_tls".into(), true.into());
        }
        Event {
            id: 0,
            time: now,
            actor: format!("phone:{}", self.peer),
            device: self.summary.device.clone(),
            action: action.into(),
            result: result.into(),
            details,
        }
    }

    pub(super) fn commit(&self, change: Option<DeviceChange>, event: Event) -> Commit {
        Commit {
            device: self.device.as_ref().map(|d| d.name.clone()),
            change,
            event,
            serials: Vec::new(),
            durable: false,
        }
    }
}
