//! A site's local sufficient statistics of a cohort, computed over arrow
//! record batches with arrow's compute kernels (casts, comparisons,
//! Kleene boolean logic, filtering).
//!
//! **The vector.** For each group (one when the query has no `group_by`),
//! in order: the cohort's row count, then per measure
//!
//! | measure | entries |
//! |---|---|
//! | count | — (the group's row count is the first entry) |
//! | sum, mean | n, Σx |
//! | variance, stddev | n, Σx, Σx² |
//! | min, max | n (the extreme itself is not additive: see [`LocalStats::extrema`]) |
//! | histogram | below, one count per bin, above |
//! | covariance, correlation | n, Σx, Σy, Σx², Σy², Σxy |
//! | regression (p predictors, q = p + 1 with the intercept) | the upper triangle of XᵀX (q(q+1)/2, the first being n), Xᵀy (q), Σy² |
//!
//! Every site lays its vector out identically, so vectors add entry by
//! entry: the pooled vector is the vector of the merged table.
//!
//! **Fixed point.** A value x is encoded as x̂ = round(x·10^precision), an
//! integer; products are exact in i128 at scale 10^(2·precision). A value
//! whose encoding leaves ±2^53 (where f64 stops being exact) and any sum
//! that would overflow fail loudly, naming the column.
//!
//! **Missing values.** A missing or empty cell is null. The filter follows
//! SQL: a comparison with null is unknown and only rows where the filter is
//! true are in the cohort. Each measure uses the cohort's rows where its
//! columns are all present (complete cases for covariance, correlation and
//! regression) and counts them itself, so `mean(x)` divides by the number
//! of present x, not the cohort's size. A text cell in a numeric column
//! that is not a number is an error (how many, never which).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, StringArray};
use arrow::compute::kernels::cmp;
use arrow::compute::{CastOptions, and_kleene, cast_with_options, is_not_null, is_null, not, or_kleene};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::MpcError;
use crate::binning::NO_GROUP;
use crate::fixed::FixedPoint;
use crate::query::{CmpOp, CohortQuery, Filter, Literal, Measure, Test};

/// Entries a measure adds to a group's block.
pub fn measure_len(m: &Measure) -> usize {
    match m {
        Measure::Count => 0,
        Measure::Sum { .. } | Measure::Mean { .. } | Measure::Min { .. } | Measure::Max { .. } => {
            if matches!(m, Measure::Min { .. } | Measure::Max { .. }) { 1 } else { 2 }
        }
        Measure::Variance { .. } | Measure::StdDev { .. } => 3,
        Measure::Histogram { edges, .. } => edges.len() + 1,
        Measure::Covariance { .. } | Measure::Correlation { .. } => 6,
        Measure::Regression { x, .. } => {
            let q = x.len() + 1;
            q * (q + 1) / 2 + q + 1
        }
    }
}

/// Entries of one group's block.
pub fn group_len(query: &CohortQuery) -> usize {
    1 + query.measures.iter().map(measure_len).sum::<usize>()
}

/// Groups of a query (at least one): the `group_by` values times every
/// bin's keys (see [`crate::binning`] for the layout).
pub fn group_count(query: &CohortQuery) -> usize {
    let keys = query.bins.iter().map(|b| b.keys().unwrap_or(1)).product::<usize>();
    query.group_by.as_ref().map_or(1, |g| g.values.len()) * keys
}

/// The keys of group `g`: its `group_by` value (when the query groups by
/// one) and each bin's key index, in the order of the layout.
pub fn group_keys(query: &CohortQuery, mut g: usize) -> (Option<&str>, Vec<usize>) {
    let mut keys = vec![0; query.bins.len()];
    for (slot, bin) in keys.iter_mut().zip(&query.bins).rev() {
        let n = bin.keys().unwrap_or(1);
        *slot = g % n;
        g /= n;
    }
    (query.group_by.as_ref().map(|gb| gb.values[g].as_str()), keys)
}

