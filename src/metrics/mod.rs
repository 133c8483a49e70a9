//! What the node counts, for `/metrics` on the admin listener ([`server`]).
//!
//! One [`Metrics`] per node, shared by the CAPF driver, the configuration service and
//! the HTTP and TFTP servers. The exposition is `prometheus-client`'s (the OpenMetrics
//! text format, which Prometheus reads); nothing here writes it by hand.
//!
//! Every counter a session or a file request touches is resolved once, at start, into
//! a plain handle on an atomic: the per-session cost is a few relaxed atomic additions
//! and one histogram observation, with no label lookup and no map. The figures about
//! devices and certificates are not counted as things happen but read at scrape time
//! from what `capf status` computes (`health::assess`), at most once every
//! [`SCAN_EVERY`].
//!
//! Label values come from fixed lists (auth modes, [`FAILURE_REASONS`], file kinds,
//! [`OperationStatus::LABELS`]): nothing a phone sends becomes a label, so the number
//! of series is bounded whatever the traffic.

pub mod server;

use crate::health::Health;
use crate::model::{AuthMode, Operation, OperationStatus, UnixTime};
use crate::session::{Outcome, Summary, FAILURE_REASONS};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The longest the device and certificate figures on `/metrics` may be old: a scrape
/// within this time of the last one reuses its scan of the store.
pub const SCAN_EVERY: Duration = Duration::from_secs(30);

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a phone fetched a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Tftp,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Http, Transport::Tftp];

    fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Tftp => "tftp",
        }
    }
}

/// What a served file was, as the `kind` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `ITLFile.tlv`.
    Itl,
    /// A signed full configuration, `SEP<MAC>.cnf.xml.sgn`.
    Sgn,
    /// An encrypted one, `SEP<MAC>.cnf.xml.enc.sgn`.
    EncSgn,
    /// The partial configuration of a phone that must enroll first, signed or not.
    Partial,
    /// The CAPF CA's revocation list, `/capf.crl`.
    Crl,
    /// Anything else: the full configuration unsigned (`SEP<MAC>.cnf.xml`).
    Other,
}

impl FileKind {
    const ALL: [FileKind; 6] = [
        FileKind::Itl,
        FileKind::Sgn,
        FileKind::EncSgn,
        FileKind::Partial,
        FileKind::Crl,
        FileKind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            FileKind::Itl => "itl",
            FileKind::Sgn => "sgn",
            FileKind::EncSgn => "enc_sgn",
            FileKind::Partial => "partial",
            FileKind::Crl => "crl",
            FileKind::Other => "other",
        }
    }
}

/// The `auth` label of a session: the device's authentication mode, `none` when the
/// session ended before a device was found.
const AUTH_LABELS: [&str; 5] = ["null", "string", "lsc", "mic", "none"];
const OUTCOME_LABELS: [&str; 3] = ["success", "no_operation", "failure"];

fn auth_index(auth: Option<AuthMode>) -> usize {
    match auth {
        Some(AuthMode::Null) => 0,
        Some(AuthMode::String) => 1,
        Some(AuthMode::Lsc) => 2,
        Some(AuthMode::Mic) => 3,
        None => 4,
    }
}

type Label = [(&'static str, &'static str); 1];
type Labels = [(&'static str, &'static str); 2];

/// The node's metrics: the registry `/metrics` encodes and a handle on every series.
pub struct Metrics {
    registry: Registry,
    /// By `auth_index * 3 + outcome`.
    sessions: Vec<Counter>,
    /// By index in [`FAILURE_REASONS`].
    failures: Vec<Counter>,
    enrollment_failures: Vec<Counter>,
    enrollments: Counter,
    lockouts: Counter,
    /// By `transport * FileKind::ALL.len() + kind`.
    files: Vec<Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    kept_file_reads: Counter,
    session_seconds: Histogram,
    /// By index in `FileKind::ALL`.
    build_seconds: Vec<Histogram>,
    // Read from the store and the certificates at scrape time.
    devices: Family<Label, Gauge>,
    devices_locked: Gauge,
    operations_pending: Gauge,
    operations_past_deadline: Gauge,
    lscs_expired: Gauge,
    lscs_expiring: Gauge,
    expiry: Family<Label, Gauge>,
    scan_seconds: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("capf");

