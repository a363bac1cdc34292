//! Remote-write 1.0 bodies handled as bytes, for hops that forward series they need not read.
//!
//! A `prometheus.WriteRequest` is a sequence of fields: field 1 per series, field 3 per
//! metadata entry. Protobuf merges repeated fields by appending, so two encoded requests
//! written one after the other are one request holding both
//! (<https://protobuf.dev/programming-guides/encoding/#last-one-wins>). A body can therefore be
//! split into its entries ([`entries`]) and regrouped by copying bytes, and a scraper can
//! encode a series' labels once and write each new sample behind them ([`push_series`]).
//! Nothing here allocates per label.

use std::ops::Range;

use prost::Message;

use crate::prompb::{Exemplar, Label};
use crate::protocol::PROTO_V1;
use crate::view::{I64, LEN, Reader, VARINT, malformed, sample};
use crate::{Result, Sample};

/// One top-level field of a write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The whole field (key, length and message) within the body.
    pub bytes: Range<usize>,
    pub kind: EntryKind,
}

/// What an [`Entry`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Series(SeriesInfo),
    Metadata,
}

/// What a sender needs to know of a series without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesInfo {
    /// Hash of the series' label fields as encoded (xxh3 of their bytes, in order): equal for
    /// equal encodings, which is what routing a series to the same shard every time needs.
    /// It is not [`crate::labels::fingerprint`]: computing that would mean decoding.
    pub fingerprint: u64,
    /// Samples, histograms and exemplars.
    pub items: usize,
    /// Oldest and newest timestamp of its items (`i64::MAX` and `i64::MIN` when it has none).
    pub oldest: i64,
    pub newest: i64,
    /// Newest float sample timestamp (`i64::MIN` when it has none).
    pub newest_sample: i64,
}

impl Entry {
    /// Samples, histograms and exemplars in the entry (0 for metadata).
    pub fn items(&self) -> usize {
        match self.kind {
            EntryKind::Series(s) => s.items,
            EntryKind::Metadata => 0,
        }
    }
}

/// Splits a decompressed 1.0 body into its series and metadata entries, in body order.
/// Unknown fields are skipped; a malformed body is an error.
pub fn entries(body: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut key = Vec::new();
    let mut r = Reader::new(body);
    let at = |r: &Reader<'_>| body.len() - r.remaining();
    while !r.done() {
        let start = at(&r);
        let step = match r.key() {
            Ok((1, wt)) => r
                .len_field(wt)
                .and_then(|series| series_info(series, &mut key))
                .map(|info| Some(EntryKind::Series(info))),
            Ok((3, wt)) => r.len_field(wt).map(|_| Some(EntryKind::Metadata)),
            Ok((_, wt)) => r.skip(wt).map(|()| None),
            Err(e) => Err(e),
        };
        if let Some(kind) = step.map_err(|reason| malformed(PROTO_V1, reason))? {
            out.push(Entry {
                bytes: start..at(&r),
                kind,
            });
        }
    }
    Ok(out)
}

fn series_info(series: &[u8], key: &mut Vec<u8>) -> Result<SeriesInfo, &'static str> {
    let mut info = SeriesInfo {
        fingerprint: 0,
        items: 0,
        oldest: i64::MAX,
        newest: i64::MIN,
        newest_sample: i64::MIN,
    };
    let seen = |info: &mut SeriesInfo, ts: i64| {
        info.items += 1;
        info.oldest = info.oldest.min(ts);
        info.newest = info.newest.max(ts);
    };
    let mut labels = LabelFields::new(key);
    let mut r = Reader::new(series);
    let at = |r: &Reader<'_>| series.len() - r.remaining();
    while !r.done() {
        let start = at(&r);
        match r.key()? {
            (1, wt) => {
                // The label's strings are not parsed here: a hop forwarding bytes it queued
                // itself has checked them on receipt, and the next receiver checks them again.
                r.len_field(wt)?;
                labels.add(series, start..at(&r));
            }
            (2, wt) => {
                let ts = sample(r.len_field(wt)?)?.timestamp;
                seen(&mut info, ts);
                info.newest_sample = info.newest_sample.max(ts);
            }
            // Exemplar.timestamp is field 3, Histogram.timestamp field 15.
            (3, wt) => seen(&mut info, timestamp_field(r.len_field(wt)?, 3)?),
            (4, wt) => seen(&mut info, timestamp_field(r.len_field(wt)?, 15)?),
            (_, wt) => r.skip(wt)?,
        }
    }
    info.fingerprint = labels.fingerprint(series);
    Ok(info)
}

