//! PromQL functions over float samples, after `promql/functions.go` of Prometheus 3.x.

use std::collections::HashMap;

use promql_parser::parser::{Call, Expr};
use regex::Regex;
use strata_wire::Label;

use super::eval::{
    Evaluator, check_label_name, format_value, get, kahan_inc, kahan_sum, mean, metric_of,
    quantile, scalar_sample,
};
use super::{Annotations, Metric, QueryError, QueryResult, Sample, Series, Storage, Value};

const METRIC_NAME: &str = "__name__";

/// The window `(start, end]` of a range argument at one step, and the step's evaluation time.
struct Window {
    start: i64,
    end: i64,
    at: i64,
}

/// A range argument evaluated at one step: its series and their window.
fn window<S: Storage + ?Sized>(
    ev: &mut Evaluator<'_, S>,
    e: &Expr,
    ts: i64,
) -> QueryResult<(Vec<Series>, Window)> {
    match e {
        Expr::MatrixSelector(m) => {
            let series = ev.matrix_selector(m, ts)?;
            let end = ev.read_time(&m.vs.at, &m.vs.offset, ts);
            let start = end - m.range.as_millis() as i64;
            Ok((series, Window { start, end, at: ts }))
        }
        Expr::Subquery(sq) => {
            let series = ev.subquery(sq, ts)?;
            let end = ev.read_time(&sq.at, &sq.offset, ts);
            let start = end - sq.range.as_millis() as i64;
            Ok((series, Window { start, end, at: ts }))
        }
        Expr::Paren(p) => window(ev, &p.expr, ts),
        _ => Err(QueryError::bad_data(
            "expected type range vector in call to function",
        )),
    }
}

/// One output sample per input series of range argument `i` of `c`. A matrix selector's
/// windows are read in place; in a range query, for blocks of steps at once when the other
/// arguments are constants.
fn over_time<S: Storage + ?Sized>(
    ev: &mut Evaluator<'_, S>,
    c: &Call,
    i: usize,
    ts: i64,
    keep_name: bool,
    f: impl Fn(&Window, &[(i64, f64)]) -> Option<f64>,
) -> QueryResult<Value> {
    let e = argument(c, i)?;
    let make = |metric: &Metric, drop_name: bool, w: &Window, points: &[(i64, f64)]| {
        f(w, points).map(|v| Sample {
            metric: metric.clone(),
            t: w.at,
            v,
            drop_name: !keep_name || drop_name,
        })
    };
    if let Expr::MatrixSelector(m) = strip_parens(e) {
        let range = m.range.as_millis() as i64;
        let constant_args = c
            .args
            .args
            .iter()
            .enumerate()
            .all(|(j, a)| j == i || is_constant(a));
        if constant_args && let Some(k) = ev.step_index(ts) {
            return Ok(Value::Vector(ev.blocked_windows(
                m,
                k,
                |metric, points, at, end| {
                    let w = Window {
                        start: end - range,
                        end,
                        at,
                    };
                    make(metric, false, &w, points)
                },
            )?));
        }
        let end = ev.read_time(&m.vs.at, &m.vs.offset, ts);
        let w = Window {
            start: end - range,
            end,
            at: ts,
        };
        let mut out = Vec::new();
        ev.for_each_window(m, ts, |metric, points| {
            out.extend(make(metric, false, &w, points))
        })?;
        return Ok(Value::Vector(out));
    }
    let (series, w) = window(ev, e, ts)?;
    Ok(Value::Vector(
        series
            .iter()
            .filter_map(|s| make(&s.metric, s.drop_name, &w, &s.points))
            .collect(),
    ))
}

/// Whether an argument has the same value at every step.
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Paren(p) => is_constant(&p.expr),
        Expr::Unary(u) => is_constant(&u.expr),
        _ => false,
    }
}

/// Applies `f` to every sample of an instant-vector argument, dropping the metric name.
fn each<S: Storage + ?Sized>(
    ev: &mut Evaluator<'_, S>,
    e: &Expr,
    ts: i64,
    f: impl Fn(f64) -> f64,
) -> QueryResult<Value> {
    let v = ev.eval_vector(e, ts)?;
    Ok(Value::Vector(
        v.into_iter()
            .map(|s| Sample {
                v: f(s.v),
                t: ts,
                drop_name: true,
                ..s
            })
            .collect(),
    ))
}

