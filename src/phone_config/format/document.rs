//! The device document `SEP<MAC>.cnf.xml`, checked before capf signs, encrypts or
//! excerpts it (config-files.md §10: E1, E2, E4).
//!
//! Parsing is XML 1.0 well-formedness **without** namespace processing: CUCM writes
//! `<device xsi:type="axl:XIPPhone" …>` without declaring `xsi`, and that root must be
//! accepted as `device` with attributes. The document's bytes are never rewritten for
//! the full and encrypted files; the parsed tree only feeds the partial configuration.

use crate::phone_config::error::{Error, Result};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Deepest element nesting accepted. Phone configurations nest about eight levels; the
/// tree is dropped and rendered recursively, so without a bound a deeply nested file
/// overflows the stack.
pub const MAX_DEPTH: usize = 64;

/// A node of the parsed tree. Adjacent text, CDATA and references are merged into one
/// `Text`, unescaped and with line ends normalised, as an XML parser reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    Comment(String),
    /// A processing instruction: target and content as written.
    Pi(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The name as written, prefix included (no namespace processing).
    pub name: String,
    /// Attributes in document order, values normalised and unescaped.
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// A well-formed UTF-8 document whose root is `<device>`.
#[derive(Clone, Debug)]
pub struct DeviceDocument<'a> {
    bytes: &'a [u8],
    root: Element,
}

impl<'a> DeviceDocument<'a> {
    /// Checks `bytes` and parses it: a leading BOM is dropped, any declared encoding
    /// other than UTF-8 is refused, the document must be well-formed and its root must
    /// be exactly `device`. DTDs are refused: phone configs have none, and their
    /// entities could not be expanded consistently.
    pub fn parse(bytes: &'a [u8]) -> Result<DeviceDocument<'a>> {
        let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::Document(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        let root = parse_tree(text)?;
        if root.name != "device" {
            return Err(Error::Document(format!(
                "the root element is <{}>, not <device>",
                root.name
            )));
        }
        Ok(DeviceDocument { bytes, root })
    }

    /// The document exactly as it is served in full and encrypted: the input without
    /// its BOM.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn root(&self) -> &Element {
        &self.root
    }
}

fn xml_error(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> Error {
    Error::Document(format!(
        "not well-formed at byte {}: {e}",
        reader.error_position()
    ))
}

/// Builds the tree of the single root element, checking what quick-xml leaves to its
/// caller: one root, nothing but whitespace outside it, known entity references,
/// well-formed attributes and closed elements.
fn parse_tree(text: &str) -> Result<Element> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut first = true;
    loop {
        let event = reader.read_event().map_err(|e| xml_error(&reader, e))?;
        let at = reader.buffer_position();
        let outside = open.is_empty();
        match event {
            Event::Decl(decl) => {
                if !first {
                    return Err(Error::Document("misplaced XML declaration".into()));
                }
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| xml_error(&reader, e))?;
                    if !encoding.eq_ignore_ascii_case("UTF-8") {
                        return Err(Error::Document(format!(
                            "declared encoding {encoding} is not UTF-8"
                        )));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(Error::Document(
                    "document type declarations are not accepted".into(),
                ))
            }
            Event::Start(start) => {
                if outside && root.is_some() {
                    return Err(Error::Document(format!(
                        "a second root element at byte {at}"
                    )));
                }
                if open.len() >= MAX_DEPTH {
                    return Err(Error::Document(format!(
                        "elements nested deeper than {MAX_DEPTH} at byte {at}"
                    )));
                }
                open.push(element(&reader, &start)?);
            }
            Event::Empty(start) => {
                if outside && root.is_some() {
                    return Err(Error::Document(format!(
                        "a second root element at byte {at}"
                    )));
                }
                let done = element(&reader, &start)?;
                close(&mut open, &mut root, done);
            }
            Event::End(_) => {
                let done = open
                    .pop()
                    .ok_or_else(|| Error::Document(format!("unmatched end tag at byte {at}")))?;
                close(&mut open, &mut root, done);
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                if outside {
                    if !is_xml_space(&content) {
                        return Err(Error::Document(format!(
                            "text outside the root at byte {at}"
                        )));
                    }
                } else {
                    push_text(&mut open, &content);
                }
            }
            Event::CData(c) => {
                if outside {
                    return Err(Error::Document(format!(
                        "CDATA outside the root at byte {at}"
                    )));
                }
                push_text(&mut open, &c.xml10_content());
            }
            Event::GeneralRef(r) => {
                if outside {
                    return Err(Error::Document(format!(
                        "reference outside the root at byte {at}"
                    )));
                }
                let c = resolve(&r).ok_or_else(|| {
                    Error::Document(format!("unknown reference &{}; at byte {at}", &*r))
                })?;
                push_text(&mut open, c.encode_utf8(&mut [0; 4]));
            }
            Event::Comment(c) => {
                if let Some(parent) = open.last_mut() {
                    parent
                        .children
                        .push(Node::Comment(c.xml10_content().into_owned()));
                }
            }
            Event::PI(pi) => {
                if let Some(parent) = open.last_mut() {
                    parent.children.push(Node::Pi(pi.to_string()));
                }
            }
            Event::Eof => break,
        }
        first = false;
    }
    if let Some(unclosed) = open.last() {
        return Err(Error::Document(format!(
            "<{}> is never closed",
            unclosed.name
        )));
    }
    root.ok_or_else(|| Error::Document("no root element".into()))
}

fn element(reader: &Reader<&[u8]>, start: &BytesStart<'_>) -> Result<Element> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| xml_error(reader, e))?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| xml_error(reader, e))?;
        attributes.push((attribute.key.0.to_owned(), value.into_owned()));
    }
    Ok(Element {
        name: start.name().0.to_owned(),
        attributes,
        children: Vec::new(),
    })
}

