//! strata-cascade: the regional aggregator between the edges of a region and the centrals.
//!
//! Edges of hundreds of cells remote-write into a cascade; it checks each sender's token and
//! labels ([`auth`]), holds every cell to its limits ([`limits`]), aggregates streams into
//! fewer series ([`aggregate`]), and fans the result out to N upstreams — the two AZs of the
//! central store, or another cascade — each through its own durable relay queue
//! ([`fanout`]). [`server`] is `strata cascade` itself; [`config`] its file.

pub mod aggregate;
pub mod aggregation_log;
pub mod auth;
pub mod config;
pub mod error;
pub mod fanout;
pub mod limits;
pub mod metrics;
pub mod server;

pub use error::{Error, Result};
pub use server::{CascadeOptions, run};
