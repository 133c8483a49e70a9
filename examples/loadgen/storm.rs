//! `loadgen storm`: a boot storm. N phones enroll (with encrypted configuration, set up
//! by `loadgen setup --encrypted-config`), then all of them fetch what a phone fetches
//! at boot, C phones at a time: `ITLFile.tlv`, `SEP….cnf.xml.sgn` and
//! `SEP….cnf.xml.enc.sgn`, one after the other, over HTTP and over TFTP.
//!
//! The HTTP rounds come first. The first is the phones' first fetch after enrolling:
//! the server signs and wraps every phone's two files then. The later rounds, and the
//! TFTP rounds after them, fetch files the server has already built and kept
//! (`config_cache_mib`): "unchanged files", a storm of phones rebooting.
//!
//! With `--restart-command`, capf is then restarted (the command does it) and one more
//! HTTP round runs: a power cut's storm, with capf's memory empty and its files kept
//! on disk (`kept-files/`). The report counts the files of each round that were not
//! byte for byte those verified before (`verified_in_full`): after the restart, every
//! one of them is a file capf built again rather than read back.
//!
//! Over TFTP each phone is a real lock-step client (`capf::phone::tftp_get_with`, RFC
//! 1350, with the RFC 2348 block size of `--blksize`; 512 sends no option at all, as
//! RFC 1350 alone). capf allows each source address 8 transfers at once
//! (docs/limits.md), so the phones send from `--sources` loopback addresses
//! 127.0.1.1, 127.0.1.2, … (Linux routes all of 127.0.0.0/8 to `lo`), at most
//! ⌈C / sources⌉ transfers per address, as phones behind a few NATs would; nothing in
//! the server's limits is changed.
//!
//! Every file is verified. `ITLFile.tlv`: parsed, its signature checked, and its TFTP
//! record must be the signer the run started with. `.sgn`: the signature, by that
//! signer, and the `certHash` must be the MD5 of the LSC this phone was just issued.
//! `.enc.sgn`: the signature, then decrypted with the phone's key (from the key cache,
//! as `enroll` uses it) and compared with the base document. With `--verify first`
//! (the default) this is done the first time each phone's file arrives in the run; a
//! later copy is accepted when it is byte for byte the copy that passed (kept, a few
//! KiB per phone: comparing costs less than hashing, and the load generator's CPU
//! counts in the storm's figures). `--verify every` does all the cryptography
//! on every file: the RSA decryption of a `.enc.sgn` then costs the load generator
//! several times what the server spends to serve it.

use super::{
    capf_certificate, cpu_seconds, device_name, phone_keys, rss_kib, Auth, EnrollRun, KeyKind,
    Latency, Range,
};
use capf::phone::{http_get, tftp_get_with, HttpConnection, PhoneKey};
use capf::phone_config::format::{enc, itl, sgn};
use clap::ValueEnum;
use md5::Digest as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server's TFTP transfer table holds this many; more phones in flight would make
/// transfers give way to each other (`phone_config/tftp.rs` `MAX_TRANSFERS`).
const TFTP_TABLE: usize = 128;
/// Transfers capf allows one source address at once (`tftp/table.rs`).
const TFTP_PER_SOURCE: usize = 8;

