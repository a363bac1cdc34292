//! `strata edge` end to end:
//!
//! - real node exporter → strata edge → real VictoriaMetrics, compared with real Prometheus 2.42
//!   scraping the same exporter with the same scrape and relabel configuration;
//! - a minute-long outage of VictoriaMetrics while the edge scrapes: every sample arrives;
//! - file and HTTP discovery, reloads, `/api/v1/targets` and staleness markers, with in-test
//!   targets and an in-test remote-write receiver;
//! - TLS: real node exporter serving mutual TLS and real VictoriaMetrics serving TLS.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use serde_json::Value;
use strata_wire::{WriteRequest, is_stale_nan};
use support::*;

/// An in-test target: `edge_test_scrapes_total` counts the scrapes it served.
struct Exposer {
    port: u16,
    served: Arc<AtomicU64>,
}

async fn start_exposer() -> Exposer {
    let served = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(n): State<Arc<AtomicU64>>| async move {
                let n = n.fetch_add(1, Ordering::SeqCst) + 1;
                format!(
                    "# HELP edge_test_scrapes_total Scrapes served.\n# TYPE edge_test_scrapes_total counter\nedge_test_scrapes_total {n}\nedge_test_info{{version=\"1\"}} 1\n"
                )
            }),
        )
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Exposer { port, served }
}

/// Every sample an in-test receiver got, in arrival order, by rendered series; metadata
/// entries are keys `# <family> <type> <help>` without samples.
type Received = Arc<Mutex<BTreeMap<String, Vec<(i64, f64)>>>>;

async fn receive(State(rx): State<Received>, body: Bytes) -> StatusCode {
    let Ok(req) = WriteRequest::decode_snappy(&body, 64 << 20) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut r = rx.lock().unwrap();
    for m in &req.metadata {
        r.entry(format!(
            "# {} {} {}",
            m.metric_family_name, m.r#type, m.help
        ))
        .or_default();
    }
    for ts in req.timeseries {
        let key = strata_wire::labels::render(&ts.labels);
        let samples = r.entry(key).or_default();
        samples.extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
    }
    StatusCode::NO_CONTENT
}

async fn targets(edge: &Proc, state: &str) -> Vec<Value> {
    let v = get_json(
        &format!("{}/api/v1/targets", edge.base()),
        &[("state", state.to_string())],
    )
    .await;
    assert_eq!(v["status"], "success", "{v}");
    let key = if state == "dropped" {
        "droppedTargets"
    } else {
        "activeTargets"
    };
    v["data"][key].as_array().unwrap().clone()
}

async fn reload(edge: &Proc) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/-/reload", edge.base()))
        .send()
        .await
        .unwrap()
}

/// Polls until `check` holds (or 30 s pass, then fails with `what`).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn label_sets(series: &Value, strip: &[&str]) -> BTreeSet<BTreeMap<String, String>> {
    series
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !strip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_through_edge_reaches_victoria_metrics_as_prometheus_scrapes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ne = start_node_exporter(dir.path()).await;
    let vm = start_victoria_metrics(dir.path()).await;
    let job = format!(
        r#"scrape_configs:
  - job_name: node
    scrape_interval: 1s
    static_configs:
      - targets: ['127.0.0.1:{}']
        labels: {{tier: meta}}
    relabel_configs:
      - source_labels: [__address__]
        regex: '([^:]+):\d+'
        target_label: host
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*|promhttp_.*'
        action: drop
      - source_labels: [__name__, mode]
        regex: 'node_cpu_seconds_total;(idle|user)'
        target_label: busy
        replacement: '${{1}}'
"#,
        ne.port
    );
    let prom = start_prometheus_with(dir.path(), &job).await;
    let edge_config = format!(
        "global:\n  external_labels: {{region: cn-hangzhou, cell: hz-07}}\n{job}remote_write:\n  - url: {}/api/v1/write\n    queue_config: {{batch_send_deadline: 200ms}}\n",
        vm.base()
    );
    let edge = start_edge(dir.path(), &edge_config, free_port()).await;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Both scrape at least three times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let series_of = |base: String| async move {
        get_json(
            &format!("{base}/api/v1/series"),
            &[
                ("match[]", r#"{job="node"}"#.to_string()),
                ("start", (start - 60).to_string()),
            ],
        )
        .await["data"]
            .clone()
    };
    let vm_base = vm.base();
    until("the edge's samples in VictoriaMetrics", || {
        let f = series_of(vm_base.clone());
        async move { f.await.as_array().is_some_and(|a| a.len() > 100) }
    })
    .await;
    // The rest of a scrape may still be in a later batch or in VictoriaMetrics' buffers, and
    // Prometheus' own first scrape may come later: compare until they agree, for a minute.
    let (vm_base, prom_base) = (&vm.base(), &prom.base());
    let from_edge = until_ok(Duration::from_secs(60), || async move {
        let from_edge = series_of(vm_base.clone()).await;
        for s in from_edge.as_array().unwrap() {
            assert_eq!(s["region"], "cn-hangzhou", "{s}");
            assert_eq!(s["cell"], "hz-07", "{s}");
        }
        let from_edge = label_sets(&from_edge, &["region", "cell"]);
        let from_prometheus = label_sets(&series_of(prom_base.clone()).await, &[]);
        let only_edge: Vec<_> = from_edge.difference(&from_prometheus).collect();
        let only_prom: Vec<_> = from_prometheus.difference(&from_edge).collect();
        if only_edge.is_empty() && only_prom.is_empty() {
            Ok(from_edge)
        } else {
            Err(format!(
                "label sets differ\nonly from strata edge: {only_edge:?}\nonly in Prometheus: {only_prom:?}"
            ))
        }
    })
    .await;
    assert!(
        from_edge
            .iter()
            .any(|l| l.get("busy").map(String::as_str) == Some("idle"))
    );
    assert!(!from_edge.iter().any(|l| l["__name__"].starts_with("go_")));
    for name in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        assert!(
            from_edge
                .iter()
                .any(|l| l["__name__"] == name && l["host"] == "127.0.0.1" && l["tier"] == "meta"),
            "{name} missing"
        );
    }
    let active = targets(&edge, "active").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["health"], "up", "{}", active[0]);
    assert_eq!(active[0]["labels"]["host"], "127.0.0.1");
}

