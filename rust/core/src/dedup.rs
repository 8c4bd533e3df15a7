//! Duplicates found before mining: identical corpus rows ([`duplicate_groups`]) and
//! near-identical queries ([`link_queries`]). Mining takes their result as input; they are not
//! part of it.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::matrix::MatrixView;
use crate::metric::Metric;
use crate::search::{search, SearchOptions};

/// Groups identical rows: each row gets the index of the first row with the same elements
/// (bit for bit, after widening f16).
pub fn duplicate_groups(pool: &rayon::ThreadPool, corpus: &MatrixView<'_>) -> Vec<u32> {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    let (n, dim) = (corpus.rows(), corpus.dim());
    let row_bits = |i: usize| {
        let mut row = vec![0.0f32; dim];
        corpus.row_into(i, &mut row);
        // +0.0 and -0.0 are the same embedding.
        row.iter()
            .map(|x| (x + 0.0).to_bits())
            .collect::<Vec<u32>>()
    };
    let hashes: Vec<u64> = pool.install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut h = DefaultHasher::new();
                row_bits(i).hash(&mut h);
                h.finish()
            })
            .collect()
    });
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (hashes[i], i));
    let mut groups: Vec<u32> = (0..n as u32).collect();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && hashes[order[end]] == hashes[order[start]] {
            end += 1;
        }
        // Same hash: compare contents (rows in increasing index order within the run).
        let run = &order[start..end];
        for (a, &i) in run.iter().enumerate() {
            if groups[i] != i as u32 {
                continue;
            }
            let bits = row_bits(i);
            for &j in &run[a + 1..] {
                if groups[j] == j as u32 && row_bits(j) == bits {
                    groups[j] = i as u32;
                }
            }
        }
        start = end;
    }
    groups
}

/// Links near-identical queries: returns, per query, the smallest query index of its
/// component, where two queries are joined when their cosine is `>= threshold` and each is
/// among the other's `neighbors` nearest (or one is among the other's).
pub fn link_queries(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    threshold: f32,
    neighbors: usize,
    hooks: &mut dyn Hooks,
) -> Result<Vec<u32>> {
    if !threshold.is_finite() || !(-1.0..=1.0).contains(&threshold) {
        return Err(Error::invalid(format!(
            "query_dup_threshold is a cosine and must be in [-1, 1], got {threshold}"
        )));
    }
    let n = queries.rows();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    if n < 2 {
        return Ok(parent);
    }
    let k = neighbors.clamp(1, n);
    let found = search(
        pool,
        queries,
        queries,
        None,
        &SearchOptions::new(k, Metric::Cosine),
        hooks,
    )?;
    fn root(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            parent[x as usize] = parent[parent[x as usize] as usize];
            x = parent[x as usize];
        }
        x
    }
    for q in 0..n {
        for j in 0..k {
            let (s, other) = (found.scores[q * k + j], found.ids[q * k + j]);
            if s < threshold {
                break;
            }
            let (a, b) = (root(&mut parent, q as u32), root(&mut parent, other as u32));
            // The smaller index becomes the root, so component ids do not depend on order.
            let (lo, hi) = (a.min(b), a.max(b));
            parent[hi as usize] = lo;
        }
    }
    for q in 0..n as u32 {
        parent[q as usize] = root(&mut parent, q);
    }
    Ok(parent)
}
