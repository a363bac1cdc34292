//! Remote-write 1.0 and remote-read messages (`prometheus/prompb/{types,remote}.proto`).
//!
//! Hand-written prost structs with the official field numbers, so no `protoc` is needed. The
//! decoded 1.0 [`WriteRequest`] is also strata's internal representation of a write: 2.0 bodies
//! are decoded into it by [`crate::v2`]. [`Histogram`], [`BucketSpan`] and [`Sample`] have the
//! same field numbers in both versions and are shared.

use crate::view::SeriesRef;
use crate::{Error, Result, snappy};
use prost::Message;

/// `prometheus.WriteRequest`. Field 2 is reserved by the spec.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// `prometheus.Sample` (identical in `io.prometheus.write.v2`).
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType` (the 2.0 `Metadata.MetricType` has the same values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

impl MetricType {
    /// The type as written in a `# TYPE` line.
    pub fn as_exposition_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Gaugehistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::Stateset => "stateset",
        }
    }

    /// Parses a `# TYPE` word; `untyped` (text format) and unknown words map to `Unknown`.
    pub fn from_exposition_str(s: &str) -> Self {
        match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::Gaugehistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::Stateset,
            _ => MetricType::Unknown,
        }
    }
}

/// A native histogram sample (`prometheus.Histogram`; same field numbers in 2.0).
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(oneof = "HistogramCount", tags = "1, 2")]
    pub count: Option<HistogramCount>,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(oneof = "HistogramZeroCount", tags = "6, 7")]
    pub zero_count: Option<HistogramZeroCount>,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(enumeration = "ResetHint", tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// `Histogram.count`: integer counts or float counts.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum HistogramCount {
    #[prost(uint64, tag = "1")]
    CountInt(u64),
    #[prost(double, tag = "2")]
    CountFloat(f64),
}

/// `Histogram.zero_count`.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum HistogramZeroCount {
    #[prost(uint64, tag = "6")]
    ZeroCountInt(u64),
    #[prost(double, tag = "7")]
    ZeroCountFloat(f64),
}

/// `Histogram.ResetHint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResetHint {
    Unknown = 0,
    Yes = 1,
    No = 2,
    Gauge = 3,
}

/// `prometheus.BucketSpan`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `prometheus.ReadRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    #[prost(enumeration = "ResponseType", repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// `prometheus.ReadRequest.ResponseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseType {
    /// One snappy-compressed [`ReadResponse`] holding every sample.
    Samples = 0,
    /// A stream of length-delimited [`ChunkedReadResponse`] frames.
    StreamedXorChunks = 1,
}

/// `prometheus.Query`.
#[derive(Clone, PartialEq, Message)]
pub struct Query {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
    #[prost(message, optional, tag = "4")]
    pub hints: Option<ReadHints>,
}

/// `prometheus.LabelMatcher`.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct LabelMatcher {
    #[prost(enumeration = "MatchType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

/// `prometheus.LabelMatcher.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MatchType {
    Eq = 0,
    Neq = 1,
    Re = 2,
    Nre = 3,
}

/// `prometheus.ReadHints`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadHints {
    #[prost(int64, tag = "1")]
    pub step_ms: i64,
    #[prost(string, tag = "2")]
    pub func: String,
    #[prost(int64, tag = "3")]
    pub start_ms: i64,
    #[prost(int64, tag = "4")]
    pub end_ms: i64,
    #[prost(string, repeated, tag = "5")]
    pub grouping: Vec<String>,
    #[prost(bool, tag = "6")]
    pub by: bool,
    #[prost(int64, tag = "7")]
    pub range_ms: i64,
}

/// `prometheus.ReadResponse`: one result per query, in query order.
#[derive(Clone, PartialEq, Message)]
pub struct ReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

/// `prometheus.QueryResult`.
#[derive(Clone, PartialEq, Message)]
pub struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.ChunkedReadResponse`: one frame of a streamed remote-read response.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

/// `prometheus.ChunkedSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

