//! The requester's role: encodes its keys in the OKVS, acts as base-OT
//! sender, IKNP receiver and VOLE receiver, and matches the outputs.

use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use super::cot::{CotReceiver, KAPPA};
use super::field::Gf;
use super::hashing::SessionHashes;
use super::messages::{BaseChoices, CotCorrections, MAX_CORRECTION_WORDS, MAX_VALUES, Masked, Setup, Trees};
use super::okvs::{self, Row};
use super::vole::{self, Code, Puncture, Shape};
use super::{PROTOCOL_LABEL, SessionParams};
use crate::PsiError;
use crate::group::TaskId;
use crate::keys::KeySet;
use crate::kkrt::RequesterOutput;
use crate::kkrt::messages::Outputs;
use crate::kkrt::ot::BaseOtSender;
use crate::matching::OutputMatcher;

/// Seeds tried before the OKVS is declared failed; each fails with
/// probability around 2^-20 or less.
const OKVS_ATTEMPTS: usize = 8;

/// Where the session is.
enum Phase {
    /// Setup sent, waiting for the base-OT points.
    Setup,
    /// Sending the IKNP columns.
    Corrections { corrections: Vec<u64>, t: Vec<Gf>, next_column: usize },
    /// Every column sent, waiting for the trees.
    Trees { t: Vec<Gf> },
    /// Sending the masked store; `C` kept for the own outputs.
    Masked { masked: Vec<Gf>, next: usize, c: Vec<Gf> },
    /// The whole store sent; own outputs computed at the first outputs
    /// received, so they overlap the responder's work.
    Sent { c: Vec<Gf> },
    /// Receiving outputs.
    Outputs,
}

/// What the requester computes from its own keys alone — the OKVS, the
/// VOLE's noise, the setup message — before it knows the responder's size:
/// a node prepares it while the responder loads its keys.
pub struct Rr22Prepared {
    task: TaskId,
    requester_len: u64,
    hashes: SessionHashes,
    setup: Setup,
    base: BaseOtSender,
    shape: Shape,
    rows: Vec<Row>,
    store: Zeroizing<Vec<Gf>>,
    punctures: Zeroizing<Vec<Puncture>>,
}

impl std::fmt::Debug for Rr22Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rr22Prepared").field("store", &self.store.len()).finish_non_exhaustive()
    }
}

impl Rr22Prepared {
    /// Hashes and encodes the keys of a session bound to `task`, and draws
    /// the VOLE's noise.
    pub fn new<K: KeySet>(task: TaskId, keys: &K, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self, PsiError> {
        let requester_len = keys.len() as u64;
        let columns = super::okvs::columns(requester_len);
        for _ in 0..OKVS_ATTEMPTS {
            let mut seed = [0u8; 16];
            rng.fill_bytes(&mut seed);
            let hashes = SessionHashes::new(&task, &seed, columns);
            let mut rows = hashes.digest_all(keys);
            let Ok(store) = okvs::encode(columns, &rows, rng) else {
                continue;
            };
            for (_, value) in &mut rows {
                value.zeroize();
            }
            let shape = Shape::new(columns as usize);
            let punctures: Vec<Puncture> = (0..shape.trees)
                .map(|_| Puncture {
                    point: (rng.next_u64() % shape.leaves() as u64) as usize,
                    value: loop {
                        let v = random_gf(rng);
                        if v != 0 {
                            break v;
                        }
                    },
                })
                .collect();
            let base = BaseOtSender::labelled(PROTOCOL_LABEL, rng);
            let setup = Setup { seed, point: base.point() };
            let rows = rows.into_iter().map(|(row, _)| row).collect();
            let (store, punctures) = (Zeroizing::new(store), Zeroizing::new(punctures));
            return Ok(Self { task, requester_len, hashes, setup, base, shape, rows, store, punctures });
        }
        Err(PsiError::Malformed {
            message: "RR22 store",
            reason: format!("{} keys gave dependent rows under {OKVS_ATTEMPTS} seeds", keys.len()),
        })
    }
}

/// The requester's session, from setup to its output.
pub struct Rr22Requester {
    params: SessionParams,
    hashes: SessionHashes,
    setup: Setup,
    base: BaseOtSender,
    shape: Shape,
    rows: Vec<Row>,
    store: Vec<Gf>,
    punctures: Vec<Puncture>,
    phase: Phase,
    matcher: OutputMatcher,
}

impl std::fmt::Debug for Rr22Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rr22Requester").field("store", &self.store.len()).finish_non_exhaustive()
    }
}

