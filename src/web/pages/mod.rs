//! The web admin's pages. Reads go to the store directly (through its readers: range
//! scans that stop after a page); every change is a `capf` command line run by
//! [`Web::run_command`], so the page and the CLI change the store through the same
//! code and leave the same audit events (actor `web:<account>`).

use super::html::{csrf_field, esc, page, select, url};
use super::session::{self, PendingImport};
use super::{days_until, html_response, text, Form, Operator, Req, Web};
use crate::model::display::{normalise_name, status_text, time as show_time};
use crate::model::{now, DeviceRecord, EnrolledCert, UnixTime};
use hyper::{Response, StatusCode};
use std::fmt::Write;
use std::sync::Arc;

mod events;
mod import;
mod phones;

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
