//! Stream aggregation: the cascade folds matched raw series into per-window aggregates, as
//! recording rules would, before they travel upstream.
//!
//! # Windows
//! Every rule has an `interval` I. Windows are aligned to multiples of I since the Unix epoch
//! and are left-open: window k holds the samples with timestamps in (k·I, (k+1)·I], and its
//! outputs are stamped at its end (k+1)·I. That is exactly the range Prometheus 3 selects for
//! `x[I]` evaluated at the window end, so each output equals a PromQL expression at that instant
//! (table below).
//!
//! # Lateness
//! A window (s, e] closes in the first [`Aggregator::flush`] with `now >= e + lateness`. A
//! sample for a window that has already closed is late: counted per rule and not used. A sample
//! more than [`MAX_FUTURE_MS`] ahead of `now` is counted and not used either, which bounds how
//! many windows can be open. Time is always passed in; nothing here reads a clock.
//!
//! # What is kept
//! An open window keeps, per output group and per input series, that series' samples of the
//! window: a handful each, since windows are short. They are sorted when the window closes, so
//! results depend neither on arrival order nor on how samples were split into pushes. Of two
//! samples with the same timestamp the larger value (IEEE total order) is kept: arbitrary, but
//! independent of arrival order. Nothing outlives its window, because every output, `increase`
//! included, needs only the samples of its own range. An input staleness marker is therefore
//! simply skipped: it is no sample for any computation, and the ended series' state goes away
//! with its window.
//!
//! Series and groups are keyed by the xxh3-64 fingerprint of their labels
//! ([`fingerprint`]) with no collision check: two colliding label sets (odds about n²/2⁶⁵ for
//! n series) would be merged, a risk accepted for the memory and hashing saved.
//!
//! # Groups and names
//! A matched series belongs to the group of its metric name plus, for `by`, the listed labels
//! it has; for `without`, all its labels but the listed ones; with neither, no label. The
//! metric name is always part of the group because one selector may match several metrics.
//! Outputs are named `<metric>:<interval>_<by|without>_<labels>_<output>`, the labels sorted and
//! joined by `_`, the interval as Prometheus prints it (`1m`, `1m30s`); without labels it is
//! `<metric>:<interval>_<output>`. So `http_requests_total` with `interval: 1m`,
//! `without: [pod, instance]` and `increase` gives
//! `http_requests_total:1m_without_instance_pod_increase`. The output labels are the group's
//! labels and `__name__`, sorted. A rule with `quantiles(...)` sets a `quantile` label on those
//! outputs, so `by` may not list `quantile` and `without` always drops it.
//!
//! # Outputs
//! For each matched metric `x`, with `L` the rule's `by (...)`/`without (...)` clause, at the
//! window end t:
//!
//! | output | value | PromQL at t |
//! |---|---|---|
//! | `sum` | sum of each series' last value | `sum L (last_over_time(x[I]))` |
//! | `count` | series with a sample | `count L (last_over_time(x[I]))` |
//! | `avg` | `sum / count` | `avg L (last_over_time(x[I]))` |
//! | `min` | smallest sample | `min L (min_over_time(x[I]))` |
//! | `max` | largest sample | `max L (max_over_time(x[I]))` |
//! | `last` | the group's newest sample; of several at that timestamp the largest | none |
//! | `increase` | sum of each series' `increase` | `sum L (increase(x[I]))` |
//! | `rate` | sum of each series' `rate` | `sum L (rate(x[I]))` |
//! | `quantiles(φ, ...)` | per φ, a series with `quantile="φ"` | `quantile L (φ, last_over_time(x[I]))` |
//!
//! `increase` and `rate` follow Prometheus 3's `extrapolatedRate`; a series with fewer than two
//! samples in the window contributes nothing, and a group where no series has two gets no
//! `increase`/`rate` sample that window. `min`/`max` are NaN only if every sample is.
//!
//! # Staleness of outputs
//! An output series that had a sample in a group's previous window and has none in this one
//! gets a staleness marker at this window's end, once: when the group's inputs all stop or go
//! stale, each of its output series ends with one marker and the group is forgotten.
//!
//! # Raw input
//! [`Aggregator::push`] tells whether the raw series should still be forwarded: yes if it
//! matched no rule or every rule it matched has `keep_input: true`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};
use serde::{Deserialize, Serialize};
use strata_wire::duration::{format_duration_ms, parse_duration_ms};
use strata_wire::labels::{LabelPair, fingerprint, is_valid_label_name};
use strata_wire::protocol::METRIC_NAME;
use strata_wire::stale::{is_stale_nan, stale_nan};
use strata_wire::view::LabelRef;
use strata_wire::{Label, Sample, TimeSeries};

/// How far ahead of `now` a sample may be and still be used. Without a bound, one wrong clock
/// could open windows (and hold memory) arbitrarily far into the future.
pub const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;

/// The label carrying φ on `quantiles` output series.
const QUANTILE_LABEL: &str = "quantile";

const OUTPUTS_HELP: &str = "sum, count, avg, min, max, last, increase, rate, quantiles(0.5, 0.9)";

/// One rule of `stream_aggregation` in the cascade's config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A PromQL series selector, e.g. `'{__name__=~"container_.*"}'` or `'x{job="a"}'`.
    #[serde(rename = "match")]
    pub selector: String,
    /// Window length, a Prometheus duration of at least `1s`.
    pub interval: String,
    /// Labels the outputs keep. At most one of `by` and `without`; neither keeps no label.
    #[serde(default)]
    pub by: Option<Vec<String>>,
    /// Labels the outputs drop (all others are kept).
    #[serde(default)]
    pub without: Option<Vec<String>>,
    /// `sum`, `count`, `min`, `max`, `avg`, `last`, `increase`, `rate`, `quantiles(φ, ...)`.
    pub outputs: Vec<String>,
    /// Whether matched raw series are still forwarded. Default: no.
    #[serde(default)]
    pub keep_input: bool,
}

/// Counters of one rule since the aggregator started (served as JSON on the status page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleStats {
    /// Index of the rule in `stream_aggregation.rules`.
    pub rule: usize,
    /// The rule's `match` as written.
    pub selector: String,
    /// Samples taken into a window.
    pub samples: u64,
    /// Samples for a window that had already closed.
    pub late: u64,
    /// Samples more than [`MAX_FUTURE_MS`] ahead of `now`.
    pub future: u64,
    /// Output samples emitted, staleness markers included.
    pub emitted: u64,
    /// Output groups holding state: with samples in an open window, or with outputs that will
    /// need a staleness marker.
    pub groups: usize,
}

/// The stream-aggregation engine: compiled rules and their open windows.
#[derive(Debug)]
pub struct Aggregator {
    rules: Vec<Rule>,
    lateness_ms: i64,
}

