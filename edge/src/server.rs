//! `strata edge`: runs the configuration's scrape jobs and remote-write destinations, reloads
//! on SIGHUP and `POST /-/reload`, and serves its own endpoints:
//!
//! - `/api/v1/targets` (`?state=active|dropped|any`) in Prometheus's JSON shape;
//! - `/metrics`: the edge's self-metrics and each destination's relay metrics;
//! - `/-/ready` (the first configuration is running) and `/-/healthy`.
//!
//! A reload reads and checks the whole file first; a bad file is refused with its reason
//! (logged, answered to `/-/reload`, and `strata_edge_config_last_reload_successful` 0) and
//! the running configuration stays. Queues of destinations that stay keep their data; a
//! removed destination's queue is closed and left on disk.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_relay::metrics::RelayMetrics;
use strata_relay::{SenderConfig, remote_write};
use strata_wire::Label;
use strata_wire::duration::format_duration_ms;
use strata_wire::labels::fingerprint;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::forward::{self, Destination, ForwardMetrics, Outputs};
use crate::jobs::{Job, Shared, Views};
use crate::scrape::Stop;

/// How the edge runs, from its command line.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub config: PathBuf,
    pub listen: SocketAddr,
    /// Holds one queue directory per destination under `queues/`.
    pub data_dir: PathBuf,
    /// Bound of each destination's queue on disk.
    pub max_queue_bytes: u64,
}

/// A destination with its sender running.
#[derive(Debug)]
struct RunningDestination {
    dest: Arc<Destination>,
    stop: oneshot::Sender<()>,
    sender: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Running {
    jobs: HashMap<String, Job>,
    /// By queue directory.
    destinations: HashMap<PathBuf, RunningDestination>,
}

#[derive(Debug)]
struct Edge {
    opts: EdgeOptions,
    registry: Mutex<Registry>,
    relay_metrics: Mutex<HashMap<String, RelayMetrics>>,
    forward_metrics: ForwardMetrics,
    reload_ok: Gauge,
    reload_time: Gauge<f64, AtomicU64>,
    ready: AtomicBool,
    shared: Shared,
    external: watch::Sender<Arc<Vec<Label>>>,
    outputs: watch::Sender<Arc<Outputs>>,
    running: tokio::sync::Mutex<Running>,
}

impl Edge {
    fn relay_metrics(&self, name: &str) -> RelayMetrics {
        let mut known = self.relay_metrics.lock().unwrap_or_else(|e| e.into_inner());
        known
            .entry(name.to_string())
            .or_insert_with(|| {
                self.forward_metrics.add_destination(name);
                let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                RelayMetrics::register(&mut registry, name)
            })
            .clone()
    }

    /// Makes `config` the running configuration, or changes nothing and says why not.
    async fn apply(&self, config: Config) -> Result<(), String> {
        let mut running = self.running.lock().await;
        let queue_root = self.opts.data_dir.join("queues");
        // Open the new destinations' queues before changing anything; on failure close
        // the ones opened here.
        let mut opened: Vec<(PathBuf, SenderConfig, Arc<Destination>)> = Vec::new();
        for rw in &config.remote_write {
            let dest = remote_write::sender_config(rw)
                .map_err(|e| format!("remote_write {}: {e}", rw.url))
                .and_then(|(sc, name)| {
                    let dir = remote_write::queue_dir(&queue_root, &name, &rw.url);
                    let dest = match running.destinations.get(&dir) {
                        Some(old) => Destination::reuse(&old.dest, rw),
                        None => Destination::open(
                            rw,
                            &name,
                            &dir,
                            self.opts.max_queue_bytes,
                            self.relay_metrics(&name),
                        )?,
                    };
                    Ok((dir, sc, Arc::new(dest)))
                });
            match dest {
                Ok(d) => opened.push(d),
                Err(e) => {
                    for (dir, _, d) in &opened {
                        if !running.destinations.contains_key(dir) {
                            d.queue.close();
                        }
                    }
                    return Err(e);
                }
            }
        }
        for (dir, old) in running.destinations.drain() {
            let _ = old.stop.send(());
            let _ = old.sender.await;
            if !opened.iter().any(|(d, _, _)| *d == dir) {
                tracing::info!(destination = %old.dest.name, "remote_write removed; its queue stays on disk");
                old.dest.queue.close();
            }
        }
        let mut destinations = Vec::new();
        for (dir, sc, dest) in opened {
            let (stop, stopped) = oneshot::channel::<()>();
            let sender = tokio::spawn(strata_relay::sender::run(
                dest.queue.clone(),
                sc,
                dest.metrics.clone(),
                async move {
                    let _ = stopped.await;
                },
            ));
            let sender = tokio::spawn(async move {
                if let Ok(Err(e)) = sender.await {
                    tracing::error!(error = %e, "remote-write sender stopped");
                }
            });
            destinations.push(dest.clone());
            running
                .destinations
                .insert(dir, RunningDestination { dest, stop, sender });
        }
        self.outputs
            .send_replace(Arc::new(Outputs { destinations }));
        // Before the jobs are updated: their new settings read these.
        self.external
            .send_replace(Arc::new(config.global.external_label_list()));
        let mut jobs: HashMap<String, Job> = std::mem::take(&mut running.jobs);
        for sc in config.scrape_configs {
            let name = sc.job_name.clone();
            let job = match jobs.remove(&name) {
                Some(job) => {
                    job.update(sc);
                    job
                }
                None => Job::start(sc, self.shared.clone()),
            };
            running.jobs.insert(name, job);
        }
        for (name, job) in jobs {
            tracing::info!(job = %name, "scrape job removed; its series end with staleness markers");
            drop(job.stop(Stop::Removed));
        }
        Ok(())
    }