/// `prometheus.Chunk`.
#[derive(Clone, PartialEq, Message)]
pub struct Chunk {
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    #[prost(enumeration = "ChunkEncoding", tag = "3")]
    pub r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// `prometheus.Chunk.Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ChunkEncoding {
    Unknown = 0,
    Xor = 1,
    Histogram = 2,
    FloatHistogram = 3,
}

impl TimeSeries {
    /// Samples, histograms and exemplars together: what batch limits and drop counters count.
    pub fn item_count(&self) -> usize {
        self.samples.len() + self.histograms.len() + self.exemplars.len()
    }
}

impl WriteRequest {
    /// Samples, histograms and exemplars of all series together.
    pub fn item_count(&self) -> usize {
        self.timeseries.iter().map(TimeSeries::item_count).sum()
    }

    /// Number of float samples in the request.
    pub fn sample_count(&self) -> usize {
        self.timeseries.iter().map(|s| s.samples.len()).sum()
    }

    /// Number of native histogram samples in the request.
    pub fn histogram_count(&self) -> usize {
        self.timeseries.iter().map(|s| s.histograms.len()).sum()
    }

    /// Number of exemplars in the request.
    pub fn exemplar_count(&self) -> usize {
        self.timeseries.iter().map(|s| s.exemplars.len()).sum()
    }

    /// Every series as a [`SeriesRef`], as a zero-copy [`crate::view::WriteView`] gives them.
    pub fn series_refs(&self) -> impl Iterator<Item = SeriesRef<'_, Label>> {
        self.timeseries.iter().map(|t| SeriesRef {
            labels: &t.labels,
            samples: &t.samples,
            histograms: t.histograms.len(),
            exemplars: t.exemplars.len(),
        })
    }

    /// Protobuf-encodes and snappy-compresses the request: a remote-write 1.0 body.
    pub fn encode_snappy(&self) -> Result<Vec<u8>> {
        snappy::compress(&self.encode_body())
    }

    /// Protobuf-encodes the request without compressing it.
    pub fn encode_body(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes a remote-write 1.0 body, refusing to decompress more than `limit` bytes.
    pub fn decode_snappy(body: &[u8], limit: usize) -> Result<Self> {
        Self::decode_body(&snappy::decompress(body, limit)?)
    }

    /// Decodes an already decompressed remote-write 1.0 body.
    pub fn decode_body(body: &[u8]) -> Result<Self> {
        decode_message(body, "prometheus.WriteRequest")
    }
}

impl ReadRequest {
    /// Decodes a remote-read request body.
    pub fn decode_snappy(body: &[u8], limit: usize) -> Result<Self> {
        decode_message(&snappy::decompress(body, limit)?, "prometheus.ReadRequest")
    }

    /// Encodes a remote-read request body.
    pub fn encode_snappy(&self) -> Result<Vec<u8>> {
        snappy::compress(&self.encode_to_vec())
    }
}

impl ReadResponse {
    /// Decodes a SAMPLES remote-read response body.
    pub fn decode_snappy(body: &[u8], limit: usize) -> Result<Self> {
        decode_message(&snappy::decompress(body, limit)?, "prometheus.ReadResponse")
    }

    /// Encodes a SAMPLES remote-read response body.
    pub fn encode_snappy(&self) -> Result<Vec<u8>> {
        snappy::compress(&self.encode_to_vec())
    }
}

/// Decodes protobuf bytes, naming the message in the error.
pub(crate) fn decode_message<M: Message + Default>(
    bytes: &[u8],
    message: &'static str,
) -> Result<M> {
    M::decode(bytes).map_err(|source| Error::DecodeProtobuf { message, source })
}

#[cfg(test)]
pub(crate) mod strategies {
    //! proptest strategies for every message, shared by the round-trip tests.
    use super::*;
    use proptest::prelude::*;

