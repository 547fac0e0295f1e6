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
    /// A peer's message does not fit the protocol's state.
    #[error("protocol violation: {0}")]
    Protocol(String),
}
