//! Ristretto255 for the protocols that need a prime-order group — the
//! verifiable OPRF ([`crate::oprf`]) and KKRT's base OTs — and the task id
//! every protocol binds its hashes to.
//!
//! ## Hash to group
//! `H_T(k) = FromUniformBytes(SHA-512(DST ‖ len(T) ‖ T ‖ len(k) ‖ k))`, where
//! `FromUniformBytes` is Ristretto255's two-Elligator map of RFC 9496 §4.3.4,
//! `DST` names the protocol and version, `T` is the task id and lengths are
//! 8-byte little-endian (the label is length-prefixed too).
//!
//! ## Decoding
//! A compressed point must be the canonical encoding of RFC 9496 §4.3.2 and
//! not the identity: the identity would make a Diffie–Hellman style base OT
//! reveal its choice and is a classic small-subgroup probe.

use curve25519_dalek::{
    ristretto::{CompressedRistretto, RistrettoPoint},
    traits::Identity,
};
use sha2::{Digest, Sha512};

use crate::PsiError;

/// Length of a compressed Ristretto255 point on the wire.
pub const POINT_LEN: usize = 32;

/// Longest task id accepted as a domain separator.
pub const MAX_TASK_ID_LEN: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn task_id_bounds() {
        assert!(TaskId::new("").is_err());
        assert!(TaskId::new(vec![b'a'; MAX_TASK_ID_LEN]).is_ok());
        assert!(TaskId::new(vec![b'a'; MAX_TASK_ID_LEN + 1]).is_err());
    }
}
