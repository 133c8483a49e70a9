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

impl DeviceChange {
    /// Applies the change to `rec` (called by the store inside its transaction).
    pub fn apply(&self, rec: &mut DeviceRecord) {
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
