//! The driver: one phone's connection, from the TLS handshake to close. It runs one
//! `Session` over the TLS stream: it applies each step's commit (through the store
//! writer), sends its message, and performs its next action (read with a timeout, look
//! a device up, issue an LSC), until the session closes.
//!
//! `Connection` reads and writes whole CAPF messages on the stream (after mini-redis'
//! `connection.rs`); it is generic over the stream so every TLS backend shares it.

use super::tls::Acceptor;
use super::turns::DeviceTurn;
use super::Shared;
use crate::model::now;
use crate::net::{AttemptSlot, Refusal, Slot};
use crate::protocol::HEADER_LEN;
use crate::session::{Next, Session, Step, TlsInfo, Wait};
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// TLS handshake (off the accept loop, with its own timeout, R13), then the session.
/// Until the phone's first message has arrived the connection may be told to give way
/// to a newer one (`slot`, see `net::Connections`).
pub(super) async fn serve_connection(
    shared: &Shared,
    acceptor: Acceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    mut slot: Slot,
) {
    // Every CAPF message is one small write answered by the phone: Nagle only adds delay.
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(shared.settings.handshake_timeout(), acceptor.accept(tcp));
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        () = slot.give_way() => {
            tracing::debug!(%peer, "closed in its TLS handshake to make room for a new connection");
            return;
        }
    };
    let (tls, info) = match accepted {
        Ok(Ok(accepted)) => accepted,
        // Counted against the address's standing, never as a failed session: phones
        // behind one NAT must not be locked out by one client that cannot do TLS.
        Ok(Err(e)) => {
            slot.stalled();
            tracing::info!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            slot.stalled();
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let id = shared.ids.allocate();
    run_session(shared, tls, peer, id.get(), info, &mut slot).await;
}

pub async fn run_session<S>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
    session_id: u32,
    tls: TlsInfo,
    slot: &mut Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let deadline = started + shared.settings.session_timeout();
    let mut conn = Connection::new(stream);
    // The session ended before the client said anything.
    let mut silent = false;
    let (mut session, mut step) = Session::new(session_id, peer.to_string(), shared.policy.clone());
    session.set_tls(tls.clone());

    // The device's turn and the address's attempt, held from the device lookup until
    // the outcome of the authentication is committed (server/turns.rs, net/limits.rs).
    let mut authenticating: Option<(DeviceTurn<'_>, AttemptSlot<'_>)> = None;
    // Whether this session's failure is already counted against the address.
    let mut failure_counted = false;
    loop {
        if let Some(commit) = step.commit.take() {
            if let Err(e) = shared.writer.write(*commit).await {
                // Never tell a phone anything the store did not record.
                tracing::error!(session = session_id, %peer, "store error: {e}");
                step = session.abort("store error");
                step.commit = None;
            }
        }
        if let Some((turn, attempt)) = authenticating.take() {
            if matches!(session.summary().end_reason, Some(7) | Some(9)) {
                attempt.failed();
                failure_counted = true;
            }
            drop(turn);
        }
        if let Some(bytes) = step.send.take() {
            if let Err(e) = conn.write_message(&bytes).await {
                tracing::debug!(session = session_id, %peer, "write failed: {e}");
                step = session.on_eof(now());
                if let Some(commit) = step.commit.take() {
                    if let Err(e) = shared.writer.write(*commit).await {
                        tracing::error!(session = session_id, %peer, "store error: {e}");
                    }
                }
                break;
            }
        }
        step = match step.next {
            Next::Close => break,
            Next::LookupDevice(name) => {
                let wait = shared.settings.message_timeout();
                let turn = tokio::time::timeout(wait, shared.turns.take(&name)).await;
                let attempt = match turn {
                    Ok(Ok(turn)) => shared
                        .failures
                        .reserve(peer.ip(), wait)
                        .await
                        .map(|attempt| Some((turn, attempt))),
                    Ok(Err(e)) => {
                        tracing::error!(session = session_id, %peer, device = %name, "store error: {e}");
                        Ok(None)
                    }
                    Err(_) => Err(Refusal::Busy),
                };
                match attempt {
                    Ok(None) => {
                        // Nothing was evaluated: nothing counts against the address.
                        failure_counted = true;
                        session.abort("store error")
                    }
                    Ok(Some(held)) => {
                        authenticating = Some(held);
                        let read = name.clone();
                        match shared.store.read_async(move |s| s.get_device(&read)).await {
                            Ok(record) => session.on_device(record, now()),
                            Err(e) => {
                                tracing::error!(session = session_id, %peer, device = %name, "store error: {e}");
                                session.abort("store error")
                            }
                        }
                    }
                    Err(refusal) => {
                        // Not an attempt: nothing was evaluated, so nothing more counts.
                        failure_counted = true;
                        session.refuse(match refusal {
                            Refusal::TooManyFailures => "Too Many Failures From This Address",
                            Refusal::Busy => "Busy: Other Attempts In Flight",
                        })
                    }
                }
            }
            Next::IssueLsc {
                device,
                public_key,
                key,
            } => {
                let checked = match crate::ca::check_public_key(&public_key, key) {
                    Ok(()) => refuse_held_key(shared, &device, &public_key).await,
                    Err(e) => Err(e.to_string()),
                };
                let issued = checked.and_then(|()| {
                    shared
                        .ca
                        .issue_lsc(&device, &public_key, now())
                        .map_err(|e| e.to_string())
                });
                session.on_lsc_issued(issued, now())
            }
            Next::Read(wait) if slot.has_progressed() => {
                read_message(shared, &mut conn, &mut session, wait, deadline)
                    .await
                    .0
            }
            // The first message: until it arrives the connection may have to give way.
            Next::Read(wait) => {
                let read = read_message(shared, &mut conn, &mut session, wait, deadline);
                let read = tokio::select! {
                    read = read => Some(read),
                    () = slot.give_way() => None,
                };
                match read {
                    Some((step, Heard::Message)) if slot.progress() => step,
                    Some((step, Heard::Part)) => step,
                    Some((step, Heard::Nothing)) => {
                        silent = true;
                        step
                    }
                    // Told to give way (already counted against the address).
                    Some((_, Heard::Message)) | None => {
                        tracing::debug!(session = session_id, %peer, "closed before its first message to make room for a new connection");
                        session.on_eof(now())
                    }
                }
            }
        };
    }
    conn.shutdown().await;

    let s = session.summary();
    if silent {
        // No first message in time: a stall of the address, not a failed session, for
        // the same reason as a handshake that timed out. (A connection closed to make
        // room was counted as a stall when it was told to.)
        slot.stalled();
    } else if !failure_counted && matches!(s.end_reason, Some(7) | Some(9)) {
        shared
            .failures
            .record_failure(peer.ip(), Instant::now().into_std());
    }
    tracing::info!(
        target: "capf::session",
        session = session_id,
        %peer,
        device = s.device.as_deref().unwrap_or("-"),
        auth = %s.auth.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        operation = %s.operation.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
        version = s.version.unwrap_or(0),
        result = %s.result,
        reason = s.end_reason.map(i32::from).unwrap_or(-1),
        tls = %tls.version,
        cipher = %tls.cipher,
        legacy_tls = tls.legacy,
        duration_ms = started.elapsed().as_millis() as u64,
        "session ended"
    );
    shared.metrics.session_ended(s, started.elapsed());
}

