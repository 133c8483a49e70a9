//! Renderers: the same records as text for people and as JSON for scripts. The JSON
//! field names are a contract (design.md): extend, never rename.

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use std::fmt;
use std::io::Write;

use crate::model::{
    AuthMode, CertKind, DeviceRecord, EnrolledCert, KeyOrder, KeySpec, Operation, OperationStatus,
    UnixTime,
};

pub use crate::model::display::{status_text, time};

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

/// A value printed with its `Display` form: the text the people's renderer shows.
struct Shown<T>(T);

impl<T: fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A time as RFC 3339 in UTC (see [`time`]).
struct Rfc3339(UnixTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time(self.0))
    }
}

/// Bytes as standard base64.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

/// An enrolled certificate as `--json` output shows it; with `name` and `type` it is
/// one `keys list --json` entry.
///
/// The JSON views serialize straight from the record into the output: a listing of a
/// million devices builds no `serde_json::Value` per entry. Fields are declared in
/// name order, the order in which the earlier `Value` renderer printed them, so the
/// output is byte for byte what it was.
#[derive(Serialize)]
struct CertFields<'a> {
    issuer: &'a str,
    key: Shown<KeySpec>,
    md5: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    not_after: Rfc3339,
    not_before: Rfc3339,
    pem: String,
    public_key: Base64<'a>,
    serial: &'a str,
    sha256: &'a str,
    subject: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<Shown<CertKind>>,
}

fn cert_fields(c: &EnrolledCert) -> CertFields<'_> {
    CertFields {
        issuer: &c.issuer,
        key: Shown(c.key),
        md5: &c.md5,
        name: None,
        not_after: Rfc3339(c.not_after),
        not_before: Rfc3339(c.not_before),
        pem: crate::ca::certificate_pem(&c.der),
        public_key: Base64(&c.public_key),
        serial: &c.serial,
        sha256: &c.sha256,
        subject: &c.subject,
        kind: None,
    }
}

/// An enrolled certificate in `--json` output.
pub fn cert_json(c: &EnrolledCert) -> impl Serialize + '_ {
    cert_fields(c)
}

/// One `keys list --json` entry: the certificate fields plus whose and which.
pub struct KeyJson {
    pub name: String,
    pub kind: CertKind,
    pub cert: EnrolledCert,
}

impl Serialize for KeyJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CertFields {
            name: Some(&self.name),
            kind: Some(Shown(self.kind)),
            ..cert_fields(&self.cert)
        }
        .serialize(s)
    }
}

/// A device as `device show --json`, `device list --json` and `device export --json`
/// print it.
pub struct DeviceJson(pub DeviceRecord);

impl Serialize for DeviceJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.0;
        DeviceFields {
            auth: Shown(d.auth),
            auth_string: d.auth_string.as_deref(),
            config_delivery: crate::phone_config::plan::delivery(d),
            deadline: d.deadline.map(Rfc3339),
            encrypted_config: d.encrypted_config,
            failed_auth: d.failed_auth,
            key: Shown(d.key_order),
            last_attempt: d.last_attempt.map(Rfc3339),
            locked_out: d.is_locked(crate::model::now()),
            locked_until: d.locked_until.map(Rfc3339),
            lsc: d.lsc.as_ref().map(cert_fields),
            mic: d.mic.as_ref().map(cert_fields),
            name: &d.name,
            operation: Shown(d.operation),
            status: Shown(&d.status),
            unconfirmed_lsc: d.unconfirmed_lsc.as_ref().map(cert_fields),
            fetched_untrusted: d.fetched_untrusted.as_ref().map(cert_fields),
        }
        .serialize(s)
    }
}

/// `device add --json`: the device as [`DeviceJson`] prints it, and the
/// authentication string generated for it (`null` when none was).
#[derive(Serialize)]
pub struct AddedJson {
    #[serde(flatten)]
    pub device: DeviceJson,
    pub generated_auth_string: Option<String>,
}

