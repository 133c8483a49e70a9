//! The node's health: what `capf status` prints, what cron and monitoring read from
//! its exit code, and what the running node watches and logs.
//!
//! One pass over the devices counts them by status, finds locked phones, operations
//! past their deadline and LSCs expiring; the CAPF CA, the file signer and the ITL
//! recovery certificate are checked for their dates. Every finding carries a level, and the worst decides the whole:
//! ok, warning or critical.

use crate::model::{DeviceRecord, Operation, OperationStatus, UnixTime};
use crate::settings::DataDir;
use crate::store::{Store, StoreError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::BTreeMap;

const DAY: i64 = 86_400;

/// How bad a finding is; the order is the severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// The exit status `capf status` ends with: 0, 1 or 2.
    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// One thing an operator should know, in words that say what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

/// One of capf's own certificates and its dates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertHealth {
    /// "CAPF CA", "TFTP signer" or "ITL recovery".
    pub name: &'static str,
    /// `None` when the file cannot be read.
    pub not_before: Option<UnixTime>,
    pub not_after: Option<UnixTime>,
}

/// Everything `capf status` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub devices: usize,
    /// Devices per status, as `capf device list` words them.
    pub by_status: BTreeMap<String, usize>,
    /// Devices per status without its reason ([`OperationStatus::label`]).
    pub by_label: BTreeMap<&'static str, usize>,
    pub locked: usize,
    /// Operations scheduled and not yet done.
    pub pending: usize,
    /// Pending operations whose "operation completes by" has passed.
    pub past_deadline: usize,
    pub lsc_expired: usize,
    pub lsc_expiring_30_days: usize,
    pub lsc_expiring_90_days: usize,
    pub earliest_lsc_not_after: Option<UnixTime>,
    pub certificates: Vec<CertHealth>,
    /// Serials on the CRL, and when the last was revoked. The CRL itself has no age:
    /// it is built and signed for each request (`phone_config::crl`).
    pub crl_revoked: usize,
    pub last_revocation: Option<UnixTime>,
    /// With a shared store: the nodes serving from it now, and whether each presents
    /// the certificates of this data directory. Empty for sled.
    pub nodes: Vec<NodeHealth>,
    pub findings: Vec<Finding>,
}

/// A node serving from the shared store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    pub name: String,
    /// It presents the certificates of this data directory's `certs/`.
    pub same_certificates: bool,
}

impl Health {
    /// The worst finding's level.
    pub fn level(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }
}

/// Reads the store and capf's certificates and judges them at `now`.
pub fn assess(store: &Store, data: &DataDir, now: UnixTime) -> Result<Health, StoreError> {
    let mut health = Health::default();
    for device in store.devices() {
        count_device(&mut health, &device?, now);
    }
    health.certificates = vec![
        own_certificate("CAPF CA", &data.capf_cert()),
        own_certificate("TFTP signer", &data.tftp_cert()),
    ];
    for (_, revocation) in store.revocations()? {
        health.crl_revoked += 1;
        health.last_revocation = health.last_revocation.max(Some(revocation.time));
    }
    let recovery = data.certs().join(crate::ca::recovery::RECOVERY_CERT_FILE);
    let has_recovery = recovery.exists();
    if has_recovery {
        health
            .certificates
            .push(own_certificate("ITL recovery", &recovery));
    }
    health.findings = findings(&health, now);
    if let Some(cluster) = store.cluster() {
        let nodes = cluster.live_nodes()?;
        // Unreadable certificates are a finding of their own (above).
        let identity = crate::ca::identity_digest(&data.certs()).unwrap_or_default();
        health.nodes = nodes
            .iter()
            .filter(|n| n.identity != crate::store::presence::MIGRATION)
            .map(|n| NodeHealth {
                name: n.name.clone(),
                same_certificates: n.identity == identity,
            })
            .collect();
        for node in crate::store::presence::differing(&nodes, &identity) {
            health.findings.push(Finding {
                level: Level::Critical,
                message: format!(
                    "node {} presents other certificates than these ({}): phones moving \
                     between nodes may stop trusting their files; bring every node to the \
                     same certs/ (`capf node export` where the rollover was made, `capf node \
                     sync` on the others, then restart them)",
                    node.name,
                    data.certs().display()
                ),
            });
        }
    }
    if !has_recovery {
        // A node initialised by an older capf: it works, but its signer cannot be
        // replaced without resetting every phone by hand.
        health.findings.push(Finding {
            level: Level::Warning,
            message: "there is no ITL recovery certificate: run `capf init --upgrade` (or \
                      restart the node), so the file signer can be replaced without \
                      resetting phones"
                .into(),
        });
    }
    Ok(health)
}

