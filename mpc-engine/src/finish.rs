//! From the pooled vector to the statistics a researcher reads: means,
//! sample variances, covariances and Pearson correlations from exact
//! integer sums; regression coefficients by solving the pooled normal
//! equations (XᵀX)β = Xᵀy; R² = 1 − SSE/SST.

use crate::MpcError;
use crate::fixed::FixedPoint;
use crate::local::{group_count, group_len, measure_len};
use crate::query::{CohortQuery, Measure};

/// One statistic's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A count.
    Count(u64),
    /// A statistic over `n` values (`None` when n is too small for it).
    Number {
        /// Values it is computed from.
        n: u64,
        /// The statistic.
        value: Option<f64>,
    },
    /// Bin counts with their labels (below the first edge, the bins, above).
    Histogram(Vec<(String, u64)>),
    /// Regression coefficients (intercept first) and R².
    Regression {
        /// Complete cases.
        n: u64,
        /// `(name, coefficient)`, the intercept first.
        coefficients: Vec<(String, f64)>,
        /// Coefficient of determination.
        r_squared: f64,
    },
}

/// A measure's result.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureResult {
    /// What it is (e.g. `mean(systolic_bp)`).
    pub label: String,
    /// Its value.
    pub value: Value,
}

/// One group's results.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    /// The group's value, when the query groups.
    pub group: Option<String>,
    /// Rows in the cohort of this group.
    pub count: u64,
    /// The measures, in query order.
    pub measures: Vec<MeasureResult>,
}

fn count(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// n·Σx² − (Σx)² (≥ 0), exactly when it fits, else in f64.
fn spread(n: i128, sum: i128, sum_sq: i128) -> f64 {
    match n.checked_mul(sum_sq).and_then(|a| sum.checked_mul(sum).and_then(|b| a.checked_sub(b))) {
        Some(v) => v as f64,
        None => n as f64 * sum_sq as f64 - (sum as f64) * (sum as f64),
    }
}

fn co_spread(n: i128, sx: i128, sy: i128, sxy: i128) -> f64 {
    match n.checked_mul(sxy).and_then(|a| sx.checked_mul(sy).and_then(|b| a.checked_sub(b))) {
        Some(v) => v as f64,
        None => n as f64 * sxy as f64 - sx as f64 * sy as f64,
    }
}

/// Solves `a·x = b` (a symmetric positive definite, small) by Gaussian
/// elimination with partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 * a[col][col].abs().max(1.0) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (target, source) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *target -= f * source;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    Some(x)
}

/// The results of `query` from the pooled additive vector and the pooled
/// extrema (per group, per min/max measure; fixed point).
pub fn finish(query: &CohortQuery, pooled: &[i128], extrema: &[Option<i64>]) -> Result<Vec<GroupResult>, MpcError> {
    let fixed = FixedPoint::new(query.precision)?;
    let block = group_len(query);
    let groups = group_count(query);
    if pooled.len() != block * groups {
        return Err(MpcError::Shape { expected: block * groups, got: pooled.len() });
    }
    let per_group_extremes =
        query.measures.iter().filter(|m| matches!(m, Measure::Min { .. } | Measure::Max { .. })).count();
    if extrema.len() != per_group_extremes * groups {
        return Err(MpcError::Shape { expected: per_group_extremes * groups, got: extrema.len() });
    }
    Ok((0..groups)
        .map(|g| {
            let extremes = &extrema[g * per_group_extremes..(g + 1) * per_group_extremes];
            finish_group(query, &fixed, g, &pooled[g * block..(g + 1) * block], extremes)
        })
        .collect())
}

