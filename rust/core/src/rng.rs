//! Seeded random streams shared by every random choice: SplitMix64 over a hash chain of
//! `(seed, epoch, purpose, index)`, so that streams never collide by arithmetic (seed 1 /
//! epoch 0 is not seed 0 / epoch 1) and one query's, epoch's or step's draws do not depend on
//! any other's.

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
}
