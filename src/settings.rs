//! The data directory layout and the node settings.
//!
//! Everything capf keeps lives under one directory (default `./capf-data`, `--data DIR`
//! or `CAPF_DATA`), so backing up a node is copying one directory:
//!
//! ```text
//! capf-data/
//!   capf.toml           node settings (written by `init`, edited by the operator)
//!   db/                 sled store
//!   certs/capf.pem|key  CAPF certificate (TLS on 3804, issues LSCs), key 0600
//!   certs/tftp.pem|key  signer of .sgn/.enc.sgn files (SAST and TFTP in the ITL), key 0600
//!   certs/itl-recovery.pem|key  the ITL's second SAST, which signs it (ca::recovery)
//!   certs/trust/        extra trust anchors added by the operator
//!   tftp/               base device configurations SEP<MAC>.cnf.xml
//!   certs/web.pem|key   the web admin's HTTPS certificate (self-signed), key 0600
//!   admin.sock          the running server's admin socket
//! ```

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid settings in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths inside the data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }
    pub fn capf_cert(&self) -> PathBuf {
        self.certs().join("capf.pem")
    }
    pub fn tftp_cert(&self) -> PathBuf {
        self.certs().join("tftp.pem")
    }
    pub fn tftp_key(&self) -> PathBuf {
        self.certs().join("tftp.key")
    }
    pub fn trust(&self) -> PathBuf {
        self.certs().join("trust")
    }
    /// Operator-added SUDI CAs, kept apart from the MIC anchors in `trust()`.
    pub fn sudi_trust(&self) -> PathBuf {
        self.certs().join("sudi")
    }
    pub fn tftp(&self) -> PathBuf {
        self.root.join("tftp")
    }
    /// The web admin's HTTPS certificate and key (`web` in capf.toml).
    pub fn web_cert(&self) -> PathBuf {
        self.certs().join("web.pem")
    }
    pub fn web_key(&self) -> PathBuf {
        self.certs().join("web.key")
    }
    /// The serving node's copies of the signed files it built (`phone_config::kept`).
    pub fn kept_files(&self) -> PathBuf {
        self.root.join("kept-files")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
    pub fn settings_file(&self) -> PathBuf {
        self.root.join("capf.toml")
    }
    /// Whether `init` has run here (the CAPF identity exists).
    pub fn is_initialised(&self) -> bool {
        self.capf_cert().exists()
    }
}

