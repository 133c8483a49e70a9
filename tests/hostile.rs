//! Hostile clients against a real node (TLS on 127.0.0.1): idle and stalled
//! connections, malformed and lying messages, floods over the session cap. Every
//! attack must be closed within its timeout while a real phone is still served, and
//! memory must stay bounded. Every loop and wait here is bounded.

mod common;

use capf::model::{AuthMode, DeviceRecord, Operation, OperationStatus};
use capf::phone::Phone;
use capf::protocol::{ClientMessage, Command, Reason, HEADER_LEN};
use capf::settings::Settings;
use common::TestNode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PHONE: &str = "SEP001122334455";
const VICTIM: &str = "SEP00112233AAAA";

/// Settings for an attacked node: short timeouts, a generous session cap, and no
/// per-address limit (every attacker and the phone share 127.0.0.1).
fn hostile_settings(s: &mut Settings) {
    s.handshake_timeout = 1;
    s.message_timeout = 1;
    // Below `Settings::validate`'s minimum of 10 on purpose: the tests build settings
    // directly, and waiting 10 s per case would only slow them down.
    s.keygen_timeout = 2;
    s.session_timeout = 30;
    s.max_sessions = 1000;
    s.max_failures_per_address = u32::MAX;
}

fn install(name: &str) -> DeviceRecord {
    common::install(name, AuthMode::Null, common::P256)
}

/// A real phone enrolls (EC P-256, null string) and the node records it.
async fn real_phone_enrolls(node: &TestNode, name: &str) {
    node.add(install(name));
    let outcome = tokio::time::timeout(Duration::from_secs(20), node.run(&Phone::new(name)))
        .await
        .expect("the real phone is served in time");
    assert_eq!(outcome.end_reason, Some(Reason::UpdateCertificate));
    assert_eq!(node.device(name).status, OperationStatus::UpgradeSuccess);
}

/// Waits (at most `limit`) for the server to close; returns what it sent and when.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "still open after {limit:?}");
    (reply, start.elapsed())
}

/// The END_SESSION reason of a reply that is exactly one END_SESSION for `id`.
fn end_reason(reply: &[u8], id: u32) -> u8 {
    assert_eq!(reply.len(), HEADER_LEN + 4, "one END_SESSION: {reply:02x?}");
    assert_eq!(reply[1], Command::EndSession.to_u8());
    assert_eq!(&reply[2..6], &id.to_be_bytes());
    reply[HEADER_LEN + 3]
}

