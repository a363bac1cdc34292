//! The one error type of the wire crate.

/// Everything that can go wrong while decoding, validating or parsing protocol data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snappy: body is not valid snappy block format: {0}")]
    DecodeSnappy(String),
    #[error("snappy: declared decoded length {declared} bytes exceeds the limit of {limit} bytes")]
    DecodedTooLarge { declared: u64, limit: u64 },
    #[error("snappy: cannot compress: {0}")]
    EncodeSnappy(String),
    #[error("protobuf: cannot decode {message}: {source}")]
    DecodeProtobuf {
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("protobuf: cannot decode {message}: {reason}")]
    MalformedProtobuf {
        message: &'static str,
        reason: &'static str,
    },
    #[error("remote-write 2.0: {0}")]
    InvalidV2(String),
    #[error("{0}")]
    InvalidLabels(#[from] crate::labels::LabelError),
    #[error("exposition format, line {line}: {reason}")]
    ParseExposition { line: usize, reason: String },
    #[error("unsupported content type {0:?}")]
    UnsupportedContentType(String),
}

impl Error {
    /// The HTTP status a receiver answers a request with when its body fails this way
    /// (remote-write specs 1.0 and 2.0): 415 for an unknown message type, 413 for a body that
    /// would decompress past the limit, 400 for everything else (never worth retrying).
    pub fn http_status(&self) -> u16 {
        match self {
            Error::UnsupportedContentType(_) => 415,
            Error::DecodedTooLarge { .. } => 413,
            _ => 400,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
