//! Reciprocal-rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009) of two rankings per
//! query: the candidates of `backend="hybrid"` (a lexical and a dense ranking).
//!
//! A document at 1-based rank `r` of a ranking gets `1 / (k + r)` from it, nothing from a
//! ranking that does not hold it; the fused ranking orders the union of the two by the sum,
//! descending, ties broken by the smaller id. The sums are compared exactly, as fractions in
//! integers (`u128`), not in floating point: two documents whose sums are equal as rational
//! numbers (e.g. ranks 3 and 66 against 24 and 24 with `k = 60`) tie and are ordered by id,
//! whatever rounding would have said. The result depends only on the two rankings and `k`,
//! never on the thread count.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// The fused rankings of a batch of queries: query `q` gets
/// `ids[offsets[q]..offsets[q + 1]]`, best first, and `sources` says for each which rankings
/// held it (bit 0: the first, bit 1: the second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fused {
    pub offsets: Vec<usize>,
    pub ids: Vec<u32>,
    pub sources: Vec<u8>,
}

/// One ranking per query in CSR form (`indptr`, `indices`), best first.
#[derive(Debug, Clone, Copy)]
pub struct Rankings<'a> {
    pub indptr: &'a [i64],
    pub indices: &'a [i64],
}

impl Rankings<'_> {
    /// Checks the CSR layout for `n_queries` rows, naming the ranking `what`.
    fn check(&self, what: &str, n_queries: usize) -> Result<()> {
        let (indptr, indices) = (self.indptr, self.indices);
        crate::idlists::check_csr(what, indptr, indices.len(), n_queries)?;
        if let Some(bad) = indices
            .iter()
            .find(|&&id| !(0..=i64::from(u32::MAX)).contains(&id))
        {
            return Err(Error::invalid(format!(
                "{what} holds id {bad}, outside 0 ..= {}",
                u32::MAX
            )));
        }
        Ok(())
    }

    fn of(&self, q: usize) -> &[i64] {
        &self.indices[self.indptr[q] as usize..self.indptr[q + 1] as usize]
    }
}

/// The reciprocal-rank fusion of `first` and `second` (one ranking per query each, for the
/// same `n_queries` queries) with the constant `k`; see the module docs. An id twice in one
/// ranking is refused.
pub fn reciprocal_rank_fusion(
    pool: &rayon::ThreadPool,
    first: Rankings<'_>,
    second: Rankings<'_>,
    n_queries: usize,
    k: u32,
) -> Result<Fused> {
    first.check("the first ranking's", n_queries)?;
    second.check("the second ranking's", n_queries)?;
    let fused: Vec<Result<Vec<(u32, u8)>>> = pool.install(|| {
        (0..n_queries)
            .into_par_iter()
            .map(|q| fuse_one(q, first.of(q), second.of(q), k))
            .collect()
    });
    let mut out = Fused {
        offsets: Vec::with_capacity(n_queries + 1),
        ids: Vec::new(),
        sources: Vec::new(),
    };
    out.offsets.push(0);
    // In query order: the first query that failed is the one named.
    for ranking in fused {
        for (id, sources) in ranking? {
            out.ids.push(id);
            out.sources.push(sources);
        }
        out.offsets.push(out.ids.len());
    }
    Ok(out)
}

/// A document's fused score `numerator / denominator`, exactly.
#[derive(Clone, Copy)]
struct Score {
    numerator: u128,
    denominator: u128,
}

impl Score {
    fn of(k: u32, ranks: [Option<u32>; 2]) -> Score {
        // Ranks are 1-based: `k + rank` is at least 1, even with k = 0.
        let term = |rank: u32| u128::from(k) + u128::from(rank) + 1;
        match ranks {
            [Some(a), Some(b)] => Score {
                numerator: term(a) + term(b),
                denominator: term(a) * term(b),
            },
            [Some(r), None] | [None, Some(r)] => Score {
                numerator: 1,
                denominator: term(r),
            },
            [None, None] => unreachable!("a fused document comes from a ranking"),
        }
    }

    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        // `k + rank + 1 < 2^33` (a u32 k, a u32 rank): numerators < 2^34 and denominators
        // < 2^66, so the products fit in 100 bits.
        (self.numerator * other.denominator).cmp(&(other.numerator * self.denominator))
    }
}

