//! From scrape loops to the remote-write destinations: one durable relay queue per
//! `remote_write`, drained by the relay's sender.
//!
//! The forwarder takes whatever batches the scrape loops have handed over since its last
//! write and appends them as one record to every destination's queue, so a busy edge makes
//! one disk sync per destination for many scrapes. The scrape loops have already added the
//! external labels (to series that lack them, as Prometheus's queue manager does); each
//! destination's `write_relabel_configs` run here.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use strata_relay::metrics::RelayMetrics;
use strata_relay::remote_write;
use strata_relay::{OverflowPolicy, Queue, QueueConfig};
use strata_wire::{MetricMetadata, WriteRequest, snappy};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::RemoteWriteConfig;
use crate::jobs::Views;
use crate::relabel::Rule;
use crate::scrape::Encoded;

/// Samples per queue record at most; more pending batches wait for the next record.
const RECORD_SAMPLES: u64 = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

/// One `remote_write` destination: its queue and how series are prepared for it.
#[derive(Debug)]
pub struct Destination {
    pub name: String,
    pub queue: Queue,
    pub metrics: RelayMetrics,
    rules: Vec<Rule>,
    metadata: Option<MetadataSend>,
}

/// `metadata_config` of a destination that sends metadata.
#[derive(Debug, Clone, Copy)]
struct MetadataSend {
    interval: Duration,
    per_request: usize,
}

/// Prometheus's `metadata_config` defaults: send every minute, 500 entries per request.
/// Metadata travels in 1.0 requests only (2.0 carries it per series), so a 2.0 destination
/// gets none.
fn metadata_send(rw: &RemoteWriteConfig) -> Option<MetadataSend> {
    let m = &rw.metadata_config;
    (m.send.unwrap_or(true) && !rw.is_v2()).then(|| MetadataSend {
        interval: m.send_interval.map_or(Duration::from_secs(60), |d| d.0),
        per_request: m.max_samples_per_send.unwrap_or(500).max(1),
    })
}

/// A queue record for one destination: the snappy-compressed payload and its item count.
type Prepared = (Arc<Vec<u8>>, u64);

/// Where the forwarder writes: the destinations of the running configuration.
#[derive(Debug, Default)]
pub struct Outputs {
    pub destinations: Vec<Arc<Destination>>,
}

impl Destination {
    /// Opens the destination's queue in `dir` (see [`remote_write::queue_dir`]), recovering what a
    /// previous run left in it.
    pub fn open(
        rw: &RemoteWriteConfig,
        name: &str,
        dir: &Path,
        max_queue_bytes: u64,
        metrics: RelayMetrics,
    ) -> Result<Self, String> {
        let config = QueueConfig {
            max_queue_bytes,
            // An edge cannot push back on its targets: when a destination is down for
            // longer than the queue holds, the oldest data goes first.
            overflow: OverflowPolicy::DropOldest,
            ..QueueConfig::default()
        };
        let queue = Queue::open(dir, config, metrics.clone())
            .map_err(|e| format!("remote_write {name}: cannot open its queue: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            queue,
            metrics,
            rules: rw.write_relabel_configs.clone(),
            metadata: metadata_send(rw),
        })
    }

    /// The destination with a reloaded section: the same queue, the new relabelling.
    pub fn reuse(old: &Destination, rw: &RemoteWriteConfig) -> Self {
        Self {
            name: old.name.clone(),
            queue: old.queue.clone(),
            metrics: old.metrics.clone(),
            rules: rw.write_relabel_configs.clone(),
            metadata: metadata_send(rw),
        }
    }

    /// The batch as this destination gets it: a queue record (snappy-compressed) and its item
    /// count, after the destination's `write_relabel_configs`. Without rules it is `plain`,
    /// the scraped bytes compressed once for every such destination; with rules the batch is
    /// decoded, relabelled and encoded again.
    fn prepare(
        &self,
        batch: &Encoded,
        plain: Option<&Arc<Vec<u8>>>,
    ) -> Result<Option<Prepared>, strata_wire::Error> {
        if self.rules.is_empty() {
            let payload = match plain {
                Some(p) => p.clone(),
                None => Arc::new(snappy::compress(&batch.body)?),
            };
            return Ok(Some((payload, batch.items)));
        }
        Ok(remote_write::relabel_body(&batch.body, &self.rules)?
            .map(|(payload, items)| (Arc::new(payload), items)))
    }
}

