//! Balanced PSI by commutative blinding over X25519 ("ECDH-PSI").
//!
//! ## Protocol (version 2)
//!
//! The requester `A` holds distinct keys `X`, the responder `B` distinct keys
//! `Y`. Both know the task id `T`, the output mode and both set sizes. Each
//! draws a secret clamped X25519 scalar (`a`, `b`) and a secret random order
//! over its own keys. `H_T` hashes a key to a u-coordinate and `s·u` below
//! means `X25519(s, u)` ([`curve`]); `tag(u)` is the first [`TAG_LEN`] bytes
//! of `SHA-512(DST_tag ‖ T ‖ u)`.
//!
//! 1. **Responder points.** `B → A`: `b·H_T(y)` for every `y ∈ Y`, in `B`'s
//!    secret order, in batches. `A` stores `tag(a·b·H_T(y))` for each.
//! 2. **Requests.** `A → B`: `a·H_T(x)` for every `x ∈ X`, in `A`'s secret
//!    order, in batches. `B` answers with `tag(b·a·H_T(x))`:
//!    * *intersection* modes: batch by batch, in the order received — `A`
//!      maps each answer back to its key and keeps those whose tag it stored;
//!    * *cardinality* mode: only after the last request, all tags **sorted**,
//!      which is a uniformly random order unrelated to `A`'s — `A` counts
//!      the tags it stored and learns nothing else.
//! 3. **Echo** (intersection to both only). `A → B`: the tags of step 1 in
//!    the order `B` sent the points; `B` marks each of its keys whose tag is
//!    among the answers it computed in step 2.
//!
//! Correctness rests on `a·b·H_T(k) = b·a·H_T(k)`; a false match needs two
//! distinct keys with equal 96-bit tags, probability at most
//! `|X|·|Y| / 2^96 ≤ 2^-40` under the enforced bound `|X|·|Y| ≤ 2^56`.
//!
//! ## What each side learns
//!
//! | mode | requester learns | responder learns |
//! |---|---|---|
//! | [`OutputMode::IntersectionToRequester`] | `X ∩ Y`, `|Y|` | `|X|` |
//! | [`OutputMode::IntersectionToBoth`] | `X ∩ Y`, `|Y|` | `X ∩ Y`, `|X|` |
//! | [`OutputMode::CardinalityOnly`] | `|X ∩ Y|`, `|Y|` | `|X|` |
//!
//! Neither learns anything about keys outside the intersection, nor the row
//! positions of its peer's keys, because both sides send in secret random
//! order.
//!
//! ## Threat model and security
//!
//! Semi-honest parties. Under the decisional Diffie–Hellman assumption in
//! the prime-order subgroups of Curve25519 and its twist, with `H_T`
//! modelled as a random oracle, the blinded values a party sees are
//! indistinguishable from random coordinates, except where keys are common.
//! This is the construction of the interconnection standards for
//! privacy-computing platforms and of SecretFlow's ECDH-PSI: hashing
//! straight to an x-coordinate, no hash-to-group and no point compression,
//! and a Montgomery ladder that runs eight points at once on CPUs with
//! AVX-512 IFMA (`stayput-x25519`). Version 1 used Ristretto255, five times
//! slower; Ristretto stays where a proof needs a prime-order group (the
//! verifiable OPRF of [`crate::oprf`]). A malicious party can deviate, e.g. by not blinding, by sending
//! extra keys up to the announced size (so the announced sizes should be
//! checked against what a dataset is known to hold — the ledger does this in
//! a later stage), or by answering with garbage (which yields a wrong result
//! the other party cannot detect in this protocol). Non-canonical
//! coordinates and points of small order are rejected ([`crate::PsiError`]). Secret scalars and orders are
//! zeroized when a role is dropped. Everything is bound to `T`: a message
//! replayed into another task hashes to unrelated points.
//!
//! **Not caught:** in cardinality mode a malicious requester can blind each
//! of its keys with a different scalar `aᵢ` and, spending `|X|·|Y|` scalar
//! multiplications on the responder's points, map each sorted answer back to
//! its key — learning the intersection, not only its size. For a handful of
//! targeted ids that is cheap. Cardinality mode therefore protects the
//! responder only against a semi-honest requester; a responder that needs
//! more must meter such queries (the ledger's grants) or wait for a
//! maliciously secure cardinality protocol.
//!
//! Keys are low-entropy (ids, phone numbers): the protocol hides them from
//! the peer, not from someone who can query the peer at will; limiting who
//! may run which queries is the ledger's job.
//!
//! ## Memory
//!
//! Keys are hashed on the fly from a [`KeySet`] (random access) and send
//! orders are computed, not stored, so memory holds one batch of points per
//! side plus: `A` 12 bytes per key of `B` (24 in both mode) and 4 per common
//! key; `B` nothing per key in intersection-to-requester mode, 12 per key of
//! `A` in cardinality mode (to sort the answers) and in both mode.

