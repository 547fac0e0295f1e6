//! Balanced PSI from silent VOLE and an OKVS: the semi-honest protocol of
//! Raghuraman–Rindal, "Blazing Fast PSI from Improved OKVS and Subfield
//! VOLE" (CCS 2022) — the fastest mode of balanced PSI, with about a
//! quarter of KKRT's traffic.
//!
//! ## Protocol (version 1)
//!
//! The requester `A` holds keys `X` (`n_A`), the responder `B` keys `Y`
//! (`n_B`); both know the task id `T`, the mode and both sizes. All hashes
//! are keyed by `T` and `A`'s seed ([`hashing`]): each key `k` gets an OKVS
//! row `r(k)` ([`okvs`]) and a value `h(k) ∈ GF(2^128)`.
//!
//! 1. **Setup** `A → B`: the seed and the point of 128 base OTs. `A` has
//!    already solved the OKVS `P` (`m = 1.1·n_A + 128` elements) with
//!    `Decode(P, r(x)) = h(x)` for every `x ∈ X` — a fresh seed in the rare
//!    case the rows are dependent.
//! 2. **Base OTs** `B → A`: 128 points; `B`'s choice bits are its secret
//!    `Δ ∈ GF(2^128)` ([`cot`]).
//! 3. **OT corrections** `A → B`: IKNP columns for the correlated OTs the
//!    VOLE consumes (about `t·(h + 128)`, `t ≈ 256` trees of depth `h`).
//! 4. **Trees** `B → A`: the punctured-PRF level sums and corrections of
//!    the silent VOLE ([`vole`]). Now `A` holds `A_v, C` and `B` holds `B_v`
//!    with `C = B_v + A_v·Δ`, all of length `m`.
//! 5. **Masked store** `A → B`: `P + A_v`, in runs. `B` sets
//!    `K = B_v + (P + A_v)·Δ = C + P·Δ`.
//! 6. **Outputs** `B → A`: for each `y ∈ Y`, in a secret order,
//!    `H(Decode(K, r(y)) + h(y)·Δ)` truncated to ℓ bytes. For `y ∈ X` the
//!    value is `H(Decode(C, r(y)))`, which `A` computes for each of its keys.
//! 7. **Matches** `A → B` (intersection to both only): the positions that
//!    matched, as KKRT does.
//!
//! ℓ is `40 + log₂ n_A + log₂ n_B` bits (at most 16 bytes), so the
//! `n_A·n_B` comparisons give a false match with probability at most
//! 2^-40. 128-bit computational security: GF(2^128), AES-128, SHA-256,
//! Ristretto255 (≈ 126 bits) in the base OTs, and the dual-LPN parameters
//! of [`vole`].
//!
//! ## What each side learns
//!
//! | mode | requester learns | responder learns |
//! |---|---|---|
//! | intersection | `X ∩ Y`, `n_B` | `n_A` |
//! | intersection to both | `X ∩ Y`, `n_B` | `X ∩ Y`, `n_A` |
//!
//! Cardinality only stays with ECDH ([`crate::ecdh`]), as for KKRT.
//!
//! ## Threat model and security
//!
//! Semi-honest parties (RR22 Theorem 5.2, with the VOLE of [`vole`]). `B`
//! sees `P + A_v`: `A_v` is pseudorandom under dual LPN, so nothing of `X`
//! shows. For `y ∉ X`, `B`'s output is `H(Decode(C, r(y)) + (Decode(P,
//! r(y)) + h(y))·Δ)`, the second term a nonzero multiple of the `Δ` `A`
//! never learns (its random OTs give it one of two masks only), so the
//! outputs of keys outside `X` look random to `A`.
//!
//! What a malicious party can do: `A` may encode up to `m` values, not
//! `n_A`, so it could test about 1.1·`n_A` keys — the node meters `m`
//! against the grant, as it meters KKRT's bins; `A` may lie about matches
//! in both mode. `B` may send arbitrary or wrong outputs (as in any PSI
//! where the receiver learns the result), or corrupt the VOLE, giving `A`
//! a wrong result it cannot detect. RR22's malicious variant (a random
//! oracle over the decoded value and the key, and checks on the VOLE) is
//! not implemented. The seed `A` settles on is one for which its rows were
//! independent: a failure happens with probability around 2^-20 for 2^20
//! keys, so the seed says next to nothing of `X`.
//!
//! ## Memory and traffic
//!
//! `A`: 36 bytes per key (row and value), the store and its VOLE share
//! (`2·16·m`), and during the VOLE `N ≈ 2m` leaves twice (`64·m` bytes,
//! freed before the outputs). `B`: 36 bytes per key plus its order, `N`
//! leaves during the VOLE, then `16·m`. On the wire, per requester key:
//! `17.6` bytes of masked store, about 1 byte of VOLE setup, and ℓ bytes
//! per responder key (10 at 2^20 × 2^20).

