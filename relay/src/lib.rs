//! strata-relay: store and forward between hops of the strata pipeline.
//!
//! Edges and cascades never hold accepted data only in memory: every batch goes into a durable,
//! segmented on-disk [`queue`] per destination before it is acknowledged, and a remote-write
//! [`sender`] drains that queue to the next hop (a cascade, a central, or any Prometheus
//! remote-write receiver), deleting a batch only after the receiver answered 2xx. [`server`] is
//! the standalone hop `strata relay` (receive → queue → forward) that cascades build on.

pub mod config;
pub mod error;
pub mod metrics;
pub mod queue;
pub mod relabel;
pub mod remote_write;
pub mod sender;
pub mod server;
pub mod tls;

pub use config::{OverflowPolicy, QueueConfig, RelayConfig, SenderConfig};
pub use error::{Error, Result};
pub use queue::Queue;