/// Prometheus's `extrapolatedRate` for `rate`, `increase` and `delta`.
fn extrapolated(w: &Window, points: &[(i64, f64)], counter: bool, rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut prev = first_v;
        for &(_, v) in &points[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first_t - w.start) as f64 / 1000.0;
    let mut to_end = (w.end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= (w.end - w.start) as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_change(points: &[(i64, f64)], rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (t1, v1) = points[points.len() - 2];
    let (t2, v2) = points[points.len() - 1];
    let mut d = if rate && v2 < v1 { v2 } else { v2 - v1 };
    if rate {
        let dt = (t2 - t1) as f64 / 1000.0;
        if dt == 0.0 {
            return None;
        }
        d /= dt;
    }
    Some(d)
}

/// Least-squares slope and intercept at `intercept_t` (Prometheus's `linearRegression`).
fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let init = points[0].1;
    let constant = points.iter().all(|&(_, v)| v == init);
    if constant {
        return if init.is_infinite() {
            (f64::NAN, f64::NAN)
        } else {
            (0.0, init)
        };
    }
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &(t, v) in points {
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn variance_over_time(points: &[(i64, f64)]) -> f64 {
    let (mut n, mut m, mut cm, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in points {
        n += 1.0;
        let delta = v - (m + cm);
        (m, cm) = kahan_inc(delta / n, m, cm);
        (aux, caux) = kahan_inc(delta * (v - (m + cm)), aux, caux);
    }
    (aux + caux) / n
}

fn values(points: &[(i64, f64)]) -> Vec<f64> {
    points.iter().map(|&(_, v)| v).collect()
}

fn scalar_arg<S: Storage + ?Sized>(
    ev: &mut Evaluator<'_, S>,
    c: &Call,
    i: usize,
    ts: i64,
) -> QueryResult<f64> {
    ev.eval_scalar(argument(c, i)?, ts)
}

/// Argument `i` of a call.
fn argument(c: &Call, i: usize) -> QueryResult<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| &**b)
        .ok_or_else(|| QueryError::bad_data(format!("missing argument {i} of {}", c.func.name)))
}

fn string_arg<S: Storage + ?Sized>(
    ev: &mut Evaluator<'_, S>,
    c: &Call,
    i: usize,
    ts: i64,
) -> QueryResult<String> {
    match c.args.args.get(i).map(|a| ev.eval(a, ts)).transpose()? {
        Some(Value::String(s)) => Ok(s),
        _ => Err(QueryError::bad_data(format!(
            "expected string argument {i} of {}",
            c.func.name
        ))),
    }
}

/// The labels `absent` gives its output: the equality matchers of the selector.
fn absent_labels(e: &Expr) -> Vec<Label> {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(m) => &m.vs,
        Expr::Paren(p) => return absent_labels(&p.expr),
        _ => return Vec::new(),
    };
    let mut out: Vec<Label> = Vec::new();
    let mut repeated = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) {
            if out.iter().any(|l| l.name == m.name) {
                repeated.push(m.name.clone());
            } else {
                out.push(Label::new(m.name.clone(), m.value.clone()));
            }
        }
    }
    out.retain(|l| !repeated.contains(&l.name));
    out
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn date_part(name: &str, secs: f64) -> f64 {
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let (y, m, d) = civil(days);
    match name {
        "year" => y as f64,
        "month" => f64::from(m),
        "day_of_month" => f64::from(d),
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let before: u32 = (1..m).map(|mm| days_in_month(y, mm)).sum();
            f64::from(before + d)
        }
        "days_in_month" => f64::from(days_in_month(y, m)),
        "hour" => (s.rem_euclid(86_400) / 3600) as f64,
        "minute" => (s.rem_euclid(3600) / 60) as f64,
        _ => f64::NAN,
    }
}

/// Classic histogram buckets: `(upper bound, cumulative count)`.
type Buckets = Vec<(f64, f64)>;

/// A classic histogram at one step: its labels without `le` (the name is kept until the end
/// of evaluation, as in Prometheus 3.x, so two histograms that differ only by name stay
/// apart and then collide), and its buckets.
struct Histogram {
    labels: Vec<Label>,
    buckets: Buckets,
}

