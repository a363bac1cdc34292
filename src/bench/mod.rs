//! `strata bench`: load generators that print numbers. Performance is measured with these,
//! never asserted in tests.

mod fleet;
mod query;
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
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Write(args) => write::run(args).await,
        BenchCommand::Query(args) => query::run(args).await,
    }
}
