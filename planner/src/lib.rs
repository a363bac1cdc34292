//! strata-planner: tells operators when to split a cell and when to resize a customer cluster.
//!
//! It reads any Prometheus-compatible query API ([`source`]) — strata central, Prometheus,
//! VictoriaMetrics, Thanos, Mimir — and never depends on the store: it asks for aggregates
//! (daily and hourly means, daily peaks) so its cost grows with the fleet, not the history.
//! The fleet is region → cell (meta cluster) → customer cluster, from the `region`, `cell` and
//! `cluster` labels; [`config`] says which PromQL gives each cell resource and its limit.
//! [`forecast`] fits trend, weekly and daily cycles and change points, and gives time to a
//! threshold as p10 / p50 / p90.

//! [`scan`] reads the fleet, [`plan`] turns forecasts into split and resize decisions with
//! their evidence, [`render`] prints them, and [`backtest`] scores forecasts against what
//! happened.

pub mod backtest;
pub mod chart;
pub mod config;
pub mod error;
pub mod forecast;
pub mod notify;
pub mod plan;
pub mod render;
pub mod scan;
pub mod serve;
pub mod source;

pub use config::PlannerConfig;
pub use error::{Error, Result};
pub use plan::{Forecasted, Report};
pub use source::Source;

/// Reads the fleet from `source` as of `now_ms`, forecasts every cell resource and decides.
pub async fn report(
    source: &Source,
    config: &PlannerConfig,
    now_ms: i64,
    progress: impl FnMut(scan::Progress),
) -> Result<(Report, Vec<Forecasted>)> {
    let observed = scan::scan(source, config, now_ms, progress).await?;
    let forecasts = plan::forecast_all(config, &observed);
    let report = plan::plan(config, &observed, &forecasts, source.url(), source.stats());
    Ok((report, forecasts))
}
