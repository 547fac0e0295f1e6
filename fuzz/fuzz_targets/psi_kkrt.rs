//! KKRT-PSI messages from a peer: setup, base choices, corrections, outputs
//! and matches. Whatever a decoder accepts must encode back to the same
//! bytes (one encoding per message) and respect its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_psi::kkrt::messages::{BaseChoices, Corrections, MAX_OUTPUTS, MAX_ROWS, Matches, Outputs, Setup};

fuzz_target!(|data: &[u8]| {
    if let Ok(setup) = Setup::decode(data) {
        assert!(setup.to_bytes() == data, "setup does not round-trip");
    }
    if let Ok(choices) = BaseChoices::decode(data) {
        assert!(choices.to_bytes() == data, "base choices do not round-trip");
    }
    if let Ok(run) = Corrections::decode(data) {
        assert!((1..=MAX_ROWS).contains(&run.len()));
        assert!(run.to_bytes() == data, "corrections do not round-trip");
    }
    if let Ok(outputs) = Outputs::decode(data) {
        assert!((1..=MAX_OUTPUTS).contains(&outputs.len()));
        assert!(outputs.to_bytes() == data, "outputs do not round-trip");
    }
    if let Ok(matches) = Matches::decode(data) {
        assert!(matches.to_bytes() == data, "matches do not round-trip");
    }
});
