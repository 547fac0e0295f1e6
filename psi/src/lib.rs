//! # Stayput PSI — sans-IO private set intersection
//!
//! This crate holds the set-intersection protocols that Stayput nodes run with
//! each other. It performs no I/O, spawns no tasks and knows nothing about
//! gRPC: each protocol is a pair of role types that take decoded messages in
//! and hand encoded messages out, so the whole protocol runs in a unit test
//! with no network ([`ecdh::run_in_memory`]) and the node only carries bytes.
//!
//! * [`ecdh`] — balanced PSI by commutative blinding over X25519
//!   (the "ECDH-PSI" of Meadows 1986 / Huberman–Franklin–Hogg 1999), with
//!   three output modes: intersection to the requester, to both parties, or
//!   cardinality only.
//! * [`kkrt`] — balanced PSI from oblivious transfer (KKRT16: base OTs,
//!   OT extension into a batched OPRF, cuckoo hashing): the fast mode, for
//!   millions of keys, in intersection and intersection-to-both modes.
//! * [`partition`] — splitting a key set into parts by a keyed hash per
//!   task, so large sets run as independent sessions part by part (and
//!   part `i` of each side can run on its own machine).
//! * [`keys`] — the inputs: how key columns are normalised and encoded into
//!   the byte strings both sides hash, identically.
//! * [`messages`] — the wire messages, their canonical encodings and their
//!   validating decoders.
//! * [`labeled`] — unbalanced labeled PSI over a verifiable OPRF (the
//!   blacklist query): encoded sets with sealed labels, versions and deltas,
//!   blinded queries answered with a batched DLEQ proof.
//! * [`oprf`] — the verifiable oblivious PRF both the blacklist query and
//!   private record lookup are built on.
//! * [`group`] — hash-to-group with task-bound domain separation, secret
//!   scalars, and the batched multiply-and-compress kernel.
//!
//! Heavy work (hashing to the curve, scalar multiplication) runs on the rayon
//! pool inside the calls that produce or absorb a batch; callers on an async
//! runtime must call them from a blocking context.
#![forbid(unsafe_code)]

pub mod ecdh;
mod error;
pub mod group;
pub mod keys;
pub mod kkrt;
pub mod labeled;
mod matching;
pub mod messages;
pub mod oprf;
pub mod partition;
mod permutation;
pub mod rr22;
#[cfg(test)]
mod transcripts;

pub use error::PsiError;

/// Which balanced-PSI protocol a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// [`ecdh`]: commutative blinding; every mode, including cardinality.
    #[default]
    Ecdh,
    /// [`kkrt`]: OT-based, an order of magnitude faster; intersection modes.
    Kkrt,
    /// [`rr22`]: silent VOLE and an OKVS, faster still with a quarter of
    /// KKRT's traffic; intersection modes.
    Rr22,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Self::Ecdh, Self::Kkrt, Self::Rr22];

    /// The protocol's name on the command line, in task parameters and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ecdh => "ecdh",
            Self::Kkrt => "kkrt",
            Self::Rr22 => "rr22",
        }
    }

    /// Whether the protocol is OT-based: intersection modes only, and a set
    /// may run in parts ([`partition`]) and resume.
    pub fn is_ot(self) -> bool {
        matches!(self, Self::Kkrt | Self::Rr22)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown PSI protocol '{s}'; use ecdh, kkrt or rr22"))
    }
}
