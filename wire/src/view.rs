//! Zero-copy decoding of remote-write bodies, for receivers that store what they receive.
//!
//! [`WriteView::decode`] reads a decompressed 1.0 (`prometheus.WriteRequest`) or 2.0
//! (`io.prometheus.write.v2.Request`) body into three flat arrays: every label of every series
//! as a pair of `&str` borrowed from the body, every sample, and one span per series into
//! both. A request of thousands of series costs three allocations instead of two strings per
//! label, which is most of the CPU of ingest. Metadata is kept as borrowed entries
//! ([`WriteView::metadata`]); histograms and exemplars are counted, not decoded.
//!
//! It follows the protobuf encoding rules (<https://protobuf.dev/programming-guides/encoding/>)
//! as prost does for [`crate::WriteRequest`] and [`crate::v2::Request`]: unknown fields are
//! skipped, a repeated field may be packed or not, the last value of a scalar wins, strings
//! must be UTF-8. A property test checks that both decoders agree. 2.0 bodies get the checks
//! of [`crate::v2`]: the first symbol is empty, references stay inside the symbol table and
//! come in pairs.

use crate::labels::{self, LabelPair};
use crate::prompb::Sample;
use crate::protocol::WriteVersion;
use crate::raw::{Entry, EntryKind, LabelFields, SeriesInfo};
use crate::validate::Rejected;
use crate::{Error, Result};

/// A label borrowed from a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

impl LabelPair for LabelRef<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn value(&self) -> &str {
        self.value
    }
}

/// One series of a request: labels (owned or borrowed), float samples, and how many native
/// histograms and exemplars came with it.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'v, L> {
    pub labels: &'v [L],
    pub samples: &'v [Sample],
    pub histograms: usize,
    pub exemplars: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    labels: (u32, u32),
    samples: (u32, u32),
    histograms: u32,
    exemplars: u32,
}

/// Metadata of a metric family as a write request carries it: 1.0's `metadata` entries, or
/// 2.0's per-series metadata under the series' metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataRef<'a> {
    pub family: &'a str,
    /// A [`crate::prompb::MetricType`] value.
    pub metric_type: i32,
    pub help: &'a str,
    pub unit: &'a str,
}

/// A decoded write request borrowing its strings from the decompressed body.
#[derive(Debug, Default)]
pub struct WriteView<'a> {
    labels: Vec<LabelRef<'a>>,
    samples: Vec<Sample>,
    spans: Vec<Span>,
    metadata: Vec<MetadataRef<'a>>,
    /// A 1.0 body's entries as [`crate::raw::entries`] gives them, built during decoding; `None`
    /// for 2.0 and for bodies with histograms or exemplars (whose timestamps are not decoded).
    entries: Option<Vec<Entry>>,
}

/// A [`WriteView`] split by the partial-acceptance rule of [`crate::validate`].
#[derive(Debug)]
pub struct ValidatedView<'a> {
    view: WriteView<'a>,
    /// Per series: accepted (labels sorted and valid) or not.
    accepted: Vec<bool>,
    pub rejected: Rejected,
}

const V1: &str = "prometheus.WriteRequest";
const V2: &str = "io.prometheus.write.v2.Request";

