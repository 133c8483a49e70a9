//! Proof that the phone holds the key of the certificate it presents (§7.1, §7.4).

use super::anchors::{parse_certificate, TrustAnchors};
use super::chain::{verify_chain, ChainPolicy};
use super::signature::{HashAlg, PublicKey};
use super::TrustError;
use crate::model::UnixTime;
use crate::protocol::{HashId, Sha2SignedData, SudiData};

/// Verifies SIGNED_DATA and SHA2_SIGNED_DATA over `A = device name ‖ 0x00 ‖ cert DER`
/// with the key of `cert_der`: SHA-1 for the first, SHA-512 (hash id 3, the only one
/// clients send and the open-source server accepts) for the second. Both must verify;
/// accepting the SHA-1 proof alone would let a SHA-1 collision stand in for the key.
///
/// `A` carries no nonce, so this proves possession, not freshness (§7.2).
pub fn verify_possession(
    device_name: &str,
    cert_der: &[u8],
    signed_data: &[u8],
    sha2: &Sha2SignedData,
) -> Result<(), TrustError> {
    if device_name.is_empty() || device_name.contains('\0') {
        return Err(TrustError::BadDeviceName);
    }
    require_sha512(sha2.hash)?;
    let cert = parse_certificate(cert_der)?;
    let key = PublicKey::from_spki(cert.public_key().raw)?;
    let input: Vec<u8> = [device_name.as_bytes(), &[0], cert_der].concat();
    if !key.verify_proof(HashAlg::Sha1, &input, signed_data) {
        return Err(TrustError::BadSignature("SIGNED_DATA (SHA-1)"));
    }
    if !key.verify_proof(HashAlg::Sha512, &input, &sha2.signature) {
        return Err(TrustError::BadSignature("SHA2_SIGNED_DATA (SHA-512)"));
    }
    Ok(())
}

/// Verifies SUDI_DATA for the session `session_id` (§7.4): both signatures over
/// `U = session id as u32 little-endian ‖ SUDI DER`, and the SUDI certificate's chain
/// to the union of the LSC issuers and the MIC anchors, because the phone-emulating
/// client sends its LSC as its SUDI. Only RSA SUDI keys are defined by any client; an
/// EC SUDI key is refused as unverifiable rather than skipped as the open-source server
/// does, since a proof capf cannot check must not pass for one it did.
pub fn verify_sudi(
    session_id: u32,
    sudi: &SudiData,
    anchors: &TrustAnchors,
    now: UnixTime,
    policy: &ChainPolicy,
) -> Result<(), TrustError> {
    require_sha512(sudi.sha2_hash)?;
    let cert = parse_certificate(&sudi.certificate)?;
    let key = PublicKey::from_spki(cert.public_key().raw)?;
    if !key.is_rsa() {
        return Err(TrustError::Unverifiable("the SUDI key is not RSA"));
    }
    let input: Vec<u8> = [&session_id.to_le_bytes()[..], &sudi.certificate].concat();
    if !key.verify_proof(HashAlg::Sha1, &input, &sudi.sha1_signature) {
        return Err(TrustError::BadSignature("SUDI signature (SHA-1)"));
    }
    if !key.verify_proof(HashAlg::Sha512, &input, &sudi.sha2_signature) {
        return Err(TrustError::BadSignature("SUDI signature (SHA-512)"));
    }
    let trusted = anchors.lsc_issuers().union(anchors.mic_anchors());
    verify_chain(&sudi.certificate, &trusted, now, policy)?;
    Ok(())
}

fn require_sha512(hash: HashId) -> Result<(), TrustError> {
    match hash {
        HashId::Sha512 => Ok(()),
        other => Err(TrustError::UnsupportedHash(other)),
    }
}
