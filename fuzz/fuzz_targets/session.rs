//! A whole CAPF session driven by arbitrary client bytes, without I/O.
//!
//! Input: one configuration byte, then events. The configuration picks the device
//! record the lookup returns (operation, authentication mode, key order or late,
//! locked, unknown). Each event is a control byte followed, for a message, by a 2-byte
//! length and that many bytes; control bits patch the protocol id and session id and
//! make the announced length honest, so most messages get past the header checks.
//!
//! Invariants: nothing panics; every message sent starts with 0x55, carries the
//! session id and announces its own length; after `Next::Close` nothing is sent.
#![no_main]

use capf::protocol::{HEADER_LEN, PROTOCOL_ID};
use capf::session::{Next, Session, SessionPolicy, Step};
use capf::model::{AuthMode, DeviceRecord, EcCurve, EnrolledCert, KeyOrder, KeySpec, Operation, OperationStatus, UnixTime};
use libfuzzer_sys::fuzz_target;

const ID: u32 = 0x0000_0102;
const NOW: UnixTime = 1_800_000_000;
const NAME: &str = "SEP001122334455";

const PATCH_IDS: u8 = 1;
const HONEST_LENGTH: u8 = 2;
const TIMEOUT: u8 = 4;
const EOF: u8 = 8;
const ISSUE_FAILS: u8 = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let mut driver = Driver {
        record: device(config),
        closed: false,
        issue_fails: false,
    };
    let (mut session, step) = Session::new(ID, "192.0.2.7:50000", SessionPolicy::default());
    driver.follow(&mut session, step);
    while let Some((&control, tail)) = rest.split_first() {
        rest = tail;
        driver.issue_fails = control & ISSUE_FAILS != 0;
        let step = if control & TIMEOUT != 0 {
            session.on_timeout(NOW)
        } else if control & EOF != 0 {
            session.on_eof(NOW)
        } else {
            let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
            let (frame, tail) = tail.split_at(len);
            rest = tail;
            let mut frame = frame.to_vec();
            message(&mut session, &mut frame, control)
        };
        driver.follow(&mut session, step);
    }
});

/// Feeds one frame the way the server does: header check, then the whole message.
/// A frame shorter than a header is a connection that ended mid-header.
fn message(session: &mut Session, frame: &mut [u8], control: u8) -> Step {
    let payload_len = frame.len().saturating_sub(HEADER_LEN);
    let Some((raw, payload)) = frame.split_first_chunk_mut::<HEADER_LEN>() else {
        return session.on_eof(NOW);
    };
    if control & PATCH_IDS != 0 {
        raw[0] = PROTOCOL_ID;
        raw[2..6].copy_from_slice(&ID.to_be_bytes());
    }
    if control & HONEST_LENGTH != 0 {
        let len = u16::try_from(payload_len).unwrap_or(u16::MAX);
        raw[6..8].copy_from_slice(&len.to_be_bytes());
    }
    match session.check_header(raw, NOW) {
        Ok(header) => {
            // The server reads exactly the announced length; a shorter rest is an EOF.
            let announced = usize::from(header.payload_len);
            match payload.get(..announced) {
                Some(payload) => session.on_message(&header, payload, NOW),
                None => session.on_eof(NOW),
            }
        }
        Err(step) => step,
    }
}

struct Driver {
    /// What the store returns for the device.
    record: Option<DeviceRecord>,
    closed: bool,
    issue_fails: bool,
}

impl Driver {
    /// Checks a step and performs its non-read actions, as the server does.
    fn follow(&mut self, session: &mut Session, mut step: Step) {
        loop {
            if let Some(bytes) = &step.send {
                assert!(!self.closed, "sent {bytes:02x?} after Close");
                assert_eq!(bytes.first(), Some(&PROTOCOL_ID));
                assert_eq!(bytes.get(2..6), Some(&ID.to_be_bytes()[..]));
                let announced = bytes.get(6..8).map(|l| u16::from_be_bytes([l[0], l[1]]));
                assert_eq!(announced.map(usize::from), Some(bytes.len() - HEADER_LEN));
            }
            if let Some(commit) = &step.commit {
                if let (Some(change), Some(rec)) = (&commit.change, &mut self.record) {
                    assert_eq!(commit.device.as_deref(), Some(NAME));
                    change.apply(rec);
                }
            }
            step = match step.next {
                Next::Close => {
                    self.closed = true;
                    return;
                }
                Next::Read(_) => return,
                Next::LookupDevice(name) => {
                    assert!(capf::protocol::valid_device_name(&name));
                    let record = self.record.clone().filter(|r| r.name == name);
                    session.on_device(record, NOW)
                }
                Next::IssueLsc { .. } if self.issue_fails => {
                    session.on_lsc_issued(Err("key refused".into()), NOW)
                }
                Next::IssueLsc { key, .. } => session.on_lsc_issued(Ok(fake_cert(key)), NOW),
            };
        }
    }
}

/// The device record selected by the configuration byte.
fn device(config: u8) -> Option<DeviceRecord> {
    if config & 0x80 != 0 {
        return None;
    }
    let mut rec = DeviceRecord::new(NAME);
    rec.operation = match config & 3 {
        0 => Operation::None,
        1 => Operation::Install,
        2 => Operation::Delete,
        _ => Operation::Troubleshoot,
    };
    rec.auth = match (config >> 2) & 3 {
        0 => AuthMode::Null,
        1 => AuthMode::String,
        2 => AuthMode::Lsc,
        _ => AuthMode::Mic,
    };
    rec.auth_string = Some("123456".into());
    rec.key_order = match (config >> 4) & 3 {
        0 => KeyOrder::Rsa { bits: 2048 },
        1 => KeyOrder::Ec {
            curve: EcCurve::P256,
        },
        2 => KeyOrder::EcPreferred {
            curve: EcCurve::P384,
            bits: 2048,
        },
        _ => {
            rec.deadline = Some(NOW - 60);
            KeyOrder::Rsa { bits: 1024 }
        }
    };
    if config & 0x40 != 0 {
        rec.locked_until = Some(NOW + 60);
    }
    rec.status = OperationStatus::Pending;
    Some(rec)
}

fn fake_cert(key: KeySpec) -> EnrolledCert {
    EnrolledCert {
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        public_key: vec![1, 2, 3],
        md5: "00".repeat(16),
        sha256: "00".repeat(32),
        serial: "01".into(),
        not_before: NOW,
        not_after: NOW + 86_400,
        key,
        issuer: "CN=CAPF-test".into(),
        subject: format!("CN={NAME}"),
    }
}
