//! Find and List Phones (a range scan from the name prefix that stops after a page)
//! and the phone page with its certificates and the forms that change it.

use super::*;

impl Web {
    pub(super) async fn phones(self: &Arc<Self>, r: &Req, op: &Operator) -> Response<Body> {
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
    pub(super) fn find_phones(
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