// Counts and indices are bounded by `SessionParams::new` (at most 2^30
// keys a side, so every store index fits 32 bits).
#![allow(clippy::cast_possible_truncation)]

mod cot;
pub mod field;
pub mod hashing;
pub mod messages;
pub mod okvs;
mod requester;
mod responder;
pub mod vole;

pub use crate::ecdh::ResponderOutput;
pub use crate::kkrt::RequesterOutput;
pub use requester::{Rr22Prepared, Rr22Requester};
pub use responder::Rr22Responder;

use rand_core::{CryptoRng, RngCore};

use crate::PsiError;
use crate::ecdh::OutputMode;
use crate::group::TaskId;
use crate::keys::KeySet;
use crate::kkrt::messages::{Matches, Outputs};
use messages::{BaseChoices, CotCorrections, Masked, Setup, Trees};

/// Protocol label.
pub const PROTOCOL_LABEL: &[u8] = b"stayput/psi/rr22/v1";
/// Largest set either side may hold.
pub const MAX_SET_LEN: u64 = 1 << 30;

/// What a session over `parts` parts may cost the responder, in keys a
/// malicious requester could test — one per store element, as KKRT's are
/// one per bin ([`crate::kkrt::metered_bins`]) — bounded before the part
/// sizes are known: each part's store, and for a session in parts,
/// [`MAX_RESUMES`](crate::kkrt::MAX_RESUMES) parts of at most
/// [`max_part_len`](crate::kkrt::max_part_len) keys run again.
pub fn metered_keys(requester_len: u64, parts: u32) -> u64 {
    if parts <= 1 {
        okvs::columns(requester_len)
    } else {
        let one_part = okvs::columns(crate::kkrt::max_part_len(requester_len, parts));
        okvs::columns(requester_len) + 192 * u64::from(parts) + u64::from(crate::kkrt::MAX_RESUMES) * one_part
    }
}

/// What both parties agree on before the first message.
#[derive(Debug, Clone)]
pub struct SessionParams {
    task: TaskId,
    mode: OutputMode,
    requester_len: u64,
    responder_len: u64,
}

impl SessionParams {
    /// Validates the mode and the sizes.
    pub fn new(task: TaskId, mode: OutputMode, requester_len: u64, responder_len: u64) -> Result<Self, PsiError> {
        if mode == OutputMode::CardinalityOnly {
            return Err(PsiError::ModeNotOffered { protocol: "rr22", mode });
        }
        for len in [requester_len, responder_len] {
            if len > MAX_SET_LEN {
                return Err(PsiError::SetTooLarge { protocol: "rr22", len, max: MAX_SET_LEN });
            }
        }
        Ok(Self { task, mode, requester_len, responder_len })
    }

    /// RR22's parameters for the session `other` describes (the task, the
    /// mode and both sizes of a KKRT session: what the nodes carry for
    /// either OT protocol).
    pub fn like(other: &crate::kkrt::SessionParams) -> Result<Self, PsiError> {
        Self::new(other.task().clone(), other.mode(), other.requester_len(), other.responder_len())
    }

    /// The task this session is bound to.
    pub fn task(&self) -> &TaskId {
        &self.task
    }

    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// The requester's announced set size.
    pub fn requester_len(&self) -> u64 {
        self.requester_len
    }