    /// Reads the configuration file again and applies it; the outcome is logged and exported.
    async fn reload(&self) -> Result<(), String> {
        let outcome = match Config::load(&self.opts.config) {
            Ok(config) => self.apply(config).await,
            Err(e) => Err(e.to_string()),
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(file = %self.opts.config.display(), "configuration reloaded");
                self.reload_ok.set(1);
                self.reload_time.set(unix_seconds(SystemTime::now()));
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded; the previous one keeps running");
                self.reload_ok.set(0);
            }
        }
        outcome
    }

    /// Stops scraping, writes out what was scraped, stops the senders and closes the queues.
    async fn stop(
        &self,
        forwarder_stop: oneshot::Sender<()>,
        forwarder: tokio::task::JoinHandle<()>,
    ) {
        let mut running = self.running.lock().await;
        let stopping: Vec<_> = running
            .jobs
            .drain()
            .map(|(_, j)| j.stop(Stop::Shutdown))
            .collect();
        for task in stopping {
            let _ = task.await;
        }
        let _ = forwarder_stop.send(());
        let _ = forwarder.await;
        for (_, d) in running.destinations.drain() {
            let _ = d.stop.send(());
            let _ = d.sender.await;
            d.dest.queue.close();
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn label_map(labels: &[Label]) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

#[derive(Debug, Deserialize)]
struct TargetsParams {
    state: Option<String>,
}

/// `/api/v1/targets`, as Prometheus's `targets` handler shapes it.
fn targets_json(views: &Views, state: &str) -> Value {
    let views = views.read().unwrap_or_else(|e| e.into_inner());
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    for (job, view) in views.iter() {
        if matches!(state, "active" | "any") {
            let mut targets: Vec<_> = view.active.iter().collect();
            targets.sort_by_key(|(t, _)| fingerprint(&t.labels));
            for (t, status) in targets {
                let st = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let url = t.url();
                active.push(json!({
                    "discoveredLabels": label_map(&t.discovered),
                    "labels": label_map(&t.series_labels()),
                    "scrapePool": job,
                    "scrapeUrl": url,
                    "globalUrl": url,
                    "lastError": st.last_error,
                    "lastScrape": st.last_scrape.map_or_else(
                        || "0001-01-01T00:00:00Z".to_string(),
                        |t| humantime::format_rfc3339_nanos(t).to_string(),
                    ),
                    "lastScrapeDuration": st.last_duration.as_secs_f64(),
                    "health": st.health.as_str(),
                    "scrapeInterval": format_duration_ms(t.interval_ms),
                    "scrapeTimeout": format_duration_ms(t.timeout_ms),
                }));
            }
        }
        if matches!(state, "dropped" | "any") {
            for d in &view.dropped {
                dropped.push(json!({ "discoveredLabels": label_map(d) }));
            }
        }
    }
    json!({
        "status": "success",
        "data": { "activeTargets": active, "droppedTargets": dropped },
    })
}

async fn targets(State(edge): State<Arc<Edge>>, Query(p): Query<TargetsParams>) -> Response {
    let state = p.state.as_deref().unwrap_or("any").to_ascii_lowercase();
    if !matches!(state.as_str(), "active" | "dropped" | "any") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "status": "error",
                "errorType": "bad_data",
                "error": format!("invalid state {state:?}: use active, dropped or any"),
            })),
        )
            .into_response();
    }
    axum::Json(targets_json(&edge.shared.views, &state)).into_response()
}

