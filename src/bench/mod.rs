//! `strata bench`: load generators that print numbers. Performance is measured with these,
//! never asserted in tests.

mod cascade;
mod edge;
mod fleet;
mod planner;
mod promql;
mod query;
mod servers;
mod store;
mod write;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write fleet-shaped series over remote-write as fast as the receiver takes them.
    #[command(
        after_help = "Example (against Prometheus started with --web.enable-remote-write-receiver):\n  strata bench write --url http://127.0.0.1:9090/api/v1/write \\\n    --series 100000 --intervals 10 --interval-seconds 15 --batch 2000 --concurrency 4"
    )]
    Write(write::WriteArgs),
    /// Run a PromQL query repeatedly against a Prometheus-compatible API and report latency.
    #[command(
        after_help = "Example:\n  strata bench query --url http://127.0.0.1:9090 \\\n    --expr 'sum by (cell) (rate(apiserver_request_total[5m]))' --range 1h --step 15s --repeat 20"
    )]
    Query(query::QueryArgs),
    /// strata central side by side with VictoriaMetrics and Prometheus under the same load:
    /// samples per CPU-second, peak RSS per series, bytes per sample on disk.
    #[command(
        after_help = "Example (release build; takes a few minutes per server):\n  cargo run --release -- bench store --series 100000 --intervals 60 \\\n    --disk-series 20000 --disk-intervals 800\n  strata bench store --targets strata,victoria-metrics --series 20000 --intervals 20"
    )]
    Store(store::StoreArgs),
    /// strata central, Prometheus and VictoriaMetrics hold the same history and answer the same
    /// dashboard range queries: median latency of each, and strata's ratios.
    #[command(
        after_help = "Example (release build; loading takes a few minutes):\n  cargo run --release -- bench promql --series 12000 --history 6h --step 15s\n  strata bench promql --targets strata,prometheus --history 2h \\\n    --expr 'sum by (cell) (rate(node_cpu_seconds_total[5m]))'"
    )]
    Promql(promql::PromqlArgs),
    /// strata edge and vmagent scrape the same large pages side by side and forward to the
    /// same receiver: samples delivered per CPU-second and peak RSS of each.
    #[command(
        after_help = "Example (release build; about two minutes):\n  cargo run --release -- bench edge --targets 10 --series-per-target 10000 \\\n    --interval 5s --duration 60s"
    )]
    Edge(edge::EdgeArgs),
    /// strata cascade and vmagent, each relaying to two upstreams, take the same remote-write
    /// load one after the other: samples received per CPU-second and peak RSS of each.
    #[command(
        after_help = "Example (release build; about a minute):\n  cargo run --release -- bench cascade --series 100000 --intervals 20 --concurrency 8"
    )]
    Cascade(cascade::CascadeArgs),
    /// A full planner report on a large simulated fleet loaded into a strata central: seconds,
    /// queries sent, samples pulled and the store's CPU time.
    #[command(
        after_help = "Examples (release build; 200 cells and 10,000 clusters, 30 days):
  cargo run --release -- bench planner               # at 1h: loads in about 31 minutes on two cores
  cargo run --release -- bench planner --step 12h    # loads in about 4 minutes
  strata bench planner --cells-per-region 5 --days 14 --step 1h
  strata bench planner --source http://127.0.0.1:9090 --max-concurrent-queries 1   # one query at a time"
    )]
    Planner(planner::PlannerArgs),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Write(args) => write::run(args).await,
        BenchCommand::Query(args) => query::run(args).await,
        BenchCommand::Store(args) => store::run(args).await,
        BenchCommand::Promql(args) => promql::run(args).await,
        BenchCommand::Edge(args) => edge::run(args).await,
        BenchCommand::Cascade(args) => cascade::run(args).await,
        BenchCommand::Planner(args) => planner::run(args).await,
    }
}
