//! Self-metrics of the simulator's exporter, named `strata_sim_*`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: &'static str,
}

#[derive(Debug, Clone)]
pub struct SimMetrics {
    scrapes: Family<JobLabel, Counter>,
    samples: Family<JobLabel, Counter>,
    duration: Family<JobLabel, Histogram, fn() -> Histogram>,
    sd_requests: Counter,
    hosted_clusters: Gauge,
    counters: Gauge,
}

impl SimMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            scrapes: Family::default(),
            samples: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 4.0, 8))
            }),
            sd_requests: Counter::default(),
            hosted_clusters: Gauge::default(),
            counters: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_sim");
        r.register(
            "scrapes",
            "Exporter pages served, by job",
            m.scrapes.clone(),
        );
        r.register(
            "scraped_samples",
            "Samples on the exporter pages served, by job",
            m.samples.clone(),
        );
        r.register(
            "scrape_duration_seconds",
            "Time to render an exporter page, by job",
            m.duration.clone(),
        );
        r.register(
            "sd_requests",
            "HTTP service discovery requests answered",
            m.sd_requests.clone(),
        );
        r.register(
            "hosted_clusters",
            "Customer clusters onboarded in the whole fleet now",
            m.hosted_clusters.clone(),
        );
        r.register(
            "counter_states",
            "Counter groups whose running integrals the exporter holds",
            m.counters.clone(),
        );
        m
    }

    pub fn page(&self, job: &'static str, samples: usize, took: Duration) {
        let label = JobLabel { job };
        self.scrapes.get_or_create(&label).inc();
        self.samples.get_or_create(&label).inc_by(samples as u64);
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    pub fn sd_request(&self) {
        self.sd_requests.inc();
    }

    pub fn set_state(&self, hosted_clusters: usize, counter_states: usize) {
        self.hosted_clusters.set(hosted_clusters as i64);
        self.counters.set(counter_states as i64);
    }
}
