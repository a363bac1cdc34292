//! Evaluation of a parsed expression at one or many steps (see the module docs of
//! [`crate::promql`]). Binary operators, vector matching and aggregations follow
//! `promql/engine.go` of Prometheus 3.x, including its Kahan-compensated `sum` and `avg`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_DIV, T_EQLC, T_GROUP, T_GTE,
    T_GTR, T_LAND, T_LIMIT_RATIO, T_LIMITK, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD,
    T_MUL, T_NEQ, T_POW, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, MatrixSelector, Offset,
    SubqueryExpr, VectorMatchCardinality, VectorSelector,
};
use strata_wire::{Label, is_stale_nan};
use xxhash_rust::xxh3::{Xxh3Default, Xxh3DefaultBuilder};

use super::{
    Annotations, Metric, Options, QueryError, QueryResult, Sample, Series, Storage, Value,
};
use crate::index::{MatchOp, Matcher};

const METRIC_NAME: &str = "__name__";

/// The series of one selector, loaded once per query.
struct Loaded {
    metric: Metric,
    /// Every sample, staleness markers included: an instant selector stops at a marker.
    samples: Vec<(i64, f64)>,
    /// The samples without staleness markers, which range selectors skip; `None` when there
    /// are no markers.
    unstale: Option<Vec<(i64, f64)>>,
}

impl Loaded {
    fn new(metric: Metric, samples: Vec<(i64, f64)>) -> Self {
        let unstale = samples.iter().any(|&(_, v)| is_stale_nan(v)).then(|| {
            samples
                .iter()
                .copied()
                .filter(|&(_, v)| !is_stale_nan(v))
                .collect()
        });
        Self {
            metric,
            samples,
            unstale,
        }
    }

    /// The samples range selectors see: all but staleness markers.
    fn points(&self) -> &[(i64, f64)] {
        self.unstale.as_deref().unwrap_or(&self.samples)
    }

    /// The samples a range selector sees in `(lo, hi]`.
    fn window(&self, lo: i64, hi: i64) -> &[(i64, f64)] {
        let p = self.points();
        let a = p.partition_point(|&(t, _)| t <= lo);
        let b = a + p[a..].partition_point(|&(t, _)| t <= hi);
        &p[a..b]
    }
}

/// Steps of a range query that selectors evaluate together, series by series: reading each
/// series' samples for many steps in one pass keeps them in cache, where going through every
/// series at every step would not.
const STEP_BLOCK: usize = 64;

/// The outputs of one selector (or of a function of a range selector) for a block of
/// consecutive steps of a range query; each step's output is taken once.
struct StepBlock {
    first: usize,
    steps: Vec<Option<Vec<Sample>>>,
    /// Where each series' reading stopped, for the next block to go on from.
    cursors: Vec<usize>,
}

/// Input series remembered per aggregation; past this many, the memory starts over.
const GROUP_CACHE_SERIES: usize = 1 << 20;

/// The group keys of one aggregation, kept across the steps of a range query.
#[derive(Default)]
struct GroupCache {
    /// Distinct group keys (the grouping labels of a series, sorted) seen so far.
    keys: Vec<Metric>,
    /// Indexes into `keys` by a hash of the key.
    by_hash: HashMap<u64, Vec<usize>>,
    /// The key of each input series seen so far, by the address of its shared labels; the
    /// labels are held here so that the address cannot be reused by other labels.
    by_metric: HashMap<usize, (Metric, usize), BuildHasherDefault<AddrHasher>>,
    /// The address and key of each input series of the last step, in its order, and of the
    /// step being read so far. The steps of a range query list their series in the same
    /// order, but for a series without a sample at some step: each series is looked for a
    /// few places after the one found before it, in memory read in order, and only then in
    /// `by_metric`, where each lookup of a large aggregation misses the cache. `by_metric`
    /// holds every address listed here, so none of them can be reused by other labels.
    last_step: Vec<(usize, usize)>,
    this_step: Vec<(usize, usize)>,
    /// Where in `last_step` the next series is looked for.
    cursor: usize,
}

/// How many places after the last one found a series is looked for in the step before.
const GROUP_CACHE_LOOKAHEAD: usize = 4;

