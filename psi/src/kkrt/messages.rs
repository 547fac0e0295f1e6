//! Wire messages of KKRT-PSI, version 1.
//!
//! Every message starts with the version byte ([`VERSION`]) and a tag; the
//! carrier gives the length. Integers are little-endian.
//!
//! | tag | message | from | body |
//! |---|---|---|---|
//! | 1 | [`Setup`] | requester | cuckoo seed (16) ‖ bins (u32) ‖ base-OT point `A` (32) |
//! | 2 | [`BaseChoices`] | responder | 512 points `Bⱼ` (32 each) |
//! | 3 | [`Corrections`] | requester | first bin (u32) ‖ rows (64 bytes each, 1 to [`MAX_ROWS`]) |
//! | 4 | [`Outputs`] | responder | output length ℓ (u8) ‖ outputs (ℓ bytes each, 1 to [`MAX_OUTPUTS`]) |
//! | 5 | [`Matches`] | requester | last (u8: 0 or 1) ‖ positions (u32 each, 0 to [`MAX_OUTPUTS`]) |
//! | 6 | [`PartSizes`] | either | sizes (u64 each, 1 to [`MAX_PARTS`](crate::partition::MAX_PARTS)) |
//!
//! Decoders check version, tag, length and bounds before allocating; the
//! roles check what depends on the session (bins, order, ℓ, positions).

use super::ot::{ROW_BYTES, ROW_WORDS, Row, WIDTH};
use crate::PsiError;
use crate::group::POINT_LEN;

/// The message format's version.
pub const VERSION: u8 = 1;
/// Most rows in one [`Corrections`] message (1 MiB).
pub const MAX_ROWS: usize = 1 << 14;
/// Most outputs or positions in one message.
pub const MAX_OUTPUTS: usize = 1 << 16;

const HEADER: usize = 2;

pub(crate) fn header(tag: u8, capacity: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + capacity);
    bytes.extend_from_slice(&[VERSION, tag]);
    bytes
}

pub(crate) fn body<'a>(message: &'static str, tag: u8, bytes: &'a [u8]) -> Result<&'a [u8], PsiError> {
    match bytes {
        [] | [_] => Err(malformed(message, format!("{} bytes is shorter than the header", bytes.len()))),
        [version, ..] if *version != VERSION => {
            Err(PsiError::UnsupportedMessageVersion { message, got: *version, supported: VERSION })
        }
        [_, got, ..] if *got != tag => Err(malformed(message, format!("tag {got} where {tag} was expected"))),
        [_, _, rest @ ..] => Ok(rest),
    }
}

pub(crate) fn malformed(message: &'static str, reason: String) -> PsiError {
    PsiError::Malformed { message, reason }
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The requester's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Seed of the cuckoo hash functions and the code.
    pub seed: [u8; 16],
    /// Bins of the requester's cuckoo table.
    pub bins: u32,
    /// The base-OT sender's point `A`.
    pub point: [u8; POINT_LEN],
}

impl Setup {
    const NAME: &'static str = "KKRT setup";
    const LEN: usize = 16 + 4 + POINT_LEN;

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(1, Self::LEN);
        bytes.extend_from_slice(&self.seed);
        bytes.extend_from_slice(&self.bins.to_le_bytes());
        bytes.extend_from_slice(&self.point);
        bytes
    }

    /// Decodes and checks the length.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, 1, bytes)?;
        if b.len() != Self::LEN {
            return Err(malformed(Self::NAME, format!("{} bytes of body, expected {}", b.len(), Self::LEN)));
        }
        Ok(Self {
            seed: b[..16].try_into().expect("16 bytes"),
            bins: u32_at(b, 16),
            point: b[20..].try_into().expect("32 bytes"),
        })
    }
}

/// The responder's base-OT points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChoices {
    pub(crate) points: Vec<[u8; POINT_LEN]>,
}

impl BaseChoices {
    const NAME: &'static str = "KKRT base choices";

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(2, WIDTH * POINT_LEN);
        for point in &self.points {
            bytes.extend_from_slice(point);
        }
        bytes
    }

    /// Decodes and checks the length (points are checked by the role).
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, 2, bytes)?;
        if b.len() != WIDTH * POINT_LEN {
            return Err(malformed(Self::NAME, format!("{} bytes of body, expected {}", b.len(), WIDTH * POINT_LEN)));
        }
        Ok(Self { points: b.chunks_exact(POINT_LEN).map(|p| p.try_into().expect("32 bytes")).collect() })
    }
}

/// A run of the requester's correction rows `uᵦ`.
#[derive(Clone, PartialEq, Eq)]
pub struct Corrections {
    /// The bin of the first row.
    pub first_bin: u32,
    pub(crate) rows: Vec<Row>,
}

impl std::fmt::Debug for Corrections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corrections").field("first_bin", &self.first_bin).field("rows", &self.rows.len()).finish()
    }
}

