//! How good a model is: the measures both parties' tools report.

/// The area under the ROC curve of `scores` for `labels` (0 or 1), ties
/// counted half, by the rank-sum (Mann–Whitney) formula: O(n log n).
/// `NaN` when either class is absent.
pub fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for k in i..=j {
            ranks[order[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|y| **y == 1).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let rank_sum: f64 = ranks.iter().zip(labels).filter(|(_, y)| **y == 1).map(|(r, _)| r).sum();
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]), 1.0);
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[0, 1]), 0.5);
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), 0.75);
        assert!(auc(&[0.1, 0.2], &[1, 1]).is_nan());
    }
}
