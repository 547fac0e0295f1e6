//! The responder's role: base-OT receiver (its choice bits are `Δ`), IKNP
//! and VOLE sender; it evaluates the OPRF on each of its keys and sends the
//! outputs in a secret order.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::Zeroize;

use super::cot::{CotSender, KAPPA};
use super::field::{Gf, Multiplier};
use super::hashing::SessionHashes;
use super::messages::{BaseChoices, CotCorrections, Masked, Setup, Trees};
use super::okvs::{self, Row};
use super::vole::{self, Code, Shape};
use super::{PROTOCOL_LABEL, SessionParams};
use crate::PsiError;
use crate::ecdh::ResponderOutput;
use crate::keys::KeySet;
use crate::kkrt::messages::{MAX_OUTPUTS, Matches, Outputs};
use crate::kkrt::ot::base_ot_receive_chosen;
use crate::matching::MatchedKeys;

/// Values handled by one worker at a time.
const CHUNK: usize = 1 << 12;

/// The responder's session.
pub struct Rr22Responder {
    params: SessionParams,
    hashes: SessionHashes,
    shape: Shape,
    delta: Gf,
    cot: Option<CotSender>,
    /// The GGM trees' root seeds, drawn at the start.
    seeds: Vec<Gf>,
    /// IKNP columns as they arrive (column-major).
    corrections: Vec<u64>,
    columns: usize,
    trees: Option<Trees>,
    /// `B_v`, turned into `K = B_v + (P + A_v)·Δ` run by run.
    store: Vec<Gf>,
    masked: u64,
    rows: Vec<(Row, Gf)>,
    /// The secret order of the keys: output `p` belongs to key `order[p]`.
    order: Vec<u32>,
    /// Every key's output, once the whole store arrived.
    outputs: Vec<u128>,
    next_position: u64,
    matched: MatchedKeys,
}

impl std::fmt::Debug for Rr22Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rr22Responder").field("keys", &self.rows.len()).finish_non_exhaustive()
    }
}

