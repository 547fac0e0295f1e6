//! A looked-up record's bytes (from the owner's table, through the
//! requester's decoding): the first byte says how many columns to expect.
//! Never panics; what decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_pir::record::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((columns, bytes)) = data.split_first() else { return };
    if let Ok(values) = decode(bytes, usize::from(*columns)) {
        assert!(encode(&values) == bytes, "a record does not round-trip");
    }
});
