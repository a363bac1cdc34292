//! Self-metrics of the cascade, named `strata_cascade_*`. The upstream queues and senders
//! export the relay's core set (`strata_relay_*{destination}`) in the same registry.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why samples of a request were not written. Bounded: these are the only values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Invalid series (400).
    Invalid,
    /// Series outside the sender's labels (403).
    Forbidden,
    /// The cell is over its samples-per-second limit (429).
    RateLimited,
    /// New series over the cell's active-series limit (429).
    SeriesLimit,
    /// An upstream queue was full (429).
    QueueFull,
    /// An upstream queue could not write (503).
    Unavailable,
}

impl Reject {
    const ALL: [Reject; 6] = [
        Reject::Invalid,
        Reject::Forbidden,
        Reject::RateLimited,
        Reject::SeriesLimit,
        Reject::QueueFull,
        Reject::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reject::Invalid => "invalid",
            Reject::Forbidden => "forbidden",
            Reject::RateLimited => "rate_limited",
            Reject::SeriesLimit => "series_limit",
            Reject::QueueFull => "queue_full",
            Reject::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SenderLabel {
    sender: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CellLabel {
    cell: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

/// The cascade's own metrics.
#[derive(Debug, Clone)]
pub struct CascadeMetrics {
    requests: Family<CodeLabel, Counter>,
    received: Family<SenderLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    duration: Family<CodeLabel, Histogram, fn() -> Histogram>,
    active_series: Family<CellLabel, Gauge>,
    aggregation_samples: Family<RuleLabel, Counter>,
    aggregation_late: Family<RuleLabel, Counter>,
    aggregation_future: Family<RuleLabel, Counter>,
    aggregation_emitted: Family<RuleLabel, Counter>,
    aggregation_groups: Family<RuleLabel, Gauge>,
    pub aggregation_not_queued: Counter,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl CascadeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            received: Family::default(),
            rejected: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            active_series: Family::default(),
            aggregation_samples: Family::default(),
            aggregation_late: Family::default(),
            aggregation_future: Family::default(),
            aggregation_emitted: Family::default(),
            aggregation_groups: Family::default(),
            aggregation_not_queued: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_cascade");
        r.register(
            "write_requests",
            "Remote-write requests answered, by HTTP status code",
            m.requests.clone(),
        );
        r.register(
            "write_request_duration_seconds",
            "Time to answer a remote-write request, including making it durable upstream",
            m.duration.clone(),
        );
        r.register(
            "samples_received",
            "Samples (with histograms and exemplars) accepted and made durable, by sender (token name, or anonymous)",
            m.received.clone(),
        );
        r.register(
            "samples_rejected",
            "Samples not written, by reason (invalid, forbidden, rate_limited, series_limit, queue_full, unavailable)",
            m.rejected.clone(),
        );
        r.register(
            "active_series",
            "Series seen within the idle timeout, per cell with an active-series limit",
            m.active_series.clone(),
        );
        r.register(
            "aggregation_input_samples",
            "Samples taken into stream aggregation, by rule (its index in the configuration)",
            m.aggregation_samples.clone(),
        );
        r.register(
            "aggregation_late_samples",
            "Samples that arrived after their window was emitted and were left out, by rule",
            m.aggregation_late.clone(),
        );
        r.register(
            "aggregation_future_samples",
            "Samples too far ahead of the cascade's clock, left out, by rule",
            m.aggregation_future.clone(),
        );
        r.register(
            "aggregation_output_samples",
            "Aggregated samples (staleness markers included) written upstream, by rule",
            m.aggregation_emitted.clone(),
        );
        r.register(
            "aggregation_open_groups",
            "Output series with a window still open, by rule",
            m.aggregation_groups.clone(),
        );
        r.register(
            "aggregation_output_not_queued",
            "Aggregated samples that could not be written to the upstream queues in time and were dropped",
            m.aggregation_not_queued.clone(),
        );
        // Every reason is exported from the start, at zero (Prometheus's instrumentation
        // guidelines), so a rate over it works before the first rejection.
        for reason in Reject::ALL {
            m.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(0);
        }
        m
    }

    pub fn request(&self, code: u16, took: Duration) {
        self.requests.get_or_create(&CodeLabel { code }).inc();
        self.duration
            .get_or_create(&CodeLabel { code })
            .observe(took.as_secs_f64());
    }

    pub fn received(&self, sender: &str, n: u64) {
        if n > 0 {
            self.received
                .get_or_create(&SenderLabel {
                    sender: sender.to_string(),
                })
                .inc_by(n);
        }
    }

    pub fn rejected(&self, reason: Reject, n: u64) {
        if n > 0 {
            self.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(n);
        }
    }

    pub fn active_series(&self, cell: &str, n: usize) {
        self.active_series
            .get_or_create(&CellLabel {
                cell: cell.to_string(),
            })
            .set(n as i64);
    }

    /// Brings the aggregation counters of `rule` up to the aggregator's totals.
    pub fn aggregation(
        &self,
        rule: usize,
        samples: u64,
        late: u64,
        future: u64,
        emitted: u64,
        groups: usize,
    ) {
        let label = RuleLabel {
            rule: rule.to_string(),
        };
        for (family, total) in [
            (&self.aggregation_samples, samples),
            (&self.aggregation_late, late),
            (&self.aggregation_future, future),
            (&self.aggregation_emitted, emitted),
        ] {
            let c = family.get_or_create(&label);
            c.inc_by(total.saturating_sub(c.get()));
        }
        self.aggregation_groups
            .get_or_create(&label)
            .set(groups as i64);
    }
}
