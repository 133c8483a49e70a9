//! The device document `SEP<MAC>.cnf.xml`, checked before capf signs, encrypts or
//! excerpts it (config-files.md §10: E1, E2, E4).
//!
//! Parsing is XML 1.0 well-formedness **without** namespace processing: CUCM writes
//! `<device xsi:type="axl:XIPPhone" …>` without declaring `xsi`, and that root must be
//! accepted as `device` with attributes. The document's bytes are never rewritten for
//! the full and encrypted files (only capf's own elements are spliced in); the
//! partial copies a few elements of it. One checked pass (`walk`) serves each.

use crate::phone_config::error::{Error, Result};
use quick_xml::events::{BytesCData, BytesRef, BytesStart, BytesText, Event};
use quick_xml::{Reader, XmlVersion};
use std::borrow::Cow;

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
        let (bytes, text) = document_text(bytes)?;
        let mut tree = Tree::default();
        walk(text, &mut tree)?;
        let root = tree
            .root
            .ok_or_else(|| Error::Document("no root element".into()))?;
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

/// The document without its BOM, as bytes and as text; refused when not UTF-8.
pub(crate) fn document_text(bytes: &[u8]) -> Result<(&[u8], &str)> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::Document(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    Ok((bytes, text))
}

/// What one pass over a document does with what [`walk`] has read and checked. Each
/// build makes one pass, keeping only what it needs: the offsets of capf's elements
/// for the full and encrypted files ([`super::capf_section`]), the copied elements
/// for the partial ([`super::partial`]); the whole tree ([`DeviceDocument::parse`]) is
/// for `capf doctor` and for checking a decrypted file. All get every check from the
/// one walk. (With real, tens-of-KiB configurations, building the whole tree on every
/// build cost more than the rest of a build but its signature.)
pub(crate) trait Visit<'t> {
    /// A start tag, or an empty-element tag.
    fn open(&mut self, tag: Tag<'t, '_>);

    /// The end tag of the innermost open element, which starts at `at`.
    fn close(&mut self, at: usize);

    /// Character data inside the root, as read: text (its line ends still to be
    /// normalised), CDATA, or a resolved reference. Only the tree needs it decoded.
    fn text(&mut self, _text: CharData<'_>) {}

    fn comment(&mut self, _text: &str) {}

    /// A processing instruction: target and content as written.
    fn pi(&mut self, _pi: &str) {}
}

/// Two passes in one walk: each visitor is told everything, `.0` first.
impl<'t, A: Visit<'t>, B: Visit<'t>> Visit<'t> for (A, B) {
    fn open(&mut self, tag: Tag<'t, '_>) {
        self.0.open(tag.clone());
        self.1.open(tag);
    }

    fn close(&mut self, at: usize) {
        self.0.close(at);
        self.1.close(at);
    }

    fn text(&mut self, text: CharData<'_>) {
        self.0.text(text);
        self.1.text(text);
    }

    fn comment(&mut self, text: &str) {
        self.0.comment(text);
        self.1.comment(text);
    }

    fn pi(&mut self, pi: &str) {
        self.0.pi(pi);
        self.1.pi(pi);
    }
}

/// A start or empty-element tag, as [`walk`] hands it to [`Visit::open`], checked.
#[derive(Clone)]
pub(crate) struct Tag<'t, 'a> {
    /// The name, a piece of the document's text.
    pub name: &'t str,
    /// As written, values normalised.
    pub attributes: Vec<(&'a str, Cow<'a, str>)>,
    /// Where the tag is in the text: `span.0..span.1`.
    pub span: (usize, usize),
    /// `<x/>`: no [`Visit::close`] follows.
    pub empty: bool,
}

/// Character data as [`walk`] hands it to [`Visit::text`].
#[derive(Clone, Copy)]
pub(crate) enum CharData<'e> {
    Text(&'e BytesText<'e>),
    CData(&'e BytesCData<'e>),
    Reference(char),
}

