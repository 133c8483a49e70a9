//! `capf doctor [NAME]`: checks, in the order a phone meets them, everything the
//! encrypted-configuration journey needs, and says what to fix.

use anyhow::Result;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use super::config::service;
use super::device::normalise_name;
use super::{render, Ctx};
use crate::model::DeviceRecord;
use crate::phone_config::format::document::{DeviceDocument, Element, Node};
use crate::phone_config::format::identity::parse_certificate;
use crate::phone_config::format::itl::{self, Role};
use crate::phone_config::format::sgn::{self, FileKind};
use crate::phone_config::plan::{ConfigForm, Request};
use crate::phone_config::service::ConfigService;
use crate::settings::Settings;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  capf doctor\n  capf doctor SEP001122334455")]
pub struct DoctorArgs {
    /// A phone whose configuration journey to check as well.
    pub name: Option<String>,
}

/// How long the CAPF listener has to complete a TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(5);

/// Collects check results; any failure makes the exit status 1.
struct Report<'a, 'b> {
    ctx: &'a mut Ctx<'b>,
    failed: bool,
}

impl Report<'_, '_> {
    fn ok(&mut self, what: &str) -> Result<()> {
        writeln!(self.ctx.out, "OK   {what}")?;
        Ok(())
    }
    fn fail(&mut self, what: &str, fix: &str) -> Result<()> {
        self.failed = true;
        writeln!(self.ctx.out, "FAIL {what}: {fix}")?;
        Ok(())
    }
    fn info(&mut self, what: &str) -> Result<()> {
        writeln!(self.ctx.out, "     {what}")?;
        Ok(())
    }
    fn check(&mut self, result: Result<String, (String, String)>) -> Result<bool> {
        match result {
            Ok(what) => self.ok(&what).map(|()| true),
            Err((what, fix)) => self.fail(&what, &fix).map(|()| false),
        }
    }
}

pub fn run(ctx: &mut Ctx, args: DoctorArgs) -> Result<ExitCode> {
    let settings = Settings::load(ctx.data)?;
    let capf_pem = ctx.data.capf_cert();
    let capf = match CertificateDer::from_pem_file(&capf_pem) {
        Ok(c) => Some(c.to_vec()),
        Err(e) => {
            writeln!(
                ctx.out,
                "FAIL CAPF certificate {}: {e} (run `capf init`)",
                capf_pem.display()
            )?;
            None
        }
    };
    let service = service(ctx);
    let mut report = Report {
        ctx,
        failed: capf.is_none(),
    };
    let now = report.ctx.now;
    if let Some(capf) = &capf {
        report.check(ca_flags(capf))?;
        validity(
            &mut report,
            "CAPF certificate",
            capf,
            now,
            "capf init --force",
        )?;
        report.check(listener_presents(settings.listen, capf))?;
    }
    let service = match service {
        Ok(s) => {
            report.ok("TFTP signer certs/tftp.pem and certs/tftp.key")?;
            if let Ok(signer) = s.signer() {
                validity(
                    &mut report,
                    "TFTP signer certificate",
                    signer.certificate_der(),
                    now,
                    "replace certs/tftp.pem and certs/tftp.key",
                )?;
            }
            s
        }
        Err(e) => {
            report.fail("TFTP signer", &format!("{e:#}"))?;
            return Ok(exit(report.failed));
        }
    };
    report.check(trust_list(&service, capf.as_deref(), report.ctx.now))?;
    orphaned_documents(&mut report, &settings)?;
    if let Some(name) = args.name {
        let name = normalise_name(&name)?;
        device_journey(&mut report, &service, &name)?;
    }
    Ok(exit(report.failed))
}

/// Base documents in `tftp/` whose device is not in the store. Phones asking for them
/// get nothing (fail closed), which is what the operator wants after `device remove`,
/// but the file still holds that phone's secrets; with
/// `serve_unknown_devices_plaintext` on it is served to anyone, which is a failure.
fn orphaned_documents(report: &mut Report, settings: &Settings) -> Result<()> {
    let dir = report.ctx.data.tftp();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut orphans = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".cnf.xml")) else {
            continue;
        };
        if report.ctx.store.get_device(name)?.is_none() {
            orphans.push(name.to_string());
        }
    }
    orphans.sort();
    if orphans.is_empty() {
        return report.ok(&format!(
            "every base document in {} has a device",
            dir.display()
        ));
    }
    let list = orphans.join(", ");
    if settings.serve_unknown_devices_plaintext {
        report.fail(
            &format!("base documents without a device, served in plaintext to anyone: {list}"),
            "remove them from tftp/, add the devices, or turn serve_unknown_devices_plaintext off",
        )
    } else {
        writeln!(
            report.ctx.out,
            "WARN base documents without a device (not served; they still hold secrets): {list}"
        )?;
        Ok(())
    }
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

