//! Verifiable contributions to a secure aggregation: Pedersen commitments
//! to each entry of a site's vector, bulletproofs range proofs that every
//! entry lies within its declared bounds, and the check of a pooled
//! opening against the product of all sites' commitments.
//!
//! **Commitments.** Entry k of site i is committed as
//! C_ik = v_ik·B + r_ik·B̃ (bulletproofs' Pedersen generators; r_ik random).
//! Binding under discrete log in Ristretto255, perfectly hiding.
//!
//! **Bounds.** For entry k with declared bounds [lo_k, hi_k] (hi_k − lo_k
//! < 2^64) the site proves that both v − lo (committed as C − lo·B, blinding
//! r) and hi − v (committed as hi·B − C, blinding −r) lie in [0, 2^64). The
//! verifier derives both commitments from C itself, so a proof for other
//! commitments is useless. The derived values are proven in aggregated
//! range proofs of [`CHUNK`] values each, the last chunk padded with
//! commitments to zero that travel with it. Every proof's transcript is bound
//! to the task, the site and the chunk, so a proof cannot be replayed into
//! another task or by another site.
//!
//! **Pooled opening.** The sites share their blindings exactly as their
//! values, so the requester learns the pooled (v_k, r_k) and anyone can
//! check Π_i C_ik = v_k·B + r_k·B̃ for every k ([`check_opening`]): a site
//! whose shares do not match its commitments makes this fail, and the
//! result is not released.
//!
//! What the proofs do not give: that a site's vector is the truth about its
//! table. They bound how far a lying site can move the result.

use bulletproofs::{BulletproofGens, PedersenGens, RangeProof};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::ZkError;

/// Derived values per aggregated range proof (a power of two).
pub const CHUNK: usize = 64;
/// Bits of every range proof.
pub const RANGE_BITS: usize = 64;
/// Most entries a contribution may commit to.
pub const MAX_ENTRIES: usize = 4096;

/// Inclusive bounds of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Smallest allowed value.
    pub low: i128,
    /// Largest allowed value.
    pub high: i128,
}

/// What binds a contribution's proofs: the task and the contributing site.
#[derive(Debug, Clone, Copy)]
pub struct ProofContext<'a> {
    /// Task id.
    pub task: &'a str,
    /// The contributing organisation.
    pub party: &'a str,
}

/// One aggregated range proof and the padding commitments it covers.
#[derive(Clone, Debug)]
pub struct RangeChunk {
    /// The proof.
    pub proof: RangeProof,
    /// Commitments to zero that pad the last chunk to a power of two.
    pub padding: Vec<CompressedRistretto>,
}

/// A site's public contribution: commitments and range proofs.
#[derive(Clone, Debug)]
pub struct Contribution {
    /// One commitment per entry.
    pub commitments: Vec<CompressedRistretto>,
    /// Range proofs over the derived commitments, in order.
    pub proofs: Vec<RangeChunk>,
}

/// A site's blinding factors (secret until pooled; zeroized, redacted).
pub struct Blindings(pub Vec<Scalar>);

impl Drop for Blindings {
    fn drop(&mut self) {
        for s in &mut self.0 {
            s.zeroize();
        }
    }
}

impl std::fmt::Debug for Blindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blindings({} entries, redacted)", self.0.len())
    }
}

fn to_scalar(v: i128) -> Scalar {
    let m = Scalar::from(v.unsigned_abs());
    if v < 0 { -m } else { m }
}

fn transcript(ctx: &ProofContext<'_>, chunk: usize) -> Transcript {
    let mut t = Transcript::new(b"stayput/contribution/v1");
    t.append_message(b"task", ctx.task.as_bytes());
    t.append_message(b"party", ctx.party.as_bytes());
    t.append_u64(b"chunk", chunk as u64);
    t
}

fn generators() -> (BulletproofGens, PedersenGens) {
    (BulletproofGens::new(RANGE_BITS, CHUNK), PedersenGens::default())
}

