//! `strata demo`: a whole pipeline on 127.0.0.1 in one process — a simulated fleet, one edge
//! per cell, one cascade per region, and two centrals (az-a and az-b) that are each other's
//! peers — with history backfilled first and live data after. Every component is the same
//! code as when it runs alone (its crate's `run`), reading the same configuration files the
//! demo writes under its directory, and they talk remote-write over loopback.
//!
//! Layout of the directory (`./strata-demo` by default):
//! `fleet.yaml` (the fleet, its anchor pinned), `config/` (edge and cascade files, one token
//! per cell), `central-a/`, `central-b/`, `cascade/<region>/`, `edge/<cell>/`,
//! `backfill.progress` (the last history step both centrals acknowledged) and `demo.log`.
//! Running the demo again resumes from all of it.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use strata_sim::backfill::BackfillOptions;
use strata_sim::config::format_time_ms;
use strata_sim::page::Job;
use strata_sim::{Fleet, FleetConfig};
use strata_wire::clock::now_ms;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::CentralArgs;
use crate::sim::FleetArgs;

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo keeps its data and configuration; running again resumes from it.
    #[arg(long, default_value = "./strata-demo")]
    dir: PathBuf,
    /// The simulated fleet (first run only; default 3 regions x 4 cells x 25 clusters); a
    /// resumed demo keeps the fleet in its directory's `fleet.yaml`.
    #[command(flatten)]
    fleet: FleetArgs,
    /// Days of history written before going live (first run only).
    #[arg(long, default_value_t = 14.0)]
    history_days: f64,
    /// Time between history samples.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    history_step: Duration,
    /// How often the edges scrape.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    scrape_interval: Duration,
    /// Ports: centrals at base+1 and base+2, the monitoring edge at base+100, cell edges from
    /// base+101, cascades from base+201, the simulator at base+301.
    #[arg(long, default_value_t = 9300)]
    base_port: u16,
}

impl DemoArgs {
    /// Opens `demo.log` in the demo's directory for appending.
    pub fn log_file(&self) -> anyhow::Result<std::fs::File> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join("demo.log");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    }
}

/// Addresses of every component.
struct Ports {
    central: [SocketAddr; 2],
    monitor: SocketAddr,
    edges: Vec<SocketAddr>,
    cascades: Vec<SocketAddr>,
    sim: SocketAddr,
    planner: SocketAddr,
}

impl Ports {
    fn new(base: u16, cells: usize, regions: usize) -> anyhow::Result<Self> {
        if cells > 99 || regions > 99 {
            bail!(
                "the demo runs at most 99 cells and 99 regions on one machine; lower --regions or --cells-per-region"
            );
        }
        if base > u16::MAX - 400 {
            bail!("--base-port must be at most {}", u16::MAX - 400);
        }
        let at = |offset: usize| SocketAddr::from(([127, 0, 0, 1], base + offset as u16));
        Ok(Self {
            central: [at(1), at(2)],
            monitor: at(100),
            edges: (0..cells).map(|i| at(101 + i)).collect(),
            cascades: (0..regions).map(|r| at(201 + r)).collect(),
            sim: at(301),
            planner: at(3),
        })
    }
}