#[derive(clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    range: Range,
    /// Phones fetching at once over HTTP.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Phones fetching at once over TFTP (at most 128: capf's transfer table).
    #[arg(long, default_value_t = 64)]
    tftp_concurrency: usize,
    /// HTTP base URL of the node, e.g. http://127.0.0.1:6970.
    #[arg(long)]
    http: Option<String>,
    /// TFTP address of the node, e.g. 127.0.0.1:69.
    #[arg(long)]
    tftp: Option<SocketAddr>,
    /// TFTP block sizes, one series of rounds each (comma-separated). 1428 is what
    /// Cisco phones ask for; 512 sends no option (RFC 1350 alone).
    #[arg(long, value_delimiter = ',', default_values_t = [1428u16])]
    blksize: Vec<u16>,
    /// Loopback source addresses the TFTP phones send from (127.0.1.1 …).
    #[arg(long, default_value_t = 32)]
    sources: u8,
    /// HTTP rounds: the first fetch after enrolling, then unchanged files.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// More rounds of unchanged files over HTTP, each phone fetching its three files
    /// over one kept-open connection (reported as protocol `http-reuse`).
    #[arg(long, default_value_t = 0)]
    http_reuse_rounds: u32,
    /// TFTP rounds per block size.
    #[arg(long, default_value_t = 2)]
    tftp_rounds: u32,
    /// After the other rounds: a shell command (`sh -c`) that restarts capf on the
    /// same data directory, waits for it to stop, and prints the new process's id as
    /// its last line of output. Then one more HTTP round. The command must send capf's
    /// own output elsewhere (it is read until its end).
    #[arg(long)]
    restart_command: Option<String>,
    #[arg(long, value_enum, default_value_t = Verify::First)]
    verify: Verify,
    /// Phones enrolling at once before the storm.
    #[arg(long, default_value_t = 32)]
    enroll_concurrency: usize,
    /// Where the phones' keys are kept between runs (as for `enroll`).
    #[arg(long)]
    key_cache: Option<PathBuf>,
    /// capf's process id: its CPU time per file and its RSS are reported too.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verify {
    /// Every file in full the first time it arrives; then by SHA-256 against it.
    First,
    /// Every file in full, every time.
    Every,
}

/// The three files, in the order a phone asks for them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Itl,
    Partial,
    Encrypted,
}

const FILES: [Which; 3] = [Which::Itl, Which::Partial, Which::Encrypted];

