//! Additive shares a site receives from another: every entry a canonical
//! scalar, canonical bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_mpc_engine::sharing::Share;

fuzz_target!(|data: &[u8]| {
    let entries = data.len() / 32;
    if let Ok(share) = Share::from_bytes(data, entries) {
        assert!(share.to_bytes() == data, "a share does not round-trip");
    }
    let _ = Share::from_bytes(data, entries + 1);
});
