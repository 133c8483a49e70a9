//! Configuration build throughput: encrypted configurations (and signed partials) per
//! second, calling [`ConfigService::fetch`] directly, on one thread and on every core.
//!
//! ```text
//! cargo run --release --example confbench -- --seconds 5 [--json]
//! ```
//!
//! It initialises a throw-away data directory, enrolls one RSA-2048 phone (an LSC from
//! the real CA, encrypted configuration on, a base document in `tftp/`) and builds its
//! files for the given time. Each `.enc.sgn` costs one RSA-2048 signature by the TFTP
//! signer plus one public-key wrap, so the ceiling is the machine's RSA-2048 sign rate.
//! The service's cache of built files is off here (`config_cache_mib = 0`): every
//! fetch is a build, which is what this measures.
//!
//! The cases "document checked before" are the builds after a change that left the
//! base document as it was (an enrollment, a scheduled operation, a phone's second
//! file after its first): the service keeps each document's check by the digest of its
//! bytes. They run on a service with the cache on, over devices that each have a copy
//! of the CUCM-sized document, each device's file fetched once, so every fetch is a
//! build and all but the first find the check kept. As on a serving node, that service
//! also keeps each file it builds in `kept-files/` (`phone_config::kept`), over the
//! copy built before the change: the build hands it to the idle-priority writer, so
//! these cases count the hand-over and whatever CPU the writer takes from the builds;
//! `CONFBENCH_NO_DISK=1` runs them without it, to compare.

use capf::ca::Ca;
use capf::model::{DeviceRecord, Event, Operation};
use capf::phone::PhoneKey;
use capf::phone_config::kept::KeptFiles;
use capf::phone_config::plan::{ConfigForm, Request};
use capf::phone_config::service::ConfigService;
use capf::protocol::{KeyGenerateRequest, KeyType};
use capf::settings::{DataDir, Settings};
use capf::store::Store;
use clap::Parser;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Measuring time per case, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Threads of the all-cores case (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
    /// Run only the cases whose name contains this (for profiling one case).
    #[arg(long)]
    only: Option<String>,
}

/// The base documents measured, each on a device of its own: the small one loadgen
/// writes by default, and one of the size and shape CUCM writes for a two-line SIP
/// phone (real configurations are tens of KiB, and every full or encrypted build
/// reads, checks and encrypts all of it).
const DOCUMENTS: [(&str, &str); 2] = [
    ("0000AABBCCDD", include_str!("data/base.cnf.xml")),
    ("0000AABBCCDE", include_str!("data/cucm.cnf.xml")),
];

/// Devices per "document checked before" case.
const CHECKED_DEVICES: usize = 3000;

