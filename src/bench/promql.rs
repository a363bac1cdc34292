//! `strata bench promql`: strata central, Prometheus and VictoriaMetrics hold the same data
//! (`--series` fleet series, one sample every 15 s over `--history`) and answer the same
//! dashboard range queries. Printed: the median latency of each query on each server, and
//! strata's ratio to each peer (below 1 means strata is faster).
//!
//! - All servers run at once and receive the same remote-write load, one after the other.
//! - Before querying, each must be idle (background compaction and merges done); with more
//!   than three hours of history, Prometheus must also have compacted its head once, as it
//!   does on its own.
//! - Queries run round-robin: every repetition asks each server in turn, so drift on the
//!   machine affects all alike. One unmeasured round first warms caches everywhere.
//! - Latency is from sending the request until the whole JSON body is read, as Grafana sees it.
//!   VictoriaMetrics is asked with `nocache=1`, so that its rollup result cache does not answer
//!   repetitions from memory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::query::{Timed, timed};
use super::servers::{Binaries, Server, Target, cpu_seconds, metric_total, ratio, start};
use super::write::{self, LoadSpec, Protocol};

/// Seconds between the samples of a series.
const INTERVAL_SECONDS: u64 = 15;

/// Typical dashboard queries over the fleet data of `strata bench write`.
const DEFAULT_QUERIES: &[&str] = &[
    "sum by (cell) (rate(node_cpu_seconds_total[5m]))",
    "histogram_quantile(0.99, sum by (le, cell) (rate(apiserver_request_duration_seconds_bucket[5m])))",
    "topk(10, rate(container_cpu_usage_seconds_total[5m]))",
    "avg by (cluster) (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "sum by (cell) (rate(apiserver_request_duration_seconds_sum[5m])) / sum by (cell) (rate(apiserver_request_duration_seconds_count[5m]))",
    "count by (job) ({job=~\"node|kubelet\"})",
];

#[derive(Args)]
pub struct PromqlArgs {
    /// Series in the data set (about 60 per instance: node, kubelet, apiserver with a classic
    /// histogram, etcd, kube-state-metrics).
    #[arg(long, default_value_t = 12_000)]
    series: usize,
    /// History to load, ending now, one sample per series every 15 s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "6h")]
    history: Duration,
    /// Resolution of the range queries.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    step: Duration,
    /// Measured repetitions of each query on each server.
    #[arg(long, default_value_t = 10)]
    repeat: usize,
    /// A query to run instead of the default dashboard queries; repeat the flag for several.
    #[arg(long = "expr")]
    exprs: Vec<String>,
    /// Servers to compare, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Strata, Target::Prometheus, Target::VictoriaMetrics])]
    targets: Vec<Target>,
    /// Samples per remote-write request while loading.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Remote-write requests in flight while loading.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    binaries: Binaries,
}

/// Waits until the server has used under 3% of a core over two consecutive 3-second windows.
async fn settle(server: &Server, target: Target) -> anyhow::Result<()> {
    let pid = server.child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut quiet = 0;
    while quiet < 2 {
        if Instant::now() > deadline {
            bail!("{} stayed busy for 10 minutes after loading", target.name());
        }
        let before = cpu_seconds(pid)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        quiet = if cpu_seconds(pid)? - before < 0.09 {
            quiet + 1
        } else {
            0
        };
    }
    Ok(())
}

/// Makes the loaded data queryable the way the server would hold it after `history` of
/// scraping.
async fn prepare(
    server: &Server,
    target: Target,
    client: &reqwest::Client,
    history: Duration,
) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{}", server.port);
    match target {
        Target::VictoriaMetrics => {
            client
                .get(format!("{base}/internal/force_flush"))
                .send()
                .await?
                .error_for_status()?;
        }
        Target::Prometheus if history > Duration::from_secs(3 * 3600 + 15 * 60) => {
            // Prometheus checks every minute whether its head spans more than three hours.
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                if metric_total(client, server, "prometheus_tsdb_compactions_total").await? > 0.0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("Prometheus did not compact its head within 5 minutes of loading");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Target::Strata | Target::Prometheus => {}
    }
    settle(server, target).await
}