/// The fleet of this demo directory: the saved one, or a new one from the flags.
fn fleet_config(args: &DemoArgs) -> anyhow::Result<(FleetConfig, bool)> {
    let path = args.dir.join("fleet.yaml");
    if path.exists() {
        let saved = FleetConfig::load(&path)?;
        let mut asked = args.fleet.config_over(saved.clone())?;
        // A fleet file without an anchor means the saved one.
        asked.anchor = asked.anchor.or_else(|| saved.anchor.clone());
        if asked != saved {
            bail!(
                "{} holds a demo created with seed {}, {} regions, {} cells per region and {} clusters per cell; run without fleet flags, or give another --dir (or delete {}) to start a new fleet",
                args.dir.display(),
                saved.seed,
                saved.regions,
                saved.cells_per_region,
                saved.clusters_per_cell,
                args.dir.display()
            );
        }
        return Ok((saved, true));
    }
    Ok((args.fleet.config()?.pinned()?, false))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A cell's token: made once, kept in `config/tokens/<cell>.token`.
fn token(dir: &Path, cell: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("config/tokens").join(format!("{cell}.token"));
    if !path.exists() {
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write(&path, &format!("{token}\n"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(path)
}

fn edge_config(
    fleet: &Fleet,
    cell: usize,
    ports: &Ports,
    token: &Path,
    scrape_interval: Duration,
) -> String {
    let c = &fleet.cells[cell];
    let region = fleet
        .regions
        .iter()
        .position(|r| r.name == c.region)
        .unwrap_or(0);
    let mut text = format!(
        "# Written by `strata demo`: the edge of cell {cell_name}.\nglobal:\n  scrape_interval: {interval}\n  external_labels: {{region: {region_name}, cell: {cell_name}}}\nscrape_configs:\n",
        cell_name = c.name,
        region_name = c.region,
        interval = humantime::format_duration(scrape_interval),
    );
    for job in Job::ALL {
        text.push_str(&format!(
            "  - job_name: {job}\n    http_sd_configs: [{{url: 'http://{sim}/sd/{cell}/{job}', refresh_interval: 30s}}]\n",
            job = job.name(),
            sim = ports.sim,
            cell = c.name,
        ));
    }
    text.push_str(&format!(
        "remote_write:\n  - url: http://{cascade}/api/v1/write\n    name: cascade-{region_name}\n    authorization: {{credentials_file: '{token}'}}\n",
        cascade = ports.cascades[region],
        region_name = c.region,
        token = token.display(),
    ));
    text
}

fn cascade_config(fleet: &Fleet, region: usize, ports: &Ports, tokens: &[PathBuf]) -> String {
    let name = &fleet.regions[region].name;
    let mut text =
        format!("# Written by `strata demo`: the cascade of region {name}.\nauth:\n  tokens:\n");
    for (cell, token) in fleet.cells.iter().zip(tokens) {
        if &cell.region == name {
            text.push_str(&format!(
                "    - {{name: {cell}, token_file: '{token}', labels: {{region: {name}, cell: {cell}}}, action: enforce}}\n",
                cell = cell.name,
                token = token.display(),
            ));
        }
    }
    text.push_str(&format!(
        "limits: {{max_active_series: 500000, max_samples_per_second: 200000}}\nstream_aggregation:\n  rules:\n    - {{match: apiserver_request_total, interval: 1m, by: [region, cell, cluster], outputs: [rate], keep_input: true}}\nremote_write:\n  - {{url: 'http://{a}/api/v1/write', name: az-a}}\n  - {{url: 'http://{b}/api/v1/write', name: az-b}}\n",
        a = ports.central[0],
        b = ports.central[1],
    ));
    text
}

/// The edge that scrapes every strata component of the demo and writes to both centrals.
fn monitor_config(fleet: &Fleet, ports: &Ports, scrape_interval: Duration) -> String {
    let mut text = format!(
        "# Written by `strata demo`: scrapes the demo's own components.\nglobal:\n  scrape_interval: {}\n  external_labels: {{monitor: strata-demo}}\nscrape_configs:\n  - job_name: strata-central\n    static_configs:\n      - {{targets: ['{}'], labels: {{az: az-a}}}}\n      - {{targets: ['{}'], labels: {{az: az-b}}}}\n  - job_name: strata-cascade\n    static_configs:\n",
        humantime::format_duration(scrape_interval),
        ports.central[0],
        ports.central[1],
    );
    for (region, addr) in fleet.regions.iter().zip(&ports.cascades) {
        text.push_str(&format!(
            "      - {{targets: ['{addr}'], labels: {{region: {}}}}}\n",
            region.name
        ));
    }
    text.push_str(&format!(
        "  - job_name: strata-edge\n    static_configs:\n      - {{targets: ['{}'], labels: {{cell: monitor}}}}\n",
        ports.monitor
    ));
    for (cell, addr) in fleet.cells.iter().zip(&ports.edges) {
        text.push_str(&format!(
            "      - {{targets: ['{addr}'], labels: {{region: {}, cell: {}}}}}\n",
            cell.region, cell.name
        ));
    }
    text.push_str(&format!(
        "  - job_name: strata-planner\n    static_configs: [{{targets: ['{}']}}]\n",
        ports.planner
    ));
    text.push_str(&format!(
        "  - job_name: strata-sim\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - {{url: 'http://{}/api/v1/write', name: az-a}}\n  - {{url: 'http://{}/api/v1/write', name: az-b}}\n",
        ports.sim, ports.central[0], ports.central[1],
    ));
    text
}

/// How often the demo's planner makes a report.
const PLANNER_INTERVAL: Duration = Duration::from_secs(300);

/// The demo's planner: reports on central az-a every few minutes, notifies nobody.
fn planner_options(ports: &Ports) -> anyhow::Result<strata_planner::serve::ServeOptions> {
    let external_url = format!("http://{}", ports.planner);
    Ok(strata_planner::serve::ServeOptions {
        listen: ports.planner,
        interval: PLANNER_INTERVAL,
        source: strata_planner::Source::new(
            &format!("http://{}", ports.central[0]),
            Duration::from_secs(120),
            None,
        )?,
        config: strata_planner::PlannerConfig::default(),
        notify: strata_planner::notify::NotifyOptions {
            webhooks: Vec::new(),
            alertmanagers: Vec::new(),
            receiver: "strata-planner".into(),
            repeat_interval: Duration::from_secs(24 * 3600),
            send_resolved: true,
            timeout: Duration::from_secs(10),
            external_url,
            report_interval: PLANNER_INTERVAL,
            state_file: None,
        },
    })
}

type Tasks = JoinSet<(String, anyhow::Result<()>)>;

fn stopper(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Waits until `addr` answers `/-/ready`, or fails if a component stopped meanwhile.
async fn ready(
    client: &reqwest::Client,
    what: &str,
    addr: SocketAddr,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/-/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(Ok((name, result))) = tasks.try_join_next() {
            bail!(
                "{name} stopped while the demo was starting: {}",
                result.err().map_or("no error".into(), |e| format!("{e:#}"))
            );
        }
        if Instant::now() > deadline {
            bail!("{what} at {addr} was not ready within 2 minutes; see the demo's demo.log");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the two centrals.
fn start_centrals(
    dir: &Path,
    ports: &Ports,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    for (i, az) in ["az-a", "az-b"].into_iter().enumerate() {
        #[derive(Parser)]
        struct Central {
            #[command(flatten)]
            args: CentralArgs,
        }
        let data = dir.join(format!("central-{}", &az[3..]));
        let config = Central::try_parse_from([
            "central".to_string(),
            format!("--listen={}", ports.central[i]),
            format!("--az={az}"),
            format!("--data-dir={}", data.display()),
            format!("--peer-url=http://{}", ports.central[1 - i]),
        ])?
        .args
        .into_config()?;
        let shutdown = stopper(stop);
        tasks.spawn(async move {
            let result = strata_central::server::run(config, shutdown).await;
            (format!("central {az}"), result.map_err(anyhow::Error::from))
        });
    }
    Ok(())
}

/// Writes the fleet's history into both centrals, resuming after the last step both
/// acknowledged.
async fn backfill(args: &DemoArgs, fleet: &Arc<Fleet>, ports: &Ports) -> anyhow::Result<()> {
    let progress_path = args.dir.join("backfill.progress");
    let step_ms = args.history_step.as_millis() as i64;
    let saved = std::fs::read_to_string(&progress_path).ok();
    let (start, end) = match saved
        .as_deref()
        .map(|s| s.split_whitespace().collect::<Vec<_>>())
    {
        Some(parts) if parts.len() == 2 => {
            let done: i64 = parts[0].parse().context("backfill.progress is damaged")?;
            let end: i64 = parts[1].parse().context("backfill.progress is damaged")?;
            (done + step_ms, end)
        }
        _ => {
            let end = now_ms();
            let start = end - (args.history_days * 86_400_000.0) as i64;
            (start - start.rem_euclid(step_ms), end)
        }
    };
    if start >= end {
        println!("history: already written up to {}", format_time_ms(end));
        return Ok(());
    }
    let opts = BackfillOptions {
        urls: ports
            .central
            .iter()
            .map(|a| format!("http://{a}/api/v1/write"))
            .collect(),
        start_ms: start,
        end_ms: end,
        step_ms,
        concurrency: 4,
        series_per_request: 5000,
        jobs: Vec::new(),
        bearer_token: None,
    };
    opts.validate()?;
    println!(
        "history: writing {} steps of {} ({} to {}) into both centrals",
        opts.steps(),
        humantime::format_duration(args.history_step),
        format_time_ms(start),
        format_time_ms(end)
    );
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(opts.steps())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "history {bar:40} {pos}/{len} steps  {msg}  eta {eta}",
    )?);
    let summary = strata_sim::backfill::run(fleet.clone(), opts, |p| {
        bar.set_position(p.steps_done);
        bar.set_message(format!("{} samples", p.samples));
        let done = start + (p.steps_done as i64 - 1) * step_ms;
        let _ = std::fs::write(&progress_path, format!("{done} {end}\n"));
    })
    .await
    .context("writing history failed; run the demo again to resume it")?;
    bar.finish_and_clear();
    println!(
        "history: {} samples into each central in {:.1} s",
        summary.samples,
        summary.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Counters read from the components' `/metrics`, for the health line.
#[derive(Default, Clone)]
struct Reading {
    edge_sent: f64,
    cascade_received: f64,
    central_appended: [f64; 2],
    edge_queued: f64,
    cascade_queued: f64,
    /// Of `cascade_queued`, the aggregation input each cascade keeps until every window it
    /// can feed has closed (about 11 minutes of it), by design rather than a backlog.
    cascade_held: f64,
    dropped: f64,
}

/// A metric name and the labels a series of it must have to be counted.
type Selector<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// The sum over the series each selector picks from `addr`'s `/metrics` (0 when unreadable).
async fn metric_sum(
    client: &reqwest::Client,
    addr: SocketAddr,
    selectors: &[Selector<'_>],
) -> Vec<f64> {
    let mut out = vec![0.0; selectors.len()];
    let Ok(resp) = client.get(format!("http://{addr}/metrics")).send().await else {
        return out;
    };
    let Ok(text) = resp.text().await else {
        return out;
    };
    let Ok(scrape) = strata_wire::exposition::parse(&text, strata_wire::exposition::Format::Text)
    else {
        return out;
    };
    for s in scrape.samples {
        let has = |(name, value): &(&str, &str)| {
            s.labels
                .iter()
                .any(|l| l.name == *name && l.value == *value)
        };
        for (i, (name, labels)) in selectors.iter().enumerate() {
            if s.labels[0].value == *name && labels.iter().all(has) {
                out[i] += s.value;
            }
        }
    }
    out
}

async fn read(client: &reqwest::Client, ports: &Ports) -> Reading {
    let mut r = Reading::default();
    let relay: [Selector; 3] = [
        ("strata_relay_samples_sent_total", &[]),
        ("strata_relay_queue_pending_samples", &[]),
        ("strata_relay_samples_dropped_total", &[]),
    ];
    for addr in &ports.edges {
        let v = metric_sum(client, *addr, &relay).await;
        r.edge_sent += v[0];
        r.edge_queued += v[1];
        r.dropped += v[2];
    }
    for addr in &ports.cascades {
        let mut selectors: Vec<Selector> = vec![("strata_cascade_samples_received_total", &[])];
        selectors.extend(&relay[1..]);
        selectors.push((
            "strata_relay_queue_pending_samples",
            &[("destination", "aggregation")],
        ));
        let v = metric_sum(client, *addr, &selectors).await;
        r.cascade_received += v[0];
        r.cascade_queued += v[1];
        r.dropped += v[2];
        r.cascade_held += v[3];
    }
    for (i, addr) in ports.central.iter().enumerate() {
        r.central_appended[i] = metric_sum(
            client,
            *addr,
            &[("strata_central_samples_appended_total", &[])],
        )
        .await[0];
    }
    r
}

fn rate(now: f64, before: f64, seconds: f64) -> String {
    let r = (now - before).max(0.0) / seconds;
    if r >= 1000.0 {
        format!("{:.1}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

pub async fn run(
    args: DemoArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (fleet_config, resumed) = fleet_config(&args)?;
    if args.history_days.is_nan() || args.history_days < 0.0 {
        bail!("--history-days must be 0 or more");
    }
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    write(&dir.join("fleet.yaml"), &fleet_config.to_yaml()?)?;
    let fleet = Arc::new(Fleet::new(&fleet_config)?);
    let ports = Ports::new(args.base_port, fleet.cells.len(), fleet.regions.len())?;
    println!(
        "strata demo: {} regions x {} cells x {} clusters (seed {}) in {}{}",
        fleet_config.regions,
        fleet_config.cells_per_region,
        fleet_config.clusters_per_cell,
        fleet_config.seed,
        dir.display(),
        if resumed { ", resumed" } else { "" }
    );

    let tokens = fleet
        .cells
        .iter()
        .map(|c| token(&dir, &c.name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut edge_files = Vec::new();
    for (i, cell) in fleet.cells.iter().enumerate() {
        let path = dir.join(format!("config/edge-{}.yaml", cell.name));
        write(
            &path,
            &edge_config(&fleet, i, &ports, &tokens[i], args.scrape_interval),
        )?;
        edge_files.push(path);
    }
    let mut cascade_files = Vec::new();
    for (r, region) in fleet.regions.iter().enumerate() {
        let path = dir.join(format!("config/cascade-{}.yaml", region.name));
        write(&path, &cascade_config(&fleet, r, &ports, &tokens))?;
        cascade_files.push(path);
    }
    let monitor_file = dir.join("config/edge-monitor.yaml");
    write(
        &monitor_file,
        &monitor_config(&fleet, &ports, args.scrape_interval),
    )?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Tasks = JoinSet::new();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = async {
        start_centrals(&dir, &ports, &stop_rx, &mut tasks)?;
        for (i, az) in ["az-a", "az-b"].into_iter().enumerate() {
            ready(
                &client,
                &format!("central {az}"),
                ports.central[i],
                &mut tasks,
            )
            .await?;
        }
        backfill(&args, &fleet, &ports).await?;

        let sim = strata_sim::server::SimState::new(fleet.clone(), ports.sim.to_string());
        let listener = tokio::net::TcpListener::bind(ports.sim)
            .await
            .with_context(|| format!("cannot listen on {} for the simulator", ports.sim))?;
        let shutdown = stopper(&stop_rx);
        tasks.spawn(async move {
            let result = axum::serve(listener, strata_sim::server::router(Arc::new(sim)))
                .with_graceful_shutdown(shutdown)
                .await;
            ("sim".to_string(), result.map_err(anyhow::Error::from))
        });
        for (r, region) in fleet.regions.iter().enumerate() {
            let opts = strata_cascade::CascadeOptions {
                config: cascade_files[r].clone(),
                listen: ports.cascades[r],
                data_dir: dir.join("cascade").join(&region.name),
            };
            let shutdown = stopper(&stop_rx);
            let name = format!("cascade {}", region.name);
            tasks.spawn(async move {
                let result = strata_cascade::run(opts, shutdown).await;
                (name, result.map_err(anyhow::Error::from))
            });
        }
        for (r, addr) in ports.cascades.iter().enumerate() {
            ready(
                &client,
                &format!("cascade {}", fleet.regions[r].name),
                *addr,
                &mut tasks,
            )
            .await?;
        }
        let edges = fleet
            .cells
            .iter()
            .map(|c| c.name.clone())
            .zip(edge_files.iter().cloned())
            .zip(ports.edges.iter().copied())
            .chain(std::iter::once((
                ("monitor".to_string(), monitor_file.clone()),
                ports.monitor,
            )));
        for ((cell, config), listen) in edges {
            let opts = strata_edge::EdgeOptions {
                config,
                listen,
                data_dir: dir.join("edge").join(&cell),
                max_queue_bytes: 256 << 20,
            };
            let shutdown = stopper(&stop_rx);
            tasks.spawn(async move {
                let result = strata_edge::run(opts, shutdown).await;
                (
                    format!("edge {cell}"),
                    result.map_err(|e| anyhow::anyhow!("{e}")),
                )
            });
        }
        for addr in ports.edges.iter().chain([&ports.monitor]) {
            ready(&client, "edge", *addr, &mut tasks).await?;
        }
        let planner = planner_options(&ports)?;
        let shutdown = stopper(&stop_rx);
        tasks.spawn(async move {
            let result = strata_planner::serve::run(planner, shutdown).await;
            ("planner".to_string(), result.map_err(anyhow::Error::from))
        });
        anyhow::Ok(())
    };
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        result = started => result,
        () = &mut shutdown => Err(anyhow::anyhow!("interrupted while starting")),
    };
    if let Err(e) = outcome {
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        return Err(e);
    }

    println!("all components are ready:");
    println!(
        "  Grafana datasource (Prometheus type): http://{}  (az-a)   http://{}  (az-b)",
        ports.central[0], ports.central[1]
    );
    println!("  dashboards: dashboards/*.json, provisioning in dashboards/provisioning/");
    println!(
        "  simulator:  http://{}/api/v1/fleet   ground truth: http://{}/api/v1/truth",
        ports.sim, ports.sim
    );
    println!(
        "  cascades:   {}",
        ports
            .cascades
            .iter()
            .map(|a| format!("http://{a}/api/v1/status/upstreams"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!(
        "  try:        curl -s 'http://{}/api/v1/query' --data-urlencode 'query=sum by (cell) (kube_pod_container_resource_requests{{resource=\"cpu\"}}) / sum by (cell) (kube_node_status_allocatable{{resource=\"cpu\"}})'",
        ports.central[0]
    );
    println!(
        "  planner:    http://{}/  (capacity report with charts; /api/v1/report, /metrics; the first report takes a moment)",
        ports.planner
    );
    println!("  logs:       {}", dir.join("demo.log").display());
    println!("Ctrl-C stops everything; running the same command again resumes.");

    let mut last = (Instant::now(), read(&client, &ports).await);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let failure = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            joined = tasks.join_next() => {
                if let Some(Ok((name, result))) = joined {
                    break Some(anyhow::anyhow!(
                        "{name} stopped: {}",
                        result.err().map_or("without an error".into(), |e| format!("{e:#}"))
                    ));
                }
            }
            _ = tick.tick() => {
                let now = read(&client, &ports).await;
                let seconds = last.0.elapsed().as_secs_f64();
                let before = &last.1;
                println!(
                    "edges {} -> cascades {} -> central az-a {} az-b {} | queued: edges {} cascades {} (+{} held for aggregation windows) | dropped {}",
                    rate(now.edge_sent, before.edge_sent, seconds),
                    rate(now.cascade_received, before.cascade_received, seconds),
                    rate(now.central_appended[0], before.central_appended[0], seconds),
                    rate(now.central_appended[1], before.central_appended[1], seconds),
                    now.edge_queued,
                    now.cascade_queued - now.cascade_held,
                    now.cascade_held,
                    now.dropped,
                );
                last = (Instant::now(), now);
            }
        }
    };
    println!("stopping...");
    let _ = stop_tx.send(true);
    let mut errors: HashMap<String, String> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((name, Err(e))) = joined {
            errors.insert(name, format!("{e:#}"));
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some((name, e)) = errors.into_iter().next() {
        bail!("{name} stopped with an error: {e}");
    }
    println!(
        "stopped; run the same command again to resume from {}",
        dir.display()
    );
    Ok(())
}
