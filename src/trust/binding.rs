//! Whether a certificate belongs to the device that presents it (§7.1 step 4).
//!
//! Without this check any enrolled phone could re-key any other: its own certificate
//! chains and its proofs verify, only the name differs.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::anchors::parse_certificate;
use crate::model::CertKind;

/// The binding rules:
///
/// * **LSC**: the subject has exactly one CN and it equals `device_name` byte for byte.
///   capf issues LSCs with the device name as the phone sent it, so there is no case or
///   format variation to forgive. (The session must also check that the certificate is
///   the one capf issued to or recorded for the device.)
/// * **MIC**: `device_name` must be `SEP` + 12 hex digits (other devices have no MIC),
///   and a subject CN or a SAN dNSName/URI must either equal the device name ignoring
///   ASCII case, or contain its 12-digit MAC, ignoring case, as a whole hex run (not
///   preceded or followed by another hex digit). Cisco MIC CNs carry the MAC with a model
///   prefix, e.g. `CP-7965G-SEP001122334455`; hex digits are compared case-insensitively
///   because Cisco writes MACs in either case. The whole-run rule keeps a MAC that is a
///   substring of a longer hex string from matching.
///
/// A certificate that does not parse is bound to nothing.
pub fn bound_to_device(cert_der: &[u8], device_name: &str, kind: CertKind) -> bool {
    let Ok(cert) = parse_certificate(cert_der) else {
        return false;
    };
    match kind {
        CertKind::Lsc => {
            let mut cns = common_names(&cert);
            matches!((cns.next(), cns.next()), (Some(cn), None) if cn == device_name)
        }
        CertKind::Mic => {
            let Some(mac) = mac_of(device_name) else {
                return false;
            };
            common_names(&cert)
                .chain(san_names(&cert))
                .any(|name| name.eq_ignore_ascii_case(device_name) || contains_hex_run(name, mac))
        }
    }
}

/// The 12 hex digits of a `SEP` device name.
fn mac_of(device_name: &str) -> Option<&str> {
    let mac = device_name.strip_prefix("SEP")?;
    (mac.len() == 12 && mac.bytes().all(|b| b.is_ascii_hexdigit())).then_some(mac)
}

/// Whether `needle` (hex digits) occurs in `haystack`, ignoring ASCII case, with no hex
/// digit immediately before or after it.
fn contains_hex_run(haystack: &str, needle: &str) -> bool {
    let hay = haystack.as_bytes();
    let needle = needle.as_bytes();
    if hay.len() < needle.len() {
        return false;
    }
    (0..=hay.len() - needle.len()).any(|start| {
        let end = start + needle.len();
        let before_ok = start == 0 || hay.get(start - 1).is_some_and(|b| !b.is_ascii_hexdigit());
        let after_ok = hay.get(end).is_none_or(|b| !b.is_ascii_hexdigit());
        before_ok
            && after_ok
            && hay
                .get(start..end)
                .is_some_and(|window| window.eq_ignore_ascii_case(needle))
    })
}

fn common_names<'a>(cert: &'a X509Certificate<'_>) -> impl Iterator<Item = &'a str> {
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
}

fn san_names<'a>(cert: &'a X509Certificate<'_>) -> impl Iterator<Item = &'a str> {
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.as_slice(),
        _ => &[],
    };
    names.iter().filter_map(|name| match name {
        GeneralName::DNSName(s) | GeneralName::URI(s) => Some(*s),
        _ => None,
    })
}
