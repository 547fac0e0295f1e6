//! The responder's role: base-OT receiver and OT-extension sender; it
//! evaluates the OPRF on each of its keys under each of the key's three
//! bins and sends the outputs in a secret order.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::Zeroize;

use super::hashing::{Digested, SessionHashes, bin_count};
use super::messages::{BaseChoices, Corrections, MAX_OUTPUTS, Matches, Outputs, Setup};
use super::ot::{BLOCK_BINS, Expander, ROW_WORDS, Row, base_ot_receive};
use super::requester::xor_into;
use super::{HASHES, SUB_CHUNK, SessionParams};
use crate::PsiError;
use crate::ecdh::ResponderOutput;
use crate::keys::KeySet;
use crate::matching::MatchedKeys;

/// The responder's session.
pub struct KkrtResponder {
    params: SessionParams,
    hashes: SessionHashes,
    bins: u64,
    choices: Row,
    expander: Expander,
    q: Vec<Row>,
    digests: Vec<Digested>,
    /// The secret order of the keys: output `p` belongs to key
    /// `order[p / 3]` and hash function `p mod 3`.
    order: Vec<u32>,
    next_position: u64,
    matched: MatchedKeys,
}

impl std::fmt::Debug for KkrtResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KkrtResponder").field("bins", &self.bins).finish_non_exhaustive()
    }
}

impl KkrtResponder {
    /// Takes the requester's setup; returns the base-OT points to send.
    pub fn new<K: KeySet>(
        params: SessionParams,
        keys: &K,
        setup: &Setup,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, BaseChoices), PsiError> {
        params.check_responder_keys(keys)?;
        let bins = bin_count(params.requester_len());
        if u64::from(setup.bins) != bins {
            return Err(PsiError::Malformed {
                message: "KKRT setup",
                reason: format!(
                    "{} bins for {} announced keys; this version uses {bins}",
                    setup.bins,
                    params.requester_len()
                ),
            });
        }
        let (choices, points, mut seeds) = base_ot_receive(params.task(), &setup.point, rng)?;
        let expander = Expander::new(seeds.iter().copied());
        seeds.zeroize();
        let hashes = SessionHashes::new(params.task(), &setup.seed);
        let digests = hashes.digest_all(keys);
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        let mut shuffle_seed = [0u8; 32];
        rng.fill_bytes(&mut shuffle_seed);
        order.shuffle(&mut ChaCha20Rng::from_seed(shuffle_seed));
        shuffle_seed.zeroize();
        let responder = Self {
            params,
            hashes,
            bins,
            choices,
            expander,
            // Grown run by run as rows arrive: an announced size alone
            // allocates nothing.
            q: Vec::new(),
            digests,
            order,
            next_position: 0,
            matched: MatchedKeys::default(),
        };
        Ok((responder, BaseChoices { points }))
    }

    /// Takes the next run of correction rows: `qᵦ = G(k^s)ᵦ ⊕ (uᵦ ∧ s)`.
    pub fn absorb_corrections(&mut self, corrections: Corrections) -> Result<(), PsiError> {
        let next = self.q.len() as u64;
        let count = corrections.rows.len() as u64;
        if u64::from(corrections.first_bin) != next {
            return Err(PsiError::Malformed {
                message: "KKRT corrections",
                reason: format!("rows from bin {} where bin {next} comes next", corrections.first_bin),
            });
        }
        if next + count > self.bins || !(count as usize).is_multiple_of(BLOCK_BINS) {
            return Err(PsiError::Malformed {
                message: "KKRT corrections",
                reason: format!(
                    "{count} rows from bin {next}: runs are whole blocks of {BLOCK_BINS} within the {} bins",
                    self.bins
                ),
            });
        }
        let mut rows = corrections.rows;
        let s = self.choices;
        let expander = &self.expander;
        rows.par_chunks_mut(SUB_CHUNK).enumerate().for_each(|(c, chunk)| {
            let start = next as usize + c * SUB_CHUNK;
            let mut g = vec![[0u64; ROW_WORDS]; chunk.len()];
            expander.rows(start, &mut g);
            for (u, g_row) in chunk.iter_mut().zip(&g) {
                for (w, s_word) in u.iter_mut().zip(&s) {
                    *w &= s_word;
                }
                xor_into(u, g_row);
            }
            g.zeroize();
        });
        self.q.extend_from_slice(&rows);
        Ok(())
    }

    /// Whether every bin's row arrived.
    pub fn corrections_done(&self) -> bool {
        self.q.len() as u64 == self.bins
    }

    /// Bins whose rows arrived so far.
    pub fn bins_received(&self) -> u64 {
        self.q.len() as u64
    }

    /// The next run of outputs, in the secret order, once every row arrived.
    pub fn next_outputs(&mut self) -> Result<Option<Outputs>, PsiError> {
        if !self.corrections_done() {
            return Err(PsiError::OutOfTurn { message: "KKRT outputs (before every correction arrived)" });
        }
        let total = self.params.output_count();
        if self.next_position >= total {
            return Ok(None);
        }
        let end = (self.next_position + MAX_OUTPUTS as u64).min(total);
        let len = self.params.output_len();
        let positions: Vec<u64> = (self.next_position..end).collect();
        let values = positions
            .par_chunks(SUB_CHUNK)
            .flat_map_iter(|chunk| {
                let slots: Vec<(usize, usize)> = chunk.iter().map(|&p| self.slot(p)).collect();
                let inputs: Vec<([u8; 16], usize)> = slots.iter().map(|&(key, i)| (self.digests[key].id, i)).collect();
                let mut rows = vec![[0u64; ROW_WORDS]; chunk.len()];
                self.hashes.codes(&inputs, &mut rows);
                let out: Vec<u128> = slots
                    .iter()
                    .zip(&mut rows)
                    .map(|(&(key, i), row)| {
                        let bin = self.digests[key].bin(i, self.bins);
                        for ((w, s), q) in row.iter_mut().zip(&self.choices).zip(&self.q[bin as usize]) {
                            *w = (*w & s) ^ q;
                        }
                        self.hashes.output(bin, row, len)
                    })
                    .collect();
                rows.zeroize();
                out
            })
            .collect();
        self.next_position = end;
        Ok(Some(Outputs { len: len as u8, values }))
    }

    /// The key and hash function behind the output at `position`.
    fn slot(&self, position: u64) -> (usize, usize) {
        (self.order[(position / HASHES as u64) as usize] as usize, (position % HASHES as u64) as usize)
    }

    /// Takes the requester's matched positions (intersection to both).
    pub fn absorb_matches(&mut self, matches: Matches) -> Result<(), PsiError> {
        let progress = (self.params.mode(), self.next_position, self.params.output_count());
        let order = &self.order;
        self.matched.absorb("KKRT matches", progress, &matches, |p| order[p as usize / HASHES])
    }

    /// Whether the requester's last matches message arrived.
    pub fn matches_done(&self) -> bool {
        self.matched.done()
    }

    /// The responder's output.
    pub fn finish(mut self) -> Result<ResponderOutput, PsiError> {
        if self.next_position < self.params.output_count() {
            return Err(PsiError::OutOfTurn { message: "KKRT finish (outputs not all sent)" });
        }
        let intersection = self.matched.finish("KKRT matches", self.params.mode())?;
        Ok(ResponderOutput::new(intersection, self.params.requester_len()))
    }
}

impl Drop for KkrtResponder {
    fn drop(&mut self) {
        self.choices.zeroize();
        self.q.zeroize();
        self.order.zeroize();
        for d in &mut self.digests {
            d.id.zeroize();
        }
    }
}