/// A phone's new key must not be one capf holds or has certified for another device:
/// the protocol has no proof of possession, so without this check anyone could have
/// capf certify its own CA or signer key, or another phone's key, under a device name
/// (and capf would then encrypt that device's configuration to a key someone else
/// holds). The phone's own current key may come back: a re-install keeping its key.
async fn refuse_held_key(shared: &Shared, device: &str, public_key: &[u8]) -> Result<(), String> {
    let identity = crate::ca::key_identity(public_key).map_err(|e| e.to_string())?;
    if let Some((_, what)) = shared.own_keys.iter().find(|(own, _)| *own == identity) {
        return Err(format!("Refused Key: the key is {what}"));
    }
    let key = public_key.to_vec();
    match shared
        .store
        .read_async(move |s| s.device_holding_key(&key))
        .await
    {
        Ok(Some(holder)) if holder != device => Err(format!(
            "Refused Key: the key is certified for device {holder}"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("store error: {e}")),
    }
}

/// How much of a message arrived before `read_message` returned.
enum Heard {
    /// Nothing: the wait timed out or the client closed.
    Nothing,
    /// A header, but not the whole message (or a header the session refused).
    Part,
    /// A whole message, handed to the session.
    Message,
}

/// Reads one message within the wait's timeout (R13) and hands it to the session.
async fn read_message<S>(
    shared: &Shared,
    conn: &mut Connection<S>,
    session: &mut Session,
    wait: Wait,
    deadline: Instant,
) -> (Step, Heard)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = match wait {
        Wait::Message => shared.settings.message_timeout(),
        Wait::KeyGeneration => shared.settings.keygen_timeout(),
    };
    let until = deadline.min(Instant::now() + first);
    let raw = match timeout_at(until, conn.read_header()).await {
        Err(_) => return (session.on_timeout(now()), Heard::Nothing),
        Ok(Ok(Some(raw))) => raw,
        Ok(Ok(None)) | Ok(Err(_)) => return (session.on_eof(now()), Heard::Nothing),
    };
    let header = match session.check_header(&raw, now()) {
        Ok(h) => h,
        Err(step) => return (step, Heard::Part),
    };
    // The rest of a message that has begun must follow promptly, whatever the wait.
    let until = deadline.min(Instant::now() + shared.settings.message_timeout());
    let payload = match timeout_at(until, conn.read_payload(usize::from(header.payload_len))).await
    {
        Err(_) => return (session.on_timeout(now()), Heard::Part),
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) | Ok(Err(_)) => return (session.on_eof(now()), Heard::Part),
    };
    (session.on_message(&header, &payload, now()), Heard::Message)
}

/// One CAPF connection: a stream plus the buffer of the message being read.
pub struct Connection<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Connection { stream }
    }

    /// Reads exactly one header, looping over short reads (R1). `Ok(None)` on a clean
    /// EOF before the first byte or in the middle of the header: there is nobody left
    /// to answer.
    pub async fn read_header(&mut self) -> io::Result<Option<[u8; HEADER_LEN]>> {
        let mut header = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut header).await {
            Ok(_) => Ok(Some(header)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads exactly `len` payload bytes (R4). The caller has checked `len` against the
    /// cap, so the allocation is bounded. `Ok(None)` on EOF.
    pub async fn read_payload(&mut self, len: usize) -> io::Result<Option<Vec<u8>>> {
        let mut payload = vec![0u8; len];
        match self.stream.read_exact(&mut payload).await {
            Ok(_) => Ok(Some(payload)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one whole message in one write and flushes (R14, §10 item 1: phones
    /// stall if the header arrives in its own TLS record).
    pub async fn write_message(&mut self, message: &[u8]) -> io::Result<()> {
        self.stream.write_all(message).await?;
        self.stream.flush().await
    }

    /// TLS close_notify, then close (R18).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
