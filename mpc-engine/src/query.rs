//! Cohort queries as a researcher writes them (TOML or JSON), and their
//! validation against a dataset's schema and a grant's allowed columns
//! before anything runs.
//!
//! ```toml
//! precision = 2                         # decimal digits kept by the fixed-point encoding
//! filter = { all = [
//!   { column = "diagnosis", is_in = ["I10"] },
//!   { column = "age", between = [40, 80] },
//!   { not = { column = "bmi", is_null = true } },
//! ] }
//! group_by = { column = "sex", values = ["F", "M"] }   # optional; every site uses the same groups
//!
//! [[measures]]
//! kind = "mean"
//! column = "systolic_bp"
//!
//! [[measures]]
//! kind = "histogram"
//! column = "age"
//! edges = [18, 40, 60, 80, 100]
//!
//! [[measures]]
//! kind = "regression"
//! y = "systolic_bp"
//! x = ["age", "bmi"]
//! ```
//!
//! A predicate names one column and exactly one test: `eq`, `ne`, `lt`,
//! `le`, `gt`, `ge` (a number or a string), `between = [low, high]`
//! (inclusive), `is_in = [...]`, or `is_null = true|false`. `all`, `any` and
//! `not` combine them. Comparisons with a missing value are unknown, as in
//! SQL: a row is in the cohort only if the filter is true.
//!
//! **Decoding checks the shape.** [`CohortQuery::from_json`] and
//! [`CohortQuery::from_toml`] apply every bound that does not need a
//! dataset's schema ([`CohortQuery::check_shape`]): counts of measures,
//! groups, bins, edges, predicates and vector entries, with checked
//! arithmetic. A query that decodes is small enough for every party to lay
//! out; nothing downstream allocates for one that is not. Decode queries
//! only through them.
//!
//! **Numbers are taken exactly or refused.** Histogram edges and declared
//! ranges are compared with values in fixed point (`precision` decimal
//! digits), so each must be a multiple of 10^-precision: an edge of 40.05
//! under `precision = 1` is refused with the precision it needs, never
//! rounded. Values are rounded to the precision before they are binned.
//! Filter constants, band edges and grid bounds are compared with the
//! values as read, so they are exact at any precision; they must be finite
//! (filter constants below 2^53 in magnitude, where f64 stops being exact
//! on integers).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::MpcError;
use crate::binning::Bin;

/// Most values a `group_by` may list.
pub const MAX_GROUPS: usize = 64;
/// Most groups (all keys combined) a query may have.
pub const MAX_TOTAL_GROUPS: usize = 1 << 20;
/// Most entries a query's vector may have (groups × entries per group).
pub const MAX_VECTOR: usize = 1 << 22;
/// Most binned keys in one query.
pub const MAX_BINS_PER_QUERY: usize = 4;
/// Most histogram bins (between edges).
pub const MAX_BINS: usize = 256;
/// Most predictors of a regression.
pub const MAX_PREDICTORS: usize = 8;
/// Most measures in one query.
pub const MAX_MEASURES: usize = 32;
/// Most decimal digits of fixed-point precision.
pub const MAX_PRECISION: u32 = 6;
/// Deepest filter nesting.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most predicates in a filter (all levels).
pub const MAX_PREDICATES: usize = 256;
/// Most values an `is_in` test may list.
pub const MAX_IN_VALUES: usize = 1024;
/// Largest magnitude of a number in a query (f64 is exact on integers below it).
pub const MAX_MAGNITUDE: f64 = 9_007_199_254_740_992.0;

/// A literal in a predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// A number (integers included).
    Number(f64),
    /// A string.
    Text(String),
}