fn random_gf(rng: &mut impl RngCore) -> Gf {
    u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64)
}

impl Rr22Requester {
    /// Hashes and encodes the keys, draws the VOLE's noise and prepares the
    /// setup message.
    pub fn new<K: KeySet>(
        params: SessionParams,
        keys: &K,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, PsiError> {
        SessionParams::check_len(keys, params.requester_len())?;
        let prepared = Rr22Prepared::new(params.task().clone(), keys, rng)?;
        Self::from_prepared(params, prepared)
    }

    /// The session from what was prepared for it: same task, same keys.
    pub fn from_prepared(params: SessionParams, prepared: Rr22Prepared) -> Result<Self, PsiError> {
        if prepared.task != *params.task() || prepared.requester_len != params.requester_len() {
            return Err(PsiError::KeyCountMismatch {
                announced: params.requester_len(),
                actual: prepared.requester_len,
            });
        }
        let Rr22Prepared { hashes, setup, base, shape, rows, mut store, mut punctures, .. } = prepared;
        let (store, punctures) = (std::mem::take(&mut *store), std::mem::take(&mut *punctures));
        Ok(Self {
            params,
            hashes,
            setup,
            base,
            shape,
            rows,
            store,
            punctures,
            phase: Phase::Setup,
            matcher: OutputMatcher::default(),
        })
    }

    /// The session's parameters.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// The first message.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Takes the responder's base-OT points and extends them into the
    /// correlated OTs the VOLE needs.
    pub fn absorb_choices(&mut self, choices: BaseChoices) -> Result<(), PsiError> {
        if !matches!(self.phase, Phase::Setup) {
            return Err(PsiError::OutOfTurn { message: "RR22 base choices" });
        }
        debug_assert_eq!(choices.points.len(), KAPPA);
        let pairs = self.base.seeds(self.params.task(), &choices.points)?;
        let mut choice_bits = vole::choice_bits(&self.shape, &self.punctures);
        let (corrections, t) = CotReceiver::new(pairs).extend(&choice_bits);
        choice_bits.zeroize();
        self.phase = Phase::Corrections { corrections, t, next_column: 0 };
        Ok(())
    }

    /// The next run of IKNP columns, until all 128 are sent.
    pub fn next_corrections(&mut self) -> Result<Option<CotCorrections>, PsiError> {
        let words = self.shape.cot_count() / 64;
        let Phase::Corrections { corrections, next_column, .. } = &mut self.phase else {
            return match self.phase {
                Phase::Setup => Err(PsiError::OutOfTurn { message: "RR22 OT corrections (before the base choices)" }),
                _ => Ok(None),
            };
        };
        let per_run = (MAX_CORRECTION_WORDS / words).clamp(1, KAPPA);
        let first = *next_column;
        let end = (first + per_run).min(KAPPA);
        let run = CotCorrections {
            first_column: first as u8,
            words_per_column: words as u32,
            words: corrections[first * words..end * words].to_vec(),
        };
        *next_column = end;
        if end == KAPPA {
            let Phase::Corrections { t, .. } = std::mem::replace(&mut self.phase, Phase::Setup) else {
                unreachable!("checked above");
            };
            self.phase = Phase::Trees { t };
        }
        Ok(Some(run))
    }

    /// Takes the responder's trees: finishes the VOLE, masks the store and
    /// computes its own outputs.
    pub fn absorb_trees(&mut self, trees: Trees) -> Result<(), PsiError> {
        let Phase::Trees { t } = &mut self.phase else {
            return Err(PsiError::OutOfTurn { message: "RR22 trees" });
        };
        if usize::from(trees.depth) != self.shape.depth as usize || trees.trees.len() != self.shape.trees {
            return Err(PsiError::Malformed {
                message: "RR22 trees",
                reason: format!(
                    "{} trees of depth {} where the session uses {} of depth {}",
                    trees.trees.len(),
                    trees.depth,
                    self.shape.trees,
                    self.shape.depth
                ),
            });
        }
        let mut w = vole::receiver_expand(&self.shape, t, &self.hashes.mask_key, &self.punctures, &trees.trees);
        t.zeroize();
        let mut e = vec![0u128; self.shape.noise_len()];
        for (tree, p) in self.punctures.iter_mut().enumerate() {
            e[tree * self.shape.leaves() + p.point] = p.value;
            p.value.zeroize();
        }
        let code = Code::new(&self.shape, self.hashes.code_seed);
        let (mut a, c) = rayon::join(|| code.encode(&mut e), || code.encode(&mut w));
        e.zeroize();
        w.zeroize();
        // P + A_v, in place of A_v.
        a.par_iter_mut().zip(&self.store).for_each(|(a, p)| *a ^= p);
        self.store.zeroize();
        self.store = Vec::new();
        self.phase = Phase::Masked { masked: a, next: 0, c };
        Ok(())
    }

    /// Computes the own keys' outputs once the whole store is sent — a
    /// node calls it then, so the work overlaps the responder's; otherwise
    /// the first outputs received trigger it.
    pub fn prepare_matching(&mut self) -> Result<(), PsiError> {
        match std::mem::replace(&mut self.phase, Phase::Outputs) {
            Phase::Sent { c } => {
                self.own_outputs(c);
                Ok(())
            }
            Phase::Outputs => Ok(()),
            other => {
                self.phase = other;
                Err(PsiError::OutOfTurn { message: "RR22 matching (before the whole store was sent)" })
            }
        }
    }

    /// Each own key's output, `H(Decode(C, r(x)))`, by value.
    fn own_outputs(&mut self, mut c: Vec<Gf>) {
        let len = self.params.output_len();
        let hashes = &self.hashes;
        let outputs = okvs::decode_all(&c, &self.rows, |_, z| hashes.output(z, len));
        c.zeroize();
        self.matcher.own = outputs.into_iter().enumerate().map(|(i, o)| (o, i as u32)).collect();
    }

    /// The next run of the masked store, until all of it is sent.
    pub fn next_masked(&mut self) -> Result<Option<Masked>, PsiError> {
        let Phase::Masked { masked, next, c } = &mut self.phase else {
            return match self.phase {
                Phase::Sent { .. } | Phase::Outputs => Ok(None),
                _ => Err(PsiError::OutOfTurn { message: "RR22 masked store (before the trees)" }),
            };
        };
        let first = *next;
        let end = (first + MAX_VALUES).min(masked.len());
        let run = Masked { first: first as u32, values: masked[first..end].to_vec() };
        *next = end;
        if end == masked.len() {
            masked.zeroize();
            let c = std::mem::take(c);
            self.phase = Phase::Sent { c };
        }
        Ok(Some(run))
    }

    /// Outputs received so far.
    pub fn received(&self) -> u64 {
        self.matcher.received()
    }

    /// Matches a run of the responder's outputs against its own.
    pub fn absorb_outputs(&mut self, outputs: Outputs) -> Result<(), PsiError> {
        if self.prepare_matching().is_err() {
            return Err(PsiError::OutOfTurn { message: "RR22 outputs (before the whole store was sent)" });
        }
        self.matcher.absorb("RR22 outputs", &outputs, self.params.output_len(), self.params.output_count())
    }

    /// The intersection, once every output arrived.
    pub fn finish(mut self) -> Result<RequesterOutput, PsiError> {
        let announced = self.params.output_count();
        match std::mem::replace(&mut self.phase, Phase::Outputs) {
            // A responder without keys sends no outputs at all.
            Phase::Sent { .. } | Phase::Outputs => {}
            other => {
                self.phase = other;
                let received = self.matcher.received();
                return Err(PsiError::TooFew { message: "RR22 outputs", announced, received });
            }
        }
        self.matcher.finish("RR22 outputs", self.params.mode(), announced)
    }
}

impl Drop for Rr22Requester {
    fn drop(&mut self) {
        self.store.zeroize();
        for p in &mut self.punctures {
            p.value.zeroize();
            p.point.zeroize();
        }
        match &mut self.phase {
            Phase::Corrections { t, .. } | Phase::Trees { t } => t.zeroize(),
            Phase::Masked { masked, c, .. } => {
                masked.zeroize();
                c.zeroize();
            }
            Phase::Sent { c } => c.zeroize(),
            Phase::Setup | Phase::Outputs => {}
        }
    }
}