fn check_bounds(bounds: &[Bounds]) -> Result<(), ZkError> {
    if bounds.len() > MAX_ENTRIES {
        return Err(ZkError::TooMany { got: bounds.len(), max: MAX_ENTRIES });
    }
    for (k, b) in bounds.iter().enumerate() {
        let width = b.high.checked_sub(b.low).ok_or(ZkError::BoundsTooWide { entry: k })?;
        if width < 0 || u64::try_from(width).is_err() {
            return Err(ZkError::BoundsTooWide { entry: k });
        }
    }
    Ok(())
}

/// The derived commitments a verifier computes from C: (C − lo·B, hi·B − C).
fn derived(
    pc: &PedersenGens,
    commitments: &[CompressedRistretto],
    bounds: &[Bounds],
) -> Result<Vec<CompressedRistretto>, ZkError> {
    let mut out = Vec::with_capacity(2 * commitments.len());
    for (k, (c, b)) in commitments.iter().zip(bounds).enumerate() {
        let point = c.decompress().ok_or(ZkError::BadPoint { entry: k })?;
        out.push((point - to_scalar(b.low) * pc.B).compress());
        out.push((to_scalar(b.high) * pc.B - point).compress());
    }
    Ok(out)
}

/// Commits to `values` and proves each within its `bounds`. Refuses (naming
/// the entry) a value outside its bounds: a site never sends a contribution
/// that would be caught.
pub fn commit_and_prove(
    ctx: &ProofContext<'_>,
    values: &[i128],
    bounds: &[Bounds],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Contribution, Blindings), ZkError> {
    if values.len() != bounds.len() {
        return Err(ZkError::Shape { expected: bounds.len(), got: values.len() });
    }
    check_bounds(bounds)?;
    let (bp, pc) = generators();
    let mut derived_values = Vec::with_capacity(2 * values.len());
    let mut derived_blindings = Vec::with_capacity(2 * values.len());
    let mut commitments = Vec::with_capacity(values.len());
    let mut blindings = Blindings(Vec::with_capacity(values.len()));
    for (k, (v, b)) in values.iter().zip(bounds).enumerate() {
        if v < &b.low || v > &b.high {
            return Err(ZkError::OutOfBounds { entry: k });
        }
        let r = Scalar::random(rng);
        commitments.push(pc.commit(to_scalar(*v), r).compress());
        derived_values.push(u64::try_from(v - b.low).expect("within bounds"));
        derived_values.push(u64::try_from(b.high - v).expect("within bounds"));
        derived_blindings.push(r);
        derived_blindings.push(-r);
        blindings.0.push(r);
    }
    let mut proofs = Vec::new();
    for (i, (vals, blinds)) in derived_values.chunks(CHUNK).zip(derived_blindings.chunks(CHUNK)).enumerate() {
        let size = vals.len().next_power_of_two();
        let mut vals = vals.to_vec();
        let mut blinds = blinds.to_vec();
        let pad: Vec<Scalar> = (vals.len()..size).map(|_| Scalar::random(rng)).collect();
        vals.resize(size, 0);
        blinds.extend(&pad);
        let (proof, all) =
            RangeProof::prove_multiple_with_rng(&bp, &pc, &mut transcript(ctx, i), &vals, &blinds, RANGE_BITS, rng)
                .map_err(|e| ZkError::Proof(e.to_string()))?;
        let padding = all[all.len() - pad.len()..].to_vec();
        for b in &mut blinds {
            b.zeroize();
        }
        proofs.push(RangeChunk { proof, padding });
    }
    Ok((Contribution { commitments, proofs }, blindings))
}

/// Verifies a contribution against the declared bounds.
pub fn verify(ctx: &ProofContext<'_>, contribution: &Contribution, bounds: &[Bounds]) -> Result<(), ZkError> {
    check_bounds(bounds)?;
    if contribution.commitments.len() != bounds.len() {
        return Err(ZkError::Shape { expected: bounds.len(), got: contribution.commitments.len() });
    }
    let (bp, pc) = generators();
    let derived = derived(&pc, &contribution.commitments, bounds)?;
    let chunks: Vec<&[CompressedRistretto]> = derived.chunks(CHUNK).collect();
    if chunks.len() != contribution.proofs.len() {
        return Err(ZkError::Shape { expected: chunks.len(), got: contribution.proofs.len() });
    }
    for (i, (chunk, proof)) in chunks.iter().zip(&contribution.proofs).enumerate() {
        if chunk.len() + proof.padding.len() != chunk.len().next_power_of_two() {
            return Err(ZkError::RangeProofFails { chunk: i });
        }
        let all: Vec<CompressedRistretto> = chunk.iter().chain(&proof.padding).copied().collect();
        proof
            .proof
            .verify_multiple(&bp, &pc, &mut transcript(ctx, i), &all, RANGE_BITS)
            .map_err(|_| ZkError::RangeProofFails { chunk: i })?;
    }
    Ok(())
}

