//! `strata bench planner`: how long a full planner report takes on a large simulated fleet,
//! how many queries it sends and how many samples it pulls. The planner asks the store for
//! daily and hourly means and daily peaks, so its cost grows with the fleet, not with the
//! history or the scrape interval: run it at two `--days` (or `--step`) to see the samples
//! stay flat.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_planner::forecast::DAY_MS;
use strata_planner::plan::format_time;
use strata_planner::{PlannerConfig, Source};

use super::servers::{cpu_seconds, free_port, launch, peak_rss, work_root};

#[derive(Args)]
pub struct PlannerArgs {
    /// Regions of the simulated fleet.
    #[arg(long, default_value_t = 4)]
    regions: usize,
    /// Cells (meta clusters) per region.
    #[arg(long, default_value_t = 50)]
    cells_per_region: usize,
    /// Customer clusters per cell.
    #[arg(long, default_value_t = 50)]
    clusters_per_cell: usize,
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of history to load and plan from.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Time between samples of the history (`5m` is closer to a real scrape and takes about
    /// twelve times as long to load as `1h`).
    #[arg(long, default_value = "1h")]
    step: String,
    /// Reports to time, one after another.
    #[arg(long, default_value_t = 2)]
    repeat: u32,
    /// Queries each report has in flight at once (the planner's `max_concurrent_queries`).
    #[arg(long, default_value_t = PlannerConfig::default().max_concurrent_queries)]
    max_concurrent_queries: u32,
    /// Plan from this Prometheus-compatible API, already loaded with the same fleet (same
    /// seed, sizes and days ending at the start of today, UTC), instead of starting a strata
    /// central and backfilling it.
    #[arg(long)]
    source: Option<String>,
    /// Keep the central's data here instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub async fn run(args: PlannerArgs) -> anyhow::Result<()> {
    if args.repeat == 0 || args.days == 0 || args.max_concurrent_queries == 0 {
        bail!("--repeat, --days and --max-concurrent-queries must be at least 1");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let at = now.div_euclid(DAY_MS) * DAY_MS;
    let anchor = format_time(at);
    // Checked before a load that may take an hour: the planner reads the days loaded, and
    // forecasts from as few as there are.
    let defaults = PlannerConfig::default();
    let config = PlannerConfig {
        history_days: defaults.history_days.min(args.days),
        min_history_days: defaults.min_history_days.min(args.days),
        max_concurrent_queries: args.max_concurrent_queries,
        ..defaults
    };
    config
        .validate()
        .with_context(|| format!("cannot plan from --days {} of history", args.days))?;
    let (_guard, root) = work_root(args.work_dir.as_deref())?;
    let (url, central) = match &args.source {
        Some(url) => (url.clone(), None),
        None => {
            let port = free_port()?;
            let dir = root.join("central");
            std::fs::create_dir_all(&dir)?;
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["central", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--retention", &format!("{}d", args.days + 30)])
                .arg("--data-dir")
                .arg(&dir);
            let server = launch(c, port, dir, "/-/ready", "strata central").await?;
            let url = format!("http://127.0.0.1:{port}");
            println!(
                "loading {} days at {} of {} cells x {} clusters into strata central at {url}",
                args.days,
                args.step,
                args.regions * args.cells_per_region,
                args.clusters_per_cell
            );
            let started = Instant::now();
            let status = Command::new(std::env::current_exe()?)
                .args(["sim", "backfill"])
                .args(["--seed", &args.seed.to_string()])
                .args(["--regions", &args.regions.to_string()])
                .args(["--cells-per-region", &args.cells_per_region.to_string()])
                .args(["--clusters-per-cell", &args.clusters_per_cell.to_string()])
                .args(["--anchor", &anchor, "--end", &anchor])
                .args(["--days", &args.days.to_string(), "--step", &args.step])
                .args(["--to", &format!("{url}/api/v1/write")])
                .status()
                .context("cannot run strata sim backfill")?;
            if !status.success() {
                bail!("strata sim backfill failed ({status}); see its output above");
            }
            println!("loaded in {:.1} s", started.elapsed().as_secs_f64());
            (url, Some(server))
        }
    };
    println!(
        "\nreports with up to {} queries in flight",
        config.max_concurrent_queries
    );
    println!(
        "{:<8} {:>10} {:>8} {:>12} {:>7} {:>16} {:>9} {:>20}",
        "report",
        "seconds",
        "queries",
        "samples",
        "cells",
        "cell resources",
        "clusters",
        "store CPU seconds"
    );
    for i in 1..=args.repeat {
        let source = Source::new(&url, Duration::from_secs(600), None)?;
        let cpu_before = central
            .as_ref()
            .map(|s| cpu_seconds(s.child.id()))
            .transpose()?;
        let started = Instant::now();
        let (report, _) = strata_planner::report(&source, &config, at, |_| {})
            .await
            .with_context(|| format!("the planner could not read the fleet from {url}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = match (&central, cpu_before) {
            (Some(s), Some(before)) => format!("{:.1}", cpu_seconds(s.child.id())? - before),
            _ => "-".into(),
        };
        println!(
            "{i:<8} {seconds:>10.1} {:>8} {:>12} {:>7} {:>16} {:>9} {cpu:>20}",
            report.cost.queries,
            report.cost.samples,
            report.summary.cells,
            report.summary.cell_resources,
            report.summary.clusters
        );
    }
    if let Some(s) = &central {
        println!(
            "\nstrata central peak RSS {:.0} MiB",
            peak_rss(s.child.id())? as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}
