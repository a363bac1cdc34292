//! `strata planner serve`: a report every interval, served over HTTP, exported as metrics and
//! sent as notifications.
//!
//! - `GET /`: the report as a self-contained HTML page with charts.
//! - `GET /api/v1/report`: the report's JSON (schema `strata.planner.report/v1`);
//!   `GET /report.md`: Markdown.
//! - `GET /charts/{cell}/{resource}.svg` and `.png` (`?pool=` for pooled resources): one
//!   resource's history, forecast band, limit and headroom lines.
//! - `GET /metrics`: the forecasts as series for Grafana panels and alert rules, and the
//!   planner's own metrics.
//! - `GET /-/healthy`; `GET /-/ready` answers 200 once the first report is made.
//!
//! A failed report (the store down, a query refused) keeps the last good one served, is
//! logged and counted, and `strata_planner_last_success_timestamp_seconds` stops moving.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use strata_wire::clock::now_ms;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use strata_wire::expose::{CONTENT_TYPE, Family, Kind, expose};
use tracing::{info, warn};

use crate::chart::{self, Format};
use crate::notify::{self, Notifier, NotifyOptions};
use crate::plan::{Exhaustion, Forecasted, Report};
use crate::{Error, PlannerConfig, Result, Source, render};

/// What `strata planner serve` needs.
#[derive(Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub source: Source,
    pub config: PlannerConfig,
    pub notify: NotifyOptions,
}

/// The latest good report and what was made from it.
#[derive(Debug)]
struct Latest {
    report: Report,
    forecasts: Vec<Forecasted>,
    html: String,
}

#[derive(Debug, Default)]
struct Counters {
    reports_ok: AtomicU64,
    reports_failed: AtomicU64,
    firing_sent: AtomicU64,
    resolved_sent: AtomicU64,
    failed_sends: AtomicU64,
    alerts_firing: AtomicU64,
    last_success_ms: AtomicU64,
    last_duration_ms: AtomicU64,
}

#[derive(Debug)]
pub struct ServeState {
    latest: RwLock<Option<Arc<Latest>>>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

impl ServeState {
    fn new() -> Self {
        Self {
            latest: RwLock::new(None),
            counters: Counters::default(),
            last_error: Mutex::new(None),
        }
    }

    fn latest(&self) -> Option<Arc<Latest>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }
}

/// The planner's routes.
pub fn router(state: Arc<ServeState>) -> Router {
    Router::new()
        .route("/", get(html))
        .route("/api/v1/report", get(json))
        .route("/report.md", get(markdown))
        .route("/charts/{cell}/{file}", get(chart_file))
        .route("/metrics", get(metrics))
        .route("/-/ready", get(ready))
        .route(
            "/-/healthy",
            get(|| async { "strata planner is healthy.\n" }),
        )
        .with_state(state)
}

fn not_ready(state: &ServeState) -> Response {
    let why = state
        .last_error
        .lock()
        .ok()
        .and_then(|e| e.clone())
        .map_or_else(
            || "the first report is being made".to_string(),
            |e| format!("the first report failed: {e}"),
        );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("strata planner is not ready: {why}\n"),
    )
        .into_response()
}

async fn ready(State(state): State<Arc<ServeState>>) -> Response {
    match state.latest() {
        Some(_) => "strata planner is ready.\n".into_response(),
        None => not_ready(&state),
    }
}

async fn html(State(state): State<Arc<ServeState>>) -> Response {
    match state.latest() {
        Some(l) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            l.html.clone(),
        )
            .into_response(),
        None => not_ready(&state),
    }
}

async fn json(State(state): State<Arc<ServeState>>) -> Response {
    match state.latest() {
        Some(l) => (
            [(header::CONTENT_TYPE, "application/json")],
            render::json(&l.report),
        )
            .into_response(),
        None => not_ready(&state),
    }
}

async fn markdown(State(state): State<Arc<ServeState>>) -> Response {
    match state.latest() {
        Some(l) => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            render::markdown(&l.report),
        )
            .into_response(),
        None => not_ready(&state),
    }
}

#[derive(Debug, Deserialize)]
struct ChartQuery {
    pool: Option<String>,
}

