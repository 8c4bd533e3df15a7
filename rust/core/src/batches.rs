//! Batch plans: which dataset rows share a training batch in one epoch.
//!
//! Every plan is a pure function of its inputs and `(seed, epoch)`. The two are mixed with
//! SplitMix64's finaliser, one after the other (never added), so `(seed 1, epoch 0)` and
//! `(seed 0, epoch 1)` are unrelated streams. Each random decision draws from its own stream
//! (`purpose`, `index`), so the plan does not depend on the thread count or on the order in
//! which independent pieces are computed.
//!
//! The number of batches of every plan is a function of the cluster sizes, `batch_size`,
//! `clusters_per_batch` and `drop_last` only: [`topic_count`] and [`ngame_count`] announce it
//! before a plan is built, and it is the same for every seed and epoch (so every DDP rank
//! agrees on it). [`separate`] (no in-batch false negatives) keeps every batch size, hence the
//! count.
//!
//! Cluster ids are arbitrary non-negative integers; empty clusters (ids not used by any row)
//! do not exist for the plans: clusters are the distinct ids, taken in increasing order.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::rng::{fmix, Rng, GOLDEN};

/// Batch plan of one epoch: batch `b` holds the dataset rows
/// `rows[offsets[b] as usize..offsets[b + 1] as usize]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    pub rows: Vec<i64>,
    pub offsets: Vec<i64>,
    /// Topic plans: the number of leading batches built from whole cluster chunks (at most
    /// `clusters_per_batch` clusters each) before any [`separate`]; the remaining batches are
    /// leftover batches. Zero for other plans.
    pub topical: usize,
}

impl BatchPlan {
    /// The number of batches.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows of batch `b` (panics if `b >= len()`, like slice indexing).
    pub fn batch(&self, b: usize) -> &[i64] {
        &self.rows[self.offsets[b] as usize..self.offsets[b + 1] as usize]
    }

