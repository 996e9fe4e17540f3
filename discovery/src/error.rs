use thiserror::Error;

/// Why discovery could not produce a list of engines.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The discovery URL itself is unusable.
    #[error("invalid discovery URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// An entry is not of the form host:port.
    #[error("invalid discovery entry {entry:?}: {reason}")]
    InvalidEntry { entry: String, reason: String },
    /// The list or file stands for more engines than the manager takes.
    #[error("discovery lists more than {limit} engines")]
    TooManyEntries { limit: usize },
    /// The scheme names a backend that does not exist or no longer exists.
    #[error("{0}")]
    Unsupported(String),
    /// The key-value store failed.
    #[error("{0}")]
    Store(#[from] crate::kv::KvError),
    /// The backing file could not be read.
    #[error("cannot read discovery file {path}: {reason}")]
    File { path: String, reason: String },
}
