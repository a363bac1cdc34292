//! End-to-end tests of `strata central`: real Prometheus writing into it and reading from it,
//! crashes, damaged files, and two AZs converging through peer backfill.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_wire::clock::now_ms;

use strata_wire::{Label, Sample, TimeSeries, WriteRequest};
use support::*;

fn total(series: &[TimeSeries]) -> usize {
    series.iter().map(|s| s.samples.len()).sum()
}

/// `data` of a JSON API answer to GET `url` with `query`.
async fn api_data(url: String, query: &[(&str, i64)]) -> serde_json::Value {
    let query: Vec<(&str, String)> = query.iter().map(|&(k, v)| (k, v.to_string())).collect();
    get_json(&url, &query).await["data"].clone()
}

async fn status(base: &str) -> serde_json::Value {
    api_data(format!("{base}/api/v1/status/tsdb"), &[]).await
}

/// Real Prometheus scrapes the central's own `/metrics` and remote-writes the samples into it;
/// a second job reads the bench data back through Prometheus's `remote_read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_writes_into_central_and_reads_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let central = start_central(dir.path(), "central", port, &[]).await;
    let base = central.base();
    bench_write(&format!("{base}/api/v1/write"), 300, 10, "1");
    let prom = start_prometheus_with(
        dir.path(),
        &format!(
            "scrape_configs:\n  - job_name: central\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             remote_write:\n  - url: {base}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n\
             remote_read:\n  - url: {base}/api/v1/read\n    read_recent: true\n"
        ),
    )
    .await;
    // Prometheus's scrapes of the central arrive in the central.
    let deadline = Instant::now() + Duration::from_secs(60);
    let scraped = loop {
        let now = now_ms();
        let got = read_all(&base, now - 600_000, now).await;
        let n = got
            .iter()
            .filter(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "job" && l.value == "central")
            })
            .count();
        if n > 10 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        scraped > 10,
        "Prometheus remote-wrote {scraped} series of its scrapes"
    );
    // The bench data lives only in the central; Prometheus serves it through remote_read.
    let n = count_samples_promql(&prom.base(), "1h").await;
    assert!(
        n >= 300 * 10,
        "Prometheus read {n} samples through remote_read, want at least the 3000 bench samples"
    );
}

const SERIES: usize = 40;

