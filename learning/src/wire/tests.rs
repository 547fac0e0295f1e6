use super::*;
use crate::boost::{ToFeatureHolder as BoostToF, ToLabelHolder as BoostToL};
use crate::logistic::{ToFeatureHolder as LrToF, ToLabelHolder as LrToL};
use crate::paillier::plaintext_from_u128;
use crypto_bigint::{U2048, U4096};
use proptest::prelude::*;

/// A fixed, valid-looking key for vectors: `n = 2^2047 + 1` (odd, 2048
/// bits); vectors test the encoding, not the cryptography.
fn vector_key() -> PublicKey {
    let n = U2048::ONE.shl_vartime(2047).wrapping_add(&U2048::ONE);
    PublicKey::from_bytes(n.to_be_bytes().as_ref()).expect("odd 2048-bit")
}

fn ciphertext(key: &PublicKey, v: u64) -> Ciphertext {
    key.ciphertext(U4096::from_u64(v).to_be_bytes().as_ref()).expect("below n²")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn shape() -> TreeShape {
    TreeShape { children: vec![Some((1, 2)), None, Some((3, 4)), None, None] }
}

fn label_model() -> LabelHolderModel {
    let nodes = vec![
        Node::Peer,
        Node::Leaf(-0.25),
        Node::Own(OwnSplit { feature: 1, threshold: 3.5, missing_left: true }),
        Node::Leaf(0.125),
        Node::Leaf(0.5),
    ];
    LabelHolderModel { base_score: -1.5, trees: vec![(shape(), nodes)] }
}

fn feature_model() -> FeatureHolderModel {
    let mut splits = BTreeMap::new();
    splits.insert((0, 0), OwnSplit { feature: 2, threshold: 640.0, missing_left: false });
    FeatureHolderModel { splits, shapes: vec![shape()] }
}

fn lr_share() -> LrShare {
    LrShare { means: vec![1.0, 2.0], stds: vec![0.5, 4.0], weights: vec![0.75, -0.125], intercept: 0.25 }
}

/// Every message and share, encoded, by name.
fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let key = vector_key();
    let c = |v| ciphertext(&key, v);
    let p = |v| plaintext_from_u128(v);
    vec![
        (
            "boost-setup",
            encode_boost_to_feature_holder(&BoostToF::Setup { public_key: Box::new(key.clone()), rows: 3 }),
        ),
        (
            "boost-gradients",
            encode_boost_to_feature_holder(&BoostToF::Gradients { tree: 1, ciphertexts: vec![c(2), c(3)] }),
        ),
        (
            "boost-histogram-request",
            encode_boost_to_feature_holder(&BoostToF::Histogram { tree: 1, node: 2, rows: vec![0, 2] }),
        ),
        (
            "boost-split",
            encode_boost_to_feature_holder(&BoostToF::Split {
                tree: 1,
                node: 2,
                candidate: 7,
                missing_left: true,
                rows: vec![1],
            }),
        ),
        ("boost-tree-done", encode_boost_to_feature_holder(&BoostToF::TreeDone { tree: 1, shape: shape() })),
        (
            "boost-histogram",
            encode_boost_to_label_holder(&BoostToL::Histogram {
                tree: 1,
                node: 2,
                candidates: vec![5, 0],
                packed: vec![c(9)],
            }),
        ),
        ("boost-partition", encode_boost_to_label_holder(&BoostToL::Partition { tree: 1, node: 2, left: vec![0] })),
        (
            "leaf-masks",
            encode_leaf_masks(&[
                vec![vec![false, true, false, false, false]],
                vec![vec![false, false, false, true, true]],
            ]),
        ),
        ("lr-setup-label-holder", encode_lr_to_feature_holder(&LrToF::Setup(Box::new(key.clone())))),
        ("lr-batch-label-holder", encode_lr_to_feature_holder(&LrToF::Batch { batch: 4, partial: vec![c(5)] })),
        ("lr-masked", encode_lr_to_feature_holder(&LrToF::Masked { batch: 4, yours: vec![p(6)], mine: vec![c(7)] })),
        ("lr-setup-feature-holder", encode_lr_to_label_holder(&LrToL::Setup(Box::new(key.clone())))),
        (
            "lr-batch-feature-holder",
            encode_lr_to_label_holder(&LrToL::Batch { batch: 4, partial: vec![c(8)], masked: vec![c(9)] }),
        ),
        ("lr-unmasked", encode_lr_to_label_holder(&LrToL::Unmasked { batch: 4, values: vec![p(10)] })),
        ("partial-scores", encode_partial_scores(&[0.5, -2.0])),
        ("share-boost-label-holder", ModelShare::BoostLabelHolder(label_model()).to_bytes()),
        ("share-boost-feature-holder", ModelShare::BoostFeatureHolder(feature_model()).to_bytes()),
        ("share-logistic", ModelShare::Logistic(lr_share()).to_bytes()),
    ]
}

