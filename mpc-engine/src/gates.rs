//! Small-cell protection enforced by the sites: the *gates* of a query and
//! the pass set that decides what a site may share.
//!
//! A **gate** is a row count that must reach the grants' minimum cohort
//! before anything that depends on it leaves a site:
//!
//! | gate | its count | what it guards |
//! |---|---|---|
//! | group | the group's rows in the cohort | the group's whole block, its extremes |
//! | measure | the measure's n (rows where its columns are present) | the measure's entries, its extreme |
//! | bin | one histogram bin (below, each bin, above) | that bin |
//!
//! (`count` measures have no entries of their own: the group gate guards
//! them.) A gate *passes* when its pooled count is 0 or at least the
//! minimum cohort; a group, measure or bin that does not pass is never
//! shared: every site zeroes its entries (and its extremes) in what it
//! commits to and shares, so the requester's pooled vector, its evidence
//! file and its logs hold nothing of it. Whether a gate passes is decided
//! on encrypted counts in a first phase (the *census*, see
//! [`crate::fhe::Evaluator::census`] and `node::stats`); the requester
//! learns which gates pass — that is the residual leakage, documented
//! there — and nothing else about a gate that does not.
//!
//! The pass set is applied by [`PassSet::apply`]; it is the same at every
//! site of a task (sites compare [`PassSet::to_bytes`] when they exchange
//! shares), so a requester cannot make one site share a cell that another
//! site withholds.

use crate::MpcError;
use crate::local::{group_count, group_len, measure_len};
use crate::query::{CohortQuery, Measure};

/// Most gates a census takes (two encrypted values each, within
/// [`crate::fhe`]'s list bound): a query with more cannot run under a
/// minimum cohort.
pub const MAX_GATES: usize = 512;

/// What a gate guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guard {
    /// The group's whole block.
    Group,
    /// The measure at this index of the query (not a histogram).
    Measure(usize),
    /// One bin of the histogram at this measure index.
    Bin {
        /// The histogram's index among the query's measures.
        measure: usize,
        /// The bin's index: 0 is "below the first edge".
        bin: usize,
    },
}

/// One gate of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gate {
    /// The group it belongs to.
    pub group: usize,
    /// What it guards.
    pub guard: Guard,
    /// The vector entry that holds its count.
    pub entry: usize,
}

/// The query's gates, group by group in vector order.
pub fn gates(query: &CohortQuery) -> Vec<Gate> {
    let block = group_len(query);
    let mut out = Vec::new();
    for group in 0..group_count(query) {
        let base = group * block;
        out.push(Gate { group, guard: Guard::Group, entry: base });
        let mut at = base + 1;
        for (index, m) in query.measures.iter().enumerate() {
            match m {
                Measure::Count => {}
                Measure::Histogram { edges, .. } => {
                    for bin in 0..=edges.len() {
                        out.push(Gate { group, guard: Guard::Bin { measure: index, bin }, entry: at + bin });
                    }
                }
                // Every other measure's block starts with its n.
                _ => out.push(Gate { group, guard: Guard::Measure(index), entry: at }),
            }
            at += measure_len(m);
        }
    }
    out
}

/// Per gate, the histogram it is a bin of (the same number for every bin
/// of one histogram in one group), `None` for other gates. The bins of a
/// histogram add up to its n, so withholding a single small bin would not
/// hide it from anyone who subtracts the released ones from a released
/// total: the census withholds a whole histogram when the bins it would
/// withhold add up to between 1 and m − 1 rows.
pub fn families(query: &CohortQuery) -> Vec<Option<usize>> {
    // The bins of one histogram in one group are consecutive gates.
    let mut first: Option<(usize, usize, usize)> = None;
    gates(query)
        .iter()
        .enumerate()
        .map(|(at, g)| match g.guard {
            Guard::Bin { measure, .. } => match first {
                Some((group, m, start)) if group == g.group && m == measure => Some(start),
                _ => {
                    first = Some((g.group, measure, at));
                    Some(at)
                }
            },
            _ => None,
        })
        .collect()
}

/// A site's count at every gate, read from its local vector.
pub fn gate_counts(query: &CohortQuery, additive: &[i128]) -> Result<Vec<u64>, MpcError> {
    gates(query)
        .iter()
        .map(|g| {
            let v = *additive.get(g.entry).ok_or(MpcError::Shape { expected: g.entry + 1, got: additive.len() })?;
            u64::try_from(v).map_err(|_| MpcError::Query("a gate's count is negative".into()))
        })
        .collect()
}

/// Which gates of a query pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassSet {
    passing: Vec<bool>,
}

impl PassSet {
    /// Every gate passes (no minimum cohort).
    pub fn all(query: &CohortQuery) -> Self {
        Self { passing: vec![true; gates(query).len()] }
    }

    /// From one flag per gate, in [`gates`] order.
    pub fn from_flags(query: &CohortQuery, passing: Vec<bool>) -> Result<Self, MpcError> {
        let expected = gates(query).len();
        if passing.len() != expected {
            return Err(MpcError::Shape { expected, got: passing.len() });
        }
        Ok(Self { passing })
    }

    /// One flag per gate.
    pub fn flags(&self) -> &[bool] {
        &self.passing
    }

    /// Whether every gate passes.
    pub fn all_pass(&self) -> bool {
        self.passing.iter().all(|p| *p)
    }

    /// The gates that do not pass.
    pub fn withheld(&self, query: &CohortQuery) -> Vec<Gate> {
        gates(query).into_iter().zip(&self.passing).filter(|(_, p)| !**p).map(|(g, _)| g).collect()
    }

