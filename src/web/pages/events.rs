//! The audit trail, newest first, filtered by phone, actor and action.

use super::*;

impl Web {
    pub(super) async fn events(self: &Arc<Self>, r: &Req, op: &Operator) -> Response<Body> {
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
