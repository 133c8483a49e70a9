//! HTML for the web admin: escaping and the page frame. Every value that does not come
//! from this file goes through [`esc`] (text and attributes) or [`url`] (query
//! values); the pages work without JavaScript and on a phone-sized screen.

use std::fmt::Write;

/// `s` escaped for HTML text and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query value or a path segment.
pub fn url(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const CSS: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9;line-height:1.45}\
header{background:#12355b;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center}\
header a{color:#fff;text-decoration:none;padding:.25rem 0}header a:hover,header a:focus{text-decoration:underline}\
header .who{margin-left:auto;font-size:.9rem}header form{display:inline}\
header button{background:none;border:1px solid #fff;color:#fff;border-radius:4px;padding:.15rem .5rem;cursor:pointer}\
main{max-width:72rem;margin:0 auto;padding:1rem}\
h1{font-size:1.4rem;margin:.25rem 0 1rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.75rem}\
.card{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.75rem}\
.card b{display:block;font-size:1.5rem}\
.scroll{overflow-x:auto;background:#fff;border:1px solid #d8dde3;border-radius:6px}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e6e9ed;vertical-align:top}\
th{background:#eef1f4;font-weight:600}\
dl{display:grid;grid-template-columns:minmax(8rem,max-content) 1fr;gap:.2rem 1rem;background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.75rem;margin:0}\
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}\
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}\
pre{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.75rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}\
form.box{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.75rem;display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end}\
label{display:flex;flex-direction:column;font-size:.9rem;gap:.2rem}\
label.check{flex-direction:row;align-items:center}\
input,select,button{font:inherit;padding:.35rem .5rem;border:1px solid #98a2ad;border-radius:4px;background:#fff;min-height:2.2rem}\
button{background:#12355b;color:#fff;border-color:#12355b;cursor:pointer}button.secondary{background:#fff;color:#12355b}\
.ok{border-left:4px solid #2e7d32}.warning{border-left:4px solid #ed8b00}.critical,.error{border-left:4px solid #c62828}\
.note{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.5rem .75rem;margin:.5rem 0}\
.pager{display:flex;gap:1rem;margin:.75rem 0}\
@media (max-width:40rem){main{padding:.5rem}dl{grid-template-columns:1fr}dt{margin-top:.4rem}th,td{padding:.3rem .4rem}}";

/// Who is logged in, for the page frame.
pub struct Viewer<'a> {
    pub account: &'a str,
    pub csrf: &'a str,
}

/// A whole page: `body` (already HTML) in the frame, with the navigation when someone
/// is logged in.
pub fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · capf</title><style>{CSS}</style></head><body>",
        esc(title)
    );
    match viewer {
        Some(v) => {
            let _ = write!(
                out,
                "<header><nav aria-label=\"Main\" style=\"display:flex;flex-wrap:wrap;gap:1rem\">\
                 <a href=\"/\"><strong>capf</strong></a><a href=\"/\">Dashboard</a>\
                 <a href=\"/phones\">Phones</a><a href=\"/import\">Import</a>\
                 <a href=\"/events\">Audit trail</a></nav>\
                 <span class=\"who\">{} <form method=\"post\" action=\"/logout\">{}\
                 <button type=\"submit\">Log out</button></form></span></header>",
                esc(v.account),
                csrf_field(v.csrf)
            );
        }
        None => out.push_str("<header><strong>capf</strong></header>"),
    }
    let _ = write!(
        out,
        "<main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A `<select>` with a label; `options` are (value, text).
pub fn select(name: &str, label: &str, options: &[(&str, &str)], selected: &str) -> String {
    let mut out = format!("<label>{}<select name=\"{}\">", esc(label), esc(name));
    for (value, text) in options {
        let sel = if *value == selected { " selected" } else { "" };
        let _ = write!(
            out,
            "<option value=\"{}\"{sel}>{}</option>",
            esc(value),
            esc(text)
        );
    }
    out.push_str("</select></label>");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::esc("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(super::url("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
