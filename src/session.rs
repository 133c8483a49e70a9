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

use crate::model::{
    AuthMode, CertKind, Commit, DeviceChange, DeviceRecord, EcCurve, EnrolledCert, Event, KeyOrder,
    KeySpec, Operation, OperationStatus, SerialRecord, SerialState, UnixTime,
};
use crate::protocol::{
    valid_device_name, AuthResponse, AuthType, CertificateType, ClientMessage, CurveId, Header,
    KeyGenerateRequest, KeyType, Reason, ServerMessage, WrappedCertificate, DEFAULT_MAX_PAYLOAD,
    HEADER_LEN, PROTOCOL_VERSION,
};
use crate::trust::{self, ChainPolicy, TrustAnchors, TrustError};
use std::sync::Arc;
use subtle::ConstantTimeEq;

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

    /// The result of `Next::IssueLsc`: the certificate, or why the key was refused.
    pub fn on_lsc_issued(&mut self, issued: Result<EnrolledCert, String>, now: UnixTime) -> Step {
        if !matches!(self.state, State::Issuing) {
            return self.internal_error("certificate issued in the wrong state", now);
        }
        let cert = match issued {
            Ok(cert) => cert,
            Err(why) => return self.operation_failed(&why, now),
        };
        let mut serials = vec![self.serial_entry(&cert, SerialState::Unconfirmed)];
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
    // Authentication (§7).

    /// Checks the credential of the device's mode; credentials for other modes in the
    /// same message are ignored. The error is the status reason, in CUCM's words.
    fn authenticate(
        &mut self,
        rec: &DeviceRecord,
        auth: &AuthResponse,
        now: UnixTime,
    ) -> Result<(), String> {
        match rec.auth {
            AuthMode::Null => Ok(()),
            AuthMode::String => {
                let Some(expected) = rec.auth_string.as_deref() else {
                    return Err("No Authentication String Configured".into());
                };
                let given = auth.password.as_deref().unwrap_or_default();
                if string_matches(given, expected) {
                    Ok(())
                } else {
                    Err("Invalid Authentication String".into())
                }
            }
            AuthMode::Lsc => {
                self.authenticate_certificate(rec, auth, [CertKind::Lsc, CertKind::Mic], now)
            }
            AuthMode::Mic => {
                self.authenticate_certificate(rec, auth, [CertKind::Mic, CertKind::Lsc], now)
            }
        }
    }

    /// "By existing certificate": the certificate is tried as each kind in precedence
    /// order. It counts as that kind when it chains to that kind's anchors; then the
    /// possession proofs, the SUDI proof, the binding to the device and (for an LSC)
    /// identity with the LSC capf issued to this device must all hold.
    fn authenticate_certificate(
        &mut self,
        rec: &DeviceRecord,
        auth: &AuthResponse,
        order: [CertKind; 2],
        now: UnixTime,
    ) -> Result<(), String> {
        let Some(anchors) = self.policy.trust.clone() else {
            return Err("Certificate Authentication Not Available".into());
        };
        let Some(cert) = &auth.certificate else {
            return Err("Invalid Credentials".into());
        };
        if self.policy.require_sudi && auth.sudi.is_none() {
            return Err("Invalid Credentials: SUDI Required".into());
        }
        let mut failure = String::from("Invalid Credentials");
        for kind in order {
            let policy = ChainPolicy {
                allow_expired: kind == CertKind::Mic && self.policy.allow_expired_mic,
            };
            let set = match kind {
                CertKind::Lsc => anchors.lsc_issuers(),
                CertKind::Mic => anchors.mic_anchors(),
            };
            let label = match kind {
                CertKind::Lsc => "Invalid LSC",
                CertKind::Mic => "Invalid MIC",
            };
            match trust::verify_chain(&cert.der, set, now, &policy) {
                // Not issued under this kind's anchors: try the other kind.
                Err(TrustError::UntrustedIssuer { .. }) => continue,
                Err(e) => {
                    tracing::info!(session = self.id, device = %rec.name, "{label}: {e}");
                    note_failure(&mut failure, label);
                    continue;
                }
                Ok(_) => {}
            }
            if let Err(e) =
                trust::verify_certificate_auth(auth, kind, self.id, &anchors, now, &policy)
            {
                tracing::info!(session = self.id, device = %rec.name, "{label}: {e}");
                note_failure(&mut failure, label);
                continue;
            }
            match kind {
                CertKind::Lsc => {
                    // It must be the LSC capf issued to (or recorded for) this device:
                    // a valid LSC of another phone chains and signs just as well.
                    let known = [rec.lsc.as_ref(), rec.unconfirmed_lsc.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|c| c.der == cert.der);
                    if !known {
                        tracing::info!(session = self.id, device = %rec.name, "LSC is not the one issued to this device");
                        note_failure(&mut failure, label);
                        continue;
                    }
                }
                CertKind::Mic => match crate::ca::cert_info(&cert.der) {
                    Ok(info) => self.verified_mic = Some(info),
                    Err(_) => {
                        note_failure(&mut failure, label);
                        continue;
                    }
                },
            }
            self.summary.auth_certificate = Some(kind);
            return Ok(());
        }
        Err(failure)
    }

    /// Records the authentication (and a verified MIC) with the step that starts the
    /// operation, so failures reset even if the operation then stalls.
    fn with_verified_mic(&mut self, mut step: Step, now: UnixTime) -> Step {
        if step.commit.is_none() && self.summary.auth_certificate.is_some() {
            let mut event = self.event("authenticated", "Authenticated By Certificate", now);
            if let Some(mic) = &self.verified_mic {
                event
                    .details
                    .insert("mic_md5".into(), mic.md5.clone().into());
            }
            let change = DeviceChange::Authenticated {
                now,
                status: None,
                mic: self.verified_mic.take(),
            };
            step.commit = Some(Box::new(self.commit(Some(change), event)));
        }
        step
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
        let mut serials = vec![self.serial_entry(&cert, SerialState::Installed)];
        let previous = self.device.as_ref().and_then(|d| d.lsc.as_ref());
        if let Some(old) = previous.filter(|old| old.serial != cert.serial) {
            serials.push(self.serial_entry(old, SerialState::Superseded));
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
                    serials.push(self.serial_entry(old, SerialState::Superseded));
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

    /// An entry of the serial index. `issued` is the certificate's own notBefore, so
    /// every state change of a serial keeps the same issue time.
    fn serial_entry(&self, cert: &EnrolledCert, state: SerialState) -> (String, SerialRecord) {
        let record = SerialRecord {
            device: self.device_name(),
            state,
            issued: cert.not_before,
        };
        (cert.serial.clone(), record)
    }

    /// A previously issued, never confirmed LSC is replaced by the new one.
    fn superseded_unconfirmed(&self) -> Option<(String, SerialRecord)> {
        let old = self.device.as_ref()?.unconfirmed_lsc.as_ref()?;
        Some(self.serial_entry(old, SerialState::Superseded))
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
        if let Some(k) = self.summary.auth_certificate {
            details.insert("authenticated_by".into(), k.to_string().into());
        }
        if !self.tls.version.is_empty() {
            details.insert("tls".into(), self.tls.version.clone().into());
            details.insert("cipher".into(), self.tls.cipher.clone().into());
        }
        if self.tls.legacy {
            details.insert("legacy_tls".into(), true.into());
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

/// Keeps the first specific reason: the kind tried first (the device's precedence) is
/// the one the operator wants to hear about.
fn note_failure(failure: &mut String, label: &str) {
    if failure == "Invalid Credentials" {
        *failure = label.to_string();
    }
}

/// Compares an authentication string in constant time. A length difference is not
/// secret (the string's length is visible on the phone's keypad anyway).
fn string_matches(given: &[u8], expected: &str) -> bool {
    bool::from(given.ct_eq(expected.as_bytes()))
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

#[cfg(test)]
mod tests {
    //! Whole conversations of capf-protocol.md §8, byte for byte, without a network.

    use super::*;
    use crate::protocol::{Command, SudiData};

    const ID: u32 = 0x0000_0102;
    const NOW: UnixTime = 1_800_000_000;
    const NAME: &str = "SEP001122334455";

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    fn start() -> Session {
        let (session, step) = Session::new(ID, "192.0.2.7:50000", SessionPolicy::default());
        // V1: AUTH_REQUEST, version 3, auth type NONE.
        assert_eq!(
            step.send.unwrap(),
            hex("55 01 00 00 01 02 00 08 07 00 01 03 08 00 01 00")
        );
        assert_eq!(step.next, Next::Read(Wait::Message));
        session
    }

    /// Feeds raw client bytes through the header check and the message handler.
    fn feed(session: &mut Session, bytes: &[u8]) -> Step {
        let raw: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
        match session.check_header(&raw, NOW) {
            Ok(header) => session.on_message(&header, &bytes[HEADER_LEN..], NOW),
            Err(step) => step,
        }
    }

    fn send(session: &mut Session, msg: ClientMessage) -> Step {
        feed(session, &msg.encode(ID).unwrap())
    }

    fn auth(name: &str, password: Option<&str>, version: Option<u8>) -> ClientMessage {
        ClientMessage::AuthResponse(AuthResponse {
            version,
            device_name: Some(name.into()),
            password: password.map(|p| p.as_bytes().to_vec()),
            reason: Some(Reason::UpdateCertificate),
            ..Default::default()
        })
    }

    fn device(op: Operation, mode: AuthMode) -> DeviceRecord {
        let mut d = DeviceRecord::new(NAME);
        d.operation = op;
        d.auth = mode;
        if mode == AuthMode::String {
            d.auth_string = Some("123456".into());
        }
        d.status = OperationStatus::Pending;
        d
    }

    fn end_reason(step: &Step) -> u8 {
        assert_eq!(step.next, Next::Close);
        let bytes = step.send.as_ref().expect("END_SESSION sent");
        assert_eq!(bytes[1], Command::EndSession.to_u8());
        assert_eq!(&bytes[2..6], &ID.to_be_bytes());
        *bytes.last().unwrap()
    }

    /// Applies a step's commit to `rec` the way the store would.
    fn apply(step: &Step, rec: &mut DeviceRecord) {
        if let Some(commit) = &step.commit {
            if let Some(change) = &commit.change {
                assert_eq!(
                    commit.device.as_deref(),
                    Some(rec.name.as_str()),
                    "change without its device"
                );
                change.apply(rec);
            }
        }
    }

    fn fake_cert(serial: &str) -> EnrolledCert {
        EnrolledCert {
            der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            public_key: vec![1, 2, 3],
            md5: "00".repeat(16),
            sha256: "00".repeat(32),
            serial: serial.into(),
            not_before: NOW,
            not_after: NOW + 86_400,
            key: KeySpec::Rsa { bits: 2048 },
            issuer: "CN=CAPF-test".into(),
            subject: format!("CN={NAME}"),
        }
    }

    /// Authenticates `rec` with the given message and returns the step after lookup.
    fn authenticate_with(
        session: &mut Session,
        msg: ClientMessage,
        rec: Option<DeviceRecord>,
    ) -> Step {
        let step = send(session, msg);
        assert_eq!(step.next, Next::LookupDevice(NAME.into()));
        assert!(step.send.is_none());
        session.on_device(rec, NOW)
    }

    #[test]
    fn rsa_install_with_authentication_string_commits_only_on_confirmation() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::String);
        // V2: AUTH_RESPONSE with password "123456".
        let step = feed(
            &mut s,
            &hex(
                "55 02 00 00 01 02 00 25 01 00 01 01 07 00 01 03 0B 00 07 31 32 33 34 35 36 00
                  0D 00 10 53 45 50 30 30 31 31 32 32 33 33 34 34 35 35 00",
            ),
        );
        assert_eq!(step.next, Next::LookupDevice(NAME.into()));
        let step = s.on_device(Some(rec.clone()), NOW);
        // V4: KEY_GENERATE_REQUEST RSA 2048 with KEY_TYPE for a version-3 client.
        assert_eq!(
            step.send.unwrap(),
            hex("55 03 00 00 01 02 00 09 0A 00 02 08 00 11 00 01 00")
        );
        assert_eq!(step.next, Next::Read(Wait::KeyGeneration));

        // V6, any number of times: keep-alives that restart the key-generation timer.
        for _ in 0..3 {
            let step = feed(&mut s, &hex("55 11 00 00 01 02 00 00"));
            assert_eq!(
                step,
                Step {
                    commit: None,
                    send: None,
                    next: Next::Read(Wait::KeyGeneration)
                }
            );
        }
        let spki = vec![0x30, 0x01, 0x00];
        let step = send(
            &mut s,
            ClientMessage::KeyGenerateResponse {
                public_key: Some(spki.clone()),
                reason: None,
            },
        );
        assert_eq!(
            step.next,
            Next::IssueLsc {
                device: NAME.into(),
                public_key: spki,
                key: KeySpec::Rsa { bits: 2048 }
            }
        );

        let cert = fake_cert("0a0b");
        let step = s.on_lsc_issued(Ok(cert.clone()), NOW);
        let commit = step.commit.as_ref().unwrap();
        assert!(!commit.durable);
        assert_eq!(commit.serials[0].0, "0a0b");
        assert_eq!(commit.serials[0].1.state, SerialState::Unconfirmed);
        apply(&step, &mut rec);
        assert!(rec.lsc.is_none(), "an unconfirmed LSC is never installed");
        assert_eq!(rec.unconfirmed_lsc.as_ref().unwrap().serial, "0a0b");
        let sent = step.send.as_ref().unwrap();
        assert_eq!(sent[1], Command::StoreCertificateRequest.to_u8());
        assert!(sent.ends_with(&cert.der));

        // V9: stored.
        let step = feed(&mut s, &hex("55 0A 00 00 01 02 00 04 01 00 01 01"));
        assert_eq!(end_reason(&step), 1);
        let commit = step.commit.as_ref().unwrap();
        assert!(
            commit.durable,
            "installed state must be durable before END_SESSION"
        );
        assert_eq!(commit.serials[0].1.state, SerialState::Installed);
        apply(&step, &mut rec);
        assert_eq!(rec.lsc.as_ref().unwrap().serial, "0a0b");
        assert!(rec.unconfirmed_lsc.is_none());
        assert_eq!(rec.operation, Operation::None);
        assert_eq!(rec.status, OperationStatus::UpgradeSuccess);
        assert!(s.is_ended());
        assert_eq!(s.summary().result, "Upgrade Success");
    }

    #[test]
    fn wrong_string_fails_counts_and_locks_out_after_the_limit() {
        let mut rec = device(Operation::Install, AuthMode::String);
        for attempt in 1..=10 {
            let mut s = start();
            let step = authenticate_with(
                &mut s,
                auth(NAME, Some("654321"), Some(3)),
                Some(rec.clone()),
            );
            assert_eq!(end_reason(&step), 7);
            apply(&step, &mut rec);
            assert_eq!(
                rec.status,
                OperationStatus::UpgradeFailed("Invalid Authentication String".into())
            );
            if attempt < 10 {
                assert_eq!(rec.failed_auth, attempt);
                assert!(!rec.is_locked(NOW));
            }
        }
        assert!(rec.is_locked(NOW), "locked after 10 failures");
        assert_eq!(
            rec.operation,
            Operation::Install,
            "operation stays scheduled"
        );

        // While locked even the right string is refused without being evaluated.
        let mut s = start();
        let step = authenticate_with(
            &mut s,
            auth(NAME, Some("123456"), Some(3)),
            Some(rec.clone()),
        );
        assert_eq!(end_reason(&step), 7);
        assert!(matches!(
            step.commit.as_ref().unwrap().change,
            Some(DeviceChange::Attempted { .. })
        ));

        // After the period it is evaluated again, and a success resets the count.
        let later = NOW + 601;
        let mut s = start();
        send(&mut s, auth(NAME, Some("123456"), Some(3)));
        let step = s.on_device(Some(rec.clone()), later);
        assert_eq!(step.next, Next::Read(Wait::KeyGeneration));
    }

    #[test]
    fn absent_password_is_a_wrong_string() {
        let mut s = start();
        let step = authenticate_with(
            &mut s,
            auth(NAME, None, Some(3)),
            Some(device(Operation::Install, AuthMode::String)),
        );
        assert_eq!(end_reason(&step), 7);
    }

    #[test]
    fn unknown_device_gets_reason_9_before_any_credential_check() {
        let mut s = start();
        let step = authenticate_with(&mut s, auth(NAME, Some("x"), Some(3)), None);
        // V10.
        assert_eq!(
            step.send.as_ref().unwrap(),
            &hex("55 0F 00 00 01 02 00 04 01 00 01 09")
        );
        let commit = step.commit.as_ref().unwrap();
        assert!(commit.device.is_none() && commit.change.is_none());
        assert_eq!(commit.event.result, "Unknown Device");
    }

    #[test]
    fn no_pending_operation_ends_with_reason_0() {
        let mut s = start();
        let step = authenticate_with(
            &mut s,
            auth(NAME, Some(""), Some(3)),
            Some(device(Operation::None, AuthMode::Null)),
        );
        assert_eq!(end_reason(&step), 0);
    }

    #[test]
    fn legacy_client_without_password_gets_rsa_from_an_ec_preferred_device() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        rec.key_order = KeyOrder::EcPreferred {
            curve: EcCurve::P256,
            bits: 2048,
        };
        // V3: version 2, no password, REASON last.
        let step = feed(
            &mut s,
            &hex(
                "55 02 00 00 01 02 00 1B 07 00 01 02 0D 00 10 53 45 50 30 30 31 31 32 32 33 33
                  34 34 35 35 00 01 00 01 01",
            ),
        );
        assert_eq!(step.next, Next::LookupDevice(NAME.into()));
        let step = s.on_device(Some(rec), NOW);
        // KEY_SIZE alone, as CUCM sent it to a version-2 client.
        assert_eq!(
            step.send.unwrap(),
            hex("55 03 00 00 01 02 00 05 0A 00 02 08 00")
        );
        let step = send(
            &mut s,
            ClientMessage::KeyGenerateResponse {
                public_key: Some(vec![0x30, 0x00]),
                reason: None,
            },
        );
        assert!(matches!(
            step.next,
            Next::IssueLsc {
                key: KeySpec::Rsa { bits: 2048 },
                ..
            }
        ));
    }

    #[test]
    fn version_3_client_gets_ec_on_the_configured_curve() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        rec.key_order = KeyOrder::Ec {
            curve: EcCurve::P384,
        };
        let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec));
        // V5: KEY_TYPE EC, CURVE secp384r1.
        assert_eq!(
            step.send.unwrap(),
            hex("55 03 00 00 01 02 00 08 11 00 01 01 12 00 01 01")
        );
    }

    #[test]
    fn ec_only_device_refuses_a_legacy_client() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        rec.key_order = KeyOrder::Ec {
            curve: EcCurve::P256,
        };
        let step = authenticate_with(&mut s, auth(NAME, None, Some(2)), Some(rec.clone()));
        assert_eq!(end_reason(&step), 7);
        apply(&step, &mut rec);
        assert_eq!(
            rec.status,
            OperationStatus::UpgradeFailed("Client Cannot Generate EC Keys".into())
        );
    }

    #[test]
    fn phone_that_drops_after_receiving_its_certificate_leaves_the_operation_pending() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        send(
            &mut s,
            ClientMessage::KeyGenerateResponse {
                public_key: Some(vec![0x30, 0x00]),
                reason: None,
            },
        );
        let step = s.on_lsc_issued(Ok(fake_cert("01")), NOW);
        apply(&step, &mut rec);
        let step = s.on_eof(NOW);
        assert!(step.send.is_none());
        assert_eq!(step.next, Next::Close);
        apply(&step, &mut rec);
        assert!(rec.lsc.is_none());
        assert_eq!(rec.operation, Operation::Install);
        assert_eq!(
            rec.status,
            OperationStatus::UpgradeFailed("Connection Closed".into())
        );
        assert_eq!(rec.unconfirmed_lsc.as_ref().unwrap().serial, "01");
    }

    #[test]
    fn phone_that_refuses_to_store_gets_reason_1_and_stays_pending() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        send(
            &mut s,
            ClientMessage::KeyGenerateResponse {
                public_key: Some(vec![0x30, 0x00]),
                reason: None,
            },
        );
        s.on_lsc_issued(Ok(fake_cert("01")), NOW);
        let step = send(
            &mut s,
            ClientMessage::StoreCertificateResponse {
                reason: Some(Reason::InvalidElement),
            },
        );
        assert_eq!(end_reason(&step), 1);
        apply(&step, &mut rec);
        assert!(rec.lsc.is_none());
        assert_eq!(rec.operation, Operation::Install);
    }

    #[test]
    fn key_generation_failures_and_refused_keys_end_with_7() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        let step = send(
            &mut s,
            ClientMessage::KeyGenerateResponse {
                public_key: None,
                reason: Some(Reason::InvalidElement),
            },
        );
        assert_eq!(end_reason(&step), 7);
        apply(&step, &mut rec);
        assert_eq!(
            rec.status,
            OperationStatus::UpgradeFailed("Key Generation Failed".into())
        );

        let mut s = start();
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        send(
            &mut s,
            ClientMessage::KeyGenerateResponse {
                public_key: Some(vec![0x30, 0x00]),
                reason: None,
            },
        );
        let step = s.on_lsc_issued(
            Err("key size 1024 does not match the requested 2048".into()),
            NOW,
        );
        assert_eq!(end_reason(&step), 7);
        apply(&step, &mut rec);
        assert!(matches!(rec.status, OperationStatus::UpgradeFailed(ref r) if r.contains("1024")));
        assert!(rec.unconfirmed_lsc.is_none());
    }

    #[test]
    fn timeout_while_waiting_for_the_key_ends_with_7() {
        let mut s = start();
        let mut rec = device(Operation::Install, AuthMode::Null);
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        let step = s.on_timeout(NOW);
        assert_eq!(end_reason(&step), 7);
        apply(&step, &mut rec);
        assert_eq!(rec.status, OperationStatus::UpgradeFailed("Timeout".into()));
        assert_eq!(rec.operation, Operation::Install);
    }

    #[test]
    fn delete_clears_the_lsc_only_when_the_phone_confirms() {
        let mut rec = device(Operation::Delete, AuthMode::Null);
        rec.lsc = Some(fake_cert("0c"));
        let mut s = start();
        let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        assert_eq!(step.send.unwrap(), hex("55 0D 00 00 01 02 00 00"));
        let step = s.on_eof(NOW);
        apply(&step, &mut rec);
        assert!(rec.lsc.is_some(), "no confirmation, nothing deleted");

        let mut s = start();
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        let step = send(
            &mut s,
            ClientMessage::DeleteCertificateResponse {
                reason: Some(Reason::UpdateCertificate),
            },
        );
        assert_eq!(end_reason(&step), 1);
        let commit = step.commit.as_ref().unwrap();
        assert!(commit.durable);
        assert_eq!(
            commit.serials,
            vec![(
                "0c".to_string(),
                SerialRecord {
                    device: NAME.into(),
                    state: SerialState::Superseded,
                    issued: NOW
                }
            )]
        );
        apply(&step, &mut rec);
        assert!(rec.lsc.is_none());
        assert_eq!(rec.status, OperationStatus::DeleteSuccess);
        assert_eq!(rec.operation, Operation::None);
    }

    #[test]
    fn troubleshoot_records_the_certificate_only_when_it_parses() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![NAME.to_string()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();

        let mut rec = device(Operation::Troubleshoot, AuthMode::Null);
        let mut s = start();
        let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        assert_eq!(step.send.unwrap(), hex("55 0B 00 00 01 02 00 00"));
        let step = send(
            &mut s,
            ClientMessage::FetchCertificateResponse {
                reason: Some(Reason::UpdateCertificate),
                certificate: Some(WrappedCertificate {
                    cert_type: CertificateType::Lsc,
                    der: der.clone(),
                }),
            },
        );
        assert_eq!(end_reason(&step), 0);
        apply(&step, &mut rec);
        assert_eq!(rec.lsc.as_ref().unwrap().der, der);
        assert_eq!(rec.status, OperationStatus::TroubleshootSuccess);

        // A certificate that does not parse is not recorded.
        let mut rec = device(Operation::Troubleshoot, AuthMode::Null);
        let mut s = start();
        authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        let step = send(
            &mut s,
            ClientMessage::FetchCertificateResponse {
                reason: Some(Reason::UpdateCertificate),
                certificate: Some(WrappedCertificate {
                    cert_type: CertificateType::Lsc,
                    der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
                }),
            },
        );
        assert_eq!(end_reason(&step), 7);
        apply(&step, &mut rec);
        assert!(rec.lsc.is_none());
        assert_eq!(
            rec.status,
            OperationStatus::TroubleshootFailed("Invalid Certificate".into())
        );
    }

    #[test]
    fn late_request_is_refused_and_says_so() {
        let mut rec = device(Operation::Install, AuthMode::Null);
        rec.deadline = Some(NOW - 1);
        let mut s = start();
        let step = authenticate_with(&mut s, auth(NAME, Some(""), Some(3)), Some(rec.clone()));
        assert_eq!(end_reason(&step), 7);
        apply(&step, &mut rec);
        assert_eq!(
            rec.status,
            OperationStatus::UpgradeFailed("Late Request".into())
        );
    }

    #[test]
    fn malformed_and_unexpected_input_ends_with_7() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("wrong protocol id (R2)", hex("54 02 00 00 01 02 00 00")),
            ("wrong session id (R3)", hex("55 02 00 00 01 03 00 00")),
            ("payload over the cap (R4)", hex("55 02 00 00 01 02 FF FF")),
            (
                "element overrun (R4)",
                hex("55 02 00 00 01 02 00 04 0D 00 09 41"),
            ),
            (
                "fixed size wrong (R4)",
                hex("55 02 00 00 01 02 00 05 07 00 02 03 00"),
            ),
            ("server-only command (R7)", hex("55 01 00 00 01 02 00 00")),
            (
                "response in the wrong state (R7)",
                hex("55 0A 00 00 01 02 00 04 01 00 01 01"),
            ),
        ];
        for (what, bytes) in cases {
            let mut s = start();
            let step = feed(&mut s, &bytes);
            assert_eq!(end_reason(&step), 7, "{what}");
            assert!(s.is_ended(), "{what}");
        }

        let bad_auth = vec![
            ("version 4 (R12)", auth(NAME, Some(""), Some(4))),
            (
                "no device name (R8)",
                ClientMessage::AuthResponse(AuthResponse {
                    version: Some(3),
                    ..Default::default()
                }),
            ),
            (
                "path in device name (R8)",
                auth("../../etc/passwd", Some(""), Some(3)),
            ),
        ];
        for (what, msg) in bad_auth {
            let mut s = start();
            let step = send(&mut s, msg);
            assert_eq!(end_reason(&step), 7, "{what}");
            assert!(
                step.commit.is_none(),
                "{what}: nothing recorded for an unnamed device"
            );
        }

        // Duplicate DEVICE_NAME (R6).
        let mut s = start();
        let step = feed(
            &mut s,
            &hex("55 02 00 00 01 02 00 0A 0D 00 02 41 00 0D 00 02 42 00"),
        );
        assert_eq!(end_reason(&step), 7);
    }

    #[test]
    fn nothing_is_evaluated_after_end_session() {
        let mut s = start();
        let step = authenticate_with(&mut s, auth(NAME, None, Some(3)), None);
        assert_eq!(end_reason(&step), 9);
        let step = s.on_eof(NOW);
        assert_eq!(step, close());
        let step = s.on_timeout(NOW);
        assert_eq!(step, close());
    }

    #[test]
    fn certificate_mode_without_trust_anchors_fails_closed() {
        let mut s = start();
        let mut msg = auth(NAME, None, Some(3));
        if let ClientMessage::AuthResponse(a) = &mut msg {
            a.sudi = Some(SudiData {
                certificate: vec![0x30, 0x00],
                sha1_signature: vec![],
                sha2_hash: crate::protocol::HashId::Sha512,
                sha2_signature: vec![],
            });
        }
        let step = authenticate_with(&mut s, msg, Some(device(Operation::Install, AuthMode::Lsc)));
        assert_eq!(end_reason(&step), 7);
    }
}
