//! `capf doctor NAME`: one phone's journey, from the store's record to the files the
//! node serves it, checked as the phone reads them.

use anyhow::Result;

use super::source::Source;
use super::{render, Report};
use crate::model::DeviceRecord;
use crate::phone_config::format::document::{DeviceDocument, Element, Node};
use crate::phone_config::format::sgn::{self, FileKind};
use crate::phone_config::plan::{self, ConfigForm, Request};

/// The store's view of `name` and the files phones get for it.
pub(super) fn device_journey(report: &mut Report, source: &Source, name: &str) -> Result<()> {
    let store = report.ctx.store;
    let Some(device) = store.get_device(name)? else {
        report.fail(
            &format!("{name} is known to capf"),
            &format!("add it: capf device add {name} --operation install --encrypted-config"),
        )?;
        return Ok(());
    };
    report.ok(&format!("{name} is known to capf"))?;
    describe(report, &device)?;
    let Some(mac) = name.strip_prefix("SEP").filter(|m| m.len() == 12) else {
        report.fail(
            &format!("{name} has configuration files"),
            "only SEP<MAC> devices get configuration files",
        )?;
        return Ok(());
    };
    let service = source.service;
    let document = service.document_path(name);
    if !document.exists() {
        report.fail(
            &format!("base document {}", document.display()),
            "place the phone's SEP<MAC>.cnf.xml there",
        )?;
        return Ok(());
    }
    report.ok(&format!("base document {}", document.display()))?;
    let now = report.ctx.now;
    let Ok(signer) = service.signer() else {
        return Ok(()); // reported above: nothing signed can be served
    };
    let signer = signer.certificate_der();
    let expected = Facts {
        full: true,
        node: Some(service.node_name().to_owned()),
        port: Some(service.capf_port().to_string()),
        auth_mode: Some(plan::capf_auth_mode(&device, now).to_string()),
        cert_hash: None,
    };
    report.info(&format!(
        "capf writes into every configuration of {name}: processNodeName {}, phonePort {}, \
         capfAuthMode {} ({})",
        service.node_name(),
        service.capf_port(),
        expected.auth_mode.as_deref().unwrap_or_default(),
        if expected.auth_mode.as_deref() == Some("0") {
            "no operation pending"
        } else {
            "an operation is pending: the phone will come to CAPF"
        }
    ))?;
    let request = |form| Request::Config {
        mac: mac.to_owned(),
        form,
    };
    let signed = format!("{name}.cnf.xml.sgn");
    if !device.encrypted_config {
        // A choice, not a fault: the phone gets its full configuration, signed.
        report.ok(&format!(
            "encrypted config for {name} is off: the phone gets its full configuration, signed"
        ))?;
        for (via, file) in source.files(&request(ConfigForm::Signed), now) {
            let what =
                format!("{signed} {via} is the full configuration and sends the phone to capf");
            served_facts(report, &what, file, signer, &expected, |f| match f.full {
                true => Ok(()),
                false => Err("it is a partial (fullConfig false)".into()),
            })?;
        }
        return Ok(());
    }
    report.ok(&format!("encrypted config for {name} is on"))?;

    let stored = device.phone_certificate();
    for (via, file) in source.files(&request(ConfigForm::Signed), now) {
        let what = format!("{signed} {via} is the partial and sends the phone to capf");
        let partial = |f: &Facts| match f.full {
            false => Ok(()),
            true => Err("it is the full configuration, unencrypted".into()),
        };
        let Some(facts) = served_facts(report, &what, file, signer, &expected, partial)? else {
            continue;
        };
        let what = "certHash served equals the MD5 of the phone's stored certificate";
        match (stored, facts.cert_hash.as_deref()) {
            (None, _) => report.fail(
                what,
                &format!(
                    "no certificate is stored yet; schedule one (`capf device set {name} --operation install`) and let the phone enroll"
                ),
            )?,
            (Some(cert), Some(hash)) if hash == cert.md5 => {
                report.ok(&format!("{what} ({hash})"))?
            }
            (Some(cert), _) if !is_rsa(cert) => report.fail(
                what,
                &format!(
                    "the certificate has an EC key and cannot encrypt; reissue with `capf device set {name} --key rsa:2048 --operation install`"
                ),
            )?,
            (Some(_), hash) => report.fail(
                what,
                &format!("the partial carries '{}'", hash.unwrap_or_default()),
            )?,
        }
    }
    if !stored.is_some_and(is_rsa) {
        return Ok(());
    }
    for (via, file) in source.files(&request(ConfigForm::Encrypted), now) {
        match file {
            Ok(bytes) => report.ok(&format!(
                "{name}.cnf.xml.enc.sgn {via} ({} bytes)",
                bytes.len()
            ))?,
            Err(e) => report.fail(&format!("{name}.cnf.xml.enc.sgn {via}"), &e)?,
        }
    }
    Ok(())
}

