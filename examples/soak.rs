//! Soak test: a bounded run of continuous enrollments, configuration fetches and
//! operator commands against a real `capf serve`, watching for errors, memory growth
//! and file-descriptor leaks.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/soak --minutes 30 --capf target/release/capf
//! ```
//!
//! It initialises a throw-away data directory, imports a pool of phones with encrypted
//! configuration on, starts `capf serve` on 127.0.0.1, and then, until the time is up,
//! each worker: schedules an install through the CLI (over the admin socket), enrolls
//! the phone over TLS, fetches the signed partial over HTTP and checks its certHash is the
//! MD5 of the new LSC, fetches the encrypted configuration and decrypts it with the
//! phone's key, comparing it with the base document byte for byte. Every 10 seconds it
//! samples the server's RSS and open file descriptors. It exits non-zero on any error
//! or when memory keeps growing.

use capf::phone::{connector, http_get, Phone, PhoneKey};
use clap::Parser;
use md5::Digest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// The capf binary to soak.
    #[arg(long, default_value = "target/release/capf")]
    capf: PathBuf,
    /// Concurrent phones.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Phones in the pool (each re-enrolls many times).
    #[arg(long, default_value_t = 40)]
    phones: usize,
}

const DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device>\n  <fullConfig>true</fullConfig>\n  <ipAddressMode>0</ipAddressMode>\n  <loadInformation>SIP88.14-0-1</loadInformation>\n  <sipProfile><sipLines><line button=\"1\"><name>NAME</name><authPassword>s3cret</authPassword></line></sipLines></sipProfile>\n</device>\n";

#[derive(Default)]
struct Counters {
    enrollments: AtomicU64,
    config_fetches: AtomicU64,
    operator_commands: AtomicU64,
    errors: AtomicU64,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn capf(bin: &Path, data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "capf {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (RSS KiB, open file descriptors) of a process.
fn sample(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::fs::canonicalize(&args.capf)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("capf-data");
    let (capf_port, http_port) = (free_port(), free_port());
    capf(&bin, &data, &["init", "--node-name", "127.0.0.1"])?;
    std::fs::write(
        data.join("capf.toml"),
        format!(
            "node_name = \"127.0.0.1\"\nlisten = \"127.0.0.1:{capf_port}\"\ncapf_port = {capf_port}\n\
             http = \"127.0.0.1:{http_port}\"\nmax_failures_per_address = 100000\n"
        ),
    )?;
    let names: Vec<String> = (0..args.phones)
        .map(|i| format!("SEP00AA{i:08X}"))
        .collect();
    let mut csv = String::from("name,operation,auth,auth_string,key,encrypted_config\n");
    for name in &names {
        csv.push_str(&format!("{name},install,null,,rsa:2048,true\n"));
        std::fs::write(
            data.join("tftp").join(format!("{name}.cnf.xml")),
            DOC.replace("NAME", name),
        )?;
    }
    let csv_path = dir.path().join("phones.csv");
    std::fs::write(&csv_path, csv)?;
    capf(
        &bin,
        &data,
        &["device", "import", csv_path.to_str().unwrap_or_default()],
    )?;

    let mut child = Command::new(&bin)
        .arg("--data")
        .arg(&data)
        .arg("serve")
        .env("RUST_LOG", "warn,capf::cli::serve=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("capf listening on") {
                let _ = tx.send(());
            } else if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("server: {line}");
            }
        }
    });
    let server = Server(child);
    rx.recv_timeout(Duration::from_secs(60))?;
    let pid = server.0.id();

    // Keys are generated once: the soak measures capf, not RSA key generation.
    let keys: Vec<rsa::PrivateKey> = (0..args.phones)
        .map(|_| rsa::PrivateKey::new(&mut rand::rng(), 2048))
        .collect::<Result<_, _>>()?;
    let trust: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(data.join("certs/capf.pem"))?.collect::<Result<_, _>>()?;
    let tls = connector(&trust)?;
    let addr: SocketAddr = format!("127.0.0.1:{capf_port}").parse()?;
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);

    let mut workers = Vec::new();
    for w in 0..args.workers {
        let (names, keys, tls, counters, bin, data) = (
            names.clone(),
            keys.clone(),
            tls.clone(),
            counters.clone(),
            bin.clone(),
            data.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let k = i % names.len();
                i += args.workers;
                let result = journey(
                    &bin, &data, addr, http_port, &names[k], &keys[k], &tls, &counters,
                )
                .await;
                if let Err(e) = result {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("error ({}): {e:#}", names[k]);
                }
            }
        }));
    }

    println!(
        "| minute | enrollments | config fetches | operator commands | errors | RSS MiB | fds |"
    );
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rss, fds) = sample(pid);
        samples.push(rss);
        println!(
            "| {:.1} | {} | {} | {} | {} | {:.1} | {} |",
            started.elapsed().as_secs_f64() / 60.0,
            counters.enrollments.load(Ordering::Relaxed),
            counters.config_fetches.load(Ordering::Relaxed),
            counters.operator_commands.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
            rss as f64 / 1024.0,
            fds
        );
    }
    for w in workers {
        w.await?;
    }

    let errors = counters.errors.load(Ordering::Relaxed);
    // Growth: the peak of the last third against the peak of the middle third (the first
    // third is warm-up: sled's cache and the allocator settle).
    let third = samples.len() / 3;
    let growth = if third > 0 {
        let middle = samples[third..2 * third].iter().max().copied().unwrap_or(0);
        let last = samples[2 * third..].iter().max().copied().unwrap_or(0);
        last as f64 / middle.max(1) as f64
    } else {
        1.0
    };
    println!(
        "\nsoak: {:.1} min, {} enrollments, {} config fetches, {} operator commands, {errors} errors, RSS last/middle third {growth:.2}",
        started.elapsed().as_secs_f64() / 60.0,
        counters.enrollments.load(Ordering::Relaxed),
        counters.config_fetches.load(Ordering::Relaxed),
        counters.operator_commands.load(Ordering::Relaxed),
    );
    if errors > 0 || growth > 1.25 {
        anyhow::bail!("soak failed");
    }
    Ok(())
}

