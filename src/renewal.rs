//! Automatic LSC renewal (issue #14 point 1): LSCs issued together expire together,
//! and CUCM leaves re-keying the fleet to a manual bulk job. capf schedules an upgrade
//! for every device whose LSC falls due, `renew_before_days` before it expires, at most
//! `renew_per_hour` an hour, authenticated by the LSC itself by default (so no string
//! has to reach the phone). The phone picks the operation up at its next configuration
//! download (`capfAuthMode`), enrolls with its LSC and gets a new one.
//!
//! The rules, in one place for the node's scheduler and `capf renew`:
//! * due: the device has an LSC whose `not_after - renew_before_days` has come;
//! * an operation the operator scheduled (anything pending) is never overwritten: a
//!   pending install already renews, anything else is left alone and shown as skipped;
//! * the node looks every minute while due devices wait for the rate, hourly when
//!   none does (each look reads every device);
//! * the rate counts the renewals of the last hour in the audit trail (action
//!   `renew`), so a restart does not reset it;
//! * each renewal is one transaction with its audit event, whose result says
//!   "scheduled by renewal policy"; the device is read again inside it, so a device that
//!   changed since the scan (an operator's edit, an enrollment) is passed over.

use crate::model::{AuthMode, DeviceRecord, Event, Operation, OperationStatus, UnixTime};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use serde::Serialize;

/// The audit trail's action for a renewal that was scheduled.
pub const ACTION: &str = "renew";
/// The actor of renewals the node schedules by itself.
pub const POLICY_ACTOR: &str = "renewal policy";

/// The renewal settings of a node; `None` from [`Policy::of`] when renewal is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub renew_before_days: u32,
    pub renew_per_hour: u32,
    /// The authentication a renewal asks the phone for.
    pub auth: AuthMode,
}

impl Policy {
    pub fn of(settings: &Settings) -> Option<Policy> {
        (settings.renew_before_days > 0).then_some(Policy {
            renew_before_days: settings.renew_before_days,
            renew_per_hour: settings.renew_per_hour,
            auth: settings.renew_auth,
        })
    }

    /// When the LSC of `rec` falls due, if it has one.
    fn due_at(&self, rec: &DeviceRecord) -> Option<UnixTime> {
        let lsc = rec.lsc.as_ref()?;
        Some(
            lsc.not_after
                .saturating_sub(i64::from(self.renew_before_days) * 86_400),
        )
    }
}

/// Where a due device stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Due, nothing scheduled yet: the policy will schedule it.
    Waiting,
    /// An install is pending (scheduled by the policy or by the operator): it renews.
    Scheduled,
    /// Another operation the operator scheduled is pending; the policy leaves it.
    Skipped,
}

/// A device whose LSC is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Due {
    pub name: String,
    pub lsc_not_after: UnixTime,
    /// When it fell (or falls) due.
    pub due: UnixTime,
    pub state: State,
}

/// Whether an operation is scheduled and not finished (the same rule as the partial
/// configuration's `capfAuthMode`, without the deadline).
fn pending(rec: &DeviceRecord) -> bool {
    rec.operation != Operation::None
        && !matches!(
            rec.status,
            OperationStatus::UpgradeSuccess
                | OperationStatus::DeleteSuccess
                | OperationStatus::TroubleshootSuccess
        )
}

fn state(rec: &DeviceRecord) -> State {
    match (pending(rec), rec.operation) {
        (false, _) => State::Waiting,
        (true, Operation::Install) => State::Scheduled,
        (true, _) => State::Skipped,
    }
}

/// Every device whose LSC is due at `now`, soonest expiry first.
pub fn due_devices(store: &Store, policy: &Policy, now: UnixTime) -> Result<Vec<Due>, StoreError> {
    let mut due = Vec::new();
    for rec in store.devices() {
        let rec = rec?;
        let (Some(at), Some(lsc)) = (policy.due_at(&rec), rec.lsc.as_ref()) else {
            continue;
        };
        if at <= now {
            due.push(Due {
                lsc_not_after: lsc.not_after,
                due: at,
                state: state(&rec),
                name: rec.name,
            });
        }
    }
    due.sort_by(|a, b| (a.lsc_not_after, &a.name).cmp(&(b.lsc_not_after, &b.name)));
    Ok(due)
}

/// Renewals scheduled within the hour before `now` (from the audit trail).
pub fn scheduled_last_hour(store: &Store, now: UnixTime) -> Result<usize, StoreError> {
    Ok(store
        .events_since(now - 3600)?
        .iter()
        .filter(|e| e.action == ACTION)
        .count())
}

/// How many more renewals the rate allows now.
pub fn budget(store: &Store, policy: &Policy, now: UnixTime) -> Result<usize, StoreError> {
    let used = scheduled_last_hour(store, now)?;
    Ok((policy.renew_per_hour as usize).saturating_sub(used))
}

/// Schedules an upgrade for up to `max` waiting devices (soonest expiry first) and
/// returns their names. Each is one transaction with its event by `actor`.
pub fn schedule(
    store: &Store,
    policy: &Policy,
    now: UnixTime,
    max: usize,
    actor: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(round(store, policy, now, max, actor)?.scheduled)
}

