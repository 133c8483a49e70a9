//! `capf device import` and `capf device export`: Bulk Administration for CAPF.
//!
//! Import reads and validates the whole file, against itself (duplicates) and the
//! store, before it writes anything, and names each bad row with its line number,
//! field and value: a file with any bad row changes nothing. A valid file is then
//! written in batches of `IMPORT_BATCH` devices, one store transaction each, so that
//! memory stays bounded however large the file. Once validated, only a store error
//! (I/O, a full disk) can stop the writing: the batches written by then stay, the
//! error says how far it got, and importing the same file again completes it, because
//! a row that is already stored as the file describes it is left alone and counted
//! unchanged (docs/operations.md "Importing devices").
//!
//! Import also reads a CUCM BAT phone export as it is (`bat.rs`), recognised by its
//! header: its CAPF columns map to capf's settings, and rows of devices that never run
//! CAPF (CTI ports, gateway ports, ...) are skipped and counted.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use super::options::{
    admin_event, changes, generate_auth_string, normalise_name, DeviceOptions, ParsedRow,
};
use crate::cli::{render, Ctx};
use crate::model::{AuthMode, DeviceRecord, KeyOrder, Operation, UnixTime};
use crate::store::Upsert;

/// The header line export writes (design.md CLI contract). `deadline` was added
/// last (#19); import also takes the header without it, as files written before.
pub const CSV_HEADER: [&str; 7] = [
    "name",
    "operation",
    "auth",
    "auth_string",
    "key",
    "encrypted_config",
    "deadline",
];

/// Largest import file: 1,000,000 rows of this format fit comfortably.
const MAX_IMPORT_BYTES: u64 = 256 * 1024 * 1024;

/// Devices written per store transaction. sled keeps a transaction's writes, and the
/// tree nodes they replace, in memory until it ends: one transaction for 1,000,000
/// devices left the server at 11 GiB, batches of this size at a few hundred MiB. A
/// transaction also holds sled's write lock, so phones enrolling meanwhile wait for
/// one batch at most, not for the whole file.
const IMPORT_BATCH: usize = 10_000;

/// One validated row: what it sets its device to.
struct Row {
    line: usize,
    name: String,
    /// The row's settings, with `generate_auth_string` already resolved into
    /// `generated`, so that applying them twice gives the same record.
    options: DeviceOptions,
    /// For `auth` `string` with an empty `auth_string`: the string the device gets
    /// unless it already has one when it is written (re-importing an exported file
    /// keeps the string the user already has).
    generated: Option<String>,
}

impl Row {
    /// The record this row makes of `current`, the device as stored (if any).
    fn record(&self, current: Option<&DeviceRecord>, now: UnixTime) -> Result<DeviceRecord> {
        let mut record = current
            .cloned()
            .unwrap_or_else(|| DeviceRecord::new(&self.name));
        if record.auth_string.is_none() {
            record.auth_string.clone_from(&self.generated);
        }
        self.options.apply(&mut record, now)?;
        Ok(record)
    }
}

/// What an import does to one device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Update,
    Unchanged,
}

impl Change {
    fn of(current: Option<&DeviceRecord>, record: &DeviceRecord) -> Change {
        match current {
            None => Change::Add,
            Some(c) if c == record => Change::Unchanged,
            Some(_) => Change::Update,
        }
    }
}

/// Devices added, updated and left unchanged.
#[derive(Default)]
struct Tally {
    added: usize,
    updated: usize,
    unchanged: usize,
}

impl Tally {
    fn count(&mut self, change: Change) {
        match change {
            Change::Add => self.added += 1,
            Change::Update => self.updated += 1,
            Change::Unchanged => self.unchanged += 1,
        }
    }
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
    let ImportFile {
        rows: parsed,
        bat,
        skipped,
    } = read_import(file).with_context(|| path.display().to_string())?;
    if let Some(columns) = &bat {
        writeln!(ctx.out, "{}", columns.describe())?;
    }

    let default_deadline = crate::settings::Settings::load(ctx.data)?.default_deadline();

