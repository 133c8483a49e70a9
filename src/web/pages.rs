//! The web admin's pages. Reads go to the store directly (through its readers: range
//! scans that stop after a page); every change is a `capf` command line run by
//! [`Web::run_command`], so the page and the CLI change the store through the same
//! code and leave the same audit events (actor `web:<account>`).

use super::html::{csrf_field, esc, page, select, url};
use super::session::{self, PendingImport};
use super::{days_until, html_response, text, Form, Operator, Req, Web};
use crate::cli::{normalise_name, show_time, status_text};
use crate::model::{now, DeviceRecord, EnrolledCert, UnixTime};
use hyper::{Response, StatusCode};
use std::fmt::Write;
use std::sync::Arc;

type Body = http_body_util::Full<hyper::body::Bytes>;

/// Phones per page of the list.
const PAGE: usize = 50;
/// Audit events per page.
const EVENTS_PAGE: usize = 100;
/// Records read at most for one page of a filtered list: a filter that matches few
/// devices answers after this many, with a link to search on from there.
const SCAN_BUDGET: usize = 100_000;
/// Lines of command output shown (an import's dry run of a big file is long).
const OUTPUT_LINES: usize = 200;

const OPERATIONS: [(&str, &str); 3] = [
    ("install", "Install/Upgrade"),
    ("delete", "Delete"),
    ("troubleshoot", "Troubleshoot"),
];
const AUTH_MODES: [(&str, &str); 5] = [
    ("", "Keep the current mode"),
    ("string", "By authentication string"),
    ("null", "By null string"),
    ("lsc", "By existing certificate (precedence to LSC)"),
    ("mic", "By existing certificate (precedence to MIC)"),
];
const KEYS: [(&str, &str); 4] = [
    ("", "Keep the current key order"),
    ("rsa:2048", "RSA 2048"),
    ("ec:p256", "EC P-256"),
    (
        "ec-preferred:p256,rsa:2048",
        "EC P-256 preferred, then RSA 2048",
    ),
];
const STATUSES: [(&str, &str); 7] = [
    ("", "Any status"),
    ("pending", "Operation Pending"),
    ("upgrade success", "Upgrade Success"),
    ("failed", "Failed"),
    ("locked", "Locked Out"),
    ("delete success", "Delete Success"),
    ("none", "None"),
];
const EXPIRIES: [(&str, &str); 6] = [
    ("", "Any LSC"),
    ("expired", "LSC expired"),
    ("30", "LSC ends within 30 days"),
    ("90", "LSC ends within 90 days"),
    ("365", "LSC ends within a year"),
    ("none", "No LSC"),
];

/// The login form, with a token tying it to this browser (login CSRF): the one the
/// browser already holds, so that two tabs (or a favicon request) do not spoil each
/// other's form, or a new one.
pub(super) fn login_page(
    held: Option<&str>,
    message: Option<&str>,
    status: StatusCode,
) -> Response<Body> {
    let token = match held {
        Some(t) if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) => t.to_string(),
        _ => session::random_token(),
    };
    let mut body = String::new();
    if let Some(m) = message {
        let _ = write!(
            body,
            "<p class=\"note error\" role=\"alert\">{}</p>",
            esc(m)
        );
    }
    let _ = write!(
        body,
        "<form class=\"box\" method=\"post\" action=\"/login\">{}\
         <label>Account<input name=\"name\" autocomplete=\"username\" required autofocus></label>\
         <label>Password<input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Log in</button></form>\
         <p>Accounts are made on the node with <code>capf admin-user add NAME</code>.</p>",
        csrf_field(&token)
    );
    let mut response = html_response(status, page("Log in", None, &body));
    super::set_cookie(
        &mut response,
        &session::set_cookie(
            session::LOGIN_COOKIE,
            &token,
            std::time::Duration::from_secs(3600),
        ),
    );
    response
}

impl Web {
    pub(super) async fn get(self: &Arc<Self>, r: &Req, op: &Operator) -> Response<Body> {
        let path = r.path.as_str();
        match path {
            "/" => self.dashboard(op).await,
            "/phones" => self.phones(r, op).await,
            "/import" => self.import_form(op, None),
            "/events" => self.events(r, op).await,
            _ => match path.strip_prefix("/phones/") {
                Some(name) if !name.contains('/') => self.phone(op, name, None).await,
                _ => not_found(op),
            },
        }
    }

