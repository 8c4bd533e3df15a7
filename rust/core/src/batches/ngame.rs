//! NGAME batches: whole clusters in a random order, cut into batches.

use super::clusters::{group, shuffle_within};
use super::{batches_of, check_batch_size, BatchPlan, CLUSTER_ORDER};
use crate::error::Result;

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
    let mut rows = Vec::with_capacity(clusters.len());
    for k in groups.shuffled_order(seed, epoch, CLUSTER_ORDER) {
        let k = k as usize;
        rows.extend_from_slice(&groups.rows[groups.starts[k]..groups.starts[k + 1]]);
    }
    let kept = batches_of(rows.len(), batch_size, drop_last) * batch_size;
    rows.truncate(kept.min(rows.len()));
    Ok(BatchPlan::cut(rows, batch_size, 0))
}