/// Decodes a vector by its name and encodes it again.
fn reencode(name: &str, bytes: &[u8]) -> Result<Vec<u8>, LearningError> {
    let key = vector_key();
    let keys = PeerKeys { label_holder: Some(&key), feature_holder: Some(&key) };
    Ok(match name {
        n if n.starts_with("boost-") && ["boost-histogram", "boost-partition"].contains(&n) => {
            encode_boost_to_label_holder(&decode_boost_to_label_holder(bytes, &key)?)
        }
        n if n.starts_with("boost-") => {
            encode_boost_to_feature_holder(&decode_boost_to_feature_holder(bytes, Some(&key))?)
        }
        "leaf-masks" => encode_leaf_masks(&decode_leaf_masks(bytes, &[5])?),
        n if n.ends_with("label-holder") && n.starts_with("lr-") || n == "lr-masked" => {
            encode_lr_to_feature_holder(&decode_lr_to_feature_holder(bytes, keys)?)
        }
        n if n.starts_with("lr-") => encode_lr_to_label_holder(&decode_lr_to_label_holder(bytes, keys)?),
        "partial-scores" => encode_partial_scores(&decode_partial_scores(bytes)?),
        _ => ModelShare::from_bytes(bytes)?.to_bytes(),
    })
}

/// The vectors beside this crate, found at run time: a test binary reused
/// from a shared target directory must not read another checkout's file.
fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("test-vectors/wire-v1.txt")
}

/// Known-answer vectors: `learning/test-vectors/wire-v1.txt`, one
/// `name hex` line per message; rewrite with
/// `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-learning wire`.
#[test]
fn known_answer_vectors() {
    let ours = vectors();
    if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
        let text: String = ours.iter().map(|(name, bytes)| format!("{name} {}\n", hex(bytes))).collect();
        std::fs::write(vectors_path(), text).expect("write vectors");
    }
    let text = std::fs::read_to_string(vectors_path()).expect("vectors file");
    let stored: Vec<(&str, Vec<u8>)> =
        text.lines().map(|l| l.split_once(' ').map(|(n, h)| (n, unhex(h))).expect("name hex")).collect();
    assert_eq!(stored.len(), ours.len());
    for ((name, bytes), (stored_name, stored_bytes)) in ours.iter().zip(&stored) {
        assert_eq!(name, stored_name);
        assert_eq!(hex(bytes), hex(stored_bytes), "{name}: the encoding changed; bump WIRE_VERSION");
        assert_eq!(reencode(name, stored_bytes).expect(name), *stored_bytes, "{name} round trip");
    }
}

