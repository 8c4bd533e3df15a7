//! hnswlib's index file (its 0.8 layout, native byte order), checked before hnswlib loads it:
//! hnswlib trusts every count and id it reads, so a damaged or foreign file would make it read
//! out of bounds. [`check_hnsw_index`] is a pure function over the file's bytes, like
//! [`parse_header`](super::parse_header) for `.npy`; [`check_hnsw_file`] maps a file and
//! checks it.
//!
//! The layout: a 96-byte header; per element a level-0 record (a count word and `2 M`
//! neighbour ids, the vector, an 8-byte label); then per element a size word (bytes of its
//! upper-level lists) followed by those lists, `4 + 4 M` bytes each (a count word and `M` ids).
//! A count word's upper 16 bits hold hnswlib's deleted mark; negmine never deletes, so a count
//! word is checked whole.

use std::path::Path;

use memmap2::MmapOptions;

use super::header::HeaderError;
use super::mapped::open_regular;
use crate::error::{Error, Result};

/// Bytes of hnswlib's header.
pub const HNSW_HEADER_LEN: usize = 96;

/// What an index file must hold: `rows` elements of dimension `dim`, built with `m` and
/// `ef_construction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswLayout {
    pub rows: usize,
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
}

fn fail<T>(message: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError::new(message))
}

