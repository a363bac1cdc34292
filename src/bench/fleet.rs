//! Fleet-shaped synthetic series for load tests: region → cell → cluster → instance labels,
//! about fifty metric names real exporters use, counters with noisy rates and occasional
//! resets, gauges as bounded random walks with a daily cycle, and one classic histogram
//! (`apiserver_request_duration_seconds_bucket`) whose buckets stay cumulative. Seeded: the same
//! seed gives the same series and values.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_wire::{Label, Sample, TimeSeries};

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// A classic histogram bucket with this upper bound (`le`).
    Bucket(f64),
}

const BUCKET: &str = "apiserver_request_duration_seconds_bucket";

/// (metric name, kind, job)
const METRICS: &[(&str, Kind, &str)] = &[
    ("node_cpu_seconds_total", Kind::Counter, "node"),
    ("node_memory_MemAvailable_bytes", Kind::Gauge, "node"),
    ("node_memory_MemTotal_bytes", Kind::Gauge, "node"),
    ("node_filesystem_avail_bytes", Kind::Gauge, "node"),
    ("node_network_receive_bytes_total", Kind::Counter, "node"),
    ("node_network_transmit_bytes_total", Kind::Counter, "node"),
    ("node_load1", Kind::Gauge, "node"),
    ("node_load5", Kind::Gauge, "node"),
    ("node_disk_read_bytes_total", Kind::Counter, "node"),
    ("node_disk_written_bytes_total", Kind::Counter, "node"),
    (
        "container_cpu_usage_seconds_total",
        Kind::Counter,
        "kubelet",
    ),
    ("container_memory_working_set_bytes", Kind::Gauge, "kubelet"),
    (
        "container_network_receive_bytes_total",
        Kind::Counter,
        "kubelet",
    ),
    ("container_fs_usage_bytes", Kind::Gauge, "kubelet"),
    ("kubelet_running_pods", Kind::Gauge, "kubelet"),
    ("kubelet_running_containers", Kind::Gauge, "kubelet"),
    ("kubelet_volume_stats_used_bytes", Kind::Gauge, "kubelet"),
    (
        "kubelet_pleg_relist_duration_seconds_count",
        Kind::Counter,
        "kubelet",
    ),
    ("apiserver_request_total", Kind::Counter, "apiserver"),
    (
        "apiserver_request_duration_seconds_sum",
        Kind::Counter,
        "apiserver",
    ),
    (
        "apiserver_request_duration_seconds_count",
        Kind::Counter,
        "apiserver",
    ),
    (BUCKET, Kind::Bucket(0.005), "apiserver"),
    (BUCKET, Kind::Bucket(0.01), "apiserver"),
    (BUCKET, Kind::Bucket(0.025), "apiserver"),
    (BUCKET, Kind::Bucket(0.05), "apiserver"),
    (BUCKET, Kind::Bucket(0.1), "apiserver"),
    (BUCKET, Kind::Bucket(0.25), "apiserver"),
    (BUCKET, Kind::Bucket(0.5), "apiserver"),
    (BUCKET, Kind::Bucket(1.0), "apiserver"),
    (BUCKET, Kind::Bucket(2.5), "apiserver"),
    (BUCKET, Kind::Bucket(f64::INFINITY), "apiserver"),
    (
        "apiserver_current_inflight_requests",
        Kind::Gauge,
        "apiserver",
    ),
    ("apiserver_storage_objects", Kind::Gauge, "apiserver"),
    ("apiserver_watch_events_total", Kind::Counter, "apiserver"),
    ("rest_client_requests_total", Kind::Counter, "apiserver"),
    ("workqueue_depth", Kind::Gauge, "apiserver"),
    ("workqueue_adds_total", Kind::Counter, "apiserver"),
    ("etcd_mvcc_db_total_size_in_bytes", Kind::Gauge, "etcd"),
    (
        "etcd_server_proposals_committed_total",
        Kind::Counter,
        "etcd",
    ),
    ("etcd_server_proposals_failed_total", Kind::Counter, "etcd"),
    (
        "etcd_disk_wal_fsync_duration_seconds_count",
        Kind::Counter,
        "etcd",
    ),
    (
        "etcd_disk_wal_fsync_duration_seconds_sum",
        Kind::Counter,
        "etcd",
    ),
    ("etcd_network_peer_sent_bytes_total", Kind::Counter, "etcd"),
    ("etcd_server_has_leader", Kind::Gauge, "etcd"),
    ("etcd_debugging_mvcc_keys_total", Kind::Gauge, "etcd"),
    ("kube_pod_status_phase", Kind::Gauge, "kube-state-metrics"),
    (
        "kube_node_status_allocatable",
        Kind::Gauge,
        "kube-state-metrics",
    ),
    (
        "kube_node_status_capacity",
        Kind::Gauge,
        "kube-state-metrics",
    ),
    (
        "kube_pod_container_resource_requests",
        Kind::Gauge,
        "kube-state-metrics",
    ),
    (
        "kube_deployment_status_replicas",
        Kind::Gauge,
        "kube-state-metrics",
    ),
    (
        "kube_namespace_status_phase",
        Kind::Gauge,
        "kube-state-metrics",
    ),
    ("kube_service_info", Kind::Gauge, "kube-state-metrics"),
    ("kube_node_info", Kind::Gauge, "kube-state-metrics"),
    ("process_cpu_seconds_total", Kind::Counter, "apiserver"),
    ("process_resident_memory_bytes", Kind::Gauge, "apiserver"),
    ("process_open_fds", Kind::Gauge, "apiserver"),
    ("go_goroutines", Kind::Gauge, "apiserver"),
    ("go_memstats_alloc_bytes", Kind::Gauge, "apiserver"),
    ("scrape_duration_seconds", Kind::Gauge, "node"),
    ("scrape_samples_scraped", Kind::Gauge, "node"),
];

