//! The `strata` binary: parses the command line, validates it into a configuration and hands it
//! to the crate that does the work. No logic lives here beyond that.

mod bench;
mod demo;
mod planner;
mod rules;
mod sim;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use strata_central::backfill::BackfillConfig;
use strata_central::db::Options as StorageOptions;
use strata_central::server::CentralConfig;
use strata_relay::{OverflowPolicy, QueueConfig, RelayConfig, SenderConfig};

/// mimalloc instead of the system allocator: the store and the query engine allocate and free
/// many small label strings and sample vectors per query, and glibc's malloc spent about half
/// of a fleet-wide query consolidating and unlinking its free chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Hierarchical metrics pipeline and capacity planner for Kubernetes fleets",
    after_help = "Examples:\n  strata central --az az-a --data-dir ./strata-data/central\n  strata edge --config edge.yaml\n  strata cascade --config cascade.yaml\n  strata demo\n  strata planner report --source http://127.0.0.1:9301\n  strata sim serve --listen 127.0.0.1:9601\n  strata relay --remote-write-url http://127.0.0.1:9090/api/v1/write\n  strata bench write --url http://127.0.0.1:9201/api/v1/write --series 10000 --intervals 10\n  strata version"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store-and-forward hop: receive remote-write, queue it durably on disk, forward it.
    #[command(
        after_help = "Example:\n  strata relay --listen 127.0.0.1:9201 --queue-dir ./strata-data/relay \\\n    --remote-write-url http://127.0.0.1:9090/api/v1/write\n\nSenders then use http://127.0.0.1:9201/api/v1/write; /metrics, /-/ready and /-/healthy are served on the same address."
    )]
    Relay(RelayArgs),
    /// The per-cell scraper: Prometheus scrape configuration in, remote-write out through one
    /// durable queue per destination.
    #[command(
        after_help = "Example:\n  strata edge --config edge.yaml --listen 127.0.0.1:9401 --data-dir ./strata-data/edge\n\nwith edge.yaml in Prometheus's format, e.g.\n  global: {scrape_interval: 15s, external_labels: {region: cn-hangzhou, cell: hz-07}}\n  scrape_configs:\n    - job_name: node\n      static_configs: [{targets: ['127.0.0.1:9100']}]\n  remote_write:\n    - url: http://127.0.0.1:9201/api/v1/write\n\nReload with SIGHUP or `curl -X POST http://127.0.0.1:9401/-/reload`; targets at /api/v1/targets;\n/metrics, /-/ready and /-/healthy on the same address."
    )]
    Edge(EdgeArgs),
    /// The regional aggregator: remote-write from the edges in, auth and label enforcement,
    /// per-cell limits, stream aggregation, and fan-out to N upstreams through one durable
    /// queue each.
    #[command(
        after_help = "Example:\n  strata cascade --config cascade.yaml --listen 127.0.0.1:9501 --data-dir ./strata-data/cascade\n\nwith cascade.yaml, e.g.\n  auth:\n    tokens:\n      - {name: hz-07, token_file: /etc/strata/hz-07.token, labels: {cell: hz-07}, action: enforce}\n  limits: {max_active_series: 2000000, max_samples_per_second: 200000}\n  stream_aggregation:\n    rules:\n      - {match: container_cpu_usage_seconds_total, interval: 1m, without: [pod, instance], outputs: [rate]}\n  remote_write:\n    - {url: http://127.0.0.1:9301/api/v1/write, name: az-a}\n    - {url: http://127.0.0.1:9302/api/v1/write, name: az-b}\n\nEdges write to http://127.0.0.1:9501/api/v1/write. Each upstream's queue: /api/v1/status/upstreams;\nper-cell limits: /api/v1/status/cells; reload tokens and limits with SIGHUP or POST /-/reload;\n/metrics, /-/ready and /-/healthy on the same address."
    )]
    Cascade(CascadeArgs),
    /// The store of one availability zone: remote-write in, WAL, compressed head, Parquet
    /// blocks, remote-read, peer backfill.
    #[command(
        after_help = "Example (two AZs on one machine):\n  strata central --listen 127.0.0.1:9301 --az az-a --data-dir ./strata-data/central-a \\\n    --peer-url http://127.0.0.1:9302\n  strata central --listen 127.0.0.1:9302 --az az-b --data-dir ./strata-data/central-b \\\n    --peer-url http://127.0.0.1:9301\n\nWriters use http://127.0.0.1:9301/api/v1/write; Prometheus can remote_read http://127.0.0.1:9301/api/v1/read.\n/api/v1/status/tsdb shows head statistics and the top series counts by metric name and label.\n\nWith rules and an Alertmanager:\n  strata central --rule-file rules.yml --alertmanager-url http://127.0.0.1:9093 \\\n    --external-url http://central-a.example:9301 --external-label az=az-a\n\nWith webhook receivers (Alertmanager's route and receivers sections), sent once by the two AZs:\n  strata central --az az-a --peer-url http://127.0.0.1:9302 --rule-file rules.yml \\\n    --notify-config notify.yml\n\nRules are at /api/v1/rules and alerts at /api/v1/alerts; reload with SIGHUP or\n`curl -X POST http://127.0.0.1:9301/-/reload`; check files with `strata rules check rules.yml`."
    )]
    Central(Box<CentralArgs>),
    /// The whole pipeline on 127.0.0.1: a simulated fleet, an edge per cell, a cascade per
    /// region and two centrals, with history backfilled and live data flowing.
    #[command(
        after_help = "Example:\n  cargo run --release -- demo\n  strata demo --dir ./strata-demo --regions 2 --cells-per-region 3 --clusters-per-cell 10 --history-days 7\n\nIt prints the Grafana datasource URLs (http://127.0.0.1:9301 for az-a, :9302 for az-b) and a\npipeline health line every 10 seconds. Ctrl-C stops everything; the same command resumes.\nThe fleet flags (--seed, --regions, ...) apply to the first run; later runs keep the fleet\nsaved in --dir."
    )]
    Demo(demo::DemoArgs),
    /// The capacity planner: when to split a cell, when to resize a cluster.
    #[command(subcommand)]
    Planner(planner::PlannerCommand),
    /// Recording and alerting rule files in Prometheus's format.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// The fleet simulator: exporters for simulated cells, history backfill, ground truth.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Load generators for benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print the version and the protocols this build speaks.
    Version,
}