    pub(super) async fn post(
        self: &Arc<Self>,
        r: &Req,
        op: &Operator,
        form: Form,
    ) -> Response<Body> {
        let account = op.session.account.clone();
        match r.path.as_str() {
            "/import" => return self.import_preview(op, form).await,
            "/import/confirm" => return self.import_confirm(op, form).await,
            _ => {}
        }
        let Some((name, action)) = r
            .path
            .strip_prefix("/phones/")
            .and_then(|rest| rest.split_once('/'))
        else {
            return not_found(op);
        };
        let Ok(name) = normalise_name(name) else {
            return not_found(op);
        };
        let mut args: Vec<String> = vec!["device".into(), "set".into()];
        match action {
            "schedule" => {
                let operation = form.get("operation");
                if !OPERATIONS.iter().any(|(v, _)| *v == operation) {
                    return text(StatusCode::BAD_REQUEST, "unknown operation");
                }
                args.push(format!("--operation={operation}"));
                let auth = form.get("auth");
                if !auth.is_empty() {
                    args.push(format!("--auth={auth}"));
                }
                if form.get("generate") == "on" {
                    args.push("--generate-auth-string".into());
                }
                let key = form.get("key");
                if !key.is_empty() {
                    args.push(format!("--key={key}"));
                }
                let deadline = form.get("deadline").trim();
                if !deadline.is_empty() {
                    args.push(format!("--deadline={deadline}"));
                }
                match form.get("encrypted") {
                    "on" => args.push("--encrypted-config=true".into()),
                    "off" => args.push("--encrypted-config=false".into()),
                    _ => {}
                }
            }
            "cancel" => args.push("--operation=none".into()),
            "auth-string" => args.push("--generate-auth-string".into()),
            "clear-lockout" => args.push("--clear-lockout".into()),
            _ => return not_found(op),
        }
        args.push("--".into());
        args.push(name.clone());
        let result = self.run_command(&account, args).await;
        self.forget_dashboard();
        self.phone(op, &name, Some(result)).await
    }