async fn reload(State(edge): State<Arc<Edge>>) -> Response {
    match edge.reload().await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(edge): State<Arc<Edge>>) -> Response {
    let text = {
        let registry = edge.registry.lock().unwrap_or_else(|e| e.into_inner());
        strata_relay::metrics::render(&registry)
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn ready(State(edge): State<Arc<Edge>>) -> Response {
    if edge.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "strata edge is ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "strata edge is not ready.\n",
        )
            .into_response()
    }
}

fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/api/v1/targets", get(targets))
        .route("/-/reload", post(reload).put(reload))
        .route("/metrics", get(metrics))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "strata edge is healthy.\n" }))
        .with_state(edge)
}

/// Runs the edge until `shutdown` resolves. The configuration must be valid to start.
pub async fn run(
    opts: EdgeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let config = Config::load(&opts.config).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; choose another --listen address",
                opts.listen
            )
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let mut registry = Registry::default();
    let reload_ok = Gauge::default();
    let reload_time = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "strata_edge_config_last_reload_successful",
        "Whether the last configuration reload succeeded (1) or was refused (0)",
        reload_ok.clone(),
    );
    registry.register(
        "strata_edge_config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully",
        reload_time.clone(),
    );
    let targets = prometheus_client::metrics::family::Family::default();
    registry.register(
        "strata_edge_targets",
        "Targets per job and state (active: scraped; dropped: dropped by relabel_configs)",
        targets.clone(),
    );
    let sd_failures = prometheus_client::metrics::family::Family::default();
    registry.register(
        "strata_edge_sd_failures",
        "Service discovery refreshes that failed, per job and mechanism (file, http); the last good targets are kept",
        sd_failures.clone(),
    );
    let forward_metrics = ForwardMetrics::register(&mut registry);
    let (sink, batches) = mpsc::channel(1024);
    let (outputs, outputs_rx) = watch::channel(Arc::new(Outputs::default()));
    let (external, external_rx) = watch::channel(Arc::new(Vec::new()));
    let (forwarder_stop, forwarder_stopped) = oneshot::channel();
    let views = Views::default();
    let forwarder = tokio::spawn(forward::run(
        batches,
        outputs_rx,
        views.clone(),
        forward_metrics.clone(),
        forwarder_stopped,
    ));
    let seed = offset_seed(&config.global.external_label_list());
    let edge = Arc::new(Edge {
        opts,
        registry: Mutex::new(registry),
        relay_metrics: Mutex::new(HashMap::new()),
        forward_metrics,
        reload_ok,
        reload_time,
        ready: AtomicBool::new(false),
        shared: Shared {
            external: external_rx,
            sink,
            seed,
            views,
            targets,
            sd_failures,
        },
        external,
        outputs,
        running: tokio::sync::Mutex::new(Running::default()),
    });
    if let Err(e) = edge.apply(config).await {
        edge.stop(forwarder_stop, forwarder).await;
        return Err(e);
    }
    edge.reload_ok.set(1);
    edge.reload_time.set(unix_seconds(SystemTime::now()));
    edge.ready.store(true, Ordering::Release);
    tracing::info!(listen = %local, config = %edge.opts.config.display(), "strata edge started");
    let (server_stop, server_stopped) = oneshot::channel::<()>();
    let server = axum::serve(listener, router(edge.clone())).with_graceful_shutdown(async move {
        let _ = server_stopped.await;
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => {
                let _ = edge.reload().await;
            }
        }
    }
    tracing::info!("strata edge stopping");
    let _ = server_stop.send(());
    let _ = server.await;
    edge.stop(forwarder_stop, forwarder).await;
    Ok(())
}

/// Spreads the scrape slots of edges that scrape the same targets (an HA pair), as
/// Prometheus's offset seed does: a hash of the host name and the external labels.
fn offset_seed(external: &[Label]) -> u64 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let text = format!("{}{}", host.trim(), strata_wire::labels::render(external));
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}
