//! Parsing of scraped metrics: the Prometheus text format 0.0.4 and OpenMetrics 1.0.
//!
//! Comment lines are classified with the `prometheus-parse` crate (`LineInfo::parse`). Sample
//! lines are lexed here, because `prometheus-parse` 0.2 gets too much of real exporters' output
//! wrong to build a scraper on. Its gaps, each pinned by a test below (`prometheus_parse_gaps`)
//! so an upgrade that fixes one is noticed:
//!
//! | gap in `prometheus-parse` 0.2 | what strata does |
//! |---|---|
//! | label values are split on `,` and `=` and lose `\"`, `\\`, `\n` escapes; a `}` inside a value ends the label set | a real lexer with the spec's escapes (`node_uname_info{version="#1 SMP ..."}` parses) |
//! | metric names with `:` (recording-rule style) do not match, the line is silently dropped | names are `[a-zA-Z_:][a-zA-Z0-9_:]*` |
//! | `# HELP` text escapes are kept raw | `\\` and `\n` (and `\"` in OpenMetrics) are unescaped |
//! | types `gaugehistogram`, `info`, `stateset`, `unknown` all become `Untyped` | kept, for metadata |
//! | `# UNIT`, `# EOF` ignored; `_created` series kept as samples | `# UNIT` is metadata; nothing may follow `# EOF`; OpenMetrics `_created` series are skipped as Prometheus skips them |
//! | exemplars (` # {trace_id="..."} 1 1.7e9`) mistaken for a timestamp | parsed into an [`Exemplar`] |
//! | timestamps read as integer milliseconds only; an unparsable one replaced with "now" | text format: integer ms; OpenMetrics: float seconds; malformed is an error |
//! | a malformed line or value is skipped silently | an error naming the line, as Prometheus fails the scrape |
//! | histogram and summary lines regrouped into one value, dropping per-bucket identity | every line is one sample, as Prometheus stores it |
//!
//! Labels with empty values are dropped: Prometheus treats `l=""` as "no label `l`". Quoted
//! UTF-8 metric names (`{"my.metric"}`, Prometheus 3) are refused with a clear error.

use std::collections::HashMap;

use crate::prompb::{Exemplar, Label, MetricMetadata, MetricType};
use crate::protocol::METRIC_NAME;
use crate::{Error, Result};

/// Which exposition format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// Picks the format from a scrape response's `Content-Type`, defaulting to text.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// One scraped sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapedSample {
    /// `__name__` first, then the labels in exposition order; empty values removed.
    pub labels: Vec<Label>,
    pub value: f64,
    /// The exposed timestamp in milliseconds, if the line had one.
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar>,
}

/// The samples and metadata of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub samples: Vec<ScrapedSample>,
    /// One entry per metric family that had a `# HELP`, `# TYPE` or `# UNIT` line.
    pub metadata: Vec<MetricMetadata>,
}

/// Parses a whole scrape body.
pub fn parse(body: &str, format: Format) -> Result<Scrape> {
    let mut scanner = Scanner::new(body, format);
    let mut samples = Vec::new();
    for line in &mut scanner {
        let line = line?;
        samples.push(ScrapedSample {
            labels: line.labels()?,
            value: line.value,
            timestamp_ms: line.timestamp_ms,
            exemplar: line.exemplar,
        });
    }
    Ok(Scrape {
        samples,
        metadata: scanner.into_metadata(),
    })
}

/// One sample line as a scraper sees it: the series exactly as written, its labels parsed
/// only when asked for. A scraper that has seen the same series text before knows its labels
/// already, so a steady target costs no label parsing and no allocation per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleLine<'a> {
    /// 1-based line number in the body.
    pub line: usize,
    /// The metric name and label set as exposed, from the start of the line to the end of the
    /// label set (or of the name).
    pub series: &'a str,
    pub value: f64,
    /// The exposed timestamp in milliseconds, if the line had one.
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar>,
}