        let build_info = Family::<Label, Gauge>::default();
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "capf's version (always 1)", build_info);

        let sessions_family = Family::<Labels, Counter>::default();
        let mut sessions = Vec::new();
        for auth in AUTH_LABELS {
            for outcome in OUTCOME_LABELS {
                sessions.push(
                    sessions_family.get_or_create_owned(&[("auth", auth), ("outcome", outcome)]),
                );
            }
        }
        registry.register(
            "sessions",
            "CAPF sessions ended, by the device's authentication mode (none: no device was \
             found) and outcome (success: the operation was done; no_operation; failure)",
            sessions_family,
        );

        let by_reason = |help: &str, name: &str, registry: &mut Registry| {
            let family = Family::<Label, Counter>::default();
            let counters = FAILURE_REASONS
                .iter()
                .map(|reason| family.get_or_create_owned(&[("reason", *reason)]))
                .collect::<Vec<_>>();
            registry.register(name, help, family);
            counters
        };
        let failures = by_reason(
            "Failed CAPF sessions by reason",
            "session_failures",
            &mut registry,
        );
        let enrollment_failures = by_reason(
            "Failed CAPF sessions of devices with an install or upgrade scheduled, by reason",
            "enrollment_failures",
            &mut registry,
        );

        let enrollments = Counter::default();
        registry.register(
            "enrollments",
            "LSCs installed (the phone confirmed storing the certificate)",
            enrollments.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Devices locked out by a failed authentication reaching max_auth_failures",
            lockouts.clone(),
        );

        let files_family = Family::<Labels, Counter>::default();
        let mut files = Vec::new();
        for transport in Transport::ALL {
            for kind in FileKind::ALL {
                files.push(files_family.get_or_create_owned(&[
                    ("kind", kind.label()),
                    ("transport", transport.label()),
                ]));
            }
        }
        registry.register(
            "files_served",
            "Files sent whole to a client, by kind and transport",
            files_family,
        );

        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let kept_file_reads = Counter::default();
        registry.register(
            "config_cache_hits",
            "Signed files served from the configuration cache",
            cache_hits.clone(),
        );
        registry.register(
            "config_cache_misses",
            "Signed files built because the configuration cache did not hold them",
            cache_misses.clone(),
        );
        registry.register(
            "config_cache_kept_file_reads",
            "Signed files the configuration cache read back from the node's copies on disk \
             (after a restart, or once evicted from memory); counted in the hits too",
            kept_file_reads.clone(),
        );

        let session_seconds = Histogram::new([
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ]);
        registry.register_with_unit(
            "session_duration",
            "Duration of CAPF sessions, from the end of the TLS handshake to close",
            Unit::Seconds,
            session_seconds.clone(),
        );
        let build_family =
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
            });
        let build_seconds = FileKind::ALL
            .iter()
            .map(|kind| build_family.get_or_create_owned(&[("kind", kind.label())]))
            .collect();
        registry.register_with_unit(
            "file_build_duration",
            "Time to build (and sign) a file the cache did not hold, by kind",
            Unit::Seconds,
            build_family,
        );

        let devices = Family::<Label, Gauge>::default();
        registry.register(
            "devices",
            "Devices by the status of their certificate operation",
            devices.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let devices_locked = gauge(
            &mut registry,
            "devices_locked",
            "Devices locked out now after failed authentications",
        );
        let operations_pending = gauge(
            &mut registry,
            "operations_pending",
            "Certificate operations scheduled and not yet done",
        );
        let operations_past_deadline = gauge(
            &mut registry,
            "operations_past_deadline",
            "Pending operations whose deadline has passed",
        );
        let lscs_expired = gauge(
            &mut registry,
            "lscs_expired",
            "Installed LSCs past their end",
        );
        let lscs_expiring = gauge(
            &mut registry,
            "lscs_expiring_30_days",
            "Installed LSCs that end within 30 days",
        );
        let expiry = Family::<Label, Gauge>::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "notAfter (unix time) of the CAPF CA (capf_ca), the file signer certs/tftp.pem \
             (file_signer), the ITL recovery certificate (itl_recovery) and the earliest \
             installed LSC (earliest_lsc)",
            Unit::Seconds,
            expiry.clone(),
        );
        let scan_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "device_scan_duration",
            "How long the last read of every device record for this page took",
            Unit::Seconds,
            scan_seconds.clone(),
        );

        Metrics {
            registry,
            sessions,
            failures,
            enrollment_failures,
            enrollments,
            lockouts,
            files,
            cache_hits,
            cache_misses,
            kept_file_reads,
            session_seconds,
            build_seconds,
            devices,
            devices_locked,
            operations_pending,
            operations_past_deadline,
            lscs_expired,
            lscs_expiring,
            expiry,
            scan_seconds,
        }
    }

    /// Counts a CAPF session that ended as `summary` says, after `duration`.
    pub fn session_ended(&self, summary: &Summary, duration: Duration) {
        let outcome = summary.outcome();
        let outcome_index = match outcome {
            Outcome::Success => 0,
            Outcome::NoOperation => 1,
            Outcome::Failure(_) => 2,
        };
        let index = auth_index(summary.auth) * OUTCOME_LABELS.len() + outcome_index;
        if let Some(counter) = self.sessions.get(index) {
            counter.inc();
        }
        let install = summary.operation == Some(Operation::Install);
        match outcome {
            Outcome::Success if install => {
                self.enrollments.inc();
            }
            Outcome::Failure(reason) => {
                let at = FAILURE_REASONS.iter().position(|r| *r == reason);
                if let Some(counter) = at.and_then(|at| self.failures.get(at)) {
                    counter.inc();
                }
                if install {
                    if let Some(counter) = at.and_then(|at| self.enrollment_failures.get(at)) {
                        counter.inc();
                    }
                }
            }
            _ => {}
        }
        if summary.lockout {
            self.lockouts.inc();
        }
        self.session_seconds.observe(duration.as_secs_f64());
    }

    /// Counts a file sent whole.
    pub fn file_served(&self, kind: FileKind, transport: Transport) {
        let index = transport as usize * FileKind::ALL.len() + kind as usize;
        if let Some(counter) = self.files.get(index) {
            counter.inc();
        }
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn kept_file_read(&self) {
        self.kept_file_reads.inc();
    }

    /// Records the time one build of a file took.
    pub fn file_built(&self, kind: FileKind, took: Duration) {
        if let Some(histogram) = self.build_seconds.get(kind as usize) {
            histogram.observe(took.as_secs_f64());
        }
    }

    /// Sets the figures read from the store and the certificates (`health::assess`),
    /// and how long reading them took.
    pub fn set_node(&self, health: &Health, took: Duration) {
        for label in OperationStatus::LABELS {
            let count = health.by_label.get(label).copied().unwrap_or(0);
            self.devices
                .get_or_create(&[("status", label)])
                .set(gauge_value(count));
        }
        self.devices_locked.set(gauge_value(health.locked));
        self.operations_pending.set(gauge_value(health.pending));
        self.operations_past_deadline
            .set(gauge_value(health.past_deadline));
        self.lscs_expired.set(gauge_value(health.lsc_expired));
        self.lscs_expiring
            .set(gauge_value(health.lsc_expiring_30_days));
        let not_after = |name: &str| {
            health
                .certificates
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.not_after)
        };
        self.set_expiry("capf_ca", not_after("CAPF CA"));
        self.set_expiry("file_signer", not_after("TFTP signer"));
        self.set_expiry("itl_recovery", not_after("ITL recovery"));
        self.set_expiry("earliest_lsc", health.earliest_lsc_not_after);
        self.scan_seconds.set(took.as_secs_f64());
    }

    /// A certificate's notAfter, or no series while there is none (or it is unreadable).
    fn set_expiry(&self, certificate: &'static str, not_after: Option<UnixTime>) {
        let labels = [("certificate", certificate)];
        match not_after {
            Some(t) => {
                self.expiry.get_or_create(&labels).set(t);
            }
            None => {
                self.expiry.remove(&labels);
            }
        }
    }

    /// The exposition of every metric, as `/metrics` answers it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics: cannot encode: {e}");
        }
        out
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exposed_from_the_start_with_bounded_labels() {
        let m = Metrics::new();
        let summary = Summary {
            auth: Some(AuthMode::String),
            operation: Some(Operation::Install),
            result: "Authentication Failed: Invalid Authentication String".into(),
            lockout: true,
            ..Summary::default()
        };
        m.session_ended(&summary, Duration::from_millis(20));
        m.file_served(FileKind::EncSgn, Transport::Tftp);
        let text = m.render();
        for line in [
            "capf_sessions_total{auth=\"string\",outcome=\"failure\"} 1",
            "capf_sessions_total{auth=\"none\",outcome=\"success\"} 0",
            "capf_session_failures_total{reason=\"invalid_auth_string\"} 1",
            "capf_enrollment_failures_total{reason=\"invalid_auth_string\"} 1",
            "capf_lockouts_total 1",
            "capf_enrollments_total 0",
            "capf_files_served_total{kind=\"enc_sgn\",transport=\"tftp\"} 1",
            "capf_files_served_total{kind=\"itl\",transport=\"http\"} 0",
            "capf_session_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
