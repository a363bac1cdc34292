//! The one error type of the planner crate.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid planner configuration: {0}")]
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
    /// The query API could not be reached or did not answer in time.
    #[error("cannot query {url}: {message}; check --source and that the store is up")]
    Unreachable { url: String, message: String },
    /// The query API answered with an error (Prometheus's `errorType` and `error`).
    #[error("{url} rejected the query {query:?}: {error_type}: {message}")]
    QueryFailed {
        url: String,
        query: String,
        error_type: String,
        message: String,
    },
    /// The answer was not the Prometheus HTTP API's JSON.
    #[error(
        "{url} answered the query {query:?} with something that is not Prometheus API JSON: {message}"
    )]
    BadAnswer {
        url: String,
        query: String,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
