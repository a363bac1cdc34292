//! `strata central`: the HTTP face of the store.
//!
//! - `POST /api/v1/write`: remote-write 1.0 and 2.0, decoded and validated by the same code as
//!   every strata receiver. 204 once every accepted sample is fsynced in the WAL; 400 naming
//!   each refused series or sample after the rest was made durable; 413 too large; 415 unknown
//!   message type; 503 when the WAL cannot write.
//! - `POST /api/v1/read`: Prometheus remote-read, SAMPLES response type.
//! - `GET /api/v1/status/tsdb`: head statistics and the cardinality view, in Prometheus's shape.
//! - `GET /api/v1/status/coverage`: per-bucket digests for peer backfill (see [`crate::backfill`]).
//! - `POST|PUT /api/v1/admin/tsdb/delete_series`, `POST|PUT /api/v1/admin/tsdb/clean_tombstones`.
//! - The Prometheus query API, for Grafana and promtool: see [`crate::api`].
//! - `/-/ready`, `/-/healthy`, `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use strata_wire::api::{Envelope, ErrorType};
use strata_wire::prompb::{QueryResult, ReadRequest, ReadResponse, ResponseType};
use strata_wire::protocol::{self, CONTENT_ENCODING_SNAPPY, CONTENT_TYPE_V1, WriteVersion};
use strata_wire::view::WriteView;
use strata_wire::{Sample, TimeSeries, validate};

use crate::api;
use crate::backfill::{self, BackfillConfig};
use crate::db::{self, Db};
use crate::head::AppendMode;
use crate::index::{Matcher, parse_selector};
use crate::promql;
use crate::rules::dispatch::{DispatchConfig, Dispatcher, LogEntry};
use crate::rules::manager::{Manager, RulesConfig};
use crate::rules::notify::{Notifier, NotifierConfig};
use crate::rules::route::NotifyConfig;
use crate::sync::lock;
use crate::{Error, Result};