/// What one pass of the policy did: the devices it scheduled, and how many due
/// devices were waiting when it looked.
pub struct Round {
    pub scheduled: Vec<String>,
    pub waiting: usize,
}

/// [`schedule`], also counting what was waiting (the node's scheduler looks again
/// soon only while some are left).
pub fn round(
    store: &Store,
    policy: &Policy,
    now: UnixTime,
    max: usize,
    actor: &str,
) -> Result<Round, StoreError> {
    let waiting: Vec<String> = due_devices(store, policy, now)?
        .into_iter()
        .filter(|d| d.state == State::Waiting)
        .map(|d| d.name)
        .collect();
    let names = &waiting[..waiting.len().min(max)];
    // Read again inside the transaction: what changed since the scan wins.
    let still_due = |rec: &DeviceRecord| policy.due_at(rec).is_some_and(|at| at <= now);
    let renewal = Renewal {
        auth: policy.auth,
        why: "scheduled by renewal policy",
        now,
        actor,
    };
    Ok(Round {
        scheduled: renewal.schedule(store, names, still_due)?,
        waiting: waiting.len(),
    })
}

/// Schedules an upgrade for up to `max` devices whose LSC `issuer` (a subject, as in
/// `EnrolledCert::issuer`) issued and that have no operation pending, whether due or
/// not: after a CA rollover, moving every phone to the new CA.
pub fn schedule_issued_by(
    store: &Store,
    issuer: &str,
    auth: AuthMode,
    now: UnixTime,
    max: usize,
    actor: &str,
) -> Result<Vec<String>, StoreError> {
    let issued_by = |rec: &DeviceRecord| rec.lsc.as_ref().is_some_and(|c| c.issuer == issuer);
    let mut names = Vec::new();
    for rec in store.devices() {
        let rec = rec?;
        if names.len() < max && issued_by(&rec) && state(&rec) == State::Waiting {
            names.push(rec.name);
        }
    }
    let renewal = Renewal {
        auth,
        why: "scheduled to move to the new CAPF certificate",
        now,
        actor,
    };
    renewal.schedule(store, &names, issued_by)
}

/// What a batch of renewals writes into each device and its event.
struct Renewal<'a> {
    auth: AuthMode,
    why: &'static str,
    now: UnixTime,
    actor: &'a str,
}

impl Renewal<'_> {
    /// Schedules each of `names` still `eligible` and waiting, one transaction each.
    fn schedule(
        &self,
        store: &Store,
        names: &[String],
        eligible: impl Fn(&DeviceRecord) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut scheduled = Vec::new();
        for name in names {
            let updated = store.update_devices(std::slice::from_ref(name), |rec| {
                if !eligible(rec) || state(rec) != State::Waiting {
                    return Ok(None);
                }
                let Some(lsc) = rec.lsc.as_ref() else {
                    return Ok(None);
                };
                let mut details = serde_json::Map::new();
                details.insert("serial".into(), lsc.serial.clone().into());
                details.insert("lsc_not_after".into(), lsc.not_after.into());
                details.insert("lsc_issuer".into(), lsc.issuer.clone().into());
                details.insert("auth_before".into(), rec.auth.to_string().into());
                details.insert("auth".into(), self.auth.to_string().into());
                let event = Event {
                    id: 0,
                    time: self.now,
                    actor: self.actor.to_owned(),
                    device: Some(rec.name.clone()),
                    action: ACTION.into(),
                    result: self.why.into(),
                    details,
                };
                rec.operation = Operation::Install;
                rec.status = OperationStatus::Pending;
                rec.auth = self.auth;
                Ok(Some(event))
            })?;
            if updated.first().is_some_and(Option::is_some) {
                scheduled.push(name.clone());
            }
        }
        Ok(scheduled)
    }
}

/// How often the node looks for due LSCs while some wait for the hourly rate.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How often it looks when nothing was waiting: each look reads every device, and an
/// LSC falls due `renew_before_days` ahead of its expiry, so an hour late is nothing.
pub const IDLE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The lease in a shared store that lets one node at a time schedule renewals
/// (docs/cluster.md): its holder renews it with every pass, and another node takes
/// over once it expires.
const RENEWAL_LEASE: &str = "renewal";

