//! `strata bench edge`: strata edge and vmagent scrape the same targets side by side and
//! forward to the same receiver; samples delivered per CPU-second and peak RSS of each.
//!
//! The targets and the receiver run inside this process, so the agents' CPU time (read from
//! `/proc`) is their own work: scraping, parsing, relabelling, queueing and sending. Each
//! agent stamps an `agent` external label, and the receiver counts what each delivered.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use strata_wire::WriteRequest;

use super::servers::{self, Agent, Server, cpu_seconds, free_port, peak_rss, ratio};

/// The strata component this benchmark runs.
const STRATA: &str = "strata edge";

#[derive(Args)]
pub struct EdgeArgs {
    /// Scrape targets served by this process.
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Series on each target's page.
    #[arg(long, default_value_t = 10_000)]
    series_per_target: usize,
    /// Scrape interval of both agents.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to measure, after a warm-up of two intervals.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Which agents to run.
    #[arg(long, value_delimiter = ',', default_value = "strata,vmagent")]
    agents: Vec<Agent>,
    /// The vmagent binary.
    #[arg(long, default_value = "/usr/bin/vmagent")]
    vmagent_bin: std::path::PathBuf,
    /// Keep the agents' configuration, logs and queues here instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

/// The page of one target: fleet-like families with pods and namespaces; values change on
/// every scrape.
struct Page {
    prefixes: Vec<String>,
    headers: Vec<(usize, String)>,
    scrapes: AtomicU64,
}

const FAMILIES: [(&str, &str); 8] = [
    ("container_cpu_usage_seconds_total", "counter"),
    ("container_memory_working_set_bytes", "gauge"),
    ("container_network_receive_bytes_total", "counter"),
    ("kube_pod_container_status_restarts_total", "counter"),
    ("kube_pod_status_phase", "gauge"),
    ("apiserver_request_total", "counter"),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
    ("node_filesystem_avail_bytes", "gauge"),
];

impl Page {
    fn new(target: usize, series: usize) -> Self {
        let per_family = series.div_ceil(FAMILIES.len());
        let mut prefixes = Vec::with_capacity(series);
        let mut headers = Vec::new();
        for i in 0..series {
            let (name, kind) = FAMILIES[i / per_family];
            if i % per_family == 0 {
                headers.push((
                    i,
                    format!("# HELP {name} Benchmark series.\n# TYPE {name} {kind}\n"),
                ));
            }
            prefixes.push(format!(
                "{name}{{namespace=\"tenant-{}\",pod=\"workload-{target}-{i}-7d9f8b6c5\",container=\"app\",node=\"node-{}\"}} ",
                i % 97,
                i % 31
            ));
        }
        Self {
            prefixes,
            headers,
            scrapes: AtomicU64::new(0),
        }
    }