// The readers below are called at offsets the checks before them keep in bounds; past the end
// they read 0 instead of panicking.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.saturating_add(8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Checks that `bytes` are an hnswlib index of `layout` whose graph hnswlib can search without
/// reading out of bounds: a header consistent with the layout, the exact file length, every
/// neighbour count within its maximum, every neighbour id below `rows` and of a level at least
/// the list's, the entry point on the top level, labels a permutation of the row numbers.
/// Never panics; the error says what is wrong and where.
pub fn check_hnsw_index(bytes: &[u8], layout: &HnswLayout) -> Result<(), HeaderError> {
    let n = layout.rows;
    if bytes.len() < HNSW_HEADER_LEN {
        return fail(format!(
            "{} bytes, shorter than hnswlib's header",
            bytes.len()
        ));
    }
    let m = layout.m;
    let too_large = || HeaderError::new("the layout's sizes overflow");
    let max_m0 = m.checked_mul(2).ok_or_else(too_large)?;
    let links0 = max_m0
        .checked_mul(4)
        .and_then(|b| b.checked_add(4))
        .ok_or_else(too_large)?;
    let label_offset = layout
        .dim
        .checked_mul(4)
        .and_then(|b| b.checked_add(links0))
        .ok_or_else(too_large)?;
    let record = label_offset.checked_add(8).ok_or_else(too_large)?;
    let expected: [(&str, usize, usize); 9] = [
        ("offset_level0", 0, 0),
        ("cur_element_count", 16, n),
        ("size_data_per_element", 24, record),
        ("label_offset", 32, label_offset),
        ("offset_data", 40, links0),
        ("max_m", 56, m),
        ("max_m0", 64, max_m0),
        ("m", 72, m),
        ("ef_construction", 88, layout.ef_construction.max(m)),
    ];
    let mut wrong: Vec<String> = expected
        .iter()
        .filter(|(_, at, want)| u64_at(bytes, *at) != *want as u64)
        .map(|(name, at, want)| format!("{name} {} (expected {want})", u64_at(bytes, *at)))
        .collect();
    let max_elements = u64_at(bytes, 8);
    if max_elements < n as u64 {
        wrong.push(format!("max_elements {max_elements} < {n} elements"));
    }
    let mult = f64::from_bits(u64_at(bytes, 80));
    if !(mult.is_finite() && mult > 0.0) {
        wrong.push(format!("level multiplier {mult}"));
    }
    if !wrong.is_empty() {
        return fail(format!(
            "header does not match the corpus and parameters: {}",
            wrong.join(", ")
        ));
    }
    let max_level = u32_at(bytes, 48) as i32;
    let entry_point = u32_at(bytes, 52);

    let base = n
        .checked_mul(record)
        .and_then(|b| b.checked_add(HNSW_HEADER_LEN));
    let short = match base {
        Some(base) => bytes.len() < base.saturating_add(n.saturating_mul(4)),
        None => true,
    };
    if short || !(bytes.len() - base.unwrap_or(0)).is_multiple_of(4) {
        return fail(format!(
            "{} bytes, too short or misaligned for {n} elements",
            bytes.len()
        ));
    }
    let base = base.unwrap_or(0);

    let mut seen = vec![false; n];
    for i in 0..n {
        let at = HNSW_HEADER_LEN + i * record;
        check_list(bytes, at, max_m0, n, i, "level-0")?;
        let label = u64_at(bytes, at + label_offset);
        // A threaded build numbers elements in arrival order: labels are the rows, permuted.
        match usize::try_from(label).ok().filter(|&l| l < n) {
            None => {
                return fail(format!(
                    "element {i} has label {label}, but there are {n} rows"
                ))
            }
            Some(l) if seen[l] => return fail("two elements have the same label"),
            Some(l) => seen[l] = true,
        }
    }

    let upper = &bytes[base..];
    let (levels, starts) = upper_levels(upper, n, 4 + 4 * m, max_level, entry_point)?;
    for (element, (&level_count, &start)) in levels.iter().zip(&starts).enumerate() {
        for level in 1..=level_count {
            let at = 4 * (start + (level - 1) * (1 + m));
            check_list(upper, at, m, n, element, "upper-level")?;
            let count = u32_at(upper, at) as usize;
            for j in 0..count {
                let id = u32_at(upper, at + 4 + 4 * j) as usize;
                if levels[id] < level {
                    return fail(format!(
                        "element {element} links to {id} on level {level}, above that \
                         element's level {}",
                        levels[id]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The list at byte `at` of `bytes` (a count word, then `most` id words): at most `most`
/// neighbours, each below `n`.
fn check_list(
    bytes: &[u8],
    at: usize,
    most: usize,
    n: usize,
    element: usize,
    what: &str,
) -> Result<(), HeaderError> {
    let count = u32_at(bytes, at) as usize;
    if count > most {
        return fail(format!(
            "element {element}'s {what} list holds {count} neighbours, at most {most} fit"
        ));
    }
    for j in 0..count {
        let id = u32_at(bytes, at + 4 + 4 * j);
        if id as usize >= n {
            return fail(format!(
                "element {element}'s {what} list has neighbour id {id}, but there are {n} \
                 elements"
            ));
        }
    }
    Ok(())
}

/// Each element's level and the word index of its first upper-level list, walking the
/// size-prefixed records to the exact end of `upper`; then the entry point checked against
/// the levels.
fn upper_levels(
    upper: &[u8],
    n: usize,
    list_bytes: usize,
    max_level: i32,
    entry_point: u32,
) -> Result<(Vec<usize>, Vec<usize>), HeaderError> {
    let total = upper.len() / 4;
    let mut levels = vec![0usize; n];
    let mut starts = vec![0usize; n];
    let mut p = 0usize;
    for i in 0..n {
        if p >= total {
            return fail(format!(
                "the file ends before the upper-level lists of element {i}"
            ));
        }
        let size = u32_at(upper, 4 * p) as usize;
        if size > 0 {
            let level = size / list_bytes;
            if !size.is_multiple_of(list_bytes) || level < 1 || level as i64 > i64::from(max_level)
            {
                return fail(format!(
                    "element {i} has {size} bytes of upper-level lists: not a whole number of \
                     levels up to the top level {max_level}"
                ));
            }
            levels[i] = level;
            starts[i] = p + 1;
        }
        p += 1 + size / 4;
    }
    if p > total {
        return fail(format!("{} bytes missing", 4 * (p - total)));
    }
    if p < total {
        return fail(format!("{} bytes after the last list", 4 * (total - p)));
    }
    if n == 0 {
        if max_level != -1 || entry_point != u32::MAX {
            return fail("an empty index with an entry point");
        }
    } else {
        let top = levels.iter().copied().max().unwrap_or(0);
        let on_top = (entry_point as usize) < n
            && levels[entry_point as usize] as i64 == i64::from(max_level)
            && top as i64 == i64::from(max_level);
        if !on_top {
            return fail(format!(
                "entry point {entry_point} is not an element on the top level {max_level}"
            ));
        }
    }
    Ok((levels, starts))
}

/// [`check_hnsw_index`] on the file at `path` (a regular file, mapped read-only); a refusal
/// is a [`Error::Format`] naming the file.
pub fn check_hnsw_file(path: &Path, layout: &HnswLayout) -> Result<()> {
    let (file, len) = open_regular(path)?;
    let checked = if len == 0 {
        check_hnsw_index(&[], layout)
    } else {
        // SAFETY: the mapping is read-only and dropped before returning; a file truncated by
        // another process meanwhile would fault (SIGBUS), the risk every mapped reader of the
        // store takes (see `MappedMatrix`).
        let map = unsafe { MmapOptions::new().map(&file) }.map_err(|e| Error::io(path, e))?;
        check_hnsw_index(&map, layout)
    };
    checked.map_err(|e| Error::format(path, e.message()))
}