impl Aggregator {
    /// Compiles the rules; an error names the rule and the field.
    pub fn new(rules: &[RuleConfig], lateness_ms: i64) -> Result<Self, String> {
        if lateness_ms < 0 {
            return Err(format!(
                "stream_aggregation: lateness is negative ({lateness_ms}ms); write 0s or more"
            ));
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, cfg)| Rule::compile(index, cfg))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules, lateness_ms })
    }

    /// True if there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Feeds one series (labels sorted by name, valid); returns whether its raw samples should
    /// still be forwarded.
    pub fn push<L: LabelPair>(&mut self, labels: &[L], samples: &[Sample], now_ms: i64) -> bool {
        self.feed(labels, samples, now_ms, false)
    }

    /// [`Aggregator::push`] for input read back after a restart: samples of windows emitted
    /// before the stop ([`Aggregator::resume`]) are skipped without being counted late.
    pub fn replay<L: LabelPair>(&mut self, labels: &[L], samples: &[Sample], now_ms: i64) {
        self.feed(labels, samples, now_ms, true);
    }

    fn feed<L: LabelPair>(
        &mut self,
        labels: &[L],
        samples: &[Sample],
        now_ms: i64,
        replaying: bool,
    ) -> bool {
        // Found once for all rules; most series match no rule and cost only this and a string
        // comparison per rule with a metric name.
        let metric = label_value(labels, METRIC_NAME);
        let mut forward = true;
        let mut series_fp = None;
        for rule in &mut self.rules {
            if !rule.matches(metric, labels) {
                continue;
            }
            forward &= rule.keep_input;
            let fp = *series_fp.get_or_insert_with(|| fingerprint(labels));
            rule.add(labels, fp, samples, now_ms, replaying);
        }
        forward
    }

    /// Whether a series matches some rule, and whether its raw samples are still forwarded
    /// (no rule it matches drops its input); [`Aggregator::push`] without pushing.
    pub fn route<L: LabelPair>(&self, labels: &[L]) -> (bool, bool) {
        let metric = label_value(labels, METRIC_NAME);
        let mut matched = false;
        let mut forward = true;
        for rule in self.rules.iter().filter(|r| r.matches(metric, labels)) {
            matched = true;
            forward &= rule.keep_input;
        }
        (matched, forward)
    }

    /// Continues after a restart: every window ending at or before `emitted_through_ms` was
    /// emitted before the stop.
    pub fn resume(&mut self, emitted_through_ms: i64) {
        for rule in &mut self.rules {
            let through = emitted_through_ms - emitted_through_ms.rem_euclid(rule.interval_ms);
            rule.flushed_through = rule.flushed_through.max(through);
            rule.resumed_through = through;
        }
    }

    /// The longest `interval` of the rules (0 without rules).
    pub fn max_interval_ms(&self) -> i64 {
        self.rules.iter().map(|r| r.interval_ms).max().unwrap_or(0)
    }

    /// Closes every window with `end + lateness <= now_ms`, per rule in time order, and returns
    /// one single-sample series per output series and closed window.
    pub fn flush(&mut self, now_ms: i64) -> Vec<TimeSeries> {
        let mut out = Vec::new();
        let limit = now_ms.saturating_sub(self.lateness_ms);
        for rule in &mut self.rules {
            rule.flush(limit, &mut out);
        }
        out
    }

    /// Per rule counters so far.
    pub fn stats(&self) -> Vec<RuleStats> {
        self.rules
            .iter()
            .enumerate()
            .map(|(rule, r)| {
                let mut groups: BTreeSet<u64> = r.live.keys().copied().collect();
                groups.extend(r.windows.values().flat_map(|w| w.keys().copied()));
                RuleStats {
                    rule,
                    selector: r.selector.clone(),
                    samples: r.samples,
                    late: r.late,
                    future: r.future,
                    emitted: r.emitted,
                    groups: groups.len(),
                }
            })
            .collect()
    }
}

/// What one output series computes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sum,
    Count,
    Avg,
    Min,
    Max,
    Last,
    Increase,
    Rate,
    Quantile(f64),
}

/// The outputs without a parameter, by name.
const PLAIN_OUTPUTS: [(&str, Kind); 8] = [
    ("sum", Kind::Sum),
    ("count", Kind::Count),
    ("avg", Kind::Avg),
    ("min", Kind::Min),
    ("max", Kind::Max),
    ("last", Kind::Last),
    ("increase", Kind::Increase),
    ("rate", Kind::Rate),
];

impl Kind {
    /// The output's name in the config and in output metric names.
    fn name(self) -> &'static str {
        PLAIN_OUTPUTS
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("quantiles", |&(name, _)| name)
    }
}

/// One output series of every group of a rule.
#[derive(Debug)]
struct OutputSeries {
    kind: Kind,
    /// Appended to the input metric name: `:1m_by_job_sum`.
    suffix: String,
    /// The `quantile` label's value, for quantiles.
    quantile: Option<String>,
}

/// Which input labels a group keeps (the lists sorted, without duplicates).
#[derive(Debug)]
enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

impl Grouping {
    fn keeps(&self, name: &str) -> bool {
        name == METRIC_NAME
            || match self {
                Grouping::By(list) => contains(list, name),
                Grouping::Without(list) => !contains(list, name),
            }
    }
}

/// The samples of one group in one open window.
#[derive(Debug)]
struct Group {
    /// Group labels, `__name__` (the input metric) included, sorted.
    labels: Vec<Label>,
    /// Per input series fingerprint, its samples in arrival order.
    series: BTreeMap<u64, Vec<(i64, f64)>>,
}

/// A group that had output in its last closed window, remembered for staleness markers.
#[derive(Debug)]
struct Live {
    labels: Vec<Label>,
    /// End of that window.
    end: i64,
    /// Per output series of the rule, whether it had a sample there.
    emitted: Vec<bool>,
}

#[derive(Debug)]
struct Rule {
    selector: String,
    /// Required metric name, checked first: the cheap test most series fail.
    metric: Option<String>,
    matchers: Vec<Matcher>,
    interval_ms: i64,
    grouping: Grouping,
    outputs: Vec<OutputSeries>,
    keep_input: bool,
    /// End of the newest closed window; samples at or before it are late.
    flushed_through: i64,
    /// End of the newest window emitted before a restart ([`Aggregator::resume`]).
    resumed_through: i64,
    /// Open windows by end, then groups by fingerprint. Ordered maps make output order and
    /// floating-point summation order deterministic.
    windows: BTreeMap<i64, BTreeMap<u64, Group>>,
    live: BTreeMap<u64, Live>,
    samples: u64,
    late: u64,
    future: u64,
    emitted: u64,
}

