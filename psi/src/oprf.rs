//! A verifiable oblivious PRF on Ristretto255, shared by the protocols
//! that let a party learn the PRF of its own inputs and nothing else: the
//! blacklist query ([`crate::labeled`]) and private record lookup
//! (`stayput-pir`, whose records are sealed under it).
//!
//! **The function.** F_k(x) = k·H_D(x), where H_D is hash-to-group under a
//! domain ([`Domain`]: a protocol label and a name, such as the dataset's)
//! and k the server's secret scalar ([`OprfKey`]). K = k·G is published.
//!
//! **Evaluating obliviously.** The client blinds each input, A_i =
//! r_i·H_D(x_i) with a fresh random r_i ([`Blinding::blind`]); the server
//! returns B_i = k·A_i with one batched DLEQ proof (Chaum–Pedersen, RFC
//! 9497 style, [`stayput_zk_proofs::dleq`]) that every B_i used the key
//! behind K ([`OprfKey::evaluate`]); the client verifies the proof and
//! unblinds y_i = r_i⁻¹·B_i ([`Blinding::unblind`]).
//!
//! **Security.** The server sees uniformly random points, so it learns how
//! many inputs were evaluated and nothing about them. The client learns
//! one PRF value per point it sends, whatever points it sends: n
//! evaluations are worth at most n inputs (one-more Diffie–Hellman), which
//! is what a grant meters. The proof stops a server from evaluating some
//! inputs under another key to single them out. Blinding factors and the
//! key are zeroized and redacted in `Debug`.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use stayput_zk_proofs::dleq::DleqProof;
use zeroize::Zeroize;

use crate::PsiError;
use crate::group::{HashToGroup, TaskId};

/// Most points in one evaluation.
pub const MAX_EVALUATIONS: usize = 1 << 16;

/// The domain of a PRF's inputs: a protocol's label and a name (the
/// dataset's), so values of one protocol or dataset mean nothing in
/// another.
#[derive(Debug, Clone)]
pub struct Domain(HashToGroup);

impl Domain {
    /// The domain `label` / `name`.
    pub fn new(label: &[u8], name: &str) -> Result<Self, PsiError> {
        Ok(Self(HashToGroup::new(label, &TaskId::new(name.as_bytes().to_vec())?)))
    }

    fn hash(&self, input: &[u8]) -> RistrettoPoint {
        self.0.hash(input)
    }
}

/// A server's OPRF key (zeroized, redacted).
pub struct OprfKey(Scalar);

impl Drop for OprfKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for OprfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OprfKey(redacted)")
    }
}

impl OprfKey {
    /// A fresh key.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self(Scalar::random(rng))
    }

    /// The key from its 32 bytes (refusing zero and non-canonical values).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PsiError> {
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*bytes))
            .filter(|s| *s != Scalar::ZERO)
            .ok_or(PsiError::Labeled("the OPRF key is not a canonical non-zero scalar"))?;
        Ok(Self(s))
    }

    /// The key's bytes, for its owner's key file.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// K = k·G.
    pub fn public_key(&self) -> CompressedRistretto {
        (self.0 * curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT).compress()
    }

    /// F_k(`input`) computed by the key's holder, for its own inputs.
    pub fn output(&self, domain: &Domain, input: &[u8]) -> CompressedRistretto {
        (self.0 * domain.hash(input)).compress()
    }

    /// Answers a client: k·A_i for every blinded point, with a batched DLEQ
    /// proof bound to `context` (the task id).
    pub fn evaluate(
        &self,
        context: &[u8],
        blinded: &[CompressedRistretto],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Vec<CompressedRistretto>, DleqProof), PsiError> {
        if blinded.is_empty() || blinded.len() > MAX_EVALUATIONS {
            return Err(PsiError::Labeled("a query holds 1 to 65,536 blinded ids"));
        }
        let inputs: Vec<RistrettoPoint> = blinded
            .iter()
            .enumerate()
            .map(|(i, c)| crate::group::decode_point(c.as_bytes(), i))
            .collect::<Result<_, _>>()?;
        let outputs: Vec<RistrettoPoint> = inputs.par_iter().map(|a| self.0 * a).collect();
        let proof = DleqProof::prove(context, &self.0, &inputs, &outputs, rng)
            .map_err(|_| PsiError::Labeled("the DLEQ proof could not be made"))?;
        Ok((outputs.iter().map(RistrettoPoint::compress).collect(), proof))
    }
}