fn request(t: usize) -> Vec<u8> {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|s| TimeSeries {
                labels: vec![
                    Label::new("__name__", "crash_test"),
                    Label::new("s", s.to_string()),
                ],
                samples: vec![Sample {
                    value: (t * 1000 + s) as f64,
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

/// Sends requests `from..to` in order, each until the central answers 2xx, `pause` apart.
async fn send_all(port: u16, from: usize, to: usize, pause: Duration) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let mut retries = 0;
    for t in from..to {
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
                Ok(r) if r.status().is_server_error() => retries += 1,
                Ok(r) => panic!(
                    "central answered {} to a valid request: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(_) => retries += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(pause).await;
    }
    retries
}

/// Checks that the central holds exactly samples `0..intervals` of every crash-test series.
fn assert_exact(series: &[TimeSeries], intervals: usize) {
    assert_eq!(series.len(), SERIES);
    for ts in series {
        let s: usize = ts
            .labels
            .iter()
            .find(|l| l.name == "s")
            .unwrap()
            .value
            .parse()
            .unwrap();
        assert_eq!(ts.samples.len(), intervals, "series s={s}");
        for (t, sample) in ts.samples.iter().enumerate() {
            assert_eq!(sample.timestamp, t as i64 * 1000);
            assert_eq!(sample.value, (t * 1000 + s) as f64);
        }
    }
}

/// One-minute blocks and a maintenance pass five times a second, so cuts, WAL checkpoints and
/// compactions happen while the test kills the central. The samples are from 1970, so
/// retention is set long enough to keep them.
const FAST_BLOCKS: [&str; 8] = [
    "--block-duration",
    "1m",
    "--out-of-order-window",
    "10s",
    "--maintenance-interval",
    "200ms",
    "--retention",
    "60y",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_keeps_every_acknowledged_sample_across_sigkills() {
    const INTERVALS: usize = 600;
    const KILLS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let central = Arc::new(tokio::sync::Mutex::new(
        start_central(dir.path(), "central", port, &FAST_BLOCKS).await,
    ));
    let client = tokio::spawn(send_all(port, 0, INTERVALS, Duration::from_millis(8)));
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + 53 * kill as u64)).await;
        let mut proc = central.lock().await;
        proc.kill();
        *proc = start_central(dir.path(), "central", port, &FAST_BLOCKS).await;
    }
    let retries = client.await.unwrap();
    let base = central.lock().await.base();
    let got = read_all(&base, 0, i64::MAX).await;
    let st = status(&base).await;
    println!(
        "crash test: {} samples, {KILLS} SIGKILLs, {retries} client retries, {} held, {} blocks",
        SERIES * INTERVALS,
        total(&got),
        st["strata"]["blocks"].as_array().unwrap().len()
    );
    assert_exact(&got, INTERVALS);
}

fn files_under(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p, name));
        } else if p.file_name().unwrap() == name {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_wal_and_block_are_reported_and_the_rest_is_served() {
    const INTERVALS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut central = start_central(dir.path(), "central", port, &FAST_BLOCKS).await;
    send_all(port, 0, INTERVALS, Duration::ZERO).await;
    let base = central.base();
    // Wait until the head has been cut at every full minute: 5 minutes of data leave the last
    // one in the head. How many blocks that takes depends on how much had arrived at each
    // cut (a cut writes the largest compaction windows that fit).
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(&base).await["headStats"]["minTime"].as_i64() < Some(4 * 60_000) {
        assert!(
            Instant::now() < deadline,
            "the head was not cut into blocks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A compaction may still be replacing the cut blocks, or merging neighbours; wait until no
    // two blocks overlap and the list has held for a second (several maintenance passes), so
    // that the damaged block's range is held nowhere else and no merge replaces it.
    let data = dir.path().join("central");
    let mut listed: Option<(Vec<(i64, i64)>, Instant)> = None;
    loop {
        // Read leniently: a replaced block's directory may go while it is listed.
        let mut ranges: Vec<(i64, i64)> = std::fs::read_dir(data.join("blocks"))
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let m = e.ok()?.path().join("meta.json");
                let meta: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(m).ok()?).ok()?;
                Some((meta["min_t"].as_i64()?, meta["max_t"].as_i64()?))
            })
            .collect();
        ranges.sort();
        let apart = !ranges.is_empty() && ranges.windows(2).all(|w| w[0].1 < w[1].0);
        match &listed {
            Some((before, since)) if apart && *before == ranges => {
                if since.elapsed() >= Duration::from_secs(1) {
                    break;
                }
            }
            _ => listed = Some((ranges.clone(), Instant::now())),
        }
        assert!(
            Instant::now() < deadline,
            "blocks still overlap: {ranges:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    central.kill();
    // Flip bytes in the oldest block and cut the newest non-empty WAL segment short.
    let mut blocks = files_under(&data.join("blocks"), "samples.parquet");
    blocks.sort();
    let bad = &blocks[0];
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bad.with_file_name("meta.json")).unwrap()).unwrap();
    let bad_max_t = meta["max_t"].as_i64().unwrap();
    let mut bytes = std::fs::read(bad).unwrap();
    for i in (8..bytes.len() - 8).step_by(97) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(bad, bytes).unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .parse::<u64>()
                .is_ok()
                && std::fs::metadata(p).unwrap().len() > 0
        })
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let central = start_central(dir.path(), "central", port, &FAST_BLOCKS).await;
    let st = status(&central.base()).await;
    let problems = st["strata"]["problems"].to_string();
    assert!(
        problems.contains("unreadable"),
        "the damaged block is reported: {problems}"
    );
    assert!(
        problems.contains("/wal/"),
        "the damaged WAL segment is reported: {problems}"
    );
    let got = read_all(&central.base(), 0, i64::MAX).await;
    let held = total(&got);
    println!(
        "corruption test: {held} of {} samples still served; problems: {problems}",
        SERIES * INTERVALS
    );
    // Everything after the damaged block is served, except at most the one torn request.
    let after_bad = INTERVALS - (bad_max_t / 1000 + 1) as usize;
    assert_eq!(got.len(), SERIES);
    for ts in &got {
        assert!(ts.samples.iter().all(|s| s.timestamp > bad_max_t));
        assert!(
            ts.samples.len() + 1 >= after_bad,
            "{} of {after_bad}",
            ts.samples.len()
        );
    }
}