impl Which {
    fn name(self, device: &str) -> String {
        match self {
            Which::Itl => itl::ITL_FILE.to_owned(),
            Which::Partial => format!("{device}.cnf.xml.sgn"),
            Which::Encrypted => format!("{device}.cnf.xml.enc.sgn"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Which::Itl => "ITL",
            Which::Partial => ".sgn",
            Which::Encrypted => ".enc.sgn",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// A connection per file, closed after the answer (`Connection: close`).
    Http,
    /// A phone's three files over one HTTP/1.1 connection.
    HttpReuse,
    /// Block size; 512 asks for no option.
    Tftp(u16),
}

/// An enrolled phone, as the storm knows it.
struct StormPhone {
    name: String,
    key: rsa::PrivateKey,
    /// `<certHash>MD5 of the LSC</certHash>`, as the partial must carry it.
    cert_hash: String,
    /// The `.sgn` and `.enc.sgn` that passed in full (their sizes are the report's).
    verified: Mutex<[Option<Box<[u8]>>; 2]>,
}

struct Storm {
    phones: Vec<StormPhone>,
    http: Option<String>,
    tftp: Option<SocketAddr>,
    sources: u8,
    verify: Verify,
    /// The TFTP signer's certificate, from the ITL verified at the start.
    signer: Vec<u8>,
    /// The ITL that passed in full.
    itl: Mutex<Option<Box<[u8]>>>,
    next: AtomicU64,
    /// The node's base documents, which each decrypted `.enc.sgn` must equal.
    tftp_dir: std::path::PathBuf,
    /// Files verified in full in this round.
    in_full: AtomicU64,
}

#[derive(Serialize)]
struct EnrollSummary {
    phones: u64,
    enrolled: u64,
    seconds: f64,
    enrollments_per_second: f64,
    failures: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Round {
    protocol: &'static str,
    /// TFTP block size asked for; `None` over HTTP.
    block_size: Option<u16>,
    /// 1 for the first round of this protocol and block size.
    round: u32,
    /// The phones' first fetch of their files since enrolling: the server builds them.
    first_fetch: bool,
    /// The round after capf was restarted (`--restart-command`).
    after_restart: bool,
    /// Files that were not byte for byte a copy verified before, so verified in full:
    /// in a round of unchanged files, each is a file the server built again.
    verified_in_full: u64,
    concurrency: usize,
    /// TFTP source addresses used.
    sources: Option<usize>,
    phones: usize,
    /// Phones that got all three files, verified.
    phones_served: u64,
    /// Transfers (requests) made, and files that arrived and verified.
    transfers: u64,
    files: u64,
    failed: u64,
    seconds: f64,
    transfers_per_second: f64,
    files_per_second: f64,
    /// Request to verified file.
    file_latency: Option<Latency>,
    /// A phone's three files, one after the other.
    phone_latency: Option<Latency>,
    failures: BTreeMap<String, u64>,
    loadgen_cpu_ms_per_file: Option<f64>,
    server_cpu_ms_per_file: Option<f64>,
    server_rss_kib_after: Option<u64>,
    /// For the pooled figures: every file's latency, and CPU seconds used.
    #[serde(skip)]
    samples: Vec<Duration>,
    #[serde(skip)]
    cpu: (Option<f64>, Option<f64>),
}

/// The rounds of one transport (and block size) that fetched unchanged files, pooled:
/// the figures the targets are about.
#[derive(Serialize)]
struct Unchanged {
    protocol: &'static str,
    block_size: Option<u16>,
    rounds: usize,
    concurrency: usize,
    transfers: u64,
    files: u64,
    failed: u64,
    seconds: f64,
    transfers_per_second: f64,
    files_per_second: f64,
    file_latency: Option<Latency>,
    loadgen_cpu_ms_per_file: Option<f64>,
    server_cpu_ms_per_file: Option<f64>,
}

fn pool(rounds: &[Round]) -> Vec<Unchanged> {
    let mut pooled: Vec<Unchanged> = Vec::new();
    let mut samples: Vec<Vec<Duration>> = Vec::new();
    let mut cpu: Vec<(Option<f64>, Option<f64>)> = Vec::new();
    for r in rounds.iter().filter(|r| !r.first_fetch && !r.after_restart) {
        let at = match pooled
            .iter()
            .position(|p| p.protocol == r.protocol && p.block_size == r.block_size)
        {
            Some(at) => at,
            None => {
                pooled.push(Unchanged {
                    protocol: r.protocol,
                    block_size: r.block_size,
                    rounds: 0,
                    concurrency: r.concurrency,
                    transfers: 0,
                    files: 0,
                    failed: 0,
                    seconds: 0.0,
                    transfers_per_second: 0.0,
                    files_per_second: 0.0,
                    file_latency: None,
                    loadgen_cpu_ms_per_file: None,
                    server_cpu_ms_per_file: None,
                });
                samples.push(Vec::new());
                cpu.push((Some(0.0), Some(0.0)));
                pooled.len() - 1
            }
        };
        let p = &mut pooled[at];
        p.rounds += 1;
        p.transfers += r.transfers;
        p.files += r.files;
        p.failed += r.failed;
        p.seconds += r.seconds;
        samples[at].extend(&r.samples);
        let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
        cpu[at] = (sum(cpu[at].0, r.cpu.0), sum(cpu[at].1, r.cpu.1));
    }
    for ((p, samples), (own, server)) in pooled.iter_mut().zip(samples).zip(cpu) {
        p.transfers_per_second = p.transfers as f64 / p.seconds;
        p.files_per_second = p.files as f64 / p.seconds;
        p.file_latency = Latency::of(samples);
        let per_file = |used: Option<f64>| {
            (p.files > 0)
                .then(|| used.map(|u| u * 1000.0 / p.files as f64))
                .flatten()
        };
        p.loadgen_cpu_ms_per_file = per_file(own);
        p.server_cpu_ms_per_file = per_file(server);
    }
    pooled
}

#[derive(Serialize)]
struct FileSizes {
    itl: u64,
    /// Mean over the phones.
    partial_sgn: f64,
    encrypted_sgn: f64,
}

#[derive(Serialize)]
struct StormReport {
    verify: Verify,
    enroll: EnrollSummary,
    file_bytes: FileSizes,
    server_rss_kib_before_storm: Option<u64>,
    rounds: Vec<Round>,
    /// The rounds after the first fetch, pooled per transport and block size.
    unchanged: Vec<Unchanged>,
}

pub async fn storm(
    data: &std::path::Path,
    addr: SocketAddr,
    args: StormArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.http.is_some() || args.tftp.is_some(),
        "give --http, --tftp or both"
    );
    anyhow::ensure!(args.sources >= 1, "--sources must be at least 1");
    let tftp_concurrency = args.tftp_concurrency.clamp(1, TFTP_TABLE);
    if args.tftp.is_some() && tftp_concurrency.div_ceil(usize::from(args.sources)) > TFTP_PER_SOURCE
    {
        anyhow::bail!(
            "{tftp_concurrency} TFTP phones from {} addresses is more than capf's {TFTP_PER_SOURCE} \
             transfers per address: raise --sources",
            args.sources
        );
    }
    let kind = KeyKind::Rsa2048;
    let cache = args.key_cache.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("capf-loadgen-keys-{}", kind.order()))
    });
    let range = args.range;
    let keys = tokio::task::spawn_blocking(move || phone_keys(kind, &cache, range)).await??;

