//! The signed header parser (config-files.md §3) for each file kind, and the signed
//! message it implies.
#![no_main]

use capf::phone_config::format::sgn::{self, FileKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [FileKind::Sgn, FileKind::EncSgn, FileKind::Tlv] {
        if let Ok(file) = sgn::parse(data, kind) {
            let _ = file.signed_message();
        }
    }
});