fn fuse_one(q: usize, first: &[i64], second: &[i64], k: u32) -> Result<Vec<(u32, u8)>> {
    // (id, which ranking, 0-based rank), grouped by id.
    let mut entries: Vec<(u32, u8, u32)> = Vec::with_capacity(first.len() + second.len());
    for (which, ranking) in [(0u8, first), (1u8, second)] {
        for (rank, &id) in ranking.iter().enumerate() {
            let rank = u32::try_from(rank)
                .map_err(|_| Error::invalid(format!("query {q}'s ranking is too long")))?;
            entries.push((id as u32, which, rank));
        }
    }
    entries.sort_unstable();
    let mut fused: Vec<(Score, u32, u8)> = Vec::with_capacity(entries.len());
    let mut i = 0;
    while i < entries.len() {
        let id = entries[i].0;
        let mut ranks = [None, None];
        while i < entries.len() && entries[i].0 == id {
            let (_, which, rank) = entries[i];
            if ranks[which as usize].replace(rank).is_some() {
                let name = ["first", "second"][which as usize];
                return Err(Error::invalid(format!(
                    "the {name} ranking of query {q} holds id {id} twice"
                )));
            }
            i += 1;
        }
        let sources = u8::from(ranks[0].is_some()) | (u8::from(ranks[1].is_some()) << 1);
        fused.push((Score::of(k, ranks), id, sources));
    }
    fused.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(fused.into_iter().map(|(_, id, s)| (id, s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    fn fuse(first: &[&[i64]], second: &[&[i64]], k: u32, threads: usize) -> Result<Fused> {
        let csr = |lists: &[&[i64]]| {
            let mut indptr = vec![0i64];
            let mut ids = Vec::new();
            for list in lists {
                ids.extend_from_slice(list);
                indptr.push(ids.len() as i64);
            }
            (indptr, ids)
        };
        let (a, b) = (csr(first), csr(second));
        reciprocal_rank_fusion(
            &pool(threads),
            Rankings {
                indptr: &a.0,
                indices: &a.1,
            },
            Rankings {
                indptr: &b.0,
                indices: &b.1,
            },
            first.len(),
            k,
        )
    }

    #[test]
    fn both_rankings_beat_one_and_rational_ties_go_by_id() {
        // k = 60: id 9 at ranks 3 and 66 sums to 1/63 + 1/126 = 1/42, id 4 at 24 and 24 too.
        let mut first: Vec<i64> = (100..166).collect();
        let mut second: Vec<i64> = (200..266).collect();
        first[2] = 9;
        second[65] = 9;
        first[23] = 4;
        second[23] = 4;
        let fused = fuse(&[&first], &[&second], 60, 2).unwrap();
        let at = |id: u32| fused.ids.iter().position(|&x| x == id).unwrap();
        assert_eq!(at(4) + 1, at(9), "an exact tie is broken by the smaller id");
        assert_eq!(fused.sources[at(9)], 3);
        assert_eq!(fused.sources[at(100)], 1);
        assert_eq!(fused.sources[at(200)], 2);
        // The two 1/42s first; then rank 1 of one ranking ties with rank 1 of the other.
        assert_eq!(&fused.ids[..4], &[4, 9, 100, 200]);
    }

    #[test]
    fn threads_do_not_change_the_result_and_bad_input_is_named() {
        let first: Vec<&[i64]> = vec![&[1, 2, 3], &[], &[5]];
        let second: Vec<&[i64]> = vec![&[3, 1], &[7], &[]];
        let one = fuse(&first, &second, 0, 1).unwrap();
        assert_eq!(one, fuse(&first, &second, 0, 3).unwrap());
        assert_eq!(one.offsets, vec![0, 3, 4, 5]);
        assert_eq!(&one.ids[..3], &[1, 3, 2]);
        let err = fuse(&[&[1, 1]], &[&[]], 60, 1).unwrap_err().to_string();
        assert!(err.contains("holds id 1 twice"), "{err}");
        let err = fuse(&[&[-1]], &[&[]], 60, 1).unwrap_err().to_string();
        assert!(err.contains("id -1"), "{err}");
    }
}