/// Groups classic bucket series by their labels without `le`. A series without a valid `le` is
/// left out with Prometheus's warning.
fn histograms(ann: &mut Annotations, v: Vec<Sample>) -> Vec<Histogram> {
    let mut out: Vec<Histogram> = Vec::new();
    // Each series finds its histogram by its labels in a map, not by a scan of those made so
    // far, which was quadratic in the histograms (a fleet's apiserver latency is thousands).
    let mut index: HashMap<Vec<Label>, usize> = HashMap::new();
    for s in v {
        let name = get(&s.metric, METRIC_NAME).unwrap_or("");
        let le = get(&s.metric, "le");
        let Some(Ok(ub)) = le.map(parse_le) else {
            ann.warn(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of {:?} for metric name {name:?}",
                le.unwrap_or("")
            ));
            continue;
        };
        let labels: Vec<Label> = s
            .metric
            .iter()
            .filter(|l| l.name != "le")
            .cloned()
            .collect();
        match index.get(&labels) {
            Some(&i) => out[i].buckets.push((ub, s.v)),
            None => {
                index.insert(labels.clone(), out.len());
                out.push(Histogram {
                    labels,
                    buckets: vec![(ub, s.v)],
                });
            }
        }
    }
    out
}

/// Sorts buckets by upper bound, adds up equal bounds and makes counts monotonic as
/// Prometheus's `ensureMonotonicAndIgnoreSmallDeltas` does: differences within a relative
/// 1e-12 are float noise and evened out silently, larger decreases are removed and reported
/// (the `bool`). `None` without a `+Inf` bucket.
fn normalize(mut buckets: Buckets) -> Option<(Buckets, bool)> {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return None;
    }
    let mut merged: Buckets = Vec::with_capacity(buckets.len());
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut forced = false;
    let mut prev = merged[0].1;
    for b in &mut merged[1..] {
        if b.1 == prev {
            continue;
        }
        if almost_equal(prev, b.1, 1e-12) {
            b.1 = prev;
        } else if b.1 < prev {
            b.1 = prev;
            forced = true;
        } else {
            prev = b.1;
        }
    }
    Some((merged, forced))
}

/// Prometheus's `almost.Equal`: equal, both NaN, or within a relative `epsilon`.
pub(super) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() || a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// `histogram_quantile` for each histogram, and `histogram_quantiles` (one output series per
/// quantile, the quantile in label `label`).
fn quantiles(
    ann: &mut Annotations,
    v: Vec<Sample>,
    ts: i64,
    qs: &[f64],
    label: Option<&str>,
) -> Value {
    for &q in qs {
        ann.check_quantile(q);
    }
    let mut out = Vec::new();
    for h in histograms(ann, v) {
        let normalized = normalize(h.buckets);
        if normalized.as_ref().is_some_and(|n| n.1) {
            ann.info(format!(
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                get(&h.labels, METRIC_NAME).unwrap_or("")
            ));
        }
        for &q in qs {
            let v = match &normalized {
                Some((b, _)) => bucket_quantile(q, b),
                None => f64::NAN,
            };
            let mut labels = h.labels.clone();
            if let Some(label) = label {
                labels.retain(|l| l.name != label);
                labels.push(Label::new(label, quantile_label(q)));
            }
            out.push(Sample {
                metric: metric_of(labels),
                t: ts,
                v,
                drop_name: true,
            });
        }
    }
    Value::Vector(out)
}

/// A quantile as `histogram_quantiles` writes it into its label: always with a fraction
/// (`0.0`, `0.25`, `1.0`).
fn quantile_label(q: f64) -> String {
    if q.is_finite() && q.fract() == 0.0 {
        format!("{q:.1}")
    } else {
        format_value(q)
    }
}

