//! A CUCM Bulk Administration (BAT) phone export read by `capf device import`.
//!
//! An export from BAT's "Export Phones" (All Details, or Specific Details with a file
//! format of the administrator's choosing) is recognised by its header: a `Device Name`
//! or `MAC Address` column, names compared ignoring case and runs of spaces. Of its
//! hundreds of columns only the CAPF ones are read; every other column is ignored.
//! Each recognised CUCM value maps to exactly one capf value; anything else is an
//! error naming the line and the column, never a guess (docs/migrating-from-cucm.md).
//!
//! Where the names come from (docs/migrating-from-cucm.md, "Importing a BAT export"):
//! Cisco's Bulk Administration Guide lists `Device Name`, `Certificate Operation`,
//! `Authentication String` and `Certification Operation Completion Time` among the All
//! Details fields, and `MAC Address` in the default phone format; a real All Details
//! export says `Operation Completes By` instead. `Authentication Mode`, `Key Order`,
//! `Key Size (Bits)` and `EC Key Size (Bits)` are the phone page's labels, which BAT
//! file formats are assumed to use (not seen in an export). The values are the phone
//! page's drop-down entries, which AXL returns too.

use anyhow::{anyhow, bail, Result};

use super::options::{normalise_name, DeviceOptions, ParsedRow};
use crate::model::{AuthMode, EcCurve, KeyOrder, Operation, RSA_SIZES};
use crate::protocol::valid_device_name;

/// Name prefixes of the Jabber clients CUCM enrolls through CAPF, besides SEP phones:
/// CSF (desktop), BOT (Android), TCT (iPhone), TAB (tablets).
const SOFTPHONE_PREFIXES: [&str; 4] = ["CSF", "BOT", "TCT", "TAB"];

/// The columns capf reads, each under every name CUCM versions give it.
const DEVICE_NAME: &[&str] = &["DEVICE NAME"];
const MAC_ADDRESS: &[&str] = &["MAC ADDRESS"];
const OPERATION: &[&str] = &["CERTIFICATE OPERATION"];
const AUTH_MODE: &[&str] = &["AUTHENTICATION MODE"];
const AUTH_STRING: &[&str] = &["AUTHENTICATION STRING"];
const KEY_ORDER: &[&str] = &["KEY ORDER"];
const RSA_SIZE: &[&str] = &[
    "KEY SIZE (BITS)",
    "KEY SIZE",
    "RSA KEY SIZE (BITS)",
    "RSA KEY SIZE",
];
const EC_SIZE: &[&str] = &["EC KEY SIZE (BITS)", "EC KEY SIZE"];
const DEADLINE: &[&str] = &[
    "OPERATION COMPLETES BY",
    "CERTIFICATION OPERATION COMPLETION TIME",
];

/// CUCM's Certificate Operation entries.
const OPERATIONS: [(&str, Operation); 4] = [
    ("No Pending Operation", Operation::None),
    ("Install/Upgrade", Operation::Install),
    ("Delete", Operation::Delete),
    ("Troubleshoot", Operation::Troubleshoot),
];

/// CUCM's Authentication Mode entries.
const AUTH_MODES: [(&str, AuthMode); 4] = [
    ("By Null String", AuthMode::Null),
    ("By Authentication String", AuthMode::String),
    ("By Existing Certificate (Precedence to LSC)", AuthMode::Lsc),
    ("By Existing Certificate (Precedence to MIC)", AuthMode::Mic),
];

/// CUCM's Key Order entries.
const KEY_ORDERS: [&str; 3] = ["RSA Only", "EC Only", "EC Preferred, RSA Backup"];

/// CUCM's EC Key Size (Bits) entries and the curves they name.
const EC_SIZES: [(&str, EcCurve); 3] = [
    ("256", EcCurve::P256),
    ("384", EcCurve::P384),
    ("521", EcCurve::P521),
];

/// One recognised column: where it is and what the file calls it (for errors).
#[derive(Clone, Debug)]
struct Column {
    index: usize,
    header: String,
}

/// Where the CAPF columns of a BAT export are.
#[derive(Clone, Debug)]
pub struct Columns {
    device_name: Option<Column>,
    mac_address: Option<Column>,
    operation: Option<Column>,
    auth_mode: Option<Column>,
    auth_string: Option<Column>,
    key_order: Option<Column>,
    rsa_size: Option<Column>,
    ec_size: Option<Column>,
    deadline: Option<Column>,
}

