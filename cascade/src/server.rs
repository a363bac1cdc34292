//! `strata cascade`: the regional aggregator. It receives remote-write (1.0 and 2.0) from the
//! edges of a region, checks who may write what, holds cells to their limits, aggregates
//! streams, and fans everything out to N upstreams, each through its own durable queue.
//!
//! A write request goes through, in order:
//! 1. auth: a bearer token names the sender (401 without one);
//! 2. decoding and validation per the remote-write specs (415, 413, 400 for invalid series);
//! 3. the sender's labels: enforced (403 for the whole request) or stamped;
//! 4. the cell's samples-per-second limit (429 for the whole request) and active-series limit
//!    (new series over it are left out, 429 after the rest is written);
//! 5. stream aggregation, which may consume series whose raw input is not kept;
//! 6. fan-out: the batch is durable in every upstream's queue before the answer.
//!
//! A request nobody changed (1.0, every series valid and kept, nothing stamped) is written to
//! the queues as the very bytes that arrived; otherwise the kept series are encoded again.
//! Answers follow the remote-write specs: 204 when everything was written; 400 naming the
//! invalid series after the valid ones were made durable; 2.0 answers carry the
//! `X-Prometheus-Remote-Write-*-Written` headers, also on 400 and 429.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use strata_wire::clock::now_ms;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::json;
use strata_relay::metrics;
use strata_wire::labels::{LabelPair, fingerprint, to_owned};
use strata_wire::protocol::{self, WriteVersion};
use strata_wire::view::WriteView;
use strata_wire::{WriteRequest, validate};

use strata_relay::queue::Decoded;

use crate::aggregate::{Aggregator, MAX_FUTURE_MS};
use crate::aggregation_log::AggregationLog;
use crate::auth::{Auth, Sender};
use crate::config::{Config, LabelAction};
use crate::fanout::Fanout;
use crate::limits::{Limits, SeriesKey};
use crate::metrics::{CascadeMetrics, Reject};
use crate::{Error, Result};
use strata_relay::server::too_many_requests;

/// How `strata cascade` is started.
#[derive(Debug, Clone)]
pub struct CascadeOptions {
    /// The YAML file; re-read on SIGHUP and `POST /-/reload`.
    pub config: PathBuf,
    pub listen: SocketAddr,
    /// Directory of the upstream queues (one subdirectory per upstream).
    pub data_dir: PathBuf,
}

/// Stream aggregation: the aggregator and its durable input ([`AggregationLog`]).
#[derive(Debug)]
struct Aggregation {
    aggregator: Mutex<Aggregator>,
    log: AggregationLog,
    /// Records of the log with a lower seq were written before this start: replayed input.
    replay_before: u64,
}