/// Prometheus's `BucketFraction`: the estimated share of observations in `[lower, upper]`.
fn bucket_fraction(lower: f64, upper: f64, buckets: Buckets) -> f64 {
    let Some((buckets, _)) = normalize(buckets) else {
        return f64::NAN;
    };
    let count = buckets[buckets.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
    for (i, &(ub, c)) in buckets.iter().enumerate() {
        let lb = if i > 0 {
            buckets[i - 1].0
        } else if ub > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let interpolate = |v: f64| {
            if lb == f64::NEG_INFINITY {
                c
            } else {
                rank + (c - rank) * (v - lb) / (ub - lb)
            }
        };
        if lower_rank.is_none() && lb >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && lb >= upper {
            upper_rank = Some(rank);
        }
        if lower_rank.is_none() && lb < lower && ub > lower {
            lower_rank = Some(interpolate(lower));
        }
        if upper_rank.is_none() && lb < upper && ub > upper {
            upper_rank = Some(interpolate(upper));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank = c;
    }
    let lower_rank = lower_rank.map_or(count, |r: f64| r.min(count));
    let upper_rank = upper_rank.map_or(count, |r: f64| r.min(count));
    (upper_rank - lower_rank) / count
}

/// Prometheus's `bucketQuantile`.
fn bucket_quantile(q: f64, merged: &Buckets) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged.partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let mut start = 0.0;
    let end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Evaluates a function call at `ts`.
pub(super) fn call<S: Storage + ?Sized>(
    ev: &mut Evaluator<'_, S>,
    c: &Call,
    ts: i64,
) -> QueryResult<Value> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| argument(c, i);
    match name {
        "rate" => over_time(ev, c, 0, ts, false, |w, p| extrapolated(w, p, true, true)),
        "increase" => over_time(ev, c, 0, ts, false, |w, p| extrapolated(w, p, true, false)),
        "delta" => over_time(ev, c, 0, ts, false, |w, p| extrapolated(w, p, false, false)),
        "irate" => over_time(ev, c, 0, ts, false, |_, p| instant_change(p, true)),
        "idelta" => over_time(ev, c, 0, ts, false, |_, p| instant_change(p, false)),
        "deriv" => over_time(ev, c, 0, ts, false, |_, p| {
            (p.len() >= 2).then(|| linear_regression(p, p[0].0).0)
        }),
        "predict_linear" => {
            let d = scalar_arg(ev, c, 1, ts)?;
            over_time(ev, c, 0, ts, false, |w, p| {
                (p.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(p, w.at);
                    intercept + slope * d
                })
            })
        }
        "changes" => over_time(ev, c, 0, ts, false, |_, p| {
            Some(
                p.windows(2)
                    .filter(|w| !(w[0].1 == w[1].1 || (w[0].1.is_nan() && w[1].1.is_nan())))
                    .count() as f64,
            )
        }),
        "resets" => over_time(ev, c, 0, ts, false, |_, p| {
            Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
        }),
        "avg_over_time" => over_time(ev, c, 0, ts, false, |_, p| Some(mean(&values(p)))),
        "sum_over_time" => over_time(ev, c, 0, ts, false, |_, p| Some(kahan_sum(&values(p)))),
        "count_over_time" => over_time(ev, c, 0, ts, false, |_, p| Some(p.len() as f64)),
        "min_over_time" => over_time(ev, c, 0, ts, false, |_, p| {
            p.iter()
                .map(|&(_, v)| v)
                .reduce(|m, v| if m > v || m.is_nan() { v } else { m })
        }),
        "max_over_time" => over_time(ev, c, 0, ts, false, |_, p| {
            p.iter()
                .map(|&(_, v)| v)
                .reduce(|m, v| if m < v || m.is_nan() { v } else { m })
        }),
        "last_over_time" => over_time(ev, c, 0, ts, true, |_, p| p.last().map(|x| x.1)),
        "first_over_time" => over_time(ev, c, 0, ts, true, |_, p| p.first().map(|x| x.1)),
        "present_over_time" => over_time(ev, c, 0, ts, false, |_, _| Some(1.0)),
        "stdvar_over_time" => over_time(ev, c, 0, ts, false, |_, p| Some(variance_over_time(p))),
        "stddev_over_time" => over_time(ev, c, 0, ts, false, |_, p| {
            Some(variance_over_time(p).sqrt())
        }),
        "quantile_over_time" => {
            let q = scalar_arg(ev, c, 0, ts)?;
            ev.annotations.check_quantile(q);
            over_time(ev, c, 1, ts, false, |_, p| Some(quantile(q, values(p))))
        }
        "mad_over_time" => over_time(ev, c, 0, ts, false, |_, p| {
            let median = quantile(0.5, values(p));
            Some(quantile(
                0.5,
                p.iter().map(|&(_, v)| (v - median).abs()).collect(),
            ))
        }),
        "ts_of_last_over_time" => over_time(ev, c, 0, ts, false, |_, p| {
            p.last().map(|x| x.0 as f64 / 1000.0)
        }),
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let max = name == "ts_of_max_over_time";
            over_time(ev, c, 0, ts, false, move |_, p| {
                p.iter()
                    .copied()
                    .reduce(|best, x| {
                        let better = if max { x.1 >= best.1 } else { x.1 <= best.1 };
                        if better || best.1.is_nan() { x } else { best }
                    })
                    .map(|x| x.0 as f64 / 1000.0)
            })
        }
        "ts_of_first_over_time" => over_time(ev, c, 0, ts, false, |_, p| {
            p.first().map(|x| x.0 as f64 / 1000.0)
        }),
        "double_exponential_smoothing" => {
            let sf = scalar_arg(ev, c, 1, ts)?;
            let tf = scalar_arg(ev, c, 2, ts)?;
            if !(sf > 0.0 && sf < 1.0) {
                return Err(QueryError::execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                    format_value(sf)
                )));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(QueryError::execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                    format_value(tf)
                )));
            }
            over_time(ev, c, 0, ts, false, |_, p| {
                if p.len() < 2 {
                    return None;
                }
                let (mut s0, mut s1) = (0.0, p[0].1);
                let mut b = p[1].1 - p[0].1;
                for (i, &(_, v)) in p.iter().enumerate().skip(1) {
                    let x = sf * v;
                    if i > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let y = (1.0 - sf) * (s1 + b);
                    (s0, s1) = (s1, x + y);
                }
                Some(s1)
            })
        }
        "absent_over_time" => {
            let (series, _) = window(ev, arg(0)?, ts)?;
            Ok(Value::Vector(if series.is_empty() {
                vec![absent_sample(arg(0)?, ts)]
            } else {
                Vec::new()
            }))
        }
        "absent" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            Ok(Value::Vector(if v.is_empty() {
                vec![absent_sample(arg(0)?, ts)]
            } else {
                Vec::new()
            }))
        }
        "abs" => each(ev, arg(0)?, ts, f64::abs),
        "ceil" => each(ev, arg(0)?, ts, f64::ceil),
        "floor" => each(ev, arg(0)?, ts, f64::floor),
        "exp" => each(ev, arg(0)?, ts, f64::exp),
        "ln" => each(ev, arg(0)?, ts, f64::ln),
        "log2" => each(ev, arg(0)?, ts, f64::log2),
        "log10" => each(ev, arg(0)?, ts, f64::log10),
        "sqrt" => each(ev, arg(0)?, ts, f64::sqrt),
        "sgn" => each(ev, arg(0)?, ts, |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        "sin" => each(ev, arg(0)?, ts, f64::sin),
        "cos" => each(ev, arg(0)?, ts, f64::cos),
        "tan" => each(ev, arg(0)?, ts, f64::tan),
        "asin" => each(ev, arg(0)?, ts, f64::asin),
        "acos" => each(ev, arg(0)?, ts, f64::acos),
        "atan" => each(ev, arg(0)?, ts, f64::atan),
        "sinh" => each(ev, arg(0)?, ts, f64::sinh),
        "cosh" => each(ev, arg(0)?, ts, f64::cosh),
        "tanh" => each(ev, arg(0)?, ts, f64::tanh),
        "asinh" => each(ev, arg(0)?, ts, f64::asinh),
        "acosh" => each(ev, arg(0)?, ts, f64::acosh),
        "atanh" => each(ev, arg(0)?, ts, f64::atanh),
        "deg" => each(ev, arg(0)?, ts, f64::to_degrees),
        "rad" => each(ev, arg(0)?, ts, f64::to_radians),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "round" => {
            let to = if args.len() > 1 {
                scalar_arg(ev, c, 1, ts)?
            } else {
                1.0
            };
            let inv = 1.0 / to;
            each(ev, arg(0)?, ts, move |v| (v * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let lo = scalar_arg(ev, c, 1, ts)?;
            let hi = scalar_arg(ev, c, 2, ts)?;
            if hi < lo {
                return Ok(Value::Vector(Vec::new()));
            }
            each(ev, arg(0)?, ts, move |v| go_min(go_max(v, lo), hi))
        }
        "clamp_min" => {
            let lo = scalar_arg(ev, c, 1, ts)?;
            each(ev, arg(0)?, ts, move |v| go_max(v, lo))
        }
        "clamp_max" => {
            let hi = scalar_arg(ev, c, 1, ts)?;
            each(ev, arg(0)?, ts, move |v| go_min(v, hi))
        }
        "time" => Ok(Value::Scalar(ts as f64 / 1000.0)),
        "start" | "end" | "step" | "range" => {
            let (start, end, step) = ev.query_range();
            let ms = match name {
                "start" => start,
                "end" => end,
                "step" => step,
                _ => end - start,
            };
            Ok(Value::Scalar(ms as f64 / 1000.0))
        }
        "min_of" | "max_of" => {
            let a = scalar_arg(ev, c, 0, ts)?;
            let b = scalar_arg(ev, c, 1, ts)?;
            Ok(Value::Scalar(if name == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            }))
        }
        "vector" => {
            let v = scalar_arg(ev, c, 0, ts)?;
            Ok(Value::Vector(vec![scalar_sample(ts, v)]))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
        }
        "timestamp" => {
            let selector = matches!(strip_parens(arg(0)?), Expr::VectorSelector(_));
            let v = ev.eval_vector(arg(0)?, ts)?;
            Ok(Value::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        v: if selector { s.t } else { ts } as f64 / 1000.0,
                        t: ts,
                        drop_name: true,
                        ..s
                    })
                    .collect(),
            ))
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "hour" | "minute" => {
            if args.is_empty() {
                return Ok(Value::Vector(vec![scalar_sample(
                    ts,
                    date_part(name, ts as f64 / 1000.0),
                )]));
            }
            each(ev, arg(0)?, ts, |v| {
                if v.is_nan() || v.is_infinite() {
                    v
                } else {
                    date_part(name, v)
                }
            })
        }
        "sort" | "sort_desc" => {
            sort_in_range_query(ev);
            let mut v = ev.eval_vector(arg(0)?, ts)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| {
                use std::cmp::Ordering;
                match (a.v.is_nan(), b.v.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    _ if desc => b.v.partial_cmp(&a.v).unwrap_or(Ordering::Equal),
                    _ => a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal),
                }
            });
            Ok(Value::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            sort_in_range_query(ev);
            let mut names = Vec::new();
            for i in 1..args.len() {
                names.push(string_arg(ev, c, i, ts)?);
            }
            let mut v = ev.eval_vector(arg(0)?, ts)?;
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for n in &names {
                    ord = natural_cmp(
                        get(&a.metric, n).unwrap_or(""),
                        get(&b.metric, n).unwrap_or(""),
                    );
                    if ord.is_ne() {
                        break;
                    }
                }
                if ord.is_eq() {
                    ord = a.metric.cmp(&b.metric);
                }
                if desc { ord.reverse() } else { ord }
            });
            Ok(Value::Vector(v))
        }
        "label_replace" => {
            let dst = string_arg(ev, c, 1, ts)?;
            let repl = string_arg(ev, c, 2, ts)?;
            let src = string_arg(ev, c, 3, ts)?;
            let re = string_arg(ev, c, 4, ts)?;
            let re = Regex::new(&format!("^(?s:{re})$")).map_err(|e| {
                QueryError::bad_data(format!(
                    "invalid regular expression in label_replace(): {re}: {e}"
                ))
            })?;
            if !strata_wire::labels::is_valid_label_name(&dst) {
                return Err(QueryError::execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let v = ev.eval_vector(arg(0)?, ts)?;
            let mut out = Vec::with_capacity(v.len());
            for s in v {
                let value = get(&s.metric, &src).unwrap_or("");
                let Some(caps) = re.captures(value) else {
                    out.push(s);
                    continue;
                };
                let mut res = String::new();
                // Go's `regexp.Expand` and Rust's `Captures::expand` share the template
                // syntax (`$1`, `${1}`, `$name`, `$$`).
                caps.expand(&repl, &mut res);
                out.push(set_label(&s, &dst, &res));
            }
            Ok(Value::Vector(out))
        }
        "label_join" => {
            let dst = string_arg(ev, c, 1, ts)?;
            let sep = string_arg(ev, c, 2, ts)?;
            let mut srcs = Vec::new();
            for i in 3..args.len() {
                srcs.push(string_arg(ev, c, i, ts)?);
            }
            if !strata_wire::labels::is_valid_label_name(&dst) {
                return Err(QueryError::execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let v = ev.eval_vector(arg(0)?, ts)?;
            Ok(Value::Vector(
                v.into_iter()
                    .map(|s| {
                        let joined = srcs
                            .iter()
                            .map(|n| get(&s.metric, n).unwrap_or(""))
                            .collect::<Vec<_>>()
                            .join(&sep);
                        set_label(&s, &dst, &joined)
                    })
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let q = scalar_arg(ev, c, 0, ts)?;
            let v = ev.eval_vector(arg(1)?, ts)?;
            Ok(quantiles(&mut ev.annotations, v, ts, &[q], None))
        }
        "histogram_quantiles" => {
            let label = string_arg(ev, c, 1, ts)?;
            check_label_name(&label)?;
            let mut qs = Vec::new();
            for i in 2..args.len() {
                qs.push(scalar_arg(ev, c, i, ts)?);
            }
            let v = ev.eval_vector(arg(0)?, ts)?;
            Ok(quantiles(&mut ev.annotations, v, ts, &qs, Some(&label)))
        }
        "histogram_fraction" => {
            let lower = scalar_arg(ev, c, 0, ts)?;
            let upper = scalar_arg(ev, c, 1, ts)?;
            let v = ev.eval_vector(arg(2)?, ts)?;
            Ok(Value::Vector(
                histograms(&mut ev.annotations, v)
                    .into_iter()
                    .map(|h| Sample {
                        metric: metric_of(h.labels),
                        t: ts,
                        v: bucket_fraction(lower, upper, h.buckets),
                        drop_name: true,
                    })
                    .collect(),
            ))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => Err(QueryError::bad_data(format!(
            "function {name}() {}; for classic histograms query the _count and _sum series",
            super::NEEDS_NATIVE_HISTOGRAMS
        ))),
        other => Err(QueryError::bad_data(format!(
            "function {other}() is not implemented by strata"
        ))),
    }
}

/// Prometheus's warning that a range query's result is ordered by labels whatever `sort*` does.
fn sort_in_range_query<S: Storage + ?Sized>(ev: &mut Evaluator<'_, S>) {
    if ev.is_range() {
        ev.annotations.warn(
            "PromQL warning: sort is ineffective for range queries since results are always ordered by labels".into(),
        );
    }
}

/// Go's `math.Min`: NaN if either is NaN.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Go's `math.Max`: NaN if either is NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        other => other,
    }
}

fn parse_le(s: &str) -> Result<f64, std::num::ParseFloatError> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse(),
    }
}

fn absent_sample(e: &Expr, ts: i64) -> Sample {
    Sample {
        metric: metric_of(absent_labels(e)),
        t: ts,
        v: 1.0,
        drop_name: false,
    }
}

fn set_label(s: &Sample, name: &str, value: &str) -> Sample {
    let mut labels: Vec<Label> = s
        .metric
        .iter()
        .filter(|l| l.name != name)
        .cloned()
        .collect();
    if !value.is_empty() {
        labels.push(Label::new(name, value));
    }
    Sample {
        metric: metric_of(labels),
        drop_name: s.drop_name && name != METRIC_NAME,
        ..s.clone()
    }
}

/// Natural order: runs of digits compare as numbers (Prometheus 3.x `sort_by_label`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let xn = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let yn = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let xs = std::str::from_utf8(&x[..xn])
                    .unwrap_or("")
                    .trim_start_matches('0');
                let ys = std::str::from_utf8(&y[..yn])
                    .unwrap_or("")
                    .trim_start_matches('0');
                let ord = xs.len().cmp(&ys.len()).then(xs.cmp(ys));
                if ord.is_ne() {
                    return ord;
                }
                x = &x[xn..];
                y = &y[yn..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}
