//! `capf doctor [NAME]`: checks, in the order a phone meets them, everything the
//! configuration journey needs, and says what to fix.
//!
//! What phones get is checked where phones get it: run through the admin socket
//! (`capf serve` running on the data directory, the usual case), doctor fetches the
//! ITL and the device's files from the node's own HTTP and TFTP listeners and TLS
//! from its CAPF listener. Run with the node down, it says so as a failure and checks
//! the files it builds here instead, so a broken document or signer still shows.

use anyhow::Result;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

mod device;
mod source;

use super::config::service;
use super::device::normalise_name;
use super::{render, Ctx};
use crate::phone_config::format::identity::parse_certificate;
use crate::phone_config::format::itl::{self, Role};
use crate::phone_config::plan::Request;
use crate::phone_config::service::ConfigService;
use crate::settings::Settings;
use device::device_journey;
use source::{block_on, loopback, Source};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  capf doctor\n  capf doctor SEP001122334455\n  capf doctor SEP001122334455 --json"
)]
pub struct DoctorArgs {
    /// A phone whose configuration journey to check as well.
    pub name: Option<String>,
    /// Print the findings as JSON: {"ok": bool, "checks": [{"result", "check", "fix"}]}.
    #[arg(long)]
    pub json: bool,
}

/// How long the CAPF listener has to complete a TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(5);

/// One finding, as printed and as in `--json`.
#[derive(serde::Serialize)]
struct Finding {
    /// `ok`, `warn`, `fail` or `info`.
    result: &'static str,
    check: String,
    /// What to do about a failure or warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// Collects check results; any failure makes the exit status 1.
struct Report<'a, 'b> {
    ctx: &'a mut Ctx<'b>,
    findings: Vec<Finding>,
    failed: bool,
}

impl Report<'_, '_> {
    fn push(&mut self, result: &'static str, check: &str, fix: Option<&str>) -> Result<()> {
        self.failed |= result == "fail";
        self.findings.push(Finding {
            result,
            check: check.to_owned(),
            fix: fix.map(str::to_owned),
        });
        Ok(())
    }
    fn ok(&mut self, what: &str) -> Result<()> {
        self.push("ok", what, None)
    }
    fn fail(&mut self, what: &str, fix: &str) -> Result<()> {
        self.push("fail", what, Some(fix))
    }
    fn warn(&mut self, what: &str) -> Result<()> {
        self.push("warn", what, None)
    }
    fn info(&mut self, what: &str) -> Result<()> {
        self.push("info", what, None)
    }
    fn check(&mut self, result: Result<String, (String, String)>) -> Result<bool> {
        match result {
            Ok(what) => self.ok(&what).map(|()| true),
            Err((what, fix)) => self.fail(&what, &fix).map(|()| false),
        }
    }

