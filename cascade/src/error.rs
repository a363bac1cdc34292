//! The one error type of the cascade crate, and the one place errors become HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use strata_relay::server::too_many_requests;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `Authorization: Bearer` header, or a token no sender was given.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Series outside the labels the sender's token allows; nothing of the request was written.
    #[error("{0}")]
    Forbidden(String),
    /// A cell is over its samples-per-second limit; nothing of the request was written.
    #[error("{0}")]
    RateLimited(String),
    #[error(transparent)]
    Wire(#[from] strata_wire::Error),
    #[error(transparent)]
    Relay(#[from] strata_relay::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = format!("{self}\n");
        match self {
            Error::Unauthorized(_) => {
                let mut resp = (StatusCode::UNAUTHORIZED, message).into_response();
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"strata cascade\""),
                );
                resp
            }
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, message).into_response(),
            Error::RateLimited(_) => too_many_requests(message),
            Error::Relay(e) => e.into_response(),
            Error::Wire(e) => {
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
                (status, message).into_response()
            }
            Error::Config(_) => (StatusCode::BAD_REQUEST, message).into_response(),
            Error::Io { .. } => (StatusCode::SERVICE_UNAVAILABLE, message).into_response(),
        }
    }
}