/// Reads the whole of `text`, checking what quick-xml leaves to its caller: no DTD, a
/// UTF-8 declaration if any, one root named `device`, nothing but whitespace outside
/// it, known entity references, well-formed attributes, closed elements, and at most
/// [`MAX_DEPTH`] levels; and tells `visit` what it read.
pub(crate) fn walk<'t>(text: &'t str, visit: &mut impl Visit<'t>) -> Result<()> {
    // XML 1.0 allows no control character but tab and the line ends, nor U+FFFE and
    // U+FFFF, written or referenced; quick-xml does not look, and a phone's parser
    // may refuse the file.
    if let Some((at, c)) = forbidden_character(text) {
        return Err(Error::Document(format!(
            "character U+{:04X} at byte {at}, which XML does not allow",
            u32::from(c)
        )));
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;
    let mut depth = 0usize;
    let mut rooted = false;
    let mut first = true;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| xml_error(&reader, e))?;
        let at = reader.buffer_position() as usize;
        let outside = depth == 0;
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
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                if outside {
                    if rooted {
                        return Err(Error::Document(format!(
                            "a second root element at byte {at}"
                        )));
                    }
                    if start.name().0 != "device" {
                        return Err(Error::Document(format!(
                            "the root element is <{}>, not <device>",
                            start.name().0
                        )));
                    }
                    rooted = true;
                }
                if !empty && depth >= MAX_DEPTH {
                    return Err(Error::Document(format!(
                        "elements nested deeper than {MAX_DEPTH} at byte {at}"
                    )));
                }
                // The name as a piece of the text, so a visitor may keep it: the tag
                // starts where the last event ended, with its `<`.
                let name = &text[before + 1..before + 1 + start.name().0.len()];
                visit.open(Tag {
                    name,
                    attributes: attributes(&reader, start)?,
                    span: (before, at),
                    empty,
                });
                if !empty {
                    depth += 1;
                }
            }
            Event::End(_) => {
                if outside {
                    return Err(Error::Document(format!("unmatched end tag at byte {at}")));
                }
                depth -= 1;
                visit.close(before);
            }
            Event::Text(t) => {
                if outside {
                    if !is_xml_space(&t.xml10_content()) {
                        return Err(Error::Document(format!(
                            "text outside the root at byte {at}"
                        )));
                    }
                } else {
                    visit.text(CharData::Text(&t));
                }
            }
            Event::CData(c) => {
                if outside {
                    return Err(Error::Document(format!(
                        "CDATA outside the root at byte {at}"
                    )));
                }
                visit.text(CharData::CData(&c));
            }
            Event::GeneralRef(r) => {
                if outside {
                    return Err(Error::Document(format!(
                        "reference outside the root at byte {at}"
                    )));
                }
                let c = resolve(&r).filter(|&c| is_xml_char(c)).ok_or_else(|| {
                    Error::Document(format!("unknown reference &{}; at byte {at}", &*r))
                })?;
                visit.text(CharData::Reference(c));
            }
            Event::Comment(c) => {
                if !outside {
                    visit.comment(&c.xml10_content());
                }
            }
            Event::PI(pi) => {
                if !outside {
                    visit.pi(&pi);
                }
            }
            Event::Eof => break,
        }
        first = false;
    }
    if depth > 0 {
        return Err(Error::Document(format!(
            "{depth} element(s) never closed at the end of the document"
        )));
    }
    if !rooted {
        return Err(Error::Document("no root element".into()));
    }
    Ok(())
}

/// The attributes of a tag, each checked, values normalised.
fn attributes<'s>(
    reader: &Reader<&[u8]>,
    start: &'s BytesStart<'_>,
) -> Result<Vec<(&'s str, Cow<'s, str>)>> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| xml_error(reader, e))?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| xml_error(reader, e))?;
        // Written characters were checked before the walk; a reference may still
        // have made one XML does not allow.
        if matches!(value, Cow::Owned(_)) && !value.chars().all(is_xml_char) {
            return Err(Error::Document(format!(
                "attribute {} refers to a character XML does not allow",
                attribute.key.0
            )));
        }
        attributes.push((attribute.key.0, value));
    }
    Ok(attributes)
}

