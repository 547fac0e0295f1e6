//! Wire messages of the ECDH-PSI protocol, version 2.
//!
//! Both messages are flat arrays of fixed-size items with no header: the
//! carrier (a gRPC frame) gives the length, the session gives the context.
//!
//! | message | item | encoding |
//! |---|---|---|
//! | [`PointBatch`] | a blinded key `X25519(s, H_T(k))` | 32-byte canonical u-coordinate (RFC 7748 §5), below `2^255 − 19` |
//! | [`TagBatch`] | a doubly blinded key, as a tag | [`TAG_LEN`] bytes, see [`crate::ecdh`] |
//!
//! Decoders check the length, the batch bound ([`MAX_BATCH`]) and, for
//! points, that every item is canonical and not zero before the protocol
//! sees them; they allocate only after the length check. (Version 1 carried
//! Ristretto255 points; a node speaking it is refused at the session's
//! open by its protocol version.)

use crate::PsiError;
use crate::ecdh::curve::{Coordinate, POINT_LEN, decode_coordinates};

/// Most items one batch may carry (2 MiB of points).
pub const MAX_BATCH: usize = 1 << 16;

/// Bytes of a doubly blinded tag: 96 bits keep false matches below 2^-40
/// for sets whose sizes multiply to at most 2^56.
pub const TAG_LEN: usize = 12;

/// A doubly blinded key, truncated.
pub type Tag = [u8; TAG_LEN];

fn check_shape(message: &'static str, bytes: &[u8], item_len: usize) -> Result<usize, PsiError> {
    if bytes.is_empty() {
        return Err(PsiError::EmptyMessage { message });
    }
    if !bytes.len().is_multiple_of(item_len) {
        return Err(PsiError::RaggedMessage { message, len: bytes.len(), item_len });
    }
    let count = bytes.len() / item_len;
    if count > MAX_BATCH {
        return Err(PsiError::OversizedBatch { message, count, max: MAX_BATCH });
    }
    Ok(count)
}

/// A batch of blinded points, encoded for the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct PointBatch {
    bytes: Vec<u8>,
}

impl PointBatch {
    const NAME: &'static str = "point batch";

    pub(crate) fn from_coordinates(points: &[Coordinate]) -> Self {
        Self { bytes: points.concat() }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.bytes.len() / POINT_LEN
    }

    /// Whether the batch is empty (never true for a batch a role produced).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The wire encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The wire encoding, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Decodes and validates a received batch: every point canonical and
    /// not zero.
    pub fn decode(bytes: &[u8]) -> Result<DecodedPoints, PsiError> {
        check_shape(Self::NAME, bytes, POINT_LEN)?;
        Ok(DecodedPoints { points: decode_coordinates(bytes)? })
    }
}

impl std::fmt::Debug for PointBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PointBatch({} points)", self.len())
    }
}

/// A received [`PointBatch`] whose every point has been validated.
#[derive(Debug, Clone)]
pub struct DecodedPoints {
    pub(crate) points: Vec<Coordinate>,
}

impl DecodedPoints {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there are no points (never true for a decoded batch).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// A batch of tags.
#[derive(Clone, PartialEq, Eq)]
pub struct TagBatch {
    pub(crate) tags: Vec<Tag>,
}

impl TagBatch {
    const NAME: &'static str = "tag batch";

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether the batch is empty (never true for a batch a role produced).
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.tags.concat()
    }

    /// Decodes a received batch.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let count = check_shape(Self::NAME, bytes, TAG_LEN)?;
        let mut tags = Vec::with_capacity(count);
        tags.extend(bytes.chunks_exact(TAG_LEN).map(|c| Tag::try_from(c).expect("exact chunks")));
        Ok(Self { tags })
    }
}

impl std::fmt::Debug for TagBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TagBatch({} tags)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_are_typed() {
        assert_eq!(PointBatch::decode(&[]).unwrap_err(), PsiError::EmptyMessage { message: "point batch" });
        assert_eq!(
            PointBatch::decode(&[0u8; 33]).unwrap_err(),
            PsiError::RaggedMessage { message: "point batch", len: 33, item_len: 32 }
        );
        assert_eq!(
            TagBatch::decode(&vec![1u8; TAG_LEN * (MAX_BATCH + 1)]).unwrap_err(),
            PsiError::OversizedBatch { message: "tag batch", count: MAX_BATCH + 1, max: MAX_BATCH }
        );
        assert_eq!(
            TagBatch::decode(&[1u8; 13]).unwrap_err(),
            PsiError::RaggedMessage { message: "tag batch", len: 13, item_len: TAG_LEN }
        );
    }

    #[test]
    fn tags_round_trip() {
        let bytes: Vec<u8> = (0..36).collect();
        let batch = TagBatch::decode(&bytes).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.to_bytes(), bytes);
    }
}
