//! Balanced PSI messages from a peer: point batches (every X25519
//! u-coordinate canonical — below 2^255 − 19 — and never zero), tag batches (canonical: decode → encode gives the
//! same bytes) and the key declaration's normalisation rule names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_psi::keys::KeyRules;
use stayput_psi::messages::{PointBatch, TagBatch};

fuzz_target!(|data: &[u8]| {
    if let Ok(points) = PointBatch::decode(data) {
        assert_eq!(points.len() * 32, data.len());
        for chunk in data.chunks_exact(32) {
            assert!(below_p(chunk), "a non-canonical coordinate was accepted");
            assert!(chunk.iter().any(|&b| b != 0), "zero was accepted");
        }
    }
    if let Ok(tags) = TagBatch::decode(data) {
        assert!(tags.to_bytes() == data, "a tag batch does not round-trip");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let names: Vec<&str> = text.split('\n').collect();
        if let Ok(rules) = KeyRules::parse(&names) {
            assert_eq!(KeyRules::parse(&rules.names()).expect("a rule's name parses"), rules);
            let _ = rules.normalise(text);
        }
    }
});

/// Whether 32 little-endian bytes are below p = 2^255 − 19, compared from
/// the most significant byte down.
fn below_p(u: &[u8]) -> bool {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    for i in (0..32).rev() {
        if u[i] != p[i] {
            return u[i] < p[i];
        }
    }
    false
}
