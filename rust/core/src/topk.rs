//! Per-query top-k candidate buffers with a threshold that rejects most scores before they are
//! stored: survivors are appended to a buffer of about `2k`, which is cut back to the best `k`
//! (quickselect) when full, and the k-th best score becomes the new threshold. For small `k`
//! (k-means' assignment step has `k = 1`) the buffer is instead kept ranked and exactly `k`
//! long, so that the threshold tightens with every survivor from the k-th one on: with a
//! `2k + 64` buffer the first `2k + 64` scores of every query would all survive.
//!
//! Order: higher score first, ties broken by smaller id. Scores are canonicalised on entry (NaN
//! becomes -inf, -0.0 becomes +0.0) so that the order is total and agrees with `==` on floats.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::memory;

/// Up to this `k`, candidates are kept ranked by insertion (see the module documentation).
const RANKED_MAX_K: usize = 16;

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

    /// The most candidates a buffer for `k` holds at once.
    pub(crate) fn most_held(k: usize) -> usize {
        if k <= RANKED_MAX_K {
            k + 1
        } else {
            k.saturating_mul(2).saturating_add(64)
        }
    }

    /// Adds a candidate. Returns the new threshold when it changed, i.e. the score that a
    /// later candidate must beat (`!(score <= threshold)`) to matter.
    #[inline]
    pub fn push(&mut self, score: f32, id: u32) -> Option<f32> {
        self.add(Scored {
            score: canonical(score),
            id,
        })
    }

    /// [`Self::push`] of an already canonical candidate.
    #[inline]
    fn add(&mut self, scored: Scored) -> Option<f32> {
        if self.k <= RANKED_MAX_K {
            return self.insert(scored);
        }
        if self.items.capacity() == 0 {
            self.items.reserve_exact(self.capacity());
        }
        self.items.push(scored);
        if self.items.len() >= self.capacity() {
            Some(self.cut())
        } else {
            None
        }
    }

    /// The small-`k` path: `items` stays ranked and at most `k` long.
    #[inline]
    fn insert(&mut self, scored: Scored) -> Option<f32> {
        let k = self.k;
        let at = self
            .items
            .partition_point(|x| rank(x, &scored) == Ordering::Less);
        if at >= k {
            return None;
        }
        if self.items.capacity() == 0 {
            self.items.reserve_exact(k + 1);
        }
        self.items.insert(at, scored);
        self.items.truncate(k);
        (self.items.len() == k).then(|| self.items[k - 1].score)
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
            self.add(s);
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

/// One input of [`merge`]: `width` ranked or unranked candidates per row, row-major, with
/// global ids; an id below zero pads a row that had fewer.
#[derive(Clone, Copy, Debug)]
pub struct Part<'a> {
    pub scores: &'a [f32],
    pub ids: &'a [i64],
    pub width: usize,
}