impl Aggregation {
    fn lock(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared state of the cascade's handlers.
#[derive(Debug)]
pub struct AppState {
    auth: RwLock<Arc<Auth>>,
    limits: Limits,
    aggregation: Option<Aggregation>,
    fanout: Fanout,
    metrics: CascadeMetrics,
    registry: Registry,
    max_decoded_bytes: usize,
    aggregation_lateness_ms: i64,
    config_path: Option<PathBuf>,
}

impl AppState {
    /// Builds the state from a checked configuration, opening the upstream queues under
    /// `data_dir`. `config_path` is what a reload reads.
    pub fn new(
        config: &Config,
        data_dir: &std::path::Path,
        config_path: Option<PathBuf>,
    ) -> Result<Self> {
        let mut registry = Registry::default();
        let metrics = CascadeMetrics::register(&mut registry);
        let mut aggregator = Aggregator::new(
            &config.stream_aggregation.rules,
            config.stream_aggregation.lateness.0.as_millis() as i64,
        )
        .map_err(Error::Config)?;
        let aggregation = if aggregator.is_empty() {
            None
        } else {
            let log = AggregationLog::open(data_dir, &mut registry)?;
            if let Some(through) = log.emitted_through() {
                aggregator.resume(through);
            }
            Some(Aggregation {
                aggregator: Mutex::new(aggregator),
                replay_before: log.queue.next_seq(),
                log,
            })
        };
        let fanout = Fanout::open(
            &config.remote_write,
            &config.queue.queue_config(),
            data_dir,
            &mut registry,
        )?;
        Ok(Self {
            auth: RwLock::new(Arc::new(Auth::new(&config.auth)?)),
            limits: Limits::new(config.limits.clone()),
            aggregation,
            fanout,
            metrics,
            registry,
            max_decoded_bytes: config.max_decoded_bytes(),
            aggregation_lateness_ms: config.stream_aggregation.lateness.0.as_millis() as i64,
            config_path,
        })
    }

    fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the configuration file: tokens (and their files) and limits take effect at
    /// once; upstreams and aggregation rules on the next start.
    pub fn reload(&self) -> Result<()> {
        let Some(path) = &self.config_path else {
            return Err(Error::Config(
                "this cascade was not started from a file".into(),
            ));
        };
        let config = Config::load(path)?;
        let auth = Auth::new(&config.auth)?;
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
        self.limits.reconfigure(config.limits);
        tracing::info!(config = %path.display(), "reloaded tokens and limits; upstream and aggregation changes apply on restart");
        Ok(())
    }
}

/// The cascade's routes.
pub fn router(state: Arc<AppState>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/api/v1/status/upstreams", get(upstreams))
        .route("/api/v1/status/cells", get(cells))
        .route("/api/v1/status/aggregation", get(aggregation))
        .route("/metrics", get(metrics_page))
        .route("/-/reload", post(reload))
        .route("/-/ready", get(|| async { "strata cascade is ready.\n" }))
        .route(
            "/-/healthy",
            get(|| async { "strata cascade is healthy.\n" }),
        )
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

async fn write(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let resp = match receive(&state, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .request(resp.status().as_u16(), started.elapsed());
    resp
}

/// The cell of a series and the fingerprint of its labels.
fn series_key<'a, L: LabelPair>(labels: &'a [L], cell_label: &str, items: usize) -> SeriesKey<'a> {
    let cell = labels
        .binary_search_by(|l| l.name().cmp(cell_label))
        .map_or("", |i| labels[i].value());
    SeriesKey {
        cell,
        fingerprint: fingerprint(labels),
        items: items as u64,
    }
}

async fn receive(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response> {
    let auth = state.auth();
    let sender = auth.authenticate(headers)?;
    let sender_name = sender.map_or("anonymous", |s| s.name.as_str());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (version, raw) = validate::decompress_write(content_type, body, state.max_decoded_bytes)?;
    let mut view = WriteView::decode(version, &raw)?.validate();
    let items_of =
        |s: &strata_wire::view::SeriesRef<'_, _>| s.samples.len() + s.histograms + s.exemplars;
    let total_items: u64 = view.accepted().map(|s| items_of(&s) as u64).sum();
    state
        .metrics
        .rejected(Reject::Invalid, view.rejected.items as u64);

    // The sender's labels: enforced on every series, or stamped where they differ.
    let stamp: Option<&Sender> = sender.filter(|s| !s.labels.is_empty());
    let mut stamped: Option<Vec<Vec<strata_wire::Label>>> = None;
    if let Some(s) = stamp {
        match s.action {
            LabelAction::Enforce => {
                if let Some(msg) = forbidden(s, &view) {
                    state.metrics.rejected(Reject::Forbidden, total_items);
                    return Err(Error::Forbidden(msg));
                }
            }
            LabelAction::Stamp => {
                if view
                    .accepted()
                    .any(|series| s.violation(series.labels).is_some())
                {
                    stamped = Some(
                        view.accepted()
                            .map(|series| {
                                let mut labels = to_owned(series.labels);
                                s.stamp(&mut labels);
                                labels
                            })
                            .collect(),
                    );
                }
            }
        }
    }

    // Limits per cell.
    let accepted_len = view.accepted_len();
    let mut keep = vec![true; accepted_len];
    let mut limit_message = None;
    let mut refused_items = 0;
    let (cell_label, limited) = state.limits.cell_label();
    if limited {
        let keys: Vec<SeriesKey<'_>> = match &stamped {
            Some(st) => view
                .accepted()
                .zip(st)
                .map(|(s, labels)| series_key(labels, &cell_label, items_of(&s)))
                .collect(),
            None => view
                .accepted()
                .map(|s| series_key(s.labels, &cell_label, items_of(&s)))
                .collect(),
        };
        let admission = state
            .limits
            .admit(&keys, Instant::now())
            .inspect_err(|_| state.metrics.rejected(Reject::RateLimited, total_items))
            .map_err(Error::RateLimited)?;
        for &i in &admission.refused {
            keep[i] = false;
        }
        refused_items = admission.refused_items;
        state.metrics.rejected(Reject::SeriesLimit, refused_items);
        limit_message = admission.message;
    }
    let admitted = keep.clone();

    // Stream aggregation: matched series go to the aggregation log; those a rule consumes
    // are not forwarded raw.
    let mut matched = Vec::new();
    if let Some(aggregation) = &state.aggregation {
        let agg = aggregation.lock();
        for (i, series) in view.accepted().enumerate() {
            if !keep[i] {
                continue;
            }
            let (hit, forward) = match &stamped {
                Some(st) => agg.route(&st[i]),
                None => agg.route(series.labels),
            };
            if hit {
                matched.push(i);
            }
            keep[i] = forward;
        }
    }
    // The request decoded once, with the stamped labels, when what is forwarded differs
    // from what arrived or matched series go to the aggregation log.
    let unchanged = version == WriteVersion::V1
        && view.rejected.is_empty()
        && stamped.is_none()
        && keep.iter().all(|&k| k);
    let mut owned = if unchanged && matched.is_empty() {
        None
    } else {
        let mut request = validate::decode_body(version, &raw)?.accepted;
        if let Some(stamped) = stamped {
            for (ts, labels) in request.timeseries.iter_mut().zip(stamped) {
                ts.labels = labels;
            }
        }
        Some(request)
    };
    let log_record = match (&state.aggregation, &owned) {
        (Some(aggregation), Some(request)) if !matched.is_empty() => {
            let input = WriteRequest {
                timeseries: matched
                    .iter()
                    .map(|&i| request.timeseries[i].clone())
                    .collect(),
                metadata: Vec::new(),
            };
            Some(
                aggregation
                    .log
                    .queue
                    .submit(&input.encode_snappy()?, input.item_count() as u64)
                    .inspect_err(|_| state.metrics.rejected(Reject::QueueFull, total_items))?,
            )
        }
        _ => None,
    };

    // What the answer says, from the view, before the body moves on.
    let rejection = view.rejection_message();
    let written_counts = (version == WriteVersion::V2).then(|| {
        // Remote-write 2.0: report what was written (accepted, not refused by a limit).
        let (mut samples, mut histograms, mut exemplars) = (0, 0, 0);
        for (series, ok) in view.accepted().zip(&admitted) {
            if *ok {
                samples += series.samples.len();
                histograms += series.histograms;
                exemplars += series.exemplars;
            }
        }
        (samples, histograms, exemplars)
    });

    // Fan-out: the bytes as they came when nothing changed, else the kept series again.
    let entries = if unchanged { view.take_entries() } else { None };
    drop(view);
    let written = match (entries, owned.as_mut()) {
        (Some(entries), _) => {
            let batch = Decoded::with_entries(raw, entries);
            state.fanout.write(batch, Some(body), total_items).await
        }
        (None, Some(request)) if !unchanged => {
            let mut kept = keep.iter();
            request
                .timeseries
                .retain(|_| kept.next().copied().unwrap_or(false));
            forward(state, request).await
        }
        (None, _) => match Decoded::new(raw) {
            Ok(batch) => state.fanout.write(batch, Some(body), total_items).await,
            Err(e) => Err(e.into()),
        },
    };
    let written = match (written, log_record) {
        (Ok(()), Some(log)) => log.durable().await.map_err(Error::from),
        (written, _) => written,
    };
    if let Err(e) = written {
        let reason = match &e {
            Error::Relay(strata_relay::Error::QueueFull { .. }) => Reject::QueueFull,
            _ => Reject::Unavailable,
        };
        state.metrics.rejected(reason, total_items - refused_items);
        return Err(e);
    }
    state
        .metrics
        .received(sender_name, total_items - refused_items);

    let mut resp = match (limit_message, rejection) {
        (Some(limit), invalid) => {
            let mut msg = limit;
            if let Some(invalid) = invalid {
                msg.push('\n');
                msg.push_str(&invalid);
            }
            too_many_requests(msg + "\n")
        }
        (None, Some(invalid)) => (StatusCode::BAD_REQUEST, invalid + "\n").into_response(),
        (None, None) => StatusCode::NO_CONTENT.into_response(),
    };
    if let Some((samples, histograms, exemplars)) = written_counts {
        let h = resp.headers_mut();
        for (name, n) in protocol::written_headers(samples, histograms, exemplars) {
            h.insert(name, HeaderValue::from(n));
        }
    }
    Ok(resp)
}

/// Writes what is left of a request to every upstream.
async fn forward(state: &AppState, request: &WriteRequest) -> Result<()> {
    if request.timeseries.is_empty() && request.metadata.is_empty() {
        return Ok(());
    }
    let batch = Decoded::new(request.encode_body())?;
    state
        .fanout
        .write(batch, None, request.item_count() as u64)
        .await
}

/// The 403 message when a series lacks the sender's labels, naming the first few.
fn forbidden(sender: &Sender, view: &strata_wire::view::ValidatedView<'_>) -> Option<String> {
    let mut bad = view
        .accepted()
        .filter_map(|s| sender.violation(s.labels).map(|v| (s.labels, v)))
        .peekable();
    bad.peek()?;
    let mut msg = format!(
        "sender {:?} may only write series with {}; nothing of this request was written:",
        sender.name,
        strata_wire::labels::render(&sender.labels)
    );
    for (labels, (name, want, found)) in bad.take(5) {
        msg.push_str(&format!(
            "\n  {}: {name} is {}, must be {want:?}",
            strata_wire::labels::render(labels),
            found.map_or("missing".to_string(), |f| format!("{f:?}"))
        ));
    }
    Some(msg)
}

async fn upstreams(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"status": "success", "data": state.fanout.status()})).into_response()
}

