//! capf's own facts in the full configuration: `capfAuthMode` and
//! `capfList/capf/{processNodeName,phonePort}` (issue #19 point 1).
//!
//! A base document exported from CUCM names the old publisher and its port and says
//! `capfAuthMode` 0, so a phone served it verbatim would never come to capf. CUCM writes
//! these elements itself on every build; so does capf, in the full, signed and encrypted
//! files (the partial writes its own, see [`super::partial`]).
//!
//! The edit is a splice, not a re-rendering: every byte of the base document outside
//! the three elements' text stays as it was, an element that already says the right
//! thing is not touched (so a document that is already right comes back unchanged),
//! and a missing element is added where CUCM puts it. Only the first `capfList` and its
//! first `capf` are capf's: further entries (a second CAPF node) are left alone.

use super::document::{self, Tag, Visit};
use crate::phone_config::error::{Error, Result};
use quick_xml::escape::{escape, unescape};

/// What capf writes, for one device at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapfFacts<'a> {
    /// `capfList/capf/processNodeName`: the node name phones connect to.
    pub node_name: &'a str,
    /// `capfList/capf/phonePort`.
    pub capf_port: u16,
    /// `capfAuthMode` (config-files.md §5.1): nonzero while an operation is pending.
    pub capf_auth_mode: u8,
}

/// Where an element was found in the document, in byte offsets.
#[derive(Clone, Copy, Debug, Default)]
struct Found {
    /// The start tag (or the whole empty-element tag).
    tag_start: usize,
    tag_end: usize,
    /// `<x/>`: nothing inside, no end tag.
    empty: bool,
    /// The content between the start tag and the end tag.
    content: Option<(usize, usize)>,
    /// Where the end tag starts (an insertion point for missing children).
    close: usize,
}

/// Where the elements the splice looks at are, by their path below `<device>`: all
/// the splice needs of a document's structure, so a document surveyed once can be
/// spliced again without another pass ([`super::checked`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Landmarks {
    device_close: Option<usize>,
    auth_mode: Option<Found>,
    list: Option<Found>,
    capf: Option<Found>,
    node_name: Option<Found>,
    port: Option<Found>,
}

impl Landmarks {
    fn slot(&mut self, path: &[&str]) -> Option<&mut Option<Found>> {
        match path {
            ["device", "capfAuthMode"] => Some(&mut self.auth_mode),
            ["device", "capfList"] => Some(&mut self.list),
            // Only inside the first capfList (its close is not known until it ends).
            ["device", "capfList", "capf"] if self.list.is_some_and(|l| l.close == 0) => {
                Some(&mut self.capf)
            }
            ["device", "capfList", "capf", "processNodeName"] if self.in_first_capf() => {
                Some(&mut self.node_name)
            }
            ["device", "capfList", "capf", "phonePort"] if self.in_first_capf() => {
                Some(&mut self.port)
            }
            _ => None,
        }
    }

    /// Whether every offset is a place in `text` where it can be cut.
    fn fit(&self, text: &str) -> bool {
        let found = [
            self.auth_mode,
            self.list,
            self.capf,
            self.node_name,
            self.port,
        ];
        let offsets = found.iter().flatten().flat_map(|f| {
            let (start, end) = f.content.unwrap_or((f.tag_end, f.tag_end));
            [f.tag_start, f.tag_end, start, end, f.close]
        });
        self.device_close
            .into_iter()
            .chain(offsets)
            .all(|at| text.is_char_boundary(at))
    }

    fn in_first_capf(&self) -> bool {
        self.capf.is_some_and(|c| !c.empty && c.close == 0)
    }
}

/// Finds the landmarks while [`document::walk`] checks the document.
#[derive(Default)]
pub(crate) struct Survey<'t> {
    /// The names of the open elements, the root first.
    path: Vec<&'t str>,
    /// For each open element below the root: whether it is a landmark being filled in.
    tracked: Vec<bool>,
    marks: Landmarks,
}

impl Survey<'_> {
    /// What the walk found (complete once the walk returned `Ok`).
    pub(crate) fn landmarks(&self) -> Landmarks {
        self.marks
    }
}

