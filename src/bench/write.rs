//! `strata bench write`: builds every request body first, then sends them interval by interval
//! (so each series' samples arrive in time order) with `--concurrency` requests in flight, and
//! reports samples per second, status counts and retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use strata_wire::protocol::{WriteVersion, request_headers};
use strata_wire::{WriteRequest, v2};
use tokio::sync::Mutex;

use super::fleet;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
}

#[derive(Args)]
pub struct WriteArgs {
    /// Remote-write endpoint, e.g. http://127.0.0.1:9090/api/v1/write.
    #[arg(long)]
    url: String,
    /// Number of distinct series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Number of scrape intervals to send (one sample per series per interval).
    #[arg(long, default_value_t = 10)]
    intervals: usize,
    /// Seconds between samples of a series.
    #[arg(long, default_value_t = 15)]
    interval_seconds: u64,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seed of the synthetic fleet.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Remote-write protocol version of the request bodies.
    #[arg(long, value_enum, default_value_t = Protocol::V1)]
    protocol: Protocol,
    /// Retries per request on 5xx, 429 and connection errors before counting it failed.
    #[arg(long, default_value_t = 10)]
    max_retries: u32,
}

#[derive(Default)]
struct Tally {
    statuses: Mutex<BTreeMap<String, u64>>,
    retries: AtomicU64,
    failed: AtomicU64,
    samples_ok: AtomicU64,
}

/// What a load consists of.
#[derive(Clone, Copy)]
pub struct LoadSpec {
    pub series: usize,
    pub intervals: usize,
    pub interval_seconds: u64,
    pub batch: usize,
    pub seed: u64,
    pub protocol: Protocol,
}

/// Encoded request bodies, interval by interval, ending now.
pub struct Load {
    spec: LoadSpec,
    /// Timestamp of the first interval's samples, in milliseconds.
    pub start_ms: i64,
    intervals: Vec<Vec<(Vec<u8>, u64)>>,
    pub total_samples: usize,
    pub requests: usize,
    pub body_bytes: usize,
}

/// What sending a load achieved.
pub struct Sent {
    pub ok: u64,
    pub elapsed: Duration,
    pub statuses: String,
    pub retries: u64,
    pub failed: u64,
}

/// Builds every request body of `spec` (with a progress bar), the newest interval ending now.
pub fn build(spec: LoadSpec) -> anyhow::Result<Load> {
    if spec.series == 0 || spec.intervals == 0 || spec.batch == 0 {
        bail!("--series, --intervals and --batch must be at least 1");
    }
    let step_ms = spec.interval_seconds as i64 * 1000;
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis() as i64;
    // End at "now" so receivers with a bounded ingestion window (Prometheus) accept everything.
    let start_ms = now_ms - step_ms * spec.intervals as i64;
    let build = ProgressBar::new(spec.intervals as u64).with_style(ProgressStyle::with_template(
        "building requests {bar:40} {pos}/{len} intervals",
    )?);
    let mut series = fleet::series(spec.series, spec.seed);
    let mut intervals: Vec<Vec<(Vec<u8>, u64)>> = Vec::with_capacity(spec.intervals);
    let mut body_bytes = 0usize;
    for i in 0..spec.intervals {
        let ts = fleet::interval(
            &mut series,
            start_ms + step_ms * i as i64,
            spec.interval_seconds as f64,
        );
        let mut bodies = Vec::new();
        for chunk in ts.chunks(spec.batch) {
            let req = WriteRequest {
                timeseries: chunk.to_vec(),
                metadata: vec![],
            };
            let body = match spec.protocol {
                Protocol::V1 => req.encode_snappy()?,
                Protocol::V2 => v2::Request::from_v1(&req).encode_snappy()?,
            };
            body_bytes += body.len();
            bodies.push((body, chunk.len() as u64));
        }
        intervals.push(bodies);
        build.inc(1);
    }
    build.finish_and_clear();
    Ok(Load {
        spec,
        start_ms,
        requests: intervals.iter().map(Vec::len).sum(),
        total_samples: spec.series * spec.intervals,
        intervals,
        body_bytes,
    })
}

