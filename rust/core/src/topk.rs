//! Per-query top-k candidate buffers with a threshold that rejects most scores before they are
//! stored: survivors are appended to a buffer of about `2k`, which is cut back to the best `k`
//! (quickselect) when full, and the k-th best score becomes the new threshold.
//!
//! Order: higher score first, ties broken by smaller id. Scores are canonicalised on entry (NaN
//! becomes -inf, -0.0 becomes +0.0) so that the order is total and agrees with `==` on floats.

use std::cmp::Ordering;

/// A scored corpus row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub id: u32,
}

/// `Less` when `a` ranks before `b`.
#[inline]
pub fn rank(a: &Scored, b: &Scored) -> Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

#[inline]
fn canonical(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score + 0.0
    }
}

/// The candidates of one query.
#[derive(Debug, Clone)]
pub struct Candidates {
    k: usize,
    items: Vec<Scored>,
}

impl Candidates {
    pub fn new(k: usize) -> Self {
        assert!(k > 0);
        Candidates {
            k,
            items: Vec::new(),
        }
    }

    fn capacity(&self) -> usize {
        2 * self.k + 64
    }

    /// Adds a candidate. Returns the new threshold when the buffer was cut back, i.e. the score
    /// that a later candidate must beat (`!(score <= threshold)`) to matter.
    #[inline]
    pub fn push(&mut self, score: f32, id: u32) -> Option<f32> {
        if self.items.capacity() == 0 {
            self.items.reserve_exact(self.capacity());
        }
        self.items.push(Scored {
            score: canonical(score),
            id,
        });
        if self.items.len() >= self.capacity() {
            Some(self.cut())
        } else {
            None
        }
    }

    fn cut(&mut self) -> f32 {
        let k = self.k;
        self.items.select_nth_unstable_by(k - 1, rank);
        self.items.truncate(k);
        self.items[k - 1].score
    }

    /// Merges another query's buffer for the same query (a different corpus shard).
    pub fn absorb(&mut self, other: Candidates) {
        for s in other.items {
            self.items.push(s);
            if self.items.len() >= self.capacity() {
                self.cut();
            }
        }
    }

    /// The best `k` (or fewer, if fewer were seen), ranked.
    pub fn into_sorted(mut self) -> Vec<Scored> {
        if self.items.len() > self.k {
            self.cut();
        }
        self.items.sort_unstable_by(rank);
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_ties_by_id() {
        let mut c = Candidates::new(3);
        let scores = [1.0, 5.0, 5.0, 3.0, 5.0, 2.0];
        for (id, &s) in scores.iter().enumerate() {
            c.push(s, id as u32);
        }
        let best: Vec<u32> = c.into_sorted().iter().map(|s| s.id).collect();
        assert_eq!(best, vec![1, 2, 4]);
    }

    #[test]
    fn threshold_after_cut_is_kth_best() {
        let mut c = Candidates::new(2);
        let mut threshold = None;
        for id in 0..c.capacity() as u32 {
            threshold = c.push(id as f32, id).or(threshold);
        }
        let n = c.capacity() as f32;
        assert_eq!(threshold, Some(n - 2.0));
    }

    #[test]
    fn nan_ranks_last_and_negative_zero_ties_zero() {
        let mut c = Candidates::new(3);
        c.push(f32::NAN, 0);
        c.push(-0.0, 1);
        c.push(0.0, 2);
        let best = c.into_sorted();
        assert_eq!(best[0], Scored { score: 0.0, id: 1 });
        assert_eq!(best[1], Scored { score: 0.0, id: 2 });
        assert_eq!(best[2].score, f32::NEG_INFINITY);
    }
}
