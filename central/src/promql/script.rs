//! Runs PromQL test scripts in Prometheus's own format (`promql/promqltest/README.md` of the
//! Prometheus repository): `load <interval>` blocks of series in the expanding notation
//! (`0+10x5`, `_`, `stale`), `clear`, and `eval instant at <t> <expr>` /
//! `eval range from <t> to <t> step <d> <expr>` with `expect` lines and expected results.
//! Values compare as Prometheus's test runner compares them (relative epsilon 1e-6, NaN
//! equals NaN).
//!
//! strata stores no native histograms. Samples written in the `{{...}}` notation are not
//! loaded; only their places are kept (and, for `load_with_nhcb`, the places of the histograms
//! with custom buckets Prometheus makes of classic ones). An eval is counted apart as
//! [`Outcome::Native`] when its text uses that notation, when it reads a place where a native
//! histogram sample would be, or when the engine answers that it needs native histograms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_wire::Label;

use super::{Engine, Options, Storage, Value, parse_duration_ms};
use crate::head::SeriesData;
use crate::index::{Matcher, matches_all};

/// Series held in memory for a script: float samples, and where native histogram samples
/// would be.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    series: Vec<SeriesData>,
    histograms: Vec<(Vec<Label>, Vec<i64>)>,
}

impl Storage for MemStorage {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> crate::Result<Vec<SeriesData>> {
        Ok(self
            .series
            .iter()
            .filter(|s| matches_all(matchers, &s.labels))
            .map(|s| SeriesData {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .copied()
                    .filter(|&(t, _)| t >= mint && t <= maxt)
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }
}

/// One eval's view of a script's storage: it notes whether the eval read any native
/// histogram sample.
struct Traced {
    data: Arc<MemStorage>,
    read_histograms: AtomicBool,
}

impl Storage for Traced {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> crate::Result<Vec<SeriesData>> {
        if self.data.histograms.iter().any(|(labels, ts)| {
            matches_all(matchers, labels) && ts.iter().any(|&t| t >= mint && t <= maxt)
        }) {
            self.read_histograms.store(true, Ordering::Relaxed);
        }
        self.data.select(matchers, mint, maxt)
    }
}

/// What became of one `eval`.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Uses the native-histogram notation, or reads native histogram samples; not counted.
    Native,
}

/// The result of one eval command, with its line number in the script.
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub line: usize,
    pub query: String,
    pub outcome: Outcome,
}

/// Runs a whole script; every eval gets a result.
pub fn run(script: &str) -> Vec<EvalResult> {
    let lines: Vec<&str> = script.lines().collect();
    // Shared with each eval's engine; a `load` after evals copies it only if still shared.
    let mut storage = Arc::new(MemStorage::default());
    let mut results = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let block_end = (i + 1..lines.len())
            .find(|&j| {
                let l = lines[j];
                l.trim().is_empty() || !(l.starts_with(' ') || l.starts_with('\t'))
            })
            .unwrap_or(lines.len());
        let body = &lines[i + 1..block_end];
        let cmd = line.split_whitespace().next().unwrap_or("");
        match cmd {
            "clear" => storage = Arc::new(MemStorage::default()),
            "load" | "load_with_nhcb" => {
                if let Err(e) = load(Arc::make_mut(&mut storage), line, body, cmd != "load") {
                    results.push(EvalResult {
                        line: i + 1,
                        query: line.to_string(),
                        outcome: Outcome::Fail(format!("load failed: {e}")),
                    });
                }
            }
            c if c.starts_with("eval") => {
                let text = std::iter::once(line)
                    .chain(body.iter().copied())
                    .collect::<Vec<_>>()
                    .join("\n");
                // `{{` is the histogram notation; `</` and `>/` are the histogram trim operators.
                let native = text.contains("{{") || line.contains("</") || line.contains(">/");
                let (query, outcome) = if native {
                    (line.to_string(), Outcome::Native)
                } else {
                    match eval(&storage, line, body) {
                        Ok((q, o)) => (q, o),
                        Err(e) => (line.to_string(), Outcome::Fail(e)),
                    }
                };
                results.push(EvalResult {
                    line: i + 1,
                    query,
                    outcome,
                });
            }
            _ => {}
        }
        i = block_end;
    }
    results
}

