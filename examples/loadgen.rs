//! Load generator: many simulated phones enrolling with a running capf at once.
//!
//! ```text
//! # schedule 1000 devices SEP000000000000.. (through the admin socket while serving)
//! cargo run --release --example loadgen -- --data DIR setup -n 1000
//! # enroll them, 32 phones at a time, and verify every certificate
//! cargo run --release --example loadgen -- --data DIR enroll -n 1000 -c 32
//! # the same, plus the partial and encrypted configuration over HTTP, decrypted
//! cargo run --release --example loadgen -- --data DIR setup -n 200 --first 100000 --encrypted-config
//! cargo run --release --example loadgen -- --data DIR enroll -n 200 --first 100000 --config http://127.0.0.1:6970
//! # 1000 connections that stop after AUTH_REQUEST; reports the server's RSS
//! cargo run --release --example loadgen -- --data DIR idle -n 1000 --server-pid PID
//! # a boot storm: 2000 phones enroll, then fetch ITL, .sgn and .enc.sgn, 64 at a
//! # time over HTTP, then over TFTP (see loadgen/storm.rs)
//! cargo run --release --example loadgen -- --data DIR setup -n 2000 --first 200000 --encrypted-config
//! cargo run --release --example loadgen -- --data DIR storm -n 2000 --first 200000 \
//!     --http http://127.0.0.1:6970 --tftp 127.0.0.1:69 --blksize 1428,512
//! ```
//!
//! Every phone has a key of its own, as real phones do (capf refuses a key it has
//! certified for another device). The keys are generated before the clock starts, so
//! the phones' key generation does not dominate what is measured (the server's work per
//! enrollment is the TLS handshake, the LSC signature and the durable store commit),
//! and kept in a cache file (`--key-cache`), so only the first run pays for them: key
//! number N belongs to device number N. Device names are
//! `SEP` + 12 hex digits counting up from `--first`; each name enrolls once (a
//! successful install clears its operation), so repeated runs take fresh ranges.

use capf::phone::{connector, http_get, Phone, PhoneKey};
use capf::phone_config::format::{enc, itl, sgn};
use capf::protocol::{CurveId, Header, KeyGenerateRequest, KeyType, Reason, HEADER_LEN};
use clap::{Parser, Subcommand, ValueEnum};
use md5::Digest as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[path = "loadgen/storm.rs"]
mod storm;

#[derive(Parser)]
struct Args {
    /// capf data directory (for the CAPF certificate, and for `setup`).
    #[arg(long, default_value = "capf-data")]
    data: PathBuf,
    /// capf CAPF listener.
    #[arg(long, default_value = "127.0.0.1:3804")]
    addr: SocketAddr,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Schedules N install operations with `capf device import` and, for encrypted
    /// configuration, writes their base documents into DATA/tftp.
    Setup {
        #[command(flatten)]
        range: Range,
        /// The capf binary (default: next to this example, ../capf).
        #[arg(long)]
        capf: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = KeyKind::Rsa2048)]
        key: KeyKind,
        #[arg(long, value_enum, default_value_t = Auth::Null)]
        auth: Auth,
        /// Turn encrypted configuration on and write a base document per device.
        #[arg(long)]
        encrypted_config: bool,
        /// The base document written for every device (default: a small SIP
        /// configuration, examples/data/base.cnf.xml; examples/data/cucm.cnf.xml is
        /// one of the size CUCM writes). Each device gets its own line numbers in
        /// place of 1001 and 1002, so no two devices' documents are the same bytes,
        /// as with CUCM.
        #[arg(long)]
        document: Option<PathBuf>,
    },
    /// Enrolls N phones at concurrency C and verifies every certificate.
    Enroll {
        #[command(flatten)]
        range: Range,
        /// Phones in flight at once.
        #[arg(short = 'c', long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, value_enum, default_value_t = KeyKind::Rsa2048)]
        key: KeyKind,
        #[arg(long, value_enum, default_value_t = Auth::Null)]
        auth: Auth,
        /// Where the phones' keys are kept between runs (PKCS#8 DER, length-prefixed);
        /// missing ones are generated and added. Default: a file in the temp directory.
        #[arg(long)]
        key_cache: Option<PathBuf>,
        /// Also fetch the partial and the encrypted configuration from this HTTP base
        /// URL after enrolling, verify both and decrypt the latter.
        #[arg(long)]
        config: Option<String>,
        /// capf's process id: its CPU time per enrollment is reported too.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Opens N TLS connections that stop after AUTH_REQUEST and holds them.
    Idle {
        #[arg(short = 'n', long, default_value_t = 1000)]
        count: usize,
        /// capf's process id: its RSS is reported before and with the connections.
        #[arg(long)]
        server_pid: Option<u32>,
        /// How long to hold the connections once all are open, seconds.
        #[arg(long, default_value_t = 2)]
        hold: u64,
        #[arg(long)]
        json: bool,
    },
    /// Enrolls N phones with encrypted configuration (set up first), then lets them
    /// all fetch ITL, .sgn and .enc.sgn at concurrency C over HTTP and TFTP, verifying
    /// every file.
    Storm(storm::StormArgs),
}

