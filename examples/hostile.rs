//! Hostile clients against a running capf, for a bounded time, with a summary of how
//! the server answered each attack and whether real phones were served meanwhile.
//!
//! ```text
//! cargo run --release --example hostile -- --addr 127.0.0.1:3804 \
//!     --capf-cert capf-data/certs/capf.pem --seconds 60 --phone SEP001122334455 \
//!     --http 127.0.0.1:6970 --tftp 127.0.0.1:69
//! ```
//!
//! Each round first runs the floods, and while they go on real phones are served:
//!
//! * CAPF: `--idle` connections that never start TLS and as many that stop half-way
//!   through a ClientHello, opened one after another and held;
//! * HTTP (`--http`): the same number of connections that never send a request and
//!   that send the first bytes of one and stop (slowloris);
//! * TFTP (`--tftp`): `--tftp-flood` read requests asking for a 255 s retransmission
//!   timeout, and as many without options, none ever acknowledged (what a forged
//!   source sends), with the bytes each drew back counted: the amplification factor;
//! * meanwhile, with `--phone`, a real phone (scheduled for install with null
//!   authentication) enrolls, and every round a real phone fetches `ITLFile.tlv` over
//!   HTTP and TFTP. Each must be served within `--served-within` seconds.
//!
//! Then come the attacks on the CAPF protocol: a TLS handshake that stops half-way, a
//! session silent after AUTH_REQUEST, half a header, wrong protocol and session ids,
//! an oversize announcement, a length that lies, TLV garbage, and a burst of
//! connections.
//!
//! The enrollment runs during the first round's floods, before the protocol attacks:
//! those end in failed sessions, and once this address has caused
//! `max_failures_per_address` of them capf closes its connections at accept (a
//! defence being exercised; it shows up as "closed before TLS"). Floods of idle,
//! slow or silent connections are not failed sessions and never trip that limit.

use capf::phone::{connector, http_request, tftp_get, Phone};
use capf::protocol::{ClientMessage, Command, Reason, HEADER_LEN};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

#[derive(Parser)]
struct Args {
    /// capf address.
    #[arg(long, default_value = "127.0.0.1:3804")]
    addr: SocketAddr,
    /// The CAPF certificate to trust (PEM).
    #[arg(long, default_value = "capf-data/certs/capf.pem")]
    capf_cert: PathBuf,
    /// How long to attack.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Idle TCP connections opened per round (and as many that stall half-way), on
    /// CAPF and on HTTP.
    #[arg(long, default_value_t = 300)]
    idle: usize,
    /// capf's HTTP delivery address, to flood and to fetch from.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// capf's TFTP delivery address, to flood and to fetch from.
    #[arg(long)]
    tftp: Option<SocketAddr>,
    /// Unacknowledged TFTP read requests per round, of each kind.
    #[arg(long, default_value_t = 130)]
    tftp_flood: usize,
    /// Longest a real phone may take to be served during the floods, seconds.
    #[arg(long, default_value_t = 10)]
    served_within: u64,
    /// Connections in each burst.
    #[arg(long, default_value_t = 300)]
    burst: usize,
    /// A device scheduled for install (null string) that a real phone enrolls.
    #[arg(long)]
    phone: Option<String>,
    /// Longest wait for the server to close one connection.
    #[arg(long, default_value_t = 150)]
    max_wait: u64,
}

/// How the server ended one attack.
#[derive(Default)]
struct Tally {
    attempts: u32,
    /// END_SESSION reasons received, or "no END_SESSION" / "closed before TLS".
    endings: BTreeMap<String, u32>,
    still_open: u32,
    slowest: Duration,
}

impl Tally {
    fn record(&mut self, ending: String, took: Option<Duration>) {
        self.attempts += 1;
        match took {
            Some(t) => {
                self.slowest = self.slowest.max(t);
                *self.endings.entry(ending).or_default() += 1;
            }
            None => self.still_open += 1,
        }
    }
}

struct Attacker {
    addr: SocketAddr,
    connector: TlsConnector,
    max_wait: Duration,
}

impl Attacker {
    /// TLS up and AUTH_REQUEST read; `None` if the server closed before that.
    async fn session(&self) -> Option<(tokio_rustls::client::TlsStream<TcpStream>, u32)> {
        let tcp = TcpStream::connect(self.addr).await.ok()?;
        let name = ServerName::try_from("capf").ok()?;
        let mut tls = self.connector.connect(name, tcp).await.ok()?;
        let mut hello = [0u8; 16];
        tls.read_exact(&mut hello).await.ok()?;
        Some((
            tls,
            u32::from_be_bytes([hello[2], hello[3], hello[4], hello[5]]),
        ))
    }