async fn cells(State(state): State<Arc<AppState>>) -> Response {
    let cells = state.limits.prune(Instant::now());
    axum::Json(json!({"status": "success", "data": cells})).into_response()
}

async fn aggregation(State(state): State<Arc<AppState>>) -> Response {
    let rules = state
        .aggregation
        .as_ref()
        .map(|a| a.lock().stats())
        .unwrap_or_default();
    axum::Json(json!({"status": "success", "data": rules})).into_response()
}

async fn metrics_page(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&state.registry),
    )
        .into_response()
}

async fn reload(State(state): State<Arc<AppState>>) -> Response {
    match state.reload() {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("reload failed, the running configuration is kept: {e}\n"),
        )
            .into_response(),
    }
}

/// Runs stream aggregation: takes the input from the aggregation log as it arrives, emits
/// closed windows upstream every second, records how far windows were emitted, and releases
/// the log records no open window needs any more. Output that cannot be queued is retried on
/// the next tick, then dropped (counted) once it is a minute old.
async fn run_aggregation(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(aggregation) = &state.aggregation else {
        return;
    };
    let log = &aggregation.log;
    // A record read at T feeds windows that end by T + MAX_FUTURE_MS + the longest interval.
    let hold = MAX_FUTURE_MS + aggregation.lock().max_interval_ms();
    let lateness = state.aggregation_lateness_ms;
    let mut read: VecDeque<(u64, i64)> = VecDeque::new();
    let mut pending: Vec<(Instant, WriteRequest)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            record = log.queue.next() => {
                let Some(record) = record else { return };
                let now = now_ms();
                match WriteView::decode(WriteVersion::V1, &record.decoded.body) {
                    Ok(view) => {
                        let mut agg = aggregation.lock();
                        for series in view.iter() {
                            if record.seq < aggregation.replay_before {
                                agg.replay(series.labels, series.samples, now);
                            } else {
                                agg.push(series.labels, series.samples, now);
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "undecodable aggregation input; skipped"),
                }
                read.push_back((record.seq, now));
                continue;
            }
            _ = tick.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        let now = now_ms();
        let (out, stats) = {
            let mut agg = aggregation.lock();
            (agg.flush(now), agg.stats())
        };
        for s in &stats {
            state
                .metrics
                .aggregation(s.rule, s.samples, s.late, s.future, s.emitted, s.groups);
        }
        if !out.is_empty() {
            pending.push((
                Instant::now(),
                WriteRequest {
                    timeseries: out,
                    metadata: Vec::new(),
                },
            ));
        }
        while let Some((since, request)) = pending.first() {
            match forward(&state, request).await {
                Ok(()) => {
                    pending.remove(0);
                }
                Err(e) if since.elapsed() > Duration::from_secs(60) => {
                    tracing::warn!(error = %e, "aggregated samples could not be queued for a minute; dropped");
                    state
                        .metrics
                        .aggregation_not_queued
                        .inc_by(request.item_count() as u64);
                    pending.remove(0);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "aggregated samples not queued yet; retrying");
                    break;
                }
            }
        }
        if !pending.is_empty() {
            continue;
        }
        // Everything emitted so far is durable upstream.
        let through = now - lateness;
        if let Err(e) = log.set_emitted_through(through) {
            tracing::warn!(error = %e, "cannot record aggregation progress; the log is kept");
            continue;
        }
        while let Some(&(seq, read_at)) = read.front() {
            if read_at + hold > through {
                break;
            }
            log.queue.ack(seq);
            read.pop_front();
        }
    }
}