fn count_device(health: &mut Health, d: &DeviceRecord, now: UnixTime) {
    health.devices += 1;
    *health.by_status.entry(d.status.to_string()).or_default() += 1;
    *health.by_label.entry(d.status.label()).or_default() += 1;
    if d.is_locked(now) {
        health.locked += 1;
    }
    let done = matches!(
        d.status,
        OperationStatus::UpgradeSuccess
            | OperationStatus::DeleteSuccess
            | OperationStatus::TroubleshootSuccess
    );
    if d.operation != Operation::None && !done {
        health.pending += 1;
        if d.deadline.is_some_and(|deadline| deadline < now) {
            health.past_deadline += 1;
        }
    }
    if let Some(lsc) = &d.lsc {
        let left = lsc.not_after - now;
        if left < 0 {
            health.lsc_expired += 1;
        } else if left < 30 * DAY {
            health.lsc_expiring_30_days += 1;
        }
        if (0..90 * DAY).contains(&left) {
            health.lsc_expiring_90_days += 1;
        }
        health.earliest_lsc_not_after = Some(
            health
                .earliest_lsc_not_after
                .map_or(lsc.not_after, |t| t.min(lsc.not_after)),
        );
    }
}

/// The dates of one of capf's own certificates; `None` dates when `pem` cannot be read.
pub fn own_certificate(name: &'static str, pem: &std::path::Path) -> CertHealth {
    let info = CertificateDer::from_pem_file(pem)
        .ok()
        .and_then(|der| crate::ca::cert_info(&der).ok());
    CertHealth {
        name,
        not_before: info.as_ref().map(|c| c.not_before),
        not_after: info.as_ref().map(|c| c.not_after),
    }
}

/// The rules. Critical: one of capf's certificates is unreadable, not yet valid,
/// expired or within 7 days of expiry (phones stop trusting the node). Warning: one
/// within 30 days; LSCs expired or expiring within 30 days; operations past their
/// deadline; locked devices.
fn findings(h: &Health, now: UnixTime) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |level, message: String| out.push(Finding { level, message });
    for c in &h.certificates {
        match (c.not_before, c.not_after) {
            (Some(nb), Some(na)) => {
                let days = (na - now).div_euclid(DAY);
                if now < nb {
                    say(
                        Level::Critical,
                        format!("the {} certificate is not valid yet", c.name),
                    );
                } else if na < now {
                    say(
                        Level::Critical,
                        format!("the {} certificate has expired", c.name),
                    );
                } else if days < 7 {
                    say(
                        Level::Critical,
                        format!("the {} certificate expires in {days} days", c.name),
                    );
                } else if days < 30 {
                    say(
                        Level::Warning,
                        format!("the {} certificate expires in {days} days", c.name),
                    );
                }
            }
            _ => say(
                Level::Critical,
                format!("the {} certificate cannot be read", c.name),
            ),
        }
    }
    if h.lsc_expired > 0 {
        say(
            Level::Warning,
            format!(
                "{} LSCs have expired (schedule re-keys: capf device set --operation install)",
                h.lsc_expired
            ),
        );
    }
    if h.lsc_expiring_30_days > 0 {
        say(
            Level::Warning,
            format!("{} LSCs expire within 30 days", h.lsc_expiring_30_days),
        );
    }
    if h.past_deadline > 0 {
        say(
            Level::Warning,
            format!(
                "{} pending operations are past their deadline (phones are refused as late)",
                h.past_deadline
            ),
        );
    }
    if h.locked > 0 {
        say(
            Level::Warning,
            format!(
                "{} devices are locked out after failed authentications (capf device list --status locked)",
                h.locked
            ),
        );
    }
    out
}

/// The node's latest assessment, shared by `/metrics` and the web admin's dashboard:
/// one pass over every device record serves both while it is younger than `fresh`,
/// and one runs at a time (a second asker waits for it). The hourly log watch
/// assesses on its own: its pass at start would otherwise be what the first scrape
/// shows.
pub struct Latest {
    store: Store,
    data: DataDir,
    fresh: std::time::Duration,
    last: tokio::sync::Mutex<Option<(u64, Assessed)>>,
    /// Bumped by [`Latest::forget`]: an assessment begun before it is not reused, even
    /// one still running when it was called.
    forgotten: std::sync::atomic::AtomicU64,
}

/// One assessment, when it was made and how long it took.
#[derive(Clone)]
pub struct Assessed {
    pub health: std::sync::Arc<Health>,
    pub at: std::time::Instant,
    pub took: std::time::Duration,
}

