//! `capf device import` and `capf device export`: Bulk Administration for CAPF.
//!
//! Import validates every row before writing anything, names each bad row with its
//! line number, field and value, and then commits all rows in one store transaction:
//! a file either lands whole or not at all.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use super::device::{admin_event, normalise_name, DeviceOptions};
use super::{render, Ctx};
use crate::store::{AuthMode, DeviceRecord, KeyOrder, Operation};

/// The header line, exactly (design.md CLI contract).
pub const CSV_HEADER: [&str; 6] = [
    "name",
    "operation",
    "auth",
    "auth_string",
    "key",
    "encrypted_config",
];

/// Largest import file: 1,000,000 rows of this format fit comfortably.
const MAX_IMPORT_BYTES: u64 = 256 * 1024 * 1024;

/// One validated row: the record as it will be written.
struct Row {
    record: DeviceRecord,
    existed: Option<DeviceRecord>,
    generated: Option<String>,
}

pub fn import(ctx: &mut Ctx, path: &Path, dry_run: bool) -> Result<ExitCode> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_IMPORT_BYTES {
        bail!(
            "{} is {size} bytes; the limit is {MAX_IMPORT_BYTES}",
            path.display()
        );
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = parse_import(file).with_context(|| path.display().to_string())?;

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let progress = Progress::new(ctx.progress, "validating");
    for (i, (line, parsed)) in parsed.into_iter().enumerate() {
        progress.tick(i);
        match parsed.and_then(|p| validate_row(ctx, p, &mut seen)) {
            Ok(row) => rows.push(row),
            Err(e) => errors.push(format!("line {line}: {e:#}")),
        }
    }
    progress.done();
    if !errors.is_empty() {
        bail!(
            "{} has {} bad row(s); nothing was imported:\n  {}",
            path.display(),
            errors.len(),
            errors.join("\n  ")
        );
    }

    let (mut added, mut updated, mut unchanged) = (0, 0, 0);
    for row in &rows {
        match &row.existed {
            None => added += 1,
            Some(old) if *old == row.record => unchanged += 1,
            Some(_) => updated += 1,
        }
    }
    if dry_run {
        for row in &rows {
            let verb = match &row.existed {
                None => "add",
                Some(old) if *old == row.record => "unchanged",
                Some(_) => "update",
            };
            writeln!(ctx.out, "{verb:<9} {}", describe(&row.record))?;
        }
        writeln!(
            ctx.out,
            "dry run: {added} to add, {updated} to update, {unchanged} unchanged; nothing written"
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    let records: Vec<DeviceRecord> = rows.iter().map(|r| r.record.clone()).collect();
    let events = rows
        .iter()
        .map(|r| {
            let action = if r.existed.is_some() {
                "device-import-update"
            } else {
                "device-import-add"
            };
            admin_event(ctx, &r.record.name, action, &r.record)
        })
        .collect();
    ctx.store.put_devices(&records, events)?;
    for row in &rows {
        if let Some(s) = &row.generated {
            writeln!(
                ctx.out,
                "authentication string for {}: {s}",
                row.record.name
            )?;
        }
    }
    writeln!(
        ctx.out,
        "imported {}: {added} added, {updated} updated, {unchanged} unchanged",
        rows.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// One CSV row with its fields parsed and checked, before the store is consulted.
pub struct ParsedRow {
    pub name: String,
    pub options: DeviceOptions,
}

/// Reads an import file: the exact header line, then every row parsed on its own, with
/// the line it starts on. Pure (no store), so it is also what the fuzzer drives.
pub fn parse_import(input: impl std::io::Read) -> Result<Vec<(usize, Result<ParsedRow>)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header: Vec<String> = reader
        .headers()
        .context("cannot read the header line")?
        .iter()
        .map(str::to_string)
        .collect();
    if header != CSV_HEADER {
        bail!(
            "line 1: header must be exactly `{}` (found `{}`)",
            CSV_HEADER.join(","),
            header.join(",")
        );
    }
    let rows = reader
        .records()
        .enumerate()
        .map(|(i, record)| {
            let line = record
                .as_ref()
                .ok()
                .and_then(|r| r.position())
                .map_or(i + 2, |p| p.line() as usize);
            let row = record
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|r| parse_row(&r));
            (line, row)
        })
        .collect();
    Ok(rows)
}

/// Turns one CSV row into the options it describes, with errors that name the field.
fn parse_row(r: &csv::StringRecord) -> Result<ParsedRow> {
    if r.len() != CSV_HEADER.len() {
        bail!("expected {} fields, found {}", CSV_HEADER.len(), r.len());
    }
    let field = |i: usize| r.get(i).unwrap_or_default();
    let name = normalise_name(field(0)).context("field name")?;
    let operation: Operation = match field(1) {
        "" => Operation::None,
        v => v
            .parse()
            .map_err(|e| anyhow::anyhow!("field operation = '{v}': {e}"))?,
    };
    let auth: AuthMode = match field(2) {
        "" => AuthMode::Null,
        v => v
            .parse()
            .map_err(|e| anyhow::anyhow!("field auth = '{v}': {e}"))?,
    };
    let auth_string = Some(field(3).to_string()).filter(|s| !s.is_empty());
    let key: KeyOrder = match field(4) {
        "" => KeyOrder::Rsa { bits: 2048 },
        v => v
            .parse()
            .map_err(|e| anyhow::anyhow!("field key = '{v}': {e}"))?,
    };
    let encrypted_config = match field(5).to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "0" => false,
        "true" | "yes" | "1" => true,
        v => bail!("field encrypted_config = '{v}': expected true or false"),
    };
    let generate = auth == AuthMode::String && auth_string.is_none();
    let options = DeviceOptions {
        operation: Some(operation),
        auth: Some(auth),
        auth_string,
        generate_auth_string: generate,
        key: Some(key),
        deadline: None,
        encrypted_config: Some(encrypted_config),
    };
    Ok(ParsedRow { name, options })
}

/// Checks a parsed row against the file (duplicates) and the store, and builds the
/// record as it will be written.
fn validate_row(ctx: &Ctx, parsed: ParsedRow, seen: &mut HashSet<String>) -> Result<Row> {
    let ParsedRow { name, options } = parsed;
    if !seen.insert(name.clone()) {
        bail!("field name = '{name}': listed twice in the file");
    }
    let existed = ctx.store.get_device(&name)?;
    let mut record = existed.clone().unwrap_or_else(|| DeviceRecord::new(&name));
    if existed.is_some() && options.generate_auth_string && record.auth_string.is_some() {
        // Re-importing an exported file keeps the string the user already has.
        let mut keep = options;
        keep.generate_auth_string = false;
        keep.auth_string = record.auth_string.clone();
        keep.apply(&mut record, ctx.now)?;
        return Ok(Row {
            record,
            existed,
            generated: None,
        });
    }
    let generated = options.apply(&mut record, ctx.now)?;
    Ok(Row {
        record,
        existed,
        generated,
    })
}

fn describe(d: &DeviceRecord) -> String {
    format!(
        "{} operation={} auth={} key={} encrypted_config={}",
        d.name, d.operation, d.auth, d.key_order, d.encrypted_config
    )
}

pub fn export(ctx: &mut Ctx, json: bool) -> Result<ExitCode> {
    // Streamed device by device, like `device list`.
    let devices = ctx.store.devices().map(|d| d.map_err(anyhow::Error::from));
    if json {
        render::json_array(ctx.out, devices.map(|d| d.map(render::DeviceJson)))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut w = csv::Writer::from_writer(&mut *ctx.out);
    w.write_record(CSV_HEADER)?;
    for d in devices {
        let d = d?;
        w.write_record([
            d.name.as_str(),
            &d.operation.to_string(),
            &d.auth.to_string(),
            d.auth_string.as_deref().unwrap_or_default(),
            &d.key_order.to_string(),
            if d.encrypted_config { "true" } else { "false" },
        ])?;
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A one-line progress counter on stderr, shown only on a terminal for large files.
struct Progress {
    enabled: bool,
    what: &'static str,
}

impl Progress {
    fn new(enabled: bool, what: &'static str) -> Progress {
        Progress { enabled, what }
    }

    fn tick(&self, i: usize) {
        if self.enabled && i > 0 && i.is_multiple_of(1000) {
            eprint!("\r{} {i} rows...", self.what);
        }
    }

    fn done(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}