type Check = Result<String, (String, String)>;

fn fail(what: impl Into<String>, fix: impl Into<String>) -> (String, String) {
    (what.into(), fix.into())
}

/// Phones require the CAPF certificate to be a CA that may sign certificates.
fn ca_flags(capf: &[u8]) -> Check {
    let what = "CAPF certificate is a CA (basicConstraints CA:TRUE, keyUsage keyCertSign, digitalSignature)";
    let cert = parse_certificate(capf).map_err(|e| fail(what, e.to_string()))?;
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let usage = matches!(cert.key_usage(), Ok(Some(ku))
        if ku.value.key_cert_sign() && ku.value.digital_signature());
    if ca && usage {
        Ok(what.into())
    } else {
        Err(fail(
            what,
            "phones refuse it; re-create it with `capf init --force` (phones must then load a new ITL)",
        ))
    }
}

/// Warn this long before a certificate phones rely on expires.
const RENEW_WITHIN_SECS: i64 = 30 * 86_400;

/// The certificate is valid now, and not about to expire. Whether phones check the
/// dates of trust-list certificates is unknown (config-files.md E7); capf's LSCs and
/// every TLS client do, so an expired CAPF or signer certificate is a failure.
fn validity(report: &mut Report, name: &str, der: &[u8], now: i64, renew: &str) -> Result<()> {
    let cert = match parse_certificate(der) {
        Ok(cert) => cert,
        Err(e) => return report.fail(&format!("{name} validity"), &e.to_string()),
    };
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now < not_before {
        return report.fail(
            &format!("{name} is valid from {}", render::time(not_before)),
            "check this machine's clock",
        );
    }
    if now > not_after {
        return report.fail(
            &format!("{name} expired on {}", render::time(not_after)),
            &format!("renew it: {renew}"),
        );
    }
    report.ok(&format!("{name} valid until {}", render::time(not_after)))?;
    if not_after - now < RENEW_WITHIN_SECS {
        report.info(&format!(
            "it expires in {} days: renew it soon ({renew})",
            (not_after - now) / 86_400
        ))?;
    }
    Ok(())
}

/// The listener answers TLS with exactly the CAPF certificate.
fn listener_presents(listen: SocketAddr, capf: &[u8]) -> Check {
    let addr = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    };
    let what = format!("CAPF listener {addr} presents the CAPF certificate over TLS");
    let trust = [CertificateDer::from(capf.to_vec())];
    let presented = block_on(async move {
        let connector = crate::server::client::connector(&trust).map_err(|e| e.to_string())?;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("capf").map_err(std::io::Error::other)?;
            connector.connect(name, tcp).await
        };
        let tls = tokio::time::timeout(TLS_TIMEOUT, handshake)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            tls.get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
        )
    })
    .and_then(|presented| presented);
    match presented {
        Ok(Some(cert)) if cert == capf => Ok(what),
        Ok(_) => Err(fail(
            what,
            "it presents another certificate; restart `capf serve` on this data directory",
        )),
        Err(e) => Err(fail(
            what,
            format!("{e}; is `capf serve` running with this data directory and `listen`?"),
        )),
    }
}

/// Runs a future to completion on a thread of its own, so this works both from the
/// CLI and inside the server's admin-socket worker.
fn block_on<F>(future: F) -> Result<F::Output, String>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(future))
        })
        .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// The ITL the node serves verifies and lists the CAPF and TFTP certificates.