impl Latest {
    pub fn new(store: Store, data: DataDir, fresh: std::time::Duration) -> std::sync::Arc<Latest> {
        std::sync::Arc::new(Latest {
            store,
            data,
            fresh,
            last: tokio::sync::Mutex::new(None),
            forgotten: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The latest assessment if it is fresh, else a new one (off the runtime's workers).
    pub async fn get(&self) -> anyhow::Result<Assessed> {
        let mut last = self.last.lock().await;
        let epoch = self.forgotten.load(std::sync::atomic::Ordering::Acquire);
        if let Some((_, assessed)) = last
            .as_ref()
            .filter(|(at_epoch, a)| *at_epoch == epoch && a.at.elapsed() < self.fresh)
        {
            return Ok(assessed.clone());
        }
        let (store, data) = (self.store.clone(), self.data.clone());
        let assessed = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            assess(&store, &data, crate::model::now()).map(|health| Assessed {
                health: std::sync::Arc::new(health),
                at: std::time::Instant::now(),
                took: started.elapsed(),
            })
        })
        .await??;
        *last = Some((epoch, assessed.clone()));
        Ok(assessed)
    }

    /// Drops the kept assessment, so the next asker sees a change just made.
    pub fn forget(&self) {
        self.forgotten
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Watches the node: assesses it every `every` and logs each finding when it first
/// appears (a warning or an error, by level) and when it clears, so a threshold crossed
/// shows up once in the log, not once an hour. Runs until `shutdown` completes.
pub async fn watch(
    store: Store,
    data: DataDir,
    every: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut seen: Vec<Finding> = Vec::new();
    loop {
        let (store2, data2) = (store.clone(), data.clone());
        let assessed =
            tokio::task::spawn_blocking(move || assess(&store2, &data2, crate::model::now())).await;
        match assessed {
            Ok(Ok(health)) => {
                for f in health.findings.iter().filter(|f| !seen.contains(f)) {
                    match f.level {
                        Level::Critical => tracing::error!(target: "capf::health", "{}", f.message),
                        _ => tracing::warn!(target: "capf::health", "{}", f.message),
                    }
                }
                for f in seen.iter().filter(|f| !health.findings.contains(f)) {
                    tracing::info!(target: "capf::health", "cleared: {}", f.message);
                }
                seen = health.findings;
            }
            Ok(Err(e)) => tracing::error!(target: "capf::health", "cannot assess the node: {e}"),
            Err(e) => tracing::error!(target: "capf::health", "health check failed: {e}"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnrolledCert;

    fn lsc(not_after: UnixTime) -> EnrolledCert {
        EnrolledCert {
            der: Vec::new(),
            public_key: Vec::new(),
            md5: String::new(),
            sha256: String::new(),
            serial: "01".into(),
            not_before: 0,
            not_after,
            key: crate::model::KeySpec::Rsa { bits: 2048 },
            issuer: String::new(),
            subject: String::new(),
        }
    }

    #[test]
    fn counts_and_levels_follow_the_rules() {
        let now = 1_000 * DAY;
        let mut h = Health::default();
        let mut fresh = DeviceRecord::new("SEPA");
        fresh.lsc = Some(lsc(now + 400 * DAY));
        let mut soon = DeviceRecord::new("SEPB");
        soon.lsc = Some(lsc(now + 10 * DAY));
        let mut late = DeviceRecord::new("SEPC");
        late.operation = Operation::Install;
        late.status = OperationStatus::Pending;
        late.deadline = Some(now - 1);
        for d in [&fresh, &soon, &late] {
            count_device(&mut h, d, now);
        }
        assert_eq!(h.devices, 3);
        assert_eq!((h.pending, h.past_deadline), (1, 1));
        assert_eq!((h.lsc_expiring_30_days, h.lsc_expiring_90_days), (1, 1));
        assert_eq!(h.earliest_lsc_not_after, Some(now + 10 * DAY));

        h.certificates = vec![CertHealth {
            name: "CAPF CA",
            not_before: Some(0),
            not_after: Some(now + 400 * DAY),
        }];
        h.findings = findings(&h, now);
        assert_eq!(h.level(), Level::Warning);
        h.certificates[0].not_after = Some(now + 3 * DAY);
        h.findings = findings(&h, now);
        assert_eq!(h.level(), Level::Critical);
        assert_eq!(Level::Critical.exit_code(), 2);
    }

    #[tokio::test]
    async fn one_assessment_serves_every_asker_while_it_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().to_path_buf());
        let store = Store::open(&data.db()).unwrap();
        let latest = Latest::new(store.clone(), data, std::time::Duration::from_secs(60));
        let first = latest.get().await.unwrap();
        assert_eq!(first.health.devices, 0);
        let event = crate::model::Event {
            id: 0,
            time: 1,
            actor: "test".into(),
            device: Some("SEPA".into()),
            action: "device-add".into(),
            result: "ok".into(),
            details: Default::default(),
        };
        store.add_device(&DeviceRecord::new("SEPA"), event).unwrap();
        let again = latest.get().await.unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&first.health, &again.health),
            "the kept one, not a second pass over the store"
        );
        latest.forget();
        assert_eq!(latest.get().await.unwrap().health.devices, 1);
    }
}
