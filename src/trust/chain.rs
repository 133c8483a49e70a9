//! Certification path validation from a phone's certificate to a trust anchor.
//!
//! This is RFC 5280 path validation cut down to what capf's anchors need: names are
//! matched by raw DER equality, every signature on the path is verified, validity,
//! basicConstraints, pathLenConstraint and keyUsage are enforced, and critical
//! extensions capf does not understand are refused. There are no policies, name
//! constraints or revocation (no Cisco MIC chain uses the first two, and capf cannot
//! fetch CRLs).

use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    Oid, OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ECDSA_WITH_SHA512, OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_CERTIFICATE_POLICIES,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use super::anchors::{parse_certificate, AnchorCert, AnchorSet};
use super::signature::{HashAlg, PublicKey};
use super::TrustError;
use crate::model::UnixTime;

/// The most certificates above the leaf a path may have (MIC ← Manufacturing CA ← Root
/// is two; four leaves room for an operator's deeper hierarchy).
pub const MAX_CHAIN_DEPTH: usize = 4;

/// What the operator chose to waive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainPolicy {
    /// Accept certificates past their notAfter, on the leaf and on every CA of the path.
    /// Many deployed MICs (and the CAs above them) have expired while the phones remain
    /// in service (capf-protocol.md §7.1 step 3). notBefore is always enforced.
    pub allow_expired: bool,
}

/// The path that was validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    /// Subjects from the leaf to the anchor, RFC 4514 style.
    pub path: Vec<String>,
    /// Subject of the anchor that ended the path.
    pub anchor_subject: String,
    /// Where that anchor came from (a file name or "CAPF certificate").
    pub anchor_source: String,
}

