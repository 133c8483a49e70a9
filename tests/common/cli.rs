//! Running the real `capf` binary from tests.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

pub fn capf(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CAPF_DATA")
        .output()
        .expect("run capf")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "capf failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "capf should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

/// `capf device add NAME --operation install --auth null`, which must succeed; its
/// output.
pub fn add_null_install(data: &Path, name: &str) -> String {
    ok(&capf(
        data,
        &[
            "device",
            "add",
            name,
            "--operation",
            "install",
            "--auth",
            "null",
        ],
    ))
}

pub fn init(dir: &Path) -> PathBuf {
    let data = dir.join("capf-data");
    ok(&capf(&data, &["init", "--node-name", "capf.test"]));
    data
}

/// `capf --data DATA serve ARGS` as a child process, each line of its standard error
/// sent to the receiver as it comes. The lines are read to the end whether or not
/// anyone receives them, so the child never blocks on a full pipe.
pub fn serve_child(data: &Path, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capf"))
        .arg("--data")
        .arg(data)
        .arg("serve")
        .args(args)
        .env_remove("CAPF_DATA")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start capf serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// `capf serve` with `args` that must refuse to start: its standard error, once it
/// has exited (within 30 s).
pub fn serve_refuses(data: &Path, args: &[&str]) -> String {
    let (mut child, lines) = serve_child(data, args);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait for capf serve") {
            assert!(!status.success(), "serve refuses");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The pipe is closed now: the reader ends, and with it the lines.
    lines.iter().map(|line| line + "\n").collect()
}

/// `capf serve` as a child process; killed on drop.
pub struct Serving(Child, std::net::SocketAddr);

impl Serving {
    /// The address of its CAPF listener.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.1
    }

    /// The process id of `capf serve`.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn start(data: &Path) -> Serving {
        Serving::start_with(data, &[])
    }

    /// As [`Serving::start`], with more `serve` options (e.g. `--init`, or `--http
    /// 127.0.0.1:0`: HTTP and the admin listener are off unless given).
    pub fn start_with(data: &Path, extra: &[&str]) -> Serving {
        let http_off: &[&str] = if extra.contains(&"--http") {
            &[]
        } else {
            &["--http", "off"]
        };
        let metrics_off: &[&str] = if extra.contains(&"--metrics") {
            &[]
        } else {
            &["--metrics", "off"]
        };
        let args: Vec<&str> = ["--listen", "127.0.0.1:0"]
            .iter()
            .chain(http_off)
            .chain(metrics_off)
            .chain(extra)
            .copied()
            .collect();
        let (child, lines) = serve_child(data, &args);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines.recv_timeout(left).expect("serve started");
            if let Some((_, rest)) = line.split_once("capf listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse().expect("listener address");
            }
        };
        Serving(child, addr)
    }
}

impl Serving {
    /// SIGTERM, then waits (bounded) for the server to exit; returns its status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for capf serve") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `phone` against `capf serve` at `addr`, trusting the CAPF certificate of `data`
/// as a phone that holds the node's ITL does.
pub async fn run_phone(
    addr: std::net::SocketAddr,
    data: &Path,
    phone: &capf::phone::Phone,
) -> capf::phone::Outcome {
    use rustls::pki_types::pem::PemObject;
    let capf_pem =
        rustls::pki_types::CertificateDer::from_pem_file(data.join("certs/capf.pem")).unwrap();
    let connector = capf::phone::connector(&[capf_pem]).unwrap();
    phone.run(addr, &connector).await.unwrap()
}

/// [`run_phone`] for a phone that must come away with an LSC: the LSC and its key.
pub async fn enroll_phone(
    addr: std::net::SocketAddr,
    data: &Path,
    phone: &capf::phone::Phone,
) -> (Vec<u8>, capf::phone::PhoneKey) {
    let outcome = run_phone(addr, data, phone).await;
    assert_eq!(
        outcome.end_reason,
        Some(capf::protocol::Reason::UpdateCertificate),
        "{}",
        phone.name
    );
    outcome.issued.expect("an LSC was issued")
}
