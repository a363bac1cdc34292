//! `strata sim serve`: the fleet's exporters over HTTP, with Prometheus HTTP service discovery
//! so an edge per cell finds its cell's targets, including clusters onboarded while it runs.
//!
//! - `GET /sd/{cell}/{job}`: the job's targets in the cell now, in the format of Prometheus's
//!   `http_sd_configs` (a JSON list of `{targets, labels}` groups; each target sets
//!   `__metrics_path__` and `instance`, hosted ones `cluster`).
//! - `GET /cells/{cell}/{job}/{index}/metrics`: a target's page now, in the text format.
//! - `GET /api/v1/fleet`: the fleet (cells, meta nodes, clusters onboarded now).
//! - `GET /api/v1/truth?utilisation=0.6,1&horizon_days=365`: the ground truth from now.
//! - `/metrics`, `/-/ready`, `/-/healthy`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use strata_wire::clock::now_ms;
use strata_wire::expose::{CONTENT_TYPE, expose};

use crate::model::Fleet;
use crate::page::{Counters, Job, Target, render};
use crate::truth::truths;
use crate::{Error, FleetConfig, Result};

/// What `strata sim serve` needs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub fleet: FleetConfig,
    pub listen: SocketAddr,
}

/// The exporter's state: the fleet, and the counters' running integrals per cell.
#[derive(Debug)]
pub struct SimState {
    fleet: Arc<Fleet>,
    counters: Vec<Mutex<Counters>>,
    metrics: crate::metrics::SimMetrics,
    registry: Registry,
    /// `host:port` that service discovery hands out as the targets' address.
    advertise: String,
}

impl SimState {
    pub fn new(fleet: Arc<Fleet>, advertise: String) -> Self {
        let mut registry = Registry::default();
        let metrics = crate::metrics::SimMetrics::register(&mut registry);
        Self {
            counters: fleet.cells.iter().map(|_| Mutex::default()).collect(),
            fleet,
            metrics,
            registry,
            advertise,
        }
    }
}

/// The exporter's routes.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/sd/{cell}/{job}", get(discovery))
        .route("/cells/{cell}/{job}/{index}/metrics", get(page))
        .route("/api/v1/fleet", get(fleet_summary))
        .route("/api/v1/truth", get(truth))
        .route("/metrics", get(self_metrics))
        .route("/-/ready", get(|| async { "strata sim is ready.\n" }))
        .route("/-/healthy", get(|| async { "strata sim is healthy.\n" }))
        .with_state(state)
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, message + "\n").into_response()
}

/// The cell and job a path names, or what to say instead.
fn lookup(state: &SimState, cell: &str, job: &str) -> Result<(usize, Job), String> {
    let Some((index, _)) = state.fleet.cell(cell) else {
        return Err(format!(
            "no cell {cell:?} in this fleet; GET /api/v1/fleet lists them"
        ));
    };
    let Some(job) = Job::from_name(job) else {
        let jobs: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
        return Err(format!("no job {job:?}; the jobs are {}", jobs.join(", ")));
    };
    Ok((index, job))
}

#[derive(Serialize)]
struct TargetGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<&'static str, String>,
}

async fn discovery(
    State(state): State<Arc<SimState>>,
    Path((cell, job)): Path<(String, String)>,
) -> Response {
    let (cell, job) = match lookup(&state, &cell, &job) {
        Ok(found) => found,
        Err(message) => return not_found(message),
    };
    state.metrics.sd_request();
    let fleet = &state.fleet;
    let groups: Vec<TargetGroup> = fleet
        .targets(cell, job, now_ms())
        .into_iter()
        .map(|target| {
            let mut labels: std::collections::BTreeMap<&'static str, String> =
                target.labels(fleet).into_iter().collect();
            labels.insert("__metrics_path__", target.path(fleet));
            labels.insert("instance", target.instance(fleet));
            TargetGroup {
                targets: vec![state.advertise.clone()],
                labels,
            }
        })
        .collect();
    axum::Json(groups).into_response()
}

async fn page(
    State(state): State<Arc<SimState>>,
    Path((cell, job, index)): Path<(String, String, usize)>,
) -> Response {
    let (cell, job) = match lookup(&state, &cell, &job) {
        Ok(found) => found,
        Err(message) => return not_found(message),
    };
    let target = Target { cell, job, index };
    let t = now_ms();
    if !state.fleet.exists(&target, t) {
        return not_found(format!(
            "no {} target {index} in this cell now; GET /sd/{}/{} lists them",
            job.name(),
            state.fleet.cells[cell].name,
            job.name()
        ));
    }
    let started = Instant::now();
    let families = {
        let Ok(mut counters) = state.counters[cell].lock() else {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "counter state poisoned\n",
            )
                .into_response();
        };
        render(&state.fleet, target, t, &mut counters)
    };
    let samples = families.iter().map(|f| f.samples.len()).sum();
    state.metrics.page(job.name(), samples, started.elapsed());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], expose(&families)).into_response()
}