    async fn dashboard(self: &Arc<Self>, op: &Operator) -> Response<Body> {
        let health = match self.health().await {
            Ok(h) => h,
            Err(e) => return error_page(op, &format!("{e:#}")),
        };
        let now = now();
        let mut b = String::new();
        let level = health.level().as_str();
        let _ = write!(
            b,
            "<p class=\"note {level}\">Node health: <strong>{level}</strong> \
             (as <code>capf status</code> reports it; figures at most 30 seconds old)</p>\
             <div class=\"cards\">"
        );
        let card = |b: &mut String, label: &str, value: usize, href: &str| {
            let _ = write!(
                b,
                "<a class=\"card\" href=\"{}\" style=\"color:inherit;text-decoration:none\">\
                 <b>{value}</b>{}</a>",
                esc(href),
                esc(label)
            );
        };
        card(&mut b, "phones", health.devices, "/phones");
        card(
            &mut b,
            "pending operations",
            health.pending,
            "/phones?status=pending",
        );
        card(
            &mut b,
            "past their deadline",
            health.past_deadline,
            "/phones?status=pending",
        );
        card(&mut b, "locked out", health.locked, "/phones?status=locked");
        card(
            &mut b,
            "LSCs expired",
            health.lsc_expired,
            "/phones?expires=expired",
        );
        card(
            &mut b,
            "LSCs ending within 30 days",
            health.lsc_expiring_30_days,
            "/phones?expires=30",
        );
        card(
            &mut b,
            "LSCs ending within 90 days",
            health.lsc_expiring_90_days,
            "/phones?expires=90",
        );
        card(
            &mut b,
            "LSCs revoked (on the CRL)",
            health.crl_revoked,
            "/events?action=revoke",
        );
        b.push_str("</div>");
        if !health.findings.is_empty() {
            b.push_str("<h2>Findings</h2>");
            for f in &health.findings {
                let _ = write!(
                    b,
                    "<p class=\"note {}\"><strong>{}</strong>: {}</p>",
                    f.level.as_str(),
                    f.level.as_str(),
                    esc(&f.message)
                );
            }
        }
        b.push_str(
            "<h2>Phones by status</h2><div class=\"scroll\"><table>\
             <thead><tr><th scope=\"col\">Status</th><th scope=\"col\">Phones</th></tr></thead><tbody>",
        );
        for (status, count) in &health.by_status {
            let _ = write!(
                b,
                "<tr><td><a href=\"/phones?status={}\">{}</a></td><td>{count}</td></tr>",
                url(&status.to_ascii_lowercase()),
                esc(status)
            );
        }
        b.push_str("</tbody></table></div>");
        if let Some(t) = health.earliest_lsc_not_after {
            let _ = write!(
                b,
                "<p>The first LSC to end: {} ({} days).</p>",
                esc(&show_time(t)),
                days_until(t, now)
            );
        }
        b.push_str(
            "<h2>capf's certificates</h2><div class=\"scroll\"><table><thead><tr>\
             <th scope=\"col\">Certificate</th><th scope=\"col\">Valid from</th>\
             <th scope=\"col\">Valid until</th><th scope=\"col\">Days left</th></tr></thead><tbody>",
        );
        for c in &health.certificates {
            let time = |t: Option<UnixTime>| t.map_or("unreadable".to_string(), show_time);
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c.name),
                esc(&time(c.not_before)),
                esc(&time(c.not_after)),
                c.not_after
                    .map_or("-".to_string(), |t| days_until(t, now).to_string())
            );
        }
        b.push_str("</tbody></table></div>");
        html_response(StatusCode::OK, page("Dashboard", Some(&op.viewer()), &b))
    }

    async fn phones(self: &Arc<Self>, r: &Req, op: &Operator) -> Response<Body> {
        let mut prefix = r.q("prefix").trim().to_string();
        if prefix.len() >= 3 && prefix[..3].eq_ignore_ascii_case("SEP") {
            prefix = prefix.to_ascii_uppercase();
        }
        let status = r.q("status").to_ascii_lowercase();
        let expires = r.q("expires").to_string();
        let after = r.q("after").to_string();
        let web = self.clone();
        let (rows, next, scanned_out) = {
            let (prefix, status, expires, after) = (
                prefix.clone(),
                status.clone(),
                expires.clone(),
                after.clone(),
            );
            match tokio::task::spawn_blocking(move || {
                web.find_phones(&prefix, &status, &expires, &after)
            })
            .await
            {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return error_page(op, &format!("{e:#}")),
                Err(e) => return error_page(op, &e.to_string()),
            }
        };
        let now = now();
        let mut b = format!(
            "<form class=\"box\" method=\"get\" action=\"/phones\" role=\"search\">\
             <label>Name starts with<input name=\"prefix\" value=\"{}\" placeholder=\"SEP0011\"></label>{}{}\
             <button type=\"submit\">Find</button></form>",
            esc(&prefix),
            select("status", "Status", &STATUSES, &status),
            select("expires", "LSC expiry", &EXPIRIES, &expires),
        );
        if rows.is_empty() {
            b.push_str("<p class=\"note\">No phone matches.</p>");
        } else {
            b.push_str(
                "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Name</th>\
                 <th scope=\"col\">Status</th><th scope=\"col\">Operation</th>\
                 <th scope=\"col\">Authentication</th><th scope=\"col\">LSC valid until</th>\
                 <th scope=\"col\">LSC MD5</th></tr></thead><tbody>",
            );
            for d in &rows {
                let _ =
                    write!(
                    b,
                    "<tr><td><a href=\"/phones/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td><code>{}</code></td></tr>",
                    url(&d.name),
                    esc(&d.name),
                    esc(&status_text(d, now)),
                    esc(&d.operation.to_string()),
                    esc(&d.auth.to_string()),
                    d.lsc.as_ref().map_or("-".into(), |c| esc(&show_time(c.not_after))),
                    d.lsc.as_ref().map_or("-".into(), |c| esc(&c.md5)),
                );
            }
            b.push_str("</tbody></table></div>");
        }
        let query = |after: &str| {
            format!(
                "/phones?prefix={}&status={}&expires={}&after={}",
                url(&prefix),
                url(&status),
                url(&expires),
                url(after)
            )
        };
        b.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
        if !after.is_empty() {
            let _ = write!(b, "<a href=\"{}\">First page</a>", esc(&query("")));
        }
        if let Some(next) = &next {
            let label = if scanned_out {
                format!("Search on after {next}")
            } else {
                "Next page".to_string()
            };
            let _ = write!(b, "<a href=\"{}\">{}</a>", esc(&query(next)), esc(&label));
        }
        b.push_str("</nav>");
        if scanned_out {
            let _ = write!(
                b,
                "<p class=\"note\">{SCAN_BUDGET} phones were read for this page; narrow the \
                 search with a name prefix, or search on.</p>"
            );
        }
        html_response(StatusCode::OK, page("Phones", Some(&op.viewer()), &b))
    }

    /// One page of phones: those whose name starts with `prefix` after `after`,
    /// matching the filters. A range scan from `after` that stops at a full page or
    /// after [`SCAN_BUDGET`] records. Returns the page, where the next one starts,
    /// and whether the budget ran out first.
    fn find_phones(
        &self,
        prefix: &str,
        status: &str,
        expires: &str,
        after: &str,
    ) -> anyhow::Result<(Vec<DeviceRecord>, Option<String>, bool)> {
        let now = now();
        let within: Option<i64> = expires.parse().ok();
        let mut rows = Vec::new();
        let mut last = None;
        let after = (!after.is_empty()).then_some(after);
        for (scanned, d) in self.store.devices_from(prefix, after).enumerate() {
            if scanned >= SCAN_BUDGET {
                return Ok((rows, last, true));
            }
            let d = d?;
            last = Some(d.name.clone());
            let status_ok =
                status.is_empty() || status_text(&d, now).to_ascii_lowercase().contains(status);
            let expiry_ok = match (expires, &d.lsc) {
                ("", _) => true,
                ("none", lsc) => lsc.is_none(),
                ("expired", Some(c)) => c.not_after <= now,
                (_, Some(c)) => within.is_some_and(|days| c.not_after <= now + days * 86_400),
                (_, None) => false,
            };
            if status_ok && expiry_ok {
                if rows.len() == PAGE {
                    // One more matched: there is a next page, after the last one shown.
                    let next = rows.last().map(|r: &DeviceRecord| r.name.clone());
                    return Ok((rows, next, false));
                }
                rows.push(d);
            }
        }
        Ok((rows, None, false))
    }

    pub(super) async fn phone(
        self: &Arc<Self>,
        op: &Operator,
        name: &str,
        result: Option<(bool, String)>,
    ) -> Response<Body> {
        let name = match normalise_name(&percent_decode(name)) {
            Ok(n) => n,
            Err(_) => return not_found(op),
        };
        let device = match self.store.get_device(&name) {
            Ok(Some(d)) => d,
            Ok(None) => return not_found(op),
            Err(e) => return error_page(op, &e.to_string()),
        };
        let now = now();
        let csrf = csrf_field(&op.session.csrf);
        let mut b = String::new();
        if let Some((ok, output)) = result {
            let (class, what) = if ok {
                ("ok", "Done")
            } else {
                ("error", "Refused")
            };
            let _ = write!(
                b,
                "<section class=\"note {class}\" role=\"status\" aria-label=\"Result\"><strong>{what}</strong>\
                 <pre id=\"result\">{}</pre></section>",
                esc(&shorten(&output))
            );
        }
        let d = &device;
        let _ = write!(
            b,
            "<h2>CAPF settings and status</h2><dl>\
             <dt>Status</dt><dd id=\"status\">{}</dd>\
             <dt>Certificate operation</dt><dd>{}</dd>\
             <dt>Authentication mode</dt><dd>{}</dd>\
             <dt>Authentication string</dt><dd>{}</dd>\
             <dt>Key order</dt><dd>{}</dd>\
             <dt>Operation completes by</dt><dd>{}</dd>\
             <dt>Encrypted configuration</dt><dd>{}</dd>\
             <dt>Last attempt</dt><dd>{}</dd>\
             <dt>Failed authentications</dt><dd>{}</dd></dl>",
            esc(&status_text(d, now)),
            esc(&d.operation.to_string()),
            esc(&d.auth.to_string()),
            if d.auth_string.is_some() {
                "set (shown only when generated)"
            } else {
                "-"
            },
            esc(&d.key_order.to_string()),
            d.deadline.map_or("-".into(), |t| esc(&show_time(t))),
            if d.encrypted_config { "on" } else { "off" },
            d.last_attempt.map_or("-".into(), |t| esc(&show_time(t))),
            d.failed_auth,
        );
        let _ = write!(
            b,
            "<h2>Schedule or change an operation</h2>\
             <form class=\"box\" method=\"post\" action=\"/phones/{n}/schedule\">{csrf}{}{}\
             <label class=\"check\"><input type=\"checkbox\" name=\"generate\" checked> Generate a new authentication string</label>\
             {}\
             <label>Operation completes by<input name=\"deadline\" placeholder=\"+7d or 2026-12-31\"></label>{}\
             <button type=\"submit\">Schedule</button></form>\
             <form class=\"box\" method=\"post\" action=\"/phones/{n}/cancel\" style=\"margin-top:.5rem\">{csrf}\
             <button type=\"submit\" class=\"secondary\">Cancel the pending operation</button></form>\
             <form class=\"box\" method=\"post\" action=\"/phones/{n}/auth-string\" style=\"margin-top:.5rem\">{csrf}\
             <button type=\"submit\" class=\"secondary\">Generate an authentication string</button></form>",
            select("operation", "Certificate operation", &OPERATIONS, "install"),
            select("auth", "Authentication mode", &AUTH_MODES, ""),
            select("key", "Key order", &KEYS, ""),
            select(
                "encrypted",
                "Encrypted configuration",
                &[("", "Keep as it is"), ("on", "On"), ("off", "Off")],
                ""
            ),
            n = url(&d.name),
        );
        if d.failed_auth > 0 || d.locked_until.is_some() {
            let _ = write!(
                b,
                "<form class=\"box\" method=\"post\" action=\"/phones/{}/clear-lockout\" style=\"margin-top:.5rem\">{csrf}\
                 <button type=\"submit\" class=\"secondary\">Clear the lockout and failure count</button></form>",
                url(&d.name)
            );
        }
        for (label, id, cert) in [
            ("LSC", "lsc", &d.lsc),
            ("MIC", "mic", &d.mic),
            (
                "LSC issued, not yet confirmed by the phone",
                "unconfirmed",
                &d.unconfirmed_lsc,
            ),
        ] {
            match cert {
                Some(c) => certificate(&mut b, label, id, c, now),
                None if id != "unconfirmed" => {
                    let _ = write!(b, "<h2>{label}</h2><p>None.</p>");
                }
                None => {}
            }
        }
        let _ = write!(
            b,
            "<p><a href=\"/events?device={}\">This phone's audit trail</a></p>",
            url(&d.name)
        );
        html_response(StatusCode::OK, page(&d.name, Some(&op.viewer()), &b))
    }

    fn import_form(&self, op: &Operator, message: Option<&str>) -> Response<Body> {
        let mut b = String::new();
        if let Some(m) = message {
            let _ = write!(b, "<p class=\"note error\" role=\"alert\">{}</p>", esc(m));
        }
        let _ = write!(
            b,
            "<p>The file <code>capf device import</code> takes: capf's CSV (the header \
             <code>name,operation,auth,auth_string,key,encrypted_config,deadline</code>, as \
             <code>capf device export</code> writes it) or a CUCM BAT phone export. Every row \
             is checked first and what would change is shown; nothing is written until you \
             confirm, and a file with any bad row writes nothing.</p>\
             <form class=\"box\" method=\"post\" action=\"/import\" enctype=\"multipart/form-data\">{}\
             <label>CSV file<input type=\"file\" name=\"file\" accept=\".csv,text/csv\" required></label>\
             <button type=\"submit\">Check (dry run)</button></form>",
            csrf_field(&op.session.csrf)
        );
        html_response(
            StatusCode::OK,
            page("Import phones", Some(&op.viewer()), &b),
        )
    }

    async fn import_preview(self: &Arc<Self>, op: &Operator, form: Form) -> Response<Body> {
        let Some((file_name, bytes)) = form.file else {
            return self.import_form(op, Some("Choose a CSV file."));
        };
        let pending = PendingImport {
            id: session::random_token(),
            file_name: file_name.chars().take(200).collect(),
            bytes: Arc::new(bytes),
        };
        let (ok, output) = self.run_import(&op.session.account, &pending, true).await;
        let mut b = format!(
            "<p>File <code>{}</code>, {} bytes.</p>",
            esc(&pending.file_name),
            pending.bytes.len()
        );
        if ok {
            let _ = write!(
                b,
                "<section class=\"note ok\" aria-label=\"Dry run\"><strong>Dry run: nothing has been written yet</strong>\
                 <pre id=\"preview\">{}</pre></section>\
                 <form class=\"box\" method=\"post\" action=\"/import/confirm\">{}\
                 <input type=\"hidden\" name=\"upload\" value=\"{}\">\
                 <button type=\"submit\">Import this file</button></form>",
                esc(&shorten(&output)),
                csrf_field(&op.session.csrf),
                esc(&pending.id)
            );
            self.sessions.set_pending_import(&op.token, Some(pending));
        } else {
            let _ = write!(
                b,
                "<section class=\"note error\" aria-label=\"Dry run\"><strong>Nothing was imported</strong>\
                 <pre id=\"preview\">{}</pre></section><p><a href=\"/import\">Import another file</a></p>",
                esc(&shorten(&output))
            );
            self.sessions.set_pending_import(&op.token, None);
        }
        html_response(
            StatusCode::OK,
            page("Import phones: check", Some(&op.viewer()), &b),
        )
    }

    async fn import_confirm(self: &Arc<Self>, op: &Operator, form: Form) -> Response<Body> {
        let pending = op
            .session
            .pending_import
            .clone()
            .filter(|p| session::tokens_equal(&p.id, form.get("upload")));
        let Some(pending) = pending else {
            return self.import_form(
                op,
                Some("That upload is no longer waiting (checked in another tab, or the session was renewed): upload it again."),
            );
        };
        self.sessions.set_pending_import(&op.token, None);
        let (ok, output) = self.run_import(&op.session.account, &pending, false).await;
        self.forget_dashboard();
        let b = format!(
            "<section class=\"note {}\" aria-label=\"Import\"><strong>{}</strong><pre id=\"outcome\">{}</pre></section>\
             <p><a href=\"/phones\">Phones</a> · <a href=\"/import\">Import another file</a></p>",
            if ok { "ok" } else { "error" },
            if ok { "Imported" } else { "The import stopped" },
            esc(&shorten(&output))
        );
        html_response(
            StatusCode::OK,
            page("Import phones", Some(&op.viewer()), &b),
        )
    }

    /// `capf device import [--dry-run] FILE` on the upload, written for the command to
    /// a private file in the data directory and removed after.
    async fn run_import(
        self: &Arc<Self>,
        account: &str,
        pending: &PendingImport,
        dry_run: bool,
    ) -> (bool, String) {
        let path = self
            .data
            .root()
            .join(format!("web-import-{}.csv", session::random_token()));
        let written = {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&pending.bytes))
        };
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return (false, format!("error: cannot keep the upload: {e}"));
        }
        let mut args: Vec<String> = vec!["device".into(), "import".into()];
        if dry_run {
            args.push("--dry-run".into());
        }
        args.push("--".into());
        args.push(path.to_string_lossy().into_owned());
        let (ok, output) = self.run_command(account, args).await;
        let _ = std::fs::remove_file(&path);
        // The private file name means nothing to the operator.
        let shown = path.to_string_lossy().into_owned();
        (ok, output.replace(&shown, &pending.file_name))
    }

    async fn events(self: &Arc<Self>, r: &Req, op: &Operator) -> Response<Body> {
        let device = r.q("device").trim().to_string();
        let actor = r.q("actor").trim().to_string();
        let action = r.q("action").trim().to_string();
        let before: Option<u64> = r.q("before").parse().ok();
        let web = self.clone();
        let found = {
            let (device, actor, action) = (device.clone(), actor.clone(), action.clone());
            tokio::task::spawn_blocking(move || {
                let mut rows = Vec::new();
                let mut last = None;
                for (scanned, e) in web.store.events_newest_first(before).enumerate() {
                    if scanned >= SCAN_BUDGET || rows.len() == EVENTS_PAGE {
                        return Ok::<_, crate::store::StoreError>((rows, last));
                    }
                    let e = e?;
                    last = Some(e.id);
                    let wanted = (device.is_empty() || e.device.as_deref() == Some(&device))
                        && (actor.is_empty() || e.actor.contains(actor.as_str()))
                        && (action.is_empty() || e.action.contains(action.as_str()));
                    if wanted {
                        rows.push(e);
                    }
                }
                Ok((rows, None))
            })
            .await
        };
        let (rows, next) = match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return error_page(op, &e.to_string()),
            Err(e) => return error_page(op, &e.to_string()),
        };
        let mut b = format!(
            "<form class=\"box\" method=\"get\" action=\"/events\" role=\"search\">\
             <label>Phone<input name=\"device\" value=\"{}\"></label>\
             <label>Actor contains<input name=\"actor\" value=\"{}\" placeholder=\"web:alice\"></label>\
             <label>Action contains<input name=\"action\" value=\"{}\" placeholder=\"device-set\"></label>\
             <button type=\"submit\">Filter</button></form>",
            esc(&device),
            esc(&actor),
            esc(&action)
        );
        if rows.is_empty() {
            b.push_str("<p class=\"note\">No event matches.</p>");
        } else {
            b.push_str(
                "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">#</th>\
                 <th scope=\"col\">Time (UTC)</th><th scope=\"col\">Actor</th>\
                 <th scope=\"col\">Phone</th><th scope=\"col\">Action</th>\
                 <th scope=\"col\">Result</th><th scope=\"col\">Details</th></tr></thead><tbody>",
            );
            for e in &rows {
                let details = if e.details.is_empty() {
                    String::new()
                } else {
                    serde_json::Value::Object(e.details.clone()).to_string()
                };
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td><code>{}</code></td></tr>",
                    e.id,
                    esc(&show_time(e.time)),
                    esc(&e.actor),
                    e.device.as_deref().map_or(String::new(), |d| format!(
                        "<a href=\"/phones/{}\">{}</a>",
                        url(d),
                        esc(d)
                    )),
                    esc(&e.action),
                    esc(&e.result),
                    esc(&details)
                );
            }
            b.push_str("</tbody></table></div>");
        }
        if let Some(next) = next {
            let _ = write!(
                b,
                "<nav class=\"pager\" aria-label=\"Pages\"><a href=\"/events?device={}&actor={}&action={}&before={next}\">Older events</a></nav>",
                url(&device),
                url(&actor),
                url(&action)
            );
        }
        html_response(StatusCode::OK, page("Audit trail", Some(&op.viewer()), &b))
    }
}

