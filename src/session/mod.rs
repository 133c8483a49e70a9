//! The sans-I/O state machine of one CAPF conversation (capf-protocol.md §6, §8).
//!
//! A `Session` never touches a socket, a clock or the store. The server feeds it what
//! happened (a header, a message, the device record it looked up, the certificate it
//! issued, a timeout, an EOF) together with the current time, and gets back a `Step`:
//! what to commit to the store, what bytes to send, and what to do next. That makes
//! every conversation of the spec a plain unit test (see the tests at the bottom).
//!
//! ```text
//! new ─▶ AUTH_REQUEST ─▶ WaitAuth ─AUTH_RESPONSE─▶ (LookupDevice) ─▶ on_device
//!   on_device: unknown ─▶ END 9 │ auth fails ─▶ END 7 │ no operation ─▶ END 0
//!              install ─▶ KEY_GENERATE_REQUEST ─▶ WaitKey ─PUBLIC_KEY─▶ (IssueLsc)
//!                         on_lsc_issued ─▶ STORE_CERTIFICATE_REQUEST ─▶ WaitStore ─▶ END 1
//!              fetch   ─▶ FETCH_CERTIFICATE_REQUEST ─▶ WaitFetch ─▶ END 0
//!              delete  ─▶ DELETE_CERTIFICATE_REQUEST ─▶ WaitDelete ─▶ END 1
//! anything unexpected, malformed or late ─▶ END 7
//! ```
//!
//! Store changes are described as data (`DeviceChange`) and applied by the store inside
//! its transaction to the record as it is *then*, so an operator's concurrent edit is
//! never overwritten with a stale copy.
//!
//! The jobs are split by file, each adding methods to the one `Session`:
//! this file dispatches (types, the driver's entry points, endings); `auth.rs` checks
//! credentials; `operations.rs` runs install, fetch and delete; `audit.rs` builds the
//! events and commits; `tests.rs` plays whole conversations.

mod audit;
mod auth;
mod operations;
#[cfg(test)]
mod tests;

use crate::model::{
    AuthMode, CertKind, Commit, DeviceChange, DeviceRecord, EnrolledCert, KeySpec, Operation,
    UnixTime,
};
use crate::protocol::{
    valid_device_name, AuthResponse, AuthType, ClientMessage, Header, Reason, ServerMessage,
    DEFAULT_MAX_PAYLOAD, HEADER_LEN, PROTOCOL_VERSION,
};
use crate::trust::TrustAnchors;
use operations::failure_status;
use std::sync::Arc;

/// Policy the session applies; the server builds it from the node settings.
#[derive(Clone)]
pub struct SessionPolicy {
    /// Largest payload a client may announce (R4).
    pub max_payload: usize,
    /// Consecutive failed authentications before a device is locked (R10).
    pub max_auth_failures: u32,
    /// How long a lockout lasts, in seconds.
    pub lockout_secs: i64,
    /// What certificates are trusted for "existing certificate" authentication; `None`
    /// refuses that mode.
    pub trust: Option<Arc<TrustAnchors>>,
    /// Accept MICs (and their CAs) past their validity: many deployed fleets need it.
    pub allow_expired_mic: bool,
    /// Require a SUDI proof in certificate mode.
    pub require_sudi: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_auth_failures: 10,
            lockout_secs: 600,
            trust: None,
            allow_expired_mic: false,
            require_sudi: false,
        }
    }
}

/// How long the driver may wait for the next client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// An ordinary response: the per-message timeout (default 10 s).
    Message,
    /// KEY_GENERATE_RESPONSE: the long key-generation timeout, restarted by every
    /// REQUEST_IN_PROGRESS.
    KeyGeneration,
}

/// What the driver does after applying a step's commit and sending its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next message (header first, through `check_header`).
    Read(Wait),
    /// Look the device up in the store and call `on_device`.
    LookupDevice(String),
    /// Check the key (R15), issue an LSC for it and call `on_lsc_issued`.
    IssueLsc {
        device: String,
        public_key: Vec<u8>,
        key: KeySpec,
    },
    /// Send TLS close_notify and close; ignore anything the client still sends (R18).
    Close,
}

/// The result of feeding the session one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Commit this first (durably when `Commit::durable`).
    pub commit: Option<Box<Commit>>,
    /// Then send these bytes in one write.
    pub send: Option<Vec<u8>>,
    pub next: Next,
}