#[derive(clap::Args, Clone, Copy)]
struct Range {
    /// Number of phones.
    #[arg(short = 'n', long, default_value_t = 200)]
    count: u64,
    /// Number of the first device name (SEP + 12 hex digits of it).
    #[arg(long, default_value_t = 0)]
    first: u64,
}

impl Range {
    fn names(self) -> impl Iterator<Item = String> {
        (self.first..self.first + self.count).map(device_name)
    }
}

fn device_name(n: u64) -> String {
    format!("SEP{n:012X}")
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum KeyKind {
    Rsa2048,
    P256,
}

impl KeyKind {
    fn order(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa:2048",
            KeyKind::P256 => "ec:p256",
        }
    }

    /// A new key, as PKCS#8 DER. RSA comes from OpenSSL: several times faster than
    /// the pure-Rust generator, which matters for thousands of keys.
    fn generate_pkcs8(self) -> anyhow::Result<Vec<u8>> {
        if self == KeyKind::Rsa2048 {
            let rsa = openssl::rsa::Rsa::generate(2048)?;
            return Ok(openssl::pkey::PKey::from_rsa(rsa)?.private_key_to_pkcs8()?);
        }
        let PhoneKey::P256(key) = self.generate()? else {
            anyhow::bail!("not a P-256 key")
        };
        use p256::pkcs8::EncodePrivateKey;
        Ok(key.to_pkcs8_der()?.as_bytes().to_vec())
    }

    fn key_from_pkcs8(self, der: &[u8]) -> anyhow::Result<PhoneKey> {
        Ok(match self {
            KeyKind::Rsa2048 => {
                use rsa::pkcs8::DecodePrivateKey;
                PhoneKey::Rsa(rsa::PrivateKey::from_pkcs8_der(der)?)
            }
            KeyKind::P256 => {
                use p256::pkcs8::DecodePrivateKey;
                PhoneKey::P256(p256::SecretKey::from_pkcs8_der(der)?)
            }
        })
    }

    fn generate(self) -> anyhow::Result<PhoneKey> {
        let request = match self {
            KeyKind::Rsa2048 => KeyGenerateRequest {
                key_type: Some(KeyType::Rsa),
                key_size: Some(2048),
                curve: None,
            },
            KeyKind::P256 => KeyGenerateRequest {
                key_type: Some(KeyType::Ec),
                key_size: None,
                curve: Some(CurveId::Secp256r1),
            },
        };
        Ok(PhoneKey::generate(&request)?)
    }
}

/// The keys of devices `range`: read from `cache`, the missing ones generated on every
/// core and appended to it.
fn phone_keys(kind: KeyKind, cache: &Path, range: Range) -> anyhow::Result<Vec<PhoneKey>> {
    let mut stored: Vec<Vec<u8>> = Vec::new();
    if let Ok(bytes) = std::fs::read(cache) {
        let mut rest = bytes.as_slice();
        while let [a, b, c, d, tail @ ..] = rest {
            let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            let Some(der) = tail.get(..len) else { break };
            stored.push(der.to_vec());
            rest = &tail[len..];
        }
    }
    let needed = (range.first + range.count) as usize;
    if stored.len() < needed {
        let missing = needed - stored.len();
        eprintln!(
            "generating {missing} phone keys (kept in {})...",
            cache.display()
        );
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let fresh: Vec<Vec<u8>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let count = missing / threads + usize::from(t < missing % threads);
                    s.spawn(move || {
                        (0..count)
                            .map(|_| kind.generate_pkcs8())
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("key generation thread"))
                .collect::<anyhow::Result<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect())
        })?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cache)?;
        for der in &fresh {
            use std::io::Write;
            file.write_all(&(der.len() as u32).to_be_bytes())?;
            file.write_all(der)?;
        }
        stored.extend(fresh);
    }
    stored[range.first as usize..needed]
        .iter()
        .map(|der| kind.key_from_pkcs8(der))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Auth {
    Null,
    String,
}

