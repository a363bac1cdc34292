//! `strata sim`: the command line of the fleet simulator (strata-sim).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use strata_sim::backfill::{self, BackfillOptions};
use strata_sim::config::{format_time_ms, parse_time_ms};
use strata_sim::page::Job;
use strata_sim::{Fleet, FleetConfig};
use strata_wire::clock::now_ms;

#[derive(Subcommand)]
pub enum SimCommand {
    /// Serve every cell's exporters, with HTTP service discovery for the edges.
    #[command(
        after_help = "Example:\n  strata sim serve --listen 127.0.0.1:9601 --regions 3 --cells-per-region 4 --clusters-per-cell 25\n\nAn edge for cell us-east-1-c01 then discovers each job's targets with\n  http_sd_configs: [{url: 'http://127.0.0.1:9601/sd/us-east-1-c01/node'}]\n(jobs: node, aws-cni, cadvisor, kube-state-metrics, ipam, hypershift, apiserver, etcd,\nhosted-apiserver, hosted-etcd). GET /api/v1/fleet lists the cells, /api/v1/truth the ground truth."
    )]
    Serve(ServeArgs),
    /// Print when each cell resource really crosses each utilisation (the ground truth).
    #[command(
        after_help = "Example:\n  strata sim truth --seed 7 --utilisation 0.6,1 --horizon-days 365\n  strata sim truth --fleet-config fleet.yaml --format json > truth.json"
    )]
    Truth(TruthArgs),
    /// Write days of history through remote-write, oldest first.
    #[command(
        after_help = "Example (into both centrals, 30 days at a 5-minute step):\n  strata sim backfill --days 30 --step 5m \\\n    --to http://127.0.0.1:9301/api/v1/write --to http://127.0.0.1:9302/api/v1/write\n\nInto Prometheus (started with --web.enable-remote-write-receiver), only the capacity jobs:\n  strata sim backfill --days 45 --jobs kube-state-metrics,ipam,aws-cni,hypershift,etcd,apiserver \\\n    --to http://127.0.0.1:9090/api/v1/write\n\nWrite history before live data: stores that accept samples only shortly behind their newest\n(Prometheus, strata central) refuse history older than what they already hold."
    )]
    Backfill(BackfillArgs),
}

/// Which fleet: a file, flags, or both (flags win).
#[derive(Args, Clone)]
pub struct FleetArgs {
    /// YAML file with seed, regions, cells_per_region, clusters_per_cell and anchor.
    #[arg(long)]
    fleet_config: Option<PathBuf>,
    /// Seed of everything random in the fleet (default 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Regions (default 3).
    #[arg(long)]
    regions: Option<usize>,
    /// Cells (meta clusters) per region (default 4).
    #[arg(long)]
    cells_per_region: Option<usize>,
    /// Customer clusters per cell at the anchor (default 25).
    #[arg(long)]
    clusters_per_cell: Option<usize>,
    /// RFC 3339 time at which each cell hosts --clusters-per-cell clusters (default: the
    /// start of today, UTC). Give the same anchor to serve, backfill and truth.
    #[arg(long)]
    anchor: Option<String>,
}

impl FleetArgs {
    pub fn config(&self) -> anyhow::Result<FleetConfig> {
        self.config_over(FleetConfig::default())
    }

