//! Renderers: the same records as text for people and as JSON for scripts. The JSON
//! field names are a contract (design.md): extend, never rename.

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use std::fmt;
use std::io::Write;

use crate::store::{
    AuthMode, CertKind, DeviceRecord, EnrolledCert, KeyOrder, KeySpec, Operation, OperationStatus,
    UnixTime,
};

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
            config_delivery: crate::tftp::plan::delivery(d),
            deadline: d.deadline.map(Rfc3339),
            encrypted_config: d.encrypted_config,
            failed_auth: d.failed_auth,
            key: Shown(d.key_order),
            last_attempt: d.last_attempt.map(Rfc3339),
            locked_until: d.locked_until.map(Rfc3339),
            lsc: d.lsc.as_ref().map(cert_fields),
            mic: d.mic.as_ref().map(cert_fields),
            name: &d.name,
            operation: Shown(d.operation),
            status: Shown(&d.status),
            unconfirmed_lsc: d.unconfirmed_lsc.as_ref().map(cert_fields),
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
    locked_until: Option<Rfc3339>,
    lsc: Option<CertFields<'a>>,
    mic: Option<CertFields<'a>>,
    name: &'a str,
    operation: Shown<Operation>,
    status: Shown<&'a OperationStatus>,
    unconfirmed_lsc: Option<CertFields<'a>>,
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

/// `device list` as an aligned table: columns as wide as their widest cell. Only the
/// cells are kept until the widths are known, not the records.
pub fn device_table(
    out: &mut dyn Write,
    devices: impl IntoIterator<Item = anyhow::Result<DeviceRecord>>,
) -> anyhow::Result<()> {
    const HEADER: [&str; 7] = [
        "NAME",
        "OPERATION",
        "AUTH",
        "KEY",
        "STATUS",
        "LAST ATTEMPT",
        "LSC MD5",
    ];
    let mut widths = HEADER.map(str::len);
    let mut rows: Vec<[String; 7]> = Vec::new();
    for d in devices {
        let d = d?;
        let row = [
            d.name,
            d.operation.to_string(),
            d.auth.to_string(),
            d.key_order.to_string(),
            d.status.to_string(),
            d.last_attempt.map_or("-".into(), time),
            d.lsc.map_or("-".into(), |c| c.md5),
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
    cells: [&str; 7],
    widths: [usize; 7],
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
mod tests {
    use super::*;
    use crate::store::EcCurve;
    use base64::Engine;
    use serde_json::{json, Value};

    /// The renderer as it was, building a `Value` per entry: the reference the
    /// streamed views must match.
    fn cert_value(c: &EnrolledCert) -> Value {
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

    fn device_value(d: &DeviceRecord) -> Value {
        let opt_time = |t: Option<UnixTime>| t.map_or(Value::Null, |t| Value::String(time(t)));
        let opt_cert = |c: Option<&EnrolledCert>| c.map_or(Value::Null, cert_value);
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

    fn key_value(name: &str, kind: CertKind, c: &EnrolledCert) -> Value {
        let mut v = cert_value(c);
        if let Value::Object(map) = &mut v {
            map.insert("name".into(), name.into());
            map.insert("type".into(), kind.to_string().into());
        }
        v
    }

    /// A real certificate, described by `ca::cert_info`.
    fn enrolled(name: &str) -> EnrolledCert {
        let issued = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        crate::ca::cert_info(issued.cert.der()).unwrap()
    }

    /// A device with every field set, including text that JSON must escape.
    fn every_field() -> DeviceRecord {
        DeviceRecord {
            operation: Operation::Install,
            auth: AuthMode::String,
            auth_string: Some("12345678".into()),
            key_order: KeyOrder::EcPreferred {
                curve: EcCurve::P384,
                bits: 3072,
            },
            deadline: Some(1_800_000_000),
            encrypted_config: true,
            status: OperationStatus::UpgradeFailed("Invalid \"Authentication\" String\n".into()),
            last_attempt: Some(1_750_000_000),
            failed_auth: 3,
            locked_until: Some(1_750_000_600),
            lsc: Some(enrolled("lsc.example")),
            mic: Some(enrolled("mic.example")),
            unconfirmed_lsc: Some(enrolled("next.example")),
            ..DeviceRecord::new("SEP001122334455")
        }
    }

    #[test]
    fn streamed_device_json_is_what_the_value_renderer_printed() {
        let d = every_field();
        let expected = device_value(&d);
        assert!(
            expected.as_object().unwrap().values().all(|v| !v.is_null()),
            "every field set: {expected:#}"
        );
        let view = DeviceJson(d.clone());
        assert_eq!(serde_json::to_value(&view).unwrap(), expected);
        assert_eq!(
            serde_json::to_string_pretty(&view).unwrap(),
            serde_json::to_string_pretty(&expected).unwrap(),
            "byte for byte"
        );

        // Unset fields are null, as before.
        let bare = DeviceRecord::new("SEP000000000001");
        assert_eq!(
            serde_json::to_value(DeviceJson(bare.clone())).unwrap(),
            device_value(&bare)
        );

        // The streamed array is the pretty-printed array of the values.
        let mut out = Vec::new();
        json_array(
            &mut out,
            [Ok(DeviceJson(d.clone())), Ok(DeviceJson(bare.clone()))],
        )
        .unwrap();
        let mut expected_array =
            serde_json::to_string_pretty(&[device_value(&d), device_value(&bare)]).unwrap();
        expected_array.push('\n');
        assert_eq!(String::from_utf8(out).unwrap(), expected_array);

        let mut out = Vec::new();
        json_array(&mut out, std::iter::empty::<anyhow::Result<DeviceJson>>()).unwrap();
        assert_eq!(out, b"[]\n");
    }

    #[test]
    fn streamed_key_json_is_what_the_value_renderer_printed() {
        let d = every_field();
        let lsc = d.lsc.clone().unwrap();
        let entry = KeyJson {
            name: d.name.clone(),
            kind: CertKind::Lsc,
            cert: lsc.clone(),
        };
        let expected = key_value(&d.name, CertKind::Lsc, &lsc);
        assert_eq!(serde_json::to_value(&entry).unwrap(), expected);
        assert_eq!(
            serde_json::to_string_pretty(&entry).unwrap(),
            serde_json::to_string_pretty(&expected).unwrap()
        );
        assert_eq!(
            serde_json::to_value(cert_json(&lsc)).unwrap(),
            cert_value(&lsc)
        );
    }

    #[test]
    fn the_device_table_sizes_columns_to_their_widest_cell() {
        let mut enrolled_phone = every_field();
        enrolled_phone.status = OperationStatus::UpgradeSuccess;
        let md5 = enrolled_phone.lsc.as_ref().unwrap().md5.clone();
        let mut out = Vec::new();
        device_table(
            &mut out,
            [Ok(DeviceRecord::new("CSFjdoe")), Ok(enrolled_phone)],
        )
        .unwrap();
        let expected = format!(
            "NAME             OPERATION  AUTH    KEY                         STATUS           LAST ATTEMPT          LSC MD5\n\
             CSFjdoe          none       null    rsa:2048                    None             -                     -\n\
             SEP001122334455  install    string  ec-preferred:p384,rsa:3072  Upgrade Success  2025-06-15T15:06:40Z  {md5}\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
