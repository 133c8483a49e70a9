//! Changes to a device record, described as data, and the rules that apply them.
//!
//! The session decides *what* happens to a phone and says so as a [`Commit`]; the store
//! applies it with [`DeviceChange::apply`] inside its transaction, to the record as it
//! is *then*. So an operator editing the device during a session loses nothing, and a
//! failure count cannot be lost to a race between two sessions.

use super::{
    CertKind, DeviceRecord, EnrolledCert, Event, Operation, OperationStatus, SerialRecord, UnixTime,
};

/// One state change with its audit event, committed in one store transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The device to change; `None` for an event about an unknown device.
    pub device: Option<String>,
    /// The change, applied to the current record inside the transaction.
    pub change: Option<DeviceChange>,
    pub event: Event,
    /// Serial index entries to write in the same transaction.
    pub serials: Vec<(String, SerialRecord)>,
    /// The phone is about to be told its certificate is installed or deleted: the
    /// driver must make this commit durable (flush) before sending.
    pub durable: bool,
}

/// A change to a device record, described as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChange {
    /// Only the attempt time (an attempt that was not evaluated, e.g. while locked).
    Attempted { now: UnixTime },
    /// Authentication failed: count it, lock after `max_failures`.
    AuthFailed {
        now: UnixTime,
        status: Option<OperationStatus>,
        max_failures: u32,
        lockout_secs: i64,
    },
    /// Authenticated; record the outcome of the operation (the operation stays
    /// scheduled unless it succeeded), and the MIC the phone authenticated with.
    Authenticated {
        now: UnixTime,
        status: Option<OperationStatus>,
        mic: Option<EnrolledCert>,
    },
    /// An LSC was issued and is about to be sent; not installed until confirmed.
    LscIssued { now: UnixTime, cert: EnrolledCert },
    /// The phone confirmed it stored the LSC.
    LscInstalled { now: UnixTime, cert: EnrolledCert },
    /// The phone confirmed it holds no LSC any more.
    LscDeleted { now: UnixTime },
    /// The phone returned a certificate on a troubleshoot request that capf trusts as
    /// this device's `kind`: it becomes the device's LSC or MIC.
    CertificateFetched {
        now: UnixTime,
        kind: CertKind,
        cert: EnrolledCert,
    },
    /// The phone returned a certificate capf does not trust: it is kept for the
    /// operator to see and changes nothing capf trusts or encrypts to.
    UntrustedCertificateFetched { now: UnixTime, cert: EnrolledCert },
}

/// The most revoked serials a device record keeps (the newest): enough for decades of
/// renewals; the serial index keeps them all.
pub const MAX_REVOKED_SERIALS: usize = 32;

/// The serials of the LSCs `rec` holds (installed and unconfirmed).
fn held_serials(rec: &DeviceRecord) -> Vec<String> {
    [rec.lsc.as_ref(), rec.unconfirmed_lsc.as_ref()]
        .into_iter()
        .flatten()
        .map(|c| c.serial.clone())
        .collect()
}

impl DeviceRecord {
    /// Records `serial` as revoked for this device (see `revoked_serials`).
    pub fn note_revoked(&mut self, serial: &str) {
        if !self.revoked_serials.iter().any(|s| s == serial) {
            self.revoked_serials.push(serial.to_owned());
        }
        let excess = self
            .revoked_serials
            .len()
            .saturating_sub(MAX_REVOKED_SERIALS);
        self.revoked_serials.drain(..excess);
    }
}

impl DeviceChange {
    /// Applies the change to `rec` (called by the store inside its transaction). An LSC
    /// the record held before and no longer holds was replaced or deleted: its serial
    /// is revoked (the session's commit puts it on the CRL in the same transaction).
    pub fn apply(&self, rec: &mut DeviceRecord) {
        let before = held_serials(rec);
        self.apply_to_record(rec);
        let after = held_serials(rec);
        for serial in before.iter().filter(|s| !after.contains(s)) {
            rec.note_revoked(serial);
        }
    }