impl<'a> WriteView<'a> {
    /// Decodes a decompressed body of the given protocol version.
    pub fn decode(version: WriteVersion, body: &'a [u8]) -> Result<Self> {
        match version {
            WriteVersion::V1 => Self::decode_v1(body).map_err(|reason| malformed(V1, reason)),
            WriteVersion::V2 => Self::decode_v2(body),
        }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn series(&self, span: &Span) -> SeriesRef<'_, LabelRef<'a>> {
        SeriesRef {
            labels: &self.labels[span.labels.0 as usize..span.labels.1 as usize],
            samples: &self.samples[span.samples.0 as usize..span.samples.1 as usize],
            histograms: span.histograms as usize,
            exemplars: span.exemplars as usize,
        }
    }

    /// The metadata entries, in request order.
    pub fn metadata(&self) -> &[MetadataRef<'a>] {
        &self.metadata
    }

    /// Every series in request order.
    pub fn iter(&self) -> impl Iterator<Item = SeriesRef<'_, LabelRef<'a>>> {
        self.spans.iter().map(|s| self.series(s))
    }

    /// Sorts and checks the labels of every series; invalid series are set aside with their
    /// reason, exactly as [`crate::validate::Validated::split`] does for an owned request.
    pub fn validate(mut self) -> ValidatedView<'a> {
        let mut accepted = Vec::with_capacity(self.spans.len());
        let mut rejected = Rejected::default();
        for (i, span) in self.spans.iter().enumerate() {
            let labels = &mut self.labels[span.labels.0 as usize..span.labels.1 as usize];
            match labels::sort_and_check(labels) {
                Ok(()) => accepted.push(true),
                Err(e) => {
                    accepted.push(false);
                    rejected.add(
                        i,
                        e,
                        (span.samples.1 - span.samples.0 + span.histograms + span.exemplars)
                            as usize,
                    );
                }
            }
        }
        ValidatedView {
            view: self,
            accepted,
            rejected,
        }
    }

    fn decode_v1(body: &'a [u8]) -> Result<Self, &'static str> {
        let mut out = WriteView {
            entries: Some(Vec::new()),
            ..WriteView::default()
        };
        let mut key = Vec::new();
        let mut r = Reader::new(body);
        let at = |r: &Reader<'_>| body.len() - r.remaining();
        while !r.done() {
            let start = at(&r);
            match r.key()? {
                (1, wt) => {
                    let series = r.len_field(wt)?;
                    let info = out.series_v1(series, &mut key)?;
                    let end = at(&r);
                    match (&mut out.entries, info) {
                        (Some(entries), Some(info)) => entries.push(Entry {
                            bytes: start..end,
                            kind: EntryKind::Series(info),
                        }),
                        _ => out.entries = None,
                    }
                }
                (3, wt) => {
                    let mut m = Reader::new(r.len_field(wt)?);
                    let mut meta = MetadataRef {
                        family: "",
                        metric_type: 0,
                        help: "",
                        unit: "",
                    };
                    while !m.done() {
                        match m.key()? {
                            (1, wt) => meta.metric_type = m.varint_field(wt)? as i32,
                            (2, wt) => meta.family = m.str(wt)?,
                            (4, wt) => meta.help = m.str(wt)?,
                            (5, wt) => meta.unit = m.str(wt)?,
                            (_, wire_type) => m.skip(wire_type)?,
                        }
                    }
                    out.metadata.push(meta);
                    let end = at(&r);
                    if let Some(entries) = &mut out.entries {
                        entries.push(Entry {
                            bytes: start..end,
                            kind: EntryKind::Metadata,
                        });
                    }
                }
                (_, wire_type) => r.skip(wire_type)?,
            }
        }
        Ok(out)
    }

    /// Decodes one series; returns what [`crate::raw::entries`] would say of it, unless it
    /// holds histograms or exemplars.
    fn series_v1(
        &mut self,
        body: &'a [u8],
        key: &mut Vec<u8>,
    ) -> Result<Option<SeriesInfo>, &'static str> {
        let mut span = self.open_span();
        let mut label_fields = LabelFields::new(key);
        let mut r = Reader::new(body);
        let at = |r: &Reader<'_>| body.len() - r.remaining();
        while !r.done() {
            let start = at(&r);
            match r.key()? {
                (1, wt) => {
                    self.labels.push(label(r.len_field(wt)?)?);
                    label_fields.add(body, start..at(&r));
                }
                (2, wt) => self.samples.push(sample(r.len_field(wt)?)?),
                (3, wt) => {
                    r.len_field(wt)?;
                    span.exemplars += 1;
                }
                (4, wt) => {
                    r.len_field(wt)?;
                    span.histograms += 1;
                }
                (_, wire_type) => r.skip(wire_type)?,
            }
        }
        let fingerprint = label_fields.fingerprint(body);
        let info = (span.exemplars == 0 && span.histograms == 0).then(|| {
            let samples = &self.samples[span.samples.0 as usize..];
            let oldest = samples
                .iter()
                .map(|s| s.timestamp)
                .min()
                .unwrap_or(i64::MAX);
            let newest = samples
                .iter()
                .map(|s| s.timestamp)
                .max()
                .unwrap_or(i64::MIN);
            SeriesInfo {
                fingerprint,
                items: samples.len(),
                oldest,
                newest,
                newest_sample: newest,
            }
        });
        self.close_span(span)?;
        Ok(info)
    }