    // Phase 1: validate every row; nothing is written unless all are good.
    let mut rows = Vec::with_capacity(parsed.len());
    let mut errors = Vec::new();
    let mut planned = Tally::default();
    let mut dry_run_lines = Vec::new();
    let mut seen = HashSet::new();
    let progress = Progress::new(ctx.progress, "validating");
    for (i, (line, parsed)) in parsed.into_iter().enumerate() {
        progress.tick(i);
        let parsed = parsed.map(|mut p| {
            p.options.default_deadline = default_deadline;
            p
        });
        match parsed.and_then(|p| validate_row(ctx, line, p, &mut seen)) {
            Ok((row, record, change, current)) => {
                planned.count(change);
                if dry_run {
                    dry_run_lines.push(match (change, current) {
                        (Change::Update, Some(current)) => {
                            let diff = changes(&current, &record)
                                .into_iter()
                                .map(|(field, from, to)| format!("{field} {from} → {to}"))
                                .collect::<Vec<_>>()
                                .join(", ");
                            format!("update    {}: {diff}", record.name)
                        }
                        (Change::Add, _) => format!("add       {}", describe(&record)),
                        _ => format!("unchanged {}", describe(&record)),
                    });
                }
                rows.push(row);
            }
            Err(e) => errors.push(format!("line {line}: {e:#}")),
        }
    }
    progress.done();
    drop(seen);
    if !errors.is_empty() {
        bail!(
            "{} has {} bad row(s); nothing was imported:\n  {}",
            path.display(),
            errors.len(),
            errors.join("\n  ")
        );
    }
    // Said only for a BAT export, so a capf file's output is as it always was.
    let skipped_note = match skipped.len() {
        0 => String::new(),
        n => format!(", {n} skipped (not a phone or Jabber client)"),
    };
    if dry_run {
        for line in dry_run_lines {
            writeln!(ctx.out, "{line}")?;
        }
        for (line, name) in &skipped {
            writeln!(
                ctx.out,
                "skip      {name} (line {line}): not a phone or Jabber client"
            )?;
        }
        let Tally {
            added,
            updated,
            unchanged,
        } = planned;
        writeln!(
            ctx.out,
            "dry run: {added} to add, {updated} to update, {unchanged} unchanged{skipped_note}; \
             nothing written"
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    // Phase 2: write in batches. Each batch reads its devices again inside its
    // transaction, so a phone that enrolled since validation keeps its certificate.
    let mut done = Tally::default();
    let progress = Progress::new(ctx.progress, "importing");
    for (i, batch) in rows.chunks(IMPORT_BATCH).enumerate() {
        progress.tick(i * IMPORT_BATCH);
        let outcomes = write_batch(ctx, batch).with_context(|| {
            let written = i * IMPORT_BATCH;
            let through = match written.checked_sub(1).and_then(|last| rows.get(last)) {
                Some(row) => format!(" (through line {})", row.line),
                None => String::new(),
            };
            format!(
                "the import stopped after {written} of {} rows{through}; the rest were not \
                 written, and importing the same file again completes it",
                rows.len()
            )
        })?;
        for (row, outcome) in batch.iter().zip(&outcomes) {
            let (change, written) = match outcome {
                Upsert::Added(r) => (Change::Add, Some(r)),
                Upsert::Updated(r) => (Change::Update, Some(r)),
                Upsert::Unchanged => (Change::Unchanged, None),
            };
            done.count(change);
            // Printed once, and only if the device took it (it may have had one).
            let given = written.and_then(|r| r.auth_string.as_ref());
            if let Some(s) = given.filter(|&s| row.generated.as_ref() == Some(s)) {
                writeln!(ctx.out, "authentication string for {}: {s}", row.name)?;
            }
        }
    }
    progress.done();
    let Tally {
        added,
        updated,
        unchanged,
    } = done;
    writeln!(
        ctx.out,
        "imported {}: {added} added, {updated} updated, {unchanged} unchanged{skipped_note}",
        rows.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes one batch of rows in one transaction, each with its audit event.
fn write_batch(ctx: &Ctx, batch: &[Row]) -> Result<Vec<Upsert>> {
    let outcomes = ctx.store.upsert_devices(
        batch,
        |row| &row.name,
        |row, current| {
            let record = row.record(current, ctx.now).map_err(|e| format!("{e:#}"))?;
            let action = match current {
                Some(_) => "device-import-update",
                None => "device-import-add",
            };
            let event = admin_event(ctx, &row.name, action, &record);
            Ok((record, event))
        },
    )?;
    Ok(outcomes)
}

/// An import file as read: each row parsed on its own, with the line it starts on.
pub struct ImportFile {
    pub rows: Vec<(usize, Result<ParsedRow>)>,
    /// For a CUCM BAT export, the columns read from it (`None` for capf's format).
    pub bat: Option<super::bat::Columns>,
    /// Rows of a BAT export naming devices that never run CAPF: line and name.
    pub skipped: Vec<(usize, String)>,
}

/// Reads an import file: the exact header line, then every row parsed on its own, with
/// the line it starts on. Pure (no store), so it is also what the fuzzer drives.
pub fn parse_import(input: impl std::io::Read) -> Result<Vec<(usize, Result<ParsedRow>)>> {
    read_import(input).map(|file| file.rows)
}

/// Reads an import file in capf's format (its exact header line) or a CUCM BAT phone
/// export (a header with a `Device Name` or `MAC Address` column).
pub fn read_import(input: impl std::io::Read) -> Result<ImportFile> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(CrlfAsLf(std::io::BufReader::new(input)));
    let header: Vec<String> = reader
        .headers()
        .context("cannot read the header line")?
        .iter()
        .map(str::to_string)
        .collect();
    let columns = header_columns(&header);
    let bat = match columns {
        Some(_) => None,
        None => super::bat::Columns::of(&header)?,
    };
    if columns.is_none() && bat.is_none() {
        bail!(
            "line 1: header must be exactly `{}` (or the same without `,deadline`), or that \
             of a CUCM BAT phone export with a Device Name or MAC Address column; found `{}`",
            CSV_HEADER.join(","),
            header.join(",")
        );
    }
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i + 2, |p| p.line() as usize);
        let record = record.map_err(|e| anyhow::anyhow!("{e}"));
        let row = match (&bat, columns) {
            (Some(bat), _) => match record.and_then(|r| super::bat::parse_row(&r, bat)) {
                Ok(super::bat::BatRow::Skipped(name)) => {
                    skipped.push((line, name));
                    continue;
                }
                Ok(super::bat::BatRow::Device(row)) => Ok(row),
                Err(e) => Err(e),
            },
            (None, Some(n)) => record.and_then(|r| parse_row(&r, n)),
            (None, None) => unreachable!("refused above"),
        };
        rows.push((line, row));
    }
    Ok(ImportFile { rows, bat, skipped })
}

/// Reads CRLF line ends as LF. The csv crate takes a record's position before it reads
/// the LF that ends the line before, so in a CRLF file (as Windows tools and BAT write
/// them) every row was reported one line early.
struct CrlfAsLf<R>(R);

impl<R: std::io::BufRead> std::io::Read for CrlfAsLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let buf = self.0.fill_buf()?;
            let n = buf.len().min(out.len());
            match buf[..n].iter().position(|&b| b == b'\r') {
                None => {
                    out[..n].copy_from_slice(&buf[..n]);
                    self.0.consume(n);
                    return Ok(n);
                }
                Some(i) if i > 0 => {
                    out[..i].copy_from_slice(&buf[..i]);
                    self.0.consume(i);
                    return Ok(i);
                }
                Some(_) => {
                    // A CR first: dropped if an LF follows, even in the next buffer.
                    let lf_follows = match buf.get(1) {
                        Some(&b) => b == b'\n',
                        None => {
                            self.0.consume(1);
                            if self.0.fill_buf()?.first() == Some(&b'\n') {
                                continue;
                            }
                            out[0] = b'\r';
                            return Ok(1);
                        }
                    };
                    self.0.consume(1);
                    if !lf_follows {
                        out[0] = b'\r';
                        return Ok(1);
                    }
                }
            }
        }
    }
}

