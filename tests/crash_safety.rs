//! Crash safety of the real binary: `capf serve` is killed with SIGKILL at random
//! points while phones enroll, restarted, and the store is checked after every kill.
//!
//! Invariants: the store opens and every record decodes (no torn records); no device
//! is Upgrade Success without an LSC; a device's LSC serial is `installed` in the
//! serial index, and no other serial of that device is; every indexed serial belongs
//! to an existing or a removed device; every phone that was told END 1 finds exactly
//! its certificate recorded (the commit is durable before the phone hears of it); and
//! the server starts cleanly every time.

mod common;

use capf::model::{AuthMode, DeviceRecord, Operation, OperationStatus, SerialState};
use capf::phone::{connector, Phone};
use capf::protocol::Reason;
use capf::settings::DataDir;
use capf::store::Store;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;
const DEVICES: usize = 6;

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn device_name(i: usize) -> String {
    format!("SEP0011223344{i:02X}")
}

/// `capf serve` on `data` (initialised on the first start), with its CAPF address;
/// dropping it is the SIGKILL.
fn start(data: &DataDir) -> common::cli::Serving {
    common::cli::Serving::start_with(data.root(), &["--init"])
}

/// Opens the store of a killed server and checks every invariant; returns the devices.
fn check_store(
    data: &DataDir,
    removed: &HashSet<String>,
    confirmed: &HashMap<String, Vec<u8>>,
) -> Vec<DeviceRecord> {
    let store = Store::open(&data.db()).expect("the store opens after SIGKILL");
    let devices = store.list_devices().expect("every device record decodes");
    let serials = store.serials().expect("every serial record decodes");
    let by_name: HashMap<&str, &DeviceRecord> =
        devices.iter().map(|d| (d.name.as_str(), d)).collect();
    for d in &devices {
        if d.status == OperationStatus::UpgradeSuccess {
            assert!(
                d.lsc.is_some(),
                "{}: Upgrade Success without an LSC",
                d.name
            );
        }
        if let Some(lsc) = &d.lsc {
            let indexed = store.serial(&lsc.serial).unwrap();
            let indexed = indexed.unwrap_or_else(|| panic!("{}: LSC serial not indexed", d.name));
            assert_eq!(indexed.state, SerialState::Installed, "{}", d.name);
            assert_eq!(indexed.device, d.name);
        }
    }
    for (serial, rec) in &serials {
        assert!(
            matches!(
                rec.state,
                SerialState::Installed | SerialState::Superseded | SerialState::Unconfirmed
            ),
            "serial {serial}"
        );
        match by_name.get(rec.device.as_str()) {
            Some(d) if rec.state == SerialState::Installed => assert_eq!(
                d.lsc.as_ref().map(|l| l.serial.as_str()),
                Some(serial.as_str()),
                "serial {serial} is installed but is not {}'s LSC",
                d.name
            ),
            Some(_) => {}
            None => assert!(
                removed.contains(&rec.device),
                "serial {serial} belongs to {}, which never existed",
                rec.device
            ),
        }
    }
    for (name, der) in confirmed {
        if removed.contains(name) {
            continue;
        }
        let lsc = by_name.get(name.as_str()).and_then(|d| d.lsc.as_ref());
        assert_eq!(
            lsc.map(|l| &l.der),
            Some(der),
            "{name} was told its LSC is installed, and the store must say so"
        );
    }
    devices
}

/// Schedules every device for a new install (the server is down), sometimes replacing
/// one device by a new one.
fn reschedule(
    data: &DataDir,
    round: usize,
    names: &mut Vec<String>,
    removed: &mut HashSet<String>,
) {
    let store = Store::open(&data.db()).unwrap();
    if round % 5 == 4 {
        let gone = names.remove(0);
        store
            .remove_device(&gone, event(&gone, "device-remove"))
            .unwrap();
        removed.insert(gone);
        names.push(device_name(DEVICES + round));
    }
    for name in names.iter() {
        let mut rec = store
            .get_device(name)
            .unwrap()
            .unwrap_or_else(|| common::install(name, AuthMode::Null, common::P256));
        rec.operation = Operation::Install;
        rec.status = OperationStatus::Pending;
        store
            .put_device(&rec, event(name, "device-update"))
            .unwrap();
    }
    store.flush().unwrap();
}

fn event(name: &str, action: &str) -> capf::model::Event {
    let mut e = common::event(name);
    e.action = action.into();
    e
}

#[test]
fn sigkill_at_random_points_never_leaves_the_store_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("capf-data"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = XorShift(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The first start initialises the data directory.
    drop(start(&data));
    let capf_cert = CertificateDer::from_pem_file(data.capf_cert()).unwrap();
    let connector = connector(&[capf_cert]).unwrap();

    let started = Instant::now();
    let mut names: Vec<String> = (0..DEVICES).map(device_name).collect();
    let mut removed = HashSet::new();
    let mut enrolled = 0;
    let mut devices = Vec::new();
    for round in 0..ROUNDS {
        reschedule(&data, round, &mut names, &mut removed);

        let server = start(&data);
        let addr = server.addr();
        let kill_after = Duration::from_millis(20 + rng.below(400));
        let delays: Vec<u64> = names.iter().map(|_| rng.below(300)).collect();
        let outcomes = runtime.block_on(async {
            let mut phones = tokio::task::JoinSet::new();
            for (name, delay) in names.iter().zip(delays) {
                let connector = connector.clone();
                let mut phone = Phone::new(name.clone());
                phone.timeout = Duration::from_secs(5);
                let name = name.clone();
                phones.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    (name, phone.run(addr, &connector).await)
                });
            }
            tokio::time::sleep(kill_after).await;
            // SIGKILL wherever the server is: between commits, mid-flush, mid-session.
            drop(server);
            // Every phone ends promptly now: finished, reset, or refused.
            let mut outcomes = Vec::new();
            while let Ok(Some(joined)) =
                tokio::time::timeout(Duration::from_secs(10), phones.join_next()).await
            {
                outcomes.push(joined.unwrap());
            }
            outcomes
        });
        // Phones told END 1 in this round (the next round schedules them again).
        let mut confirmed: HashMap<String, Vec<u8>> = HashMap::new();
        for (name, outcome) in outcomes {
            if let Ok(o) = outcome {
                if o.end_reason == Some(Reason::UpdateCertificate) {
                    let (der, _) = o.issued.expect("the LSC the phone stored");
                    confirmed.insert(name, der);
                    enrolled += 1;
                }
            }
        }
        devices = check_store(&data, &removed, &confirmed);
    }
    println!(
        "{ROUNDS} kills, {enrolled} confirmed enrollments, {} devices, {:?}",
        devices.len(),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(90));
}