/// The best `k` of every row over all `parts` (each from a disjoint set of rows of one
/// corpus, e.g. the top-k of each corpus shard), ranked as the search ranks: score
/// descending, ties by smaller id. A row with fewer than `k` real candidates is padded with
/// id `-1` and score `-inf`. Refused: a part of the wrong size, a NaN score, an id beyond
/// `u32`, and an id given twice for one row (parts must not overlap).
pub fn merge(
    pool: &rayon::ThreadPool,
    parts: &[Part<'_>],
    rows: usize,
    k: usize,
) -> Result<(Vec<f32>, Vec<i64>)> {
    if k == 0 {
        return Err(Error::invalid("k must be at least 1"));
    }
    for (p, part) in parts.iter().enumerate() {
        let size = rows.checked_mul(part.width);
        if size != Some(part.scores.len()) || size != Some(part.ids.len()) {
            return Err(Error::invalid(format!(
                "part {p} holds {} scores and {} ids, not {rows} rows of {}",
                part.scores.len(),
                part.ids.len(),
                part.width
            )));
        }
    }
    // Each thread holds one row's candidates: at most all of the row's parts.
    let widths = parts.iter().map(|p| p.width as u64).sum::<u64>();
    let held = widths.saturating_mul(16 * pool.current_num_threads() as u64);
    let (mut scores, mut ids) = memory::topk_result(rows, k, held, || {
        format!("a merged result of {rows} rows x k = {k}")
    })?;
    pool.install(|| {
        scores
            .par_chunks_mut(k)
            .zip(ids.par_chunks_mut(k))
            .enumerate()
            .try_for_each(|(row, (row_scores, row_ids))| {
                let mut best = Candidates::new(k);
                let mut seen = Vec::new();
                for (p, part) in parts.iter().enumerate() {
                    let span = row * part.width..(row + 1) * part.width;
                    for (&score, &id) in part.scores[span.clone()].iter().zip(&part.ids[span]) {
                        if id < 0 {
                            continue;
                        }
                        let id = u32::try_from(id).map_err(|_| {
                            Error::invalid(format!(
                                "part {p} row {row}: id {id} is beyond the largest corpus \
                                 id ({})",
                                u32::MAX
                            ))
                        })?;
                        if score.is_nan() {
                            return Err(Error::invalid(format!(
                                "part {p} row {row}: id {id} has a NaN score"
                            )));
                        }
                        seen.push(id);
                        best.push(score, id);
                    }
                }
                seen.sort_unstable();
                if let Some(twice) = seen.windows(2).find(|w| w[0] == w[1]) {
                    return Err(Error::invalid(format!(
                        "row {row}: id {} is in more than one part (the parts must hold \
                         disjoint corpus rows)",
                        twice[0]
                    )));
                }
                for (slot, s) in best.into_sorted().into_iter().enumerate() {
                    row_scores[slot] = s.score;
                    row_ids[slot] = i64::from(s.id);
                }
                Ok(())
            })
    })?;
    Ok((scores, ids))
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
        let mut c = Candidates::new(RANKED_MAX_K + 1);
        let mut threshold = None;
        for id in 0..c.capacity() as u32 {
            threshold = c.push(id as f32, id).or(threshold);
        }
        let n = c.capacity() as f32;
        assert_eq!(threshold, Some(n - (RANKED_MAX_K + 1) as f32));
    }

    #[test]
    fn ranked_path_tightens_the_threshold_with_every_survivor() {
        let mut c = Candidates::new(2);
        assert_eq!(c.push(1.0, 0), None);
        assert_eq!(c.push(3.0, 1), Some(1.0));
        assert_eq!(c.push(2.0, 2), Some(2.0));
        // Ties rank by smaller id; a later equal score with a larger id changes nothing.
        assert_eq!(c.push(2.0, 3), None);
        assert_eq!(c.push(2.0, 0), Some(2.0));
        let best: Vec<u32> = c.into_sorted().iter().map(|s| s.id).collect();
        assert_eq!(best, vec![1, 0]);
    }

    #[test]
    fn both_paths_agree_with_a_full_sort() {
        let mut rng = crate::rng::Rng::stream(3, 0, 0, 0);
        for k in [1, 2, RANKED_MAX_K, RANKED_MAX_K + 1, 40] {
            let scores: Vec<f32> = (0..500).map(|_| rng.below(50) as f32).collect();
            let mut all: Vec<Scored> = scores
                .iter()
                .enumerate()
                .map(|(id, &score)| Scored {
                    score,
                    id: id as u32,
                })
                .collect();
            all.sort_by(rank);
            all.truncate(k);
            // Two shards merged, as the sharded search does.
            let (mut a, mut b) = (Candidates::new(k), Candidates::new(k));
            for (id, &score) in scores.iter().enumerate() {
                if id % 3 == 0 {
                    a.push(score, id as u32);
                } else {
                    b.push(score, id as u32);
                }
            }
            a.absorb(b);
            assert_eq!(a.into_sorted(), all, "k = {k}");
        }
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

    #[test]
    fn merge_ranks_parts_skips_padding_and_refuses_overlap() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = Part {
            scores: &[1.0, 3.0, 0.0, 0.0],
            ids: &[7, 4, 5, -1],
            width: 2,
        };
        let b = Part {
            scores: &[3.0, 9.0],
            ids: &[2, -1],
            width: 1,
        };
        let (scores, ids) = merge(&pool, &[a, b], 2, 3).unwrap();
        assert_eq!(ids, vec![2, 4, 7, 5, -1, -1]);
        assert_eq!(scores[..4], [3.0, 3.0, 1.0, 0.0]);
        assert_eq!(scores[4..], [f32::NEG_INFINITY; 2]);
        let err = merge(&pool, &[a, a], 2, 1).unwrap_err();
        assert!(err.to_string().contains("more than one part"), "{err}");
    }
}