#[derive(Clone, Copy, ValueEnum)]
enum Overflow {
    Block,
    DropOldest,
}

#[derive(Args)]
struct EdgeArgs {
    /// Prometheus configuration file (global, scrape_configs, remote_write).
    #[arg(long)]
    config: PathBuf,
    /// Address of the edge's own endpoints.
    #[arg(long, default_value = "127.0.0.1:9401")]
    listen: SocketAddr,
    /// Directory of the remote-write queues (one subdirectory per destination).
    #[arg(long, default_value = "./strata-data/edge")]
    data_dir: PathBuf,
    /// Bound of each destination's queue on disk; when full, the oldest data is dropped.
    #[arg(long, default_value_t = 1 << 30)]
    max_queue_bytes: u64,
    /// Check the configuration and flags, print a summary and exit (like `promtool check
    /// config`); nothing is started.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct CascadeArgs {
    /// The cascade's YAML file (auth, limits, stream_aggregation, queue, remote_write).
    #[arg(long)]
    config: PathBuf,
    /// Address to accept remote-write on; also serves the status pages, /metrics and health.
    #[arg(long, default_value = "127.0.0.1:9501")]
    listen: SocketAddr,
    /// Directory of the upstream queues (one subdirectory per upstream).
    #[arg(long, default_value = "./strata-data/cascade")]
    data_dir: PathBuf,
    /// Check the configuration and flags, print a summary and exit (like `promtool check
    /// config`); nothing is started.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct RelayArgs {
    /// Address to accept remote-write on.
    #[arg(long, default_value = "127.0.0.1:9201")]
    listen: SocketAddr,
    /// Directory of the durable queue; created if missing, resumed if present.
    #[arg(long, default_value = "./strata-data/relay")]
    queue_dir: PathBuf,
    /// Where to forward to (any Prometheus remote-write receiver).
    #[arg(long, default_value = "http://127.0.0.1:9090/api/v1/write")]
    remote_write_url: String,
    /// Upper bound of undelivered data on disk.
    #[arg(long, default_value_t = QueueConfig::default().max_queue_bytes)]
    max_queue_bytes: u64,
    /// What a full queue does: refuse new data with 429 (block) or delete the oldest.
    #[arg(long, value_enum, default_value_t = Overflow::Block)]
    overflow: Overflow,
    /// Concurrent senders (series keep their order within a shard).
    #[arg(long, default_value_t = SenderConfig::default().shards)]
    shards: usize,
    /// Samples per outgoing request.
    #[arg(long, default_value_t = SenderConfig::default().max_samples_per_send)]
    max_samples_per_send: usize,
    /// Send a partial batch after this many seconds.
    #[arg(long, default_value_t = SenderConfig::default().batch_send_deadline_seconds)]
    batch_send_deadline_seconds: f64,
    /// Drop samples older than this many seconds instead of sending them (0: never).
    #[arg(long, default_value_t = 0)]
    sample_age_limit_seconds: u64,
}

