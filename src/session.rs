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

use crate::protocol::{
    valid_device_name, AuthResponse, AuthType, CertificateType, ClientMessage, CurveId, Header,
    KeyGenerateRequest, KeyType, Reason, ServerMessage, WrappedCertificate, DEFAULT_MAX_PAYLOAD,
    HEADER_LEN, PROTOCOL_VERSION,
};
use crate::store::{
    AuthMode, CertKind, DeviceRecord, EcCurve, EnrolledCert, Event, KeyOrder, KeySpec, Operation,
    OperationStatus, SerialRecord, SerialState, UnixTime,
};
use subtle::ConstantTimeEq;

/// Policy the session applies; the server builds it from the node settings.
#[derive(Clone, Debug)]
pub struct SessionPolicy {
    /// Largest payload a client may announce (R4).
    pub max_payload: usize,
    /// Consecutive failed authentications before a device is locked (R10).
    pub max_auth_failures: u32,
    /// How long a lockout lasts, in seconds.
    pub lockout_secs: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_auth_failures: 10,
            lockout_secs: 600,
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

/// One state change with its audit event, committed in one store transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The device to change; `None` for an event about an unknown device.
    pub device: Option<String>,
    /// The change, applied to the current record inside the transaction.
    pub change: Option<DeviceChange>,
    pub event: Event,
    /// Serial index entries to write in the same transaction.
    pub serials: Vec<(String, SerialRecord)>,
    /// The phone is about to be told its certificate is installed or deleted: the
    /// driver must make this commit durable (flush) before sending.
    pub durable: bool,
}

/// A change to a device record, described as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChange {
    /// Only the attempt time (an attempt that was not evaluated, e.g. while locked).
    Attempted { now: UnixTime },
    /// Authentication failed: count it, lock after `max_failures`.
    AuthFailed {
        now: UnixTime,
        status: Option<OperationStatus>,
        max_failures: u32,
        lockout_secs: i64,
    },
    /// Authenticated; record the outcome of the operation (the operation stays
    /// scheduled unless it succeeded).
    Authenticated {
        now: UnixTime,
        status: Option<OperationStatus>,
    },
    /// An LSC was issued and is about to be sent; not installed until confirmed.
    LscIssued { now: UnixTime, cert: EnrolledCert },
    /// The phone confirmed it stored the LSC.
    LscInstalled { now: UnixTime, cert: EnrolledCert },
    /// The phone confirmed it holds no LSC any more.
    LscDeleted { now: UnixTime },
    /// The phone returned a certificate on a troubleshoot request.
    CertificateFetched {
        now: UnixTime,
        kind: CertKind,
        cert: EnrolledCert,
    },
}

impl DeviceChange {
    /// Applies the change to `rec` (called by the store inside its transaction).
    pub fn apply(&self, rec: &mut DeviceRecord) {
        match self {
            DeviceChange::Attempted { now } => rec.last_attempt = Some(*now),
            DeviceChange::AuthFailed {
                now,
                status,
                max_failures,
                lockout_secs,
            } => {
                rec.last_attempt = Some(*now);
                rec.failed_auth = rec.failed_auth.saturating_add(1);
                if rec.failed_auth >= *max_failures {
                    rec.locked_until = Some(now.saturating_add(*lockout_secs));
                    rec.failed_auth = 0;
                }
                if let Some(s) = status {
                    rec.status = s.clone();
                }
            }
            DeviceChange::Authenticated { now, status } => {
                authenticated(rec, *now);
                if let Some(s) = status {
                    rec.status = s.clone();
                }
            }
            DeviceChange::LscIssued { now, cert } => {
                authenticated(rec, *now);
                rec.unconfirmed_lsc = Some(cert.clone());
            }
            DeviceChange::LscInstalled { now, cert } => {
                authenticated(rec, *now);
                rec.lsc = Some(cert.clone());
                if rec
                    .unconfirmed_lsc
                    .as_ref()
                    .is_some_and(|u| u.serial == cert.serial)
                {
                    rec.unconfirmed_lsc = None;
                }
                rec.operation = Operation::None;
                rec.status = OperationStatus::UpgradeSuccess;
            }
            DeviceChange::LscDeleted { now } => {
                authenticated(rec, *now);
                rec.lsc = None;
                rec.operation = Operation::None;
                rec.status = OperationStatus::DeleteSuccess;
            }
            DeviceChange::CertificateFetched { now, kind, cert } => {
                authenticated(rec, *now);
                match kind {
                    CertKind::Lsc => rec.lsc = Some(cert.clone()),
                    CertKind::Mic => rec.mic = Some(cert.clone()),
                }
                rec.operation = Operation::None;
                rec.status = OperationStatus::TroubleshootSuccess;
            }
        }
    }
}

