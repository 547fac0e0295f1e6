//! Balanced private set intersection between two nodes (ledger kinds
//! `psi` and `psi_cardinality`, `stayput task psi`, the `PsiPeer`
//! service), over the sans-IO protocols of [`stayput_psi::ecdh`] and
//! [`stayput_psi::kkrt`].
//!
//! * [`owner`] — the data owner's `PsiPeer` service: validates the open
//!   message, takes the serve path (ledger check and use record before any
//!   key is touched), runs the responder's role.
//! * [`requester`] — the requesting organisation's side: loads its keys,
//!   dials the owner, runs the requester's role, writes the result.
//! * [`buckets`] — a task's keys split into its parts on disk, one part in
//!   memory at a time, so a set bigger than memory runs part by part.
//! * [`shards`] — a task run as shards: which keys a shard keeps, under a
//!   key both organisations derive alone.
//! * `progress` — a task run in parts, remembered on both nodes' disks so
//!   it resumes from its last completed part after either node died.

/// The `PsiPeer` session's version. Version 2 runs ECDH over X25519
/// (version 1 ran it over Ristretto255; a version-1 node is refused at the
/// open, before anything is metered).
pub const PROTOCOL_VERSION: u32 = 2;

pub mod buckets;
pub mod owner;
mod progress;
pub mod requester;
pub mod shards;