/// What the forwarder could and could not queue, per destination.
#[derive(Debug, Clone, Default)]
pub struct ForwardMetrics {
    samples_not_queued: Family<DestinationLabel, Counter>,
    metadata_queued: Family<DestinationLabel, Counter>,
    metadata_not_queued: Family<DestinationLabel, Counter>,
}

impl ForwardMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "strata_edge_samples_not_queued",
            "Scraped samples that could not be written to a destination's queue (disk failure, or a batch larger than the queue)",
            m.samples_not_queued.clone(),
        );
        registry.register(
            "strata_edge_metadata_queued",
            "Metric metadata entries queued for a destination (metadata_config)",
            m.metadata_queued.clone(),
        );
        registry.register(
            "strata_edge_metadata_not_queued",
            "Metric metadata entries that could not be written to a destination's queue",
            m.metadata_not_queued.clone(),
        );
        m
    }

    /// Exports `destination`'s counters at zero before anything happens to it.
    pub fn add_destination(&self, destination: &str) {
        for family in [
            &self.samples_not_queued,
            &self.metadata_queued,
            &self.metadata_not_queued,
        ] {
            Self::count(family, destination, 0);
        }
    }

    fn count(family: &Family<DestinationLabel, Counter>, destination: &str, n: u64) {
        family
            .get_or_create(&DestinationLabel {
                destination: destination.to_string(),
            })
            .inc_by(n);
    }
}

