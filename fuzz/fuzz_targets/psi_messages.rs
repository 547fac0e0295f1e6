//! Balanced PSI messages from a peer: point batches (every point canonical,
//! never the identity), tag batches (canonical: decode → encode gives the
//! same bytes) and the key declaration's normalisation rule names.
#![no_main]

use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::traits::Identity;
use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_psi::keys::KeyRules;
use stayput_psi::messages::{PointBatch, TagBatch};

fuzz_target!(|data: &[u8]| {
    if let Ok(points) = PointBatch::decode(data) {
        assert_eq!(points.len() * 32, data.len());
        for chunk in data.chunks_exact(32) {
            let point = CompressedRistretto::from_slice(chunk).unwrap().decompress().expect("accepted points decode");
            assert!(point.compress().as_bytes() == chunk, "a non-canonical point was accepted");
            assert_ne!(point, curve25519_dalek::ristretto::RistrettoPoint::identity());
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