    /// Batches of `batch_size` rows over `rows`, the last one shorter when it does not divide.
    fn cut(rows: Vec<i64>, batch_size: usize, topical: usize) -> BatchPlan {
        let n = rows.len();
        let mut offsets: Vec<i64> = (0..n).step_by(batch_size).map(|o| o as i64).collect();
        offsets.push(n as i64);
        BatchPlan {
            rows,
            offsets,
            topical,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random streams

/// Stream purposes: one independent stream per kind of decision.
pub(crate) const ROWS: u64 = 1;
pub(crate) const PICKS: u64 = 2;
pub(crate) const LEFTOVERS: u64 = 3;
pub(crate) const CLUSTER_ORDER: u64 = 4;
pub(crate) const MARGINS: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Clusters

/// Rows grouped by cluster: cluster `k` (the k-th distinct id in increasing order) holds
/// `rows[starts[k]..starts[k + 1]]`, in increasing row order.
struct Groups {
    rows: Vec<i64>,
    starts: Vec<usize>,
}

impl Groups {
    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn size(&self, k: usize) -> usize {
        self.starts[k + 1] - self.starts[k]
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
fn number_by_value(values: &[i64], max: i64) -> (Vec<u32>, Vec<i64>) {
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

fn cluster_sizes(clusters: &[i64]) -> Result<Vec<usize>> {
    let (dense, k) = dense_clusters(clusters)?;
    let mut sizes = vec![0usize; k];
    for d in dense {
        sizes[d as usize] += 1;
    }
    Ok(sizes)
}

fn group(clusters: &[i64]) -> Result<Groups> {
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
fn shuffle_within(groups: &mut Groups, seed: u64, epoch: u64) {
    for k in 0..groups.len() {
        let (a, b) = (groups.starts[k], groups.starts[k + 1]);
        Rng::stream(seed, epoch, ROWS, k as u64).shuffle(&mut groups.rows[a..b]);
    }
}

fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::invalid("batch_size must be positive, got 0"));
    }
    Ok(())
}

fn batches_of(rows: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        rows / batch_size
    } else {
        rows.div_ceil(batch_size)
    }
}

// ---------------------------------------------------------------------------------------------
// Topic batches (TAS)

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
    let mut order: Vec<u32> = (0..groups.len() as u32).collect();
    Rng::stream(seed, epoch, LEFTOVERS, 0).shuffle(&mut order);
    for k in order {
        let k = k as usize;
        let start = groups.starts[k] + used[k] * m;
        rows.extend_from_slice(&groups.rows[start..groups.starts[k + 1]]);
    }
    rows.truncate(layout.rows);
    Ok(BatchPlan::cut(rows, batch_size, layout.topical))
}

// ---------------------------------------------------------------------------------------------
// NGAME batches

/// The exact number of batches of [`ngame`] over `n_rows` rows.
pub fn ngame_count(n_rows: usize, batch_size: usize, drop_last: bool) -> Result<usize> {
    check_batch_size(batch_size)?;
    Ok(batches_of(n_rows, batch_size, drop_last))
}

/// NGAME batches: clusters in a random order, rows shuffled inside each cluster, all
/// concatenated and cut into batches of `batch_size` rows; the last one has
/// `n % batch_size` rows when that is not zero, and `drop_last` leaves it out.
///
/// NGAME grows the cluster size over training: that is a coarser `clusters` passed in for the
/// later epochs (the Python layer's `coarsen_clusters` merges neighbouring clusters); this
/// function only cuts the clusters it is given.
pub fn ngame(
    clusters: &[i64],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    drop_last: bool,
) -> Result<BatchPlan> {
    check_batch_size(batch_size)?;
    let mut groups = group(clusters)?;
    shuffle_within(&mut groups, seed, epoch);
    let mut order: Vec<u32> = (0..groups.len() as u32).collect();
    Rng::stream(seed, epoch, CLUSTER_ORDER, 0).shuffle(&mut order);
    let mut rows = Vec::with_capacity(clusters.len());
    for k in order {
        let k = k as usize;
        rows.extend_from_slice(&groups.rows[groups.starts[k]..groups.starts[k + 1]]);
    }
    let kept = batches_of(rows.len(), batch_size, drop_last) * batch_size;
    rows.truncate(kept.min(rows.len()));
    Ok(BatchPlan::cut(rows, batch_size, 0))
}

// ---------------------------------------------------------------------------------------------
// TAS-Balanced margin sampling

/// Checks a CSR `indptr` over `len` values and returns the number of lists.
fn check_indptr(name: &str, values: &str, indptr: &[i64], len: usize) -> Result<usize> {
    let Some((&first, _)) = indptr.split_first() else {
        return Err(Error::invalid(format!(
            "{name} must have at least one entry (0), got an empty array"
        )));
    };
    if first != 0 {
        return Err(Error::invalid(format!(
            "{name} must start at 0, got {first}"
        )));
    }
    for (i, w) in indptr.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(Error::invalid(format!(
                "{name} must be non-decreasing, got {name}[{}] = {} after {}",
                i + 1,
                w[1],
                w[0]
            )));
        }
    }
    let last = indptr[indptr.len() - 1];
    if last != len as i64 {
        return Err(Error::invalid(format!(
            "{name} must end at the length of {values} ({len}), got {last}"
        )));
    }
    Ok(indptr.len() - 1)
}

