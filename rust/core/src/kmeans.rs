//! Seeded k-means whose assignment step is the exact top-k engine with k = 1.
//!
//! - `Cosine` (spherical k-means): rows and centroids are unit vectors, a row goes to the
//!   centroid with the largest inner product, a centroid is the normalised mean of its rows.
//! - `L2`: a row goes to the centroid with the smallest `||x - c||^2`, found as the largest
//!   `[x, s] . [2c, -||c||^2 / s]`, so the same kernels serve both. `s` is the smallest power
//!   of two at least the largest row norm (and at least 1): it balances the two sides' norms so
//!   that the search's overflow bound holds whenever the squared norms fit float32 (every
//!   squared norm must be below `f32::MAX / 16`), and, being a power of two, it leaves every
//!   score bit for bit that of `[x, 1] . [2c, -||c||^2]` (unless `||c||^2 / s` is subnormal).
//!
//! Initialisation is k-means++ (seeded D^2 sampling) over a seeded subset of at most
//! `16 k + 1024` training rows, which keeps it cheap for thousands of clusters (at d = 384 and
//! k = 1024 the pool, read once per centroid, still fits a 32 MiB L3); training can
//! use a seeded sample of rows, after which every row is assigned. The training rows are
//! converted once and kept when they take at most 1 GiB; otherwise, and for the final
//! assignment of all rows, rows stream through in chunks, so a memory-mapped input is never
//! copied whole; sums are accumulated in
//! f64 chunk by chunk in row order, so results are identical for any thread count. An empty
//! cluster takes the row that is worst served by its centroid (ties: smaller row index).

use rayon::prelude::*;

use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::kernels::{Isa, MR};
use crate::matrix::MatrixView;
use crate::memory;
use crate::pack::{normalize, sum_in_lanes};
use crate::rng::Rng;
use crate::search::{int8_is_fast, nearest, PackedRows};

/// The largest squared row norm `L2` accepts. With `M^2` below it, `||x - c||^2 <= 4 M^2`
/// (k-means++' D^2, summed in f32) and the engine's `||[x, s]|| ||[2c, -||c||^2 / s]|| <=
/// 5 M^2` stay well below `f32::MAX` and the search's limit.
const L2_MAX_SQUARED_NORM: f64 = f32::MAX as f64 / 16.0;

/// The purpose of k-means' random stream (see [`Rng::stream`]).
pub(crate) const KMEANS_STREAM: u64 = 0x6b6d_6561_6e73;

/// The geometry of the clustering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KMeansMetric {
    Cosine,
    L2,
}

impl Choice for KMeansMetric {
    const ARGUMENT: &'static str = "metric";
    const NAMES: &'static [(&'static str, Self)] =
        &[("cosine", KMeansMetric::Cosine), ("l2", KMeansMetric::L2)];
}

/// Options of [`kmeans`].
#[derive(Clone, Debug)]
pub struct KMeansOptions {
    pub n_clusters: usize,
    pub metric: KMeansMetric,
    pub iterations: usize,
    pub seed: u64,
    /// Train on this many rows (seeded sample), then assign all rows.
    pub sample: Option<usize>,
    /// How the first centroids are chosen.
    pub init: Init,
}

/// Initialisation of [`kmeans`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Seeded k-means++ (D^2 sampling) on a bounded subset of the training rows.
    PlusPlus,
    /// `n_clusters` distinct training rows at random (faiss' default): cheaper, worse starts.
    Random,
}

impl Choice for Init {
    const ARGUMENT: &'static str = "init";
    const NAMES: &'static [(&'static str, Self)] =
        &[("k-means++", Init::PlusPlus), ("random", Init::Random)];
}

/// The result of [`kmeans`].
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    /// `n_clusters x dim`, row-major.
    pub centroids: Vec<f32>,
    /// A cluster per input row.
    pub assignments: Vec<u32>,
    /// Sum over all rows of the distance to their centroid (`1 - cos` or `||x - c||^2`).
    pub inertia: f64,
    /// The training inertia before each update (non-increasing up to rounding).
    pub history: Vec<f64>,
}

/// Rows per assignment call: bounds the memory of the converted chunk. Whole query panels
/// (packed rows are read from a panel's first row on).
const CHUNK_ROWS: usize = 16_384 / MR * MR;

