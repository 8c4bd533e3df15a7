//! Micro-kernels that score an `MR x NR` tile of (query, corpus row) pairs from packed panels.
//!
//! Every implementation computes each score as the same chain of fused multiply-adds over the
//! dimensions in increasing order, so all of them return bit-identical scores: the scalar one is
//! the reference that the SIMD ones are property-tested against, and results never depend on the
//! CPU a search runs on, the block size or the thread count.

#[cfg(target_arch = "x86_64")]
mod amx;
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
    /// x86-64 AVX-512F: two query panels against two corpus panels at once (24 zmm
    /// accumulators), or against one (12).
    Avx512,
    /// [`Isa::Avx512`]'s f32 kernels, with the int8 pre-scores in AMX-INT8 tiles
    /// ([`dots_i8_amx`]).
    Amx,
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
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
                if has_vnni() && has_amx() {
                    isas.push(Isa::Amx);
                }
            }
        }
        isas
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512",
            Isa::Amx => "avx512+amx",
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
}

/// Accumulates `a (kc x MR, packed [kc][MR]) . b (kc x NR, packed [kc][NR])` into `c` (MR x NR,
/// row-major). With `accumulate`, `c` holds the partial sums of the previous depth chunks.
/// With `select`, the final scores are compared: the result holds, per tile row, a bit mask of
/// the columns that pass its threshold (zero without `select`).
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
    }
    match isa {
        Isa::Scalar => scalar::tile(kc, a, b, c, accumulate, select),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` returns `Avx2Fma` and `Avx512` only after runtime detection of
        // AVX2 and FMA (and AVX-512F); the panel lengths were checked above.
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => unsafe {
            x86::tile_avx2(kc, a, b, c, accumulate, select)
        },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => {
            unreachable!("x86 kernels are never detected off x86-64")
        }
    }
}

/// Where [`tile_rows`] puts a tile: the tile itself, or folded into `NR` running column
/// maxima (`m[j] = v` for each of the first `valid` rows' `v = tile[i][j]` with `v > m[j]`, in
/// row order: what MaxSim keeps of a tile, without the tile leaving the registers).
pub enum RowsOut<'a> {
    Tile(&'a mut [f32; TILE]),
    Maxima(&'a mut [f32; NR], usize),
}

/// [`tile`] with the `MR` rows taken as they are stored (row `i` is `rows[i][..kc]`, e.g. a
/// row-major matrix's rows) instead of packed `[kc][MR]`: bit for bit the same scores, without
/// the packing (MaxSim scores each stored text's tokens against a query packed once).
#[inline]
pub fn tile_rows(isa: Isa, kc: usize, rows: &[&[f32]; MR], b: &[f32], out: RowsOut<'_>) {
    assert!(
        rows.iter().all(|r| r.len() >= kc) && b.len() >= kc * NR,
        "rows or panel too short"
    );
    match isa {
        Isa::Scalar => scalar::tile_rows(kc, rows, b, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` returns the x86 ISAs only after runtime detection of AVX2 and
        // FMA; the lengths were checked above.
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => unsafe { x86::tile_rows_avx2(kc, rows, b, out) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => {
            unreachable!("x86 kernels are never detected off x86-64")
        }
    }
}

/// The stored rows of [`tile_rows`] against two corpus-layout panels: the same as two
/// [`tile_rows`] calls (bit for bit), faster where the ISA has registers for both.
#[inline]
pub fn tile_rows_pair(
    isa: Isa,
    kc: usize,
    rows: &[&[f32]; MR],
    b: [&[f32]; 2],
    out: [RowsOut<'_>; 2],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => {
            assert!(
                rows.iter().all(|r| r.len() >= kc) && b.iter().all(|b| b.len() >= kc * NR),
                "rows or panels too short"
            );
            // SAFETY: `Avx512` is only constructed after runtime detection of AVX-512F;
            // lengths were checked above.
            unsafe { x86::tile_rows_pair_avx512(kc, rows, b, out) }
        }
        _ => {
            let [o0, o1] = out;
            tile_rows(isa, kc, rows, b[0], o0);
            tile_rows(isa, kc, rows, b[1], o1);
        }
    }
}