    fn open_span(&self) -> Span {
        Span {
            labels: (self.labels.len() as u32, 0),
            samples: (self.samples.len() as u32, 0),
            ..Span::default()
        }
    }

    fn close_span(&mut self, mut span: Span) -> Result<(), &'static str> {
        span.labels.1 = u32::try_from(self.labels.len()).map_err(|_| "too many labels")?;
        span.samples.1 = u32::try_from(self.samples.len()).map_err(|_| "too many samples")?;
        self.spans.push(span);
        Ok(())
    }

    fn decode_v2(body: &'a [u8]) -> Result<Self> {
        let mut symbols: Vec<&'a str> = Vec::new();
        let mut series: Vec<&'a [u8]> = Vec::new();
        let mut r = Reader::new(body);
        let read = |r: &mut Reader<'a>, symbols: &mut Vec<&'a str>, series: &mut Vec<&'a [u8]>| {
            match r.key()? {
                (4, wt) => symbols.push(r.str(wt)?),
                (5, wt) => series.push(r.len_field(wt)?),
                (_, wire_type) => r.skip(wire_type)?,
            }
            Ok::<_, &'static str>(())
        };
        while !r.done() {
            read(&mut r, &mut symbols, &mut series).map_err(|reason| malformed(V2, reason))?;
        }
        if symbols.first().is_some_and(|s| !s.is_empty()) {
            return Err(Error::InvalidV2(
                "the first symbol must be the empty string".into(),
            ));
        }
        let mut out = WriteView::default();
        let mut refs = Vec::new();
        for (i, body) in series.into_iter().enumerate() {
            out.series_v2(i, body, &symbols, &mut refs)?;
        }
        Ok(out)
    }

    fn series_v2(
        &mut self,
        index: usize,
        body: &'a [u8],
        symbols: &[&'a str],
        refs: &mut Vec<u32>,
    ) -> Result<()> {
        let mut span = self.open_span();
        refs.clear();
        let mut metadata_refs = [0u32; 2];
        let mut metric_type = 0i32;
        let mut r = Reader::new(body);
        let mut read = |r: &mut Reader<'a>| -> Result<(), &'static str> {
            match r.key()? {
                (1, wt) => r.repeated_u32(wt, |v| {
                    refs.push(v);
                    Ok(())
                })?,
                (2, wt) => self.samples.push(sample(r.len_field(wt)?)?),
                (3, wt) => {
                    r.len_field(wt)?;
                    span.histograms += 1;
                }
                (4, wt) => {
                    let exemplar = r.len_field(wt)?;
                    span.exemplars += 1;
                    let mut e = Reader::new(exemplar);
                    let mut n = 0usize;
                    while !e.done() {
                        match e.key()? {
                            (1, wt) => e.repeated_u32(wt, |v| {
                                n += 1;
                                check_ref(v, symbols.len())
                            })?,
                            (_, wire_type) => e.skip(wire_type)?,
                        }
                    }
                    if n % 2 == 1 {
                        return Err(ODD_REFS);
                    }
                }
                (5, wt) => {
                    let mut m = Reader::new(r.len_field(wt)?);
                    while !m.done() {
                        match m.key()? {
                            (1, wt) => metric_type = m.varint_field(wt)? as i32,
                            (3, wt) => metadata_refs[0] = m.varint_field(wt)? as u32,
                            (4, wt) => metadata_refs[1] = m.varint_field(wt)? as u32,
                            (_, wire_type) => m.skip(wire_type)?,
                        }
                    }
                }
                (_, wire_type) => r.skip(wire_type)?,
            }
            Ok(())
        };
        while !r.done() {
            read(&mut r).map_err(|reason| match reason {
                ODD_REFS => Error::InvalidV2(format!(
                    "series {index}: odd number of exemplar label references"
                )),
                OUTSIDE => outside(index, symbols.len()),
                reason => malformed(V2, reason),
            })?;
        }
        if !refs.len().is_multiple_of(2) {
            return Err(Error::InvalidV2(format!(
                "series {index}: odd number ({}) of label references",
                refs.len()
            )));
        }
        for &m in &metadata_refs {
            check_ref(m, symbols.len()).map_err(|_| outside(index, symbols.len()))?;
        }
        let symbol = |r: u32| {
            symbols
                .get(r as usize)
                .copied()
                .ok_or_else(|| outside(index, symbols.len()))
        };
        let mut family = "";
        for pair in refs.chunks_exact(2) {
            let (name, value) = (symbol(pair[0])?, symbol(pair[1])?);
            if name == crate::protocol::METRIC_NAME {
                family = value;
            }
            self.labels.push(LabelRef { name, value });
        }
        let (help, unit) = (symbol(metadata_refs[0])?, symbol(metadata_refs[1])?);
        if !family.is_empty() && (metric_type != 0 || !help.is_empty() || !unit.is_empty()) {
            self.metadata.push(MetadataRef {
                family,
                metric_type,
                help,
                unit,
            });
        }
        self.close_span(span)
            .map_err(|reason| malformed(V2, reason))
    }
}

