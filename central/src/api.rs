//! The Prometheus HTTP query API (<https://prometheus.io/docs/prometheus/latest/querying/api/>)
//! that Grafana, promtool and other clients of a Prometheus datasource call:
//!
//! - `GET|POST /api/v1/query`, `/api/v1/query_range`: PromQL (see [`crate::promql`]).
//! - `GET|POST /api/v1/series`, `/api/v1/labels`, `GET /api/v1/label/<name>/values`, with
//!   `match[]`, `start`, `end` and `limit`.
//! - `GET /api/v1/metadata` (`metric`, `limit`, `limit_per_metric`): the metric metadata
//!   senders included in their remote-write requests, kept in memory.
//! - `GET|POST /api/v1/query_exemplars` (strata keeps no exemplars: always an empty list),
//!   `GET|POST /api/v1/format_query`, `GET /api/v1/status/buildinfo`, `/api/v1/status/config`,
//!   `/api/v1/status/flags`.
//!
//! Answers use Prometheus's envelope, result encodings and error types: `bad_data` (400) for
//! bad parameters and queries, `execution` (422) for evaluation errors, `timeout` (503).
//! POST bodies are form-encoded, as Prometheus takes them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use strata_wire::Label;
use strata_wire::api::{
    BuildInfo, Envelope, ErrorType, InstantSample, MetadataEntry, Point, QueryData, RangeSeries,
    StringPoint,
};
use strata_wire::prompb::MetricType;
use strata_wire::view::MetadataRef;

use crate::db::Db;
use crate::index::{Matcher, parse_selector};
use crate::promql::{self, Annotations, Engine, ErrorKind, QueryError, Value};
use crate::server::{AppState, api_error, params, time_param};
use crate::sync::lock;

/// Prometheus's limit on the points of one series in a range query (`web/api/v1/api.go`).
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// The Prometheus version strata reports in `/api/v1/status/buildinfo`: the PromQL semantics
/// it implements are those of Prometheus 3, so Grafana enables what it enables for 3.x.
const PROMETHEUS_VERSION: &str = "3.0.0";

/// The query API's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/config", get(status_config))
        .route("/api/v1/status/flags", get(status_flags))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
}

type Params = Vec<(String, String)>;

fn param<'p>(p: &'p Params, key: &str) -> Option<&'p str> {
    p.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// An error answer in Prometheus's envelope.
struct ApiError(ErrorType, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.0, self.1)
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn bad_data(msg: impl Into<String>) -> ApiError {
    ApiError(ErrorType::BadData, msg.into())
}

fn bad_param(name: &str, msg: impl std::fmt::Display) -> ApiError {
    bad_data(format!("invalid parameter \"{name}\": {msg}"))
}

fn form(raw: Option<&str>, body: &[u8]) -> ApiResult<Params> {
    params(raw, body).map_err(bad_data)
}

/// A time parameter with Prometheus's error text; `default` when absent.
fn time_arg(p: &Params, key: &str, default: i64) -> ApiResult<i64> {
    time_param(p, key, default).map_err(|e| bad_param(key, e))
}

/// A duration parameter (`15s`, `1m` or float seconds).
fn duration_arg(p: &Params, key: &str) -> ApiResult<Option<i64>> {
    param(p, key)
        .map(|v| {
            promql::parse_duration_ms(v)
                .map_err(|_| bad_param(key, format!("cannot parse {v:?} to a valid duration")))
        })
        .transpose()
}

