//! The BM25 index's one representation, in memory and on disk: a 128-byte header followed by
//! seven sections, each starting on an 8-byte boundary, all little-endian. Built in memory it
//! is the same bytes as the file ([`Bm25Index::save`](super::Bm25Index::save) writes them);
//! opened, the file is mapped and read in place.
//!
//! ```text
//! header (128 bytes)
//!   0  magic "NMBM25IX"          8  format version u32     12  tokenizer version u32
//!  16  n_docs u64               24  n_terms u64            32  n_postings u64
//!  40  term_bytes u64           48  k1 f64                 56  b f64
//!  64  avgdl f64                72  key [u8; 32] (the caller's content digest, or zeros)
//! 104  payload checksum u64    112  header checksum u64 (of bytes 0..112)   120  zero u64
//! sections (in this order)
//!   terms        u8  [term_bytes]    the vocabulary, UTF-8, sorted bytewise, concatenated
//!   term_offsets u64 [n_terms + 1]   term t is terms[term_offsets[t]..term_offsets[t + 1]]
//!   offsets      u64 [n_terms + 1]   term t's postings are docs/tfs[offsets[t]..offsets[t + 1]]
//!   idf          f64 [n_terms]
//!   max_factor   f64 [n_terms]       the largest tf / (tf + norm) in the term's postings
//!   norms        f64 [n_docs]        k1 * (1 - b + b * dl / avgdl)
//!   postings     [u32; 2] [n_postings]  (document id, term count) pairs, ids ascending within
//!                                       each term: a probe finds the count on the id's line
//! ```
//!
//! [`check_index`] validates a whole image before any of it is used: the magic, both versions,
//! the header checksum, sizes (checked arithmetic, the exact file length), the payload
//! checksum, then everything the search relies on to stay in bounds (offsets monotone and
//! ending where the sizes say, terms valid UTF-8 and strictly sorted, document ids ascending
//! and below `n_docs`, finite weights), so a corrupt file is an error, never a panic.

use std::ops::Range;

use super::index::Bm25Params;

pub const MAGIC: &[u8; 8] = b"NMBM25IX";
/// Bumped whenever the layout changes: an older file is refused ("rebuild it").
pub const FORMAT_VERSION: u32 = 1;
/// Bumped whenever [`tokens`](super::tokens) splits or folds differently: postings built with
/// another tokenizer are stale.
pub const TOKENIZER_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 128;
/// The length of the caller's content key stored in the header (a SHA-256 digest).
pub const KEY_LEN: usize = 32;

const KEY_AT: usize = 72;
const CHECKSUM_AT: usize = 104;
const HEADER_CHECKSUM_AT: usize = 112;

/// The header's fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Header {
    pub n_docs: usize,
    pub n_terms: usize,
    pub n_postings: usize,
    pub term_bytes: usize,
    pub params: Bm25Params,
    pub avgdl: f64,
    pub key: [u8; KEY_LEN],
    pub checksum: u64,
}

/// Where each section lies in the image (byte ranges from the start of the file).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Layout {
    pub terms: Range<usize>,
    pub term_offsets: Range<usize>,
    pub offsets: Range<usize>,
    pub idf: Range<usize>,
    pub max_factor: Range<usize>,
    pub norms: Range<usize>,
    pub postings: Range<usize>,
    /// The file's length.
    pub len: usize,
}

