//! Memory-mapped `.npy` embeddings with strict header validation, and atomic saving.
//! (Stub: the parser and writer are being written; the interface below is fixed.)

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::matrix::{DType, MatrixView};

/// A validated `.npy` file mapped read-only.
pub struct MappedMatrix {
    path: PathBuf,
    dtype: DType,
    rows: usize,
    dim: usize,
}

impl MappedMatrix {
    /// Opens and validates `path`; the data are mapped, not read.
    pub fn open(path: &Path) -> Result<Self> {
        Err(Error::format(path, "not implemented yet"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The mapped data as a matrix.
    pub fn view(&self) -> MatrixView<'_> {
        unimplemented!()
    }

    /// Hint that `rows` will be read soon (read-ahead for files larger than memory).
    pub fn will_need(&self, _rows: Range<usize>) {}

    /// Drop the pages of `rows` from this process's resident set (they stay in the page cache).
    pub fn dont_need(&self, _rows: Range<usize>) {}
}

/// Writes `matrix` to `path` as `.npy`, atomically: a temp file in the same directory,
/// fsync, rename, fsync of the directory.
pub fn save(path: &Path, _matrix: &MatrixView<'_>) -> Result<()> {
    Err(Error::format(path, "not implemented yet"))
}
