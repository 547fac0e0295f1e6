//! Quantile binning of one party's feature columns.
//!
//! Each party bins its own features and keeps the thresholds: a split is
//! "value ≤ threshold k", and only the owner of the feature knows the
//! value of threshold k. Missing values (NaN) fall in no bin; where they
//! go is learned per split, as XGBoost does.

use crate::LearningError;

/// Most bins a feature may have.
pub const MAX_BINS: usize = 256;

/// The thresholds of one feature: bin `k` holds values in
/// `(thresholds[k−1], thresholds[k]]`, the last bin everything above.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    thresholds: Vec<f64>,
}

impl Bins {
    /// At most `max_bins` bins at the column's quantiles (fewer where
    /// values repeat). NaN is missing; infinities are refused.
    pub fn fit(values: &[f64], max_bins: usize) -> Result<Self, LearningError> {
        if !(2..=MAX_BINS).contains(&max_bins) {
            return Err(LearningError::BadParameter(format!("max_bins must be 2 to {MAX_BINS}, got {max_bins}")));
        }
        if values.iter().any(|v| v.is_infinite()) {
            return Err(LearningError::BadParameter("a feature holds an infinite value".into()));
        }
        let mut present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        present.sort_by(f64::total_cmp);
        let mut thresholds = Vec::with_capacity(max_bins);
        for k in 1..max_bins {
            let Some(&cut) = present.get((k * present.len()).div_ceil(max_bins).saturating_sub(1)) else {
                break;
            };
            if thresholds.last().is_none_or(|last| cut > *last) {
                thresholds.push(cut);
            }
        }
        // A threshold at the maximum would leave the last bin empty.
        if let (Some(last), Some(max)) = (thresholds.last(), present.last())
            && last >= max
        {
            thresholds.pop();
        }
        Ok(Self { thresholds })
    }

    /// Bins, counting the one above the last threshold.
    pub fn len(&self) -> usize {
        self.thresholds.len() + 1
    }

    /// Whether the feature is constant (one bin: nothing to split on).
    pub fn is_empty(&self) -> bool {
        self.thresholds.is_empty()
    }

    /// The bin of `value`, or `None` if it is missing.
    pub fn bin(&self, value: f64) -> Option<usize> {
        (!value.is_nan()).then(|| self.thresholds.partition_point(|t| *t < value))
    }

    /// The threshold ending bin `k` (a split "≤ threshold").
    pub fn threshold(&self, k: usize) -> Option<f64> {
        self.thresholds.get(k).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_bins_split_a_column_evenly() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let bins = Bins::fit(&values, 4).unwrap();
        assert_eq!(bins.thresholds, vec![25.0, 50.0, 75.0]);
        assert_eq!(bins.len(), 4);
        assert_eq!(bins.bin(25.0), Some(0));
        assert_eq!(bins.bin(25.5), Some(1));
        assert_eq!(bins.bin(1000.0), Some(3));
        assert_eq!(bins.bin(f64::NAN), None);
        assert_eq!(bins.threshold(1), Some(50.0));
    }

    #[test]
    fn repeated_and_missing_values() {
        let bins = Bins::fit(&[1.0, 1.0, 1.0, 1.0, 2.0, f64::NAN], 4).unwrap();
        assert_eq!(bins.thresholds, vec![1.0]);
        assert!(Bins::fit(&[3.0; 10], 8).unwrap().is_empty());
        assert!(Bins::fit(&[f64::NAN; 3], 8).unwrap().is_empty());
        assert!(Bins::fit(&[1.0, f64::INFINITY], 8).is_err());
        assert!(Bins::fit(&[1.0], 1).is_err());
    }
}
