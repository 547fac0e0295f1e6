//! Every joint-modelling message and model share a peer or a disk can hand
//! a node, in the versioned encodings of `stayput-learning`'s `wire`: never
//! panics, never allocates beyond what the bytes paid for, and whatever
//! decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_learning::paillier::PublicKey;
use stayput_learning::wire::{self, ModelShare, PeerKeys};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    // A fixed odd 2048-bit modulus, 2^2047 + 1: the encodings are under test.
    let mut n = [0u8; 256];
    n[0] = 0x80;
    n[255] = 1;
    let key = PublicKey::from_bytes(&n).expect("odd 2048-bit");
    let keys = PeerKeys { label_holder: Some(&key), feature_holder: Some(&key) };
    match selector % 7 {
        0 => {
            if let Ok(m) = wire::decode_boost_to_feature_holder(data, Some(&key)) {
                assert!(wire::encode_boost_to_feature_holder(&m) == data, "boost → feature holder round trip");
            }
        }
        1 => {
            if let Ok(m) = wire::decode_boost_to_label_holder(data, &key) {
                assert!(wire::encode_boost_to_label_holder(&m) == data, "boost → label holder round trip");
            }
        }
        2 => {
            if let Ok(m) = wire::decode_lr_to_feature_holder(data, keys) {
                assert!(wire::encode_lr_to_feature_holder(&m) == data, "LR → feature holder round trip");
            }
        }
        3 => {
            if let Ok(m) = wire::decode_lr_to_label_holder(data, keys) {
                assert!(wire::encode_lr_to_label_holder(&m) == data, "LR → label holder round trip");
            }
        }
        4 => {
            if let Ok(m) = wire::decode_leaf_masks(data, &[3, 5]) {
                assert!(wire::decode_leaf_masks(&wire::encode_leaf_masks(&m), &[3, 5]).ok() == Some(m));
            }
        }
        5 => {
            if let Ok(s) = wire::decode_partial_scores(data) {
                assert!(wire::encode_partial_scores(&s) == data, "partial scores round trip");
            }
        }
        _ => {
            if let Ok(share) = ModelShare::from_bytes(data) {
                assert!(share.to_bytes() == data, "model share round trip");
            }
        }
    }
});
