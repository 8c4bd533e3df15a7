//! Rate of the AMX-INT8 dots kernel on L1/L2-resident data, and the `tdpbusd` peak of this
//! core (a loop on tile registers only, no loads):
//! `cargo run --release -p negmine-core --example amx_dots -- DIM QUERIES PANELS`
use std::time::Instant;

use negmine_core::kernels::{self, AMX_QUERY_ROWS, GROUP, NR};
use negmine_core::pack::AlignedBytes;

/// `tdpbusd` on tile registers only: four independent accumulators, as the kernel has.
#[cfg(target_arch = "x86_64")]
fn register_peak() -> Option<f64> {
    use std::arch::asm;
    if !kernels::has_amx() {
        return None;
    }
    #[repr(C, align(64))]
    struct Config([u8; 64]);
    let mut config = Config([0; 64]);
    config.0[0] = 1;
    for t in 0..8 {
        config.0[16 + 2 * t] = 64;
        config.0[48 + t] = 16;
    }
    let steps = 5_000_000u64;
    let started = Instant::now();
    // SAFETY: AMX was granted to this process (`has_amx`); the config is palette 1 with eight
    // 16 x 64-byte tiles; the products read and write tile registers only.
    unsafe {
        asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        for _ in 0..steps {
            asm!(
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        asm!("tilerelease", options(nostack, nomem));
    }
    let ops = (steps * 4) as f64 * 2.0 * 16.0 * 16.0 * 64.0;
    Some(ops / started.elapsed().as_secs_f64() / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn register_peak() -> Option<f64> {
    None
}

fn main() {
    match register_peak() {
        Some(gops) => println!("tdpbusd on registers: {gops:.0} GOP/s"),
        None => println!("no AMX-INT8 here: the kernel below is the scalar reference"),
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (dim, queries, panels) = (args[0], args[1], args[2]);
    let groups = dim / GROUP;
    let pairs = queries / AMX_QUERY_ROWS;
    // 64-byte aligned, as the search holds them: tile rows that straddle cache lines load
    // several times slower.
    let (mut q, mut c, mut out) = (
        AlignedBytes::default(),
        AlignedBytes::default(),
        AlignedBytes::default(),
    );
    q.filled(queries * dim, 3);
    c.filled(panels * dim * NR, (-2i8) as u8);
    out.filled(queries * 2 * NR * 4, 0);
    let (q, c, out) = (q.as_slice(), c.as_i8(), out.as_i32_mut());
    let reps = 200;
    let started = Instant::now();
    for _ in 0..reps {
        for jr in (0..panels).step_by(2) {
            let b0 = &c[jr * dim * NR..][..dim * NR];
            let b1 = &c[(jr + 1) * dim * NR..][..dim * NR];
            kernels::dots_i8_amx(groups, q, dim, pairs, [b0, b1], out);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let ops = 2.0 * (reps * queries * panels * NR * dim) as f64;
    println!(
        "dim {dim} queries {queries} panels {panels}: {:.0} GOP/s ({} calls/s)",
        ops / secs / 1e9,
        ((reps * panels / 2) as f64 / secs) as u64
    );
    assert_eq!(out[0], -6 * dim as i32);
}
