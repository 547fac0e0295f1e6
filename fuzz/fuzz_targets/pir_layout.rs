//! A lookup table's published key (from the ledger's dataset version):
//! layout and OPRF key, canonical, and every accessor total on a layout
//! that decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_pir::{LAYOUT_BYTES, Layout, Published};

fuzz_target!(|data: &[u8]| {
    if let Ok(layout) = Layout::from_bytes(data) {
        assert!(layout.to_bytes() == data, "a layout does not round-trip");
        assert!(layout.column_of(data) < layout.columns);
        let _ = (layout.rows(), layout.value_capacity());
    }
    if let Ok(published) = Published::from_bytes(data) {
        assert!(published.to_bytes() == data, "a published key does not round-trip");
        assert!(Layout::from_bytes(&data[..LAYOUT_BYTES]).is_ok());
    }
});
