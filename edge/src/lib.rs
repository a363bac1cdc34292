//! The strata edge: scrapes the targets of one cell with a Prometheus scrape configuration
//! and forwards the samples over remote-write through the relay's durable queues.
//!
//! - `config`: the Prometheus configuration format, read strictly.
//! - `discovery`: target groups from files (`file_sd_configs`).
//! - `relabel`: Prometheus's relabelling (from the relay, which shares it with cascades), for
//!   `relabel_configs`, `metric_relabel_configs` and `write_relabel_configs`.
//! - `target`: scrape targets from discovered label sets, relabelled as Prometheus does.
//! - `scrape`: the scrape loop of one target: staleness, synthetic series, limits.
//! - `jobs`: one task per job keeps discovery and the scrape loops in step.
//! - `forward`: scraped series into one durable relay queue per `remote_write`.
//! - `server`: `strata edge` itself: reload, `/api/v1/targets`, `/metrics`, health.

pub mod config;
pub mod discovery;
pub mod forward;
pub mod jobs;
pub mod scrape;
pub mod server;
pub mod target;

pub use strata_relay::relabel;

pub use server::{EdgeOptions, run};