/// Node settings, as stored in `capf.toml`. Every field has a default, so an empty
/// file (or none) is a working node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Host name or address phones are told to reach CAPF at (`processNodeName`).
    pub node_name: String,
    /// CAPF listener (TLS).
    pub listen: SocketAddr,
    /// The CAPF port published to phones in `capfList` (the listener's port unless a
    /// proxy or NAT sits in front).
    pub capf_port: u16,
    /// HTTP configuration delivery; `None` (`http = "off"`) turns it off.
    #[serde(with = "listener")]
    pub http: Option<SocketAddr>,
    /// TFTP configuration delivery (usually `0.0.0.0:69`); `None` (`"off"`), the
    /// default, turns it off, since port 69 needs privileges.
    #[serde(with = "listener")]
    pub tftp: Option<SocketAddr>,
    /// Concurrent HTTP connections; at the cap the oldest one still waiting for its
    /// request head is closed for the new one.
    pub http_max_connections: usize,
    /// Time an HTTP client has to send its whole request head, seconds (1–60).
    pub http_head_timeout: u64,
    /// TLS handshake timeout, seconds (1–60): the longest a connection that has not
    /// finished its handshake is held.
    pub handshake_timeout: u64,
    /// Per-message read timeout, seconds (R13: at most 15 — phones give up after 8–10).
    pub message_timeout: u64,
    /// Wait for KEY_GENERATE_RESPONSE, seconds; restarted by each REQUEST_IN_PROGRESS.
    pub keygen_timeout: u64,
    /// Whole-session deadline, seconds.
    pub session_timeout: u64,
    /// Concurrent CAPF connections, in the TLS handshake or in session. At the cap the
    /// oldest connection still waiting for its handshake or first message is closed
    /// for the new one; only when all are in session is a new one closed at once.
    pub max_sessions: usize,
    /// Largest payload a client may announce, bytes.
    pub max_payload: usize,
    /// Validity of issued LSCs, days (1–20 years).
    pub lsc_validity_days: u32,
    /// Failed authentications before a device is locked (CUCM: 10).
    pub max_auth_failures: u32,
    /// CUCM's "operation completes by" default, days: an operation scheduled without
    /// a deadline gets one this far ahead. 0, the default, sets none.
    pub default_deadline_days: u32,
    /// Lockout period, seconds.
    pub lockout_seconds: i64,
    /// Automatic LSC renewal: schedule an upgrade this many days before a device's LSC
    /// expires. 0, the default, turns it off.
    pub renew_before_days: u32,
    /// At most this many renewals are scheduled in any hour (phones pick them up at
    /// their next configuration download, often a reboot).
    pub renew_per_hour: u32,
    /// A CRL distribution point (`http://…/capf.crl`) written into every new LSC, for
    /// 802.1X/ISE and ASA verifiers that fetch CRLs; empty, the default, writes none.
    pub crl_url: String,
    /// How a renewing phone authenticates: `lsc` (by the LSC it renews, the default:
    /// no string to hand out), `mic` or `null`.
    pub renew_auth: crate::model::AuthMode,
    /// Failed sessions one address may cause within `address_window_seconds` before its
    /// new connections are refused until the window ends (guessing across devices).
    pub max_failures_per_address: u32,
    pub address_window_seconds: u64,
    /// Accept expired MICs and manufacturing CAs in certificate authentication: many
    /// deployed phones carry MICs past their dates.
    pub allow_expired_mic: bool,
    /// Require a SUDI proof from phones authenticating by certificate.
    pub require_sudi: bool,
    /// How long shutdown waits for sessions in flight, seconds.
    pub shutdown_grace: u64,
    /// Log format of `capf serve`: `text` or `json` (one JSON object per line).
    pub log_format: String,
    /// Digest of signed configuration files and the ITL: `sha1` (CUCM's default,
    /// understood by every phone) or `sha512`.
    pub config_digest: crate::model::Digest,
    /// A second CAPF listener accepting TLS 1.0 and static-RSA CBC suites, for phones
    /// that speak nothing newer (docs/legacy-tls.md); needs a build with the
    /// `legacy-tls` feature. `None` (`"off"`), the default, runs none.
    #[serde(with = "listener")]
    pub legacy_listen: Option<SocketAddr>,
    /// Client networks (CIDR) the legacy listener serves; empty serves every address.
    pub legacy_allow: Vec<crate::model::Network>,
    /// DANGER: serve a device that is not in capf's store its full base document
    /// (`tftp/SEP<MAC>.cnf.xml`, SIP passwords included) in the clear, to anyone who asks
    /// for its name. Off: such a device gets nothing (404, TFTP error 1).
    pub serve_unknown_devices_plaintext: bool,
    /// The admin listener: `/metrics` (Prometheus), `/healthz` and `/readyz` over plain
    /// HTTP without authentication, so on the loopback by default; `None` (`"off"`)
    /// runs none. Never a phone-facing port.
    #[serde(with = "listener")]
    pub metrics: Option<SocketAddr>,
    /// Memory for signed configuration files already built, MiB: a phone fetching a
    /// file whose inputs are unchanged gets the kept file instead of a new signature.
    /// Past it the least recently used files go; 0 keeps none.
    pub config_cache_mib: u64,
    /// The web admin (HTTPS, operators only: docs/web-admin.md), e.g.
    /// `"127.0.0.1:8443"`; `None` (`"off"`), the default, runs none.
    #[serde(with = "listener")]
    pub web: Option<SocketAddr>,
    /// Where the store is: empty (the default) for the embedded sled store in the data
    /// directory's `db`; `postgres://user@host:port/database` for a PostgreSQL
    /// database that several nodes share (docs/cluster.md).
    pub store: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_name: default_node_name(),
            listen: SocketAddr::from(([0, 0, 0, 0], 3804)),
            capf_port: 3804,
            http: Some(SocketAddr::from(([0, 0, 0, 0], 6970))),
            tftp: None,
            http_max_connections: 4096,
            http_head_timeout: 5,
            handshake_timeout: 5,
            message_timeout: 10,
            keygen_timeout: 120,
            session_timeout: 300,
            max_sessions: 4096,
            // protocol::DEFAULT_MAX_PAYLOAD; settings stay a leaf (a test checks they agree).
            max_payload: 32 * 1024,
            lsc_validity_days: 5 * 365,
            max_auth_failures: 10,
            default_deadline_days: 0,
            lockout_seconds: 600,
            renew_before_days: 0,
            crl_url: String::new(),
            renew_per_hour: 100,
            renew_auth: crate::model::AuthMode::Lsc,
            max_failures_per_address: 30,
            address_window_seconds: 60,
            allow_expired_mic: false,
            require_sudi: false,
            shutdown_grace: 10,
            log_format: "text".into(),
            config_digest: crate::model::Digest::Sha1,
            legacy_listen: None,
            legacy_allow: Vec::new(),
            serve_unknown_devices_plaintext: false,
            config_cache_mib: 2048,
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9380))),
            web: None,
            store: String::new(),
        }
    }
}