/// A header cell as compared: no byte-order mark, trimmed, upper case, one space
/// between words (BAT writes `DIRECTORY NUMBER  1` with two).
fn normalise_header(h: &str) -> String {
    h.trim_start_matches('\u{feff}')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

/// A value as compared with CUCM's entries: trimmed, one space between words.
fn normalise_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Columns {
    /// The CAPF columns of `header`, if it is a BAT phone export (it has a `Device
    /// Name` or `MAC Address` column); an error if one of capf's columns appears twice.
    pub fn of(header: &[String]) -> Result<Option<Columns>> {
        let normalised: Vec<String> = header.iter().map(|h| normalise_header(h)).collect();
        let find = |names: &[&str]| -> Result<Option<Column>> {
            let mut found = normalised
                .iter()
                .enumerate()
                .filter(|(_, h)| names.contains(&h.as_str()));
            let first = found.next().map(|(index, _)| Column {
                index,
                header: header[index].trim().trim_start_matches('\u{feff}').into(),
            });
            if let (Some(first), Some((second, _))) = (&first, found.next()) {
                bail!(
                    "line 1: column {} appears twice (fields {} and {}); keep one",
                    first.header,
                    first.index + 1,
                    second + 1
                );
            }
            Ok(first)
        };
        let columns = Columns {
            device_name: find(DEVICE_NAME)?,
            mac_address: find(MAC_ADDRESS)?,
            operation: find(OPERATION)?,
            auth_mode: find(AUTH_MODE)?,
            auth_string: find(AUTH_STRING)?,
            key_order: find(KEY_ORDER)?,
            rsa_size: find(RSA_SIZE)?,
            ec_size: find(EC_SIZE)?,
            deadline: find(DEADLINE)?,
        };
        let is_bat = columns.device_name.is_some() || columns.mac_address.is_some();
        Ok(is_bat.then_some(columns))
    }

    /// The columns import reads, as the file names them, and the CAPF settings the
    /// file has no column for: said once, so that an administrator sees what an
    /// export without, say, `Authentication Mode` leaves as it is.
    pub fn describe(&self) -> String {
        let all = [
            (&self.device_name, "Device Name"),
            (&self.mac_address, "MAC Address"),
            (&self.operation, "Certificate Operation"),
            (&self.auth_mode, "Authentication Mode"),
            (&self.auth_string, "Authentication String"),
            (&self.key_order, "Key Order"),
            (&self.rsa_size, "Key Size (Bits)"),
            (&self.ec_size, "EC Key Size (Bits)"),
            (&self.deadline, "Operation Completes By"),
        ];
        let used: Vec<&str> = all
            .iter()
            .filter_map(|(c, _)| c.as_ref().map(|c| c.header.as_str()))
            .collect();
        let missing: Vec<&str> = all
            .iter()
            .filter(|(c, name)| c.is_none() && !matches!(*name, "Device Name" | "MAC Address"))
            .map(|(_, name)| *name)
            .collect();
        let mut text = format!("CUCM BAT export: reading columns {}", used.join(", "));
        if !missing.is_empty() {
            text.push_str(&format!(
                "; no column for {} (left as they are; a new device gets capf's default)",
                missing.join(", ")
            ));
        }
        text
    }
}

/// What one row of an export is to import.
pub enum BatRow {
    /// A phone or Jabber client: its settings.
    Device(ParsedRow),
    /// Some other device (CTI port, gateway port, ...) that never runs CAPF: its name.
    Skipped(String),
}

/// The value of `column` in `r`, trimmed; empty when the file has no such column.
fn value<'r>(r: &'r csv::StringRecord, column: &Option<Column>) -> &'r str {
    column
        .as_ref()
        .and_then(|c| r.get(c.index))
        .unwrap_or_default()
        .trim()
}

/// The entry of `table` that `v` names (ignoring case and runs of spaces), or an error
/// naming the column and listing CUCM's entries.
fn lookup<T: Copy>(column: &Option<Column>, v: &str, table: &[(&str, T)]) -> Result<T> {
    let wanted = normalise_value(v);
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&wanted))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let expected: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
            anyhow!(
                "{}: not a CUCM value capf knows (expected one of: {})",
                cell(column, v),
                expected.join("; ")
            )
        })
}

/// `column Certificate Operation = 'Upgrade'`: how errors name a cell.
fn cell(column: &Option<Column>, v: &str) -> String {
    let header = column.as_ref().map_or("?", |c| c.header.as_str());
    format!("column {header} = '{v}'")
}