/// Splits `metric{a="b c"} rest` into the series description and the rest.
fn split_series(line: &str) -> (&str, &str) {
    let line = line.trim();
    let mut in_quote = false;
    let mut escaped = false;
    let mut depth = 0;
    for (i, c) in line.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (&line[..=i], line[i + 1..].trim());
                }
            }
            c if c.is_whitespace() && depth == 0 => {
                return (&line[..i], line[i..].trim());
            }
            _ => {}
        }
    }
    (line, "")
}

/// The labels of a series description such as `up{job="a"}` or `{__name__="up"}`.
fn parse_labels(desc: &str) -> Result<Vec<Label>, String> {
    let expr = promql_parser::parser::parse(desc).map_err(|e| format!("{desc}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("{desc}: not a series description"));
    };
    let mut labels = Vec::new();
    if let Some(n) = vs.name {
        labels.push(Label::new("__name__", n));
    }
    for m in vs.matchers.matchers {
        labels.push(Label::new(m.name, m.value));
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(labels)
}

fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => {
            if let Some(hex) = s.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16)
                    .map(|v| v as f64)
                    .map_err(|_| format!("bad number {s:?}"));
            }
            s.parse().map_err(|_| format!("bad number {s:?}"))
        }
    }
}

/// One step of a series in the expanding notation.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// `_`: no sample at this step.
    Empty,
    Float(f64),
    /// A native histogram sample (`{{...}}`); strata stores none, so only its place is kept.
    Histogram,
}

/// Splits a value list on whitespace outside `{{...}}`.
fn value_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if c.is_whitespace() && depth == 0 => {
                if let Some(s) = start.take() {
                    out.push(&text[s..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// Expands the value notation into one slot per step.
fn expand_values(text: &str) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    for tok in value_tokens(text) {
        if let Some(end) = tok.rfind("}}") {
            // `{{...}}`, `{{...}}x<n>` or `{{...}}+{{...}}x<n>`.
            let n = match tok[end + 2..].strip_prefix('x') {
                Some(n) => {
                    n.parse::<usize>()
                        .map_err(|_| format!("bad count in {tok:?}"))?
                        + 1
                }
                None => 1,
            };
            out.extend(std::iter::repeat_n(Slot::Histogram, n));
            continue;
        }
        if tok == "_" {
            out.push(Slot::Empty);
            continue;
        }
        if tok == "stale" {
            out.push(Slot::Float(strata_wire::stale_nan()));
            continue;
        }
        if let Some((head, n)) = tok.rsplit_once('x')
            && let Ok(n) = n.parse::<usize>()
        {
            if head == "_" {
                out.extend(std::iter::repeat_n(Slot::Empty, n));
                continue;
            }
            if head == "stale" {
                out.extend(std::iter::repeat_n(
                    Slot::Float(strata_wire::stale_nan()),
                    n,
                ));
                continue;
            }
            // `a+bxn` / `a-bxn`: n+1 values; `axn`: a, n+1 times.
            let split = head
                .char_indices()
                .skip(1)
                .find(|&(i, c)| (c == '+' || c == '-') && !head[..i].ends_with(['e', 'E']))
                .map(|(i, _)| i);
            let (start, inc) = match split {
                Some(i) => (parse_float(&head[..i])?, parse_float(&head[i..])?),
                None => (parse_float(head)?, 0.0),
            };
            for k in 0..=n {
                out.push(Slot::Float(start + inc * k as f64));
            }
            continue;
        }
        out.push(Slot::Float(parse_float(tok)?));
    }
    Ok(out)
}

/// Loads a `load <interval>` block. With `nhcb` (`load_with_nhcb`), every classic `_bucket`
/// series also stands for the native histogram with custom buckets that Prometheus would make
/// of it under the name without `_bucket`.
fn load(storage: &mut MemStorage, line: &str, body: &[&str], nhcb: bool) -> Result<(), String> {
    let interval = line
        .split_whitespace()
        .nth(1)
        .ok_or("load needs an interval")?;
    let step = parse_duration_ms(interval)?;
    for l in body {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (desc, values) = split_series(l);
        if desc.ends_with("@st") || values.starts_with("@st") {
            // Start timestamps (`series@st <offsets>`): strata does not store them.
            continue;
        }
        let labels = parse_labels(desc)?;
        let slots = expand_values(values)?;
        let at = |i: usize| i as i64 * step;
        let samples: Vec<(i64, f64)> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Slot::Float(v) => Some((at(i), *v)),
                _ => None,
            })
            .collect();
        let histograms: Vec<i64> = slots
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Slot::Histogram))
            .map(|(i, _)| at(i))
            .collect();
        if !histograms.is_empty() {
            storage.histograms.push((labels.clone(), histograms));
        }
        if nhcb && let Some(native) = nhcb_labels(&labels) {
            storage
                .histograms
                .push((native, samples.iter().map(|s| s.0).collect()));
        }
        if samples.is_empty() {
            continue;
        }
        match storage.series.iter_mut().find(|s| s.labels == labels) {
            // A later line for the same series wins at equal timestamps.
            Some(s) => {
                let mut merged = samples;
                merged.append(&mut s.samples);
                merged.sort_by_key(|x| x.0);
                merged.dedup_by_key(|x| x.0);
                s.samples = merged;
            }
            None => storage.series.push(SeriesData { labels, samples }),
        }
    }
    Ok(())
}

