//! The one error type of the relay crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue {path}: {source}")]
    QueueIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "queue is full ({pending_bytes} of {max_bytes} bytes pending); the receiver is behind, retry later"
    )]
    QueueFull { pending_bytes: u64, max_bytes: u64 },
    #[error("batch of {bytes} bytes is larger than the whole queue ({max_bytes} bytes)")]
    RecordTooLarge { bytes: u64, max_bytes: u64 },
    #[error("queue is closed")]
    QueueClosed,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Wire(#[from] strata_wire::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Client(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::QueueIo { path, source }
    }
}
