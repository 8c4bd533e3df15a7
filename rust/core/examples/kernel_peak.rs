//! Single-thread throughput of each micro-kernel on cache-resident panels, to compare with the
//! FMA peak, and of the int8 pre-scoring kernel (GOP/s: a multiply and an add per byte pair):
//! `cargo run --release -p negmine-core --example kernel_peak`.

use std::time::Instant;

use negmine_core::kernels::{self, Isa, Select, MR, NR, TILE};

fn main() {
    let kc = 384;
    let panels = 24;
    let a: Vec<f32> = (0..kc * MR * panels)
        .map(|i| (i % 7) as f32 * 0.1)
        .collect();
    let b: Vec<f32> = (0..kc * NR).map(|i| (i % 5) as f32 * 0.1).collect();
    let b2: Vec<f32> = (0..kc * NR).map(|i| (i % 3) as f32 * 0.1).collect();
    let thresholds = [f32::INFINITY; MR];
    let select = Select {
        thresholds: &thresholds,
    };
    let reps = 10_000;
    let flop = 2.0 * (MR * NR * kc * panels * reps) as f64;
    for round in 0..3 {
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            let (mut c0, mut c1) = ([0.0f32; TILE], [0.0f32; TILE]);
            let t = Instant::now();
            for _ in 0..reps {
                let mut pairs = a.chunks_exact(2 * kc * MR);
                for pair in &mut pairs {
                    let (a0, a1) = pair.split_at(kc * MR);
                    let m = kernels::tile_pair(
                        isa,
                        kc,
                        [a0, a1],
                        &b,
                        [&mut c0, &mut c1],
                        false,
                        Some([select, select]),
                    );
                    std::hint::black_box(m);
                }
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "round {round} {:10} pair {:.1} GFLOP/s",
                isa.name(),
                flop / secs / 1e9
            );
            // Two corpus panels at once (the kernel the search uses where the ISA quads).
            let mut c = [[0.0f32; TILE]; 4];
            let t = Instant::now();
            for _ in 0..reps / 2 {
                for pair in a.chunks_exact(2 * kc * MR) {
                    let (a0, a1) = pair.split_at(kc * MR);
                    let [c00, c01, c10, c11] = &mut c;
                    let m = kernels::tile_quad(
                        isa,
                        kc,
                        [a0, a1],
                        [&b, &b2],
                        [[c00, c01], [c10, c11]],
                        false,
                        Some([select, select]),
                    );
                    std::hint::black_box(m);
                }
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "round {round} {:10} quad {:.1} GFLOP/s",
                isa.name(),
                flop / secs / 1e9
            );
            // The int8 pre-scoring kernel over the same shapes (depth in bytes).
            let groups = kc / kernels::GROUP;
            let qa: Vec<u8> = (0..kc * MR * panels).map(|i| (i % 127) as u8).collect();
            let qb: Vec<i8> = (0..kc * NR).map(|i| (i % 255) as i8).collect();
            let mut ci = [0i32; TILE];
            let t = Instant::now();
            for _ in 0..reps {
                for a in qa.chunks_exact(kc * MR) {
                    kernels::tile_i8(isa, groups, a, &qb, &mut ci);
                    std::hint::black_box(&ci);
                }
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "round {round} {:10} int8 {:.1} GOP/s",
                isa.name(),
                flop / secs / 1e9
            );
        }
    }
}