const REGIONS: &[&str] = &[
    "cn-hangzhou",
    "cn-shanghai",
    "cn-beijing",
    "ap-southeast-1",
    "eu-central-1",
    "us-west-1",
];
const INSTANCES_PER_CLUSTER: usize = 4;
const CLUSTERS_PER_CELL: usize = 25;
const CELLS_PER_REGION: usize = 8;
const DAY_MS: f64 = 86_400_000.0;
/// Chance per interval that a counter's process restarts.
const RESET_PROBABILITY: f64 = 0.002;

/// One synthetic series and its evolving value.
pub struct Series {
    pub labels: Vec<Label>,
    kind: Kind,
    value: f64,
    /// Counters: increase per second. Gauges: the walk's range.
    rate: f64,
    low: f64,
    high: f64,
    rng: SmallRng,
    /// Seeds the randomness the buckets of one instance's histogram share, so that they rise
    /// and reset together and stay cumulative.
    instance_seed: u64,
}

/// A standard normal variate (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Series {
    fn new(i: usize, seed: u64) -> Self {
        let (name, kind, job) = METRICS[i % METRICS.len()];
        let instance = i / METRICS.len();
        let cluster = instance / INSTANCES_PER_CLUSTER;
        let cell = cluster / CLUSTERS_PER_CELL;
        let region = REGIONS[(cell / CELLS_PER_REGION) % REGIONS.len()];
        let mut labels = vec![
            Label::new("__name__", name),
            Label::new("cell", format!("{region}-c{:02}", cell % CELLS_PER_REGION)),
            Label::new("cluster", format!("k8s-{cluster:05}")),
            Label::new(
                "instance",
                format!(
                    "10.{}.{}.{}:9100",
                    (instance >> 16) & 255,
                    (instance >> 8) & 255,
                    instance & 255
                ),
            ),
            Label::new("job", job),
            Label::new("region", region),
        ];
        let mut rng =
            SmallRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let instance_seed = seed ^ (instance as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93);
        let magnitude = 10f64.powf(rng.random_range(0.0..9.0));
        let (value, rate) = match kind {
            Kind::Counter => (
                rng.random_range(0.0..magnitude),
                10f64.powf(rng.random_range(-1.0..3.0)),
            ),
            Kind::Gauge => (magnitude * rng.random_range(0.3..0.7), 0.0),
            Kind::Bucket(le) => {
                labels.insert(
                    5,
                    Label::new(
                        "le",
                        if le.is_infinite() {
                            "+Inf".into()
                        } else {
                            le.to_string()
                        },
                    ),
                );
                // Latencies follow a log-logistic distribution around a per-instance median.
                let mut shared = SmallRng::seed_from_u64(instance_seed);
                let median = 10f64.powf(shared.random_range(-2.0..-0.5));
                let requests_per_second = 10f64.powf(shared.random_range(0.0..2.5));
                let start = shared.random_range(0.0..1e6);
                let fraction = 1.0 / (1.0 + (median / le).powf(1.7));
                (start * fraction, requests_per_second * fraction)
            }
        };
        Series {
            labels,
            kind,
            value,
            rate,
            low: 0.0,
            high: magnitude,
            rng,
            instance_seed,
        }
    }

    /// Advances by `interval_s` and returns the sample at `t_ms`.
    fn step(&mut self, t_ms: i64, interval_s: f64) -> Sample {
        match self.kind {
            Kind::Counter => {
                if self.rng.random_bool(RESET_PROBABILITY) {
                    self.value = 0.0;
                } else {
                    let noisy = self.rate * (1.0 + 0.2 * normal(&mut self.rng)).max(0.0);
                    self.value += noisy * interval_s;
                }
                Sample {
                    value: self.value.round(),
                    timestamp: t_ms,
                }
            }
            Kind::Bucket(_) => {
                let mut shared = SmallRng::seed_from_u64(
                    self.instance_seed ^ (t_ms as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                if shared.random_bool(RESET_PROBABILITY) {
                    self.value = 0.0;
                } else {
                    self.value +=
                        self.rate * (1.0 + 0.2 * normal(&mut shared)).max(0.0) * interval_s;
                }
                Sample {
                    value: self.value.round(),
                    timestamp: t_ms,
                }
            }
            Kind::Gauge => {
                let span = self.high - self.low;
                self.value =
                    (self.value + 0.01 * span * normal(&mut self.rng)).clamp(self.low, self.high);
                let daily = 0.1 * span * (2.0 * std::f64::consts::PI * t_ms as f64 / DAY_MS).sin();
                let v = (self.value + daily).clamp(self.low, self.high);
                Sample {
                    value: (v * 1000.0).round() / 1000.0,
                    timestamp: t_ms,
                }
            }
        }
    }
}

/// `n` fleet-shaped series from `seed`.
pub fn series(n: usize, seed: u64) -> Vec<Series> {
    (0..n).map(|i| Series::new(i, seed)).collect()
}

/// One interval of samples, one per series, as time series in `series` order.
pub fn interval(series: &mut [Series], t_ms: i64, interval_s: f64) -> Vec<TimeSeries> {
    series
        .iter_mut()
        .map(|s| TimeSeries {
            labels: s.labels.clone(),
            samples: vec![s.step(t_ms, interval_s)],
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_wire::LabelSet;

    #[test]
    fn reproducible_and_valid() {
        let mut a = series(500, 7);
        let mut b = series(500, 7);
        let ia = interval(&mut a, 1_000, 15.0);
        let ib = interval(&mut b, 1_000, 15.0);
        assert_eq!(ia, ib);
        for ts in &ia {
            LabelSet::new(ts.labels.clone()).unwrap();
        }
        let names: std::collections::HashSet<_> =
            ia.iter().map(|t| t.labels[0].value.clone()).collect();
        let metric_names: std::collections::HashSet<_> = METRICS.iter().map(|m| m.0).collect();
        assert_eq!(names.len(), metric_names.len());
        let ids: std::collections::HashSet<_> =
            ia.iter().map(|t| format!("{:?}", t.labels)).collect();
        assert_eq!(ids.len(), 500, "every series is distinct");
    }

    #[test]
    fn counters_only_fall_on_reset_and_gauges_stay_bounded() {
        let mut s = series(METRICS.len() * 4, 1);
        let mut prev = interval(&mut s, 0, 15.0);
        let mut resets = 0;
        for t in 1..2000 {
            let cur = interval(&mut s, t * 15_000, 15.0);
            for (i, (p, c)) in prev.iter().zip(&cur).enumerate() {
                match s[i].kind {
                    Kind::Counter | Kind::Bucket(_) if c.samples[0].value < p.samples[0].value => {
                        assert_eq!(c.samples[0].value, 0.0);
                        resets += 1;
                    }
                    Kind::Gauge => assert!(
                        c.samples[0].value >= s[i].low && c.samples[0].value <= s[i].high * 1.001
                    ),
                    Kind::Counter | Kind::Bucket(_) => {}
                }
            }
            // Buckets are cumulative: each holds at least as much as the one before it.
            for (i, (c, next)) in cur.iter().zip(&cur[1..]).enumerate() {
                if let (Kind::Bucket(_), Kind::Bucket(le)) = (s[i].kind, s[i + 1].kind) {
                    assert!(
                        next.samples[0].value >= c.samples[0].value,
                        "bucket le={le} below its predecessor"
                    );
                }
            }
            prev = cur;
        }
        assert!(resets > 0, "occasional resets happen");
    }
}
