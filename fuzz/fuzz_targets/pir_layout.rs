//! A PIR layout (from the ledger's dataset version): canonical, and every
//! accessor total on a layout that decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_pir::Layout;

fuzz_target!(|data: &[u8]| {
    if let Ok(layout) = Layout::from_bytes(data) {
        assert!(layout.to_bytes() == data, "a layout does not round-trip");
        assert!(layout.column_of(data) < layout.columns);
        let _ = (layout.rows(), layout.value_capacity(), layout.tag(data));
    }
});