/// The authentication string of every `--auth string` device.
const AUTH_STRING: &str = "123456";

/// The base document of every benchmark device: a small SIP phone configuration.
const DOCUMENT: &str = include_str!("data/base.cnf.xml");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Mode::Setup {
            range,
            capf,
            key,
            auth,
            encrypted_config,
            document,
        } => {
            let document = match document {
                Some(path) => std::fs::read(path)?,
                None => DOCUMENT.as_bytes().to_vec(),
            };
            setup(
                &args.data,
                range,
                capf,
                key,
                auth,
                encrypted_config,
                &document,
            )
        }
        Mode::Enroll {
            range,
            concurrency,
            key,
            auth,
            key_cache,
            config,
            server_pid,
            json,
        } => {
            let cache = key_cache.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("capf-loadgen-keys-{}", key.order()))
            });
            let run = EnrollRun {
                tftp_dir: args.data.join("tftp"),
                addr: args.addr,
                trust: capf_certificate(&args.data)?,
                range,
                concurrency: concurrency.max(1),
                key,
                auth,
                config,
                server_pid,
            };
            let report = run.run(&cache).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report.print();
            }
            Ok(())
        }
        Mode::Idle {
            count,
            server_pid,
            hold,
            json,
        } => idle(&args.data, args.addr, count, server_pid, hold, json).await,
        Mode::Storm(storm) => storm::storm(&args.data, args.addr, storm).await,
    }
}

fn capf_certificate(data: &Path) -> anyhow::Result<CertificateDer<'static>> {
    let path = data.join("certs/capf.pem");
    CertificateDer::from_pem_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

// -- setup ------------------------------------------------------------------------

/// `document` as the `n`th device's: its two lines numbered 10000000 + 2n and the
/// next, where the template says 1001 and 1002 (CUCM writes each phone's own).
fn own_lines(document: &str, n: u64) -> String {
    let first = 10_000_000 + 2 * n;
    document
        .replace("1001", &first.to_string())
        .replace("1002", &(first + 1).to_string())
}