impl<'t> Visit<'t> for Survey<'t> {
    fn open(&mut self, tag: Tag<'t, '_>) {
        // `<device/>` has nothing to find and nowhere to add it: served as it is.
        if self.path.is_empty() && tag.empty {
            return;
        }
        self.path.push(tag.name);
        if self.path.len() == 1 {
            return;
        }
        let (tag_start, tag_end) = tag.span;
        let slot = self.marks.slot(&self.path).filter(|s| s.is_none());
        let is_new = slot.is_some();
        if let Some(slot) = slot {
            *slot = Some(Found {
                tag_start,
                tag_end,
                empty: tag.empty,
                content: None,
                close: if tag.empty { tag_end } else { 0 },
            });
        }
        if tag.empty {
            self.path.pop();
        } else {
            self.tracked.push(is_new);
        }
    }

    fn close(&mut self, at: usize) {
        if self.path.len() == 1 {
            self.marks.device_close = Some(at);
        } else if self.tracked.pop() == Some(true) {
            if let Some(Some(found)) = self.marks.slot(&self.path) {
                found.content = Some((found.tag_end, at));
                found.close = at;
            }
        }
        self.path.pop();
    }
}

/// The document with capf's facts in it; the input itself when it already says them.
/// The document is checked as [`DeviceDocument::parse`](document::DeviceDocument::parse)
/// checks it (one pass does both), and its BOM dropped.
pub fn splice(document: &[u8], facts: &CapfFacts<'_>) -> Result<Vec<u8>> {
    let (document, text) = document::document_text(document)?;
    let mut survey = Survey::default();
    document::walk(text, &mut survey)?;
    Ok(apply(document, text, survey.marks, facts))
}

/// [`splice`] of a document surveyed before: `marks` must be what the survey of
/// exactly these bytes found (the caller keys them by the document's digest).
pub(crate) fn splice_surveyed(
    document: &[u8],
    marks: Landmarks,
    facts: &CapfFacts<'_>,
) -> Result<Vec<u8>> {
    let (document, text) = document::document_text(document)?;
    // Landmarks of other bytes would cut the text anywhere: refused, not a panic.
    if !marks.fit(text) {
        return Err(Error::Document(
            "not the document these landmarks were found in".into(),
        ));
    }
    Ok(apply(document, text, marks, facts))
}

