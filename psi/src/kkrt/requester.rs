//! The requester's role: cuckoo-hashes its keys, acts as base-OT sender and
//! OT-extension receiver, and matches the responder's outputs.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::Zeroize;

use super::hashing::{CuckooTable, Digested, SessionHashes, bin_count};
use super::messages::{BaseChoices, Corrections, MAX_ROWS, Matches, Outputs, Setup};
use super::ot::{BaseOtSender, Expander, ROW_WORDS, Row, WIDTH};
use super::{HASHES, SUB_CHUNK, SessionParams};
use crate::PsiError;
use crate::keys::KeySet;
use crate::matching::OutputMatcher;

/// Seeds tried before cuckoo hashing is declared failed; each fails with
/// probability below 2^-40 at the bin factor used.
const CUCKOO_ATTEMPTS: usize = 8;

/// OPRF outputs are random oracle values: folding them is a fine hash.
#[derive(Default)]
pub(crate) struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = (value as u64) ^ ((value >> 64) as u64);
    }
}

/// Own outputs by value, hashed by folding (they are random oracle values).
pub(crate) type OwnOutputs = HashMap<u128, u32, BuildHasherDefault<Fold>>;

/// The requester's session, from setup to its output.
pub struct KkrtRequester {
    params: SessionParams,
    hashes: SessionHashes,
    setup: Setup,
    base: BaseOtSender,
    digests: Vec<Digested>,
    table: CuckooTable,
    expanders: Option<(Expander, Expander)>,
    next_bin: u64,
    matcher: OutputMatcher,
}

impl std::fmt::Debug for KkrtRequester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KkrtRequester").field("bins", &self.setup.bins).finish_non_exhaustive()
    }
}

impl KkrtRequester {
    /// Hashes the keys into a cuckoo table and prepares the setup message.
    pub fn new<K: KeySet>(
        params: SessionParams,
        keys: &K,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, PsiError> {
        params.check_requester_keys(keys)?;
        let bins = bin_count(params.requester_len());
        for _ in 0..CUCKOO_ATTEMPTS {
            let mut seed = [0u8; 16];
            rng.fill_bytes(&mut seed);
            let hashes = SessionHashes::new(params.task(), &seed);
            let digests = hashes.digest_all(keys);
            let Ok(table) = CuckooTable::build(&digests, bins, || rng.next_u32() as usize) else {
                continue;
            };
            let base = BaseOtSender::new(rng);
            let setup = Setup { seed, bins: bins as u32, point: base.point() };
            return Ok(Self {
                params,
                hashes,
                setup,
                base,
                digests,
                table,
                expanders: None,
                next_bin: 0,
                matcher: OutputMatcher::default(),
            });
        }
        Err(PsiError::CuckooFailed { keys: keys.len() as u64 })
    }

    /// The first message.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Takes the responder's base-OT points and derives both seeds of each.
    pub fn absorb_choices(&mut self, choices: BaseChoices) -> Result<(), PsiError> {
        if self.expanders.is_some() {
            return Err(PsiError::OutOfTurn { message: "KKRT base choices" });
        }
        debug_assert_eq!(choices.points.len(), WIDTH);
        let seeds = self.base.seeds(self.params.task(), &choices.points)?;
        let zero = Expander::new(seeds.iter().map(|(k0, _)| *k0));
        let one = Expander::new(seeds.iter().map(|(_, k1)| *k1));
        let mut seeds = seeds;
        seeds.zeroize();
        self.expanders = Some((zero, one));
        Ok(())
    }

    /// The next run of correction rows, until every bin is sent.
    pub fn next_corrections(&mut self) -> Result<Option<Corrections>, PsiError> {
        let Some((zero, one)) = &self.expanders else {
            return Err(PsiError::OutOfTurn { message: "KKRT corrections (before the base choices)" });
        };
        let bins = u64::from(self.setup.bins);
        if self.next_bin >= bins {
            return Ok(None);
        }
        let first = self.next_bin as usize;
        let count = (bins - self.next_bin).min(MAX_ROWS as u64) as usize;
        let len = self.params.output_len();
        let mut rows = vec![[0u64; ROW_WORDS]; count];
        let found: Vec<Vec<(u128, u32)>> = rows
            .par_chunks_mut(SUB_CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let start = first + c * SUB_CHUNK;
                let mut t = vec![[0u64; ROW_WORDS]; chunk.len()];
                zero.rows(start, &mut t);
                one.rows(start, chunk);
                // Codes of the occupied bins; an empty bin's code is zero.
                let slots = &self.table.slots[start..start + chunk.len()];
                let occupied: Vec<(usize, u32, ([u8; 16], usize))> = slots
                    .iter()
                    .enumerate()
                    .filter_map(|(offset, slot)| {
                        slot.map(|(key, i)| (offset, key, (self.digests[key as usize].id, usize::from(i))))
                    })
                    .collect();
                let inputs: Vec<([u8; 16], usize)> = occupied.iter().map(|(_, _, input)| *input).collect();
                let mut codes = vec![[0u64; ROW_WORDS]; inputs.len()];
                self.hashes.codes(&inputs, &mut codes);
                for (u, t_row) in chunk.iter_mut().zip(&t) {
                    xor_into(u, t_row);
                }
                let mut own = Vec::with_capacity(occupied.len());
                for ((offset, key, _), code) in occupied.iter().zip(&codes) {
                    let bin = start + offset;
                    own.push((self.hashes.output(bin as u32, &t[*offset], len), *key));
                    xor_into(&mut chunk[*offset], code);
                }
                t.zeroize();
                codes.zeroize();
                own
            })
            .collect();
        for (output, key) in found.into_iter().flatten() {
            self.matcher.own.insert(output, key);
        }
        self.next_bin += count as u64;
        Ok(Some(Corrections { first_bin: first as u32, rows }))
    }

