//! The one error type of the simulator crate.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid fleet: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse {
        path: std::path::PathBuf,
        message: String,
    },
    /// The receiver refused a backfill request for good (a 4xx other than 429).
    #[error("{url} refused the history with {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    /// The receiver kept failing (5xx, 429 or no connection) through every retry.
    #[error("{url} did not accept the history after {attempts} attempts: {last}")]
    Unreachable {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error(transparent)]
    Wire(#[from] strata_wire::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
