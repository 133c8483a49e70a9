//! A base document checked once for every file built from it.
//!
//! A phone's partial `.sgn` and its `.enc.sgn` are built from the same base document,
//! and so is every file rebuilt after an enrollment or a scheduled operation changes
//! the device's decision. Reading and checking a real configuration (tens of KiB) is
//! the most expensive part of a build after its signature, so one pass keeps all the
//! builds need of the document's structure: where capf's elements are, for the full
//! and encrypted files ([`capf_section`]), and the copied elements, for the partial
//! ([`partial`]). The configuration service keeps it under the digest of the
//! document's bytes, so it is only ever used with exactly the bytes it was found in.
//!
//! Every file capf serves is built through this. [`capf_section::splice`] and
//! [`partial::build`] are the same builds with one visitor each, for a document used
//! once: the tests and the fuzz target hold this pass to them.

use super::capf_section::{self, CapfFacts, Landmarks, Survey};
use super::document::{self, Element, Node};
use super::partial::{self, Excerpt, PartialFacts};
use crate::phone_config::error::Result;

/// What one checked pass found in a base document.
#[derive(Debug)]
pub struct CheckedDocument {
    landmarks: Landmarks,
    excerpt: Vec<Element>,
}

impl CheckedDocument {
    /// Checks `document` as [`DeviceDocument::parse`](document::DeviceDocument::parse)
    /// checks it and keeps what the builds need; refused as the builds refuse it.
    pub fn check(document: &[u8]) -> Result<CheckedDocument> {
        let (_, text) = document::document_text(document)?;
        let mut pass = (Survey::default(), Excerpt::default());
        document::walk(text, &mut pass)?;
        let (survey, excerpt) = pass;
        Ok(CheckedDocument {
            landmarks: survey.landmarks(),
            excerpt: excerpt.into_top(),
        })
    }

    /// The full document with capf's facts in it ([`capf_section::splice`]).
    /// `document` must be the bytes this was checked from (the service finds a check
    /// by their digest); other bytes give a wrong file or an error, never a panic.
    pub fn splice(&self, document: &[u8], facts: &CapfFacts<'_>) -> Result<Vec<u8>> {
        capf_section::splice_surveyed(document, self.landmarks, facts)
    }

    /// The partial configuration ([`partial::build`]).
    pub fn partial(&self, facts: &PartialFacts<'_>) -> Result<Vec<u8>> {
        partial::render(&self.excerpt, facts)
    }

    /// About what this takes in memory, for the cache's budget: the struct and the
    /// copied elements' names, attributes and text, each with an allocation's overhead.
    pub fn size(&self) -> usize {
        const ALLOCATION: usize = 16;
        fn element(e: &Element) -> usize {
            let own = std::mem::size_of::<Element>() + e.name.len() + ALLOCATION;
            let attributes: usize = e
                .attributes
                .iter()
                .map(|(n, v)| {
                    std::mem::size_of::<(String, String)>() + n.len() + v.len() + 2 * ALLOCATION
                })
                .sum();
            let children: usize = e
                .children
                .iter()
                .map(|child| {
                    std::mem::size_of::<Node>()
                        + match child {
                            Node::Element(e) => element(e),
                            Node::Text(t) | Node::Comment(t) | Node::Pi(t) => t.len() + ALLOCATION,
                        }
                })
                .sum();
            own + attributes + children
        }
        std::mem::size_of::<CheckedDocument>() + self.excerpt.iter().map(element).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone_config::format::capf_section::tests::FACTS;

    const PARTIAL: PartialFacts<'static> = PartialFacts {
        node_name: "capf.example.net",
        capf_port: 3804,
        capf_auth_mode: 2,
        cert_hash: Some("00112233445566778899aabbccddeeff"),
    };

    const DOCUMENTS: [&str; 4] = [
        include_str!("../../../examples/data/cucm.cnf.xml"),
        include_str!("../../../examples/data/base.cnf.xml"),
        "\u{FEFF}<device><capfList><capf/></capfList><loadInformation>x</loadInformation></device>",
        "<device/>",
    ];

    #[test]
    fn a_checked_document_builds_what_each_single_pass_builds() {
        for doc in DOCUMENTS {
            let checked = CheckedDocument::check(doc.as_bytes()).unwrap();
            assert_eq!(
                checked.splice(doc.as_bytes(), &FACTS).unwrap(),
                capf_section::splice(doc.as_bytes(), &FACTS).unwrap(),
                "{doc}"
            );
            assert_eq!(
                checked.partial(&PARTIAL).unwrap(),
                partial::build(doc.as_bytes(), &PARTIAL).unwrap(),
                "{doc}"
            );
        }
    }

    #[test]
    fn a_check_used_with_other_bytes_does_not_panic() {
        let [cucm, base, ..] = DOCUMENTS;
        let checked = CheckedDocument::check(cucm.as_bytes()).unwrap();
        for other in [base, "<device/>", "", "é", &"é".repeat(4000)] {
            let _ = checked.splice(other.as_bytes(), &FACTS);
        }
    }

    #[test]
    fn what_the_single_passes_refuse_is_refused() {
        for bad in document::tests::NOT_WELL_FORMED {
            assert!(CheckedDocument::check(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn its_size_counts_the_copied_elements() {
        let small = CheckedDocument::check(b"<device/>").unwrap();
        let doc = format!(
            "<device><loadInformation>{}</loadInformation></device>",
            "x".repeat(4000)
        );
        let large = CheckedDocument::check(doc.as_bytes()).unwrap();
        assert!(small.size() < 512, "{}", small.size());
        assert!(large.size() > 4000, "{}", large.size());
        // A CUCM-sized document keeps a few hundred bytes (docs/encrypted-config.md).
        let cucm = CheckedDocument::check(DOCUMENTS[0].as_bytes()).unwrap();
        assert!((300..1024).contains(&cucm.size()), "{}", cucm.size());
    }
}