impl RelayArgs {
    fn into_config(self) -> anyhow::Result<RelayConfig> {
        let queue = QueueConfig {
            max_queue_bytes: self.max_queue_bytes,
            overflow: match self.overflow {
                Overflow::Block => OverflowPolicy::Block,
                Overflow::DropOldest => OverflowPolicy::DropOldest,
            },
            ..Default::default()
        };
        queue.validate()?;
        let remote_write = SenderConfig {
            url: self.remote_write_url,
            shards: self.shards,
            max_samples_per_send: self.max_samples_per_send,
            batch_send_deadline_seconds: self.batch_send_deadline_seconds,
            sample_age_limit_seconds: self.sample_age_limit_seconds,
            ..Default::default()
        };
        remote_write.validate()?;
        Ok(RelayConfig {
            listen: self.listen,
            queue_dir: self.queue_dir,
            queue,
            remote_write,
            max_request_bytes: RelayConfig::DEFAULT_MAX_REQUEST_BYTES,
            max_decoded_bytes: RelayConfig::DEFAULT_MAX_DECODED_BYTES,
        })
    }
}

#[derive(Args)]
struct CentralArgs {
    /// Address to serve remote-write, remote-read and the status API on.
    #[arg(long, default_value = "127.0.0.1:9301")]
    listen: SocketAddr,
    /// Directory of the WAL and blocks; created if missing, recovered if present.
    #[arg(long, default_value = "./strata-data/central")]
    data_dir: PathBuf,
    /// This central's availability zone (added to its own /metrics).
    #[arg(long, default_value = "az-a")]
    az: String,
    /// The other AZ's central, e.g. http://10.0.2.15:9301; enables peer backfill.
    #[arg(long)]
    peer_url: Option<String>,
    /// How often to compare recent data with the peer.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    backfill_interval: std::time::Duration,
    /// How far back peer backfill compares (on start, and once per this period).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    backfill_lookback: std::time::Duration,
    /// Samples newer than this are left out of peer comparison (still in flight upstream).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    backfill_settle: std::time::Duration,
    /// How often the head is cut into blocks, blocks compacted and retention applied.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    maintenance_interval: std::time::Duration,
    /// Time range of a block cut from the head.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    block_duration: std::time::Duration,
    /// Blocks whose newest sample is older than this are deleted.
    #[arg(long, default_value = "15d", value_parser = humantime::parse_duration)]
    retention: std::time::Duration,
    /// Longest time range compaction makes one block span (Prometheus's
    /// --storage.tsdb.max-block-duration). Longer blocks take less memory and make long
    /// queries quicker; a block is deleted whole, so its oldest samples outlive --retention by
    /// up to this much. Default: a tenth of --retention, at most 31d, at least 12 blocks (a
    /// day of 2h blocks).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_block_duration: Option<std::time::Duration>,
    /// Samples up to this much older than the newest are accepted out of order.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    out_of_order_window: std::time::Duration,
    /// The most samples one remote-read request may return.
    #[arg(long, default_value_t = 50_000_000)]
    read_sample_limit: usize,
    /// Longest a PromQL query may run (Prometheus's --query.timeout).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    query_timeout: std::time::Duration,
    /// Most samples one PromQL query may hold at once (Prometheus's --query.max-samples).
    #[arg(long, default_value_t = 50_000_000)]
    query_max_samples: usize,
    /// How far back an instant selector looks for a sample (Prometheus's
    /// --query.lookback-delta).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    query_lookback_delta: std::time::Duration,
    /// A rule file in Prometheus's format (repeat for several); reloaded on SIGHUP and
    /// POST /-/reload. Check files first with `strata rules check`.
    #[arg(long = "rule-file", value_name = "FILE")]
    rule_files: Vec<PathBuf>,
    /// Interval of rule groups that set none (Prometheus's global.evaluation_interval).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    evaluation_interval: std::time::Duration,
    /// The URL users reach this central at, for alerts' generator links and $externalURL
    /// (default: http://LISTEN).
    #[arg(long)]
    external_url: Option<String>,
    /// NAME=VALUE added to alerts that lack the label, and $externalLabels (repeatable).
    #[arg(long = "external-label", value_name = "NAME=VALUE")]
    external_labels: Vec<String>,
    /// An Alertmanager to send alerts to, e.g. http://127.0.0.1:9093 (repeat for several;
    /// each gets every alert).
    #[arg(long = "alertmanager-url", value_name = "URL")]
    alertmanager_urls: Vec<String>,
    /// Timeout of one request to an Alertmanager.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    alertmanager_timeout: std::time::Duration,
    /// Most alerts waiting to be sent; the oldest are dropped beyond it.
    #[arg(long, default_value_t = 10_000)]
    alertmanager_queue_capacity: usize,
    /// Least time between two sends of an unchanged alert (Prometheus's
    /// --rules.alert.resend-delay).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    rules_resend_delay: std::time::Duration,
    /// How long a resolved alert keeps being re-sent as resolved (fixed at 15m in
    /// Prometheus).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    rules_resolved_retention: std::time::Duration,
    /// How long an outage may be for `for` state to be restored after it (Prometheus's
    /// --rules.alert.for-outage-tolerance).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    rules_for_outage_tolerance: std::time::Duration,
    /// Least `for` time left to an alert restored after a restart (Prometheus's
    /// --rules.alert.for-grace-period).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    rules_for_grace_period: std::time::Duration,
    /// Webhook receivers: the `route` and `receivers` sections of an Alertmanager
    /// configuration, with webhook_configs. Alerts are grouped, deduplicated and repeated as
    /// Alertmanager does; with --peer-url only one AZ sends each notification. Reloaded with
    /// the rule files.
    #[arg(long, value_name = "FILE")]
    notify_config: Option<PathBuf>,
    /// How often the peer AZ is checked; after two failed checks this AZ sends the webhook
    /// notifications alone.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    notify_peer_check_interval: std::time::Duration,
    /// Check the configuration and flags, print a summary and exit (like `promtool check
    /// config`); nothing is started.
    #[arg(long)]
    check: bool,
}

