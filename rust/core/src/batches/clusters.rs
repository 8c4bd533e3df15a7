//! Rows grouped by cluster, and the numbering of distinct values by increasing value that
//! gives clusters (and [`separate`](super::separate)'s conflict keys) their dense indices.

use super::ROWS;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Rows grouped by cluster: cluster `k` (the k-th distinct id in increasing order) holds
/// `rows[starts[k]..starts[k + 1]]`, in increasing row order.
pub(super) struct Groups {
    pub(super) rows: Vec<i64>,
    pub(super) starts: Vec<usize>,
}

impl Groups {
    pub(super) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub(super) fn size(&self, k: usize) -> usize {
        self.starts[k + 1] - self.starts[k]
    }

    /// The cluster indices shuffled by the stream `(purpose, 0)`.
    pub(super) fn shuffled_order(&self, seed: u64, epoch: u64, purpose: u64) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        Rng::stream(seed, epoch, purpose, 0).shuffle(&mut order);
        order
    }
}

/// The dense cluster index of every row and the number of clusters.
fn dense_clusters(clusters: &[i64]) -> Result<(Vec<u32>, usize)> {
    let n = clusters.len();
    if n > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "at most {} rows are supported, got {n}",
            u32::MAX
        )));
    }
    let mut max = 0i64;
    for (row, &c) in clusters.iter().enumerate() {
        if c < 0 {
            return Err(Error::invalid(format!(
                "cluster ids must be non-negative, got clusters[{row}] = {c}"
            )));
        }
        max = max.max(c);
    }
    let (dense, names) = number_by_value(clusters, max);
    Ok((dense, names.len()))
}

/// Numbers the distinct values of `values` (non-negative, at most `max`, fewer than 2^32 of
/// them) by increasing value: the number of every value, and the distinct values. Small values
/// go through a direct table, large ones through a sort; both number the same way, so results
/// never depend on which path ran.
pub(super) fn number_by_value(values: &[i64], max: i64) -> (Vec<u32>, Vec<i64>) {
    if (max as u128) < 4 * values.len() as u128 + 1024 {
        let mut table = vec![u32::MAX; max as usize + 1];
        for &v in values {
            table[v as usize] = 0;
        }
        let mut names = Vec::new();
        for (v, d) in table.iter_mut().enumerate().filter(|(_, d)| **d == 0) {
            *d = names.len() as u32;
            names.push(v as i64);
        }
        (values.iter().map(|&v| table[v as usize]).collect(), names)
    } else {
        let mut pairs: Vec<(i64, u32)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect();
        pairs.sort_unstable();
        let mut dense = vec![0u32; values.len()];
        let mut names: Vec<i64> = Vec::new();
        for (v, i) in pairs {
            if names.last() != Some(&v) {
                names.push(v);
            }
            dense[i as usize] = (names.len() - 1) as u32;
        }
        (dense, names)
    }
}

pub(super) fn cluster_sizes(clusters: &[i64]) -> Result<Vec<usize>> {
    let (dense, k) = dense_clusters(clusters)?;
    let mut sizes = vec![0usize; k];
    for d in dense {
        sizes[d as usize] += 1;
    }
    Ok(sizes)
}

pub(super) fn group(clusters: &[i64]) -> Result<Groups> {
    let (dense, k) = dense_clusters(clusters)?;
    let mut starts = vec![0usize; k + 1];
    for &d in &dense {
        starts[d as usize + 1] += 1;
    }
    for i in 0..k {
        starts[i + 1] += starts[i];
    }
    let mut next = starts[..k].to_vec();
    let mut rows = vec![0i64; clusters.len()];
    for (row, &d) in dense.iter().enumerate() {
        rows[next[d as usize]] = row as i64;
        next[d as usize] += 1;
    }
    Ok(Groups { rows, starts })
}

/// Shuffles the rows inside every cluster, one stream per cluster.
pub(super) fn shuffle_within(groups: &mut Groups, seed: u64, epoch: u64) {
    for k in 0..groups.len() {
        let (a, b) = (groups.starts[k], groups.starts[k + 1]);
        Rng::stream(seed, epoch, ROWS, k as u64).shuffle(&mut groups.rows[a..b]);
    }
}
