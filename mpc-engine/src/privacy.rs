//! Differential privacy for aggregate-only (compute-only) queries: exact
//! discrete Laplace noise and a per-grant ε budget. Sans-IO.
//!
//! **Mechanism.** A count or a fixed-point sum is an integer, so the noise
//! is an integer too: the discrete Laplace distribution with scale
//! t = Δ/ε, P(Z = z) ∝ exp(−|z|/t), where Δ is the query's sensitivity in
//! fixed-point units (1 for a count; max(|low|, |high|) of the declared
//! column range for a sum). Adding it to every released entry makes the
//! release ε-differentially private per entry-disjoint cell (one row
//! changes one cell of a gridded query); ε composes additively across
//! queries, which the [`Budget`] tracks.
//!
//! **Sampling is exact**, with no floating point: floating-point Laplace
//! samplers leak through their rounding (Mironov, CCS 2012). Scales are
//! rationals t = s/r and the sampler follows Canonne, Kamath and Steinke,
//! "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020),
//! Algorithm 2, built on exact Bernoulli(exp(−γ)) trials for rational γ
//! (their Algorithm 1). The code here is this project's own.
//!
//! **Budget.** ε is accounted in thousandths (milli-ε) so sums are exact;
//! a query that would exceed the budget is refused with what is left, and a
//! refusal spends nothing.

use rand_core::RngCore;

use crate::MpcError;

/// A uniform integer in [0, n) without modulo bias.
fn uniform_below(n: u128, rng: &mut impl RngCore) -> u128 {
    debug_assert!(n > 0);
    let zone = u128::MAX - (u128::MAX % n);
    loop {
        let x = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if x < zone {
            return x % n;
        }
    }
}

/// Bernoulli(num/den), exactly.
fn bernoulli(num: u128, den: u128, rng: &mut impl RngCore) -> bool {
    uniform_below(den, rng) < num
}

/// Bernoulli(exp(−num/den)) for 0 ≤ num/den ≤ 1, exactly (CKS Alg. 1,
/// first case): count the trials of Bernoulli(γ/k), k = 1, 2, …, until one
/// fails; the count is odd with probability exp(−γ).
fn bernoulli_exp_small(num: u128, den: u128, rng: &mut impl RngCore) -> bool {
    let mut k: u128 = 1;
    loop {
        if !bernoulli(num, den * k, rng) {
            return k % 2 == 1;
        }
        k += 1;
    }
}

/// Bernoulli(exp(−num/den)) for any γ = num/den ≥ 0, exactly.
fn bernoulli_exp(num: u128, den: u128, rng: &mut impl RngCore) -> bool {
    let mut left = num;
    while left > den {
        if !bernoulli_exp_small(1, 1, rng) {
            return false;
        }
        left -= den;
    }
    bernoulli_exp_small(left, den, rng)
}

/// A discrete Laplace sample with scale `s/r` (CKS Alg. 2), exactly.
pub fn discrete_laplace(s: u64, r: u64, rng: &mut impl RngCore) -> Result<i64, MpcError> {
    if s == 0 || r == 0 {
        return Err(MpcError::Query("the noise scale must be a positive rational".into()));
    }
    let (s, r) = (u128::from(s), u128::from(r));
    loop {
        let u = uniform_below(s, rng);
        if !bernoulli_exp(u, s, rng) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(1, 1, rng) {
            v += 1;
        }
        // X is geometric with P(X = x) ∝ exp(−x/s); Y = ⌊X/r⌋ has
        // P(Y = y) ∝ exp(−y·r/s), the scale s/r.
        let x = u + s * v;
        let y = x / r;
        let negative = bernoulli(1, 2, rng);
        if negative && y == 0 {
            continue;
        }
        let y = i64::try_from(y).map_err(|_| MpcError::Query("noise out of range".into()))?;
        return Ok(if negative { -y } else { y });
    }
}

/// ε in thousandths.
pub type MilliEpsilon = u32;