/// One test on one column.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// The column.
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ne: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<Literal>,
    /// Inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_in: Option<Vec<Literal>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_null: Option<bool>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A predicate's one test, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Test<'a> {
    /// `column op literal`.
    Cmp(CmpOp, &'a Literal),
    /// `low <= column <= high`.
    Between(f64, f64),
    /// `column IN (…)`.
    In(&'a [Literal]),
    /// `column IS [NOT] NULL`.
    IsNull(bool),
}

impl Predicate {
    /// The predicate's single test, or an error when it has none or several.
    pub fn test(&self) -> Result<Test<'_>, MpcError> {
        let mut tests = Vec::new();
        for (op, lit) in [
            (CmpOp::Eq, &self.eq),
            (CmpOp::Ne, &self.ne),
            (CmpOp::Lt, &self.lt),
            (CmpOp::Le, &self.le),
            (CmpOp::Gt, &self.gt),
            (CmpOp::Ge, &self.ge),
        ] {
            if let Some(lit) = lit {
                tests.push(Test::Cmp(op, lit));
            }
        }
        if let Some([low, high]) = self.between {
            tests.push(Test::Between(low, high));
        }
        if let Some(values) = &self.is_in {
            tests.push(Test::In(values));
        }
        if let Some(null) = self.is_null {
            tests.push(Test::IsNull(null));
        }
        match tests.len() {
            1 => Ok(tests.remove(0)),
            n => Err(MpcError::Query(format!(
                "the predicate on '{}' has {n} tests; give exactly one of eq, ne, lt, le, gt, ge, between, is_in, is_null",
                self.column
            ))),
        }
    }
}

/// A cohort filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Filter {
    /// Every one holds.
    All {
        /// The parts.
        all: Vec<Filter>,
    },
    /// At least one holds.
    Any {
        /// The parts.
        any: Vec<Filter>,
    },
    /// It does not hold.
    Not {
        /// The negated filter.
        not: Box<Filter>,
    },
    /// One test on one column.
    Predicate(Predicate),
}

/// Optional grouping on a low-cardinality column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBy {
    /// The column (compared as text).
    pub column: String,
    /// Its values, in order: every site reports the same groups.
    pub values: Vec<String>,
}

/// A statistic over the cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Measure {
    /// Rows in the cohort.
    Count,
    /// Sum of a column's values.
    Sum { column: String },
    /// Mean.
    Mean { column: String },
    /// Sample variance (n − 1).
    Variance { column: String },
    /// Sample standard deviation.
    StdDev { column: String },
    /// Smallest value across sites.
    Min { column: String },
    /// Largest value across sites.
    Max { column: String },
    /// Counts per bin `[edges[i], edges[i+1])`, plus below and above.
    Histogram { column: String, edges: Vec<f64> },
    /// Sample covariance of two columns (rows with both present).
    Covariance { x: String, y: String },
    /// Pearson correlation of two columns (rows with both present).
    Correlation { x: String, y: String },
    /// Ordinary least squares of `y` on `x` with an intercept (rows with all present).
    Regression { y: String, x: Vec<String> },
}

impl Measure {
    /// The numeric columns it reads.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Measure::Count => vec![],
            Measure::Sum { column }
            | Measure::Mean { column }
            | Measure::Variance { column }
            | Measure::StdDev { column }
            | Measure::Min { column }
            | Measure::Max { column }
            | Measure::Histogram { column, .. } => vec![column],
            Measure::Covariance { x, y } | Measure::Correlation { x, y } => vec![x, y],
            Measure::Regression { y, x } => std::iter::once(y.as_str()).chain(x.iter().map(String::as_str)).collect(),
        }
    }

    /// Its name in results.
    pub fn label(&self) -> String {
        match self {
            Measure::Count => "count".into(),
            Measure::Sum { column } => format!("sum({column})"),
            Measure::Mean { column } => format!("mean({column})"),
            Measure::Variance { column } => format!("variance({column})"),
            Measure::StdDev { column } => format!("stddev({column})"),
            Measure::Min { column } => format!("min({column})"),
            Measure::Max { column } => format!("max({column})"),
            Measure::Histogram { column, .. } => format!("histogram({column})"),
            Measure::Covariance { x, y } => format!("covariance({x}, {y})"),
            Measure::Correlation { x, y } => format!("correlation({x}, {y})"),
            Measure::Regression { y, x } => format!("regression({y} ~ {})", x.join(" + ")),
        }
    }
}

fn default_precision() -> u32 {
    3
}

/// A researcher's cohort query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortQuery {
    /// Decimal digits kept by the fixed-point encoding.
    #[serde(default = "default_precision")]
    pub precision: u32,
    /// Which rows are in the cohort (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Optional grouping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
    /// Binned group-by keys (grid cells, bands, time windows), after
    /// `group_by`: see [`crate::binning`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<Bin>,
    /// What to compute.
    pub measures: Vec<Measure>,
    /// Declared `[low, high]` of every numeric column a measure reads: the
    /// bounds each site proves its contribution within (a value outside
    /// them is an error at the site).
    #[serde(default)]
    pub ranges: std::collections::BTreeMap<String, [f64; 2]>,
}

