//! The sender and the relay's receive path against an in-process axum receiver.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use prometheus_client::registry::Registry;
use strata_relay::config::{QueueConfig, SenderConfig};
use strata_relay::metrics::{DropReason, RelayMetrics};
use strata_relay::server::{AppState, router};
use strata_relay::{Queue, sender};
use strata_wire::{Label, Sample, TimeSeries, WriteRequest, v2};
use tower::ServiceExt;

/// What the test receiver saw, and how it should answer the next requests.
#[derive(Default)]
struct Receiver {
    /// series → timestamps in arrival order
    series: HashMap<String, Vec<i64>>,
    requests: usize,
    /// Status codes to answer, front first, before answering 204.
    script: Vec<(StatusCode, Option<&'static str>)>,
}

async fn receive(State(rx): State<Arc<Mutex<Receiver>>>, body: Bytes) -> axum::response::Response {
    let req = WriteRequest::decode_snappy(&body, 64 << 20).unwrap();
    let mut r = rx.lock().unwrap();
    r.requests += 1;
    if !r.script.is_empty() {
        let (status, retry_after) = r.script.remove(0);
        let mut resp = (status, "scripted failure").into_response();
        if let Some(ra) = retry_after {
            resp.headers_mut()
                .insert("Retry-After", ra.parse().unwrap());
        }
        return resp;
    }
    for ts in req.timeseries {
        let key = format!("{:?}", ts.labels);
        r.series
            .entry(key)
            .or_default()
            .extend(ts.samples.iter().map(|s| s.timestamp));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn start_receiver(rx: Arc<Mutex<Receiver>>) -> String {
    let app = Router::new()
        .route("/api/v1/write", post(receive))
        .with_state(rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/v1/write")
}

fn batch(series: usize, t: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|s| TimeSeries {
                labels: vec![Label::new("__name__", "m"), Label::new("s", s.to_string())],
                samples: vec![Sample {
                    value: t as f64,
                    timestamp: t,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

fn sender_config(url: String) -> SenderConfig {
    SenderConfig {
        url,
        max_samples_per_send: 100,
        batch_send_deadline_seconds: 0.05,
        min_backoff_ms: 5,
        max_backoff_ms: 50,
        ..Default::default()
    }
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

struct Harness {
    queue: Queue,
    metrics: RelayMetrics,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

fn start_sender(config: SenderConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let metrics = RelayMetrics::register(&mut Registry::default(), "test");
    let queue = Queue::open(dir.path(), QueueConfig::default(), metrics.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sender::run(
        queue.clone(),
        config,
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Harness {
        queue,
        metrics,
        stop,
        _dir: dir,
    }
}

/// A receiver answering `script` first, and a one-shard sender (so request order is known).
async fn scripted_single_shard(
    script: Vec<(StatusCode, Option<&'static str>)>,
) -> (Arc<Mutex<Receiver>>, Harness) {
    let rx = Arc::new(Mutex::new(Receiver {
        script,
        ..Default::default()
    }));
    let url = start_receiver(rx.clone()).await;
    let h = start_sender(SenderConfig {
        shards: 1,
        ..sender_config(url)
    });
    (rx, h)
}

#[tokio::test]
async fn delivers_everything_in_per_series_order() {
    let rx = Arc::new(Mutex::new(Receiver::default()));
    let url = start_receiver(rx.clone()).await;
    let h = start_sender(sender_config(url));
    for t in 0..50 {
        h.queue.append(&batch(40, t)).await.unwrap();
    }
    wait_until(|| h.queue.pending() == (0, 0)).await;
    let r = rx.lock().unwrap();
    assert_eq!(r.series.len(), 40);
    for ts in r.series.values() {
        assert_eq!(ts, &(0..50).collect::<Vec<_>>(), "per-series order kept");
    }
    assert_eq!(h.metrics.samples_sent.get(), 2000);
    assert_eq!(h.metrics.samples_enqueued.get(), 2000);
    assert_eq!(h.metrics.highest_sent_timestamp.get(), 0.049);
    let _ = h.stop.send(());
}

#[tokio::test]
async fn retries_5xx_and_429_without_dropping() {
    let (rx, h) = scripted_single_shard(vec![
        (StatusCode::INTERNAL_SERVER_ERROR, None),
        (StatusCode::SERVICE_UNAVAILABLE, None),
        (StatusCode::TOO_MANY_REQUESTS, Some("1")),
    ])
    .await;
    h.queue.append(&batch(10, 1)).await.unwrap();
    let started = std::time::Instant::now();
    wait_until(|| h.queue.pending() == (0, 0)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 honoured"
    );
    let r = rx.lock().unwrap();
    assert_eq!(r.requests, 4);
    assert_eq!(r.series.len(), 10);
    assert_eq!(h.metrics.samples_retried.get(), 30);
    assert_eq!(h.metrics.requests_failed.get(), 3);
    assert_eq!(h.metrics.dropped_count(DropReason::Rejected), 0);
    assert_eq!(h.metrics.samples_sent.get(), 10);
    let _ = h.stop.send(());
}

#[tokio::test]
async fn other_4xx_is_final_and_counted() {
    let (rx, h) = scripted_single_shard(vec![(StatusCode::BAD_REQUEST, None)]).await;
    h.queue.append(&batch(10, 1)).await.unwrap();
    wait_until(|| h.queue.pending() == (0, 0)).await;
    h.queue.append(&batch(10, 2)).await.unwrap();
    wait_until(|| h.queue.pending() == (0, 0)).await;
    let r = rx.lock().unwrap();
    assert_eq!(r.requests, 2, "the rejected batch is not retried");
    assert_eq!(h.metrics.dropped_count(DropReason::Rejected), 10);
    assert_eq!(h.metrics.samples_retried.get(), 0);
    assert_eq!(h.metrics.samples_sent.get(), 10);
    let _ = h.stop.send(());
}

#[tokio::test]
async fn connection_errors_are_retried_until_the_receiver_appears() {
    // Hold a port bound but not listening (connections are refused, and no other test's
    // receiver can take it), and listen on it only later.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let h = start_sender(sender_config(format!("http://{addr}/api/v1/write")));
    h.queue.append(&batch(5, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.metrics.samples_retried.get() > 0);
    assert_eq!(
        h.queue.pending().1,
        5,
        "nothing is lost while the receiver is down"
    );
    let rx = Arc::new(Mutex::new(Receiver::default()));
    let app = Router::new()
        .route("/api/v1/write", post(receive))
        .with_state(rx.clone());
    let listener = socket.listen(1024).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    wait_until(|| h.queue.pending() == (0, 0)).await;
    assert_eq!(rx.lock().unwrap().series.len(), 5);
    let _ = h.stop.send(());
}

#[tokio::test]
async fn sample_age_limit_drops_old_samples() {
    let rx = Arc::new(Mutex::new(Receiver::default()));
    let url = start_receiver(rx.clone()).await;
    let h = start_sender(SenderConfig {
        sample_age_limit_seconds: 60,
        ..sender_config(url)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    h.queue.append(&batch(3, 1000)).await.unwrap();
    h.queue.append(&batch(3, now)).await.unwrap();
    wait_until(|| h.queue.pending() == (0, 0)).await;
    assert_eq!(h.metrics.dropped_count(DropReason::TooOld), 3);
    assert_eq!(h.metrics.samples_sent.get(), 3);
    let _ = h.stop.send(());
}

fn relay_app(queue_config: QueueConfig) -> (Router, Queue, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let metrics = RelayMetrics::register(&mut registry, "up");
    let queue = Queue::open(dir.path(), queue_config, metrics).unwrap();
    let state = Arc::new(AppState {
        queue: queue.clone(),
        registry,
        max_decoded_bytes: 1 << 20,
    });
    (router(state, 64 << 10), queue, dir)
}

fn post_write(body: Vec<u8>, content_type: &str) -> Request<Body> {
    Request::post("/api/v1/write")
        .header("Content-Type", content_type)
        .header("Content-Encoding", "snappy")
        .body(Body::from(body))
        .unwrap()
}

async fn text(resp: axum::response::Response) -> String {
    String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn receive_path_status_codes() {
    let (app, queue, _dir) = relay_app(QueueConfig::default());

    let ok = app
        .clone()
        .oneshot(post_write(
            batch(3, 1).encode_snappy().unwrap(),
            "application/x-protobuf",
        ))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(queue.pending().1, 3, "durable before 204");

    // Partial acceptance: valid series kept, 400 names the bad one.
    let mut mixed = batch(2, 2);
    mixed.timeseries[1].labels.push(Label::new("bad-name", "x"));
    let resp = app
        .clone()
        .oneshot(post_write(
            mixed.encode_snappy().unwrap(),
            "application/x-protobuf",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let msg = text(resp).await;
    assert!(
        msg.contains("timeseries[1]") && msg.contains("bad-name"),
        "{msg}"
    );
    assert_eq!(queue.pending().1, 4);

    // Remote-write 2.0 reports what it wrote.
    let v2_body = v2::Request::from_v1(&batch(4, 3)).encode_snappy().unwrap();
    let resp = app
        .clone()
        .oneshot(post_write(v2_body, strata_wire::protocol::CONTENT_TYPE_V2))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()["X-Prometheus-Remote-Write-Samples-Written"],
        "4"
    );
    assert_eq!(queue.pending().1, 8);

    let resp = app
        .clone()
        .oneshot(post_write(
            vec![1, 2, 3],
            "application/x-protobuf;proto=x.Y",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = app
        .clone()
        .oneshot(post_write(vec![0xff; 10], "application/x-protobuf"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app
        .clone()
        .oneshot(post_write(vec![0; 100 << 10], "application/x-protobuf"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A snappy bomb: a tiny body declaring 4 GiB.
    let resp = app
        .clone()
        .oneshot(post_write(
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            "application/x-protobuf",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(queue.pending().1, 8, "bad requests wrote nothing");

    for path in ["/-/ready", "/-/healthy"] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let page = text(resp).await;
    assert!(
        page.contains("strata_relay_samples_enqueued_total{destination=\"up\"} 8"),
        "{page}"
    );
    assert!(
        page.contains("strata_relay_queue_pending_samples{destination=\"up\"} 8"),
        "{page}"
    );
    queue.close();
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after() {
    let (app, queue, _dir) = relay_app(QueueConfig {
        max_queue_bytes: 1 << 20,
        ..Default::default()
    });
    let body = batch(1000, 1).encode_snappy().unwrap();
    let mut statuses = BTreeMap::new();
    for _ in 0..3000 {
        if statuses.contains_key(&429) {
            break;
        }
        let resp = app
            .clone()
            .oneshot(post_write(body.clone(), "application/x-protobuf"))
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(resp.headers()["Retry-After"], "5");
        }
        *statuses.entry(resp.status().as_u16()).or_insert(0) += 1;
    }
    assert!(
        statuses.contains_key(&204) && statuses.contains_key(&429),
        "{statuses:?}"
    );
    queue.close();
}
