//! End-to-end tests of `strata cascade`: the real binary between real senders (Prometheus in
//! agent mode, vmagent, `strata bench write`) and real or in-test upstreams.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_wire::clock::now_ms;

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
        retries += send_until_acknowledged(&http, &url, b).await;
        tokio::time::sleep(pause).await;
    }
    retries
}

/// POSTs a remote-write 1.0 body until it is acknowledged, retrying connection errors, 429 and
/// 5xx as a remote-write sender does; returns the number of retries.
async fn send_until_acknowledged(http: &reqwest::Client, url: &str, body: Vec<u8>) -> usize {
    let mut retries = 0;
    loop {
        match http
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => return retries,
            Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {}
            Ok(resp) => panic!("cascade answered {} to a valid request", resp.status()),
            Err(_) => {}
        }
        retries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// Sum of `count_over_time(<selector>[10m])` on a Prometheus-compatible API.
async fn samples_in(base: &str, selector: &str) -> usize {
    let query = [("query", format!("sum(count_over_time({selector}[10m]))"))];
    let resp = get_json(&format!("{base}/api/v1/query"), &query).await;
    assert_eq!(resp["status"], "success", "{resp}");
    resp["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0, |v| v.parse::<f64>().unwrap() as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_agent_and_vmagent_write_through_the_cascade_to_both_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_exporter(dir.path()).await;
    let central = start_central(dir.path(), "central-a", free_port(), &[]).await;
    let vm = start_victoria_metrics(dir.path()).await;
    let config = format!(
        r#"
auth:
  tokens:
    - {{name: prometheus-agent, token: prom-secret, labels: {{cell: hz-01}}, action: stamp}}
    - {{name: vmagent, token: vm-secret, labels: {{cell: hz-02}}, action: enforce}}
remote_write:
  - {{url: {}/api/v1/write, name: az-a, queue_config: {{batch_send_deadline: 200ms}}}}
  - {{url: {}/api/v1/write, name: az-b, queue_config: {{batch_send_deadline: 200ms}}}}
"#,
        central.base(),
        vm.base()
    );
    let cascade = start_cascade(dir.path(), &config, free_port()).await;
    let write = format!("{}/api/v1/write", cascade.base());
    let target = format!("127.0.0.1:{}", node.port);

    // Prometheus 2.42 in agent mode, authenticating with `authorization`.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['{target}']}}]\nremote_write:\n  - url: {write}\n    authorization: {{credentials: prom-secret}}\n    queue_config: {{batch_send_deadline: 1s}}\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut command = std::process::Command::new(peer_binary("prometheus", "prometheus"));
    command
        .arg("--enable-feature=agent")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.agent.path={}",
            prom_dir.join("wal").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prometheus = spawn_ready(
        dir.path(),
        "prometheus agent",
        command,
        prom_port,
        "/-/ready",
    )
    .await;

    // vmagent, with a bearer token and the cell label its token requires.
    let vmagent_config = dir.path().join("vmagent.yml");
    std::fs::write(
        &vmagent_config,
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['{target}']}}]\n"),
    )
    .unwrap();
    let vmagent_port = free_port();
    let mut command = std::process::Command::new(peer_binary("vmagent", "victoria-metrics"));
    command
        .arg(format!("-promscrape.config={}", vmagent_config.display()))
        .arg(format!("-remoteWrite.url={write}"))
        .arg("-remoteWrite.bearerToken=vm-secret")
        .arg("-remoteWrite.label=cell=hz-02")
        .arg("-remoteWrite.flushInterval=1s")
        .arg(format!(
            "-remoteWrite.tmpDataPath={}",
            dir.path().join("vmagent-data").display()
        ))
        .arg(format!("-httpListenAddr=127.0.0.1:{vmagent_port}"));
    let mut vmagent = spawn_ready(dir.path(), "vmagent", command, vmagent_port, "/health").await;

    // Both senders' node series arrive in both upstreams.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = 0;
        for base in [central.base(), vm.base()] {
            for cell in ["hz-01", "hz-02"] {
                if samples_in(&base, &format!("node_load1{{cell=\"{cell}\"}}")).await >= 5 {
                    seen += 1;
                }
            }
        }
        if seen == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every sender's series reached both upstreams"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prometheus.terminate();
    vmagent.terminate();
    let base = cascade.base();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !drained(&base).await {
        assert!(Instant::now() < deadline, "queues not drained");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // After the senders stopped and the queues drained, both upstreams hold the same samples.
    for cell in ["hz-01", "hz-02"] {
        let selector = format!("{{cell=\"{cell}\"}}");
        let in_a = samples_in(&central.base(), &selector).await;
        let vm_base = vm.base();
        let in_b = eventually(in_a, || samples_in(&vm_base, &selector)).await;
        println!("cell {cell}: {in_a} samples in central, {in_b} in VictoriaMetrics");
        assert!(in_a > 500, "cell {cell}: {in_a}");
        assert_eq!(in_a, in_b, "cell {cell}");
    }
    let metrics = get_text(&format!("{}/metrics", cascade.base())).await;
    for sender in ["prometheus-agent", "vmagent"] {
        assert!(
            metrics.contains(&format!(
                "strata_cascade_samples_received_total{{sender=\"{sender}\"}}"
            )),
            "{metrics}"
        );
    }
    assert!(
        !metrics.contains("code=\"401\"") && !metrics.contains("code=\"403\""),
        "{metrics}"
    );
}

