//! How records read for people, wherever they are shown: the CLI's text renderer and
//! the web admin's pages share these, so a device's status or a time reads the same
//! in both.

use crate::model::{DeviceRecord, UnixTime};
use crate::protocol::valid_device_name;
use anyhow::{bail, Result};

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

/// A device's status as people see it: CUCM's operation status, led by "Locked Out
/// until …" while a brute-force lockout lasts (a locked phone is refused whatever
/// its operation). JSON keeps `status` as it was and adds `locked_out`.
pub fn status_text(d: &DeviceRecord, now: UnixTime) -> String {
    match d.locked_until.filter(|_| d.is_locked(now)) {
        Some(t) => format!("Locked Out until {} ({})", time(t), d.status),
        None => d.status.to_string(),
    }
}

/// Device names as phones send them: `SEP` names are `SEP` and exactly 12 hex digits
/// (the MAC), upper-cased as phones send them; any other name (CUCM's `CSF`, `BOT`,
/// `TCT`, ... softphones) must already be a valid name (R8).
pub fn normalise_name(name: &str) -> Result<String> {
    let name = name.trim();
    // Compared as bytes: slicing the str at 3 panicked when a multi-byte character
    // straddled that offset (found by fuzzing the import file).
    let sep_mac = name
        .as_bytes()
        .split_at_checked(3)
        .filter(|(prefix, _)| prefix.eq_ignore_ascii_case(b"SEP"))
        .map(|(_, mac)| mac);
    if let Some(mac) = sep_mac {
        // A typo in a MAC (SEP00112233445G) names a phone that can never ask.
        if mac.len() != 12 || !mac.iter().all(u8::is_ascii_hexdigit) {
            bail!(
                "invalid device name '{name}' (a SEP name is SEP and the phone's MAC: \
                 exactly 12 hex digits, e.g. SEP001122334455)"
            );
        }
        return Ok(name.to_ascii_uppercase());
    }
    if !valid_device_name(name) {
        bail!("invalid device name '{name}' (1–64 characters of A-Z a-z 0-9 _ . -)");
    }
    Ok(name.to_string())
}
