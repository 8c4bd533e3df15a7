//! The one mapping from core errors to Python exceptions. The exception classes live in
//! `negmine/errors.py` so that they can inherit from both `NegmineError` and a builtin.

use negmine_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyPermissionError};
use pyo3::prelude::*;

pyo3::import_exception!(negmine.errors, FormatError);
pyo3::import_exception!(negmine.errors, InvalidArgumentError);
pyo3::import_exception!(negmine.errors, InvalidTypeError);
pyo3::import_exception!(negmine.errors, InternalError);

pub fn to_pyerr(err: Error) -> PyErr {
    match err {
        Error::Format { .. } => FormatError::new_err(err.to_string()),
        Error::InvalidArgument(message) => InvalidArgumentError::new_err(message),
        Error::InvalidType(message) => InvalidTypeError::new_err(message),
        Error::Io { path, source } => {
            let errno = source.raw_os_error().unwrap_or(0);
            // Python prints "[Errno N] strerror: 'path'" itself: std's " (os error N)"
            // suffix would say the error twice.
            let text = source.to_string();
            let strerror = text
                .strip_suffix(&format!(" (os error {errno})"))
                .unwrap_or(&text)
                .to_owned();
            let args = (errno, strerror, path.to_string_lossy().into_owned());
            match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
                _ => PyOSError::new_err(args),
            }
        }
        Error::Internal(_) => InternalError::new_err(err.to_string()),
        Error::Interrupted => PyKeyboardInterrupt::new_err(()),
    }
}

/// A core `Result` as a `PyResult`.
pub trait PyResultExt<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> PyResultExt<T> for negmine_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