fn close(open: &mut [Element], root: &mut Option<Element>, done: Element) {
    match open.last_mut() {
        Some(parent) => parent.children.push(Node::Element(done)),
        None => *root = Some(done),
    }
}

fn push_text(open: &mut [Element], text: &str) {
    if let Some(parent) = open.last_mut() {
        match parent.children.last_mut() {
            Some(Node::Text(previous)) => previous.push_str(text),
            _ => parent.children.push(Node::Text(text.to_owned())),
        }
    }
}

/// The five predefined entities and character references; nothing else is declared.
fn resolve(reference: &BytesRef<'_>) -> Option<char> {
    if reference.is_char_ref() {
        return reference.resolve_char_ref().ok().flatten();
    }
    match &**reference {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

/// XML's whitespace: space, tab, CR and LF (not Unicode spaces).
pub fn is_xml_space(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone_config::testpki::SEP_DOC;

    #[test]
    fn accepts_the_section_8_1_document() {
        let doc = DeviceDocument::parse(SEP_DOC.as_bytes()).unwrap();
        assert_eq!(doc.bytes(), SEP_DOC.as_bytes());
        assert_eq!(doc.root().name, "device");
    }

    #[test]
    fn accepts_a_cucm_root_with_an_undeclared_prefix() {
        let xml =
            "<device xsi:type=\"axl:XIPPhone\" ctiid=\"94\"><fullConfig>true</fullConfig></device>";
        let doc = DeviceDocument::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            doc.root().attributes,
            vec![
                ("xsi:type".to_owned(), "axl:XIPPhone".to_owned()),
                ("ctiid".to_owned(), "94".to_owned())
            ]
        );
    }

    #[test]
    fn strips_a_bom_and_refuses_other_encodings() {
        let with_bom = [BOM, SEP_DOC.as_bytes()].concat();
        assert_eq!(
            DeviceDocument::parse(&with_bom).unwrap().bytes(),
            SEP_DOC.as_bytes()
        );
        let latin = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><device/>";
        assert!(DeviceDocument::parse(latin.as_bytes()).is_err());
        assert!(DeviceDocument::parse(b"<device>\xE9</device>").is_err());
        let lower = "<?xml version=\"1.0\" encoding=\"utf-8\"?><device/>";
        assert!(DeviceDocument::parse(lower.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_documents_that_are_not_well_formed() {
        for bad in [
            "",
            "<device>",
            "<device></Device>",
            "<device><a></device>",
            "<device/><device/>",
            "<device/>trailing",
            "text<device/>",
            "<device a=\"1\" a=\"2\"/>",
            "<device a=1/>",
            "<device>&nbsp;</device>",
            "<device>a & b</device>",
            "<device><!-- a -- b --></device>",
            "<!DOCTYPE device [<!ENTITY x \"y\">]><device>&x;</device>",
            "</device>",
        ] {
            assert!(
                DeviceDocument::parse(bad.as_bytes()).is_err(),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn refuses_other_roots() {
        for root in ["<Default/>", "<Device/>", "<x:device/>", "<devices/>"] {
            let err = DeviceDocument::parse(root.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("root"), "{root}: {err}");
        }
    }

    #[test]
    fn merges_text_pieces_and_normalises_line_ends() {
        let xml = "<device><a>x &amp; <![CDATA[<y>]]>&#233;\r\nz</a></device>";
        let doc = DeviceDocument::parse(xml.as_bytes()).unwrap();
        let Node::Element(a) = &doc.root().children[0] else {
            panic!()
        };
        assert_eq!(a.children, vec![Node::Text("x & <y>é\nz".into())]);
    }
}
