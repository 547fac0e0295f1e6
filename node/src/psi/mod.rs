//! Balanced private set intersection between two nodes (ledger kinds
//! `psi` and `psi_cardinality`, `stayput task psi`, the `PsiPeer`
//! service), over the sans-IO protocol of [`stayput_psi::ecdh`].
//!
//! * [`owner`] — the data owner's `PsiPeer` service: validates the open
//!   message, takes the serve path (ledger check and use record before any
//!   key is touched), runs the responder's role.
//! * [`requester`] — the requesting organisation's side: loads its keys,
//!   dials the owner, runs the requester's role, writes the result.

pub mod owner;
pub mod requester;