async fn chart_file(
    State(state): State<Arc<ServeState>>,
    Path((cell, file)): Path<(String, String)>,
    Query(q): Query<ChartQuery>,
) -> Response {
    let Some(latest) = state.latest() else {
        return not_ready(&state);
    };
    let (resource, format) = match file.rsplit_once('.') {
        Some((r, "svg")) => (r, Format::Svg),
        Some((r, "png")) => (r, Format::Png),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "charts are /charts/<cell>/<resource>.svg or .png\n",
            )
                .into_response();
        }
    };
    let Some(index) = latest.forecasts.iter().position(|f| {
        f.series.cell == cell && f.series.resource == resource && f.series.pool == q.pool
    }) else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no resource {resource} (pool {:?}) in cell {cell} in the report of {}\n",
                q.pool, latest.report.at
            ),
        )
            .into_response();
    };
    let made = tokio::task::spawn_blocking(move || {
        let settings = &latest.report.settings;
        chart::draw(
            &latest.forecasts[index],
            latest.report.at_ms,
            settings.headroom,
            settings.horizon_days,
            format,
        )
    })
    .await;
    match made {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<ServeState>>) -> Response {
    let mut families = state
        .latest()
        .map(|l| forecast_families(&l.report))
        .unwrap_or_default();
    families.extend(self_families(&state.counters));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], expose(&families)).into_response()
}

/// The report's forecasts and decisions as series.
pub fn forecast_families(report: &Report) -> Vec<Family> {
    let mut utilisation = Family::new(
        "strata_planner_resource_utilisation",
        Kind::Gauge,
        "Peak use of the last day over the limit, per cell resource (1 = full).",
    );
    let mut used = Family::new(
        "strata_planner_resource_used",
        Kind::Gauge,
        "Peak use of the last day, per cell resource, in the resource's unit.",
    );
    let mut limit = Family::new(
        "strata_planner_resource_limit",
        Kind::Gauge,
        "The limit of each cell resource, in the resource's unit.",
    );
    let mut growth = Family::new(
        "strata_planner_resource_growth_per_day",
        Kind::Gauge,
        "Forecast growth per day of each cell resource, in the resource's unit.",
    );
    let mut to_headroom = Family::new(
        "strata_planner_days_to_headroom",
        Kind::Gauge,
        "Forecast days until the resource reaches the headroom line, by quantile; absent when not within the horizon.",
    );
    let mut to_exhaustion = Family::new(
        "strata_planner_days_to_exhaustion",
        Kind::Gauge,
        "Forecast days until the resource reaches its limit, by quantile; absent when not within the horizon.",
    );
    let mut act_by = Family::new(
        "strata_planner_decision_act_by_days",
        Kind::Gauge,
        "Days until each decision must be acted on (negative: overdue).",
    );
    for c in &report.cells {
        for r in &c.resources {
            let labels = || {
                let mut l = vec![
                    ("region", c.region.clone()),
                    ("cell", c.cell.clone()),
                    ("resource", r.resource.clone()),
                ];
                if let Some(p) = &r.pool {
                    l.push(("pool", p.clone()));
                }
                l
            };
            used.push(labels(), r.current);
            if let Some(v) = r.limit {
                limit.push(labels(), v);
            }
            if let Some(v) = r.utilisation {
                utilisation.push(labels(), v);
            }
            if let Some(v) = r.growth_per_day {
                growth.push(labels(), v);
            }
            for (family, crossing) in [
                (&mut to_headroom, &r.headroom),
                (&mut to_exhaustion, &r.exhaustion),
            ] {
                let Some(Exhaustion {
                    p10_days,
                    p50_days,
                    p90_days,
                    ..
                }) = crossing
                else {
                    continue;
                };
                for (q, days) in [("0.1", p10_days), ("0.5", p50_days), ("0.9", p90_days)] {
                    if let Some(d) = days {
                        let mut l = labels();
                        l.push(("quantile", q.into()));
                        family.push(l, *d);
                    }
                }
            }
        }
    }
    for d in &report.decisions {
        let mut l = vec![
            ("kind", serde_label(&d.kind)),
            ("urgency", serde_label(&d.urgency)),
            ("region", d.region.clone()),
            ("cell", d.cell.clone()),
        ];
        if let Some(cluster) = &d.cluster {
            l.push(("cluster", cluster.clone()));
        }
        act_by.push(l, d.act_by_days);
    }
    vec![
        utilisation,
        used,
        limit,
        growth,
        to_headroom,
        to_exhaustion,
        act_by,
    ]
}