/// Checks a signed configuration as a phone reads it: it parses, verifies under the
/// signer, is what `kind` expects, and names capf's node, port and mode. Returns what
/// it says, or `None` after reporting why it could not be read.
fn served_facts(
    report: &mut Report,
    what: &str,
    file: Result<Vec<u8>, String>,
    signer: &[u8],
    expected: &Facts,
    kind: impl Fn(&Facts) -> Result<(), String>,
) -> Result<Option<Facts>> {
    let facts = file.and_then(|bytes| {
        let facts = signed_facts(&bytes, signer)?;
        kind(&facts)?;
        Ok(facts)
    });
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => {
            report.fail(what, &e)?;
            return Ok(None);
        }
    };
    let says = |f: &Facts| {
        format!(
            "{}:{} (capfAuthMode {})",
            f.node.as_deref().unwrap_or("-"),
            f.port.as_deref().unwrap_or("-"),
            f.auth_mode.as_deref().unwrap_or("-")
        )
    };
    if facts.node == expected.node
        && facts.port == expected.port
        && facts.auth_mode == expected.auth_mode
    {
        report.ok(&format!("{what}: {}", says(&facts)))?;
    } else {
        report.fail(
            what,
            &format!(
                "it says {}, capf would write {}: restart `capf serve` after changing node_name or capf_port",
                says(&facts),
                says(expected)
            ),
        )?;
    }
    Ok(Some(facts))
}

/// What the store holds for the device, and its last session.
fn describe(report: &mut Report, device: &DeviceRecord) -> Result<()> {
    report.info(&format!(
        "operation {}, auth {}, key order {}, status {}",
        device.operation, device.auth, device.key_order, device.status
    ))?;
    match device.phone_certificate() {
        Some(cert) => report.info(&format!(
            "certificate: MD5 {}, key {}, serial {}",
            cert.md5, cert.key, cert.serial
        ))?,
        None => report.info("certificate: none stored")?,
    }
    if let Some(t) = device.last_attempt {
        report.info(&format!("last attempt: {}", render::time(t)))?;
    }
    let events = report.ctx.store.events(Some(&device.name), None, Some(5))?;
    if let Some(e) = events.iter().rev().find(|e| e.action == "session") {
        let reason = e
            .details
            .get("reason")
            .map(|r| format!(" (reason {r})"))
            .unwrap_or_default();
        report.info(&format!(
            "last session: {} {}{reason} from {}",
            render::time(e.time),
            e.result,
            e.actor
        ))?;
    }
    Ok(())
}

/// Whether the stored certificate's key can receive an encrypted file (read from the
/// record: `EnrolledCert::key` was taken from the certificate when it was stored).
fn is_rsa(cert: &crate::model::EnrolledCert) -> bool {
    matches!(cert.key, crate::model::KeySpec::Rsa { .. })
}

/// What a phone reads from a configuration: where CAPF is, whether to go there, and
/// (in a partial) the hash of its certificate.
struct Facts {
    /// `fullConfig` is not `false`.
    full: bool,
    node: Option<String>,
    port: Option<String>,
    auth_mode: Option<String>,
    cert_hash: Option<String>,
}

/// Reads a `.sgn` file after checking its signature under `signer` (DER).
fn signed_facts(sgn_file: &[u8], signer: &[u8]) -> Result<Facts, String> {
    let file = sgn::parse(sgn_file, FileKind::Sgn).map_err(|e| e.to_string())?;
    sgn::verify(&file, signer).map_err(|e| format!("its signature does not verify: {e}"))?;
    let document = DeviceDocument::parse(file.body).map_err(|e| e.to_string())?;
    let root = document.root();
    let capf = child(root, "capfList").and_then(|l| child(l, "capf"));
    let trimmed = |t: Option<String>| t.map(|t| t.trim().to_owned());
    Ok(Facts {
        full: trimmed(text(root, "fullConfig")).as_deref() != Some("false"),
        node: trimmed(capf.and_then(|c| text(c, "processNodeName"))),
        port: trimmed(capf.and_then(|c| text(c, "phonePort"))),
        auth_mode: trimmed(text(root, "capfAuthMode")),
        cert_hash: text(root, "certHash"),
    })
}

fn child<'e>(element: &'e Element, name: &str) -> Option<&'e Element> {
    element.children.iter().find_map(|n| match n {
        Node::Element(e) if e.name == name => Some(e),
        _ => None,
    })
}

fn text(element: &Element, name: &str) -> Option<String> {
    let e = child(element, name)?;
    Some(
        e.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect(),
    )
}
