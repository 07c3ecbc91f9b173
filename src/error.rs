//! Errors: every failure flowlab reports, each naming what was wrong and where.

use std::path::PathBuf;

/// Everything that can go wrong in flowlab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input line that does not parse. Names the file, the 1-based line and the reason.
    #[error("{file}:{line}: {reason}")]
    BadLine {
        /// The input file (or `socket host:port`).
        file: String,
        /// 1-based line number.
        line: u64,
        /// What was wrong with the line.
        reason: String,
    },
    /// A duration such as `10s` that does not parse.
    #[error("bad duration {text:?}: {reason}")]
    Duration {
        /// What was written.
        text: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// An I/O failure, with the path or address involved.
    #[error("{context}: {source}")]
    Io {
        /// What flowlab was doing, usually with the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A wrong argument or option.
    #[error("{0}")]
    Usage(String),
    /// The timely runtime could not start or a worker failed.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// An I/O error while working on `path`.
    pub fn io(action: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context: format!("{action} {}", path.into().display()), source }
    }
}

/// flowlab's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
