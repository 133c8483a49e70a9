//! The partial configuration served in place of the full one while encryption is on
//! (config-files.md §5.2): just enough for the phone to upgrade its firmware, reach
//! CAPF, compare its certificate hash and learn that an encrypted file awaits.
//!
//! Output bytes are fixed so that golden files compare byte for byte: LF line ends, two
//! spaces per depth, text elements on one line, empty elements self-closing, and pure
//! ASCII (every other character becomes a decimal character reference).

use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::document::{is_xml_space, DeviceDocument, Element, Node};

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
pub fn build(document: &DeviceDocument<'_>, facts: &PartialFacts<'_>) -> Result<Vec<u8>> {
    let top: Vec<&Element> = document
        .root()
        .children
        .iter()
        .filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
        .collect();
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
mod tests {
    use super::*;
    use crate::phone_config::testpki::SEP_DOC;

    const HASH: &str = "5f1c0a7e93b24d68a0c4e2f17b39d851";

    fn facts(hash: Option<&str>) -> PartialFacts<'_> {
        PartialFacts {
            node_name: "capf.example.net",
            capf_port: 3804,
            capf_auth_mode: 0,
            cert_hash: hash,
        }
    }

    fn partial(xml: &str, facts: &PartialFacts<'_>) -> String {
        let doc = DeviceDocument::parse(xml.as_bytes()).unwrap();
        String::from_utf8(build(&doc, facts).unwrap()).unwrap()
    }

    /// The body between the fixed first lines and the fixed last lines.
    fn kept(xml: &str) -> String {
        let out = partial(&format!("<device>{xml}</device>"), &facts(None));
        let start = out.find("  <fullConfig>false</fullConfig>\n").unwrap() + 33;
        let end = out.find("  <capfAuthMode>").unwrap();
        out[start..end].to_owned()
    }

    #[test]
    fn section_8_1_input_gives_exactly_the_section_8_4_body() {
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<device>
  <fullConfig>false</fullConfig>
  <ipAddressMode>0</ipAddressMode>
  <loadInformation>SIP75.9-4-2SR3-1S</loadInformation>
  <capfAuthMode>0</capfAuthMode>
  <capfList>
    <capf>
      <phonePort>3804</phonePort>
      <processNodeName>capf.example.net</processNodeName>
    </capf>
  </capfList>
  <certHash>5f1c0a7e93b24d68a0c4e2f17b39d851</certHash>
  <encrConfig>true</encrConfig>
</device>
"#;
        let out = partial(SEP_DOC, &facts(Some(HASH)));
        assert_eq!(out, expected);
        assert_eq!(out.len(), 444);
    }

    #[test]
    fn nothing_else_of_the_full_document_leaks() {
        let out = partial(SEP_DOC, &facts(None));
        for secret in [
            "sipProfile",
            "authPassword",
            "s3cret",
            "1001",
            "deviceProtocol",
            "SIP<",
        ] {
            assert!(!out.contains(secret), "{secret} leaked");
        }
        let doc = DeviceDocument::parse(out.as_bytes()).unwrap();
        let names: Vec<&str> = doc
            .root()
            .children
            .iter()
            .filter_map(|n| match n {
                Node::Element(e) => Some(e.name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "fullConfig",
                "ipAddressMode",
                "loadInformation",
                "capfAuthMode",
                "capfList",
                "certHash",
                "encrConfig"
            ]
        );
        assert!(out.contains("  <certHash></certHash>\n"));
    }

    #[test]
    fn capf_writes_its_own_facts_in_place_of_the_base_ones() {
        let xml = "<device><capfList><capf><phonePort>1</phonePort><processNodeName>old</processNodeName></capf></capfList>\
                   <loadInformation>L</loadInformation><capfAuthMode>2</capfAuthMode><capfList/></device>";
        let f = PartialFacts {
            node_name: "new & <b>",
            capf_port: 4000,
            capf_auth_mode: 2,
            cert_hash: None,
        };
        let out = partial(xml, &f);
        let expected = "  <fullConfig>false</fullConfig>\n  <capfList>\n    <capf>\n      <phonePort>4000</phonePort>\n      \
                        <processNodeName>new &amp; &lt;b&gt;</processNodeName>\n    </capf>\n  </capfList>\n  \
                        <loadInformation>L</loadInformation>\n  <capfAuthMode>2</capfAuthMode>\n  <certHash></certHash>\n";
        assert!(out.contains(expected), "{out}");
        assert!(!out.contains("old"));
        assert_eq!(out.matches("<capfList>").count(), 1);
    }

    #[test]
    fn missing_capf_elements_are_synthesized_after_the_copies() {
        let out = partial(
            "<device><loadInformation>L</loadInformation></device>",
            &facts(None),
        );
        let load = out.find("<loadInformation>").unwrap();
        let auth = out.find("<capfAuthMode>0</capfAuthMode>").unwrap();
        let list = out
            .find("<processNodeName>capf.example.net</processNodeName>")
            .unwrap();
        assert!(load < auth && auth < list);
    }

    #[test]
    fn duplicates_are_all_copied_in_order() {
        assert_eq!(
            kept("<loadInformation>a</loadInformation><x/><ipAddressMode>0</ipAddressMode><loadInformation>b</loadInformation>"),
            "  <loadInformation>a</loadInformation>\n  <ipAddressMode>0</ipAddressMode>\n  <loadInformation>b</loadInformation>\n"
        );
    }

    #[test]
    fn empty_elements_self_close_and_whitespace_only_text_is_kept() {
        assert_eq!(
            kept("<ipAddressMode></ipAddressMode>"),
            "  <ipAddressMode/>\n"
        );
        assert_eq!(kept("<ipAddressMode/>"), "  <ipAddressMode/>\n");
        assert_eq!(
            kept("<ipAddressMode> </ipAddressMode>"),
            "  <ipAddressMode> </ipAddressMode>\n"
        );
    }

    #[test]
    fn text_and_attributes_are_escaped_as_specified() {
        assert_eq!(
            kept("<loadInformation model=\"a&quot;b&#9;c'd\tz&#10;\">x &amp; 'é' &lt;&#13;<![CDATA[>&]]>\r\ny\"</loadInformation>"),
            "  <loadInformation model=\"a&quot;b&#9;c'd z&#10;\">x &amp; '&#233;' &lt;&#13;&gt;&amp;\ny\"</loadInformation>\n"
        );
    }

    #[test]
    fn nested_elements_are_indented_with_comments_on_their_own_lines() {
        assert_eq!(
            kept("<!-- top --><loadInformation>\r\n\t<!-- c é -->\n <a k=\"v\"><b>1</b><c/></a><?pi x?></loadInformation>"),
            "  <loadInformation>\n    <!-- c &#233; -->\n    <a k=\"v\">\n      <b>1</b>\n      <c/>\n    </a>\n    <?pi x?>\n  </loadInformation>\n"
        );
    }

    #[test]
    fn mixed_content_is_copied_without_reindenting() {
        assert_eq!(
            kept("<loadInformation>a <b> c </b>\n d<!--x--></loadInformation>"),
            "  <loadInformation>a <b> c </b>\n d<!--x--></loadInformation>\n"
        );
    }

    #[test]
    fn the_body_is_pure_ascii() {
        let xml = "<device><loadInformation>日本</loadInformation></device>";
        let f = PartialFacts {
            node_name: "nœud",
            ..facts(None)
        };
        let out = partial(xml, &f);
        assert!(out.is_ascii());
        assert!(out.contains("<loadInformation>&#26085;&#26412;</loadInformation>"));
        assert!(out.contains("n&#339;ud"));
    }

    #[test]
    fn non_ascii_names_in_kept_elements_are_refused() {
        let doc = DeviceDocument::parse(
            "<device><loadInformation><é/></loadInformation></device>".as_bytes(),
        )
        .unwrap();
        assert!(build(&doc, &facts(None)).is_err());
    }
}
