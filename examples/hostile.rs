//! Hostile clients against a running capf, for a bounded time, with a summary of how
//! the server answered each attack.
//!
//! ```text
//! cargo run --release --example hostile -- --addr 127.0.0.1:3804 \
//!     --capf-cert capf-data/certs/capf.pem --seconds 60 --phone SEP001122334455
//! ```
//!
//! Attacks, round after round until the time is up: idle TCP connections that never
//! start TLS, a TLS handshake that stops half-way, a TLS session silent after
//! AUTH_REQUEST, half a header, wrong protocol and session ids, an oversize
//! announcement, a length that lies, TLV garbage, and a burst of connections. With
//! `--phone`, a real phone (scheduled for install with null authentication) enrolls in
//! the middle of it all. Note that capf's per-address failure limit
//! (`max_failures_per_address`) will soon refuse this address at accept: that is one of
//! the defences being exercised, and shows up as "closed before TLS".

use capf::phone::{connector, Phone};
use capf::protocol::{ClientMessage, Command, HEADER_LEN};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    /// Idle TCP connections opened per round.
    #[arg(long, default_value_t = 300)]
    idle: usize,
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

    while Instant::now() < end {
        round += 1;
        // Idle TCP connections held open, with the real phone enrolling among them.
        let mut idle = Vec::new();
        for _ in 0..args.idle {
            if let Ok(tcp) = TcpStream::connect(args.addr).await {
                idle.push((tcp, Instant::now()));
            }
        }
        if let (Some(name), None) = (&args.phone, &phone_result) {
            let phone = Phone::new(name.clone());
            let result = phone.run(args.addr, &attacker.connector).await;
            phone_result = Some(match result {
                Ok(o) => format!("END_SESSION {:?}", o.end_reason),
                Err(e) => format!("failed: {e}"),
            });
        }
        let closes = idle.into_iter().map(|(mut tcp, started)| {
            let attacker = &attacker;
            async move { attacker.outcome(&mut tcp, started).await }
        });
        for (ending, took) in join_all(closes).await {
            tallies.entry("idle TCP").or_default().record(ending, took);
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
    if let Some(result) = phone_result {
        println!("real phone during the attack: {result}");
    }
    let open: u32 = tallies.values().map(|t| t.still_open).sum();
    anyhow::ensure!(
        open == 0,
        "{open} connections were still open after the wait"
    );
    Ok(())
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