#[derive(Serialize)]
struct Case {
    name: String,
    threads: usize,
    files: u64,
    seconds: f64,
    per_second: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path());
    let settings = Settings {
        config_cache_mib: 0,
        ..Settings::default()
    };
    capf::cli::initialise(&data, &settings, None, None, false)?;
    let store = Store::open(&data.db())?;
    let ca = Ca::load(&data.certs(), settings.lsc_validity_days)?;

    let key = PhoneKey::generate(&KeyGenerateRequest {
        key_size: Some(2048),
        key_type: Some(KeyType::Rsa),
        curve: None,
    })?;
    for (mac, document) in DOCUMENTS {
        let name = format!("SEP{mac}");
        let lsc = ca.issue_lsc(&name, &key.public_key_der()?, capf::model::now())?;
        add_device(&store, &data, &name, lsc, document)?;
    }
    // The devices of the "document checked before" cases: each with its own copy of
    // the CUCM-sized document, one group per thread count.
    let (_, checked_document) = DOCUMENTS[1];
    let lsc = ca.issue_lsc(
        "SEP0000AABBCCDE",
        &key.public_key_der()?,
        capf::model::now(),
    )?;
    let groups: Vec<Vec<String>> = (0..2)
        .map(|group| {
            (0..CHECKED_DEVICES)
                .map(|n| format!("SEP{group:01X}{n:011X}"))
                .collect()
        })
        .collect();
    for name in groups.iter().flatten() {
        add_device(&store, &data, name, lsc.clone(), checked_document)?;
    }
    let mut kept = ConfigService::load(&data, &Settings::default(), store.clone());
    {
        // Each device's files as built before the change the cases measure the builds
        // after (here another node name): the builds then write over a kept copy, as
        // on a node, rather than create one.
        let before = Settings {
            node_name: "before.invalid".into(),
            ..Settings::default()
        };
        let before = ConfigService::load(&data, &before, store.clone());
        let before = match KeptFiles::open(data.kept_files()) {
            Some(files) => before.with_kept_files(files),
            None => anyhow::bail!("cannot keep files in {}", data.kept_files().display()),
        };
        for name in groups.iter().flatten() {
            for form in [ConfigForm::Encrypted, ConfigForm::Signed] {
                let mac = name.trim_start_matches("SEP").into();
                before.fetch(&Request::Config { mac, form }, capf::model::now())?;
            }
        }
        if std::env::var_os("CONFBENCH_NO_DISK").is_none() {
            if let Some(files) = KeptFiles::open(data.kept_files()) {
                kept = kept.with_kept_files(files);
            }
        }
    }
    let service = ConfigService::load(&data, &settings, store);
    if let Err(e) = service.signer() {
        anyhow::bail!("no signer: {e}");
    }

    let seconds = Duration::from_secs_f64(args.seconds);
    let mut cases = Vec::new();
    for (mac, document) in DOCUMENTS {
        for (label, form) in [
            ("encrypted .enc.sgn", ConfigForm::Encrypted),
            ("signed partial .sgn", ConfigForm::Signed),
        ] {
            let request = Request::Config {
                mac: mac.into(),
                form,
            };
            let name = format!("{label}, {} B document", document.len());
            if args
                .only
                .as_ref()
                .is_some_and(|only| !name.contains(only.as_str()))
            {
                continue;
            }
            for n in [1, threads] {
                cases.push(run(&name, &service, &request, n, seconds)?);
            }
        }
    }
    for (label, form) in [
        ("encrypted .enc.sgn", ConfigForm::Encrypted),
        ("signed partial .sgn", ConfigForm::Signed),
    ] {
        let name = format!(
            "{label}, {} B document checked before",
            checked_document.len()
        );
        if args
            .only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        for (group, n) in groups.iter().zip([1, threads]) {
            let requests: Vec<Request> = group
                .iter()
                .map(|mac| Request::Config {
                    mac: mac.trim_start_matches("SEP").into(),
                    form,
                })
                .collect();
            cases.push(run_each(&name, &kept, &requests, n)?);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cases)?);
    } else {
        for c in &cases {
            println!(
                "{:<44} threads {:>2}: {:>6} files in {:.2} s = {:>7.1} files/s",
                c.name, c.threads, c.files, c.seconds, c.per_second
            );
        }
    }
    Ok(())
}

/// Adds a device with encrypted configuration, `lsc` and `document` in `tftp/`.
fn add_device(
    store: &Store,
    data: &DataDir,
    name: &str,
    lsc: capf::model::EnrolledCert,
    document: &str,
) -> anyhow::Result<()> {
    let mut device = DeviceRecord::new(name);
    device.operation = Operation::None;
    device.encrypted_config = true;
    device.lsc = Some(lsc);
    store.put_device(
        &device,
        Event {
            id: 0,
            time: capf::model::now(),
            actor: "bench".into(),
            device: Some(name.to_owned()),
            action: "device-add".into(),
            result: "added".into(),
            details: Default::default(),
        },
    )?;
    std::fs::write(data.tftp().join(format!("{name}.cnf.xml")), document)?;
    Ok(())
}

/// Fetches each of `requests` once, on `threads` threads.
fn run_each(
    name: &str,
    service: &ConfigService,
    requests: &[Request],
    threads: usize,
) -> anyhow::Result<Case> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    while let Some(request) =
                        requests.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        service.fetch(request, capf::model::now())?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Case {
        name: name.to_owned(),
        threads,
        files: requests.len() as u64,
        seconds: elapsed,
        per_second: requests.len() as f64 / elapsed,
    })
}

/// Builds `request` on `threads` threads for `seconds`.
fn run(
    name: &str,
    service: &ConfigService,
    request: &Request,
    threads: usize,
    seconds: Duration,
) -> anyhow::Result<Case> {
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut built = 0u64;
                    while started.elapsed() < seconds {
                        service.fetch(request, capf::model::now())?;
                        built += 1;
                    }
                    Ok::<_, anyhow::Error>(built)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let files: u64 = counts.iter().sum();
    Ok(Case {
        name: name.to_owned(),
        threads,
        files,
        seconds: elapsed,
        per_second: files as f64 / elapsed,
    })
}