impl Settings {
    /// Reads `capf.toml` from the data directory; a missing file means the defaults.
    pub fn load(dir: &DataDir) -> Result<Settings, SettingsError> {
        let path = dir.settings_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        let settings: Settings = toml::from_str(&text).map_err(|e| SettingsError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        settings
            .validate()
            .map_err(|message| SettingsError::Invalid { path, message })?;
        Ok(settings)
    }

    /// Writes `capf.toml` (0600, atomically: a temporary file created exclusively, then
    /// renamed; nothing planted at either name is written through).
    pub fn save(&self, dir: &DataDir) -> Result<(), SettingsError> {
        let path = dir.settings_file();
        let text = toml::to_string_pretty(self).map_err(|e| SettingsError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::ca::replace(&path, text.as_bytes(), 0o600)
            .map_err(|source| SettingsError::Write { path, source })
    }

    /// Range checks, with messages that name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_name.is_empty() {
            return Err("node_name must not be empty".into());
        }
        if !(1..=15).contains(&self.message_timeout) {
            return Err(format!(
                "message_timeout = {} (expected 1–15 seconds: phones give up after 8–10)",
                self.message_timeout
            ));
        }
        if self.keygen_timeout < 10 {
            return Err(format!(
                "keygen_timeout = {} (expected at least 10 seconds; old phones need minutes)",
                self.keygen_timeout
            ));
        }
        // Short on purpose: a connection that has not finished its TLS handshake or sent
        // its request head may be anyone's, and phones need milliseconds.
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("http_head_timeout", self.http_head_timeout),
        ] {
            if !(1..=60).contains(&value) {
                return Err(format!("{name} = {value} (expected 1–60 seconds)"));
            }
        }
        if self.session_timeout == 0 {
            return Err("session_timeout must be positive".into());
        }
        if self.max_sessions == 0 || self.http_max_connections == 0 {
            return Err("max_sessions and http_max_connections must be at least 1".into());
        }
        if !(1024..=65535).contains(&self.max_payload) {
            return Err(format!(
                "max_payload = {} (expected 1024–65535 bytes)",
                self.max_payload
            ));
        }
        if !(365..=20 * 366).contains(&self.lsc_validity_days) {
            return Err(format!(
                "lsc_validity_days = {} (expected 1–20 years)",
                self.lsc_validity_days
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "log_format = {:?} (expected \"text\" or \"json\")",
                self.log_format
            ));
        }
        // Port 0 (any free port, as in tests) never collides.
        if self.legacy_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(format!(
                "legacy_listen = {} is the listen address (the legacy listener needs its own port)",
                self.listen
            ));
        }
        if let Some(metrics) = self.metrics.filter(|m| m.port() != 0) {
            let phone_facing = [
                ("listen", Some(self.listen)),
                ("http", self.http),
                ("legacy_listen", self.legacy_listen),
            ];
            for (name, addr) in phone_facing {
                if addr.is_some_and(|a| a.port() == metrics.port()) {
                    return Err(format!(
                        "metrics = {metrics} uses the port of {name} (the admin listener \
                         must stay off the ports phones reach)"
                    ));
                }
            }
        }
        if !self.crl_url.is_empty() && !self.crl_url.starts_with("http://") {
            return Err(format!(
                "crl_url = {:?} (expected an http:// URL, e.g. http://capf.example.net:6970/capf.crl)",
                self.crl_url
            ));
        }
        if !self.store.is_empty()
            && !self.store.starts_with("postgres://")
            && !self.store.starts_with("postgresql://")
        {
            return Err(format!(
                "store = {:?} (expected empty for the embedded store, or a postgres:// URL)",
                self.store
            ));
        }
        if self.renew_per_hour == 0 {
            return Err(
                "renew_per_hour must be at least 1 (renew_before_days = 0 turns renewal off)"
                    .into(),
            );
        }
        if self.renew_auth == crate::model::AuthMode::String {
            return Err(
                "renew_auth = \"string\" (expected lsc, mic or null: a renewal cannot hand \
                 each phone a string)"
                    .into(),
            );
        }
        if self.max_auth_failures == 0 || self.lockout_seconds < 0 {
            return Err(
                "max_auth_failures must be positive and lockout_seconds not negative".into(),
            );
        }
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }
    pub fn http_head_timeout(&self) -> Duration {
        Duration::from_secs(self.http_head_timeout)
    }
    pub fn message_timeout(&self) -> Duration {
        Duration::from_secs(self.message_timeout)
    }
    pub fn keygen_timeout(&self) -> Duration {
        Duration::from_secs(self.keygen_timeout)
    }
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout)
    }
    /// The default deadline as an offset in seconds, `None` when there is none.
    pub fn default_deadline(&self) -> Option<i64> {
        (self.default_deadline_days > 0).then(|| i64::from(self.default_deadline_days) * 86_400)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }
    /// `config_cache_mib` in bytes.
    pub fn config_cache_bytes(&self) -> usize {
        usize::try_from(self.config_cache_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }
}

