//! Interop: `strata bench write` → `strata relay` (durable queue + sender) → a real receiver
//! from Debian's packages; every sample is queried back, exact count.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use support::*;

const SERIES: usize = 2000;
const INTERVALS: usize = 6;

/// Writes SERIES x INTERVALS samples into a relay forwarding to `peer`, then counts them there.
async fn relay_round_trip(dir: &std::path::Path, peer: &Proc, protocol: &str) {
    let relay = start_relay(
        dir,
        free_port(),
        &format!("{}/api/v1/write", peer.base()),
        &["--batch-send-deadline-seconds", "0.2"],
    )
    .await;
    bench_write(
        &format!("{}/api/v1/write", relay.base()),
        SERIES,
        INTERVALS,
        protocol,
    );
    let base = peer.base();
    let got = eventually(SERIES * INTERVALS, || count_samples_promql(&base, "1h")).await;
    assert_eq!(got, SERIES * INTERVALS, "samples in {}", peer.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_sample_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path()).await;
    relay_round_trip(dir.path(), &prom, "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_sample_to_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let vm = start_victoria_metrics(dir.path()).await;
    // Remote-write 2.0 into the relay; the relay forwards 1.0.
    relay_round_trip(dir.path(), &vm, "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_query_reads_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path()).await;
    bench_write(&format!("{}/api/v1/write", prom.base()), 200, 2, "1");
    let bench_query = |expr: &str, repeat: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "bench",
                "query",
                "--url",
                &prom.base(),
                "--expr",
                expr,
                "--repeat",
                repeat,
            ])
            .output()
            .unwrap()
    };
    let out = bench_query("count(node_load1)", "3");
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
    let bad = bench_query("sum(", "1");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad_data"));
}