/// The number of columns a header announces: the current one, or the one before
/// `deadline` was added; `None` for anything else.
fn header_columns(header: &[String]) -> Option<usize> {
    let n = header.len();
    let known = (n == CSV_HEADER.len() || n == CSV_HEADER.len() - 1)
        && header.iter().zip(CSV_HEADER).all(|(h, c)| h == c);
    known.then_some(n)
}

/// Turns one CSV row into the options it describes, with errors that name the field.
/// A blank field leaves an existing device's value as it is (a new device gets
/// CUCM's default: operation none, auth null, key rsa:2048, no encryption, no
/// deadline); `none` clears a deadline.
fn parse_row(r: &csv::StringRecord, columns: usize) -> Result<ParsedRow> {
    if r.len() != columns {
        bail!("expected {columns} fields, found {}", r.len());
    }
    let field = |i: usize| r.get(i).unwrap_or_default();
    let name = normalise_name(field(0)).context("field name")?;
    fn given<T: std::str::FromStr<Err = String>>(name: &str, v: &str) -> Result<Option<T>> {
        match v {
            "" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("field {name} = '{v}': {e}")),
        }
    }
    let operation: Option<Operation> = given("operation", field(1))?;
    let auth: Option<AuthMode> = given("auth", field(2))?;
    let auth_string = Some(field(3).to_string()).filter(|s| !s.is_empty());
    let key: Option<KeyOrder> = given("key", field(4))?;
    let encrypted_config = match field(5).to_ascii_lowercase().as_str() {
        "" => None,
        "false" | "no" | "0" => Some(false),
        "true" | "yes" | "1" => Some(true),
        v => bail!("field encrypted_config = '{v}': expected true or false"),
    };
    let deadline = match field(6) {
        "" => None,
        "none" => Some("none".to_string()),
        v => {
            // The format is checked here; whether it is past, when the row is applied.
            super::options::parse_deadline(v, 0)
                .map_err(|e| anyhow::anyhow!("field deadline = '{v}': {e}"))?;
            Some(v.to_string())
        }
    };
    let options = DeviceOptions {
        operation,
        auth,
        auth_string,
        key,
        deadline,
        encrypted_config,
        ..DeviceOptions::default()
    };
    Ok(ParsedRow::new(name, options))
}

