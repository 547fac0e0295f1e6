//! The hand-written AVX-512 IFMA X25519 ladder against `curve25519-dalek`'s
//! on arbitrary scalars and batches of arbitrary u-coordinates (canonical
//! or not, small order or not): the two backends must agree byte for byte.
//! On a CPU without IFMA both runs take the portable path and the target
//! checks nothing beyond not crashing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_x25519::{Backend, SecretScalar, mul_batch_on};

fuzz_target!(|data: &[u8]| {
    let Some((scalar, points)) = data.split_first_chunk::<32>() else { return };
    let scalar = SecretScalar::from_bytes(*scalar);
    let us: Vec<[u8; 32]> = points.chunks_exact(32).take(24).map(|c| c.try_into().expect("exact")).collect();
    let fast = mul_batch_on(Backend::Ifma, &scalar, &us);
    let portable = mul_batch_on(Backend::Portable, &scalar, &us);
    assert!(fast == portable, "the IFMA ladder disagrees with the portable one");
});