fn trust_list(service: &ConfigService, capf: Option<&[u8]>, now: i64) -> Check {
    let what =
        "ITLFile.tlv verifies and lists the CAPF certificate (role 4) and the signer (role 3)";
    let file = service
        .fetch(&Request::TrustList, now)
        .map_err(|e| fail(what, e.to_string()))?;
    let list = itl::parse(&file.bytes).map_err(|e| fail(what, e.to_string()))?;
    itl::verify(&list).map_err(|e| fail(what, e.to_string()))?;
    let has = |role: Role, der: Option<&[u8]>| {
        list.records
            .iter()
            .any(|r| r.role == role.value() && Some(r.certificate) == der)
    };
    let signer = service.signer().ok().map(|s| s.certificate_der());
    if has(Role::Capf, capf) && has(Role::Tftp, signer) {
        Ok(what.into())
    } else {
        Err(fail(
            what,
            "rebuild it (`capf itl build`) from this data directory",
        ))
    }
}

/// The store's view of `name` and the files it would be served.
fn device_journey(report: &mut Report, service: &ConfigService, name: &str) -> Result<()> {
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
    let document = service.document_path(name);
    if !document.exists() {
        report.fail(
            &format!("base document {}", document.display()),
            "place the phone's SEP<MAC>.cnf.xml there",
        )?;
        return Ok(());
    }
    report.ok(&format!("base document {}", document.display()))?;
    if !device.encrypted_config {
        report.fail(
            &format!("encrypted config for {name}"),
            &format!("it is off; enable it with `capf device set {name} --encrypted-config`"),
        )?;
        return Ok(());
    }
    report.ok(&format!("encrypted config for {name} is on"))?;

    let request = |form| Request::Config {
        mac: mac.to_owned(),
        form,
    };
    let now = report.ctx.now;
    let partial = match service.fetch(&request(ConfigForm::Signed), now) {
        Ok(file) => file,
        Err(e) => {
            report.fail(&format!("{name}.cnf.xml.sgn builds"), &e.to_string())?;
            return Ok(());
        }
    };
    let facts = match partial_facts(&partial.bytes) {
        Ok(f) => f,
        Err(e) => {
            report.fail(&format!("{name}.cnf.xml.sgn"), &e)?;
            return Ok(());
        }
    };
    let what = format!(
        "the partial sends the phone to {}:{}",
        service.node_name(),
        service.capf_port()
    );
    if facts.node.as_deref() == Some(service.node_name())
        && facts.port.as_deref() == Some(service.capf_port().to_string().as_str())
    {
        report.ok(&what)?;
    } else {
        report.fail(
            &what,
            &format!(
                "it names {}:{}; set node_name and capf_port in capf.toml",
                facts.node.unwrap_or_default(),
                facts.port.unwrap_or_default()
            ),
        )?;
    }

    let stored = device.phone_certificate();
    let what = "certHash served equals the MD5 of the phone's stored certificate";
    match (stored, facts.cert_hash.as_deref()) {
        (None, _) => report.fail(
            what,
            &format!(
                "no certificate is stored yet; schedule one (`capf device set {name} --operation install`) and let the phone enroll"
            ),
        )?,
        (Some(cert), Some(hash)) if hash == cert.md5 => report.ok(&format!("{what} ({hash})"))?,
        (Some(cert), _) if !is_rsa(&cert.der) => report.fail(
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
    if !stored.is_some_and(|c| is_rsa(&c.der)) {
        return Ok(());
    }
    match service.fetch(&request(ConfigForm::Encrypted), now) {
        Ok(file) => report.ok(&format!(
            "{} builds ({} bytes)",
            file.name,
            file.bytes.len()
        ))?,
        Err(e) => report.fail(&format!("{name}.cnf.xml.enc.sgn builds"), &e.to_string())?,
    }
    Ok(())
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

fn is_rsa(der: &[u8]) -> bool {
    use x509_parser::public_key::PublicKey;
    parse_certificate(der).is_ok_and(|c| matches!(c.public_key().parsed(), Ok(PublicKey::RSA(_))))
}

/// The facts a phone reads from its partial.
struct PartialFacts {
    node: Option<String>,
    port: Option<String>,
    cert_hash: Option<String>,
}

fn partial_facts(sgn_file: &[u8]) -> Result<PartialFacts, String> {
    let file = sgn::parse(sgn_file, FileKind::Sgn).map_err(|e| e.to_string())?;
    let document = DeviceDocument::parse(file.body).map_err(|e| e.to_string())?;
    let root = document.root();
    let capf = child(root, "capfList").and_then(|l| child(l, "capf"));
    Ok(PartialFacts {
        node: capf.and_then(|c| text(c, "processNodeName")),
        port: capf.and_then(|c| text(c, "phonePort")),
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