fn setup(
    data: &Path,
    range: Range,
    capf: Option<PathBuf>,
    key: KeyKind,
    auth: Auth,
    encrypted_config: bool,
    document: &[u8],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !(encrypted_config && key == KeyKind::P256),
        "encrypted configuration needs RSA phone keys"
    );
    let capf = match capf {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("capf"))
            .ok_or_else(|| anyhow::anyhow!("cannot find the capf binary; pass --capf"))?,
    };
    let (auth, auth_string) = match auth {
        Auth::Null => ("null", ""),
        Auth::String => ("string", AUTH_STRING),
    };
    let csv_path = std::env::temp_dir().join(format!(
        "capf-loadgen-{}-{}.csv",
        std::process::id(),
        range.first
    ));
    let mut csv = String::from("name,operation,auth,auth_string,key,encrypted_config\n");
    for name in range.names() {
        csv.push_str(&format!(
            "{name},install,{auth},{auth_string},{},{encrypted_config}\n",
            key.order()
        ));
    }
    std::fs::write(&csv_path, csv)?;
    if encrypted_config {
        let tftp = data.join("tftp");
        std::fs::create_dir_all(&tftp)?;
        let document = String::from_utf8(document.to_vec())?;
        for n in range.first..range.first + range.count {
            std::fs::write(
                tftp.join(format!("{}.cnf.xml", device_name(n))),
                own_lines(&document, n),
            )?;
        }
    }
    let started = Instant::now();
    let status = std::process::Command::new(&capf)
        .arg("--data")
        .arg(data)
        .args(["device", "import"])
        .arg(&csv_path)
        .status()
        .map_err(|e| anyhow::anyhow!("{}: {e}", capf.display()))?;
    let _ = std::fs::remove_file(&csv_path);
    anyhow::ensure!(status.success(), "capf device import failed: {status}");
    eprintln!(
        "scheduled {} devices in {:.2} s",
        range.count,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// -- enroll -----------------------------------------------------------------------

struct EnrollRun {
    addr: SocketAddr,
    trust: CertificateDer<'static>,
    range: Range,
    concurrency: usize,
    key: KeyKind,
    auth: Auth,
    config: Option<String>,
    server_pid: Option<u32>,
    /// The node's base documents, which each decrypted `.enc.sgn` must equal.
    tftp_dir: PathBuf,
}

/// What one phone went through.
struct Attempt {
    /// Connect to END_SESSION.
    enroll: Duration,
    /// Both HTTP downloads, when asked for.
    config: Option<Duration>,
    failure: Option<String>,
    /// The verified LSC, on success.
    lsc: Option<Vec<u8>>,
}

#[derive(Serialize)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Some(Latency {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

#[derive(Serialize)]
struct Report {
    phones: u64,
    concurrency: usize,
    key: KeyKind,
    auth: Auth,
    with_config: bool,
    succeeded: u64,
    failed: u64,
    seconds: f64,
    enrollments_per_second: f64,
    enroll_latency: Option<Latency>,
    config_latency: Option<Latency>,
    failures: BTreeMap<String, u64>,
    /// CPU time (user + system) per enrollment while the clock ran, of the load
    /// generator itself and, with `--server-pid`, of capf.
    loadgen_cpu_ms_per_enrollment: Option<f64>,
    server_cpu_ms_per_enrollment: Option<f64>,
}

impl Report {
    fn print(&self) {
        println!(
            "{} phones, concurrency {}, key {}, auth {}{}",
            self.phones,
            self.concurrency,
            self.key.order(),
            match self.auth {
                Auth::Null => "null",
                Auth::String => "string",
            },
            if self.with_config {
                ", with partial + encrypted config"
            } else {
                ""
            }
        );
        println!(
            "succeeded {} failed {} in {:.2} s: {:.1} enrollments/s",
            self.succeeded, self.failed, self.seconds, self.enrollments_per_second
        );
        let show = |what: &str, l: &Option<Latency>| {
            if let Some(l) = l {
                println!(
                    "{what} latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
                    l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
                );
            }
        };
        show("enroll", &self.enroll_latency);
        show("config", &self.config_latency);
        for (who, cpu) in [
            ("loadgen", self.loadgen_cpu_ms_per_enrollment),
            ("server", self.server_cpu_ms_per_enrollment),
        ] {
            if let Some(ms) = cpu {
                println!("{who} CPU per enrollment: {ms:.3} ms");
            }
        }
        for (reason, count) in &self.failures {
            println!("  failed {count}: {reason}");
        }
    }
}

impl EnrollRun {
    async fn run(self, cache: &Path) -> anyhow::Result<Report> {
        let (kind, cache, range) = (self.key, cache.to_owned(), self.range);
        let keys = tokio::task::spawn_blocking(move || phone_keys(kind, &cache, range)).await??;
        Ok(self.run_with(keys).await?.0)
    }

    /// Enrolls with `keys` (key `i` is phone `i`'s); the report and, by phone, the
    /// verified LSC of each phone that enrolled.
    async fn run_with(self, keys: Vec<PhoneKey>) -> anyhow::Result<(Report, Vec<Option<Vec<u8>>>)> {
        let signer = match &self.config {
            Some(base) => Some(tftp_signer(base).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            connector: connector(std::slice::from_ref(&self.trust))?,
            capf_key: capf_public_key(&self.trust)?,
            keys,
            next: AtomicU64::new(0),
            signer,
            run: self,
        });

        let own_pid = std::process::id();
        let server_pid = shared.run.server_pid;
        let cpu_before = (cpu_seconds(own_pid), server_pid.and_then(cpu_seconds));
        let started = Instant::now();
        let workers: Vec<_> = (0..shared.run.concurrency)
            .map(|_| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut attempts = Vec::new();
                    while let Some(i) = shared.take() {
                        attempts.push((i, shared.attempt(i).await));
                    }
                    attempts
                })
            })
            .collect();
        let mut attempts = Vec::new();
        for worker in workers {
            attempts.extend(worker.await?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu_after = (cpu_seconds(own_pid), server_pid.and_then(cpu_seconds));

        let mut failures = BTreeMap::new();
        let mut enroll = Vec::new();
        let mut config = Vec::new();
        let mut lscs = vec![None; shared.run.range.count as usize];
        for (i, a) in attempts {
            if let Some(slot) = lscs.get_mut(i as usize) {
                *slot = a.lsc;
            }
            match &a.failure {
                Some(reason) => *failures.entry(reason.clone()).or_insert(0) += 1,
                None => {
                    enroll.push(a.enroll);
                    config.extend(a.config);
                }
            }
        }
        let succeeded = enroll.len() as u64;
        let run = &shared.run;
        let report = Report {
            phones: run.range.count,
            concurrency: run.concurrency,
            key: run.key,
            auth: run.auth,
            with_config: run.config.is_some(),
            succeeded,
            failed: run.range.count - succeeded,
            seconds,
            enrollments_per_second: succeeded as f64 / seconds,
            enroll_latency: Latency::of(enroll),
            config_latency: Latency::of(config),
            failures,
            loadgen_cpu_ms_per_enrollment: per_enrollment(cpu_before.0, cpu_after.0, succeeded),
            server_cpu_ms_per_enrollment: per_enrollment(cpu_before.1, cpu_after.1, succeeded),
        };
        Ok((report, lscs))
    }
}

