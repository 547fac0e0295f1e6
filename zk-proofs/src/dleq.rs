//! Batched discrete-log-equality (Chaum–Pedersen) proofs over Ristretto255,
//! in the manner of RFC 9497 §2.2 (the VOPRF's `GenerateProof` /
//! `VerifyProof`), for a verifiable OPRF: a server holding k with public
//! key K = k·G proves that it computed every B_i = k·A_i with that same k.
//!
//! **Batching.** Both sides derive weights d_i from a hash of the context,
//! K and every (A_i, B_i) with its index, and fold the batch into one pair
//! M = Σ d_i·A_i, Z = Σ d_i·B_i. A single proof that log_G K = log_M Z then
//! covers the batch: if any B_i ≠ k·A_i, Z ≠ k·M except with probability
//! about 1/ℓ over the weights, which the prover cannot choose.
//!
//! **Proof.** The prover draws r, sends c = H(context, K, M, Z, r·G, r·M)
//! and s = r − c·k; the verifier recomputes t2 = s·G + c·K and
//! t3 = s·M + c·Z and checks c. Every hash carries the label
//! `stayput/dleq/v1` and a caller-given context (task id, dataset version),
//! so a proof cannot be replayed into another task.
//!
//! Wire form: c ‖ s, two canonical scalars (64 bytes).

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, VartimeMultiscalarMul};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

use crate::ZkError;

const LABEL: &[u8] = b"stayput/dleq/v1";

/// A batched DLEQ proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DleqProof {
    c: Scalar,
    s: Scalar,
}

fn hash_to_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    h.update(LABEL);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    Scalar::from_hash(h)
}

/// The batch folded into one pair (M, Z) with hash-derived weights.
fn composite(
    context: &[u8],
    key: &RistrettoPoint,
    inputs: &[RistrettoPoint],
    outputs: &[RistrettoPoint],
) -> (RistrettoPoint, RistrettoPoint) {
    let key_bytes = key.compress().to_bytes();
    let mut seed = Sha512::new();
    seed.update(LABEL);
    seed.update(b"seed");
    seed.update((context.len() as u64).to_le_bytes());
    seed.update(context);
    seed.update(key_bytes);
    seed.update((inputs.len() as u64).to_le_bytes());
    let seed = seed.finalize();
    let weights: Vec<Scalar> = inputs
        .iter()
        .zip(outputs)
        .enumerate()
        .map(|(i, (a, b))| {
            hash_to_scalar(&[
                b"composite",
                &seed,
                &(i as u64).to_le_bytes(),
                a.compress().as_bytes(),
                b.compress().as_bytes(),
            ])
        })
        .collect();
    (
        RistrettoPoint::vartime_multiscalar_mul(&weights, inputs),
        RistrettoPoint::vartime_multiscalar_mul(&weights, outputs),
    )
}

fn challenge(
    context: &[u8],
    key: &RistrettoPoint,
    m: &RistrettoPoint,
    z: &RistrettoPoint,
    t2: &RistrettoPoint,
    t3: &RistrettoPoint,
) -> Scalar {
    hash_to_scalar(&[
        b"challenge",
        context,
        key.compress().as_bytes(),
        m.compress().as_bytes(),
        z.compress().as_bytes(),
        t2.compress().as_bytes(),
        t3.compress().as_bytes(),
    ])
}

impl DleqProof {
    /// Proves that every `outputs[i] = key·inputs[i]` for the key whose
    /// public key is `key·G`.
    pub fn prove(
        context: &[u8],
        key: &Scalar,
        inputs: &[RistrettoPoint],
        outputs: &[RistrettoPoint],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, ZkError> {
        if inputs.len() != outputs.len() || inputs.is_empty() {
            return Err(ZkError::Shape { expected: inputs.len(), got: outputs.len() });
        }
        let public = key * RISTRETTO_BASEPOINT_POINT;
        let (m, z) = composite(context, &public, inputs, outputs);
        let mut r = Scalar::random(rng);
        let (t2, t3) = (r * RISTRETTO_BASEPOINT_POINT, r * m);
        let c = challenge(context, &public, &m, &z, &t2, &t3);
        let s = r - c * key;
        r.zeroize();
        Ok(Self { c, s })
    }

    /// Verifies the proof for public key `public` over the batch.
    pub fn verify(
        &self,
        context: &[u8],
        public: &RistrettoPoint,
        inputs: &[RistrettoPoint],
        outputs: &[RistrettoPoint],
    ) -> Result<(), ZkError> {
        if inputs.len() != outputs.len() || inputs.is_empty() {
            return Err(ZkError::Shape { expected: inputs.len(), got: outputs.len() });
        }
        if *public == RistrettoPoint::identity() {
            return Err(ZkError::DleqFails);
        }
        let (m, z) = composite(context, public, inputs, outputs);
        let t2 = RistrettoPoint::vartime_multiscalar_mul([self.s, self.c], [RISTRETTO_BASEPOINT_POINT, *public]);
        let t3 = RistrettoPoint::vartime_multiscalar_mul([self.s, self.c], [m, z]);
        if challenge(context, public, &m, &z, &t2, &t3) == self.c { Ok(()) } else { Err(ZkError::DleqFails) }
    }

    /// c ‖ s.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.c.as_bytes());
        out[32..].copy_from_slice(self.s.as_bytes());
        out
    }

