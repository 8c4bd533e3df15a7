//! The inverted index: postings per term (document ids ascending, with their term counts),
//! each document's length norm and each term's idf and largest per-document factor (the
//! bound MaxScore prunes with), held as the bytes of its file (built in memory, or mapped).

use std::collections::HashMap;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};
use rayon::prelude::*;

use super::file::{
    check, checksum, encode_header, layout_for, parse_header, Header, Layout, HEADER_LEN, KEY_LEN,
};
use super::tokenize::tokens;
use crate::error::{Error, Result};
use crate::hooks::Hooks;

/// Documents tokenised at once while building: bounds the token lists held.
const BUILD_BLOCK: usize = 16_384;

/// BM25's free parameters (bm25s' defaults: `k1 = 1.5`, `b = 0.75`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bm25Params {
    pub k1: f64,
    pub b: f64,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.5, b: 0.75 }
    }
}

impl Bm25Params {
    pub fn validate(&self) -> Result<()> {
        if !(self.k1.is_finite() && self.k1 >= 0.0) {
            return Err(Error::invalid(format!(
                "k1 must be a finite number >= 0, got {}",
                self.k1
            )));
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(Error::invalid(format!(
                "b must be in [0, 1], got {}",
                self.b
            )));
        }
        Ok(())
    }
}

/// Where an index's bytes live: built in memory (8-byte words, so every section is aligned),
/// or a file mapped read-only.
enum Storage {
    Owned(Vec<u64>),
    Mapped(Mmap),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(words) => {
                // SAFETY: the byte view covers exactly the initialised words and borrows them
                // (u8 needs no alignment).
                unsafe {
                    std::slice::from_raw_parts(
                        words.as_ptr().cast(),
                        std::mem::size_of_val(&words[..]),
                    )
                }
            }
            Storage::Mapped(map) => map,
        }
    }
}

/// Plain little-endian numbers a section may be read as in place.
trait Plain: Copy {}
impl Plain for u32 {}
impl Plain for u64 {}
impl Plain for f64 {}
impl Plain for [u32; 2] {}

/// `bytes` as a slice of `T`. Sections start on 8-byte boundaries of a buffer that is 8-byte
/// aligned (a `Vec<u64>` or a page-aligned mapping) and hold whole elements, so this holds by
/// construction; the assertion guards that invariant.
fn cast<T: Plain>(bytes: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(
        bytes.as_ptr().align_offset(std::mem::align_of::<T>()) == 0
            && bytes.len().is_multiple_of(size),
        "misaligned BM25 index section"
    );
    // SAFETY: aligned and in bounds (checked above); every bit pattern is a valid u32 / u64 /
    // f64, and the result borrows `bytes`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) }
}

fn cast_mut<T: Plain>(bytes: &mut [u8]) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    assert!(
        bytes.as_mut_ptr().align_offset(std::mem::align_of::<T>()) == 0
            && bytes.len().is_multiple_of(size),
        "misaligned BM25 index section"
    );
    // SAFETY: as in `cast`; the result borrows `bytes` mutably.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), bytes.len() / size) }
}