/// The node's scheduler: at start and then every `every`, schedules what the rate
/// allows, and logs what it did. With a store other nodes share, only the node that
/// holds the renewal lease schedules (the rate is the cluster's, counted from the one
/// audit trail).
pub async fn run(
    store: Store,
    policy: Policy,
    node: String,
    every: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    tracing::info!(
        target: "capf::renewal",
        "LSC renewal on: {} days before expiry, at most {} an hour, by {} authentication",
        policy.renew_before_days,
        policy.renew_per_hour,
        policy.auth
    );
    loop {
        let store2 = store.clone();
        let node2 = node.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let now = crate::model::now();
            if let Some(cluster) = store2.cluster() {
                let lease = every.max(IDLE_CHECK_EVERY) + every;
                if !cluster.try_lease(RENEWAL_LEASE, &node2, lease)? {
                    // Another node schedules.
                    return Ok(None);
                }
            }
            match budget(&store2, &policy, now)? {
                // The hour's rate is used up: devices are waiting for it.
                0 => Ok(None),
                allowed => round(&store2, &policy, now, allowed, POLICY_ACTOR).map(Some),
            }
        })
        .await;
        let idle = match pass {
            Ok(Ok(Some(Round { scheduled, waiting }))) => {
                if !scheduled.is_empty() {
                    tracing::info!(
                        target: "capf::renewal",
                        count = scheduled.len(),
                        "scheduled LSC renewal for {}",
                        scheduled.join(", ")
                    );
                }
                waiting <= scheduled.len()
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::error!(target: "capf::renewal", "renewal: store error: {e}");
                false
            }
            Err(e) => {
                tracing::error!(target: "capf::renewal", "renewal failed: {e}");
                false
            }
        };
        let wait = if idle {
            every.max(IDLE_CHECK_EVERY)
        } else {
            every
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnrolledCert, KeySpec};

    const DAY: i64 = 86_400;
    const NOW: UnixTime = 1_800_000_000;

    fn with_lsc(name: &str, not_after: UnixTime) -> DeviceRecord {
        let mut rec = DeviceRecord::new(name);
        rec.lsc = Some(EnrolledCert {
            der: vec![1],
            public_key: vec![],
            md5: String::new(),
            sha256: String::new(),
            serial: format!("{not_after:x}"),
            not_before: 0,
            not_after,
            key: KeySpec::Rsa { bits: 2048 },
            issuer: String::new(),
            subject: String::new(),
        });
        rec
    }

    fn event(name: &str) -> Event {
        Event {
            id: 0,
            time: NOW,
            actor: "test".into(),
            device: Some(name.into()),
            action: "device-add".into(),
            result: "ok".into(),
            details: Default::default(),
        }
    }

    const POLICY: Policy = Policy {
        renew_before_days: 30,
        renew_per_hour: 2,
        auth: AuthMode::Lsc,
    };

    #[test]
    fn due_devices_are_scheduled_soonest_first_within_the_rate_and_never_over_an_operators_operation(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let add = |rec: DeviceRecord| store.add_device(&rec, event(&rec.name)).unwrap();
        add(with_lsc("SEP000000000001", NOW + 10 * DAY));
        add(with_lsc("SEP000000000002", NOW + 5 * DAY));
        add(with_lsc("SEP000000000003", NOW + 20 * DAY));
        add(with_lsc("SEP000000000004", NOW + 300 * DAY)); // not due
        add(DeviceRecord::new("SEP000000000005")); // no LSC
        let mut operator = with_lsc("SEP000000000006", NOW + DAY);
        operator.operation = Operation::Delete;
        operator.status = OperationStatus::Pending;
        add(operator);

        let due = due_devices(&store, &POLICY, NOW).unwrap();
        let names: Vec<_> = due.iter().map(|d| (d.name.as_str(), &d.state)).collect();
        assert_eq!(
            names,
            [
                ("SEP000000000006", &State::Skipped),
                ("SEP000000000002", &State::Waiting),
                ("SEP000000000001", &State::Waiting),
                ("SEP000000000003", &State::Waiting),
            ]
        );

        let allowed = budget(&store, &POLICY, NOW).unwrap();
        assert_eq!(allowed, 2);
        let done = round(&store, &POLICY, NOW, allowed, POLICY_ACTOR).unwrap();
        assert_eq!(done.scheduled, ["SEP000000000002", "SEP000000000001"]);
        // Three were waiting: the node looks again in a minute, not an hour.
        assert_eq!(done.waiting, 3);
        let rec = store.get_device("SEP000000000002").unwrap().unwrap();
        assert_eq!(
            (rec.operation, rec.status, rec.auth),
            (Operation::Install, OperationStatus::Pending, AuthMode::Lsc)
        );
        let events = store.events(Some("SEP000000000002"), None, None).unwrap();
        let last = events.last().unwrap();
        assert_eq!(
            (
                last.action.as_str(),
                last.actor.as_str(),
                last.result.as_str()
            ),
            (ACTION, POLICY_ACTOR, "scheduled by renewal policy")
        );
        // The hour's rate is used up; an hour later there is room again.
        assert_eq!(budget(&store, &POLICY, NOW + 60).unwrap(), 0);
        assert_eq!(budget(&store, &POLICY, NOW + 3601).unwrap(), 2);
        // The operator's delete is untouched, and scheduling again finds only the rest.
        let rec = store.get_device("SEP000000000006").unwrap().unwrap();
        assert_eq!(rec.operation, Operation::Delete);
        let again = round(&store, &POLICY, NOW + 3601, 10, POLICY_ACTOR).unwrap();
        assert_eq!(again.scheduled, ["SEP000000000003"]);
        assert_eq!(
            again.waiting, 1,
            "all that waited is scheduled: the node idles"
        );
    }
}