    /// Waits for the server to close; returns how it ended and when.
    async fn outcome<S: tokio::io::AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        started: Instant,
    ) -> (String, Option<Duration>) {
        let mut reply = Vec::new();
        match tokio::time::timeout(self.max_wait, stream.read_to_end(&mut reply)).await {
            Err(_) => ("still open".into(), None),
            Ok(_) => (describe(&reply), Some(started.elapsed())),
        }
    }

    /// Opens a session, sends `bytes(session_id)`, and reports the ending.
    async fn send(&self, bytes: impl Fn(u32) -> Vec<u8>) -> (String, Option<Duration>) {
        let Some((mut tls, id)) = self.session().await else {
            return ("closed before TLS".into(), Some(Duration::ZERO));
        };
        let started = Instant::now();
        let _ = tls.write_all(&bytes(id)).await;
        let _ = tls.flush().await;
        self.outcome(&mut tls, started).await
    }
}

fn describe(reply: &[u8]) -> String {
    match reply {
        [] => "closed, nothing sent".into(),
        r if r.len() >= HEADER_LEN + 4 && r[1] == Command::EndSession.to_u8() => {
            format!("END_SESSION {}", r[HEADER_LEN + 3])
        }
        r => format!("{} bytes, no END_SESSION", r.len()),
    }
}