/// A BM25 index over a corpus of texts (see the [module docs](super) for the formula, and
/// [`file`](super::file) for its bytes, the same in memory and on disk).
pub struct Bm25Index {
    header: Header,
    layout: Layout,
    storage: Storage,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index")
            .field("n_docs", &self.header.n_docs)
            .field("n_terms", &self.header.n_terms)
            .field("n_postings", &self.header.n_postings)
            .field("params", &self.header.params)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl Bm25Index {
    /// Indexes `texts` (document `i` is `texts[i]`), tokenising them on `pool`. Term ids are
    /// the terms' ranks in byte order, so the index is the same for any thread count.
    pub fn build<S: AsRef<str> + Sync>(
        pool: &rayon::ThreadPool,
        texts: &[S],
        params: Bm25Params,
        hooks: &mut dyn Hooks,
    ) -> Result<Self> {
        params.validate()?;
        let n_docs = texts.len();
        if u32::try_from(n_docs).is_err() {
            return Err(Error::invalid(format!(
                "a BM25 index holds at most {} documents, got {n_docs}",
                u32::MAX
            )));
        }
        // Ids by first occurrence while reading, renumbered in byte order at the end.
        let mut vocabulary: HashMap<String, u32> = HashMap::new();
        // Each document's distinct terms with their counts, one document after another.
        let mut doc_terms: Vec<(u32, u32)> = Vec::new();
        let mut doc_offsets: Vec<usize> = Vec::with_capacity(n_docs + 1);
        doc_offsets.push(0);
        let mut lengths: Vec<u64> = Vec::with_capacity(n_docs);
        for (block, chunk) in texts.chunks(BUILD_BLOCK).enumerate() {
            hooks.progress((block * BUILD_BLOCK) as u64, n_docs as u64)?;
            let tokenised: Vec<Vec<String>> = pool.install(|| {
                chunk
                    .par_iter()
                    .map(|text| tokens(text.as_ref()).collect())
                    .collect()
            });
            for words in tokenised {
                lengths.push(words.len() as u64);
                let mut ids: Vec<u32> = Vec::with_capacity(words.len());
                for word in words {
                    let next = vocabulary.len() as u32;
                    ids.push(*vocabulary.entry(word).or_insert(next));
                }
                ids.sort_unstable();
                for run in ids.chunk_by(|a, b| a == b) {
                    doc_terms.push((run[0], run.len() as u32));
                }
                doc_offsets.push(doc_terms.len());
            }
        }
        hooks.progress(n_docs as u64, n_docs as u64)?;
        let mut sorted: Vec<(String, u32)> = vocabulary.into_iter().collect();
        sorted.sort_unstable();
        let mut rank = vec![0u32; sorted.len()];
        for (r, (_, first)) in sorted.iter().enumerate() {
            rank[*first as usize] = r as u32;
        }
        let n_terms = sorted.len();
        let n_postings = doc_terms.len();
        let term_bytes: usize = sorted.iter().map(|(w, _)| w.len()).sum();
        let total: u64 = lengths.iter().sum();
        let avgdl = if n_docs == 0 {
            0.0
        } else {
            total as f64 / n_docs as f64
        };
        let layout = Layout::of(n_docs, n_terms, n_postings, term_bytes)
            .ok_or_else(|| Error::invalid("the BM25 index would exceed the address space"))?;
        crate::memory::ensure_fits(Some(layout.len as u64), || {
            format!("a BM25 index of {n_postings} postings")
        })?;
        let mut words = vec![0u64; layout.len / 8];
        // SAFETY: the byte view covers exactly the initialised words and borrows them
        // mutably (u8 needs no alignment, and any bytes are valid u64s).
        let image: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), layout.len) };
        let Bm25Params { k1, b } = params;
        {
            let norms: &mut [f64] = cast_mut(&mut image[layout.norms.clone()]);
            // With no token anywhere there are no postings, and no norm is ever read.
            for (norm, &dl) in norms.iter_mut().zip(&lengths) {
                *norm = if avgdl > 0.0 {
                    k1 * (1.0 - b + b * dl as f64 / avgdl)
                } else {
                    k1
                };
            }
        }
        {
            let terms = &mut image[layout.terms.clone()];
            let mut at = 0usize;
            let mut ends = vec![0u64; n_terms + 1];
            for (t, (word, _)) in sorted.iter().enumerate() {
                terms[at..at + word.len()].copy_from_slice(word.as_bytes());
                at += word.len();
                ends[t + 1] = at as u64;
            }
            cast_mut::<u64>(&mut image[layout.term_offsets.clone()]).copy_from_slice(&ends);
        }
        drop(sorted);
        // Postings by counting sort: documents are visited in order, so each list ascends.
        let mut offsets = vec![0usize; n_terms + 1];
        for &(t, _) in &doc_terms {
            offsets[rank[t as usize] as usize + 1] += 1;
        }
        for t in 0..n_terms {
            offsets[t + 1] += offsets[t];
        }
        let mut fill = offsets.clone();
        let mut max_factor = vec![0.0f64; n_terms];
        {
            let (head, tail) = image.split_at_mut(layout.postings.start);
            let norms: &[f64] = cast(&head[layout.norms.clone()]);
            let postings: &mut [[u32; 2]] = cast_mut(&mut tail[..layout.postings.len()]);
            for d in 0..n_docs {
                for &(t, tf) in &doc_terms[doc_offsets[d]..doc_offsets[d + 1]] {
                    let t = rank[t as usize] as usize;
                    let slot = &mut fill[t];
                    postings[*slot] = [d as u32, tf];
                    *slot += 1;
                    let best = &mut max_factor[t];
                    *best = best.max(factor(tf, norms[d]));
                }
            }
        }
        drop(doc_terms);
        let n = n_docs as f64;
        let idf: Vec<f64> = (0..n_terms)
            .map(|t| {
                let df = (offsets[t + 1] - offsets[t]) as f64;
                (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
            })
            .collect();
        let offsets: Vec<u64> = offsets.into_iter().map(|o| o as u64).collect();
        cast_mut::<u64>(&mut image[layout.offsets.clone()]).copy_from_slice(&offsets);
        cast_mut::<f64>(&mut image[layout.idf.clone()]).copy_from_slice(&idf);
        cast_mut::<f64>(&mut image[layout.max_factor.clone()]).copy_from_slice(&max_factor);
        let header = Header {
            n_docs,
            n_terms,
            n_postings,
            term_bytes,
            params,
            avgdl,
            key: [0; KEY_LEN],
            checksum: checksum(&image[HEADER_LEN..]),
        };
        image[..HEADER_LEN].copy_from_slice(&encode_header(&header));
        Ok(Bm25Index {
            header,
            layout,
            storage: Storage::Owned(words),
        })
    }

    /// Opens an index [`save`](Self::save)d at `path`: validated whole (see [`file`]
    /// (super::file)), then mapped read-only, so its pages are read as searches need them. With
    /// `key`, the file must have been saved with that key (a file for other texts or settings
    /// is stale). Every problem is an error naming the file, never a panic. The file must not
    /// be truncated or rewritten in place while open (that is SIGBUS; [`save`](Self::save)
    /// replaces a file, which is safe).
    pub fn open(path: &Path, key: Option<&[u8; KEY_LEN]>) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(Error::format(
                path,
                "negmine reads little-endian BM25 indexes, and this machine is big-endian",
            ));
        }
        let (file, len) = crate::store::open_regular(path)?;
        let refuse = |message: String| Error::format(path, format!("BM25 index: {message}"));
        let mut head = vec![0u8; HEADER_LEN.min(len as usize)];
        std::io::Read::read_exact(&mut &file, &mut head).map_err(|e| Error::io(path, e))?;
        let header = parse_header(&head).map_err(refuse)?;
        let len = usize::try_from(len).map_err(|_| refuse("too large to map".into()))?;
        layout_for(&header, len).map_err(refuse)?;
        if let Some(key) = key {
            if &header.key != key {
                return Err(refuse(format!(
                    "stale: saved for key {}, expected {} (built from other texts or settings)",
                    hex(&header.key),
                    hex(key)
                )));
            }
        }
        // SAFETY: the mapping is read-only and we never write to the file. Another process
        // truncating or rewriting it in place while mapped is undefined behaviour (SIGBUS on
        // access); that is the documented contract of `open`.
        let map =
            unsafe { MmapOptions::new().len(len).map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header, layout) = check(&map).map_err(refuse)?;
        // The check read every page; hand them back, so the process holds only the pages
        // its searches touch (they stay in the page cache).
        // SAFETY: the mapping is a read-only file mapping: dropping its pages only makes the
        // next access read them from the file again, with the same contents.
        let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        Ok(Bm25Index {
            header,
            layout,
            storage: Storage::Mapped(map),
        })
    }

    /// An index from the bytes of its file (copied), validated like [`open`](Self::open)'s.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        if cfg!(target_endian = "big") {
            return Err("negmine reads little-endian BM25 indexes".into());
        }
        let (header, layout) = check(bytes)?;
        let mut words = vec![0u64; layout.len / 8];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        Ok(Bm25Index {
            header,
            layout,
            storage: Storage::Owned(words),
        })
    }

    /// The index's bytes, as [`save`](Self::save) writes them with a zero key.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Writes the index to `path` atomically (a temp file in the same directory, fsync,
    /// rename, fsync of the directory), with `key` (the caller's digest of what it was built
    /// from; zeros for none) in its header for [`open`](Self::open) to check.
    pub fn save(&self, path: &Path, key: &[u8; KEY_LEN]) -> Result<()> {
        let header = encode_header(&Header {
            key: *key,
            ..self.header
        });
        let payload = &self.storage.bytes()[HEADER_LEN..];
        crate::store::write_atomically(path, &|out| {
            out.write_all(&header)?;
            out.write_all(payload)
        })
    }

    /// The key the index was saved with (zeros for one built here).
    pub fn key(&self) -> [u8; KEY_LEN] {
        self.header.key
    }

    /// Whether the index is a mapped file (else it was built in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    pub fn params(&self) -> Bm25Params {
        self.header.params
    }

    /// Number of documents indexed.
    pub fn n_docs(&self) -> usize {
        self.header.n_docs
    }

    /// Number of distinct terms.
    pub fn n_terms(&self) -> usize {
        self.header.n_terms
    }

    /// Number of (term, document) postings.
    pub fn n_postings(&self) -> usize {
        self.header.n_postings
    }

    /// The mean document length in tokens.
    pub fn avgdl(&self) -> f64 {
        self.header.avgdl
    }

    /// The index's bytes as a file holds them (header and sections).
    pub fn size_in_bytes(&self) -> usize {
        self.layout.len
    }

    fn section<T: Plain>(&self, range: &std::ops::Range<usize>) -> &[T] {
        cast(&self.storage.bytes()[range.clone()])
    }

    /// The id of `term` (a token as [`tokens`] gives it), if it occurs in the corpus.
    pub(super) fn term_id(&self, term: &str) -> Option<u32> {
        let bytes = self.storage.bytes();
        let terms = &bytes[self.layout.terms.clone()];
        let ends: &[u64] = self.section(&self.layout.term_offsets);
        let word = |t: usize| &terms[ends[t] as usize..ends[t + 1] as usize];
        let (mut low, mut high) = (0usize, self.n_terms());
        while low < high {
            let mid = low + (high - low) / 2;
            match word(mid).cmp(term.as_bytes()) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// The idf of `term` (a token as [`tokens`] gives it), if it occurs in the corpus.
    pub fn idf(&self, term: &str) -> Option<f64> {
        self.term_id(term).map(|t| self.idf_of(t))
    }

    pub(super) fn idf_of(&self, term: u32) -> f64 {
        self.section::<f64>(&self.layout.idf)[term as usize]
    }

    pub(super) fn max_factor_of(&self, term: u32) -> f64 {
        self.section::<f64>(&self.layout.max_factor)[term as usize]
    }

    pub(super) fn norms(&self) -> &[f64] {
        self.section(&self.layout.norms)
    }

    /// Term `term`'s (document id, term count) pairs, ids ascending.
    pub(super) fn postings(&self, term: u32) -> &[[u32; 2]] {
        let offsets: &[u64] = self.section(&self.layout.offsets);
        let range = offsets[term as usize] as usize..offsets[term as usize + 1] as usize;
        &self.section::<[u32; 2]>(&self.layout.postings)[range]
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A posting's term-frequency factor, `tf / (tf + norm)`.
#[inline]
pub(super) fn factor(tf: u32, norm: f64) -> f64 {
    let tf = f64::from(tf);
    tf / (tf + norm)
}
