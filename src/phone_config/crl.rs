//! `GET /capf.crl` on the configuration HTTP port: the CAPF CA's revocation list,
//! built fresh from the serial index on every request (one signature, like any signed
//! file capf serves), so it is never behind a revocation.

use crate::ca::Ca;
use crate::model::UnixTime;
use crate::store::Store;

/// The name the CRL is served under.
pub const CRL_PATH: &str = "/capf.crl";

/// What building the CRL needs: the CA that signs it and the store that lists the
/// revoked serials.
pub struct RevocationList {
    ca: Ca,
    store: Store,
}

impl RevocationList {
    pub fn new(ca: Ca, store: Store) -> RevocationList {
        RevocationList { ca, store }
    }

    /// The CRL, DER.
    pub fn build(&self, now: UnixTime) -> Result<Vec<u8>, String> {
        let revoked = self
            .store
            .revocations()
            .map_err(|e| format!("store: {e}"))?;
        self.ca
            .revocation_list(&revoked, now)
            .map_err(|e| format!("CRL: {e}"))
    }
}