/// Hashes an address with one multiplication, which spreads it over the high bits the hash
/// table looks at.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl GroupCache {
    /// The index in `keys` of the group of `m`, the next input series of a step, whose
    /// labels `member` selects.
    fn key_of(&mut self, m: &Metric, member: impl Fn(&Label) -> bool) -> usize {
        let addr = Arc::as_ptr(m) as *const Label as usize;
        let ahead = self
            .last_step
            .iter()
            .skip(self.cursor)
            .take(GROUP_CACHE_LOOKAHEAD);
        if let Some((k, &(_, id))) = ahead.enumerate().find(|(_, seen)| seen.0 == addr) {
            self.cursor += k + 1;
            self.this_step.push((addr, id));
            return id;
        }
        let id = self.key_by_metric(addr, m, member);
        self.this_step.push((addr, id));
        id
    }

    /// Ends a step: the next one is read against this one's order.
    fn end_step(&mut self) {
        std::mem::swap(&mut self.last_step, &mut self.this_step);
        self.this_step.clear();
        self.cursor = 0;
    }

    fn key_by_metric(&mut self, addr: usize, m: &Metric, member: impl Fn(&Label) -> bool) -> usize {
        if let Some(&(_, id)) = self.by_metric.get(&addr) {
            return id;
        }
        if self.by_metric.len() >= GROUP_CACHE_SERIES {
            // The addresses listed by step are held only by `by_metric`.
            self.by_metric.clear();
            self.last_step.clear();
            self.this_step.clear();
            self.cursor = 0;
        }
        let id = self.key_by_labels(m, member);
        self.by_metric.insert(addr, (m.clone(), id));
        id
    }

    /// The index in `keys` of the group of `m`, whose labels `member` selects, found by the
    /// group's labels (added when new).
    fn key_by_labels(&mut self, m: &Metric, member: impl Fn(&Label) -> bool) -> usize {
        let mut h = Xxh3Default::new();
        for l in m.iter().filter(|l| member(l)) {
            h.update(l.name.as_bytes());
            h.update(&[0xff]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
        let candidates = self.by_hash.entry(h.digest()).or_default();
        let found = candidates
            .iter()
            .copied()
            .find(|&k| m.iter().filter(|l| member(l)).eq(self.keys[k].iter()));
        found.unwrap_or_else(|| {
            self.keys
                .push(m.iter().filter(|l| member(l)).cloned().collect());
            candidates.push(self.keys.len() - 1);
            self.keys.len() - 1
        })
    }
}

/// Gathers the instant vectors of successive steps into series, in order of appearance.
#[derive(Default)]
struct Collector {
    index: HashMap<Metric, usize, Xxh3DefaultBuilder>,
    series: Vec<Series>,
}

impl Collector {
    fn push(&mut self, t: i64, samples: Vec<Sample>) {
        for s in samples {
            let i = *self.index.entry(s.metric.clone()).or_insert_with(|| {
                self.series.push(Series {
                    metric: s.metric.clone(),
                    points: Vec::new(),
                    drop_name: s.drop_name,
                });
                self.series.len() - 1
            });
            self.series[i].points.push((t, s.v));
        }
    }

    fn finish(self) -> Vec<Series> {
        self.series
    }
}

/// A scalar as the one sample of an unlabelled vector.
pub(super) fn scalar_sample(t: i64, v: f64) -> Sample {
    Sample {
        metric: Arc::from(Vec::new()),
        t,
        v,
        drop_name: false,
    }
}

/// Evaluates one query.
pub struct Evaluator<'a, S: Storage + ?Sized> {
    storage: &'a S,
    opts: &'a Options,
    start: i64,
    end: i64,
    step: i64,
    deadline: Instant,
    /// Time range each selector is read over, by the selector's address in the AST.
    ranges: HashMap<usize, (i64, i64)>,
    loaded: HashMap<usize, Arc<Vec<Loaded>>>,
    samples_loaded: usize,
    /// Precomputed steps of selectors, by the selector's address in the AST.
    blocks: HashMap<usize, StepBlock>,
    /// How many subqueries are being evaluated: their steps are not the query's.
    subquery_depth: usize,
    /// Group keys of aggregations, by the aggregation's address in the AST.
    group_cache: HashMap<usize, GroupCache>,
    pub(super) annotations: Annotations,
}

fn ms(d: &std::time::Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
        None => 0,
    }
}

/// The time an `@` modifier fixes, with `start()` and `end()` those of the query.
fn at_time(at: &Option<AtModifier>, start: i64, end: i64) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(start),
        Some(AtModifier::End) => Some(end),
        Some(AtModifier::At(t)) => Some(system_ms(t)),
    }
}

fn system_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Sorted labels from pairs.
pub(super) fn metric_of(mut labels: Vec<Label>) -> Metric {
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels.into()
}

pub(super) fn get<'m>(m: &'m [Label], name: &str) -> Option<&'m str> {
    m.iter().find(|l| l.name == name).map(|l| l.value.as_str())
}

/// The labels without the metric name, and without the `__type__` and `__unit__` labels that
/// describe it (Prometheus's type-and-unit labels go wherever the name goes).
pub(super) fn without_name(m: &[Label]) -> Metric {
    m.iter()
        .filter(|l| !matches!(l.name.as_str(), METRIC_NAME | "__type__" | "__unit__"))
        .cloned()
        .collect()
}

/// Whether label `name` takes part in a grouping by `names`: `by`/`on` when `include`,
/// otherwise `without`/`ignoring`, which always leave out `__name__`.
fn grouped(name: &str, include: bool, names: &[String]) -> bool {
    let listed = names.iter().any(|n| n == name);
    if include {
        listed
    } else {
        !listed && name != METRIC_NAME
    }
}

/// The key of the labels taking part in a grouping.
fn signature(m: &[Label], on: bool, names: &[String]) -> String {
    let mut key = String::new();
    for l in m.iter().filter(|l| grouped(&l.name, on, names)) {
        key.push_str(&l.name);
        key.push('\u{ff}');
        key.push_str(&l.value);
        key.push('\u{fe}');
    }
    key
}

/// Labels as Prometheus's `labels.Labels.String()` writes them in error messages:
/// `{__name__="up", job="a"}`.
fn go_string(m: &[Label]) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

pub(super) fn render(m: &[Label]) -> String {
    strata_wire::labels::render(m)
}