/// A unit enum's JSON name (`act_now`, `split_cell`).
fn serde_label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn self_families(c: &Counters) -> Vec<Family> {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    vec![
        Family::new(
            "strata_planner_reports_total",
            Kind::Counter,
            "Reports made, by result.",
        )
        .with(vec![("result", "ok".into())], get(&c.reports_ok))
        .with(vec![("result", "failed".into())], get(&c.reports_failed)),
        Family::new(
            "strata_planner_last_success_timestamp_seconds",
            Kind::Gauge,
            "When the last good report was made (Unix seconds; 0: never).",
        )
        .with(vec![], get(&c.last_success_ms) / 1000.0),
        Family::new(
            "strata_planner_report_duration_seconds",
            Kind::Gauge,
            "How long the last report took to make.",
        )
        .with(vec![], get(&c.last_duration_ms) / 1000.0),
        Family::new(
            "strata_planner_notifications_total",
            Kind::Counter,
            "Notifications delivered (firing or resolved) and deliveries that failed after retries.",
        )
        .with(vec![("result", "firing".into())], get(&c.firing_sent))
        .with(vec![("result", "resolved".into())], get(&c.resolved_sent))
        .with(vec![("result", "failed".into())], get(&c.failed_sends)),
        Family::new(
            "strata_planner_alerts_firing",
            Kind::Gauge,
            "Decisions in their lead time, notified as firing alerts.",
        )
        .with(vec![], get(&c.alerts_firing)),
    ]
}

/// Makes one report and notifies; a failure leaves the last good report in place.
async fn cycle(opts: &ServeOptions, state: &ServeState, notifier: &mut Notifier) -> Result<()> {
    let started = Instant::now();
    let source = opts.source.counting_anew();
    let (report, forecasts) = crate::report(&source, &opts.config, now_ms(), |_| {}).await?;
    let html = render::html(&report, &forecasts, chart::Links::Served);
    let delivered = notifier
        .process(
            notify::alerts(&report, &opts.notify.external_url),
            report.at_ms,
        )
        .await;
    let c = &state.counters;
    c.firing_sent
        .fetch_add(delivered.firing as u64, Ordering::Relaxed);
    c.resolved_sent
        .fetch_add(delivered.resolved as u64, Ordering::Relaxed);
    c.failed_sends
        .fetch_add(delivered.failed as u64, Ordering::Relaxed);
    c.alerts_firing
        .store(notifier.firing() as u64, Ordering::Relaxed);
    c.last_duration_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    c.last_success_ms
        .store(report.at_ms.max(0) as u64, Ordering::Relaxed);
    c.reports_ok.fetch_add(1, Ordering::Relaxed);
    info!(
        decisions = report.decisions.len(),
        act_now = report.summary.act_now,
        sent = delivered.firing + delivered.resolved,
        failed = delivered.failed,
        queries = report.cost.queries,
        "report made"
    );
    if let Ok(mut latest) = state.latest.write() {
        *latest = Some(Arc::new(Latest {
            report,
            forecasts,
            html,
        }));
    }
    Ok(())
}

/// Serves until `shutdown` resolves, making a report now and then every interval.
pub async fn run(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut notifier = Notifier::new(opts.notify.clone())?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Io {
            path: opts.listen.to_string().into(),
            source,
        })?;
    let state = Arc::new(ServeState::new());
    info!(listen = %opts.listen, source = opts.source.url(), interval = ?opts.interval, "strata planner serving");
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(shutdown);
    let reports = async {
        let mut tick = tokio::time::interval(opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match cycle(&opts, &state, &mut notifier).await {
                Ok(()) => {
                    if let Ok(mut e) = state.last_error.lock() {
                        *e = None;
                    }
                }
                Err(e) => {
                    state
                        .counters
                        .reports_failed
                        .fetch_add(1, Ordering::Relaxed);
                    warn!("report failed, serving the last good one: {e}");
                    if let Ok(mut last) = state.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                }
            }
        }
    };
    tokio::select! {
        served = server => served.map_err(|source| Error::Io {
            path: opts.listen.to_string().into(),
            source,
        }),
        () = reports => Ok(()),
    }
}
