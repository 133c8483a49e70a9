//! The partial configuration served in place of the full one while encryption is on
//! (config-files.md §5.2): just enough for the phone to upgrade its firmware, reach
//! CAPF, compare its certificate hash and learn that an encrypted file awaits.
//!
//! Output bytes are fixed so that golden files compare byte for byte: LF line ends, two
//! spaces per depth, text elements on one line, empty elements self-closing, and pure
//! ASCII (every other character becomes a decimal character reference).

use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::document::{
    self, is_xml_space, CharData, Element, Node, Tag, Tree, Visit,
};

/// The top-level elements copied verbatim from the full document.
const COPIED: [&str; 2] = ["ipAddressMode", "loadInformation"];

/// What capf itself writes into the partial. `capfAuthMode` and `capfList` are capf's
/// own facts and replace whatever the base document holds: a stale copy would send
/// phones to the wrong place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialFacts<'a> {
    /// `capfList/capf/processNodeName`: the published node name.
    pub node_name: &'a str,
    /// `capfList/capf/phonePort`.
    pub capf_port: u16,
    /// `capfAuthMode` (§5.1).
    pub capf_auth_mode: u8,
    /// Lowercase hex MD5 of the phone certificate, or `None` for an empty `certHash`.
    pub cert_hash: Option<&'a str>,
}

/// Renders the partial configuration.
///
/// Children of `<device>`, in order: `fullConfig` (false); then, in the base document's
/// order, every `ipAddressMode` and `loadInformation` (all occurrences, E14), with
/// capf's `capfAuthMode` and `capfList` at the place of the base's first
/// `capfAuthMode` and first `capfList` (each appended after the copies when the base
/// has none); then `certHash` and `encrConfig` (true).
///
/// The base document is checked as
/// [`DeviceDocument::parse`](document::DeviceDocument::parse) checks it, in one pass
/// that builds only the elements copied (a real configuration is tens of KiB, of which
/// the partial keeps a few lines).
pub fn build(document: &[u8], facts: &PartialFacts<'_>) -> Result<Vec<u8>> {
    let (_, text) = document::document_text(document)?;
    let mut excerpt = Excerpt::default();
    document::walk(text, &mut excerpt)?;
    render(&excerpt.top, facts)
}

