//! Quick throughput check of the search kernel on random data:
//! `cargo run --release -p negmine-core --example speed -- Q N D K [threads] [f16]`
//! (`PRECISION=int8`: also checks the result equals the f32 path's).

use std::time::Instant;

use negmine_core::{search, MatrixView, Metric, NoHooks, SearchOptions};

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
    let (q, n, d, k) = (args[0], args[1], args[2], args[3]);
    let threads = args.get(4).copied().unwrap_or(2);
    let f16 = std::env::args().any(|a| a == "f16");
    let mut s = 42u64;
    let queries: Vec<f32> = (0..q * d).map(|_| lcg(&mut s)).collect();
    let corpus: Vec<f32> = (0..n * d).map(|_| lcg(&mut s)).collect();
    let corpus16: Vec<half::f16> = corpus.iter().map(|&x| half::f16::from_f32(x)).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let qv = MatrixView::f32(&queries, q, d).unwrap();
    let cv = if f16 {
        MatrixView::f16(&corpus16, n, d).unwrap()
    } else {
        MatrixView::f32(&corpus, n, d).unwrap()
    };
    let mut opts = SearchOptions::new(k, Metric::Dot);
    if let Ok(name) = std::env::var("ISA") {
        opts.isa = Some(negmine_core::kernels::Isa::from_name(&name).expect("available isa"));
    }
    if let Ok(b) = std::env::var("BLOCK") {
        opts.block_rows = Some(b.parse().unwrap());
    }
    let reference = search(&pool, &qv, &cv, None, &opts, &mut NoHooks).unwrap();
    if let Ok(name) = std::env::var("PRECISION") {
        use negmine_core::choice::Choice;
        opts.precision = negmine_core::search::Precision::parse(&name, &name).expect("a precision");
    }
    for _ in 0..3 {
        let t = Instant::now();
        let r = search(&pool, &qv, &cv, None, &opts, &mut NoHooks).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let gflops = 2.0 * (q * n * d) as f64 / secs / 1e9;
        println!("{secs:.3} s  {gflops:.1} GFLOP/s  first id {}", r.ids[0]);
        assert!(r == reference, "differs from the f32 path");
    }
}