impl Layout {
    /// The layout for these sizes, `None` if it overflows.
    pub fn of(n_docs: usize, n_terms: usize, n_postings: usize, term_bytes: usize) -> Option<Self> {
        let mut at = HEADER_LEN;
        let mut section = |bytes: Option<usize>| -> Option<Range<usize>> {
            let start = at;
            let end = start.checked_add(bytes?)?;
            at = end.checked_add(7)? & !7;
            Some(start..end)
        };
        let words = n_terms.checked_add(1)?.checked_mul(8);
        let terms = section(Some(term_bytes))?;
        let term_offsets = section(words)?;
        let offsets = section(words)?;
        let idf = section(n_terms.checked_mul(8))?;
        let max_factor = section(n_terms.checked_mul(8))?;
        let norms = section(n_docs.checked_mul(8))?;
        let postings = section(n_postings.checked_mul(8))?;
        // Mapped or held, the image must be addressable as one slice.
        (at <= isize::MAX as usize).then_some(Layout {
            terms,
            term_offsets,
            offsets,
            idf,
            max_factor,
            norms,
            postings,
            len: at,
        })
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn f64_at(bytes: &[u8], at: usize) -> f64 {
    f64::from_bits(u64_at(bytes, at))
}

/// The header's bytes (the payload's checksum given), its own checksum filled in.
pub(super) fn encode_header(header: &Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&TOKENIZER_VERSION.to_le_bytes());
    let words = [
        header.n_docs as u64,
        header.n_terms as u64,
        header.n_postings as u64,
        header.term_bytes as u64,
        header.params.k1.to_bits(),
        header.params.b.to_bits(),
        header.avgdl.to_bits(),
    ];
    for (i, w) in words.iter().enumerate() {
        out[16 + 8 * i..24 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    out[KEY_AT..KEY_AT + KEY_LEN].copy_from_slice(&header.key);
    out[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&header.checksum.to_le_bytes());
    let own = checksum(&out[..HEADER_CHECKSUM_AT]);
    out[HEADER_CHECKSUM_AT..HEADER_CHECKSUM_AT + 8].copy_from_slice(&own.to_le_bytes());
    out
}

/// A 64-bit checksum of `bytes` (four independent lanes of 8-byte words, so it runs at memory
/// speed). Each step of a lane is a bijection of the lane, so changing any one word always
/// changes the result; it detects corruption, it is not a cryptographic digest.
pub(super) fn checksum(bytes: &[u8]) -> u64 {
    const MUL: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes: [u64; 4] = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mix = |lane: u64, word: u64| (lane ^ word).wrapping_mul(MUL).rotate_left(29);
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = mix(*lane, u64_at(block, 8 * i));
        }
    }
    for (i, tail) in blocks.remainder().chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        lanes[i] = mix(lanes[i], u64::from_le_bytes(word));
    }
    let mut h = bytes.len() as u64;
    for lane in lanes {
        h = mix(h, lane);
    }
    h ^= h >> 32;
    h
}

/// Reads and checks the header alone (the first [`HEADER_LEN`] bytes of `bytes`).
pub(super) fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than a BM25 index header ({HEADER_LEN} bytes)",
            bytes.len()
        ));
    }
    if &bytes[0..8] != MAGIC {
        return Err(format!(
            "not a negmine BM25 index (expected the magic {:?}, found {:?})",
            String::from_utf8_lossy(MAGIC),
            String::from_utf8_lossy(&bytes[0..8])
        ));
    }
    let stored = u64_at(bytes, HEADER_CHECKSUM_AT);
    if checksum(&bytes[..HEADER_CHECKSUM_AT]) != stored {
        return Err("the header is corrupt (its checksum does not match)".into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this negmine reads version {FORMAT_VERSION}: rebuild \
             the index"
        ));
    }
    let tokenizer = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if tokenizer != TOKENIZER_VERSION {
        return Err(format!(
            "built with tokenizer version {tokenizer}, this negmine tokenises with version \
             {TOKENIZER_VERSION}: rebuild the index"
        ));
    }
    if u64_at(bytes, 120) != 0 {
        return Err("the header is corrupt (reserved bytes are not zero)".into());
    }
    let size = |at: usize, what: &str| {
        usize::try_from(u64_at(bytes, at))
            .map_err(|_| format!("the header's {what} ({}) is too large", u64_at(bytes, at)))
    };
    let n_docs = size(16, "document count")?;
    let n_terms = size(24, "term count")?;
    let n_postings = size(32, "posting count")?;
    let term_bytes = size(40, "vocabulary size")?;
    if u32::try_from(n_docs).is_err() {
        return Err(format!(
            "the header's document count {n_docs} exceeds {}",
            u32::MAX
        ));
    }
    let params = Bm25Params {
        k1: f64_at(bytes, 48),
        b: f64_at(bytes, 56),
    };
    params
        .validate()
        .map_err(|e| format!("the header's parameters are invalid: {e}"))?;
    let avgdl = f64_at(bytes, 64);
    if !(avgdl.is_finite() && avgdl >= 0.0) {
        return Err(format!(
            "the header's avgdl ({avgdl}) is not a finite number >= 0"
        ));
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&bytes[KEY_AT..KEY_AT + KEY_LEN]);
    Ok(Header {
        n_docs,
        n_terms,
        n_postings,
        term_bytes,
        params,
        avgdl,
        key,
        checksum: u64_at(bytes, CHECKSUM_AT),
    })
}

