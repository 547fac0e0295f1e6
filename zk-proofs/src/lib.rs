//! # Stayput zero-knowledge proofs
//!
//! Sans-IO proofs the protocols attach to what they send:
//!
//! * [`contribution`] — Pedersen commitments to a site's federated
//!   statistics vector, bulletproofs range proofs of declared bounds, and
//!   the check of a pooled opening against the product of every site's
//!   commitments (design brief §4.3).
//! * [`dleq`] — batched Chaum–Pedersen discrete-log-equality proofs (RFC
//!   9497 style) for the blacklist query's verifiable OPRF (§4.2).
#![forbid(unsafe_code)]

pub mod contribution;
pub mod dleq;
mod error;

pub use error::ZkError;

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use crate::ZkError;
    use crate::contribution::Contribution;
    use crate::contribution::{Bounds, ProofContext, check_opening, commit_and_prove, verify};

    const CTX: ProofContext<'static> = ProofContext { task: "t-1", party: "hospital-a" };

    fn bounds(n: usize) -> Vec<Bounds> {
        (0..n).map(|_| Bounds { low: -1000, high: 100_000 }).collect()
    }

    #[test]
    fn honest_contributions_verify_and_open() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        // 40 entries: 80 derived values, two chunks (64 + 16).
        let a: Vec<i128> = (0..40).map(|i| i * 7 - 500).collect();
        let b: Vec<i128> = (0..40).map(|i| 99_000 - i).collect();
        let (ca, ra) = commit_and_prove(&CTX, &a, &bounds(40), &mut rng).unwrap();
        let ctx_b = ProofContext { task: "t-1", party: "hospital-b" };
        let (cb, rb) = commit_and_prove(&ctx_b, &b, &bounds(40), &mut rng).unwrap();
        verify(&CTX, &ca, &bounds(40)).unwrap();
        verify(&ctx_b, &cb, &bounds(40)).unwrap();
        let pooled: Vec<i128> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let blind: Vec<_> = ra.0.iter().zip(&rb.0).map(|(x, y)| x + y).collect();
        check_opening(&[&ca, &cb], &pooled, &blind).unwrap();
        // A pooled value off by one is caught at its entry.
        let mut wrong = pooled.clone();
        wrong[17] += 1;
        assert_eq!(check_opening(&[&ca, &cb], &wrong, &blind), Err(ZkError::OpeningMismatch { entry: 17 }));
        // Round trip through bytes.
        let back = Contribution::from_bytes(&ca.to_bytes()).unwrap();
        verify(&CTX, &back, &bounds(40)).unwrap();
        assert_eq!(back.digest(), ca.digest());
    }

    /// Known-answer vector of the contribution wire format: fixed values,
    /// bounds, context and proving randomness. Regenerate with
    /// `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-zk-proofs contribution_known`.
    #[test]
    fn contribution_known_answer_vector() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Vector {
            version: String,
            task: String,
            party: String,
            values: Vec<i64>,
            bounds: Vec<(i64, i64)>,
            contribution_hex: String,
            digest_hex: String,
        }
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("test-vectors/contribution-v1.json");
        let values: Vec<i128> = vec![120, -35, 0];
        let b = vec![Bounds { low: 0, high: 1000 }, Bounds { low: -100, high: 100 }, Bounds { low: 0, high: 0 }];
        let (c, _) = commit_and_prove(&CTX, &values, &b, &mut rand_chacha::ChaCha20Rng::seed_from_u64(21)).unwrap();
        let computed = Vector {
            version: "stayput contribution v1".into(),
            task: CTX.task.into(),
            party: CTX.party.into(),
            values: values.iter().map(|v| i64::try_from(*v).unwrap()).collect(),
            bounds: b.iter().map(|x| (i64::try_from(x.low).unwrap(), i64::try_from(x.high).unwrap())).collect(),
            contribution_hex: hex::encode(c.to_bytes()),
            digest_hex: hex::encode(c.digest()),
        };
        if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
        }
        let stored: Vector = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(stored, computed);
        let decoded = Contribution::from_bytes(&hex::decode(&stored.contribution_hex).unwrap()).unwrap();
        verify(&CTX, &decoded, &b).unwrap();
    }

    #[test]
    fn out_of_range_contributions_are_refused_or_caught() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let mut values = vec![5i128; 4];
        values[2] = 100_001;
        assert_eq!(
            commit_and_prove(&CTX, &values, &bounds(4), &mut rng).unwrap_err(),
            ZkError::OutOfBounds { entry: 2 }
        );
        // A contribution proven under wide bounds fails the declared ones.
        let wide = vec![Bounds { low: 0, high: 1 << 40 }; 4];
        let (c, _) = commit_and_prove(&CTX, &values, &wide, &mut rng).unwrap();
        assert!(matches!(verify(&CTX, &c, &bounds(4)), Err(ZkError::RangeProofFails { .. })));
        // A proof replayed by another party or into another task fails.
        let (c, _) = commit_and_prove(&CTX, &[1, 2], &bounds(2), &mut rng).unwrap();
        let other = ProofContext { task: "t-1", party: "hospital-b" };
        assert!(verify(&other, &c, &bounds(2)).is_err());
        assert!(verify(&ProofContext { task: "t-2", party: "hospital-a" }, &c, &bounds(2)).is_err());
        // Malformed bytes are refused before allocating.
        assert!(Contribution::from_bytes(&u32::MAX.to_le_bytes()).is_err());
        let mut bytes = c.to_bytes();
        bytes.push(0);
        assert!(Contribution::from_bytes(&bytes).is_err());
    }
}