impl Rule {
    fn compile(index: usize, cfg: &RuleConfig) -> Result<Self, String> {
        let err = |field: &str, problem: String| {
            format!(
                "stream_aggregation.rules[{index}] (match {:?}): {field}: {problem}",
                cfg.selector
            )
        };
        let (metric, matchers) = compile_selector(&cfg.selector).map_err(|e| err("match", e))?;
        let interval_ms = parse_duration_ms(&cfg.interval).map_err(|e| {
            err(
                "interval",
                format!("{e}; write a Prometheus duration such as \"1m\""),
            )
        })?;
        if interval_ms < 1000 {
            return Err(err(
                "interval",
                format!(
                    "{:?} is shorter than 1s; write \"1s\" or more",
                    cfg.interval
                ),
            ));
        }
        let mut grouping = match (&cfg.by, &cfg.without) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "by/without",
                    "both are set; set only one: `by` lists the labels outputs keep, \
                     `without` the labels they drop"
                        .into(),
                ));
            }
            (Some(by), None) => Grouping::By(label_list(by).map_err(|e| err("by", e))?),
            (None, Some(without)) => {
                Grouping::Without(label_list(without).map_err(|e| err("without", e))?)
            }
            (None, None) => Grouping::By(Vec::new()),
        };
        let kinds = parse_outputs(&cfg.outputs).map_err(|e| err("outputs", e))?;
        let prefix = name_prefix(interval_ms, &grouping);
        // The quantile label set on outputs must not collide with a kept input label: `by`
        // may not keep it, and `without` always drops it (not named in the output's name).
        if kinds.iter().any(|k| matches!(k, Kind::Quantile(_))) {
            match &mut grouping {
                Grouping::By(by) if contains(by, QUANTILE_LABEL) => {
                    return Err(err(
                        "by",
                        "lists \"quantile\", which the quantiles output sets itself; remove it"
                            .into(),
                    ));
                }
                Grouping::Without(without) if !contains(without, QUANTILE_LABEL) => {
                    let at = without.partition_point(|l| l.as_str() < QUANTILE_LABEL);
                    without.insert(at, QUANTILE_LABEL.to_string());
                }
                _ => {}
            }
        }
        let outputs = kinds
            .into_iter()
            .map(|kind| OutputSeries {
                suffix: format!("{prefix}_{}", kind.name()),
                // Rust's shortest round-trip `Display` of a number in [0, 1] is what Go's
                // strconv.FormatFloat(φ, 'f', -1, 64) writes, as Prometheus labels do.
                quantile: match kind {
                    Kind::Quantile(q) => Some(format!("{q}")),
                    _ => None,
                },
                kind,
            })
            .collect();
        Ok(Self {
            selector: cfg.selector.clone(),
            metric,
            matchers,
            interval_ms,
            grouping,
            outputs,
            keep_input: cfg.keep_input,
            flushed_through: i64::MIN,
            resumed_through: i64::MIN,
            windows: BTreeMap::new(),
            live: BTreeMap::new(),
            samples: 0,
            late: 0,
            future: 0,
            emitted: 0,
        })
    }

    /// Whether the series matches the selector; a missing label matches as "", as in PromQL.
    fn matches<L: LabelPair>(&self, metric: &str, labels: &[L]) -> bool {
        !metric.is_empty()
            && self.metric.as_deref().is_none_or(|m| m == metric)
            && self
                .matchers
                .iter()
                .all(|m| m.is_match(label_value(labels, &m.name)))
    }

    fn add<L: LabelPair>(
        &mut self,
        labels: &[L],
        series: u64,
        samples: &[Sample],
        now_ms: i64,
        replaying: bool,
    ) {
        let horizon = now_ms.saturating_add(MAX_FUTURE_MS);
        let mut group = None;
        for sample in samples {
            if is_stale_nan(sample.value) {
                continue;
            }
            if sample.timestamp > horizon {
                self.future += 1;
                continue;
            }
            // No window at the very edge of the i64 range: such a timestamp is late by any
            // reasonable clock.
            let Some(end) = window_end(sample.timestamp, self.interval_ms) else {
                self.late += 1;
                continue;
            };
            if end <= self.flushed_through {
                if !(replaying && end <= self.resumed_through) {
                    self.late += 1;
                }
                continue;
            }
            self.samples += 1;
            let (key, kept) = group.get_or_insert_with(|| group_labels(&self.grouping, labels));
            self.windows
                .entry(end)
                .or_default()
                .entry(*key)
                .or_insert_with(|| Group {
                    labels: kept.iter().map(|l| Label::new(l.name, l.value)).collect(),
                    series: BTreeMap::new(),
                })
                .series
                .entry(series)
                .or_default()
                .push((sample.timestamp, sample.value));
        }
    }

    /// Closes the windows ending at or before `limit` (now − lateness).
    fn flush(&mut self, limit: i64, out: &mut Vec<TimeSeries>) {
        // The newest window that may close ends at the last multiple of the interval <= limit.
        let Some(through) = limit.checked_sub(limit.rem_euclid(self.interval_ms)) else {
            return;
        };
        if through <= self.flushed_through {
            return;
        }
        self.flushed_through = through;
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > through {
                break;
            }
            let (end, groups) = entry.remove_entry();
            self.close(end, groups, out);
        }
        // Groups whose next window closed without any sample of the rule in it.
        self.expire(through, &BTreeMap::new(), out);
    }

    fn close(&mut self, end: i64, groups: BTreeMap<u64, Group>, out: &mut Vec<TimeSeries>) {
        self.expire(end, &groups, out);
        let start = end - self.interval_ms;
        for (key, mut group) in groups {
            let values = evaluate(&self.outputs, &mut group.series, start, end);
            let before = self.live.remove(&key);
            for (i, (spec, value)) in self.outputs.iter().zip(&values).enumerate() {
                let value = match *value {
                    Some(v) => v,
                    // Had a sample last window but not now (increase or rate below two
                    // samples): the output series ends here.
                    None if before.as_ref().is_some_and(|b| b.emitted[i]) => stale_nan(),
                    None => continue,
                };
                out.push(one_sample(output_labels(&group.labels, spec), value, end));
                self.emitted += 1;
            }
            let emitted: Vec<bool> = values.iter().map(Option::is_some).collect();
            if emitted.contains(&true) {
                let labels = group.labels;
                self.live.insert(
                    key,
                    Live {
                        labels,
                        end,
                        emitted,
                    },
                );
            }
        }
    }

    /// Ends the live groups without samples in the window after their last output: closing the
    /// window ending at `end` with groups `present`, that is every group whose next window ends
    /// before `end`, or at `end` if it is not present. The marker goes at that next window's end.
    fn expire(&mut self, end: i64, present: &BTreeMap<u64, Group>, out: &mut Vec<TimeSeries>) {
        let interval = self.interval_ms;
        let outputs = &self.outputs;
        let mut emitted = 0;
        self.live.retain(|key, live| {
            let next = live.end.saturating_add(interval);
            let ended = next < end || (next == end && !present.contains_key(key));
            if ended {
                for (spec, _) in outputs.iter().zip(&live.emitted).filter(|(_, had)| **had) {
                    out.push(one_sample(
                        output_labels(&live.labels, spec),
                        stale_nan(),
                        next,
                    ));
                    emitted += 1;
                }
            }
            !ended
        });
        self.emitted += emitted;
    }
}