/// One group's results from its block of the pooled vector and its
/// extremes (one per min/max measure).
pub fn finish_group(
    query: &CohortQuery,
    fixed: &FixedPoint,
    g: usize,
    v: &[i128],
    extremes: &[Option<i64>],
) -> GroupResult {
    let mut at = 1;
    let mut extreme = 0;
    let mut measures = Vec::new();
    for m in &query.measures {
        let s = &v[at..at + measure_len(m)];
        at += measure_len(m);
        let value = match m {
            Measure::Count => Value::Count(count(v[0])),
            Measure::Sum { .. } => Value::Number { n: count(s[0]), value: Some(fixed.decode(s[1], 1)) },
            Measure::Mean { .. } => {
                Value::Number { n: count(s[0]), value: (s[0] > 0).then(|| fixed.decode(s[1], 1) / s[0] as f64) }
            }
            Measure::Variance { .. } | Measure::StdDev { .. } => {
                let n = s[0];
                let var = (n > 1).then(|| {
                    spread(n, s[1], s[2]).max(0.0) / (n as f64 * (n - 1) as f64) / (fixed.scale() as f64).powi(2)
                });
                let value = if matches!(m, Measure::StdDev { .. }) { var.map(f64::sqrt) } else { var };
                Value::Number { n: count(n), value }
            }
            Measure::Min { .. } | Measure::Max { .. } => {
                let e = extremes[extreme];
                extreme += 1;
                Value::Number { n: count(s[0]), value: e.map(|e| fixed.decode(i128::from(e), 1)) }
            }
            Measure::Histogram { edges, .. } => {
                let mut bins = vec![(format!("< {}", edges[0]), count(s[0]))];
                for (i, w) in edges.windows(2).enumerate() {
                    bins.push((format!("[{}, {})", w[0], w[1]), count(s[i + 1])));
                }
                bins.push((format!(">= {}", edges[edges.len() - 1]), count(s[edges.len()])));
                Value::Histogram(bins)
            }
            Measure::Covariance { .. } | Measure::Correlation { .. } => {
                let (n, sx, sy, sxx, syy, sxy) = (s[0], s[1], s[2], s[3], s[4], s[5]);
                let cov = co_spread(n, sx, sy, sxy);
                let value = if matches!(m, Measure::Covariance { .. }) {
                    (n > 1).then(|| cov / (n as f64 * (n - 1) as f64) / (fixed.scale() as f64).powi(2))
                } else {
                    let denom = (spread(n, sx, sxx) * spread(n, sy, syy)).sqrt();
                    (n > 1 && denom > 0.0).then(|| cov / denom)
                };
                Value::Number { n: count(n), value }
            }
            Measure::Regression { y, x } => regression(s, y, x, fixed),
        };
        measures.push(MeasureResult { label: m.label(), value });
    }
    GroupResult { group: crate::local::group_name(query, g), count: count(v[0]), measures }
}

fn regression(s: &[i128], y: &str, x: &[String], fixed: &FixedPoint) -> Value {
    let q = x.len() + 1;
    let sq = (fixed.scale() as f64).powi(2);
    // The upper triangle, row by row, mirrored.
    let pairs: Vec<(usize, usize)> = (0..q).flat_map(|i| (i..q).map(move |j| (i, j))).collect();
    let mut xtx = vec![vec![0.0; q]; q];
    for (&(i, j), v) in pairs.iter().zip(s) {
        xtx[i][j] = *v as f64 / sq;
        xtx[j][i] = xtx[i][j];
    }
    let k = pairs.len();
    // Counts come back exactly as XᵀX[0][0] / scale².
    let cases = u64::try_from(s[0] / (i128::from(fixed.scale()) * i128::from(fixed.scale()))).unwrap_or(0);
    let xty: Vec<f64> = (0..q).map(|i| s[k + i] as f64 / sq).collect();
    let yty = s[k + q] as f64 / sq;
    let n = xtx[0][0];
    let names = std::iter::once("intercept".to_owned()).chain(x.iter().cloned());
    let Some(beta) = (n > q as f64).then(|| solve(xtx, xty.clone())).flatten() else {
        let _ = y;
        return Value::Regression {
            n: cases,
            coefficients: names.map(|c| (c, f64::NAN)).collect(),
            r_squared: f64::NAN,
        };
    };
    let sse = yty - beta.iter().zip(&xty).map(|(b, v)| b * v).sum::<f64>();
    let mean = xty[0] / n;
    let sst = yty - n * mean * mean;
    let r_squared = if sst > 0.0 { 1.0 - sse / sst } else { f64::NAN };
    Value::Regression { n: cases, coefficients: names.zip(beta).collect(), r_squared }
}