/// A readable name of group `g` (`None` for a query without groups).
pub fn group_name(query: &CohortQuery, g: usize) -> Option<String> {
    let (value, keys) = group_keys(query, g);
    let mut parts: Vec<String> = value.map(str::to_owned).into_iter().collect();
    for (bin, k) in query.bins.iter().zip(keys) {
        let labels = bin.label(k).into_iter().map(|l| match l {
            crate::binning::Label::Number(x) => x.to_string(),
            crate::binning::Label::Text(t) => t,
        });
        parts.push(labels.collect::<Vec<_>>().join(" "));
    }
    (!parts.is_empty()).then(|| parts.join(" | "))
}

/// Entries of the whole vector.
pub fn vector_len(query: &CohortQuery) -> usize {
    group_count(query) * group_len(query)
}

/// Inclusive bounds of every entry of a site's vector with at most `rows`
/// rows whose values lie within the query's declared ranges: what the site
/// proves and the requester checks (entries in the order of the vector).
pub fn entry_bounds(query: &CohortQuery, rows: u64) -> Result<Vec<(i128, i128)>, MpcError> {
    let fixed = FixedPoint::new(query.precision)?;
    let n = i128::from(rows);
    let range = |c: &str| -> Result<(i128, i128), MpcError> {
        let [lo, hi] = query.ranges.get(c).ok_or_else(|| MpcError::Query(format!("no declared range for '{c}'")))?;
        Ok((i128::from(fixed.encode(*lo, c)?), i128::from(fixed.encode(*hi, c)?)))
    };
    let magnitude = |c: &str| -> Result<i128, MpcError> { range(c).map(|(lo, hi)| lo.abs().max(hi.abs())) };
    let count = (0, n);
    let product = |c: &str, parts: &[i128]| -> Result<i128, MpcError> {
        parts
            .iter()
            .try_fold(1i128, |acc, p| acc.checked_mul(*p))
            .ok_or_else(|| MpcError::Overflow { column: c.into() })
    };
    let sum = |c: &str, factor: i128| -> Result<(i128, i128), MpcError> {
        let (lo, hi) = range(c)?;
        Ok((product(c, &[n, lo.min(0), factor])?, product(c, &[n, hi.max(0), factor])?))
    };
    let square = |c: &str| -> Result<(i128, i128), MpcError> {
        let m = magnitude(c)?;
        Ok((0, product(c, &[n, m, m])?))
    };
    let cross = |x: &str, y: &str| -> Result<(i128, i128), MpcError> {
        let b = product(x, &[n, magnitude(x)?, magnitude(y)?])?;
        Ok((-b, b))
    };
    let scale = i128::from(fixed.scale());
    let mut block = vec![count];
    for m in &query.measures {
        match m {
            Measure::Count => {}
            Measure::Sum { column } | Measure::Mean { column } => block.extend([count, sum(column, 1)?]),
            Measure::Variance { column } | Measure::StdDev { column } => {
                block.extend([count, sum(column, 1)?, square(column)?]);
            }
            Measure::Min { .. } | Measure::Max { .. } => block.push(count),
            Measure::Histogram { edges, .. } => block.extend(std::iter::repeat_n(count, edges.len() + 1)),
            Measure::Covariance { x, y } | Measure::Correlation { x, y } => {
                block.extend([count, sum(x, 1)?, sum(y, 1)?, square(x)?, square(y)?, cross(x, y)?]);
            }
            Measure::Regression { y, x } => {
                let q = x.len() + 1;
                for i in 0..q {
                    for j in i..q {
                        block.push(match (i, j) {
                            (0, 0) => (0, product(y, &[n, scale, scale])?),
                            (0, j) => sum(&x[j - 1], scale)?,
                            (i, j) if i == j => square(&x[i - 1])?,
                            (i, j) => cross(&x[i - 1], &x[j - 1])?,
                        });
                    }
                }
                block.push(sum(y, scale)?);
                for c in x {
                    block.push(cross(c, y)?);
                }
                block.push(square(y)?);
            }
        }
    }
    Ok(std::iter::repeat_n(block, group_count(query)).flatten().collect())
}