impl SampleLine<'_> {
    /// The metric name.
    pub fn name(&self) -> &str {
        let end = self
            .series
            .find(['{', ' ', '\t'])
            .unwrap_or(self.series.len());
        &self.series[..end]
    }

    /// `__name__` first, then the labels in exposition order, empty values removed. The label
    /// set is checked here, so an invalid one is an error naming the line.
    pub fn labels(&self) -> Result<Vec<Label>> {
        let mut lx = Lexer {
            s: self.series,
            pos: 0,
        };
        lx.series().map_err(|reason| Error::ParseExposition {
            line: self.line,
            reason,
        })
    }
}

/// Reads a scrape body line by line, yielding its samples in order and collecting its
/// metadata. The first malformed line is an error, as Prometheus fails the whole scrape;
/// the error names the line.
#[derive(Debug)]
pub struct Scanner<'a> {
    lines: std::iter::Enumerate<std::str::Lines<'a>>,
    format: Format,
    families: HashMap<String, usize>,
    metadata: Vec<MetricMetadata>,
    current_family: Option<(String, MetricType)>,
    seen_eof: bool,
    /// Lines read so far, for the missing `# EOF` error.
    last_line: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub fn new(body: &'a str, format: Format) -> Self {
        Self {
            lines: body.lines().enumerate(),
            format,
            families: HashMap::new(),
            metadata: Vec::new(),
            current_family: None,
            seen_eof: false,
            last_line: 0,
            done: false,
        }
    }

    /// One entry per metric family that had a `# HELP`, `# TYPE` or `# UNIT` line.
    pub fn into_metadata(self) -> Vec<MetricMetadata> {
        self.metadata
    }

    fn meta(&mut self, family: String, kind: MetaKind) {
        let idx = match self.families.get(&family) {
            Some(&i) => i,
            None => {
                self.metadata.push(MetricMetadata {
                    metric_family_name: family.clone(),
                    ..Default::default()
                });
                self.families
                    .insert(family.clone(), self.metadata.len() - 1);
                self.metadata.len() - 1
            }
        };
        let md = &mut self.metadata[idx];
        match kind {
            MetaKind::Help(help) => md.help = help,
            MetaKind::Unit(unit) => md.unit = unit,
            MetaKind::Type(t) => {
                md.r#type = t as i32;
                self.current_family = Some((family, t));
            }
        }
    }

    fn next_line(&mut self) -> Result<Option<SampleLine<'a>>> {
        let format = self.format;
        while let Some((i, line)) = self.lines.next() {
            let line_no = i + 1;
            self.last_line = line_no;
            let err = |reason: String| Error::ParseExposition {
                line: line_no,
                reason,
            };
            if self.seen_eof {
                return Err(err("content after # EOF".into()));
            }
            let trimmed = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                match parse_comment(trimmed, comment, format).map_err(err)? {
                    Comment::Eof => self.seen_eof = format == Format::OpenMetrics,
                    Comment::Other => {}
                    Comment::Meta { family, kind } => self.meta(family, kind),
                }
                continue;
            }
            let sample = scan_sample(trimmed, line_no, format).map_err(err)?;
            if format == Format::OpenMetrics
                && is_created_series(sample.name(), self.current_family.as_ref())
            {
                continue;
            }
            return Ok(Some(sample));
        }
        if format == Format::OpenMetrics && !self.seen_eof {
            return Err(Error::ParseExposition {
                line: self.last_line,
                reason: "OpenMetrics body does not end with # EOF".into(),
            });
        }
        Ok(None)
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Result<SampleLine<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_line().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// OpenMetrics `<family>_created` series of counters, histograms and summaries carry creation
/// times, not samples; Prometheus's OpenMetrics parser skips them by default.
fn is_created_series(name: &str, family: Option<&(String, MetricType)>) -> bool {
    let Some((family, t)) = family else {
        return false;
    };
    matches!(
        t,
        MetricType::Counter
            | MetricType::Histogram
            | MetricType::Summary
            | MetricType::Gaugehistogram
    ) && name
        .strip_prefix(family.as_str())
        .is_some_and(|rest| rest == "_created")
}

enum MetaKind {
    Help(String),
    Type(MetricType),
    Unit(String),
}

enum Comment {
    Meta { family: String, kind: MetaKind },
    Eof,
    Other,
}