/// Refreshes the per-cell active-series figures every 30 s (and forgets idle series).
async fn prune_limits(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        for cell in state.limits.prune(Instant::now()) {
            state.metrics.active_series(&cell.cell, cell.active_series);
        }
    }
}

/// Runs the cascade until `shutdown` resolves: stops accepting, emits nothing more, closes the
/// queues (their contents stay on disk for the next start) and returns.
pub async fn run(
    options: CascadeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = Config::load(&options.config)?;
    let state = Arc::new(AppState::new(
        &config,
        &options.data_dir,
        Some(options.config.clone()),
    )?);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| strata_relay::Error::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| strata_relay::Error::Listen {
            addr: options.listen,
            source,
        })?;
    let upstreams: Vec<&str> = state
        .fanout
        .upstreams
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    tracing::info!(listen = %local, upstreams = ?upstreams, data = %options.data_dir.display(), auth = state.auth().enabled(), "strata cascade started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let senders = state.fanout.spawn_senders(&stop_rx);
    let flusher = tokio::spawn(run_aggregation(state.clone(), stop_rx.clone()));
    let pruner = tokio::spawn(prune_limits(state.clone(), stop_rx.clone()));
    let reloader = {
        let state = state.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        if let Err(e) = state.reload() {
                            tracing::error!(error = %e, "reload failed; the running configuration is kept");
                        }
                    }
                    _ = stop.wait_for(|&s| s) => return,
                }
            }
        })
    };
    let mut server_stop = stop_rx;
    let server = axum::serve(listener, router(state.clone(), config.max_request_bytes()))
        .with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|&s| s).await;
        });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("strata cascade stopping");
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = flusher.await;
    let _ = pruner.await;
    let _ = reloader.await;
    for s in senders {
        let _ = s.await;
    }
    state.fanout.close();
    if let Some(aggregation) = &state.aggregation {
        aggregation.log.queue.close();
    }
    Ok(())
}