impl<S: Storage + ?Sized> std::fmt::Debug for Evaluator<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Storage + ?Sized> Evaluator<'a, S> {
    pub fn new(
        storage: &'a S,
        opts: &'a Options,
        start: i64,
        end: i64,
        step: i64,
        deadline: Instant,
    ) -> Self {
        Self {
            storage,
            opts,
            start,
            end,
            step,
            deadline,
            ranges: HashMap::new(),
            loaded: HashMap::new(),
            samples_loaded: 0,
            blocks: HashMap::new(),
            subquery_depth: 0,
            group_cache: HashMap::new(),
            annotations: Annotations::default(),
        }
    }

    /// The query's start, end and step in milliseconds.
    pub(super) fn query_range(&self) -> (i64, i64, i64) {
        (self.start, self.end, self.step)
    }

    /// The time a selector or subquery with these modifiers is read at when the expression
    /// is evaluated at `ts`: its `@` time (or `ts`) minus its offset.
    pub(super) fn read_time(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        ts: i64,
    ) -> i64 {
        at_time(at, self.start, self.end).unwrap_or(ts) - offset_ms(offset)
    }

    /// Records the time range every selector under `e` is read over when `e` is evaluated at
    /// times in `[lo, hi]` (Prometheus's `FindMinMaxTime`).
    fn plan(&mut self, e: &Expr, lo: i64, hi: i64) {
        let ranges = &mut self.ranges;
        let mut note = |key: usize, a: i64, b: i64| {
            let r = ranges.entry(key).or_insert((a, b));
            r.0 = r.0.min(a);
            r.1 = r.1.max(b);
        };
        let (start, end) = (self.start, self.end);
        let at_ms = |at: &Option<AtModifier>| at_time(at, start, end);
        match e {
            Expr::VectorSelector(vs) => {
                let (lo, hi) = at_ms(&vs.at).map_or((lo, hi), |t| (t, t));
                let off = offset_ms(&vs.offset);
                note(
                    vs as *const _ as usize,
                    lo - off - self.opts.lookback_ms,
                    hi - off,
                );
            }
            Expr::MatrixSelector(m) => {
                let (lo, hi) = at_ms(&m.vs.at).map_or((lo, hi), |t| (t, t));
                let off = offset_ms(&m.vs.offset);
                note(
                    &m.vs as *const _ as usize,
                    lo - off - ms(&m.range),
                    hi - off,
                );
            }
            Expr::Subquery(sq) => {
                let (lo, hi) = at_ms(&sq.at).map_or((lo, hi), |t| (t, t));
                let off = offset_ms(&sq.offset);
                self.plan(&sq.expr, lo - off - ms(&sq.range), hi - off);
            }
            Expr::Aggregate(a) => {
                self.plan(&a.expr, lo, hi);
                if let Some(p) = &a.param {
                    self.plan(p, lo, hi);
                }
            }
            Expr::Unary(u) => self.plan(&u.expr, lo, hi),
            Expr::Binary(b) => {
                self.plan(&b.lhs, lo, hi);
                self.plan(&b.rhs, lo, hi);
            }
            Expr::Paren(p) => self.plan(&p.expr, lo, hi),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, lo, hi);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// Evaluates an instant query at the query's start.
    pub fn instant(&mut self, e: &Expr) -> QueryResult<(Value, Annotations)> {
        self.plan(e, self.start, self.end);
        let v = match self.eval(e, self.start)? {
            Value::Vector(v) => Value::Vector(finish_vector(v)?),
            Value::Matrix(m) => Value::Matrix(finish_matrix(m)?),
            other => other,
        };
        Ok((v, std::mem::take(&mut self.annotations)))
    }

    /// Evaluates a range query: every step from start to end, collected into series.
    pub fn range(&mut self, e: &Expr) -> QueryResult<(Value, Annotations)> {
        self.plan(e, self.start, self.end);
        let mut series = Collector::default();
        let mut ts = self.start;
        while ts <= self.end {
            let samples = match self.eval(e, ts)? {
                Value::Scalar(v) => vec![scalar_sample(ts, v)],
                Value::Vector(v) => finish_vector(v)?,
                Value::Matrix(_) | Value::String(_) => {
                    return Err(QueryError::bad_data(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        expr_type(e)
                    )));
                }
            };
            series.push(ts, samples);
            if self.step <= 0 {
                break;
            }
            ts += self.step;
        }
        let mut out = series.finish();
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok((Value::Matrix(out), std::mem::take(&mut self.annotations)))
    }

    /// Whether this evaluation is a range query (several steps), not an instant one.
    pub(super) fn is_range(&self) -> bool {
        self.step > 0
    }

    fn check_deadline(&self) -> QueryResult<()> {
        if self.opts.canceled.load(Ordering::Relaxed) {
            return Err(QueryError {
                kind: super::ErrorKind::Canceled,
                message: "query was canceled in query execution".into(),
            });
        }
        if Instant::now() > self.deadline {
            return Err(QueryError {
                kind: super::ErrorKind::Timeout,
                message: "query timed out in query execution".into(),
            });
        }
        Ok(())
    }

    fn load(&mut self, vs: &VectorSelector) -> QueryResult<Arc<Vec<Loaded>>> {
        let key = vs as *const _ as usize;
        if let Some(l) = self.loaded.get(&key) {
            return Ok(l.clone());
        }
        self.check_deadline()?;
        let (mint, maxt) = self
            .ranges
            .get(&key)
            .copied()
            .unwrap_or((i64::MIN, i64::MAX));
        let mut matchers = Vec::new();
        if let Some(name) = &vs.name {
            matchers.push(
                Matcher::new(MatchOp::Equal, METRIC_NAME, name)
                    .map_err(|e| QueryError::bad_data(e.to_string()))?,
            );
        }
        for m in &vs.matchers.matchers {
            matchers.push(convert(m)?);
        }
        let mut found = Vec::new();
        let groups: Vec<Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
            vec![matchers]
        } else {
            vs.matchers
                .or_matchers
                .iter()
                .map(|g| {
                    let mut all = matchers.clone();
                    for m in g {
                        all.push(convert(m)?);
                    }
                    Ok(all)
                })
                .collect::<QueryResult<_>>()?
        };
        // Series matched by several `or` groups count once; one group has nothing to remember.
        let several = groups.len() > 1;
        let mut seen = std::collections::HashSet::new();
        for g in groups {
            let series = self
                .storage
                .select(&g, mint, maxt)
                .map_err(|e| QueryError {
                    kind: super::ErrorKind::Internal,
                    message: e.to_string(),
                })?;
            for s in series {
                if !several || seen.insert(s.labels.clone()) {
                    self.samples_loaded += s.samples.len();
                    found.push(Loaded::new(metric_of(s.labels), s.samples));
                }
            }
        }
        if self.samples_loaded > self.opts.max_samples {
            return Err(QueryError::execution(strata_wire::api::TOO_MANY_SAMPLES));
        }
        let found = Arc::new(found);
        self.loaded.insert(key, found.clone());
        Ok(found)
    }

    /// Which step of the range query `ts` is, unless this is an instant query or a subquery
    /// is being evaluated.
    pub(super) fn step_index(&self, ts: i64) -> Option<usize> {
        (self.step > 0
            && self.subquery_depth == 0
            && ts >= self.start
            && ts <= self.end
            && (ts - self.start) % self.step == 0)
            .then(|| ((ts - self.start) / self.step) as usize)
    }

    /// The output at step `k` of the block of steps keyed by `key`; when the step is not in
    /// the current block (or was already taken), the block from `k` on is computed by `fill`.
    /// `fill` gets the block's evaluation times, adds each step's samples, and keeps in
    /// `cursors` where it stopped reading each series; `cursors` holds the previous block's
    /// positions when the new block follows it, and is empty otherwise.
    fn blocked(
        &mut self,
        key: usize,
        k: usize,
        fill: impl FnOnce(&mut Self, &[i64], &mut [Vec<Sample>], &mut Vec<usize>) -> QueryResult<()>,
    ) -> QueryResult<Vec<Sample>> {
        let mut cursors = Vec::new();
        if let Some(b) = self.blocks.get_mut(&key) {
            if k >= b.first
                && let Some(Some(out)) = b.steps.get_mut(k - b.first).map(Option::take)
            {
                return Ok(out);
            }
            if k == b.first + b.steps.len() {
                cursors = std::mem::take(&mut b.cursors);
            }
        }
        self.check_deadline()?;
        let total = ((self.end - self.start) / self.step) as usize + 1;
        let times: Vec<i64> = (k..total.min(k + STEP_BLOCK))
            .map(|j| self.start + j as i64 * self.step)
            .collect();
        let mut steps = vec![Vec::new(); times.len()];
        fill(self, &times, &mut steps, &mut cursors)?;
        let mut steps: Vec<Option<Vec<Sample>>> = steps.into_iter().map(Some).collect();
        let out = steps[0].take().unwrap_or_default();
        self.blocks.insert(
            key,
            StepBlock {
                first: k,
                steps,
                cursors,
            },
        );
        Ok(out)
    }

    /// For step `k` of the range query, what `f` makes of the window of every series of a
    /// matrix selector: `f` gets the labels, the samples in the window, the evaluation time
    /// and the window's end. Computed series by series for a block of steps.
    pub(super) fn blocked_windows(
        &mut self,
        m: &MatrixSelector,
        k: usize,
        f: impl Fn(&Metric, &[(i64, f64)], i64, i64) -> Option<Sample>,
    ) -> QueryResult<Vec<Sample>> {
        self.blocked(
            &m.vs as *const _ as usize,
            k,
            |ev, times, steps, cursors| {
                let data = ev.load(&m.vs)?;
                let range = ms(&m.range);
                let ends: Vec<i64> = times
                    .iter()
                    .map(|&ts| ev.read_time(&m.vs.at, &m.vs.offset, ts))
                    .collect();
                let resume = cursors.len() == data.len();
                cursors.resize(data.len(), 0);
                for (s, cursor) in data.iter().zip(cursors.iter_mut()) {
                    let p = s.points();
                    // Window ends never decrease from step to step, so both bounds only advance.
                    let mut a = if resume {
                        *cursor
                    } else {
                        p.partition_point(|&(t, _)| t <= ends[0] - range)
                    };
                    let mut b = a;
                    for (j, (&ts, &end)) in times.iter().zip(&ends).enumerate() {
                        while a < p.len() && p[a].0 <= end - range {
                            a += 1;
                        }
                        b = b.max(a);
                        while b < p.len() && p[b].0 <= end {
                            b += 1;
                        }
                        if a < b
                            && let Some(out) = f(&s.metric, &p[a..b], ts, end)
                        {
                            steps[j].push(out);
                        }
                    }
                    *cursor = a;
                }
                Ok(())
            },
        )
    }

    /// The instant vector of a selector at `ts`.
    fn vector_selector(&mut self, vs: &VectorSelector, ts: i64) -> QueryResult<Vec<Sample>> {
        if let Some(k) = self.step_index(ts) {
            let lookback = self.opts.lookback_ms;
            return self.blocked(vs as *const _ as usize, k, |ev, times, steps, cursors| {
                let data = ev.load(vs)?;
                let reads: Vec<i64> = times
                    .iter()
                    .map(|&ts| ev.read_time(&vs.at, &vs.offset, ts))
                    .collect();
                let resume = cursors.len() == data.len();
                cursors.resize(data.len(), 0);
                for (s, cursor) in data.iter().zip(cursors.iter_mut()) {
                    let p = &s.samples;
                    let mut b = if resume {
                        *cursor
                    } else {
                        p.partition_point(|&(t, _)| t <= reads[0])
                    };
                    for (j, &t) in reads.iter().enumerate() {
                        while b < p.len() && p[b].0 <= t {
                            b += 1;
                        }
                        if b == 0 {
                            continue;
                        }
                        let (st, v) = p[b - 1];
                        if st > t - lookback && !is_stale_nan(v) {
                            steps[j].push(Sample {
                                metric: s.metric.clone(),
                                t: st,
                                v,
                                drop_name: false,
                            });
                        }
                    }
                    *cursor = b;
                }
                Ok(())
            });
        }
        let data = self.load(vs)?;
        let t = self.read_time(&vs.at, &vs.offset, ts);
        let lo = t - self.opts.lookback_ms;
        let mut out = Vec::new();
        for s in data.iter() {
            let i = s.samples.partition_point(|&(st, _)| st <= t);
            if i == 0 {
                continue;
            }
            let (st, v) = s.samples[i - 1];
            if st <= lo || is_stale_nan(v) {
                continue;
            }
            out.push(Sample {
                metric: s.metric.clone(),
                t: st,
                v,
                drop_name: false,
            });
        }
        Ok(out)
    }

    /// Calls `f` with the labels and the samples in `(t - range, t]` of every series of a
    /// matrix selector that has samples there, without copying them.
    pub(super) fn for_each_window(
        &mut self,
        m: &MatrixSelector,
        ts: i64,
        mut f: impl FnMut(&Metric, &[(i64, f64)]),
    ) -> QueryResult<()> {
        let data = self.load(&m.vs)?;
        let t = self.read_time(&m.vs.at, &m.vs.offset, ts);
        let lo = t - ms(&m.range);
        for s in data.iter() {
            let points = s.window(lo, t);
            if !points.is_empty() {
                f(&s.metric, points);
            }
        }
        Ok(())
    }

    /// The range vector of a matrix selector at `ts`: samples in `(t - range, t]`.
    pub(super) fn matrix_selector(
        &mut self,
        m: &MatrixSelector,
        ts: i64,
    ) -> QueryResult<Vec<Series>> {
        let mut out = Vec::new();
        self.for_each_window(m, ts, |metric, points| {
            out.push(Series {
                metric: metric.clone(),
                points: points.to_vec(),
                drop_name: false,
            })
        })?;
        Ok(out)
    }

    /// The range vector of a subquery at `ts`.
    pub(super) fn subquery(&mut self, sq: &SubqueryExpr, ts: i64) -> QueryResult<Vec<Series>> {
        let t = self.read_time(&sq.at, &sq.offset, ts);
        let step = sq
            .step
            .as_ref()
            .map(ms)
            .filter(|&s| s > 0)
            .unwrap_or(if self.step > 0 {
                self.step
            } else {
                self.opts.default_subquery_step_ms
            });
        let lo = t - ms(&sq.range);
        let mut first = lo.div_euclid(step) * step;
        if first <= lo {
            first += step;
        }
        let mut series = Collector::default();
        self.subquery_depth += 1;
        let result = self.subquery_steps(sq, &mut series, first, t, step);
        self.subquery_depth -= 1;
        result?;
        Ok(series.finish())
    }

    fn subquery_steps(
        &mut self,
        sq: &SubqueryExpr,
        series: &mut Collector,
        mut at: i64,
        t: i64,
        step: i64,
    ) -> QueryResult<()> {
        while at <= t {
            self.check_deadline()?;
            let samples = match self.eval(&sq.expr, at)? {
                Value::Scalar(v) => vec![scalar_sample(at, v)],
                Value::Vector(v) => v,
                _ => {
                    return Err(QueryError::bad_data(
                        "subquery is only allowed on instant vector",
                    ));
                }
            };
            series.push(at, samples);
            at += step;
        }
        Ok(())
    }

    /// Evaluates `e` at time `ts`.
    pub(super) fn eval(&mut self, e: &Expr, ts: i64) -> QueryResult<Value> {
        Ok(match e {
            Expr::NumberLiteral(n) => Value::Scalar(n.val),
            Expr::StringLiteral(s) => Value::String(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, ts)?,
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(v) => Value::Vector(
                    v.into_iter()
                        .map(|s| Sample {
                            v: -s.v,
                            drop_name: true,
                            ..s
                        })
                        .collect(),
                ),
                other => other,
            },
            Expr::VectorSelector(vs) => Value::Vector(self.vector_selector(vs, ts)?),
            Expr::MatrixSelector(m) => Value::Matrix(self.matrix_selector(m, ts)?),
            Expr::Subquery(sq) => Value::Matrix(self.subquery(sq, ts)?),
            Expr::Binary(b) => self.binary(b, ts)?,
            Expr::Aggregate(a) => self.aggregate(a, ts)?,
            Expr::Call(c) => super::functions::call(self, c, ts)?,
            Expr::Extension(_) => {
                return Err(QueryError::bad_data("unsupported expression"));
            }
        })
    }

    pub(super) fn eval_scalar(&mut self, e: &Expr, ts: i64) -> QueryResult<f64> {
        match self.eval(e, ts)? {
            Value::Scalar(v) => Ok(v),
            other => Err(QueryError::bad_data(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub(super) fn eval_vector(&mut self, e: &Expr, ts: i64) -> QueryResult<Vec<Sample>> {
        match self.eval(e, ts)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::bad_data(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    fn binary(&mut self, b: &BinaryExpr, ts: i64) -> QueryResult<Value> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, ts)?;
        let rhs = self.eval(&b.rhs, ts)?;
        let comparison = is_comparison(op);
        Ok(match (lhs, rhs) {
            (Value::Scalar(a), Value::Scalar(c)) => {
                let (v, keep) = apply(op, a, c);
                Value::Scalar(if comparison {
                    if return_bool {
                        f64::from(u8::from(keep))
                    } else {
                        v
                    }
                } else {
                    v
                })
            }
            (Value::Vector(v), Value::Scalar(c)) => {
                Value::Vector(scalar_op(op, v, c, false, return_bool))
            }
            (Value::Scalar(c), Value::Vector(v)) => {
                Value::Vector(scalar_op(op, v, c, true, return_bool))
            }
            (Value::Vector(l), Value::Vector(r)) => Value::Vector(self.vector_op(b, op, l, r)?),
            (l, r) => {
                return Err(QueryError::bad_data(format!(
                    "binary expression must contain only scalar and instant vector types, got {} and {}",
                    l.type_name(),
                    r.type_name()
                )));
            }
        })
    }

    fn vector_op(
        &mut self,
        b: &BinaryExpr,
        op: u16,
        lhs: Vec<Sample>,
        rhs: Vec<Sample>,
    ) -> QueryResult<Vec<Sample>> {
        let modifier = b.modifier.as_ref();
        if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
            // Prometheus keeps fill modifiers behind a feature flag; strata refuses them rather
            // than answer as if they were not there.
            return Err(QueryError::bad_data(
                "fill modifiers (fill, fill_left, fill_right) are an experimental Prometheus feature that strata does not support",
            ));
        }
        let (on, names): (bool, Vec<String>) = match modifier.and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            None => (false, Vec::new()),
        };
        let sig = |m: &[Label]| signature(m, on, &names);
        match op {
            T_LAND => {
                let right: std::collections::HashSet<String> =
                    rhs.iter().map(|s| sig(&s.metric)).collect();
                return Ok(lhs
                    .into_iter()
                    .filter(|s| right.contains(&sig(&s.metric)))
                    .collect());
            }
            T_LUNLESS => {
                let right: std::collections::HashSet<String> =
                    rhs.iter().map(|s| sig(&s.metric)).collect();
                return Ok(lhs
                    .into_iter()
                    .filter(|s| !right.contains(&sig(&s.metric)))
                    .collect());
            }
            T_LOR => {
                let left: std::collections::HashSet<String> =
                    lhs.iter().map(|s| sig(&s.metric)).collect();
                let mut out = lhs;
                out.extend(rhs.into_iter().filter(|s| !left.contains(&sig(&s.metric))));
                return Ok(out);
            }
            _ => {}
        }
        let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
        let return_bool = modifier.is_some_and(|m| m.return_bool);
        let (include, swapped) = match card {
            VectorMatchCardinality::ManyToOne(l) => (l.labels.clone(), false),
            VectorMatchCardinality::OneToMany(l) => (l.labels.clone(), true),
            _ => (Vec::new(), false),
        };
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        // The "one" side is indexed by signature; with group_right it is the left.
        let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
        let mut one_by_sig: HashMap<String, &Sample> = HashMap::new();
        for s in &one {
            if let Some(prev) = one_by_sig.insert(sig(&s.metric), s) {
                let side = if swapped { "left" } else { "right" };
                return Err(QueryError::execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    match_group(&s.metric, on, &names),
                    go_string(&prev.metric),
                    go_string(&s.metric)
                )));
            }
        }
        let comparison = is_comparison(op);
        let mut matched = std::collections::HashSet::new();
        let mut seen_results = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in &many {
            let key = sig(&m.metric);
            let Some(o) = one_by_sig.get(&key) else {
                continue;
            };
            if one_to_one && !matched.insert(key.clone()) {
                return Err(QueryError::execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
            let (l, r) = if swapped { (*o, m) } else { (m, *o) };
            let (v, keep) = apply(op, l.v, r.v);
            if comparison && !return_bool && !keep {
                continue;
            }
            let value = if comparison && return_bool {
                f64::from(u8::from(keep))
            } else if comparison {
                l.v
            } else {
                v
            };
            let drop_name = !comparison || return_bool;
            let kept = |lb: &Label| {
                let listed = names.contains(&lb.name);
                if on {
                    listed || (lb.name == METRIC_NAME && !drop_name)
                } else {
                    !listed
                }
            };
            let metric = if include.is_empty() && (!one_to_one || m.metric.iter().all(kept)) {
                // The result has exactly the labels of the "many" side: share them.
                m.metric.clone()
            } else {
                let mut labels: Vec<Label> = m.metric.to_vec();
                if one_to_one {
                    labels.retain(kept);
                }
                for name in &include {
                    labels.retain(|lb| lb.name != *name);
                    if let Some(v) = get(&o.metric, name) {
                        labels.push(Label::new(name.clone(), v));
                    }
                }
                metric_of(labels)
            };
            if !one_to_one {
                let check: Vec<Label> = if drop_name {
                    without_name(&metric).to_vec()
                } else {
                    metric.to_vec()
                };
                if !seen_results.insert(check) {
                    return Err(QueryError::execution(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
            }
            out.push(Sample {
                metric,
                t: m.t,
                v: value,
                drop_name: drop_name || m.drop_name,
            });
        }
        Ok(out)
    }

    fn aggregate(&mut self, a: &AggregateExpr, ts: i64) -> QueryResult<Value> {
        let op = a.op.id();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, ts)?),
            None => None,
        };
        let input = self.eval_vector(&a.expr, ts)?;
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            None => (true, Vec::new()),
        };
        // Grouping by the name keeps it in the output, to be dropped at the end if any member's
        // name was to be dropped (Prometheus 3.x delayed name removal).
        let by_name = by && names.iter().any(|n| n == METRIC_NAME);
        let group_metric = |m: &[Label]| -> Vec<Label> {
            m.iter()
                .filter(|l| grouped(&l.name, by, &names))
                .cloned()
                .collect()
        };
        // Samples are grouped in order of first appearance. The group of each input series
        // is remembered across the steps of a range query or subquery; an instant query
        // evaluates the aggregation once, and finds each group by its labels.
        let cache_key = a as *const _ as usize;
        let remember = self.is_range() || self.subquery_depth > 0;
        let mut cache = if remember {
            self.group_cache.remove(&cache_key).unwrap_or_default()
        } else {
            GroupCache::default()
        };
        let mut groups: Vec<(Metric, Vec<Sample>)> = Vec::new();
        let mut slots: Vec<usize> = vec![usize::MAX; cache.keys.len()];
        for s in input {
            let i = if op == T_COUNT_VALUES {
                if groups.is_empty() {
                    groups.push((Arc::from(Vec::new()), Vec::new()));
                }
                0
            } else {
                let member = |l: &Label| grouped(&l.name, by, &names);
                let id = if remember {
                    cache.key_of(&s.metric, member)
                } else {
                    cache.key_by_labels(&s.metric, member)
                };
                if id >= slots.len() {
                    slots.resize(id + 1, usize::MAX);
                }
                if slots[id] == usize::MAX {
                    groups.push((cache.keys[id].clone(), Vec::new()));
                    slots[id] = groups.len() - 1;
                }
                slots[id]
            };
            groups[i].1.push(s);
        }
        if remember {
            cache.end_step();
            self.group_cache.insert(cache_key, cache);
        }
        let scalar_param = |p: &Option<Value>| -> QueryResult<f64> {
            match p {
                Some(Value::Scalar(v)) => Ok(*v),
                _ => Err(QueryError::bad_data("expected scalar parameter")),
            }
        };
        let mut out = Vec::new();
        match op {
            T_TOPK | T_BOTTOMK | T_LIMITK => {
                let k = scalar_param(&param)?;
                if k.is_nan() {
                    return Err(QueryError::execution("Parameter value is NaN"));
                }
                if k >= 1.0 {
                    let k = if k >= i64::MAX as f64 {
                        usize::MAX
                    } else {
                        k as usize
                    };
                    for (_, mut members) in groups {
                        if op != T_LIMITK {
                            let top = op == T_TOPK;
                            members.sort_by(|x, y| order_for_k(x.v, y.v, top));
                        }
                        out.extend(members.into_iter().take(k));
                    }
                }
            }
            T_LIMIT_RATIO => {
                let r = scalar_param(&param)?;
                if r.is_nan() {
                    return Err(QueryError::execution("Ratio value is NaN"));
                }
                let r = r.clamp(-1.0, 1.0);
                for (_, members) in groups {
                    for s in members {
                        let h = ratio_hash(&s.metric);
                        if (r >= 0.0 && h < r) || (r < 0.0 && h >= 1.0 + r) {
                            out.push(s);
                        }
                    }
                }
            }
            T_COUNT_VALUES => {
                let label = match &param {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(QueryError::bad_data("expected string parameter")),
                };
                check_label_name(&label)?;
                let mut counts: Vec<(Vec<Label>, f64)> = Vec::new();
                let mut idx: HashMap<Vec<Label>, usize> = HashMap::new();
                for (_, members) in groups {
                    for s in members {
                        let mut labels = group_metric(&s.metric);
                        labels.retain(|l| l.name != label);
                        labels.push(Label::new(label.clone(), format_value(s.v)));
                        let labels = metric_of(labels).to_vec();
                        let i = *idx.entry(labels.clone()).or_insert_with(|| {
                            counts.push((labels, 0.0));
                            counts.len() - 1
                        });
                        counts[i].1 += 1.0;
                    }
                }
                for (labels, n) in counts {
                    out.push(Sample {
                        metric: labels.into(),
                        t: ts,
                        v: n,
                        drop_name: false,
                    });
                }
            }
            _ => {
                let q = if op == T_QUANTILE {
                    Some(scalar_param(&param)?)
                } else {
                    None
                };
                for (key, members) in groups {
                    let drop_name = by_name && members.iter().any(|s| s.drop_name);
                    let values: Vec<f64> = members.iter().map(|s| s.v).collect();
                    let v = match op {
                        T_SUM => kahan_sum(&values),
                        T_AVG => mean(&values),
                        T_COUNT => values.len() as f64,
                        T_GROUP => 1.0,
                        T_MIN => values
                            .iter()
                            .copied()
                            .reduce(|m, v| if m > v || m.is_nan() { v } else { m })
                            .unwrap_or(f64::NAN),
                        T_MAX => values
                            .iter()
                            .copied()
                            .reduce(|m, v| if m < v || m.is_nan() { v } else { m })
                            .unwrap_or(f64::NAN),
                        T_STDDEV => variance(&values).sqrt(),
                        T_STDVAR => variance(&values),
                        T_QUANTILE => {
                            let q = q.unwrap_or(f64::NAN);
                            self.annotations.check_quantile(q);
                            quantile(q, values)
                        }
                        _ => {
                            return Err(QueryError::bad_data(format!(
                                "unsupported aggregation {}",
                                a.op
                            )));
                        }
                    };
                    out.push(Sample {
                        metric: key,
                        t: ts,
                        v,
                        drop_name,
                    });
                }
            }
        }
        Ok(Value::Vector(out))
    }
}