fn certificate(b: &mut String, label: &str, id: &str, c: &EnrolledCert, now: UnixTime) {
    let public_key = crate::ca::pem("PUBLIC KEY", &c.public_key);
    let _ = write!(
        b,
        "<h2>{label}</h2><dl id=\"{id}\">\
         <dt>Subject</dt><dd>{}</dd><dt>Issuer</dt><dd>{}</dd>\
         <dt>Serial</dt><dd><code>{}</code></dd>\
         <dt>Valid from</dt><dd>{}</dd><dt>Valid until</dt><dd>{} ({} days)</dd>\
         <dt>Key</dt><dd>{}</dd>\
         <dt>MD5</dt><dd><code class=\"md5\">{}</code></dd>\
         <dt>SHA-256</dt><dd><code>{}</code></dd>\
         <dt>Public key</dt><dd><details><summary>PEM</summary><pre>{}</pre></details></dd></dl>",
        esc(&c.subject),
        esc(&c.issuer),
        esc(&c.serial),
        esc(&show_time(c.not_before)),
        esc(&show_time(c.not_after)),
        days_until(c.not_after, now),
        esc(&c.key.to_string()),
        esc(&c.md5),
        esc(&c.sha256),
        esc(&public_key),
    );
}

/// At most [`OUTPUT_LINES`] lines: the first ones, and the last two (the summary).
fn shorten(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    if lines.len() <= OUTPUT_LINES {
        return output.trim_end().to_string();
    }
    let head = &lines[..OUTPUT_LINES - 2];
    let tail = &lines[lines.len() - 2..];
    format!(
        "{}\n… {} lines not shown …\n{}",
        head.join("\n"),
        lines.len() - head.len() - tail.len(),
        tail.join("\n")
    )
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn not_found(op: &Operator) -> Response<Body> {
    html_response(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            Some(&op.viewer()),
            "<p>There is no such page or phone.</p>",
        ),
    )
}

fn error_page(op: &Operator, message: &str) -> Response<Body> {
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            "Error",
            Some(&op.viewer()),
            &format!("<p class=\"note error\">{}</p>", esc(message)),
        ),
    )
}
