//! The one mapping from core errors to Python exceptions. The exception classes live in
//! `negmine/errors.py` so that they can inherit from both `NegmineError` and a builtin.

use negmine_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyPermissionError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

fn negmine_exception(py: Python<'_>, name: &str, message: String) -> PyErr {
    let class = py
        .import("negmine.errors")
        .and_then(|module| module.getattr(name));
    match class {
        Ok(class) => match class.call1((message,)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

pub fn to_pyerr(err: Error) -> PyErr {
    Python::attach(|py| match err {
        Error::Format { .. } => negmine_exception(py, "FormatError", err.to_string()),
        Error::InvalidArgument(message) => negmine_exception(py, "InvalidArgumentError", message),
        Error::InvalidType(message) => negmine_exception(py, "InvalidTypeError", message),
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
        Error::Internal(_) => negmine_exception(py, "InternalError", err.to_string()),
        Error::Interrupted => PyKeyboardInterrupt::new_err(PyTuple::empty(py).unbind()),
    })
}

/// `Result` into `PyResult`.
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for negmine_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
