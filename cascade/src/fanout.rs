//! Fan-out to the upstreams: one durable relay queue and one remote-write sender per
//! `remote_write` section, so an upstream that is down or slow only grows its own queue.
//!
//! A batch is acknowledged to its sender only after it is durable in every upstream's queue:
//! the record is submitted to every queue first and then each is awaited, so their fsyncs
//! overlap. Before anything is written, every `block` queue must have room for the batch;
//! otherwise the request is refused (429) without touching any queue, so a full queue never
//! leaves the others holding half of a request.

use std::path::Path;

use prometheus_client::registry::Registry;
use serde::Serialize;
use strata_relay::metrics::{DropReason, RelayMetrics};
use strata_relay::queue::Decoded;
use strata_relay::relabel::Rule;
use strata_relay::remote_write::{self, RemoteWriteConfig};
use strata_relay::{OverflowPolicy, Queue, QueueConfig, SenderConfig, sender};
use strata_wire::snappy;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// `queue_config.max_samples_per_send` of an upstream that does not set it.
pub const DEFAULT_MAX_SAMPLES_PER_SEND: usize = 10_000;

/// One upstream: its queue, its sender's settings and its write relabelling.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub url: String,
    pub queue: Queue,
    pub metrics: RelayMetrics,
    pub sender: SenderConfig,
    queue_config: QueueConfig,
    rules: Vec<Rule>,
}

/// The upstreams of the running cascade.
#[derive(Debug)]
pub struct Fanout {
    pub upstreams: Vec<Upstream>,
}

/// An upstream's queue on the status page (`/api/v1/status/upstreams`).
#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub url: String,
    pub overflow: &'static str,
    pub max_queue_bytes: u64,
    pub pending_bytes: u64,
    pub pending_samples: u64,
    pub samples_enqueued: u64,
    pub samples_sent: u64,
    pub samples_retried: u64,
    pub samples_dropped_queue_full: u64,
    pub samples_dropped_rejected: u64,
    pub samples_dropped_too_old: u64,
    pub requests_failed: u64,
    pub highest_sent_timestamp_seconds: f64,
}

impl Fanout {
    /// Opens every upstream's queue under `data_dir`, recovering what a previous run left.
    pub fn open(
        sections: &[RemoteWriteConfig],
        queue_config: &QueueConfig,
        data_dir: &Path,
        registry: &mut Registry,
    ) -> Result<Self> {
        let mut upstreams = Vec::with_capacity(sections.len());
        for rw in sections {
            let (mut sender, name) = remote_write::sender_config(rw).map_err(Error::Config)?;
            if rw.queue_config.max_samples_per_send.is_none() {
                // A cascade forwards the streams of many edges: larger requests than a
                // scraper's (Prometheus's 2000) mean fewer round trips per sample upstream.
                sender.max_samples_per_send = DEFAULT_MAX_SAMPLES_PER_SEND;
            }
            let metrics = RelayMetrics::register(registry, &name);
            let dir = remote_write::queue_dir(data_dir, &name, &rw.url);
            let queue = Queue::open(&dir, queue_config.clone(), metrics.clone())?;
            upstreams.push(Upstream {
                name,
                url: rw.url.clone(),
                queue,
                metrics,
                sender,
                queue_config: queue_config.clone(),
                rules: rw.write_relabel_configs.clone(),
            });
        }
        Ok(Self { upstreams })
    }

    /// Writes a batch to every upstream and returns once it is durable in all of them.
    /// `batch` is a decompressed 1.0 `WriteRequest` holding `items` samples, histograms and
    /// exemplars, with its entries; `payload` its snappy compression when the caller already
    /// has it. Upstreams without write relabelling share `batch`: their senders take it as it
    /// is instead of reading it back from disk.
    pub async fn write(&self, batch: Decoded, payload: Option<&[u8]>, items: u64) -> Result<()> {
        let compressed;
        let plain = match payload {
            Some(p) => p,
            None => {
                compressed = snappy::compress(&batch.body)?;
                &compressed
            }
        };
        if let Some(full) = self
            .upstreams
            .iter()
            .find(|u| !u.queue.has_room(plain.len() as u64))
        {
            let (pending_bytes, _) = full.queue.pending();
            return Err(strata_relay::Error::QueueFull {
                pending_bytes,
                max_bytes: full.queue_config.max_queue_bytes,
            }
            .into());
        }
        let mut submitted = Vec::with_capacity(self.upstreams.len());
        let mut first_error = None;
        for u in &self.upstreams {
            let step = if u.rules.is_empty() {
                u.queue.submit_decoded(plain, items, &batch).map(Some)
            } else {
                match remote_write::relabel_body(&batch.body, &u.rules) {
                    Ok(Some((p, n))) => u.queue.submit(&p, n).map(Some),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            };
            match step {
                Ok(Some(s)) => submitted.push(s),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for s in submitted {
            if let Err(e) = s.durable().await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Starts one sender per upstream; each stops when `stop` turns true.
    pub fn spawn_senders(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<JoinHandle<strata_relay::Result<()>>> {
        self.upstreams
            .iter()
            .map(|u| {
                let mut stop = stop.clone();
                tokio::spawn(sender::run(
                    u.queue.clone(),
                    u.sender.clone(),
                    u.metrics.clone(),
                    async move {
                        let _ = stop.wait_for(|&s| s).await;
                    },
                ))
            })
            .collect()
    }

    /// Closes every queue; what is undelivered stays on disk for the next start.
    pub fn close(&self) {
        for u in &self.upstreams {
            u.queue.close();
        }
    }

    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.upstreams
            .iter()
            .map(|u| {
                let (pending_bytes, pending_samples) = u.queue.pending();
                let m = &u.metrics;
                UpstreamStatus {
                    name: u.name.clone(),
                    url: u.url.clone(),
                    overflow: match u.queue_config.overflow {
                        OverflowPolicy::Block => "block",
                        OverflowPolicy::DropOldest => "drop_oldest",
                    },
                    max_queue_bytes: u.queue_config.max_queue_bytes,
                    pending_bytes,
                    pending_samples,
                    samples_enqueued: m.samples_enqueued.get(),
                    samples_sent: m.samples_sent.get(),
                    samples_retried: m.samples_retried.get(),
                    samples_dropped_queue_full: m.dropped_count(DropReason::QueueFull),
                    samples_dropped_rejected: m.dropped_count(DropReason::Rejected),
                    samples_dropped_too_old: m.dropped_count(DropReason::TooOld),
                    requests_failed: m.requests_failed.get(),
                    highest_sent_timestamp_seconds: m.highest_sent_timestamp.get(),
                }
            })
            .collect()
    }
}
