//! Drives one `Session` over one connection: applies each step's commit, sends its
//! message, and performs its next action (read with a timeout, look a device up,
//! issue an LSC), until the session closes.

use super::connection::Connection;
use super::Shared;
use crate::model::now;
use crate::session::{Next, Session, Step, TlsInfo, Wait};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

pub async fn run_session<S>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
    session_id: u32,
    tls: TlsInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let deadline = started + shared.settings.session_timeout();
    let mut conn = Connection::new(stream);
    let (mut session, mut step) = Session::new(session_id, peer.to_string(), shared.policy.clone());
    session.set_tls(tls.clone());

    loop {
        if let Some(commit) = step.commit.take() {
            if let Err(e) = shared.writer.write(*commit).await {
                // Never tell a phone anything the store did not record.
                tracing::error!(session = session_id, %peer, "store error: {e}");
                step = session.abort("store error");
                step.commit = None;
            }
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
            Next::LookupDevice(name) => match shared.store.get_device(&name) {
                Ok(record) => session.on_device(record, now()),
                Err(e) => {
                    tracing::error!(session = session_id, %peer, device = %name, "store error: {e}");
                    session.abort("store error")
                }
            },
            Next::IssueLsc {
                device,
                public_key,
                key,
            } => {
                let issued = crate::ca::check_public_key(&public_key, key)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        shared
                            .ca
                            .issue_lsc(&device, &public_key, now())
                            .map_err(|e| e.to_string())
                    });
                session.on_lsc_issued(issued, now())
            }
            Next::Read(wait) => read_message(shared, &mut conn, &mut session, wait, deadline).await,
        };
    }
    conn.shutdown().await;

    let s = session.summary();
    if matches!(s.end_reason, Some(7) | Some(9)) {
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
}

/// Reads one message within the wait's timeout (R13) and hands it to the session.
async fn read_message<S>(
    shared: &Shared,
    conn: &mut Connection<S>,
    session: &mut Session,
    wait: Wait,
    deadline: Instant,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = match wait {
        Wait::Message => shared.settings.message_timeout(),
        Wait::KeyGeneration => shared.settings.keygen_timeout(),
    };
    let until = deadline.min(Instant::now() + first);
    let raw = match timeout_at(until, conn.read_header()).await {
        Err(_) => return session.on_timeout(now()),
        Ok(Ok(Some(raw))) => raw,
        Ok(Ok(None)) | Ok(Err(_)) => return session.on_eof(now()),
    };
    let header = match session.check_header(&raw, now()) {
        Ok(h) => h,
        Err(step) => return step,
    };
    // The rest of a message that has begun must follow promptly, whatever the wait.
    let until = deadline.min(Instant::now() + shared.settings.message_timeout());
    let payload = match timeout_at(until, conn.read_payload(usize::from(header.payload_len))).await
    {
        Err(_) => return session.on_timeout(now()),
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) | Ok(Err(_)) => return session.on_eof(now()),
    };
    session.on_message(&header, &payload, now())
}
