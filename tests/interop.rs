//! Interop: `strata bench write` → `strata relay` (durable queue + sender) → a real receiver
//! from Debian's packages; every sample is queried back, exact count.

mod support;

use support::*;

const SERIES: usize = 2000;
const INTERVALS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_sample_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path()).await;
    let relay = start_relay(
        dir.path(),
        free_port(),
        &format!("{}/api/v1/write", prom.base()),
        &["--batch-send-deadline-seconds", "0.2"],
    )
    .await;
    bench_write(
        &format!("{}/api/v1/write", relay.base()),
        SERIES,
        INTERVALS,
        "1",
    );
    let base = prom.base();
    let got = eventually(SERIES * INTERVALS, || count_samples_promql(&base, "1h")).await;
    assert_eq!(got, SERIES * INTERVALS, "samples in Prometheus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_sample_to_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let vm = start_victoria_metrics(dir.path()).await;
    let relay = start_relay(
        dir.path(),
        free_port(),
        &format!("{}/api/v1/write", vm.base()),
        &["--batch-send-deadline-seconds", "0.2"],
    )
    .await;
    // Remote-write 2.0 into the relay; the relay forwards 1.0.
    bench_write(
        &format!("{}/api/v1/write", relay.base()),
        SERIES,
        INTERVALS,
        "2",
    );
    let base = vm.base();
    let got = eventually(SERIES * INTERVALS, || count_samples_promql(&base, "1h")).await;
    assert_eq!(got, SERIES * INTERVALS, "samples in VictoriaMetrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_query_reads_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path()).await;
    bench_write(&format!("{}/api/v1/write", prom.base()), 200, 2, "1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "bench",
            "query",
            "--url",
            &prom.base(),
            "--expr",
            "count(node_load1)",
            "--repeat",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 runs") && stdout.contains("latency min"),
        "{stdout}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "bench",
            "query",
            "--url",
            &prom.base(),
            "--expr",
            "sum(",
            "--repeat",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad_data"));
}