impl Corrections {
    const NAME: &'static str = "KKRT corrections";

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows (never true of a decoded message).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(3, 4 + self.rows.len() * ROW_BYTES);
        bytes.extend_from_slice(&self.first_bin.to_le_bytes());
        for row in &self.rows {
            for word in row {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        bytes
    }

    /// Decodes and checks the row count.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, 3, bytes)?;
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(ROW_BYTES) {
            return Err(malformed(Self::NAME, format!("{} bytes of body is not a bin and whole rows", b.len())));
        }
        let count = (b.len() - 4) / ROW_BYTES;
        if count == 0 || count > MAX_ROWS {
            return Err(malformed(Self::NAME, format!("{count} rows; 1 to {MAX_ROWS} are allowed")));
        }
        let rows = b[4..]
            .chunks_exact(ROW_BYTES)
            .map(|r| std::array::from_fn(|w| u64::from_le_bytes(r[w * 8..w * 8 + 8].try_into().expect("8 bytes"))))
            .collect();
        Ok(Self { first_bin: u32_at(b, 0), rows })
    }
}

/// A run of the responder's OPRF outputs, in its secret order.
#[derive(Clone, PartialEq, Eq)]
pub struct Outputs {
    pub(crate) len: u8,
    pub(crate) values: Vec<u128>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs").field("len", &self.len).field("values", &self.values.len()).finish()
    }
}

impl Outputs {
    const NAME: &'static str = "KKRT outputs";

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none (never true of a decoded message).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = usize::from(self.len);
        let mut bytes = header(4, 1 + self.values.len() * len);
        bytes.push(self.len);
        for value in &self.values {
            bytes.extend_from_slice(&value.to_le_bytes()[..len]);
        }
        bytes
    }

    /// Decodes and checks ℓ and the count.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, 4, bytes)?;
        let Some((&len, values)) = b.split_first() else {
            return Err(malformed(Self::NAME, "no output length".into()));
        };
        if !(1..=16).contains(&len) {
            return Err(malformed(Self::NAME, format!("output length {len}; 1 to 16 bytes are allowed")));
        }
        let len = usize::from(len);
        if !values.len().is_multiple_of(len) {
            return Err(malformed(
                Self::NAME,
                format!("{} bytes is not a whole number of {len}-byte outputs", values.len()),
            ));
        }
        let count = values.len() / len;
        if count == 0 || count > MAX_OUTPUTS {
            return Err(malformed(Self::NAME, format!("{count} outputs; 1 to {MAX_OUTPUTS} are allowed")));
        }
        let values = values
            .chunks_exact(len)
            .map(|v| {
                let mut full = [0u8; 16];
                full[..len].copy_from_slice(v);
                u128::from_le_bytes(full)
            })
            .collect();
        Ok(Self { len: len as u8, values })
    }
}

/// Positions of the responder's outputs that matched (intersection to
/// both), ascending across messages; the last message says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches {
    /// Whether this is the last message.
    pub last: bool,
    pub(crate) positions: Vec<u32>,
}

impl Matches {
    const NAME: &'static str = "KKRT matches";

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(5, 1 + 4 * self.positions.len());
        bytes.push(u8::from(self.last));
        for p in &self.positions {
            bytes.extend_from_slice(&p.to_le_bytes());
        }
        bytes
    }

    /// Decodes and checks the flag and the count.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, 5, bytes)?;
        let Some((&last, positions)) = b.split_first() else {
            return Err(malformed(Self::NAME, "no last-message flag".into()));
        };
        if last > 1 {
            return Err(malformed(Self::NAME, format!("last-message flag {last}; 0 or 1 is allowed")));
        }
        if !positions.len().is_multiple_of(4) || positions.len() / 4 > MAX_OUTPUTS {
            return Err(malformed(
                Self::NAME,
                format!("{} bytes of positions; whole u32s, at most {MAX_OUTPUTS}", positions.len()),
            ));
        }
        Ok(Self { last: last == 1, positions: positions.chunks_exact(4).map(|p| u32_at(p, 0)).collect() })
    }
}

/// The sizes of a side's parts, when a set runs part by part
/// ([`crate::partition`]): each side sends its own before the first part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSizes {
    /// Keys in each part.
    pub sizes: Vec<u64>,
}

impl PartSizes {
    const NAME: &'static str = "KKRT part sizes";

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = header(6, 8 * self.sizes.len());
        for size in &self.sizes {
            bytes.extend_from_slice(&size.to_le_bytes());
        }
        bytes
    }

    /// Decodes and checks the count.
    pub fn decode(bytes: &[u8]) -> Result<Self, PsiError> {
        let b = body(Self::NAME, 6, bytes)?;
        let max = crate::partition::MAX_PARTS as usize;
        if b.is_empty() || !b.len().is_multiple_of(8) || b.len() / 8 > max {
            return Err(malformed(Self::NAME, format!("{} bytes; 1 to {max} sizes of 8 bytes", b.len())));
        }
        Ok(Self { sizes: b.chunks_exact(8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes"))).collect() })
    }
}

const _: () = assert!(ROW_BYTES == ROW_WORDS * 8);