fn parse_comment(line: &str, comment: &str, format: Format) -> Result<Comment, String> {
    let body = comment.trim_start_matches([' ', '\t']);
    if body == "EOF" {
        return Ok(Comment::Eof);
    }
    let (keyword, rest) = body.split_once([' ', '\t']).unwrap_or((body, ""));
    let rest = rest.trim_start_matches([' ', '\t']);
    let (name, text) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    match keyword {
        "HELP" => {
            check_metric_name(name)?;
            // prometheus-parse finds the HELP text for plain names; names with ':' are ours.
            let raw = match prometheus_parse::LineInfo::parse(line) {
                prometheus_parse::LineInfo::Doc { metric_name, doc } if metric_name == name => doc,
                _ => text,
            };
            Ok(Comment::Meta {
                family: name.to_string(),
                kind: MetaKind::Help(unescape(raw, format == Format::OpenMetrics)),
            })
        }
        "TYPE" => {
            check_metric_name(name)?;
            let word = text.trim();
            let known = matches!(
                word,
                "counter"
                    | "gauge"
                    | "histogram"
                    | "summary"
                    | "untyped"
                    | "unknown"
                    | "gaugehistogram"
                    | "info"
                    | "stateset"
            );
            if !known {
                return Err(format!("unknown metric type {word:?} for {name}"));
            }
            Ok(Comment::Meta {
                family: name.to_string(),
                kind: MetaKind::Type(MetricType::from_exposition_str(word)),
            })
        }
        "UNIT" if format == Format::OpenMetrics => {
            check_metric_name(name)?;
            Ok(Comment::Meta {
                family: name.to_string(),
                kind: MetaKind::Unit(text.trim().to_string()),
            })
        }
        _ => Ok(Comment::Other),
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    if crate::labels::is_valid_metric_name(name) {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

/// Undoes the exposition escapes: `\\`, `\n`, and `\"` where quotes are escaped. Unknown
/// escapes are kept as written, as Prometheus does.
fn unescape(s: &str, quotes: bool) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A byte cursor over one sample line.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at column {}, found {}",
                b as char,
                self.pos + 1,
                self.describe()
            ))
        }
    }

    fn describe(&self) -> String {
        match self.s[self.pos..].chars().next() {
            Some(c) => format!("{c:?}"),
            None => "end of line".into(),
        }
    }

    fn name(&mut self, metric: bool) -> Result<&'a str, String> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || (metric && b == b':')
                || (self.pos > start && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(
                if self.peek() == Some(b'"') || (metric && self.peek() == Some(b'{')) {
                    "quoted UTF-8 metric and label names are not supported".into()
                } else {
                    format!(
                        "expected a {} name at column {}, found {}",
                        if metric { "metric" } else { "label" },
                        start + 1,
                        self.describe()
                    )
                },
            );
        }
        Ok(&self.s[start..self.pos])
    }

    fn quoted(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let start = self.pos;
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'\\' => self.pos += 2,
                b'"' => {
                    let raw = &self.s[start..self.pos];
                    self.pos += 1;
                    return Ok(unescape(raw, true));
                }
                _ => self.pos += 1,
            }
        }
        Err("unterminated label value".into())
    }

    /// `{name="value", ...}` into `out`; a trailing comma is allowed.
    fn label_set(&mut self, out: &mut Vec<Label>) -> Result<(), String> {
        self.expect(b'{')?;
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let name = self.name(false)?;
            self.skip_blanks();
            self.expect(b'=')?;
            self.skip_blanks();
            let value = self.quoted()?;
            if out.iter().any(|l| l.name == name) {
                return Err(format!("label {name:?} appears more than once"));
            }
            if !value.is_empty() {
                out.push(Label::new(name, value));
            }
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => {
                    return Err(format!(
                        "expected ',' or '}}' after label {name:?}, found {}",
                        self.describe()
                    ));
                }
            }
        }
    }

    /// The metric name and optional label set at the start of a line, as labels.
    fn series(&mut self) -> Result<Vec<Label>, String> {
        let name = self.name(true)?;
        let mut labels = vec![Label::new(METRIC_NAME, name)];
        let name_end = self.pos;
        self.skip_blanks();
        if self.peek() == Some(b'{') {
            self.label_set(&mut labels)?;
        } else {
            self.pos = name_end;
        }
        Ok(labels)
    }

    /// Moves past the metric name and label set without parsing the labels: the set ends at
    /// the first `}` outside quotes.
    fn skip_series(&mut self) -> Result<(), String> {
        self.name(true)?;
        let name_end = self.pos;
        self.skip_blanks();
        if self.peek() != Some(b'{') {
            self.pos = name_end;
            return Ok(());
        }
        let bytes = self.s.as_bytes();
        let mut quoted = false;
        while let Some(&b) = bytes.get(self.pos) {
            self.pos += 1;
            match b {
                b'\\' if quoted => self.pos += 1,
                b'"' => quoted = !quoted,
                b'}' if !quoted => return Ok(()),
                _ => {}
            }
        }
        Err("unterminated label set".into())
    }

    /// What follows the series: blanks, the value, an optional timestamp and exemplar.
    fn sample_tail(
        &mut self,
        format: Format,
    ) -> Result<(f64, Option<i64>, Option<Exemplar>), String> {
        if !self.skip_blanks() {
            return Err(format!(
                "expected a space before the value, found {}",
                self.describe()
            ));
        }
        let raw = self.token();
        let value = parse_float(raw).ok_or_else(|| format!("invalid value {raw:?}"))?;
        self.skip_blanks();
        let mut timestamp_ms = None;
        if !matches!(self.peek(), None | Some(b'#')) {
            timestamp_ms = Some(parse_timestamp(self.token(), format)?);
            self.skip_blanks();
        }
        let mut exemplar = None;
        if self.peek() == Some(b'#') {
            self.pos += 1;
            self.skip_blanks();
            let mut ex_labels = Vec::new();
            self.label_set(&mut ex_labels)?;
            self.skip_blanks();
            let raw = self.token();
            let ex_value =
                parse_float(raw).ok_or_else(|| format!("invalid exemplar value {raw:?}"))?;
            self.skip_blanks();
            let ts = self.token();
            let ex_ts = if ts.is_empty() {
                timestamp_ms.unwrap_or_default()
            } else {
                parse_timestamp(ts, Format::OpenMetrics)?
            };
            exemplar = Some(Exemplar {
                labels: ex_labels,
                value: ex_value,
                timestamp: ex_ts,
            });
            self.skip_blanks();
        }
        if self.peek().is_some() {
            return Err(format!(
                "unexpected {} at column {}",
                self.describe(),
                self.pos + 1
            ));
        }
        Ok((value, timestamp_ms, exemplar))
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while !matches!(self.peek(), None | Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
}

/// Parses a float as Go's `strconv.ParseFloat` spells the special values.
fn parse_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_timestamp(s: &str, format: Format) -> Result<i64, String> {
    match format {
        Format::Text => s
            .parse::<i64>()
            .map_err(|_| format!("invalid timestamp {s:?}: expected integer milliseconds")),
        Format::OpenMetrics => match s.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Ok((secs * 1000.0).round() as i64),
            _ => Err(format!("invalid timestamp {s:?}: expected seconds")),
        },
    }
}

