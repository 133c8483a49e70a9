//! Renderers: the same records as text for people and as JSON for scripts. The JSON
//! field names are a contract (design.md): extend, never rename.

use base64::Engine;
use serde_json::{json, Value};

use crate::store::{CertKind, DeviceRecord, EnrolledCert, UnixTime};

/// RFC 3339 in UTC, e.g. `2026-11-27T10:00:00Z`.
pub fn time(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Local time for people: `2026-11-27 10:00:00 +01:00`.
pub fn local_time(t: UnixTime, utc_offset: i32) -> String {
    let offset = time::UtcOffset::from_whole_seconds(utc_offset).unwrap_or(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]"
    );
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.to_offset(offset).format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

fn opt_time(t: Option<UnixTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(time(t)))
}

pub fn cert_json(c: &EnrolledCert) -> Value {
    json!({
        "md5": c.md5,
        "sha256": c.sha256,
        "serial": c.serial,
        "not_before": time(c.not_before),
        "not_after": time(c.not_after),
        "key": c.key.to_string(),
        "public_key": base64::engine::general_purpose::STANDARD.encode(&c.public_key),
        "issuer": c.issuer,
        "subject": c.subject,
        "pem": crate::ca::certificate_pem(&c.der),
    })
}

fn opt_cert(c: Option<&EnrolledCert>) -> Value {
    c.map_or(Value::Null, cert_json)
}

pub fn device_json(d: &DeviceRecord) -> Value {
    json!({
        "name": d.name,
        "operation": d.operation.to_string(),
        "auth": d.auth.to_string(),
        "auth_string": d.auth_string,
        "key": d.key_order.to_string(),
        "deadline": opt_time(d.deadline),
        "encrypted_config": d.encrypted_config,
        "config_delivery": crate::tftp::plan::delivery(d),
        "status": d.status.to_string(),
        "last_attempt": opt_time(d.last_attempt),
        "failed_auth": d.failed_auth,
        "locked_until": opt_time(d.locked_until),
        "lsc": opt_cert(d.lsc.as_ref()),
        "mic": opt_cert(d.mic.as_ref()),
        "unconfirmed_lsc": opt_cert(d.unconfirmed_lsc.as_ref()),
    })
}

/// One `keys list --json` entry: the certificate fields plus whose and which.
pub fn key_json(name: &str, kind: CertKind, c: &EnrolledCert) -> Value {
    let mut v = cert_json(c);
    if let Value::Object(map) = &mut v {
        map.insert("name".into(), name.into());
        map.insert("type".into(), kind.to_string().into());
    }
    v
}

pub fn device_text(d: &DeviceRecord) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18}{v}\n"));
    line("name:", d.name.clone());
    line("operation:", d.operation.to_string());
    line("auth:", d.auth.to_string());
    if let Some(s) = &d.auth_string {
        line("auth string:", s.clone());
    }
    line("key order:", d.key_order.to_string());
    line("deadline:", d.deadline.map_or("-".into(), time));
    line("encrypted config:", d.encrypted_config.to_string());
    line("config served:", crate::tftp::plan::delivery(d));
    line("status:", d.status.to_string());
    line("last attempt:", d.last_attempt.map_or("-".into(), time));
    if d.failed_auth > 0 {
        line("failed auth:", d.failed_auth.to_string());
    }
    if let Some(t) = d.locked_until {
        line("locked until:", time(t));
    }
    for (label, cert) in [
        ("LSC:", &d.lsc),
        ("MIC:", &d.mic),
        ("unconfirmed LSC:", &d.unconfirmed_lsc),
    ] {
        match cert {
            None => line(label, "-".into()),
            Some(c) => {
                line(label, format!("{} serial {}", c.key, c.serial));
                line("  md5:", c.md5.clone());
                line("  sha256:", c.sha256.clone());
                line(
                    "  valid:",
                    format!("{} .. {}", time(c.not_before), time(c.not_after)),
                );
                line("  issuer:", c.issuer.clone());
            }
        }
    }
    out
}

/// `device list` as an aligned table: columns as wide as their widest cell.
pub fn device_table(devices: &[DeviceRecord]) -> String {
    let header = [
        "NAME",
        "OPERATION",
        "AUTH",
        "KEY",
        "STATUS",
        "LAST ATTEMPT",
        "LSC MD5",
    ];
    let rows: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            [
                d.name.clone(),
                d.operation.to_string(),
                d.auth.to_string(),
                d.key_order.to_string(),
                d.status.to_string(),
                d.last_attempt.map_or("-".into(), time),
                d.lsc.as_ref().map_or("-".into(), |c| c.md5.clone()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}