/// What the server logs when a session ends: one structured line per session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub device: Option<String>,
    pub auth: Option<AuthMode>,
    pub operation: Option<Operation>,
    /// Protocol version the client announced.
    pub version: Option<u8>,
    /// The END_SESSION reason sent, if any.
    pub end_reason: Option<u8>,
    /// The outcome in words (status text or the failure).
    pub result: String,
    /// Which certificate authenticated the phone, in certificate mode.
    pub auth_certificate: Option<CertKind>,
    /// This session's failed authentication locked the device out.
    pub lockout: bool,
}

/// How a session ended, in the few words a metric label can carry (`capf::metrics`):
/// the outcome and, for a failure, a reason from a fixed list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The scheduled operation was done (install/upgrade, delete, troubleshoot).
    Success,
    /// The phone authenticated and had nothing to do.
    NoOperation,
    /// Anything else, with one of [`FAILURE_REASONS`].
    Failure(&'static str),
}

/// Every reason [`Summary::outcome`] gives a failure, for metric labels.
pub const FAILURE_REASONS: &[&str] = &[
    "unknown_device",
    "locked_out",
    "invalid_auth_string",
    "no_auth_string",
    "invalid_credentials",
    "invalid_lsc",
    "invalid_mic",
    "sudi_required",
    "certificate_auth_unavailable",
    "late_request",
    "timeout",
    "connection_closed",
    "protocol_error",
    "key_generation_failed",
    "ec_unsupported",
    "key_refused",
    "not_stored",
    "no_certificate",
    "invalid_certificate",
    "not_deleted",
    "address_limited",
    "busy",
    "aborted",
    "other",
];

impl Summary {
    /// The outcome of the session, read from its result words: the session's own
    /// texts (CUCM's status words) are the single source, so a label cannot drift
    /// from what the log and the audit trail say.
    pub fn outcome(&self) -> Outcome {
        match self.result.as_str() {
            "Upgrade Success" | "Delete Success" | "Troubleshoot Success" => Outcome::Success,
            "No Pending Operation" => Outcome::NoOperation,
            result => Outcome::Failure(failure_reason(result)),
        }
    }
}

/// The label of a failure's words (one of [`FAILURE_REASONS`]).
fn failure_reason(result: &str) -> &'static str {
    let why = [
        "Upgrade Failed: ",
        "Delete Failed: ",
        "Troubleshoot Failed: ",
        "Authentication Failed: ",
    ]
    .iter()
    .find_map(|prefix| result.strip_prefix(prefix))
    .unwrap_or(result);
    let starts = |prefix: &str| why.starts_with(prefix);
    match why {
        "Unknown Device" => "unknown_device",
        "Locked Out" => "locked_out",
        "Invalid Authentication String" => "invalid_auth_string",
        "No Authentication String Configured" => "no_auth_string",
        "Invalid LSC" => "invalid_lsc",
        "Invalid MIC" => "invalid_mic",
        "Certificate Authentication Not Available" => "certificate_auth_unavailable",
        "Late Request" => "late_request",
        "Timeout" => "timeout",
        "Connection Closed" => "connection_closed",
        "Key Generation Failed" => "key_generation_failed",
        "Client Cannot Generate EC Keys" => "ec_unsupported",
        "Phone Did Not Store The Certificate" => "not_stored",
        "No Certificate Returned" | "No Certificate On Phone" => "no_certificate",
        "Invalid Certificate" => "invalid_certificate",
        "Phone Did Not Delete The Certificate" => "not_deleted",
        _ if starts("Invalid Credentials: SUDI") => "sudi_required",
        _ if starts("Invalid Credentials") => "invalid_credentials",
        _ if starts("Protocol Error") => "protocol_error",
        _ if starts("Refused Key") => "key_refused",
        _ if starts("Refused: Too Many Failures") => "address_limited",
        _ if starts("Refused: Busy") => "busy",
        _ if starts("Aborted") => "aborted",
        _ => "other",
    }
}

#[derive(Debug)]
enum State {
    WaitAuth,
    Lookup(Box<AuthResponse>),
    WaitKey { key: KeySpec },
    Issuing,
    WaitStore { cert: Box<EnrolledCert> },
    WaitFetch,
    WaitDelete,
    Ended,
}

/// The TLS a session runs over. It goes into each of the session's audit events, so
/// the audit trail shows which phones still need the legacy listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// As OpenSSL names it: `TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`.
    pub version: String,
    pub cipher: String,
    /// Whether the phone came through the legacy (OpenSSL) listener.
    pub legacy: bool,
}

