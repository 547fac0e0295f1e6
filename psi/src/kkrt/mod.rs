//! Balanced PSI from oblivious transfer: the batched OPRF of
//! Kolesnikov–Kumaresan–Rosulek–Trieu (KKRT, CCS 2016) with cuckoo hashing
//! — the fast mode of balanced PSI, for sets of millions of keys.
//!
//! ## Protocol (version 1)
//!
//! The requester `A` holds keys `X` (`n_A`), the responder `B` keys `Y`
//! (`n_B`); both know the task id `T`, the mode and both sizes.
//!
//! 1. **Setup** `A → B`: `A` draws a seed, hashes every key to an identity
//!    `x̂` and three bins ([`hashing`]) and places each key in one of its
//!    bins by cuckoo hashing — `m = 1.27·n_A` bins, at most one key each
//!    (a fresh seed is drawn in the rare case insertion fails). It sends the
//!    seed, `m`, and the point `A` of the base OTs ([`ot`]).
//! 2. **Base OTs** `B → A`: 512 points; `B` ends with a secret `s ∈ {0,1}⁵¹²`
//!    and seeds `kⱼ^{sⱼ}`, `A` with both seeds of each.
//! 3. **Corrections** `A → B`, in runs of bins: with `tᵦ` and `gᵦ` row `b`
//!    of the matrices expanded from the seeds `k⁰` and `k¹`, and `cᵦ` the
//!    512-bit code `C(x̂, i)` of the key placed in bin `b` by hash function
//!    `i` (zero for an empty bin), `A` sends `uᵦ = tᵦ ⊕ gᵦ ⊕ cᵦ`. `B`
//!    computes `qᵦ = G(k^s)ᵦ ⊕ (uᵦ ∧ s) = tᵦ ⊕ (cᵦ ∧ s)`. The OPRF of bin
//!    `b` is `F_b(v) = H(b, qᵦ ⊕ (C(v) ∧ s))`, and `A` knows its value at
//!    its own key: `H(b, tᵦ)`.
//! 4. **Outputs** `B → A`: for every key `y` and every hash function `i`,
//!    `F_{hᵢ(y)}(ŷ, i)` truncated to `ℓ` bytes — `3·n_B` values, the keys in
//!    a secret random order (a fresh shuffle), each key's three outputs
//!    together. `A` keeps its keys whose value is among them. (That three
//!    outputs share a key tells `A` nothing: outside the intersection they
//!    are pseudorandom.)
//! 5. **Matches** `A → B` (intersection to both only): the positions of the
//!    outputs that matched, ascending; `B` maps them back to its keys.
//!
//! A false match needs two different keys with equal `ℓ`-byte outputs:
//! [`hashing::output_len`] makes `ℓ` long enough that the `n_A·3·n_B`
//! comparisons give one with probability at most 2^-40. Cuckoo hashing with
//! three functions and 1.27·n bins fails with probability below 2^-40 for
//! the sizes this protocol is meant for (Pinkas–Schneider–Zohner, TOPS
//! 2018); a failure costs only a fresh seed. 128-bit computational security
//! from AES-128, SHA-256 and Ristretto255 (≈ 126 bits) in the base OTs.
//!
//! ## What each side learns
//!
//! | mode | requester learns | responder learns |
//! |---|---|---|
//! | intersection | `X ∩ Y`, `n_B` | `n_A` |
//! | intersection to both | `X ∩ Y`, `n_B` | `X ∩ Y`, `n_A` |
//!
//! Cardinality only is not offered: the requester sees which of its keys
//! matched by construction. It stays with the ECDH protocol
//! ([`crate::ecdh`]).
//!
//! ## Threat model and security
//!
//! Semi-honest parties (KKRT Theorem 3, with the base OTs of Chou–Orlandi
//! 2015 in the random-oracle model). `B` sees only correction rows masked by
//! a PRG stream keyed by seeds it does not hold, so `A`'s keys and their
//! placement are hidden. `A` sees `3·n_B` outputs of an OPRF whose key
//! `(q, s)` it does not know: outputs of keys outside `X` are pseudorandom,
//! because any two codewords differ in at least 128 positions (the code is
//! 512 bits wide, KKRT §4.2: 448 suffice at 2^24 keys) and `s` is hidden.
//!
//! What a malicious party can do: `A` may place up to one value per bin
//! and so test `1.27·n_A` keys instead of `n_A` — the announced size is
//! what the ledger's grant meters, so the node meters bins, not keys; `A`
//! may also lie about matches in both mode, giving `B` a wrong
//! intersection. `B` may send outputs of arbitrary keys (as in any PSI
//! where the receiver learns the result) or garbage, giving `A` a wrong
//! result it cannot detect. Both sides bind every hash to `T` and the seed,
//! so nothing from one session means anything in another.
//!
//! ## Memory
//!
//! `A`: 40 bytes per own key (identity and bins), 4 per bin, and a table of
//! its own outputs (≈ 48 bytes per key). `B`: 44 bytes per own key (identity, bins, place in the order) and one
//! 64-byte row per bin of `A` (`≈ 81·n_A` bytes). Outputs and corrections
//! are streamed in runs of at most 1 MiB.

