//! CAPF CA rollover with an overlap (issue #14 point 2): replacing the CAPF certificate
//! without bricking phones.
//!
//! A phone trusts the CAPF listener only through the CAPF records of its ITL. A CAPF
//! certificate replaced in one step is one no phone trusts: each must have its ITL
//! reset by hand. So the new certificate goes through three phases, each a set of
//! files in `certs/`:
//!
//! | phase | files | TLS on 3804, new LSCs | ITL's CAPF records | LSCs that authenticate |
//! |---|---|---|---|---|
//! | single | `capf.*` | current | current | current's |
//! | staged (`capf ca rollover`) | `capf.*`, `capf-next.*` | current | current, next | current's |
//! | activated (`capf ca activate`) | `capf.*` (the new one), `capf-previous.*` | new | new, previous | both CAs' |
//! | retired (`capf ca retire`) | `capf.*`; the old pair moved to `retired/` | new | new | new's |
//!
//! Phones learn the new certificate from the ITL while the old one still serves them,
//! and still reach CAPF with their old-CA LSC after the switch, until renewal (or
//! `capf renew now --issuer previous`) has given them new-CA LSCs.

use super::files::{rename, retired_dir, sync_dir};
use super::identity::{capf_identity, InitOptions};
use super::{files, CaError, CAPF_CERT_FILE, CAPF_KEY_FILE};
use crate::model::UnixTime;
use std::path::{Path, PathBuf};

pub const NEXT_CERT_FILE: &str = "capf-next.pem";
pub const NEXT_KEY_FILE: &str = "capf-next.key";
pub const PREVIOUS_CERT_FILE: &str = "capf-previous.pem";
pub const PREVIOUS_KEY_FILE: &str = "capf-previous.key";
pub use super::RETIRED_DIR;

/// Where a rollover stands, from the files present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Single,
    Staged,
    Activated,
}

pub fn phase(certs: &Path) -> Phase {
    if certs.join(PREVIOUS_CERT_FILE).exists() {
        Phase::Activated
    } else if certs.join(NEXT_CERT_FILE).exists() {
        Phase::Staged
    } else {
        Phase::Single
    }
}

fn read(path: &Path) -> Option<Vec<u8>> {
    files::read_certificate(path).ok()
}

/// The staged certificate (DER), if any.
pub fn next_certificate(certs: &Path) -> Option<Vec<u8>> {
    read(&certs.join(NEXT_CERT_FILE))
}

/// The certificate of the CA before the current one, while it is still trusted.
pub fn previous_certificate(certs: &Path) -> Option<Vec<u8>> {
    read(&certs.join(PREVIOUS_CERT_FILE))
}

/// Every CAPF certificate phones must trust now, the current one first: what the ITL
/// lists with the CAPF role.
pub fn published_certificates(certs: &Path) -> Vec<Vec<u8>> {
    [CAPF_CERT_FILE, NEXT_CERT_FILE, PREVIOUS_CERT_FILE]
        .iter()
        .filter_map(|name| read(&certs.join(name)))
        .collect()
}

/// `capf ca rollover`: generates the next CAPF identity beside the current one.
pub fn stage(certs: &Path, opts: &InitOptions) -> Result<(), CaError> {
    match phase(certs) {
        Phase::Single => {}
        Phase::Staged => return Err(CaError::Rollover("a next CAPF certificate is already staged (`capf ca activate` it, or remove certs/capf-next.*)".into())),
        Phase::Activated => return Err(CaError::Rollover("the previous CAPF certificate is still in use: `capf ca retire` it first".into())),
    }
    capf_identity(opts)?.write(&certs.join(NEXT_CERT_FILE), &certs.join(NEXT_KEY_FILE))
}

/// `capf ca activate`: the staged certificate becomes the current one; the current one
/// becomes the previous (still in the ITL, its LSCs still authenticate).
pub fn activate(certs: &Path) -> Result<(), CaError> {
    if phase(certs) != Phase::Staged {
        return Err(CaError::Rollover(
            "nothing is staged: `capf ca rollover` first".into(),
        ));
    }
    // Keys first, as `capf init` writes them: a crash in between leaves pairs that
    // `Ca::load` refuses as mismatched, never a certificate served with a wrong key.
    rename(&certs.join(CAPF_KEY_FILE), &certs.join(PREVIOUS_KEY_FILE))?;
    rename(&certs.join(CAPF_CERT_FILE), &certs.join(PREVIOUS_CERT_FILE))?;
    rename(&certs.join(NEXT_KEY_FILE), &certs.join(CAPF_KEY_FILE))?;
    rename(&certs.join(NEXT_CERT_FILE), &certs.join(CAPF_CERT_FILE))?;
    sync_dir(certs)
}

/// `capf ca retire`: the previous CA leaves the ITL and trust; its files move to
/// `certs/retired/` (kept for the record, owner only). Returns where they went.
pub fn retire(certs: &Path, now: UnixTime) -> Result<PathBuf, CaError> {
    if phase(certs) != Phase::Activated {
        return Err(CaError::Rollover(
            "there is no previous CAPF certificate to retire".into(),
        ));
    }
    let dir = retired_dir(certs)?;
    let stem = format!("capf-{now}");
    rename(
        &certs.join(PREVIOUS_KEY_FILE),
        &dir.join(format!("{stem}.key")),
    )?;
    rename(
        &certs.join(PREVIOUS_CERT_FILE),
        &dir.join(format!("{stem}.pem")),
    )?;
    sync_dir(certs)?;
    Ok(dir.join(format!("{stem}.pem")))
}