impl CohortQuery {
    /// Parses a query written in TOML.
    pub fn from_toml(text: &str) -> Result<Self, MpcError> {
        let query: Self = toml::from_str(text)
            .map_err(|e| MpcError::Query(format!("the query is not valid TOML for a cohort query: {e}")))?;
        query.check_shape()?;
        Ok(query)
    }

    /// Parses a query written in JSON.
    pub fn from_json(text: &str) -> Result<Self, MpcError> {
        let query: Self = serde_json::from_str(text)
            .map_err(|e| MpcError::Query(format!("the query is not valid JSON for a cohort query: {e}")))?;
        query.check_shape()?;
        Ok(query)
    }

    /// The canonical JSON form (what the task parameters carry).
    pub fn to_canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a query always serialises")
    }

    /// Every column the query reads, with what it needs.
    fn filter_columns<'a>(filter: &'a Filter, depth: usize, out: &mut Vec<&'a str>) -> Result<(), MpcError> {
        if depth > MAX_FILTER_DEPTH {
            return Err(MpcError::Query(format!("the filter nests deeper than {MAX_FILTER_DEPTH} levels")));
        }
        match filter {
            Filter::All { all: parts } | Filter::Any { any: parts } => {
                if parts.is_empty() {
                    return Err(MpcError::Query("an 'all' or 'any' filter needs at least one part".into()));
                }
                for p in parts {
                    Self::filter_columns(p, depth + 1, out)?;
                }
            }
            Filter::Not { not } => Self::filter_columns(not, depth + 1, out)?,
            Filter::Predicate(p) => {
                if out.len() >= MAX_PREDICATES {
                    return Err(MpcError::Query(format!("the filter has more than {MAX_PREDICATES} predicates")));
                }
                let number = |x: f64| finite(x, &format!("a constant compared with '{}'", p.column));
                match p.test()? {
                    Test::Cmp(_, Literal::Number(x)) => number(*x)?,
                    Test::Between(low, high) => {
                        number(low)?;
                        number(high)?;
                    }
                    Test::In(values) => {
                        if values.len() > MAX_IN_VALUES {
                            return Err(MpcError::Query(format!(
                                "is_in on '{}' lists {} values; at most {MAX_IN_VALUES}",
                                p.column,
                                values.len()
                            )));
                        }
                        for v in values {
                            if let Literal::Number(x) = v {
                                number(*x)?;
                            }
                        }
                    }
                    Test::Cmp(_, Literal::Text(_)) | Test::IsNull(_) => {}
                }
                out.push(&p.column);
            }
        }
        Ok(())
    }

    /// Every column the query reads (filter, grouping, measures), sorted
    /// and without repeats: what a grant must allow.
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(f) = &self.filter {
            // Depth is validated separately; collect what is there.
            let _ = Self::filter_columns(f, 0, &mut out);
        }
        out.extend(self.group_by.iter().map(|g| g.column.as_str()));
        out.extend(self.bins.iter().flat_map(Bin::columns));
        out.extend(self.measures.iter().flat_map(Measure::columns));
        let mut out: Vec<String> = out.into_iter().map(String::from).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Groups of the query (the `group_by` values times every bin's keys),
    /// with checked arithmetic; an error when a bin is malformed or the
    /// product overflows.
    pub fn group_total(&self) -> Result<usize, MpcError> {
        let mut groups = self.group_by.as_ref().map_or(1, |g| g.values.len().max(1));
        for bin in &self.bins {
            groups = groups.checked_mul(bin.keys()?.max(1)).ok_or_else(|| too_many_groups(None))?;
        }
        Ok(groups)
    }

    /// Entries of the query's vector (groups × entries per group), with
    /// checked arithmetic.
    pub fn vector_entries(&self) -> Result<usize, MpcError> {
        let block = self.measures.iter().try_fold(1usize, |acc, m| acc.checked_add(crate::local::measure_len(m)));
        block
            .and_then(|b| b.checked_mul(self.group_total().ok()?))
            .ok_or_else(|| MpcError::Query(format!("the query needs more than {MAX_VECTOR} entries")))
    }

    /// Checks everything about the query that does not need a dataset's
    /// schema: sizes (measures, groups, bins, edges, predicates, vector
    /// entries, all with checked arithmetic), finite numbers, declared
    /// ranges, and that histogram edges and ranges are exact at the query's
    /// precision. Run by [`CohortQuery::from_json`] and
    /// [`CohortQuery::from_toml`], so a decoded query always passes it.
    pub fn check_shape(&self) -> Result<(), MpcError> {
        self.shape_columns().map(drop)
    }

    /// [`CohortQuery::check_shape`], returning the columns it reads.
    fn shape_columns(&self) -> Result<Vec<&str>, MpcError> {
        if self.precision > MAX_PRECISION {
            return Err(MpcError::Query(format!("precision {} exceeds {MAX_PRECISION} digits", self.precision)));
        }
        if self.measures.is_empty() || self.measures.len() > MAX_MEASURES {
            return Err(MpcError::Query(format!("a query needs 1 to {MAX_MEASURES} measures")));
        }
        let mut columns: Vec<&str> = Vec::new();
        if let Some(filter) = &self.filter {
            Self::filter_columns(filter, 0, &mut columns)?;
        }
        if let Some(g) = &self.group_by {
            if g.values.is_empty() || g.values.len() > MAX_GROUPS {
                return Err(MpcError::Query(format!(
                    "group_by on '{}' needs 1 to {MAX_GROUPS} distinct values",
                    g.column
                )));
            }
            let distinct: BTreeSet<&String> = g.values.iter().collect();
            if distinct.len() != g.values.len() {
                return Err(MpcError::Query(format!(
                    "group_by on '{}' needs 1 to {MAX_GROUPS} distinct values",
                    g.column
                )));
            }
            columns.push(&g.column);
        }
        if self.bins.len() > MAX_BINS_PER_QUERY {
            return Err(MpcError::Query(format!("a query may bin by at most {MAX_BINS_PER_QUERY} keys")));
        }
        let mut groups = self.group_by.as_ref().map_or(1, |g| g.values.len());
        for bin in &self.bins {
            bin.validate()?;
            groups = groups.checked_mul(bin.keys()?).ok_or_else(|| too_many_groups(None))?;
            if groups > MAX_TOTAL_GROUPS {
                return Err(too_many_groups(Some(groups)));
            }
            columns.extend(bin.columns());
        }
        for m in &self.measures {
            match m {
                Measure::Histogram { column, edges } => {
                    if edges.len() < 2 || edges.len() > MAX_BINS + 1 {
                        return Err(MpcError::Query(format!(
                            "the histogram of '{column}' needs 2 to {} edges",
                            MAX_BINS + 1
                        )));
                    }
                    if !edges.windows(2).all(|w| w[0] < w[1]) || edges.iter().any(|e| !e.is_finite()) {
                        return Err(MpcError::Query(format!(
                            "the histogram edges of '{column}' must be finite and strictly increasing"
                        )));
                    }
                    for edge in edges {
                        self.exact(*edge, &format!("the histogram edge {edge} of '{column}'"))?;
                    }
                }
                Measure::Regression { x, y } if x.is_empty() || x.len() > MAX_PREDICTORS => {
                    return Err(MpcError::Query(format!(
                        "a regression of '{y}' needs 1 to {MAX_PREDICTORS} predictors"
                    )));
                }
                _ => {}
            }
            columns.extend(m.columns());
        }
        for (c, [lo, hi]) in &self.ranges {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(MpcError::Query(format!("the range of '{c}' must be finite with low <= high")));
            }
            self.exact(*lo, &format!("the low end {lo} of the range of '{c}'"))?;
            self.exact(*hi, &format!("the high end {hi} of the range of '{c}'"))?;
        }
        for m in &self.measures {
            for c in m.columns() {
                if !self.ranges.contains_key(c) {
                    return Err(MpcError::Query(format!(
                        "declare the range of '{c}' (ranges = {{ {c} = [low, high] }}): contributions are proven within it"
                    )));
                }
            }
        }
        let entries = self.vector_entries()?;
        if entries > MAX_VECTOR {
            return Err(MpcError::Query(format!(
                "the query needs {entries} entries (groups × measures); at most {MAX_VECTOR} — fewer groups or measures"
            )));
        }
        Ok(columns)
    }

    /// Refuses `x` unless it is a multiple of 10^-precision (so fixed point
    /// carries it exactly), naming the precision it needs.
    fn exact(&self, x: f64, what: &str) -> Result<(), MpcError> {
        if decimals(x, self.precision) {
            return Ok(());
        }
        if x.abs() >= MAX_MAGNITUDE / 10f64.powi(i32::try_from(self.precision).unwrap_or(0)) {
            return Err(MpcError::Query(format!(
                "{what} is too large for precision {}; lower the precision or the number",
                self.precision
            )));
        }
        let needed = (self.precision + 1..=MAX_PRECISION).find(|p| decimals(x, *p));
        Err(MpcError::Query(match needed {
            Some(p) => format!(
                "{what} has more decimals than the query's precision ({}); raise precision to {p} or round it to {} decimals",
                self.precision, self.precision
            ),
            None => format!(
                "{what} has more than {MAX_PRECISION} decimals; round it to at most {} decimals (the query's precision)",
                self.precision
            ),
        }))
    }

    /// Checks the query's shape ([`CohortQuery::check_shape`]), that every
    /// column it reads is in `schema`, and — when `allowed` is not empty —
    /// that the grant allows it. Run before anything is computed.
    pub fn validate(&self, schema: &[&str], allowed: &[String]) -> Result<(), MpcError> {
        for column in self.shape_columns()? {
            if !schema.contains(&column) {
                return Err(MpcError::UnknownColumn { column: column.into(), available: schema.join(", ") });
            }
            if !allowed.is_empty() && !allowed.iter().any(|a| a == column) {
                return Err(MpcError::ColumnNotAllowed { column: column.into(), allowed: allowed.join(", ") });
            }
        }
        Ok(())
    }
}

