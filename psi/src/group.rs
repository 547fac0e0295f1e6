//! Group operations over Ristretto255: hashing keys to points under a
//! task-bound domain separator, secret blinding scalars, and the batched
//! multiply-and-compress kernel every protocol step is made of.
//!
//! ## Hash to group
//! `H_T(k) = FromUniformBytes(SHA-512(DST ‖ len(T) ‖ T ‖ len(k) ‖ k))`, where
//! `FromUniformBytes` is Ristretto255's two-Elligator map of RFC 9496 §4.3.4,
//! `DST` names this protocol and version, `T` is the task id and lengths are
//! 8-byte little-endian. Binding `T` into the hash makes the blinded values
//! of one task useless in any other (brief, invariant 5).
//!
//! ## Multiply and compress
//! Compressing a point costs an inversion (~5 µs); Ristretto's batched
//! double-and-compress shares one inversion across a batch. We multiply by
//! `s/2` instead of `s` and let the batch doubling restore `s·P`, so blinding
//! costs one scalar multiplication plus a fraction of a compression.

use curve25519_dalek::{
    ristretto::{CompressedRistretto, RistrettoPoint},
    scalar::Scalar,
    traits::Identity,
};
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::PsiError;

/// Length of a compressed Ristretto255 point on the wire.
pub const POINT_LEN: usize = 32;

/// Longest task id accepted as a domain separator.
pub const MAX_TASK_ID_LEN: usize = 256;

/// How many points one rayon job multiplies and compresses together; large
/// enough to amortise the shared inversion, small enough to balance cores.
const KERNEL_CHUNK: usize = 256;

/// The task a session belongs to; bound into every hash so that messages of
/// one task cannot be replayed into another.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskId(Vec<u8>);

impl TaskId {
    /// A task id of 1 to [`MAX_TASK_ID_LEN`] bytes.
    pub fn new(id: impl Into<Vec<u8>>) -> Result<Self, PsiError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_TASK_ID_LEN {
            return Err(PsiError::BadTaskId { len: id.len(), max: MAX_TASK_ID_LEN });
        }
        Ok(Self(id))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "TaskId({s:?})"),
            Err(_) => write!(f, "TaskId(0x{})", hex_lower(&self.0)),
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn absorb_len_prefixed(hash: &mut Sha512, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

/// `H_T`: hashes keys to Ristretto255 points under a domain separator made
/// of a protocol label and the task id. The prefix is absorbed once and the
/// hash state cloned per key.
#[derive(Clone)]
pub struct HashToGroup {
    prefix: Sha512,
}

impl HashToGroup {
    /// A hasher for `label` (protocol and version) and `task`.
    pub fn new(label: &[u8], task: &TaskId) -> Self {
        let mut prefix = Sha512::new();
        absorb_len_prefixed(&mut prefix, label);
        absorb_len_prefixed(&mut prefix, task.as_bytes());
        Self { prefix }
    }

    /// `H_T(key)`.
    pub fn hash(&self, key: &[u8]) -> RistrettoPoint {
        let mut hash = self.prefix.clone();
        absorb_len_prefixed(&mut hash, key);
        let wide: [u8; 64] = hash.finalize().into();
        RistrettoPoint::from_uniform_bytes(&wide)
    }
}

impl std::fmt::Debug for HashToGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashToGroup")
    }
}

/// A party's secret blinding scalar `s ≠ 0`, kept with `s/2` for the
/// double-and-compress kernel. Zeroized on drop, redacted in `Debug`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretScalar {
    scalar: Scalar,
    half: Scalar,
}

