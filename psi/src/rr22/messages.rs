//! Wire messages of RR22-PSI, version 1.
//!
//! The framing is KKRT's ([`crate::kkrt::messages`]): a version byte, a tag,
//! little-endian integers, the carrier giving the length. RR22 sends KKRT's
//! [`Outputs`](crate::kkrt::messages::Outputs) (one per responder key),
//! [`Matches`](crate::kkrt::messages::Matches) and
//! [`PartSizes`](crate::kkrt::messages::PartSizes) unchanged, and these:
//!
//! | tag | message | from | body |
//! |---|---|---|---|
//! | 11 | [`Setup`] | requester | seed (16) ‖ base-OT point `A` (32) |
//! | 12 | [`BaseChoices`] | responder | 128 points `Bⱼ` (32 each) |
//! | 13 | [`CotCorrections`] | requester | first column (u8) ‖ words per column (u32) ‖ columns (u64 words) |
//! | 14 | [`Trees`] | responder | depth (u8) ‖ per tree: depth × (two 16-byte sums) ‖ correction (16) |
//! | 15 | [`Masked`] | requester | first index (u32) ‖ values (16 bytes each, 1 to [`MAX_VALUES`]) |
//!
//! Decoders check version, tag, length and bounds before allocating; the
//! roles check what depends on the session (counts, order, positions).

use super::cot::KAPPA;
use super::field::Gf;
use super::vole::TreeMessage;
use crate::PsiError;
use crate::group::POINT_LEN;
use crate::kkrt::messages::{body, header, malformed, u32_at};

/// Most values in one [`Masked`] message (1 MiB).
pub const MAX_VALUES: usize = 1 << 16;
/// Most words in one [`CotCorrections`] message (1 MiB).
pub const MAX_CORRECTION_WORDS: usize = 1 << 17;
/// Most trees a [`Trees`] message carries.
pub const MAX_TREES: usize = 2 * super::vole::MIN_TREES + 2;
/// Deepest tree.
pub const MAX_DEPTH: u8 = 32;

fn gf_at(bytes: &[u8], at: usize) -> Gf {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// The requester's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Seed of the key hashes, the OKVS rows and the code.
    pub seed: [u8; 16],
    /// The base-OT sender's point `A`.
    pub point: [u8; POINT_LEN],
}

impl Setup {
    const NAME: &'static str = "RR22 setup";
    const TAG: u8 = 11;
    const LEN: usize = 16 + POINT_LEN;

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(Self::TAG, Self::LEN);
        bytes.extend_from_slice(&self.seed);
        bytes.extend_from_slice(&self.point);
        bytes
    }

    /// Decodes and checks the length.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, Self::TAG, bytes)?;
        if b.len() != Self::LEN {
            return Err(malformed(Self::NAME, format!("{} bytes of body, expected {}", b.len(), Self::LEN)));
        }
        Ok(Self { seed: b[..16].try_into().expect("16 bytes"), point: b[16..].try_into().expect("32 bytes") })
    }
}

/// The responder's 128 base-OT points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChoices {
    pub(crate) points: Vec<[u8; POINT_LEN]>,
}

impl BaseChoices {
    const NAME: &'static str = "RR22 base choices";
    const TAG: u8 = 12;

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(Self::TAG, KAPPA * POINT_LEN);
        for point in &self.points {
            bytes.extend_from_slice(point);
        }
        bytes
    }

    /// Decodes and checks the length (points are checked by the role).
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, Self::TAG, bytes)?;
        if b.len() != KAPPA * POINT_LEN {
            return Err(malformed(Self::NAME, format!("{} bytes of body, expected {}", b.len(), KAPPA * POINT_LEN)));
        }
        Ok(Self { points: b.chunks_exact(POINT_LEN).map(|p| p.try_into().expect("32 bytes")).collect() })
    }
}

/// A run of the IKNP correction columns `uⱼ`.
#[derive(Clone, PartialEq, Eq)]
pub struct CotCorrections {
    /// The first column of the run.
    pub first_column: u8,
    /// Words in each column.
    pub words_per_column: u32,
    pub(crate) words: Vec<u64>,
}

impl std::fmt::Debug for CotCorrections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CotCorrections")
            .field("first_column", &self.first_column)
            .field("words", &self.words.len())
            .finish()
    }
}

impl CotCorrections {
    const NAME: &'static str = "RR22 OT corrections";
    const TAG: u8 = 13;