/// The metric name and other matchers of a plain series selector.
fn compile_selector(text: &str) -> Result<(Option<String>, Vec<Matcher>), String> {
    let expr = parser::parse(text).map_err(|e| {
        format!(
            "cannot parse {text:?}: {e}; write a series selector such as \
             'http_requests_total{{job=\"api\"}}'"
        )
    })?;
    let vs = match expr {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(_) => {
            return Err(format!(
                "{text:?} has a range; drop the [...]: the window length is `interval`"
            ));
        }
        _ => {
            return Err(format!(
                "{text:?} is an expression, not a series selector; write only the selector, \
                 e.g. 'x{{job=\"a\"}}', and choose functions with `outputs`"
            ));
        }
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(format!(
            "{text:?} has an offset or @ modifier; drop it: windows always end when they close"
        ));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(format!(
            "{text:?} uses `or` between matchers, which stream aggregation does not support; \
             write one rule per alternative"
        ));
    }
    let mut metric = vs.name;
    let mut matchers = vs.matchers.matchers;
    if metric.is_none()
        && let Some(i) = matchers
            .iter()
            .position(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
    {
        metric = Some(matchers.swap_remove(i).value);
    }
    Ok((metric, matchers))
}

/// A `by`/`without` list, checked, sorted and without duplicates.
fn label_list(names: &[String]) -> Result<Vec<String>, String> {
    for name in names {
        if name == METRIC_NAME {
            return Err(
                "lists __name__, which outputs always keep (in their own name); remove it".into(),
            );
        }
        if !is_valid_label_name(name) {
            return Err(format!(
                "{name:?} is not a valid label name; write names matching [a-zA-Z_][a-zA-Z0-9_]*"
            ));
        }
    }
    let mut list = names.to_vec();
    list.sort();
    list.dedup();
    Ok(list)
}

/// The outputs in config order, a quantiles entry expanded to one [`Kind`] per φ.
fn parse_outputs(texts: &[String]) -> Result<Vec<Kind>, String> {
    if texts.is_empty() {
        return Err(format!("no output; list at least one of {OUTPUTS_HELP}"));
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for text in texts {
        let parsed = parse_output(text.trim())?;
        if let Some(dup) = parsed
            .iter()
            .find(|k| kinds.iter().any(|o| o.name() == k.name()))
        {
            let hint = if dup.name() == "quantiles" {
                "; put every φ into one quantiles(...)"
            } else {
                ""
            };
            return Err(format!(
                "{} is listed twice; list it once{hint}",
                dup.name()
            ));
        }
        kinds.extend(parsed);
    }
    Ok(kinds)
}

fn parse_output(text: &str) -> Result<Vec<Kind>, String> {
    match PLAIN_OUTPUTS.iter().find(|(name, _)| *name == text) {
        Some(&(_, kind)) => Ok(vec![kind]),
        None => parse_quantiles(text),
    }
}

fn parse_quantiles(text: &str) -> Result<Vec<Kind>, String> {
    let Some(list) = text
        .strip_prefix("quantiles(")
        .and_then(|rest| rest.strip_suffix(')'))
    else {
        return Err(format!(
            "unknown output {text:?}; write one of {OUTPUTS_HELP}"
        ));
    };
    let mut kinds = Vec::new();
    for part in list.split(',').map(str::trim) {
        let q: f64 = part.parse().map_err(|_| {
            format!(
                "{text:?}: {part:?} is not a number; write each φ as a number between 0 and 1, \
                 e.g. quantiles(0.5, 0.99)"
            )
        })?;
        if !(0.0..=1.0).contains(&q) {
            return Err(format!(
                "{text:?}: φ {part} is outside [0, 1]; write e.g. 0.99 for the 99th percentile"
            ));
        }
        if kinds.contains(&Kind::Quantile(q)) {
            return Err(format!("{text:?}: φ {part} is listed twice; list it once"));
        }
        kinds.push(Kind::Quantile(q));
    }
    Ok(kinds)
}

/// `:<interval>`, then `_by_<labels>` or `_without_<labels>` if there are labels.
fn name_prefix(interval_ms: i64, grouping: &Grouping) -> String {
    let mut prefix = format!(":{}", format_duration_ms(interval_ms));
    let (word, list) = match grouping {
        Grouping::By(list) => ("by", list),
        Grouping::Without(list) => ("without", list),
    };
    if !list.is_empty() {
        prefix.push('_');
        prefix.push_str(word);
        for label in list {
            prefix.push('_');
            prefix.push_str(label);
        }
    }
    prefix
}

fn contains(sorted: &[String], name: &str) -> bool {
    sorted.binary_search_by(|l| l.as_str().cmp(name)).is_ok()
}

/// The value of label `name` in sorted labels, "" if absent.
fn label_value<'a, L: LabelPair>(labels: &'a [L], name: &str) -> &'a str {
    labels
        .binary_search_by(|l| l.name().cmp(name))
        .map_or("", |i| labels[i].value())
}

/// The group labels of a series (a sorted subset of its labels) and their fingerprint.
fn group_labels<'a, L: LabelPair>(
    grouping: &Grouping,
    labels: &'a [L],
) -> (u64, Vec<LabelRef<'a>>) {
    let kept: Vec<LabelRef<'a>> = labels
        .iter()
        .filter(|l| !l.value().is_empty() && grouping.keeps(l.name()))
        .map(|l| LabelRef {
            name: l.name(),
            value: l.value(),
        })
        .collect();
    (fingerprint(&kept), kept)
}

/// End of the window (end − interval, end] holding `ts`; `None` past the i64 range.
fn window_end(ts: i64, interval: i64) -> Option<i64> {
    let rest = ts.rem_euclid(interval);
    let start = if rest == 0 {
        ts.checked_sub(interval)?
    } else {
        ts.checked_sub(rest)?
    };
    start.checked_add(interval)
}

