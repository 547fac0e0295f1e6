//! # Stayput zero-knowledge proofs (not built yet)
//!
//! Will hold, sans-IO: Pedersen commitments and bulletproofs range proofs
//! for federated-statistics contributions, and batched DLEQ proofs for the
//! verifiable OPRF of the blacklist query (design brief §4.2, §4.3). Empty
//! until those issues; nothing here claims to work.
#![forbid(unsafe_code)]