/// Turns one row of a BAT export into the device settings it describes, or says that
/// the row is not a device capf enrolls.
pub fn parse_row(r: &csv::StringRecord, c: &Columns) -> Result<BatRow> {
    let Some(name) = device_name(r, c)? else {
        let name = [value(r, &c.device_name), value(r, &c.mac_address)]
            .into_iter()
            .find(|v| !v.is_empty())
            .unwrap_or_default();
        return Ok(BatRow::Skipped(name.to_string()));
    };
    let operation = match value(r, &c.operation) {
        "" => None,
        v => Some(lookup(&c.operation, v, &OPERATIONS)?),
    };
    let auth = match value(r, &c.auth_mode) {
        "" => None,
        v => Some(lookup(&c.auth_mode, v, &AUTH_MODES)?),
    };
    let auth_string = Some(value(r, &c.auth_string).to_string()).filter(|s| !s.is_empty());
    let key = key_order(r, c)?;
    let scheduled = operation.is_some_and(|op| op != Operation::None);
    if scheduled && auth.is_none() && auth_string.is_none() {
        // The All Details export has no Authentication Mode column: such a row would
        // fall back to null authentication, which capf only ever does when asked.
        let op = value(r, &c.operation);
        let why = match &c.auth_mode {
            Some(column) => format!("its {} is empty", column.header),
            None => "the file has no Authentication Mode column".to_string(),
        };
        bail!(
            "{} needs an authentication mode: {why}, and it has no authentication \
             string. Export with the Authentication Mode field, or write the mode into the \
             row (By Null String only if you mean it)",
            cell(&c.operation, op)
        );
    }
    // "Operation Completes By" means something only while an operation is pending;
    // CUCM keeps an old date on a device with no operation, and capf ignores it too.
    let deadline = match value(r, &c.deadline) {
        v if v.is_empty() || !scheduled => None,
        v => Some(deadline(v).map_err(|e| anyhow!("{}: {e}", cell(&c.deadline, v)))?),
    };
    let options = DeviceOptions {
        operation,
        auth,
        auth_string,
        key,
        deadline,
        ..DeviceOptions::default()
    };
    Ok(BatRow::Device(ParsedRow::new(name, options)))
}

/// The capf device name of a row: `SEP` names (or a bare 12-digit MAC in the `MAC
/// Address` column) and Jabber clients' names; `None` for every other device.
fn device_name(r: &csv::StringRecord, c: &Columns) -> Result<Option<String>> {
    let (column, raw) = match value(r, &c.device_name) {
        "" => (&c.mac_address, value(r, &c.mac_address)),
        v => (&c.device_name, v),
    };
    if raw.is_empty() {
        bail!("no device name (the Device Name / MAC Address field is empty)");
    }
    let is_mac_column = c.mac_address.as_ref().map(|m| m.index) == column.as_ref().map(|c| c.index);
    if is_mac_column && raw.len() == 12 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some(format!("SEP{}", raw.to_ascii_uppercase())));
    }
    let prefix = raw.as_bytes().get(..3).unwrap_or_default();
    if prefix.eq_ignore_ascii_case(b"SEP") {
        // A phone: a malformed MAC is an error, not a device to skip.
        return normalise_name(raw)
            .map(Some)
            .map_err(|e| anyhow!("{}: {e:#}", cell(column, raw)));
    }
    if SOFTPHONE_PREFIXES.iter().any(|p| p.as_bytes() == prefix) {
        if !valid_device_name(raw) {
            bail!(
                "{}: invalid device name (1–64 characters of A-Z a-z 0-9 _ . -)",
                cell(column, raw)
            );
        }
        return Ok(Some(raw.to_string()));
    }
    Ok(None)
}