/// Adds discrete Laplace noise for sensitivity `sensitivity` (fixed-point
/// units) and privacy `epsilon` (milli-ε) to every value.
pub fn add_noise(
    values: &mut [i128],
    sensitivity: u64,
    epsilon: MilliEpsilon,
    rng: &mut impl RngCore,
) -> Result<(), MpcError> {
    if epsilon == 0 || sensitivity == 0 {
        return Err(MpcError::Query("ε and the sensitivity must be positive".into()));
    }
    // t = Δ/ε = Δ·1000/ε_milli.
    let s = sensitivity.checked_mul(1000).ok_or_else(|| MpcError::Query("the sensitivity is too large".into()))?;
    for v in values {
        *v += i128::from(discrete_laplace(s, u64::from(epsilon), rng)?);
    }
    Ok(())
}

/// How far a truncated noise sample may reach, in scales: a sample beyond
/// it is drawn again. exp(−48) < 2^−69 is the probability mass cut off, so
/// the guarantee is (ε, δ) with δ below 2^−68 — and the bound lets range
/// proofs cover noisy values.
pub const TAIL_SCALES: u64 = 48;

/// Discrete Laplace noise for a federated-statistics vector
/// ([`crate::local`]'s layout) at `epsilon` milli-ε. One row changes one
/// group's block, and within it the group's count, every entry of each
/// non-histogram measure and one bin of each histogram: ε is split evenly
/// over those k quantities, so entry e gets scale k·Δₑ/ε with Δₑ the most
/// one row adds to it (from the declared ranges). Each site adds this noise
/// to its own vector on its own, so its rows are protected even if every
/// other site shows the requester its vector; the pooled noise is the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsNoise {
    /// Per entry of one group's block: the scale as s/r.
    scales: Vec<(u64, u64)>,
    groups: usize,
}

impl StatsNoise {
    /// The noise of `query` at `epsilon` milli-ε (positive).
    pub fn new(query: &crate::query::CohortQuery, epsilon: MilliEpsilon) -> Result<Self, MpcError> {
        use crate::local::{entry_bounds, group_count, group_len, measure_len};
        use crate::query::Measure;
        if epsilon == 0 || epsilon > MAX_MILLI_EPSILON {
            return Err(MpcError::Budget(format!("ε must be between 0.001 and {}", MAX_MILLI_EPSILON / 1000)));
        }
        let block = group_len(query);
        let touched: u64 = 1 + query
            .measures
            .iter()
            .map(|m| match m {
                Measure::Histogram { .. } => 1,
                other => measure_len(other) as u64,
            })
            .sum::<u64>();
        let one_row = entry_bounds(query, 1)?;
        let scales = one_row[..block]
            .iter()
            .map(|(low, high)| {
                let delta = u64::try_from(low.unsigned_abs().max(high.unsigned_abs()).max(1))
                    .map_err(|_| MpcError::Query("a column's declared range is too wide for noise".into()))?;
                let s = delta
                    .checked_mul(touched)
                    .and_then(|v| v.checked_mul(1000))
                    .ok_or_else(|| MpcError::Query("a column's declared range is too wide for noise".into()))?;
                Ok((s, u64::from(epsilon)))
            })
            .collect::<Result<Vec<_>, MpcError>>()?;
        Ok(Self { scales, groups: group_count(query) })
    }

    /// The largest noise any entry can carry ([`TAIL_SCALES`] scales,
    /// rounded up), per entry of the whole vector: what range proofs widen
    /// their bounds by.
    pub fn tails(&self) -> Vec<i128> {
        let block: Vec<i128> =
            self.scales.iter().map(|(s, r)| i128::from(s.div_ceil(*r)) * i128::from(TAIL_SCALES)).collect();
        std::iter::repeat_n(block, self.groups).flatten().collect()
    }

    /// Adds noise to every entry of `values` (the whole vector).
    pub fn add(&self, values: &mut [i128], rng: &mut impl RngCore) -> Result<(), MpcError> {
        let expected = self.scales.len() * self.groups;
        if values.len() != expected {
            return Err(MpcError::Shape { expected, got: values.len() });
        }
        let tails = self.tails();
        for ((v, (s, r)), tail) in values.iter_mut().zip(self.scales.iter().cycle()).zip(tails) {
            let z = loop {
                let z = i128::from(discrete_laplace(*s, *r, rng)?);
                if z.abs() <= tail {
                    break z;
                }
            };
            *v = v.checked_add(z).ok_or_else(|| MpcError::Query("noise overflows an entry".into()))?;
        }
        Ok(())
    }
}