// Every count and index here is bounded by `SessionParams::new`: keys at
// most 2^30 a side, so outputs (3 per key) and bins (1.27 per key) fit in
// 32 bits, hash-function indices are below 3 and output lengths at most 16
// bytes; the one u128 → u64 narrowing folds a random value on purpose.
#![allow(clippy::cast_possible_truncation)]

pub mod hashing;
pub mod messages;
pub mod ot;
pub(crate) mod requester;
mod responder;

pub use crate::ecdh::ResponderOutput;
pub use hashing::HASHES;
pub use requester::{KkrtRequester, RequesterOutput};
pub use responder::KkrtResponder;

use rand_core::{CryptoRng, RngCore};

use crate::PsiError;
use crate::ecdh::OutputMode;
use crate::group::TaskId;
use crate::keys::KeySet;
use messages::{BaseChoices, Corrections, Matches, Outputs, Setup};

/// Protocol label.
pub const PROTOCOL_LABEL: &[u8] = b"stayput/psi/kkrt/v1";
/// Largest set either side may hold: `3·n_B` positions and the bins must
/// fit in 32 bits.
pub const MAX_SET_LEN: u64 = 1 << 30;
/// Keys per part a requester's node aims for when its set runs part by
/// part ([`crate::partition`]): memory then follows a part, not the set.
pub const PART_KEYS: u64 = 1 << 20;
/// Most requester keys a part may hold: what bounds a responder's memory
/// for one part (≈ 81 bytes per requester key), whatever the requester asks.
pub const MAX_PART_KEYS: u64 = 1 << 22;

/// The parts a requester with `requester_len` keys runs in by default.
pub fn parts_for(requester_len: u64) -> u32 {
    requester_len.div_ceil(PART_KEYS).max(1) as u32
}

/// Checks a requested number of parts: 1 to `MAX_PARTS`, no more than
/// keys, and parts of at most [`MAX_PART_KEYS`] keys on average.
pub fn check_parts(parts: u32, requester_len: u64) -> Result<(), PsiError> {
    let max = crate::partition::MAX_PARTS;
    if parts == 0 || parts > max || u64::from(parts) > requester_len.max(1) {
        return Err(PsiError::Malformed {
            message: "KKRT parts",
            reason: format!("{parts} parts for {requester_len} keys; 1 to min({max}, keys) are allowed"),
        });
    }
    if requester_len.div_ceil(u64::from(parts)) > MAX_PART_KEYS {
        return Err(PsiError::Malformed {
            message: "KKRT parts",
            reason: format!(
                "{parts} parts for {requester_len} keys exceed {MAX_PART_KEYS} keys a part; use more parts"
            ),
        });
    }
    Ok(())
}

