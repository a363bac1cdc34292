//! The partial-acceptance rule every strata receiver shares (cascade and central).
//!
//! Remote-write 1.0 says a receiver answers 400 for a request that can never succeed, and the
//! sender must not retry it. A request where only some series are invalid must not lose the
//! valid ones: they are accepted and made durable, and the 400 names each invalid series and the
//! label that is wrong. Invalid series are never partly written.

use crate::labels::{LabelError, LabelSet};
use crate::prompb::{self, WriteRequest};
use crate::protocol::{self, WriteVersion};
use crate::{snappy, v2};

/// At most this many rejected series are described in a response body.
const MAX_REASONS: usize = 10;

/// The series a receiver refused, and why.
#[derive(Debug, Default)]
pub struct Rejected {
    /// One entry per invalid series: its index in the request and what is wrong.
    pub series: Vec<(usize, LabelError)>,
    /// Samples, histograms and exemplars of the rejected series.
    pub items: usize,
}

impl Rejected {
    pub(crate) fn add(&mut self, index: usize, error: LabelError, items: usize) {
        self.series.push((index, error));
        self.items += items;
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The human-readable 400 body: how many series were refused, and why for the first few.
    pub fn message(&self, accepted_series: usize) -> Option<String> {
        if self.series.is_empty() {
            return None;
        }
        let mut msg = format!(
            "{} of {} series rejected ({} samples); the valid series were accepted:",
            self.series.len(),
            self.series.len() + accepted_series,
            self.items
        );
        for (i, e) in self.series.iter().take(MAX_REASONS) {
            msg.push_str(&format!("\n  timeseries[{i}]: {e}"));
        }
        if self.series.len() > MAX_REASONS {
            msg.push_str(&format!(
                "\n  ... and {} more",
                self.series.len() - MAX_REASONS
            ));
        }
        Some(msg)
    }
}

/// The result of validating a write request.
#[derive(Debug, Default)]
pub struct Validated {
    /// The valid series, labels sorted, plus all metadata.
    pub accepted: WriteRequest,
    pub rejected: Rejected,
}

/// Picks the protocol version of a remote-write body by its `Content-Type` (see
/// [`protocol::write_version`]) and decompresses it, refusing more than `max_decoded_bytes`.
pub fn decompress_write(
    content_type: Option<&str>,
    body: &[u8],
    max_decoded_bytes: usize,
) -> crate::Result<(WriteVersion, Vec<u8>)> {
    let version = protocol::write_version(content_type)?;
    Ok((version, snappy::decompress(body, max_decoded_bytes)?))
}

/// Decodes a remote-write body and splits it into valid and invalid series: the whole receive
/// path a forwarding receiver runs before it queues anything. (A store decodes the output of
/// [`decompress_write`] with [`crate::view::WriteView`] instead, without copying strings.)
pub fn decode_write(
    content_type: Option<&str>,
    body: &[u8],
    max_decoded_bytes: usize,
) -> crate::Result<(WriteVersion, Validated)> {
    let (version, raw) = decompress_write(content_type, body, max_decoded_bytes)?;
    Ok((version, decode_body(version, &raw)?))
}

/// Decodes a decompressed body of the given version (2.0 is converted to 1.0) and splits it
/// into valid and invalid series.
pub fn decode_body(version: WriteVersion, raw: &[u8]) -> crate::Result<Validated> {
    let request = match version {
        WriteVersion::V1 => prompb::decode_message(raw, "prometheus.WriteRequest")?,
        WriteVersion::V2 => {
            prompb::decode_message::<v2::Request>(raw, "io.prometheus.write.v2.Request")?
                .into_v1()?
        }
    };
    Ok(Validated::split(request))
}

impl Validated {
    /// Splits `req` into valid and invalid series.
    pub fn split(req: WriteRequest) -> Self {
        let mut out = Validated {
            accepted: WriteRequest {
                timeseries: Vec::with_capacity(req.timeseries.len()),
                metadata: req.metadata,
            },
            ..Default::default()
        };
        for (i, mut ts) in req.timeseries.into_iter().enumerate() {
            match LabelSet::new(std::mem::take(&mut ts.labels)) {
                Ok(set) => {
                    ts.labels = set.into_labels();
                    out.accepted.timeseries.push(ts);
                }
                Err(e) => out.rejected.add(i, e, ts.item_count()),
            }
        }
        out
    }

    /// The human-readable 400 body for the rejected series, if any.
    pub fn rejection_message(&self) -> Option<String> {
        self.rejected.message(self.accepted.timeseries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries};

    fn series(labels: &[(&str, &str)], n: usize) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
            samples: (0..n)
                .map(|i| Sample {
                    value: 1.0,
                    timestamp: i as i64,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn valid_series_survive_invalid_neighbours() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("job", "a"), ("__name__", "up")], 2),
                series(&[("__name__", "up"), ("bad-label", "x")], 3),
                series(&[("__name__", "down")], 1),
            ],
            metadata: vec![],
        };
        let v = Validated::split(req);
        assert_eq!(v.accepted.timeseries.len(), 2);
        assert_eq!(v.accepted.timeseries[0].labels[0].name, "__name__");
        assert_eq!(v.rejected.series.len(), 1);
        assert_eq!(v.rejected.series[0].0, 1);
        assert_eq!(v.rejected.items, 3);
        let msg = v.rejection_message().unwrap();
        assert!(msg.contains("1 of 3 series rejected"), "{msg}");
        assert!(msg.contains("timeseries[1]"), "{msg}");
        assert!(msg.contains("\"bad-label\""), "{msg}");
    }

    #[test]
    fn all_valid_has_no_message() {
        let v = Validated::split(WriteRequest {
            timeseries: vec![series(&[("__name__", "up")], 1)],
            metadata: vec![],
        });
        assert!(v.rejection_message().is_none());
    }
}