impl<'a> ValidatedView<'a> {
    /// The accepted series, labels sorted, in request order.
    pub fn accepted(&self) -> impl Iterator<Item = SeriesRef<'_, LabelRef<'a>>> {
        self.view
            .spans
            .iter()
            .zip(&self.accepted)
            .filter(|(_, ok)| **ok)
            .map(|(s, _)| self.view.series(s))
    }

    /// The request's metadata entries.
    pub fn metadata(&self) -> &[MetadataRef<'a>] {
        self.view.metadata()
    }

    /// The body's entries, as [`crate::raw::entries`] splits it, when the body is 1.0 and
    /// every series was accepted, so that the body can be forwarded whole; computed while
    /// decoding, so a forwarding hop needs no second pass.
    pub fn take_entries(&mut self) -> Option<Vec<Entry>> {
        if !self.rejected.is_empty() {
            return None;
        }
        self.view.entries.take()
    }

    /// Number of accepted series.
    pub fn accepted_len(&self) -> usize {
        self.view.len() - self.rejected.series.len()
    }

    /// The 400 body for the rejected series, if any.
    pub fn rejection_message(&self) -> Option<String> {
        self.rejected.message(self.accepted_len())
    }
}

const ODD_REFS: &str = "odd number of references";
const OUTSIDE: &str = "reference outside the symbol table";

fn check_ref(r: u32, symbols: usize) -> Result<(), &'static str> {
    if (r as usize) < symbols {
        Ok(())
    } else {
        Err(OUTSIDE)
    }
}

fn outside(series: usize, symbols: usize) -> Error {
    Error::InvalidV2(format!(
        "series {series}: a symbol reference is outside the symbol table of {symbols} entries"
    ))
}

pub(crate) fn malformed(message: &'static str, reason: &'static str) -> Error {
    Error::MalformedProtobuf { message, reason }
}