fn too_many_groups(groups: Option<usize>) -> MpcError {
    let groups = groups.map_or_else(|| "too many".to_owned(), |g| g.to_string());
    MpcError::Query(format!(
        "the query has {groups} groups (all keys combined); at most {MAX_TOTAL_GROUPS} — narrow the region or coarsen a bin"
    ))
}

/// Refuses a number that is not finite or too large to be exact.
fn finite(x: f64, what: &str) -> Result<(), MpcError> {
    if x.is_finite() && x.abs() < MAX_MAGNITUDE {
        Ok(())
    } else {
        Err(MpcError::Query(format!("{what} must be a finite number below 2^53 in magnitude")))
    }
}

/// Whether `x` is exactly a decimal with at most `precision` digits after
/// the point (the nearest f64 to k / 10^precision for an integer k).
fn decimals(x: f64, precision: u32) -> bool {
    let scale = 10f64.powi(i32::try_from(precision).unwrap_or(i32::MAX));
    let scaled = (x * scale).round();
    x.is_finite() && scaled.abs() < MAX_MAGNITUDE && scaled / scale == x
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEAN: &str = "ranges = { age = [0, 120] }\n[[measures]]\nkind = \"mean\"\ncolumn = \"age\"\n";

    fn json_err(text: &str) -> String {
        CohortQuery::from_json(text).unwrap_err().to_string()
    }

    fn toml_err(text: &str) -> String {
        CohortQuery::from_toml(text).unwrap_err().to_string()
    }

    /// Four bands of 1,000 edges: 999^4 ≈ 10^12 groups. Refused when the
    /// JSON is decoded, before anything is laid out for it.
    #[test]
    fn an_oversized_query_does_not_decode() {
        let edges: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
        let band = |c: &str| format!(r#"{{"kind":"bands","column":"{c}","edges":[{}]}}"#, edges.join(","));
        let bins: Vec<String> = ["a", "b", "c", "d"].iter().map(|c| band(c)).collect();
        let text =
            format!(r#"{{"precision":0,"bins":[{}],"measures":[{{"kind":"count"}}],"ranges":{{}}}}"#, bins.join(","));
        let err = json_err(&text);
        assert!(err.contains("groups (all keys combined); at most 1048576"), "{err}");
        // Three such bands are still too many; one is fine.
        let three = format!(r#"{{"bins":[{},{},{}],"measures":[{{"kind":"count"}}]}}"#, bins[0], bins[1], bins[2]);
        assert!(json_err(&three).contains("997002999 groups"));
        let one = format!(r#"{{"bins":[{}],"measures":[{{"kind":"count"}}]}}"#, bins[0]);
        let query = CohortQuery::from_json(&one).unwrap();
        assert_eq!(query.group_total().unwrap(), 999);
        assert_eq!(query.vector_entries().unwrap(), 999);
    }

    #[test]
    fn every_structural_bound_applies_when_decoding() {
        let count = "[[measures]]\nkind = \"count\"\n";
        // Measures.
        assert!(toml_err("measures = []").contains("1 to 32 measures"));
        assert!(toml_err(&count.repeat(MAX_MEASURES + 1)).contains("1 to 32 measures"));
        // Precision.
        assert!(toml_err(&format!("precision = 7\n{count}")).contains("precision 7 exceeds 6"));
        // group_by: too many or repeated values.
        let values: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("\"v{i}\"")).collect();
        let many = format!("group_by = {{ column = \"g\", values = [{}] }}\n{count}", values.join(","));
        assert!(toml_err(&many).contains("1 to 64 distinct values"));
        assert!(
            toml_err(&format!("group_by = {{ column = \"g\", values = [\"a\", \"a\"] }}\n{count}"))
                .contains("distinct")
        );
        // Five binned keys.
        let bin = "[[bins]]\nkind = \"bands\"\ncolumn = \"d\"\nedges = [0, 1]\n";
        assert!(toml_err(&format!("{count}{}", bin.repeat(5))).contains("at most 4 keys"));
        // One bin with too many keys.
        let fine = "[[bins]]\nkind = \"grid\"\nlat = \"lat\"\nlon = \"lon\"\ncell_degrees = 0.001\nlat_range = [-90, 90]\nlon_range = [-180, 180]\n";
        assert!(toml_err(&format!("{count}{fine}")).contains("coarser"));
        // Histogram edges: too many, not increasing, not finite.
        let edges: Vec<String> = (0..=MAX_BINS + 1).map(|i| i.to_string()).collect();
        let hist = |e: &str| {
            format!(
                "ranges = {{ age = [0, 1000] }}\n[[measures]]\nkind = \"histogram\"\ncolumn = \"age\"\nedges = [{e}]\n"
            )
        };
        assert!(toml_err(&hist(&edges.join(","))).contains("2 to 257 edges"));
        assert!(toml_err(&hist("3, 2")).contains("strictly increasing"));
        assert!(toml_err(&hist("1, inf")).contains("finite"));
        // Regression predictors.
        let xs: Vec<String> = (0..=MAX_PREDICTORS).map(|i| format!("\"x{i}\"")).collect();
        assert!(
            toml_err(&format!("[[measures]]\nkind = \"regression\"\ny = \"y\"\nx = [{}]\n", xs.join(",")))
                .contains("1 to 8 predictors")
        );
        // Ranges: missing, inverted, not finite.
        assert!(toml_err("[[measures]]\nkind = \"mean\"\ncolumn = \"age\"\n").contains("declare the range of 'age'"));
        assert!(toml_err(&MEAN.replace("[0, 120]", "[120, 0]")).contains("low <= high"));
        assert!(toml_err(&MEAN.replace("[0, 120]", "[0, nan]")).contains("finite"));
        // Filters: too deep, too many predicates, too many is_in values,
        // several tests in one predicate, constants that are not finite.
        let mut deep = "{ column = \"age\", gt = 1 }".to_owned();
        for _ in 0..=MAX_FILTER_DEPTH {
            deep = format!("{{ not = {deep} }}");
        }
        assert!(toml_err(&format!("filter = {deep}\n{MEAN}")).contains("deeper than 16"));
        let parts: Vec<&str> = std::iter::repeat_n("{ column = \"age\", gt = 1 }", MAX_PREDICATES + 1).collect();
        assert!(toml_err(&format!("filter = {{ all = [{}] }}\n{MEAN}", parts.join(","))).contains("more than 256"));
        let values: Vec<String> = (0..=MAX_IN_VALUES).map(|i| i.to_string()).collect();
        assert!(
            toml_err(&format!("filter = {{ column = \"age\", is_in = [{}] }}\n{MEAN}", values.join(",")))
                .contains("at most 1024")
        );
        assert!(toml_err(&format!("filter = {{ column = \"age\", gt = 3, lt = 9 }}\n{MEAN}")).contains("exactly one"));
        assert!(toml_err(&format!("filter = {{ column = \"age\", gt = inf }}\n{MEAN}")).contains("finite"));
        assert!(
            toml_err(&format!("filter = {{ column = \"age\", le = 1e300 }}\n{MEAN}")).contains("below 2^53"),
            "a constant beyond 2^53 is not exact"
        );
        // Entries: 2^20 groups × 5 entries each is over MAX_VECTOR.
        let wide = format!(
            "ranges = {{ age = [0, 2] }}\ngroup_by = {{ column = \"g\", values = [{}] }}\n[[bins]]\nkind = \"bands\"\ncolumn = \"d\"\nedges = [{}]\n{}",
            (0..64).map(|i| format!("\"v{i}\"")).collect::<Vec<_>>().join(","),
            (0..=16_384).map(|i| i.to_string()).collect::<Vec<_>>().join(","),
            "[[measures]]\nkind = \"histogram\"\ncolumn = \"age\"\nedges = [0, 1, 2]\n"
        );
        let err = toml_err(&wide);
        assert!(err.contains("5242880 entries (groups × measures); at most 4194304"), "{err}");
        // What passes decoding also passes validate's shape checks.
        let query = CohortQuery::from_toml(MEAN).unwrap();
        query.validate(&["age"], &[]).unwrap();
    }

    /// A histogram edge of 40.05 under precision 1 used to be rounded to
    /// 40.1 (or 40.0) while its label said 40.05; now it is refused with
    /// the precision it needs.
    #[test]
    fn numbers_are_taken_exactly_or_refused() {
        let hist = |precision: u32, edges: &str| {
            format!(
                "precision = {precision}\nranges = {{ age = [0, 120] }}\n[[measures]]\nkind = \"histogram\"\ncolumn = \"age\"\nedges = [{edges}]\n"
            )
        };
        let err = toml_err(&hist(1, "18, 40.05, 60"));
        assert!(
            err.contains("the histogram edge 40.05 of 'age' has more decimals than the query's precision (1)"),
            "{err}"
        );
        assert!(err.contains("raise precision to 2"), "{err}");
        assert!(CohortQuery::from_toml(&hist(2, "18, 40.05, 60")).is_ok());
        assert!(CohortQuery::from_toml(&hist(1, "18, 40.1, 60")).is_ok());
        assert!(CohortQuery::from_toml(&hist(3, "0.001, 1.005, 2")).is_ok(), "1.005 is exact at 3 digits");
        assert!(toml_err(&hist(0, "0.5, 1")).contains("raise precision to 1"));
        let err = toml_err(&hist(6, "0.00000001, 1"));
        assert!(err.contains("more than 6 decimals"), "{err}");
        // Too large for fixed point at this precision.
        let err = toml_err(&hist(6, "0, 1e13"));
        assert!(err.contains("too large for precision 6"), "{err}");
        // Declared ranges too.
        let err = toml_err(&MEAN.replace("[0, 120]", "[0, 99.95]").replace("ranges", "precision = 1\nranges"));
        assert!(err.contains("the high end 99.95 of the range of 'age'"), "{err}");
        assert!(err.contains("raise precision to 2"), "{err}");
        let err = toml_err(&MEAN.replace("[0, 120]", "[-0.125, 1]").replace("ranges", "precision = 2\nranges"));
        assert!(err.contains("the low end -0.125"), "{err}");
        // JSON alike (what task parameters carry).
        let json =
            r#"{"precision":1,"measures":[{"kind":"histogram","column":"x","edges":[0,0.25]}],"ranges":{"x":[0,1]}}"#;
        assert!(json_err(json).contains("raise precision to 2"));
        // Filter constants and band edges are compared with the values as
        // read: exact at any precision.
        let filtered = format!("precision = 0\nfilter = {{ column = \"age\", ge = 40.05 }}\n{MEAN}");
        assert!(CohortQuery::from_toml(&filtered).is_ok());
        let banded =
            format!("precision = 0\n{MEAN}[[bins]]\nkind = \"bands\"\ncolumn = \"d\"\nedges = [0, 0.5, 1.25]\n");
        assert!(CohortQuery::from_toml(&banded).is_ok());
    }

    #[test]
    fn group_arithmetic_is_checked() {
        let band = |n: usize| Bin::Bands { column: "d".into(), edges: (0..=n).map(|i| i as f64).collect() };
        let mut query = CohortQuery::from_toml(MEAN).unwrap();
        // Built by hand (not decoded): the count overflows usize.
        query.bins = vec![band(1 << 16), band(1 << 16), band(1 << 16), band(1 << 16), band(1 << 16)];
        assert!(query.group_total().is_err());
        assert!(query.vector_entries().is_err());
        assert!(query.check_shape().is_err());
    }
}