    /// Columns in the run.
    pub fn columns(&self) -> usize {
        self.words.len() / self.words_per_column.max(1) as usize
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(Self::TAG, 5 + 8 * self.words.len());
        bytes.push(self.first_column);
        bytes.extend_from_slice(&self.words_per_column.to_le_bytes());
        for word in &self.words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// Decodes and checks the shape: whole columns, within the 128.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, Self::TAG, bytes)?;
        if b.len() < 5 || !(b.len() - 5).is_multiple_of(8) {
            return Err(malformed(Self::NAME, format!("{} bytes of body is not a header and whole words", b.len())));
        }
        let (first_column, words_per_column) = (b[0], u32_at(b, 1));
        let count = (b.len() - 5) / 8;
        if count == 0 || count > MAX_CORRECTION_WORDS || words_per_column == 0 {
            return Err(malformed(Self::NAME, format!("{count} words; 1 to {MAX_CORRECTION_WORDS} are allowed")));
        }
        let columns = count / words_per_column as usize;
        if !count.is_multiple_of(words_per_column as usize) || usize::from(first_column) + columns > KAPPA {
            return Err(malformed(
                Self::NAME,
                format!(
                    "{count} words from column {first_column} are not whole columns of {words_per_column} within {KAPPA}"
                ),
            ));
        }
        let words = b[5..].chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))).collect();
        Ok(Self { first_column, words_per_column, words })
    }
}

/// The responder's punctured-PRF messages, one per tree.
#[derive(Clone, PartialEq, Eq)]
pub struct Trees {
    /// Levels of every tree.
    pub depth: u8,
    pub(crate) trees: Vec<TreeMessage>,
}

impl std::fmt::Debug for Trees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trees").field("depth", &self.depth).field("trees", &self.trees.len()).finish()
    }
}

impl Trees {
    const NAME: &'static str = "RR22 trees";
    const TAG: u8 = 14;

    /// Number of trees.
    pub fn len(&self) -> usize {
        self.trees.len()
    }

    /// Whether there are none (never true of a decoded message).
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }

    fn tree_len(depth: u8) -> usize {
        32 * usize::from(depth) + 16
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(Self::TAG, 1 + self.trees.len() * Self::tree_len(self.depth));
        bytes.push(self.depth);
        for tree in &self.trees {
            for [left, right] in &tree.levels {
                bytes.extend_from_slice(&left.to_le_bytes());
                bytes.extend_from_slice(&right.to_le_bytes());
            }
            bytes.extend_from_slice(&tree.correction.to_le_bytes());
        }
        bytes
    }

    /// Decodes and checks the depth and the count.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, Self::TAG, bytes)?;
        let Some((&depth, rest)) = b.split_first() else {
            return Err(malformed(Self::NAME, "no depth".into()));
        };
        if depth == 0 || depth > MAX_DEPTH {
            return Err(malformed(Self::NAME, format!("depth {depth}; 1 to {MAX_DEPTH} are allowed")));
        }
        let len = Self::tree_len(depth);
        let count = rest.len() / len;
        if !rest.len().is_multiple_of(len) || count == 0 || count > MAX_TREES {
            return Err(malformed(
                Self::NAME,
                format!("{} bytes is not 1 to {MAX_TREES} trees of {len} bytes", rest.len()),
            ));
        }
        let trees = rest
            .chunks_exact(len)
            .map(|t| TreeMessage {
                levels: (0..usize::from(depth)).map(|l| [gf_at(t, 32 * l), gf_at(t, 32 * l + 16)]).collect(),
                correction: gf_at(t, len - 16),
            })
            .collect();
        Ok(Self { depth, trees })
    }
}

/// A run of the requester's OKVS, masked by its VOLE share: `P + A`.
#[derive(Clone, PartialEq, Eq)]
pub struct Masked {
    /// The index of the first value.
    pub first: u32,
    pub(crate) values: Vec<Gf>,
}

impl std::fmt::Debug for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masked").field("first", &self.first).field("values", &self.values.len()).finish()
    }
}

impl Masked {
    const NAME: &'static str = "RR22 masked store";
    const TAG: u8 = 15;

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none (never true of a decoded message).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(Self::TAG, 4 + 16 * self.values.len());
        bytes.extend_from_slice(&self.first.to_le_bytes());
        for value in &self.values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Decodes and checks the count.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, Self::TAG, bytes)?;
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(16) {
            return Err(malformed(Self::NAME, format!("{} bytes of body is not an index and whole values", b.len())));
        }
        let count = (b.len() - 4) / 16;
        if count == 0 || count > MAX_VALUES {
            return Err(malformed(Self::NAME, format!("{count} values; 1 to {MAX_VALUES} are allowed")));
        }
        Ok(Self { first: u32_at(b, 0), values: b[4..].chunks_exact(16).map(|v| gf_at(v, 0)).collect() })
    }
}