fn header(command: u8, id: u32, len: u16) -> Vec<u8> {
    let mut h = vec![0x55, command];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// Deterministic garbage.
fn garbage(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trust: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&args.capf_cert)?.collect::<Result<_, _>>()?;
    let attacker = Attacker {
        addr: args.addr,
        connector: connector(&trust)?,
        max_wait: Duration::from_secs(args.max_wait),
    };
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut phone_result = None;
    let mut round = 0;

    let mut served: Vec<(String, Result<Duration, String>)> = Vec::new();
    let mut amplification: Vec<String> = Vec::new();
    let within = Duration::from_secs(args.served_within);

    while Instant::now() < end {
        round += 1;
        // The floods, running while real phones are served.
        let floods = Floods::start(&args);
        floods.opened_all(Duration::from_secs(5)).await;
        if let (Some(name), None) = (&args.phone, &phone_result) {
            let phone = Phone::new(name.clone());
            let started = Instant::now();
            let result =
                tokio::time::timeout(within, phone.run(args.addr, &attacker.connector)).await;
            let result = match result {
                Err(_) => Err(format!("not served within {within:?}")),
                Ok(Err(e)) => Err(format!("failed: {e}")),
                Ok(Ok(o)) if o.end_reason == Some(Reason::UpdateCertificate) => {
                    Ok(started.elapsed())
                }
                Ok(Ok(o)) => Err(format!("END_SESSION {:?}", o.end_reason)),
            };
            phone_result = Some(match &result {
                Ok(took) => format!("enrolled in {took:.2?}"),
                Err(e) => e.clone(),
            });
            served.push(("CAPF enrollment".into(), result));
        }
        if let Some(http) = args.http {
            let started = Instant::now();
            let authority = http.to_string();
            let get = http_request(&authority, "GET", "/ITLFile.tlv");
            let result = match tokio::time::timeout(within, get).await {
                Err(_) => Err(format!("not served within {within:?}")),
                Ok(Err(e)) => Err(format!("failed: {e}")),
                Ok(Ok(r)) if r.status == 200 => Ok(started.elapsed()),
                Ok(Ok(r)) => Err(format!("HTTP {}", r.status)),
            };
            served.push(("HTTP GET ITLFile.tlv".into(), result));
        }
        if let Some(tftp) = args.tftp {
            let started = Instant::now();
            let get = tftp_get(tftp, "ITLFile.tlv", None);
            let result = match tokio::time::timeout(within, get).await {
                Err(_) => Err(format!("not served within {within:?}")),
                Ok(Err(e)) => Err(format!("failed: {e}")),
                Ok(Ok(_)) => Ok(started.elapsed()),
            };
            served.push(("TFTP ITLFile.tlv".into(), result));
        }
        let (held, tftp) = floods.stop().await;
        if let Some(tftp) = tftp {
            amplification.push(tftp);
        }
        let closes = held.into_iter().map(|(what, mut tcp, started)| {
            let attacker = &attacker;
            async move { (what, attacker.outcome(&mut tcp, started).await) }
        });
        for (what, (ending, took)) in join_all(closes).await {
            tallies.entry(what).or_default().record(ending, took);
        }

        // A handshake that stops half-way.
        if let Ok(mut tcp) = TcpStream::connect(args.addr).await {
            let started = Instant::now();
            let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).await;
            let (ending, took) = attacker.outcome(&mut tcp, started).await;
            tallies
                .entry("half handshake")
                .or_default()
                .record(ending, took);
        }

        let auth = ClientMessage::AuthResponse(Phone::new("SEP00DEADBEEF00").auth_response(0)?)
            .encode(0)?;
        let payload = auth[HEADER_LEN..].to_vec();
        let len = u16::try_from(payload.len())?;
        let soup = garbage(&mut seed, 1 + round % 600);
        let soup_len = u16::try_from(soup.len())?;
        type Attack<'a> = (&'static str, Box<dyn Fn(u32) -> Vec<u8> + 'a>);
        let attacks: Vec<Attack> = vec![
            ("silent after AUTH_REQUEST", Box::new(|_| Vec::new())),
            (
                "half a header",
                Box::new(|id| header(2, id, len)[..5].to_vec()),
            ),
            (
                "wrong protocol id",
                Box::new(|id| {
                    let mut m = header(2, id, len);
                    m[0] = 0x56;
                    m.extend_from_slice(&payload);
                    m
                }),
            ),
            (
                "wrong session id",
                Box::new(|id| {
                    let mut m = header(2, id ^ 1, len);
                    m.extend_from_slice(&payload);
                    m
                }),
            ),
            (
                "oversize announcement",
                Box::new(|id| header(2, id, u16::MAX)),
            ),
            (
                "length that lies",
                Box::new(|id| {
                    let mut m = header(2, id, len + 100);
                    m.extend_from_slice(&payload);
                    m
                }),
            ),
            (
                "TLV garbage",
                Box::new(|id| {
                    let mut m = header(2, id, soup_len);
                    m.extend_from_slice(&soup);
                    m
                }),
            ),
        ];
        for (name, attack) in &attacks {
            let (ending, took) = attacker.send(attack).await;
            tallies.entry(name).or_default().record(ending, took);
        }

        // A burst of connections at once.
        let burst = (0..args.burst).map(|_| async {
            let started = Instant::now();
            match TcpStream::connect(args.addr).await {
                Ok(mut tcp) => attacker.outcome(&mut tcp, started).await,
                Err(e) => (
                    format!("connect failed: {}", e.kind()),
                    Some(Duration::ZERO),
                ),
            }
        });
        for (ending, took) in join_all(burst).await {
            tallies.entry("burst").or_default().record(ending, took);
        }
    }

    println!("{round} rounds against {}", args.addr);
    for (name, t) in &tallies {
        println!(
            "{name:<26} {:>6} attempts  {:>4} still open  slowest close {:>6.2?}",
            t.attempts, t.still_open, t.slowest
        );
        for (ending, count) in &t.endings {
            println!("{:<28}{count:>6}  {ending}", "");
        }
    }
    for line in &amplification {
        println!("{line}");
    }
    println!("real phones during the floods (each within {within:?}):");
    let mut refused = 0;
    for (what, result) in &served {
        match result {
            Ok(took) => println!("  {what:<26} served in {took:.2?}"),
            Err(e) => {
                refused += 1;
                println!("  {what:<26} NOT SERVED: {e}");
            }
        }
    }
    if let Some(result) = phone_result {
        println!("real phone during the attack: {result}");
    }
    let open: u32 = tallies.values().map(|t| t.still_open).sum();
    anyhow::ensure!(
        open == 0,
        "{open} connections were still open after the wait"
    );
    anyhow::ensure!(
        refused == 0,
        "{refused} real phone requests were not served"
    );
    Ok(())
}

/// Connections opened one after another and held until the flood stops; only the
/// server closes them.
struct TcpFlood {
    what: &'static str,
    max: usize,
    opened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(TcpStream, Instant)>>,
}

impl TcpFlood {
    /// Up to `max` connections to `addr`, one every 2 ms, each sending `first` (if
    /// anything) and then nothing.
    fn start(what: &'static str, addr: SocketAddr, first: &'static [u8], max: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let (stopped, count) = (stop.clone(), opened.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while held.len() < max && !stopped.load(Ordering::Relaxed) {
                let Ok(mut tcp) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if !first.is_empty() {
                    let _ = tcp.write_all(first).await;
                }
                held.push((tcp, Instant::now()));
                count.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            held
        });
        TcpFlood {
            what,
            max,
            opened,
            stop,
            task,
        }
    }