/// Validates `leaf_der` against `anchors` at time `now`.
///
/// Every certificate of `anchors` is trusted, but a path does not stop at the first one
/// it meets: from each issuer found in the set it continues to that issuer's own issuer
/// whenever that is in the set too, and ends at a self-issued certificate or at a member
/// whose issuer is absent (an operator may trust an intermediate alone). So a MIC is
/// checked as MIC ← Cisco Manufacturing CA ← Cisco Root CA 2048, all three signatures
/// verified. When several members carry the issuer's name (a re-keyed CA), each is tried.
///
/// The leaf must not be a CA and, if it has keyUsage, must allow digitalSignature (it
/// signs the CAPF proofs). Every issuer must have basicConstraints CA:TRUE and, if it has
/// keyUsage, keyCertSign; the shipped Cisco CAs all do, so no exception is made for
/// version 1 roots.
pub fn verify_chain(
    leaf_der: &[u8],
    anchors: &AnchorSet,
    now: UnixTime,
    policy: &ChainPolicy,
) -> Result<ChainInfo, TrustError> {
    let leaf = parse_certificate(leaf_der)?;
    let leaf_subject = leaf.subject().to_string();
    let set: Vec<(X509Certificate<'_>, &AnchorCert)> = anchors
        .certs()
        .iter()
        .map(|a| parse_certificate(a.der()).map(|cert| (cert, a)))
        .collect::<Result<_, _>>()?;

    check_common(&leaf, now, policy)?;
    if basic_constraints(&leaf)?.is_some_and(|(ca, _)| ca) {
        return Err(TrustError::LeafIsCa {
            subject: leaf_subject,
        });
    }
    require_key_usage(&leaf, KeyUse::DigitalSignature)?;

    let mut path = Vec::new();
    let anchor = extend(&leaf, &set, &mut path, now, policy)?;
    let (_, anchor) = set[anchor];
    let mut subjects = vec![leaf_subject];
    subjects.extend(path.iter().map(|&i| set[i].1.subject().to_owned()));
    Ok(ChainInfo {
        path: subjects,
        anchor_subject: anchor.subject().to_owned(),
        anchor_source: anchor.source().to_owned(),
    })
}

/// Finds an issuer of `child` in `set` and continues from it; returns the index of the
/// anchor that ends the path. `path` holds the indices of the issuers above the leaf so
/// far (its length is the number of CAs below the next issuer, the leaf excluded).
fn extend(
    child: &X509Certificate<'_>,
    set: &[(X509Certificate<'_>, &AnchorCert)],
    path: &mut Vec<usize>,
    now: UnixTime,
    policy: &ChainPolicy,
) -> Result<usize, TrustError> {
    let child_subject = || child.subject().to_string();
    if path.len() >= MAX_CHAIN_DEPTH {
        return Err(TrustError::TooDeep {
            subject: child_subject(),
        });
    }
    let mut first_error = None;
    for (index, (issuer, _)) in set.iter().enumerate() {
        if issuer.subject().as_raw() != child.issuer().as_raw() || path.contains(&index) {
            continue;
        }
        let attempt = check_issued_by(child, issuer, path.len(), now, policy).and_then(|()| {
            path.push(index);
            let self_issued = issuer.subject().as_raw() == issuer.issuer().as_raw();
            let has_issuer_in_set = set.iter().enumerate().any(|(i, (c, _))| {
                !path.contains(&i) && c.subject().as_raw() == issuer.issuer().as_raw()
            });
            let result = if self_issued || !has_issuer_in_set {
                Ok(index)
            } else {
                extend(issuer, set, path, now, policy)
            };
            if result.is_err() {
                path.pop();
            }
            result
        });
        match attempt {
            Ok(anchor) => return Ok(anchor),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| TrustError::UntrustedIssuer {
        subject: child_subject(),
        issuer: child.issuer().to_string(),
    }))
}

/// Whether `issuer` may have issued `child` and did: CA flags, path length, validity and
/// the signature. `cas_below` counts the CA certificates between `issuer` and the leaf.
pub(super) fn check_issued_by(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    cas_below: usize,
    now: UnixTime,
    policy: &ChainPolicy,
) -> Result<(), TrustError> {
    let subject = || issuer.subject().to_string();
    match basic_constraints(issuer)? {
        Some((true, Some(limit))) if (limit as usize) < cas_below => {
            return Err(TrustError::PathLength {
                subject: subject(),
                limit,
                below: cas_below,
            })
        }
        Some((true, _)) => {}
        _ => return Err(TrustError::NotCa { subject: subject() }),
    }
    require_key_usage(issuer, KeyUse::KeyCertSign)?;
    check_common(issuer, now, policy)?;

    let hash = signature_hash(child, issuer)?;
    let key = PublicKey::from_spki(issuer.public_key().raw)?;
    if key.verify_x509(
        hash,
        child.tbs_certificate.as_ref(),
        &child.signature_value.data,
    ) {
        Ok(())
    } else {
        Err(TrustError::ChainSignature {
            subject: child.subject().to_string(),
            issuer: subject(),
        })
    }
}

/// The hash of `child`'s signature, after checking the algorithm suits `issuer`'s key
/// type and that the inner and outer algorithm identifiers agree (RFC 5280 §4.1.1.2).
fn signature_hash(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<HashAlg, TrustError> {
    let oid = &child.signature_algorithm.algorithm;
    if *oid != child.tbs_certificate.signature.algorithm {
        return Err(TrustError::BadCertificate(format!(
            "{}: signature algorithm differs inside and outside the signed part",
            child.subject()
        )));
    }
    let rsa: [(&Oid<'_>, HashAlg); 4] = [
        (&OID_PKCS1_SHA1WITHRSA, HashAlg::Sha1),
        (&OID_PKCS1_SHA256WITHRSA, HashAlg::Sha256),
        (&OID_PKCS1_SHA384WITHRSA, HashAlg::Sha384),
        (&OID_PKCS1_SHA512WITHRSA, HashAlg::Sha512),
    ];
    let ecdsa: [(&Oid<'_>, HashAlg); 3] = [
        (&OID_SIG_ECDSA_WITH_SHA256, HashAlg::Sha256),
        (&OID_SIG_ECDSA_WITH_SHA384, HashAlg::Sha384),
        (&OID_SIG_ECDSA_WITH_SHA512, HashAlg::Sha512),
    ];
    let issuer_is_rsa = PublicKey::from_spki(issuer.public_key().raw)?.is_rsa();
    let table: &[(&Oid<'_>, HashAlg)] = if issuer_is_rsa { &rsa } else { &ecdsa };
    table
        .iter()
        .find(|(known, _)| *known == oid)
        .map(|&(_, hash)| hash)
        .ok_or_else(|| TrustError::UnsupportedAlgorithm(format!("{oid} for this issuer key")))
}

/// Checks shared by every certificate on a path: validity at `now` and no critical
/// extension capf would ignore.
fn check_common(
    cert: &X509Certificate<'_>,
    now: UnixTime,
    policy: &ChainPolicy,
) -> Result<(), TrustError> {
    let subject = || cert.subject().to_string();
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if now < not_before {
        return Err(TrustError::NotYetValid {
            subject: subject(),
            not_before,
            now,
        });
    }
    if now > not_after && !policy.allow_expired {
        return Err(TrustError::Expired {
            subject: subject(),
            not_after,
            now,
        });
    }
    const UNDERSTOOD: [&Oid<'static>; 7] = [
        &OID_X509_EXT_BASIC_CONSTRAINTS,
        &OID_X509_EXT_KEY_USAGE,
        &OID_X509_EXT_EXTENDED_KEY_USAGE,
        &OID_X509_EXT_SUBJECT_ALT_NAME,
        &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
        &OID_X509_EXT_CERTIFICATE_POLICIES,
    ];
    for ext in cert.extensions() {
        if ext.critical && !UNDERSTOOD.contains(&&ext.oid) {
            return Err(TrustError::CriticalExtension {
                subject: subject(),
                oid: ext.oid.to_id_string(),
            });
        }
    }
    Ok(())
}

/// basicConstraints as (cA, pathLenConstraint), `None` when absent.
fn basic_constraints(
    cert: &X509Certificate<'_>,
) -> Result<Option<(bool, Option<u32>)>, TrustError> {
    cert.basic_constraints()
        .map(|bc| bc.map(|bc| (bc.value.ca, bc.value.path_len_constraint)))
        .map_err(|e| {
            TrustError::BadCertificate(format!("{}: basicConstraints: {e}", cert.subject()))
        })
}

#[derive(Clone, Copy)]
enum KeyUse {
    DigitalSignature,
    KeyCertSign,
}

/// An absent keyUsage allows everything (RFC 5280 §4.2.1.3).
fn require_key_usage(cert: &X509Certificate<'_>, needed: KeyUse) -> Result<(), TrustError> {
    let usage = cert
        .key_usage()
        .map_err(|e| TrustError::BadCertificate(format!("{}: keyUsage: {e}", cert.subject())))?;
    let Some(usage) = usage else {
        return Ok(());
    };
    let (allowed, name) = match needed {
        KeyUse::DigitalSignature => (usage.value.digital_signature(), "digitalSignature"),
        KeyUse::KeyCertSign => (usage.value.key_cert_sign(), "keyCertSign"),
    };
    if allowed {
        Ok(())
    } else {
        Err(TrustError::KeyUsage {
            subject: cert.subject().to_string(),
            missing: name,
        })
    }
}
