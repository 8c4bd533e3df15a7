//! The seeded draws of the training dataset (`negmine.torch.HardNegativeDataset`): which
//! labelled positive, and which of its mined negatives, example `index` gets in `epoch`. Each
//! draw has its own stream `(seed, epoch, purpose, index)`, so an example's draws depend on
//! neither the other examples nor the order in which they are read.

use crate::rng::Rng;

/// The purpose of the stream that picks an example's positive (see [`Rng::stream`]).
pub const POSITIVE_STREAM: u64 = 0x706f_7369_7469_7665; // "positive"
/// The purpose of the stream that picks an example's subset of negatives.
pub const NEGATIVES_STREAM: u64 = 0x6e65_6761_7469_7665; // "negative"

/// Which of its `positives` labelled positives example `index` gets in `epoch`, each equally
/// likely; `None` when it has none.
pub fn positive(seed: u64, epoch: u64, index: u64, positives: usize) -> Option<usize> {
    (positives > 0).then(|| Rng::stream(seed, epoch, POSITIVE_STREAM, index).below(positives))
}

/// Which `k` of its `present` mined negatives example `index` keeps in `epoch`: positions in
/// `0..present`, increasing, every `k`-subset equally likely; all of them when `present <= k`.
pub fn negatives(seed: u64, epoch: u64, index: u64, present: usize, k: usize) -> Vec<usize> {
    Rng::stream(seed, epoch, NEGATIVES_STREAM, index).sample(present, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    proptest! {
        #[test]
        fn positive_is_one_of_them_and_deterministic(
            seed: u64, epoch: u64, index: u64, positives in 0usize..50,
        ) {
            let got = positive(seed, epoch, index, positives);
            prop_assert_eq!(got.is_none(), positives == 0);
            prop_assert!(got.is_none_or(|p| p < positives));
            prop_assert_eq!(got, positive(seed, epoch, index, positives));
        }

        #[test]
        fn negatives_are_a_sorted_subset_and_deterministic(
            seed: u64, epoch: u64, index: u64, present in 0usize..64, k in 1usize..64,
        ) {
            let got = negatives(seed, epoch, index, present, k);
            prop_assert_eq!(got.len(), k.min(present));
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(got.iter().all(|&i| i < present));
            prop_assert_eq!(got, negatives(seed, epoch, index, present, k));
        }
    }

    #[test]
    fn draws_change_with_seed_epoch_and_index() {
        let epoch = |seed, epoch| -> Vec<(Option<usize>, Vec<usize>)> {
            (0..32)
                .map(|i| {
                    (
                        positive(seed, epoch, i, 5),
                        negatives(seed, epoch, i, 20, 6),
                    )
                })
                .collect()
        };
        let base = epoch(1, 0);
        assert_ne!(base, epoch(1, 1));
        assert_ne!(base, epoch(2, 0));
        assert!(base.iter().any(|draw| *draw != base[0]));
    }

    #[test]
    fn positive_is_uniform() {
        let draws = 60_000u64;
        let mut counts = [0u64; 6];
        for index in 0..draws {
            counts[positive(3, 1, index, 6).unwrap()] += 1;
        }
        let expected = draws as f64 / 6.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 5 degrees of freedom: P(chi2 > 20.5) = 0.001.
        assert!(chi2 < 20.5, "chi2 {chi2}, counts {counts:?}");
    }
}
