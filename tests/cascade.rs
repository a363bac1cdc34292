//! End-to-end tests of `strata cascade`: the real binary between real senders (Prometheus in
//! agent mode, vmagent, `strata bench write`) and real or in-test upstreams.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use strata_wire::{Label, Sample, TimeSeries, WriteRequest};
use support::*;

/// Every sample an in-test upstream received: (rendered labels, timestamp) → value, and how
/// many samples arrived in total (duplicates included).
#[derive(Default)]
struct Received {
    samples: BTreeMap<(String, i64), f64>,
    total: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn receive(State(rx): State<Shared>, body: Bytes) -> StatusCode {
    let Ok(req) = WriteRequest::decode_snappy(&body, 64 << 20) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut r = rx.lock().unwrap();
    for ts in req.timeseries {
        let key = strata_wire::labels::render(&ts.labels);
        for s in ts.samples {
            r.total += 1;
            r.samples.insert((key.clone(), s.timestamp), s.value);
        }
    }
    StatusCode::NO_CONTENT
}

/// An in-test remote-write receiver; returns its write URL and what it received.
async fn upstream() -> (String, Shared) {
    let received = Shared::default();
    let app = Router::new()
        .route("/api/v1/write", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn series(labels: &[(&str, &str)], value: f64, ts: i64) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        samples: vec![Sample {
            value,
            timestamp: ts,
        }],
        ..Default::default()
    }
}

fn body(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
    .encode_snappy()
    .unwrap()
}

fn series_names(r: &Shared) -> BTreeSet<String> {
    r.lock()
        .unwrap()
        .samples
        .keys()
        .map(|(k, _)| k.clone())
        .collect()
}

async fn wait_for<F: Fn() -> bool>(what: &str, done: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_labels_and_limits_decide_what_is_written() {
    let (url_a, a) = upstream().await;
    let (url_b, b) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("hz-08.token");
    std::fs::write(&token_file, "token-of-hz-08\n").unwrap();
    let config = format!(
        r#"
auth:
  tokens:
    - name: hz-07
      token: token-of-hz-07
      labels: {{region: cn-hangzhou, cell: hz-07}}
      action: enforce
    - name: hz-08
      token_file: {}
      labels: {{region: cn-hangzhou, cell: hz-08}}
      action: stamp
limits:
  cells:
    hz-08: {{max_active_series: 3}}
remote_write:
  - url: {url_a}
    name: az-a
    queue_config: {{batch_send_deadline: 50ms}}
  - url: {url_b}
    name: az-b
    queue_config: {{batch_send_deadline: 50ms}}
    write_relabel_configs:
      - {{source_labels: [__name__], regex: dropped_in_b, action: drop}}
"#,
        token_file.display()
    );
    let port = free_port();
    let cascade = start_cascade(dir.path(), &config, port).await;
    let write = format!("{}/api/v1/write", cascade.base());
    let t = now_ms();
    let good = |name: &str, cell: &str| {
        series(
            &[
                ("__name__", name),
                ("cell", cell),
                ("region", "cn-hangzhou"),
            ],
            1.0,
            t,
        )
    };

    // No token, a wrong one, another scheme: 401 and nothing written.
    let (status, text) = post_write(&write, None, body(vec![good("no_token", "hz-07")])).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("Bearer"), "{text}");
    let (status, _) = post_write(
        &write,
        Some("token-of-hz-0"),
        body(vec![good("wrong_token", "hz-07")]),
    )
    .await;
    assert_eq!(status, 401);
    // hz-07 writing one series of another cell: 403 for the whole request.
    let (status, text) = post_write(
        &write,
        Some("token-of-hz-07"),
        body(vec![good("mixed_ok", "hz-07"), good("mixed_bad", "hz-09")]),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("mixed_bad") && text.contains("hz-09"),
        "{text}"
    );
    // hz-07 within its cell: written to both upstreams, relabelled for B.
    let (status, text) = post_write(
        &write,
        Some("token-of-hz-07"),
        body(vec![
            good("allowed", "hz-07"),
            good("dropped_in_b", "hz-07"),
        ]),
    )
    .await;
    assert_eq!(status, 204, "{text}");
    // hz-08 stamps: its cell and region replace whatever the series carried. Of its four new
    // series only three fit its active-series limit: 429, the three are written.
    let (status, text) = post_write(
        &write,
        Some("token-of-hz-08"),
        body(vec![
            series(&[("__name__", "stamped"), ("cell", "elsewhere")], 1.0, t),
            series(&[("__name__", "stamped_2")], 1.0, t),
            series(&[("__name__", "stamped_3")], 1.0, t),
            series(&[("__name__", "over_limit")], 1.0, t),
        ]),
    )
    .await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("limit of 3 active series"), "{text}");
    // A known series still flows.
    let (status, text) = post_write(
        &write,
        Some("token-of-hz-08"),
        body(vec![series(&[("__name__", "stamped_2")], 2.0, t + 1000)]),
    )
    .await;
    assert_eq!(status, 204, "{text}");

