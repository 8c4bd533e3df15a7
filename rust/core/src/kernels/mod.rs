//! Micro-kernels that score an `MR x NR` tile of (query, corpus row) pairs from packed panels.
//!
//! Every implementation computes each score as the same chain of fused multiply-adds over the
//! dimensions in increasing order, so all of them return bit-identical scores: the scalar one is
//! the reference that the SIMD ones are property-tested against, and results never depend on the
//! CPU a search runs on, the block size or the thread count.

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Queries per tile (rows of the accumulator block).
pub const MR: usize = 6;
/// Corpus rows per tile (columns of the accumulator block).
pub const NR: usize = 16;
/// Elements of one tile.
pub const TILE: usize = MR * NR;

/// An instruction set the kernels can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust; `f32::mul_add` (vectorised by the compiler on NEON).
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2Fma,
}

impl Isa {
    /// The fastest instruction set this CPU supports.
    pub fn detect() -> Isa {
        *Self::available()
            .last()
            .expect("scalar is always available")
    }

    /// Every instruction set this CPU supports, slowest first.
    pub fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            isas.push(Isa::Avx2Fma);
        }
        isas
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2Fma => "avx2+fma",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Self::available().into_iter().find(|isa| isa.name() == name)
    }
}

/// What to do with a tile once its last depth chunk is accumulated.
#[derive(Clone, Copy, Debug)]
pub struct Select<'a> {
    /// Per query row of the tile: a score passes when `!(score <= threshold)`, so a NaN
    /// threshold lets everything through and `+inf` nothing.
    pub thresholds: &'a [f32],
    /// Per corpus column: a factor applied to the final scores (inverse norms for cosine).
    pub column_scale: Option<&'a [f32]>,
}

/// Accumulates `a (kc x MR, packed [kc][MR]) . b (kc x NR, packed [kc][NR])` into `c` (MR x NR,
/// row-major). With `accumulate`, `c` holds the partial sums of the previous depth chunks.
/// With `select`, the final scores are scaled and compared: the result holds, per tile row, a
/// bit mask of the columns that pass its threshold (zero without `select`).
#[inline]
pub fn tile(
    isa: Isa,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32; TILE],
    accumulate: bool,
    select: Option<Select<'_>>,
) -> [u16; MR] {
    assert!(
        a.len() >= kc * MR && b.len() >= kc * NR,
        "packed panels too short"
    );
    if let Some(s) = &select {
        assert!(s.thresholds.len() >= MR);
        assert!(s.column_scale.is_none_or(|scale| scale.len() >= NR));
    }
    match isa {
        Isa::Scalar => scalar::tile(kc, a, b, c, accumulate, select),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` is only constructed by `available()` after runtime detection of
        // AVX2 and FMA; the panel lengths were checked above.
        Isa::Avx2Fma => unsafe { x86::tile_avx2(kc, a, b, c, accumulate, select) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma => unreachable!("AVX2 is never detected off x86-64"),
    }
}

/// Widens f16 to f32 exactly (F16C when the CPU has it).
pub fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    src.convert_to_f32_slice(dst);
}
