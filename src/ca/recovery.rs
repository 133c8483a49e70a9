//! The ITL recovery identity and the file signer's rollover (issue #14 point 3).
//!
//! A phone holding an ITL accepts a new one only if it is signed by a certificate its
//! current ITL lists with the SAST role (config-files.md §7.4; capf has no Trust
//! Verification Service to vouch for others). With one signing key, replacing the
//! TFTP signer (expired, lost, compromised) publishes an ITL no phone accepts: each
//! needs its ITL deleted by hand. CUCM answers with its ITLRecovery certificate; capf
//! does the same with a second identity of its own:
//!
//! * `certs/itl-recovery.pem|key`: twenty years, signs nothing but ITLs. Every ITL
//!   lists it as SAST beside the signer (SAST and TFTP), so either key can sign an
//!   ITL the phones accept, and losing one is recoverable with the other.
//! * The ITL is signed by the recovery key, so replacing the signer changes only the
//!   records: `capf signer rollover` writes a new `tftp.*` and the next ITL, signed by
//!   the key phones already trust, tells them the new one before any file it signed.
//!
//! A node that served ITLs before it had a recovery identity (initialised by an older
//! capf) gets one on `capf init --upgrade` or at its first start, but its phones hold
//! ITLs that list only the signer. Until they have loaded an ITL listing the recovery
//! certificate, that ITL stays signed by the signer, and `certs/itl-recovery.introduced`
//! records since when the recovery certificate is listed. A signer rollover ends the
//! introduction; within [`INTRODUCTION_DAYS`] of its start it is refused unless forced.
//!
//! | state | files | ITL records | ITL signed by |
//! |---|---|---|---|
//! | established | `tftp.*`, `itl-recovery.*` | signer SAST+TFTP, recovery SAST | recovery |
//! | introducing | the same and `itl-recovery.introduced` | the same | signer |
//! | no recovery (unreadable) | `tftp.*` | signer SAST+TFTP | signer |

use super::files::{rename, retired_dir, sync_dir};
use super::identity::{recovery_identity, tftp_identity, InitOptions};
use super::{files, CaError, TFTP_CERT_FILE, TFTP_KEY_FILE};
use crate::model::UnixTime;
use std::path::{Path, PathBuf};

pub use super::{INTRODUCED_FILE, RECOVERY_CERT_FILE, RECOVERY_KEY_FILE};
/// How long phones are given to load an ITL listing the recovery certificate before a
/// signer rollover relies on it. Phones load the ITL at every boot and configuration
/// reset; a week covers a weekly maintenance reboot.
pub const INTRODUCTION_DAYS: i64 = 7;

/// Which key signs the ITL now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "signed_by")]
pub enum ItlSigning {
    /// The recovery identity: the signer can be replaced at any time.
    Recovery,
    /// The signer, while phones learn the recovery certificate, listed since `since`.
    Introducing { since: UnixTime },
    /// The signer, and no recovery certificate is listed (none can be read).
    SignerOnly,
}

/// The ITL signing state, from the files in `certs`.
pub fn itl_signing(certs: &Path) -> ItlSigning {
    if files::read_certificate(&certs.join(RECOVERY_CERT_FILE)).is_err() {
        return ItlSigning::SignerOnly;
    }
    match introduced_since(certs) {
        Some(since) => ItlSigning::Introducing { since },
        None => ItlSigning::Recovery,
    }
}

fn introduced_since(certs: &Path) -> Option<UnixTime> {
    let text = std::fs::read_to_string(certs.join(INTRODUCED_FILE)).ok()?;
    // An unreadable timestamp still means "introducing", from the start of time:
    // the safe reading, since it lets no rollover through unforced.
    Some(text.trim().parse().unwrap_or(UnixTime::MAX))
}

/// Gives a node without a recovery identity one (`capf init --upgrade`, and every
/// `capf serve` start). A node whose signer already exists has phones that may hold
/// ITLs listing only the signer, so the recovery certificate is introduced: listed,
/// while the signer keeps signing. Returns whether an identity was created.
pub fn ensure(certs: &Path, opts: &InitOptions, now: UnixTime) -> Result<bool, CaError> {
    let cert = certs.join(RECOVERY_CERT_FILE);
    if cert.exists() {
        return Ok(false);
    }
    let identity = recovery_identity(opts)?;
    if certs.join(TFTP_CERT_FILE).exists() {
        // The marker first: a crash after it leaves "introducing" with no recovery
        // yet, which signs with the signer as before; never the other way round.
        files::write_atomically(
            &certs.join(INTRODUCED_FILE),
            format!("{now}\n").as_bytes(),
            files::CERT_MODE,
        )?;
    }
    identity.write(&cert, &certs.join(RECOVERY_KEY_FILE))?;
    Ok(true)
}

/// What `capf signer rollover` did.
#[derive(Debug)]
pub struct SignerRolled {
    /// Where the old signer's files went (`certs/retired/`), if there were any.
    pub retired: Option<PathBuf>,
    /// The rollover ended an introduction that had not lasted [`INTRODUCTION_DAYS`].
    pub forced_introduction: bool,
}

