//! Self-metrics of the relay, one set per destination (label `destination`), named
//! `strata_relay_*`. This is the core set every hop exposes: received, sent, retried, dropped by
//! reason, pending bytes and samples, send latency, highest sent timestamp.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Why samples were dropped. Bounded: these are the only values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `drop_oldest` made room in a full queue.
    QueueFull,
    /// The receiver answered a non-retryable 4xx.
    Rejected,
    /// Older than `sample_age_limit_seconds`.
    TooOld,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::QueueFull,
        DropReason::Rejected,
        DropReason::TooOld,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Rejected => "rejected",
            DropReason::TooOld => "too_old",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The metrics of one destination.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    pub samples_enqueued: Counter,
    pub samples_sent: Counter,
    pub samples_retried: Counter,
    dropped: Family<ReasonLabel, Counter>,
    pub requests_failed: Counter,
    pub pending_bytes: Gauge,
    pub pending_samples: Gauge,
    pub corrupt_bytes: Counter,
    pub send_duration: Histogram,
    pub highest_sent_timestamp: Gauge<f64, AtomicU64>,
}

impl RelayMetrics {
    /// Creates the metrics of `destination` and registers them in `registry`.
    pub fn register(registry: &mut Registry, destination: &str) -> Self {
        let m = Self {
            samples_enqueued: Counter::default(),
            samples_sent: Counter::default(),
            samples_retried: Counter::default(),
            dropped: Family::default(),
            requests_failed: Counter::default(),
            pending_bytes: Gauge::default(),
            pending_samples: Gauge::default(),
            corrupt_bytes: Counter::default(),
            send_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            highest_sent_timestamp: Gauge::default(),
        };
        let r = registry
            .sub_registry_with_prefix("strata_relay")
            .sub_registry_with_label(("destination".into(), destination.to_string().into()));
        r.register(
            "samples_enqueued",
            "Samples (with histograms and exemplars) accepted into the durable queue",
            m.samples_enqueued.clone(),
        );
        r.register(
            "samples_sent",
            "Samples delivered to the destination (answered 2xx)",
            m.samples_sent.clone(),
        );
        r.register(
            "samples_retried",
            "Samples in requests that failed with 5xx, 429 or a connection error and were retried",
            m.samples_retried.clone(),
        );
        r.register(
            "samples_dropped",
            "Samples given up on, by reason (queue_full, rejected, too_old)",
            m.dropped.clone(),
        );
        r.register(
            "requests_failed",
            "Send attempts that did not get a 2xx",
            m.requests_failed.clone(),
        );
        r.register(
            "queue_pending_bytes",
            "Bytes on disk not yet delivered",
            m.pending_bytes.clone(),
        );
        r.register(
            "queue_pending_samples",
            "Samples on disk not yet delivered",
            m.pending_samples.clone(),
        );
        r.register(
            "queue_corrupt_bytes",
            "Bytes of queue segments found corrupt on start and skipped",
            m.corrupt_bytes.clone(),
        );
        r.register(
            "send_duration_seconds",
            "Duration of one remote-write request",
            m.send_duration.clone(),
        );
        r.register(
            "highest_sent_timestamp_seconds",
            "Newest sample timestamp delivered to the destination",
            m.highest_sent_timestamp.clone(),
        );
        // Every reason is exported from the start, at zero, so dashboards and alerts see
        // the series before the first drop (Prometheus's instrumentation guidelines).
        for reason in DropReason::ALL {
            m.dropped(reason, 0);
        }
        m
    }

    /// Counts `n` samples dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Samples dropped so far for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