impl SecretScalar {
    /// A uniformly random non-zero scalar.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        loop {
            let scalar = Scalar::random(rng);
            if scalar != Scalar::ZERO {
                return Self::from_scalar(scalar);
            }
        }
    }

    fn from_scalar(scalar: Scalar) -> Self {
        let half = scalar * Scalar::from(2u8).invert();
        Self { scalar, half }
    }

    /// `s·P` for one point (no batching).
    pub fn mul(&self, point: &RistrettoPoint) -> RistrettoPoint {
        point * self.scalar
    }

    /// Compressed `s·Pᵢ` for every point, in order, spread over the rayon pool.
    pub fn mul_compress(&self, points: &[RistrettoPoint]) -> Vec<CompressedRistretto> {
        points
            .par_chunks(KERNEL_CHUNK)
            .flat_map_iter(|chunk| {
                let halves: Vec<RistrettoPoint> = chunk.iter().map(|p| p * self.half).collect();
                RistrettoPoint::double_and_compress_batch(&halves)
            })
            .collect()
    }
}

impl std::fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretScalar(<redacted>)")
    }
}

/// Decodes one compressed point, rejecting non-canonical encodings and the
/// identity. `index` names the point in errors.
pub fn decode_point(bytes: &[u8; POINT_LEN], index: usize) -> Result<RistrettoPoint, PsiError> {
    let point = CompressedRistretto(*bytes).decompress().ok_or(PsiError::NonCanonicalPoint { index })?;
    // The identity check compares public data: variable time is fine.
    if point == RistrettoPoint::identity() {
        return Err(PsiError::IdentityPoint { index });
    }
    Ok(point)
}

/// Decodes a run of concatenated points in parallel; the first bad point
/// (lowest index) is reported.
pub fn decode_points(bytes: &[u8]) -> Result<Vec<RistrettoPoint>, PsiError> {
    debug_assert_eq!(bytes.len() % POINT_LEN, 0);
    bytes
        .par_chunks_exact(POINT_LEN)
        .enumerate()
        .map(|(index, chunk)| {
            let array: &[u8; POINT_LEN] = chunk.try_into().expect("chunks are exact");
            decode_point(array, index)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn batched_kernel_equals_plain_multiplication() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let secret = SecretScalar::random(&mut rng);
        let points: Vec<RistrettoPoint> =
            (0..600u32).map(|i| HashToGroup::new(b"t", &TaskId::new("x").unwrap()).hash(&i.to_le_bytes())).collect();
        let batched = secret.mul_compress(&points);
        for (p, c) in points.iter().zip(&batched) {
            assert_eq!(secret.mul(p).compress(), *c);
        }
    }

    #[test]
    fn task_id_separates_domains() {
        let a = HashToGroup::new(b"label", &TaskId::new("task-1").unwrap());
        let b = HashToGroup::new(b"label", &TaskId::new("task-2").unwrap());
        assert_ne!(a.hash(b"alice"), b.hash(b"alice"));
        assert_eq!(a.hash(b"alice"), a.clone().hash(b"alice"));
    }

    #[test]
    fn rejects_identity_and_non_canonical_points() {
        let identity = RistrettoPoint::identity().compress().to_bytes();
        assert_eq!(decode_point(&identity, 3), Err(PsiError::IdentityPoint { index: 3 }));
        // 2^255 - 1 is not a canonical field element encoding.
        let mut bad = [0xffu8; POINT_LEN];
        bad[31] = 0x7f;
        assert_eq!(decode_point(&bad, 0), Err(PsiError::NonCanonicalPoint { index: 0 }));
        // A negative (odd) field element is not a canonical Ristretto encoding.
        let mut odd = [0u8; POINT_LEN];
        odd[0] = 1;
        assert_eq!(decode_point(&odd, 9), Err(PsiError::NonCanonicalPoint { index: 9 }));
    }

    #[test]
    fn secrets_are_redacted() {
        let secret = SecretScalar::random(&mut ChaCha20Rng::seed_from_u64(1));
        assert_eq!(format!("{secret:?}"), "SecretScalar(<redacted>)");
    }

    #[test]
    fn task_id_bounds() {
        assert!(TaskId::new("").is_err());
        assert!(TaskId::new(vec![b'a'; MAX_TASK_ID_LEN]).is_ok());
        assert!(TaskId::new(vec![b'a'; MAX_TASK_ID_LEN + 1]).is_err());
    }
}