/// A `prometheus.Label` message.
pub(crate) fn label(body: &[u8]) -> Result<LabelRef<'_>, &'static str> {
    let mut label = LabelRef {
        name: "",
        value: "",
    };
    let mut r = Reader::new(body);
    while !r.done() {
        match r.key()? {
            (1, wt) => label.name = r.str(wt)?,
            (2, wt) => label.value = r.str(wt)?,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(label)
}

pub(crate) fn sample(body: &[u8]) -> Result<Sample, &'static str> {
    // Every encoder writes the value (field 1, fixed64) then the timestamp (field 2, varint).
    if let [0x09, v0, v1, v2, v3, v4, v5, v6, v7, 0x10, rest @ ..] = body {
        let mut r = Reader::new(rest);
        let timestamp = r.varint()? as i64;
        if r.done() {
            return Ok(Sample {
                value: f64::from_bits(u64::from_le_bytes([*v0, *v1, *v2, *v3, *v4, *v5, *v6, *v7])),
                timestamp,
            });
        }
    }
    let mut s = Sample::default();
    let mut r = Reader::new(body);
    while !r.done() {
        match r.key()? {
            (1, wt) => {
                want(wt, I64)?;
                s.value = f64::from_bits(r.fixed64()?);
            }
            (2, wt) => s.timestamp = r.varint_field(wt)? as i64,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(s)
}

pub(crate) const VARINT: u8 = 0;
pub(crate) const I64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const I32: u8 = 5;

/// A cursor over protobuf wire data.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn done(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err("varint overflows 64 bits");
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.buf.len() < 10 {
            "buffer underflow in a varint"
        } else {
            "varint longer than 10 bytes"
        })
    }

    /// Field number and wire type of the next field.
    pub(crate) fn key(&mut self) -> Result<(u32, u8), &'static str> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if field == 0 {
            return Err("field number 0");
        }
        Ok((field, (key & 7) as u8))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("buffer underflow");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length out of range")?)
    }

    /// A length-delimited field (message, string or packed scalars).
    pub(crate) fn len_field(&mut self, wire_type: u8) -> Result<&'a [u8], &'static str> {
        want(wire_type, LEN)?;
        self.bytes()
    }

    pub(crate) fn varint_field(&mut self, wire_type: u8) -> Result<u64, &'static str> {
        want(wire_type, VARINT)?;
        self.varint()
    }

    pub(crate) fn str(&mut self, wire_type: u8) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.len_field(wire_type)?).map_err(|_| "string is not valid UTF-8")
    }

    /// One occurrence of a repeated `uint32` field, packed or not.
    pub(crate) fn repeated_u32(
        &mut self,
        wire_type: u8,
        mut each: impl FnMut(u32) -> Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        if wire_type == VARINT {
            return each(self.varint()? as u32);
        }
        let mut packed = Reader::new(self.len_field(wire_type)?);
        while !packed.done() {
            each(packed.varint()? as u32)?;
        }
        Ok(())
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| "buffer underflow")?,
        ))
    }

    pub(crate) fn skip(&mut self, wire_type: u8) -> Result<(), &'static str> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            _ => Err("unsupported wire type (groups are not used by remote-write)"),
        }
    }
}