/// TAS-Balanced: query `q`'s pairs are `margins[indptr[q]..indptr[q + 1]]` (margin = teacher
/// score of the positive minus that of the pair's negative). The global margin range
/// `[lo, hi]` over all pairs is cut into `bins` equal-width bins (the last one closed; all
/// pairs in bin 0 when `lo == hi`); for each query a non-empty bin is picked uniformly, then a
/// pair uniformly inside it.
///
/// Returns, per query, the index of the chosen pair *within the query's list*
/// (`0..indptr[q + 1] - indptr[q]`), or -1 for a query without pairs.
pub fn margin_balanced(
    margins_indptr: &[i64],
    margins: &[f64],
    bins: usize,
    seed: u64,
    epoch: u64,
) -> Result<Vec<i64>> {
    if bins == 0 {
        return Err(Error::invalid("bins must be positive, got 0"));
    }
    let n_queries = check_indptr("margins_indptr", "margins", margins_indptr, margins.len())?;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, &m) in margins.iter().enumerate() {
        if !m.is_finite() {
            return Err(Error::invalid(format!(
                "margins must be finite, got margins[{i}] = {m}"
            )));
        }
        lo = lo.min(m);
        hi = hi.max(m);
    }
    // Halves keep `hi - lo` finite for any finite margins.
    let span = hi * 0.5 - lo * 0.5;
    let bin_of = |m: f64| -> u64 {
        if span > 0.0 {
            let t = (m * 0.5 - lo * 0.5) / span * bins as f64;
            (t as u64).min(bins as u64 - 1)
        } else {
            0
        }
    };
    let mut picks = Vec::with_capacity(n_queries);
    let mut scratch: Vec<u64> = Vec::new();
    for q in 0..n_queries {
        let (a, b) = (margins_indptr[q] as usize, margins_indptr[q + 1] as usize);
        if a == b {
            picks.push(-1);
            continue;
        }
        let pair_bins = margins[a..b].iter().map(|&m| bin_of(m));
        scratch.clear();
        scratch.extend(pair_bins.clone());
        scratch.sort_unstable();
        scratch.dedup();
        let mut rng = Rng::stream(seed, epoch, MARGINS, q as u64);
        let bin = scratch[rng.below(scratch.len())];
        let in_bin = pair_bins.clone().filter(|&x| x == bin).count();
        let nth = rng.below(in_bin);
        let local = pair_bins
            .enumerate()
            .filter(|&(_, x)| x == bin)
            .nth(nth)
            .map_or(0, |(i, _)| i);
        picks.push(local as i64);
    }
    Ok(picks)
}

// ---------------------------------------------------------------------------------------------
// No in-batch false negatives

/// Hashes the (batch, key) pairs of the membership set; they are already well spread.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        fmix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 ^= x;
    }
}

type PairSet = HashSet<u64, BuildHasherDefault<PairHasher>>;

fn pair(batch: usize, key: u32) -> u64 {
    ((batch as u64) << 32) | u64::from(key)
}

/// Smallest batch `>= b` with room: union-find "next free slot" with path halving.
struct Open {
    next: Vec<u32>,
}

impl Open {
    fn find(&mut self, mut b: usize) -> usize {
        while self.next[b] as usize != b {
            let up = self.next[self.next[b] as usize];
            self.next[b] = up;
            b = up as usize;
        }
        b
    }

    fn close(&mut self, b: usize) {
        self.next[b] = (b + 1) as u32;
    }
}

struct Separator<'a> {
    /// Distinct dense keys of the row at each plan position `p`: `keys[start[p]..start[p + 1]]`.
    /// The separator moves positions (`out` holds them); gathering the keys in plan order
    /// makes placement read them sequentially.
    start: Vec<usize>,
    keys: Vec<u32>,
    key_names: Vec<i64>,
    sizes: Vec<usize>,
    offsets: &'a [i64],
    fill: Vec<usize>,
    out: Vec<i64>,
    member: PairSet,
    open: Open,
    /// Per key: no open batch before it can take the key (a lower bound, raised lazily).
    hint: Vec<u32>,
    key_rows: Vec<u32>,
}

