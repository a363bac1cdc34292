//! The strata edge: scrapes the targets of one cell with a Prometheus scrape configuration
//! and forwards the samples over remote-write through the relay's durable queues.
//!
//! - `config`: the Prometheus configuration format, read strictly.
//! - `discovery`: target groups from files (`file_sd_configs`).
//! - `relabel`: Prometheus's relabelling, for `relabel_configs`, `metric_relabel_configs`
//!   and `write_relabel_configs`.
//! - `target`: scrape targets from discovered label sets, relabelled as Prometheus does.

pub mod config;
pub mod discovery;
pub mod relabel;
pub mod target;