/// Checks a parsed row against the file (duplicates) and the store; returns the row,
/// the record it would write now, and what that changes.
fn validate_row(
    ctx: &Ctx,
    line: usize,
    parsed: ParsedRow,
    seen: &mut HashSet<String>,
) -> Result<(Row, DeviceRecord, Change, Option<DeviceRecord>)> {
    let ParsedRow { name, mut options } = parsed;
    if !seen.insert(name.clone()) {
        bail!("field name = '{name}': listed twice in the file");
    }
    let generated = std::mem::take(&mut options.generate_auth_string).then(generate_auth_string);
    let row = Row {
        line,
        name,
        options,
        generated,
    };
    let current = ctx.store.get_device(&row.name)?;
    let record = row.record(current.as_ref(), ctx.now)?;
    let change = Change::of(current.as_ref(), &record);
    Ok((row, record, change, current))
}

fn describe(d: &DeviceRecord) -> String {
    format!(
        "{} operation={} auth={} key={} encrypted_config={} deadline={}",
        d.name,
        d.operation,
        d.auth,
        d.key_order,
        d.encrypted_config,
        d.deadline.map_or("-".into(), render::time)
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
            &d.deadline.map_or(String::new(), render::time),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DataDir;
    use crate::store::Store;

    const HEADER: &str = "name,operation,auth,auth_string,key,encrypted_config,deadline\n";

    /// Runs `device import` on `csv` against `store`; its output, or its error.
    fn import_csv(store: &Store, dir: &Path, csv: &str) -> Result<String> {
        let file = dir.join("fleet.csv");
        std::fs::write(&file, csv).unwrap();
        let data = DataDir::new(dir);
        let mut out = Vec::new();
        let mut ctx = Ctx {
            data: &data,
            store,
            out: &mut out,
            actor: "cli:test".into(),
            cwd: dir.to_path_buf(),
            now: 1_800_000_000,
            progress: false,
            utc_offset: 0,
            serving: None,
        };
        import(&mut ctx, &file, false)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn fleet(rows: usize) -> String {
        let mut csv = String::from(HEADER);
        for i in 0..rows {
            csv.push_str(&format!("SEP{i:012X},install,null,,rsa:2048,false,\n"));
        }
        csv
    }

    #[test]
    fn a_bad_row_in_the_last_batch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut csv = fleet(2 * IMPORT_BATCH + 10);
        csv.push_str("SEP00000000FFFF,install,null,,rsa:2048,maybe,\n");
        let bad_line = 2 * IMPORT_BATCH + 12;

        let err = format!("{:#}", import_csv(&store, dir.path(), &csv).unwrap_err());
        assert!(err.contains("1 bad row(s); nothing was imported"), "{err}");
        assert!(
            err.contains(&format!("line {bad_line}: field encrypted_config")),
            "{err}"
        );
        assert_eq!(store.device_count().unwrap(), 0);
        assert_eq!(store.events(None, None, None).unwrap(), []);
    }

    #[test]
    fn an_import_of_several_batches_lands_entirely_and_repeats_as_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let rows = 2 * IMPORT_BATCH + 1;
        // One device exists already, without an authentication string; the file
        // asks for one to be generated.
        let existing = DeviceRecord::new(format!("SEP{:012X}", IMPORT_BATCH + 5));
        store
            .add_device(&existing, admin_event_for_test(&existing))
            .unwrap();
        let csv = fleet(rows).replace(
            &format!("{},install,null,,", existing.name),
            &format!("{},install,string,,", existing.name),
        );

        let out = import_csv(&store, dir.path(), &csv).unwrap();
        let summary = format!(
            "imported {rows}: {} added, 1 updated, 0 unchanged",
            rows - 1
        );
        assert!(out.contains(&summary), "{out}");
        assert_eq!(store.device_count().unwrap(), rows);
        let listed = store.list_devices().unwrap();
        assert!(listed.iter().all(|d| d.operation == Operation::Install));
        let updated = store.get_device(&existing.name).unwrap().unwrap();
        let generated = updated.auth_string.clone().unwrap();
        assert!(
            out.contains(&format!(
                "authentication string for {}: {generated}",
                existing.name
            )),
            "{out}"
        );
        let events = store.events(None, None, None).unwrap();
        assert_eq!(events.len(), 1 + rows, "one event per imported row");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.action == "device-import-update")
                .count(),
            1
        );

        // The same file again (as after an interrupted import): nothing changes,
        // the generated string is kept, and no event is added.
        let out = import_csv(&store, dir.path(), &csv).unwrap();
        assert!(
            out.contains(&format!(
                "imported {rows}: 0 added, 0 updated, {rows} unchanged"
            )),
            "{out}"
        );
        assert!(!out.contains("authentication string"), "{out}");
        assert_eq!(store.get_device(&existing.name).unwrap(), Some(updated));
        assert_eq!(store.events(None, None, None).unwrap().len(), events.len());
    }

    #[test]
    fn rows_of_a_crlf_file_are_reported_on_their_own_lines() {
        let lf = format!("{HEADER}SEP000000000001,install,null,,rsa:2048,false,\nSEP000000000002,instal,null,,rsa:2048,false,\n\"SEP000000000003\",\"insta\r\nll\",null,,rsa:2048,false,\n");
        let crlf = lf.replace('\n', "\r\n");
        for text in [&lf, &crlf] {
            let rows = parse_import(text.as_bytes()).unwrap();
            let lines: Vec<usize> = rows.iter().map(|(line, _)| *line).collect();
            assert_eq!(lines, [2, 3, 4], "{text:?}");
            assert!(rows[0].1.is_ok());
            let err = format!("{:#}", rows[1].1.as_ref().err().unwrap());
            assert!(err.contains("field operation = 'instal'"), "{err}");
        }
        // A CR that ends no line stays, here inside a quoted field.
        let rows = parse_import(
            format!("{HEADER}SEP000000000001,\"in\rstall\",null,,rsa:2048,false,\r\n").as_bytes(),
        )
        .unwrap();
        let err = format!("{:#}", rows[0].1.as_ref().err().unwrap());
        assert!(err.contains("'in\rstall'"), "{err}");
    }

    /// One byte at a time, so that a CR ends one buffer and its LF starts the next.
    #[test]
    fn crlf_is_read_as_lf_across_buffer_ends() {
        use std::io::Read;
        let text = b"a,b\r\n1,\"x\ry\"\r\n\r";
        let mut out = Vec::new();
        CrlfAsLf(std::io::BufReader::with_capacity(1, &text[..]))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"a,b\n1,\"x\ry\"\n\r");
    }

    fn admin_event_for_test(rec: &DeviceRecord) -> crate::model::Event {
        crate::model::Event {
            id: 0,
            time: 1,
            actor: "cli:test".into(),
            device: Some(rec.name.clone()),
            action: "device-add".into(),
            result: rec.status.to_string(),
            details: Default::default(),
        }
    }
}
