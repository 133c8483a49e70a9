//! The rules of a device's settings, shared by `device add|set` and the CSV import:
//! the CAPF options of CUCM's phone page and how they apply to a record, device names,
//! authentication strings, deadlines, and the audit event of an operator's change.

use anyhow::{bail, Result};
use clap::Args;

use crate::cli::render;
use crate::cli::Ctx;
use crate::model::{AuthMode, DeviceRecord, Event, KeyOrder, Operation, OperationStatus, UnixTime};
use crate::protocol::valid_device_name;

/// The CAPF settings of CUCM's phone page.
#[derive(Args, Debug, Default)]
pub struct DeviceOptions {
    /// Certificate operation: install (install/upgrade), delete, troubleshoot, none.
    #[arg(long)]
    pub operation: Option<Operation>,
    /// Authentication mode: null (null string), string (authentication string),
    /// lsc / mic (existing certificate, LSC or MIC precedence). `device add` without
    /// it (or a string) generates an authentication string; null must be asked for.
    #[arg(long)]
    pub auth: Option<AuthMode>,
    /// Authentication string the user types on the phone (4–10 digits).
    #[arg(long, conflicts_with = "generate_auth_string")]
    pub auth_string: Option<String>,
    /// Generate a random authentication string and print it once.
    #[arg(long)]
    pub generate_auth_string: bool,
    /// Key order: rsa:2048, ec:p256, or ec-preferred:p256,rsa:2048.
    #[arg(long)]
    pub key: Option<KeyOrder>,
    /// Operation completes by: RFC 3339 (2026-12-31T17:00:00Z) or relative (+7d, +12h).
    #[arg(long)]
    pub deadline: Option<String>,
    /// Serve this phone its configuration encrypted to its key (needs an RSA key).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub encrypted_config: Option<bool>,
}

/// Device names as phones send them: `SEP` names upper-cased (the MAC is hex and
/// phones send it in upper case); anything else must already be a valid name (R8).
pub fn normalise_name(name: &str) -> Result<String> {
    let name = name.trim();
    // Compared as bytes: slicing the str at 3 panicked when a multi-byte character
    // straddled that offset (found by fuzzing the import file).
    let is_sep = name.len() == 15
        && name
            .as_bytes()
            .split_at_checked(3)
            .is_some_and(|(prefix, mac)| {
                prefix.eq_ignore_ascii_case(b"SEP") && mac.iter().all(u8::is_ascii_hexdigit)
            });
    let name = if is_sep {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    };
    if !valid_device_name(&name) {
        bail!("invalid device name '{name}' (1–64 characters of A-Z a-z 0-9 _ . -)");
    }
    Ok(name)
}

impl DeviceOptions {
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
        if let Some(d) = &self.deadline {
            rec.deadline = Some(parse_deadline(d, now)?);
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

/// RFC 3339, or `+N` followed by d, h or m.
pub fn parse_deadline(s: &str, now: UnixTime) -> Result<UnixTime> {
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --deadline '{s}' (e.g. +7d, +12h, +30m)"))?;
        let secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            _ => bail!("invalid --deadline '{s}' (unit must be d, h or m)"),
        };
        return Ok(now.saturating_add(n.saturating_mul(secs)));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("invalid --deadline '{s}': {e} (expected RFC 3339 or +7d)"))?;
    Ok(t.unix_timestamp())
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
        assert!(parse_deadline("+7w", 0).is_err());
        assert!(parse_deadline("tomorrow", 0).is_err());
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