/// The key order of a row: `Key Order` with the sizes it needs, or, from a CUCM
/// without key orders, `Key Size (Bits)` alone (RSA). A key order whose size column is
/// empty is an error: capf does not guess a size.
fn key_order(r: &csv::StringRecord, c: &Columns) -> Result<Option<KeyOrder>> {
    let rsa = || -> Result<u16> {
        let v = value(r, &c.rsa_size);
        if v.is_empty() {
            bail!(
                "column {} is empty; the key order needs an RSA key size",
                c.rsa_size
                    .as_ref()
                    .map_or("Key Size (Bits)", |c| c.header.as_str())
            );
        }
        v.parse::<u16>()
            .ok()
            .filter(|bits| RSA_SIZES.contains(bits))
            .ok_or_else(|| {
                anyhow!(
                    "{}: capf asks phones for RSA keys of 1024, 2048, 3072 or 4096 bits",
                    cell(&c.rsa_size, v)
                )
            })
    };
    let ec = || -> Result<EcCurve> {
        let v = value(r, &c.ec_size);
        if v.is_empty() {
            bail!(
                "column {} is empty; the key order needs an EC key size",
                c.ec_size
                    .as_ref()
                    .map_or("EC Key Size (Bits)", |c| c.header.as_str())
            );
        }
        lookup(&c.ec_size, v, &EC_SIZES)
    };
    let order = value(r, &c.key_order);
    if order.is_empty() {
        return match value(r, &c.rsa_size) {
            "" => Ok(None),
            _ => Ok(Some(KeyOrder::Rsa { bits: rsa()? })),
        };
    }
    let wanted = normalise_value(order);
    let Some(known) = KEY_ORDERS.iter().find(|k| k.eq_ignore_ascii_case(&wanted)) else {
        bail!(
            "{}: not a CUCM value capf knows (expected one of: {})",
            cell(&c.key_order, order),
            KEY_ORDERS.join("; ")
        );
    };
    Ok(Some(match *known {
        "RSA Only" => KeyOrder::Rsa { bits: rsa()? },
        "EC Only" => KeyOrder::Ec { curve: ec()? },
        _ => KeyOrder::EcPreferred {
            curve: ec()?,
            bits: rsa()?,
        },
    }))
}

