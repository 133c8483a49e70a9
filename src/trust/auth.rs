//! Certificate-mode authentication of one AUTH_RESPONSE, start to finish (§7.1).

use super::anchors::TrustAnchors;
use super::binding::{bound_to_device, sudi_bound_to_device};
use super::chain::{verify_chain, ChainInfo, ChainPolicy};
use super::proof::{verify_possession, verify_sudi, verify_sudi_proof};
use super::TrustError;
use crate::model::{CertKind, UnixTime};
use crate::protocol::AuthResponse;

/// Runs §7.1 for a device configured for `kind` (LSC or MIC authentication): requires
/// DEVICE_NAME, CERTIFICATE, SIGNED_DATA and SHA2_SIGNED_DATA; validates the chain to
/// the LSC issuers or to the MIC anchors; checks the binding to the device name; verifies
/// both proofs; and, when SUDI_DATA is present, the SUDI proof for `session_id`, its
/// chain to a SUDI CA and its binding to the device.
///
/// One exception, for interoperability (capf-protocol.md §4.6): the phone-emulating
/// client sends its own authentication certificate as the SUDI. When SUDI is not
/// required, a SUDI byte-identical to the certificate just verified only has to carry a
/// valid proof (it proves nothing more, and nothing less). With `sudi_required` it is
/// refused: only a real SUDI satisfies that policy.
///
/// The certificate type in the CERTIFICATE wrapper is not compared with `kind`: whether
/// phones mark MICs with type 2 is unknown (capf-protocol.md §13), and the anchor set
/// chosen by `kind` already decides what the certificate may be. What remains for the
/// session for an LSC is to check that it is the certificate capf issued to or recorded
/// for this device.
pub fn verify_certificate_auth(
    response: &AuthResponse,
    kind: CertKind,
    session_id: u32,
    anchors: &TrustAnchors,
    now: UnixTime,
    policy: &ChainPolicy,
    sudi_required: bool,
) -> Result<ChainInfo, TrustError> {
    let device_name = response
        .device_name
        .as_deref()
        .ok_or(TrustError::Missing("DEVICE_NAME"))?;
    let certificate = response
        .certificate
        .as_ref()
        .ok_or(TrustError::Missing("CERTIFICATE"))?;
    let signed_data = response
        .signed_data
        .as_deref()
        .ok_or(TrustError::Missing("SIGNED_DATA"))?;
    let sha2 = response
        .sha2_signed_data
        .as_ref()
        .ok_or(TrustError::Missing("SHA2_SIGNED_DATA"))?;

    let trusted = match kind {
        CertKind::Lsc => anchors.lsc_issuers(),
        CertKind::Mic => anchors.mic_anchors(),
    };
    let chain = verify_chain(&certificate.der, trusted, now, policy)?;
    if !bound_to_device(&certificate.der, device_name, kind) {
        return Err(TrustError::NotBound {
            subject: chain.path.first().cloned().unwrap_or_default(),
            device: device_name.to_owned(),
        });
    }
    verify_possession(device_name, &certificate.der, signed_data, sha2)?;
    if let Some(sudi) = &response.sudi {
        if !sudi_required && sudi.certificate == certificate.der {
            verify_sudi_proof(session_id, sudi)?;
        } else {
            verify_sudi(session_id, sudi, anchors, now, policy)?;
            let mic = (kind == CertKind::Mic).then_some(certificate.der.as_slice());
            if !sudi_bound_to_device(&sudi.certificate, device_name, mic) {
                return Err(TrustError::NotBound {
                    subject: "the SUDI certificate".into(),
                    device: device_name.to_owned(),
                });
            }
        }
    }
    Ok(chain)
}
