//! Quick timing of exact mining on random data (the search plus the filter walk and its
//! deepening rounds): `cargo run --release -p negmine-core --example mine_speed -- Q N D NEG
//! [threads] [margin]`. With `margin`, a relative margin against random positives empties most
//! windows, so queries are fetched again deeper, round after round.

use std::time::Instant;

use negmine_core::mine::{mine, MineJob, MineOptions, Sampling};
use negmine_core::{IdLists, MatrixView, Metric, NoHooks};

fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .take(5)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (q, n, d, neg) = (args[0], args[1], args[2], args[3]);
    let threads = args.get(4).copied().unwrap_or(2);
    let mut s = 42u64;
    let queries: Vec<f32> = (0..q * d).map(|_| lcg(&mut s)).collect();
    let corpus: Vec<f32> = (0..n * d).map(|_| lcg(&mut s)).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let qv = MatrixView::f32(&queries, q, d).unwrap();
    let cv = MatrixView::f32(&corpus, n, d).unwrap();
    // Query i's positive: corpus row i (mod n).
    let indptr: Vec<i64> = (0..=q as i64).collect();
    let ids: Vec<i64> = (0..q).map(|i| (i % n) as i64).collect();
    let positives = IdLists::from_csr(&indptr, &ids, q, n).unwrap();
    let mut opts = MineOptions::new(neg, Metric::Cosine);
    if std::env::args().any(|a| a == "margin") {
        opts.relative_margin = Some(0.05);
    }
    opts.range_min = 8;
    opts.sampling_strategy = Sampling::Random;
    for _ in 0..3 {
        let t = Instant::now();
        let mined = mine(
            &pool,
            &MineJob::new(&qv, &cv, &positives, &opts),
            &mut NoHooks,
        )
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let deepest = mined.depth.iter().max().copied().unwrap_or(0);
        let found: u64 = mined.found.iter().map(|&f| u64::from(f)).sum();
        // Changes whenever an id, a score bit or a depth changes.
        let digest = mined
            .negative_ids
            .iter()
            .zip(&mined.negative_scores)
            .map(|(&id, &s)| id as u64 ^ u64::from(s.to_bits()) << 32)
            .chain(mined.depth.iter().map(|&d| u64::from(d)))
            .fold(0u64, |h, x| (h ^ x).wrapping_mul(0x100_0000_01b3));
        println!("{secs:.3} s  deepest {deepest}  found {found}  digest {digest:016x}");
    }
}
