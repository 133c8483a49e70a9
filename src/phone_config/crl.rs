//! `GET /capf.crl` on the configuration HTTP port: the CAPF CA's revocation list.
//!
//! Building it reads every serial the CA ever issued (a full scan of the serial index)
//! and signs once, and anyone who reaches the port may ask for it: built on every
//! request, a client asking in a loop would have the node scan a million records per
//! request. So the list built last is kept and served again while it is current: no
//! revocation was recorded through this node's store since, and it is younger than
//! [`REBUILD_AFTER`], which bounds how long a revocation recorded by another node
//! sharing the store takes to appear. One build runs at a time; requests arriving
//! meanwhile wait for it and share its result.

use crate::ca::Ca;
use crate::model::UnixTime;
use crate::store::Store;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name the CRL is served under.
pub const CRL_PATH: &str = "/capf.crl";

/// The longest a kept list is served again: the delay before another node's revocation
/// is on this node's list (this node's own are on the next request).
pub const REBUILD_AFTER: Duration = Duration::from_secs(5);

/// What building the CRL needs: the CA that signs it and the store that lists the
/// revoked serials; and the list built last.
pub struct RevocationList {
    ca: Arc<Ca>,
    store: Store,
    kept: Mutex<Option<Kept>>,
}

struct Kept {
    der: Arc<[u8]>,
    /// [`Store::revoking_writes`] when it was built.
    revoking_writes: u64,
    built: Instant,
}

impl RevocationList {
    pub fn new(ca: Arc<Ca>, store: Store) -> RevocationList {
        RevocationList {
            ca,
            store,
            kept: Mutex::new(None),
        }
    }

    /// The kept CRL if it is current and no build is running: what a request can be
    /// answered with at once, without a thread that may scan and sign.
    pub fn current(&self) -> Option<Arc<[u8]>> {
        let kept = self.kept.try_lock().ok()?;
        Self::still_current(&kept, self.store.revoking_writes())
    }

    /// The CRL, DER: the kept one while it is current, else a new one.
    pub fn build(&self, now: UnixTime) -> Result<Arc<[u8]>, String> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the scan: a revocation recorded during the scan makes the next
        // request build again.
        let revoking_writes = self.store.revoking_writes();
        if let Some(der) = Self::still_current(&kept, revoking_writes) {
            return Ok(der);
        }
        let revoked = self
            .store
            .revocations()
            .map_err(|e| format!("store: {e}"))?;
        let der: Arc<[u8]> = self
            .ca
            .revocation_list(&revoked, now)
            .map_err(|e| format!("CRL: {e}"))?
            .into();
        *kept = Some(Kept {
            der: der.clone(),
            revoking_writes,
            built: Instant::now(),
        });
        Ok(der)
    }

    fn still_current(kept: &Option<Kept>, revoking_writes: u64) -> Option<Arc<[u8]>> {
        kept.as_ref()
            .filter(|k| k.revoking_writes == revoking_writes && k.built.elapsed() < REBUILD_AFTER)
            .map(|k| k.der.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{init_identities, InitOptions};
    use crate::model::{
        now, Commit, Event, Revocation, RevocationReason, SerialRecord, SerialState,
    };

    fn list_of(der: &[u8]) -> Vec<String> {
        let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
        crl.iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect()
    }

    fn revoke(store: &Store, serial: &str) {
        let record = SerialRecord {
            device: "SEP001122334455".into(),
            state: SerialState::Installed,
            issued: now(),
            revoked: Some(Revocation {
                time: now(),
                reason: RevocationReason::KeyCompromise,
            }),
        };
        let event = Event {
            id: 0,
            time: now(),
            actor: "test".into(),
            device: None,
            action: "revoke".into(),
            result: "ok".into(),
            details: Default::default(),
        };
        let name = "SEP001122334455";
        if store.get_device(name).unwrap().is_none() {
            let device = crate::model::DeviceRecord::new(name);
            store.add_device(&device, event.clone()).unwrap();
        }
        let commit = Commit {
            device: Some(name.into()),
            change: None,
            event,
            serials: vec![(serial.into(), record)],
            durable: false,
        };
        store.apply_changes(&[&commit]).unwrap();
    }

    #[test]
    fn the_kept_list_is_served_until_a_revocation_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        init_identities(
            &certs,
            &InitOptions {
                node_name: "capf.example.com".into(),
                organization: None,
                org_unit: None,
                force: false,
            },
        )
        .unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let list = RevocationList::new(Arc::new(Ca::load(&certs, 1825).unwrap()), store.clone());

        assert!(list.current().is_none(), "nothing built yet");
        let first = list.build(now()).unwrap();
        assert!(list_of(&first).is_empty());
        assert!(Arc::ptr_eq(&first, &list.current().unwrap()));
        // Asked again at once (a later `now` would sign a new thisUpdate): the same
        // bytes, not a new build.
        assert!(Arc::ptr_eq(&first, &list.build(now() + 3).unwrap()));

        revoke(&store, "0a0b0c");
        assert!(
            list.current().is_none(),
            "a revocation makes the kept list old"
        );
        let second = list.build(now()).unwrap();
        assert_eq!(list_of(&second), ["0a0b0c"], "the next request sees it");
        assert!(Arc::ptr_eq(&second, &list.build(now()).unwrap()));

        // Past REBUILD_AFTER a new list is built even without a revocation here (one
        // recorded by another node would be on it).
        list.kept.lock().unwrap().as_mut().unwrap().built -= REBUILD_AFTER;
        assert!(list.current().is_none(), "too old to serve at once");
        assert!(!Arc::ptr_eq(&second, &list.build(now()).unwrap()));
    }
}