/// Sends `load` to `url`, interval by interval, `concurrency` requests in flight.
pub async fn send_load(
    load: &Load,
    url: &str,
    concurrency: usize,
    max_retries: u32,
) -> anyhow::Result<Sent> {
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let tally = Arc::new(Tally::default());
    let bar = ProgressBar::new(load.total_samples as u64).with_style(ProgressStyle::with_template(
        "sending {bar:40} {pos}/{len} samples {per_sec} eta {eta}",
    )?);
    let started = Instant::now();
    for bodies in &load.intervals {
        let bodies = Arc::new(bodies.clone());
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (bodies, next, tally, client, bar) = (
                bodies.clone(),
                next.clone(),
                tally.clone(),
                client.clone(),
                bar.clone(),
            );
            let (url, protocol) = (url.to_owned(), load.spec.protocol);
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((body, samples)) = bodies.get(i) else {
                        break;
                    };
                    send(
                        &client,
                        &url,
                        protocol,
                        body.clone(),
                        *samples,
                        max_retries,
                        &tally,
                    )
                    .await;
                    bar.inc(*samples);
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let statuses = tally.statuses.lock().await;
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}x{n}")).collect();
    Ok(Sent {
        ok: tally.samples_ok.load(Ordering::Relaxed),
        elapsed,
        statuses: statuses.join(" "),
        retries: tally.retries.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
    })
}

pub async fn run(args: WriteArgs) -> anyhow::Result<()> {
    reqwest::Url::parse(&args.url).with_context(|| {
        format!(
            "--url {:?} is not a URL; use e.g. http://127.0.0.1:9090/api/v1/write",
            args.url
        )
    })?;
    let load = build(LoadSpec {
        series: args.series,
        intervals: args.intervals,
        interval_seconds: args.interval_seconds,
        batch: args.batch,
        seed: args.seed,
        protocol: args.protocol,
    })?;
    println!(
        "strata bench write: {} series x {} intervals = {} samples in {} requests ({:.1} MiB; batch {}, concurrency {}, remote-write {})",
        args.series,
        args.intervals,
        load.total_samples,
        load.requests,
        load.body_bytes as f64 / (1 << 20) as f64,
        args.batch,
        args.concurrency,
        if args.protocol == Protocol::V1 {
            "1.0"
        } else {
            "2.0"
        },
    );
    let sent = send_load(&load, &args.url, args.concurrency, args.max_retries).await?;
    println!(
        "accepted {} of {} samples in {:.3} s: {:.0} samples/s",
        sent.ok,
        load.total_samples,
        sent.elapsed.as_secs_f64(),
        sent.ok as f64 / sent.elapsed.as_secs_f64()
    );
    println!(
        "status: {}   retries: {}   failed requests: {}",
        sent.statuses, sent.retries, sent.failed
    );
    if sent.failed > 0 {
        bail!(
            "{} requests were not accepted; the status counts above say why",
            sent.failed
        );
    }
    Ok(())
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    protocol: Protocol,
    body: Vec<u8>,
    samples: u64,
    max_retries: u32,
    tally: &Tally,
) {
    let version = match protocol {
        Protocol::V1 => WriteVersion::V1,
        Protocol::V2 => WriteVersion::V2,
    };
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..=max_retries {
        let mut req = client.post(url);
        for (k, v) in request_headers(version) {
            req = req.header(k, v);
        }
        let resp = req.body(body.clone()).send().await;
        let (label, retryable) = match &resp {
            Ok(r) => (
                r.status().as_u16().to_string(),
                r.status().is_server_error() || r.status().as_u16() == 429,
            ),
            Err(_) => ("connection_error".to_string(), true),
        };
        *tally.statuses.lock().await.entry(label).or_insert(0) += 1;
        match resp {
            Ok(r) if r.status().is_success() => {
                tally.samples_ok.fetch_add(samples, Ordering::Relaxed);
                return;
            }
            Ok(r) if !retryable => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                eprintln!("request rejected with {status}: {}", text.trim());
                break;
            }
            _ if attempt < max_retries => {
                tally.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            _ => break,
        }
    }
    tally.failed.fetch_add(1, Ordering::Relaxed);
}