/// Everything `strata central` is configured with.
#[derive(Debug, Clone)]
pub struct CentralConfig {
    pub listen: SocketAddr,
    pub storage: db::Options,
    /// This central's availability zone, e.g. `az-a`; added to its self-metrics only.
    pub az: String,
    pub backfill: Option<BackfillConfig>,
    pub max_request_bytes: usize,
    pub max_decoded_bytes: usize,
    /// The most samples one remote-read request may return.
    pub read_sample_limit: usize,
    pub maintenance_interval: Duration,
    /// Limits and defaults of PromQL queries.
    pub query: promql::Options,
    /// The command-line settings, by flag name, for `/api/v1/status/flags`.
    pub flags: BTreeMap<String, String>,
    /// Recording and alerting rules, and where their alerts go.
    pub rules: RulesConfig,
    pub notifier: NotifierConfig,
    /// Webhook receivers (`--notify-config`), reloaded with the rule files.
    pub notify_file: Option<PathBuf>,
    /// How often the peer AZ is checked for webhook delivery.
    pub notify_peer_check: Duration,
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    pub db: Arc<Db>,
    pub az: String,
    pub max_decoded_bytes: usize,
    pub read_sample_limit: usize,
    pub query: promql::Options,
    pub flags: BTreeMap<String, String>,
    pub metadata: api::MetadataStore,
    pub queries: api::QueryStats,
    pub rules: Arc<Manager>,
    pub notifier: Arc<Notifier>,
    pub dispatcher: Arc<Dispatcher>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Wire(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Error::BadMatcher(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::WalFailed(_) | Error::Closed | Error::Peer { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Io { .. }
            | Error::Block { .. }
            | Error::Config(_)
            | Error::Listen { .. }
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// The central's routes.
pub fn router(state: Arc<AppState>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/api/v1/read", post(read))
        .route("/api/v1/status/tsdb", get(status_tsdb))
        .route("/api/v1/status/coverage", get(status_coverage))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(delete_series).put(delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(clean_tombstones).put(clean_tombstones),
        )
        .route("/metrics", get(metrics_page))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/api/v1/notifications/status", get(notifications_status))
        .route(
            "/api/v1/notifications/log",
            get(notifications_log).post(notifications_merge),
        )
        .route(
            "/-/healthy",
            get(|| async { "strata central is healthy.\n" }),
        )
        .merge(api::routes())
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

async fn write(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (version, raw) = validate::decompress_write(content_type, &body, st.max_decoded_bytes)?;
    let validated = WriteView::decode(version, &raw)?.validate();
    st.metadata.record(validated.metadata());
    let outcome = st.db.write(validated.accepted(), AppendMode::Live).await?;
    let message = [validated.rejection_message(), outcome.refusal_message()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    let mut resp = if message.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::BAD_REQUEST, message + "\n").into_response()
    };
    if version == WriteVersion::V2 {
        // Remote-write 2.0: report what was written (duplicates of stored samples included),
        // also on a partial 400.
        let h = resp.headers_mut();
        for (name, n) in protocol::written_headers(outcome.appended + outcome.duplicates, 0, 0) {
            h.insert(name, HeaderValue::from(n));
        }
    }
    Ok(resp)
}

/// Remote-read (`prometheus.ReadRequest` → snappy `prometheus.ReadResponse`), one result per
/// query in query order. Only the SAMPLES response type is served; a client that accepts
/// only streamed chunks gets a 400 saying so.
async fn read(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response> {
    let req = ReadRequest::decode_snappy(&body, st.max_decoded_bytes)?;
    if !req.accepted_response_types.is_empty()
        && !req
            .accepted_response_types
            .contains(&(ResponseType::Samples as i32))
    {
        return Err(Error::BadRequest(
            "strata central answers remote-read with the SAMPLES response type only; \
             accept SAMPLES in accepted_response_types"
                .into(),
        ));
    }
    let db = st.db.clone();
    let limit = st.read_sample_limit;
    let response = tokio::task::spawn_blocking(move || -> Result<ReadResponse> {
        let mut results = Vec::with_capacity(req.queries.len());
        let mut total = 0usize;
        for q in &req.queries {
            let matchers = q
                .matchers
                .iter()
                .map(Matcher::from_remote_read)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let series = db.select(&matchers, q.start_timestamp_ms, q.end_timestamp_ms)?;
            total += series.iter().map(|s| s.samples.len()).sum::<usize>();
            if total > limit {
                return Err(Error::BadRequest(format!(
                    "remote-read would return more than {limit} samples; narrow the matchers or \
                     the time range, or raise --read-sample-limit"
                )));
            }
            results.push(QueryResult {
                timeseries: series
                    .into_iter()
                    .map(|s| TimeSeries {
                        labels: s.labels,
                        samples: s
                            .samples
                            .into_iter()
                            .map(|(t, v)| Sample {
                                value: v,
                                timestamp: t,
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
        Ok(ReadResponse { results })
    })
    .await
    .map_err(|_| Error::Internal("remote-read task panicked"))??;
    Ok((
        [
            (header::CONTENT_TYPE, CONTENT_TYPE_V1),
            (header::CONTENT_ENCODING, CONTENT_ENCODING_SNAPPY),
        ],
        response.encode_snappy()?,
    )
        .into_response())
}

pub(crate) fn api_error(kind: ErrorType, msg: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(Envelope::<Value>::error(kind, msg))).into_response()
}

/// Query and form parameters as the HTTP API takes them: repeated keys (`match[]`) allowed.
pub(crate) fn params(
    raw: Option<&str>,
    body: &[u8],
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for src in [raw.unwrap_or("").as_bytes(), body] {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(src)
            .map_err(|e| format!("cannot parse the form parameters: {e}"))?;
        out.extend(pairs);
    }
    Ok(out)
}

/// A time parameter: Unix seconds (with fraction) or RFC 3339, as the Prometheus API takes it.
pub(crate) fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
}

pub(crate) fn time_param(
    p: &[(String, String)],
    key: &str,
    default: i64,
) -> std::result::Result<i64, String> {
    match p.iter().find(|(k, _)| k == key) {
        Some((_, v)) if !v.is_empty() => parse_time(v),
        _ => Ok(default),
    }
}

async fn delete_series(
    State(st): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = match params(raw.as_deref(), &body) {
        Ok(p) => p,
        Err(e) => return api_error(ErrorType::BadData, e),
    };
    let selectors: Vec<&String> = p
        .iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| v)
        .collect();
    if selectors.is_empty() {
        return api_error(ErrorType::BadData, "no match[] parameter provided");
    }
    let (start, end) = match (
        time_param(&p, "start", i64::MIN),
        time_param(&p, "end", i64::MAX),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return api_error(ErrorType::BadData, e),
    };
    for sel in selectors {
        let matchers = match parse_selector(sel) {
            Ok(m) => m,
            Err(e) => return api_error(ErrorType::BadData, e),
        };
        if let Err(e) = st.db.delete_series(&matchers, start, end).await {
            return api_error(ErrorType::Internal, e.to_string());
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Deletions rewrite the affected blocks at once, so no tombstones are ever left to clean;
/// the endpoint exists because operators' tooling calls it after `delete_series`.
async fn clean_tombstones() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn status_coverage(State(st): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    let p = match params(raw.as_deref(), &[]) {
        Ok(p) => p,
        Err(e) => return api_error(ErrorType::BadData, e),
    };
    let ms = |key: &str| {
        p.iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse::<i64>().ok())
    };
    let (Some(start), Some(end)) = (ms("start"), ms("end")) else {
        return api_error(
            ErrorType::BadData,
            "start and end (Unix milliseconds) are required",
        );
    };
    let db = st.db.clone();
    match tokio::task::spawn_blocking(move || backfill::coverage(&db, start, end)).await {
        Ok(Ok(buckets)) => axum::Json(Envelope::success(buckets)).into_response(),
        Ok(Err(e)) => api_error(ErrorType::Internal, e.to_string()),
        Err(_) => api_error(ErrorType::Internal, "coverage task panicked"),
    }
}

async fn status_tsdb(State(st): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    let p = match params(raw.as_deref(), &[]) {
        Ok(p) => p,
        Err(e) => return api_error(ErrorType::BadData, e),
    };
    let limit = p
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(10);
    let db = st.db.clone();
    let az = st.az.clone();
    let data = tokio::task::spawn_blocking(move || tsdb_status(&db, &az, limit)).await;
    match data {
        Ok(v) => axum::Json(Envelope::success(v)).into_response(),
        Err(_) => api_error(ErrorType::Internal, "status task panicked"),
    }
}

fn top(mut items: Vec<(String, usize)>, limit: usize) -> Value {
    items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    items.truncate(limit);
    Value::Array(
        items
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

fn tsdb_status(db: &Db, az: &str, limit: usize) -> Value {
    let stats = db.head_stats();
    let card = db.head().cardinality();
    let by_metric: Vec<(String, usize)> = card
        .pairs
        .iter()
        .filter(|(n, _, _)| n == "__name__")
        .map(|(_, v, c)| (v.clone(), *c))
        .collect();
    let mut memory: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (n, v, _) in &card.pairs {
        *memory.entry(n.as_str()).or_default() += v.len();
    }
    let memory: Vec<(String, usize)> = memory.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let value_counts: Vec<(String, usize)> =
        card.names.iter().map(|(n, v, _)| (n.clone(), *v)).collect();
    let pairs: Vec<(String, usize)> = card
        .pairs
        .iter()
        .map(|(n, v, c)| (format!("{n}={v}"), *c))
        .collect();
    let num_pairs = card.pairs.len();
    let blocks: Vec<Value> = db
        .block_metas()
        .into_iter()
        .map(|m| {
            json!({"id": m.id, "minTime": m.min_t, "maxTime": m.max_t, "series": m.series,
                   "samples": m.samples, "level": m.level,
                   "bytes": m.files.iter().map(|f| f.bytes).sum::<u64>()})
        })
        .collect();
    let replay = db.replay_report();
    json!({
        "headStats": {
            "numSeries": stats.series,
            "numLabelPairs": num_pairs,
            "chunkCount": stats.chunks,
            "minTime": stats.min_t.unwrap_or(i64::MAX),
            "maxTime": stats.max_t.unwrap_or(i64::MIN),
        },
        "seriesCountByMetricName": top(by_metric, limit),
        "labelValueCountByLabelName": top(value_counts, limit),
        "memoryInBytesByLabelName": top(memory, limit),
        "seriesCountByLabelValuePair": top(pairs, limit),
        "strata": {
            "az": az,
            "headBytes": stats.bytes,
            "headSamples": stats.samples_in_chunks,
            "symbols": stats.symbols,
            "blocks": blocks,
            "walReplay": {"segments": replay.segments, "records": replay.records,
                          "tornBytes": replay.torn_bytes, "corruptBytes": replay.corrupt_bytes},
            "problems": db.problems(),
            "writeFailure": db.write_failure(),
        }
    })
}

/// Reads the rule files and the notification configuration again (as SIGHUP does); 500 with
/// the reasons when one is wrong, and the running one stays.
async fn reload(State(st): State<Arc<AppState>>) -> Response {
    let (text, ok) = reload_all(&st.rules, &st.dispatcher).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, text).into_response()
}

/// Reloads rules and notification configuration (each logs its own outcome); what happened,
/// and whether both loaded.
async fn reload_all(rules: &Arc<Manager>, dispatcher: &Dispatcher) -> (String, bool) {
    let mut text = String::new();
    let rules_ok = match rules.reload().await {
        Ok(groups) => {
            let _ = writeln!(text, "rules reloaded: {groups} groups");
            true
        }
        Err(errors) => {
            text.push_str("rules not reloaded; the running rules stay:\n");
            for e in errors {
                let _ = writeln!(text, "  {e}");
            }
            false
        }
    };
    let notify_ok = match dispatcher.reload() {
        Ok(receivers) => {
            if dispatcher.enabled() {
                let _ = writeln!(
                    text,
                    "notification configuration reloaded: {receivers} receivers"
                );
            }
            true
        }
        Err(e) => {
            let _ = writeln!(
                text,
                "notification configuration not reloaded; the running one stays: {e}"
            );
            false
        }
    };
    (text, rules_ok && notify_ok)
}

/// Which AZ sends webhook notifications, as the peer AZ checks it.
async fn notifications_status(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(st.dispatcher.status()).into_response()
}

/// The notification log: what was last sent to each webhook for each alert group; with
/// `after=N`, the entries that changed after the log's sequence number N.
async fn notifications_log(
    State(st): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    let after = match q.get("after").map(|a| a.parse::<u64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                "after must be a log sequence number, e.g. after=0\n",
            )
                .into_response();
        }
    };
    axum::Json(st.dispatcher.log_after(after)).into_response()
}

/// Entries the peer AZ sent, added to the log.
async fn notifications_merge(
    State(st): State<Arc<AppState>>,
    body: Result<axum::Json<Vec<LogEntry>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(entries)) => {
            st.dispatcher.merge(entries);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected a JSON array of notification log entries: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.db.write_failure() {
        Some(f) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {f}\n")).into_response(),
        None => "strata central is ready.\n".into_response(),
    }
}

fn metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    az: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name}{{az=\"{az}\"}} {value}");
}

async fn metrics_page(State(st): State<Arc<AppState>>) -> Response {
    let text = tokio::task::spawn_blocking(move || render_metrics(&st))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn render_metrics(st: &AppState) -> String {
    let (db, az) = (&*st.db, st.az.as_str());
    let mut out = String::new();
    let c = &db.counters;
    let stats = db.head_stats();
    let (wal_bytes, wal_syncs) = db.wal_stats();
    let blocks = db.block_metas();
    let counters: [(&str, &str, u64); 14] = [
        (
            "strata_central_wal_written_bytes_total",
            "Bytes written to the WAL since start.",
            wal_bytes,
        ),
        (
            "strata_central_wal_fsyncs_total",
            "WAL fsyncs since start (each covers a group of writes).",
            wal_syncs,
        ),
        (
            "strata_central_samples_appended_total",
            "Samples written to the store.",
            c.samples_appended.get(),
        ),
        (
            "strata_central_samples_duplicate_total",
            "Samples identical to stored ones (retries), not written again.",
            c.samples_duplicate.get(),
        ),
        (
            "strata_central_samples_refused_total",
            "Samples refused: too old for the out-of-order window, conflicting values, native histograms.",
            c.samples_refused.get(),
        ),
        (
            "strata_central_samples_backfilled_total",
            "Samples written through the backfill path.",
            c.samples_backfilled.get(),
        ),
        (
            "strata_central_blocks_cut_total",
            "Blocks written from the head.",
            c.blocks_cut.get(),
        ),
        (
            "strata_central_compactions_total",
            "Block compactions.",
            c.compactions.get(),
        ),
        (
            "strata_central_blocks_deleted_total",
            "Blocks deleted past retention.",
            c.blocks_deleted.get(),
        ),
        (
            "strata_central_maintenance_failures_total",
            "Failed cut, compaction or retention runs.",
            c.maintenance_failures.get(),
        ),
        (
            "strata_central_backfill_compared_samples_total",
            "Samples of the peer compared by peer backfill.",
            c.backfill_compared.get(),
        ),
        (
            "strata_central_backfill_fetched_samples_total",
            "Samples fetched from the peer by remote-read.",
            c.backfill_fetched.get(),
        ),
        (
            "strata_central_backfill_rounds_total",
            "Completed peer backfill rounds.",
            c.backfill_rounds.get(),
        ),
        (
            "strata_central_backfill_failures_total",
            "Failed peer backfill rounds.",
            c.backfill_failures.get(),
        ),
    ];
    for (name, help, v) in counters {
        metric(&mut out, name, "counter", help, az, v);
    }
    let gauges: [(&str, &str, i64); 8] = [
        (
            "strata_central_head_series",
            "Series in the head.",
            stats.series as i64,
        ),
        (
            "strata_central_head_chunks",
            "Chunks in the head.",
            stats.chunks as i64,
        ),
        (
            "strata_central_head_bytes",
            "Estimated heap bytes of the head (series, chunks, symbols).",
            stats.bytes as i64,
        ),
        (
            "strata_central_head_max_time_ms",
            "Newest sample timestamp in the head.",
            stats.max_t.unwrap_or(0),
        ),
        (
            "strata_central_blocks",
            "Blocks on disk.",
            blocks.len() as i64,
        ),
        (
            "strata_central_block_bytes",
            "Bytes of all blocks on disk.",
            db.block_bytes() as i64,
        ),
        (
            "strata_central_backfill_last_success_seconds",
            "Unix time of the last successful peer backfill round.",
            c.backfill_last_success.load(Ordering::Relaxed),
        ),
        (
            "strata_central_wal_failed",
            "1 when the WAL refuses writes (restart needed).",
            i64::from(db.write_failure().is_some()),
        ),
    ];
    for (name, help, v) in gauges {
        metric(&mut out, name, "gauge", help, az, v);
    }
    st.queries.render(&mut out, az);
    render_rule_metrics(&mut out, st);
    out
}

fn render_rule_metrics(out: &mut String, st: &AppState) {
    let (az, r, n) = (st.az.as_str(), &st.rules.metrics, &st.notifier.metrics);
    let d = &st.dispatcher;
    let (groups, rules) = st.rules.counts();
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let counters = [
        (
            "strata_rule_evaluations_total",
            "Rule evaluations.",
            load(&r.evaluations),
        ),
        (
            "strata_rule_evaluation_failures_total",
            "Rule evaluations that failed (query, limit, duplicate series or store write).",
            load(&r.evaluation_failures),
        ),
        (
            "strata_rule_group_iterations_missed_total",
            "Group evaluations skipped because the previous one ran past its slot.",
            load(&r.missed_iterations),
        ),
        (
            "strata_rule_template_expansion_failures_total",
            "Label and annotation templates that failed to expand.",
            load(&r.template_failures),
        ),
        (
            "strata_notifications_sent_total",
            "Alerts sent in batches an Alertmanager accepted.",
            load(&n.sent),
        ),
        (
            "strata_notifications_errors_total",
            "Requests to an Alertmanager that failed.",
            load(&n.errors),
        ),
        (
            "strata_notifications_dropped_total",
            "Alerts dropped: queue full, or no Alertmanager accepted their batch.",
            load(&n.dropped),
        ),
        (
            "strata_webhook_request_errors_total",
            "Webhook requests that failed (each attempt).",
            load(&d.metrics.request_errors),
        ),
        (
            "strata_webhook_flushes_deferred_total",
            "Alert group flushes left to the peer AZ, which sends.",
            load(&d.metrics.deferred),
        ),
        (
            "strata_webhook_peer_check_failures_total",
            "Checks of the peer AZ that failed.",
            load(&d.metrics.peer_check_failures),
        ),
    ];
    for (name, help, v) in counters {
        metric(out, name, "counter", help, az, v);
    }
    let gauges = [
        ("strata_rule_groups", "Rule groups loaded.", groups as i64),
        ("strata_rules", "Rules loaded.", rules as i64),
        (
            "strata_rules_config_last_reload_successful",
            "1 when the last load of the rule files succeeded.",
            i64::from(r.reload_ok.load(Ordering::Relaxed)),
        ),
        (
            "strata_rules_config_last_reload_success_timestamp_seconds",
            "Unix time of the last load of the rule files.",
            r.last_reload_s.load(Ordering::Relaxed),
        ),
        (
            "strata_notifications_queue_length",
            "Alerts waiting to be sent.",
            st.notifier.queue_length() as i64,
        ),
        (
            "strata_webhook_sender",
            "1 when this AZ sends the webhook notifications.",
            i64::from(d.enabled() && d.is_sender()),
        ),
        (
            "strata_webhook_alert_groups",
            "Alert groups held for webhook receivers.",
            d.group_count() as i64,
        ),
    ];
    for (name, help, v) in gauges {
        metric(out, name, "gauge", help, az, v);
    }
    render_webhook_metrics(out, st);
}

/// The webhook counters kept per receiver.
fn render_webhook_metrics(out: &mut String, st: &AppState) {
    let (az, d) = (st.az.as_str(), &st.dispatcher);
    for (name, help, by_receiver) in [
        (
            "strata_webhook_notifications_total",
            "Webhook notifications delivered, by receiver.",
            &d.metrics.sent,
        ),
        (
            "strata_webhook_notifications_failed_total",
            "Webhook notifications not delivered before the group's next interval.",
            &d.metrics.failed,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let counts = lock(by_receiver);
        for (receiver, n) in counts.iter() {
            let _ = writeln!(out, "{name}{{az=\"{az}\",receiver={receiver:?}}} {n}");
        }
    }
}

/// Opens the store, serves until `shutdown` resolves, then stops accepting and closes the WAL.
pub async fn run(
    config: CentralConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Rule files and the notification configuration are checked before anything starts, so
    // a wrong file stops nothing running.
    let groups = crate::rules::manager::load(&config.rules).map_err(|errors| {
        let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Error::Config(format!(
            "rule files have errors (check them with `strata rules check`):\n  {}",
            reasons.join("\n  ")
        ))
    })?;
    let notify = config
        .notify_file
        .as_deref()
        .map(NotifyConfig::load)
        .transpose()
        .map_err(|e| Error::Config(format!("--notify-config: {e}")))?;
    let storage = config.storage.clone();
    let db = Arc::new(
        tokio::task::spawn_blocking(move || Db::open(storage))
            .await
            .map_err(|_| Error::Internal("store open task panicked"))??,
    );
    for p in db.problems() {
        tracing::error!("recovery: {p}");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    tracing::info!(listen = %local, az = %config.az, data = %config.storage.data_dir.display(), "strata central started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let notifier = Notifier::new(config.notifier.clone()).map_err(Error::Config)?;
    let notifier_task = tokio::spawn(notifier.clone().run(stop_rx.clone()));
    let dispatcher = Dispatcher::new(
        DispatchConfig {
            notify_file: config.notify_file.clone(),
            az: config.az.clone(),
            peer: config.backfill.as_ref().map(|b| b.peer_url.clone()),
            peer_check: config.notify_peer_check,
            external_url: config.rules.external_url.clone(),
            log_file: Some(config.storage.data_dir.join("notifications.json")),
        },
        notify,
    )
    .map_err(Error::Config)?;
    let dispatcher_task = tokio::spawn(dispatcher.clone().run(stop_rx.clone()));
    let rules = Manager::start(
        config.rules.clone(),
        groups,
        db.clone(),
        config.query.clone(),
        notifier.clone(),
        dispatcher.clone(),
        stop_rx.clone(),
    )
    .await;
    let (groups, rule_count) = rules.counts();
    if groups > 0 {
        tracing::info!(groups, rules = rule_count, "rules loaded");
    }
    let state = Arc::new(AppState {
        db: db.clone(),
        az: config.az.clone(),
        max_decoded_bytes: config.max_decoded_bytes,
        read_sample_limit: config.read_sample_limit,
        query: config.query.clone(),
        flags: config.flags.clone(),
        metadata: api::MetadataStore::default(),
        queries: api::QueryStats::default(),
        rules: rules.clone(),
        notifier,
        dispatcher: dispatcher.clone(),
    });
    let maintenance = {
        let db = db.clone();
        let mut stop = stop_rx.clone();
        let every = config.maintenance_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|&s| s) => return,
                }
                let db = db.clone();
                let _ =
                    tokio::task::spawn_blocking(move || db.maintain(strata_wire::clock::now_ms()))
                        .await;
            }
        })
    };
    let backfill = config
        .backfill
        .clone()
        .map(|b| tokio::spawn(backfill::run(db.clone(), b, stop_rx.clone())));
    let mut server_stop = stop_rx;
    let server = axum::serve(listener, router(state, config.max_request_bytes))
        .with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|&s| s).await;
        });
    let server = tokio::spawn(async move { server.await });
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::Config(format!("cannot handle SIGHUP: {e}")))?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => {
                let _ = reload_all(&rules, &dispatcher).await;
            }
        }
    }
    tracing::info!("strata central stopping");
    let _ = stop_tx.send(true);
    rules.stop().await;
    let _ = notifier_task.await;
    let _ = dispatcher_task.await;
    db.stop_maintenance();
    let _ = server.await;
    let _ = maintenance.await;
    if let Some(b) = backfill {
        let _ = b.await;
    }
    db.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parameters_take_seconds_and_rfc3339() {
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn query_and_form_parameters_combine() {
        let p = params(
            Some("match%5B%5D=up&start=1"),
            b"match%5B%5D=up%7Bjob%3D%22a+b%22%7D",
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], ("match[]".into(), "up{job=\"a b\"}".into()));
    }
}