/// `capf signer rollover`: a new TFTP signer replaces the current one, whose files
/// (if any: a lost key is the case this exists for) move to `certs/retired/`. The
/// recovery identity must be present; during its introduction the rollover needs
/// `force` until [`INTRODUCTION_DAYS`] have passed. Ends the introduction: from now
/// on the recovery key signs the ITL.
pub fn roll_signer(
    certs: &Path,
    opts: &InitOptions,
    now: UnixTime,
    force: bool,
) -> Result<SignerRolled, CaError> {
    let forced_introduction = match itl_signing(certs) {
        ItlSigning::SignerOnly => {
            return Err(CaError::Rollover(format!(
                "there is no readable ITL recovery certificate (certs/{RECOVERY_CERT_FILE}): \
                 phones would accept no ITL signed by anything but the current signer. Run \
                 `capf init --upgrade` (or start the node), let phones load the ITL that \
                 lists it, then roll the signer"
            )))
        }
        ItlSigning::Introducing { since } => {
            let days = now.saturating_sub(since).max(0) / 86_400;
            if days < INTRODUCTION_DAYS && !force {
                return Err(CaError::Rollover(format!(
                    "the recovery certificate has been in the ITL for {days} day(s) only: a \
                     phone that has not loaded that ITL since (one not rebooted) trusts only \
                     the current signer and would reject the new ITL. Wait until {INTRODUCTION_DAYS} \
                     days have passed, or roll now with --force"
                )));
            }
            days < INTRODUCTION_DAYS
        }
        ItlSigning::Recovery => false,
    };
    let identity = tftp_identity(opts)?;
    let (cert, key) = (certs.join(TFTP_CERT_FILE), certs.join(TFTP_KEY_FILE));
    let retired = if cert.exists() || key.exists() {
        let dir = retired_dir(certs)?;
        let stem = format!("tftp-{now}");
        for (from, ext) in [(&key, "key"), (&cert, "pem")] {
            if from.exists() {
                rename(from, &dir.join(format!("{stem}.{ext}")))?;
            }
        }
        Some(dir.join(format!("{stem}.pem")))
    } else {
        None
    };
    identity.write(&cert, &key)?;
    match std::fs::remove_file(certs.join(INTRODUCED_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CaError::io(&certs.join(INTRODUCED_FILE), e)),
    }
    sync_dir(certs)?;
    Ok(SignerRolled {
        retired,
        forced_introduction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn opts() -> InitOptions {
        InitOptions {
            node_name: "capf.test".into(),
            organization: None,
            org_unit: None,
            force: false,
        }
    }

    /// A node from before the recovery identity: CAPF and signer only.
    fn older_node() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        super::super::init_identities(dir.path(), &opts()).unwrap();
        for file in [RECOVERY_CERT_FILE, RECOVERY_KEY_FILE] {
            std::fs::remove_file(dir.path().join(file)).unwrap();
        }
        dir
    }

    #[test]
    fn a_new_node_signs_its_itl_with_the_recovery_identity() {
        let dir = tempfile::tempdir().unwrap();
        super::super::init_identities(dir.path(), &opts()).unwrap();
        assert_eq!(itl_signing(dir.path()), ItlSigning::Recovery);
        assert!(!ensure(dir.path(), &opts(), 0).unwrap());
    }

    #[test]
    fn the_introduction_holds_rollovers_back_for_a_week() {
        let dir = older_node();
        let certs = dir.path();
        assert_eq!(itl_signing(certs), ItlSigning::SignerOnly);
        let start = 1_000 * DAY;
        assert!(ensure(certs, &opts(), start).unwrap());
        assert!(!ensure(certs, &opts(), start + DAY).unwrap(), "only once");
        assert_eq!(itl_signing(certs), ItlSigning::Introducing { since: start });

        let early = start + INTRODUCTION_DAYS * DAY - 1;
        let err = roll_signer(certs, &opts(), early, false).unwrap_err();
        assert!(err.to_string().contains("6 day(s) only"), "{err}");
        assert_eq!(itl_signing(certs), ItlSigning::Introducing { since: start });

        let rolled = roll_signer(certs, &opts(), early + 1, false).unwrap();
        assert!(!rolled.forced_introduction);
        assert_eq!(itl_signing(certs), ItlSigning::Recovery);
    }

    #[test]
    fn a_lost_signer_can_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path();
        super::super::init_identities(certs, &opts()).unwrap();
        std::fs::remove_file(certs.join(TFTP_KEY_FILE)).unwrap();
        std::fs::remove_file(certs.join(TFTP_CERT_FILE)).unwrap();
        let rolled = roll_signer(certs, &opts(), 5, false).unwrap();
        assert!(rolled.retired.is_none());
        let key = std::fs::metadata(certs.join(TFTP_KEY_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
        assert!(files::read_certificate(&certs.join(TFTP_CERT_FILE)).is_ok());
    }

    #[test]
    fn an_unreadable_introduction_time_holds_rollovers_back() {
        let dir = older_node();
        let certs = dir.path();
        ensure(certs, &opts(), 0).unwrap();
        std::fs::write(certs.join(INTRODUCED_FILE), "garbage").unwrap();
        assert!(roll_signer(certs, &opts(), 400 * DAY, false).is_err());
        assert!(roll_signer(certs, &opts(), 400 * DAY, true).is_ok());
    }
}