impl Rr22Responder {
    /// Takes the requester's setup; returns the base-OT points to send.
    pub fn new<K: KeySet>(
        params: SessionParams,
        keys: &K,
        setup: &Setup,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, BaseChoices), PsiError> {
        SessionParams::check_len(keys, params.responder_len())?;
        let delta = u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64);
        let (points, ot_seeds) =
            base_ot_receive_chosen(PROTOCOL_LABEL, params.task(), &setup.point, KAPPA, |j| (delta >> j) & 1 == 1, rng)?;
        let hashes = SessionHashes::new(params.task(), &setup.seed, params.store_len());
        let rows = hashes.digest_all(keys);
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        let mut shuffle_seed = [0u8; 32];
        rng.fill_bytes(&mut shuffle_seed);
        order.shuffle(&mut ChaCha20Rng::from_seed(shuffle_seed));
        shuffle_seed.zeroize();
        let shape = params.shape();
        let seeds = (0..shape.trees).map(|_| u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64)).collect();
        let responder = Self {
            params,
            hashes,
            shape,
            delta,
            cot: Some(CotSender::new(delta, ot_seeds)),
            seeds,
            corrections: Vec::new(),
            columns: 0,
            trees: None,
            store: Vec::new(),
            masked: 0,
            rows,
            order,
            outputs: Vec::new(),
            next_position: 0,
            matched: MatchedKeys::default(),
        };
        Ok((responder, BaseChoices { points }))
    }

    /// Takes the next run of IKNP columns; after the last, runs the VOLE's
    /// sender half and prepares the trees.
    pub fn absorb_corrections(&mut self, run: CotCorrections) -> Result<(), PsiError> {
        let words = self.shape.cot_count() / 64;
        if self.cot.is_none() {
            return Err(PsiError::OutOfTurn { message: "RR22 OT corrections (after the last column)" });
        }
        if usize::from(run.first_column) != self.columns || run.words_per_column as usize != words {
            return Err(PsiError::Malformed {
                message: "RR22 OT corrections",
                reason: format!(
                    "columns of {} words from column {} where column {} of {words} words comes next",
                    run.words_per_column, run.first_column, self.columns
                ),
            });
        }
        self.columns += run.columns();
        self.corrections.extend_from_slice(&run.words);
        if self.columns < KAPPA {
            return Ok(());
        }
        let cot = self.cot.take().expect("checked above");
        let mut q = cot.extend(&self.corrections, words);
        self.corrections = Vec::new();
        let (mut v, trees) = vole::sender_expand(&self.shape, &q, self.delta, &self.hashes.mask_key, &self.seeds);
        q.zeroize();
        self.seeds.zeroize();
        self.store = Code::new(&self.shape, self.hashes.code_seed).encode(&mut v);
        v.zeroize();
        self.trees = Some(Trees { depth: self.shape.depth as u8, trees });
        Ok(())
    }

    /// The punctured-PRF messages, once every column arrived.
    pub fn trees(&mut self) -> Result<Trees, PsiError> {
        self.trees.take().ok_or(PsiError::OutOfTurn { message: "RR22 trees (before every column arrived, or twice)" })
    }

    /// Whether every IKNP column arrived.
    pub fn corrections_done(&self) -> bool {
        self.cot.is_none()
    }

    /// Takes a run of the masked store: `K += (P + A_v)·Δ`.
    pub fn absorb_masked(&mut self, run: Masked) -> Result<(), PsiError> {
        if self.cot.is_some() || self.trees.is_some() {
            return Err(PsiError::OutOfTurn { message: "RR22 masked store (before the trees were sent)" });
        }
        let total = self.params.store_len();
        if self.masked == total {
            return Err(PsiError::OutOfTurn { message: "RR22 masked store (after the whole store arrived)" });
        }
        let end = self.masked + run.values.len() as u64;
        if u64::from(run.first) != self.masked || end > total {
            return Err(PsiError::Malformed {
                message: "RR22 masked store",
                reason: format!(
                    "{} values from index {} where index {} of {total} comes next",
                    run.values.len(),
                    run.first,
                    self.masked
                ),
            });
        }
        let by_delta = Multiplier::new(self.delta);
        self.store[self.masked as usize..end as usize]
            .par_chunks_mut(CHUNK)
            .zip(run.values.par_chunks(CHUNK))
            .for_each(|(store, values)| {
                let mut by_delta = by_delta.clone();
                for (k, value) in store.iter_mut().zip(values) {
                    *k ^= by_delta.mul(*value);
                }
            });
        self.masked = end;
        if end == total {
            let len = self.params.output_len();
            let rows: Vec<Row> = self.rows.iter().map(|(row, _)| *row).collect();
            let (hashes, rows_values) = (&self.hashes, &self.rows);
            self.outputs = okvs::decode_all(&self.store, &rows, |i, z| {
                hashes.output(z ^ by_delta.clone().mul(rows_values[i].1), len)
            });
            self.store.zeroize();
            self.store = Vec::new();
        }
        Ok(())
    }

    /// Values of the masked store received so far.
    pub fn masked_received(&self) -> u64 {
        self.masked
    }

    /// The next run of outputs, in the secret order, once the whole store
    /// arrived.
    pub fn next_outputs(&mut self) -> Result<Option<Outputs>, PsiError> {
        if self.masked != self.params.store_len() {
            return Err(PsiError::OutOfTurn { message: "RR22 outputs (before the whole store arrived)" });
        }
        let total = self.params.output_count();
        if self.next_position >= total {
            return Ok(None);
        }
        let end = (self.next_position + MAX_OUTPUTS as u64).min(total);
        let order = &self.order[self.next_position as usize..end as usize];
        let values = order.iter().map(|&key| self.outputs[key as usize]).collect();
        self.next_position = end;
        Ok(Some(Outputs { len: self.params.output_len() as u8, values }))
    }

    /// Takes the requester's matched positions (intersection to both).
    pub fn absorb_matches(&mut self, matches: Matches) -> Result<(), PsiError> {
        let progress = (self.params.mode(), self.next_position, self.params.output_count());
        let order = &self.order;
        self.matched.absorb("RR22 matches", progress, &matches, |p| order[p as usize])
    }

    /// Whether the requester's last matches message arrived.
    pub fn matches_done(&self) -> bool {
        self.matched.done()
    }

    /// The responder's output.
    pub fn finish(mut self) -> Result<ResponderOutput, PsiError> {
        if self.next_position < self.params.output_count() || self.masked != self.params.store_len() {
            return Err(PsiError::OutOfTurn { message: "RR22 finish (outputs not all sent)" });
        }
        let intersection = self.matched.finish("RR22 matches", self.params.mode())?;
        Ok(ResponderOutput::new(intersection, self.params.requester_len()))
    }
}

impl Drop for Rr22Responder {
    fn drop(&mut self) {
        self.delta.zeroize();
        self.seeds.zeroize();
        self.store.zeroize();
        self.outputs.zeroize();
        self.order.zeroize();
        for (_, value) in &mut self.rows {
            value.zeroize();
        }
    }
}