    /// Decodes c ‖ s, refusing non-canonical scalars.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let bytes: &[u8; 64] = bytes.try_into().map_err(|_| ZkError::Malformed("a DLEQ proof is 64 bytes"))?;
        let scalar = |b: &[u8]| {
            Option::<Scalar>::from(Scalar::from_canonical_bytes(b.try_into().expect("32 bytes")))
                .ok_or(ZkError::Malformed("non-canonical scalar in a DLEQ proof"))
        };
        Ok(Self { c: scalar(&bytes[..32])?, s: scalar(&bytes[32..])? })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn batch(key: &Scalar, n: usize, seed: u64) -> (Vec<RistrettoPoint>, Vec<RistrettoPoint>) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let inputs: Vec<RistrettoPoint> = (0..n).map(|_| RistrettoPoint::random(&mut rng)).collect();
        let outputs = inputs.iter().map(|a| key * a).collect();
        (inputs, outputs)
    }

    #[test]
    fn honest_batches_verify_and_tampering_fails() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let key = Scalar::random(&mut rng);
        let public = key * RISTRETTO_BASEPOINT_POINT;
        let (inputs, outputs) = batch(&key, 50, 1);
        let proof = DleqProof::prove(b"task t-1", &key, &inputs, &outputs, &mut rng).unwrap();
        proof.verify(b"task t-1", &public, &inputs, &outputs).unwrap();
        let decoded = DleqProof::from_bytes(&proof.to_bytes()).unwrap();
        decoded.verify(b"task t-1", &public, &inputs, &outputs).unwrap();

        // Wrong key.
        let other = Scalar::random(&mut rng) * RISTRETTO_BASEPOINT_POINT;
        assert_eq!(proof.verify(b"task t-1", &other, &inputs, &outputs), Err(ZkError::DleqFails));
        // One tampered evaluation.
        let mut tampered = outputs.clone();
        tampered[17] += RISTRETTO_BASEPOINT_POINT;
        assert_eq!(proof.verify(b"task t-1", &public, &inputs, &tampered), Err(ZkError::DleqFails));
        // An evaluation under another key, proven honestly for the rest.
        let mut mixed = outputs.clone();
        mixed[3] = Scalar::from(7u8) * inputs[3];
        assert!(
            DleqProof::prove(b"task t-1", &key, &inputs, &mixed, &mut rng)
                .unwrap()
                .verify(b"task t-1", &public, &inputs, &mixed)
                .is_err()
        );
        // Wrong batch order.
        let (mut i2, mut o2) = (inputs.clone(), outputs.clone());
        i2.swap(0, 1);
        o2.swap(0, 1);
        assert_eq!(proof.verify(b"task t-1", &public, &i2, &o2), Err(ZkError::DleqFails));
        // Another context.
        assert_eq!(proof.verify(b"task t-2", &public, &inputs, &outputs), Err(ZkError::DleqFails));
        // Malformed encodings.
        assert!(DleqProof::from_bytes(&[0xff; 64]).is_err());
        assert!(DleqProof::from_bytes(&[0; 63]).is_err());
        assert!(DleqProof::prove(b"x", &key, &inputs, &outputs[..3], &mut rng).is_err());
    }

    /// Known-answer vector: deterministic key, batch and proving randomness.
    /// Regenerate with `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-zk-proofs dleq`.
    #[test]
    fn dleq_known_answer_vector() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Vector {
            version: String,
            context_hex: String,
            key_hex: String,
            public_key_hex: String,
            inputs_hex: Vec<String>,
            outputs_hex: Vec<String>,
            proof_hex: String,
        }
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("test-vectors/dleq-ristretto255-v1.json");
        let key = Scalar::from_bytes_mod_order([0x42; 32]);
        let (inputs, outputs) = batch(&key, 4, 5);
        let proof =
            DleqProof::prove(b"stayput kat", &key, &inputs, &outputs, &mut rand_chacha::ChaCha20Rng::seed_from_u64(9))
                .unwrap();
        let hex_points = |v: &[RistrettoPoint]| v.iter().map(|p| hex::encode(p.compress().as_bytes())).collect();
        let computed = Vector {
            version: "stayput dleq ristretto255 v1".into(),
            context_hex: hex::encode(b"stayput kat"),
            key_hex: hex::encode(key.as_bytes()),
            public_key_hex: hex::encode((key * RISTRETTO_BASEPOINT_POINT).compress().as_bytes()),
            inputs_hex: hex_points(&inputs),
            outputs_hex: hex_points(&outputs),
            proof_hex: hex::encode(proof.to_bytes()),
        };
        if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
        }
        let stored: Vector = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(stored, computed);
    }
}