/// Prometheus's check of a label name that a query gives for its output (`count_values`,
/// `histogram_quantiles`).
pub(super) fn check_label_name(name: &str) -> QueryResult<()> {
    if strata_wire::labels::is_valid_label_name(name) {
        Ok(())
    } else {
        Err(QueryError::execution(format!(
            "invalid label name {name:?}"
        )))
    }
}

fn convert(m: &PMatcher) -> QueryResult<Matcher> {
    let op = match m.op {
        PMatchOp::Equal => MatchOp::Equal,
        PMatchOp::NotEqual => MatchOp::NotEqual,
        PMatchOp::Re(_) => MatchOp::Regex,
        PMatchOp::NotRe(_) => MatchOp::NotRegex,
    };
    Matcher::new(op, &m.name, &m.value).map_err(|e| QueryError::bad_data(e.to_string()))
}

fn expr_type(e: &Expr) -> &'static str {
    match e {
        Expr::MatrixSelector(_) | Expr::Subquery(_) => "range vector",
        Expr::StringLiteral(_) => "string",
        _ => "instant vector",
    }
}

fn match_group(m: &[Label], on: bool, names: &[String]) -> String {
    let labels: Vec<Label> = m
        .iter()
        .filter(|l| grouped(&l.name, on, names))
        .cloned()
        .collect();
    render(&labels)
}

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// The value of `a op b` and, for comparisons, whether it holds.
fn apply(op: u16, a: f64, b: f64) -> (f64, bool) {
    match op {
        T_ADD => (a + b, true),
        T_SUB => (a - b, true),
        T_MUL => (a * b, true),
        T_DIV => (a / b, true),
        T_POW => (a.powf(b), true),
        T_MOD => (a % b, true),
        T_ATAN2 => (a.atan2(b), true),
        T_EQLC => (a, a == b),
        T_NEQ => (a, a != b),
        T_GTR => (a, a > b),
        T_LSS => (a, a < b),
        T_GTE => (a, a >= b),
        T_LTE => (a, a <= b),
        _ => (f64::NAN, false),
    }
}

