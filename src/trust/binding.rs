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

/// Whether a SUDI belongs to the device: it carries the device's MAC the way a MIC does
/// (a CN or SAN name, see [`bound_to_device`]), or the device authenticated with a MIC
/// and the SUDI's subject serialNumber attribute (Cisco writes `PID:<model> SN:<serial>`)
/// equals the MIC's. What real phones' SUDIs carry is not documented (docs/trust.md):
/// a SUDI that shows neither is bound to nothing, so `require_sudi` refuses it.
pub fn sudi_bound_to_device(sudi_der: &[u8], device_name: &str, mic_der: Option<&[u8]>) -> bool {
    if bound_to_device(sudi_der, device_name, CertKind::Mic) {
        return true;
    }
    let (Some(mic_der), Ok(sudi)) = (mic_der, parse_certificate(sudi_der)) else {
        return false;
    };
    let Ok(mic) = parse_certificate(mic_der) else {
        return false;
    };
    let serial = |cert: &X509Certificate<'_>| -> Option<String> {
        let mut serials = cert
            .subject()
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .filter_map(|attr| attr.as_str().ok().map(str::to_owned));
        match (serials.next(), serials.next()) {
            (Some(one), None) if !one.trim().is_empty() => Some(one),
            _ => None,
        }
    };
    matches!((serial(&sudi), serial(&mic)), (Some(a), Some(b)) if a == b)
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