    /// Whether every correction row has been produced.
    pub fn corrections_done(&self) -> bool {
        self.next_bin >= u64::from(self.setup.bins)
    }

    /// Outputs received so far.
    pub fn received(&self) -> u64 {
        self.matcher.received()
    }

    /// Matches a run of the responder's outputs against its own.
    pub fn absorb_outputs(&mut self, outputs: Outputs) -> Result<(), PsiError> {
        if !self.corrections_done() {
            return Err(PsiError::OutOfTurn { message: "KKRT outputs (before every correction was sent)" });
        }
        self.matcher.absorb("KKRT outputs", &outputs, self.params.output_len(), self.params.output_count())
    }

    /// The intersection, once every output arrived.
    pub fn finish(mut self) -> Result<RequesterOutput, PsiError> {
        let announced = self.params.output_count();
        if !self.corrections_done() {
            return Err(PsiError::TooFew { message: "KKRT outputs", announced, received: self.matcher.received() });
        }
        self.matcher.finish("KKRT outputs", self.params.mode(), announced)
    }
}

impl Drop for KkrtRequester {
    fn drop(&mut self) {
        for d in &mut self.digests {
            d.id.zeroize();
        }
    }
}

pub(crate) fn xor_into(row: &mut Row, other: &Row) {
    for (a, b) in row.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// What the requester ends with.
pub struct RequesterOutput {
    intersection: Vec<u32>,
    matches: Vec<Matches>,
}

impl RequesterOutput {
    pub(crate) fn new(intersection: Vec<u32>, matches: Vec<Matches>) -> Self {
        Self { intersection, matches }
    }

    /// Indices (into the requester's key set, ascending) of the common keys.
    pub fn intersection(&self) -> &[u32] {
        &self.intersection
    }

    /// The messages telling the responder which of its outputs matched
    /// (intersection to both only; empty otherwise).
    pub fn matches(&self) -> &[Matches] {
        &self.matches
    }
}

impl std::fmt::Debug for RequesterOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequesterOutput").field("cardinality", &self.intersection.len()).finish_non_exhaustive()
    }
}

const _: () = assert!(HASHES == 3);