/// One CAPF conversation.
pub struct Session {
    id: u32,
    peer: String,
    tls: TlsInfo,
    policy: SessionPolicy,
    state: State,
    /// The version the client announced (absent = legacy, treated as 2).
    version: u8,
    /// The device record as it was when the client authenticated.
    device: Option<DeviceRecord>,
    /// A MIC the phone proved possession of, to record with the next commit.
    verified_mic: Option<EnrolledCert>,
    summary: Summary,
}

impl Session {
    /// Starts a session and returns it with the AUTH_REQUEST to send first.
    pub fn new(id: u32, peer: impl Into<String>, policy: SessionPolicy) -> (Session, Step) {
        let session = Session {
            id,
            peer: peer.into(),
            tls: TlsInfo::default(),
            policy,
            state: State::WaitAuth,
            version: 2,
            device: None,
            verified_mic: None,
            summary: Summary::default(),
        };
        let hello = ServerMessage::AuthRequest {
            version: PROTOCOL_VERSION,
            auth_type: Some(AuthType::None),
        };
        let step = Step {
            commit: None,
            send: session.encode(&hello),
            next: Next::Read(Wait::Message),
        };
        (session, step)
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Records the transport the session runs over, for its events.
    pub fn set_tls(&mut self, tls: TlsInfo) {
        self.tls = tls;
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Checks a received header (R2 protocol id, R3 session id, R4 payload cap) and
    /// returns it, or the step that ends the session.
    pub fn check_header(&mut self, raw: &[u8; HEADER_LEN], now: UnixTime) -> Result<Header, Step> {
        if self.is_ended() {
            // An ended session has said its last word: a second END_SESSION (or any
            // reply) after `Next::Close` would contradict the first.
            return Err(close());
        }
        let header = match Header::decode(raw) {
            Ok(h) => h,
            Err(e) => return Err(self.protocol_error(&e.to_string(), now)),
        };
        if header.session_id != self.id {
            let why = format!("session id {} instead of {}", header.session_id, self.id);
            return Err(self.protocol_error(&why, now));
        }
        if let Err(e) = header.check_payload_cap(self.policy.max_payload) {
            return Err(self.protocol_error(&e.to_string(), now));
        }
        Ok(header)
    }

    /// Handles one whole client message.
    pub fn on_message(&mut self, header: &Header, payload: &[u8], now: UnixTime) -> Step {
        if self.is_ended() {
            // As in `check_header`: nothing is sent after `Next::Close`.
            return close();
        }
        let msg = match ClientMessage::decode(header, payload) {
            Ok(m) => m,
            Err(e) => return self.protocol_error(&e.to_string(), now),
        };
        let state = std::mem::replace(&mut self.state, State::Ended);
        match (state, msg) {
            (State::WaitAuth, ClientMessage::AuthResponse(auth)) => {
                self.on_auth_response(auth, now)
            }
            (State::WaitKey { key }, ClientMessage::RequestInProgress) => {
                self.state = State::WaitKey { key };
                Step {
                    commit: None,
                    send: None,
                    next: Next::Read(Wait::KeyGeneration),
                }
            }
            (State::WaitKey { key }, ClientMessage::KeyGenerateResponse { public_key, .. }) => {
                match public_key {
                    Some(public_key) => {
                        self.state = State::Issuing;
                        Step {
                            commit: None,
                            send: None,
                            next: Next::IssueLsc {
                                device: self.device_name(),
                                public_key,
                                key,
                            },
                        }
                    }
                    None => self.operation_failed("Key Generation Failed", now),
                }
            }
            (State::WaitStore { cert }, ClientMessage::StoreCertificateResponse { reason }) => {
                if reason == Some(Reason::UpdateCertificate) {
                    self.lsc_installed(*cert, now)
                } else {
                    // END 1 whatever the phone answered (§10 item 5); the real outcome
                    // is the status, and the operation stays pending.
                    self.end_with_failure(
                        "Phone Did Not Store The Certificate",
                        Reason::UpdateCertificate,
                        now,
                    )
                }
            }
            (
                State::WaitFetch,
                ClientMessage::FetchCertificateResponse {
                    reason,
                    certificate,
                },
            ) => self.on_fetch_response(reason, certificate, now),
            (State::WaitDelete, ClientMessage::DeleteCertificateResponse { reason }) => {
                self.on_delete_response(reason, now)
            }
            (state, msg) => {
                self.state = state;
                let why = format!(
                    "unexpected {:?} in state {}",
                    msg.command(),
                    self.state_name()
                );
                self.protocol_error(&why, now)
            }
        }
    }

    /// The device record the server looked up after `Next::LookupDevice`.
    pub fn on_device(&mut self, record: Option<DeviceRecord>, now: UnixTime) -> Step {
        let auth = match std::mem::replace(&mut self.state, State::Ended) {
            State::Lookup(auth) => auth,
            other => {
                self.state = other;
                return self.internal_error("device lookup in the wrong state", now);
            }
        };
        let Some(rec) = record else {
            // R9: unknown device, answered before any credential is looked at.
            self.summary.result = "Unknown Device".into();
            let event = self.event("session", "Unknown Device", now);
            return self.end(Reason::UnknownDevice, Some(self.commit(None, event)));
        };
        self.summary.auth = Some(rec.auth);
        self.summary.operation = Some(rec.operation);
        // From here on every commit is about this device.
        self.device = Some(rec.clone());
        let failed_status = |reason: &str| failure_status(rec.operation, reason);

        if rec.is_locked(now) {
            // R10: a locked device is refused without looking at the credential.
            self.summary.result = "Locked Out".into();
            let event = self.event("session", "Refused: Device Locked Out", now);
            let commit = self.commit(Some(DeviceChange::Attempted { now }), event);
            return self.end(Reason::InvalidElement, Some(commit));
        }

        if let Err(why) = self.authenticate(&rec, &auth, now) {
            self.summary.result = format!("Authentication Failed: {why}");
            let status = failed_status(&why);
            let mut event = self.event("session", &self.summary.result.clone(), now);
            let failures = rec.failed_auth.saturating_add(1);
            event
                .details
                .insert("failed_attempts".into(), failures.into());
            if failures >= self.policy.max_auth_failures {
                self.summary.lockout = true;
                event
                    .details
                    .insert("lockout".into(), self.policy.lockout_secs.into());
            }
            let change = DeviceChange::AuthFailed {
                now,
                status,
                max_failures: self.policy.max_auth_failures,
                lockout_secs: self.policy.lockout_secs,
            };
            let commit = self.commit(Some(change), event);
            return self.end(Reason::InvalidElement, Some(commit));
        }

        let operation = rec.operation;
        let late = rec.deadline.is_some_and(|d| now > d);
        if operation != Operation::None && late {
            return self.end_with_failure("Late Request", Reason::InvalidElement, now);
        }
        match operation {
            Operation::None => {
                self.summary.result = "No Pending Operation".into();
                let event = self.event("session", "No Pending Operation", now);
                let change = DeviceChange::Authenticated {
                    now,
                    status: None,
                    mic: self.verified_mic.take(),
                };
                let commit = self.commit(Some(change), event);
                self.end(Reason::NoAction, Some(commit))
            }
            Operation::Install => {
                let step = self.request_key(now);
                self.with_verified_mic(step, now)
            }
            Operation::Troubleshoot => {
                self.state = State::WaitFetch;
                let step = self.send(ServerMessage::FetchCertificateRequest, Wait::Message);
                self.with_verified_mic(step, now)
            }
            Operation::Delete => {
                self.state = State::WaitDelete;
                let step = self.send(ServerMessage::DeleteCertificateRequest, Wait::Message);
                self.with_verified_mic(step, now)
            }
        }
    }

    /// The client did not answer in time (R13).
    pub fn on_timeout(&mut self, now: UnixTime) -> Step {
        if self.is_ended() {
            return close();
        }
        if self.device.is_some() {
            self.end_with_failure("Timeout", Reason::InvalidElement, now)
        } else {
            self.summary.result = "Timeout".into();
            self.end(Reason::InvalidElement, None)
        }
    }

    /// The server cannot go on (e.g. the store failed): END 7, nothing recorded.
    pub fn abort(&mut self, why: &str) -> Step {
        tracing::error!(session = self.id, "session aborted: {why}");
        self.summary.result = format!("Aborted: {why}");
        self.end(Reason::InvalidElement, None)
    }

    /// The server refuses to evaluate this attempt (too many failures from the peer's
    /// address, or no turn came free in time): END 7, nothing recorded.
    pub fn refuse(&mut self, why: &str) -> Step {
        self.summary.result = format!("Refused: {why}");
        self.end(Reason::InvalidElement, None)
    }

    /// The client closed the connection (or the TLS layer failed).
    pub fn on_eof(&mut self, now: UnixTime) -> Step {
        let state = std::mem::replace(&mut self.state, State::Ended);
        if matches!(state, State::Ended) {
            return close();
        }
        self.summary.result = "Connection Closed".into();
        match (&self.device, state) {
            (Some(_), State::WaitAuth | State::Lookup(_)) | (None, _) => close(),
            (Some(_), _) => {
                let mut step =
                    self.end_with_failure("Connection Closed", Reason::InvalidElement, now);
                step.send = None;
                step
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Message handlers.

    fn on_auth_response(&mut self, auth: AuthResponse, now: UnixTime) -> Step {
        // §10 item 2: accept versions 1–3, treat an absent VERSION as legacy (2).
        let version = auth.version.unwrap_or(2);
        self.summary.version = Some(version);
        if version == 0 || version > PROTOCOL_VERSION {
            return self.protocol_error(&format!("unsupported protocol version {version}"), now);
        }
        self.version = version;
        let name = match &auth.device_name {
            Some(n) if valid_device_name(n) => n.clone(),
            Some(_) => return self.protocol_error("invalid device name", now),
            None => return self.protocol_error("AUTH_RESPONSE without DEVICE_NAME", now),
        };
        self.summary.device = Some(name.clone());
        self.state = State::Lookup(Box::new(auth));
        Step {
            commit: None,
            send: None,
            next: Next::LookupDevice(name),
        }
    }

    // ------------------------------------------------------------------------------
    // Endings.

    /// The operation failed after authentication: record why, keep it pending, END 7.
    fn operation_failed(&mut self, why: &str, now: UnixTime) -> Step {
        self.end_with_failure(why, Reason::InvalidElement, now)
    }

    /// Records a failed operation (still scheduled) and ends with `reason`.
    fn end_with_failure(&mut self, why: &str, reason: Reason, now: UnixTime) -> Step {
        let operation = self.device.as_ref().map(|d| d.operation);
        let status = operation.and_then(|op| failure_status(op, why));
        self.summary.result = status
            .as_ref()
            .map_or_else(|| why.to_string(), |s| s.to_string());
        let event = self.event("session", &self.summary.result.clone(), now);
        let commit = self.device.as_ref().map(|_| {
            self.commit(
                Some(DeviceChange::Authenticated {
                    now,
                    status,
                    mic: None,
                }),
                event,
            )
        });
        self.end(reason, commit)
    }

    /// A malformed or unexpected message: END 7 (R2–R8, R12). If the device is already
    /// known the failure is recorded against it.
    fn protocol_error(&mut self, why: &str, now: UnixTime) -> Step {
        tracing::debug!(session = self.id, "protocol error: {why}");
        if self.device.is_some() && !self.is_ended() {
            return self.end_with_failure("Protocol Error", Reason::InvalidElement, now);
        }
        self.summary.result = format!("Protocol Error: {why}");
        self.end(Reason::InvalidElement, None)
    }

    fn internal_error(&mut self, why: &str, now: UnixTime) -> Step {
        tracing::error!(session = self.id, "internal error: {why}");
        self.protocol_error(why, now)
    }

    fn end(&mut self, reason: Reason, commit: Option<Commit>) -> Step {
        self.state = State::Ended;
        self.summary.end_reason = Some(reason.to_u8());
        Step {
            commit: commit.map(Box::new),
            send: self.encode(&ServerMessage::EndSession(reason)),
            next: Next::Close,
        }
    }

    // ------------------------------------------------------------------------------
    // Helpers.

    fn send(&self, msg: ServerMessage, wait: Wait) -> Step {
        Step {
            commit: None,
            send: self.encode(&msg),
            next: Next::Read(wait),
        }
    }

    fn encode(&self, msg: &ServerMessage) -> Option<Vec<u8>> {
        match msg.encode(self.id) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                // Only a certificate over 64 KiB could get here; close without a
                // malformed message rather than send a lie (R14).
                tracing::error!(session = self.id, "cannot encode {:?}: {e}", msg.command());
                None
            }
        }
    }

    fn device_name(&self) -> String {
        self.summary.device.clone().unwrap_or_default()
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::WaitAuth => "WaitAuth",
            State::Lookup(_) => "Lookup",
            State::WaitKey { .. } => "WaitKey",
            State::Issuing => "Issuing",
            State::WaitStore { .. } => "WaitStore",
            State::WaitFetch => "WaitFetch",
            State::WaitDelete => "WaitDelete",
            State::Ended => "Ended",
        }
    }
}

fn close() -> Step {
    Step {
        commit: None,
        send: None,
        next: Next::Close,
    }
}
