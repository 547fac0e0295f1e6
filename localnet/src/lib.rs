//! # Stayput local consortium
//!
//! A whole consortium on loopback, in this process, built from the same
//! files an operator writes by hand: the consortium CA and each
//! organisation's certificate, node configurations, running nodes, and —
//! for [`LocalConsortium`] — each organisation's ed25519 key and the
//! operator's coordinator with its embedded ledger, every member admitted
//! with its node's endpoint. The demo (`stayput demo`), the benchmarks
//! (`stayput bench`) and the consortium's end-to-end tests (`tests/`) all
//! start here.
//!
//! * [`nodes`] — the members' nodes alone ([`LocalNet`]), without a
//!   coordinator or ledger.
//! * [`consortium`] — the nodes with the operator's coordinator and the
//!   embedded ledger ([`LocalConsortium`]).
//!
//! It depends on both the node and the coordinator, so neither of them
//! depends on the other (checked by `cli/tests/architecture.rs`).
#![forbid(unsafe_code)]

pub mod consortium;
mod error;
pub mod nodes;

pub use consortium::{LocalConsortium, OPERATOR, Participant};
pub use error::LocalnetError;
pub use nodes::{DatasetSpec, LocalNet, OrgSpec, write_consortium};
