//! # Stayput learning
//!
//! Vertical joint modelling, sans-IO: a **label holder** (a bank with
//! repayment labels and some features) and a **feature holder** (a bureau
//! with other features of the same, PSI-aligned customers) train a model
//! and score new applicants without either seeing the other's columns.
//!
//! * [`paillier`] — 2048-bit Paillier: the label holder's key, the feature
//!   holder's additions.
//! * [`gradients`] — each row's gradient, hessian and a count packed as
//!   fixed-point slots into one plaintext, so a row is one ciphertext and
//!   a sum of ciphertexts is the slot-wise sum.
//! * [`binning`] — per-party quantile bins, missing values apart.
//! * [`split`] — XGBoost's split gain, leaf weights and missing-value
//!   direction over bin sums.
//! * [`boost`] — vertical SecureBoost: the label holder's and the feature
//!   holder's state machines, their model shares and joint prediction.
//! * [`logistic`] — two-party vertical logistic regression, each party
//!   with its own key, gradients masked before any decryption.
//! * [`metrics`] — how good a model is (AUC).
//! * [`wire`] — the versioned encodings of every message and model share,
//!   with validating decoders.
//!
//! No I/O, no async: nodes carry the messages.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binning;
pub mod boost;
mod error;
pub mod gradients;
pub mod logistic;
pub mod metrics;
pub mod paillier;
pub mod split;
pub mod wire;

pub use error::LearningError;