/// Checks the pooled opening (values, blindings) against the product of
/// every site's commitments; names the first entry that does not match.
pub fn check_opening(
    contributions: &[&Contribution],
    pooled_values: &[i128],
    pooled_blindings: &[Scalar],
) -> Result<(), ZkError> {
    let pc = PedersenGens::default();
    if pooled_values.len() != pooled_blindings.len() {
        return Err(ZkError::Shape { expected: pooled_values.len(), got: pooled_blindings.len() });
    }
    for c in contributions {
        if c.commitments.len() != pooled_values.len() {
            return Err(ZkError::Shape { expected: pooled_values.len(), got: c.commitments.len() });
        }
    }
    for (k, (v, r)) in pooled_values.iter().zip(pooled_blindings).enumerate() {
        let mut product = RistrettoPoint::identity();
        for c in contributions {
            product += c.commitments[k].decompress().ok_or(ZkError::BadPoint { entry: k })?;
        }
        if product != pc.commit(to_scalar(*v), *r) {
            return Err(ZkError::OpeningMismatch { entry: k });
        }
    }
    Ok(())
}

impl Contribution {
    /// Canonical bytes: entry count, commitments, then per chunk the
    /// padding count, padding, proof length and proof.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Counts are bounded far below u32 (MAX_ENTRIES, CHUNK, proof sizes).
        let u32_le = |n: usize| u32::try_from(n).expect("bounded count").to_le_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(&u32_le(self.commitments.len()));
        for c in &self.commitments {
            out.extend_from_slice(c.as_bytes());
        }
        for chunk in &self.proofs {
            out.extend_from_slice(&u32_le(chunk.padding.len()));
            for p in &chunk.padding {
                out.extend_from_slice(p.as_bytes());
            }
            let proof = chunk.proof.to_bytes();
            out.extend_from_slice(&u32_le(proof.len()));
            out.extend_from_slice(&proof);
        }
        out
    }

    /// Decodes [`Contribution::to_bytes`], bounding every count before
    /// allocating.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], ZkError> {
            if r.len() < n {
                return Err(ZkError::Malformed("truncated"));
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        let count = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let entries = count(take(4)?);
        if entries > MAX_ENTRIES {
            return Err(ZkError::TooMany { got: entries, max: MAX_ENTRIES });
        }
        let point = |b: &[u8]| CompressedRistretto::from_slice(b).map_err(|_| ZkError::Malformed("point"));
        let commitments = (0..entries).map(|_| point(take(32)?)).collect::<Result<Vec<_>, _>>()?;
        let chunks = (2 * entries).div_ceil(CHUNK);
        let mut proofs = Vec::with_capacity(chunks);
        for _ in 0..chunks {
            let pads = count(take(4)?);
            if pads >= CHUNK {
                return Err(ZkError::Malformed("padding"));
            }
            let padding = (0..pads).map(|_| point(take(32)?)).collect::<Result<Vec<_>, _>>()?;
            let len = count(take(4)?);
            if len > 2048 {
                return Err(ZkError::Malformed("proof length"));
            }
            let proof = RangeProof::from_bytes(take(len)?).map_err(|_| ZkError::Malformed("range proof"))?;
            proofs.push(RangeChunk { proof, padding });
        }
        if !r.is_empty() {
            return Err(ZkError::Malformed("trailing bytes"));
        }
        Ok(Self { commitments, proofs })
    }

    /// SHA-256 of the canonical commitments (what the ledger records).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"stayput/commitments/v1");
        for c in &self.commitments {
            h.update(c.as_bytes());
        }
        h.finalize().into()
    }
}