    fn render(&self) -> String {
        let n = self.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut out = String::with_capacity(self.prefixes.len() * 120);
        let mut headers = self.headers.iter().peekable();
        for (i, prefix) in self.prefixes.iter().enumerate() {
            if let Some((_, h)) = headers.next_if(|(at, _)| *at == i) {
                out.push_str(h);
            }
            out.push_str(prefix);
            let _ = writeln!(out, "{}", n * 17 + i as u64 % 1013);
        }
        out
    }
}

/// Samples delivered, per agent.
#[derive(Default)]
struct Delivered {
    strata: AtomicU64,
    vmagent: AtomicU64,
}

async fn receive(State(d): State<Arc<Delivered>>, body: Bytes) -> StatusCode {
    let Ok(req) = WriteRequest::decode_snappy(&body, 512 << 20) else {
        return StatusCode::BAD_REQUEST;
    };
    for ts in &req.timeseries {
        let agent = ts.labels.iter().find(|l| l.name == "agent");
        let counter = match agent.map(|l| l.value.as_str()) {
            Some("strata") => &d.strata,
            Some("vmagent") => &d.vmagent,
            _ => continue,
        };
        counter.fetch_add(ts.samples.len() as u64, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}

async fn serve(app: Router) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

fn scrape_config(args: &EdgeArgs, agent: Agent, target_ports: &[u16]) -> String {
    let targets: Vec<String> = target_ports
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect();
    let interval = humantime::format_duration(args.interval);
    // vmagent takes its external label from a flag; the file stays Prometheus's format.
    let external = match agent {
        Agent::Strata => "  external_labels: {agent: strata}\n",
        Agent::Vmagent => "",
    };
    format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n{external}scrape_configs:\n  - job_name: bench\n    static_configs: [{{targets: [{}]}}]\n",
        targets.join(", ")
    )
}

async fn start_agent(
    agent: Agent,
    args: &EdgeArgs,
    root: &Path,
    target_ports: &[u16],
    write_url: &str,
) -> anyhow::Result<Server> {
    let dir = root.join(agent.label());
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut config = scrape_config(args, agent, target_ports);
    let config_path = dir.join("scrape.yaml");
    let (command, ready) = match agent {
        Agent::Strata => {
            config.push_str(&format!("remote_write:\n  - url: {write_url}\n"));
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["edge", "--listen", &listen])
                .arg("--config")
                .arg(&config_path)
                .arg("--data-dir")
                .arg(dir.join("data"));
            (c, "/-/ready")
        }
        Agent::Vmagent => {
            let mut c = Command::new(&args.vmagent_bin);
            c.arg(format!("-promscrape.config={}", config_path.display()))
                .arg(format!("-remoteWrite.url={write_url}"))
                .arg("-remoteWrite.label=agent=vmagent")
                .arg(format!(
                    "-remoteWrite.tmpDataPath={}",
                    dir.join("data").display()
                ))
                .arg(format!("-httpListenAddr={listen}"));
            (c, "/health")
        }
    };
    std::fs::write(&config_path, config)?;
    servers::launch(command, port, dir, ready, agent.name(STRATA)).await
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    if args.targets == 0 || args.series_per_target == 0 || args.agents.is_empty() {
        bail!("--targets, --series-per-target and --agents need at least one each");
    }
    let (_temp, root) = servers::work_root(args.work_dir.as_deref())?;
    let mut target_ports = Vec::with_capacity(args.targets);
    for t in 0..args.targets {
        let page = Arc::new(Page::new(t, args.series_per_target));
        let app = Router::new()
            .route(
                "/metrics",
                get(|State(p): State<Arc<Page>>| async move { p.render() }),
            )
            .with_state(page);
        target_ports.push(serve(app).await?);
    }
    let delivered = Arc::new(Delivered::default());
    let rx_port = serve(
        Router::new()
            .route("/api/v1/write", post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
            .with_state(delivered.clone()),
    )
    .await?;
    let write_url = format!("http://127.0.0.1:{rx_port}/api/v1/write");
    let mut agents = Vec::new();
    for &agent in &args.agents {
        let server = start_agent(agent, &args, &root, &target_ports, &write_url)
            .await
            .with_context(|| format!("starting {}", agent.name(STRATA)))?;
        agents.push((agent, server));
    }
    let series = args.targets * args.series_per_target;
    println!(
        "{} targets x {} series = {series} series, scraped every {} by {}",
        args.targets,
        args.series_per_target,
        humantime::format_duration(args.interval),
        args.agents
            .iter()
            .map(|a| a.name(STRATA))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let count = |agent: Agent| match agent {
        Agent::Strata => delivered.strata.load(Ordering::Relaxed),
        Agent::Vmagent => delivered.vmagent.load(Ordering::Relaxed),
    };
    let measure = |agents: &[(Agent, Server)]| -> anyhow::Result<Vec<(u64, f64)>> {
        agents
            .iter()
            .map(|(a, s)| Ok((count(*a), cpu_seconds(s.child.id())?)))
            .collect()
    };
    tokio::time::sleep(args.interval * 2).await;
    let before = measure(&agents)?;
    let bar = ProgressBar::new(args.duration.as_secs()).with_style(ProgressStyle::with_template(
        "measuring {bar:40} {pos}/{len} s",
    )?);
    for _ in 0..args.duration.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let after = measure(&agents)?;
    println!(
        "{:<12} {:>14} {:>12} {:>18} {:>14}",
        "agent", "samples", "CPU s", "samples/CPU-s", "peak RSS MiB"
    );
    let mut rates = Vec::new();
    for (((agent, server), b), a) in agents.iter().zip(&before).zip(&after) {
        let samples = a.0 - b.0;
        let cpu = a.1 - b.1;
        let rate = if cpu > 0.0 { samples as f64 / cpu } else { 0.0 };
        let rss = peak_rss(server.child.id())? as f64 / (1 << 20) as f64;
        println!(
            "{:<12} {samples:>14} {cpu:>12.2} {rate:>18.0} {rss:>14.1}",
            agent.name(STRATA)
        );
        rates.push((*agent, rate, rss));
    }
    let expected = (series as f64 + 5.0 * args.targets as f64) * args.duration.as_secs_f64()
        / args.interval.as_secs_f64();
    println!(
        "expected about {expected:.0} samples per agent in the window (series and the 5 synthetic series per target)"
    );
    if let (Some(s), Some(v)) = (
        rates.iter().find(|r| r.0 == Agent::Strata),
        rates.iter().find(|r| r.0 == Agent::Vmagent),
    ) {
        println!(
            "strata edge / vmagent: samples per CPU-second {}, peak RSS {}",
            ratio(s.1, v.1),
            ratio(s.2, v.2)
        );
    }
    Ok(())
}
