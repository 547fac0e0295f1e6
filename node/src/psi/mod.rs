//! Balanced private set intersection between two nodes (ledger kinds
//! `psi` and `psi_cardinality`, `stayput task psi`, the `PsiPeer`
//! service), over the sans-IO protocol of [`stayput_psi::ecdh`].
//!
//! * [`owner`] — the data owner's `PsiPeer` service: validates the open
//!   message, takes the serve path (ledger check and use record before any
//!   key is touched), runs the responder's role.
//! * [`requester`] — the requesting organisation's side: loads its keys,
//!   dials the owner, runs the requester's role, writes the result.
//! * `progress` — a task run in parts, remembered on both nodes' disks so
//!   it resumes from its last completed part after either node died.

pub mod owner;
mod progress;
pub mod requester;