/// An `Operation Completes By` value as the RFC 3339 time import applies: capf's own
/// forms (`2026-12-31T17:00:00Z`, `2026-12-31`), `2026:12:31:17` (year, month, day,
/// hour: the phone page's four fields) and `2026-12-31 17:00[:00]`. Which form a CUCM
/// release writes is not documented. CUCM shows the server's local time and the export
/// does not say which zone that is: these are read as UTC.
fn deadline(v: &str) -> Result<String> {
    use time::macros::format_description;
    if !v.starts_with('+') && super::options::parse_deadline(v, 0).is_ok() {
        return Ok(v.to_string());
    }
    // AXL's form has no minutes; the time crate wants them to make a time.
    let axl = format_description!("[year]:[month]:[day]:[hour]:[minute]");
    let minute = format_description!("[year]-[month]-[day] [hour]:[minute]");
    let second = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let parsed = time::PrimitiveDateTime::parse(&format!("{v}:00"), &axl)
        .or_else(|_| time::PrimitiveDateTime::parse(v, &minute))
        .or_else(|_| time::PrimitiveDateTime::parse(v, &second))
        .map_err(|_| {
            anyhow!(
                "not a date capf reads (expected 2026:12:31:17, 2026-12-31 17:00, \
                 2026-12-31 or 2026-12-31T17:00:00Z)"
            )
        })?;
    Ok(crate::cli::render::time(
        parsed.assume_utc().unix_timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::device::bulk::read_import;

    /// Reads `csv` as `device import` does; the rows that parsed, by name.
    fn read(csv: &str) -> super::super::bulk::ImportFile {
        read_import(csv.as_bytes()).expect("a readable header")
    }

    fn options(csv: &str) -> Vec<(String, DeviceOptions)> {
        read(csv)
            .rows
            .into_iter()
            .map(|(line, row)| {
                let row = row.unwrap_or_else(|e| panic!("line {line}: {e:#}"));
                (row.name, row.options)
            })
            .collect()
    }

    /// The error of the only row of `csv`.
    fn row_error(csv: &str) -> String {
        let file = read(csv);
        assert_eq!(file.rows.len(), 1, "one row");
        let (line, row) = file.rows.into_iter().next().unwrap();
        assert_eq!(line, 2);
        format!("{:#}", row.err().expect("an error"))
    }

    const HEADER: &str = "Device Name,Description,Device Pool,Certificate Operation,\
        Authentication Mode,Authentication String,Key Order,Key Size (Bits),\
        EC Key Size (Bits),Operation Completes By,Directory Number 1\n";

    #[test]
    fn a_bat_header_is_recognised_whatever_its_case_and_spacing() {
        for header in [
            "Device Name,Description",
            "DEVICE NAME,DESCRIPTION",
            "\u{feff}device  name,Description",
            "MAC ADDRESS,DESCRIPTION,DIRECTORY NUMBER  1",
        ] {
            let header: Vec<String> = header.split(',').map(String::from).collect();
            assert!(Columns::of(&header).unwrap().is_some(), "{header:?}");
        }
        let other: Vec<String> = ["name", "op"].map(String::from).to_vec();
        assert!(Columns::of(&other).unwrap().is_none());
        let twice: Vec<String> = [
            "Device Name",
            "Authentication String",
            "AUTHENTICATION STRING",
        ]
        .map(String::from)
        .to_vec();
        let err = Columns::of(&twice).unwrap_err().to_string();
        assert!(err.contains("appears twice (fields 2 and 3)"), "{err}");
    }

    #[test]
    fn cucm_values_map_to_capf_settings() {
        let rows = options(&format!(
            "{HEADER}\
             SEP001122334455,Desk,DP,Install/Upgrade,By Null String,,RSA Only,2048,,2099:12:31:17,1001\n\
             SEP001122334466,Desk,DP,install/upgrade,By Authentication String,1234,\"EC Preferred, RSA Backup\",3072,384,,1002\n\
             SEP001122334477,Desk,DP,Delete,By Existing Certificate (Precedence to LSC),,EC Only,,521,2099-12-31 08:30,1003\n\
             SEP001122334488,Desk,DP,Troubleshoot,By Existing Certificate (Precedence to MIC),,,4096,,2099-12-31,1004\n\
             SEP001122334499,Desk,DP,No Pending Operation,,,,,,2019:01:01:00,1005\n\
             SEP0011223344AA,Desk,DP,Install/Upgrade,By Authentication String,,,,,,1006\n"
        ));
        let by_name = |name: &str| rows.iter().find(|(n, _)| n == name).unwrap().1.clone();

        let o = by_name("SEP001122334455");
        assert_eq!(o.operation, Some(Operation::Install));
        assert_eq!(o.auth, Some(AuthMode::Null));
        assert_eq!(o.key, Some(KeyOrder::Rsa { bits: 2048 }));
        assert_eq!(o.deadline.as_deref(), Some("2099-12-31T17:00:00Z"));
        assert_eq!(
            o.encrypted_config, None,
            "BAT says nothing about encryption"
        );

        let o = by_name("SEP001122334466");
        assert_eq!(o.auth, Some(AuthMode::String));
        assert_eq!(o.auth_string.as_deref(), Some("1234"));
        assert!(!o.generate_auth_string);
        assert_eq!(
            o.key,
            Some(KeyOrder::EcPreferred {
                curve: EcCurve::P384,
                bits: 3072
            })
        );

        let o = by_name("SEP001122334477");
        assert_eq!(o.operation, Some(Operation::Delete));
        assert_eq!(o.auth, Some(AuthMode::Lsc));
        assert_eq!(
            o.key,
            Some(KeyOrder::Ec {
                curve: EcCurve::P521
            })
        );
        assert_eq!(o.deadline.as_deref(), Some("2099-12-31T08:30:00Z"));

        let o = by_name("SEP001122334488");
        assert_eq!(o.operation, Some(Operation::Troubleshoot));
        assert_eq!(o.auth, Some(AuthMode::Mic));
        assert_eq!(
            o.key,
            Some(KeyOrder::Rsa { bits: 4096 }),
            "a CUCM without key orders"
        );
        assert_eq!(o.deadline.as_deref(), Some("2099-12-31"), "capf's own form");

        let o = by_name("SEP001122334499");
        assert_eq!(o.operation, Some(Operation::None));
        assert_eq!(o.auth, None, "blank: left as it is");
        assert_eq!(o.key, None);
        assert_eq!(
            o.deadline, None,
            "a date without an operation means nothing"
        );

        let o = by_name("SEP0011223344AA");
        assert!(o.generate_auth_string, "string mode without a string");
    }

    #[test]
    fn devices_that_never_run_capf_are_skipped_and_phones_are_named_as_capf_does() {
        let file = read(
            "MAC ADDRESS,DESCRIPTION,DEVICE NAME,CERTIFICATE OPERATION,AUTHENTICATION MODE\n\
             00d0ba112233,Desk,,No Pending Operation,\n\
             ,Desk,sep00D0BA112244,No Pending Operation,\n\
             ,Jabber,CSFJSMITH,No Pending Operation,\n\
             ,iPhone,TCTJSMITH,No Pending Operation,\n\
             ,IVR,TAPS Port 1,No Pending Operation,\n\
             ,Fax,AN0A1B2C3D4E5F000,No Pending Operation,\n\
             ,Route,CTI-RP-01,Install/Upgrade,By Sorcery\n",
        );
        let names: Vec<String> = file
            .rows
            .iter()
            .map(|(_, r)| r.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "SEP00D0BA112233",
                "SEP00D0BA112244",
                "CSFJSMITH",
                "TCTJSMITH"
            ]
        );
        assert_eq!(
            file.skipped,
            [
                (6, "TAPS Port 1".to_string()),
                (7, "AN0A1B2C3D4E5F000".to_string()),
                // Skipped before its values are read: it is not capf's to check.
                (8, "CTI-RP-01".to_string()),
            ]
        );
    }

    #[test]
    fn unknown_cucm_values_are_errors_naming_the_column() {
        let cases = [
            (
                "SEP001122334455,,,Upgrade,,,,,,,",
                "column Certificate Operation = 'Upgrade': not a CUCM value capf knows",
            ),
            (
                "SEP001122334455,,,Install/Upgrade,By PIN,,,,,,",
                "column Authentication Mode = 'By PIN': not a CUCM value capf knows",
            ),
            (
                "SEP001122334455,,,,,,RSA First,2048,,,",
                "column Key Order = 'RSA First': not a CUCM value capf knows",
            ),
            (
                "SEP001122334455,,,,,,RSA Only,512,,,",
                "column Key Size (Bits) = '512': capf asks phones for RSA keys of 1024",
            ),
            (
                "SEP001122334455,,,,,,EC Only,,192,,",
                "column EC Key Size (Bits) = '192': not a CUCM value capf knows",
            ),
            (
                "SEP001122334455,,,,,,EC Only,2048,,,",
                "column EC Key Size (Bits) is empty; the key order needs an EC key size",
            ),
            (
                "SEP001122334455,,,Install/Upgrade,By Null String,,,,,31/12/2099,",
                "column Operation Completes By = '31/12/2099': not a date capf reads",
            ),
            (
                "SEP00112233445G,,,,,,,,,,",
                "column Device Name = 'SEP00112233445G': invalid device name",
            ),
            (",,,,,,,,,,", "no device name"),
        ];
        for (row, expected) in cases {
            let err = row_error(&format!("{HEADER}{row}\n"));
            assert!(err.contains(expected), "{row}: {err}");
        }
    }

    #[test]
    fn an_operation_without_an_authentication_mode_is_refused_not_null() {
        // The All Details export has no Authentication Mode column.
        let all_details = "Device Name,Certificate Operation,Authentication String\n";
        let err = row_error(&format!("{all_details}SEP001122334455,Install/Upgrade,\n"));
        assert!(
            err.contains("Certificate Operation = 'Install/Upgrade' needs an authentication mode"),
            "{err}"
        );
        // A string says which mode; no operation needs none.
        let rows = options(&format!(
            "{all_details}SEP001122334455,Install/Upgrade,1234\nSEP001122334466,No Pending Operation,\n"
        ));
        assert_eq!(rows[0].1.auth, None);
        assert_eq!(rows[0].1.auth_string.as_deref(), Some("1234"));
        assert_eq!(rows[1].1.operation, Some(Operation::None));
    }

    #[test]
    fn the_description_names_the_columns_read_and_those_missing() {
        let file = read(
            "Device Name,Certificate Operation,Authentication String,Operation Completes By\n",
        );
        let text = file.bat.unwrap().describe();
        assert!(
            text.starts_with(
                "CUCM BAT export: reading columns Device Name, Certificate Operation, \
                 Authentication String, Operation Completes By; no column for \
                 Authentication Mode, Key Order, Key Size (Bits), EC Key Size (Bits)"
            ),
            "{text}"
        );
    }

    #[test]
    fn capf_files_are_read_as_before() {
        let file = read("name,operation,auth,auth_string,key,encrypted_config\nSEP001122334455,install,null,,rsa:2048,false\n");
        assert!(file.bat.is_none());
        assert!(file.skipped.is_empty());
        assert_eq!(file.rows.len(), 1);
        // A header that is neither says what both look like.
        let err = read_import("name,op\n".as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("header must be exactly"), "{err}");
        assert!(err.contains("CUCM BAT phone export"), "{err}");
    }
}
