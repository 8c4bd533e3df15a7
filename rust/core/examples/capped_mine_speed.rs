//! Mining with a relative margin on clustered data with weak positives, against one search of
//! the same queries and corpus: `cargo run --release -p negmine-core --example
//! capped_mine_speed -- Q N D [threads] [runs]`. Each query's positive is a corpus row with a
//! cosine of about 0.1 to it, while about 9% of the corpus (its own cluster and the noise above
//! the cap) scores higher: `relative_margin = 0.05` removes all of those.

use std::time::Instant;

use negmine_core::mine::{mine, MineJob, MineOptions};
use negmine_core::search::{search, SearchOptions};
use negmine_core::{IdLists, MatrixView, Metric, NoHooks};

fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn unit(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

const CLUSTERS: usize = 16;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (q, n, d) = (args[0], args[1], args[2]);
    let threads = args.get(3).copied().unwrap_or(2);
    let runs = args.get(4).copied().unwrap_or(2);
    let mut s = 42u64;
    let centers: Vec<Vec<f32>> = (0..CLUSTERS)
        .map(|_| {
            let mut c: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
            unit(&mut c);
            c
        })
        .collect();
    // A row of cluster `c`: cosine about 0.3 to the others of its cluster.
    let row = |c: usize, s: &mut u64| -> Vec<f32> {
        let mut v: Vec<f32> = (0..d).map(|_| lcg(s)).collect();
        unit(&mut v);
        let mut r: Vec<f32> = v
            .iter()
            .zip(&centers[c])
            .map(|(x, y)| 0.84 * x + 0.55 * y)
            .collect();
        unit(&mut r);
        r
    };
    let queries: Vec<f32> = (0..q).flat_map(|i| row(i % CLUSTERS, &mut s)).collect();
    let mut corpus: Vec<f32> = (0..n).flat_map(|i| row(i % CLUSTERS, &mut s)).collect();
    // Query i's positive is corpus row i (mod n), made to score about 0.1.
    for i in 0..q.min(n) {
        let mut v: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
        unit(&mut v);
        let qi = &queries[i * d..][..d];
        let mut p: Vec<f32> = v.iter().zip(qi).map(|(x, y)| 0.995 * x + 0.1 * y).collect();
        unit(&mut p);
        corpus[i * d..][..d].copy_from_slice(&p);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let qv = MatrixView::f32(&queries, q, d).unwrap();
    let cv = MatrixView::f32(&corpus, n, d).unwrap();
    let indptr: Vec<i64> = (0..=q as i64).collect();
    let ids: Vec<i64> = (0..q).map(|i| (i % n) as i64).collect();
    let positives = IdLists::from_csr(&indptr, &ids, q, n).unwrap();
    let mut opts = MineOptions::new(5, Metric::Cosine);
    opts.relative_margin = Some(0.05);
    opts.record_removed = Some(64);
    for _ in 0..runs {
        let t = Instant::now();
        let found = search(
            &pool,
            &qv,
            &cv,
            Some(&positives),
            &SearchOptions::new(100, Metric::Cosine),
            &mut NoHooks,
        )
        .unwrap();
        let search_s = t.elapsed().as_secs_f64();
        std::hint::black_box(found);
        let t = Instant::now();
        let mined = mine(
            &pool,
            &MineJob::new(&qv, &cv, &positives, &opts),
            &mut NoHooks,
        )
        .unwrap();
        let mine_s = t.elapsed().as_secs_f64();
        let removed: u64 = mined.removed_counts.iter().flatten().sum();
        let deepest = mined.depth.iter().max().copied().unwrap_or(0);
        let fetches: u64 = mined.fetches.iter().map(|&f| u64::from(f)).sum();
        // Changes whenever an output bit changes (ids, scores, removals, depths, fetches).
        let digest = mined
            .negative_ids
            .iter()
            .map(|&id| id as u64)
            .chain(mined.negative_scores.iter().map(|s| u64::from(s.to_bits())))
            .chain(mined.positive_scores.iter().map(|s| u64::from(s.to_bits())))
            .chain(mined.found.iter().map(|&f| u64::from(f)))
            .chain(mined.removed.iter().map(|r| {
                u64::from(r.query) << 40
                    ^ u64::from(r.id) << 8
                    ^ u64::from(r.score.to_bits()) << 20
                    ^ r.filter as u64
            }))
            .chain(mined.removed_counts.iter().flatten().copied())
            .chain(mined.depth.iter().map(|&d| u64::from(d)))
            .chain(mined.fetches.iter().map(|&f| u64::from(f)))
            .fold(0u64, |h, x| (h ^ x).wrapping_mul(0x100_0000_01b3));
        println!(
            "search(k=100) {search_s:.3} s  mine {mine_s:.3} s  ratio {:.2}  removed/query {:.0}  \
             deepest {deepest}  fetches {fetches}  digest {digest:016x}",
            mine_s / search_s,
            removed as f64 / q as f64
        );
    }
}
