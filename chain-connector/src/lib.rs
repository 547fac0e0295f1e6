//! # Stayput chain connector
//!
//! The ledger is where the consortium's trust lives: members, dataset
//! versions, grants, tasks, use records and result digests. This crate
//! holds:
//!
//! * [`records`] — the records, their canonical encoding ([`codec`]) and
//!   ed25519 signatures; a record's hash is the same on every backend.
//! * [`rules`] — who may write what, and when a record is refused, as a
//!   state machine every backend enforces.
//! * [`ledger`] — the [`Ledger`] trait both backends implement, and
//!   [`ledger::subscribe`] to follow it from a height.
//! * [`embedded`] — the default backend: a hash-chained, operator-sealed,
//!   Merkle-rooted block log in a redb file, re-verified on open, with
//!   offline-verifiable inclusion proofs ([`block`], [`merkle`]).
//! * [`conformance`] — the suite every backend must pass unchanged.
//! * [`tasks`] — signed task requests (what a requester sends the
//!   coordinator), the canonical task parameters the ledger digests, and
//!   what a task id may be.
//!
//! * [`evm`] — the EVM backend: one Solidity contract
//!   (`contracts/StayputLedger.sol`) on any EVM chain over JSON-RPC, and an
//!   [`evm::Anvil`] helper for tests.
//!
//! The backends, [`ledger`] and [`conformance`] are the default feature
//! `backends`; without it only the records, tasks, blocks and codecs build
//! (what the fuzz targets need).
#![forbid(unsafe_code)]

pub mod block;
pub mod codec;
#[cfg(feature = "backends")]
pub mod conformance;
#[cfg(feature = "backends")]
pub mod embedded;
mod error;
#[cfg(feature = "backends")]
pub mod evm;
pub mod keys;
#[cfg(feature = "backends")]
pub mod ledger;
pub mod merkle;
pub mod records;
pub mod rules;
pub mod tasks;

pub use error::LedgerError;
#[cfg(feature = "backends")]
pub use ledger::Ledger;
