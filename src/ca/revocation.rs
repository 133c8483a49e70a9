//! The CAPF CA's certificate revocation list (RFC 5280 §5), issue #14 point 4: LSCs
//! replaced by renewal or re-enrollment, deleted from their phone, of removed devices,
//! or revoked by hand (a lost phone), so that 802.1X, SIP-TLS and VPN verifiers that
//! trust the CAPF CA stop trusting them too.

use super::{Ca, CaError};
use crate::model::{Revocation, RevocationReason, UnixTime};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

/// How long a CRL is valid: verifiers fetch a new one by then. capf builds a fresh one
/// on every request, so this only bounds how long a copy kept elsewhere is current.
pub const CRL_VALIDITY_SECS: i64 = 7 * 86_400;

fn reason_code(reason: RevocationReason) -> rcgen::RevocationReason {
    match reason {
        RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
        RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
    }
}

fn time(t: UnixTime) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(t)
        .map_err(|_| CaError::Certificate(format!("time {t} out of range")))
}

impl Ca {
    /// The CAPF certificate's own subjectKeyIdentifier, so the CRL's
    /// authorityKeyIdentifier matches it whichever way it was computed (verifiers
    /// match the two when they look for the CRL's issuer).
    fn key_identifier(&self) -> KeyIdMethod {
        use x509_parser::extensions::ParsedExtension;
        let ski = x509_parser::parse_x509_certificate(&self.cert_der)
            .ok()
            .and_then(|(_, cert)| {
                cert.extensions()
                    .iter()
                    .find_map(|e| match e.parsed_extension() {
                        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                        _ => None,
                    })
            });
        ski.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified)
    }

    /// The CRL listing `revoked` (lowercase hex serials), signed now, DER. Its number is
    /// `now`: it grows with every CRL, as RFC 5280 §5.2.3 asks, without a counter to keep.
    pub fn revocation_list(
        &self,
        revoked: &[(String, Revocation)],
        now: UnixTime,
    ) -> Result<Vec<u8>, CaError> {
        let revoked_certs = revoked
            .iter()
            .map(|(serial, r)| {
                let bytes = hex::decode(serial).map_err(|_| {
                    CaError::Certificate(format!("serial {serial:?} in the index is not hex"))
                })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: time(r.time)?,
                    reason_code: Some(reason_code(r.reason)),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = CertificateRevocationListParams {
            this_update: time(now)?,
            next_update: time(now + CRL_VALIDITY_SECS)?,
            crl_number: SerialNumber::from_slice(&now.max(1).to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.key_identifier(),
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}
