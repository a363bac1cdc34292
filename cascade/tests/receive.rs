//! The cascade's receive path through its router, without a socket: status codes of the
//! remote-write specs, partial acceptance, the 2.0 written headers, and a full queue.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use strata_cascade::config::Config;
use strata_cascade::server::{AppState, router};
use strata_wire::protocol::CONTENT_TYPE_V2;
use strata_wire::{Label, Sample, TimeSeries, WriteRequest, v2};
use tower::ServiceExt;

fn app(extra: &str) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens upstream and no sender runs: what is accepted stays queued.
    let config = Config::parse(&format!(
        "remote_write:\n  - {{url: http://127.0.0.1:1/api/v1/write, name: a}}\n  - {{url: http://127.0.0.1:1/api/v1/write, name: b}}\nmax_request_bytes: 65536\nmax_decoded_bytes: 1048576\n{extra}"
    ))
    .unwrap();
    let state = AppState::new(&config, dir.path(), None).unwrap();
    (router(Arc::new(state), config.max_request_bytes()), dir)
}

fn series(name: &str, n: usize) -> TimeSeries {
    TimeSeries {
        labels: vec![Label::new("__name__", name), Label::new("cell", "hz-07")],
        samples: (0..n)
            .map(|i| Sample {
                value: i as f64,
                timestamp: i as i64,
            })
            .collect(),
        ..Default::default()
    }
}

fn post(body: Vec<u8>, content_type: &str) -> Request<Body> {
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

async fn pending(app: &Router) -> Vec<u64> {
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/v1/status/upstreams")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    status["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["pending_samples"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn status_codes_follow_the_remote_write_specs() {
    let (app, _dir) = app("");
    let ok = WriteRequest {
        timeseries: vec![series("a", 3)],
        metadata: vec![],
    };
    let resp = app
        .clone()
        .oneshot(post(ok.encode_snappy().unwrap(), "application/x-protobuf"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        pending(&app).await,
        [3, 3],
        "durable in both upstream queues"
    );

    // One invalid series among valid ones: 400 naming it, the valid one written.
    let mut bad = series("b", 2);
    bad.labels.push(Label::new("0bad", "x"));
    let partial = WriteRequest {
        timeseries: vec![series("c", 4), bad],
        metadata: vec![],
    };
    let resp = app
        .clone()
        .oneshot(post(
            partial.encode_snappy().unwrap(),
            "application/x-protobuf",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(text(resp).await.contains("timeseries[1]"));
    assert_eq!(pending(&app).await, [7, 7]);

    // 2.0: the written headers.
    let body = v2::Request::from_v1(&ok).encode_snappy().unwrap();
    let resp = app
        .clone()
        .oneshot(post(body, CONTENT_TYPE_V2))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()["X-Prometheus-Remote-Write-Samples-Written"],
        "3"
    );
    assert_eq!(pending(&app).await, [10, 10]);

    for (body, content_type, want) in [
        (
            vec![1, 2, 3],
            "application/x-protobuf;proto=x.Y",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            vec![0xff; 10],
            "application/x-protobuf",
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![0; 100 << 10],
            "application/x-protobuf",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // A snappy bomb: five bytes declaring 4 GiB.
        (
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            "application/x-protobuf",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let resp = app.clone().oneshot(post(body, content_type)).await.unwrap();
        assert_eq!(resp.status(), want);
    }
    assert_eq!(pending(&app).await, [10, 10], "bad requests wrote nothing");
}

#[tokio::test]
async fn a_full_queue_refuses_with_429_and_retry_after_and_writes_nowhere() {
    let (app, _dir) = app("queue: {max_queue_bytes: 1048576}\n");
    let big = WriteRequest {
        timeseries: (0..100).map(|i| series(&format!("m{i}"), 50)).collect(),
        metadata: vec![],
    }
    .encode_snappy()
    .unwrap();
    let mut refused = None;
    for _ in 0..500 {
        let resp = app
            .clone()
            .oneshot(post(big.clone(), "application/x-protobuf"))
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let resp = refused.expect("the queue filled up");
    assert_eq!(resp.headers()["Retry-After"], "5");
    let [a, b] = pending(&app).await[..] else {
        panic!()
    };
    assert_eq!(a, b, "a refused request is in neither queue");
}