/// One site's contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStats {
    /// The additive vector (fixed point, see the module docs).
    pub additive: Vec<i128>,
    /// Per group, per min/max measure in query order: the site's extreme in
    /// fixed point, or `None` when the group has no value.
    pub extrema: Vec<Option<i64>>,
    /// Rows scanned.
    pub rows_scanned: u64,
}

/// Accumulates a site's statistics batch by batch.
#[derive(Debug)]
pub struct LocalScan<'q> {
    query: &'q CohortQuery,
    fixed: FixedPoint,
    stats: LocalStats,
}

fn add(acc: &mut i128, v: i128, column: &str) -> Result<(), MpcError> {
    *acc = acc.checked_add(v).ok_or_else(|| MpcError::Overflow { column: column.into() })?;
    Ok(())
}

pub(crate) fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef, MpcError> {
    batch.column_by_name(name).ok_or_else(|| MpcError::UnknownColumn {
        column: name.into(),
        available: batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// A column as f64, refusing text that is not a number.
pub(crate) fn numeric(batch: &RecordBatch, name: &str) -> Result<Float64Array, MpcError> {
    let source = column(batch, name)?;
    let arrow_err = |e: arrow::error::ArrowError| MpcError::Arrow(format!("column '{name}': {e}"));
    let source = if source.data_type() == &DataType::Utf8 {
        // Trim, so " 42 " parses; empty text is missing.
        let text = source.as_any().downcast_ref::<StringArray>().expect("utf8");
        Arc::new(text.iter().map(|v| v.map(str::trim).filter(|s| !s.is_empty())).collect::<StringArray>()) as ArrayRef
    } else {
        source.clone()
    };
    let cast = cast_with_options(&source, &DataType::Float64, &CastOptions { safe: true, ..Default::default() })
        .map_err(arrow_err)?;
    let bad = cast.null_count().saturating_sub(source.null_count());
    if bad > 0 {
        return Err(MpcError::NotNumeric { column: name.into(), count: bad });
    }
    Ok(cast.as_any().downcast_ref::<Float64Array>().expect("float64").clone())
}

fn text(batch: &RecordBatch, name: &str) -> Result<ArrayRef, MpcError> {
    cast_with_options(column(batch, name)?, &DataType::Utf8, &CastOptions::default())
        .map_err(|e| MpcError::Arrow(format!("column '{name}': {e}")))
}

fn compare(
    op: CmpOp,
    left: &dyn arrow::array::Datum,
    right: &dyn arrow::array::Datum,
) -> Result<BooleanArray, MpcError> {
    let result = match op {
        CmpOp::Eq => cmp::eq(left, right),
        CmpOp::Ne => cmp::neq(left, right),
        CmpOp::Lt => cmp::lt(left, right),
        CmpOp::Le => cmp::lt_eq(left, right),
        CmpOp::Gt => cmp::gt(left, right),
        CmpOp::Ge => cmp::gt_eq(left, right),
    };
    result.map_err(|e| MpcError::Arrow(e.to_string()))
}

fn literal_cmp(batch: &RecordBatch, column: &str, op: CmpOp, lit: &Literal) -> Result<BooleanArray, MpcError> {
    match lit {
        Literal::Number(v) => {
            let values = numeric(batch, column)?;
            compare(op, &values, &Float64Array::new_scalar(*v))
        }
        Literal::Text(s) => {
            let values = text(batch, column)?;
            compare(op, &values, &StringArray::new_scalar(s.as_str()))
        }
    }
}

fn kleene(
    f: fn(&BooleanArray, &BooleanArray) -> Result<BooleanArray, arrow::error::ArrowError>,
    a: &BooleanArray,
    b: &BooleanArray,
) -> Result<BooleanArray, MpcError> {
    f(a, b).map_err(|e| MpcError::Arrow(e.to_string()))
}

/// Evaluates a filter over a batch with three-valued logic.
fn evaluate(batch: &RecordBatch, f: &Filter) -> Result<BooleanArray, MpcError> {
    match f {
        Filter::All { all } => {
            let mut acc = BooleanArray::from(vec![true; batch.num_rows()]);
            for part in all {
                acc = kleene(and_kleene, &acc, &evaluate(batch, part)?)?;
            }
            Ok(acc)
        }
        Filter::Any { any } => {
            let mut acc = BooleanArray::from(vec![false; batch.num_rows()]);
            for part in any {
                acc = kleene(or_kleene, &acc, &evaluate(batch, part)?)?;
            }
            Ok(acc)
        }
        Filter::Not { not: inner } => not(&evaluate(batch, inner)?).map_err(|e| MpcError::Arrow(e.to_string())),
        Filter::Predicate(p) => match p.test()? {
            Test::Cmp(op, lit) => literal_cmp(batch, &p.column, op, lit),
            Test::Between(low, high) => {
                let values = numeric(batch, &p.column)?;
                let ge = compare(CmpOp::Ge, &values, &Float64Array::new_scalar(low))?;
                let le = compare(CmpOp::Le, &values, &Float64Array::new_scalar(high))?;
                kleene(and_kleene, &ge, &le)
            }
            Test::In(values) => {
                let mut acc = BooleanArray::from(vec![false; batch.num_rows()]);
                for lit in values {
                    acc = kleene(or_kleene, &acc, &literal_cmp(batch, &p.column, CmpOp::Eq, lit)?)?;
                }
                Ok(acc)
            }
            Test::IsNull(true) => is_null(column(batch, &p.column)?).map_err(|e| MpcError::Arrow(e.to_string())),
            Test::IsNull(false) => is_not_null(column(batch, &p.column)?).map_err(|e| MpcError::Arrow(e.to_string())),
        },
    }
}

impl<'q> LocalScan<'q> {
    /// A scan for `query` (validate it first).
    pub fn new(query: &'q CohortQuery) -> Result<Self, MpcError> {
        let fixed = FixedPoint::new(query.precision)?;
        let extremes = query.measures.iter().filter(|m| matches!(m, Measure::Min { .. } | Measure::Max { .. })).count();
        let stats = LocalStats {
            additive: vec![0; vector_len(query)],
            extrema: vec![None; extremes * group_count(query)],
            rows_scanned: 0,
        };
        Ok(Self { query, fixed, stats })
    }

    /// Each row's group index ([`NO_GROUP`] when the row is outside the
    /// cohort or outside every group).
    fn groups(&self, batch: &RecordBatch) -> Result<Vec<u32>, MpcError> {
        let query = self.query;
        let mut groups = vec![0u32; batch.num_rows()];
        if let Some(f) = &query.filter {
            for (g, keep) in groups.iter_mut().zip(evaluate(batch, f)?.iter()) {
                if keep != Some(true) {
                    *g = NO_GROUP;
                }
            }
        }
        if let Some(g) = &query.group_by {
            let values = text(batch, &g.column)?;
            let values = values.as_any().downcast_ref::<StringArray>().expect("utf8");
            // At most MAX_GROUPS values (validated).
            #[allow(clippy::cast_possible_truncation)]
            let index: HashMap<&str, u32> = g.values.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32)).collect();
            for (group, value) in groups.iter_mut().zip(values.iter()) {
                if *group != NO_GROUP {
                    *group = value.and_then(|v| index.get(v).copied()).unwrap_or(NO_GROUP);
                }
            }
        }
        for bin in &query.bins {
            let keys = u32::try_from(bin.keys()?).map_err(|_| MpcError::Query("too many keys".into()))?;
            bin.assign(batch, &mut groups, keys)?;
        }
        Ok(groups)
    }

    /// Adds one batch.
    pub fn absorb(&mut self, batch: &RecordBatch) -> Result<(), MpcError> {
        let query = self.query;
        self.stats.rows_scanned += batch.num_rows() as u64;
        let groups = self.groups(batch)?;
        // Every numeric column once per batch, range-checked, in fixed point.
        let mut encoded: HashMap<&str, Vec<Option<i64>>> = HashMap::new();
        for m in &query.measures {
            for c in m.columns() {
                if encoded.contains_key(c) {
                    continue;
                }
                let values = numeric(batch, c)?;
                if let Some([lo, hi]) = query.ranges.get(c) {
                    let outside = values.iter().flatten().filter(|v| v < lo || v > hi).count();
                    if outside > 0 {
                        return Err(MpcError::OutsideRange { column: c.into(), count: outside, low: *lo, high: *hi });
                    }
                }
                let fixed = &self.fixed;
                let column: Vec<Option<i64>> =
                    values.iter().map(|v| v.map(|x| fixed.encode(x, c)).transpose()).collect::<Result<_, _>>()?;
                encoded.insert(c, column);
            }
        }
        let block = group_len(query);
        for &g in &groups {
            if g != NO_GROUP {
                add(&mut self.stats.additive[g as usize * block], 1, "the cohort count")?;
            }
        }
        let extremes_per_group = self.stats.extrema.len() / group_count(query);
        let mut at = 1;
        let mut extreme = 0;
        for m in &query.measures {
            accumulate(m, &encoded, &groups, &mut self.stats.additive, block, at, &self.fixed)?;
            at += measure_len(m);
            if let Measure::Min { column } | Measure::Max { column } = m {
                let is_min = matches!(m, Measure::Min { .. });
                for (&g, x) in groups.iter().zip(&encoded[column.as_str()]) {
                    let (true, Some(x)) = (g != NO_GROUP, *x) else { continue };
                    let current = &mut self.stats.extrema[g as usize * extremes_per_group + extreme];
                    *current = Some(match *current {
                        Some(c) if is_min => c.min(x),
                        Some(c) => c.max(x),
                        None => x,
                    });
                }
                extreme += 1;
            }
        }
        Ok(())
    }

    /// The finished contribution.
    pub fn finish(self) -> LocalStats {
        self.stats
    }
}

impl LocalStats {
    /// Adds another scan's statistics of the same query (a scan split
    /// across threads or files merges into the scan of the whole).
    pub fn merge(&mut self, other: LocalStats, query: &CohortQuery) -> Result<(), MpcError> {
        if self.additive.len() != other.additive.len() || self.extrema.len() != other.extrema.len() {
            return Err(MpcError::Shape { expected: self.additive.len(), got: other.additive.len() });
        }
        for (a, b) in self.additive.iter_mut().zip(other.additive) {
            add(a, b, "a merged entry")?;
        }
        let is_min: Vec<bool> = query
            .measures
            .iter()
            .filter(|m| matches!(m, Measure::Min { .. } | Measure::Max { .. }))
            .map(|m| matches!(m, Measure::Min { .. }))
            .collect();
        for (i, (a, b)) in self.extrema.iter_mut().zip(other.extrema).enumerate() {
            *a = match (*a, b) {
                (Some(x), Some(y)) if is_min[i % is_min.len()] => Some(x.min(y)),
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
        }
        self.rows_scanned += other.rows_scanned;
        Ok(())
    }
}

/// Adds a measure's terms of every row in a group to the vector.
fn accumulate(
    m: &Measure,
    cols: &HashMap<&str, Vec<Option<i64>>>,
    groups: &[u32],
    out: &mut [i128],
    block: usize,
    at: usize,
    fixed: &FixedPoint,
) -> Result<(), MpcError> {
    let rows =
        || groups.iter().enumerate().filter(|(_, g)| **g != NO_GROUP).map(|(r, g)| (r, *g as usize * block + at));
    match m {
        Measure::Count => {}
        Measure::Sum { column } | Measure::Mean { column } | Measure::Min { column } | Measure::Max { column } => {
            let values = &cols[column.as_str()];
            let with_sum = measure_len(m) > 1;
            for (r, base) in rows() {
                if let Some(x) = values[r] {
                    add(&mut out[base], 1, column)?;
                    if with_sum {
                        add(&mut out[base + 1], i128::from(x), column)?;
                    }
                }
            }
        }
        Measure::Variance { column } | Measure::StdDev { column } => {
            let values = &cols[column.as_str()];
            for (r, base) in rows() {
                if let Some(x) = values[r] {
                    let x = i128::from(x);
                    add(&mut out[base], 1, column)?;
                    add(&mut out[base + 1], x, column)?;
                    add(&mut out[base + 2], x * x, column)?;
                }
            }
        }
        Measure::Histogram { column, edges } => {
            let edges: Vec<i64> = edges.iter().map(|e| fixed.encode(*e, column)).collect::<Result<_, _>>()?;
            let values = &cols[column.as_str()];
            for (r, base) in rows() {
                if let Some(x) = values[r] {
                    // Bin i covers [edges[i-1], edges[i]); 0 is below, last above.
                    let bin = edges.partition_point(|e| *e <= x);
                    add(&mut out[base + bin], 1, column)?;
                }
            }
        }
        Measure::Covariance { x, y } | Measure::Correlation { x, y } => {
            let (xs, ys) = (&cols[x.as_str()], &cols[y.as_str()]);
            for (r, base) in rows() {
                if let (Some(a), Some(b)) = (xs[r], ys[r]) {
                    let (a, b) = (i128::from(a), i128::from(b));
                    for (i, v) in [1, a, b, a * a, b * b, a * b].into_iter().enumerate() {
                        add(&mut out[base + i], v, x)?;
                    }
                }
            }
        }
        Measure::Regression { y, x } => {
            let q = x.len() + 1;
            let ys = &cols[y.as_str()];
            let xs: Vec<&Vec<Option<i64>>> = x.iter().map(|c| &cols[c.as_str()]).collect();
            let one = i128::from(fixed.scale());
            let mut row = vec![0i128; q];
            'rows: for (r, base) in rows() {
                let Some(yv) = ys[r] else { continue };
                row[0] = one;
                for (j, col) in xs.iter().enumerate() {
                    match col[r] {
                        Some(v) => row[j + 1] = i128::from(v),
                        None => continue 'rows,
                    }
                }
                let yv = i128::from(yv);
                let mut k = base;
                for i in 0..q {
                    for j in i..q {
                        let p = row[i].checked_mul(row[j]).ok_or_else(|| MpcError::Overflow { column: y.clone() })?;
                        add(&mut out[k], p, y)?;
                        k += 1;
                    }
                }
                for i in 0..q {
                    add(&mut out[k + i], row[i] * yv, y)?;
                }
                add(&mut out[k + q], yv * yv, y)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_group_sizes_measures_n_and_histogram_bins_in_vector_order() {
        use crate::gates::{Gate, Guard, gates};
        let query = CohortQuery::from_toml(
            r#"
precision = 1
ranges = { age = [0, 120], bmi = [10, 70] }
group_by = { column = "sex", values = ["F", "M"] }
[[measures]]
kind = "mean"
column = "bmi"
[[measures]]
kind = "histogram"
column = "age"
edges = [40, 60]
"#,
        )
        .unwrap();
        // Per group: size, mean (n, Σx), histogram (below, [40, 60), above).
        assert_eq!(group_len(&query), 6);
        let gates = gates(&query);
        let entries: Vec<usize> = gates.iter().map(|c| c.entry).collect();
        assert_eq!(entries, [0, 1, 3, 4, 5, 6, 7, 9, 10, 11]);
        assert_eq!(gates[0], Gate { entry: 0, group: 0, guard: Guard::Group });
        assert_eq!(gates[9], Gate { entry: 11, group: 1, guard: Guard::Bin { measure: 1, bin: 2 } });
    }
}
