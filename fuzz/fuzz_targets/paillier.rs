//! What a joint-modelling peer sends that is read before any protocol
//! step: a Paillier public key, a ciphertext under it, and a decrypted
//! histogram plaintext with the number of sums packed in it. Never panics;
//! a key or ciphertext that reads writes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_learning::gradients::GradientCodec;
use stayput_learning::paillier::{PUBLIC_KEY_BYTES, PublicKey, plaintext_from_bytes};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    if selector % 2 == 0 {
        let (key, rest) = data.split_at(data.len().min(PUBLIC_KEY_BYTES));
        if let Ok(public) = PublicKey::from_bytes(key) {
            assert!(public.to_bytes() == key, "a public key does not round-trip");
            if let Ok(c) = public.ciphertext(rest) {
                assert!(c.to_bytes() == rest, "a ciphertext does not round-trip");
            }
        }
    } else if let [count, rows_low, rows_high, rest @ ..] = data
        && let Ok(plaintext) = plaintext_from_bytes(rest)
        && let Ok(codec) = GradientCodec::logistic(u64::from(u16::from_le_bytes([*rows_low, *rows_high])))
    {
        if let Ok(sums) = codec.decode_packed(&plaintext, usize::from(*count)) {
            assert!(sums.len() == usize::from(*count) && sums.iter().all(|s| s.count <= codec.max_rows()));
        }
    }
});