/// Reads one sample line. The label set is only delimited here (quotes and escapes
/// respected), not parsed: [`SampleLine::labels`] parses it. When the line is malformed the
/// error is the one the full parse gives, so messages do not depend on the fast path.
fn scan_sample(line: &str, line_no: usize, format: Format) -> Result<SampleLine<'_>, String> {
    let mut lx = Lexer { s: line, pos: 0 };
    let scanned = lx.skip_series().and_then(|()| {
        let series = &line[..lx.pos];
        let (value, timestamp_ms, exemplar) = lx.sample_tail(format)?;
        Ok(SampleLine {
            line: line_no,
            series,
            value,
            timestamp_ms,
            exemplar,
        })
    });
    scanned.map_err(|fast| {
        let mut full = Lexer { s: line, pos: 0 };
        match full.series().and_then(|_| full.sample_tail(format)) {
            Err(reason) => reason,
            Ok(_) => fast,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label(s: &ScrapedSample, name: &str) -> Option<String> {
        s.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.clone())
    }

    #[test]
    fn text_format_basics() {
        let body = "# HELP http_requests_total Requests \\\\ served.\\nTotal.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"a,b=c}\",code=\"\\\"q\\\"\\n\"} 3\n\
                    job:rate5m:sum{job=\"x\",} 1.5e+06\n\
                    empty{a=\"\",b=\"x\"} -Inf\n\
                    nan_metric NaN\n";
        let s = parse(body, Format::Text).unwrap();
        assert_eq!(s.samples.len(), 5);
        assert_eq!(s.samples[0].timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(label(&s.samples[1], "method").unwrap(), "a,b=c}");
        assert_eq!(label(&s.samples[1], "code").unwrap(), "\"q\"\n");
        assert_eq!(s.samples[2].labels[0].value, "job:rate5m:sum");
        assert_eq!(s.samples[2].value, 1.5e6);
        assert_eq!(s.samples[3].labels.len(), 2, "empty label dropped");
        assert_eq!(s.samples[3].value, f64::NEG_INFINITY);
        assert!(s.samples[4].value.is_nan());
        assert_eq!(s.metadata.len(), 1);
        assert_eq!(s.metadata[0].help, "Requests \\ served.\nTotal.");
        assert_eq!(s.metadata[0].r#type, MetricType::Counter as i32);
    }

    #[test]
    fn scanner_yields_series_as_written() {
        let body = "a 1\n\
                    b {x=\"}\\\"}\",y=\"\"} 2 17\n\
                    c{x=\"1\",} 3 # {trace_id=\"t\"} 0.5\n";
        let lines: Vec<SampleLine<'_>> = Scanner::new(body, Format::Text)
            .collect::<Result<_>>()
            .expect("valid");
        let series: Vec<&str> = lines.iter().map(|l| l.series).collect();
        assert_eq!(series, ["a", "b {x=\"}\\\"}\",y=\"\"}", "c{x=\"1\",}"]);
        assert_eq!(lines[1].name(), "b");
        assert_eq!(lines[1].timestamp_ms, Some(17));
        assert_eq!(lines[2].line, 3);
        assert!(lines[2].exemplar.is_some());
        let parsed = parse(body, Format::Text).expect("valid");
        for (line, sample) in lines.iter().zip(&parsed.samples) {
            assert_eq!(line.labels().expect("valid"), sample.labels);
        }
        assert_eq!(
            lines[1].labels().expect("valid"),
            [Label::new("__name__", "b"), Label::new("x", "}\"}")]
        );
        // A label set the fast path delimits but that does not parse is an error when its
        // labels are asked for, naming the line.
        let odd = Scanner::new("ok 1\nbad{a-b=\"x\"} 1\n", Format::Text)
            .nth(1)
            .expect("a second line")
            .expect("delimited");
        let e = odd.labels().expect_err("invalid label name").to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        for (body, want) in [
            ("ok 1\nbad{a=\"x} 1\n", "line 2"),
            ("ok 1\nbad 1 2 3\n", "line 2"),
            ("bad{1a=\"x\"} 1", "label name"),
            ("bad abc", "invalid value"),
            ("bad{a=\"1\",a=\"2\"} 1", "more than once"),
            ("bad 1 1.5", "integer milliseconds"),
            ("{\"utf8.name\"} 1", "UTF-8"),
            ("# TYPE x weird", "unknown metric type"),
        ] {
            let e = parse(body, Format::Text).unwrap_err().to_string();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn openmetrics_features() {
        let body = "# TYPE foo counter\n# UNIT foo seconds\n# HELP foo Some \\\"help\\\".\n\
                    foo_total{a=\"1\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.890\n\
                    foo_created{a=\"1\"} 1520430000.123\n\
                    # TYPE bar gauge\nbar_created 5\n# EOF\n";
        let s = parse(body, Format::OpenMetrics).unwrap();
        assert_eq!(
            s.samples.len(),
            2,
            "foo_created skipped, bar_created kept: {s:?}"
        );
        let foo = &s.samples[0];
        assert_eq!(foo.timestamp_ms, Some(1_520_879_607_789));
        let ex = foo.exemplar.as_ref().unwrap();
        assert_eq!(ex.labels, vec![Label::new("trace_id", "KOO5S4vxi0o")]);
        assert_eq!(ex.value, 0.67);
        assert_eq!(ex.timestamp, 1_520_879_602_890);
        assert_eq!(s.metadata[0].unit, "seconds");
        assert_eq!(s.metadata[0].help, "Some \"help\".");
        assert!(
            parse("foo 1\n", Format::OpenMetrics)
                .unwrap_err()
                .to_string()
                .contains("# EOF")
        );
        assert!(parse("# EOF\nfoo 1\n", Format::OpenMetrics).is_err());
    }

    #[test]
    fn content_type_picks_format() {
        assert_eq!(Format::from_content_type(None), Format::Text);
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
    }

    /// Each documented gap of prometheus-parse 0.2, shown on the crate itself.
    #[test]
    fn prometheus_parse_gaps() {
        use prometheus_parse::{LineInfo, Scrape};
        let lines = |s: &str| {
            s.lines()
                .map(|l| Ok(l.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        // Escapes and separators in label values.
        let s = Scrape::parse(lines("m{a=\"x,y\",b=\"q\\\"\"} 1")).unwrap();
        assert_ne!(s.samples[0].labels.get("a"), Some("x,y"));
        // Colons in metric names: the sample is dropped.
        assert_eq!(LineInfo::parse("job:rate5m 1"), LineInfo::Ignored);
        // Types beyond the text format collapse to Untyped.
        assert!(matches!(
            LineInfo::parse("# TYPE m info"),
            LineInfo::Type {
                sample_type: prometheus_parse::SampleType::Untyped,
                ..
            }
        ));
        // An exemplar is taken for a timestamp.
        assert!(matches!(
            LineInfo::parse("m_total 1 # {t=\"x\"} 1"),
            LineInfo::Sample {
                timestamp: Some("#"),
                ..
            }
        ));
        // A malformed value is skipped silently.
        assert!(Scrape::parse(lines("m abc")).unwrap().samples.is_empty());
    }

    #[test]
    fn real_exporters_parse() {
        for (file, min_samples) in [("node_exporter.prom", 500), ("prometheus-2.42.prom", 400)] {
            let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
            let body = std::fs::read_to_string(&path).unwrap();
            let expected = body
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .count();
            let s = parse(&body, Format::Text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(s.samples.len(), expected, "{file}: one sample per line");
            assert!(s.samples.len() >= min_samples, "{file}");
            for sample in &s.samples {
                crate::LabelSet::new(sample.labels.clone())
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            assert!(
                s.metadata.iter().all(|m| !m.help.is_empty()),
                "{file}: every family has help"
            );
        }
        let node = parse(
            &std::fs::read_to_string(format!(
                "{}/tests/fixtures/node_exporter.prom",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
            Format::Text,
        )
        .unwrap();
        let uname = node
            .samples
            .iter()
            .find(|s| s.labels[0].value == "node_uname_info")
            .unwrap();
        assert!(label(uname, "version").unwrap().starts_with("#1 SMP"));
        let om = std::fs::read_to_string(format!(
            "{}/tests/fixtures/python-prometheus_client-0.26.0.openmetrics",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let s = parse(&om, Format::OpenMetrics).unwrap();
        assert!(s.samples.iter().any(|x| x.exemplar.is_some()));
        assert!(
            s.samples
                .iter()
                .all(|x| !x.labels[0].value.ends_with("_created"))
        );
        assert!(
            s.samples
                .iter()
                .any(|x| label(x, "path").as_deref() == Some("/a\"b\\c\nd"))
        );
    }

    proptest! {
        #[test]
        fn never_panics(body in "\\PC{0,200}") {
            let _ = parse(&body, Format::Text);
            let _ = parse(&body, Format::OpenMetrics);
        }

        #[test]
        fn label_values_round_trip(v in "\\PC{1,20}") {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let s = parse(&format!("m{{l=\"{escaped}\"}} 1\n"), Format::Text).unwrap();
            prop_assert_eq!(label(&s.samples[0], "l"), Some(v));
        }
    }
}
