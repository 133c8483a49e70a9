//! The base configuration XML (config-files.md §5): the passes over it, the tree
//! (`DeviceDocument::parse`), the partial configuration, the splice of the full one and
//! the check kept for later builds (`CheckedDocument`), must accept and refuse the same
//! documents, since each checks it alone; and a kept check must build what the single
//! passes build.
#![no_main]

use capf::phone_config::format::capf_section::{self, CapfFacts};
use capf::phone_config::format::checked::CheckedDocument;
use capf::phone_config::format::document::DeviceDocument;
use capf::phone_config::format::partial::{self, PartialFacts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = DeviceDocument::parse(data).is_ok();
    let facts = PartialFacts {
        node_name: "capf.example.com",
        capf_port: 3804,
        capf_auth_mode: 1,
        cert_hash: Some("00112233445566778899aabbccddeeff"),
    };
    // The partial may also refuse a kept element with a non-ASCII name.
    let partial = partial::build(data, &facts);
    if partial.is_ok() {
        assert!(parsed, "the partial accepted a document the parser refuses");
    }
    let full = CapfFacts {
        node_name: "capf.example.com",
        capf_port: 3804,
        capf_auth_mode: 1,
    };
    let spliced = capf_section::splice(data, &full);
    assert_eq!(spliced.is_ok(), parsed, "the splice and the parser disagree");
    if let Ok(out) = &spliced {
        assert!(DeviceDocument::parse(out).is_ok(), "the splice made a bad document");
    }
    let checked = CheckedDocument::check(data);
    assert_eq!(checked.is_ok(), parsed, "the check and the parser disagree");
    if let Ok(checked) = checked {
        assert_eq!(checked.splice(data, &full).ok(), spliced.ok());
        assert_eq!(checked.partial(&facts).ok(), partial.ok());
    }
});
