//! Remote-write 2.0 (`io.prometheus.write.v2.Request`).
//!
//! A 2.0 request interns every string in one symbol table; series and exemplars refer to labels
//! by pairs of indices into it, and metadata travels with each series. Receivers decode it into
//! the 1.0 [`WriteRequest`], strata's internal representation: labels are resolved, and each
//! series' metadata becomes one [`MetricMetadata`] per metric family. The 2.0
//! `created_timestamp` has no 1.0 field and is not carried over.
//!
//! Spec: <https://prometheus.io/docs/specs/prw/remote_write_spec_2_0/>. The first symbol must
//! be the empty string; a reference outside the table or an odd number of label references
//! makes the request invalid (a 400 for the sender).

use std::collections::{HashMap, HashSet};

use crate::prompb::{self, Histogram, MetricMetadata, MetricType, Sample, WriteRequest};
use crate::{Error, Result, protocol::METRIC_NAME, snappy};
use prost::Message;

/// `io.prometheus.write.v2.Request`. Fields 1 to 3 are reserved by the spec.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

/// `io.prometheus.write.v2.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`. Its `MetricType` values equal the 1.0 ones.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Metadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

impl Request {
    /// Decodes a snappy-compressed 2.0 body into the internal representation.
    pub fn decode_snappy_to_v1(body: &[u8], limit: usize) -> Result<WriteRequest> {
        let raw = snappy::decompress(body, limit)?;
        prompb::decode_message::<Request>(&raw, "io.prometheus.write.v2.Request")?.into_v1()
    }

    /// Protobuf-encodes and snappy-compresses the request.
    pub fn encode_snappy(&self) -> Result<Vec<u8>> {
        snappy::compress(&self.encode_to_vec())
    }

    fn symbol(&self, series: usize, r: u32) -> Result<&str> {
        self.symbols.get(r as usize).map(String::as_str).ok_or_else(|| {
            Error::InvalidV2(format!(
                "series {series}: symbol reference {r} is outside the symbol table of {} entries",
                self.symbols.len()
            ))
        })
    }

    fn labels(&self, series: usize, refs: &[u32]) -> Result<Vec<prompb::Label>> {
        if !refs.len().is_multiple_of(2) {
            return Err(Error::InvalidV2(format!(
                "series {series}: odd number ({}) of label references",
                refs.len()
            )));
        }
        refs.chunks_exact(2)
            .map(|pair| {
                Ok(prompb::Label::new(
                    self.symbol(series, pair[0])?,
                    self.symbol(series, pair[1])?,
                ))
            })
            .collect()
    }

