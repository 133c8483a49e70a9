//! RSA-2048 signatures per second through capf's own signing path
//! (`ca::signing::RsaKey`), on one thread, and which OpenSSL the binary carries:
//! the figure that compares the vendored OpenSSL with the system one
//! (docs/benchmarks.md, "Vendored OpenSSL against the system library").
//!
//! ```text
//! cargo run --release --example rsasign -- [--key KEY.pem] [--seconds 5]
//! ```
//!
//! PKCS#1 v1.5 is the LSC's and the configuration files' signature, PSS the TLS 1.3
//! handshake's; both over SHA-256. Without `--key` a new key is generated; pass the
//! same key to compare two builds. Linux only (the CPU time comes from /proc).

use capf::ca::signing::{RsaKey, RsaPadding};
use clap::Parser;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// An RSA private key, PEM (PKCS#8 or PKCS#1).
    #[arg(long)]
    key: Option<PathBuf>,
    /// How long each padding is timed.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pkey = match &args.key {
        Some(path) => PKey::private_key_from_pem(&std::fs::read(path)?)?,
        None => PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?,
    };
    let bits = pkey.bits();
    let key = RsaKey::from_pkey(pkey.clone()).ok_or_else(|| anyhow::anyhow!("not an RSA key"))?;
    println!("{}, RSA-{bits}", openssl::version::version());

    // A TLS 1.3 CertificateVerify input is 130 bytes; an LSC's TBS a few hundred.
    let message = [0x5au8; 256];
    for (name, padding) in [("PKCS#1", RsaPadding::Pkcs1), ("PSS", RsaPadding::Pss)] {
        let signature = key.sign(MessageDigest::sha256(), padding, &message)?;
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &pkey)?;
        if padding == RsaPadding::Pss {
            verifier.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)?;
        }
        verifier.update(&message)?;
        anyhow::ensure!(
            verifier.verify(&signature)?,
            "{name} signature does not verify"
        );

        let budget = Duration::from_secs_f64(args.seconds);
        let cpu_start = thread_cpu_seconds()?;
        let started = Instant::now();
        let mut signs = 0u64;
        while started.elapsed() < budget {
            key.sign(MessageDigest::sha256(), padding, &message)?;
            signs += 1;
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds()? - cpu_start;
        println!(
            "{name} SHA-256: {:.1} signs per CPU second, {:.1} per second ({signs} in {wall:.1} s, {cpu:.2} s CPU)",
            signs as f64 / cpu,
            signs as f64 / wall,
        );
    }
    Ok(())
}

/// This thread's user + system CPU time, in the kernel's clock ticks (1/100 s): on a
/// shared machine the signs per CPU second move less than the signs per second, which
/// lose whatever time other processes take on the same core.
fn thread_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 of proc(5), counted after the command name's ')'.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short stat"))?
            .parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
