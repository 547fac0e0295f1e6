//! Split finding over bin sums, as XGBoost defines it (Chen & Guestrin,
//! 2016): a node with gradient sum `G` and hessian sum `H` has the
//! optimal leaf weight `−G/(H+λ)`; splitting it into `L` and `R` gains
//! `½·[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ`. Rows missing the
//! feature go to whichever side gains more (the split's default
//! direction). A child lighter than `min_child_weight` (hessian) or
//! smaller than `min_node_rows` is not allowed.

use crate::LearningError;

/// Sums over a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BinSum {
    /// Σ gradient.
    pub g: f64,
    /// Σ hessian.
    pub h: f64,
    /// Rows.
    pub count: u64,
}

impl BinSum {
    /// `self + other`.
    pub fn plus(&self, other: &Self) -> Self {
        Self { g: self.g + other.g, h: self.h + other.h, count: self.count + other.count }
    }

    /// `self − other` (a sibling from its parent).
    pub fn minus(&self, other: &Self) -> Self {
        Self { g: self.g - other.g, h: self.h - other.h, count: self.count.saturating_sub(other.count) }
    }
}

/// Tree-growing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    /// Shrinkage of every leaf weight (η).
    pub learning_rate: f64,
    /// Deepest level a split may be at (the root is 0).
    pub max_depth: u32,
    /// Least hessian sum of a child.
    pub min_child_weight: f64,
    /// L2 regularisation of leaf weights (λ).
    pub lambda: f64,
    /// Least gain a split must bring (γ).
    pub gamma: f64,
    /// Fewest rows a child may hold.
    pub min_node_rows: u64,
}

impl Default for TreeParams {
    fn default() -> Self {
        Self { learning_rate: 0.3, max_depth: 3, min_child_weight: 1.0, lambda: 1.0, gamma: 0.0, min_node_rows: 20 }
    }
}

impl TreeParams {
    /// Refuses parameters no sensible training uses.
    pub fn check(&self) -> Result<(), LearningError> {
        let bad = |what: &str| Err(LearningError::BadParameter(what.to_owned()));
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate must be in (0, 1]");
        }
        if !(1..=16).contains(&self.max_depth) {
            return bad("max_depth must be 1 to 16");
        }
        if !(self.lambda >= 0.0 && self.gamma >= 0.0 && self.min_child_weight >= 0.0) {
            return bad("lambda, gamma and min_child_weight must be non-negative numbers");
        }
        if self.min_node_rows == 0 {
            return bad("min_node_rows must be at least 1");
        }
        Ok(())
    }

    /// The (shrunk) weight of a leaf holding `sum`.
    pub fn leaf_weight(&self, sum: &BinSum) -> f64 {
        -sum.g / (sum.h + self.lambda) * self.learning_rate
    }

    fn score(&self, s: &BinSum) -> f64 {
        s.g * s.g / (s.h + self.lambda)
    }

    fn allowed(&self, child: &BinSum) -> bool {
        child.h >= self.min_child_weight && child.count >= self.min_node_rows
    }

    /// The better of the two directions for missing rows of a split whose
    /// left child holds `left_present` of the present rows; `None` if
    /// neither direction is allowed or gains anything.
    pub fn evaluate(&self, total: &BinSum, left_present: &BinSum, missing: &BinSum) -> Option<SplitGain> {
        [false, true]
            .into_iter()
            .filter_map(|missing_left| {
                let left = if missing_left { left_present.plus(missing) } else { *left_present };
                let right = total.minus(&left);
                (self.allowed(&left) && self.allowed(&right)).then(|| SplitGain {
                    gain: 0.5 * (self.score(&left) + self.score(&right) - self.score(total)) - self.gamma,
                    missing_left,
                })
            })
            .filter(|s| s.gain > 0.0)
            .max_by(|a, b| a.gain.total_cmp(&b.gain))
    }
}

/// A split's gain and where its missing rows go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitGain {
    /// The gain.
    pub gain: f64,
    /// Whether rows missing the feature go left.
    pub missing_left: bool,
}

/// The sums of the rows at or below each bin but the last: the left
/// children of the splits "≤ threshold k".
pub fn cumulative(bins: &[BinSum]) -> Vec<BinSum> {
    bins.iter()
        .take(bins.len().saturating_sub(1))
        .scan(BinSum::default(), |acc, b| {
            *acc = acc.plus(b);
            Some(*acc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(g: f64, h: f64, count: u64) -> BinSum {
        BinSum { g, h, count }
    }

    #[test]
    fn gain_and_weight_follow_xgboost() {
        let p = TreeParams { min_node_rows: 1, min_child_weight: 0.0, ..TreeParams::default() };
        let total = sum(-2.0, 4.0, 8);
        let left = sum(-4.0, 2.0, 4);
        let got = p.evaluate(&total, &left, &BinSum::default()).unwrap();
        // ½·[16/3 + 4/3 − 4/5]
        assert!((got.gain - 0.5 * (16.0 / 3.0 + 4.0 / 3.0 - 4.0 / 5.0)).abs() < 1e-12);
        assert!((p.leaf_weight(&left) - 0.3 * 4.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn missing_rows_go_where_they_gain_more() {
        let p = TreeParams { min_node_rows: 1, min_child_weight: 0.0, ..TreeParams::default() };
        let left = sum(-4.0, 2.0, 4);
        let right = sum(4.0, 2.0, 4);
        let missing = sum(-3.0, 1.0, 2);
        let total = left.plus(&right).plus(&missing);
        assert!(p.evaluate(&total, &left, &missing).unwrap().missing_left);
        let missing = sum(3.0, 1.0, 2);
        let total = left.plus(&right).plus(&missing);
        assert!(!p.evaluate(&total, &left, &missing).unwrap().missing_left);
    }

    #[test]
    fn constraints_refuse_small_children() {
        let total = sum(-2.0, 4.0, 8);
        let left = sum(-4.0, 0.5, 1);
        let strict = TreeParams { min_node_rows: 2, min_child_weight: 0.0, ..TreeParams::default() };
        assert_eq!(strict.evaluate(&total, &left, &BinSum::default()), None);
        let heavy = TreeParams { min_node_rows: 1, min_child_weight: 1.0, ..TreeParams::default() };
        assert_eq!(heavy.evaluate(&total, &left, &BinSum::default()), None);
        assert!(TreeParams { max_depth: 0, ..TreeParams::default() }.check().is_err());
        assert!(TreeParams { learning_rate: f64::NAN, ..TreeParams::default() }.check().is_err());
        assert!(TreeParams::default().check().is_ok());
    }

    #[test]
    fn cumulative_sums_leave_out_the_last_bin() {
        let bins = [sum(1.0, 1.0, 1), sum(2.0, 1.0, 2), sum(3.0, 1.0, 3)];
        assert_eq!(cumulative(&bins), vec![sum(1.0, 1.0, 1), sum(3.0, 2.0, 3)]);
        assert!(cumulative(&[]).is_empty());
    }
}