/// A successful authentication resets the failure count (R10).
fn authenticated(rec: &mut DeviceRecord, now: UnixTime) {
    rec.last_attempt = Some(now);
    rec.failed_auth = 0;
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

/// One CAPF conversation.
pub struct Session {
    id: u32,
    peer: String,
    policy: SessionPolicy,
    state: State,
    /// The version the client announced (absent = legacy, treated as 2).
    version: u8,
    /// The device record as it was when the client authenticated.
    device: Option<DeviceRecord>,
    summary: Summary,
}

impl Session {
    /// Starts a session and returns it with the AUTH_REQUEST to send first.
    pub fn new(id: u32, peer: impl Into<String>, policy: SessionPolicy) -> (Session, Step) {
        let session = Session {
            id,
            peer: peer.into(),
            policy,
            state: State::WaitAuth,
            version: 2,
            device: None,
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

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Checks a received header (R2 protocol id, R3 session id, R4 payload cap) and
    /// returns it, or the step that ends the session.
    pub fn check_header(&mut self, raw: &[u8; HEADER_LEN], now: UnixTime) -> Result<Header, Step> {
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
        let failed_status = |reason: &str| failure_status(rec.operation, reason);

        if rec.is_locked(now) {
            // R10: a locked device is refused without looking at the credential.
            self.summary.result = "Locked Out".into();
            let event = self.event("session", "Refused: Device Locked Out", now);
            let commit = self.commit(Some(DeviceChange::Attempted { now }), event);
            self.device = Some(rec);
            return self.end(Reason::InvalidElement, Some(commit));
        }

        if let Err(why) = authenticate(&rec, &auth) {
            self.summary.result = format!("Authentication Failed: {why}");
            let status = failed_status(why);
            let event = self.event("session", &self.summary.result.clone(), now);
            let change = DeviceChange::AuthFailed {
                now,
                status,
                max_failures: self.policy.max_auth_failures,
                lockout_secs: self.policy.lockout_secs,
            };
            let commit = self.commit(Some(change), event);
            self.device = Some(rec);
            return self.end(Reason::InvalidElement, Some(commit));
        }

        let operation = rec.operation;
        let late = rec.deadline.is_some_and(|d| now > d);
        self.device = Some(rec);
        if operation != Operation::None && late {
            return self.end_with_failure("Late Request", Reason::InvalidElement, now);
        }
        match operation {
            Operation::None => {
                self.summary.result = "No Pending Operation".into();
                let event = self.event("session", "No Pending Operation", now);
                let change = DeviceChange::Authenticated { now, status: None };
                let commit = self.commit(Some(change), event);
                self.end(Reason::NoAction, Some(commit))
            }
            Operation::Install => self.request_key(now),
            Operation::Troubleshoot => {
                self.state = State::WaitFetch;
                self.send(ServerMessage::FetchCertificateRequest, Wait::Message)
            }
            Operation::Delete => {
                self.state = State::WaitDelete;
                self.send(ServerMessage::DeleteCertificateRequest, Wait::Message)
            }
        }
    }

    /// The result of `Next::IssueLsc`: the certificate, or why the key was refused.
    pub fn on_lsc_issued(&mut self, issued: Result<EnrolledCert, String>, now: UnixTime) -> Step {
        if !matches!(self.state, State::Issuing) {
            return self.internal_error("certificate issued in the wrong state", now);
        }
        let cert = match issued {
            Ok(cert) => cert,
            Err(why) => return self.operation_failed(&why, now),
        };
        let mut serials = vec![(
            cert.serial.clone(),
            SerialRecord {
                device: self.device_name(),
                state: SerialState::Unconfirmed,
                issued: now,
            },
        )];
        serials.extend(self.superseded_unconfirmed());
        let mut event = self.event("lsc-issued", "LSC Issued, Awaiting Confirmation", now);
        event
            .details
            .insert("serial".into(), cert.serial.clone().into());
        event
            .details
            .insert("key".into(), cert.key.to_string().into());
        let mut commit = self.commit(
            Some(DeviceChange::LscIssued {
                now,
                cert: cert.clone(),
            }),
            event,
        );
        commit.serials = serials;
        let msg = ServerMessage::StoreCertificateRequest(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: cert.der.clone(),
        });
        self.state = State::WaitStore {
            cert: Box::new(cert),
        };
        let mut step = self.send(msg, Wait::Message);
        step.commit = Some(Box::new(commit));
        step
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

    fn request_key(&mut self, now: UnixTime) -> Step {
        let Some(rec) = &self.device else {
            return self.internal_error("key request without a device", now);
        };
        let key = match (rec.key_order, self.version >= 3) {
            (KeyOrder::Rsa { bits }, _) => KeySpec::Rsa { bits },
            (KeyOrder::Ec { curve }, true) => KeySpec::Ec { curve },
            (KeyOrder::EcPreferred { curve, .. }, true) => KeySpec::Ec { curve },
            (KeyOrder::EcPreferred { bits, .. }, false) => KeySpec::Rsa { bits },
            (KeyOrder::Ec { .. }, false) => {
                // §8.2: never offer EC to a client below version 3.
                return self.end_with_failure(
                    "Client Cannot Generate EC Keys",
                    Reason::InvalidElement,
                    now,
                );
            }
        };
        let request = match key {
            // §10 item 2: a legacy client gets KEY_SIZE alone, as CUCM sent it.
            KeySpec::Rsa { bits } if self.version < 3 => KeyGenerateRequest {
                key_size: Some(bits),
                key_type: None,
                curve: None,
            },
            KeySpec::Rsa { bits } => KeyGenerateRequest {
                key_size: Some(bits),
                key_type: Some(KeyType::Rsa),
                curve: None,
            },
            KeySpec::Ec { curve } => KeyGenerateRequest {
                key_size: None,
                key_type: Some(KeyType::Ec),
                curve: Some(curve_id(curve)),
            },
        };
        self.state = State::WaitKey { key };
        self.send(
            ServerMessage::KeyGenerateRequest(request),
            Wait::KeyGeneration,
        )
    }

    fn lsc_installed(&mut self, cert: EnrolledCert, now: UnixTime) -> Step {
        let mut serials = vec![(
            cert.serial.clone(),
            SerialRecord {
                device: self.device_name(),
                state: SerialState::Installed,
                issued: now,
            },
        )];
        let previous = self.device.as_ref().and_then(|d| d.lsc.as_ref());
        if let Some(old) = previous.filter(|old| old.serial != cert.serial) {
            serials.push((
                old.serial.clone(),
                self.serial_record(SerialState::Superseded, now),
            ));
        }
        self.summary.result = OperationStatus::UpgradeSuccess.to_string();
        let mut event = self.event("session", "Upgrade Success", now);
        event
            .details
            .insert("serial".into(), cert.serial.clone().into());
        if let Some(old) = previous {
            event
                .details
                .insert("superseded".into(), old.serial.clone().into());
        }
        let mut commit = self.commit(Some(DeviceChange::LscInstalled { now, cert }), event);
        commit.serials = serials;
        commit.durable = true;
        self.end(Reason::UpdateCertificate, Some(commit))
    }

    fn on_fetch_response(
        &mut self,
        reason: Option<Reason>,
        certificate: Option<WrappedCertificate>,
        now: UnixTime,
    ) -> Step {
        let wrapped = match (reason, certificate) {
            (Some(Reason::UpdateCertificate), Some(c)) => c,
            (Some(Reason::UpdateCertificate), None) => {
                return self.end_with_failure(
                    "No Certificate Returned",
                    Reason::InvalidElement,
                    now,
                )
            }
            _ => return self.end_with_failure("No Certificate On Phone", Reason::NoAction, now),
        };
        let cert = match crate::ca::cert_info(&wrapped.der) {
            Ok(c) => c,
            Err(_) => {
                return self.end_with_failure("Invalid Certificate", Reason::InvalidElement, now)
            }
        };
        let kind = match wrapped.cert_type {
            CertificateType::Mic => CertKind::Mic,
            _ => CertKind::Lsc,
        };
        self.summary.result = OperationStatus::TroubleshootSuccess.to_string();
        let mut event = self.event("session", "Troubleshoot Success", now);
        event
            .details
            .insert("fetched".into(), kind.to_string().into());
        event
            .details
            .insert("serial".into(), cert.serial.clone().into());
        event.details.insert("md5".into(), cert.md5.clone().into());
        let commit = self.commit(
            Some(DeviceChange::CertificateFetched { now, kind, cert }),
            event,
        );
        self.end(Reason::NoAction, Some(commit))
    }

    fn on_delete_response(&mut self, reason: Option<Reason>, now: UnixTime) -> Step {
        // REASON 1 = deleted; 7 = the phone holds no LSC. Either way the phone now has
        // none, which is what the operator asked for (docs/protocol-notes.md).
        match reason {
            Some(Reason::UpdateCertificate) | Some(Reason::InvalidElement) => {
                let mut serials = Vec::new();
                let old = self.device.as_ref().and_then(|d| d.lsc.clone());
                if let Some(old) = &old {
                    serials.push((
                        old.serial.clone(),
                        self.serial_record(SerialState::Superseded, now),
                    ));
                }
                self.summary.result = OperationStatus::DeleteSuccess.to_string();
                let mut event = self.event("session", "Delete Success", now);
                if reason == Some(Reason::InvalidElement) {
                    event.details.insert("phone_had_lsc".into(), false.into());
                }
                if let Some(old) = old {
                    event.details.insert("serial".into(), old.serial.into());
                }
                let mut commit = self.commit(Some(DeviceChange::LscDeleted { now }), event);
                commit.serials = serials;
                commit.durable = true;
                self.end(Reason::UpdateCertificate, Some(commit))
            }
            _ => self.end_with_failure(
                "Phone Did Not Delete The Certificate",
                Reason::UpdateCertificate,
                now,
            ),
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
        let commit = self
            .device
            .as_ref()
            .map(|_| self.commit(Some(DeviceChange::Authenticated { now, status }), event));
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

    fn serial_record(&self, state: SerialState, now: UnixTime) -> SerialRecord {
        SerialRecord {
            device: self.device_name(),
            state,
            issued: now,
        }
    }

    /// A previously issued, never confirmed LSC is replaced by the new one.
    fn superseded_unconfirmed(&self) -> Option<(String, SerialRecord)> {
        let old = self.device.as_ref()?.unconfirmed_lsc.as_ref()?;
        let rec = self.serial_record(SerialState::Superseded, old.not_before);
        Some((old.serial.clone(), rec))
    }

    fn event(&self, action: &str, result: &str, now: UnixTime) -> Event {
        let mut details = serde_json::Map::new();
        details.insert("session".into(), self.id.into());
        if let Some(v) = self.summary.version {
            details.insert("version".into(), v.into());
        }
        if let Some(a) = self.summary.auth {
            details.insert("auth".into(), a.to_string().into());
        }
        if let Some(o) = self.summary.operation {
            details.insert("operation".into(), o.to_string().into());
        }
        Event {
            id: 0,
            time: now,
            actor: format!("phone:{}", self.peer),
            device: self.summary.device.clone(),
            action: action.into(),
            result: result.into(),
            details,
        }
    }

    fn commit(&self, change: Option<DeviceChange>, event: Event) -> Commit {
        Commit {
            device: self.device.as_ref().map(|d| d.name.clone()),
            change,
            event,
            serials: Vec::new(),
            durable: false,
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

/// Checks the credential of the device's mode (§7); other credentials are ignored.
/// The error is the status reason, in CUCM's words.
fn authenticate(rec: &DeviceRecord, auth: &AuthResponse) -> Result<(), &'static str> {
    match rec.auth {
        AuthMode::Null => Ok(()),
        AuthMode::String => {
            let Some(expected) = rec.auth_string.as_deref() else {
                return Err("No Authentication String Configured");
            };
            let given = auth.password.as_deref().unwrap_or_default();
            // Constant time over the bytes; a length difference is not secret (the
            // string length is visible on the phone's keypad anyway).
            if bool::from(given.ct_eq(expected.as_bytes())) {
                Ok(())
            } else {
                Err("Invalid Authentication String")
            }
        }
        AuthMode::Lsc | AuthMode::Mic => Err("Certificate Authentication Not Available"),
    }
}

/// The status text for a failed attempt at `operation`.
fn failure_status(operation: Operation, reason: &str) -> Option<OperationStatus> {
    let reason = reason.to_string();
    match operation {
        Operation::None => None,
        Operation::Install => Some(OperationStatus::UpgradeFailed(reason)),
        Operation::Delete => Some(OperationStatus::DeleteFailed(reason)),
        Operation::Troubleshoot => Some(OperationStatus::TroubleshootFailed(reason)),
    }
}

fn curve_id(curve: EcCurve) -> CurveId {
    match curve {
        EcCurve::P256 => CurveId::Secp256r1,
        EcCurve::P384 => CurveId::Secp384r1,
        EcCurve::P521 => CurveId::Secp521r1,
    }
}