#[test]
fn other_versions_are_refused_by_name() {
    for (name, mut bytes) in vectors() {
        bytes[0] = 2;
        let err = reencode(name, &bytes).expect_err(name);
        assert!(matches!(err, LearningError::UnsupportedVersion { got: 2, supported: 1, .. }), "{name}: {err}");
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}

#[test]
fn every_truncation_and_any_trailing_byte_is_refused() {
    for (name, bytes) in vectors() {
        for cut in 0..bytes.len() {
            assert!(reencode(name, &bytes[..cut]).is_err(), "{name} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(reencode(name, &longer).is_err(), "{name} with a trailing byte");
    }
}

#[test]
fn a_huge_count_is_refused_before_allocating() {
    let mut bytes = vec![WIRE_VERSION, 0x12, 0, 0, 0, 0];
    bytes.extend(u32::MAX.to_le_bytes());
    let err = decode_boost_to_feature_holder(&bytes, Some(&vector_key())).unwrap_err();
    assert!(err.to_string().contains("only 0 bytes left"), "{err}");
}

#[test]
fn ciphertexts_outside_the_key_are_refused() {
    let key = vector_key();
    let mut bytes =
        encode_boost_to_feature_holder(&BoostToF::Gradients { tree: 0, ciphertexts: vec![ciphertext(&key, 2)] });
    let at = bytes.len() - CIPHERTEXT_BYTES;
    bytes[at..].fill(0xff); // ≥ n²
    assert!(matches!(decode_boost_to_feature_holder(&bytes, Some(&key)), Err(LearningError::BadCiphertext(_))));
    bytes[at..].fill(0); // zero
    assert!(matches!(decode_boost_to_feature_holder(&bytes, Some(&key)), Err(LearningError::BadCiphertext(_))));
    // No key yet: a protocol error, not a guess.
    assert!(matches!(decode_boost_to_feature_holder(&bytes, None), Err(LearningError::Protocol(_))));
}

#[test]
fn a_shape_that_is_not_a_tree_is_refused() {
    let bad = [
        vec![Some((0, 1)), None],                     // a node its own child: a cycle
        vec![Some((1, 1)), None],                     // one child twice
        vec![Some((1, 2)), Some((2, 3)), None, None], // node 2 with two parents
        vec![Some((1, 5)), None],                     // beyond the tree
        vec![None, None],                             // node 1 unreachable
        vec![],                                       // no root
    ];
    for children in bad {
        let message = BoostToF::TreeDone { tree: 0, shape: TreeShape { children: children.clone() } };
        let err = decode_boost_to_feature_holder(&encode_boost_to_feature_holder(&message), None).unwrap_err();
        assert!(matches!(err, LearningError::Malformed { .. }), "{children:?}: {err}");
    }
}

#[test]
fn bad_model_shares_are_refused() {
    // A leaf where the shape has a split, and a split where it has a leaf.
    let mut model = label_model();
    model.trees[0].1.swap(0, 1);
    assert!(ModelShare::from_bytes(&ModelShare::BoostLabelHolder(model).to_bytes()).is_err());
    // A feature holder's split at a leaf.
    let mut model = feature_model();
    model.splits.insert((0, 1), OwnSplit { feature: 0, threshold: 1.0, missing_left: false });
    assert!(ModelShare::from_bytes(&ModelShare::BoostFeatureHolder(model).to_bytes()).is_err());
    // A NaN weight; a zero spread.
    let mut share = lr_share();
    share.weights[0] = f64::NAN;
    assert!(ModelShare::from_bytes(&ModelShare::Logistic(share).to_bytes()).is_err());
    let mut share = lr_share();
    share.stds[1] = 0.0;
    assert!(ModelShare::from_bytes(&ModelShare::Logistic(share).to_bytes()).is_err());
}

#[test]
fn leaf_masks_must_match_the_models_trees() {
    let bytes = encode_leaf_masks(&[vec![vec![true, false, false]]]);
    assert_eq!(decode_leaf_masks(&bytes, &[3]).unwrap(), vec![vec![vec![true, false, false]]]);
    assert!(matches!(decode_leaf_masks(&bytes, &[5]), Err(LearningError::Protocol(_))));
    assert!(decode_leaf_masks(&bytes, &[3, 3]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), version in 0u8..3, tag in 0u8..0x70) {
        let mut bytes = bytes;
        if bytes.len() >= 2 { bytes[0] = version; bytes[1] = tag; }
        let key = vector_key();
        let keys = PeerKeys { label_holder: Some(&key), feature_holder: Some(&key) };
        let _ = decode_boost_to_feature_holder(&bytes, Some(&key));
        let _ = decode_boost_to_label_holder(&bytes, &key);
        let _ = decode_lr_to_feature_holder(&bytes, keys);
        let _ = decode_lr_to_label_holder(&bytes, keys);
        let _ = decode_leaf_masks(&bytes, &[3, 5]);
        let _ = decode_partial_scores(&bytes);
        let _ = ModelShare::from_bytes(&bytes);
    }
}