/// The raw samples of every series matching `selector` in the last five minutes:
/// (labels without `__name__`, rendered) → [(timestamp ms, value)].
async fn raw_series(base: &str, selector: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let query = [("query", format!("{selector}[5m]"))];
    let resp = get_json(&format!("{base}/api/v1/query"), &query).await;
    assert_eq!(resp["status"], "success", "{resp}");
    let mut out = BTreeMap::new();
    for s in resp["data"]["result"].as_array().unwrap() {
        let mut labels = s["metric"].as_object().unwrap().clone();
        labels.remove("__name__");
        let values = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    p[1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            })
            .collect();
        out.insert(serde_json::Value::Object(labels).to_string(), values);
    }
    out
}

/// The value of each series of an instant query at `t_ms`, keyed as [`raw_series`] keys them.
async fn instant(base: &str, expr: &str, t_ms: i64) -> BTreeMap<String, f64> {
    let query = [
        ("query", expr.to_string()),
        ("time", format!("{:.3}", t_ms as f64 / 1000.0)),
    ];
    let resp = get_json(&format!("{base}/api/v1/query"), &query).await;
    assert_eq!(resp["status"], "success", "{expr}: {resp}");
    resp["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut labels = s["metric"].as_object().unwrap().clone();
            labels.remove("__name__");
            (
                serde_json::Value::Object(labels).to_string(),
                s["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_outputs_equal_prometheus_over_the_same_raw_data() {
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path()).await;
    let config = format!(
        r#"
stream_aggregation:
  lateness: 30s
  rules:
    - match: 'agg_test_total{{job=~"j.*"}}'
      interval: 10s
      without: [pod]
      outputs: [increase, rate, sum, count, avg, min, max, 'quantiles(0.5, 0.9)']
      keep_input: true
remote_write:
  - {{url: {}/api/v1/write, queue_config: {{batch_send_deadline: 100ms}}}}
"#,
        prom.base()
    );
    let cascade = start_cascade(dir.path(), &config, free_port()).await;
    let write = format!("{}/api/v1/write", cascade.base());

    // Eight counters in two groups, scraped every second at .437 so that no sample sits on a
    // window boundary (Prometheus 2.42's ranges include their start, the aggregation's do
    // not). One counter resets halfway.
    let mut values = [1000.0f64; 8];
    let mut rng = 12345u64;
    let mut last_ts = 0;
    for step in 0..45 {
        let ts = (now_ms() / 1000) * 1000 + 437;
        let mut timeseries = Vec::new();
        for (i, v) in values.iter_mut().enumerate() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v += (rng >> 33) as f64 / (1u64 << 31) as f64 * 10.0;
            if i == 1 && step == 22 {
                *v = 500.0;
            }
            let (job, pod) = (format!("j{}", i % 2), format!("p{}", i / 2));
            timeseries.push(series(
                &[("__name__", "agg_test_total"), ("job", &job), ("pod", &pod)],
                *v,
                ts,
            ));
        }
        let (status, text) = post_write(&write, None, body(timeseries)).await;
        assert_eq!(status, 204, "{text}");
        last_ts = ts;
        let next = (ts / 1000 + 1) * 1000 + 437;
        tokio::time::sleep(Duration::from_millis((next - now_ms()).max(0) as u64)).await;
    }
    let base = prom.base();
    let checks = [
        (
            "increase",
            "sum without (pod) (increase(agg_test_total[10s]))",
        ),
        ("rate", "sum without (pod) (rate(agg_test_total[10s]))"),
        (
            "sum",
            "sum without (pod) (last_over_time(agg_test_total[10s]))",
        ),
        (
            "count",
            "count without (pod) (last_over_time(agg_test_total[10s]))",
        ),
        (
            "avg",
            "avg without (pod) (last_over_time(agg_test_total[10s]))",
        ),
        (
            "min",
            "min without (pod) (min_over_time(agg_test_total[10s]))",
        ),
        (
            "max",
            "max without (pod) (max_over_time(agg_test_total[10s]))",
        ),
    ];
    // A sample is late, and left out of its window, when it arrives after the window closed.
    // The lateness is far above any stall of a loaded machine, so every sample must count.
    // Wait for the last window (lateness 30s, a flush every second) to reach Prometheus.
    let last_end = (last_ts / 10_000 + 1) * 10_000;
    // The outputs compared with Prometheus's queries, and the quantiles.
    let outputs = checks.map(|(output, _)| output);
    let outputs = outputs.iter().chain(&["quantiles"]);
    until_ok(Duration::from_secs(90), || async {
        let mut done = 0;
        for output in outputs.clone() {
            let name = format!("agg_test_total:10s_without_pod_{output}");
            done += raw_series(&base, &name)
                .await
                .values()
                .filter(|points| points.last().is_some_and(|&(t, _)| t >= last_end))
                .count();
        }
        // One series of each output for each of two jobs, and two quantiles for each job.
        let want = 2 * checks.len() + 2 * 2;
        if done == want {
            Ok(())
        } else {
            Err(format!(
                "{done} of {want} output series reached the window ending at {last_end}"
            ))
        }
    })
    .await;
    let status = get_json(
        &format!("{}/api/v1/status/aggregation", cascade.base()),
        &[],
    )
    .await;
    assert_eq!(status["data"][0]["late"], 0, "{status}");
    let mut compared = 0;
    for (output, expr) in checks {
        let name = format!("agg_test_total:10s_without_pod_{output}");
        let outputs = raw_series(&base, &name).await;
        assert_eq!(outputs.len(), 2, "{name}: one series per job: {outputs:?}");
        for (labels, points) in &outputs {
            assert!(points.len() >= 3, "{name}{labels}: {points:?}");
            for &(t, got) in points {
                let want = instant(&base, expr, t).await;
                let want = want[labels];
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{name}{labels} at {t}: cascade {got}, Prometheus {want}"
                );
                compared += 1;
            }
        }
    }
    for q in ["0.5", "0.9"] {
        let name = "agg_test_total:10s_without_pod_quantiles";
        let outputs = raw_series(&base, &format!("{name}{{quantile=\"{q}\"}}")).await;
        assert_eq!(outputs.len(), 2, "{outputs:?}");
        for (labels, points) in &outputs {
            let job_only = labels.replace(&format!(",\"quantile\":\"{q}\""), "");
            for &(t, got) in points {
                let want = instant(
                    &base,
                    &format!("quantile without (pod) ({q}, last_over_time(agg_test_total[10s]))"),
                    t,
                )
                .await[&job_only];
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{name}{labels} at {t}: cascade {got}, Prometheus {want}"
                );
                compared += 1;
            }
        }
    }
    println!("aggregation: {compared} output samples equal Prometheus's");
}

