//! strata-wire: the protocol types every hop of the strata pipeline speaks.
//!
//! Edges scrape targets in the Prometheus exposition format ([`exposition`]) and forward
//! remote-write ([`prompb`] for 1.0, [`v2`] for 2.0, both snappy block compressed via
//! [`snappy`]) through cascades to the centrals, which answer remote-read ([`prompb`]) and the
//! Prometheus HTTP API ([`api`]). Series identity is a validated, sorted [`LabelSet`] with a
//! stable fingerprint ([`labels`]); [`validate`] implements the partial-acceptance rule every
//! receiver shares, and [`view`] decodes a write without copying its strings, for stores. This crate does no I/O and never panics on bytes from the network.
//!
//! ```
//! use strata_wire::{Label, LabelSet, Sample, TimeSeries, WriteRequest, validate::Validated};
//!
//! let req = WriteRequest {
//!     timeseries: vec![TimeSeries {
//!         labels: vec![Label::new("job", "node"), Label::new("__name__", "up")],
//!         samples: vec![Sample { value: 1.0, timestamp: 1_700_000_000_000 }],
//!         ..Default::default()
//!     }],
//!     metadata: vec![],
//! };
//! // A remote-write 1.0 body: protobuf, snappy block compressed.
//! let body = req.encode_snappy()?;
//! // Receivers bound the decoded size to refuse decompression bombs.
//! let decoded = WriteRequest::decode_snappy(&body, 32 << 20)?;
//! let checked = Validated::split(decoded);
//! assert!(checked.rejected.is_empty());
//! let series = LabelSet::new(checked.accepted.timeseries[0].labels.clone())?;
//! assert_eq!(series.to_string(), r#"up{job="node"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod alert;
pub mod api;
pub mod clock;
pub mod duration;
pub mod error;
pub mod expose;
pub mod exposition;
pub mod labels;
pub mod prompb;
pub mod protocol;
pub mod raw;
pub mod snappy;
pub mod stale;
pub mod v2;
pub mod validate;
pub mod view;

pub use error::{Error, Result};
pub use labels::{LabelError, LabelSet};
pub use prompb::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
pub use stale::{STALE_NAN_BITS, is_stale_nan, stale_nan};