pub mod curve;
pub mod requester;
pub mod responder;

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha512};

use crate::PsiError;
use crate::group::TaskId;
use crate::keys::KeySet;
use crate::messages::{MAX_BATCH, PointBatch, TAG_LEN, Tag, TagBatch};
use crate::permutation::SecretPermutation;
use curve::{BlindingScalar, Coordinate, HashToCoordinate};

pub use requester::{RequesterOutput, RequesterSession};
pub use responder::{ResponderOutput, ResponderSession};

/// Protocol label, bound into every hash.
pub const PROTOCOL_LABEL: &[u8] = b"stayput/psi/ecdh-x25519/v2";
const TAG_LABEL: &[u8] = b"stayput/psi/ecdh-x25519/v2/tag";

/// Largest supported product of the two set sizes (see the module docs).
pub const MAX_SIZE_PRODUCT: u128 = 1 << 56;

/// What the protocol reveals, and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputMode {
    /// The requester learns the intersection; the responder learns nothing.
    IntersectionToRequester,
    /// Both learn the intersection.
    IntersectionToBoth,
    /// The requester learns the size of the intersection only.
    CardinalityOnly,
}

impl OutputMode {
    /// Every mode, for tests and help texts.
    pub const ALL: [OutputMode; 3] = [Self::IntersectionToRequester, Self::IntersectionToBoth, Self::CardinalityOnly];

    /// The mode's name on the command line and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::IntersectionToRequester => "intersection",
            Self::IntersectionToBoth => "intersection-both",
            Self::CardinalityOnly => "cardinality",
        }
    }

    /// Whether the requester receives the intersection itself.
    pub fn reveals_intersection(self) -> bool {
        !matches!(self, Self::CardinalityOnly)
    }
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OutputMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown output mode '{s}'; use intersection, intersection-both or cardinality"))
    }
}

/// The protocol phases, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Step 1: the responder's blinded keys.
    ResponderPoints,
    /// Step 2: the requester's blinded keys.
    Requests,
    /// Step 2: the responder's answers.
    Replies,
    /// Step 3: the requester's echo of step 1.
    Echo,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ResponderPoints => "responder points",
            Self::Requests => "requests",
            Self::Replies => "replies",
            Self::Echo => "echo",
        })
    }
}

/// What both parties agree on before the first message.
#[derive(Debug, Clone)]
pub struct SessionParams {
    task: TaskId,
    mode: OutputMode,
    requester_len: u64,
    responder_len: u64,
    batch_size: usize,
}

