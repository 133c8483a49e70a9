//! Store scale: point lookups and a full scan of a data directory's device tree,
//! in-process (the store is opened directly, so `capf serve` must not be running).
//!
//! ```text
//! cargo run --release --example storebench -- --data DIR --count 100000 [--json]
//! ```
//!
//! Devices are looked up by the names `loadgen setup` gives them (`SEP` + 12 hex
//! digits counting up from `--first`), in a random order.

use capf::store::Store;
use clap::Parser;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "capf-data")]
    data: PathBuf,
    /// How many devices the names run over.
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Lookups to time.
    #[arg(long, default_value_t = 10_000)]
    lookups: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    open_seconds: f64,
    lookups: u64,
    lookup_p50_us: f64,
    lookup_p99_us: f64,
    lookup_max_us: f64,
    scanned_devices: usize,
    scan_seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.count > 0, "--count must be positive");
    let started = Instant::now();
    let store = Store::open(&args.data.join("db"))?;
    let open_seconds = started.elapsed().as_secs_f64();

    let mut samples = Vec::with_capacity(args.lookups as usize);
    for _ in 0..args.lookups {
        let n = args.first + rand::random_range(0..args.count);
        let name = format!("SEP{n:012X}");
        let started = Instant::now();
        let found = store.get_device(&name)?;
        samples.push(started.elapsed());
        anyhow::ensure!(found.is_some(), "{name} is not in the store");
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples
            .get(i)
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1e6
    };

    let started = Instant::now();
    let mut scanned = 0;
    for device in store.devices() {
        device?;
        scanned += 1;
    }
    let report = Report {
        open_seconds,
        lookups: args.lookups,
        lookup_p50_us: at(0.5),
        lookup_p99_us: at(0.99),
        lookup_max_us: at(1.0),
        scanned_devices: scanned,
        scan_seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "open {:.2} s; {} lookups: p50 {:.1} us, p99 {:.1} us, max {:.1} us; scan of {} devices {:.2} s",
            report.open_seconds,
            report.lookups,
            report.lookup_p50_us,
            report.lookup_p99_us,
            report.lookup_max_us,
            report.scanned_devices,
            report.scan_seconds
        );
    }
    Ok(())
}