struct Shared {
    run: EnrollRun,
    connector: tokio_rustls::TlsConnector,
    /// The CAPF certificate's SubjectPublicKeyInfo (DER): every LSC must verify with it.
    capf_key: Vec<u8>,
    keys: Vec<PhoneKey>,
    next: AtomicU64,
    /// The TFTP signer's certificate from the ITL, for `--config`.
    signer: Option<Vec<u8>>,
}

impl Shared {
    fn take(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.run.range.count).then_some(i)
    }

    async fn attempt(&self, i: u64) -> Attempt {
        let name = device_name(self.run.range.first + i);
        let mut phone = Phone::new(&name);
        phone.key = self.keys.get(i as usize).cloned();
        phone.password = Some(match self.run.auth {
            Auth::Null => String::new(),
            Auth::String => AUTH_STRING.to_owned(),
        });
        let started = Instant::now();
        let outcome = phone.run(self.run.addr, &self.connector).await;
        let enroll = started.elapsed();
        let failed = |failure: String| Attempt {
            enroll,
            config: None,
            failure: Some(failure),
            lsc: None,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return failed(error_class(&e)),
        };
        match outcome.end_reason {
            Some(Reason::UpdateCertificate) => {}
            Some(other) => return failed(format!("END_SESSION reason {}", other.to_u8())),
            None => return failed("closed without END_SESSION".into()),
        }
        let Some((der, key)) = outcome.issued else {
            return failed("success without a certificate".into());
        };
        if let Err(e) = verify_lsc(&der, &key, &name, &self.capf_key) {
            return failed(format!("bad LSC: {e}"));
        }
        let config = match (&self.run.config, &self.signer) {
            (Some(base), Some(signer)) => {
                let started = Instant::now();
                let document = self.run.tftp_dir.join(format!("{name}.cnf.xml"));
                if let Err(e) = fetch_config(base, &name, signer, &der, &key, &document).await {
                    return failed(format!("config: {e}"));
                }
                Some(started.elapsed())
            }
            _ => None,
        };
        Attempt {
            enroll,
            config,
            failure: None,
            lsc: Some(der),
        }
    }
}

/// Failure classes without the per-phone details, so they add up.
fn error_class(e: &capf::phone::PhoneError) -> String {
    use capf::phone::PhoneError;
    match e {
        PhoneError::Io(io) => format!("I/O: {:?}", io.kind()),
        PhoneError::Tls(_) => "TLS".into(),
        PhoneError::Timeout => "timeout".into(),
        other => other.to_string(),
    }
}

fn capf_public_key(capf: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(capf)?;
    Ok(cert.public_key().raw.to_vec())
}

/// The LSC chains to the CAPF certificate, carries the phone's key and names the phone.
fn verify_lsc(der: &[u8], key: &PhoneKey, name: &str, capf_key: &[u8]) -> anyhow::Result<()> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    let (_, issuer_key) = x509_parser::x509::SubjectPublicKeyInfo::from_der(capf_key)?;
    cert.verify_signature(Some(&issuer_key))
        .map_err(|e| anyhow::anyhow!("signature: {e}"))?;
    anyhow::ensure!(
        cert.public_key().raw == key.public_key_der()?.as_slice(),
        "the certificate's key is not the phone's"
    );
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    anyhow::ensure!(cn == Some(name), "subject CN {cn:?} is not {name}");
    Ok(())
}

/// The TFTP signer's certificate, from the ITL the node serves.
async fn tftp_signer(base: &str) -> anyhow::Result<Vec<u8>> {
    let file = get(base, itl::ITL_FILE).await?;
    let list = itl::parse(&file)?;
    itl::verify(&list)?;
    list.records
        .iter()
        .find(|r| r.role == itl::Role::Tftp.value())
        .map(|r| r.certificate.to_vec())
        .ok_or_else(|| anyhow::anyhow!("the ITL has no TFTP record"))
}

