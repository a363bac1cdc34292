//! Crash test: `strata relay` is killed with SIGKILL again and again while a client streams
//! samples into it and it forwards them; each time it is restarted on the same queue. A sample
//! the relay acknowledged must reach the receiver: at the end the receiver holds all of them.
//! Duplicates (re-delivery after a crash) are allowed and reported.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use strata_wire::{Label, Sample, TimeSeries, WriteRequest};
use support::*;

const SERIES: usize = 50;
const INTERVALS: usize = 400;
const KILLS: usize = 12;

#[derive(Default)]
struct Received {
    unique: HashSet<(usize, i64)>,
    total: usize,
}

async fn receive(State(rx): State<Arc<Mutex<Received>>>, body: Bytes) -> StatusCode {
    let Ok(req) = WriteRequest::decode_snappy(&body, 64 << 20) else {
        return StatusCode::BAD_REQUEST;
    };
    // A little latency so kills land while requests are in flight.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut r = rx.lock().unwrap();
    for ts in req.timeseries {
        let s: usize = ts
            .labels
            .iter()
            .find(|l| l.name == "s")
            .unwrap()
            .value
            .parse()
            .unwrap();
        for sample in ts.samples {
            r.total += 1;
            r.unique.insert((s, sample.timestamp));
        }
    }
    StatusCode::NO_CONTENT
}

fn request(t: usize) -> Vec<u8> {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|s| TimeSeries {
                labels: vec![
                    Label::new("__name__", "crash_test"),
                    Label::new("s", s.to_string()),
                ],
                samples: vec![Sample {
                    value: t as f64,
                    timestamp: t as i64 * 1000,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
    .encode_snappy()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_survives_repeated_sigkill() {
    let received = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route("/api/v1/write", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = [
        "--batch-send-deadline-seconds",
        "0.05",
        "--max-samples-per-send",
        "200",
    ];
    let relay = Arc::new(tokio::sync::Mutex::new(
        start_relay(dir.path(), port, &upstream, &args).await,
    ));

    // The client: sends each request until the relay answers 2xx, like any remote-write sender.
    let client = tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/api/v1/write");
        let mut refused = 0;
        for t in 0..INTERVALS {
            let body = request(t);
            loop {
                match http
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => panic!("relay answered {} to a valid request", r.status()),
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        refused
    });

    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(150 + 37 * kill as u64)).await;
        let mut proc = relay.lock().await;
        proc.kill();
        *proc = start_relay(dir.path(), port, &upstream, &args).await;
    }
    let refused = client.await.unwrap();

    let want = SERIES * INTERVALS;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().unique.len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let r = received.lock().unwrap();
        println!(
            "crash test: {want} samples, {KILLS} SIGKILLs, {refused} client retries, {} unique received, {} duplicates re-delivered",
            r.unique.len(),
            r.total - r.unique.len()
        );
        assert_eq!(
            r.unique.len(),
            want,
            "every acknowledged sample reached the receiver"
        );
    }
    // After the backlog drained, the queue is empty. The relay counts a sample out when the
    // receiver's answer reaches it, a moment after the receiver recorded it.
    until_ok(Duration::from_secs(30), || async move {
        let metrics = get_text(&format!("http://127.0.0.1:{port}/metrics")).await;
        assert!(
            metrics.contains("strata_relay_queue_pending_samples{destination="),
            "{metrics}"
        );
        let empty = metrics
            .lines()
            .any(|l| l.starts_with("strata_relay_queue_pending_samples{") && l.ends_with(" 0"));
        if empty {
            Ok(())
        } else {
            Err(format!("the queue never emptied:\n{metrics}"))
        }
    })
    .await;
}
