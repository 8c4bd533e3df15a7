//! A validated `.npy` file as a matrix: mapped read-only, or copied into memory.
//!
//! [`MappedMatrix::open`] checks the header ([`parse_header`]), that the file is a regular file
//! (before opening it: a FIFO is never opened), that the data are exactly as long as the
//! header says (no "missing bytes", no trailing bytes), and maps the data read-only.
//! [`MappedMatrix::read`] does the same checks but copies the data into memory.
//!
//! **Mapped files must not shrink.** A mapping of a file that another process truncates or
//! rewrites in place is undefined behaviour: reading a page past the new end raises SIGBUS and
//! kills the process. negmine itself never writes into a file it maps
//! ([`save`](fn@super::save) writes a new inode and renames it into place, so existing mappings
//! keep the old data). When the input may change under you, use [`MappedMatrix::read`], which
//! validates and copies the data once.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::f16;
use memmap2::{Mmap, MmapOptions};

use super::header::{parse_header, Header, MAX_PREFIX_LEN};
use crate::error::{Error, Result};
use crate::matrix::{DType, Elements, MatrixView};

/// Where the elements of a [`MappedMatrix`] live.
enum Storage {
    /// No data bytes (0 rows or dim 0): nothing is mapped.
    Empty,
    Mapped(Mmap),
    OwnedF32(Vec<f32>),
    OwnedF16(Vec<f16>),
}

/// A validated `.npy` file, mapped read-only (or, from [`MappedMatrix::read`], copied into
/// memory). See the module docs for what happens if a mapped file is truncated.
pub struct MappedMatrix {
    path: PathBuf,
    dtype: DType,
    rows: usize,
    dim: usize,
    storage: Storage,
}

fn not_regular(path: &Path, file_type: std::fs::FileType) -> Result<()> {
    if file_type.is_file() {
        return Ok(());
    }
    if file_type.is_dir() {
        return Err(Error::io(path, io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let what = if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    };
    Err(Error::format(
        path,
        format!("is {what}; expected a regular .npy file"),
    ))
}

/// Opens `path` for reading after checking it is a regular file, so that a FIFO is never
/// opened (opening one blocks until a writer appears). Returns the file and its length.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    not_regular(path, metadata.file_type())?;
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, open still returns
    // at once, and the fstat below refuses it. It does not affect reads of regular files.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    not_regular(path, metadata.file_type())?;
    Ok((file, metadata.len()))
}

/// Reads `path`'s header and checks the file holds exactly the data it announces.
fn validated_header(path: &Path, file: &mut File, file_len: u64) -> Result<Header> {
    if file_len == 0 {
        return Err(Error::format(
            path,
            "file is empty (0 bytes); expected a .npy file",
        ));
    }
    let mut prefix = Vec::with_capacity(MAX_PREFIX_LEN.min(file_len as usize));
    Read::take(&*file, MAX_PREFIX_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    let header = parse_header(&prefix).map_err(|e| Error::format(path, e.message()))?;
    // Both fit in u64: data_offset <= MAX_PREFIX_LEN, data_len <= isize::MAX.
    let expected = header.data_offset as u64 + header.data_len as u64;
    let describe = || {
        format!(
            "header announces shape ({}, {}) {} = {} data bytes after a {}-byte header",
            header.rows,
            header.dim,
            header.dtype.name(),
            header.data_len,
            header.data_offset
        )
    };
    if file_len < expected {
        return Err(Error::format(
            path,
            format!(
                "file is truncated: missing {} bytes ({}, file is {file_len} bytes)",
                expected - file_len,
                describe()
            ),
        ));
    }
    if file_len > expected {
        return Err(Error::format(
            path,
            format!(
                "file has {} trailing bytes after the data ({}, file is {file_len} bytes)",
                file_len - expected,
                describe()
            ),
        ));
    }
    Ok(header)
}

fn page_size() -> usize {
    static PAGE_SIZE: OnceLock<usize> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(4096)
    })
}

impl MappedMatrix {
    /// Opens and validates `path`; the data are mapped read-only, not read. The file must not
    /// be truncated or rewritten in place while mapped (that is SIGBUS, see the module docs);
    /// use [`MappedMatrix::read`] when it might be.
    pub fn open(path: &Path) -> Result<Self> {
        Self::load(path, true)
    }

    /// Validates `path` like [`MappedMatrix::open`] and copies its data into memory: later
    /// changes to the file cannot affect this matrix.
    pub fn read(path: &Path) -> Result<Self> {
        Self::load(path, false)
    }

