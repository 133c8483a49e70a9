//! The rules of a device's settings, shared by `device add|set` and the CSV import:
//! the CAPF options of CUCM's phone page and how they apply to a record, device names,
//! authentication strings, deadlines, and the audit event of an operator's change.

use anyhow::{bail, Result};
use clap::{Args, ValueHint};

use crate::cli::render;
use crate::cli::Ctx;
use crate::model::{AuthMode, DeviceRecord, Event, KeyOrder, Operation, OperationStatus, UnixTime};

/// One import row (capf's CSV or a CUCM BAT export) with its fields parsed and
/// checked, before the store is consulted.
pub struct ParsedRow {
    pub name: String,
    pub options: DeviceOptions,
}

impl ParsedRow {
    /// A row as read. A device to authenticate by string that the file gives no string
    /// gets one generated, as `device add` does: the rule both import formats follow.
    pub fn new(name: String, mut options: DeviceOptions) -> ParsedRow {
        options.generate_auth_string =
            options.auth == Some(AuthMode::String) && options.auth_string.is_none();
        ParsedRow { name, options }
    }
}

/// The CAPF settings of CUCM's phone page.
#[derive(Args, Debug, Default, Clone)]
pub struct DeviceOptions {
    /// Certificate operation: install (install/upgrade), delete, troubleshoot, none.
    #[arg(long, value_parser = operation_parser(), ignore_case = true)]
    pub operation: Option<Operation>,
    /// Authentication mode: null (null string), string (authentication string),
    /// lsc / mic (existing certificate, LSC or MIC precedence). `device add` without
    /// it (or a string) generates an authentication string; null must be asked for.
    #[arg(long, value_parser = auth_parser(), ignore_case = true)]
    pub auth: Option<AuthMode>,
    /// Authentication string the user types on the phone (4–10 digits).
    #[arg(long, conflicts_with = "generate_auth_string", value_hint = ValueHint::Other)]
    pub auth_string: Option<String>,
    /// Generate a random authentication string and print it once.
    #[arg(long)]
    pub generate_auth_string: bool,
    /// Key order: rsa:2048, ec:p256, or ec-preferred:p256,rsa:2048.
    #[arg(long, value_hint = ValueHint::Other)]
    pub key: Option<KeyOrder>,
    /// Operation completes by: RFC 3339 (2026-12-31T17:00:00Z), a date (2026-12-31:
    /// the end of that day, UTC), relative (+7d, +12h), or `none` to clear it. Must
    /// not be in the past.
    #[arg(long, value_hint = ValueHint::Other)]
    pub deadline: Option<String>,
    /// Serve this phone its configuration encrypted to its key (needs an RSA key).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub encrypted_config: Option<bool>,
    /// The node's "operation completes by" default (capf.toml `default_deadline_days`),
    /// in seconds: given to an operation scheduled without a deadline. Not an option.
    #[arg(skip)]
    pub default_deadline: Option<i64>,
}

/// `--operation`'s values, so that shell completion offers them (not file names);
/// the hidden ones are the aliases `Operation::from_str` also takes.
pub(in crate::cli) fn operation_parser() -> impl clap::builder::TypedValueParser<Value = Operation>
{
    values_parser(
        &["install", "delete", "troubleshoot", "none"],
        &["upgrade", "install/upgrade", "fetch"],
    )
}

/// `--auth`'s values, as [`operation_parser`].
fn auth_parser() -> impl clap::builder::TypedValueParser<Value = AuthMode> {
    values_parser(
        &["null", "string", "lsc", "mic"],
        &["null-string", "auth-string"],
    )
}

fn values_parser<T>(
    shown: &'static [&'static str],
    hidden: &'static [&'static str],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = shown
        .iter()
        .map(|v| PossibleValue::new(*v))
        .chain(hidden.iter().map(|v| PossibleValue::new(*v).hide(true)));
    // Every possible value parses: they are the names `from_str` takes.
    PossibleValuesParser::new(values).map(|v| v.parse::<T>().unwrap_or_else(|e| panic!("{e}")))
}

pub use crate::model::display::normalise_name;

impl DeviceOptions {
    /// Refuses option combinations of `device add|set` that would store something
    /// that is never used: an authentication string with a mode that does not read
    /// one. (An imported row may carry a string kept from an earlier mode: it is
    /// stored as it was, so an export imports again.)
    pub fn check_command_line(&self) -> Result<()> {
        let gives_string = self.auth_string.is_some() || self.generate_auth_string;
        if let Some(mode @ (AuthMode::Null | AuthMode::Lsc | AuthMode::Mic)) = self.auth {
            if gives_string {
                bail!(
                    "--auth {mode} does not use an authentication string; drop \
                     --auth-string/--generate-auth-string, or use --auth string"
                );
            }
        }
        Ok(())
    }