impl SessionParams {
    /// Validates sizes against the tag length and the batch bound.
    pub fn new(
        task: TaskId,
        mode: OutputMode,
        requester_len: u64,
        responder_len: u64,
        batch_size: usize,
    ) -> Result<Self, PsiError> {
        let too_large = PsiError::SetsTooLarge { requester: requester_len, responder: responder_len };
        if requester_len > u64::from(u32::MAX) || responder_len > u64::from(u32::MAX) {
            return Err(too_large);
        }
        if u128::from(requester_len) * u128::from(responder_len) > MAX_SIZE_PRODUCT {
            return Err(too_large);
        }
        if batch_size == 0 || batch_size > MAX_BATCH {
            return Err(PsiError::BadBatchSize { got: batch_size, max: MAX_BATCH });
        }
        Ok(Self { task, mode, requester_len, responder_len, batch_size })
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

    /// Items per batch this party sends.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// The secret state and hashers one role needs, built once per session.
struct Blinder {
    secret: BlindingScalar,
    hash: HashToCoordinate,
    tag_prefix: Sha512,
}

impl Blinder {
    fn new(task: &TaskId, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut tag_prefix = Sha512::new();
        tag_prefix.update((TAG_LABEL.len() as u64).to_le_bytes());
        tag_prefix.update(TAG_LABEL);
        tag_prefix.update((task.as_bytes().len() as u64).to_le_bytes());
        tag_prefix.update(task.as_bytes());
        Self { secret: BlindingScalar::random(rng), hash: HashToCoordinate::new(PROTOCOL_LABEL, task), tag_prefix }
    }

    /// `s·H_T(k)` for the keys at `order[positions]`, as a batch.
    fn blind_keys<K: KeySet>(
        &self,
        keys: &K,
        order: &SecretPermutation,
        positions: std::ops::Range<usize>,
    ) -> PointBatch {
        let points: Vec<Coordinate> = positions
            .into_par_iter()
            .map_init(Vec::new, |buf, position| {
                keys.key_into(order.at(position), buf);
                self.hash.hash(buf)
            })
            .collect();
        PointBatch::from_coordinates(&self.secret.blind(&points))
    }

    /// `tag(s·u)` for every validated coordinate a peer sent; refuses
    /// points of small order.
    fn tags(&self, points: &[Coordinate]) -> Result<Vec<Tag>, PsiError> {
        Ok(self.secret.blind_received(points)?.par_iter().map(|u| self.tag(u)).collect())
    }

    fn tag(&self, point: &Coordinate) -> Tag {
        let mut hash = self.tag_prefix.clone();
        hash.update(point);
        let digest = hash.finalize();
        digest[..TAG_LEN].try_into().expect("digest is longer than a tag")
    }
}

fn check_len(actual: usize, announced: u64) -> Result<(), PsiError> {
    if actual as u64 != announced {
        return Err(PsiError::KeyCountMismatch { announced, actual: actual as u64 });
    }
    Ok(())
}

/// Splits `0..len` into batches of `batch_size`.
fn next_range(next: &mut usize, len: usize, batch_size: usize) -> Option<std::ops::Range<usize>> {
    if *next >= len {
        return None;
    }
    let range = *next..(*next + batch_size).min(len);
    *next = range.end;
    Some(range)
}

/// Cuts a list of tags into wire batches.
fn tag_batches(tags: &[Tag], batch_size: usize) -> impl Iterator<Item = TagBatch> + '_ {
    tags.chunks(batch_size).map(|chunk| TagBatch { tags: chunk.to_vec() })
}

/// Runs a whole session in memory, passing every message through its wire
/// encoding and decoder: the reference for tests and the in-memory
/// benchmark.
pub fn run_in_memory<A: KeySet, B: KeySet>(
    params: &SessionParams,
    requester_keys: &A,
    responder_keys: &B,
    requester_rng: &mut (impl RngCore + CryptoRng),
    responder_rng: &mut (impl RngCore + CryptoRng),
) -> Result<(RequesterOutput, ResponderOutput), PsiError> {
    run_observed(params, requester_keys, responder_keys, requester_rng, responder_rng, |_, _| {})
}

/// [`run_in_memory`], showing every wire message to `observe` as it is
/// sent (the known-answer tests record transcripts with it).
pub fn run_observed<A: KeySet, B: KeySet>(
    params: &SessionParams,
    requester_keys: &A,
    responder_keys: &B,
    requester_rng: &mut (impl RngCore + CryptoRng),
    responder_rng: &mut (impl RngCore + CryptoRng),
    mut observe: impl FnMut(Phase, &[u8]),
) -> Result<(RequesterOutput, ResponderOutput), PsiError> {
    let mut responder = ResponderSession::new(params.clone(), responder_keys, responder_rng)?;
    let mut requester = RequesterSession::new(params.clone(), requester_keys, requester_rng)?;
    while let Some(batch) = responder.next_batch() {
        observe(Phase::ResponderPoints, batch.as_bytes());
        requester.absorb(PointBatch::decode(batch.as_bytes())?)?;
    }
    let mut requester = requester.finish()?;
    let mut responder = responder.finish()?;
    while let Some(batch) = requester.next_batch() {
        observe(Phase::Requests, batch.as_bytes());
        if let Some(reply) = responder.answer(PointBatch::decode(batch.as_bytes())?)? {
            observe(Phase::Replies, &reply.to_bytes());
            requester.absorb_reply(TagBatch::decode(&reply.to_bytes())?)?;
        }
    }
    let mut responder = responder.finish()?;
    while let Some(reply) = responder.next_batch() {
        observe(Phase::Replies, &reply.to_bytes());
        requester.absorb_reply(TagBatch::decode(&reply.to_bytes())?)?;
    }
    let requester_output = requester.finish()?;
    for echo in requester_output.echo_batches() {
        observe(Phase::Echo, &echo.to_bytes());
        responder.absorb_echo(TagBatch::decode(&echo.to_bytes())?)?;
    }
    Ok((requester_output, responder.finish()?))
}

#[cfg(test)]
pub(crate) mod tests;
