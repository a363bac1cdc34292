//! The one error type of the central store.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the central store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    WalFailed(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("block {path}: {reason}")]
    Block { path: PathBuf, reason: String },
    #[error("{0}")]
    Wire(#[from] strata_wire::Error),
    #[error("{0}")]
    BadMatcher(#[from] crate::index::BadMatcher),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("peer {url}: {reason}")]
    Peer { url: String, reason: String },
    #[error("internal error: {0}")]
    Internal(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