/// Methods take plan positions (`row: i64` is a position in `plan.rows`), not dataset rows.
impl Separator<'_> {
    fn keys_of(&self, row: i64) -> &[u32] {
        let r = row as usize;
        &self.keys[self.start[r]..self.start[r + 1]]
    }

    fn fits(&self, batch: usize, row: i64) -> bool {
        self.keys_of(row)
            .iter()
            .all(|&k| !self.member.contains(&pair(batch, k)))
    }

    /// Adds `row` to `batch`. Only open batches keep their keys in `member` (placement never
    /// looks at full ones), so the set stays small and in cache.
    fn put(&mut self, batch: usize, row: i64) {
        let a = self.offsets[batch] as usize;
        self.out[a + self.fill[batch]] = row;
        self.fill[batch] += 1;
        if self.fill[batch] == self.sizes[batch] {
            self.open.close(batch);
            for i in a..a + self.fill[batch] - 1 {
                let r = self.out[i] as usize;
                for &k in &self.keys[self.start[r]..self.start[r + 1]] {
                    self.member.remove(&pair(batch, k));
                }
            }
        } else {
            let r = row as usize;
            for &k in &self.keys[self.start[r]..self.start[r + 1]] {
                self.member.insert(pair(batch, k));
            }
        }
    }

    /// The first open batch that can take `row`, or `None`.
    fn place(&mut self, row: i64) -> Option<usize> {
        let nb = self.sizes.len();
        let first_open = self.open.find(0);
        let mut from = first_open;
        let r = row as usize;
        for i in self.start[r]..self.start[r + 1] {
            let k = self.keys[i];
            let mut h = self
                .open
                .find((self.hint[k as usize] as usize).max(first_open));
            while h < nb && self.member.contains(&pair(h, k)) {
                h = self.open.find(h + 1);
            }
            self.hint[k as usize] = h as u32;
            from = from.max(h);
        }
        let mut b = self.open.find(from);
        while b < nb {
            if self.fits(b, row) {
                return Some(b);
            }
            b = self.open.find(b + 1);
        }
        None
    }

    /// `row` fits no open batch: swap it with a row `y` of some batch `c` that `row` fits
    /// without `y`, where `y` fits an open batch.
    fn repair(&mut self, row: i64) -> bool {
        let nb = self.sizes.len();
        let mut open = Vec::new();
        let mut b = self.open.find(0);
        while b < nb {
            open.push(b);
            b = self.open.find(b + 1);
        }
        for c in (0..nb).rev() {
            let a = self.offsets[c] as usize;
            let members = a..a + self.fill[c];
            let row_keys = self.keys_of(row);
            let clashing: Vec<usize> = members
                .clone()
                .filter(|&i| {
                    let y_keys = self.keys_of(self.out[i]);
                    row_keys.iter().any(|k| y_keys.contains(k))
                })
                .collect();
            let candidates: Vec<usize> = match clashing.len() {
                0 => members.collect(),
                1 => clashing,
                _ => continue,
            };
            for i in candidates {
                let y = self.out[i];
                let Some(&f) = open
                    .iter()
                    .find(|&&f| f != c && self.fill[f] < self.sizes[f] && self.fits(f, y))
                else {
                    continue;
                };
                let ry = y as usize;
                for j in self.start[ry]..self.start[ry + 1] {
                    self.member.remove(&pair(c, self.keys[j]));
                }
                self.put(f, y);
                self.out[i] = row;
                if self.fill[c] < self.sizes[c] {
                    let rr = row as usize;
                    for j in self.start[rr]..self.start[rr + 1] {
                        self.member.insert(pair(c, self.keys[j]));
                    }
                }
                return true;
            }
        }
        false
    }
}

