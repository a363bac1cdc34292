//! `strata bench cascade`: strata cascade and vmagent, each configured as a relay with two
//! remote-write upstreams, receive the same `strata bench write` load and forward it to two
//! receivers; samples received per CPU-second and peak RSS of each, one after the other in
//! the same run.
//!
//! The load and both receivers run inside this process, so a relay's CPU time (read from
//! `/proc`) is its own work: receiving, queueing and sending twice. A relay's time is counted
//! from its first request until both receivers hold every sample. The cascade acknowledges a
//! request only once it is fsynced in both queues; vmagent acknowledges from memory.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Args;
use strata_wire::{raw, snappy};

use super::servers::{self, Agent, Server, cpu_seconds, free_port, peak_rss, ratio};
use super::write::{self, LoadSpec, Protocol};

/// The strata component this benchmark runs.
const STRATA: &str = "strata cascade";

#[derive(Args)]
pub struct CascadeArgs {
    /// Distinct series in the load.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Samples per series.
    #[arg(long, default_value_t = 20)]
    intervals: usize,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Which relays to run.
    #[arg(long, value_delimiter = ',', default_value = "strata,vmagent")]
    relays: Vec<Agent>,
    /// The vmagent binary.
    #[arg(long, default_value = "/usr/bin/vmagent")]
    vmagent_bin: std::path::PathBuf,
    /// Keep the relays' configuration, logs and queues here instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

/// Samples a receiver got (duplicates included).
#[derive(Default)]
struct Receiver {
    samples: AtomicU64,
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let Ok(decoded) = snappy::decompress(&body, 512 << 20) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(entries) = raw::entries(&decoded) else {
        return StatusCode::BAD_REQUEST;
    };
    let items: usize = entries.iter().map(raw::Entry::items).sum();
    r.samples.fetch_add(items as u64, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn receiver() -> anyhow::Result<(String, Arc<Receiver>)> {
    let r = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/api/v1/write", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/v1/write", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, r))
}

async fn start_relay(
    relay: Agent,
    vmagent_bin: &Path,
    root: &Path,
    upstreams: &[String],
) -> anyhow::Result<Server> {
    let dir = root.join(relay.label());
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let (command, ready) = match relay {
        Agent::Strata => {
            let mut config = String::from("remote_write:\n");
            for (i, url) in upstreams.iter().enumerate() {
                config.push_str(&format!("  - {{url: {url}, name: upstream-{i}}}\n"));
            }
            let path = dir.join("cascade.yaml");
            std::fs::write(&path, config)?;
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["cascade", "--listen", &listen])
                .arg("--config")
                .arg(&path)
                .arg("--data-dir")
                .arg(dir.join("data"));
            (c, "/-/ready")
        }
        Agent::Vmagent => {
            let mut c = Command::new(vmagent_bin);
            c.args(upstreams.iter().map(|u| format!("-remoteWrite.url={u}")))
                .arg(format!(
                    "-remoteWrite.tmpDataPath={}",
                    dir.join("data").display()
                ))
                .arg(format!("-httpListenAddr={listen}"));
            (c, "/health")
        }
    };
    servers::launch(command, port, dir, ready, relay.name(STRATA)).await
}

pub async fn run(args: CascadeArgs) -> anyhow::Result<()> {
    if args.relays.is_empty() {
        bail!("--relays needs at least one of strata, vmagent");
    }
    let (_temp, root) = servers::work_root(args.work_dir.as_deref())?;
    println!(
        "{} series x {} samples in requests of {}, {} in flight, into each relay; each forwards to two receivers",
        args.series, args.intervals, args.batch, args.concurrency
    );
    let mut results = Vec::new();
    for &relay in &args.relays {
        // A fresh load per relay: timestamps end now, so neither gets older data.
        let load = write::build(LoadSpec {
            series: args.series,
            intervals: args.intervals,
            interval_seconds: 15,
            batch: args.batch,
            seed: 42,
            protocol: Protocol::V1,
        })?;
        let (url_a, a) = receiver().await?;
        let (url_b, b) = receiver().await?;
        let server = start_relay(relay, &args.vmagent_bin, &root, &[url_a, url_b])
            .await
            .with_context(|| format!("starting {}", relay.name(STRATA)))?;
        let pid = server.child.id();
        let cpu_before = cpu_seconds(pid)?;
        let started = Instant::now();
        let sent = write::send_load(
            &load,
            &format!("http://127.0.0.1:{}/api/v1/write", server.port),
            args.concurrency,
            10,
        )
        .await?;
        let want = load.total_samples as u64;
        let deadline = Instant::now() + Duration::from_secs(300);
        while (a.samples.load(Ordering::Relaxed) < want || b.samples.load(Ordering::Relaxed) < want)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_seconds(pid)? - cpu_before;
        let rss = peak_rss(pid)? as f64 / (1 << 20) as f64;
        let (got_a, got_b) = (
            a.samples.load(Ordering::Relaxed),
            b.samples.load(Ordering::Relaxed),
        );
        if sent.failed > 0 || got_a < want || got_b < want {
            println!(
                "{}: {} failed requests ({}); receivers got {got_a} and {got_b} of {want}",
                relay.name(STRATA),
                sent.failed,
                sent.statuses
            );
        }
        let rate = sent.ok as f64 / cpu.max(1e-9);
        results.push((relay, sent.ok, cpu, elapsed, rate, rss));
        drop(server);
    }
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>18} {:>14}",
        "relay", "samples", "CPU s", "wall s", "samples/CPU-s", "peak RSS MiB"
    );
    for (relay, samples, cpu, elapsed, rate, rss) in &results {
        println!(
            "{:<16} {samples:>12} {cpu:>10.2} {:>10.2} {rate:>18.0} {rss:>14.1}",
            relay.name(STRATA),
            elapsed.as_secs_f64()
        );
    }
    let find = |r: Agent| results.iter().find(|x| x.0 == r);
    if let (Some(s), Some(v)) = (find(Agent::Strata), find(Agent::Vmagent)) {
        println!(
            "strata cascade / vmagent: samples per CPU-second {}, peak RSS {}",
            ratio(s.4, v.4),
            ratio(s.5, v.5)
        );
    }
    Ok(())
}
