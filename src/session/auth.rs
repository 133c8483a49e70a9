//! Authentication (capf-protocol.md §7): the credential of the device's mode, checked
//! once the device is known. Null passes; a string is compared in constant time; a
//! certificate must chain to its kind's anchors, prove possession, name the device and,
//! for an LSC, be the one capf issued to it.

use super::{Session, Step};
use crate::model::{AuthMode, CertKind, DeviceChange, DeviceRecord, UnixTime};
use crate::protocol::AuthResponse;
use crate::trust::{self, ChainPolicy, TrustError};
use subtle::ConstantTimeEq;

impl Session {
    /// Checks the credential of the device's mode; credentials for other modes in the
    /// same message are ignored. The error is the status reason, in CUCM's words.
    pub(super) fn authenticate(
        &mut self,
        rec: &DeviceRecord,
        auth: &AuthResponse,
        now: UnixTime,
    ) -> Result<(), String> {
        match rec.auth {
            AuthMode::Null => Ok(()),
            AuthMode::String => {
                let Some(expected) = rec.auth_string.as_deref() else {
                    return Err("No Authentication String Configured".into());
                };
                let given = auth.password.as_deref().unwrap_or_default();
                if string_matches(given, expected) {
                    Ok(())
                } else {
                    Err("Invalid Authentication String".into())
                }
            }
            AuthMode::Lsc => {
                self.authenticate_certificate(rec, auth, [CertKind::Lsc, CertKind::Mic], now)
            }
            AuthMode::Mic => {
                self.authenticate_certificate(rec, auth, [CertKind::Mic, CertKind::Lsc], now)
            }
        }
    }

    /// "By existing certificate": the certificate is tried as each kind in precedence
    /// order. It counts as that kind when it chains to that kind's anchors; then the
    /// possession proofs, the SUDI proof, the binding to the device and (for an LSC)
    /// identity with the LSC capf issued to this device must all hold.
    pub(super) fn authenticate_certificate(
        &mut self,
        rec: &DeviceRecord,
        auth: &AuthResponse,
        order: [CertKind; 2],
        now: UnixTime,
    ) -> Result<(), String> {
        let Some(anchors) = self.policy.trust.clone() else {
            return Err("Certificate Authentication Not Available".into());
        };
        let Some(cert) = &auth.certificate else {
            return Err("Invalid Credentials".into());
        };
        if self.policy.require_sudi && auth.sudi.is_none() {
            return Err("Invalid Credentials: SUDI Required".into());
        }
        let mut failure = String::from("Invalid Credentials");
        for kind in order {
            let policy = ChainPolicy {
                allow_expired: kind == CertKind::Mic && self.policy.allow_expired_mic,
            };
            let set = match kind {
                CertKind::Lsc => anchors.lsc_issuers(),
                CertKind::Mic => anchors.mic_anchors(),
            };
            let label = match kind {
                CertKind::Lsc => "Invalid LSC",
                CertKind::Mic => "Invalid MIC",
            };
            match trust::verify_chain(&cert.der, set, now, &policy) {
                // Not issued under this kind's anchors: try the other kind.
                Err(TrustError::UntrustedIssuer { .. }) => continue,
                Err(e) => {
                    tracing::info!(session = self.id, device = %rec.name, "{label}: {e}");
                    note_failure(&mut failure, label);
                    continue;
                }
                Ok(_) => {}
            }
            if let Err(e) = trust::verify_certificate_auth(
                auth,
                kind,
                self.id,
                &anchors,
                now,
                &policy,
                self.policy.require_sudi,
            ) {
                tracing::info!(session = self.id, device = %rec.name, "{label}: {e}");
                note_failure(&mut failure, label);
                continue;
            }
            match kind {
                CertKind::Lsc => {
                    // It must be the LSC capf issued to (or recorded for) this device:
                    // a valid LSC of another phone chains and signs just as well.
                    let known = [rec.lsc.as_ref(), rec.unconfirmed_lsc.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|c| c.der == cert.der);
                    if !known {
                        tracing::info!(session = self.id, device = %rec.name, "LSC is not the one issued to this device");
                        note_failure(&mut failure, label);
                        continue;
                    }
                }
                CertKind::Mic => match crate::ca::cert_info(&cert.der) {
                    Ok(info) => self.verified_mic = Some(info),
                    Err(_) => {
                        note_failure(&mut failure, label);
                        continue;
                    }
                },
            }
            self.summary.auth_certificate = Some(kind);
            return Ok(());
        }
        Err(failure)
    }

    /// Records the authentication (and a verified MIC) with the step that starts the
    /// operation, so failures reset even if the operation then stalls.
    pub(super) fn with_verified_mic(&mut self, mut step: Step, now: UnixTime) -> Step {
        if step.commit.is_none() && self.summary.auth_certificate.is_some() {
            let mut event = self.event("authenticated", "Authenticated By Certificate", now);
            if let Some(mic) = &self.verified_mic {
                event
                    .details
                    .insert("mic_md5".into(), mic.md5.clone().into());
            }
            let change = DeviceChange::Authenticated {
                now,
                status: None,
                mic: self.verified_mic.take(),
            };
            step.commit = Some(Box::new(self.commit(Some(change), event)));
        }
        step
    }

    /// Whether a certificate the phone returned on a troubleshoot fetch is one capf
    /// trusts as this device's `kind`: it chains to that kind's anchors and names the
    /// device.
    pub(super) fn trusts_fetched(&self, der: &[u8], kind: CertKind, now: UnixTime) -> bool {
        let Some(anchors) = self.policy.trust.as_deref() else {
            return false;
        };
        let (set, policy) = match kind {
            CertKind::Lsc => (anchors.lsc_issuers(), ChainPolicy::default()),
            CertKind::Mic => (
                anchors.mic_anchors(),
                ChainPolicy {
                    allow_expired: self.policy.allow_expired_mic,
                },
            ),
        };
        let name = self.device.as_ref().map_or("", |d| d.name.as_str());
        trust::verify_chain(der, set, now, &policy).is_ok()
            && trust::bound_to_device(der, name, kind)
    }
}

/// Keeps the first specific reason: the kind tried first (the device's precedence) is
/// the one the operator wants to hear about.
pub(super) fn note_failure(failure: &mut String, label: &str) {
    if failure == "Invalid Credentials" {
        *failure = label.to_string();
    }
}

/// Compares an authentication string in constant time. A length difference is not
/// secret (the string's length is visible on the phone's keypad anyway).
pub(super) fn string_matches(given: &[u8], expected: &str) -> bool {
    bool::from(given.ct_eq(expected.as_bytes()))
}