fn header(command: u8, id: u32, len: u16) -> Vec<u8> {
    let mut h = vec![0x55, command];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A small deterministic generator for the garbage (no test depends on luck).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_do_not_starve_a_phone() {
    let node = TestNode::start_with(hostile_settings).await;
    let before = rss_kib();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(node.addr).await.unwrap());
    }
    // The phone enrolls while all 300 hold a slot and never speak TLS.
    real_phone_enrolls(&node, PHONE).await;
    // Each is closed after the 1 s handshake timeout.
    for tcp in &mut idle {
        let (reply, _) = closed_within(tcp, Duration::from_secs(10)).await;
        assert!(reply.is_empty(), "nothing is sent before TLS");
    }
    drop(idle);
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sessions_are_closed_within_their_timeouts() {
    let node = TestNode::start_with(hostile_settings).await;
    node.add(install(VICTIM));

    // A TLS handshake that stops after a partial ClientHello.
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .await
        .unwrap();
    let (_, took) = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed by the handshake timeout"
    );

    // TLS up, AUTH_REQUEST received, then silence: END 7 after the message timeout.
    let (mut tls, id) = node.open_session().await;
    let (reply, took) = closed_within(&mut tls, Duration::from_secs(5)).await;
    assert_eq!(end_reason(&reply, id), 7);
    assert!(took >= Duration::from_millis(900));

    // A message that begins and never ends: half a header, then half a payload.
    for partial in [header(2, id, 40)[..5].to_vec(), {
        let mut m = header(2, 0, 40);
        m.extend_from_slice(&[1, 0, 1, 1]);
        m
    }] {
        let (mut tls, id) = node.open_session().await;
        let mut partial = partial;
        if partial.len() > 5 {
            partial[2..6].copy_from_slice(&id.to_be_bytes());
        }
        tls.write_all(&partial).await.unwrap();
        tls.flush().await.unwrap();
        let (reply, _) = closed_within(&mut tls, Duration::from_secs(5)).await;
        assert_eq!(end_reason(&reply, id), 7);
    }

    // Authenticated for an install, then silent after KEY_GENERATE_REQUEST: closed
    // after the key-generation timeout, and the operation stays pending.
    let (mut tls, id) = node.open_session().await;
    let auth = ClientMessage::AuthResponse(Phone::new(VICTIM).auth_response(id).unwrap());
    tls.write_all(&auth.encode(id).unwrap()).await.unwrap();
    tls.flush().await.unwrap();
    let mut request = [0u8; HEADER_LEN];
    tls.read_exact(&mut request).await.unwrap();
    assert_eq!(request[1], Command::KeyGenerateRequest.to_u8());
    let mut rest = vec![0u8; usize::from(u16::from_be_bytes([request[6], request[7]]))];
    tls.read_exact(&mut rest).await.unwrap();
    let (reply, took) = closed_within(&mut tls, Duration::from_secs(10)).await;
    assert_eq!(end_reason(&reply, id), 7);
    assert!(
        took >= Duration::from_millis(1900),
        "keygen timeout, took {took:?}"
    );
    let rec = node.device(VICTIM);
    assert_eq!(rec.operation, Operation::Install, "still scheduled");
    assert!(rec.lsc.is_none() && rec.unconfirmed_lsc.is_none());

    real_phone_enrolls(&node, PHONE).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_cannot_hold_a_session_past_the_session_timeout() {
    let node = TestNode::start_with(|s| {
        hostile_settings(s);
        s.session_timeout = 3;
    })
    .await;
    node.add(install(VICTIM));
    let (mut tls, id) = node.open_session().await;
    let auth = ClientMessage::AuthResponse(Phone::new(VICTIM).auth_response(id).unwrap());
    tls.write_all(&auth.encode(id).unwrap()).await.unwrap();
    let keep_alive = ClientMessage::RequestInProgress.encode(id).unwrap();
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    // REQUEST_IN_PROGRESS every 500 ms restarts the keygen timer, never the session's.
    while start.elapsed() < Duration::from_secs(10) {
        if tls.write_all(&keep_alive).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "closed by the session timeout, took {took:?}"
    );
    // KEY_GENERATE_REQUEST, then END 7.
    let end = received
        .len()
        .checked_sub(HEADER_LEN + 4)
        .expect("END_SESSION");
    assert_eq!(end_reason(&received[end..], id), 7);
    assert_eq!(node.device(VICTIM).operation, Operation::Install);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_end_the_session_at_once() {
    // A long message timeout: every close below must come from the check, not a timer.
    let node = TestNode::start_with(|s| {
        hostile_settings(s);
        s.message_timeout = 10;
    })
    .await;
    let prompt = Duration::from_secs(5);

    let auth_payload = {
        let full = ClientMessage::AuthResponse(Phone::new(PHONE).auth_response(0).unwrap())
            .encode(0)
            .unwrap();
        full[HEADER_LEN..].to_vec()
    };
    let len = u16::try_from(auth_payload.len()).unwrap();
    type Attack = fn(u32, &[u8], u16) -> Vec<u8>;
    let attacks: [(&str, Attack); 6] = [
        ("wrong protocol id", |id, p, len| {
            let mut m = header(2, id, len);
            m[0] = 0x56;
            m.extend_from_slice(p);
            m
        }),
        ("wrong session id", |id, p, len| {
            let mut m = header(2, id ^ 1, len);
            m.extend_from_slice(p);
            m
        }),
        ("oversize announcement", |id, _, _| header(2, id, u16::MAX)),
        ("length shorter than the elements", |id, p, len| {
            let mut m = header(2, id, len - 3);
            m.extend_from_slice(&p[..p.len() - 3]);
            m
        }),
        ("element overrunning the payload", |id, _, _| {
            let mut m = header(2, id, 4);
            m.extend_from_slice(&[0x0D, 0x00, 0xFF, 0x41]);
            m
        }),
        ("a command clients never send", |id, p, len| {
            let mut m = header(Command::KeyGenerateRequest.to_u8(), id, len);
            m.extend_from_slice(p);
            m
        }),
    ];
    for (what, attack) in attacks {
        let (mut tls, id) = node.open_session().await;
        tls.write_all(&attack(id, &auth_payload, len))
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let (reply, took) = closed_within(&mut tls, prompt).await;
        assert_eq!(end_reason(&reply, id), 7, "{what}");
        assert!(took < prompt, "{what}");
    }

    // Element soup: random TLVs behind an honest AUTH_RESPONSE header.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..40 {
        let (mut tls, id) = node.open_session().await;
        let n = 1 + (rng.next() % 600) as usize;
        let soup = rng.bytes(n);
        let mut m = header(2, id, u16::try_from(n).unwrap());
        m.extend_from_slice(&soup);
        tls.write_all(&m).await.unwrap();
        tls.flush().await.unwrap();
        let (reply, _) = closed_within(&mut tls, prompt).await;
        let reason = end_reason(&reply, id);
        assert!(matches!(reason, 7 | 9), "round {round}: reason {reason}");
    }

    real_phone_enrolls(&node, PHONE).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_the_cap_closes_the_oldest_idle_connections_at_once() {
    let node = TestNode::start_with(|s| {
        hostile_settings(s);
        s.max_sessions = 20;
        s.handshake_timeout = 5;
    })
    .await;
    let before = rss_kib();
    // Twenty idle connections take every slot.
    let mut held = std::collections::VecDeque::new();
    for _ in 0..20 {
        held.push_back(TcpStream::connect(node.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Each connection above the cap takes the place of the oldest idle one, which is
    // closed at once, long before the handshake timeout.
    let start = Instant::now();
    for _ in 0..300 {
        held.push_back(TcpStream::connect(node.addr).await.unwrap());
        let mut oldest = held.pop_front().unwrap();
        let (reply, _) = closed_within(&mut oldest, Duration::from_secs(3)).await;
        assert!(reply.is_empty());
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");

    // A real phone is served while the last twenty still hold their places.
    real_phone_enrolls(&node, PHONE).await;
    drop(held);
    node.stop().await;
}
