//! Atomic writing of `.npy` files.
//!
//! [`save`] writes `.npy` 1.0 (2.0 only when the header would not fit) exactly as
//! `np.save` does, atomically: the data go to an unnamed `O_TMPFILE` in the destination
//! directory, are fsynced, linked under a hidden temporary name and renamed over the
//! destination, then the directory is fsynced. A crash while writing leaves no file behind;
//! the destination is always the old file or the complete new one. Where `O_TMPFILE` is not
//! supported a named hidden temp file is used instead and removed on every error (only a
//! `kill -9` during such a write can leave it behind). The new file gets the default mode
//! (`0o666 & !umask`), and a symlink at the destination is replaced, not followed.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::header::npy_header;
use crate::error::{Error, Result};
use crate::matrix::{Elements, MatrixView};

/// Writes the elements as little-endian bytes.
fn write_elements(out: &mut impl Write, matrix: &MatrixView<'_>) -> io::Result<()> {
    if cfg!(target_endian = "little") {
        let bytes: &[u8] = match matrix.elements() {
            // SAFETY: reinterpreting initialised f32 values as bytes (u8 needs no alignment);
            // the byte slice covers exactly the elements and borrows them.
            Elements::F32(s) => unsafe {
                std::slice::from_raw_parts(s.as_ptr().cast(), std::mem::size_of_val(s))
            },
            // SAFETY: as above, for f16.
            Elements::F16(s) => unsafe {
                std::slice::from_raw_parts(s.as_ptr().cast(), std::mem::size_of_val(s))
            },
        };
        return out.write_all(bytes);
    }
    let mut buf = Vec::with_capacity(1 << 20);
    match matrix.elements() {
        Elements::F32(s) => {
            for chunk in s.chunks(1 << 18) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                out.write_all(&buf)?;
            }
        }
        Elements::F16(s) => {
            for chunk in s.chunks(1 << 19) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                out.write_all(&buf)?;
            }
        }
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A hidden name in the destination directory that no other writer uses.
fn temp_name(file_name: &OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = file_name.as_bytes();
    // Keep the name under the usual 255-byte limit.
    let base = &base[..base.len().min(150)];
    let mut name = OsString::from(".");
    name.push(OsStr::from_bytes(base));
    name.push(format!(
        ".{:x}-{nanos:x}-{count}.negmine-tmp",
        std::process::id()
    ));
    name
}

/// Retries `attempt` with fresh temp names while the name is taken.
fn with_temp_name<T>(
    dir: &Path,
    file_name: &OsStr,
    mut attempt: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T)> {
    let mut tries = 0;
    loop {
        let temp = dir.join(temp_name(file_name));
        match attempt(&temp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            result => return result.map(|t| (temp, t)),
        }
    }
}

/// Removes a named temp file unless disarmed: every error path leaves nothing behind.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn write_and_sync(file: &mut File, header: &[u8], matrix: &MatrixView<'_>) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, &mut *file);
    out.write_all(header)?;
    write_elements(&mut out, matrix)?;
    out.flush()?;
    drop(out);
    file.sync_all()
}

/// The unnamed-temp-file path: `Ok(None)` when the kernel or file system has no `O_TMPFILE`
/// (or its file cannot be linked), so the caller falls back to a named temp file.
#[cfg(target_os = "linux")]
fn save_via_tmpfile(
    dir: &Path,
    file_name: &OsStr,
    header: &[u8],
    matrix: &MatrixView<'_>,
) -> io::Result<Option<PathBuf>> {
    let file = OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    let mut file = match file {
        Ok(file) => file,
        // Old kernels see O_TMPFILE as O_DIRECTORY (EISDIR); some file systems lack it.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EISDIR | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    write_and_sync(&mut file, header, matrix)?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let linked = with_temp_name(dir, file_name, |temp| {
        let temp = c_path(temp)?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr(),
                libc::AT_FDCWD,
                temp.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    });
    match linked {
        Ok((temp, ())) => Ok(Some(temp)),
        // No /proc, or a file system that cannot link: write a named temp file instead.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EPERM | libc::EXDEV)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn save_via_tmpfile(
    _dir: &Path,
    _file_name: &OsStr,
    _header: &[u8],
    _matrix: &MatrixView<'_>,
) -> io::Result<Option<PathBuf>> {
    Ok(None)
}

fn save_via_named_temp(
    dir: &Path,
    file_name: &OsStr,
    header: &[u8],
    matrix: &MatrixView<'_>,
) -> io::Result<TempGuard> {
    let (temp, mut file) = with_temp_name(dir, file_name, |temp| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_CLOEXEC)
            .open(temp)
    })?;
    let guard = TempGuard(Some(temp));
    write_and_sync(&mut file, header, matrix)?;
    Ok(guard)
}

/// Writes `matrix` to `path` as `.npy`, atomically: a temp file in the same directory (unnamed
/// while being written, where the system allows), fsync, rename, fsync of the directory. On
/// any error the destination is untouched and no temp file is left.
pub fn save(path: &Path, matrix: &MatrixView<'_>) -> Result<()> {
    let Some(file_name) = path.file_name() else {
        return Err(Error::invalid(format!(
            "cannot save to {path:?}: the path does not name a file"
        )));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let io_err = |e: io::Error| Error::io(path, e);
    let dir_file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io_err)?;
    // Refused before writing anything (rename would refuse it only after the whole write).
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(io_err(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let header = npy_header(matrix.dtype(), matrix.rows(), matrix.dim());
    let mut guard = match save_via_tmpfile(dir, file_name, &header, matrix).map_err(io_err)? {
        Some(temp) => TempGuard(Some(temp)),
        None => save_via_named_temp(dir, file_name, &header, matrix).map_err(io_err)?,
    };
    if let Some(temp) = &guard.0 {
        std::fs::rename(temp, path).map_err(io_err)?;
    }
    guard.disarm();
    // Makes the rename itself durable. Some file systems cannot fsync a directory (EINVAL);
    // the file is in place either way.
    match dir_file.sync_all() {
        Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(io_err(e)),
        _ => Ok(()),
    }
}