    /// The fleet file if one is given, else `base`, with the flags applied over it.
    pub fn config_over(&self, base: FleetConfig) -> anyhow::Result<FleetConfig> {
        let mut config = match &self.fleet_config {
            Some(path) => FleetConfig::load(path)?,
            None => base,
        };
        if let Some(v) = self.seed {
            config.seed = v;
        }
        if let Some(v) = self.regions {
            config.regions = v;
        }
        if let Some(v) = self.cells_per_region {
            config.cells_per_region = v;
        }
        if let Some(v) = self.clusters_per_cell {
            config.clusters_per_cell = v;
        }
        if let Some(v) = &self.anchor {
            config.anchor = Some(v.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Address of the exporters, service discovery, /metrics and health.
    #[arg(long, default_value = "127.0.0.1:9601")]
    listen: SocketAddr,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct TruthArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Utilisations to report crossings of, as fractions or percentages of the limit.
    #[arg(long, default_value = "0.6,1")]
    utilisation: String,
    /// How far ahead to look.
    #[arg(long, default_value_t = 365)]
    horizon_days: i64,
    /// From when (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Remote-write URL; repeat to write the same history to several stores.
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// Days of history, ending at --end.
    #[arg(long, default_value_t = 30.0)]
    days: f64,
    /// Time between samples of a series.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    step: Duration,
    /// End of the history (RFC 3339, exclusive); default now.
    #[arg(long)]
    end: Option<String>,
    /// Only these jobs (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    jobs: Vec<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Series per remote-write request (one sample each).
    #[arg(long, default_value_t = 5000)]
    series_per_request: usize,
    /// File holding a bearer token to send (e.g. when writing through a cascade).
    #[arg(long)]
    bearer_token_file: Option<PathBuf>,
}

/// An RFC 3339 flag's milliseconds, or now when it is not given.
pub fn time_arg(flag: &str, value: Option<&String>) -> anyhow::Result<i64> {
    match value {
        Some(text) => parse_time_ms(text).map_err(|e| {
            anyhow::anyhow!(
                "{flag} {text:?} is not an RFC 3339 time ({e}); write e.g. 2026-11-01T00:00:00Z"
            )
        }),
        None => Ok(now_ms()),
    }
}

pub async fn run(
    cmd: SimCommand,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match cmd {
        SimCommand::Serve(args) => {
            let opts = strata_sim::server::SimOptions {
                fleet: args.fleet.config()?,
                listen: args.listen,
            };
            strata_sim::server::run(opts, shutdown)
                .await
                .with_context(|| {
                    format!("sim stopped with an error (listening on {})", args.listen)
                })
        }
        SimCommand::Truth(args) => {
            let fleet = Fleet::new(&args.fleet.config()?)?;
            let at = time_arg("--at", args.at.as_ref())?;
            let utilisations = strata_sim::server::parse_utilisations(&args.utilisation)?;
            let truths = strata_sim::truth::truths(&fleet, at, args.horizon_days, &utilisations);
            match args.format {
                Format::Table => {
                    println!(
                        "ground truth from {} (fleet seed {}, anchor {}; noiseless signal, hourly resolution)",
                        format_time_ms(at),
                        fleet.seed,
                        format_time_ms(fleet.anchor_ms)
                    );
                    print!("{}", strata_sim::truth::table(&truths));
                }
                Format::Json => println!("{}", serde_json::to_string_pretty(&truths)?),
            }
            Ok(())
        }
        SimCommand::Backfill(args) => backfill_cmd(args).await,
    }
}

async fn backfill_cmd(args: BackfillArgs) -> anyhow::Result<()> {
    let fleet = Arc::new(Fleet::new(&args.fleet.config()?)?);
    let end = time_arg("--end", args.end.as_ref())?;
    if args.days.is_nan() || args.days <= 0.0 {
        bail!("--days must be positive, e.g. --days 30");
    }
    let step_ms = args.step.as_millis() as i64;
    let start = end - (args.days * 86_400_000.0) as i64;
    let start = start - start.rem_euclid(step_ms.max(1));
    let mut jobs = Vec::new();
    for name in &args.jobs {
        match Job::from_name(name.trim()) {
            Some(job) => jobs.push(job),
            None => {
                let all: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
                bail!("--jobs: no job {name:?}; the jobs are {}", all.join(","));
            }
        }
    }
    let bearer_token = match &args.bearer_token_file {
        Some(path) => Some(
            strata_relay::remote_write::read_secret(path)
                .map_err(|e| anyhow::anyhow!("--bearer-token-file: {e}"))?,
        ),
        None => None,
    };
    let opts = BackfillOptions {
        urls: args.to.clone(),
        start_ms: start,
        end_ms: end,
        step_ms,
        concurrency: args.concurrency,
        series_per_request: args.series_per_request,
        jobs,
        bearer_token,
    };
    opts.validate()?;
    eprintln!(
        "writing {} steps of {} from {} to {} into {}",
        opts.steps(),
        humantime::format_duration(args.step),
        format_time_ms(start),
        format_time_ms(end),
        args.to.join(", ")
    );
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(opts.steps())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps  {msg}  eta {eta}",
    )?);
    let summary = backfill::run(fleet, opts, |p| {
        bar.set_position(p.steps_done);
        bar.set_message(format!("{} samples", p.samples));
    })
    .await
    .context("backfill stopped; what was acknowledged stays written, and running the same command again rewrites it unchanged")?;
    bar.finish_and_clear();
    println!(
        "wrote {} samples to each of {} destination(s) in {} steps: {} requests, {} retries, {:.1} s ({:.0} samples/s)",
        summary.samples,
        args.to.len(),
        summary.steps,
        summary.requests,
        summary.retries,
        summary.elapsed.as_secs_f64(),
        summary.samples as f64 / summary.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