/// The label fields of one series, gathered for [`SeriesInfo::fingerprint`]: one span of the
/// series while they are contiguous (as every encoder writes them), else copied one after the
/// other into a buffer.
pub(crate) struct LabelFields<'k> {
    span: Option<Range<usize>>,
    copied: &'k mut Vec<u8>,
}

impl<'k> LabelFields<'k> {
    /// Starts a series; `copied` is a reusable buffer.
    pub(crate) fn new(copied: &'k mut Vec<u8>) -> Self {
        copied.clear();
        Self { span: None, copied }
    }

    /// Adds the label field at `field` (key, length and message) of `series`.
    pub(crate) fn add(&mut self, series: &[u8], field: Range<usize>) {
        match &mut self.span {
            None if self.copied.is_empty() => self.span = Some(field),
            Some(s) if s.end == field.start => s.end = field.end,
            _ => {
                if let Some(s) = self.span.take() {
                    self.copied.extend_from_slice(&series[s]);
                }
                self.copied.extend_from_slice(&series[field]);
            }
        }
    }

    pub(crate) fn fingerprint(self, series: &[u8]) -> u64 {
        match self.span {
            Some(s) if self.copied.is_empty() => xxhash_rust::xxh3::xxh3_64(&series[s]),
            Some(s) => {
                self.copied.extend_from_slice(&series[s]);
                xxhash_rust::xxh3::xxh3_64(self.copied)
            }
            None => xxhash_rust::xxh3::xxh3_64(self.copied),
        }
    }
}