    // The phones enroll first; the storm is the boot that follows.
    let run = EnrollRun {
        tftp_dir: data.join("tftp"),
        addr,
        trust: capf_certificate(data)?,
        range,
        concurrency: args.enroll_concurrency.max(1),
        key: kind,
        auth: Auth::Null,
        config: None,
        server_pid: None,
    };
    let (enrolled, lscs) = run.run_with(keys.clone()).await?;
    let enroll = EnrollSummary {
        phones: enrolled.phones,
        enrolled: enrolled.succeeded,
        seconds: enrolled.seconds,
        enrollments_per_second: enrolled.enrollments_per_second,
        failures: enrolled.failures,
    };
    if !args.json {
        eprintln!(
            "enrolled {} of {} phones in {:.1} s",
            enroll.enrolled, enroll.phones, enroll.seconds
        );
    }
    let mut phones = Vec::new();
    for (i, (key, lsc)) in keys.into_iter().zip(lscs).enumerate() {
        let (PhoneKey::Rsa(key), Some(lsc)) = (key, lsc) else {
            continue;
        };
        phones.push(StormPhone {
            name: device_name(range.first + i as u64),
            key,
            cert_hash: format!(
                "<certHash>{}</certHash>",
                hex::encode(md5::Md5::digest(&lsc))
            ),
            verified: Mutex::new([None, None]),
        });
    }
    anyhow::ensure!(!phones.is_empty(), "no phone enrolled");

    let mut storm = Storm {
        phones,
        http: args.http.clone(),
        tftp: args.tftp,
        sources: args.sources,
        verify: args.verify,
        signer: Vec::new(),
        itl: Mutex::new(None),
        next: AtomicU64::new(0),
        tftp_dir: data.join("tftp"),
        in_full: AtomicU64::new(0),
    };
    storm.signer = storm.first_itl(args.blksize.first().copied()).await?;
    let storm = Arc::new(storm);

    let server_rss_before = args.server_pid.and_then(rss_kib);
    let mut rounds = Vec::new();
    // Every round, in order: HTTP first, then TFTP at each block size.
    let mut plan = Vec::new();
    if args.http.is_some() {
        plan.extend(
            (1..=args.rounds).map(|round| (Transport::Http, args.concurrency.max(1), round)),
        );
        plan.extend(
            (1..=args.http_reuse_rounds)
                .map(|round| (Transport::HttpReuse, args.concurrency.max(1), round)),
        );
    }
    if args.tftp.is_some() {
        for &size in &args.blksize {
            plan.extend(
                (1..=args.tftp_rounds)
                    .map(|round| (Transport::Tftp(size), tftp_concurrency, round)),
            );
        }
    }
    for (i, (transport, concurrency, round)) in plan.into_iter().enumerate() {
        let r = storm
            .clone()
            .round(transport, concurrency, round, i == 0, args.server_pid)
            .await?;
        if !args.json {
            print_round(&r);
        }
        rounds.push(r);
    }
    if let (Some(command), Some(http)) = (&args.restart_command, &args.http) {
        let server_pid = restart(command).await?;
        wait_for_http(http).await?;
        let mut r = storm
            .clone()
            .round(
                Transport::Http,
                args.concurrency.max(1),
                1,
                false,
                server_pid,
            )
            .await?;
        r.after_restart = true;
        if !args.json {
            print_round(&r);
        }
        rounds.push(r);
    }