/// The engine options of one request: the central's, with a shorter `timeout` if asked, and
/// a cancel flag of its own.
fn engine_options(st: &AppState, p: &Params) -> ApiResult<promql::Options> {
    let mut opts = promql::Options {
        canceled: Arc::default(),
        ..st.query.clone()
    };
    if let Some(ms) = duration_arg(p, "timeout")? {
        opts.timeout = opts.timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    Ok(opts)
}

/// The API error type of an engine error.
fn error_type(kind: ErrorKind) -> ErrorType {
    match kind {
        ErrorKind::BadData => ErrorType::BadData,
        ErrorKind::Execution => ErrorType::Execution,
        ErrorKind::Timeout => ErrorType::Timeout,
        ErrorKind::Canceled => ErrorType::Canceled,
        ErrorKind::Internal => ErrorType::Internal,
    }
}

fn query_error(e: QueryError) -> ApiError {
    ApiError(error_type(e.kind), e.message)
}

fn metric_json(labels: &[Label]) -> strata_wire::api::Metric {
    labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// A result in the API's encoding; a scalar or string carries the evaluation time.
fn query_data(v: Value, t: i64) -> QueryData {
    match v {
        Value::Scalar(value) => QueryData::Scalar(Point {
            timestamp_ms: t,
            value,
        }),
        Value::String(value) => QueryData::String(StringPoint {
            timestamp_ms: t,
            value,
        }),
        Value::Vector(v) => QueryData::Vector(
            v.into_iter()
                .map(|s| InstantSample {
                    metric: metric_json(&s.metric),
                    value: Point {
                        timestamp_ms: s.t,
                        value: s.v,
                    },
                })
                .collect(),
        ),
        Value::Matrix(m) => QueryData::Matrix(
            m.into_iter()
                .map(|s| RangeSeries {
                    metric: metric_json(&s.metric),
                    values: s
                        .points
                        .into_iter()
                        .map(|(timestamp_ms, value)| Point {
                            timestamp_ms,
                            value,
                        })
                        .collect(),
                })
                .collect(),
        ),
    }
}

/// Marks a query canceled when dropped before the query is done, as happens to the request
/// handler when its client disconnects; the query stops at its next check.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Upper bounds of the query latency histogram, in seconds (up to the default timeout).
const QUERY_SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Queries run since start, by outcome (`success` or the Prometheus error type), and how long
/// they took.
#[derive(Debug, Default)]
pub struct QueryStats {
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    /// Per bucket of [`QUERY_SECONDS_BUCKETS`] the queries that took at most its bound (not
    /// cumulative), then the sum of seconds.
    latency: Mutex<([u64; QUERY_SECONDS_BUCKETS.len() + 1], f64)>,
}

impl QueryStats {
    fn record(&self, outcome: &'static str, seconds: f64) {
        *lock(&self.outcomes).entry(outcome).or_default() += 1;
        let mut latency = lock(&self.latency);
        let bucket = QUERY_SECONDS_BUCKETS.partition_point(|&le| le < seconds);
        latency.0[bucket] += 1;
        latency.1 += seconds;
    }

    /// The `strata_central_queries_total` family in the text exposition format.
    pub fn render(&self, out: &mut String, az: &str) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP strata_central_queries_total PromQL queries run, by outcome (success or the Prometheus error type).\n# TYPE strata_central_queries_total counter"
        );
        for (outcome, n) in lock(&self.outcomes).iter() {
            let _ = writeln!(
                out,
                "strata_central_queries_total{{az=\"{az}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let (counts, sum) = *lock(&self.latency);
        let _ = writeln!(
            out,
            "# HELP strata_central_query_duration_seconds Time PromQL queries took to evaluate.\n# TYPE strata_central_query_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (le, n) in QUERY_SECONDS_BUCKETS.iter().zip(counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "strata_central_query_duration_seconds_bucket{{az=\"{az}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = cumulative + counts[QUERY_SECONDS_BUCKETS.len()];
        let _ = writeln!(
            out,
            "strata_central_query_duration_seconds_bucket{{az=\"{az}\",le=\"+Inf\"}} {count}\nstrata_central_query_duration_seconds_sum{{az=\"{az}\"}} {sum}\nstrata_central_query_duration_seconds_count{{az=\"{az}\"}} {count}"
        );
    }
}

/// Runs a query with the request's engine options off the async threads and answers with
/// its result and annotations; the query is canceled if the request is dropped first.
async fn answer(
    st: Arc<AppState>,
    opts: promql::Options,
    run: impl FnOnce(&Engine<Db>) -> promql::QueryResult<(Value, Annotations)> + Send + 'static,
    t: i64,
) -> Response {
    let _cancel = CancelOnDrop(opts.canceled.clone());
    let engine = Engine::new(st.db.clone(), opts);
    // The outcome is counted by the task itself: when the client has gone, nobody awaits it.
    let counted = move || {
        let started = std::time::Instant::now();
        let result = run(&engine);
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => error_type(e.kind).as_str(),
        };
        st.queries.record(outcome, started.elapsed().as_secs_f64());
        result
    };
    match tokio::task::spawn_blocking(counted).await {
        Ok(Ok((value, ann))) => {
            let mut env = Envelope::success(query_data(value, t));
            env.warnings = ann.warnings;
            env.infos = ann.infos;
            axum::Json(env).into_response()
        }
        Ok(Err(e)) => query_error(e).into_response(),
        Err(_) => api_error(ErrorType::Internal, "query task panicked"),
    }
}

fn query_text(p: &Params) -> ApiResult<String> {
    param(p, "query")
        .map(str::to_string)
        .ok_or_else(|| bad_param("query", "no query provided"))
}

async fn query(
    State(st): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let p = form(raw.as_deref(), &body)?;
    let q = query_text(&p)?;
    let t = time_arg(&p, "time", strata_wire::clock::now_ms())?;
    let opts = engine_options(&st, &p)?;
    Ok(answer(st, opts, move |engine| engine.instant(&q, t), t).await)
}

/// `start` and `end`: required, or all time by default; `end` may not come before `start`.
fn time_range(p: &Params, required: bool) -> ApiResult<(i64, i64)> {
    let get = |key: &str, default: i64| {
        if required && param(p, key).is_none() {
            return Err(bad_param(key, format!("no {key} provided")));
        }
        time_arg(p, key, default)
    };
    let (start, end) = (get("start", i64::MIN)?, get("end", i64::MAX)?);
    if end < start {
        return Err(bad_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    Ok((start, end))
}

async fn query_range(
    State(st): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let p = form(raw.as_deref(), &body)?;
    let q = query_text(&p)?;
    let (start, end) = time_range(&p, true)?;
    let step = duration_arg(&p, "step")?.ok_or_else(|| bad_param("step", "no step provided"))?;
    if step <= 0 {
        return Err(bad_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let opts = engine_options(&st, &p)?;
    Ok(answer(
        st,
        opts,
        move |engine| engine.range(&q, start, end, step),
        start,
    )
    .await)
}

/// `match[]`, `start`, `end` and `limit` of the metadata endpoints.
struct SeriesQuery {
    /// Empty: no `match[]` given.
    selectors: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
    /// 0: no limit.
    limit: usize,
}

fn series_query(p: &Params, need_match: bool) -> ApiResult<SeriesQuery> {
    let mut selectors = Vec::new();
    for (_, sel) in p.iter().filter(|(k, _)| k == "match[]") {
        let m = parse_selector(sel).map_err(|e| bad_param("match[]", e))?;
        selectors.push(m);
    }
    if selectors.is_empty() && need_match {
        return Err(bad_data("no match[] parameter provided"));
    }
    let (start, end) = time_range(p, false)?;
    let limit = match param(p, "limit") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad_param("limit", "limit must be a non-negative integer"))?,
    };
    Ok(SeriesQuery {
        selectors,
        start,
        end,
        limit,
    })
}

/// The series matching any of the selectors, sorted, each once.
fn matching_series(st: &AppState, q: &SeriesQuery) -> Vec<Vec<Label>> {
    let mut out: Vec<Vec<Label>> = q
        .selectors
        .iter()
        .flat_map(|m| st.db.series_labels(m, q.start, q.end))
        .collect();
    out.sort_by(|a, b| crate::head::label_order(a, b));
    out.dedup();
    out
}

/// Answers a list, cut at `limit` (0: none) with Prometheus's warning when cut.
fn limited<T: serde::Serialize>(mut items: Vec<T>, limit: usize) -> Response {
    let truncated = limit > 0 && items.len() > limit;
    if truncated {
        items.truncate(limit);
    }
    let mut env = Envelope::success(items);
    if truncated {
        env.warnings
            .push("results truncated due to limit".to_string());
    }
    axum::Json(env).into_response()
}

/// Runs a metadata lookup off the async threads.
async fn lookup<T: serde::Serialize + Send + 'static>(
    st: Arc<AppState>,
    q: SeriesQuery,
    f: impl FnOnce(&AppState, &SeriesQuery) -> Vec<T> + Send + 'static,
) -> Response {
    let limit = q.limit;
    match tokio::task::spawn_blocking(move || f(&st, &q)).await {
        Ok(items) => limited(items, limit),
        Err(_) => api_error(ErrorType::Internal, "lookup task panicked"),
    }
}

async fn series(
    State(st): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let q = series_query(&form(raw.as_deref(), &body)?, true)?;
    Ok(lookup(st, q, |st, q| {
        matching_series(st, q)
            .iter()
            .map(|l| metric_json(l))
            .collect()
    })
    .await)
}

async fn labels(
    State(st): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let q = series_query(&form(raw.as_deref(), &body)?, false)?;
    Ok(lookup(st, q, |st, q| {
        if q.selectors.is_empty() {
            return st.db.label_index(None, q.start, q.end);
        }
        let mut names: Vec<String> = matching_series(st, q)
            .into_iter()
            .flatten()
            .map(|l| l.name)
            .collect();
        names.sort();
        names.dedup();
        names
    })
    .await)
}

async fn label_values(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // strata's label names are Prometheus's legacy ones; anything else cannot match.
    if !strata_wire::labels::is_valid_label_name(&name) {
        return Err(bad_data(format!("invalid label name: {name:?}")));
    }
    let q = series_query(&form(raw.as_deref(), &[])?, false)?;
    Ok(lookup(st, q, move |st, q| {
        if q.selectors.is_empty() {
            return st.db.label_index(Some(&name), q.start, q.end);
        }
        let mut values: Vec<String> = matching_series(st, q)
            .into_iter()
            .flatten()
            .filter(|l| l.name == name)
            .map(|l| l.value)
            .collect();
        values.sort();
        values.dedup();
        values
    })
    .await)
}

/// strata stores no exemplars, so a valid request gets an empty list, as from a Prometheus
/// without exemplar storage.
async fn query_exemplars(RawQuery(raw): RawQuery, body: Bytes) -> ApiResult<Response> {
    let p = form(raw.as_deref(), &body)?;
    promql::parse(&query_text(&p)?).map_err(query_error)?;
    time_range(&p, false)?;
    Ok(axum::Json(Envelope::success(Vec::<serde_json::Value>::new())).into_response())
}

async fn format_query(RawQuery(raw): RawQuery, body: Bytes) -> ApiResult<Response> {
    let p = form(raw.as_deref(), &body)?;
    let expr = promql::parse(&query_text(&p)?).map_err(query_error)?;
    Ok(axum::Json(Envelope::success(expr.prettify())).into_response())
}

async fn buildinfo() -> Response {
    axum::Json(Envelope::success(BuildInfo {
        version: PROMETHEUS_VERSION.to_string(),
        revision: format!("strata {}", env!("CARGO_PKG_VERSION")),
        branch: String::new(),
        build_user: "strata".to_string(),
        build_date: String::new(),
        go_version: String::new(),
        features: BTreeMap::new(),
    }))
    .into_response()
}

/// The central has no configuration file; this is its effective settings, as YAML.
async fn status_config(State(st): State<Arc<AppState>>) -> Response {
    let yaml = st
        .flags
        .iter()
        .map(|(k, v)| format!("{k}: {v:?}\n"))
        .collect::<String>();
    axum::Json(Envelope::success(json!({ "yaml": yaml }))).into_response()
}

/// `GET /api/v1/rules[?type=alert|record]`: groups sorted by file and name, rules in file
/// order (Prometheus's web/api/v1 `rules`).
async fn rules(State(st): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let p = form(raw.as_deref(), b"")?;
    let kind = param(&p, "type").map(str::to_ascii_lowercase);
    if let Some(k) = kind.as_deref()
        && k != "alert"
        && k != "record"
    {
        return Err(bad_param("type", format!("not supported value {k:?}")));
    }
    Ok(axum::Json(Envelope::success(&st.rules.rules_json(kind.as_deref()))).into_response())
}

/// `GET /api/v1/alerts`: every pending and firing alert.
async fn alerts(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(Envelope::success(&st.rules.alerts_json())).into_response()
}

async fn status_flags(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(Envelope::success(&st.flags)).into_response()
}

/// Most distinct metadata entries kept per metric family (senders that disagree on a help
/// text cannot grow it without bound).
const MAX_METADATA_PER_FAMILY: usize = 10;

/// Metric metadata from remote-write requests, by family, in arrival order of distinct entries.
#[derive(Debug, Default)]
pub struct MetadataStore {
    families: Mutex<BTreeMap<String, Vec<MetadataEntry>>>,
}

impl MetadataStore {
    /// Keeps the entries of one request.
    pub fn record(&self, entries: &[MetadataRef<'_>]) {
        if entries.is_empty() {
            return;
        }
        let mut families = lock(&self.families);
        for m in entries {
            let entry = MetadataEntry {
                metric_type: MetricType::try_from(m.metric_type)
                    .unwrap_or(MetricType::Unknown)
                    .as_exposition_str()
                    .to_string(),
                help: m.help.to_string(),
                unit: m.unit.to_string(),
            };
            let known = families.entry(m.family.to_string()).or_default();
            if !known.contains(&entry) && known.len() < MAX_METADATA_PER_FAMILY {
                known.push(entry);
            }
        }
    }
}

/// `/api/v1/metadata`: `metric` picks one family; `limit` caps families, `limit_per_metric`
/// entries per family (Prometheus's parameters).
async fn metadata(State(st): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let p = form(raw.as_deref(), &[])?;
    let number = |key: &str| -> ApiResult<Option<usize>> {
        param(&p, key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad_param(key, format!("{v:?} is not an integer")))
            })
            .transpose()
            .map(|n| n.and_then(|n| usize::try_from(n).ok().filter(|&n| n > 0)))
    };
    let (limit, per_metric) = (number("limit")?, number("limit_per_metric")?);
    let metric = param(&p, "metric");
    let families = lock(&st.metadata.families);
    let out: BTreeMap<&String, &[MetadataEntry]> = families
        .iter()
        .filter(|(name, _)| metric.is_none_or(|m| m == name.as_str()))
        .take(limit.unwrap_or(usize::MAX))
        .map(|(name, entries)| {
            (
                name,
                &entries[..entries.len().min(per_metric.unwrap_or(usize::MAX))],
            )
        })
        .collect();
    Ok(axum::Json(Envelope::success(out)).into_response())
}
