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

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, StringArray};
use arrow::compute::kernels::cmp;
use arrow::compute::{CastOptions, and_kleene, cast_with_options, filter, is_not_null, is_null, not, or_kleene};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::MpcError;
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

/// Groups of a query (at least one).
pub fn group_count(query: &CohortQuery) -> usize {
    query.group_by.as_ref().map_or(1, |g| g.values.len())
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

/// An entry of the vector that small-cell suppression may hide: a group's
/// size or one histogram bin. With TFHE post-processing these travel only
/// encrypted (`crate::fhe`) and are zero in the shared vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// Its index in the vector.
    pub entry: usize,
    /// Its group.
    pub group: usize,
    /// `None` for the group's size; else the histogram's index among the
    /// query's measures and the bin's index within it.
    pub bin: Option<(usize, usize)>,
}

/// The query's cells, in vector order.
pub fn cells(query: &CohortQuery) -> Vec<Cell> {
    let block = group_len(query);
    let mut out = Vec::new();
    for group in 0..group_count(query) {
        let base = group * block;
        out.push(Cell { entry: base, group, bin: None });
        let mut at = base + 1;
        for (index, m) in query.measures.iter().enumerate() {
            if let Measure::Histogram { edges, .. } = m {
                for bin in 0..=edges.len() {
                    out.push(Cell { entry: at + bin, group, bin: Some((index, bin)) });
                }
            }
            at += measure_len(m);
        }
    }
    out
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

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef, MpcError> {
    batch.column_by_name(name).ok_or_else(|| MpcError::UnknownColumn {
        column: name.into(),
        available: batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// A column as f64, refusing text that is not a number.
fn numeric(batch: &RecordBatch, name: &str) -> Result<Float64Array, MpcError> {
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

/// Unknown (null) counts as false.
fn definite(mask: &BooleanArray) -> BooleanArray {
    mask.iter().map(|v| Some(v == Some(true))).collect()
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

    /// Adds one batch.
    pub fn absorb(&mut self, batch: &RecordBatch) -> Result<(), MpcError> {
        let query = self.query;
        self.stats.rows_scanned += batch.num_rows() as u64;
        let cohort = match &query.filter {
            Some(f) => definite(&evaluate(batch, f)?),
            None => BooleanArray::from(vec![true; batch.num_rows()]),
        };
        let groups: Vec<BooleanArray> = match &query.group_by {
            None => vec![cohort],
            Some(g) => {
                let values = text(batch, &g.column)?;
                g.values
                    .iter()
                    .map(|v| {
                        let is = definite(&compare(CmpOp::Eq, &values, &StringArray::new_scalar(v.as_str()))?);
                        kleene(and_kleene, &cohort, &is)
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        // Every numeric column once per batch.
        let mut cache: std::collections::HashMap<&str, Float64Array> = std::collections::HashMap::new();
        for m in &query.measures {
            for c in m.columns() {
                if !cache.contains_key(c) {
                    cache.insert(c, numeric(batch, c)?);
                }
            }
        }
        for (name, values) in &cache {
            if let Some([lo, hi]) = query.ranges.get(*name) {
                let outside = values.iter().flatten().filter(|v| v < lo || v > hi).count();
                if outside > 0 {
                    return Err(MpcError::OutsideRange { column: (*name).into(), count: outside, low: *lo, high: *hi });
                }
            }
        }
        let block = group_len(query);
        let extremes_per_group = self.stats.extrema.len() / group_count(query);
        for (g, mask) in groups.iter().enumerate() {
            let mut extreme = 0;
            let selected: std::collections::HashMap<&str, Vec<Option<i64>>> = cache
                .iter()
                .map(|(name, values)| {
                    let kept = filter(values, mask).map_err(|e| MpcError::Arrow(e.to_string()))?;
                    let kept = kept.as_any().downcast_ref::<Float64Array>().expect("float64");
                    let encoded = kept
                        .iter()
                        .map(|v| v.map(|x| self.fixed.encode(x, name)).transpose())
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((*name, encoded))
                })
                .collect::<Result<_, MpcError>>()?;
            let out = &mut self.stats.additive[g * block..(g + 1) * block];
            add(&mut out[0], mask.true_count() as i128, "the cohort count")?;
            let mut at = 1;
            for m in &query.measures {
                let len = measure_len(m);
                let slot = &mut out[at..at + len];
                at += len;
                accumulate(m, &selected, slot, &self.fixed)?;
                if let Measure::Min { column } | Measure::Max { column } = m {
                    let local = selected[column.as_str()].iter().flatten().copied();
                    let local = if matches!(m, Measure::Min { .. }) { local.min() } else { local.max() };
                    let current = &mut self.stats.extrema[g * extremes_per_group + extreme];
                    *current = match (*current, local) {
                        (Some(a), Some(b)) => Some(if matches!(m, Measure::Min { .. }) { a.min(b) } else { a.max(b) }),
                        (a, b) => a.or(b),
                    };
                    extreme += 1;
                }
            }
        }
        Ok(())
    }

    /// The finished contribution.
    pub fn finish(self) -> LocalStats {
        self.stats
    }
}

fn accumulate(
    m: &Measure,
    cols: &std::collections::HashMap<&str, Vec<Option<i64>>>,
    slot: &mut [i128],
    fixed: &FixedPoint,
) -> Result<(), MpcError> {
    match m {
        Measure::Count => {}
        Measure::Sum { column } | Measure::Mean { column } | Measure::Min { column } | Measure::Max { column } => {
            for x in cols[column.as_str()].iter().flatten() {
                add(&mut slot[0], 1, column)?;
                if slot.len() > 1 {
                    add(&mut slot[1], i128::from(*x), column)?;
                }
            }
        }
        Measure::Variance { column } | Measure::StdDev { column } => {
            for x in cols[column.as_str()].iter().flatten() {
                let x = i128::from(*x);
                add(&mut slot[0], 1, column)?;
                add(&mut slot[1], x, column)?;
                add(&mut slot[2], x * x, column)?;
            }
        }
        Measure::Histogram { column, edges } => {
            let edges: Vec<i64> = edges.iter().map(|e| fixed.encode(*e, column)).collect::<Result<_, _>>()?;
            for x in cols[column.as_str()].iter().flatten() {
                // Bin i covers [edges[i-1], edges[i]); 0 is below, last above.
                let bin = edges.partition_point(|e| e <= x);
                add(&mut slot[bin], 1, column)?;
            }
        }
        Measure::Covariance { x, y } | Measure::Correlation { x, y } => {
            for (a, b) in cols[x.as_str()].iter().zip(&cols[y.as_str()]) {
                if let (Some(a), Some(b)) = (a, b) {
                    let (a, b) = (i128::from(*a), i128::from(*b));
                    for (i, v) in [1, a, b, a * a, b * b, a * b].into_iter().enumerate() {
                        add(&mut slot[i], v, x)?;
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
            'rows: for r in 0..ys.len() {
                let Some(yv) = ys[r] else { continue };
                row[0] = one;
                for (j, col) in xs.iter().enumerate() {
                    match col[r] {
                        Some(v) => row[j + 1] = i128::from(v),
                        None => continue 'rows,
                    }
                }
                let yv = i128::from(yv);
                let mut k = 0;
                for i in 0..q {
                    for j in i..q {
                        let p = row[i].checked_mul(row[j]).ok_or_else(|| MpcError::Overflow { column: y.clone() })?;
                        add(&mut slot[k], p, y)?;
                        k += 1;
                    }
                }
                for i in 0..q {
                    add(&mut slot[k + i], row[i] * yv, y)?;
                }
                add(&mut slot[k + q], yv * yv, y)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_group_sizes_and_histogram_bins_in_vector_order() {
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
        let cells = cells(&query);
        let entries: Vec<usize> = cells.iter().map(|c| c.entry).collect();
        assert_eq!(entries, [0, 3, 4, 5, 6, 9, 10, 11]);
        assert_eq!(cells[0], Cell { entry: 0, group: 0, bin: None });
        assert_eq!(cells[7], Cell { entry: 11, group: 1, bin: Some((1, 2)) });
    }
}