    fn apply_to_record(&self, rec: &mut DeviceRecord) {
        match self {
            DeviceChange::Attempted { now } => rec.last_attempt = Some(*now),
            DeviceChange::AuthFailed {
                now,
                status,
                max_failures,
                lockout_secs,
            } => {
                rec.last_attempt = Some(*now);
                rec.failed_auth = rec.failed_auth.saturating_add(1);
                if rec.failed_auth >= *max_failures {
                    rec.locked_until = Some(now.saturating_add(*lockout_secs));
                    rec.failed_auth = 0;
                }
                if let Some(s) = status {
                    rec.status = s.clone();
                }
            }
            DeviceChange::Authenticated { now, status, mic } => {
                authenticated(rec, *now);
                if let Some(s) = status {
                    rec.status = s.clone();
                }
                if let Some(mic) = mic {
                    rec.mic = Some(mic.clone());
                }
            }
            DeviceChange::LscIssued { now, cert } => {
                authenticated(rec, *now);
                rec.unconfirmed_lsc = Some(cert.clone());
            }
            DeviceChange::LscInstalled { now, cert } => {
                authenticated(rec, *now);
                rec.lsc = Some(cert.clone());
                if rec
                    .unconfirmed_lsc
                    .as_ref()
                    .is_some_and(|u| u.serial == cert.serial)
                {
                    rec.unconfirmed_lsc = None;
                }
                rec.operation = Operation::None;
                rec.status = OperationStatus::UpgradeSuccess;
            }
            DeviceChange::LscDeleted { now } => {
                authenticated(rec, *now);
                rec.lsc = None;
                rec.operation = Operation::None;
                rec.status = OperationStatus::DeleteSuccess;
            }
            DeviceChange::CertificateFetched { now, kind, cert } => {
                authenticated(rec, *now);
                match kind {
                    // A revoked LSC never becomes the device's again (a lost phone's
                    // answer to a troubleshoot fetch): it is only shown.
                    CertKind::Lsc if rec.revoked_serials.contains(&cert.serial) => {
                        rec.fetched_untrusted = Some(cert.clone())
                    }
                    CertKind::Lsc => rec.lsc = Some(cert.clone()),
                    CertKind::Mic => rec.mic = Some(cert.clone()),
                }
                rec.operation = Operation::None;
                rec.status = OperationStatus::TroubleshootSuccess;
            }
            DeviceChange::UntrustedCertificateFetched { now, cert } => {
                authenticated(rec, *now);
                rec.fetched_untrusted = Some(cert.clone());
                rec.operation = Operation::None;
                rec.status = OperationStatus::TroubleshootSuccess;
            }
        }
    }
}

/// A successful authentication resets the failure count (R10).
fn authenticated(rec: &mut DeviceRecord, now: UnixTime) {
    rec.last_attempt = Some(now);
    rec.failed_auth = 0;
}

#[cfg(test)]
mod revocation_tests {
    use super::*;
    use crate::model::{CertKind, KeySpec};

    fn lsc(serial: &str) -> EnrolledCert {
        EnrolledCert {
            der: serial.as_bytes().to_vec(),
            public_key: vec![],
            md5: String::new(),
            sha256: String::new(),
            serial: serial.into(),
            not_before: 0,
            not_after: 1,
            key: KeySpec::Rsa { bits: 2048 },
            issuer: String::new(),
            subject: String::new(),
        }
    }

    #[test]
    fn a_replaced_lsc_is_revoked_for_good_and_never_adopted_again() {
        let mut rec = DeviceRecord::new("SEP000000000001");
        rec.lsc = Some(lsc("0a"));
        DeviceChange::LscInstalled {
            now: 5,
            cert: lsc("0b"),
        }
        .apply(&mut rec);
        assert_eq!(rec.lsc.as_ref().map(|c| c.serial.as_str()), Some("0b"));
        assert_eq!(rec.revoked_serials, ["0a"]);

        // A troubleshoot fetch answered with the replaced LSC: shown, not trusted.
        DeviceChange::CertificateFetched {
            now: 6,
            kind: CertKind::Lsc,
            cert: lsc("0a"),
        }
        .apply(&mut rec);
        assert_eq!(rec.lsc.as_ref().map(|c| c.serial.as_str()), Some("0b"));
        assert_eq!(
            rec.fetched_untrusted.as_ref().map(|c| c.serial.as_str()),
            Some("0a")
        );

        // The record keeps the newest MAX_REVOKED_SERIALS.
        for i in 0..MAX_REVOKED_SERIALS + 5 {
            rec.note_revoked(&format!("{i:x}"));
        }
        assert_eq!(rec.revoked_serials.len(), MAX_REVOKED_SERIALS);
        assert_eq!(
            rec.revoked_serials.last().map(String::as_str),
            Some(format!("{:x}", MAX_REVOKED_SERIALS + 4).as_str())
        );
    }
}