/// The tree of [`DeviceDocument`] (or of one element of it: the partial builds only
/// what it copies): the elements open, innermost last, and the outermost element
/// once it is closed.
#[derive(Default)]
pub(crate) struct Tree {
    pub(crate) open: Vec<Element>,
    pub(crate) root: Option<Element>,
}

impl Tree {
    fn add(&mut self, node: Node) {
        match (self.open.last_mut(), node) {
            (Some(parent), node) => parent.children.push(node),
            (None, Node::Element(root)) => self.root = Some(root),
            (None, _) => {}
        }
    }
}

impl<'t> Visit<'t> for Tree {
    fn open(&mut self, tag: Tag<'t, '_>) {
        let element = Element {
            name: tag.name.to_owned(),
            attributes: tag
                .attributes
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.into_owned()))
                .collect(),
            children: Vec::new(),
        };
        if tag.empty {
            self.add(Node::Element(element));
        } else {
            self.open.push(element);
        }
    }

    fn close(&mut self, _: usize) {
        if let Some(done) = self.open.pop() {
            self.add(Node::Element(done));
        }
    }

    fn text(&mut self, text: CharData<'_>) {
        let mut buffer = [0; 4];
        let text = match &text {
            CharData::Text(t) => t.xml10_content(),
            CharData::CData(c) => c.xml10_content(),
            CharData::Reference(c) => Cow::Borrowed(&*c.encode_utf8(&mut buffer)),
        };
        if let Some(parent) = self.open.last_mut() {
            match parent.children.last_mut() {
                Some(Node::Text(previous)) => previous.push_str(&text),
                _ => parent.children.push(Node::Text(text.into_owned())),
            }
        }
    }

    fn comment(&mut self, text: &str) {
        self.add(Node::Comment(text.to_owned()));
    }

    fn pi(&mut self, pi: &str) {
        self.add(Node::Pi(pi.to_owned()));
    }
}

fn xml_error(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> Error {
    Error::Document(format!(
        "not well-formed at byte {}: {e}",
        reader.error_position()
    ))
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
    text.bytes().all(is_xml_space_byte)
}

fn is_xml_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The first character of `text` that XML 1.0 does not allow. Every byte is looked at
/// without branching first (the compiler vectorises it: a document is tens of KiB,
/// read on every build); only a text with a suspect byte (a control character, or
/// 0xEF, which starts U+F000 to U+FFFF) is decoded.
fn forbidden_character(text: &str) -> Option<(usize, char)> {
    let suspect = text.bytes().fold(false, |any, b| {
        any | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')) | (b == 0xEF)
    });
    if !suspect {
        return None;
    }
    text.char_indices().find(|&(_, c)| !is_xml_char(c))
}

/// XML 1.0's `Char`: what a document may contain, written or as a reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Documents no pass may accept; [`super::super::capf_section`]'s tests hold the
    /// splice to them too.
    pub(crate) const NOT_WELL_FORMED: &[&str] = &[
        "",
        "<device>",
        "<device></Device>",
        "<device><a></device>",
        "<device><a>",
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
        "<device/></device>",
        "<device/><?pi?><!-- c --> &amp;",
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><device/>",
        "<device>\u{1}</device>",
        "<device a=\"\u{1b}\"/>",
        "<device>&#1;</device>",
        "<device>&#xFFFE;</device>",
        "<device a=\"&#2;\"/>",
        "<device>\u{FFFF}</device>",
        "<Default/>",
        "<x:device/>",
    ];

    #[test]
    fn refuses_documents_that_are_not_well_formed() {
        for bad in NOT_WELL_FORMED {
            assert!(
                DeviceDocument::parse(bad.as_bytes()).is_err(),
                "accepted {bad:?}"
            );
        }
        let deep = format!(
            "<device>{}{}</device>",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert!(DeviceDocument::parse(deep.as_bytes()).is_err());
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