    /// Prints the findings and gives the exit status.
    fn finish(self, json: bool) -> Result<ExitCode> {
        if json {
            let value = serde_json::json!({ "ok": !self.failed, "checks": self.findings });
            writeln!(self.ctx.out, "{}", serde_json::to_string_pretty(&value)?)?;
        } else {
            for f in &self.findings {
                match (f.result, &f.fix) {
                    ("ok", _) => writeln!(self.ctx.out, "OK   {}", f.check)?,
                    ("fail", Some(fix)) => writeln!(self.ctx.out, "FAIL {}: {fix}", f.check)?,
                    ("fail", None) => writeln!(self.ctx.out, "FAIL {}", f.check)?,
                    ("warn", _) => writeln!(self.ctx.out, "WARN {}", f.check)?,
                    _ => writeln!(self.ctx.out, "     {}", f.check)?,
                }
            }
        }
        Ok(if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

pub fn run(ctx: &mut Ctx, args: DoctorArgs) -> Result<ExitCode> {
    let settings = Settings::load(ctx.data)?;
    let serving = ctx.serving;
    let service = service(ctx);
    let mut report = Report {
        ctx,
        findings: Vec::new(),
        failed: false,
    };
    let capf_pem = report.ctx.data.capf_cert();
    let capf = match CertificateDer::from_pem_file(&capf_pem) {
        Ok(c) => Some(c.to_vec()),
        Err(e) => {
            report.fail(
                &format!("CAPF certificate {}: {e}", capf_pem.display()),
                "run `capf init`",
            )?;
            None
        }
    };
    let now = report.ctx.now;
    match serving {
        Some(node) => report.ok(&format!(
            "capf serve is running on {} (CAPF on {})",
            report.ctx.data.root().display(),
            node.capf
        ))?,
        None => report.fail(
            &format!(
                "capf serve is running on {}",
                report.ctx.data.root().display()
            ),
            "it is not: start it (`capf serve`). Until then phones get nothing; the file \
             checks below use files built here",
        )?,
    }
    if let Some(capf) = &capf {
        report.check(ca_flags(capf))?;
        validity(
            &mut report,
            "CAPF certificate",
            capf,
            now,
            "capf init --force",
        )?;
        if let Some(node) = serving {
            report.check(listener_presents(node.capf, capf))?;
        }
        match crate::ca::rollover::phase(&report.ctx.data.certs()) {
            crate::ca::rollover::Phase::Single => {}
            crate::ca::rollover::Phase::Staged => report.info(
                "a CAPF CA rollover is staged: the ITL lists the next certificate; \
                 `capf ca activate` once phones have it (`capf ca show`)",
            )?,
            crate::ca::rollover::Phase::Activated => report.info(
                "a CAPF CA rollover is activated: LSCs of the previous certificate still \
                 authenticate; `capf ca retire` once no device holds one (`capf ca show`)",
            )?,
        }
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
            return report.finish(args.json);
        }
    };
    let source = Source {
        service: &service,
        serving,
    };
    let recovery_path = report
        .ctx
        .data
        .certs()
        .join(crate::ca::recovery::RECOVERY_CERT_FILE);
    let recovery = super::ca::read(&recovery_path).ok();
    if recovery.is_none() {
        report.warn(
            "no ITL recovery certificate (certs/itl-recovery.pem): the signer cannot be \
             replaced without resetting phones; run `capf init --upgrade`",
        )?;
    }
    for (via, file) in source.files(&Request::TrustList, now) {
        report.check(trust_list(
            &service,
            capf.as_deref(),
            recovery.as_deref(),
            &via,
            file,
        ))?;
    }
    orphaned_documents(&mut report, &settings)?;
    if let Some(name) = args.name {
        let name = normalise_name(&name)?;
        device_journey(&mut report, &source, &name)?;
    }
    report.finish(args.json)
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
        report.warn(&format!(
            "base documents without a device (not served; they still hold secrets): {list}"
        ))
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
    let addr = loopback(listen);
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

/// The ITL phones get verifies and lists the CAPF and TFTP certificates, and the
/// recovery certificate as SAST when there is one.
fn trust_list(
    service: &ConfigService,
    capf: Option<&[u8]>,
    recovery: Option<&[u8]>,
    via: &str,
    file: Result<Vec<u8>, String>,
) -> Check {
    let what =
        format!(
        "ITLFile.tlv {via} verifies and lists the CAPF certificate (role 4), the signer (role 3){}",
        if recovery.is_some() { " and the recovery certificate (role 0)" } else { "" }
    );
    let file = file.map_err(|e| fail(&what, e))?;
    let list = itl::parse(&file).map_err(|e| fail(&what, e.to_string()))?;
    itl::verify(&list).map_err(|e| fail(&what, e.to_string()))?;
    let has = |role: Role, der: Option<&[u8]>| {
        list.records
            .iter()
            .any(|r| r.role == role.value() && Some(r.certificate) == der)
    };
    let signer = service.signer().ok().map(|s| s.certificate_der());
    let recovery_listed = recovery.is_none_or(|r| has(Role::Sast, Some(r)));
    if has(Role::Capf, capf) && has(Role::Tftp, signer) && recovery_listed {
        Ok(what)
    } else {
        Err(fail(
            what,
            "it lists other certificates: restart `capf serve` on this data directory",
        ))
    }
}
