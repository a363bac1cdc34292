//! `strata planner`: the command line of the capacity planner (strata-planner).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use strata_planner::render::Style;
use strata_planner::{PlannerConfig, Source, backtest, render};
use strata_sim::Fleet;

use crate::sim::{FleetArgs, time_arg};

#[derive(Subcommand)]
pub enum PlannerCommand {
    /// Forecast every cell resource and customer cluster and say what to do, most urgent first.
    #[command(
        after_help = "Example:\n  strata planner report --source http://127.0.0.1:9301\n  strata planner report --source http://prometheus:9090 --config planner.yaml --format markdown > plan.md\n  strata planner report --source http://127.0.0.1:8428 --format json --at 2026-11-01T00:00:00Z\n\nThe source is any Prometheus-compatible query API (strata central, Prometheus, VictoriaMetrics,\nThanos, Mimir). Without --config the defaults read the metrics of kube-state-metrics, Calico\nIPAM, the AWS VPC CNI, HyperShift, etcd and kube-apiserver by region, cell and cluster;\n`deploy/planner.yaml` shows every setting."
    )]
    Report(ReportArgs),
    /// Forecast from history cut k days ago and compare with what the simulated fleet really did.
    #[command(
        after_help = "Example (a simulated fleet backfilled into a store first):\n  strata sim backfill --seed 7 --days 150 --step 1h --jobs kube-state-metrics,ipam,aws-cni,hypershift,etcd,apiserver \\\n    --to http://127.0.0.1:9301/api/v1/write\n  strata planner backtest --source http://127.0.0.1:9301 --seed 7 --cut-days 30\n\nGive the same fleet flags (or --fleet-config) and --at as the backfill's --end. It prints how\noften the p50 time to the headroom line and to the limit is within 10% of the truth, how often\nthe p10-p90 band contains it, and the same for predict_linear over the same data."
    )]
    Backtest(BacktestArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Markdown,
}

/// Where to read and how.
#[derive(Args)]
struct SourceArgs {
    /// Base URL of a Prometheus-compatible query API.
    #[arg(long, default_value = "http://127.0.0.1:9301")]
    source: String,
    /// Planner configuration (YAML); default: the built-in resources and tiers.
    #[arg(long)]
    config: Option<PathBuf>,
    /// File holding a bearer token to send to the source.
    #[arg(long)]
    bearer_token_file: Option<PathBuf>,
    /// Timeout of each query.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    query_timeout: Duration,
}

impl SourceArgs {
    fn open(&self) -> anyhow::Result<(Source, PlannerConfig)> {
        let config = match &self.config {
            Some(path) => PlannerConfig::load(path)?,
            None => PlannerConfig::default(),
        };
        let token = match &self.bearer_token_file {
            Some(path) => Some(
                strata_relay::remote_write::read_secret(path)
                    .map_err(|e| anyhow::anyhow!("--bearer-token-file: {e}"))?,
            ),
            None => None,
        };
        Ok((
            Source::new(&self.source, self.query_timeout, token)?,
            config,
        ))
    }
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The report's time (RFC 3339): forecasts start here; default now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The simulated fleet whose history the source holds (for its ground truth).
    #[command(flatten)]
    fleet: FleetArgs,
    /// Cut the history this many days before --at, forecast, and compare with those days;
    /// several (comma-separated) are scored one by one and together.
    #[arg(long, default_value = "30", value_delimiter = ',')]
    cut_days: Vec<u32>,
    /// Score only cell resources with at least this many days of history before the cut.
    #[arg(long, default_value_t = 30)]
    min_history_days: u32,
    /// End of the data (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
    /// Print every case as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar() -> anyhow::Result<ProgressBar> {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "scanning the fleet {bar:40} {pos}/{len} steps  eta {eta}",
    )?);
    Ok(bar)
}

async fn scan(
    source: &Source,
    config: &PlannerConfig,
    at: i64,
) -> anyhow::Result<(strata_planner::Report, Vec<strata_planner::Forecasted>)> {
    let bar = progress_bar()?;
    let out = strata_planner::report(source, config, at, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })
    .await
    .with_context(|| format!("the planner could not read the fleet from {}", source.url()))?;
    bar.finish_and_clear();
    Ok(out)
}

pub async fn run(cmd: PlannerCommand) -> anyhow::Result<()> {
    match cmd {
        PlannerCommand::Report(args) => {
            let (source, config) = args.source.open()?;
            let at = time_arg("--at", args.at.as_ref())?;
            let (report, _) = scan(&source, &config, at).await?;
            if report.cells.is_empty() {
                anyhow::bail!(
                    "{} returned no cell resources at {}: check that it holds the metrics the planner's queries use (see `strata planner report --help`) with region and cell labels",
                    source.url(),
                    report.at
                );
            }
            match args.format {
                Format::Table => print!(
                    "{}",
                    render::table(
                        &report,
                        Style {
                            colour: std::io::stdout().is_terminal()
                        }
                    )
                ),
                Format::Markdown => print!("{}", render::markdown(&report)),
                Format::Json => println!("{}", render::json(&report)),
            }
            Ok(())
        }
        PlannerCommand::Backtest(args) => {
            let (source, mut config) = args.source.open()?;
            let fleet = Fleet::new(&args.fleet.config()?)?;
            let end = time_arg("--at", args.at.as_ref())?;
            config.min_history_days = config.min_history_days.min(args.min_history_days);
            let mut results = Vec::new();
            for &k in &args.cut_days {
                let cut = end - i64::from(k) * 86_400_000;
                let (_, forecasts) = scan(&source, &config, cut).await?;
                let utilisations = [config.headroom, 1.0];
                let truths: Vec<backtest::Truth> =
                    strata_sim::truth::truths(&fleet, cut, i64::from(k), &utilisations)
                        .into_iter()
                        .flat_map(|t| {
                            t.crossings.into_iter().map(move |c| backtest::Truth {
                                region: t.region.clone(),
                                cell: t.cell.clone(),
                                resource: t.resource.name().to_string(),
                                pool: t.pool.clone(),
                                utilisation: c.utilisation,
                                days: c.days,
                            })
                        })
                        .collect();
                results.push(backtest::score(
                    &forecasts,
                    &truths,
                    cut,
                    k,
                    args.min_history_days,
                ));
            }
            let all = backtest::combine(&results);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                for r in &results {
                    println!("{}", backtest::table(r));
                }
                if results.len() > 1 {
                    print!("{}", backtest::summary("all cuts", &all));
                }
                let cost = source.stats();
                println!(
                    "\nread with {} queries and {} samples in all",
                    cost.queries, cost.samples
                );
            }
            Ok(())
        }
    }
}