/// A listener in `capf.toml`: `"ADDR:PORT"`, or `"off"` for none, the word the
/// command line takes (`serve --http off`). TOML has no null, so without the word a
/// listener on by default (`http`) could not be turned off: removing its line means
/// the default. An off listener is written as `"off"`, so that saving and loading
/// the settings gives them back.
pub mod listener {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    /// `"off"` (or `"none"`) for no listener, else an address.
    pub fn parse(value: &str) -> Result<Option<SocketAddr>, String> {
        match value.trim() {
            "off" | "none" => Ok(None),
            addr => addr
                .parse()
                .map(Some)
                .map_err(|_| format!("'{addr}' is not ADDR:PORT or \"off\"")),
        }
    }

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The machine's host name, the best default for `processNodeName`.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A store URL as it may be shown: without the password of `user:password@` or of a
/// `password=` parameter.
pub fn redact_store_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut shown = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => p.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_passwords_are_not_shown() {
        assert_eq!(
            redact_store_url("postgres://capf:s3cret@db.example.net:5432/capf?sslmode=x"),
            "postgres://capf:***@db.example.net:5432/capf?sslmode=x"
        );
        assert_eq!(
            redact_store_url("postgres://capf@db.example.net/capf"),
            "postgres://capf@db.example.net/capf"
        );
        assert_eq!(redact_store_url("postgres://db/capf"), "postgres://db/capf");
        assert_eq!(
            redact_store_url("postgres://u:pa/ss@db/capf?password=x&sslmode=y"),
            "postgres://u:***@db/capf?password=***&sslmode=y"
        );
    }

    #[test]
    fn the_default_payload_cap_is_the_protocol_default() {
        assert_eq!(
            Settings::default().max_payload,
            crate::protocol::DEFAULT_MAX_PAYLOAD
        );
    }

    #[test]
    fn settings_round_trip_through_toml_and_reject_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        assert_eq!(Settings::load(&data).unwrap(), Settings::default());
        let mut s = Settings {
            node_name: "capf.example.net".into(),
            legacy_listen: Some("0.0.0.0:3805".parse().unwrap()),
            legacy_allow: vec!["10.1.0.0/16".parse().unwrap()],
            tftp: Some("0.0.0.0:69".parse().unwrap()),
            ..Settings::default()
        };
        s.save(&data).unwrap();
        assert_eq!(Settings::load(&data).unwrap(), s);

        s.legacy_listen = Some(s.listen);
        s.save(&data).unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("its own port"), "{err}");
        s.legacy_listen = None;

        s.message_timeout = 60;
        s.save(&data).unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("message_timeout = 60"), "{err}");
        s.message_timeout = 10;

        s.handshake_timeout = 0;
        s.save(&data).unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("handshake_timeout = 0"), "{err}");
        s.handshake_timeout = 5;
        s.http_head_timeout = 61;
        s.save(&data).unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("http_head_timeout = 61"), "{err}");
        s.http_head_timeout = 5;
        s.http_max_connections = 0;
        s.save(&data).unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("http_max_connections"), "{err}");

        // Every listener can be turned off with the word the command line takes; a
        // removed line is the default.
        std::fs::write(
            data.settings_file(),
            "http = \"off\"\ntftp = \"off\"\nlegacy_listen = \"off\"\nmetrics = \"off\"\n",
        )
        .unwrap();
        let off = Settings::load(&data).unwrap();
        assert_eq!(
            (off.http, off.tftp, off.legacy_listen, off.metrics),
            (None, None, None, None)
        );
        off.save(&data).unwrap();
        assert_eq!(Settings::load(&data).unwrap(), off, "off survives a save");
        std::fs::write(data.settings_file(), "tftp = \"0.0.0.0:69\"\n").unwrap();
        assert_eq!(
            Settings::load(&data).unwrap().http,
            Settings::default().http
        );
        std::fs::write(data.settings_file(), "http = \"6970\"\n").unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("ADDR:PORT or \"off\""), "{err}");

        // The admin listener is never on a phone-facing port.
        std::fs::write(data.settings_file(), "metrics = \"127.0.0.1:6970\"\n").unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("uses the port of http"), "{err}");
        std::fs::write(data.settings_file(), "metrics = \"0.0.0.0:9999\"\n").unwrap();
        assert_eq!(
            Settings::load(&data).unwrap().metrics,
            Some("0.0.0.0:9999".parse().unwrap())
        );

        std::fs::write(data.settings_file(), "no_such_setting = 1\n").unwrap();
        let err = Settings::load(&data).unwrap_err().to_string();
        assert!(err.contains("no_such_setting"), "{err}");
    }
}
