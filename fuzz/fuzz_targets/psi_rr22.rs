//! RR22-PSI messages from a peer: setup, base choices, OT corrections,
//! trees and the masked store (outputs and matches are KKRT's, fuzzed by
//! `psi_kkrt`). Whatever a decoder accepts must encode back to the same
//! bytes (one encoding per message) and respect its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_psi::rr22::messages::{
    BaseChoices, CotCorrections, MAX_CORRECTION_WORDS, MAX_DEPTH, MAX_TREES, MAX_VALUES, Masked, Setup, Trees,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(setup) = Setup::decode(data) {
        assert!(setup.to_bytes() == data, "setup does not round-trip");
    }
    if let Ok(choices) = BaseChoices::decode(data) {
        assert!(choices.to_bytes() == data, "base choices do not round-trip");
    }
    if let Ok(run) = CotCorrections::decode(data) {
        assert!(usize::from(run.first_column) + run.columns() <= 128);
        assert!(run.columns() * run.words_per_column as usize <= MAX_CORRECTION_WORDS);
        assert!(run.to_bytes() == data, "OT corrections do not round-trip");
    }
    if let Ok(trees) = Trees::decode(data) {
        assert!((1..=MAX_TREES).contains(&trees.len()) && (1..=MAX_DEPTH).contains(&trees.depth));
        assert!(trees.to_bytes() == data, "trees do not round-trip");
    }
    if let Ok(masked) = Masked::decode(data) {
        assert!((1..=MAX_VALUES).contains(&masked.len()));
        assert!(masked.to_bytes() == data, "masked store does not round-trip");
    }
});