/// Times a session in parts may be resumed after either side went away;
/// each resumption runs at most one part again (the one under way).
pub const MAX_RESUMES: u32 = 2;

/// The most requester keys one part of a keyed split of `requester_len`
/// keys into `parts` may hold: twice the even share and 1024 more — a
/// keyed split exceeds it with negligible probability (a part's size is
/// binomial around the share) — and never more than [`MAX_PART_KEYS`]. A
/// responder refuses part sizes above it, so a part run again costs it a
/// known bound.
pub fn max_part_len(requester_len: u64, parts: u32) -> u64 {
    (2 * requester_len.div_ceil(u64::from(parts.max(1))) + 1024).min(MAX_PART_KEYS)
}

/// What a session over `parts` parts may cost the responder, in cuckoo
/// bins, bounded before the part sizes are known: each part's bins, and
/// for a session in parts, [`MAX_RESUMES`] parts of at most
/// [`max_part_len`] keys run again.
pub fn metered_bins(requester_len: u64, parts: u32) -> u64 {
    if parts <= 1 {
        hashing::bin_count(requester_len)
    } else {
        let one_part = (max_part_len(requester_len, parts) * 127).div_ceil(100) + 128;
        (requester_len * 127).div_ceil(100) + 128 * u64::from(parts) + u64::from(MAX_RESUMES) * one_part
    }
}

/// The task id of part `i` of `task`: every hash of a part is bound to it.
pub fn part_task(task: &TaskId, part: u32) -> Result<TaskId, PsiError> {
    let mut id = task.as_bytes().to_vec();
    id.extend_from_slice(format!("/part-{part}").as_bytes());
    TaskId::new(id)
}

/// Rows handled by one worker at a time (256 KiB of rows).
pub(crate) const SUB_CHUNK: usize = 4096;

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
            return Err(PsiError::ModeNotOffered { protocol: "kkrt", mode });
        }
        for len in [requester_len, responder_len] {
            if len > MAX_SET_LEN {
                return Err(PsiError::SetTooLarge { protocol: "kkrt", len, max: MAX_SET_LEN });
            }
        }
        Ok(Self { task, mode, requester_len, responder_len })
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

    /// Bins of the requester's cuckoo table.
    pub fn bins(&self) -> u64 {
        hashing::bin_count(self.requester_len)
    }

    /// Outputs the responder sends: three per key.
    pub fn output_count(&self) -> u64 {
        self.responder_len * HASHES as u64
    }

    /// Bytes per output.
    pub fn output_len(&self) -> usize {
        hashing::output_len(self.requester_len, self.responder_len)
    }

    fn check_requester_keys<K: KeySet>(&self, keys: &K) -> Result<(), PsiError> {
        check_len(keys.len(), self.requester_len)
    }

    fn check_responder_keys<K: KeySet>(&self, keys: &K) -> Result<(), PsiError> {
        check_len(keys.len(), self.responder_len)
    }
}

fn check_len(actual: usize, announced: u64) -> Result<(), PsiError> {
    if actual as u64 != announced {
        return Err(PsiError::KeyCountMismatch { announced, actual: actual as u64 });
    }
    Ok(())
}

/// A message of the protocol, named for transcripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// [`Setup`].
    Setup,
    /// [`BaseChoices`].
    BaseChoices,
    /// [`Corrections`].
    Corrections,
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
    let mut requester = KkrtRequester::new(params.clone(), requester_keys, requester_rng)?;
    let setup = requester.setup().to_bytes();
    observe(Step::Setup, &setup);
    let (mut responder, choices) =
        KkrtResponder::new(params.clone(), responder_keys, &Setup::decode(&setup)?, responder_rng)?;
    let choices = choices.to_bytes();
    observe(Step::BaseChoices, &choices);
    requester.absorb_choices(BaseChoices::decode(&choices)?)?;
    while let Some(run) = requester.next_corrections()? {
        let bytes = run.to_bytes();
        observe(Step::Corrections, &bytes);
        responder.absorb_corrections(Corrections::decode(&bytes)?)?;
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