    let count = storm.phones.len() as f64;
    let (partial, encrypted) = storm.phones.iter().fold((0, 0), |(p, e), phone| {
        let verified = phone.verified.lock().expect("verified");
        let size = |i: usize| verified[i].as_ref().map_or(0, |file| file.len());
        (p + size(0), e + size(1))
    });
    let report = StormReport {
        verify: args.verify,
        enroll,
        file_bytes: FileSizes {
            itl: storm
                .itl
                .lock()
                .expect("itl")
                .as_ref()
                .map_or(0, |file| file.len() as u64),
            partial_sgn: partial as f64 / count,
            encrypted_sgn: encrypted as f64 / count,
        },
        server_rss_kib_before_storm: server_rss_before,
        unchanged: pool(&rounds),
        rounds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.unchanged {
            let what = match p.block_size {
                Some(size) => format!("TFTP blksize {size}"),
                None if p.protocol == "http" => "HTTP".to_owned(),
                None => "HTTP, one connection per phone".to_owned(),
            };
            println!(
                "unchanged files, {what}, {} rounds: {:.0} files/s, {:.0} transfers/s, {} failed; \
                 p50 {:.2} ms, p99 {:.2} ms",
                p.rounds,
                p.files_per_second,
                p.transfers_per_second,
                p.failed,
                p.file_latency.as_ref().map_or(0.0, |l| l.p50_ms),
                p.file_latency.as_ref().map_or(0.0, |l| l.p99_ms),
            );
        }
        println!(
            "files: ITL {} bytes, .sgn {:.0} bytes, .enc.sgn {:.0} bytes (means)",
            report.file_bytes.itl, report.file_bytes.partial_sgn, report.file_bytes.encrypted_sgn
        );
    }
    Ok(())
}

