//! # Stayput MPC engine
//!
//! Federated statistics, sans-IO (design brief §4.3):
//!
//! * [`query`] — cohort queries a researcher writes by hand (TOML/JSON):
//!   filters, measures, grouping; validated against the schema and the
//!   grant's columns before anything runs.
//! * [`binning`] — grid cells, bands and time windows as group-by keys
//!   for observational data.
//! * [`local`] — a site's local sufficient statistics over arrow record
//!   batches, as one fixed-point vector every site lays out identically.
//! * [`fixed`] — the fixed-point encoding and its embedding in the
//!   Ristretto scalar field.
//! * [`sharing`] — additive secret sharing of the vectors among the sites
//!   and the requester's reconstruction of the pooled sum; any missing
//!   contribution aborts.
//! * [`finish`] — means, variances, correlations, regression from the
//!   pooled vector.
//! * [`privacy`] — exact discrete Laplace noise and ε budgets for
//!   aggregate-only queries.
//! * [`release`] — compute-only releases: what a data owner's node may
//!   hand out of a query (aggregates only, small groups suppressed,
//!   optional calibrated noise) as an arrow table.
//!
//! * [`fhe`] (feature `fhe`, on by default) — TFHE post-processing of
//!   per-site aggregates: cross-site min/max and small-cell suppression,
//!   evaluated under the requester's key by someone who cannot decrypt.
//! * [`score`] (feature `fhe`) — credit scores that only their subject can
//!   decrypt: institutions encrypt binned features under the subject's
//!   key, a scorer evaluates a published scorecard on them.
//!
//! No I/O, no async: nodes feed batches and messages in and carry what
//! comes out.
#![forbid(unsafe_code)]

pub mod binning;
mod error;
#[cfg(feature = "fhe")]
pub mod fhe;
pub mod finish;
pub mod fixed;
pub mod gates;
pub mod local;
pub mod privacy;
pub mod query;
pub mod release;
#[cfg(feature = "fhe")]
pub mod score;
pub mod sharing;

pub use error::MpcError;
