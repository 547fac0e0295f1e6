//! # Stayput MPC engine
//!
//! Federated statistics, sans-IO (design brief §4.3):
//!
//! * [`query`] — cohort queries a researcher writes by hand (TOML/JSON):
//!   filters, measures, grouping; validated against the schema and the
//!   grant's columns before anything runs.
//! * [`local`] — a site's local sufficient statistics over arrow record
//!   batches, as one fixed-point vector every site lays out identically.
//! * [`fixed`] — the fixed-point encoding and its embedding in the
//!   Ristretto scalar field.
//! * [`sharing`] — additive secret sharing of the vectors among the sites
//!   and the requester's reconstruction of the pooled sum; any missing
//!   contribution aborts.
//! * [`finish`] — means, variances, correlations, regression from the
//!   pooled vector.
//!
//! No I/O, no async: nodes feed batches and messages in and carry what
//! comes out. TFHE post-processing (cross-site min/max, small-cell
//! suppression) is the next step of its issue and not here yet.
#![forbid(unsafe_code)]

mod error;
pub mod finish;
pub mod fixed;
pub mod local;
pub mod query;
pub mod sharing;

pub use error::MpcError;
