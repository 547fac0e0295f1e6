//! The crate's one error type.

use crate::ecdh::Phase;

/// Everything that can go wrong in a PSI session, with what the caller needs
/// to say what happened and what to do. Variants never carry key material or
/// input keys.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PsiError {
    /// A point encoding was not a canonical Ristretto255 encoding.
    #[error(
        "point {index} of the batch is not a canonical Ristretto255 encoding; the peer is faulty or not speaking this protocol version"
    )]
    NonCanonicalPoint { index: usize },
    /// An X25519 u-coordinate that is not below 2^255 - 19.
    #[error(
        "point {index} of the batch is not a canonical X25519 u-coordinate; the peer is faulty or not speaking this protocol version"
    )]
    NonCanonicalCoordinate { index: usize },
    /// A point of small order (zero, or one that blinding maps to zero): a
    /// small-subgroup probe or a faulty peer.
    #[error("point {index} of the batch has small order; the peer is faulty or malicious")]
    SmallOrderPoint { index: usize },
    /// Labeled PSI input or answers that are refused.
    #[error("labeled PSI: {0}")]
    Labeled(&'static str),
    /// A point decoded to the identity element, which would reveal nothing
    /// useful and is a classic small-subgroup probe.
    #[error("point {index} of the batch is the identity element; the peer is faulty or malicious")]
    IdentityPoint { index: usize },
    /// A message's byte length is not a whole number of items.
    #[error(
        "a {message} of {len} bytes is not a whole number of {item_len}-byte items; the message was truncated or corrupted"
    )]
    RaggedMessage { message: &'static str, len: usize, item_len: usize },
    /// A message carried no items.
    #[error("an empty {message} was received; batches carry at least one item")]
    EmptyMessage { message: &'static str },
    /// A message carried more items than one batch may.
    #[error("a {message} carries {count} items, more than the limit of {max} per batch")]
    OversizedBatch { message: &'static str, count: usize, max: usize },
    /// The peer sent more items in a phase than it announced.
    #[error("the peer sent {received} items in the {phase} phase but announced {announced}")]
    TooManyItems { phase: Phase, announced: u64, received: u64 },
    /// A phase ended before every announced item arrived.
    #[error("the {phase} phase ended after {received} of {announced} announced items; the peer stopped early")]
    MissingItems { phase: Phase, announced: u64, received: u64 },
    /// A reply batch did not match the request batch it answers.
    #[error("a reply of {got} tags answers a request batch of {expected} points; the peer is faulty")]
    ReplyMismatch { expected: usize, got: usize },
    /// A reply arrived with no request outstanding.
    #[error("a reply arrived although no request batch is waiting for one")]
    UnexpectedReply,
    /// A message that this output mode does not use.
    #[error("a {message} is not part of the {mode} output mode")]
    NotInMode { message: &'static str, mode: crate::ecdh::OutputMode },
    /// The sets are too large for the tag length to keep false matches negligible.
    #[error(
        "sets of {requester} and {responder} keys exceed what this protocol version supports (product at most 2^56, each at most 2^32 - 1); split the input"
    )]
    SetsTooLarge { requester: u64, responder: u64 },
    /// The task id is empty or too long to serve as a domain separator.
    #[error("a task id must be 1 to {max} bytes, got {len}")]
    BadTaskId { len: usize, max: usize },
    /// The batch size is outside the supported range.
    #[error("a batch size must be 1 to {max}, got {got}")]
    BadBatchSize { got: usize, max: usize },
    /// A role was given a key set whose size differs from the announced one.
    #[error("the key set holds {actual} keys but the session announced {announced}")]
    KeyCountMismatch { announced: u64, actual: u64 },
    /// A normalisation rule name that is not known.
    #[error("unknown normalisation rule '{name}'; known rules: {known}")]
    UnknownRule { name: String, known: &'static str },
    /// A key too long to encode.
    #[error("a key part of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLong { len: usize, max: usize },
    /// A KKRT message of a format version this build does not speak.
    #[error(
        "a {message} of format version {got} arrived; this node speaks version {supported}; upgrade the older node"
    )]
    UnsupportedMessageVersion { message: &'static str, got: u8, supported: u8 },
    /// A message that does not decode, or does not fit the session.
    #[error("a malformed {message}: {reason}; the peer is faulty or not speaking this protocol version")]
    Malformed { message: &'static str, reason: String },
    /// A message that arrived, or was asked for, at the wrong step.
    #[error("{message} out of turn; the peer does not follow the protocol")]
    OutOfTurn { message: &'static str },
    /// More items than the session announced.
    #[error("the peer sent {received} {message} items but the session announced {announced}")]
    TooMany { message: &'static str, announced: u64, received: u64 },
    /// Fewer items than the session announced.
    #[error("the session ended after {received} of {announced} announced {message} items; the peer stopped early")]
    TooFew { message: &'static str, announced: u64, received: u64 },
    /// Cuckoo hashing failed with every seed tried (probability below 2^-40 each).
    #[error("could not place {keys} keys in cuckoo bins with any of the seeds tried; run the task again")]
    CuckooFailed { keys: u64 },
    /// An output mode the protocol does not offer.
    #[error("the {protocol} protocol does not offer the {mode} mode; use the ecdh protocol for it")]
    ModeNotOffered { protocol: &'static str, mode: crate::ecdh::OutputMode },
    /// A set larger than the protocol supports.
    #[error("a set of {len} keys exceeds what the {protocol} protocol supports ({max}); split the input")]
    SetTooLarge { protocol: &'static str, len: u64, max: u64 },
}
