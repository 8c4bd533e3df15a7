//! One error type for the whole core; the Python binding maps each variant to one exception.

use std::path::PathBuf;

/// Everything that can go wrong in negmine-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is not a valid embeddings file (bad magic, header, dtype, size...).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    /// An argument has a wrong value (shape, k, ids, thresholds...).
    #[error("{0}")]
    InvalidArgument(String),

    /// An argument has a wrong type (dtype, layout).
    #[error("{0}")]
    InvalidType(String),

    /// An operating-system error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The caller asked to stop (Ctrl-C) between two blocks of work.
    #[error("interrupted")]
    Interrupted,

    /// A bug in negmine (a caught panic), reported instead of crashing the caller.
    #[error("internal error in negmine (please report it): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
