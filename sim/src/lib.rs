//! strata-sim: a simulated fleet that behaves like a real one, for demos, tests and the planner.
//!
//! A fleet is regions → cells (meta clusters) → customer clusters whose control planes the cells
//! host ([`model`]). Every value the fleet shows is a pure function of the seed, the fleet's
//! sizes and the time: growth (linear, exponential or logistic), daily and weekly cycles, a
//! large tenant onboarding as a step, noise, and counter resets when processes restart. The
//! same function serves live exporter pages ([`server`], scraped by `strata edge`), writes
//! history through remote-write ([`backfill`]), and says when each cell resource will really
//! cross a utilisation ([`truth`]). [`page`] holds the metric families, named as the real
//! exporters name them (node exporter, cAdvisor, kube-state-metrics, kube-apiserver, etcd,
//! Calico IPAM, the AWS VPC CNI, HyperShift).

pub mod backfill;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod page;
pub mod server;
pub mod truth;

pub use config::FleetConfig;
pub use error::{Error, Result};
pub use model::Fleet;