pub(crate) fn want(wire_type: u8, expected: u8) -> Result<(), &'static str> {
    if wire_type == expected {
        Ok(())
    } else {
        Err("invalid wire type for a known field")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::strategies::write_request;
    use crate::prompb::{Label, TimeSeries, WriteRequest};
    use crate::v2;
    use crate::validate::Validated;
    use proptest::prelude::*;
    use prost::Message;

    /// The view holds what prost decodes: labels, bit-identical samples, item counts.
    fn assert_same(view: &WriteView<'_>, req: &WriteRequest) {
        assert_eq!(view.len(), req.timeseries.len());
        for (v, t) in view.iter().zip(&req.timeseries) {
            assert_eq!(labels::to_owned(v.labels), t.labels);
            let bits = |s: &[Sample]| -> Vec<(i64, u64)> {
                s.iter().map(|s| (s.timestamp, s.value.to_bits())).collect()
            };
            assert_eq!(bits(v.samples), bits(&t.samples));
            assert_eq!(
                (v.histograms, v.exemplars),
                (t.histograms.len(), t.exemplars.len())
            );
        }
    }

    #[test]
    fn v2_metadata_is_kept_under_the_metric_name() {
        let req = v2::Request {
            symbols: [
                "",
                "__name__",
                "http_requests_total",
                "Requests served.",
                "requests",
            ]
            .map(String::from)
            .to_vec(),
            timeseries: vec![
                v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    metadata: Some(v2::Metadata {
                        r#type: crate::prompb::MetricType::Counter as i32,
                        help_ref: 3,
                        unit_ref: 4,
                    }),
                    ..Default::default()
                },
                v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    ..Default::default()
                },
            ],
        };
        let body = req.encode_to_vec();
        let view = WriteView::decode(WriteVersion::V2, &body).unwrap();
        assert_eq!(
            view.metadata(),
            [MetadataRef {
                family: "http_requests_total",
                metric_type: 1,
                help: "Requests served.",
                unit: "requests",
            }]
        );
    }

    #[test]
    fn v2_refs_are_checked() {
        let req = v2::Request {
            symbols: vec!["".into(), "__name__".into(), "up".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2, 1],
                samples: vec![],
                histograms: vec![],
                exemplars: vec![],
                metadata: None,
                created_timestamp: 0,
            }],
        };
        let body = req.encode_to_vec();
        let err = WriteView::decode(WriteVersion::V2, &body).unwrap_err();
        assert!(err.to_string().contains("odd number (3)"), "{err}");
        let mut bad = req.clone();
        bad.timeseries[0].labels_refs = vec![1, 7];
        let body = bad.encode_to_vec();
        let err = WriteView::decode(WriteVersion::V2, &body).unwrap_err();
        assert!(
            err.to_string().contains("outside the symbol table"),
            "{err}"
        );
        let mut bad = req;
        bad.symbols[0] = "x".into();
        bad.timeseries[0].labels_refs = vec![1, 2];
        let body = bad.encode_to_vec();
        let err = WriteView::decode(WriteVersion::V2, &body).unwrap_err();
        assert!(err.to_string().contains("first symbol"), "{err}");
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up"), Label::new("job", "node")],
                samples: vec![Sample {
                    value: 1.5,
                    timestamp: 1_700_000_000_000,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let body = req.encode_to_vec();
        for cut in 1..body.len() {
            let prost_ok = WriteRequest::decode(&body[..cut]).is_ok();
            let view_ok = WriteView::decode(WriteVersion::V1, &body[..cut]).is_ok();
            assert_eq!(prost_ok, view_ok, "cut at {cut}");
        }
        let err = WriteView::decode(WriteVersion::V1, &body[..body.len() - 1]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("protobuf: cannot decode prometheus.WriteRequest"),
            "{err}"
        );
    }

    #[test]
    fn validation_matches_the_owned_path() {
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![Label::new("job", "a"), Label::new("__name__", "up")],
                    samples: vec![Sample::default(); 2],
                    ..Default::default()
                },
                TimeSeries {
                    labels: vec![Label::new("__name__", "up"), Label::new("bad-label", "x")],
                    samples: vec![Sample::default(); 3],
                    ..Default::default()
                },
            ],
            metadata: vec![],
        };
        let body = req.encode_to_vec();
        let view = WriteView::decode(WriteVersion::V1, &body)
            .unwrap()
            .validate();
        let owned_path = Validated::split(req);
        assert_eq!(view.rejection_message(), owned_path.rejection_message());
        let accepted: Vec<_> = view
            .accepted()
            .map(|s| labels::to_owned(s.labels))
            .collect();
        assert_eq!(
            accepted,
            vec![owned_path.accepted.timeseries[0].labels.clone()]
        );
    }

    proptest! {
        #[test]
        fn v1_agrees_with_prost(req in write_request()) {
            let body = req.encode_to_vec();
            let view = WriteView::decode(WriteVersion::V1, &body).unwrap();
            let decoded = WriteRequest::decode(&body[..]).unwrap();
            assert_same(&view, &decoded);
            let meta: Vec<_> = view
                .metadata()
                .iter()
                .map(|m| (m.family.to_string(), m.metric_type, m.help.to_string(), m.unit.to_string()))
                .collect();
            let want: Vec<_> = decoded
                .metadata
                .iter()
                .map(|m| (m.metric_family_name.clone(), m.r#type, m.help.clone(), m.unit.clone()))
                .collect();
            assert_eq!(meta, want);
        }

        #[test]
        fn v2_agrees_with_the_v1_conversion(req in write_request()) {
            let body = v2::Request::from_v1(&req).encode_to_vec();
            let view = WriteView::decode(WriteVersion::V2, &body).unwrap();
            let v1 = v2::Request::decode(&body[..]).unwrap().into_v1().unwrap();
            assert_same(&view, &v1);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = WriteView::decode(WriteVersion::V1, &bytes);
            let _ = WriteView::decode(WriteVersion::V2, &bytes);
        }
    }
}
