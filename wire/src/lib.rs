//! strata-wire: the protocol types every hop of the strata pipeline speaks.
//!
//! Edges scrape targets in the Prometheus exposition format ([`exposition`]) and forward
//! remote-write ([`prompb`] for 1.0, [`v2`] for 2.0, both snappy block compressed via
//! [`snappy`]) through cascades to the centrals, which answer remote-read ([`prompb`]) and the
//! Prometheus HTTP API ([`api`]). Series identity is a validated, sorted [`LabelSet`] with a
//! stable fingerprint ([`labels`]); [`validate`] implements the partial-acceptance rule every
//! receiver shares. This crate does no I/O and never panics on bytes from the network.

pub mod api;
pub mod error;
pub mod exposition;
pub mod labels;
pub mod prompb;
pub mod protocol;
pub mod snappy;
pub mod stale;
pub mod v2;
pub mod validate;

pub use error::{Error, Result};
pub use labels::{LabelError, LabelSet};
pub use prompb::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
pub use stale::{STALE_NAN_BITS, is_stale_nan, stale_nan};
