//! `strata bench store`: the central store side by side with VictoriaMetrics and Prometheus,
//! each receiving the same remote-write load, one server at a time on this machine.
//!
//! Two phases per server, each on a fresh process and data directory:
//! - ingest: `--series` series × `--intervals` intervals. Reported: samples per server
//!   CPU-second (user + system time of the server process, from `/proc/<pid>/stat`, over the
//!   load plus a short settle), and peak RSS (`VmHWM`) per active series.
//! - disk: `--disk-series` × `--disk-intervals` (default 800 × 15 s, over 3 hours, so every
//!   server persists blocks). Each is then made to persist (strata cuts its head; Prometheus
//!   compacts its head on its own schedule; VictoriaMetrics is asked to flush and merge) and
//!   the bytes of its persisted data are divided by the samples they hold.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;

use super::servers::{
    Binaries, Server, Target, cpu_seconds, dir_bytes, metric_total, peak_rss, ratio, start,
};
use super::write::{self, Load, LoadSpec, Protocol};

#[derive(Args)]
pub struct StoreArgs {
    /// Active series in the ingest phase.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Intervals in the ingest phase.
    #[arg(long, default_value_t = 60)]
    intervals: usize,
    /// Series in the disk phase.
    #[arg(long, default_value_t = 20_000)]
    disk_series: usize,
    /// Intervals in the disk phase (15 s apart; 800 is 3h20m, enough for every server to
    /// write a block).
    #[arg(long, default_value_t = 800)]
    disk_intervals: usize,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Servers to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Strata, Target::VictoriaMetrics, Target::Prometheus])]
    targets: Vec<Target>,
    #[command(flatten)]
    binaries: Binaries,
}

struct Ingest {
    samples: u64,
    cpu: f64,
    wall: f64,
    rss: u64,
}

async fn measure_ingest(
    server: &Server,
    load: &Load,
    concurrency: usize,
) -> anyhow::Result<Ingest> {
    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid)?;
    let url = format!("http://127.0.0.1:{}/api/v1/write", server.port);
    let sent = write::send_load(load, &url, concurrency, 10).await?;
    if sent.failed > 0 {
        bail!(
            "{} requests were not accepted ({})",
            sent.failed,
            sent.statuses
        );
    }
    // Let deferred work (flushes, merges of freshly written data) show up in the CPU time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Ingest {
        samples: sent.ok,
        cpu: cpu_seconds(pid)? - cpu0,
        wall: sent.elapsed.as_secs_f64(),
        rss: peak_rss(pid)?,
    })
}

/// Makes the server persist what it received; returns (bytes, samples) of its persisted data.
async fn persist(target: Target, server: &Server) -> anyhow::Result<(u64, u64)> {
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    match target {
        Target::Strata => loop {
            // The maintenance loop (every second here) cuts the head once it spans 3 hours.
            let body = client
                .get(format!("{base}/api/v1/status/tsdb"))
                .send()
                .await?
                .bytes()
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let blocks = v["data"]["strata"]["blocks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !blocks.is_empty() {
                let bytes = blocks.iter().filter_map(|b| b["bytes"].as_u64()).sum();
                let samples = blocks.iter().filter_map(|b| b["samples"].as_u64()).sum();
                return Ok((bytes, samples));
            }
            if Instant::now() > deadline {
                bail!("strata central wrote no block within 10 minutes");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        Target::Prometheus => loop {
            // Prometheus compacts its head into a block once it spans 3 hours, checked every
            // minute.
            let mut bytes = 0;
            let mut samples = 0;
            for e in std::fs::read_dir(server.dir.join("data"))?.flatten() {
                let meta = e.path().join("meta.json");
                if let Ok(raw) = std::fs::read(&meta) {
                    let m: serde_json::Value = serde_json::from_slice(&raw)?;
                    samples += m["stats"]["numSamples"].as_u64().unwrap_or(0);
                    bytes += dir_bytes(&e.path());
                }
            }
            if samples > 0 {
                return Ok((bytes, samples));
            }
            if Instant::now() > deadline {
                bail!("Prometheus wrote no block within 10 minutes");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        },
        Target::VictoriaMetrics => {
            client
                .get(format!("{base}/internal/force_flush"))
                .send()
                .await?;
            client
                .get(format!("{base}/internal/force_merge"))
                .send()
                .await?;
            // Merges run in the background: wait until the size stops changing.
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = dir_bytes(&server.dir);
                if now == last || Instant::now() > deadline {
                    break;
                }
                last = now;
            }
            let rows = metric_total(&client, server, "vm_rows").await?;
            Ok((dir_bytes(&server.dir), rows as u64))
        }
    }
}

struct Row {
    target: Target,
    ingest: Ingest,
    series: usize,
    disk: (u64, u64),
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let spec = |series, intervals| LoadSpec {
        series,
        intervals,
        interval_seconds: 15,
        batch: args.batch,
        seed: 42,
        protocol: Protocol::V1,
    };
    let mut rows = Vec::new();
    for &target in &args.targets {
        println!(
            "== {}: ingest {} series x {} intervals",
            target.name(),
            args.series,
            args.intervals
        );
        let load = write::build(spec(args.series, args.intervals))?;
        let server = start(target, &args.binaries, root.path(), "ingest").await?;
        let ingest = measure_ingest(&server, &load, args.concurrency).await?;
        drop(server);
        drop(load);
        println!(
            "   {:.0} samples/s wall, {:.0} samples per CPU-second, peak RSS {:.0} MiB",
            ingest.samples as f64 / ingest.wall,
            ingest.samples as f64 / ingest.cpu,
            ingest.rss as f64 / (1 << 20) as f64
        );
        println!(
            "== {}: disk {} series x {} intervals",
            target.name(),
            args.disk_series,
            args.disk_intervals
        );
        let load = write::build(spec(args.disk_series, args.disk_intervals))?;
        let server = start(target, &args.binaries, root.path(), "disk").await?;
        measure_ingest(&server, &load, args.concurrency).await?;
        drop(load);
        let disk = persist(target, &server).await?;
        drop(server);
        println!(
            "   {} bytes for {} samples: {:.3} bytes per sample",
            disk.0,
            disk.1,
            disk.0 as f64 / disk.1.max(1) as f64
        );
        rows.push(Row {
            target,
            ingest,
            series: args.series,
            disk,
        });
    }
    println!();
    println!(
        "{:<16} {:>14} {:>14} {:>16}",
        "server", "samples/CPU-s", "RSS B/series", "disk B/sample"
    );
    let metric = |r: &Row| {
        (
            r.ingest.samples as f64 / r.ingest.cpu,
            r.ingest.rss as f64 / r.series as f64,
            r.disk.0 as f64 / r.disk.1.max(1) as f64,
        )
    };
    for r in &rows {
        let (a, b, c) = metric(r);
        println!(
            "{:<16} {:>14.0} {:>14.0} {:>16.3}",
            r.target.name(),
            a,
            b,
            c
        );
    }
    if let Some(ours) = rows.iter().find(|r| r.target == Target::Strata) {
        let (a, b, c) = metric(ours);
        for peer in rows.iter().filter(|r| r.target != Target::Strata) {
            let (pa, pb, pc) = metric(peer);
            println!(
                "strata vs {}: ingest per CPU-second {} (higher is better), RSS per series {} and bytes per sample {} (lower is better)",
                peer.target.name(),
                ratio(a, pa),
                ratio(b, pb),
                ratio(c, pc)
            );
        }
    }
    Ok(())
}