/// A grant's ε budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The total the grant allows.
    pub total: MilliEpsilon,
    /// What queries have spent.
    pub spent: MilliEpsilon,
}

impl Budget {
    /// What is left.
    pub fn remaining(&self) -> MilliEpsilon {
        self.total.saturating_sub(self.spent)
    }

    /// What a query asking `asked` milli-ε may release under this budget,
    /// spending nothing: `None` — no noise — when the budget is 0 and
    /// nothing is asked; `Some(asked)` when a budget covers it; else why
    /// not, with what is left. A budget of 0 means the grant releases
    /// without noise; any other budget means every release is noised.
    pub fn admit(&self, asked: MilliEpsilon) -> Result<Option<MilliEpsilon>, MpcError> {
        let (left, total) = (epsilon_text(self.remaining()), epsilon_text(self.total));
        match (self.total, asked) {
            (0, 0) => Ok(None),
            (0, _) => Err(MpcError::Budget("the grant has no privacy budget; ask without noise (ε = 0)".into())),
            (_, 0) => Err(MpcError::Budget(format!(
                "the grant releases only with differential privacy: give ε (ε = {left} left of {total})"
            ))),
            (_, asked) if asked > self.remaining() => Err(MpcError::Budget(format!(
                "the query asks ε = {} but the grant has ε = {left} left of {total}; ask for less or request a new grant",
                epsilon_text(asked)
            ))),
            (_, asked) => Ok(Some(asked)),
        }
    }

    /// Spends `epsilon` if it fits; a refusal says what is left and spends
    /// nothing.
    pub fn charge(&mut self, epsilon: MilliEpsilon) -> Result<MilliEpsilon, MpcError> {
        if epsilon == 0 {
            return Err(MpcError::Budget("a noisy query spends a positive ε".into()));
        }
        self.admit(epsilon)?;
        self.spent += epsilon;
        Ok(self.remaining())
    }
}

/// Largest ε one query or one budget may name, in milli-ε (ε = 100).
pub const MAX_MILLI_EPSILON: MilliEpsilon = 100_000;

