use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;

fn bytes(hex_str: &str) -> [u8; LEN] {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

fn both_backends(scalar: &SecretScalar, us: &[[u8; LEN]]) -> Vec<[u8; LEN]> {
    let portable = mul_batch_on(Backend::Portable, scalar, us);
    let fast = mul_batch_on(Backend::Ifma, scalar, us);
    assert_eq!(portable, fast, "backends disagree");
    fast
}

/// RFC 7748 §5.2, the two single-call vectors.
#[test]
fn rfc7748_vectors() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (k, u, expected) in cases {
        let out = both_backends(&SecretScalar::from_bytes(bytes(k)), &[bytes(u)]);
        assert_eq!(hex::encode(out[0]), expected);
    }
}

/// RFC 7748 §5.2, the iterated vector: `k, u ← X25519(k, u), k` 1000 times.
#[test]
fn rfc7748_iterated() {
    for backend in [Backend::Portable, Backend::Ifma] {
        let (mut k, mut u) = (BASEPOINT, BASEPOINT);
        for round in 1..=1000 {
            let out = mul_batch_on(backend, &SecretScalar::from_bytes(k), &[u])[0];
            u = k;
            k = out;
            if round == 1 {
                assert_eq!(hex::encode(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
            }
        }
        assert_eq!(hex::encode(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
    }
}

/// Edge inputs: zero, one, small-order points, `p − 1`, `p`, `p + 1`,
/// non-canonical values up to `2^255 − 1`, and bit 255 set.
#[test]
fn edge_inputs_agree_with_the_portable_ladder() {
    let p_minus = |d: u8| {
        let mut u = [0xffu8; LEN];
        u[0] = 0xed - d;
        u[31] = 0x7f;
        u
    };
    let mut edges = vec![[0u8; LEN], BASEPOINT, p_minus(1), p_minus(0), [0xffu8; LEN]];
    edges[0][0] = 1;
    edges.push([0u8; LEN]);
    let mut p_plus_one = p_minus(0);
    p_plus_one[0] += 1;
    edges.push(p_plus_one);
    let mut high_bit = BASEPOINT;
    high_bit[31] = 0x80;
    edges.push(high_bit);
    // A point of order 8 (RFC 7748's list of small-order u-coordinates).
    edges.push(bytes("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"));
    let scalar = SecretScalar::random(&mut ChaCha20Rng::seed_from_u64(3));
    let out = both_backends(&scalar, &edges);
    assert_eq!(out[5], [0u8; LEN], "zero maps to zero");
    assert_eq!(out[8], [0u8; LEN], "small order maps to zero");
    assert_eq!(out[7], both_backends(&scalar, &[BASEPOINT])[0], "bit 255 is ignored");
}

#[test]
fn outputs_commute() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (a, b) = (SecretScalar::random(&mut rng), SecretScalar::random(&mut rng));
    let us: Vec<[u8; LEN]> = (0..37)
        .map(|_| {
            let mut u = [0u8; LEN];
            rng.fill_bytes(&mut u);
            u
        })
        .collect();
    let ab = mul_batch(&a, &mul_batch(&b, &us));
    let ba = mul_batch(&b, &mul_batch(&a, &us));
    assert_eq!(ab, ba);
}

#[test]
fn secrets_are_redacted() {
    let scalar = SecretScalar::from_bytes([7; LEN]);
    assert_eq!(format!("{scalar:?}"), "SecretScalar(<redacted>)");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random scalars and batches of random (often non-canonical) inputs,
    /// of every length around a multiple of eight.
    #[test]
    fn ifma_equals_portable(k in any::<[u8; LEN]>(), us in prop::collection::vec(any::<[u8; LEN]>(), 0..20)) {
        both_backends(&SecretScalar::from_bytes(k), &us);
    }
}
