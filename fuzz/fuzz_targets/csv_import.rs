//! The `capf device import` file format: CSV reading, the header line and every field
//! parser, then the options applied to a new record, as import does before it
//! consults the store.
#![no_main]

use capf::cli::parse_import;
use capf::model::DeviceRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rows) = parse_import(data) else {
        return;
    };
    for (_, row) in rows {
        if let Ok(row) = row {
            let mut record = DeviceRecord::new(&row.name);
            let _ = row.options.apply(&mut record, 1_800_000_000);
        }
    }
});
