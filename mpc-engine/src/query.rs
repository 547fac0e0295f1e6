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
        toml::from_str(text)
            .map_err(|e| MpcError::Query(format!("the query is not valid TOML for a cohort query: {e}")))
    }

    /// Parses a query written in JSON.
    pub fn from_json(text: &str) -> Result<Self, MpcError> {
        serde_json::from_str(text)
            .map_err(|e| MpcError::Query(format!("the query is not valid JSON for a cohort query: {e}")))
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
                p.test()?;
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

    /// Checks the query's shape, that every column it reads is in `schema`,
    /// and — when `allowed` is not empty — that the grant allows it. Run
    /// before anything is computed.
    pub fn validate(&self, schema: &[&str], allowed: &[String]) -> Result<(), MpcError> {
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
            let distinct: BTreeSet<&String> = g.values.iter().collect();
            if g.values.is_empty() || g.values.len() > MAX_GROUPS || distinct.len() != g.values.len() {
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
            groups = groups.saturating_mul(bin.keys()?);
            columns.extend(bin.columns());
        }
        if groups > MAX_TOTAL_GROUPS {
            return Err(MpcError::Query(format!(
                "the query has {groups} groups (all keys combined); at most {MAX_TOTAL_GROUPS} — narrow the region or coarsen a bin"
            )));
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
        for m in &self.measures {
            for c in m.columns() {
                match self.ranges.get(c) {
                    Some([lo, hi]) if lo.is_finite() && hi.is_finite() && lo <= hi => {}
                    Some(_) => {
                        return Err(MpcError::Query(format!("the range of '{c}' must be finite with low <= high")));
                    }
                    None => {
                        return Err(MpcError::Query(format!(
                            "declare the range of '{c}' (ranges = {{ {c} = [low, high] }}): contributions are proven within it"
                        )));
                    }
                }
            }
        }
        let entries = groups.saturating_mul(crate::local::group_len(self));
        if entries > MAX_VECTOR {
            return Err(MpcError::Query(format!(
                "the query needs {entries} entries (groups × measures); at most {MAX_VECTOR} — fewer groups or measures"
            )));
        }
        for column in columns {
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