/// The labels of the native histogram Prometheus converts a classic `_bucket` series into.
fn nhcb_labels(labels: &[Label]) -> Option<Vec<Label>> {
    let name = labels.iter().find(|l| l.name == "__name__")?;
    let base = name.value.strip_suffix("_bucket")?;
    labels.iter().find(|l| l.name == "le")?;
    Some(
        labels
            .iter()
            .filter(|l| l.name != "le")
            .map(|l| {
                if l.name == "__name__" {
                    Label::new("__name__", base)
                } else {
                    l.clone()
                }
            })
            .collect(),
    )
}

/// Prometheus's `almost.Equal` with the test runner's epsilon.
fn almost_equal(a: f64, b: f64) -> bool {
    super::functions::almost_equal(a, b, 1e-6)
}

#[derive(Default)]
struct Expectations {
    fail: Option<Option<String>>,
    fail_regex: Option<String>,
    ordered: bool,
    warn: Option<bool>,
    info: Option<bool>,
    string: Option<String>,
    /// `expect range vector from <t> to <t> step <d>`: an instant query's range-vector result.
    range: Option<(i64, i64, i64)>,
    series: Vec<(Vec<Label>, Vec<Option<f64>>)>,
    scalar: Option<f64>,
}

fn expectations(head: &str, body: &[&str]) -> Result<Expectations, String> {
    let mut e = Expectations::default();
    match head {
        "eval_fail" => e.fail = Some(None),
        "eval_ordered" => e.ordered = true,
        "eval_warn" => e.warn = Some(true),
        "eval_info" => e.info = Some(true),
        _ => {}
    }
    for l in body {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(rest) = l.strip_prefix("expect ") {
            let rest = rest.trim();
            if let Some(f) = rest.strip_prefix("fail") {
                let f = f.trim();
                if let Some(msg) = f.strip_prefix("msg:") {
                    e.fail = Some(Some(msg.trim().to_string()));
                } else if let Some(re) = f.strip_prefix("regex:") {
                    e.fail = Some(None);
                    e.fail_regex = Some(re.trim().to_string());
                } else {
                    e.fail = Some(None);
                }
            } else if rest == "ordered" {
                e.ordered = true;
            } else if rest.starts_with("warn") {
                e.warn = Some(true);
            } else if rest == "no_warn" {
                e.warn = Some(false);
            } else if rest.starts_with("info") {
                e.info = Some(true);
            } else if rest == "no_info" {
                e.info = Some(false);
            } else if let Some(r) = rest.strip_prefix("range vector") {
                let w: Vec<&str> = r.split_whitespace().collect();
                if w.len() != 6 || w[0] != "from" || w[2] != "to" || w[4] != "step" {
                    return Err(format!("bad expectation {l:?}"));
                }
                e.range = Some((
                    parse_duration_ms(w[1])?,
                    parse_duration_ms(w[3])?,
                    parse_duration_ms(w[5])?,
                ));
            } else if let Some(s) = rest.strip_prefix("string") {
                e.string = Some(s.trim().trim_matches(['"', '`']).to_string());
            } else {
                return Err(format!("unsupported expectation {l:?}"));
            }
            continue;
        }
        if l.starts_with('{') || l.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            if let Ok(v) = parse_float(l) {
                e.scalar = Some(v);
                continue;
            }
            let (desc, values) = split_series(l);
            let labels = if desc == "{}" {
                Vec::new()
            } else {
                parse_labels(desc)?
            };
            let values = expand_values(values)?
                .into_iter()
                .map(|v| match v {
                    Slot::Empty => Ok(None),
                    Slot::Float(v) => Ok(Some(v)),
                    Slot::Histogram => Err("expected histogram samples".to_string()),
                })
                .collect::<Result<_, _>>()?;
            e.series.push((labels, values));
        } else {
            e.scalar = Some(parse_float(l)?);
        }
    }
    Ok(e)
}

