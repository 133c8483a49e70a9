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

/// The SUDI proof alone (§7.4): the SUDI key signed this session's id, little-endian,
/// followed by the SUDI certificate, with SHA-1 and with SHA-512. Says nothing about
/// who issued the certificate.
pub fn verify_sudi_proof(session_id: u32, sudi: &SudiData) -> Result<(), TrustError> {
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
    Ok(())
}

/// A SUDI: its proof for this session, and a certificate that chains to a SUDI CA (the
/// shipped ACT2 and High Assurance SUDI CAs, or one an operator added), never to a MIC
/// root or to capf. Binding it to the device is the caller's part
/// ([`super::binding::sudi_bound_to_device`]).
pub fn verify_sudi(
    session_id: u32,
    sudi: &SudiData,
    anchors: &TrustAnchors,
    now: UnixTime,
    policy: &ChainPolicy,
) -> Result<(), TrustError> {
    verify_sudi_proof(session_id, sudi)?;
    verify_chain(&sudi.certificate, anchors.sudi_anchors(), now, policy)?;
    Ok(())
}

fn require_sha512(hash: HashId) -> Result<(), TrustError> {
    match hash {
        HashId::Sha512 => Ok(()),
        other => Err(TrustError::UnsupportedHash(other)),
    }
}
