//! The simulator against real peers: Prometheus 2.42 discovers every simulated target through
//! HTTP service discovery and scrapes its page, and `strata sim backfill` writes the same
//! history into real Prometheus and real VictoriaMetrics.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    count_samples_promql, eventually, free_port, get_json, spawn_ready, start_prometheus,
    start_prometheus_with, start_victoria_metrics, until_ok,
};

const JOBS: [&str; 10] = [
    "node",
    "aws-cni",
    "cadvisor",
    "kube-state-metrics",
    "ipam",
    "hypershift",
    "apiserver",
    "etcd",
    "hosted-apiserver",
    "hosted-etcd",
];

async fn scalar(base: &str, query: &str) -> Option<f64> {
    let v = get_json(
        &format!("{base}/api/v1/query"),
        &[("query", query.to_string())],
    )
    .await;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_discovers_and_scrapes_every_simulated_target() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.args([
        "sim",
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--regions",
        "1",
        "--cells-per-region",
        "1",
        "--clusters-per-cell",
        "3",
    ]);
    let sim = spawn_ready(dir.path(), "strata sim", command, port, "/-/ready").await;
    let fleet = get_json(&format!("{}/api/v1/fleet", sim.base()), &[]).await;
    let cell = fleet["cells"][0]["name"].as_str().unwrap().to_string();
    let meta_nodes = fleet["cells"][0]["meta_nodes"].as_u64().unwrap();
    let hosted = fleet["cells"][0]["hosted_clusters"]
        .as_array()
        .unwrap()
        .len() as u64;
    let targets = 3 * meta_nodes + 5 + 2 * hosted;

    let mut scrape = String::from("scrape_configs:\n");
    for job in JOBS {
        scrape.push_str(&format!(
            "  - job_name: {job}\n    scrape_interval: 2s\n    http_sd_configs: [{{url: '{}/sd/{cell}/{job}', refresh_interval: 5s}}]\n",
            sim.base()
        ));
    }
    let prometheus = start_prometheus_with(dir.path(), &scrape).await;
    // Checked together until all hold: one scrape of the debug build timing out (up 0, and
    // its series stale) at some moment is not what this test is about.
    let base = prometheus.base();
    let checks = || async {
        let up = scalar(&base, "count(up == 1)").await;
        if up != Some(targets as f64) {
            return Err(format!("{up:?} of {targets} targets up in Prometheus"));
        }
        let down = scalar(&base, "count(up == 0)").await;
        let jobs = scalar(&base, "count(count by (job) (up))").await;
        if (down, jobs) != (None, Some(10.0)) {
            return Err(format!("{down:?} targets down, {jobs:?} of 10 jobs"));
        }
        let nodes = scalar(
            &base,
            "count(apiserver_storage_objects{job=\"hosted-apiserver\",resource=\"nodes\"})",
        )
        .await;
        if nodes != Some(hosted as f64) {
            return Err(format!(
                "{nodes:?} hosted apiservers with a cluster label, of {hosted}"
            ));
        }
        let requests = "sum(kube_pod_container_resource_requests{resource=\"cpu\"}) / sum(kube_node_status_allocatable{resource=\"cpu\"})";
        match scalar(&base, requests).await {
            Some(cpu) if cpu > 0.2 && cpu < 0.8 => Ok(()),
            cpu => Err(format!("CPU requests at {cpu:?} of allocatable")),
        }
    };
    until_ok(Duration::from_secs(90), checks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_writes_the_same_history_into_prometheus_and_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = start_prometheus(dir.path()).await;
    let vm = start_victoria_metrics(dir.path()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "sim",
            "backfill",
            "--regions",
            "1",
            "--cells-per-region",
            "1",
            "--clusters-per-cell",
            "2",
            "--days",
            "0.1",
            "--step",
            "5m",
            "--to",
            &format!("{}/api/v1/write", prometheus.base()),
            "--to",
            &format!("{}/api/v1/write", vm.base()),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: usize = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in {stdout:?}"));
    assert!(written > 5_000, "{stdout}");
    for (name, base) in [
        ("Prometheus", prometheus.base()),
        ("VictoriaMetrics", vm.base()),
    ] {
        let n = eventually(written, || count_samples_promql(&base, "3h")).await;
        assert_eq!(n, written, "{name} holds every backfilled sample");
    }
}