/// Two query panels against one corpus panel: the same as two [`tile`] calls (bit for bit),
/// faster where the ISA has registers for both tiles at once.
#[inline]
pub fn tile_pair(
    isa: Isa,
    kc: usize,
    a: [&[f32]; 2],
    b: &[f32],
    c: [&mut [f32; TILE]; 2],
    accumulate: bool,
    select: Option<[Select<'_>; 2]>,
) -> [[u16; MR]; 2] {
    let [c0, c1] = c;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => {
            assert!(a.iter().all(|a| a.len() >= kc * MR) && b.len() >= kc * NR);
            if let Some(select) = &select {
                for s in select {
                    assert!(s.thresholds.len() >= MR);
                }
            }
            // SAFETY: `Avx512` is only constructed after runtime detection of AVX-512F;
            // lengths were checked above.
            unsafe { x86::tile_pair_avx512(kc, a, b, [c0, c1], accumulate, select) }
        }
        _ => {
            let [s0, s1] = match select {
                Some([s0, s1]) => [Some(s0), Some(s1)],
                None => [None, None],
            };
            [
                tile(isa, kc, a[0], b, c0, accumulate, s0),
                tile(isa, kc, a[1], b, c1, accumulate, s1),
            ]
        }
    }
}

/// Two query panels against two corpus panels: the same as four [`tile`] calls (bit for bit).
/// `c[q][j]` is the tile of query panel `q` and corpus panel `j`, and so are the masks.
#[inline]
pub fn tile_quad(
    isa: Isa,
    kc: usize,
    a: [&[f32]; 2],
    b: [&[f32]; 2],
    c: [[&mut [f32; TILE]; 2]; 2],
    accumulate: bool,
    select: Option<[Select<'_>; 2]>,
) -> [[[u16; MR]; 2]; 2] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => {
            assert!(a.iter().all(|a| a.len() >= kc * MR) && b.iter().all(|b| b.len() >= kc * NR));
            if let Some(select) = &select {
                for s in select {
                    assert!(s.thresholds.len() >= MR);
                }
            }
            // SAFETY: `Avx512` is only constructed after runtime detection of AVX-512F;
            // lengths were checked above.
            unsafe { x86::tile_quad_avx512(kc, a, b, c, accumulate, select) }
        }
        _ => {
            let [[c00, c01], [c10, c11]] = c;
            let m0 = tile_pair(isa, kc, a, b[0], [c00, c10], accumulate, select);
            let m1 = tile_pair(isa, kc, a, b[1], [c01, c11], accumulate, select);
            [[m0[0], m1[0]], [m0[1], m1[1]]]
        }
    }
}

impl Isa {
    /// Whether [`tile_quad`] is faster than two [`tile_pair`] calls.
    pub fn quads_tiles(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Amx)
    }

    /// Whether [`tile_pair`] is faster than two [`tile`] calls.
    pub fn pairs_tiles(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Amx)
    }

    /// Whether the int8 pre-scores run through [`dots_i8_amx`] rather than [`tile_i8`].
    pub fn amx_tiles(self) -> bool {
        self == Isa::Amx
    }
}

