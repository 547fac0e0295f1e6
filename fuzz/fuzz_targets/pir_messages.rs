//! PIR hint, query and answer for a layout (the first 45 bytes): sizes
//! checked before allocating, canonical when they decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_pir::{Answer, Hint, Layout, Query};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<{ stayput_pir::LAYOUT_BYTES }>() else { return };
    let Ok(layout) = Layout::from_bytes(head) else { return };
    if let Ok(query) = Query::from_bytes(&layout, rest) {
        assert!(query.to_bytes() == rest, "a query does not round-trip");
    }
    if let Ok(answer) = Answer::from_bytes(&layout, rest) {
        assert!(answer.to_bytes() == rest, "an answer does not round-trip");
    }
    if let Ok(hint) = Hint::from_bytes(&layout, rest) {
        assert!(hint.to_bytes() == rest, "a hint does not round-trip");
        let _ = hint.digest(&layout);
    }
});