fn eval(data: &Arc<MemStorage>, line: &str, body: &[&str]) -> Result<(String, Outcome), String> {
    let mut words = line.split_whitespace();
    let head = words.next().unwrap_or("");
    let kind = words.next().unwrap_or("");
    let rest: Vec<&str> = words.collect();
    let exp = expectations(head, body)?;
    let storage = Arc::new(Traced {
        data: data.clone(),
        read_histograms: AtomicBool::new(false),
    });
    let engine = Engine::new(
        storage.clone(),
        Options {
            timeout: Duration::from_secs(60),
            ..Options::default()
        },
    );
    let (query, result, steps) = match kind {
        "instant" => {
            // instant at <t> <expr>
            if rest.first() != Some(&"at") || rest.len() < 3 {
                return Err(format!("bad eval line {line:?}"));
            }
            let t = parse_duration_ms(rest[1])?;
            let q = rest[2..].join(" ");
            let r = engine.instant(&q, t);
            let at = match exp.range {
                Some((from, to, step)) => steps(from, to, step),
                None => vec![t],
            };
            (q, r, at)
        }
        "range" => {
            // range from <t> to <t> step <d> <expr>
            if rest.len() < 7 || rest[0] != "from" || rest[2] != "to" || rest[4] != "step" {
                return Err(format!("bad eval line {line:?}"));
            }
            let (start, end, step) = (
                parse_duration_ms(rest[1])?,
                parse_duration_ms(rest[3])?,
                parse_duration_ms(rest[5])?,
            );
            let q = rest[6..].join(" ");
            let r = engine.range(&q, start, end, step);
            (q, r, steps(start, end, step))
        }
        _ => return Err(format!("bad eval line {line:?}")),
    };
    let needs_native =
        matches!(&result, Err(e) if e.message.contains(super::NEEDS_NATIVE_HISTOGRAMS));
    if needs_native || storage.read_histograms.load(Ordering::Relaxed) {
        return Ok((query, Outcome::Native));
    }
    let outcome = check(&exp, result, &steps);
    Ok((query, outcome))
}

/// The timestamps from `start` to `end` by `step`.
fn steps(start: i64, end: i64, step: i64) -> Vec<i64> {
    (start..=end).step_by(step.max(1) as usize).collect()
}

