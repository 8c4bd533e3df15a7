//! `.npy` embeddings: the format's header (`header.rs`), validated matrices mapped from or
//! copied out of a file (`mapped.rs`), atomic saving (`save.rs`), and the check of hnswlib's
//! index files (`hnsw.rs`).
//!
//! Reading checks everything before any data are touched: [`parse_header`] validates the
//! header, [`MappedMatrix::open`] / [`MappedMatrix::read`] the file around it. Writing
//! ([`save`](fn@save)) produces exactly what `np.save` writes, and never a half-written file.

mod header;
mod hnsw;
mod mapped;
mod save;

pub use header::{
    npy_header, parse_header, Header, HeaderError, MAGIC, MAX_HEADER_LEN, MAX_PREFIX_LEN,
};
pub use hnsw::{check_hnsw_file, check_hnsw_index, HnswLayout, HNSW_HEADER_LEN};
pub(crate) use mapped::open_regular;
pub use mapped::MappedMatrix;
pub use save::save;
pub(crate) use save::write_atomically;