/// What a phone does after enrolling: the signed partial must carry the new LSC's
/// MD5, and the `.enc.sgn` must verify and decrypt with the phone's key.
async fn fetch_config(
    base: &str,
    name: &str,
    signer: &[u8],
    lsc: &[u8],
    key: &PhoneKey,
    document: &Path,
) -> anyhow::Result<()> {
    let partial = get(base, &format!("{name}.cnf.xml.sgn")).await?;
    let parsed = sgn::parse(&partial, sgn::FileKind::Sgn)?;
    sgn::verify(&parsed, signer)?;
    let expected = format!(
        "<certHash>{}</certHash>",
        hex::encode(md5::Md5::digest(lsc))
    );
    anyhow::ensure!(
        String::from_utf8_lossy(parsed.body).contains(&expected),
        "the partial does not carry the new certHash"
    );
    let encrypted = get(base, &format!("{name}.cnf.xml.enc.sgn")).await?;
    sgn::verify(&sgn::parse(&encrypted, sgn::FileKind::EncSgn)?, signer)?;
    let PhoneKey::Rsa(key) = key else {
        anyhow::bail!("encrypted configuration needs an RSA key");
    };
    let plain = enc::decrypt(&encrypted, key)?;
    anyhow::ensure!(
        plain == std::fs::read(document)?,
        "decrypted a different document"
    );
    Ok(())
}

async fn get(base: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    let response = http_get(&format!("{}/{name}", base.trim_end_matches('/'))).await?;
    anyhow::ensure!(
        response.status == 200,
        "GET {name}: HTTP {}",
        response.status
    );
    Ok(response.body)
}

// -- idle -------------------------------------------------------------------------

#[derive(Serialize)]
struct IdleReport {
    connections: usize,
    opened: usize,
    open_seconds: f64,
    rss_before_kib: Option<u64>,
    rss_with_connections_kib: Option<u64>,
}

/// Opens `count` connections (64 handshakes at a time), reads each AUTH_REQUEST, and
/// holds them all; the server's RSS is read once every connection sits idle.
async fn idle(
    data: &Path,
    addr: SocketAddr,
    count: usize,
    server_pid: Option<u32>,
    hold: u64,
    json: bool,
) -> anyhow::Result<()> {
    let connector = connector(&[capf_certificate(data)?])?;
    let rss_before = server_pid.and_then(rss_kib);
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let connector = connector.clone();
            let semaphore = semaphore.clone();
            tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await?;
                open_idle(addr, &connector).await
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut errors = BTreeMap::<String, usize>::new();
    for task in tasks {
        match task.await? {
            Ok(conn) => held.push(conn),
            Err(e) => *errors.entry(e.to_string()).or_insert(0) += 1,
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = IdleReport {
        connections: count,
        opened: held.len(),
        open_seconds,
        rss_before_kib: rss_before,
        rss_with_connections_kib: server_pid.and_then(rss_kib),
    };
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(held);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} of {} connections idle after AUTH_REQUEST (opened in {:.2} s)",
            report.opened, report.connections, report.open_seconds
        );
        if let (Some(before), Some(with)) = (report.rss_before_kib, report.rss_with_connections_kib)
        {
            println!(
                "server RSS: {:.1} MiB before, {:.1} MiB with the connections",
                before as f64 / 1024.0,
                with as f64 / 1024.0
            );
        }
    }
    for (error, n) in errors {
        eprintln!("  failed {n}: {error}");
    }
    Ok(())
}

type IdleConnection = tokio_rustls::client::TlsStream<TcpStream>;

async fn open_idle(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<IdleConnection> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::try_from("capf")?, tcp)
        .await?;
    let mut raw = [0u8; HEADER_LEN];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut raw)).await??;
    let header = Header::decode(&raw)?;
    let mut payload = vec![0u8; usize::from(header.payload_len)];
    tls.read_exact(&mut payload).await?;
    Ok(tls)
}

/// CPU time (user + system) a process has used so far, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces;
    // utime and stime are fields 14 and 15 of the line, in clock ticks (USER_HZ, 100
    // on Linux).
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

fn per_enrollment(before: Option<f64>, after: Option<f64>, enrollments: u64) -> Option<f64> {
    let used = after? - before?;
    (enrollments > 0).then(|| used * 1000.0 / enrollments as f64)
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
