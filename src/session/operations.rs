//! The certificate operations once a phone has authenticated (capf-protocol.md §8):
//! install or upgrade (key request, issue, store), troubleshoot (fetch) and delete.

use super::{Session, State, Step, Wait};
use crate::model::{
    CertKind, DeviceChange, EcCurve, EnrolledCert, KeyOrder, KeySpec, Operation, OperationStatus,
    RevocationReason, SerialState, UnixTime,
};
use crate::protocol::{
    CertificateType, CurveId, KeyGenerateRequest, KeyType, Reason, ServerMessage,
    WrappedCertificate,
};

impl Session {
    /// The result of `Next::IssueLsc`: the certificate, or why the key was refused.
    pub fn on_lsc_issued(&mut self, issued: Result<EnrolledCert, String>, now: UnixTime) -> Step {
        if !matches!(self.state, State::Issuing) {
            return self.internal_error("certificate issued in the wrong state", now);
        }
        let cert = match issued {
            Ok(cert) => cert,
            Err(why) => return self.operation_failed(&why, now),
        };
        let mut serials = vec![self.serial_entry(&cert, SerialState::Unconfirmed)];
        serials.extend(self.superseded_unconfirmed(now));
        let mut event = self.event("lsc-issued", "LSC Issued, Awaiting Confirmation", now);
        event
            .details
            .insert("serial".into(), cert.serial.clone().into());
        event
            .details
            .insert("key".into(), cert.key.to_string().into());
        let mut commit = self.commit(
            Some(DeviceChange::LscIssued {
                now,
                cert: cert.clone(),
            }),
            event,
        );
        commit.serials = serials;
        let msg = ServerMessage::StoreCertificateRequest(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: cert.der.clone(),
        });
        self.state = State::WaitStore {
            cert: Box::new(cert),
        };
        let mut step = self.send(msg, Wait::Message);
        step.commit = Some(Box::new(commit));
        step
    }

    pub(super) fn request_key(&mut self, now: UnixTime) -> Step {
        let Some(rec) = &self.device else {
            return self.internal_error("key request without a device", now);
        };
        let key = match (rec.key_order, self.version >= 3) {
            (KeyOrder::Rsa { bits }, _) => KeySpec::Rsa { bits },
            (KeyOrder::Ec { curve }, true) => KeySpec::Ec { curve },
            (KeyOrder::EcPreferred { curve, .. }, true) => KeySpec::Ec { curve },
            (KeyOrder::EcPreferred { bits, .. }, false) => KeySpec::Rsa { bits },
            (KeyOrder::Ec { .. }, false) => {
                // §8.2: never offer EC to a client below version 3.
                return self.end_with_failure(
                    "Client Cannot Generate EC Keys",
                    Reason::InvalidElement,
                    now,
                );
            }
        };
        let request = match key {
            // §10 item 2: a legacy client gets KEY_SIZE alone, as CUCM sent it.
            KeySpec::Rsa { bits } if self.version < 3 => KeyGenerateRequest {
                key_size: Some(bits),
                key_type: None,
                curve: None,
            },
            KeySpec::Rsa { bits } => KeyGenerateRequest {
                key_size: Some(bits),
                key_type: Some(KeyType::Rsa),
                curve: None,
            },
            KeySpec::Ec { curve } => KeyGenerateRequest {
                key_size: None,
                key_type: Some(KeyType::Ec),
                curve: Some(curve_id(curve)),
            },
        };
        self.state = State::WaitKey { key };
        self.send(
            ServerMessage::KeyGenerateRequest(request),
            Wait::KeyGeneration,
        )
    }

    pub(super) fn lsc_installed(&mut self, cert: EnrolledCert, now: UnixTime) -> Step {
        let mut serials = vec![self.serial_entry(&cert, SerialState::Installed)];
        let previous = self.device.as_ref().and_then(|d| d.lsc.as_ref());
        if let Some(old) = previous.filter(|old| old.serial != cert.serial) {
            serials.push(self.revoked_entry(old, RevocationReason::Superseded, now));
        }
        self.summary.result = OperationStatus::UpgradeSuccess.to_string();
        let mut event = self.event("session", "Upgrade Success", now);
        event
            .details
            .insert("serial".into(), cert.serial.clone().into());
        if let Some(old) = previous {
            event
                .details
                .insert("superseded".into(), old.serial.clone().into());
        }
        let mut commit = self.commit(Some(DeviceChange::LscInstalled { now, cert }), event);
        commit.serials = serials;
        commit.durable = true;
        self.end(Reason::UpdateCertificate, Some(commit))
    }

    pub(super) fn on_fetch_response(
        &mut self,
        reason: Option<Reason>,
        certificate: Option<WrappedCertificate>,
        now: UnixTime,
    ) -> Step {
        let wrapped = match (reason, certificate) {
            (Some(Reason::UpdateCertificate), Some(c)) => c,
            (Some(Reason::UpdateCertificate), None) => {
                return self.end_with_failure(
                    "No Certificate Returned",
                    Reason::InvalidElement,
                    now,
                )
            }
            _ => return self.end_with_failure("No Certificate On Phone", Reason::NoAction, now),
        };
        let cert = match crate::ca::cert_info(&wrapped.der) {
            Ok(c) => c,
            Err(_) => {
                return self.end_with_failure("Invalid Certificate", Reason::InvalidElement, now)
            }
        };
        let declared = match wrapped.cert_type {
            CertificateType::Mic => CertKind::Mic,
            _ => CertKind::Lsc,
        };
        // What a phone returns is only its word: capf adopts it as the device's LSC or
        // MIC (and so authenticates with it and encrypts to its key) only if it chains
        // to capf or a manufacturing anchor and names this device.
        let trusted = [declared, other_kind(declared)]
            .into_iter()
            .find(|kind| self.trusts_fetched(&wrapped.der, *kind, now));
        self.summary.result = OperationStatus::TroubleshootSuccess.to_string();
        let mut event = self.event("session", "Troubleshoot Success", now);
        event
            .details
            .insert("fetched".into(), declared.to_string().into());
        event
            .details
            .insert("serial".into(), cert.serial.clone().into());
        event.details.insert("md5".into(), cert.md5.clone().into());
        event
            .details
            .insert("trusted".into(), trusted.is_some().into());
        let change = match trusted {
            Some(kind) => DeviceChange::CertificateFetched { now, kind, cert },
            None => {
                event
                    .details
                    .insert("subject".into(), cert.subject.clone().into());
                event
                    .details
                    .insert("issuer".into(), cert.issuer.clone().into());
                DeviceChange::UntrustedCertificateFetched { now, cert }
            }
        };
        let commit = self.commit(Some(change), event);
        self.end(Reason::NoAction, Some(commit))
    }

    pub(super) fn on_delete_response(&mut self, reason: Option<Reason>, now: UnixTime) -> Step {
        // REASON 1 = deleted; 7 = the phone holds no LSC. Either way the phone now has
        // none, which is what the operator asked for (docs/protocol-notes.md).
        match reason {
            Some(Reason::UpdateCertificate) | Some(Reason::InvalidElement) => {
                let mut serials = Vec::new();
                let old = self.device.as_ref().and_then(|d| d.lsc.clone());
                if let Some(old) = &old {
                    serials.push(self.revoked_entry(
                        old,
                        RevocationReason::CessationOfOperation,
                        now,
                    ));
                }
                self.summary.result = OperationStatus::DeleteSuccess.to_string();
                let mut event = self.event("session", "Delete Success", now);
                if reason == Some(Reason::InvalidElement) {
                    event.details.insert("phone_had_lsc".into(), false.into());
                }
                if let Some(old) = old {
                    event.details.insert("serial".into(), old.serial.into());
                }
                let mut commit = self.commit(Some(DeviceChange::LscDeleted { now }), event);
                commit.serials = serials;
                commit.durable = true;
                self.end(Reason::UpdateCertificate, Some(commit))
            }
            _ => self.end_with_failure(
                "Phone Did Not Delete The Certificate",
                Reason::UpdateCertificate,
                now,
            ),
        }
    }
}

/// The status text for a failed attempt at `operation`.
pub(super) fn failure_status(operation: Operation, reason: &str) -> Option<OperationStatus> {
    let reason = reason.to_string();
    match operation {
        Operation::None => None,
        Operation::Install => Some(OperationStatus::UpgradeFailed(reason)),
        Operation::Delete => Some(OperationStatus::DeleteFailed(reason)),
        Operation::Troubleshoot => Some(OperationStatus::TroubleshootFailed(reason)),
    }
}

pub(super) fn curve_id(curve: EcCurve) -> CurveId {
    match curve {
        EcCurve::P256 => CurveId::Secp256r1,
        EcCurve::P384 => CurveId::Secp384r1,
        EcCurve::P521 => CurveId::Secp521r1,
    }
}

fn other_kind(kind: CertKind) -> CertKind {
    match kind {
        CertKind::Lsc => CertKind::Mic,
        CertKind::Mic => CertKind::Lsc,
    }
}
