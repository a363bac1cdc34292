//! The PromQL engine: Prometheus 3.x semantics for float samples over the store's
//! [`Storage::select`] API.
//!
//! Queries are parsed with the `promql-parser` crate, the parser of the Rust PromQL ecosystem
//! (GreptimeDB), whose AST mirrors Prometheus's own. Evaluation follows Prometheus's engine
//! (`promql/engine.go`): before evaluating, every selector's time range is worked out from the
//! query range, `offset`, `@` and enclosing subqueries, and its series are loaded once; the
//! expression is then evaluated at each step over that data. Instant selectors look back
//! [`Options::lookback_ms`] (left-open, as in 3.x) and respect staleness markers; range
//! selectors take the samples in `(t - range, t]`.
//!
//! Native histograms are not stored by strata (the central refuses them on ingest); a query
//! that needs them gets a clear error rather than a wrong result.

mod eval;
mod functions;
pub mod script;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use strata_wire::Label;

use crate::head::SeriesData;
use crate::index::Matcher;

use eval::Evaluator;
pub(crate) use functions::civil;

/// Where a query reads series from: the central's [`crate::db::Db`], or test data.
pub trait Storage: Send + Sync {
    /// Series matching all `matchers` with their samples in `[mint, maxt]`, sorted by time.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> crate::Result<Vec<SeriesData>>;
}

impl Storage for crate::db::Db {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> crate::Result<Vec<SeriesData>> {
        crate::db::Db::select(self, matchers, mint, maxt)
    }
}

/// Engine limits and defaults (Prometheus's flags of the same meaning in brackets).
#[derive(Debug, Clone)]
pub struct Options {
    /// How far back an instant selector looks for a sample (`--query.lookback-delta`, 5m).
    pub lookback_ms: i64,
    /// Most samples a query may hold in memory at once (`--query.max-samples`, 50M).
    pub max_samples: usize,
    /// Longest a query may run (`--query.timeout`, 2m).
    pub timeout: Duration,
    /// Step of subqueries that give none, and of instant queries' subqueries (1m).
    pub default_subquery_step_ms: i64,
    /// Set when whoever asked stopped waiting: the query then stops with `canceled`.
    pub canceled: Arc<AtomicBool>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lookback_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
            canceled: Arc::default(),
        }
    }
}

/// Labels of a series, sorted by name; shared between the steps of a query.
pub type Metric = Arc<[Label]>;

/// One element of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub metric: Metric,
    /// The timestamp of the sample the value came from (for `timestamp()`); the evaluation
    /// time for computed values.
    pub t: i64,
    pub v: f64,
    /// Set by functions and operators that drop the metric name; the name is removed when
    /// the whole expression has been evaluated (Prometheus 3.x delayed name removal).
    pub drop_name: bool,
}

/// One series of a range vector or of a range query's result.
#[derive(Debug, Clone)]
pub struct Series {
    pub metric: Metric,
    pub points: Vec<(i64, f64)>,
    pub drop_name: bool,
}

/// A query result, in Prometheus's four result types.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    /// The Prometheus name of the type (`resultType` in the HTTP API).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// The Prometheus error types a query can fail with (HTTP API `errorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The query does not parse or is invalid (`bad_data`, 400).
    BadData,
    /// Evaluation failed (`execution`, 422).
    Execution,
    /// The query ran past its timeout (`timeout`, 503).
    Timeout,
    /// The client went away before the answer (`canceled`, 499).
    Canceled,
    /// Reading the store failed (`internal`, 500).
    Internal,
}

/// A failed query: its kind and Prometheus's message for it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub kind: ErrorKind,
    pub message: String,
}

impl QueryError {
    pub(crate) fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::BadData,
            message: message.into(),
        }
    }

    pub(crate) fn execution(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Execution,
            message: message.into(),
        }
    }
}

/// The reason given when a query needs native histograms: strata stores float samples only,
/// and answers such a query with this error rather than with a wrong result.
pub const NEEDS_NATIVE_HISTOGRAMS: &str = "needs native histograms, which strata does not store";

pub type QueryResult<T> = Result<T, QueryError>;

/// What evaluation produced besides the value: Prometheus's warnings and infos.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

impl Annotations {
    /// Adds a warning once, however many steps or series raise it.
    pub fn warn(&mut self, msg: String) {
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    /// Prometheus's warning for a quantile outside `[0, 1]` (NaN included).
    pub fn check_quantile(&mut self, q: f64) {
        if !(0.0..=1.0).contains(&q) {
            self.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}",
                eval::format_value(q)
            ));
        }
    }

    /// Adds an info once.
    pub fn info(&mut self, msg: String) {
        if !self.infos.contains(&msg) {
            self.infos.push(msg);
        }
    }
}

/// A parsed query ready to run against a [`Storage`].
pub struct Engine<S: Storage> {
    storage: Arc<S>,
    opts: Options,
}

/// A duration as PromQL and the HTTP API take it (`5m`, `1h30m`, `10s53ms`) or plain float
/// seconds, in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    match s.parse::<f64>() {
        Ok(secs) => Ok((secs * 1000.0).round() as i64),
        Err(_) => strata_wire::duration::parse_duration_ms(s),
    }
}

/// Parses a PromQL expression, with Prometheus's `bad_data` error when it does not parse.
pub fn parse(query: &str) -> QueryResult<promql_parser::parser::Expr> {
    promql_parser::parser::parse(query)
        .map_err(|e| QueryError::bad_data(format!("invalid parameter \"query\": {e}")))
}

impl<S: Storage> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Engine<S> {
    pub fn new(storage: Arc<S>, opts: Options) -> Self {
        Self { storage, opts }
    }

    /// Evaluates `query` at time `t` (milliseconds).
    pub fn instant(&self, query: &str, t: i64) -> QueryResult<(Value, Annotations)> {
        let expr = parse(query)?;
        let deadline = Instant::now() + self.opts.timeout;
        let mut ev = Evaluator::new(&*self.storage, &self.opts, t, t, 0, deadline);
        ev.instant(&expr)
    }

    /// Evaluates `query` at every step from `start` to `end` (milliseconds), as a matrix.
    pub fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> QueryResult<(Value, Annotations)> {
        let expr = parse(query)?;
        let deadline = Instant::now() + self.opts.timeout;
        let mut ev = Evaluator::new(&*self.storage, &self.opts, start, end, step, deadline);
        ev.range(&expr)
    }
}
