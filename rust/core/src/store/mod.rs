//! `.npy` embeddings: the format's header (`header.rs`), validated matrices mapped from or
//! copied out of a file (`mapped.rs`), and atomic saving (`save.rs`).
//!
//! Reading checks everything before any data are touched: [`parse_header`] validates the
//! header, [`MappedMatrix::open`] / [`MappedMatrix::read`] the file around it. Writing
//! ([`save`](fn@save)) produces exactly what `np.save` writes, and never a half-written file.

mod header;
mod mapped;
mod save;

pub use header::{
    npy_header, parse_header, Header, HeaderError, MAGIC, MAX_HEADER_LEN, MAX_PREFIX_LEN,
};
pub use mapped::MappedMatrix;
pub use save::save;