/// The output labels of a group: its labels with the output's metric name, plus `quantile`.
fn output_labels(group: &[Label], spec: &OutputSeries) -> Vec<Label> {
    let mut labels: Vec<Label> = group
        .iter()
        .map(|l| {
            if l.name == METRIC_NAME {
                Label::new(METRIC_NAME, format!("{}{}", l.value, spec.suffix))
            } else {
                l.clone()
            }
        })
        .collect();
    if let Some(q) = &spec.quantile {
        let at = labels.partition_point(|l| l.name.as_str() < QUANTILE_LABEL);
        labels.insert(at, Label::new(QUANTILE_LABEL, q.as_str()));
    }
    labels
}

fn one_sample(labels: Vec<Label>, value: f64, timestamp: i64) -> TimeSeries {
    TimeSeries {
        labels,
        samples: vec![Sample { value, timestamp }],
        ..TimeSeries::default()
    }
}

/// The value of every output series of a group over the window (start, end]; `None` where an
/// output has no value (increase and rate without a series of two samples).
fn evaluate(
    outputs: &[OutputSeries],
    series: &mut BTreeMap<u64, Vec<(i64, f64)>>,
    start: i64,
    end: i64,
) -> Vec<Option<f64>> {
    let range_s = (end - start) as f64 / 1000.0;
    let mut sum = 0.0;
    let mut lasts = Vec::with_capacity(series.len());
    let mut min = f64::NAN;
    let mut max = f64::NAN;
    let mut newest: Option<(i64, f64)> = None;
    let mut increase: Option<f64> = None;
    let mut rate: Option<f64> = None;
    for points in series.values_mut() {
        // Time order, and of equal timestamps the largest value first so dedup keeps it.
        points.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        points.dedup_by_key(|p| p.0);
        let Some(&(t, last)) = points.last() else {
            continue;
        };
        sum += last;
        lasts.push(last);
        if newest.is_none_or(|(nt, nv)| t > nt || (t == nt && last.total_cmp(&nv).is_gt())) {
            newest = Some((t, last));
        }
        for &(_, v) in points.iter() {
            if replaces(v, min, Ordering::Less) {
                min = v;
            }
            if replaces(v, max, Ordering::Greater) {
                max = v;
            }
        }
        if let Some((raw, factor)) = extrapolate(points, start, end) {
            *increase.get_or_insert(0.0) += raw * factor;
            // As Prometheus computes rate: the factor divided by the range, then applied.
            *rate.get_or_insert(0.0) += raw * (factor / range_s);
        }
    }
    if lasts.is_empty() {
        return vec![None; outputs.len()];
    }
    lasts.sort_unstable_by(go_float_order);
    let count = lasts.len() as f64;
    outputs
        .iter()
        .map(|o| match o.kind {
            Kind::Sum => Some(sum),
            Kind::Count => Some(count),
            Kind::Avg => Some(sum / count),
            Kind::Min => Some(min),
            Kind::Max => Some(max),
            Kind::Last => newest.map(|(_, v)| v),
            Kind::Increase => increase,
            Kind::Rate => rate,
            Kind::Quantile(q) => Some(quantile(q, &lasts)),
        })
        .collect()
}

/// Whether `v` replaces `current` as minimum (`Less`) or maximum (`Greater`). NaN only where
/// nothing else is, as `min_over_time` and `min` have it; the total order (−0 < +0) makes the
/// result independent of the order values come in.
fn replaces(v: f64, current: f64, want: Ordering) -> bool {
    !v.is_nan() && (current.is_nan() || v.total_cmp(&current) == want)
}

/// Prometheus 3's `extrapolatedRate` for a counter over the range (start, end], as the raw
/// increase with counter-reset corrections and the extrapolation factor; `None` below two
/// samples. `points` are sorted with unique timestamps, so the sampled interval is positive.
fn extrapolate(points: &[(i64, f64)], start: i64, end: i64) -> Option<(f64, f64)> {
    let [first, .., last] = points else {
        return None;
    };
    let (first_t, first_v) = *first;
    let (last_t, last_v) = *last;
    let mut raw = last_v - first_v;
    for pair in points.windows(2) {
        if pair[1].1 < pair[0].1 {
            raw += pair[0].1;
        }
    }
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let mut to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    // Samples near a boundary extrapolate to it; farther ones only by half the average spacing,
    // where the series probably starts or ends. Prometheus 3 applies this before the zero-point
    // clamp (2.x did it after), and so does strata's own PromQL engine.
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    // A counter cannot have been below zero: never extrapolate back past its zero point.
    if raw > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / raw);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    Some((raw, (sampled + to_start + to_end) / sampled))
}

/// Go's float sort order, which PromQL's `quantile` sorts with: NaN below every number.
fn go_float_order(a: &f64, b: &f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.total_cmp(b),
    }
}