/// Reorders `plan` so that no two rows sharing a conflict key share a batch, keeping every
/// batch size (hence the number of batches). Row `r`'s keys are
/// `keys[keys_indptr[r]..keys_indptr[r + 1]]` (any non-negative integers: positive ids,
/// duplicate groups, linked-query components, in disjoint ranges), for `n_rows` dataset rows.
///
/// Greedy and deterministic (the plan carries the randomness): rows are taken in plan order
/// and each goes to the first batch, from the first one not yet full, that has room and holds
/// none of its keys; a row that clashes with its own batch therefore moves to the next batch
/// that can take it, and the rows after it move up. A row that fits no batch left (near the
/// end) is swapped with a row of an earlier batch that can move to a batch with room. Errors:
/// a key shared by more plan rows than there are batches (impossible), and the rare case where
/// no such swap exists (the message names the row and its keys).
pub fn separate(
    plan: &BatchPlan,
    n_rows: usize,
    keys_indptr: &[i64],
    keys: &[i64],
) -> Result<BatchPlan> {
    if keys_indptr.len() != n_rows + 1 {
        return Err(Error::invalid(format!(
            "conflicts_indptr must have one entry per row plus one ({}), got {}",
            n_rows + 1,
            keys_indptr.len()
        )));
    }
    check_indptr("conflicts_indptr", "conflicts", keys_indptr, keys.len())?;
    check_plan(plan, n_rows)?;
    let nb = plan.len();
    if nb >= u32::MAX as usize {
        return Err(Error::invalid(format!("too many batches: {nb}")));
    }
    if let Some((i, k)) = keys.iter().enumerate().find(|(_, &k)| k < 0) {
        return Err(Error::invalid(format!(
            "conflict keys must be non-negative, got conflicts[{i}] = {k}"
        )));
    }
    if keys.len() >= u32::MAX as usize {
        return Err(Error::invalid(format!(
            "at most {} conflict keys are supported, got {}",
            u32::MAX - 1,
            keys.len()
        )));
    }
    let max = keys.iter().copied().max().unwrap_or(0);
    let (numbers, key_names) = number_by_value(keys, max);
    let mut start = Vec::with_capacity(n_rows + 1);
    let mut dense: Vec<u32> = Vec::with_capacity(keys.len());
    start.push(0);
    for r in 0..n_rows {
        let (a, b) = (keys_indptr[r] as usize, keys_indptr[r + 1] as usize);
        let first = dense.len();
        dense.extend_from_slice(&numbers[a..b]);
        dense[first..].sort_unstable();
        let mut unique = first;
        for i in first..dense.len() {
            if i == first || dense[i] != dense[unique - 1] {
                dense[unique] = dense[i];
                unique += 1;
            }
        }
        dense.truncate(unique);
        start.push(dense.len());
    }
    let mut key_rows = vec![0u32; key_names.len()];
    let mut plan_start = Vec::with_capacity(plan.rows.len() + 1);
    let mut plan_keys = Vec::with_capacity(dense.len().min(plan.rows.len() * 4));
    plan_start.push(0);
    for &row in &plan.rows {
        let r = row as usize;
        for &k in &dense[start[r]..start[r + 1]] {
            key_rows[k as usize] += 1;
            plan_keys.push(k);
        }
        plan_start.push(plan_keys.len());
    }
    drop((start, dense));
    if let Some((k, &count)) = key_rows.iter().enumerate().max_by_key(|(_, &c)| c) {
        if count as usize > nb {
            return Err(Error::invalid(format!(
                "conflict key {} is shared by {count} rows of the plan but it has only {nb} \
                 batches: rows sharing a key must all go to different batches; use a smaller \
                 batch_size or fewer shared keys",
                key_names[k]
            )));
        }
    }
    let sizes: Vec<usize> = plan
        .offsets
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .collect();
    let mut next: Vec<u32> = (0..=nb as u32).collect();
    for (b, &s) in sizes.iter().enumerate() {
        if s == 0 {
            next[b] = (b + 1) as u32;
        }
    }
    let mut sep = Separator {
        start: plan_start,
        keys: plan_keys,
        hint: vec![0; key_names.len()],
        key_names,
        fill: vec![0; nb],
        out: vec![-1; plan.rows.len()],
        member: PairSet::default(),
        open: Open { next },
        offsets: &plan.offsets,
        sizes,
        key_rows,
    };
    for position in 0..plan.rows.len() as i64 {
        match sep.place(position) {
            Some(b) => sep.put(b, position),
            None => {
                if !sep.repair(position) {
                    let names: Vec<i64> = sep
                        .keys_of(position)
                        .iter()
                        .map(|&k| sep.key_names[k as usize])
                        .collect();
                    let most = sep
                        .keys_of(position)
                        .iter()
                        .map(|&k| sep.key_rows[k as usize]);
                    return Err(Error::invalid(format!(
                        "cannot keep rows that share a conflict key apart: row {} (keys \
                         {names:?}, shared by up to {} rows) fits in none of the {nb} batches, \
                         even after swaps; use a smaller batch_size or fewer shared keys",
                        plan.rows[position as usize],
                        most.max().unwrap_or(0)
                    )));
                }
            }
        }
    }
    Ok(BatchPlan {
        rows: sep.out.iter().map(|&p| plan.rows[p as usize]).collect(),
        offsets: plan.offsets.clone(),
        topical: plan.topical,
    })
}

/// Checks that a plan's offsets are a valid partition of its rows and its rows are in range.
pub fn check_plan(plan: &BatchPlan, n_rows: usize) -> Result<()> {
    check_indptr("offsets", "indices", &plan.offsets, plan.rows.len())?;
    if let Some((i, &r)) = plan
        .rows
        .iter()
        .enumerate()
        .find(|(_, &r)| r < 0 || r as u128 >= n_rows as u128)
    {
        return Err(Error::invalid(format!(
            "plan rows must be in 0..{n_rows}, got indices[{i}] = {r}"
        )));
    }
    Ok(())
}