fn scalar_op(op: u16, v: Vec<Sample>, c: f64, scalar_left: bool, return_bool: bool) -> Vec<Sample> {
    let comparison = is_comparison(op);
    v.into_iter()
        .filter_map(|s| {
            let (value, keep) = if scalar_left {
                apply(op, c, s.v)
            } else {
                apply(op, s.v, c)
            };
            if comparison {
                if return_bool {
                    Some(Sample {
                        v: f64::from(u8::from(keep)),
                        drop_name: true,
                        ..s
                    })
                } else {
                    keep.then_some(s)
                }
            } else {
                Some(Sample {
                    v: value,
                    drop_name: true,
                    ..s
                })
            }
        })
        .collect()
}

/// Order of `topk` (descending) or `bottomk` (ascending); NaN always last.
fn order_for_k(a: f64, b: f64, top: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if top => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// A stable value in `[0, 1)` per series, for `limit_ratio`.
fn ratio_hash(m: &[Label]) -> f64 {
    strata_wire::labels::fingerprint(m) as f64 / (u64::MAX as f64 + 1.0)
}

/// Kahan–Babuška summation step (Prometheus's `kahanSumInc`).
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub(super) fn kahan_sum(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for &v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// Prometheus 3.x `avg`: a compensated sum, switching to an incremental mean on overflow.
pub(super) fn mean(values: &[f64]) -> f64 {
    let mut c = 0.0;
    let mut incremental = false;
    let mut mean = 0.0;
    let Some((&first, rest)) = values.split_first() else {
        return f64::NAN;
    };
    // The first value starts the sum as is (an infinite one included), as in Prometheus.
    let mut sum = first;
    let mut n = 1.0;
    for &v in rest {
        n += 1.0;
        if !incremental {
            let (s, nc) = kahan_inc(v, sum, c);
            if !s.is_infinite() {
                (sum, c) = (s, nc);
                continue;
            }
            incremental = true;
            mean = sum / (n - 1.0);
            c /= n - 1.0;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        let current = mean + c;
        (mean, c) = kahan_inc(v / n - current / n, mean, c);
    }
    if incremental { mean + c } else { (sum + c) / n }
}

/// Population variance by Welford's method, as Prometheus's `stdvar`.
pub(super) fn variance(values: &[f64]) -> f64 {
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for &v in values {
        n += 1.0;
        let delta = v - mean;
        mean += delta / n;
        m2 += delta * (v - mean);
    }
    m2 / n
}

/// Prometheus's `quantile`: linear interpolation between the closest ranks.
pub(super) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts below every number, as Go's sort of float64 puts it.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, as Prometheus formats label values and
/// annotation numbers.
pub(super) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Removes `__name__` where it was marked dropped, and refuses duplicate label sets
/// (`what` names the result type in the error).
fn finish<T>(
    items: Vec<T>,
    what: &str,
    parts: impl Fn(&mut T) -> (&mut Metric, &mut bool),
) -> QueryResult<Vec<T>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        let (metric, drop_name) = parts(&mut item);
        if *drop_name {
            *metric = without_name(metric);
            *drop_name = false;
        }
        if !seen.insert(metric.clone()) {
            return Err(QueryError::execution(format!(
                "{what} cannot contain metrics with the same labelset"
            )));
        }
        out.push(item);
    }
    Ok(out)
}

fn finish_vector(v: Vec<Sample>) -> QueryResult<Vec<Sample>> {
    finish(v, "vector", |s| (&mut s.metric, &mut s.drop_name))
}

fn finish_matrix(m: Vec<Series>) -> QueryResult<Vec<Series>> {
    finish(m, "matrix", |s| (&mut s.metric, &mut s.drop_name))
}

#[cfg(test)]
mod tests {
    use super::super::script::{self, Outcome};
    use super::*;
    use crate::head::SeriesData;

    /// Every selector gets the same series.
    struct Fixed(Vec<SeriesData>);

    impl Storage for Fixed {
        fn select(&self, _: &[Matcher], _: i64, _: i64) -> crate::Result<Vec<SeriesData>> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn only_aggregations_evaluated_again_remember_their_groups() {
        let series = (0..4)
            .map(|i| SeriesData {
                labels: vec![
                    Label::new("__name__", "m"),
                    Label::new("g", if i % 2 == 0 { "a" } else { "b" }),
                    Label::new("i", i.to_string()),
                ],
                samples: vec![(0, 1.0), (30_000, 1.0), (60_000, 1.0)],
            })
            .collect();
        let storage = Fixed(series);
        let opts = Options::default();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let parse = |q: &str| promql_parser::parser::parse(q).unwrap();
        let sum = parse("sum by (g) (m)");
        let mut instant = Evaluator::new(&storage, &opts, 60_000, 60_000, 0, deadline);
        let Value::Vector(v) = instant.instant(&sum).unwrap().0 else {
            panic!("not a vector")
        };
        let sums: Vec<(String, f64)> = v.iter().map(|s| (render(&s.metric), s.v)).collect();
        assert_eq!(
            sums,
            [
                ("{g=\"a\"}".to_string(), 2.0),
                ("{g=\"b\"}".to_string(), 2.0)
            ]
        );
        assert!(
            instant.group_cache.is_empty(),
            "evaluated once: nothing kept"
        );
        let mut range = Evaluator::new(&storage, &opts, 0, 60_000, 30_000, deadline);
        range.range(&sum).unwrap();
        assert_eq!(
            range.group_cache.len(),
            1,
            "a range query's steps share them"
        );
        let sub = parse("max_over_time(sum by (g) (m)[1m:30s])");
        let mut instant = Evaluator::new(&storage, &opts, 60_000, 60_000, 0, deadline);
        instant.instant(&sub).unwrap();
        assert_eq!(
            instant.group_cache.len(),
            1,
            "a subquery's steps share them"
        );
    }

    #[test]
    fn range_aggregations_group_series_that_come_and_go_between_steps() {
        // Each input series' group is looked for a few places after the last one found in
        // the step before: series that start, stop (stale) and come back shift the places of
        // the others, six of them at once (further than the look ahead).
        let results = script::run(
            r#"
load 1m
  m{g="a", i="1"} 1 1 1 1 1 1
  m{g="a", i="10"} 1 stale _ _ _ 1
  m{g="a", i="11"} 1 stale _ _ _ 1
  m{g="a", i="12"} 1 stale _ _ _ 1
  m{g="a", i="13"} 1 stale _ _ _ 1
  m{g="a", i="14"} 1 stale _ _ _ 1
  m{g="a", i="15"} 1 stale _ _ _ 1
  m{g="a", i="2"} _ _ 2 2 stale 2
  m{g="a", i="5"} 5 5 stale _ 5 5
  m{g="b", i="3"} 3 stale 3 stale 3 3
  m{g="b", i="4"} _ 4 4 4 stale _

eval range from 0 to 5m step 1m sum by (g) (m)
  {g="a"} 12 6 3 3 6 14
  {g="b"} 3 4 7 4 3 3

eval range from 0 to 5m step 1m count by (g) (m)
  {g="a"} 8 2 2 2 2 9
  {g="b"} 1 1 2 1 1 1

eval range from 0 to 5m step 1m max by (i) (m{i=~"[2-5]"})
  {i="2"} _ _ 2 2 _ 2
  {i="3"} 3 _ 3 _ 3 3
  {i="4"} _ 4 4 4 _ _
  {i="5"} 5 5 _ _ 5 5
"#,
        );
        assert_eq!(results.len(), 3);
        for r in results {
            assert_eq!(r.outcome, Outcome::Pass, "line {}: {}", r.line, r.query);
        }
    }
}