    fn load(path: &Path, map: bool) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(Error::format(
                path,
                "negmine reads little-endian .npy data, and this machine is big-endian",
            ));
        }
        let (mut file, file_len) = open_regular(path)?;
        let header = validated_header(path, &mut file, file_len)?;
        let storage = if header.data_len == 0 {
            Storage::Empty
        } else if map {
            // SAFETY: the mapping is read-only and we never write to the file. Another process
            // truncating or rewriting it in place while mapped is undefined behaviour (SIGBUS
            // on access); that is the documented contract of `open`, `read` is the alternative.
            let map = unsafe {
                MmapOptions::new()
                    .offset(header.data_offset as u64)
                    .len(header.data_len)
                    .map(&file)
            };
            Storage::Mapped(map.map_err(|e| Error::io(path, e))?)
        } else {
            read_elements(path, &mut file, &header)?
        };
        let matrix = MappedMatrix {
            path: path.to_path_buf(),
            dtype: header.dtype,
            rows: header.rows,
            dim: header.dim,
            storage,
        };
        // Establishes the invariant `view` relies on.
        matrix.try_view()?;
        Ok(matrix)
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

    /// Whether the data are mapped from the file (false: copied into memory, or empty).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    fn try_view(&self) -> Result<MatrixView<'_>> {
        let elements = match &self.storage {
            Storage::Empty => match self.dtype {
                DType::F32 => Elements::F32(&[]),
                DType::F16 => Elements::F16(&[]),
            },
            Storage::OwnedF32(v) => Elements::F32(v),
            Storage::OwnedF16(v) => Elements::F16(v),
            Storage::Mapped(map) => {
                let ptr = map.as_ptr();
                if ptr.align_offset(self.dtype.size()) != 0 || map.len() % self.dtype.size() != 0 {
                    return Err(Error::format(&self.path, "mapped data are misaligned"));
                }
                let len = map.len() / self.dtype.size();
                match self.dtype {
                    DType::F32 => {
                        // SAFETY: `ptr` is aligned for the element type (the mapping starts on
                        // a page boundary, the data offset is a multiple of the element size,
                        // and we just checked), `len` elements cover exactly the mapped bytes,
                        // every bit pattern is a valid f32, and the slice borrows `self`, which
                        // owns the mapping.
                        let data = unsafe { std::slice::from_raw_parts(ptr.cast::<f32>(), len) };
                        Elements::F32(data)
                    }
                    DType::F16 => {
                        // SAFETY: as above, for 2-byte f16 elements.
                        let data = unsafe { std::slice::from_raw_parts(ptr.cast::<f16>(), len) };
                        Elements::F16(data)
                    }
                }
            }
        };
        MatrixView::new(elements, self.rows, self.dim)
    }

    /// The data as a matrix.
    pub fn view(&self) -> MatrixView<'_> {
        self.try_view()
            .expect("the storage was checked against the shape when the file was opened")
    }

    /// The page-aligned address range of `rows` in the mapping: (first page, end), with `end`
    /// rounded down to a page unless `rows` reaches the last row (the tail of the last page
    /// holds no other rows). `outer`: round outwards instead (for read-ahead).
    fn page_range(&self, rows: Range<usize>, outer: bool) -> Option<(usize, usize)> {
        let Storage::Mapped(map) = &self.storage else {
            return None;
        };
        let end_row = rows.end.min(self.rows);
        let start_row = rows.start.min(end_row);
        if start_row == end_row {
            return None;
        }
        let row_bytes = self.dim * self.dtype.size();
        let base = map.as_ptr() as usize;
        let (start, end) = (base + start_row * row_bytes, base + end_row * row_bytes);
        let page = page_size();
        let down = |a: usize| a - a % page;
        let up = |a: usize| down(a + page - 1);
        let range = if outer {
            (down(start), end)
        } else {
            let end = if end_row == self.rows {
                up(end)
            } else {
                down(end)
            };
            (up(start), end)
        };
        (range.0 < range.1).then_some(range)
    }

    /// Hint that `rows` will be read soon (read-ahead for files larger than memory). Rows out
    /// of range are ignored; does nothing for data held in memory.
    pub fn will_need(&self, rows: Range<usize>) {
        if let Some((start, end)) = self.page_range(rows, true) {
            // SAFETY: [start, end) lies within our mapping (its first page is the page of a
            // mapped byte, and the kernel mapped whole pages); WILLNEED only schedules reads.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_WILLNEED);
            }
        }
    }

    /// Drop the pages that lie entirely within `rows` from this process's resident set; they
    /// stay in the page cache. Rows out of range are ignored.
    pub fn dont_need(&self, rows: Range<usize>) {
        if let Some((start, end)) = self.page_range(rows, false) {
            // SAFETY: [start, end) is page-aligned and lies within our mapping. The mapping is
            // a read-only shared file mapping, so DONTNEED loses nothing: a later access simply
            // reads the page from the file again. Slices into the mapping stay valid.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// Reads the data of a validated file into an owned, aligned buffer.
fn read_elements(path: &Path, file: &mut File, header: &Header) -> Result<Storage> {
    let elements = header.data_len / header.dtype.size();
    let truncated = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::format(path, "file was truncated while being read")
        } else {
            Error::io(path, e)
        }
    };
    // The prefix read may have consumed data bytes; read from the data offset again.
    io::Seek::seek(file, io::SeekFrom::Start(header.data_offset as u64))
        .map_err(|e| Error::io(path, e))?;
    let mut reader: &File = file;
    let alloc_error = || {
        Error::format(
            path,
            format!("cannot allocate {} bytes to read the file", header.data_len),
        )
    };
    let storage = match header.dtype {
        DType::F32 => {
            let mut data: Vec<f32> = Vec::new();
            data.try_reserve_exact(elements)
                .map_err(|_| alloc_error())?;
            data.resize(elements, 0.0);
            // SAFETY: the byte view covers exactly the f32 buffer (u8 has no alignment
            // requirement), and any bytes written into it form valid f32 values.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), header.data_len)
            };
            reader.read_exact(bytes).map_err(truncated)?;
            Storage::OwnedF32(data)
        }
        DType::F16 => {
            let mut data: Vec<f16> = Vec::new();
            data.try_reserve_exact(elements)
                .map_err(|_| alloc_error())?;
            data.resize(elements, f16::ZERO);
            // SAFETY: as above, for f16 (a 2-byte plain-old-data type).
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), header.data_len)
            };
            reader.read_exact(bytes).map_err(truncated)?;
            Storage::OwnedF16(data)
        }
    };
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(|e| Error::io(path, e))? != 0 {
        return Err(Error::format(
            path,
            "file grew while being read: it has trailing bytes after the data",
        ));
    }
    Ok(storage)
}
