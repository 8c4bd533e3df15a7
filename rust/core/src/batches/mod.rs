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

use crate::error::{Error, Result};

mod clusters;
mod margin;
mod ngame;
mod separate;
mod topic;

pub use margin::margin_balanced;
pub use ngame::{ngame, ngame_count};
pub use separate::separate;
pub use topic::{topic, topic_count, TopicLayout, Weighting};

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
// Checks and counts the plans share

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