/// The client's side of one evaluation (its blinding factors are zeroized).
pub struct Blinding {
    blinds: Vec<Scalar>,
}

impl Drop for Blinding {
    fn drop(&mut self) {
        for b in &mut self.blinds {
            b.zeroize();
        }
    }
}

impl std::fmt::Debug for Blinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blinding({} inputs, redacted)", self.blinds.len())
    }
}

impl Blinding {
    /// Blinds `inputs` under `domain`: the points to send, and what
    /// unblinds the answer.
    pub fn blind(
        domain: &Domain,
        inputs: &[Vec<u8>],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Vec<CompressedRistretto>), PsiError> {
        if inputs.is_empty() || inputs.len() > MAX_EVALUATIONS {
            return Err(PsiError::Labeled("a query holds 1 to 65,536 ids"));
        }
        let blinds: Vec<Scalar> = inputs.iter().map(|_| Scalar::random(rng)).collect();
        let points = inputs.par_iter().zip(&blinds).map(|(x, r)| (r * domain.hash(x)).compress()).collect();
        Ok((Self { blinds }, points))
    }

    /// Inputs blinded.
    pub fn len(&self) -> usize {
        self.blinds.len()
    }

    /// Whether no input was blinded (never, once made).
    pub fn is_empty(&self) -> bool {
        self.blinds.is_empty()
    }

    /// Verifies the server's evaluations against its public key and
    /// returns F_k(x_i) per input, in order.
    pub fn unblind(
        self,
        context: &[u8],
        blinded: &[CompressedRistretto],
        evaluations: &[CompressedRistretto],
        proof: &DleqProof,
        public_key: &CompressedRistretto,
    ) -> Result<Vec<CompressedRistretto>, PsiError> {
        if evaluations.len() != self.blinds.len() || blinded.len() != self.blinds.len() {
            return Err(PsiError::Labeled("the answer does not hold one evaluation per id"));
        }
        let decode = |v: &[CompressedRistretto]| -> Result<Vec<RistrettoPoint>, PsiError> {
            v.iter().enumerate().map(|(i, c)| crate::group::decode_point(c.as_bytes(), i)).collect()
        };
        let (inputs, outputs) = (decode(blinded)?, decode(evaluations)?);
        let public = public_key.decompress().ok_or(PsiError::Labeled("the published OPRF key is not a point"))?;
        proof.verify(context, &public, &inputs, &outputs).map_err(|_| {
            PsiError::Labeled("the data owner's proof does not verify against its published key; nothing is released")
        })?;
        Ok(outputs.par_iter().zip(&self.blinds).map(|(b, r)| (r.invert() * b).compress()).collect())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn an_oblivious_evaluation_equals_the_direct_one_and_is_bound_to_the_domain() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let key = OprfKey::random(&mut rng);
        let domain = Domain::new(b"stayput/test", "d").unwrap();
        let inputs = vec![b"a".to_vec(), b"b".to_vec()];
        let (blinding, blinded) = Blinding::blind(&domain, &inputs, &mut rng).unwrap();
        let (evaluations, proof) = key.evaluate(b"t", &blinded, &mut rng).unwrap();
        let ys = blinding.unblind(b"t", &blinded, &evaluations, &proof, &key.public_key()).unwrap();
        assert_eq!(ys, inputs.iter().map(|x| key.output(&domain, x)).collect::<Vec<_>>());
        let other = Domain::new(b"stayput/test", "e").unwrap();
        assert_ne!(ys[0], key.output(&other, b"a"));
    }

    #[test]
    fn a_proof_for_another_context_or_key_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(10);
        let key = OprfKey::random(&mut rng);
        let domain = Domain::new(b"stayput/test", "d").unwrap();
        let (blinding, blinded) = Blinding::blind(&domain, &[b"a".to_vec()], &mut rng).unwrap();
        let (evaluations, proof) = key.evaluate(b"t", &blinded, &mut rng).unwrap();
        let other = OprfKey::random(&mut rng).public_key();
        assert!(blinding.unblind(b"t", &blinded, &evaluations, &proof, &other).is_err());
        let (blinding, blinded) = Blinding::blind(&domain, &[b"a".to_vec()], &mut rng).unwrap();
        let (evaluations, proof) = key.evaluate(b"t", &blinded, &mut rng).unwrap();
        assert!(blinding.unblind(b"u", &blinded, &evaluations, &proof, &key.public_key()).is_err());
    }
}