/// The kernel test of an int8 tile: per query row `i`, the bit mask of the columns `j` whose
/// `y = f32(tile[i][j] - offsets[j]) * scales[j]` (two roundings, in f32) reaches
/// `thresholds[i]`, i.e. `!(y < threshold)` (a NaN threshold lets everything through).
#[inline]
pub fn select_i8(
    isa: Isa,
    tile: &[i32; TILE],
    offsets: &[i32],
    scales: &[f32],
    thresholds: &[f32],
) -> [u16; MR] {
    assert!(offsets.len() >= NR && scales.len() >= NR && thresholds.len() >= MR);
    match isa {
        Isa::Scalar => scalar::select_i8(tile, offsets, scales, thresholds),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` and `Avx512` are only constructed after runtime detection of AVX2;
        // the lengths were checked above.
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => unsafe {
            x86::select_i8_avx2(tile, offsets, scales, thresholds)
        },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => {
            unreachable!("x86 kernels are never detected off x86-64")
        }
    }
}

/// Corpus rows scored at once by [`score_rows`].
pub const ROWS: usize = 64;

/// One query against [`ROWS`] corpus rows packed `[dim][ROWS]`: `out[j]` is the same fused
/// multiply-add chain as [`tile`]'s score of the pair (bit for bit), six times cheaper than a
/// tile when only one query of a panel needs the rows (rescoring pre-scored candidates).
pub fn score_rows(isa: Isa, query: &[f32], panel: &[f32], out: &mut [f32; ROWS]) {
    assert!(panel.len() >= query.len() * ROWS, "packed rows too short");
    match isa {
        Isa::Scalar => scalar::score_rows(query, panel, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` and `Avx512` are only constructed after runtime detection of AVX2
        // and FMA; the panel length was checked above.
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => unsafe { x86::score_rows_avx2(query, panel, out) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => {
            unreachable!("x86 kernels are never detected off x86-64")
        }
    }
}

/// Whether the CPU has AVX-512 VNNI (`vpdpbusd`): a byte dot product per i32 lane in one
/// instruction, twice the multiply rate of f32 FMA (AVX2's `vpmaddubsw` + `vpmaddwd` pair
/// runs at the f32 rate on the cores measured, see the README).
pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The largest query code [`tile_i8`] takes on `isa` (codes travel as bytes `code + levels +
/// 1`): AVX2's `vpmaddubsw` adds pairs of byte products in saturating i16, and `2 * 127 * 127`
/// is the largest pair sum that cannot saturate, so queries get 63 levels there; VNNI and the
/// scalar kernel sum in i32 and take full bytes (127 levels: half the query's rounding error).
pub fn query_levels(isa: Isa) -> i32 {
    match isa {
        Isa::Avx2Fma => 63,
        Isa::Avx512 if !has_vnni() => 63,
        Isa::Scalar | Isa::Avx512 | Isa::Amx => 127,
    }
}

/// Depth bytes per step of the int8 kernels: `vpmaddubsw` + `vpmaddwd` (and VNNI's
/// `vpdpbusd`) sum four byte products into one i32 lane.
pub const GROUP: usize = 4;

/// The integer dots of an `MR x NR` tile of int8 codes: `a` holds `groups` steps of `MR` query
/// rows x `GROUP` unsigned bytes (`[g][MR][GROUP]`), `b` as many steps of `NR` corpus rows x
/// `GROUP` signed bytes (`[g][NR][GROUP]`); `c[i * NR + j]` becomes `sum a[.][i][.] * b[.][j][.]`.
/// Exact integer arithmetic: every implementation returns the same tile. Query bytes must be at
/// most `2 * query_levels(isa) + 1` (AVX2's pair sums saturate in i16 past that), and
/// `groups * GROUP * 255 * 128` must fit in i32.
#[inline]
pub fn tile_i8(isa: Isa, groups: usize, a: &[u8], b: &[i8], c: &mut [i32; TILE]) {
    assert!(
        a.len() >= groups * MR * GROUP && b.len() >= groups * NR * GROUP,
        "packed int8 panels too short"
    );
    let top = 2 * query_levels(isa) + 1;
    debug_assert!(a[..groups * MR * GROUP]
        .iter()
        .all(|&x| i32::from(x) <= top));
    match isa {
        Isa::Scalar => scalar::tile_i8(groups, a, b, c),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only constructed after runtime detection of AVX-512F, and VNNI
        // is detected here; the panel lengths were checked above.
        Isa::Avx512 | Isa::Amx if has_vnni() => unsafe { x86::tile_i8_vnni(groups, a, b, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` and `Avx512` are only constructed after runtime detection of AVX2;
        // the panel lengths were checked above.
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => unsafe { x86::tile_i8_avx2(groups, a, b, c) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma | Isa::Avx512 | Isa::Amx => {
            unreachable!("x86 kernels are never detected off x86-64")
        }
    }
}

/// Whether this process may run AMX-INT8 tiles (the CPU has them, the OS saves their state
/// and granted it to this process); asked once per process.
pub fn has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *GRANTED.get_or_init(amx::request)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Query rows per AMX tile (and corpus rows: [`NR`]).
pub const AMX_ROWS: usize = 16;
/// Depth bytes per AMX tile row: `AMX_DEPTH / GROUP` groups of a corpus panel make one tile.
pub const AMX_DEPTH: usize = 64;
/// Query rows of one [`dots_i8_amx`] step: two tiles against two corpus panels (four
/// accumulator tiles, two query and two corpus tiles: the eight tile registers).
pub const AMX_QUERY_ROWS: usize = 2 * AMX_ROWS;

/// The integer dots of `pairs * AMX_QUERY_ROWS` query rows (row-major: row `r` is
/// `queries[r * stride..][..groups * GROUP]`, unsigned bytes) against two corpus panels (the
/// [`tile_i8`] layout `[group][NR][GROUP]`): `out[r * 2 * NR + p * NR + j]` is row `r`'s dot
/// with row `j` of `panels[p]`. Exact integer sums, as [`tile_i8`]. `groups` must be a
/// multiple of `AMX_DEPTH / GROUP`; without AMX ([`has_amx`]) the scalar reference runs.
pub fn dots_i8_amx(
    groups: usize,
    queries: &[u8],
    stride: usize,
    pairs: usize,
    panels: [&[i8]; 2],
    out: &mut [i32],
) {
    let depth = groups * GROUP;
    assert!(
        groups > 0 && depth.is_multiple_of(AMX_DEPTH) && stride >= depth,
        "AMX panels must hold whole 64-byte depth chunks"
    );
    let rows = pairs * AMX_QUERY_ROWS;
    assert!(
        rows == 0 || queries.len() >= (rows - 1) * stride + depth,
        "query rows too short"
    );
    assert!(
        panels.iter().all(|p| p.len() >= depth * NR),
        "int8 panels too short"
    );
    assert!(out.len() >= rows * 2 * NR, "output too short");
    #[cfg(target_arch = "x86_64")]
    if has_amx() {
        // SAFETY: AMX was granted; the shapes and lengths were checked above.
        unsafe { amx::dots(groups, queries, stride, pairs, panels, out) };
        return;
    }
    scalar::dots_i8_rows(groups, queries, stride, rows, panels, out);
}

/// The kernel test of [`select_i8`] on one row of [`NR`] int8 dots against one threshold.
#[inline]
pub fn select_i8_row(
    isa: Isa,
    dots: &[i32],
    offsets: &[i32],
    scales: &[f32],
    threshold: f32,
) -> u16 {
    assert!(dots.len() >= NR && offsets.len() >= NR && scales.len() >= NR);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` and `Amx` are only constructed after runtime detection of
        // AVX-512F; the lengths were checked above.
        Isa::Avx512 | Isa::Amx => unsafe {
            x86::select_i8_row_avx512(dots, offsets, scales, threshold)
        },
        _ => scalar::select_i8_row(dots, offsets, scales, threshold),
    }
}

/// Widens f16 to f32 exactly (F16C when the CPU has it).
pub fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: F16C and AVX were detected at run time; the lengths are equal.
        unsafe { x86::f16_to_f32_f16c(src, dst) };
        return;
    }
    f16_to_f32_scalar(src, dst);
}

/// The reference conversion.
pub fn f16_to_f32_scalar(src: &[half::f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_reference_for_every_non_nan_value() {
        let src: Vec<half::f16> = (0..=u16::MAX)
            .map(half::f16::from_bits)
            .filter(|x| !x.is_nan())
            .collect();
        for len in [src.len(), 7, 8, 9, 1000] {
            let src = &src[..len];
            let mut fast = vec![0.0; len];
            let mut reference = vec![0.0; len];
            f16_to_f32(src, &mut fast);
            f16_to_f32_scalar(src, &mut reference);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&reference));
        }
    }
}
