//! The crate's one error type. Messages name columns and counts, never a
//! value or a row.

/// Everything the engine can fail at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MpcError {
    #[error("invalid query: {0}")]
    Query(String),
    #[error("unknown column '{column}'; the dataset has: {available}")]
    UnknownColumn { column: String, available: String },
    #[error("the grant does not allow column '{column}' (it allows: {allowed})")]
    ColumnNotAllowed { column: String, allowed: String },
    #[error("column '{column}' has values that are not numbers ({count} of them); clean them or filter them out")]
    NotNumeric { column: String, count: usize },
    #[error(
        "column '{column}' has {count} values outside its declared range [{low}, {high}]; widen the range in the query or filter them out"
    )]
    OutsideRange { column: String, count: usize, low: f64, high: f64 },
    #[error("a value of column '{column}' is too large for the declared precision; lower the precision")]
    OutOfRange { column: String },
    #[error("a sum over column '{column}' overflows; lower the precision or split the query")]
    Overflow { column: String },
    #[error("arrow: {0}")]
    Arrow(String),
    #[error("expected {expected} entries, got {got}")]
    Shape { expected: usize, got: usize },
    #[error("a share holds a non-canonical scalar")]
    NonCanonical,
    #[error("secret sharing needs at least 2 parties, not {0}")]
    TooFewParties(usize),
    #[error("'{0}' is not a party of this aggregation")]
    UnexpectedParty(String),
    #[error("'{0}' sent twice")]
    Duplicate(String),
    #[error("no contribution from {0}; the aggregation is aborted and nothing is released")]
    Missing(String),
    #[error("the pooled vector does not decode to integers: a contribution was corrupted")]
    NotAnInteger,
    #[error("{0}")]
    Budget(String),
    #[error("homomorphic post-processing: {0}")]
    Fhe(String),
}