/// The file length the header announces, after checking it against `len`.
pub(super) fn layout_for(header: &Header, len: usize) -> Result<Layout, String> {
    let layout = Layout::of(
        header.n_docs,
        header.n_terms,
        header.n_postings,
        header.term_bytes,
    )
    .ok_or_else(|| "the header's sizes overflow".to_string())?;
    if len < layout.len {
        return Err(format!(
            "truncated: {len} bytes, the header announces {} (missing {} bytes)",
            layout.len,
            layout.len - len
        ));
    }
    if len > layout.len {
        return Err(format!(
            "{} trailing bytes after the {} the header announces",
            len - layout.len,
            layout.len
        ));
    }
    Ok(layout)
}

/// Rewrites both checksums of an index image after its bytes were edited (an image shorter
/// than its header is left alone): how tests and the fuzz target reach the structural checks
/// behind the checksums.
pub fn reseal_index(image: &mut [u8]) {
    if image.len() < HEADER_LEN {
        return;
    }
    let payload = checksum(&image[HEADER_LEN..]);
    image[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&payload.to_le_bytes());
    let own = checksum(&image[..HEADER_CHECKSUM_AT]);
    image[HEADER_CHECKSUM_AT..HEADER_CHECKSUM_AT + 8].copy_from_slice(&own.to_le_bytes());
}

/// Checks a whole index image (see the module docs): `Ok` with its header and layout, or a
/// message saying what is wrong. Never panics, whatever the bytes.
pub fn check_index(bytes: &[u8]) -> Result<(), String> {
    check(bytes).map(|_| ())
}

pub(super) fn check(bytes: &[u8]) -> Result<(Header, Layout), String> {
    let header = parse_header(bytes)?;
    let layout = layout_for(&header, bytes.len())?;
    if checksum(&bytes[HEADER_LEN..]) != header.checksum {
        return Err("the data are corrupt (their checksum does not match the header's)".into());
    }
    let words = |range: &Range<usize>| bytes[range.clone()].chunks_exact(8).map(|w| u64_at(w, 0));
    let quads = |range: &Range<usize>| {
        bytes[range.clone()]
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    };
    let monotone = |range: &Range<usize>, end: usize, what: &str| -> Result<Vec<usize>, String> {
        let mut out = Vec::with_capacity(range.len() / 8);
        let mut last = 0u64;
        for (i, w) in words(range).enumerate() {
            if (i == 0 && w != 0) || (i > 0 && w <= last) {
                return Err(format!(
                    "the {what} are not strictly increasing from 0 (entry {i} is {w})"
                ));
            }
            last = w;
            out.push(w as usize);
        }
        if last != end as u64 {
            return Err(format!("the {what} end at {last}, expected {end}"));
        }
        Ok(out)
    };
    // Every term has at least one byte and at least one posting.
    let term_offsets = monotone(&layout.term_offsets, header.term_bytes, "term offsets")?;
    let terms = &bytes[layout.terms.clone()];
    let mut previous: &[u8] = &[];
    for (t, w) in term_offsets.windows(2).enumerate() {
        let term = &terms[w[0]..w[1]];
        if std::str::from_utf8(term).is_err() {
            return Err(format!("term {t} is not valid UTF-8"));
        }
        if t > 0 && term <= previous {
            return Err(format!("the terms are not strictly sorted (term {t})"));
        }
        previous = term;
    }
    let offsets = monotone(&layout.offsets, header.n_postings, "posting offsets")?;
    let mut pairs = quads(&layout.postings);
    for (t, w) in offsets.windows(2).enumerate() {
        let mut last: Option<u32> = None;
        for i in w[0]..w[1] {
            let d = pairs.next().unwrap_or(u32::MAX);
            if pairs.next() == Some(0) {
                return Err(format!("posting {i} has a term count of 0"));
            }
            if d as usize >= header.n_docs || last.is_some_and(|l| d <= l) {
                return Err(format!(
                    "term {t}'s postings are not ascending document ids below {}",
                    header.n_docs
                ));
            }
            last = Some(d);
        }
    }
    let finite = |range: &Range<usize>, what: &str, low: f64, high: f64| match words(range)
        .map(f64::from_bits)
        .position(|x| !(low..=high).contains(&x))
    {
        Some(i) => Err(format!("{what} {i} is not in [{low}, {high}]")),
        None => Ok(()),
    };
    finite(&layout.idf, "idf", 0.0, f64::MAX)?;
    finite(&layout.max_factor, "max factor", 0.0, 1.0)?;
    finite(&layout.norms, "norm", 0.0, f64::MAX)?;
    Ok((header, layout))
}