    pub fn label() -> impl Strategy<Value = Label> {
        ("[a-zA-Z_][a-zA-Z0-9_]{0,12}", "\\PC{0,16}").prop_map(|(n, v)| Label::new(n, v))
    }

    /// Bit-exact float strategy so NaN payloads (including the staleness marker) survive.
    pub fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(crate::stale_nan()),
            Just(f64::INFINITY),
            Just(-0.0),
        ]
    }

    pub fn sample() -> impl Strategy<Value = Sample> {
        (float(), any::<i64>()).prop_map(|(value, timestamp)| Sample { value, timestamp })
    }

    pub fn exemplar() -> impl Strategy<Value = Exemplar> {
        (prop::collection::vec(label(), 0..3), float(), any::<i64>()).prop_map(
            |(labels, value, timestamp)| Exemplar {
                labels,
                value,
                timestamp,
            },
        )
    }

    pub fn span() -> impl Strategy<Value = BucketSpan> {
        (any::<i32>(), any::<u32>()).prop_map(|(offset, length)| BucketSpan { offset, length })
    }

    pub fn histogram() -> impl Strategy<Value = Histogram> {
        (
            prop_oneof![
                Just(None),
                any::<u64>().prop_map(|c| Some(HistogramCount::CountInt(c))),
                float().prop_map(|c| Some(HistogramCount::CountFloat(c))),
            ],
            float(),
            -4i32..9,
            prop_oneof![
                Just(None),
                any::<u64>().prop_map(|c| Some(HistogramZeroCount::ZeroCountInt(c))),
                float().prop_map(|c| Some(HistogramZeroCount::ZeroCountFloat(c))),
            ],
            prop::collection::vec(span(), 0..3),
            prop::collection::vec(any::<i64>(), 0..4),
            prop::collection::vec(float(), 0..4),
            0i32..4,
            any::<i64>(),
            prop::collection::vec(float(), 0..3),
        )
            .prop_map(
                |(count, sum, schema, zero_count, spans, deltas, counts, hint, ts, custom)| {
                    Histogram {
                        count,
                        sum,
                        schema,
                        zero_threshold: 1e-128,
                        zero_count,
                        negative_spans: spans.clone(),
                        negative_deltas: deltas.clone(),
                        negative_counts: counts.clone(),
                        positive_spans: spans,
                        positive_deltas: deltas,
                        positive_counts: counts,
                        reset_hint: hint,
                        timestamp: ts,
                        custom_values: custom,
                    }
                },
            )
    }

    pub fn timeseries() -> impl Strategy<Value = TimeSeries> {
        (
            prop::collection::vec(label(), 1..6),
            prop::collection::vec(sample(), 0..6),
            prop::collection::vec(exemplar(), 0..2),
            prop::collection::vec(histogram(), 0..2),
        )
            .prop_map(|(labels, samples, exemplars, histograms)| TimeSeries {
                labels,
                samples,
                exemplars,
                histograms,
            })
    }

    pub fn metadata() -> impl Strategy<Value = MetricMetadata> {
        (0i32..8, "[a-z_]{1,12}", "\\PC{0,20}", "[a-z]{0,6}").prop_map(|(t, name, help, unit)| {
            MetricMetadata {
                r#type: t,
                metric_family_name: name,
                help,
                unit,
            }
        })
    }

    pub fn write_request() -> impl Strategy<Value = WriteRequest> {
        (
            prop::collection::vec(timeseries(), 0..6),
            prop::collection::vec(metadata(), 0..3),
        )
            .prop_map(|(timeseries, metadata)| WriteRequest {
                timeseries,
                metadata,
            })
    }

    pub fn matcher() -> impl Strategy<Value = LabelMatcher> {
        (0i32..4, "[a-z_]{1,8}", "\\PC{0,8}").prop_map(|(t, name, value)| LabelMatcher {
            r#type: t,
            name,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use proptest::prelude::*;

    /// Compares bit-exactly, so NaN samples (and the staleness marker) count as equal.
    fn bits(req: &WriteRequest) -> Vec<u8> {
        req.encode_to_vec()
    }

    proptest! {
        #[test]
        fn write_request_round_trip(req in write_request()) {
            let body = req.encode_snappy().unwrap();
            let back = WriteRequest::decode_snappy(&body, 64 << 20).unwrap();
            prop_assert_eq!(bits(&back), bits(&req));
        }

        #[test]
        fn read_request_round_trip(
            queries in prop::collection::vec(
                (any::<i64>(), any::<i64>(), prop::collection::vec(matcher(), 0..4), any::<bool>()),
                0..3,
            ),
            types in prop::collection::vec(0i32..2, 0..2),
        ) {
            let req = ReadRequest {
                queries: queries
                    .into_iter()
                    .map(|(s, e, matchers, hinted)| Query {
                        start_timestamp_ms: s,
                        end_timestamp_ms: e,
                        matchers,
                        hints: hinted.then(|| ReadHints {
                            step_ms: 15_000,
                            func: "rate".into(),
                            start_ms: s,
                            end_ms: e,
                            grouping: vec!["cell".into()],
                            by: true,
                            range_ms: 300_000,
                        }),
                    })
                    .collect(),
                accepted_response_types: types,
            };
            let back = ReadRequest::decode_snappy(&req.encode_snappy().unwrap(), 1 << 20).unwrap();
            prop_assert_eq!(back, req);
        }

        #[test]
        fn read_response_round_trip(results in prop::collection::vec(
            prop::collection::vec(timeseries(), 0..4), 0..3)
        ) {
            let resp = ReadResponse {
                results: results.into_iter().map(|timeseries| QueryResult { timeseries }).collect(),
            };
            let back = ReadResponse::decode_snappy(&resp.encode_snappy().unwrap(), 64 << 20).unwrap();
            prop_assert_eq!(back.encode_to_vec(), resp.encode_to_vec());
        }

        #[test]
        fn chunked_read_response_round_trip(
            labels in prop::collection::vec(label(), 0..4),
            data in prop::collection::vec(any::<u8>(), 0..64),
            index in any::<i64>(),
        ) {
            let frame = ChunkedReadResponse {
                chunked_series: vec![ChunkedSeries {
                    labels,
                    chunks: vec![Chunk { min_time_ms: 1, max_time_ms: 2, r#type: 1, data }],
                }],
                query_index: index,
            };
            let back = ChunkedReadResponse::decode(frame.encode_to_vec().as_slice()).unwrap();
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = WriteRequest::decode(data.as_slice());
            let _ = ReadRequest::decode(data.as_slice());
            let _ = ReadResponse::decode(data.as_slice());
            let _ = ChunkedReadResponse::decode(data.as_slice());
            let _ = WriteRequest::decode_snappy(&data, 1 << 20);
        }
    }

    #[test]
    fn field_numbers_match_prompb() {
        // Hand-encoded `prometheus.WriteRequest`: timeseries(1){labels(1){name(1)="a",value(2)="b"},
        // samples(2){value(1)=1.0, timestamp(2)=5}}, metadata(3){type(1)=COUNTER, family(2)="a"}.
        let bytes: Vec<u8> = vec![
            0x0a, 0x15, // field 1, len 21
            0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', // label
            0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x05, // sample
            0x1a, 0x05, 0x08, 0x01, 0x12, 0x01, b'a', // metadata
        ];
        let req = WriteRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.timeseries[0].labels[0], Label::new("a", "b"));
        assert_eq!(
            req.timeseries[0].samples[0],
            Sample {
                value: 1.0,
                timestamp: 5
            }
        );
        assert_eq!(req.metadata[0].r#type, MetricType::Counter as i32);
        assert_eq!(req.metadata[0].metric_family_name, "a");
        assert_eq!(req.encode_to_vec(), bytes);
    }
}