fn print_round(r: &Round) {
    let what = match r.block_size {
        Some(size) => format!("TFTP blksize {size}"),
        None => "HTTP".to_owned(),
    };
    println!(
        "{what} round {}{}: {} phones, C={}: {} files verified, {} failed in {:.2} s: \
         {:.0} files/s, {:.0} transfers/s",
        r.round,
        if r.first_fetch {
            " (first fetch)"
        } else if r.after_restart {
            " (after a restart)"
        } else {
            ""
        },
        r.phones,
        r.concurrency,
        r.files,
        r.failed,
        r.seconds,
        r.files_per_second,
        r.transfers_per_second
    );
    if let Some(l) = &r.file_latency {
        println!(
            "  file latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    for (who, cpu) in [
        ("loadgen", r.loadgen_cpu_ms_per_file),
        ("server", r.server_cpu_ms_per_file),
    ] {
        if let Some(ms) = cpu {
            println!("  {who} CPU per file: {ms:.3} ms");
        }
    }
    for (reason, count) in &r.failures {
        println!("  failed {count}: {reason}");
    }
}

/// What one phone's boot went through.
struct Boot {
    /// Per file: its latency if it arrived and verified.
    files: Vec<Duration>,
    whole: Option<Duration>,
    failures: Vec<String>,
}

impl Storm {
    /// The ITL, fetched and verified once before the clock starts: the signer of every
    /// `.sgn` the phones will check.
    async fn first_itl(&self, block_size: Option<u16>) -> anyhow::Result<Vec<u8>> {
        let transport = match (&self.http, block_size) {
            (Some(_), _) => Transport::Http,
            (None, size) => Transport::Tftp(size.unwrap_or(512)),
        };
        let bytes = self
            .fetch(transport, itl::ITL_FILE, source(0, 1))
            .await
            .map_err(|e| anyhow::anyhow!("ITL: {e}"))?;
        let list = itl::parse(&bytes)?;
        itl::verify(&list)?;
        let signer = list
            .records
            .iter()
            .find(|r| r.role == itl::Role::Tftp.value())
            .map(|r| r.certificate.to_vec())
            .ok_or_else(|| anyhow::anyhow!("the ITL has no TFTP record"))?;
        Ok(signer)
    }

    async fn fetch(
        &self,
        transport: Transport,
        name: &str,
        from: IpAddr,
    ) -> Result<Vec<u8>, String> {
        match transport {
            Transport::Http | Transport::HttpReuse => {
                let base = self.http.as_deref().unwrap_or_default();
                let response = http_get(&format!("{}/{name}", base.trim_end_matches('/')))
                    .await
                    .map_err(|e| fetch_class(&e))?;
                if response.status != 200 {
                    return Err(format!("HTTP {}", response.status));
                }
                Ok(response.body)
            }
            Transport::Tftp(size) => {
                let server = self.tftp.ok_or("no TFTP address")?;
                let asked = (size != 512).then_some(size);
                tftp_get_with(server, name, Some(from), asked)
                    .await
                    .map_err(|e| fetch_class(&e))
            }
        }
    }

    async fn round(
        self: Arc<Self>,
        transport: Transport,
        concurrency: usize,
        round: u32,
        first_fetch: bool,
        server_pid: Option<u32>,
    ) -> anyhow::Result<Round> {
        self.next.store(0, Ordering::Relaxed);
        self.in_full.store(0, Ordering::Relaxed);
        let own_pid = std::process::id();
        let cpu_before = (cpu_seconds(own_pid), server_pid.and_then(cpu_seconds));
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|w| {
                let storm = self.clone();
                let from = source(w, storm.sources);
                tokio::spawn(async move {
                    let mut boots = Vec::new();
                    while let Some(phone) = storm.take() {
                        boots.push(storm.boot(transport, phone, from).await);
                    }
                    boots
                })
            })
            .collect();
        let mut boots = Vec::new();
        for worker in workers {
            boots.extend(worker.await?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu_after = (cpu_seconds(own_pid), server_pid.and_then(cpu_seconds));

        let mut failures = BTreeMap::new();
        let mut files = Vec::new();
        let mut whole = Vec::new();
        for boot in boots {
            files.extend(boot.files);
            whole.extend(boot.whole);
            for failure in boot.failures {
                *failures.entry(failure).or_insert(0) += 1;
            }
        }
        let verified = files.len() as u64;
        let transfers = (self.phones.len() * FILES.len()) as u64;
        let used = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
        let cpu = (
            used(cpu_before.0, cpu_after.0),
            used(cpu_before.1, cpu_after.1),
        );
        let per_file = |used: Option<f64>| {
            (verified > 0)
                .then(|| used.map(|u| u * 1000.0 / verified as f64))
                .flatten()
        };
        Ok(Round {
            protocol: match transport {
                Transport::Http => "http",
                Transport::HttpReuse => "http-reuse",
                Transport::Tftp(_) => "tftp",
            },
            block_size: match transport {
                Transport::Http | Transport::HttpReuse => None,
                Transport::Tftp(size) => Some(size),
            },
            round,
            first_fetch,
            after_restart: false,
            verified_in_full: self.in_full.load(Ordering::Relaxed),
            concurrency,
            sources: match transport {
                Transport::Http | Transport::HttpReuse => None,
                Transport::Tftp(_) => Some(concurrency.min(usize::from(self.sources))),
            },
            phones: self.phones.len(),
            phones_served: whole.len() as u64,
            transfers,
            files: verified,
            failed: transfers - verified,
            seconds,
            transfers_per_second: transfers as f64 / seconds,
            files_per_second: verified as f64 / seconds,
            file_latency: Latency::of(files.clone()),
            phone_latency: Latency::of(whole),
            failures,
            loadgen_cpu_ms_per_file: per_file(cpu.0),
            server_cpu_ms_per_file: per_file(cpu.1),
            server_rss_kib_after: server_pid.and_then(rss_kib),
            samples: files,
            cpu,
        })
    }

    fn take(&self) -> Option<&StormPhone> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.phones.get(usize::try_from(i).ok()?)
    }

    /// A phone's three files, one after the other, each verified; a failed one does not
    /// stop the next (a phone goes on with what it has).
    async fn boot(&self, transport: Transport, phone: &StormPhone, from: IpAddr) -> Boot {
        let started = Instant::now();
        let mut boot = Boot {
            files: Vec::with_capacity(FILES.len()),
            whole: None,
            failures: Vec::new(),
        };
        let mut connection = None;
        if transport == Transport::HttpReuse {
            let base = self.http.as_deref().unwrap_or_default();
            let authority = base.trim_start_matches("http://").trim_end_matches('/');
            match HttpConnection::open(authority).await {
                Ok(opened) => connection = Some(opened),
                Err(e) => boot.failures.push(format!("connect: {}", fetch_class(&e))),
            }
        }
        for which in FILES {
            let asked = Instant::now();
            let fetched = match (&mut connection, transport) {
                (Some(connection), _) => reuse(connection, &which.name(&phone.name)).await,
                (None, Transport::HttpReuse) => continue,
                (None, _) => self.fetch(transport, &which.name(&phone.name), from).await,
            };
            let outcome = match fetched {
                Ok(bytes) => self.check(phone, which, &bytes),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => boot.files.push(asked.elapsed()),
                Err(e) => boot.failures.push(format!("{}: {e}", which.label())),
            }
        }
        if boot.failures.is_empty() {
            boot.whole = Some(started.elapsed());
        }
        boot
    }

    /// Verifies `bytes` as `which` of `phone` (see the module comment).
    fn check(&self, phone: &StormPhone, which: Which, bytes: &[u8]) -> Result<(), String> {
        let slot = match which {
            Which::Itl => None,
            Which::Partial => Some(0),
            Which::Encrypted => Some(1),
        };
        if self.verify == Verify::First {
            let known = match slot {
                None => self.itl.lock().expect("itl").as_deref() == Some(bytes),
                Some(i) => phone.verified.lock().expect("verified")[i].as_deref() == Some(bytes),
            };
            if known {
                return Ok(());
            }
        }
        self.in_full.fetch_add(1, Ordering::Relaxed);
        self.verify_in_full(phone, which, bytes)
            .map_err(|e| format!("not verified: {e}"))?;
        match slot {
            None => *self.itl.lock().expect("itl") = Some(bytes.into()),
            Some(i) => phone.verified.lock().expect("verified")[i] = Some(bytes.into()),
        }
        Ok(())
    }

    fn verify_in_full(&self, phone: &StormPhone, which: Which, bytes: &[u8]) -> anyhow::Result<()> {
        match which {
            Which::Itl => {
                let list = itl::parse(bytes)?;
                itl::verify(&list)?;
                anyhow::ensure!(
                    list.records
                        .iter()
                        .any(|r| r.role == itl::Role::Tftp.value() && r.certificate == self.signer),
                    "the ITL's TFTP signer changed"
                );
            }
            Which::Partial => {
                let parsed = sgn::parse(bytes, sgn::FileKind::Sgn)?;
                sgn::verify(&parsed, &self.signer)?;
                anyhow::ensure!(
                    String::from_utf8_lossy(parsed.body).contains(&phone.cert_hash),
                    "the partial does not carry the LSC's certHash"
                );
            }
            Which::Encrypted => {
                sgn::verify(&sgn::parse(bytes, sgn::FileKind::EncSgn)?, &self.signer)?;
                let plain = enc::decrypt(bytes, &phone.key)?;
                let document =
                    std::fs::read(self.tftp_dir.join(format!("{}.cnf.xml", phone.name)))?;
                anyhow::ensure!(plain == document, "decrypted a different document");
            }
        }
        Ok(())
    }
}

/// Runs `command` with `sh -c` (see `--restart-command`): the new process id is its
/// last line of output, if it printed one.
async fn restart(command: &str) -> anyhow::Result<Option<u32>> {
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the restart command failed: {}",
        output.status
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok()))
}

/// Waits (at most 30 s) until the node at `http` (`http://host:port`) accepts
/// connections again.
async fn wait_for_http(http: &str) -> anyhow::Result<()> {
    let authority = http.trim_start_matches("http://").trim_end_matches('/');
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(authority).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{http} did not answer within 30 s of the restart")
}

/// GETs `name` over a kept-open connection.
async fn reuse(connection: &mut HttpConnection, name: &str) -> Result<Vec<u8>, String> {
    let response = connection
        .get(&format!("/{name}"))
        .await
        .map_err(|e| fetch_class(&e))?;
    if response.status != 200 {
        return Err(format!("HTTP {}", response.status));
    }
    Ok(response.body)
}

/// The loopback address worker `w` sends its TFTP requests from: 127.0.1.1 and up.
fn source(w: usize, sources: u8) -> IpAddr {
    let host = (w % usize::from(sources.max(1))) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, host.wrapping_add(1)))
}

/// Fetch errors without per-file details, so they add up.
fn fetch_class(e: &capf::phone::FetchError) -> String {
    use capf::phone::FetchError;
    match e {
        FetchError::Io(io) => format!("I/O: {:?}", io.kind()),
        other => other.to_string(),
    }
}