    /// Applies the options to `rec`; returns a generated authentication string.
    pub fn apply(&self, rec: &mut DeviceRecord, now: UnixTime) -> Result<Option<String>> {
        let mut generated = None;
        if let Some(op) = self.operation {
            rec.operation = op;
            rec.status = match op {
                Operation::None => rec.status.clone(),
                _ => OperationStatus::Pending,
            };
        }
        if let Some(s) = &self.auth_string {
            validate_auth_string(s)?;
            rec.auth_string = Some(s.clone());
        }
        if self.generate_auth_string {
            let s = generate_auth_string();
            rec.auth_string = Some(s.clone());
            generated = Some(s);
        }
        match self.auth {
            Some(mode) => rec.auth = mode,
            // Giving a string implies authenticating with it.
            None if self.auth_string.is_some() || self.generate_auth_string => {
                rec.auth = AuthMode::String
            }
            None => {}
        }
        if rec.auth == AuthMode::String && rec.auth_string.is_none() {
            bail!("--auth string needs --auth-string DIGITS or --generate-auth-string");
        }
        if let Some(k) = self.key {
            rec.key_order = k;
        }
        match self.deadline.as_deref().map(str::trim) {
            Some("none") => rec.deadline = None,
            Some(d) => {
                let t = parse_deadline(d, now)?;
                // A deadline already past would only fail the phone later, as "Late
                // Request". The stored one may be kept (an export imports again).
                if t <= now && rec.deadline != Some(t) {
                    bail!(
                        "--deadline {} is in the past (now is {}); give a later time, \
                         +7d, or none",
                        render::time(t),
                        render::time(now)
                    );
                }
                rec.deadline = Some(t);
            }
            None => {
                // CUCM's "operation completes by" default: an operation scheduled
                // without a deadline, on a device without one still to come.
                let scheduled = self.operation.is_some_and(|op| op != Operation::None);
                let open = rec.deadline.is_some_and(|d| d > now);
                if let (true, false, Some(secs)) = (scheduled, open, self.default_deadline) {
                    rec.deadline = Some(now.saturating_add(secs));
                }
            }
        }
        if let Some(e) = self.encrypted_config {
            rec.encrypted_config = e;
        }
        if rec.encrypted_config && !matches!(rec.key_order, KeyOrder::Rsa { .. }) {
            // config-files.md E5: encrypted files can only be wrapped to RSA keys.
            bail!(
                "encrypted config needs an RSA key, but the key order is {} (use --key rsa:2048)",
                rec.key_order
            );
        }
        Ok(generated)
    }
}

/// CUCM's rule: 4–10 digits.
pub(in crate::cli) fn validate_auth_string(s: &str) -> Result<()> {
    if !(4..=10).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        bail!("invalid --auth-string: must be 4–10 digits");
    }
    Ok(())
}

pub(in crate::cli) fn generate_auth_string() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// RFC 3339, a date alone (the end of that day, UTC), or `+N` followed by d, h or m.
pub fn parse_deadline(s: &str, now: UnixTime) -> Result<UnixTime> {
    parse_time("--deadline", s, now)
}

/// A point in time given to `option`: RFC 3339 (`2026-12-31T17:00:00Z`), a date alone
/// (`2026-12-31`: the end of that day, 23:59:59 UTC, as "completes by" a date is
/// meant), or relative to `now` (`+7d`, `+12h`, `+30m`). Errors name `option`.
pub(in crate::cli) fn parse_time(option: &str, s: &str, now: UnixTime) -> Result<UnixTime> {
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('+') {
        return Ok(now.saturating_add(parse_duration(option, rel)?));
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(s, &day) {
        let end = date
            .with_hms(23, 59, 59)
            .expect("a valid time")
            .assume_utc();
        return Ok(end.unix_timestamp());
    }
    bail!(
        "invalid {option} '{s}' (expected 2026-12-31T17:00:00Z, 2026-12-31 for the end of \
         that day UTC, or +7d, +12h, +30m)"
    )
}

/// A duration given to `option` in seconds: `N` followed by d, h or m (`30d`).
pub(in crate::cli) fn parse_duration(option: &str, s: &str) -> Result<i64> {
    let (num, unit) = s.split_at(s.len() - s.chars().last().map_or(0, char::len_utf8));
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => bail!("invalid {option} '{s}' (a number and d, h or m: 30d, 12h, 45m)"),
    };
    let n: i64 = num.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
        anyhow::anyhow!("invalid {option} '{s}' (a number and d, h or m: 30d, 12h, 45m)")
    })?;
    Ok(n.saturating_mul(secs))
}

