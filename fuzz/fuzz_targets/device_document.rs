//! The base configuration XML parser (config-files.md §5), and the partial
//! configuration built from whatever parsed.
#![no_main]

use capf::phone_config::format::document::DeviceDocument;
use capf::phone_config::format::partial::{self, PartialFacts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(document) = DeviceDocument::parse(data) {
        let facts = PartialFacts {
            node_name: "capf.example.com",
            capf_port: 3804,
            capf_auth_mode: 1,
            cert_hash: Some("00112233445566778899aabbccddeeff"),
        };
        let _ = partial::build(&document, &facts);
    }
});
