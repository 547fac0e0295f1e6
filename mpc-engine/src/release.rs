//! Compute-only releases (design brief §4.4): what a data owner's node may
//! hand out of a cohort query over a dataset the requester may not read.
//!
//! The query is the same [`CohortQuery`] federated statistics run, scanned
//! by the same [`crate::local::LocalScan`]; this module decides what of the
//! scan leaves the node.
//!
//! **Aggregates only.** A compute-only query has no projection, so a row
//! can leave only through a statistic that describes one row. The node
//! therefore refuses `min`/`max` (each is one row's value) and suppresses
//! every group, histogram bin and statistic that describes fewer rows than
//! the grant's minimum group size `m`: a suppressed group is left out of
//! the table (its keys are public, so leaving it out says only that it was
//! small), a suppressed bin or statistic is null.
//!
//! **Differential privacy (optional, per grant).** With ε > 0 every
//! released count and sum carries discrete Laplace noise
//! ([`crate::privacy`]), exactly sampled. One row touches, in its own
//! group only, k released quantities: the group's count, and per measure
//! its n and Σx (sum, mean) or one bin (histogram). Each quantity gets
//! ε/k (sequential composition), with sensitivity 1 for a count and
//! max(|low|, |high|) of the declared column range — in fixed-point units —
//! for a sum; groups are disjoint, so the query as a whole is ε-DP
//! (parallel composition across groups, sequential across queries, which
//! the grant's budget accounts). Suppression then compares the *noisy*
//! count with `m`, so the decision itself is post-processing and leaks
//! nothing beyond ε. Variances, correlations and regressions have no
//! calibrated mechanism here and are refused under noise. Means are noisy
//! Σx over noisy n.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rand_core::RngCore;

use crate::MpcError;
use crate::binning::Label;
use crate::finish::{GroupResult, Value, finish_group};
use crate::fixed::FixedPoint;
use crate::local::{LocalStats, group_count, group_keys, group_len, measure_len};
use crate::privacy::{MilliEpsilon, discrete_laplace};
use crate::query::{CohortQuery, Measure};

/// What the grant lets out of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disclosure {
    /// Smallest number of rows a released statistic may describe (the
    /// grant's minimum cohort; 0 and 1 both mean no suppression).
    pub min_group: u64,
    /// ε of this query in milli-ε, when the release is noised.
    pub epsilon: Option<MilliEpsilon>,
}

/// A release: the table and what was held back.
#[derive(Debug, Clone)]
pub struct Release {
    /// One row per released group: its keys, `count`, then one column
    /// per statistic (histogram: one per bin).
    pub table: RecordBatch,
    /// Groups in the table.
    pub groups_released: usize,
    /// Groups left out (smaller than the minimum, empty ones included).
    pub groups_suppressed: usize,
    /// Rows the query scanned.
    pub rows_scanned: u64,
}

