//! strata-planner: tells operators when to split a cell and when to resize a customer cluster.
//!
//! It reads any Prometheus-compatible query API ([`source`]) — strata central, Prometheus,
//! VictoriaMetrics, Thanos, Mimir — and never depends on the store: it asks for aggregates
//! (daily and hourly means, daily peaks) so its cost grows with the fleet, not the history.
//! The fleet is region → cell (meta cluster) → customer cluster, from the `region`, `cell` and
//! `cluster` labels; [`config`] says which PromQL gives each cell resource and its limit.
//! [`forecast`] fits trend, weekly and daily cycles and change points, and gives time to a
//! threshold as p10 / p50 / p90.

pub mod config;
pub mod error;
pub mod forecast;
pub mod source;

pub use config::PlannerConfig;
pub use error::{Error, Result};
