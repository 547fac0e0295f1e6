//! `stayput bench score`: one subject's credit score under their own TFHE
//! key ([`stayput_mpc_engine::score`]): a scorecard of `features` binned
//! features (4 bins each), half held by a bank and half by a bureau, each
//! encrypting its bins under the subject's public key; the scorer
//! evaluates the scorecard; the subject decrypts. Timed phase by phase —
//! key generation (once per key pair, on the subject's device),
//! encryption, evaluation, decryption — and checked against the scorecard
//! in the clear.

use std::fmt;
use std::time::{Duration, Instant};

use stayput_mpc_engine::score::{EncryptedBins, Scorecard, ScoredFeature, Scorer, SubjectKeys, encrypt_bins};

use crate::BenchError;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct ScoreBenchReport {
    /// Features of the scorecard.
    pub features: usize,
    /// The subject's key generation.
    pub keygen: Duration,
    /// Size of the public key and of the compressed server key, bytes.
    pub key_bytes: (usize, usize),
    /// Both institutions' encryption of their bins.
    pub encryption: Duration,
    /// Decompressing the server key (once per subject key at a scorer).
    pub server_key: Duration,
    /// The scorecard's evaluation.
    pub evaluation: Duration,
    /// The subject's decryption.
    pub decryption: Duration,
    /// Score and decision.
    pub result: (u16, bool),
    /// Cores used.
    pub threads: usize,
}

impl fmt::Display for ScoreBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |d: Duration| d.as_secs_f64();
        writeln!(
            f,
            "score: {} features (4 bins each), bank and bureau each encrypting half, {} threads",
            self.features, self.threads
        )?;
        writeln!(
            f,
            "  subject's key generation: {:.2} s (public key {:.1} kB, compressed server key {:.1} MB)",
            s(self.keygen),
            self.key_bytes.0 as f64 / 1e3,
            self.key_bytes.1 as f64 / 1e6
        )?;
        writeln!(f, "  encryption (both institutions): {:.3} s", s(self.encryption))?;
        writeln!(f, "  scorer: server key {:.2} s, evaluation {:.2} s", s(self.server_key), s(self.evaluation))?;
        writeln!(f, "  decryption: {:.4} s", s(self.decryption))?;
        let per_score = self.encryption + self.evaluation + self.decryption;
        write!(
            f,
            "  per score (encryption + evaluation + decryption): {:.2} s; score {} ({}), equal to the scorecard in the clear",
            s(per_score),
            self.result.0,
            if self.result.1 { "approved" } else { "declined" }
        )
    }
}

/// A scorecard of `features` features with four bins each.
pub fn scorecard(features: usize) -> Scorecard {
    Scorecard {
        name: "bench/v1".into(),
        base: 300,
        threshold: 600,
        features: (0..features)
            .map(|i| ScoredFeature {
                name: format!("feature-{i}"),
                edges: vec![100, 200, 300],
                points: (0..4u16).map(|b| b * (5 + u16::try_from(i % 7).expect("small"))).collect(),
            })
            .collect(),
    }
}

/// Runs the benchmark.
pub fn run(features: usize) -> Result<ScoreBenchReport, BenchError> {
    let stats = |e: stayput_mpc_engine::MpcError| BenchError::Stats(e.to_string());
    let card = scorecard(features);
    card.validate().map_err(stats)?;
    let values: Vec<i64> = (0..features).map(|i| i64::try_from(i * 37 % 400).expect("small")).collect();
    let bins: Vec<u8> =
        values.iter().enumerate().map(|(i, &v)| card.bin(i, v)).collect::<Result<_, _>>().map_err(stats)?;
    let expected = card.score_clear(&bins).map_err(stats)?;

    let t = Instant::now();
    let (subject, public) = SubjectKeys::generate().map_err(stats)?;
    let keygen = t.elapsed();

    let split = features / 2;
    let t = Instant::now();
    let mut parts = Vec::new();
    for (first, held) in [(0, &bins[..split]), (split, &bins[split..])] {
        if !held.is_empty() {
            parts.push(EncryptedBins {
                first,
                count: held.len(),
                list: encrypt_bins(&public.public_key, held).map_err(stats)?,
            });
        }
    }
    let encryption = t.elapsed();

    let t = Instant::now();
    let scorer = Scorer::new(&public).map_err(stats)?;
    let server_key = t.elapsed();
    let t = Instant::now();
    let encrypted = scorer.score(&card, &parts).map_err(stats)?;
    let evaluation = t.elapsed();

    let t = Instant::now();
    let result = subject.decrypt(&encrypted).map_err(stats)?;
    let decryption = t.elapsed();
    if result != expected {
        return Err(BenchError::WrongResult { expected: u64::from(expected.0), got: u64::from(result.0) });
    }
    Ok(ScoreBenchReport {
        features,
        keygen,
        key_bytes: (public.public_key.len(), public.server_key.len()),
        encryption,
        server_key,
        evaluation,
        decryption,
        result,
        threads: rayon::current_num_threads(),
    })
}