impl CentralArgs {
    fn into_config(self) -> anyhow::Result<CentralConfig> {
        if self.block_duration < std::time::Duration::from_secs(60) {
            anyhow::bail!("--block-duration must be at least 1m (default 2h)");
        }
        if self.out_of_order_window * 2 > self.block_duration {
            anyhow::bail!(
                "--out-of-order-window ({}) must be at most half of --block-duration ({})",
                duration_text(self.out_of_order_window),
                duration_text(self.block_duration)
            );
        }
        if self.retention < self.block_duration {
            anyhow::bail!("--retention must be at least --block-duration");
        }
        let max_block_duration = self.max_block_duration.unwrap_or_else(|| {
            StorageOptions::default_max_block_duration(self.retention, self.block_duration)
        });
        if max_block_duration < self.block_duration {
            anyhow::bail!(
                "--max-block-duration ({}) must be at least --block-duration ({})",
                duration_text(max_block_duration),
                duration_text(self.block_duration)
            );
        }
        if self.max_block_duration.is_some() && max_block_duration > self.retention {
            anyhow::bail!(
                "--max-block-duration ({}) must be at most --retention ({}): a block is deleted whole, so a longer one would keep its oldest samples for more than twice the retention",
                duration_text(max_block_duration),
                duration_text(self.retention)
            );
        }
        let flags = [
            ("listen", self.listen.to_string()),
            ("data-dir", self.data_dir.display().to_string()),
            ("az", self.az.clone()),
            ("peer-url", self.peer_url.clone().unwrap_or_default()),
            ("backfill-interval", duration_text(self.backfill_interval)),
            ("backfill-lookback", duration_text(self.backfill_lookback)),
            ("backfill-settle", duration_text(self.backfill_settle)),
            (
                "maintenance-interval",
                duration_text(self.maintenance_interval),
            ),
            ("block-duration", duration_text(self.block_duration)),
            ("max-block-duration", duration_text(max_block_duration)),
            ("retention", duration_text(self.retention)),
            (
                "out-of-order-window",
                duration_text(self.out_of_order_window),
            ),
            ("read-sample-limit", self.read_sample_limit.to_string()),
            ("query-timeout", duration_text(self.query_timeout)),
            ("query-max-samples", self.query_max_samples.to_string()),
            (
                "query-lookback-delta",
                duration_text(self.query_lookback_delta),
            ),
            (
                "rule-file",
                self.rule_files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "evaluation-interval",
                duration_text(self.evaluation_interval),
            ),
            ("alertmanager-url", self.alertmanager_urls.join(",")),
            ("rules-resend-delay", duration_text(self.rules_resend_delay)),
            (
                "notify-config",
                self.notify_config
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "notify-peer-check-interval",
                duration_text(self.notify_peer_check_interval),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.query_lookback_delta.is_zero() || self.query_timeout.is_zero() {
            anyhow::bail!("--query-lookback-delta and --query-timeout must be positive");
        }
        let backfill = match self.peer_url {
            Some(url) => {
                reqwest::Url::parse(&url).with_context(|| {
                    format!("--peer-url {url:?} is not a URL; use e.g. http://10.0.2.15:9301")
                })?;
                Some(BackfillConfig {
                    peer_url: url,
                    interval: self.backfill_interval,
                    lookback: self.backfill_lookback,
                    settle: self.backfill_settle,
                })
            }
            None => None,
        };
        for url in &self.alertmanager_urls {
            reqwest::Url::parse(url).with_context(|| {
                format!("--alertmanager-url {url:?} is not a URL; use e.g. http://127.0.0.1:9093")
            })?;
        }
        let mut external_labels = std::collections::BTreeMap::new();
        for pair in &self.external_labels {
            let (k, v) = pair.split_once('=').with_context(|| {
                format!(
                    "--external-label {pair:?} is not NAME=VALUE; use e.g. --external-label az=az-a"
                )
            })?;
            external_labels.insert(k.to_string(), v.to_string());
        }
        if self.evaluation_interval.is_zero() {
            anyhow::bail!("--evaluation-interval must be positive (default 1m)");
        }
        if self.notify_peer_check_interval.is_zero() {
            anyhow::bail!("--notify-peer-check-interval must be positive (default 5s)");
        }
        let ms = |d: std::time::Duration| d.as_millis() as i64;
        let rules = strata_central::rules::manager::RulesConfig {
            files: self.rule_files,
            evaluation_interval_ms: ms(self.evaluation_interval),
            external_url: self
                .external_url
                .unwrap_or_else(|| format!("http://{}", self.listen)),
            external_labels,
            resend_delay_ms: ms(self.rules_resend_delay),
            resolved_retention_ms: ms(self.rules_resolved_retention),
            outage_tolerance_ms: ms(self.rules_for_outage_tolerance),
            grace_period_ms: ms(self.rules_for_grace_period),
        };
        Ok(CentralConfig {
            listen: self.listen,
            storage: StorageOptions {
                data_dir: self.data_dir,
                block_duration: self.block_duration,
                retention: self.retention,
                out_of_order_window: self.out_of_order_window,
                wal_segment_bytes: 128 << 20,
                max_block_duration,
            },
            az: self.az,
            backfill,
            max_request_bytes: RelayConfig::DEFAULT_MAX_REQUEST_BYTES,
            max_decoded_bytes: RelayConfig::DEFAULT_MAX_DECODED_BYTES,
            read_sample_limit: self.read_sample_limit,
            maintenance_interval: self.maintenance_interval,
            query: strata_central::promql::Options {
                lookback_ms: self.query_lookback_delta.as_millis() as i64,
                max_samples: self.query_max_samples,
                timeout: self.query_timeout,
                ..Default::default()
            },
            flags,
            rules,
            notifier: strata_central::rules::notify::NotifierConfig {
                alertmanagers: self.alertmanager_urls,
                timeout: self.alertmanager_timeout,
                queue_capacity: self.alertmanager_queue_capacity,
            },
            notify_file: self.notify_config,
            notify_peer_check: self.notify_peer_check_interval,
        })
    }
}

/// A duration as Prometheus prints one (`60d`, `1d12h`, `2w`), for flags and messages.
fn duration_text(d: std::time::Duration) -> String {
    strata_wire::duration::format_duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Command::Demo(args) = &cli.command {
        // The demo's terminal shows its own health line; every component logs to a file.
        let log = args.log_file()?;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::sync::Mutex::new(log))
            .with_ansi(false)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Relay(args) => {
            let config = args.into_config()?;
            let dir = config.queue_dir.clone();
            runtime
                .block_on(strata_relay::server::run(config, shutdown_signal()))
                .with_context(|| format!("relay stopped with an error (queue {})", dir.display()))
        }
        Command::Edge(args) if args.check => {
            let config = strata_edge::config::Config::load(&args.config)?;
            println!(
                "{}: valid edge configuration: {} scrape configs, {} remote_write destinations",
                args.config.display(),
                config.scrape_configs.len(),
                config.remote_write.len()
            );
            Ok(())
        }
        Command::Edge(args) => {
            let opts = strata_edge::EdgeOptions {
                config: args.config,
                listen: args.listen,
                data_dir: args.data_dir,
                max_queue_bytes: args.max_queue_bytes,
            };
            runtime
                .block_on(strata_edge::run(opts, shutdown_signal()))
                .map_err(|e| anyhow::anyhow!("edge stopped: {e}"))
        }
        Command::Cascade(args) if args.check => {
            let config = strata_cascade::config::Config::load(&args.config)?;
            println!(
                "{}: valid cascade configuration: {} tokens, {} aggregation rules, {} upstreams",
                args.config.display(),
                config.auth.tokens.len(),
                config.stream_aggregation.rules.len(),
                config.remote_write.len()
            );
            Ok(())
        }
        Command::Cascade(args) => {
            let opts = strata_cascade::CascadeOptions {
                config: args.config,
                listen: args.listen,
                data_dir: args.data_dir,
            };
            let dir = opts.data_dir.clone();
            runtime
                .block_on(strata_cascade::run(opts, shutdown_signal()))
                .with_context(|| {
                    format!("cascade stopped with an error (queues {})", dir.display())
                })
        }
        Command::Central(args) => {
            let check = args.check;
            let config = args.into_config()?;
            if check {
                let receivers = match &config.notify_file {
                    Some(path) => {
                        strata_central::rules::route::NotifyConfig::load(path)
                            .map_err(|e| anyhow::anyhow!("--notify-config: {e}"))?
                            .receivers
                    }
                    None => Default::default(),
                };
                let groups =
                    strata_central::rules::manager::load(&config.rules).map_err(|errors| {
                        let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
                        anyhow::anyhow!("rule files have errors:\n  {}", reasons.join("\n  "))
                    })?;
                println!(
                    "valid central flags: az {}, listen {}, data {}, retention {}, blocks up to {}, {} rule groups, {} webhook receivers",
                    config.az,
                    config.listen,
                    config.storage.data_dir.display(),
                    duration_text(config.storage.retention),
                    duration_text(config.storage.max_block_duration),
                    groups.len(),
                    receivers.len()
                );
                return Ok(());
            }
            let dir = config.storage.data_dir.clone();
            runtime
                .block_on(strata_central::server::run(config, shutdown_signal()))
                .with_context(|| format!("central stopped with an error (data {})", dir.display()))
        }
        Command::Demo(args) => runtime.block_on(demo::run(args, shutdown_signal())),
        Command::Planner(cmd) => runtime.block_on(planner::run(cmd, shutdown_signal())),
        Command::Rules(cmd) => rules::run(cmd),
        Command::Sim(cmd) => runtime.block_on(sim::run(cmd, shutdown_signal())),
        Command::Bench(cmd) => runtime.block_on(bench::run(cmd)),
        Command::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            println!("remote-write: 1.0 and 2.0 (send, receive)");
            println!("remote-read: SAMPLES (serve as central, fetch for peer backfill)");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
