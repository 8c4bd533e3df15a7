//! Single-thread throughput of each micro-kernel on cache-resident panels, as a share of the
//! FMA peak: `cargo run --release -p negmine-core --example kernel_peak`.

use std::time::Instant;

use negmine_core::kernels::{self, Isa, Select, MR, NR, TILE};

fn main() {
    let kc = 384;
    let a: Vec<f32> = (0..kc * MR * 24).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..kc * NR).map(|i| (i % 5) as f32 * 0.1).collect();
    let thresholds = [f32::INFINITY; 2 * MR];
    for isa in Isa::available() {
        if isa == Isa::Scalar {
            continue;
        }
        let mut c = [0.0f32; TILE];
        let reps = 20_000;
        let t = Instant::now();
        for _ in 0..reps {
            for panel in a.chunks_exact(kc * MR) {
                let select = Select {
                    thresholds: &thresholds,
                    column_scale: None,
                };
                std::hint::black_box(kernels::tile(
                    isa,
                    kc,
                    panel,
                    &b,
                    &mut c,
                    false,
                    Some(select),
                ));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let flop = 2.0 * (MR * NR * kc * 24 * reps) as f64;
        println!("{:10} {:.1} GFLOP/s", isa.name(), flop / secs / 1e9);
    }
}