/// The fields of [`DeviceJson`], in name order like [`CertFields`].
#[derive(Serialize)]
struct DeviceFields<'a> {
    auth: Shown<AuthMode>,
    auth_string: Option<&'a str>,
    config_delivery: String,
    deadline: Option<Rfc3339>,
    encrypted_config: bool,
    failed_auth: u32,
    key: Shown<KeyOrder>,
    last_attempt: Option<Rfc3339>,
    /// Added in #19: whether a brute-force lockout is in force now.
    locked_out: bool,
    locked_until: Option<Rfc3339>,
    lsc: Option<CertFields<'a>>,
    mic: Option<CertFields<'a>>,
    name: &'a str,
    operation: Shown<Operation>,
    status: Shown<&'a OperationStatus>,
    unconfirmed_lsc: Option<CertFields<'a>>,
    /// Added after the first release; absent unless a troubleshoot fetch returned a
    /// certificate capf does not trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    fetched_untrusted: Option<CertFields<'a>>,
}

/// Writes `items` as a pretty-printed JSON array and a newline, one element at a
/// time: however long the list, only one entry is in memory at once. `out` should be
/// buffered. An error ends the output where it happened (the array stays open).
pub fn json_array<T: Serialize>(
    out: &mut dyn Write,
    items: impl IntoIterator<Item = anyhow::Result<T>>,
) -> anyhow::Result<()> {
    let mut json = serde_json::Serializer::pretty(&mut *out);
    let mut seq = json.serialize_seq(None)?;
    for item in items {
        seq.serialize_element(&item?)?;
    }
    seq.end()?;
    writeln!(out)?;
    Ok(())
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
    line("config served:", crate::phone_config::plan::delivery(d));
    line("status:", status_text(d, crate::model::now()));
    line("last attempt:", d.last_attempt.map_or("-".into(), time));
    if d.failed_auth > 0 {
        line("failed auth:", d.failed_auth.to_string());
    }
    if let Some(t) = d.locked_until {
        line("locked until:", time(t));
    }
    let untrusted = d
        .fetched_untrusted
        .as_ref()
        .map(|_| ("fetched, untrusted:", &d.fetched_untrusted));
    for (label, cert) in [
        ("LSC:", &d.lsc),
        ("MIC:", &d.mic),
        ("unconfirmed LSC:", &d.unconfirmed_lsc),
    ]
    .into_iter()
    .chain(untrusted)
    {
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

/// `device list` as an aligned table: columns as wide as their widest cell. Only the
/// cells are kept until the widths are known, not the records.
pub fn device_table(
    out: &mut dyn Write,
    now: UnixTime,
    devices: impl IntoIterator<Item = anyhow::Result<DeviceRecord>>,
) -> anyhow::Result<()> {
    // DEADLINE was added last (#19), so that columns counted from the left stay.
    const HEADER: [&str; 8] = [
        "NAME",
        "OPERATION",
        "AUTH",
        "KEY",
        "STATUS",
        "LAST ATTEMPT",
        "LSC MD5",
        "DEADLINE",
    ];
    let mut widths = HEADER.map(str::len);
    let mut rows: Vec<[String; 8]> = Vec::new();
    for d in devices {
        let d = d?;
        let status = status_text(&d, now);
        let row = [
            d.name,
            d.operation.to_string(),
            d.auth.to_string(),
            d.key_order.to_string(),
            status,
            d.last_attempt.map_or("-".into(), time),
            d.lsc.map_or("-".into(), |c| c.md5),
            d.deadline.map_or("-".into(), time),
        ];
        for (w, cell) in widths.iter_mut().zip(&row) {
            *w = (*w).max(cell.chars().count());
        }
        rows.push(row);
    }
    let mut line = String::new();
    write_table_line(out, &mut line, HEADER, widths)?;
    for row in &rows {
        write_table_line(out, &mut line, row.each_ref().map(String::as_str), widths)?;
    }
    Ok(())
}

/// One table line: every cell but the last padded to its column and two spaces apart,
/// trailing whitespace removed. `line` is scratch space reused from line to line.
fn write_table_line(
    out: &mut dyn Write,
    line: &mut String,
    cells: [&str; 8],
    widths: [usize; 8],
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    line.clear();
    let last = cells.len() - 1;
    for (i, (cell, w)) in cells.into_iter().zip(widths).enumerate() {
        if i == last {
            line.push_str(cell);
        } else {
            // Writing into a String cannot fail.
            let _ = write!(line, "{cell:<w$}  ");
        }
    }
    writeln!(out, "{}", line.trim_end())
}

#[cfg(test)]
mod tests;