    /// Canonical bytes (one byte per gate, 1 = passes): what sites compare.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.passing.iter().map(|p| u8::from(*p)).collect()
    }

    /// Zeroes every entry a failing gate guards, and sets the extremes it
    /// guards to `None` (the layout of [`crate::local::LocalStats`]).
    pub fn apply(
        &self,
        query: &CohortQuery,
        additive: &mut [i128],
        extrema: &mut [Option<i64>],
    ) -> Result<(), MpcError> {
        let block = group_len(query);
        let groups = group_count(query);
        if additive.len() != block * groups {
            return Err(MpcError::Shape { expected: block * groups, got: additive.len() });
        }
        let per_group_extremes =
            query.measures.iter().filter(|m| matches!(m, Measure::Min { .. } | Measure::Max { .. })).count();
        if extrema.len() != per_group_extremes * groups {
            return Err(MpcError::Shape { expected: per_group_extremes * groups, got: extrema.len() });
        }
        // Where each measure's entries start in a block, and its extreme's
        // index among the group's extremes.
        let mut starts = Vec::with_capacity(query.measures.len());
        let (mut at, mut extreme) = (1, 0);
        for m in &query.measures {
            let is_extreme = matches!(m, Measure::Min { .. } | Measure::Max { .. });
            starts.push((at, is_extreme.then_some(extreme)));
            at += measure_len(m);
            extreme += usize::from(is_extreme);
        }
        for gate in self.withheld(query) {
            let base = gate.group * block;
            let extremes = &mut extrema[gate.group * per_group_extremes..(gate.group + 1) * per_group_extremes];
            match gate.guard {
                Guard::Group => {
                    additive[base..base + block].fill(0);
                    extremes.fill(None);
                }
                Guard::Measure(index) => {
                    let (start, e) = starts[index];
                    additive[base + start..base + start + measure_len(&query.measures[index])].fill(0);
                    if let Some(e) = e {
                        extremes[e] = None;
                    }
                }
                Guard::Bin { .. } => additive[gate.entry] = 0,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = r#"
precision = 1
ranges = { age = [0, 120], bp = [40, 260] }
group_by = { column = "sex", values = ["F", "M"] }
[[measures]]
kind = "count"
[[measures]]
kind = "mean"
column = "bp"
[[measures]]
kind = "histogram"
column = "age"
edges = [18, 65]
[[measures]]
kind = "max"
column = "bp"
"#;

    fn query() -> CohortQuery {
        CohortQuery::from_toml(QUERY).unwrap()
    }

    #[test]
    fn gates_follow_the_vector_layout() {
        let q = query();
        let g = gates(&q);
        // Per group: the group, mean's n, 3 bins, max's n.
        assert_eq!(g.len(), 2 * 6);
        assert_eq!(group_len(&q), 1 + 2 + 3 + 1);
        assert_eq!(g[0], Gate { group: 0, guard: Guard::Group, entry: 0 });
        assert_eq!(g[1], Gate { group: 0, guard: Guard::Measure(1), entry: 1 });
        assert_eq!(g[2], Gate { group: 0, guard: Guard::Bin { measure: 2, bin: 0 }, entry: 3 });
        assert_eq!(g[5], Gate { group: 0, guard: Guard::Measure(3), entry: 6 });
        assert_eq!(g[6], Gate { group: 1, guard: Guard::Group, entry: 7 });
        let v: Vec<i128> = (0..14).collect();
        assert_eq!(gate_counts(&q, &v).unwrap(), vec![0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13]);
        assert!(gate_counts(&q, &v[..5]).is_err());
        let f = families(&q);
        assert_eq!(&f[..6], &[None, None, Some(2), Some(2), Some(2), None]);
        assert_eq!(&f[6..], &[None, None, Some(8), Some(8), Some(8), None]);
        assert!(gate_counts(&q, &[-1; 14]).is_err());
    }

    #[test]
    fn failing_gates_zero_what_they_guard_and_nothing_else() {
        let q = query();
        let mut flags = vec![true; 12];
        flags[1] = false; // group 0: the mean
        flags[3] = false; // group 0: bin 1 of the histogram
        flags[6] = false; // group 1: the whole group
        let pass = PassSet::from_flags(&q, flags).unwrap();
        let mut v: Vec<i128> = (1..=14).collect();
        let mut extremes = vec![Some(5), Some(9)];
        pass.apply(&q, &mut v, &mut extremes).unwrap();
        assert_eq!(v, vec![1, 0, 0, 4, 0, 6, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(extremes, vec![Some(5), None]);

        // The max's own gate withholds its n and its extreme.
        let mut flags = vec![true; 12];
        flags[5] = false;
        let mut v: Vec<i128> = (1..=14).collect();
        let mut extremes = vec![Some(5), Some(9)];
        PassSet::from_flags(&q, flags).unwrap().apply(&q, &mut v, &mut extremes).unwrap();
        assert_eq!(v[6], 0);
        assert_eq!(extremes, vec![None, Some(9)]);
        assert_eq!(PassSet::all(&q).to_bytes(), vec![1; 12]);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let q = query();
        assert!(PassSet::from_flags(&q, vec![true; 11]).is_err());
        let pass = PassSet::all(&q);
        assert!(pass.apply(&q, &mut [0; 13], &mut [None, None]).is_err());
        assert!(pass.apply(&q, &mut [0; 14], &mut [None]).is_err());
    }
}
