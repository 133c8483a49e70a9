//! Which device holds a key: the `lsc_keys` tree.
//!
//! The protocol carries no proof that a phone holds the private key of the public key
//! it sends, so capf refuses a new key that another device's certificate already
//! certifies (issue #13 point 11). Finding that device by scanning every record would
//! cost each enrollment a pass over the store, so the store keeps an index:
//! SHA-256 of the key's identity ([`crate::ca::key_identity`], the same for every
//! spelling of one key) -> the device name.
//!
//! Entries are only added, in the transaction that gives a device the certificate,
//! never removed: a lookup ([`Store::device_holding_key`](super::Store::device_holding_key))
//! checks that the named device still holds the key, so a stale entry (the device was
//! re-keyed or removed) answers "nobody". Both backends keep the index; this module
//! holds what they share.

use crate::model::{DeviceRecord, EnrolledCert};
use sha2::{Digest, Sha256};

/// The index key of `spki_der`; `None` for a key capf cannot parse (it was never
/// issued a certificate by capf, so there is nothing to protect).
pub(super) fn index_key(spki_der: &[u8]) -> Option<[u8; 32]> {
    let identity = crate::ca::key_identity(spki_der).ok()?;
    Some(Sha256::digest(identity).into())
}

/// The certificates of `rec` whose keys capf has certified or will be asked to trust:
/// the current LSC and the one sent but not yet confirmed.
pub(super) fn certified_keys(rec: &DeviceRecord) -> impl Iterator<Item = &EnrolledCert> {
    rec.lsc.iter().chain(rec.unconfirmed_lsc.iter())
}