/// Checks that `query` may run compute-only, with noise or without.
/// Run before the scan (and by admission), so a refusal spends nothing.
pub fn check_compute_only(query: &CohortQuery, noised: bool) -> Result<(), MpcError> {
    for m in &query.measures {
        match m {
            Measure::Min { column } | Measure::Max { column } => {
                return Err(MpcError::Query(format!(
                    "{} returns one row's value of '{column}'; a compute-only grant releases aggregates only — ask for a mean or a histogram",
                    m.label()
                )));
            }
            Measure::Count | Measure::Sum { .. } | Measure::Mean { .. } | Measure::Histogram { .. } => {}
            _ if noised => {
                return Err(MpcError::Query(format!(
                    "{} has no calibrated noise here; with differential privacy ask for count, sum, mean or histogram",
                    m.label()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Quantities one row touches in its group (see the module docs).
fn touched(query: &CohortQuery) -> u64 {
    1 + query
        .measures
        .iter()
        .map(|m| match m {
            Measure::Sum { .. } | Measure::Mean { .. } => 2,
            Measure::Histogram { .. } => 1,
            _ => 0,
        })
        .sum::<u64>()
}

/// Sensitivity of each entry of a group's block, in fixed-point units.
fn sensitivities(query: &CohortQuery) -> Result<Vec<u64>, MpcError> {
    let fixed = FixedPoint::new(query.precision)?;
    let mut out = vec![1u64];
    for m in &query.measures {
        match m {
            Measure::Sum { column } | Measure::Mean { column } => {
                let [lo, hi] = query.ranges.get(column).ok_or_else(|| {
                    MpcError::Query(format!("declare the range of '{column}': it bounds the noise's sensitivity"))
                })?;
                let magnitude =
                    fixed.encode(*lo, column)?.unsigned_abs().max(fixed.encode(*hi, column)?.unsigned_abs());
                out.extend([1, magnitude.max(1)]);
            }
            other => out.extend(std::iter::repeat_n(1, measure_len(other))),
        }
    }
    Ok(out)
}

/// Noises every entry of `vector` for ε (milli-ε) of the whole query.
fn add_noise(
    query: &CohortQuery,
    vector: &mut [i128],
    epsilon: MilliEpsilon,
    rng: &mut impl RngCore,
) -> Result<(), MpcError> {
    if epsilon == 0 {
        return Err(MpcError::Query("a noised query needs ε > 0".into()));
    }
    let k = touched(query);
    let scales = sensitivities(query)?;
    for block in vector.chunks_mut(group_len(query)) {
        for (v, delta) in block.iter_mut().zip(&scales) {
            // Scale Δ·k/ε = (Δ·k·1000) / ε_milli.
            let s = delta
                .checked_mul(k * 1000)
                .ok_or_else(|| MpcError::Query("the declared range is too wide for noise at this precision".into()))?;
            *v += i128::from(discrete_laplace(s, u64::from(epsilon), rng)?);
        }
    }
    Ok(())
}

/// The release of `stats` (a scan of `query`) under `disclosure`.
pub fn release(
    query: &CohortQuery,
    stats: &LocalStats,
    disclosure: &Disclosure,
    rng: &mut impl RngCore,
) -> Result<Release, MpcError> {
    check_compute_only(query, disclosure.epsilon.is_some())?;
    let fixed = FixedPoint::new(query.precision)?;
    let block = group_len(query);
    let groups = group_count(query);
    if stats.additive.len() != block * groups {
        return Err(MpcError::Shape { expected: block * groups, got: stats.additive.len() });
    }
    let mut vector = stats.additive.clone();
    if let Some(epsilon) = disclosure.epsilon {
        add_noise(query, &mut vector, epsilon, rng)?;
    }
    let min = i128::from(disclosure.min_group.max(1));
    let mut table = TableBuilder::new(query);
    let mut released = 0;
    for g in 0..groups {
        let v = &vector[g * block..(g + 1) * block];
        if v[0] < min {
            continue;
        }
        released += 1;
        table.push(query, g, &finish_group(query, &fixed, g, v, &[]), min);
    }
    Ok(Release {
        table: table.finish()?,
        groups_released: released,
        groups_suppressed: groups - released,
        rows_scanned: stats.rows_scanned,
    })
}

/// Builds the result table column by column.
struct TableBuilder {
    group: Option<(String, StringBuilder)>,
    labels: Vec<(String, LabelBuilder)>,
    count: Int64Builder,
    values: Vec<(String, ValueBuilder)>,
}

enum LabelBuilder {
    Number(Float64Builder),
    Text(StringBuilder),
}

enum ValueBuilder {
    Number(Float64Builder),
    Count(Int64Builder),
}

impl TableBuilder {
    fn new(query: &CohortQuery) -> Self {
        let mut labels = Vec::new();
        for bin in &query.bins {
            for (name, label) in bin.label_names().into_iter().zip(bin.label(0)) {
                let builder = match label {
                    Label::Number(_) => LabelBuilder::Number(Float64Builder::new()),
                    Label::Text(_) => LabelBuilder::Text(StringBuilder::new()),
                };
                labels.push((name, builder));
            }
        }
        let mut values = Vec::new();
        for m in &query.measures {
            match m {
                Measure::Count => {}
                Measure::Histogram { column, edges } => {
                    let mut names = vec![format!("{column} < {}", edges[0])];
                    names.extend(edges.windows(2).map(|w| format!("{column} in [{}, {})", w[0], w[1])));
                    names.push(format!("{column} >= {}", edges[edges.len() - 1]));
                    values.extend(names.into_iter().map(|n| (n, ValueBuilder::Count(Int64Builder::new()))));
                }
                Measure::Regression { x, .. } => {
                    let label = m.label();
                    let terms = std::iter::once("intercept").chain(x.iter().map(String::as_str)).chain(["r_squared"]);
                    values
                        .extend(terms.map(|t| (format!("{label}[{t}]"), ValueBuilder::Number(Float64Builder::new()))));
                }
                other => values.push((other.label(), ValueBuilder::Number(Float64Builder::new()))),
            }
        }
        Self {
            group: query.group_by.as_ref().map(|g| (g.column.clone(), StringBuilder::new())),
            labels,
            count: Int64Builder::new(),
            values,
        }
    }

    fn push(&mut self, query: &CohortQuery, g: usize, result: &GroupResult, min: i128) {
        let (value, keys) = group_keys(query, g);
        if let (Some((_, b)), Some(v)) = (&mut self.group, value) {
            b.append_value(v);
        }
        let mut labels = self.labels.iter_mut();
        for (bin, k) in query.bins.iter().zip(keys) {
            for label in bin.label(k) {
                match (labels.next().map(|(_, b)| b), label) {
                    (Some(LabelBuilder::Number(b)), Label::Number(x)) => b.append_value(x),
                    (Some(LabelBuilder::Text(b)), Label::Text(t)) => b.append_value(t),
                    _ => unreachable!("labels follow the bins"),
                }
            }
        }
        self.count.append_value(i64::try_from(result.count).unwrap_or(i64::MAX));
        let big_enough = |n: u64| i128::from(n) >= min;
        let mut values = self.values.iter_mut().map(|(_, b)| b);
        for measure in &result.measures {
            match &measure.value {
                Value::Count(_) => {}
                Value::Number { n, value } => {
                    if let Some(ValueBuilder::Number(b)) = values.next() {
                        b.append_option(value.filter(|_| big_enough(*n)));
                    }
                }
                Value::Histogram(bins) => {
                    for (_, count) in bins {
                        if let Some(ValueBuilder::Count(b)) = values.next() {
                            b.append_option(big_enough(*count).then(|| i64::try_from(*count).unwrap_or(i64::MAX)));
                        }
                    }
                }
                Value::Regression { n, coefficients, r_squared } => {
                    let shown = big_enough(*n);
                    for v in coefficients.iter().map(|(_, c)| *c).chain([*r_squared]) {
                        if let Some(ValueBuilder::Number(b)) = values.next() {
                            b.append_option((shown && v.is_finite()).then_some(v));
                        }
                    }
                }
            }
        }
    }

    fn finish(mut self) -> Result<RecordBatch, MpcError> {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some((name, mut b)) = self.group.take() {
            fields.push(Field::new(name, DataType::Utf8, false));
            columns.push(Arc::new(b.finish()));
        }
        for (name, b) in &mut self.labels {
            match b {
                LabelBuilder::Number(b) => {
                    fields.push(Field::new(name.as_str(), DataType::Float64, false));
                    columns.push(Arc::new(b.finish()));
                }
                LabelBuilder::Text(b) => {
                    fields.push(Field::new(name.as_str(), DataType::Utf8, false));
                    columns.push(Arc::new(b.finish()));
                }
            }
        }
        fields.push(Field::new("count", DataType::Int64, false));
        columns.push(Arc::new(self.count.finish()));
        for (name, b) in &mut self.values {
            match b {
                ValueBuilder::Number(b) => {
                    fields.push(Field::new(name.as_str(), DataType::Float64, true));
                    columns.push(Arc::new(b.finish()));
                }
                ValueBuilder::Count(b) => {
                    fields.push(Field::new(name.as_str(), DataType::Int64, true));
                    columns.push(Arc::new(b.finish()));
                }
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| MpcError::Arrow(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalScan;
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use rand::SeedableRng;

    const QUERY: &str = r#"
precision = 2
ranges = { temperature_c = [-2, 35] }
filter = { column = "depth_m", le = 10 }
[[bins]]
kind = "grid"
lat = "lat"
lon = "lon"
cell_degrees = 1.0
lat_range = [10, 12]
lon_range = [100, 101]
[[bins]]
kind = "time"
column = "time"
window = "month"
from = "2025-01-01"
to = "2025-03-01"
[[measures]]
kind = "mean"
column = "temperature_c"
"#;

    /// 30 rows in (10.5, 100.5) in January, 3 in February, 5 in (11.5,
    /// 100.5) in January, and 4 deeper than 10 m (filtered out).
    fn observations() -> RecordBatch {
        let mut rows: Vec<(f64, f64, &str, f64, f64)> = Vec::new();
        for i in 0..30 {
            rows.push((10.5, 100.5, "2025-01-10T00:00:00Z", 2.0, 20.0 + f64::from(i % 3)));
        }
        for _ in 0..3 {
            rows.push((10.5, 100.5, "2025-02-10T00:00:00Z", 2.0, 25.0));
        }
        for _ in 0..5 {
            rows.push((11.5, 100.5, "2025-01-20T00:00:00Z", 5.0, 18.0));
        }
        for _ in 0..4 {
            rows.push((10.5, 100.5, "2025-01-10T00:00:00Z", 500.0, 4.0));
        }
        let schema = Schema::new(vec![
            Field::new("lat", DataType::Float64, false),
            Field::new("lon", DataType::Float64, false),
            Field::new("time", DataType::Utf8, false),
            Field::new("depth_m", DataType::Float64, false),
            Field::new("temperature_c", DataType::Float64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.4))),
            ],
        )
        .unwrap()
    }

    fn scan(query: &CohortQuery) -> LocalStats {
        let mut scan = LocalScan::new(query).unwrap();
        scan.absorb(&observations()).unwrap();
        scan.finish()
    }

    #[test]
    fn gridded_monthly_means_with_small_cells_suppressed() {
        let query = CohortQuery::from_toml(QUERY).unwrap();
        query.validate(&["lat", "lon", "time", "depth_m", "temperature_c"], &[]).unwrap();
        let stats = scan(&query);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let out = release(&query, &stats, &Disclosure { min_group: 5, epsilon: None }, &mut rng).unwrap();
        // 2 × 1 cells × 2 months = 4 groups; February's 3 rows and the
        // empty cell-month are suppressed.
        assert_eq!((out.groups_released, out.groups_suppressed, out.rows_scanned), (2, 2, 42));
        let t = &out.table;
        let schema = t.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["lat_south", "lon_west", "time_month", "count", "mean(temperature_c)"]);
        let col = |i: usize| t.column(i).clone();
        let south = col(0);
        let south = south.as_any().downcast_ref::<Float64Array>().unwrap();
        let month = col(2);
        let month = month.as_any().downcast_ref::<StringArray>().unwrap();
        let count = col(3);
        let count = count.as_any().downcast_ref::<Int64Array>().unwrap();
        let mean = col(4);
        let mean = mean.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!((south.value(0), month.value(0), count.value(0)), (10.0, "2025-01", 30));
        assert!((mean.value(0) - 21.0).abs() < 1e-9);
        assert_eq!((south.value(1), month.value(1), count.value(1)), (11.0, "2025-01", 5));
        assert!((mean.value(1) - 18.0).abs() < 1e-9);
    }

    #[test]
    fn rows_cannot_leave_through_extremes_and_noise_refuses_what_it_cannot_calibrate() {
        let with = |measure: &str| {
            CohortQuery::from_toml(&format!(
                "{QUERY}\n[[measures]]\nkind = \"{measure}\"\ncolumn = \"temperature_c\"\n"
            ))
            .unwrap()
        };
        for m in ["max", "min"] {
            let err = check_compute_only(&with(m), false).unwrap_err().to_string();
            assert!(err.contains("aggregates only"), "{err}");
        }
        assert!(check_compute_only(&with("variance"), false).is_ok());
        let err = check_compute_only(&with("variance"), true).unwrap_err().to_string();
        assert!(err.contains("no calibrated noise"), "{err}");
    }

    #[test]
    fn noise_has_the_calibrated_scale() {
        let query = CohortQuery::from_toml(QUERY).unwrap();
        let stats = scan(&query);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        // ε = 1 over k = 3 quantities: counts get scale 3, so the January
        // cell's noisy count stays near 30 and its mean near 21.
        let (mut deviation, runs) = (0.0, 400);
        for _ in 0..runs {
            let out = release(&query, &stats, &Disclosure { min_group: 5, epsilon: Some(1_000) }, &mut rng).unwrap();
            let t = &out.table;
            let count = t.column(3).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            let month = t.column(2).as_any().downcast_ref::<StringArray>().unwrap().clone();
            let south = t.column(0).as_any().downcast_ref::<Float64Array>().unwrap().clone();
            let row = (0..t.num_rows()).find(|&r| south.value(r) == 10.0 && month.value(r) == "2025-01").unwrap();
            deviation += (count.value(row) - 30).pow(2) as f64;
        }
        // Discrete Laplace with t = 3: variance 2q/(1−q)², q = e^{−1/3}.
        let q = (-1.0f64 / 3.0).exp();
        let variance = 2.0 * q / (1.0 - q).powi(2);
        let seen = deviation / f64::from(runs);
        assert!((seen - variance).abs() < 0.25 * variance, "{seen} vs {variance}");
    }
}