/// One phone's journey: scheduled by the operator, enrolled, configuration fetched and
/// decrypted.
#[allow(clippy::too_many_arguments)]
async fn journey(
    bin: &Path,
    data: &Path,
    addr: SocketAddr,
    http_port: u16,
    name: &str,
    key: &rsa::PrivateKey,
    tls: &tokio_rustls::TlsConnector,
    counters: &Counters,
) -> anyhow::Result<()> {
    let (bin2, data2, name2) = (bin.to_path_buf(), data.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || {
        capf(
            &bin2,
            &data2,
            &["device", "set", &name2, "--operation", "install"],
        )
    })
    .await??;
    counters.operator_commands.fetch_add(1, Ordering::Relaxed);

    let mut phone = Phone::new(name);
    phone.key = Some(PhoneKey::Rsa(key.clone()));
    let outcome = phone.run(addr, tls).await?;
    let Some((lsc, _)) = outcome.issued else {
        anyhow::bail!("no LSC issued (END_SESSION {:?})", outcome.end_reason);
    };
    counters.enrollments.fetch_add(1, Ordering::Relaxed);

    let base = format!("http://127.0.0.1:{http_port}/{name}.cnf.xml");
    let partial = http_get(&format!("{base}.sgn")).await?;
    let md5 = hex::encode(md5::Md5::digest(&lsc));
    if partial.status != 200 || !String::from_utf8_lossy(&partial.body).contains(&md5) {
        anyhow::bail!("partial config does not carry certHash {md5}");
    }
    let encrypted = http_get(&format!("{base}.enc.sgn")).await?;
    if encrypted.status != 200 {
        anyhow::bail!("encrypted config: HTTP {}", encrypted.status);
    }
    let plain = capf::phone_config::format::enc::decrypt(&encrypted.body, key)?;
    if plain != DOC.replace("NAME", name).as_bytes() {
        anyhow::bail!("decrypted configuration differs from the base document");
    }
    counters.config_fetches.fetch_add(2, Ordering::Relaxed);
    Ok(())
}