/// The partial from what [`Excerpt`] kept of a checked document's top level.
pub(crate) fn render(top: &[Element], facts: &PartialFacts<'_>) -> Result<Vec<u8>> {
    for name in COPIED {
        if top.iter().filter(|e| e.name == name).count() > 1 {
            tracing::warn!(
                element = name,
                "kept element appears more than once; copying every occurrence"
            );
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device>\n");
    line(&mut out, 1, "<fullConfig>false</fullConfig>");
    let (mut auth_written, mut list_written) = (false, false);
    for element in top {
        match element.name.as_str() {
            name if COPIED.contains(&name) => block(&mut out, 1, element)?,
            "capfAuthMode" if !auth_written => {
                auth_mode(&mut out, facts);
                auth_written = true;
            }
            "capfList" if !list_written => {
                capf_list(&mut out, facts);
                list_written = true;
            }
            _ => {}
        }
    }
    if !auth_written {
        auth_mode(&mut out, facts);
    }
    if !list_written {
        capf_list(&mut out, facts);
    }
    match facts.cert_hash {
        Some(hash) => line(
            &mut out,
            1,
            &format!("<certHash>{}</certHash>", escape_text(hash)),
        ),
        None => line(&mut out, 1, "<certHash></certHash>"),
    }
    line(&mut out, 1, "<encrConfig>true</encrConfig>");
    out.push_str("</device>\n");
    Ok(out.into_bytes())
}

/// What the partial needs of the base document's top level, in its order: the copied
/// elements whole, and where `capfAuthMode` and `capfList` were (their content is
/// capf's own).
#[derive(Default)]
pub(crate) struct Excerpt {
    /// Of the element being read: 1 for `<device>`, 2 for a child of it.
    depth: usize,
    /// The copied element being built, if the walk is inside one.
    copying: Tree,
    top: Vec<Element>,
}

impl Excerpt {
    /// What the walk kept (complete once the walk returned `Ok`).
    pub(crate) fn into_top(self) -> Vec<Element> {
        self.top
    }

    fn inside_copied(&self) -> bool {
        !self.copying.open.is_empty()
    }

    /// Takes the copied element once it is whole.
    fn take_copied(&mut self) {
        if let Some(done) = self.copying.root.take() {
            self.top.push(done);
        }
    }
}

impl<'t> Visit<'t> for Excerpt {
    fn open(&mut self, tag: Tag<'t, '_>) {
        self.depth += 1;
        let empty = tag.empty;
        if self.inside_copied() || (self.depth == 2 && COPIED.contains(&tag.name)) {
            self.copying.open(tag);
            self.take_copied();
        } else if self.depth == 2 && matches!(tag.name, "capfAuthMode" | "capfList") {
            self.top.push(Element {
                name: tag.name.to_owned(),
                attributes: Vec::new(),
                children: Vec::new(),
            });
        }
        if empty {
            self.depth -= 1;
        }
    }

    fn close(&mut self, at: usize) {
        if self.inside_copied() {
            self.copying.close(at);
            self.take_copied();
        }
        self.depth -= 1;
    }

    fn text(&mut self, text: CharData<'_>) {
        if self.inside_copied() {
            self.copying.text(text);
        }
    }

    fn comment(&mut self, text: &str) {
        if self.inside_copied() {
            self.copying.comment(text);
        }
    }

    fn pi(&mut self, pi: &str) {
        if self.inside_copied() {
            self.copying.pi(pi);
        }
    }
}

fn auth_mode(out: &mut String, facts: &PartialFacts<'_>) {
    line(
        out,
        1,
        &format!("<capfAuthMode>{}</capfAuthMode>", facts.capf_auth_mode),
    );
}

fn capf_list(out: &mut String, facts: &PartialFacts<'_>) {
    line(out, 1, "<capfList>");
    line(out, 2, "<capf>");
    line(
        out,
        3,
        &format!("<phonePort>{}</phonePort>", facts.capf_port),
    );
    line(
        out,
        3,
        &format!(
            "<processNodeName>{}</processNodeName>",
            escape_text(facts.node_name)
        ),
    );
    line(out, 2, "</capf>");
    line(out, 1, "</capfList>");
}

fn line(out: &mut String, depth: usize, content: &str) {
    for _ in 0..depth {
        out.push_str("  ");
    }
    out.push_str(content);
    out.push('\n');
}

/// Writes `element` at `depth` with the §5.2 layout rules.
fn block(out: &mut String, depth: usize, element: &Element) -> Result<()> {
    let has_markup = element.children.iter().any(|n| !matches!(n, Node::Text(_)));
    let has_text = element
        .children
        .iter()
        .any(|n| matches!(n, Node::Text(t) if !is_xml_space(t)));
    if !has_markup || has_text {
        // Empty, text only, or mixed content: one line, exactly as parsed.
        let mut one = String::new();
        inline(&mut one, element)?;
        line(out, depth, &one);
        return Ok(());
    }
    line(out, depth, &open_tag(element, false)?);
    for child in &element.children {
        match child {
            Node::Element(e) => block(out, depth + 1, e)?,
            Node::Comment(c) => line(out, depth + 1, &format!("<!--{}-->", ascii(c))),
            Node::Pi(p) => line(out, depth + 1, &format!("<?{}?>", ascii(p))),
            // Whitespace between markup is formatting, not content.
            Node::Text(_) => {}
        }
    }
    line(out, depth, &format!("</{}>", element.name));
    Ok(())
}

/// Writes `element` and everything in it without adding any whitespace.
fn inline(out: &mut String, element: &Element) -> Result<()> {
    if element.children.is_empty() {
        out.push_str(&open_tag(element, true)?);
        return Ok(());
    }
    out.push_str(&open_tag(element, false)?);
    for child in &element.children {
        match child {
            Node::Element(e) => inline(out, e)?,
            Node::Text(t) => out.push_str(&escape_text(t)),
            Node::Comment(c) => out.push_str(&format!("<!--{}-->", ascii(c))),
            Node::Pi(p) => out.push_str(&format!("<?{}?>", ascii(p))),
        }
    }
    out.push_str(&format!("</{}>", element.name));
    Ok(())
}

/// A start tag. Names cannot be written as character references, so a non-ASCII
/// element or attribute name would break the pure-ASCII body and is refused.
fn open_tag(element: &Element, self_closing: bool) -> Result<String> {
    let names = std::iter::once(&element.name).chain(element.attributes.iter().map(|(n, _)| n));
    if let Some(name) = names.into_iter().find(|n| !n.is_ascii()) {
        return Err(Error::Document(format!(
            "name {name:?} in a kept element is not ASCII"
        )));
    }
    let mut tag = format!("<{}", element.name);
    for (name, value) in &element.attributes {
        tag.push_str(&format!(" {name}=\"{}\"", escape_attribute(value)));
    }
    tag.push_str(if self_closing { "/>" } else { ">" });
    Ok(tag)
}

fn escape_text(text: &str) -> String {
    escape(text, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\r' => Some("&#13;"),
        _ => None,
    })
}

fn escape_attribute(value: &str) -> String {
    escape(value, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\t' => Some("&#9;"),
        '\n' => Some("&#10;"),
        '\r' => Some("&#13;"),
        _ => None,
    })
}

/// Comments and processing instructions are written as parsed, except that
/// non-ASCII characters become character references so the body stays pure ASCII.
fn ascii(text: &str) -> String {
    escape(text, |_| None)
}

fn escape(text: &str, special: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match special(c) {
            Some(entity) => out.push_str(entity),
            None if c.is_ascii() => out.push(c),
            None => out.push_str(&format!("&#{};", u32::from(c))),
        }
    }
    out
}

#[cfg(test)]
mod tests;