/// Aggregated output an in-test upstream received: (series, timestamp) → value.
type Outputs = Arc<Mutex<BTreeMap<(String, i64), f64>>>;

/// Receives aggregated output; a window emitted twice (after a crash) must carry the same
/// value both times.
async fn receive_outputs(State(rx): State<Outputs>, body: Bytes) -> StatusCode {
    let Ok(req) = WriteRequest::decode_snappy(&body, 64 << 20) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut r = rx.lock().unwrap();
    for ts in req.timeseries {
        let key = strata_wire::labels::render(&ts.labels);
        for s in ts
            .samples
            .iter()
            .filter(|s| !strata_wire::is_stale_nan(s.value))
        {
            if let Some(before) = r.insert((key.clone(), s.timestamp), s.value) {
                assert!(
                    (before - s.value).abs() <= 1e-9 * before.abs().max(1.0),
                    "{key} at {} emitted as {before} and as {}",
                    s.timestamp,
                    s.value
                );
            }
        }
    }
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_survives_sigkill_with_the_raw_input_dropped() {
    let outputs = Outputs::default();
    let app = Router::new()
        .route("/api/v1/write", post(receive_outputs))
        .with_state(outputs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let rule = serde_json::json!({
        "match": "crash_agg_total",
        "interval": "5s",
        "without": ["pod"],
        "outputs": ["sum", "count", "max", "increase"],
    });
    let config = format!(
        "stream_aggregation:\n  lateness: 30s\n  rules:\n    - {rule}\nremote_write:\n  - {{url: {upstream}, queue_config: {{batch_send_deadline: 50ms}}}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cascade = start_cascade(dir.path(), &config, port).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let mut sent = Vec::new();
    let mut values = [0.0f64; 6];
    for step in 0..60 {
        if step == 20 || step == 41 {
            cascade.kill();
            cascade = start_cascade(dir.path(), &config, port).await;
        }
        let ts = now_ms();
        let mut timeseries = Vec::new();
        for (i, v) in values.iter_mut().enumerate() {
            *v += (i + step % 3) as f64;
            timeseries.push(series(
                &[
                    ("__name__", "crash_agg_total"),
                    ("job", &format!("j{}", i % 2)),
                    ("pod", &format!("p{i}")),
                ],
                *v,
                ts,
            ));
        }
        send_until_acknowledged(&http, &url, body(timeseries.clone())).await;
        sent.extend(timeseries);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // What the same rule makes of every acknowledged sample, computed in this process.
    let rule: strata_cascade::aggregate::RuleConfig = serde_json::from_value(rule).unwrap();
    let mut reference = strata_cascade::aggregate::Aggregator::new(&[rule], 0).unwrap();
    for ts in &sent {
        reference.push(&ts.labels, &ts.samples, ts.samples[0].timestamp);
    }
    let want: BTreeMap<(String, i64), f64> = reference
        .flush(now_ms() + 3_600_000)
        .into_iter()
        .filter(|ts| !strata_wire::is_stale_nan(ts.samples[0].value))
        .map(|ts| {
            (
                (
                    strata_wire::labels::render(&ts.labels),
                    ts.samples[0].timestamp,
                ),
                ts.samples[0].value,
            )
        })
        .collect();
    // Windows close 30 s after they end: far above any stall of a loaded machine, so no
    // sample may be late.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = outputs.lock().unwrap().clone();
        if got.len() >= want.len() || Instant::now() > deadline {
            let status = get_json(
                &format!("{}/api/v1/status/aggregation", cascade.base()),
                &[],
            )
            .await;
            assert_eq!(status["data"][0]["late"], 0, "{status}");
            println!("aggregation status after two SIGKILLs: {status}");
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "every window of every group, across two SIGKILLs"
            );
            for (k, v) in &want {
                assert!(
                    (got[k] - v).abs() <= 1e-9 * v.abs().max(1.0),
                    "{k:?}: {} vs {v}",
                    got[k]
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("aggregation across SIGKILLs: {} output samples", want.len());
}
