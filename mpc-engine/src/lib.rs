//! # Stayput MPC engine (not built yet)
//!
//! Will hold, sans-IO: local sufficient statistics of a cohort computed
//! over arrow record batches, fixed-point encoding into the Ristretto
//! scalar field, additive secret sharing among participating nodes, and
//! TFHE post-processing of per-site aggregates (design brief §4.3). It is
//! empty until the federated-statistics issue; nothing here claims to work.
#![forbid(unsafe_code)]