pub async fn run(args: PromqlArgs) -> anyhow::Result<()> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if args.step.is_zero() {
        bail!("--step must be positive, e.g. 15s");
    }
    if args.targets.is_empty() {
        bail!("--targets needs at least one of strata, prometheus, victoria-metrics");
    }
    let intervals = (args.history.as_secs() / INTERVAL_SECONDS) as usize;
    if intervals < 60 {
        bail!("--history must be at least 15m, e.g. 6h");
    }
    let exprs: Vec<String> = if args.exprs.is_empty() {
        DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect()
    } else {
        args.exprs.clone()
    };
    println!(
        "strata bench promql: {} series x {} intervals of {INTERVAL_SECONDS} s ({})",
        args.series,
        intervals,
        humantime::format_duration(args.history)
    );
    let load = write::build(LoadSpec {
        series: args.series,
        intervals,
        interval_seconds: INTERVAL_SECONDS,
        batch: args.batch,
        seed: 42,
        protocol: Protocol::V1,
    })?;
    let root = tempfile::tempdir()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut servers = Vec::new();
    for &target in &args.targets {
        println!("== {}: loading", target.name());
        let server = start(target, &args.binaries, root.path(), "promql").await?;
        let url = format!("http://127.0.0.1:{}/api/v1/write", server.port);
        let sent = write::send_load(&load, &url, args.concurrency, 10).await?;
        if sent.failed > 0 {
            bail!(
                "{} did not accept {} requests ({})",
                target.name(),
                sent.failed,
                sent.statuses
            );
        }
        println!(
            "   {} samples in {:.1} s",
            sent.ok,
            sent.elapsed.as_secs_f64()
        );
        servers.push((target, server));
    }
    for (target, server) in &servers {
        println!("== {}: waiting until idle", target.name());
        prepare(server, *target, &client, args.history).await?;
    }

    // Evaluate the same aligned steps everywhere, starting once the 5m windows are full.
    let step_ms = args.step.as_millis() as i64;
    let last_ms = load.start_ms + (intervals as i64 - 1) * INTERVAL_SECONDS as i64 * 1000;
    let start_ms = (load.start_ms + 10 * 60_000 + step_ms - 1) / step_ms * step_ms;
    let end_ms = last_ms / step_ms * step_ms;
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    println!(
        "== range queries over {} at {} steps, {} repetitions each",
        humantime::format_duration(Duration::from_millis((end_ms - start_ms) as u64)),
        humantime::format_duration(args.step),
        args.repeat
    );
    // results[query][server] = measured runs
    let mut results: Vec<Vec<Vec<Timed>>> = Vec::new();
    for expr in &exprs {
        let mut per_server: Vec<Vec<Timed>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..=args.repeat {
            for (i, (target, server)) in servers.iter().enumerate() {
                let mut params = vec![
                    ("query", expr.clone()),
                    ("start", secs(start_ms)),
                    ("end", secs(end_ms)),
                    ("step", format!("{}", args.step.as_secs_f64())),
                ];
                if *target == Target::VictoriaMetrics {
                    params.push(("nocache", "1".into()));
                }
                let base = format!("http://127.0.0.1:{}", server.port);
                let t = timed(&client, &base, "/api/v1/query_range", &params)
                    .await
                    .with_context(|| format!("{} on {}", expr, target.name()))?;
                if round > 0 {
                    per_server[i].push(t);
                }
            }
        }
        results.push(per_server);
    }

    println!();
    for (i, expr) in exprs.iter().enumerate() {
        println!("q{}: {expr}", i + 1);
    }
    let mut header = format!("{:<6}", "query");
    for (target, _) in &servers {
        header += &format!(" {:>18}", format!("{} ms", target.name()));
    }
    let ours = servers.iter().position(|(t, _)| *t == Target::Strata);
    if ours.is_some() {
        for (target, _) in servers.iter().filter(|(t, _)| *t != Target::Strata) {
            header += &format!(" {:>22}", format!("strata/{}", target.name()));
        }
    }
    println!("{header}");
    let mut mismatches = Vec::new();
    for (q, (expr, per_server)) in exprs.iter().zip(&mut results).enumerate() {
        let mut line = format!("{:<6}", format!("q{}", q + 1));
        let mut medians = Vec::new();
        for runs in per_server.iter_mut() {
            runs.sort_by_key(|t| t.latency);
            let median = &runs[runs.len() / 2];
            line += &format!(" {:>18.1}", median.latency.as_secs_f64() * 1000.0);
            medians.push(median.latency);
        }
        if let Some(ours) = ours {
            for (i, _) in servers
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| *t != Target::Strata)
            {
                line += &format!(
                    " {:>22}",
                    ratio(medians[ours].as_secs_f64(), medians[i].as_secs_f64())
                );
            }
        }
        println!("{line}");
        let shapes: Vec<String> = servers
            .iter()
            .zip(per_server.iter())
            .map(|((t, _), runs)| format!("{} {}/{}", t.name(), runs[0].series, runs[0].points))
            .collect();
        if per_server
            .iter()
            .any(|r| r[0].series != per_server[0][0].series)
        {
            mismatches.push(format!("{expr}: series/points {}", shapes.join(", ")));
        }
    }
    for m in mismatches {
        println!("note: the servers returned different numbers of series: {m}");
    }
    Ok(())
}
