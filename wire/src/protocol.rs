//! Protocol constants shared by senders and receivers.
//!
//! Values follow the Prometheus remote-write specifications 1.0
//! (<https://prometheus.io/docs/specs/remote_write_spec/>) and 2.0
//! (<https://prometheus.io/docs/specs/prw/remote_write_spec_2_0/>), and remote-read.

/// `Content-Type` of a remote-write 1.0 body.
pub const CONTENT_TYPE_V1: &str = "application/x-protobuf";
/// `Content-Type` of a remote-write 2.0 body (spec 2.0, "Protocol").
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
/// Fully qualified protobuf message of remote-write 1.0.
pub const PROTO_V1: &str = "prometheus.WriteRequest";
/// Fully qualified protobuf message of remote-write 2.0.
pub const PROTO_V2: &str = "io.prometheus.write.v2.Request";
/// `Content-Encoding` of every remote-write and remote-read body.
pub const CONTENT_ENCODING_SNAPPY: &str = "snappy";
/// Version header name.
pub const HEADER_VERSION: &str = "X-Prometheus-Remote-Write-Version";
/// Version header value for 1.0.
pub const VERSION_V1: &str = "0.1.0";
/// Version header value for 2.0.
pub const VERSION_V2: &str = "2.0.0";
/// Remote-read version header name and value.
pub const HEADER_READ_VERSION: &str = "X-Prometheus-Remote-Read-Version";
pub const READ_VERSION: &str = "0.1.0";
/// 2.0 response headers counting what the receiver wrote.
pub const HEADER_SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HEADER_HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const HEADER_EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";
/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// Which remote-write message a request body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteVersion {
    V1,
    V2,
}

/// The headers a remote-write request carries besides its body (spec 1.0 and 2.0, "Protocol").
pub fn request_headers(version: WriteVersion) -> [(&'static str, &'static str); 3] {
    let (content_type, version) = match version {
        WriteVersion::V1 => (CONTENT_TYPE_V1, VERSION_V1),
        WriteVersion::V2 => (CONTENT_TYPE_V2, VERSION_V2),
    };
    [
        ("Content-Type", content_type),
        ("Content-Encoding", CONTENT_ENCODING_SNAPPY),
        (HEADER_VERSION, version),
    ]
}

/// The remote-write 2.0 response headers and their counts (spec 2.0, "Response"): samples,
/// histograms and exemplars the receiver wrote. Sent on success and on a partial 400.
pub fn written_headers(
    samples: usize,
    histograms: usize,
    exemplars: usize,
) -> [(&'static str, usize); 3] {
    [
        (HEADER_SAMPLES_WRITTEN, samples),
        (HEADER_HISTOGRAMS_WRITTEN, histograms),
        (HEADER_EXEMPLARS_WRITTEN, exemplars),
    ]
}

/// Picks the message type from a `Content-Type` header, as the 2.0 spec requires of receivers:
/// a missing header or a plain `application/x-protobuf` means 1.0; `proto=` selects explicitly.
/// Anything else is an error the receiver answers with 415 Unsupported Media Type.
pub fn write_version(content_type: Option<&str>) -> crate::Result<WriteVersion> {
    let Some(ct) = content_type else {
        return Ok(WriteVersion::V1);
    };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    if !media.eq_ignore_ascii_case(CONTENT_TYPE_V1) {
        return Err(crate::Error::UnsupportedContentType(ct.to_string()));
    }
    let mut version = WriteVersion::V1;
    for param in parts {
        if let Some((k, v)) = param.split_once('=')
            && k.trim().eq_ignore_ascii_case("proto")
        {
            version = match v.trim().trim_matches('"') {
                PROTO_V1 => WriteVersion::V1,
                PROTO_V2 => WriteVersion::V2,
                _ => return Err(crate::Error::UnsupportedContentType(ct.to_string())),
            };
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_negotiation() {
        assert_eq!(write_version(None).unwrap(), WriteVersion::V1);
        assert_eq!(
            write_version(Some("application/x-protobuf")).unwrap(),
            WriteVersion::V1
        );
        assert_eq!(
            write_version(Some(CONTENT_TYPE_V2)).unwrap(),
            WriteVersion::V2
        );
        assert_eq!(
            write_version(Some(
                "application/x-protobuf; proto=prometheus.WriteRequest"
            ))
            .unwrap(),
            WriteVersion::V1
        );
        assert!(write_version(Some("application/json")).is_err());
        assert!(write_version(Some("application/x-protobuf;proto=foo.Bar")).is_err());
    }
}