/// `count` distinct entries of `idx` (the indices `0..n`, in order), sorted, chosen by a seeded
/// partial Fisher-Yates.
fn sample_rows(mut idx: Vec<usize>, count: usize, rng: &mut Rng) -> Vec<usize> {
    let n = idx.len();
    for i in 0..count {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(count);
    // Row order makes a mapped file's reads sequential.
    idx.sort_unstable();
    idx
}

/// The assignment problem in the engine's terms: converted rows and centroids.
struct Geometry {
    metric: KMeansMetric,
    dim: usize,
    /// `s` of the module docs (1 for cosine).
    scale: f32,
}

impl Geometry {
    /// Width of converted rows.
    fn width(&self) -> usize {
        match self.metric {
            KMeansMetric::Cosine => self.dim,
            KMeansMetric::L2 => self.dim + 1,
        }
    }

    /// Row `i` of `data` as the engine sees it, and its contribution to the distance
    /// (`1` for cosine, `||x||^2` for L2).
    fn convert_row(&self, data: &MatrixView<'_>, i: usize, out: &mut [f32]) -> f64 {
        data.row_into(i, &mut out[..self.dim]);
        match self.metric {
            KMeansMetric::Cosine => {
                normalize(out);
                1.0
            }
            KMeansMetric::L2 => {
                out[self.dim] = self.scale;
                out[..self.dim]
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum()
            }
        }
    }

    /// `rows` of `data` converted into `out` (`rows.len() x width`), their bases into `bases`.
    fn convert_rows(
        &self,
        pool: &rayon::ThreadPool,
        data: &MatrixView<'_>,
        rows: &[usize],
        out: &mut [f32],
        bases: &mut [f64],
    ) {
        pool.install(|| {
            out.par_chunks_exact_mut(self.width())
                .zip(bases.par_iter_mut())
                .zip(rows.par_iter())
                .for_each(|((out, base), &r)| *base = self.convert_row(data, r, out))
        });
    }

    /// Centroids as the engine's corpus.
    fn convert_centroids(&self, centroids: &[f32]) -> Vec<f32> {
        match self.metric {
            KMeansMetric::Cosine => centroids.to_vec(),
            KMeansMetric::L2 => centroids
                .chunks_exact(self.dim)
                .flat_map(|c| {
                    let sq: f64 = c.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                    c.iter()
                        .map(|&x| 2.0 * x)
                        .chain(std::iter::once((-sq / f64::from(self.scale)) as f32))
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }

    /// The distance of a row given its engine score.
    fn distance(&self, base: f64, score: f32) -> f64 {
        (base - f64::from(score)).max(0.0)
    }
}

// The loops below are plain Rust compiled for baseline x86-64 (SSE2) unless a caller enables
// more: each has an AVX2 twin, the same code under `target_feature`, picked at run time. The
// arithmetic and its order are the same, so the results are identical bit for bit.

/// `sum[j] += row[j]` in f64: the centroid update's inner loop.
fn add_row(sum: &mut [f64], row: &[f32]) {
    #[inline(always)]
    fn portable(sum: &mut [f64], row: &[f32]) {
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(sum: &mut [f64], row: &[f32]) {
        portable(sum, row)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        unsafe { avx2(sum, row) };
        return;
    }
    portable(sum, row)
}

/// `||a - b||^2`, summed in 8 f32 lanes in a fixed order (k-means++' D^2 weights).
fn squared(a: &[f32], b: &[f32]) -> f64 {
    #[inline(always)]
    fn portable(a: &[f32], b: &[f32]) -> f64 {
        f64::from(sum_in_lanes(a, b, |x, y| (x - y) * (x - y)))
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(a: &[f32], b: &[f32]) -> f64 {
        portable(a, b)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { avx2(a, b) };
    }
    portable(a, b)
}

/// Seeded k-means++: the first centroid uniformly, each next one with probability
/// proportional to the squared distance to the nearest centroid so far.
fn plus_plus(
    pool: &rayon::ThreadPool,
    data: &MatrixView<'_>,
    training: &[usize],
    opts: &KMeansOptions,
    rng: &mut Rng,
) -> Vec<f32> {
    let (dim, k) = (data.dim(), opts.n_clusters);
    let pool_size = training.len().min(16 * k + 1024);
    let subset: Vec<usize> = sample_rows((0..training.len()).collect(), pool_size, rng)
        .into_iter()
        .map(|i| training[i])
        .collect();
    let mut rows = vec![0.0f32; subset.len() * dim];
    for (row, &r) in rows.chunks_exact_mut(dim).zip(&subset) {
        data.row_into(r, row);
        if opts.metric == KMeansMetric::Cosine {
            normalize(row);
        }
    }
    let mut centroids = Vec::with_capacity(k * dim);
    let mut nearest = vec![f64::INFINITY; subset.len()];
    let mut pick = rng.below(subset.len());
    for _ in 0..k {
        let chosen = rows[pick * dim..(pick + 1) * dim].to_vec();
        pool.install(|| {
            nearest
                .par_iter_mut()
                .zip(rows.par_chunks_exact(dim))
                .for_each(|(d, row)| *d = d.min(squared(row, &chosen)))
        });
        centroids.extend_from_slice(&chosen);
        // Cumulative sums in row order: the same pick for any thread count.
        let total: f64 = nearest.iter().sum();
        pick = if total > 0.0 {
            let target = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut acc = 0.0;
            nearest
                .iter()
                .position(|&d| {
                    acc += d;
                    acc > target
                })
                .unwrap_or(subset.len() - 1)
        } else {
            // Every row coincides with a centroid: any row will do.
            rng.below(subset.len())
        };
    }
    centroids
}

/// Rows to assign, as the engine sees them: converted chunk by chunk as they stream past, or
/// converted once and kept (the training rows, when they fit [`KEEP_CONVERTED_BYTES`]).
enum Rows<'a> {
    Streamed {
        data: &'a MatrixView<'a>,
        rows: &'a [usize],
    },
    /// Converted once, row by row (for the centroid sums) and packed for the kernels.
    Converted {
        rows: Vec<f32>,
        bases: Vec<f64>,
        packed: PackedRows,
    },
}

/// From this many centroids on, the assignment scores the rows from int8 codes where the CPU
/// multiplies int8 faster than f32 ([`int8_is_fast`]) and rescores in f32 only the few
/// centroids the bounds leave (the same assignments bit for bit: [`PackedRows::code`]).
/// Below, coding the centroids and rescoring a panel per row cost more than they save.
const CODED_MIN_CLUSTERS: usize = 64;

/// Codes `packed` for the int8 kernel where that pays for `n_clusters` centroids: cosine only.
/// L2's rows carry their scale `s` as one more coordinate, and the centroids `-||c||^2 / s`:
/// the largest coordinates by far, they set each row's int8 step (about five times coarser on
/// unit-norm embeddings), and bounds that wide leave so many centroids to rescore that the f32
/// path is faster (2.3x faster on MiniLM embeddings, 256 centroids).
fn code_if_it_pays(
    pool: &rayon::ThreadPool,
    packed: &mut PackedRows,
    metric: KMeansMetric,
    n_clusters: usize,
) {
    let isa = Isa::detect();
    if metric == KMeansMetric::Cosine && n_clusters >= CODED_MIN_CLUSTERS && int8_is_fast(isa) {
        packed.code(pool, isa);
    }
}

/// Training rows up to this size are converted once instead of on every iteration (faiss
/// likewise holds its training sample in memory).
const KEEP_CONVERTED_BYTES: usize = 1 << 30;

impl<'a> Rows<'a> {
    fn streamed(data: &'a MatrixView<'a>, rows: &'a [usize]) -> Self {
        Rows::Streamed { data, rows }
    }

    /// The rows converted once when they fit the budget, else streamed.
    fn training(
        pool: &rayon::ThreadPool,
        data: &'a MatrixView<'a>,
        rows: &'a [usize],
        geometry: &Geometry,
        n_clusters: usize,
    ) -> Result<Self> {
        let width = geometry.width();
        // Held twice (row by row and packed), and maybe once more as int8 codes.
        if rows
            .len()
            .saturating_mul(2 * width * std::mem::size_of::<f32>() + width.next_multiple_of(64))
            > KEEP_CONVERTED_BYTES
        {
            return Ok(Rows::streamed(data, rows));
        }
        let mut converted = vec![0.0f32; rows.len() * width];
        let mut bases = vec![0.0f64; rows.len()];
        geometry.convert_rows(pool, data, rows, &mut converted, &mut bases);
        let mut packed = PackedRows::new(pool, &MatrixView::f32(&converted, rows.len(), width)?)?;
        code_if_it_pays(pool, &mut packed, geometry.metric, n_clusters);
        Ok(Rows::Converted {
            rows: converted,
            bases,
            packed,
        })
    }

    fn len(&self) -> usize {
        match self {
            Rows::Streamed { rows, .. } => rows.len(),
            Rows::Converted { bases, .. } => bases.len(),
        }
    }
}

/// One pass over `rows`: nearest centroid and distance per row, and (optionally) the f64 sums
/// and counts of the rows per cluster for the update.
fn assign(
    pool: &rayon::ThreadPool,
    rows: &Rows<'_>,
    geometry: &Geometry,
    centroids: &[f32],
    n_clusters: usize,
    mut sums: Option<(&mut [f64], &mut [u64])>,
    hooks: &mut dyn Hooks,
) -> Result<(Vec<u32>, Vec<f64>)> {
    let (width, n) = (geometry.width(), rows.len());
    let engine_centroids = geometry.convert_centroids(centroids);
    let corpus = MatrixView::f32(&engine_centroids, n_clusters, width)?;
    let what = || format!("the k-means assignments of {n} rows");
    let mut assignments = memory::reserved(n, what)?;
    let mut distances = memory::reserved(n, what)?;
    let mut chunk = Vec::new();
    let mut chunk_bases = Vec::new();
    for start in (0..n).step_by(CHUNK_ROWS) {
        let len = CHUNK_ROWS.min(n - start);
        let (converted, bases, found): (&[f32], &[f64], _) = match rows {
            Rows::Streamed { data, rows } => {
                chunk.resize(len * width, 0.0);
                chunk_bases.resize(len, 0.0);
                let part = &rows[start..start + len];
                geometry.convert_rows(pool, data, part, &mut chunk, &mut chunk_bases);
                let mut packed = PackedRows::new(pool, &MatrixView::f32(&chunk, len, width)?)?;
                code_if_it_pays(pool, &mut packed, geometry.metric, n_clusters);
                let found = nearest(pool, None, &packed, 0..len, &corpus, hooks)?;
                (&chunk, &chunk_bases, found)
            }
            Rows::Converted {
                rows,
                bases,
                packed,
            } => (
                &rows[start * width..(start + len) * width],
                &bases[start..start + len],
                nearest(pool, None, packed, start..start + len, &corpus, hooks)?,
            ),
        };
        let first = assignments.len();
        for (&base, &(score, id)) in bases.iter().zip(&found) {
            assignments.push(id);
            distances.push(geometry.distance(base, score));
        }
        if let Some((sums, counts)) = sums.as_mut() {
            // Each cluster's rows are added in row order by one thread: the same sums for
            // any thread count. The clusters are dealt to groups (cluster `c` to group
            // `c % groups`); each group walks the chunk's rows in order and adds those of its
            // clusters, so the rows are read front to back rather than cluster by cluster
            // (the sums are bound by those reads).
            let dim = geometry.dim;
            let labels = &assignments[first..];
            let groups = (4 * pool.current_num_threads()).min(n_clusters).max(1);
            let running: &[f64] = sums;
            let added: Vec<(Vec<f64>, Vec<u64>)> = pool.install(|| {
                (0..groups)
                    .into_par_iter()
                    .map(|g| {
                        // The group's clusters' running sums, continued row by row.
                        let mut local: Vec<f64> = (g..n_clusters)
                            .step_by(groups)
                            .flat_map(|c| running[c * dim..(c + 1) * dim].iter().copied())
                            .collect();
                        let mut local_counts = vec![0u64; local.len() / dim.max(1)];
                        for (i, &c) in labels.iter().enumerate() {
                            let c = c as usize;
                            if c % groups == g {
                                let slot = c / groups;
                                local_counts[slot] += 1;
                                let row = &converted[i * width..i * width + dim];
                                add_row(&mut local[slot * dim..(slot + 1) * dim], row);
                            }
                        }
                        (local, local_counts)
                    })
                    .collect()
            });
            for (g, (local, local_counts)) in added.into_iter().enumerate() {
                for (slot, (sum, n)) in local.chunks_exact(dim).zip(local_counts).enumerate() {
                    let c = slot * groups + g;
                    counts[c] += n;
                    sums[c * dim..(c + 1) * dim].copy_from_slice(sum);
                }
            }
        }
    }
    Ok((assignments, distances))
}

/// The smallest power of two that is at least `norm` and 1 (`s` of the module docs).
fn l2_scale(norm: f64) -> f32 {
    let mut scale = 1.0f32;
    while f64::from(scale) < norm {
        scale *= 2.0;
    }
    scale
}

/// Clusters the rows of `data`.
pub fn kmeans(
    pool: &rayon::ThreadPool,
    data: &MatrixView<'_>,
    opts: &KMeansOptions,
    hooks: &mut dyn Hooks,
) -> Result<KMeans> {
    let (n, dim, k) = (data.rows(), data.dim(), opts.n_clusters);
    if dim == 0 {
        return Err(Error::invalid("embeddings have dimension 0"));
    }
    if k == 0 {
        return Err(Error::invalid("n_clusters must be positive, got 0"));
    }
    if k > n {
        return Err(Error::invalid(format!(
            "n_clusters = {k} is larger than the number of rows ({n})"
        )));
    }
    if k > u32::MAX as usize || n > u32::MAX as usize {
        return Err(Error::invalid(
            "at most 2^32 - 1 rows and clusters are supported",
        ));
    }
    let train_n = match opts.sample {
        Some(0) => return Err(Error::invalid("sample must be positive, got 0")),
        Some(s) if s < k => {
            return Err(Error::invalid(format!(
                "sample = {s} is smaller than n_clusters = {k}"
            )))
        }
        Some(s) => s.min(n),
        None => n,
    };
    // What the call holds at once, checked before any work: per row an index, its label
    // and distance; per training row an index and its converted copy (up to the budget);
    // per cluster its centroid (three copies: f32, engine, f64 sums); k-means++'s sample.
    let width = dim + usize::from(opts.metric == KMeansMetric::L2);
    let converted = (train_n as u64)
        .saturating_mul((width * 4 + 8) as u64)
        .min(KEEP_CONVERTED_BYTES as u64);
    let sample = (train_n.min(16 * k + 1024) * (dim * 4 + 16)) as u64;
    let needed = (n as u64)
        .checked_mul(8 + 4 + 8)
        .zip((train_n as u64).checked_mul(8))
        .zip((k as u64).checked_mul(dim as u64 * 16 + 40))
        .map(|((rows, training), clusters)| {
            [training, clusters, converted, sample]
                .iter()
                .fold(rows, |sum, &b| sum.saturating_add(b))
        });
    memory::ensure_fits(needed, || {
        format!("k-means of {n} rows of dimension {dim} into {k} clusters")
    })?;
    let non_finite = |row: usize| Error::invalid(format!("row {row} contains NaN or infinity"));
    let scale = match opts.metric {
        KMeansMetric::Cosine => match data.first_non_finite_row_in(pool) {
            Some(row) => return Err(non_finite(row)),
            None => 1.0,
        },
        KMeansMetric::L2 => match data.largest_row_norm_in(pool) {
            Err(row) => return Err(non_finite(row)),
            Ok((_, squared)) if squared >= L2_MAX_SQUARED_NORM => {
                let mut scratch = vec![0.0f32; dim];
                let (row, squared) = (0..n)
                    .map(|i| (i, data.row_squared_norm(i, &mut scratch)))
                    .find(|&(_, squared)| squared >= L2_MAX_SQUARED_NORM)
                    .unwrap_or((0, squared));
                return Err(Error::invalid(format!(
                    "row {row} has squared norm {squared:.3e}, too large for k-means with \
                     metric='l2': its squared distances would overflow float32 (squared norms \
                     must be below {L2_MAX_SQUARED_NORM:.3e}); scale the data down"
                )));
            }
            Ok((_, squared)) => l2_scale(squared.sqrt()),
        },
    };
    let mut rng = Rng::stream(opts.seed, 0, KMEANS_STREAM, 0);
    // The row indices are allocated fallibly (the check above cannot see an address-space
    // limit); the other vectors of the call are smaller or sized by k.
    let indices = || -> Result<Vec<usize>> {
        let mut all = memory::reserved(n, || format!("the indices of {n} rows"))?;
        all.extend(0..n);
        Ok(all)
    };
    let training: Vec<usize> = if train_n < n {
        sample_rows(indices()?, train_n, &mut rng)
    } else {
        indices()?
    };
    let geometry = Geometry {
        metric: opts.metric,
        dim,
        scale,
    };

    let mut centroids = match opts.init {
        Init::PlusPlus => plus_plus(pool, data, &training, opts, &mut rng),
        Init::Random => {
            let mut centroids = vec![0.0f32; k * dim];
            let picks = sample_rows((0..training.len()).collect(), k, &mut rng);
            for (c, &p) in centroids.chunks_exact_mut(dim).zip(&picks) {
                data.row_into(training[p], c);
                if opts.metric == KMeansMetric::Cosine {
                    normalize(c);
                }
            }
            centroids
        }
    };

    let training_rows = if opts.iterations > 0 {
        Rows::training(pool, data, &training, &geometry, k)?
    } else {
        Rows::streamed(data, &training)
    };
    let mut history = Vec::with_capacity(opts.iterations.min(1 << 16));
    for _ in 0..opts.iterations {
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0u64; k];
        let (_, distances) = assign(
            pool,
            &training_rows,
            &geometry,
            &centroids,
            k,
            Some((&mut sums, &mut counts)),
            hooks,
        )?;
        history.push(distances.iter().sum());
        // Empty clusters take the worst-served rows (largest distance, then smaller index).
        let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
        let mut donors: Vec<usize> = Vec::new();
        if !empty.is_empty() {
            let mut order: Vec<usize> = (0..training.len()).collect();
            order.sort_by(|&a, &b| distances[b].total_cmp(&distances[a]).then(a.cmp(&b)));
            donors = order.into_iter().take(empty.len()).collect();
        }
        for (c, centroid) in centroids.chunks_exact_mut(dim).enumerate() {
            if counts[c] == 0 {
                continue;
            }
            let inv = 1.0 / counts[c] as f64;
            for (x, &s) in centroid.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                *x = (s * inv) as f32;
            }
            if opts.metric == KMeansMetric::Cosine {
                normalize(centroid);
            }
        }
        for (&c, &donor) in empty.iter().zip(&donors) {
            let centroid = &mut centroids[c * dim..(c + 1) * dim];
            data.row_into(training[donor], centroid);
            if opts.metric == KMeansMetric::Cosine {
                normalize(centroid);
            }
        }
    }

    drop(training_rows);
    let all = indices()?;
    let (assignments, distances) = assign(
        pool,
        &Rows::streamed(data, &all),
        &geometry,
        &centroids,
        k,
        None,
        hooks,
    )?;
    Ok(KMeans {
        centroids,
        assignments,
        inertia: distances.iter().sum(),
        history,
    })
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

    fn blobs() -> (Vec<f32>, usize, usize) {
        // Three well-separated blobs in 2-D.
        let centers = [(0.0f32, 0.0f32), (10.0, 0.0), (0.0, 10.0)];
        let mut rng = Rng::stream(7, 0, 0, 0);
        let mut data = Vec::new();
        for i in 0..300 {
            let (cx, cy) = centers[i % 3];
            let jitter = |r: &mut Rng| (r.below(1000) as f32 / 1000.0) - 0.5;
            data.push(cx + jitter(&mut rng));
            data.push(cy + jitter(&mut rng));
        }
        (data, 300, 2)
    }

    #[test]
    fn finds_separated_blobs_and_is_thread_independent() {
        let (data, n, d) = blobs();
        let view = MatrixView::f32(&data, n, d).unwrap();
        let opts = KMeansOptions {
            n_clusters: 3,
            metric: KMeansMetric::L2,
            iterations: 10,
            seed: 1,
            sample: None,
            init: Init::PlusPlus,
        };
        let a = kmeans(&pool(1), &view, &opts, &mut crate::NoHooks).unwrap();
        let b = kmeans(&pool(3), &view, &opts, &mut crate::NoHooks).unwrap();
        assert_eq!(a, b);
        // Rows i, i+3, i+6... share a blob, so they share a cluster.
        for i in 0..n {
            assert_eq!(a.assignments[i], a.assignments[i % 3]);
        }
        assert!(a.inertia < 300.0 * 0.5, "inertia {}", a.inertia);
        assert!(a.history.windows(2).all(|w| w[1] <= w[0] * (1.0 + 1e-9)));
    }

    #[test]
    fn identical_rows_and_bad_sizes() {
        let data = vec![1.0f32; 20 * 4];
        let view = MatrixView::f32(&data, 20, 4).unwrap();
        let mut opts = KMeansOptions {
            n_clusters: 5,
            metric: KMeansMetric::Cosine,
            iterations: 3,
            seed: 0,
            sample: None,
            init: Init::PlusPlus,
        };
        let r = kmeans(&pool(2), &view, &opts, &mut crate::NoHooks).unwrap();
        assert!(r.centroids.iter().all(|x| x.is_finite()));
        assert!(r.inertia.abs() < 1e-6);
        opts.n_clusters = 21;
        assert!(kmeans(&pool(1), &view, &opts, &mut crate::NoHooks).is_err());
        opts.n_clusters = 0;
        assert!(kmeans(&pool(1), &view, &opts, &mut crate::NoHooks).is_err());
        opts.n_clusters = 2;
        opts.sample = Some(1);
        assert!(kmeans(&pool(1), &view, &opts, &mut crate::NoHooks).is_err());
    }
}