fn check(
    exp: &Expectations,
    result: super::QueryResult<(Value, super::Annotations)>,
    steps: &[i64],
) -> Outcome {
    let (value, ann) = match (result, &exp.fail) {
        (Err(e), Some(msg)) => {
            if let Some(m) = msg
                && *m != e.message
            {
                return Outcome::Fail(format!("error {:?}, expected {m:?}", e.message));
            }
            if let Some(re) = &exp.fail_regex
                && !regex::Regex::new(re).is_ok_and(|r| r.is_match(&e.message))
            {
                return Outcome::Fail(format!("error {:?} does not match {re:?}", e.message));
            }
            return Outcome::Pass;
        }
        (Err(e), None) => return Outcome::Fail(format!("unexpected error: {}", e.message)),
        (Ok(_), Some(_)) => return Outcome::Fail("expected an error, got a result".into()),
        (Ok(v), None) => v,
    };
    if let Some(w) = exp.warn
        && w == ann.warnings.is_empty()
    {
        return Outcome::Fail(format!("warnings {:?}, expected some: {w}", ann.warnings));
    }
    if let Some(i) = exp.info
        && i == ann.infos.is_empty()
    {
        return Outcome::Fail(format!("infos {:?}, expected some: {i}", ann.infos));
    }
    match value {
        Value::Scalar(v) => match exp.scalar {
            Some(want) if almost_equal(v, want) => Outcome::Pass,
            Some(want) => Outcome::Fail(format!("scalar {v}, expected {want}")),
            None => Outcome::Fail(format!("scalar {v}, expected a vector")),
        },
        Value::String(s) => match &exp.string {
            Some(want) if *want == s => Outcome::Pass,
            _ => Outcome::Fail(format!("string {s:?}")),
        },
        Value::Vector(v) => {
            if exp.scalar.is_some() {
                return Outcome::Fail("vector, expected a scalar".into());
            }
            if v.len() != exp.series.len() {
                return Outcome::Fail(format!(
                    "{} series, expected {}: got {:?}",
                    v.len(),
                    exp.series.len(),
                    v.iter()
                        .map(|s| format!("{} {}", super::eval::render(&s.metric), s.v))
                        .collect::<Vec<_>>()
                ));
            }
            for (i, s) in v.iter().enumerate() {
                let found = if exp.ordered {
                    exp.series.get(i).filter(|e| *e.0 == *s.metric)
                } else {
                    exp.series.iter().find(|e| *e.0 == *s.metric)
                };
                let Some((_, values)) = found else {
                    return Outcome::Fail(format!(
                        "unexpected series {}",
                        super::eval::render(&s.metric)
                    ));
                };
                match values.first().copied().flatten() {
                    Some(want) if almost_equal(s.v, want) => {}
                    want => {
                        return Outcome::Fail(format!(
                            "{}: {}, expected {want:?}",
                            super::eval::render(&s.metric),
                            s.v
                        ));
                    }
                }
            }
            Outcome::Pass
        }
        Value::Matrix(m) => {
            let expected: Vec<_> = exp
                .series
                .iter()
                .filter(|(_, vals)| vals.iter().any(Option::is_some))
                .collect();
            if m.len() != expected.len() {
                return Outcome::Fail(format!("{} series, expected {}", m.len(), expected.len()));
            }
            for s in &m {
                let Some((_, values)) = expected.iter().find(|e| *e.0 == *s.metric) else {
                    return Outcome::Fail(format!(
                        "unexpected series {}",
                        super::eval::render(&s.metric)
                    ));
                };
                let want: Vec<(i64, f64)> = values
                    .iter()
                    .zip(steps)
                    .filter_map(|(v, &t)| v.map(|v| (t, v)))
                    .collect();
                if want.len() != s.points.len()
                    || want
                        .iter()
                        .zip(&s.points)
                        .any(|(a, b)| a.0 != b.0 || !almost_equal(a.1, b.1))
                {
                    return Outcome::Fail(format!(
                        "{}: points {:?}, expected {want:?}",
                        super::eval::render(&s.metric),
                        s.points
                    ));
                }
            }
            Outcome::Pass
        }
    }
}
