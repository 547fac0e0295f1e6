//! The crate's one error type.

/// What went wrong in a learning protocol step.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LearningError {
    /// A key was malformed or too weak.
    #[error("bad Paillier key: {0}")]
    BadKey(String),
    /// A ciphertext from a peer was malformed.
    #[error("bad ciphertext from the peer: {0}")]
    BadCiphertext(String),
    /// A plaintext does not fit below the modulus.
    #[error("a plaintext must be below the Paillier modulus n")]
    PlaintextTooLarge,
    /// A gradient, hessian or feature value outside the bounds the
    /// encoding was made for (the value itself is data, so it is not kept).
    #[error("a {what} is outside [{min}, {max}]: the objective's gradients and the features must be bounded")]
    OutOfRange {
        /// Which quantity.
        what: &'static str,
        /// The lower bound.
        min: f64,
        /// The upper bound.
        max: f64,
    },
    /// More rows than the codec's slots can sum without overflow.
    #[error("{rows} rows exceed the {max} this encoding sums without overflow")]
    TooManyRows {
        /// Rows asked for.
        rows: u64,
        /// The codec's bound.
        max: u64,
    },
    /// Training or prediction parameters out of range.
    #[error("bad parameter: {0}")]
    BadParameter(String),
    /// Bytes that are not a well-formed message or model share.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Bytes of a format version this build does not read.
    #[error("{what} of format version {got}; this node reads version {supported} (upgrade the older side)")]
    UnsupportedVersion {
        /// What was being read.
        what: &'static str,
        /// The version found.
        got: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A peer's message does not fit the protocol's state.
    #[error("protocol violation: {0}")]
    Protocol(String),
}
