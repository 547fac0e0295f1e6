//! The ECDH-PSI group: X25519 u-coordinates (RFC 7748).
//!
//! ## Hash to a u-coordinate
//! `H_T(k)` is the first 32 bytes of
//! `SHA-512(len(DST) ‖ DST ‖ len(T) ‖ T ‖ len(k) ‖ k)` with bit 255
//! cleared, read as a little-endian u-coordinate; lengths are 8-byte
//! little-endian, `DST` is [`super::PROTOCOL_LABEL`] and `T` the task id.
//! No map to the curve is needed: X25519 is defined on every u, which lies
//! on Curve25519 or on its quadratic twist, and both have a large
//! prime-order subgroup (cofactors 8 and 4; Curve25519 was chosen to be
//! twist-secure). Multiplying by a clamped scalar — a multiple of 8 —
//! lands in that subgroup on either curve, and
//! `X25519(a, X25519(b, u)) = X25519(b, X25519(a, u))` because the ladder
//! computes `x(clamp(a)·clamp(b)·P)` for the point `P` (or its twist
//! counterpart) with u-coordinate `u`.
//!
//! ## Validation
//! Received coordinates must be canonical (below `2^255 − 19`, bit 255
//! clear) and not zero. A point of small order maps to zero under any
//! clamped scalar: the blinding step refuses such a result, so a peer
//! cannot probe with small-subgroup points.

use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use stayput_x25519::SecretScalar;

use crate::PsiError;
use crate::group::TaskId;

/// Bytes of a u-coordinate on the wire.
pub const POINT_LEN: usize = stayput_x25519::LEN;

/// A u-coordinate.
pub type Coordinate = [u8; POINT_LEN];

/// `H_T`: hashes keys to u-coordinates under a protocol label and the task
/// id. The prefix is absorbed once and the hash state cloned per key.
#[derive(Clone)]
pub struct HashToCoordinate {
    prefix: Sha512,
}

impl HashToCoordinate {
    /// A hasher for `label` (protocol and version) and `task`.
    pub fn new(label: &[u8], task: &TaskId) -> Self {
        let mut prefix = Sha512::new();
        for part in [label, task.as_bytes()] {
            prefix.update((part.len() as u64).to_le_bytes());
            prefix.update(part);
        }
        Self { prefix }
    }

    /// `H_T(key)`.
    pub fn hash(&self, key: &[u8]) -> Coordinate {
        let mut hash = self.prefix.clone();
        hash.update((key.len() as u64).to_le_bytes());
        hash.update(key);
        let digest = hash.finalize();
        let mut u: Coordinate = digest[..POINT_LEN].try_into().expect("SHA-512 is longer than a coordinate");
        u[POINT_LEN - 1] &= 0x7f;
        u
    }
}

impl std::fmt::Debug for HashToCoordinate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashToCoordinate")
    }
}

/// A party's secret blinding scalar (clamped), zeroized on drop.
#[derive(Debug)]
pub struct BlindingScalar(SecretScalar);

impl BlindingScalar {
    /// A uniformly random scalar.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self(SecretScalar::random(rng))
    }

    /// `X25519(s, uᵢ)` for every coordinate, in order, on all cores.
    pub fn blind(&self, us: &[Coordinate]) -> Vec<Coordinate> {
        stayput_x25519::mul_batch(&self.0, us)
    }

    /// [`Self::blind`] for coordinates a peer sent: a zero result (the
    /// peer sent a point of small order) is refused, naming the first.
    pub fn blind_received(&self, us: &[Coordinate]) -> Result<Vec<Coordinate>, PsiError> {
        let blinded = self.blind(us);
        // Whether a result is zero depends on the peer's point only, not
        // on the scalar: a variable-time search reveals nothing secret.
        match blinded.iter().position(|u| *u == [0u8; POINT_LEN]) {
            Some(index) => Err(PsiError::SmallOrderPoint { index }),
            None => Ok(blinded),
        }
    }
}

/// Whether `u` is a canonical encoding: below `p = 2^255 − 19`.
fn is_canonical(u: &Coordinate) -> bool {
    let top_is_max = u[POINT_LEN - 1] == 0x7f && u[1..POINT_LEN - 1].iter().all(|&b| b == 0xff);
    u[POINT_LEN - 1] < 0x80 && !(top_is_max && u[0] >= 0xed)
}

/// Decodes a run of concatenated coordinates, refusing non-canonical ones
/// and zero; the first bad one (lowest index) is named.
pub fn decode_coordinates(bytes: &[u8]) -> Result<Vec<Coordinate>, PsiError> {
    debug_assert_eq!(bytes.len() % POINT_LEN, 0);
    let mut out = Vec::with_capacity(bytes.len() / POINT_LEN);
    for (index, chunk) in bytes.chunks_exact(POINT_LEN).enumerate() {
        let u: Coordinate = chunk.try_into().expect("chunks are exact");
        if !is_canonical(&u) {
            return Err(PsiError::NonCanonicalCoordinate { index });
        }
        if u == [0u8; POINT_LEN] {
            return Err(PsiError::SmallOrderPoint { index });
        }
        out.push(u);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn p_plus(d: u8) -> Coordinate {
        let mut u = [0xffu8; POINT_LEN];
        u[0] = 0xed + d;
        u[POINT_LEN - 1] = 0x7f;
        u
    }

    #[test]
    fn canonical_coordinates_only() {
        let mut p_minus_one = p_plus(0);
        p_minus_one[0] -= 1;
        assert!(decode_coordinates(&p_minus_one).is_ok());
        for (bad, index) in [(p_plus(0), 0), (p_plus(1), 0), ([0xffu8; POINT_LEN], 0)] {
            let mut bytes = [9u8; POINT_LEN].to_vec();
            bytes.extend_from_slice(&bad);
            assert_eq!(decode_coordinates(&bytes), Err(PsiError::NonCanonicalCoordinate { index: index + 1 }));
        }
        assert_eq!(decode_coordinates(&[0u8; POINT_LEN]), Err(PsiError::SmallOrderPoint { index: 0 }));
    }

    #[test]
    fn small_order_points_are_refused_after_blinding() {
        let scalar = BlindingScalar::random(&mut ChaCha20Rng::seed_from_u64(1));
        let mut one = [0u8; POINT_LEN];
        one[0] = 1; // order 4
        let order8: Coordinate = hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
            .unwrap()
            .try_into()
            .unwrap();
        let honest = HashToCoordinate::new(b"l", &TaskId::new("t").unwrap()).hash(b"k");
        for bad in [one, order8] {
            let batch = [honest, bad];
            let received = decode_coordinates(&batch.concat()).unwrap();
            assert_eq!(scalar.blind_received(&received), Err(PsiError::SmallOrderPoint { index: 1 }));
        }
    }

    #[test]
    fn blinding_commutes_and_tasks_separate() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (a, b) = (BlindingScalar::random(&mut rng), BlindingScalar::random(&mut rng));
        let h1 = HashToCoordinate::new(b"l", &TaskId::new("task-1").unwrap());
        let h2 = HashToCoordinate::new(b"l", &TaskId::new("task-2").unwrap());
        assert_ne!(h1.hash(b"alice"), h2.hash(b"alice"));
        let us: Vec<Coordinate> = (0..20u32).map(|i| h1.hash(&i.to_le_bytes())).collect();
        assert_eq!(a.blind(&b.blind(&us)), b.blind(&a.blind(&us)));
        assert_eq!(format!("{a:?}"), "BlindingScalar(SecretScalar(<redacted>))");
    }
}