    /// The responder's announced set size.
    pub fn responder_len(&self) -> u64 {
        self.responder_len
    }

    /// Elements of the requester's store (and of the VOLE).
    pub fn store_len(&self) -> u64 {
        okvs::columns(self.requester_len)
    }

    /// The VOLE's sizes.
    pub fn shape(&self) -> vole::Shape {
        vole::Shape::new(self.store_len() as usize)
    }

    /// Outputs the responder sends: one per key.
    pub fn output_count(&self) -> u64 {
        self.responder_len
    }

    /// Bytes per output.
    pub fn output_len(&self) -> usize {
        hashing::output_len(self.requester_len, self.responder_len)
    }

    fn check_len<K: KeySet>(keys: &K, announced: u64) -> Result<(), PsiError> {
        if keys.len() as u64 != announced {
            return Err(PsiError::KeyCountMismatch { announced, actual: keys.len() as u64 });
        }
        Ok(())
    }
}

/// A message of the protocol, named for transcripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// [`Setup`].
    Setup,
    /// [`BaseChoices`].
    BaseChoices,
    /// [`CotCorrections`].
    CotCorrections,
    /// [`Trees`].
    Trees,
    /// [`Masked`].
    Masked,
    /// [`Outputs`].
    Outputs,
    /// [`Matches`].
    Matches,
}

/// Runs a whole session in memory, every message through its encoding and
/// decoder: the reference for tests and the in-memory benchmark.
pub fn run_in_memory<A: KeySet, B: KeySet>(
    params: &SessionParams,
    requester_keys: &A,
    responder_keys: &B,
    requester_rng: &mut (impl RngCore + CryptoRng),
    responder_rng: &mut (impl RngCore + CryptoRng),
) -> Result<(RequesterOutput, ResponderOutput), PsiError> {
    run_observed(params, requester_keys, responder_keys, requester_rng, responder_rng, |_, _| {})
}

/// [`run_in_memory`], showing every wire message to `observe`.
pub fn run_observed<A: KeySet, B: KeySet>(
    params: &SessionParams,
    requester_keys: &A,
    responder_keys: &B,
    requester_rng: &mut (impl RngCore + CryptoRng),
    responder_rng: &mut (impl RngCore + CryptoRng),
    mut observe: impl FnMut(Step, &[u8]),
) -> Result<(RequesterOutput, ResponderOutput), PsiError> {
    let mut requester = Rr22Requester::new(params.clone(), requester_keys, requester_rng)?;
    let setup = requester.setup().to_bytes();
    observe(Step::Setup, &setup);
    let (mut responder, choices) =
        Rr22Responder::new(params.clone(), responder_keys, &Setup::decode(&setup)?, responder_rng)?;
    let choices = choices.to_bytes();
    observe(Step::BaseChoices, &choices);
    requester.absorb_choices(BaseChoices::decode(&choices)?)?;
    while let Some(run) = requester.next_corrections()? {
        let bytes = run.to_bytes();
        observe(Step::CotCorrections, &bytes);
        responder.absorb_corrections(CotCorrections::decode(&bytes)?)?;
    }
    let trees = responder.trees()?.to_bytes();
    observe(Step::Trees, &trees);
    requester.absorb_trees(Trees::decode(&trees)?)?;
    while let Some(run) = requester.next_masked()? {
        let bytes = run.to_bytes();
        observe(Step::Masked, &bytes);
        responder.absorb_masked(Masked::decode(&bytes)?)?;
    }
    while let Some(run) = responder.next_outputs()? {
        let bytes = run.to_bytes();
        observe(Step::Outputs, &bytes);
        requester.absorb_outputs(Outputs::decode(&bytes)?)?;
    }
    let output = requester.finish()?;
    for matches in output.matches() {
        let bytes = matches.to_bytes();
        observe(Step::Matches, &bytes);
        responder.absorb_matches(Matches::decode(&bytes)?)?;
    }
    Ok((output, responder.finish()?))
}

#[cfg(test)]
mod tests;