/// What differs between two records of one device, as (field, before, after) in the
/// words of `device show`: for `--dry-run` and the audit trail. An authentication
/// string's value is never shown, only that it changed.
pub(in crate::cli) fn changes(
    before: &DeviceRecord,
    after: &DeviceRecord,
) -> Vec<(&'static str, String, String)> {
    let time = |t: Option<UnixTime>| t.map_or("-".to_string(), render::time);
    let string = |s: &Option<String>| if s.is_some() { "(set)" } else { "-" }.to_string();
    let mut out = Vec::new();
    let mut field = |name, from: String, to: String| {
        if from != to {
            out.push((name, from, to));
        }
    };
    field(
        "operation",
        before.operation.to_string(),
        after.operation.to_string(),
    );
    field(
        "status",
        before.status.to_string(),
        after.status.to_string(),
    );
    field("auth", before.auth.to_string(), after.auth.to_string());
    // A string is never shown: only that it was set, and that it is new.
    let new_string = if before.auth_string == after.auth_string {
        string(&before.auth_string)
    } else {
        "(new)".into()
    };
    field("auth_string", string(&before.auth_string), new_string);
    field(
        "key",
        before.key_order.to_string(),
        after.key_order.to_string(),
    );
    field("deadline", time(before.deadline), time(after.deadline));
    field(
        "encrypted_config",
        before.encrypted_config.to_string(),
        after.encrypted_config.to_string(),
    );
    field(
        "failed_auth",
        before.failed_auth.to_string(),
        after.failed_auth.to_string(),
    );
    field(
        "locked_until",
        time(before.locked_until),
        time(after.locked_until),
    );
    out
}

pub(in crate::cli) fn admin_event(
    ctx: &Ctx,
    name: &str,
    action: &str,
    rec: &DeviceRecord,
) -> Event {
    let mut details = serde_json::Map::new();
    details.insert("operation".into(), rec.operation.to_string().into());
    details.insert("auth".into(), rec.auth.to_string().into());
    details.insert("key".into(), rec.key_order.to_string().into());
    details.insert("encrypted_config".into(), rec.encrypted_config.into());
    if let Some(d) = rec.deadline {
        details.insert("deadline".into(), render::time(d).into());
    }
    Event {
        id: 0,
        time: ctx.now,
        actor: ctx.actor.clone(),
        device: Some(name.to_string()),
        action: action.into(),
        result: rec.status.to_string(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_validated() {
        assert_eq!(
            normalise_name("sep00112233aabb").unwrap(),
            "SEP00112233AABB"
        );
        assert_eq!(normalise_name("CSFjdoe").unwrap(), "CSFjdoe");
        assert!(normalise_name("../etc").is_err());
        assert!(normalise_name("SEP00112233445G").is_err(), "not hex");
        assert!(normalise_name("SEP0011223344").is_err(), "too short");
        assert!(normalise_name("SEPé0011223344").is_err());
        assert!(normalise_name("").is_err());
    }

    #[test]
    fn deadlines_parse_absolute_and_relative() {
        assert_eq!(parse_deadline("+7d", 1000).unwrap(), 1000 + 7 * 86_400);
        assert_eq!(parse_deadline("+2h", 0).unwrap(), 7200);
        assert_eq!(
            parse_deadline("2026-01-01T00:00:00Z", 0).unwrap(),
            1_767_225_600
        );
        assert_eq!(
            parse_deadline("2026-01-01", 0).unwrap(),
            1_767_225_600 + 86_399,
            "a date alone is the end of that day, UTC"
        );
        assert!(parse_deadline("+7w", 0).is_err());
        assert!(parse_deadline("tomorrow", 0).is_err());
        let err = parse_time("--expires-within", "+6y", 0).unwrap_err();
        assert!(
            err.to_string().contains("invalid --expires-within '6y'"),
            "{err}"
        );
    }

    #[test]
    fn options_enforce_cucm_rules() {
        let mut rec = DeviceRecord::new("SEP001122334455");
        let opts = DeviceOptions {
            auth: Some(AuthMode::String),
            ..Default::default()
        };
        assert!(
            opts.apply(&mut rec, 0).is_err(),
            "string mode without a string"
        );

        let opts = DeviceOptions {
            auth_string: Some("12a4".into()),
            ..Default::default()
        };
        assert!(opts.apply(&mut rec, 0).is_err(), "non-digit string");

        let opts = DeviceOptions {
            generate_auth_string: true,
            operation: Some(Operation::Install),
            ..Default::default()
        };
        let s = opts.apply(&mut rec, 0).unwrap().unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(rec.auth, AuthMode::String);
        assert_eq!(rec.status, OperationStatus::Pending);

        let opts = DeviceOptions {
            key: Some("ec:p256".parse().unwrap()),
            encrypted_config: Some(true),
            ..Default::default()
        };
        assert!(opts.apply(&mut rec, 0).is_err(), "encryption needs RSA");
    }
}