    /// Resolves symbol references into a 1.0 [`WriteRequest`].
    pub fn into_v1(self) -> Result<WriteRequest> {
        if self.symbols.first().is_some_and(|s| !s.is_empty()) {
            return Err(Error::InvalidV2(
                "the first symbol must be the empty string".into(),
            ));
        }
        let mut out = WriteRequest {
            timeseries: Vec::with_capacity(self.timeseries.len()),
            metadata: Vec::new(),
        };
        let mut families: HashSet<String> = HashSet::new();
        for (i, ts) in self.timeseries.iter().enumerate() {
            let labels = self.labels(i, &ts.labels_refs)?;
            let exemplars = ts
                .exemplars
                .iter()
                .map(|e| {
                    Ok(prompb::Exemplar {
                        labels: self.labels(i, &e.labels_refs)?,
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if let Some(md) = ts
                .metadata
                .filter(|m| m.r#type != 0 || m.help_ref != 0 || m.unit_ref != 0)
                && let Some(name) = labels.iter().find(|l| l.name == METRIC_NAME)
            {
                let metric_type = MetricType::try_from(md.r#type).unwrap_or(MetricType::Unknown);
                let family = family_name(&name.value, metric_type).to_string();
                if families.insert(family.clone()) {
                    out.metadata.push(MetricMetadata {
                        r#type: md.r#type,
                        metric_family_name: family,
                        help: self.symbol(i, md.help_ref)?.to_string(),
                        unit: self.symbol(i, md.unit_ref)?.to_string(),
                    });
                }
            }
            out.timeseries.push(prompb::TimeSeries {
                labels,
                samples: ts.samples.clone(),
                exemplars,
                histograms: ts.histograms.clone(),
            });
        }
        Ok(out)
    }

    /// Builds a 2.0 request from the internal representation, interning every string once.
    /// Metadata is attached to each series whose metric family it describes.
    pub fn from_v1(req: &WriteRequest) -> Self {
        let mut table = SymbolTable::default();
        let metadata: HashMap<&str, &MetricMetadata> = req
            .metadata
            .iter()
            .map(|m| (m.metric_family_name.as_str(), m))
            .collect();
        let timeseries = req
            .timeseries
            .iter()
            .map(|ts| {
                let name = ts
                    .labels
                    .iter()
                    .find(|l| l.name == METRIC_NAME)
                    .map(|l| l.value.as_str());
                let md = name.and_then(|n| {
                    metadata
                        .get(n)
                        .or_else(|| strip_family_suffix(n).and_then(|family| metadata.get(family)))
                });
                TimeSeries {
                    labels_refs: table.refs(&ts.labels),
                    samples: ts.samples.clone(),
                    histograms: ts.histograms.clone(),
                    exemplars: ts
                        .exemplars
                        .iter()
                        .map(|e| Exemplar {
                            labels_refs: table.refs(&e.labels),
                            value: e.value,
                            timestamp: e.timestamp,
                        })
                        .collect(),
                    metadata: md.map(|m| Metadata {
                        r#type: m.r#type,
                        help_ref: table.intern(&m.help),
                        unit_ref: table.intern(&m.unit),
                    }),
                    created_timestamp: 0,
                }
            })
            .collect();
        Request {
            symbols: table.symbols,
            timeseries,
        }
    }
}

/// The metric family a sample name belongs to: histogram and summary series carry suffixes.
fn family_name(name: &str, metric_type: MetricType) -> &str {
    match metric_type {
        MetricType::Histogram | MetricType::Gaugehistogram | MetricType::Summary => {
            strip_family_suffix(name).unwrap_or(name)
        }
        _ => name,
    }
}

fn strip_family_suffix(name: &str) -> Option<&str> {
    ["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
}

/// Interns strings for a 2.0 request; index 0 is always the empty string.
struct SymbolTable {
    symbols: Vec<String>,
    index: HashMap<String, u32>,
}

impl Default for SymbolTable {
    fn default() -> Self {
        Self {
            symbols: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl SymbolTable {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&r) = self.index.get(s) {
            return r;
        }
        let r = self.symbols.len() as u32;
        self.symbols.push(s.to_string());
        self.index.insert(s.to_string(), r);
        r
    }

    fn refs(&mut self, labels: &[prompb::Label]) -> Vec<u32> {
        labels
            .iter()
            .flat_map(|l| [self.intern(&l.name), self.intern(&l.value)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::strategies;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn v1_to_v2_to_v1_keeps_series(req in strategies::write_request()) {
            let mut req = req;
            // 2.0 attaches metadata to series, so only metadata of families present survives.
            req.metadata.clear();
            let v2 = Request::from_v1(&req);
            let body = v2.encode_snappy().unwrap();
            let back = Request::decode_snappy_to_v1(&body, 64 << 20).unwrap();
            prop_assert_eq!(back.encode_to_vec(), req.encode_to_vec());
        }

        #[test]
        fn v2_message_round_trip(req in strategies::write_request()) {
            let v2 = Request::from_v1(&req);
            let back = Request::decode(v2.encode_to_vec().as_slice()).unwrap();
            prop_assert_eq!(back.encode_to_vec(), v2.encode_to_vec());
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(req) = Request::decode(data.as_slice()) {
                let _ = req.into_v1();
            }
            let _ = Request::decode_snappy_to_v1(&data, 1 << 20);
        }
    }

    #[test]
    fn metadata_travels_with_series() {
        let req = WriteRequest {
            timeseries: vec![prompb::TimeSeries {
                labels: vec![
                    prompb::Label::new("__name__", "rpc_seconds_bucket"),
                    prompb::Label::new("le", "1"),
                ],
                samples: vec![Sample {
                    value: 3.0,
                    timestamp: 1000,
                }],
                ..Default::default()
            }],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Histogram as i32,
                metric_family_name: "rpc_seconds".into(),
                help: "RPC latency.".into(),
                unit: "seconds".into(),
            }],
        };
        let v2 = Request::from_v1(&req);
        assert_eq!(v2.symbols[0], "");
        assert!(v2.timeseries[0].metadata.is_some());
        let back = v2.into_v1().unwrap();
        assert_eq!(back.metadata, req.metadata);
    }

    #[test]
    fn bad_references_are_errors_not_panics() {
        let req = Request {
            symbols: vec![String::new(), "__name__".into()],
            timeseries: vec![TimeSeries {
                labels_refs: vec![1, 7],
                ..Default::default()
            }],
        };
        let err = req.into_v1().unwrap_err().to_string();
        assert!(err.contains("symbol reference 7"), "{err}");
        let odd = Request {
            symbols: vec![String::new(), "a".into()],
            timeseries: vec![TimeSeries {
                labels_refs: vec![1],
                ..Default::default()
            }],
        };
        assert!(
            odd.into_v1()
                .unwrap_err()
                .to_string()
                .contains("odd number")
        );
        let first = Request {
            symbols: vec!["x".into()],
            timeseries: vec![],
        };
        assert!(first.into_v1().is_err());
    }
}
