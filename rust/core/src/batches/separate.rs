//! No in-batch false negatives: [`separate`] moves rows between the batches of a plan so that
//! no two rows sharing a conflict key share a batch.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use super::clusters::number_by_value;
use super::{check_indptr, check_plan, BatchPlan};
use crate::error::{Error, Result};
use crate::rng::{fmix, GOLDEN};

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

    /// Records `row`'s keys as held by `batch`.
    fn remember(&mut self, batch: usize, row: i64) {
        let r = row as usize;
        for &k in &self.keys[self.start[r]..self.start[r + 1]] {
            self.member.insert(pair(batch, k));
        }
    }

    /// Drops `row`'s keys from `batch`'s record.
    fn forget(&mut self, batch: usize, row: i64) {
        let r = row as usize;
        for &k in &self.keys[self.start[r]..self.start[r + 1]] {
            self.member.remove(&pair(batch, k));
        }
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
                self.forget(batch, self.out[i]);
            }
        } else {
            self.remember(batch, row);
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
                self.forget(c, y);
                self.put(f, y);
                self.out[i] = row;
                if self.fill[c] < self.sizes[c] {
                    self.remember(c, row);
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
