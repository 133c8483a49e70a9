//! The ITL/CTL parser (config-files.md §7), then the per-record certificate checks and
//! the signature check on whatever parsed.
#![no_main]

use capf::phone_config::format::itl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = itl::parse(data) {
        for record in &list.records {
            let _ = record.matches_certificate();
        }
        let _ = itl::verify(&list);
    }
});