/// The edits `marks` call for, made to `text` (`document` when there are none).
fn apply(document: &[u8], text: &str, marks: Landmarks, facts: &CapfFacts<'_>) -> Vec<u8> {
    let Some(device_close) = marks.device_close else {
        return document.to_vec();
    };
    let node_name = escape(facts.node_name);
    let port = facts.capf_port.to_string();
    let auth_mode = facts.capf_auth_mode.to_string();
    let element = |name: &str, value: &str| format!("<{name}>{value}</{name}>");
    let capf_children = format!(
        "{}{}",
        element("phonePort", &port),
        element("processNodeName", &node_name)
    );

    // (start, end, replacement), in document order; start == end inserts.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    // An element that is there: its text is replaced unless it already says `value`.
    let set_text = |found: Found, name: &str, value: &str, escaped: &str| match found.content {
        Some((start, end)) => {
            let current = unescape(&text[start..end]).ok();
            (current.as_deref().map(str::trim) != Some(value))
                .then(|| (start, end, escaped.to_owned()))
        }
        None => Some((found.tag_start, found.tag_end, element(name, escaped))),
    };
    match marks.auth_mode {
        Some(found) => edits.extend(set_text(found, "capfAuthMode", &auth_mode, &auth_mode)),
        None => {
            // Before the capfList, as CUCM orders them, or last in <device>.
            let (at, extra) = marks.list.map_or((device_close, 1), |l| (l.tag_start, 0));
            let fragment = element("capfAuthMode", &auth_mode);
            edits.push((at, at, indented(text, at, &fragment, extra)));
        }
    }
    match (marks.list, marks.capf) {
        (None, _) => {
            let list = element("capfList", &element("capf", &capf_children));
            edits.push((
                device_close,
                device_close,
                indented(text, device_close, &list, 1),
            ));
        }
        (Some(list), _) if list.empty => {
            let full = element("capfList", &element("capf", &capf_children));
            edits.push((list.tag_start, list.tag_end, full));
        }
        (Some(list), None) => {
            let capf = element("capf", &capf_children);
            edits.push((list.close, list.close, indented(text, list.close, &capf, 1)));
        }
        (Some(_), Some(capf)) if capf.empty => {
            edits.push((
                capf.tag_start,
                capf.tag_end,
                element("capf", &capf_children),
            ));
        }
        (Some(_), Some(capf)) => {
            for (found, name, value) in [
                (marks.port, "phonePort", port.as_str()),
                (marks.node_name, "processNodeName", facts.node_name),
            ] {
                let escaped = escape(value);
                match found {
                    Some(found) => edits.extend(set_text(found, name, value, &escaped)),
                    None => {
                        let at = capf.close;
                        let fragment = element(name, &escaped);
                        edits.push((at, at, indented(text, at, &fragment, 1)));
                    }
                }
            }
        }
    }
    if edits.is_empty() {
        return document.to_vec();
    }
    edits.sort_by_key(|&(start, _, _)| start);
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for (start, end, replacement) in edits {
        out.push_str(&text[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&text[at..]);
    out.into_bytes()
}

/// `fragment` laid out for insertion just before `at`, which is a closing tag (or the
/// next sibling): if the document puts that tag on its own line, the fragment gets a
/// line of its own, indented `extra` steps of two spaces deeper than the tag.
fn indented(text: &str, at: usize, fragment: &str, extra: usize) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..at];
    if line_start == 0 || !indent.chars().all(|c| c == ' ' || c == '\t') {
        return fragment.to_owned();
    }
    // Inserted after the indentation of the tag at `at`: the fragment, a line end,
    // and the same indentation again for the tag.
    format!("{}{fragment}\n{indent}", "  ".repeat(extra))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FACTS: CapfFacts<'static> = CapfFacts {
        node_name: "capf.example.net",
        capf_port: 3804,
        capf_auth_mode: 2,
    };

    fn spliced(doc: &str) -> String {
        String::from_utf8(splice(doc.as_bytes(), &FACTS).unwrap()).unwrap()
    }

    #[test]
    fn a_cucm_export_gets_capfs_node_port_and_mode_and_nothing_else_changes() {
        let doc = "<?xml version=\"1.0\"?>\n<device xsi:type=\"axl:XIPPhone\" ctiid=\"7\">\n  \
                   <fullConfig>true</fullConfig>\n  <capfAuthMode>0</capfAuthMode>\n  \
                   <capfList>\n    <capf>\n      <phonePort>5555</phonePort>\n      \
                   <processNodeName>cucm-pub</processNodeName>\n    </capf>\n    <capf>\n      \
                   <phonePort>3804</phonePort>\n      <processNodeName>cucm-sub</processNodeName>\n    \
                   </capf>\n  </capfList>\n  <!-- kept -->\n</device>\n";
        let expected = doc
            .replace(
                "<capfAuthMode>0</capfAuthMode>",
                "<capfAuthMode>2</capfAuthMode>",
            )
            .replace("<phonePort>5555</phonePort>", "<phonePort>3804</phonePort>")
            .replace(
                "<processNodeName>cucm-pub</processNodeName>",
                "<processNodeName>capf.example.net</processNodeName>",
            );
        assert_eq!(spliced(doc), expected);
        // The second CAPF entry is not capf's and stays as it was.
        assert!(expected.contains("cucm-sub"));
    }

    #[test]
    fn a_document_that_already_says_the_facts_comes_back_byte_for_byte() {
        let doc = "<device><capfAuthMode> 2 </capfAuthMode><capfList><capf>\
                   <processNodeName>capf.example.net</processNodeName>\
                   <phonePort>3804</phonePort></capf></capfList></device>";
        assert_eq!(spliced(doc), doc);
    }

    #[test]
    fn missing_elements_are_added_where_cucm_puts_them() {
        let doc = "<device>\n  <fullConfig>true</fullConfig>\n</device>\n";
        assert_eq!(
            spliced(doc),
            "<device>\n  <fullConfig>true</fullConfig>\n  <capfAuthMode>2</capfAuthMode>\n  \
             <capfList><capf><phonePort>3804</phonePort>\
             <processNodeName>capf.example.net</processNodeName></capf></capfList>\n</device>\n"
        );
        let doc =
            "<device><capfList>\n    <capf>\n      <phonePort>3804</phonePort>\n    </capf>\n  \
                   </capfList></device>";
        assert_eq!(
            spliced(doc),
            "<device><capfAuthMode>2</capfAuthMode><capfList>\n    <capf>\n      \
             <phonePort>3804</phonePort>\n      \
             <processNodeName>capf.example.net</processNodeName>\n    </capf>\n  \
             </capfList></device>"
        );
        let doc = "<device><capfAuthMode/><capfList/></device>";
        assert_eq!(
            spliced(doc),
            "<device><capfAuthMode>2</capfAuthMode><capfList><capf><phonePort>3804</phonePort>\
             <processNodeName>capf.example.net</processNodeName></capf></capfList></device>"
        );
    }

    #[test]
    fn a_node_name_is_escaped_and_the_result_parses() {
        let facts = CapfFacts {
            node_name: "a&b<c",
            ..FACTS
        };
        let out = splice(b"<device/>", &facts).unwrap();
        assert_eq!(out, b"<device/>");
        let out = splice(b"<device></device>", &facts).unwrap();
        let parsed = super::super::document::DeviceDocument::parse(&out).unwrap();
        assert_eq!(parsed.root().name, "device");
        assert!(String::from_utf8(out).unwrap().contains("a&amp;b&lt;c"));
    }

    /// The full and encrypted files are checked by the splice's own pass: it must
    /// refuse every document the parser refuses, and take a BOM off as it does.
    #[test]
    fn the_splice_refuses_what_the_parser_refuses() {
        for bad in super::super::document::tests::NOT_WELL_FORMED {
            assert!(splice(bad.as_bytes(), &FACTS).is_err(), "spliced {bad:?}");
        }
        assert!(splice(b"<device>\xE9</device>", &FACTS).is_err());
        let doc = "<device><capfAuthMode>2</capfAuthMode><capfList><capf>\
                   <processNodeName>capf.example.net</processNodeName>\
                   <phonePort>3804</phonePort></capf></capfList></device>";
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), doc.as_bytes()].concat();
        assert_eq!(splice(&with_bom, &FACTS).unwrap(), doc.as_bytes());
    }

    /// Landmarks deeper in the document or under other parents are not capf's.
    #[test]
    fn only_the_landmarks_under_device_count() {
        let doc = "<device><vendorConfig><capfAuthMode>0</capfAuthMode><capfList><capf>\
                   <phonePort>1</phonePort></capf></capfList></vendorConfig>\
                   <capfList><capf><phonePort>3804</phonePort><processNodeName>capf.example.net\
                   </processNodeName></capf></capfList></device>";
        let out = spliced(doc);
        assert!(
            out.contains(
                "<vendorConfig><capfAuthMode>0</capfAuthMode><capfList><capf>\
                              <phonePort>1</phonePort></capf></capfList></vendorConfig>"
            ),
            "{out}"
        );
        assert!(
            out.contains("<capfAuthMode>2</capfAuthMode><capfList><capf><phonePort>3804<"),
            "{out}"
        );
    }

    /// Three passes check a base document on their own (the tree, the partial's
    /// excerpt, the splice): they must agree on every document, here on a few
    /// thousand mutations of real ones (the fuzz target `device_document` holds them
    /// to it on whatever it finds).
    #[test]
    fn the_passes_agree_on_mutated_documents() {
        use super::super::checked::CheckedDocument;
        use super::super::document::DeviceDocument;
        use super::super::partial::{self, PartialFacts};
        use rand::{RngExt, SeedableRng};
        let partial_facts = PartialFacts {
            node_name: "capf.example.net",
            capf_port: 3804,
            capf_auth_mode: 1,
            cert_hash: None,
        };
        let seeds = [
            crate::phone_config::testpki::SEP_DOC,
            "<device><loadInformation a=\"&amp;\">x<!--c--><?p q?></loadInformation>\
             <capfList><capf/></capfList></device>",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let alphabet = b"<>/&;#x\"'= !?-[]adeicv\r\n\x01\xEF\xBF";
        for _ in 0..3000 {
            let mut doc = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..doc.len());
                let byte = alphabet[rng.random_range(0..alphabet.len())];
                match rng.random_range(0..3) {
                    0 => doc[at] = byte,
                    1 => doc.insert(at, byte),
                    _ => {
                        doc.remove(at);
                    }
                }
            }
            let parsed = DeviceDocument::parse(&doc).is_ok();
            let spliced = splice(&doc, &FACTS);
            assert_eq!(
                spliced.is_ok(),
                parsed,
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
            if let Ok(out) = &spliced {
                assert!(
                    DeviceDocument::parse(out).is_ok(),
                    "{:?}",
                    String::from_utf8_lossy(&doc)
                );
            }
            let partial = partial::build(&doc, &partial_facts);
            if partial.is_ok() {
                assert!(parsed, "{:?}", String::from_utf8_lossy(&doc));
            }
            // The check kept for later builds accepts what the splice accepts, and
            // builds the same files from it.
            let checked = CheckedDocument::check(&doc);
            assert_eq!(
                checked.is_ok(),
                parsed,
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
            if let Ok(checked) = checked {
                assert_eq!(checked.splice(&doc, &FACTS).ok(), spliced.ok());
                assert_eq!(checked.partial(&partial_facts).ok(), partial.ok());
            }
        }
    }
}
