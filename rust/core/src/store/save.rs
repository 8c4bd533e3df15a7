//! Atomic writing of `.npy` files.
//!
//! [`save`] writes `.npy` 1.0 (2.0 only when the header would not fit) exactly as
//! `np.save` does, atomically: the data go to an unnamed `O_TMPFILE` in the destination
//! directory, are fsynced, linked under a hidden temporary name and renamed over the
//! destination, then the directory is fsynced. A crash while writing leaves no file behind;
//! the destination is always the old file or the complete new one. Where `O_TMPFILE` is not
//! supported a named hidden temp file is used instead and removed on every error. The new file
//! gets the default mode (`0o666 & !umask`), and a symlink at the destination is replaced, not
//! followed.
//!
//! Temp names are the package's one pattern, `.<name>.<12 hex digits>.tmp` (as the Python
//! side's atomic writes name theirs), and the writer holds an exclusive `flock` on its temp file
//! while it lives. A writer killed (`kill -9`) between naming its temp file and the rename leaves
//! it behind; every save first removes such names of its destination whose lock it can take
//! ([`sweep`]): a lock it cannot take belongs to a live writer.

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
fn write_elements(out: &mut (impl Write + ?Sized), matrix: &MatrixView<'_>) -> io::Result<()> {
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

/// The longest destination name kept whole in a temp name (which must stay under the usual
/// 255-byte limit); [`sweep`] matches the same prefix.
const NAME_BYTES: usize = 150;

fn temp_prefix(file_name: &OsStr) -> OsString {
    let base = file_name.as_bytes();
    let mut prefix = OsString::from(".");
    prefix.push(OsStr::from_bytes(&base[..base.len().min(NAME_BYTES)]));
    prefix.push(".");
    prefix
}

/// A hidden name in the destination directory that no other writer uses:
/// `.<name>.<12 hex digits>.tmp`, the digits mixed from the process, the time and a counter.
fn temp_name(file_name: &OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = (u64::from(std::process::id()) << 40) ^ nanos ^ count.rotate_left(20);
    let mut name = temp_prefix(file_name);
    name.push(format!("{:012x}.tmp", crate::rng::fmix(seed) >> 16));
    name
}

/// Whether `name` is a temp name of a destination whose temp names start with `prefix`.
fn is_temp_name(name: &[u8], prefix: &[u8]) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(b".tmp"))
        .is_some_and(|digits| {
            digits.len() == 12
                && digits
                    .iter()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

fn lock(file: &File, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor this `File` owns and keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Removes the temp files that killed writers to `file_name` left in `dir`: each regular file
/// of this user under a temp name of it whose lock is free. Errors are ignored: a name that
/// cannot be removed now is removed by a later save.
fn sweep(dir: &Path, file_name: &OsStr) {
    let prefix = temp_prefix(file_name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_temp_name(entry.file_name().as_bytes(), prefix.as_bytes()) {
            let _ = remove_if_abandoned(&entry.path());
        }
    }
}

fn remove_if_abandoned(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !std::fs::symlink_metadata(path)?.is_file() {
        return Ok(()); // never opened: a FIFO or device is no temp file of ours
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if !meta.is_file() || meta.uid() != unsafe { libc::geteuid() } {
        return Ok(());
    }
    // A live writer holds the lock: its temp file is not ours to take.
    lock(&file, libc::LOCK_EX | libc::LOCK_NB)?;
    if same_file(&meta, &std::fs::symlink_metadata(path)?) {
        std::fs::remove_file(path)?;
    }
    Ok(())
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

/// What a file's bytes are: written into a buffered writer by [`write_atomically`].
pub(crate) type Body<'a> = &'a dyn Fn(&mut dyn Write) -> io::Result<()>;

fn write_and_sync(file: &mut File, body: Body<'_>) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, &mut *file);
    body(&mut out)?;
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
    body: Body<'_>,
) -> io::Result<Option<(TempGuard, File)>> {
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
    // Held until the rename: a sweep never takes the name this file is linked under.
    lock(&file, libc::LOCK_EX)?;
    write_and_sync(&mut file, body)?;
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
        Ok((temp, ())) => Ok(Some((TempGuard(Some(temp)), file))),
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
    _body: Body<'_>,
) -> io::Result<Option<(TempGuard, File)>> {
    Ok(None)
}

fn save_via_named_temp(
    dir: &Path,
    file_name: &OsStr,
    body: Body<'_>,
) -> io::Result<(TempGuard, File)> {
    loop {
        let (temp, mut file) = with_temp_name(dir, file_name, |temp| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .custom_flags(libc::O_CLOEXEC)
                .open(temp)
        })?;
        let guard = TempGuard(Some(temp));
        lock(&file, libc::LOCK_EX)?;
        // A sweep that opened the name before this lock may have removed it: take another.
        let ours = std::fs::symlink_metadata(guard.0.as_deref().unwrap_or(dir))
            .is_ok_and(|m| file.metadata().is_ok_and(|f| same_file(&f, &m)));
        if !ours {
            continue;
        }
        write_and_sync(&mut file, body)?;
        return Ok((guard, file));
    }
}

/// Writes `matrix` to `path` as `.npy`, atomically: a temp file in the same directory (unnamed
/// while being written, where the system allows), fsync, rename, fsync of the directory. On
/// any error the destination is untouched and no temp file is left.
pub fn save(path: &Path, matrix: &MatrixView<'_>) -> Result<()> {
    let header = npy_header(matrix.dtype(), matrix.rows(), matrix.dim());
    write_atomically(path, &|out| {
        out.write_all(&header)?;
        write_elements(out, matrix)
    })
}

/// Writes the bytes `body` produces to `path` atomically, as [`save`] writes a `.npy` file.
pub(crate) fn write_atomically(path: &Path, body: Body<'_>) -> Result<()> {
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
    sweep(dir, file_name);
    // The temp file stays open (locked) until it is renamed into place.
    let (mut guard, _locked) = match save_via_tmpfile(dir, file_name, body).map_err(io_err)? {
        Some(linked) => linked,
        None => save_via_named_temp(dir, file_name, body).map_err(io_err)?,
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
