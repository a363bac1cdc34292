//! `strata relay`: a standalone store-and-forward hop. It receives remote-write (1.0 and 2.0),
//! makes every valid series durable in its queue before answering, and forwards the queue to
//! one destination. Cascades add auth, limits, aggregation and fan-out on top of this path.
//!
//! Status codes follow the remote-write specs: 204 when everything was written; 400 (with the
//! reasons) for invalid series, after the valid ones were made durable; 413 for a body over the
//! limit; 415 for an unknown message type; 429 with `Retry-After` when the queue is full; 503
//! when the disk refuses the write.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use strata_wire::protocol::{self, WriteVersion};
use strata_wire::validate;

use crate::config::RelayConfig;
use crate::metrics::{self, RelayMetrics};
use crate::queue::Queue;
use crate::{Error, Result, sender};

/// Shared state of the relay's HTTP handlers.
#[derive(Debug)]
pub struct AppState {
    pub queue: Queue,
    pub registry: Registry,
    pub max_decoded_bytes: usize,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::RecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Wire(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::QueueIo { .. }
            | Error::QueueClosed
            | Error::Listen { .. }
            | Error::Client(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            return too_many_requests(format!("{self}\n"));
        }
        (status, format!("{self}\n")).into_response()
    }
}

/// A 429 with `Retry-After` (seconds), which remote-write senders honour before retrying.
pub fn too_many_requests(message: String) -> Response {
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, message).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// The relay's routes: `/api/v1/write`, `/metrics`, `/-/ready`, `/-/healthy`.
pub fn router(state: Arc<AppState>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/metrics", get(metrics_page))
        .route("/-/ready", get(|| async { "strata relay is ready.\n" }))
        .route("/-/healthy", get(|| async { "strata relay is healthy.\n" }))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

async fn write(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (version, validated) =
        validate::decode_write(content_type, &body, state.max_decoded_bytes)?;
    let accepted = &validated.accepted;
    if !accepted.timeseries.is_empty() || !accepted.metadata.is_empty() {
        state.queue.append(accepted).await?;
    }
    let mut resp = match validated.rejection_message() {
        Some(msg) => (StatusCode::BAD_REQUEST, msg + "\n").into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if version == WriteVersion::V2 {
        // Remote-write 2.0: report what was written, also on a partial 400.
        let h = resp.headers_mut();
        for (name, n) in protocol::written_headers(
            accepted.sample_count(),
            accepted.histogram_count(),
            accepted.exemplar_count(),
        ) {
            h.insert(name, HeaderValue::from(n));
        }
    }
    Ok(resp)
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

/// Runs the relay until `shutdown` resolves, then stops accepting, closes the queue (its
/// contents stay on disk for the next start) and returns.
pub async fn run(
    config: RelayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let destination = config.remote_write.validate()?;
    let mut registry = Registry::default();
    let relay_metrics = RelayMetrics::register(&mut registry, &destination);
    let queue = Queue::open(
        &config.queue_dir,
        config.queue.clone(),
        relay_metrics.clone(),
    )?;
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
    tracing::info!(listen = %local, destination = %config.remote_write.url, queue = %config.queue_dir.display(), "strata relay started");
    let state = Arc::new(AppState {
        queue: queue.clone(),
        registry,
        max_decoded_bytes: config.max_decoded_bytes,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sender_stop = stop_rx.clone();
    let sender = tokio::spawn(sender::run(
        queue.clone(),
        config.remote_write.clone(),
        relay_metrics,
        async move {
            let _ = sender_stop.wait_for(|&s| s).await;
        },
    ));
    let mut server_stop = stop_rx;
    let server = axum::serve(listener, router(state, config.max_request_bytes))
        .with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|&s| s).await;
        });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("strata relay stopping");
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = sender.await;
    queue.close();
    Ok(())
}