    fn full(&self) -> bool {
        self.opened.load(Ordering::Relaxed) >= self.max
    }

    async fn stop(self) -> Vec<(&'static str, TcpStream, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        let held = self.task.await.unwrap_or_default();
        held.into_iter().map(|(t, at)| (self.what, t, at)).collect()
    }
}

/// Read requests never acknowledged, as a forged source sends them: each from its own
/// port, then every byte the server sends back is counted.
struct TftpFlood {
    sockets: Vec<UdpSocket>,
    request_bytes: usize,
    sent: Instant,
}

impl TftpFlood {
    async fn start(server: SocketAddr, per_kind: usize) -> Option<TftpFlood> {
        let mut sockets = Vec::new();
        let mut request_bytes = 0;
        for i in 0..2 * per_kind {
            let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
            let options: &[(&str, &str)] = if i % 2 == 0 {
                &[("timeout", "255")]
            } else {
                &[]
            };
            let request = rrq("ITLFile.tlv", options);
            if socket.send_to(&request, server).await.is_ok() {
                request_bytes += request.len();
                sockets.push(socket);
            }
        }
        Some(TftpFlood {
            sockets,
            request_bytes,
            sent: Instant::now(),
        })
    }

    /// Collects the answers until the server has been quiet for 3 s (its transfers to
    /// unacknowledged sources give up after two sends), and sums them up.
    async fn finish(self) -> String {
        let mut datagrams = 0;
        let mut bytes = 0;
        let mut buf = vec![0u8; 70_000];
        let last = Instant::now() + Duration::from_secs(30);
        let mut quiet_since = Instant::now();
        while Instant::now() < last && quiet_since.elapsed() < Duration::from_secs(3) {
            let mut any = false;
            for socket in &self.sockets {
                while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
                    datagrams += 1;
                    bytes += n;
                    any = true;
                }
            }
            if any {
                quiet_since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        format!(
            "TFTP: {} unacknowledged requests ({} bytes) drew {datagrams} datagrams, {bytes} bytes \
             over {:.1?}: amplification factor {:.1}",
            self.sockets.len(),
            self.request_bytes,
            self.sent.elapsed(),
            bytes as f64 / self.request_bytes.max(1) as f64
        )
    }
}

fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut packet = vec![0, 1];
    let fields = [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(o, v)| [*o, *v]));
    for field in fields {
        packet.extend_from_slice(field.as_bytes());
        packet.push(0);
    }
    packet
}

/// Every flood of one round; the TFTP one is sent by a task of its own.
struct Floods {
    tcp: Vec<TcpFlood>,
    tftp: Option<JoinHandle<Option<TftpFlood>>>,
}

impl Floods {
    fn start(args: &Args) -> Floods {
        let mut tcp = vec![
            TcpFlood::start("idle TCP (CAPF)", args.addr, b"", args.idle),
            TcpFlood::start(
                "half ClientHello (CAPF)",
                args.addr,
                &[0x16, 0x03, 0x01, 0x01, 0x00, 0x01],
                args.idle,
            ),
        ];
        if let Some(http) = args.http {
            tcp.push(TcpFlood::start("idle TCP (HTTP)", http, b"", args.idle));
            tcp.push(TcpFlood::start(
                "slow request head (HTTP)",
                http,
                b"GET /ITLF",
                args.idle,
            ));
        }
        Floods {
            tcp,
            tftp: args.tftp.map(|server| {
                let per_kind = args.tftp_flood;
                tokio::spawn(async move { TftpFlood::start(server, per_kind).await })
            }),
        }
    }

    /// Waits (at most `limit`) until every TCP flood holds all its connections.
    async fn opened_all(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until && !self.tcp.iter().all(TcpFlood::full) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the TCP floods (returning the connections, still open on the attacker's
    /// side) and sums up the TFTP one.
    async fn stop(self) -> (Vec<(&'static str, TcpStream, Instant)>, Option<String>) {
        let mut held = Vec::new();
        for flood in self.tcp {
            held.extend(flood.stop().await);
        }
        let tftp = match self.tftp {
            Some(task) => match task.await {
                Ok(Some(flood)) => Some(flood.finish().await),
                _ => Some("TFTP flood could not start".into()),
            },
            None => None,
        };
        (held, tftp)
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
