//! The crate's one error type. Entries are named by index, never by value.

/// Everything a proof can fail at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZkError {
    #[error("expected {expected} items, got {got}")]
    Shape { expected: usize, got: usize },
    #[error("{got} entries exceed the limit of {max}")]
    TooMany { got: usize, max: usize },
    #[error("entry {entry} lies outside its declared bounds; the contribution is refused")]
    OutOfBounds { entry: usize },
    #[error("the bounds of entry {entry} are empty or wider than 2^64")]
    BoundsTooWide { entry: usize },
    #[error("commitment {entry} is not a valid point")]
    BadPoint { entry: usize },
    #[error("range proof {chunk} does not verify: an entry is outside its declared bounds")]
    RangeProofFails { chunk: usize },
    #[error("the pooled opening does not match the commitments at entry {entry}")]
    OpeningMismatch { entry: usize },
    #[error("malformed contribution: {0}")]
    Malformed(&'static str),
    #[error("the DLEQ proof does not verify: the evaluations were not all made with the published key")]
    DleqFails,
    #[error("proving failed: {0}")]
    Proof(String),
}
