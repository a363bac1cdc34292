//! `strata planner`: the command line of the capacity planner (strata-planner).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use strata_planner::chart::Links;
use strata_planner::notify::NotifyOptions;
use strata_planner::render::Style;
use strata_planner::serve::ServeOptions;
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
    /// Make a report every interval; serve it as HTML, JSON and metrics; notify when a decision
    /// enters its lead time.
    #[command(
        after_help = "Example:\n  strata planner serve --source http://127.0.0.1:9301 --interval 1h \\\n    --webhook-url http://chatops.example:8080/hooks/capacity \\\n    --alertmanager-url http://127.0.0.1:9093 --state-file /var/lib/strata/planner-notify.json\n\nThen open http://127.0.0.1:9701/ for the report with charts; /api/v1/report is its JSON,\n/metrics exports strata_planner_days_to_headroom{region,cell,resource,pool,quantile} and\nstrata_planner_days_to_exhaustion for Grafana panels and alert rules. Webhook receivers get\nthe Alertmanager webhook payload (version \"4\"), once when a decision's act-by date comes,\nagain every --repeat-interval while it stands, and resolved when it goes; Alertmanagers get\nthe alerts through POST /api/v2/alerts on every report."
    )]
    Serve(ServeArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Markdown,
    /// One self-contained page with charts.
    Html,
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
pub struct ServeArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Address to serve the report, charts and metrics on.
    #[arg(long, default_value = "127.0.0.1:9701")]
    listen: SocketAddr,
    /// How often to make a report.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Webhook receiver for notifications (repeatable).
    #[arg(long)]
    webhook_url: Vec<String>,
    /// Alertmanager to send alerts to through its API v2 (repeatable; base URL).
    #[arg(long)]
    alertmanager_url: Vec<String>,
    /// The receiver named in webhook payloads.
    #[arg(long, default_value = "strata-planner")]
    receiver: String,
    /// Send a firing decision to webhook receivers again after this long.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    repeat_interval: Duration,
    /// Tell webhook receivers when a decision is no longer due.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    send_resolved: bool,
    /// Timeout of each notification attempt.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    notify_timeout: Duration,
    /// The planner's URL as people reach it, for links in notifications; default http://<listen>.
    #[arg(long)]
    external_url: Option<String>,
    /// Remembers which notifications were sent, so a restart does not send them again.
    #[arg(long)]
    state_file: Option<PathBuf>,
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

pub async fn run(
    cmd: PlannerCommand,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match cmd {
        PlannerCommand::Serve(args) => {
            let (source, config) = args.source.open()?;
            for url in args.webhook_url.iter().chain(&args.alertmanager_url) {
                reqwest::Url::parse(url).with_context(|| {
                    format!("{url:?} is not a URL; give e.g. http://127.0.0.1:9093")
                })?;
            }
            let external_url = args
                .external_url
                .unwrap_or_else(|| format!("http://{}", args.listen));
            let notify = NotifyOptions {
                webhooks: args.webhook_url,
                alertmanagers: args.alertmanager_url,
                receiver: args.receiver,
                repeat_interval: args.repeat_interval,
                send_resolved: args.send_resolved,
                timeout: args.notify_timeout,
                external_url,
                report_interval: args.interval,
                state_file: args.state_file,
            };
            strata_planner::serve::run(
                ServeOptions {
                    listen: args.listen,
                    interval: args.interval,
                    source,
                    config,
                    notify,
                },
                shutdown,
            )
            .await?;
            Ok(())
        }
        PlannerCommand::Report(args) => {
            let (source, config) = args.source.open()?;
            let at = time_arg("--at", args.at.as_ref())?;
            let (report, forecasts) = scan(&source, &config, at).await?;
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
                Format::Html => print!("{}", render::html(&report, &forecasts, Links::Inline)),
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
                                surprise: c.surprise.map(|s| s.name().to_string()),
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
