//! Topic batches (TAS): batches of whole cluster chunks, at most `clusters_per_batch`
//! clusters each, then the leftovers.

use super::clusters::{cluster_sizes, group, shuffle_within};
use super::{batches_of, check_batch_size, BatchPlan, LEFTOVERS, PICKS};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// How a topic plan picks the cluster of its next chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Uniformly among the clusters that still have a whole chunk (TAS): small clusters are
    /// used up early in the epoch, large ones last.
    Uniform,
    /// Proportionally to the number of whole chunks a cluster still has: a uniformly random
    /// interleaving of all chunks, every cluster spread over the whole epoch.
    Size,
}

impl Choice for Weighting {
    const ARGUMENT: &'static str = "weighting";
    const NAMES: &'static [(&'static str, Self)] =
        &[("uniform", Weighting::Uniform), ("size", Weighting::Size)];
}

/// The shape of a topic plan, computed from the cluster sizes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    /// Rows of each cluster chunk: `batch_size / clusters_per_batch`.
    pub chunk: usize,
    /// Leading batches made of `clusters_per_batch` whole chunks.
    pub topical: usize,
    /// Leftover batches that follow them.
    pub leftover: usize,
    /// Rows of the plan (all rows, or all but the final short batch with `drop_last`).
    pub rows: usize,
}

impl TopicLayout {
    pub fn batches(&self) -> usize {
        self.topical + self.leftover
    }
}

fn topic_layout(
    sizes: &[usize],
    batch_size: usize,
    clusters_per_batch: usize,
    drop_last: bool,
) -> Result<TopicLayout> {
    check_batch_size(batch_size)?;
    if clusters_per_batch == 0 {
        return Err(Error::invalid("clusters_per_batch must be positive, got 0"));
    }
    if !batch_size.is_multiple_of(clusters_per_batch) {
        return Err(Error::invalid(format!(
            "batch_size ({batch_size}) must be a multiple of clusters_per_batch \
             ({clusters_per_batch}): every cluster of a batch gives it the same number of rows"
        )));
    }
    let chunk = batch_size / clusters_per_batch;
    let n: usize = sizes.iter().sum();
    let chunks: usize = sizes.iter().map(|s| s / chunk).sum();
    let topical = chunks / clusters_per_batch;
    let left = n - topical * batch_size;
    let leftover = batches_of(left, batch_size, drop_last);
    let rows = if drop_last {
        topical * batch_size + leftover * batch_size
    } else {
        n
    };
    Ok(TopicLayout {
        chunk,
        topical,
        leftover,
        rows,
    })
}

/// The layout (and so the exact number of batches) of [`topic`] for these arguments.
pub fn topic_count(
    clusters: &[i64],
    batch_size: usize,
    clusters_per_batch: usize,
    drop_last: bool,
) -> Result<TopicLayout> {
    topic_layout(
        &cluster_sizes(clusters)?,
        batch_size,
        clusters_per_batch,
        drop_last,
    )
}

/// TAS topic batches: row `i` belongs to cluster `clusters[i]`.
///
/// 1. The rows of every cluster are shuffled and cut into chunks of
///    `m = batch_size / clusters_per_batch` rows; a cluster of `s` rows has `s / m` whole
///    chunks and a tail of `s % m` rows.
/// 2. Chunks are picked one at a time (by `weighting`, among clusters with whole chunks left);
///    every `clusters_per_batch` consecutive picks make one topical batch of exactly
///    `batch_size` rows from at most `clusters_per_batch` clusters. With `F` whole chunks,
///    there are `T = F / clusters_per_batch` such batches.
/// 3. Leftovers: every cluster's unpicked chunks (at most `clusters_per_batch - 1` in all)
///    and tail go, cluster by cluster in a random cluster order (so that they stay as
///    topical as they can), into one sequence of `L = n - T * batch_size` rows, cut into
///    batches of `batch_size` that follow the topical ones. The last of them has `L %
///    batch_size` rows when that is not zero; `drop_last` leaves it (and only it) out.
///
/// So the plan has `T + ceil(L / batch_size)` batches (`T + L / batch_size` with
/// `drop_last`), every row appears exactly once except the dropped ones, and every batch has
/// `batch_size` rows except possibly the last one.
pub fn topic(
    clusters: &[i64],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    clusters_per_batch: usize,
    weighting: Weighting,
    drop_last: bool,
) -> Result<BatchPlan> {
    let mut groups = group(clusters)?;
    let sizes: Vec<usize> = (0..groups.len()).map(|k| groups.size(k)).collect();
    let layout = topic_layout(&sizes, batch_size, clusters_per_batch, drop_last)?;
    shuffle_within(&mut groups, seed, epoch);
    let m = layout.chunk;
    let picks_needed = layout.topical * clusters_per_batch;

    let mut picks: Vec<u32> = Vec::with_capacity(picks_needed);
    let mut rng = Rng::stream(seed, epoch, PICKS, 0);
    match weighting {
        Weighting::Size => {
            // A partial Fisher-Yates over all chunks: each pick is proportional to the
            // chunks a cluster has left.
            let mut all: Vec<u32> = Vec::new();
            for (k, &s) in sizes.iter().enumerate() {
                all.extend(std::iter::repeat_n(k as u32, s / m));
            }
            for i in 0..picks_needed {
                let j = i + rng.below(all.len() - i);
                all.swap(i, j);
            }
            all.truncate(picks_needed);
            picks = all;
        }
        Weighting::Uniform => {
            let mut left: Vec<usize> = sizes.iter().map(|s| s / m).collect();
            let mut active: Vec<u32> = (0..sizes.len() as u32)
                .filter(|&k| left[k as usize] > 0)
                .collect();
            for _ in 0..picks_needed {
                let i = rng.below(active.len());
                let k = active[i];
                picks.push(k);
                left[k as usize] -= 1;
                if left[k as usize] == 0 {
                    active.swap_remove(i);
                }
            }
        }
    }

    let mut rows = Vec::with_capacity(layout.rows);
    let mut used = vec![0usize; groups.len()];
    for &k in &picks {
        let k = k as usize;
        let start = groups.starts[k] + used[k] * m;
        rows.extend_from_slice(&groups.rows[start..start + m]);
        used[k] += 1;
    }
    for k in groups.shuffled_order(seed, epoch, LEFTOVERS) {
        let k = k as usize;
        let start = groups.starts[k] + used[k] * m;
        rows.extend_from_slice(&groups.rows[start..groups.starts[k + 1]]);
    }
    rows.truncate(layout.rows);
    Ok(BatchPlan::cut(rows, batch_size, layout.topical))
}