#[derive(Serialize)]
struct CellSummary<'a> {
    name: &'a str,
    region: &'a str,
    meta_nodes: usize,
    hosted_clusters: Vec<&'a str>,
}

async fn fleet_summary(State(state): State<Arc<SimState>>) -> Response {
    let t = now_ms();
    let cells: Vec<CellSummary> = state
        .fleet
        .cells
        .iter()
        .map(|c| CellSummary {
            name: &c.name,
            region: &c.region,
            meta_nodes: c.meta_nodes,
            hosted_clusters: c.active(t).iter().map(|k| k.name.as_str()).collect(),
        })
        .collect();
    axum::Json(serde_json::json!({
        "seed": state.fleet.seed,
        "anchor": crate::config::format_time_ms(state.fleet.anchor_ms),
        "cells": cells,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct TruthQuery {
    utilisation: Option<String>,
    horizon_days: Option<i64>,
}

async fn truth(State(state): State<Arc<SimState>>, Query(q): Query<TruthQuery>) -> Response {
    let utilisations = match parse_utilisations(q.utilisation.as_deref().unwrap_or("0.6,1")) {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let fleet = state.fleet.clone();
    let horizon = q.horizon_days.unwrap_or(365);
    match tokio::task::spawn_blocking(move || truths(&fleet, now_ms(), horizon, &utilisations))
        .await
    {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Parses `0.6,1` into fractions of a limit, each in (0, 10].
pub fn parse_utilisations(text: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let value = part.strip_suffix('%').map_or_else(
                || part.parse::<f64>(),
                |p| p.parse::<f64>().map(|v| v / 100.0),
            );
            match value {
                Ok(v) if v > 0.0 && v <= 10.0 => Ok(v),
                _ => Err(Error::Config(format!(
                    "utilisation {part:?} is not a fraction of the limit; write e.g. 0.6,1 or 60%,100%"
                ))),
            }
        })
        .collect()
}

async fn self_metrics(State(state): State<Arc<SimState>>) -> Response {
    let t = now_ms();
    let hosted = state.fleet.cells.iter().map(|c| c.active(t).len()).sum();
    let counter_states = state
        .counters
        .iter()
        .map(|c| c.lock().map_or(0, |c| c.len()))
        .sum();
    state.metrics.set_state(hosted, counter_states);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Serves the fleet's exporters until `shutdown` resolves.
pub async fn run(
    opts: SimOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let fleet = Arc::new(Fleet::new(&opts.fleet)?);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Io {
            path: opts.listen.to_string().into(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Io {
        path: opts.listen.to_string().into(),
        source,
    })?;
    tracing::info!(
        listen = %local,
        cells = fleet.cells.len(),
        anchor = %crate::config::format_time_ms(fleet.anchor_ms),
        "strata sim serving; service discovery at /sd/<cell>/<job>"
    );
    let state = Arc::new(SimState::new(fleet, local.to_string()));
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            path: local.to_string().into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> Arc<SimState> {
        let fleet = Fleet::new(&FleetConfig {
            regions: 1,
            cells_per_region: 2,
            clusters_per_cell: 4,
            ..Default::default()
        })
        .expect("fleet");
        Arc::new(SimState::new(Arc::new(fleet), "127.0.0.1:9601".into()))
    }

    async fn get(state: &Arc<SimState>, uri: &str) -> (StatusCode, String) {
        let resp = router(state.clone())
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn discovery_lists_pages_that_serve() {
        let state = state();
        let (status, body) = get(&state, "/sd/us-east-1-c02/hosted-apiserver").await;
        assert_eq!(status, StatusCode::OK);
        let groups: serde_json::Value = serde_json::from_str(&body).expect("json");
        let groups = groups.as_array().expect("list");
        assert!(groups.len() >= 4, "{body}");
        for g in groups {
            assert_eq!(g["targets"][0], "127.0.0.1:9601");
            assert!(g["labels"]["cluster"].as_str().is_some());
            let path = g["labels"]["__metrics_path__"].as_str().expect("path");
            let (status, page) = get(&state, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(page.contains("apiserver_request_total{code=\"200\",verb=\"GET\"}"));
        }
        let (_, metrics) = get(&state, "/metrics").await;
        assert!(
            metrics.contains("strata_sim_scrapes_total{job=\"hosted-apiserver\"}"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn unknown_cells_jobs_and_targets_are_404_with_a_hint() {
        let state = state();
        let (status, body) = get(&state, "/sd/nowhere/node").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/api/v1/fleet"));
        let (status, body) = get(&state, "/sd/us-east-1-c01/kubelet").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("hosted-apiserver"));
        let (status, _) = get(&state, "/cells/us-east-1-c01/node/999/metrics").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get(&state, "/api/v1/truth?utilisation=abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("60%"));
    }

    #[test]
    fn utilisations_parse_as_fractions_or_percentages() {
        assert_eq!(parse_utilisations("0.6, 100%").expect("parses"), [0.6, 1.0]);
        assert!(parse_utilisations("0").is_err());
        assert!(parse_utilisations("").is_err());
    }
}