/// ε as a person writes it (e.g. 0.5) in milli-ε; 0 stays 0.
pub fn milli_epsilon(epsilon: f64) -> Result<MilliEpsilon, MpcError> {
    if !epsilon.is_finite() || !(0.0..=f64::from(MAX_MILLI_EPSILON) / 1000.0).contains(&epsilon) {
        return Err(MpcError::Budget(format!("ε must be between 0 and {}", MAX_MILLI_EPSILON / 1000)));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let milli = (epsilon * 1000.0).round() as MilliEpsilon;
    if epsilon > 0.0 && milli == 0 {
        return Err(MpcError::Budget("ε below 0.001 is not supported; ε is accounted in thousandths".into()));
    }
    Ok(milli)
}

/// Milli-ε as ε with three decimals, for messages.
pub fn epsilon_text(milli: MilliEpsilon) -> String {
    format!("{:.3}", f64::from(milli) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn statistics_noise_splits_epsilon_over_what_one_row_touches() {
        let query = crate::query::CohortQuery::from_toml(
            r#"
precision = 0
ranges = { bp = [40, 260], age = [0, 120] }
group_by = { column = "sex", values = ["F", "M"] }
[[measures]]
kind = "mean"
column = "bp"
[[measures]]
kind = "histogram"
column = "age"
edges = [18, 65]
"#,
        )
        .unwrap();
        // One row touches the count, the mean's n and Σx, and one bin: k = 4.
        let noise = StatsNoise::new(&query, 1000).unwrap();
        assert_eq!(
            noise.scales,
            vec![(4000, 1000), (4000, 1000), (4 * 260 * 1000, 1000), (4000, 1000), (4000, 1000), (4000, 1000)]
        );
        let tails = noise.tails();
        assert_eq!(tails.len(), 12);
        assert_eq!(tails[2], 4 * 260 * 48);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut values = vec![100i128; 12];
        noise.add(&mut values, &mut rng).unwrap();
        assert!(values.iter().zip(&tails).all(|(v, t)| (v - 100).abs() <= *t));
        assert!(values.iter().any(|v| *v != 100), "noise was added");
        assert!(noise.add(&mut [0; 5], &mut rng).is_err());
        assert!(StatsNoise::new(&query, 0).is_err());
    }

    /// The empirical distribution of discrete Laplace samples matches
    /// P(z) = (1 − q)/(1 + q) · q^|z| with q = exp(−1/t), at a fixed seed.
    #[test]
    fn samples_follow_the_discrete_laplace_distribution() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(42);
        for (s, r) in [(1u64, 1u64), (5, 2), (10, 1)] {
            let t = s as f64 / r as f64;
            let q = (-1.0 / t).exp();
            let n = 40_000;
            let mut counts = std::collections::BTreeMap::new();
            let (mut sum, mut sum_sq) = (0f64, 0f64);
            for _ in 0..n {
                let z = discrete_laplace(s, r, &mut rng).unwrap();
                *counts.entry(z).or_insert(0u32) += 1;
                sum += z as f64;
                sum_sq += (z * z) as f64;
            }
            // Each of the central values within 5 standard errors.
            for z in -3i32..=3 {
                let p = (1.0 - q) / (1.0 + q) * q.powi(z.abs());
                let seen = f64::from(*counts.get(&i64::from(z)).unwrap_or(&0)) / n as f64;
                let se = (p * (1.0 - p) / n as f64).sqrt();
                assert!((seen - p).abs() < 5.0 * se, "t = {t}, z = {z}: {seen} vs {p}");
            }
            // Mean 0, variance 2q/(1 − q)².
            let var = 2.0 * q / (1.0 - q).powi(2);
            let mean = sum / n as f64;
            assert!(mean.abs() < 5.0 * (var / n as f64).sqrt(), "t = {t}: mean {mean}");
            let seen_var = sum_sq / n as f64 - mean * mean;
            assert!((seen_var - var).abs() < 0.1 * var, "t = {t}: variance {seen_var} vs {var}");
        }
    }

    #[test]
    fn noise_scales_with_sensitivity_over_epsilon() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut values = vec![1_000_000i128; 2_000];
        // Δ = 100, ε = 0.5: t = 200, standard deviation ≈ 283.
        add_noise(&mut values, 100, 500, &mut rng).unwrap();
        let mean = values.iter().map(|v| (*v - 1_000_000) as f64).sum::<f64>() / 2_000.0;
        let sd = (values.iter().map(|v| ((*v - 1_000_000) as f64 - mean).powi(2)).sum::<f64>() / 2_000.0).sqrt();
        assert!((sd - 282.8).abs() < 30.0, "{sd}");
        assert!(add_noise(&mut values, 100, 0, &mut rng).is_err());
        assert!(add_noise(&mut values, 0, 500, &mut rng).is_err());
    }

    #[test]
    fn budgets_add_up_and_refusals_spend_nothing() {
        let mut budget = Budget { total: 3_000, spent: 0 };
        for _ in 0..29 {
            budget.charge(100).unwrap();
        }
        assert_eq!(budget.remaining(), 100);
        let err = budget.charge(250).unwrap_err().to_string();
        assert!(err.contains("0.100 left of 3.000"), "{err}");
        assert_eq!(budget.spent, 2_900, "a refusal spends nothing");
        assert_eq!(budget.charge(100).unwrap(), 0);
        assert!(budget.charge(1).is_err());
        assert!(Budget { total: 10, spent: 0 }.charge(0).is_err());
        assert_eq!(Budget { total: 0, spent: 0 }.admit(0), Ok(None));
        assert!(Budget { total: 0, spent: 0 }.admit(5).unwrap_err().to_string().contains("no privacy budget"));
        let err = Budget { total: 1_000, spent: 200 }.admit(0).unwrap_err().to_string();
        assert!(err.contains("ε = 0.800 left of 1.000"), "{err}");
    }

    #[test]
    fn epsilon_is_accounted_in_thousandths() {
        assert_eq!(milli_epsilon(0.0), Ok(0));
        assert_eq!(milli_epsilon(0.5), Ok(500));
        assert_eq!(milli_epsilon(3.0), Ok(3_000));
        assert!(milli_epsilon(0.0001).is_err());
        assert!(milli_epsilon(-1.0).is_err());
        assert!(milli_epsilon(f64::NAN).is_err());
        assert!(milli_epsilon(1e9).is_err());
        assert_eq!(epsilon_text(250), "0.250");
    }
}
