//! Seeded random streams shared by every random choice: SplitMix64 over a hash chain of
//! `(seed, epoch, purpose, index)`, so that streams never collide by arithmetic (seed 1 /
//! epoch 0 is not seed 0 / epoch 1) and one query's, epoch's or step's draws do not depend on
//! any other's.
//!
//! Each user declares its `purpose` values beside the draws they drive (batches/mod.rs, kmeans.rs,
//! mine/walk.rs, dataset.rs); the tests below check that no two are equal.

/// The golden-ratio increment of SplitMix64.
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser: a bijection of u64 with full avalanche.
pub fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 generator over one `(seed, epoch, purpose, index)` stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The stream for `(seed, epoch, purpose, index)`: each part goes through the finaliser
    /// in turn (a hash chain), so no two argument tuples collide by arithmetic.
    pub fn stream(seed: u64, epoch: u64, purpose: u64, index: u64) -> Rng {
        let mut h = fmix(seed ^ 0x6a09_e667_f3bc_c909);
        h = fmix(h.wrapping_add(GOLDEN) ^ fmix(epoch ^ 0xbb67_ae85_84ca_a73b));
        h = fmix(h.wrapping_add(GOLDEN) ^ fmix(purpose ^ 0x3c6e_f372_fe94_f82b));
        h = fmix(h.wrapping_add(GOLDEN) ^ fmix(index ^ 0xa54f_f53a_5f1d_36f1));
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        fmix(self.0)
    }

    /// Uniform in `0..n` (`n >= 1`), exactly: Lemire's multiply-shift with rejection.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as usize
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `k` distinct indices of `0..n` in increasing order, every `k`-subset equally likely
    /// (Floyd's algorithm: `k` draws, `O(n)` time and memory); all of `0..n` when `k >= n`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        if k >= n {
            return (0..n).collect();
        }
        let mut taken = vec![false; n];
        for j in n - k..n {
            let t = self.below(j + 1);
            // `j` is new to the set, so every step adds one index.
            let pick = if taken[t] { j } else { t };
            taken[pick] = true;
        }
        (0..n).filter(|&i| taken[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    #[test]
    fn purposes_are_distinct() {
        let purposes = [
            crate::batches::ROWS,
            crate::batches::PICKS,
            crate::batches::LEFTOVERS,
            crate::batches::CLUSTER_ORDER,
            crate::batches::MARGINS,
            crate::kmeans::KMEANS_STREAM,
            crate::mine::walk::MINE_STREAM,
            crate::dataset::POSITIVE_STREAM,
            crate::dataset::NEGATIVES_STREAM,
        ];
        for (i, a) in purposes.iter().enumerate() {
            assert!(
                !purposes[i + 1..].contains(a),
                "purpose {a:#x} is used twice"
            );
        }
    }

    proptest! {
        #[test]
        fn sample_is_sorted_distinct_in_range_and_deterministic(
            seed: u64, index: u64, n in 0usize..200, k in 0usize..220,
        ) {
            let got = Rng::stream(seed, 0, 0, index).sample(n, k);
            prop_assert_eq!(got.len(), k.min(n));
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "not strictly increasing");
            prop_assert!(got.iter().all(|&i| i < n));
            prop_assert_eq!(got, Rng::stream(seed, 0, 0, index).sample(n, k));
        }

        #[test]
        fn sample_of_at_least_n_is_everything(seed: u64, n in 0usize..100, extra in 0usize..5) {
            let everything: Vec<usize> = (0..n).collect();
            prop_assert_eq!(Rng::stream(seed, 1, 2, 3).sample(n, n + extra), everything);
        }
    }

    /// Pearson's statistic of `counts` against equal expected counts.
    fn chi_squared(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    #[test]
    fn sample_draws_every_subset_equally_often() {
        // 2 of 5: 10 subsets, one draw per stream (as the dataset draws, one stream per item).
        let (n, k, draws) = (5, 2, 50_000u64);
        let mut counts = [0u64; 1 << 5];
        for index in 0..draws {
            let mask: usize = Rng::stream(11, 0, 0, index)
                .sample(n, k)
                .iter()
                .map(|&i| 1 << i)
                .sum();
            counts[mask] += 1;
        }
        let subsets: Vec<u64> = (0..1usize << n)
            .filter(|m| m.count_ones() == 2)
            .map(|m| counts[m])
            .collect();
        assert_eq!(subsets.iter().sum::<u64>(), draws);
        // 9 degrees of freedom: P(chi2 > 27.9) = 0.001.
        let chi2 = chi_squared(&subsets);
        assert!(chi2 < 27.9, "chi2 {chi2}, counts {subsets:?}");
    }
}