/// Every sample of the series `selector` selects in VictoriaMetrics, by timestamp.
async fn exported(vm: &str, selector: &str) -> Vec<(i64, f64)> {
    let body = reqwest::Client::new()
        .get(format!("{vm}/api/v1/export"))
        .query(&[("match[]", selector)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamps"].as_array().unwrap();
        let vals = v["values"].as_array().unwrap();
        out.extend(
            ts.iter()
                .zip(vals)
                .map(|(t, v)| (t.as_i64().unwrap(), v.as_f64().unwrap())),
        );
    }
    out.sort_by_key(|&(t, _)| t);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_the_receiver_loses_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let target = start_exposer().await;
    let vm_port = free_port();
    let mut vm = start_victoria_metrics_at(dir.path(), vm_port).await;
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: outage\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\nremote_write:\n  - url: {}/api/v1/write\n    queue_config: {{batch_send_deadline: 200ms, max_backoff: 2s}}\n",
        target.port,
        vm.base()
    );
    let edge = start_edge(dir.path(), &config, free_port()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    vm.terminate();
    let down_at = target.served.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let during = target.served.load(Ordering::SeqCst) - down_at;
    // The scraper skips the ticks a stalled machine misses; most must have happened.
    assert!(during >= 40, "the edge kept scraping: {during} scrapes");
    let vm = start_victoria_metrics_at(dir.path(), vm_port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = target.served.load(Ordering::SeqCst);
    let base = vm.base();
    // Every scrape the target served has its `up` (0 for one that timed out on a loaded
    // machine), and every scrape with `up` 1 has its counter sample.
    let got = until_ok(Duration::from_secs(60), || async {
        let got = exported(&base, "edge_test_scrapes_total").await;
        let up = exported(&base, r#"up{job="outage"}"#).await;
        let attempts: BTreeSet<i64> = up.iter().map(|&(t, _)| t).collect();
        if (attempts.len() as u64) < served {
            return Err(format!(
                "{} of {served} scrapes have their up in VictoriaMetrics",
                attempts.len()
            ));
        }
        let scraped: BTreeSet<i64> = got.iter().map(|&(t, _)| t).collect();
        let missing: Vec<i64> = up
            .iter()
            .filter(|&&(t, v)| v == 1.0 && !scraped.contains(&t))
            .map(|&(t, _)| t)
            .collect();
        if missing.is_empty() {
            Ok(got)
        } else {
            Err(format!(
                "{} of {} successful scrapes missing, at {missing:?}",
                missing.len(),
                up.iter().filter(|&&(_, v)| v == 1.0).count()
            ))
        }
    })
    .await;
    let values: BTreeSet<u64> = got.iter().map(|&(_, v)| v as u64).collect();
    // In timestamp order the counter only grows: nothing arrived out of order, and a
    // repeat is only ever an exact duplicate (an at-least-once retry).
    for w in got.windows(2) {
        assert!(
            w[1].1 > w[0].1 || w[1] == w[0],
            "out of order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let duplicates = got.len() - values.len();
    eprintln!(
        "outage: {served} scrapes, {during} while the receiver was down, {duplicates} duplicates"
    );
    drop(edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reloads_and_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_exposer().await;
    let b = start_exposer().await;
    let received: Received = Received::default();
    let sd_body = format!(
        r#"[{{"targets": ["127.0.0.1:{}"], "labels": {{"sd": "http"}}}}]"#,
        b.port
    );
    let app = Router::new()
        .route("/api/v1/write", post(receive))
        .with_state(received.clone())
        .route(
            "/sd",
            get(move || {
                let body = sd_body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sd_file = dir.path().join("targets.json");
    std::fs::write(
        &sd_file,
        format!(
            r#"[{{"targets": ["127.0.0.1:{}"], "labels": {{"sd": "file"}}}}]"#,
            a.port
        ),
    )
    .unwrap();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  external_labels: {{cell: hz-07}}
scrape_configs:
  - job_name: files
    file_sd_configs: [{{files: ['{}']}}]
  - job_name: http
    http_sd_configs: [{{url: 'http://127.0.0.1:{rx_port}/sd', refresh_interval: 1s}}]
  - job_name: unwanted
    static_configs: [{{targets: ['127.0.0.1:1'], labels: {{env: dev}}}}]
    relabel_configs: [{{source_labels: [env], regex: dev, action: drop}}]
  - job_name: broken-sd
    http_sd_configs: [{{url: 'http://127.0.0.1:1/sd', refresh_interval: 1s}}]
remote_write:
  - url: http://127.0.0.1:{rx_port}/api/v1/write
    queue_config: {{batch_send_deadline: 100ms}}
    metadata_config: {{send_interval: 1s}}
"#,
        dir.path().join("*.json").display()
    );
    let edge = start_edge(dir.path(), &config, free_port()).await;
    until("both discovered targets up", || async {
        let t = targets(&edge, "active").await;
        t.len() == 2 && t.iter().all(|t| t["health"] == "up")
    })
    .await;
    let t = targets(&edge, "active").await;
    let pools: BTreeSet<&str> = t
        .iter()
        .map(|t| t["scrapePool"].as_str().unwrap())
        .collect();
    assert_eq!(pools, BTreeSet::from(["files", "http"]));
    let http = t.iter().find(|t| t["scrapePool"] == "http").unwrap();
    assert_eq!(http["labels"]["sd"], "http");
    assert_eq!(
        http["discoveredLabels"]["__meta_url"],
        format!("http://127.0.0.1:{rx_port}/sd")
    );
    let file = t.iter().find(|t| t["scrapePool"] == "files").unwrap();
    assert_eq!(
        file["discoveredLabels"]["__meta_filepath"],
        sd_file.display().to_string()
    );
    until("the targets' metadata at the receiver", || async {
        received
            .lock()
            .unwrap()
            .contains_key("# edge_test_scrapes_total 1 Scrapes served.")
    })
    .await;
    let metrics = get_text(&format!("{}/metrics", edge.base())).await;
    assert!(
        metrics.contains(r#"strata_edge_sd_failures_total{job="broken-sd",mechanism="http"}"#),
        "{metrics}"
    );
    let dropped = targets(&edge, "dropped").await;
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["discoveredLabels"]["env"], "dev");

    // The file target goes away: its series end with staleness markers.
    let a_series = format!(
        r#"edge_test_scrapes_total{{cell="hz-07", instance="127.0.0.1:{}", job="files", sd="file"}}"#,
        a.port
    );
    let a_up = format!(
        r#"up{{cell="hz-07", instance="127.0.0.1:{}", job="files", sd="file"}}"#,
        a.port
    );
    until("samples of the file target", || async {
        received.lock().unwrap().contains_key(&a_series)
    })
    .await;
    std::fs::write(&sd_file, "[]").unwrap();
    until("staleness markers for the removed target", || async {
        let r = received.lock().unwrap();
        [&a_series, &a_up].iter().all(|k| {
            r.get(*k)
                .and_then(|s| s.last())
                .is_some_and(|&(_, v)| is_stale_nan(v))
        })
    })
    .await;
    assert_eq!(targets(&edge, "active").await.len(), 1);

    // A bad reload is refused and the running configuration stays.
    std::fs::write(
        dir.path().join("edge.yaml"),
        "scrape_configs:\n  - job_nme: x\n",
    )
    .unwrap();
    let resp = reload(&edge).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let msg = resp.text().await.unwrap();
    assert!(
        msg.contains("unknown field `job_nme`") && msg.contains("line 2"),
        "{msg}"
    );
    let metrics = get_text(&format!("{}/metrics", edge.base())).await;
    assert!(
        metrics.contains("strata_edge_config_last_reload_successful 0"),
        "{metrics}"
    );
    assert_eq!(targets(&edge, "active").await.len(), 1);

    // A good reload takes effect: the http job is gone.
    std::fs::write(
        dir.path().join("edge.yaml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: files\n    file_sd_configs: [{{files: ['{}']}}]\nremote_write:\n  - url: http://127.0.0.1:{rx_port}/api/v1/write\n",
            sd_file.display()
        ),
    )
    .unwrap();
    let resp = reload(&edge).await;
    assert_eq!(resp.status(), StatusCode::OK);
    until("the http job to stop", || async {
        targets(&edge, "active").await.is_empty()
    })
    .await;
}

/// A test CA and certificates it issued, written as PEM files into a directory.
struct Pki {
    ca: std::path::PathBuf,
    ca_pem: String,
}

impl Pki {
    fn new(dir: &std::path::Path) -> (Self, rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "strata test CA");
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, issuer.pem()).unwrap();
        let ca_pem = issuer.pem();
        (Self { ca, ca_pem }, issuer)
    }

    /// A certificate for `names` signed by the CA: (cert file, key file, cert PEM + key PEM).
    fn issue(
        dir: &std::path::Path,
        issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        stem: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let (cert_file, key_file) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (
            cert_file,
            key_file,
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )
    }
}

/// Real node exporter serving mutual TLS (a certificate for `node.example` only) → strata
/// edge (client certificate, `server_name`) → real VictoriaMetrics serving TLS for 127.0.0.1.
/// A job without the client certificate is refused by the exporter and reported down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_scrapes_and_remote_write_against_real_peers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pki, issuer) = Pki::new(d);
    let (node_crt, node_key, _) = Pki::issue(d, &issuer, "node", &["node.example"]);
    let (vm_crt, vm_key, _) = Pki::issue(d, &issuer, "vm", &["127.0.0.1"]);
    let (edge_crt, edge_key, edge_identity) = Pki::issue(d, &issuer, "edge", &["strata-edge"]);
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();

    let web_config = d.join("node-web.yaml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            node_crt.display(),
            node_key.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let node_port = free_port();
    let mut node = std::process::Command::new(peer_binary(
        "prometheus-node-exporter",
        "prometheus-node-exporter",
    ));
    node.arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
        .arg(format!("--web.config.file={}", web_config.display()));
    let node_client = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .identity(reqwest::Identity::from_pem(edge_identity.as_bytes()).unwrap())
        .resolve(
            "node.example",
            std::net::SocketAddr::from(([127, 0, 0, 1], node_port)),
        )
        .build()
        .unwrap();
    let _node = spawn_ready_with(
        d,
        "node exporter",
        node,
        node_port,
        &format!("https://node.example:{node_port}/metrics"),
        &node_client,
    )
    .await;

    let vm_port = free_port();
    let mut vm = std::process::Command::new(peer_binary("victoria-metrics", "victoria-metrics"));
    vm.arg(format!("-storageDataPath={}", d.join("vm-data").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg("-search.latencyOffset=0s")
        .arg("-tls")
        .arg(format!("-tlsCertFile={}", vm_crt.display()))
        .arg(format!("-tlsKeyFile={}", vm_key.display()));
    let vm_client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let vm_base = format!("https://127.0.0.1:{vm_port}");
    let _vm = spawn_ready_with(
        d,
        "victoria-metrics",
        vm,
        vm_port,
        &format!("{vm_base}/health"),
        &vm_client,
    )
    .await;

    let edge_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  external_labels: {{cell: hz-07}}\n\
         scrape_configs:\n\
         \x20 - job_name: node-tls\n    scheme: https\n    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\n\
         \x20   tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: node.example}}\n\
         \x20 - job_name: no-client-cert\n    scheme: https\n    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\n\
         \x20   tls_config: {{ca_file: {ca}, server_name: node.example}}\n\
         remote_write:\n  - url: {vm_base}/api/v1/write\n    tls_config: {{ca_file: {ca}}}\n",
        ca = pki.ca.display(),
        cert = edge_crt.display(),
        key = edge_key.display(),
    );
    let edge = start_edge(d, &config, edge_port).await;

    until("the TLS job's series in VictoriaMetrics", || async {
        let Ok(resp) = vm_client
            .get(format!("{vm_base}/api/v1/series"))
            .query(&[("match[]", "{job=\"node-tls\",cell=\"hz-07\"}")])
            .send()
            .await
        else {
            return false;
        };
        let v: Value =
            serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or_default();
        let series = v["data"].as_array().map_or(0, Vec::len);
        let up = v["data"].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["__name__"] == "node_exporter_build_info")
        });
        series > 100 && up
    })
    .await;
    until("both jobs' health", || async {
        let active = targets(&edge, "active").await;
        let health = |job: &str| {
            active
                .iter()
                .find(|t| t["labels"]["job"] == job)
                .map(|t| (t["health"].clone(), t["lastError"].clone()))
        };
        matches!(health("node-tls"), Some((h, _)) if h == "up")
            && matches!(health("no-client-cert"), Some((h, e)) if h == "down" && !e.as_str().unwrap_or("").is_empty())
    })
    .await;
}