/// Appends what the scrape loops send to every destination. When `stop` fires it writes
/// what is already handed over, then returns.
pub async fn run(
    mut batches: mpsc::Receiver<Encoded>,
    outputs: watch::Receiver<Arc<Outputs>>,
    views: Views,
    metrics: ForwardMetrics,
    mut stop: oneshot::Receiver<()>,
) {
    let mut stopping = false;
    let mut metadata_tick = tokio::time::interval(Duration::from_secs(1));
    metadata_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut metadata_due: HashMap<String, Instant> = HashMap::new();
    loop {
        let mut batch = tokio::select! {
            batch = batches.recv() => match batch {
                Some(b) => b,
                None => return,
            },
            _ = metadata_tick.tick(), if !stopping => {
                let out = outputs.borrow().clone();
                send_metadata(&out, &views, &mut metadata_due, &metrics).await;
                continue;
            }
            _ = &mut stop, if !stopping => {
                // Buffered batches are still received; then `recv` answers None.
                batches.close();
                stopping = true;
                continue;
            }
        };
        while batch.items < RECORD_SAMPLES {
            match batches.try_recv() {
                Ok(more) => batch.append(&more),
                Err(_) => break,
            }
        }
        let batch = Arc::new(batch);
        let out = outputs.borrow().clone();
        // Compressed once, shared by every destination without write relabelling; when that
        // fails each such destination reports it.
        let plain = if out.destinations.iter().any(|d| d.rules.is_empty()) {
            snappy::compress(&batch.body).ok().map(Arc::new)
        } else {
            None
        };
        let mut writes = tokio::task::JoinSet::new();
        for dest in &out.destinations {
            let dest = dest.clone();
            let metrics = metrics.clone();
            let batch = batch.clone();
            let plain = plain.clone();
            writes.spawn(async move {
                let written = match dest.prepare(&batch, plain.as_ref()) {
                    Ok(Some((payload, items))) => dest
                        .queue
                        .append_payload(&payload, items)
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = written {
                    tracing::error!(destination = %dest.name, error = %e, "cannot queue scraped samples");
                    ForwardMetrics::count(&metrics.samples_not_queued, &dest.name, batch.items);
                    // A failing disk: give it a moment rather than spinning on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        while writes.join_next().await.is_some() {}
    }
}

/// Every distinct metadata entry of the active targets, by family.
fn collect_metadata(views: &Views) -> Vec<MetricMetadata> {
    let mut all = BTreeSet::new();
    let views = views.read().unwrap_or_else(|e| e.into_inner());
    for view in views.values() {
        for (_, status) in &view.active {
            let metadata = status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .metadata
                .clone();
            all.extend(metadata.iter().map(|m| {
                (
                    m.metric_family_name.clone(),
                    m.r#type,
                    m.help.clone(),
                    m.unit.clone(),
                )
            }));
        }
    }
    all.into_iter()
        .map(|(metric_family_name, r#type, help, unit)| MetricMetadata {
            r#type,
            metric_family_name,
            help,
            unit,
        })
        .collect()
}

/// Queues the targets' metadata for every destination whose `send_interval` has passed, as
/// Prometheus's metadata watcher sends it: separate 1.0 requests of metadata entries.
async fn send_metadata(
    out: &Outputs,
    views: &Views,
    due: &mut HashMap<String, Instant>,
    metrics: &ForwardMetrics,
) {
    let now = Instant::now();
    let mut metadata = None;
    for dest in &out.destinations {
        let Some(send) = dest.metadata else {
            continue;
        };
        let next = due.entry(dest.name.clone()).or_insert(now + send.interval);
        if now < *next {
            continue;
        }
        *next = now + send.interval;
        let metadata = metadata.get_or_insert_with(|| collect_metadata(views));
        for chunk in metadata.chunks(send.per_request) {
            let request = WriteRequest {
                timeseries: Vec::new(),
                metadata: chunk.to_vec(),
            };
            let written = match request.encode_snappy() {
                Ok(payload) => dest
                    .queue
                    .append_payload(&payload, 0)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let n = chunk.len() as u64;
            match written {
                Ok(()) => ForwardMetrics::count(&metrics.metadata_queued, &dest.name, n),
                Err(e) => {
                    tracing::error!(destination = %dest.name, error = %e, "cannot queue metric metadata");
                    ForwardMetrics::count(&metrics.metadata_not_queued, &dest.name, n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_relabelling_rewrites_and_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = crate::config::Config::parse(
            "remote_write:\n  - url: http://127.0.0.1:1/api/v1/write\n    write_relabel_configs:\n      - source_labels: [cell]\n        regex: hz-07\n        target_label: zone\n        replacement: hz\n      - source_labels: [__name__]\n        regex: drop_me\n        action: drop\n",
        )
        .expect("valid");
        let mut registry = Registry::default();
        let metrics = RelayMetrics::register(&mut registry, "d");
        let dest =
            Destination::open(&c.remote_write[0], "d", dir.path(), 1 << 20, metrics).expect("open");
        let series = |name: &str| strata_wire::TimeSeries {
            labels: vec![
                strata_wire::Label::new("__name__", name),
                strata_wire::Label::new("cell", "hz-07"),
            ],
            samples: vec![strata_wire::Sample {
                value: 1.0,
                timestamp: 5,
            }],
            ..Default::default()
        };
        let request = WriteRequest {
            timeseries: vec![series("up"), series("drop_me")],
            metadata: vec![],
        };
        let batch = Encoded {
            body: request.encode_body(),
            items: 2,
        };
        let (payload, items) = dest
            .prepare(&batch, None)
            .expect("valid")
            .expect("one kept");
        assert_eq!(items, 1);
        let out = WriteRequest::decode_snappy(&payload, 1 << 20).expect("valid");
        let rendered: Vec<String> = out
            .timeseries
            .iter()
            .map(|s| strata_wire::labels::render(&s.labels))
            .collect();
        assert_eq!(rendered, [r#"up{cell="hz-07", zone="hz"}"#]);
        dest.queue.close();
    }

    #[test]
    fn queue_config_maps_onto_the_sender() {
        let c = crate::config::Config::parse(
            "remote_write:\n  - url: http://127.0.0.1:1/w\n    remote_timeout: 10s\n    basic_auth: {username: u, password: p}\n    protobuf_message: io.prometheus.write.v2.Request\n    queue_config: {max_shards: 3, max_samples_per_send: 700, batch_send_deadline: 2s, min_backoff: 50ms, max_backoff: 1s}\n",
        )
        .expect("valid");
        let (s, name) = remote_write::sender_config(&c.remote_write[0]).expect("valid");
        assert_eq!(name, "127.0.0.1:1");
        assert_eq!(s.shards, 3);
        assert_eq!(s.max_samples_per_send, 700);
        assert_eq!(s.batch_send_deadline_seconds, 2.0);
        assert_eq!((s.min_backoff_ms, s.max_backoff_ms), (50, 1000));
        assert_eq!(s.remote_timeout_seconds, 10.0);
        assert!(s.remote_write_v2);
        assert_eq!(s.headers["Authorization"], "Basic dTpw");
    }
}