    let want_a: BTreeSet<String> = [
        r#"allowed{cell="hz-07", region="cn-hangzhou"}"#,
        r#"dropped_in_b{cell="hz-07", region="cn-hangzhou"}"#,
        r#"stamped{cell="hz-08", region="cn-hangzhou"}"#,
        r#"stamped_2{cell="hz-08", region="cn-hangzhou"}"#,
        r#"stamped_3{cell="hz-08", region="cn-hangzhou"}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    wait_for("upstream A", || a.lock().unwrap().samples.len() == 6).await;
    wait_for("upstream B", || b.lock().unwrap().samples.len() == 5).await;
    assert_eq!(series_names(&a), want_a);
    let mut want_b = want_a.clone();
    want_b.remove(r#"dropped_in_b{cell="hz-07", region="cn-hangzhou"}"#);
    assert_eq!(series_names(&b), want_b);

    let metrics = get_text(&format!("{}/metrics", cascade.base())).await;
    for line in [
        "strata_cascade_write_requests_total{code=\"401\"} 2",
        "strata_cascade_write_requests_total{code=\"403\"} 1",
        "strata_cascade_samples_rejected_total{reason=\"forbidden\"} 2",
        "strata_cascade_samples_rejected_total{reason=\"series_limit\"} 1",
        "strata_cascade_samples_received_total{sender=\"hz-08\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    let status = get_json(&format!("{}/api/v1/status/upstreams", cascade.base()), &[]).await;
    let names: Vec<&str> = status["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["az-a", "az-b"]);
}

/// Sends `requests` requests of `per_request` series, one sample each, `pause` apart, each
/// retried until the cascade answers 2xx (connection errors and 429/5xx are retried as a
/// remote-write sender does). Returns every acknowledged (series, timestamp).
async fn steady_load(port: u16, requests: usize, per_request: usize, pause: Duration) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let start = now_ms();
    let mut retries = 0;
    for r in 0..requests {
        let ts = start + r as i64 * 100;
        let b = body(
            (0..per_request)
                .map(|s| {
                    series(
                        &[("__name__", "cascade_load"), ("s", &s.to_string())],
                        r as f64,
                        ts,
                    )
                })
                .collect(),
        );
        loop {
            match http
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .body(b.clone())
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {
                    retries += 1;
                }
                Ok(resp) => panic!("cascade answered {} to a valid request", resp.status()),
                Err(_) => retries += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(pause).await;
    }
    retries
}

/// True once every upstream queue of the cascade on `base` is empty.
async fn drained(base: &str) -> bool {
    let status = get_json(&format!("{base}/api/v1/status/upstreams"), &[]).await;
    status["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["pending_samples"] == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_sample_reaches_both_upstreams_across_sigkills() {
    const REQUESTS: usize = 1000;
    const SERIES: usize = 40;
    const KILLS: usize = 8;
    let (url_a, a) = upstream().await;
    let (url_b, b) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "remote_write:\n  - {{url: {url_a}, name: az-a, queue_config: {{batch_send_deadline: 50ms, max_samples_per_send: 200}}}}\n  - {{url: {url_b}, name: az-b, queue_config: {{batch_send_deadline: 50ms, max_samples_per_send: 200}}}}\n"
    );
    let port = free_port();
    let cascade = Arc::new(tokio::sync::Mutex::new(
        start_cascade(dir.path(), &config, port).await,
    ));
    let load = tokio::spawn(steady_load(
        port,
        REQUESTS,
        SERIES,
        Duration::from_millis(3),
    ));
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(200 + 41 * kill as u64)).await;
        let mut proc = cascade.lock().await;
        proc.kill();
        *proc = start_cascade(dir.path(), &config, port).await;
    }
    let retries = load.await.unwrap();
    let want = REQUESTS * SERIES;
    wait_for("both upstreams", || {
        a.lock().unwrap().samples.len() == want && b.lock().unwrap().samples.len() == want
    })
    .await;
    let (a, b) = (a.lock().unwrap(), b.lock().unwrap());
    println!(
        "cascade crash test: {want} samples, {KILLS} SIGKILLs, {retries} client retries, duplicates re-delivered: A {} B {}",
        a.total - want,
        b.total - want
    );
    assert_eq!(a.samples, b.samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_down_for_two_minutes_catches_up_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let central_a = start_central(dir.path(), "central-a", port_a, &[]).await;
    let mut central_b = start_central(dir.path(), "central-b", port_b, &[]).await;
    let config = format!(
        "remote_write:\n  - {{url: {}/api/v1/write, name: az-a, queue_config: {{batch_send_deadline: 200ms}}}}\n  - {{url: {}/api/v1/write, name: az-b, queue_config: {{batch_send_deadline: 200ms, max_backoff: 2s}}}}\n",
        central_a.base(),
        central_b.base()
    );
    let port = free_port();
    let cascade = start_cascade(dir.path(), &config, port).await;
    let started = now_ms();
    // About 150 s of load at 10 requests of 50 series per second.
    let load = tokio::spawn(steady_load(port, 1500, 50, Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_secs(10)).await;
    central_b.terminate();
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let pending = get_json(&format!("{}/api/v1/status/upstreams", cascade.base()), &[]).await;
    assert!(
        pending["data"][1]["pending_samples"].as_u64().unwrap() > 0,
        "B's queue holds the outage: {pending}"
    );
    let central_b = start_central(dir.path(), "central-b", port_b, &[]).await;
    println!("upstream B was down for {:?}", outage.elapsed());
    let retries = load.await.unwrap();
    let base = cascade.base();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !drained(&base).await {
        assert!(Instant::now() < deadline, "queues not drained");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let end = now_ms() + 60_000;
    let flatten = |series: Vec<TimeSeries>| -> BTreeMap<(String, i64), u64> {
        series
            .into_iter()
            .flat_map(|ts| {
                let key = strata_wire::labels::render(&ts.labels);
                ts.samples
                    .into_iter()
                    .map(move |s| ((key.clone(), s.timestamp), s.value.to_bits()))
            })
            .collect()
    };
    let in_a = flatten(read_all(&central_a.base(), started - 60_000, end).await);
    let in_b = flatten(read_all(&central_b.base(), started - 60_000, end).await);
    println!(
        "AZ outage: A holds {} samples, B holds {}, client retries {retries}",
        in_a.len(),
        in_b.len()
    );
    assert_eq!(in_a.len(), 1500 * 50);
    assert!(in_a == in_b, "B holds exactly the samples A holds");
}