/// PromQL's `quantile` of sorted, non-empty values: linear interpolation between the
/// neighbouring ranks of φ·(n−1). φ is in [0, 1] (checked in the config).
fn quantile(q: f64, sorted: &[f64]) -> f64 {
    let n = sorted.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    sorted[lower as usize] * (1.0 - weight) + sorted[upper as usize] * weight
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;
    use strata_wire::labels::render;

    use super::*;

    const MINUTE: i64 = 60_000;

    fn rule(selector: &str, outputs: &[&str]) -> RuleConfig {
        RuleConfig {
            selector: selector.to_string(),
            interval: "1m".to_string(),
            by: None,
            without: None,
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
            keep_input: false,
        }
    }

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|l| l.to_string()).collect())
    }

    fn series(pairs: &[(&str, &str)]) -> Vec<Label> {
        let mut labels: Vec<Label> = pairs.iter().map(|&(n, v)| Label::new(n, v)).collect();
        labels.sort();
        labels
    }

    fn at(timestamp: i64, value: f64) -> Sample {
        Sample { value, timestamp }
    }

    /// Output values by rendered series and timestamp; checks labels are sorted and no series
    /// has two values at one timestamp.
    fn results(out: &[TimeSeries]) -> BTreeMap<(String, i64), f64> {
        let mut map = BTreeMap::new();
        for ts in out {
            assert!(
                ts.labels.is_sorted_by(|a, b| a.name < b.name),
                "{:?}",
                ts.labels
            );
            for s in &ts.samples {
                let key = (render(&ts.labels), s.timestamp);
                assert!(map.insert(key.clone(), s.value).is_none(), "{key:?} twice");
            }
        }
        map
    }

    /// Per output series, its samples in emission order, staleness markers as `None`.
    fn sequences(out: &[TimeSeries]) -> BTreeMap<String, Vec<(i64, Option<f64>)>> {
        let mut map: BTreeMap<String, Vec<(i64, Option<f64>)>> = BTreeMap::new();
        for ts in out {
            for s in &ts.samples {
                let value = (!is_stale_nan(s.value)).then_some(s.value);
                map.entry(render(&ts.labels))
                    .or_default()
                    .push((s.timestamp, value));
            }
        }
        map
    }

    fn approx(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-9 * want.abs().max(1.0)
    }

    fn config_error(cfg: &RuleConfig) -> String {
        Aggregator::new(std::slice::from_ref(cfg), 0).unwrap_err()
    }

    /// The output metric names of `cfg` for one sample of `labels`.
    fn output_names(cfg: &RuleConfig, labels: &[Label]) -> Vec<String> {
        let mut agg = Aggregator::new(std::slice::from_ref(cfg), 0).unwrap();
        agg.push(labels, &[at(1000, 1.0)], 1000);
        let mut found: Vec<String> = agg
            .flush(3_600_000)
            .iter()
            .map(|ts| label_value(&ts.labels, METRIC_NAME).to_string())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn output_names_follow_the_convention() {
        let http = series(&[
            ("__name__", "http_requests_total"),
            ("instance", "a:9090"),
            ("job", "api"),
            ("pod", "p"),
        ]);
        let mut without = rule("http_requests_total", &["increase"]);
        without.without = names(&["pod", "instance"]);
        let mut two = http.clone();
        two.push(Label::new("z", "1"));
        let mut agg = Aggregator::new(&[without], 0).unwrap();
        agg.push(&http, &[at(1000, 1.0), at(2000, 2.0)], 2000);
        agg.push(&two, &[at(1000, 1.0), at(2000, 2.0)], 2000);
        let out = agg.flush(MINUTE);
        assert_eq!(out.len(), 2);
        assert_ne!(render(&out[0].labels), render(&out[1].labels), "z is kept");
        for ts in &out {
            assert_eq!(
                label_value(&ts.labels, METRIC_NAME),
                "http_requests_total:1m_without_instance_pod_increase"
            );
            assert_eq!(label_value(&ts.labels, "job"), "api");
            assert_eq!(label_value(&ts.labels, "pod"), "");
        }

        let x = series(&[
            ("__name__", "x"),
            ("cell", "hz"),
            ("namespace", "n"),
            ("pod", "p"),
        ]);
        let mut by = rule("x", &["sum"]);
        by.interval = "5m".into();
        by.by = names(&["namespace", "cell", "cell"]);
        assert_eq!(output_names(&by, &x), ["x:5m_by_cell_namespace_sum"]);
        assert_eq!(output_names(&rule("x", &["sum"]), &x), ["x:1m_sum"]);
        let mut empty = rule("x", &["sum"]);
        empty.by = Some(Vec::new());
        assert_eq!(output_names(&empty, &x), ["x:1m_sum"]);
        let mut odd = rule(r#"{__name__=~"x|y"}"#, &["count", "quantiles(0.5)"]);
        odd.interval = "90s".into();
        assert_eq!(
            output_names(&odd, &x),
            ["x:1m30s_count", "x:1m30s_quantiles"]
        );
    }

    #[test]
    fn config_errors_name_the_rule_and_the_field() {
        let field = |cfg: &RuleConfig, field: &str| {
            let e = config_error(cfg);
            assert!(e.starts_with("stream_aggregation.rules[0]"), "{e}");
            assert!(e.contains(&format!("): {field}: ")), "{field}: {e}");
            e
        };
        let e = field(&rule("x", &["sum", "median"]), "outputs");
        assert!(e.contains("\"median\"") && e.contains("quantiles("), "{e}");
        field(&rule("x", &[]), "outputs");
        field(&rule("x", &["sum", " sum"]), "outputs");
        for bad in [
            "quantiles(1.5)",
            "quantiles(-0.1)",
            "quantiles(NaN)",
            "quantiles()",
            "quantiles(0.5, 0.5)",
            "quantiles(x)",
        ] {
            field(&rule("x", &[bad]), "outputs");
        }
        field(&rule("x", &["quantiles(0.5)", "quantiles(0.9)"]), "outputs");

        let mut both = rule("x", &["sum"]);
        both.by = names(&["a"]);
        both.without = names(&["b"]);
        let e = field(&both, "by/without");
        assert!(e.contains("only one"), "{e}");

        for bad in [
            "rate(x[5m])",
            "x[5m]",
            "x offset 5m",
            "x @ 100",
            "sum(x)",
            "x{",
            r#"{a="1" or b="2"}"#,
        ] {
            field(&rule(bad, &["sum"]), "match");
        }

        for bad in ["500ms", "1x", ""] {
            let mut cfg = rule("x", &["sum"]);
            cfg.interval = bad.into();
            field(&cfg, "interval");
        }

        let mut name = rule("x", &["sum"]);
        name.by = names(&["__name__"]);
        field(&name, "by");
        let mut invalid = rule("x", &["sum"]);
        invalid.without = names(&["a-b"]);
        field(&invalid, "without");
        let mut by_quantile = rule("x", &["quantiles(0.5)"]);
        by_quantile.by = names(&["quantile"]);
        field(&by_quantile, "by");

        let e = Aggregator::new(&[rule("x", &["sum"]), rule("y", &["nope"])], 0).unwrap_err();
        assert!(e.starts_with("stream_aggregation.rules[1]"), "{e}");
        assert!(Aggregator::new(&[], -1).is_err());
        assert!(Aggregator::new(&[], 0).unwrap().is_empty());
    }

    #[test]
    fn gauges_aggregate_per_group() {
        let mut cfg = rule(
            "x",
            &[
                "sum",
                "count",
                "avg",
                "min",
                "max",
                "last",
                "quantiles(0.25, 0.5, 1)",
            ],
        );
        cfg.by = names(&["job"]);
        let mut agg = Aggregator::new(&[cfg], 0).unwrap();
        let s = |job: &str, i: &str| series(&[("__name__", "x"), ("i", i), ("job", job)]);
        let now = 61_000;
        agg.push(
            &s("a", "1"),
            &[at(10_000, 1.0), at(20_000, 5.0), at(50_000, 3.0)],
            now,
        );
        agg.push(&s("a", "2"), &[at(60_000, 2.0), at(30_000, 7.0)], now);
        agg.push(&s("a", "3"), &[at(60_000, 4.0)], now);
        // The sample at 61s belongs to the next window.
        agg.push(&s("b", "1"), &[at(15_000, 10.0), at(61_000, 100.0)], now);
        agg.push(
            &series(&[("__name__", "y"), ("job", "a")]),
            &[at(30_000, 1e9)],
            now,
        );

        // Group a: last values 3, 2, 4; samples 1 5 3 7 2 4; at 60s both 2 and 4, so last is 4.
        // Sorted last values 2 3 4: φ 0.25 has rank 0.5, halfway between 2 and 3.
        // Group b: one series, last value 10.
        let mut want = BTreeMap::new();
        for (job, values) in [
            ("a", [9.0, 3.0, 3.0, 1.0, 7.0, 4.0, 2.5, 3.0, 4.0]),
            ("b", [10.0, 1.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0]),
        ] {
            let plain = ["sum", "count", "avg", "min", "max", "last"];
            for (name, value) in plain.iter().zip(values) {
                want.insert(
                    (format!("x:1m_by_job_{name}{{job=\"{job}\"}}"), MINUTE),
                    value,
                );
            }
            for (q, value) in ["0.25", "0.5", "1"].iter().zip(&values[6..]) {
                let key = format!("x:1m_by_job_quantiles{{job=\"{job}\", quantile=\"{q}\"}}");
                want.insert((key, MINUTE), *value);
            }
        }
        assert_eq!(results(&agg.flush(MINUTE)), want);
    }

    #[test]
    fn increase_and_rate_extrapolate_like_prometheus() {
        let mut cfg = rule("c", &["increase", "rate"]);
        cfg.by = names(&["job"]);
        let mut agg = Aggregator::new(&[cfg], 0).unwrap();
        let s = |job: &str, i: &str| series(&[("__name__", "c"), ("i", i), ("job", job)]);
        let push = |agg: &mut Aggregator, labels: &[Label], points: &[(i64, f64)]| {
            let samples: Vec<Sample> = points.iter().map(|&(t, v)| at(t * 1000, v)).collect();
            agg.push(labels, &samples, MINUTE);
        };
        // Window (0s, 60s]. a/1: raw increase 30; 15s to the start is under the threshold
        // 1.1 × 15s, the zero point 45s × 10/30 = 15s is not nearer, 0s to the end.
        // Factor (45 + 15 + 0) / 45: increase 40, rate 40/60.
        push(
            &mut agg,
            &s("a", "1"),
            &[(15, 10.0), (30, 20.0), (45, 30.0), (60, 40.0)],
        );
        // a/2 has a counter reset: raw 6 − 5 + 8 = 9; 10s to the start and 5s to the end are
        // under 16.5s; zero point 45s × 5/9 = 25s. Factor 60/45: increase 12, rate 12/60.
        push(
            &mut agg,
            &s("a", "2"),
            &[(25, 8.0), (10, 5.0), (55, 6.0), (40, 2.0)],
        );
        // b/1 starts inside the window: raw 10, spacing 10s, threshold 11s; 40s to the start
        // becomes 5s; the zero point 20s × 4/10 = 8s is not nearer (Prometheus 2.x clamped to
        // the zero point first and got 14). Factor 25/20: increase 12.5.
        push(&mut agg, &s("b", "1"), &[(40, 4.0), (50, 9.0), (60, 14.0)]);
        // b/2 stops inside the window: raw 10, 5s to the start; 40s to the end is over 16.5s,
        // so 7.5s. Factor 27.5/15: increase 55/3.
        push(&mut agg, &s("b", "2"), &[(5, 100.0), (20, 110.0)]);
        // c/1 starts inside the window near zero: raw 8, 40s to the start becomes 5s, then the
        // zero point 20s × 1/8 = 2.5s is nearer. Factor 22.5/20: increase 9, rate 0.15.
        push(&mut agg, &s("c", "1"), &[(40, 1.0), (50, 5.0), (60, 9.0)]);
        // d has a single sample: no increase, no rate.
        push(&mut agg, &s("d", "1"), &[(30, 1.0)]);

        let out = results(&agg.flush(MINUTE));
        let b = 12.5 + 55.0 / 3.0;
        let want = [
            ("a", "increase", 52.0),
            ("a", "rate", 52.0 / 60.0),
            ("b", "increase", b),
            ("b", "rate", b / 60.0),
            ("c", "increase", 9.0),
            ("c", "rate", 0.15),
        ];
        assert_eq!(out.len(), want.len(), "{out:?}");
        for (job, name, value) in want {
            let got = out[&(format!("c:1m_by_job_{name}{{job=\"{job}\"}}"), MINUTE)];
            assert!(approx(got, value), "{job} {name}: {got} != {value}");
        }
    }

    #[test]
    fn late_and_future_samples_are_counted_and_left_out() {
        let mut agg = Aggregator::new(&[rule("x", &["sum"])], 30_000).unwrap();
        let x = series(&[("__name__", "x")]);
        agg.push(&x, &[at(50_000, 1.0)], 50_000);
        // The window (0s, 60s] closes at 90s.
        assert!(agg.flush(80_000).is_empty());
        agg.push(&x, &[at(55_000, 2.0)], 80_000);
        let out = results(&agg.flush(90_000));
        assert_eq!(
            out,
            BTreeMap::from([(("x:1m_sum{}".to_string(), MINUTE), 2.0)])
        );
        agg.push(&x, &[at(58_000, 5.0), at(95_000, 7.0)], 95_000);
        agg.push(&x, &[at(95_000 + MAX_FUTURE_MS + 1, 1.0)], 95_000);
        let out = results(&agg.flush(150_000));
        assert_eq!(
            out,
            BTreeMap::from([(("x:1m_sum{}".to_string(), 2 * MINUTE), 7.0)])
        );
        let stats = &agg.stats()[0];
        assert_eq!(
            (stats.samples, stats.late, stats.future, stats.emitted),
            (3, 1, 1, 2)
        );
        assert_eq!(
            (stats.rule, stats.selector.as_str(), stats.groups),
            (0, "x", 1)
        );
    }

    #[test]
    fn a_group_that_stops_gets_one_stale_marker_per_output_series() {
        let mut agg = Aggregator::new(&[rule("x", &["sum", "count"])], 0).unwrap();
        let x = series(&[("__name__", "x"), ("i", "1")]);
        // The input's own marker is no sample, so the window after the first is empty.
        agg.push(&x, &[at(30_000, 1.0), at(70_000, stale_nan())], 70_000);
        assert_eq!(agg.flush(MINUTE).len(), 2);
        let out = agg.flush(3 * MINUTE);
        assert_eq!(out.len(), 2);
        for ts in &out {
            assert_eq!(ts.samples.len(), 1);
            assert_eq!(ts.samples[0].timestamp, 2 * MINUTE);
            assert!(is_stale_nan(ts.samples[0].value));
        }
        assert!(agg.flush(10 * MINUTE).is_empty());
        let stats = &agg.stats()[0];
        assert_eq!((stats.samples, stats.emitted, stats.groups), (1, 4, 0));
    }

    #[test]
    fn outputs_end_and_restart_with_their_samples() {
        let mut agg = Aggregator::new(&[rule("x", &["last", "increase"])], 0).unwrap();
        let x = series(&[("__name__", "x")]);
        // Windows 60s: two samples; 120s: one (no increase); 180s: none; 240s: one.
        let samples = [
            at(10_000, 1.0),
            at(30_000, 2.0),
            at(90_000, 3.0),
            at(200_000, 4.0),
        ];
        agg.push(&x, &samples, 200_000);
        let mut out = agg.flush(4 * MINUTE);
        out.extend(agg.flush(5 * MINUTE));
        // Increase at 60s: raw 1 over 20s; 10s to the start stays, 30s to the end is over the
        // threshold 22s and becomes 10s: factor 40/20.
        let want = BTreeMap::from([
            (
                "x:1m_last{}".to_string(),
                vec![
                    (MINUTE, Some(2.0)),
                    (2 * MINUTE, Some(3.0)),
                    (3 * MINUTE, None),
                    (4 * MINUTE, Some(4.0)),
                    (5 * MINUTE, None),
                ],
            ),
            (
                "x:1m_increase{}".to_string(),
                vec![(MINUTE, Some(2.0)), (2 * MINUTE, None)],
            ),
        ]);
        assert_eq!(sequences(&out), want);
    }

    #[test]
    fn raw_series_are_forwarded_unless_a_matching_rule_drops_them() {
        let mut keep = rule(r#"{__name__=~"x|y"}"#, &["sum"]);
        keep.keep_input = true;
        let mut agg = Aggregator::new(&[rule(r#"x{job="a"}"#, &["sum"]), keep], 0).unwrap();
        let one = [at(1000, 1.0)];
        assert!(!agg.push(&series(&[("__name__", "x"), ("job", "a")]), &one, 1000));
        assert!(agg.push(&series(&[("__name__", "x"), ("job", "b")]), &one, 1000));
        assert!(agg.push(&series(&[("__name__", "y"), ("job", "a")]), &one, 1000));
        assert!(agg.push(&series(&[("__name__", "z"), ("job", "a")]), &one, 1000));
        let borrowed = [
            LabelRef {
                name: "__name__",
                value: "x",
            },
            LabelRef {
                name: "job",
                value: "a",
            },
        ];
        assert!(!agg.push(&borrowed, &one, 1000));
        let stats = agg.stats();
        assert_eq!((stats[0].samples, stats[1].samples), (2, 4));
    }

    /// Samples (series, timestamp, value) of four series in the first three windows, on a 5s
    /// grid so that timestamps repeat.
    fn inputs() -> impl Strategy<Value = Vec<(usize, i64, f64)>> {
        prop::collection::vec((0..4usize, 1..=36i64, 0..1000u32), 0..60).prop_map(|v| {
            v.into_iter()
                .map(|(i, t, x)| (i, t * 5000, f64::from(x)))
                .collect()
        })
    }

    fn input_series(i: usize) -> Vec<Label> {
        let job = if i.is_multiple_of(2) { "a" } else { "b" };
        series(&[
            ("__name__", "x"),
            ("instance", &i.to_string()),
            ("job", job),
        ])
    }

    fn one_by_one(input: &[(usize, i64, f64)]) -> Vec<(usize, Vec<Sample>)> {
        input.iter().map(|&(i, t, x)| (i, vec![at(t, x)])).collect()
    }

    fn all_outputs() -> RuleConfig {
        let mut cfg = rule(
            "x",
            &[
                "sum",
                "count",
                "avg",
                "min",
                "max",
                "last",
                "increase",
                "rate",
                "quantiles(0.1, 0.5, 0.9)",
            ],
        );
        cfg.by = names(&["job"]);
        cfg
    }

    /// Pushes in order, then closes every window.
    fn run(cfg: &RuleConfig, pushes: &[(usize, Vec<Sample>)]) -> BTreeMap<(String, i64), f64> {
        let mut agg = Aggregator::new(std::slice::from_ref(cfg), 0).unwrap();
        for (i, samples) in pushes {
            agg.push(&input_series(*i), samples, 180_000);
        }
        results(&agg.flush(1_000_000))
    }

    fn bits(map: &BTreeMap<(String, i64), f64>) -> BTreeMap<(String, i64), u64> {
        map.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect()
    }

    proptest! {
        #[test]
        fn arrival_order_does_not_matter(
            (input, shuffled) in
                inputs().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            let cfg = all_outputs();
            prop_assert_eq!(
                bits(&run(&cfg, &one_by_one(&input))),
                bits(&run(&cfg, &one_by_one(&shuffled)))
            );
        }

        #[test]
        fn sums_add_up_across_a_split_of_the_series(
            input in inputs(),
            split in prop::collection::vec(any::<bool>(), 4),
        ) {
            let mut cfg = rule("x", &["sum", "count", "increase"]);
            cfg.by = names(&["job"]);
            let pushes = one_by_one(&input);
            let (left, right): (Vec<_>, Vec<_>) =
                pushes.iter().cloned().partition(|(i, _)| split[*i]);
            // A staleness marker stands for an absent value.
            let mut added: BTreeMap<(String, i64), f64> = BTreeMap::new();
            for part in [run(&cfg, &left), run(&cfg, &right)] {
                for (key, value) in part {
                    if !is_stale_nan(value) {
                        *added.entry(key).or_default() += value;
                    }
                }
            }
            let whole: BTreeMap<_, _> = run(&cfg, &pushes)
                .into_iter()
                .filter(|(_, v)| !is_stale_nan(*v))
                .collect();
            prop_assert_eq!(added.keys().collect::<Vec<_>>(), whole.keys().collect::<Vec<_>>());
            for (key, value) in &whole {
                prop_assert!(approx(added[key], *value), "{:?}: {} != {}", key, added[key], value);
            }
        }

        #[test]
        fn push_boundaries_do_not_matter(
            input in prop::collection::vec((0..4usize, 1..=36i64, 0..1000u32, any::<bool>()), 0..60)
        ) {
            let mut whole: Vec<(usize, Vec<Sample>)> = Vec::new();
            let mut chunked: Vec<(usize, Vec<Sample>)> = Vec::new();
            for series in 0..4 {
                let mut all = Vec::new();
                for &(_, t, x, cut) in input.iter().filter(|s| s.0 == series) {
                    let sample = at(t * 5000, f64::from(x));
                    all.push(sample);
                    let extend = !cut && chunked.last().is_some_and(|(j, _)| *j == series);
                    if !extend {
                        chunked.push((series, Vec::new()));
                    }
                    if let Some((_, chunk)) = chunked.last_mut() {
                        chunk.push(sample);
                    }
                }
                whole.push((series, all));
            }
            let cfg = all_outputs();
            prop_assert_eq!(bits(&run(&cfg, &whole)), bits(&run(&cfg, &chunked)));
        }
    }
}