async fn coverage(base: &str) -> Vec<serde_json::Value> {
    let now = now_ms();
    let query = [("start", now - 3_600_000), ("end", now)];
    api_data(format!("{base}/api/v1/status/coverage"), &query)
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn counts(base: &str) -> HashMap<String, usize> {
    let now = now_ms();
    read_all(base, now - 3_600_000, now)
        .await
        .into_iter()
        .map(|s| (strata_wire::labels::render(&s.labels), s.samples.len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_backfill_makes_both_azs_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let peer = |p: u16| format!("http://127.0.0.1:{p}");
    let args = |p: u16| {
        vec![
            "--peer-url".to_string(),
            peer(p),
            "--backfill-interval".into(),
            "1s".into(),
            "--backfill-settle".into(),
            "0s".into(),
        ]
    };
    let (aa, ab) = (args(pb), args(pa));
    let aa: Vec<&str> = aa.iter().map(String::as_str).collect();
    let ab: Vec<&str> = ab.iter().map(String::as_str).collect();
    let a = start_central(dir.path(), "az-a", pa, &aa).await;
    let mut b = start_central(dir.path(), "az-b", pb, &ab).await;
    // Both receive the same stream, then B is down while A keeps receiving.
    for base in [a.base(), b.base()] {
        bench_write(&format!("{base}/api/v1/write"), 500, 8, "1");
    }
    b.kill();
    bench_write(&format!("{}/api/v1/write", a.base()), 500, 8, "1");
    let b = start_central(dir.path(), "az-b", pb, &ab).await;
    // After the restart B also loses part of what it had.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/admin/tsdb/delete_series", b.base()))
        .query(&[("match[]", "{job=\"apiserver\"}")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ca, cb) = (coverage(&a.base()).await, coverage(&b.base()).await);
        if !ca.is_empty() && ca == cb {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "AZs did not converge: A {ca:?}\nB {cb:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ra, rb) = (counts(&a.base()).await, counts(&b.base()).await);
    assert_eq!(ra, rb, "both AZs hold the same series and samples");
    let samples: usize = ra.values().sum();
    println!(
        "AZ divergence test: both AZs hold {samples} samples in {} series",
        ra.len()
    );
    let metrics = reqwest::get(format!("{}/metrics", b.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fetched = metrics
        .lines()
        .find(|l| l.starts_with("strata_central_backfill_fetched_samples_total"))
        .unwrap();
    assert!(!fetched.ends_with(" 0"), "{fetched}");
}

/// Counts of `strata_central_queries_total` by outcome on the central's `/metrics`.
async fn query_outcomes(base: &str) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("strata_central_queries_total{"))
        .filter_map(|l| {
            let outcome = l.split("outcome=\"").nth(1)?.split('"').next()?;
            Some((outcome.to_string(), l.rsplit_once(' ')?.1.parse().ok()?))
        })
        .collect()
}

/// A query whose client stops waiting stops too, counted as `canceled`; one that runs out of
/// time answers Prometheus's `timeout` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_stop_when_their_client_goes_or_their_time_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(dir.path(), "central", free_port(), &[]).await;
    let base = central.base();
    bench_write(&format!("{base}/api/v1/write"), 50, 5, "1");
    // A millisecond-resolution subquery over an hour at every step: minutes of work.
    let heavy = "max_over_time(node_load1[1h:1ms])";
    let now = now_ms() as f64 / 1000.0;
    let range = [
        ("query", heavy.to_string()),
        ("start", format!("{}", now - 3600.0)),
        ("end", format!("{now}")),
        ("step", "60".to_string()),
    ];
    let gone = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .get(format!("{base}/api/v1/query_range"))
        .query(&range)
        .send()
        .await;
    assert!(gone.is_err(), "the heavy query answered within 500 ms");
    let deadline = Instant::now() + Duration::from_secs(60);
    while query_outcomes(&base).await.get("canceled").copied() != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "no canceled query counted: {:?}",
            query_outcomes(&base).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut timed = range.to_vec();
    timed.push(("timeout", "300ms".to_string()));
    let started = Instant::now();
    let resp = get_json(&format!("{base}/api/v1/query_range"), &timed).await;
    assert_eq!(resp["status"], "error", "{resp}");
    assert_eq!(resp["errorType"], "timeout", "{resp}");
    assert_eq!(
        resp["error"], "query timed out in query execution",
        "{resp}"
    );
    // The heavy query runs for minutes: an answer within a minute is the timeout's doing.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(query_outcomes(&base).await.get("timeout"), Some(&1.0));
}