/// The `int64` field `field` of a message (0 when absent, as protobuf defaults it).
fn timestamp_field(message: &[u8], field: u32) -> Result<i64, &'static str> {
    let mut ts = 0;
    let mut r = Reader::new(message);
    while !r.done() {
        match r.key()? {
            (f, wt) if f == field => ts = r.varint_field(wt)? as i64,
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(ts)
}

fn key(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(u64::from(field << 3 | u32::from(wire_type)), out);
}

/// Appends `labels` encoded as the label fields of a `prometheus.TimeSeries`, for
/// [`push_series`].
pub fn encode_labels(labels: &[Label], out: &mut Vec<u8>) {
    for l in labels {
        key(1, LEN, out);
        l.encode_length_delimited(out)
            .expect("a Vec<u8> grows as needed");
    }
}

/// Appends one series entry of a write request: labels encoded by [`encode_labels`], one
/// sample and an optional exemplar. Both sample fields are always written (so `-0.0` and a
/// zero timestamp survive; decoders accept explicit defaults).
pub fn push_series(out: &mut Vec<u8>, labels: &[u8], sample: Sample, exemplar: Option<&Exemplar>) {
    let ts = sample.timestamp as u64;
    let sample_len = 1 + 8 + 1 + prost::encoding::encoded_len_varint(ts);
    let exemplar_len = exemplar.map_or(0, |e| {
        let n = e.encoded_len();
        1 + prost::encoding::encoded_len_varint(n as u64) + n
    });
    let series_len = labels.len() + 1 + 1 + sample_len + exemplar_len;
    key(1, LEN, out);
    prost::encoding::encode_varint(series_len as u64, out);
    out.extend_from_slice(labels);
    key(2, LEN, out);
    prost::encoding::encode_varint(sample_len as u64, out);
    key(1, I64, out);
    out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
    key(2, VARINT, out);
    prost::encoding::encode_varint(ts, out);
    if let Some(e) = exemplar {
        key(3, LEN, out);
        e.encode_length_delimited(out)
            .expect("a Vec<u8> grows as needed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteRequest;
    use crate::prompb::strategies::write_request;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_view_decoding_gives_the_same_entries(req in write_request()) {
            let body = req.encode_to_vec();
            let mut view = crate::view::WriteView::decode(crate::protocol::WriteVersion::V1, &body)
                .expect("prost's encoding decodes")
                .validate();
            let plain = req.timeseries.iter().all(|ts| ts.histograms.is_empty() && ts.exemplars.is_empty());
            match view.take_entries() {
                Some(from_view) => prop_assert_eq!(from_view, entries(&body).expect("splits")),
                None => prop_assert!(!plain || !view.rejected.is_empty()),
            }
        }

        #[test]
        fn entries_agree_with_prost(req in write_request()) {
            let body = req.encode_to_vec();
            let entries = entries(&body).expect("prost's encoding splits");
            let series: Vec<&Entry> = entries.iter().filter(|e| e.kind != EntryKind::Metadata).collect();
            prop_assert_eq!(series.len(), req.timeseries.len());
            prop_assert_eq!(entries.len() - series.len(), req.metadata.len());
            for (e, ts) in series.iter().zip(&req.timeseries) {
                let EntryKind::Series(info) = e.kind else { unreachable!() };
                let mut encoded_labels = Vec::new();
                for l in &ts.labels {
                    prost::encoding::message::encode(1, l, &mut encoded_labels);
                }
                prop_assert_eq!(info.fingerprint, xxhash_rust::xxh3::xxh3_64(&encoded_labels));
                prop_assert_eq!(info.items, ts.item_count());
                let stamps = ts.samples.iter().map(|s| s.timestamp)
                    .chain(ts.exemplars.iter().map(|e| e.timestamp))
                    .chain(ts.histograms.iter().map(|h| h.timestamp));
                prop_assert_eq!(info.oldest, stamps.clone().min().unwrap_or(i64::MAX));
                prop_assert_eq!(info.newest, stamps.max().unwrap_or(i64::MIN));
                // Each entry alone is a request holding exactly that series.
                // (Compared encoded: NaN sums never compare equal.)
                let alone = WriteRequest::decode(&body[e.bytes.clone()]).expect("an entry decodes");
                let want = WriteRequest { timeseries: vec![ts.clone()], metadata: vec![] };
                prop_assert_eq!(alone.encode_to_vec(), want.encode_to_vec());
            }
            // Regrouped in reverse, the entries are the same request in reverse order.
            let mut reversed = Vec::new();
            for e in entries.iter().rev() {
                reversed.extend_from_slice(&body[e.bytes.clone()]);
            }
            let back = WriteRequest::decode(&reversed[..]).expect("regrouped entries decode");
            let mut want = req;
            want.timeseries.reverse();
            want.metadata.reverse();
            prop_assert_eq!(back.encode_to_vec(), want.encode_to_vec());
        }
    }

    #[test]
    fn pushed_series_decode_as_prost_encodes_them() {
        let labels = vec![Label::new("__name__", "up"), Label::new("job", "node")];
        let mut encoded = Vec::new();
        encode_labels(&labels, &mut encoded);
        let exemplar = Exemplar {
            labels: vec![Label::new("trace_id", "abc")],
            value: 2.5,
            timestamp: 1_700_000_000_123,
        };
        let mut body = Vec::new();
        let samples = [
            (
                Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                },
                None,
            ),
            (
                Sample {
                    value: -0.0,
                    timestamp: 0,
                },
                Some(&exemplar),
            ),
            (
                Sample {
                    value: f64::NAN,
                    timestamp: -5,
                },
                None,
            ),
        ];
        for (s, e) in samples {
            push_series(&mut body, &encoded, s, e);
        }
        let req = WriteRequest::decode(&body[..]).expect("valid protobuf");
        assert_eq!(req.timeseries.len(), 3);
        for (ts, (s, e)) in req.timeseries.iter().zip(samples) {
            assert_eq!(ts.labels, labels);
            assert_eq!(ts.samples.len(), 1);
            assert_eq!(ts.samples[0].value.to_bits(), s.value.to_bits());
            assert_eq!(ts.samples[0].timestamp, s.timestamp);
            assert_eq!(ts.exemplars.first(), e);
        }
        let split = entries(&body).expect("splits");
        assert_eq!(split.len(), 3);
        assert_eq!(split[1].items(), 2);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(entries(&[0x0a, 0x05, 0x0a]).is_err());
        assert!(entries(&[0x00]).is_err());
        assert!(entries(&[]).expect("empty is an empty request").is_empty());
    }
}
