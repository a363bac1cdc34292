//! The remote-write sender: drains a [`Queue`] to one destination.
//!
//! Records are split by series fingerprint over `shards` concurrent senders, so every series
//! keeps its sample order while shards proceed independently. Each shard batches up to
//! `max_samples_per_send` samples or `batch_send_deadline_seconds`, whichever comes first, and
//! has one request in flight. A queue record is acknowledged (and its disk space reclaimed) only
//! when every part of it was answered 2xx, or given up on for a reason that is counted.
//!
//! Retry semantics follow Prometheus (`storage/remote/client.go`, `queue_manager.go`): 5xx, 429
//! and connection errors are recoverable and retried forever with capped exponential backoff
//! with jitter, honouring `Retry-After`; any other 4xx is final: the batch is dropped, counted
//! (`rejected`) and the receiver's message logged. A retry is never counted as a drop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use reqwest::StatusCode;
use strata_wire::labels::fingerprint;
use strata_wire::protocol::{WriteVersion, request_headers};
use strata_wire::{MetricMetadata, TimeSeries, WriteRequest};
use tokio::sync::mpsc;

use crate::config::SenderConfig;
use crate::metrics::{DropReason, RelayMetrics};
use crate::queue::Queue;
use crate::{Error, Result};

/// Outstanding parts of one queue record; the record is acknowledged when the count hits zero.
#[derive(Debug)]
struct RecordAck {
    seq: u64,
    remaining: AtomicUsize,
}

/// The share of one record that belongs to one shard.
#[derive(Debug)]
struct Part {
    ack: Arc<RecordAck>,
    series: Vec<TimeSeries>,
    metadata: Vec<MetricMetadata>,
}

/// Runs the sender until `shutdown` resolves. Unacknowledged records stay in the queue.
pub async fn run(
    queue: Queue,
    config: SenderConfig,
    metrics: RelayMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(config.remote_timeout_seconds))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let config = Arc::new(config);
    let mut senders = Vec::with_capacity(config.shards);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.shards {
        let (tx, rx) = mpsc::channel::<Part>(8);
        senders.push(tx);
        let shard = Shard {
            client: client.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            queue: queue.clone(),
        };
        tasks.spawn(shard.run(rx));
    }
    let dispatch = dispatch(&queue, &senders);
    tokio::select! {
        () = dispatch => {}
        () = shutdown => {}
    }
    tasks.abort_all();
    Ok(())
}

/// Reads records in order and hands each shard its part.
async fn dispatch(queue: &Queue, shards: &[mpsc::Sender<Part>]) {
    while let Some(record) = queue.next().await {
        let n = shards.len();
        let mut parts: Vec<(Vec<TimeSeries>, Vec<MetricMetadata>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for ts in record.request.timeseries {
            let shard = (fingerprint(&ts.labels) % n as u64) as usize;
            parts[shard].0.push(ts);
        }
        parts[0].1 = record.request.metadata;
        let parts: Vec<(usize, Vec<TimeSeries>, Vec<MetricMetadata>)> = parts
            .into_iter()
            .enumerate()
            .filter(|(_, (s, m))| !s.is_empty() || !m.is_empty())
            .map(|(i, (s, m))| (i, s, m))
            .collect();
        if parts.is_empty() {
            queue.ack(record.seq);
            continue;
        }
        let ack = Arc::new(RecordAck {
            seq: record.seq,
            remaining: AtomicUsize::new(parts.len()),
        });
        for (shard, series, metadata) in parts {
            let part = Part {
                ack: ack.clone(),
                series,
                metadata,
            };
            if shards[shard].send(part).await.is_err() {
                return;
            }
        }
    }
}

struct Shard {
    client: reqwest::Client,
    config: Arc<SenderConfig>,
    metrics: RelayMetrics,
    queue: Queue,
}

/// A request being assembled, and the parts whose last piece it carries.
#[derive(Default)]
struct Batch {
    request: WriteRequest,
    items: usize,
    completes: Vec<Arc<RecordAck>>,
}

impl Shard {
    async fn run(self, mut rx: mpsc::Receiver<Part>) {
        let max = self.config.max_samples_per_send;
        let mut carry: Option<Part> = None;
        loop {
            let mut batch = Batch::default();
            let deadline = tokio::time::Instant::now() + self.config.batch_deadline();
            while batch.items < max {
                let part = match carry.take() {
                    Some(p) => p,
                    None if batch.items == 0
                        && batch.request.metadata.is_empty()
                        && batch.completes.is_empty() =>
                    {
                        match rx.recv().await {
                            Some(p) => p,
                            None => return,
                        }
                    }
                    None => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(p)) => p,
                        Ok(None) => return,
                        Err(_) => break,
                    },
                };
                carry = fill(&mut batch, part, max);
            }
            self.send(&mut batch).await;
            for ack in batch.completes {
                if ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.queue.ack(ack.seq);
                }
            }
        }
    }

    /// Sends one batch until it succeeds or is given up on (counted either way).
    async fn send(&self, batch: &mut Batch) {
        let mut backoff = Duration::from_millis(self.config.min_backoff_ms);
        let max_backoff = Duration::from_millis(self.config.max_backoff_ms);
        loop {
            self.drop_too_old(batch);
            if batch.items == 0 && batch.request.metadata.is_empty() {
                return;
            }
            let version = if self.config.remote_write_v2 {
                WriteVersion::V2
            } else {
                WriteVersion::V1
            };
            let encoded = match version {
                WriteVersion::V1 => batch.request.encode_snappy(),
                WriteVersion::V2 => {
                    strata_wire::v2::Request::from_v1(&batch.request).encode_snappy()
                }
            };
            let body = match encoded {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode batch; dropping it");
                    self.metrics
                        .dropped(DropReason::Rejected, batch.items as u64);
                    return;
                }
            };
            let start = Instant::now();
            let mut req = self.client.post(&self.config.url);
            for (k, v) in request_headers(version) {
                req = req.header(k, v);
            }
            for (k, v) in &self.config.headers {
                req = req.header(k, v);
            }
            let outcome = req.body(body).send().await;
            self.metrics
                .send_duration
                .observe(start.elapsed().as_secs_f64());
            let retry_after = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    self.delivered(batch);
                    return;
                }
                Ok(resp) => {
                    self.metrics.requests_failed.inc();
                    let status = resp.status();
                    let retry_after = parse_retry_after(resp.headers());
                    let recoverable = status.is_server_error()
                        || (status == StatusCode::TOO_MANY_REQUESTS
                            && self.config.retry_on_http_429);
                    let message = resp.text().await.unwrap_or_default();
                    let message = message.trim();
                    let message = &message[..message.floor_char_boundary(1024)];
                    if !recoverable {
                        tracing::warn!(url = %self.config.url, %status, samples = batch.items, receiver_says = message,
                            "remote-write batch rejected; dropping it");
                        self.metrics
                            .dropped(DropReason::Rejected, batch.items as u64);
                        return;
                    }
                    tracing::debug!(url = %self.config.url, %status, receiver_says = message, "retrying remote-write batch");
                    retry_after
                }
                Err(e) => {
                    self.metrics.requests_failed.inc();
                    tracing::debug!(url = %self.config.url, error = %e, "remote-write request failed; retrying");
                    None
                }
            };
            self.metrics.samples_retried.inc_by(batch.items as u64);
            let delay = match retry_after {
                Some(d) if d > Duration::ZERO => d,
                _ => jitter(backoff),
            };
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    fn delivered(&self, batch: &Batch) {
        self.metrics.samples_sent.inc_by(batch.items as u64);
        let newest = batch
            .request
            .timeseries
            .iter()
            .flat_map(|ts| ts.samples.iter().map(|s| s.timestamp))
            .max();
        if let Some(ts) = newest {
            let secs = ts as f64 / 1000.0;
            if secs > self.metrics.highest_sent_timestamp.get() {
                self.metrics.highest_sent_timestamp.set(secs);
            }
        }
    }

    /// Applies `sample_age_limit_seconds`, before every attempt as Prometheus does.
    fn drop_too_old(&self, batch: &mut Batch) {
        let limit = self.config.sample_age_limit_seconds;
        if limit == 0 {
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let oldest_ok = now_ms - (limit as i64) * 1000;
        let mut dropped = 0;
        for ts in &mut batch.request.timeseries {
            let before = ts.item_count();
            ts.samples.retain(|s| s.timestamp >= oldest_ok);
            ts.histograms.retain(|h| h.timestamp >= oldest_ok);
            ts.exemplars.retain(|e| e.timestamp >= oldest_ok);
            dropped += before - ts.item_count();
        }
        batch.request.timeseries.retain(|ts| ts.item_count() > 0);
        if dropped > 0 {
            batch.items -= dropped;
            self.metrics.dropped(DropReason::TooOld, dropped as u64);
        }
    }
}

/// Moves as much of `part` into `batch` as fits in `max` items; returns the rest.
fn fill(batch: &mut Batch, mut part: Part, max: usize) -> Option<Part> {
    batch.request.metadata.append(&mut part.metadata);
    let mut taken = 0;
    for ts in part.series.iter_mut() {
        let room = max - batch.items;
        if room == 0 {
            break;
        }
        let n = ts.item_count();
        if n <= room {
            batch.items += n;
            batch.request.timeseries.push(std::mem::take(ts));
            taken += 1;
            continue;
        }
        // Split a long series: samples first, then histograms, then exemplars, in order.
        let mut piece = TimeSeries {
            labels: ts.labels.clone(),
            ..Default::default()
        };
        let mut left = room;
        let k = left.min(ts.samples.len());
        piece.samples = ts.samples.drain(..k).collect();
        left -= k;
        let k = left.min(ts.histograms.len());
        piece.histograms = ts.histograms.drain(..k).collect();
        left -= k;
        let k = left.min(ts.exemplars.len());
        piece.exemplars = ts.exemplars.drain(..k).collect();
        batch.items += room;
        batch.request.timeseries.push(piece);
        break;
    }
    part.series.drain(..taken);
    if part.series.is_empty() {
        batch.completes.push(part.ack);
        None
    } else {
        Some(part)
    }
}

/// Full jitter on the upper half: a delay in `[d/2, d]`, so shards don't retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// `Retry-After` as seconds (the form receivers use; an HTTP-date is also accepted).
fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(300)));
    }
    let when = humantime::parse_rfc3339_weak(v)
        .ok()
        .or_else(|| httpdate(v))?;
    when.duration_since(SystemTime::now())
        .ok()
        .map(|d| d.min(Duration::from_secs(300)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date form
/// RFC 9110 requires recipients to send.
fn httpdate(v: &str) -> Option<SystemTime> {
    let mut it = v.split_whitespace().skip(1);
    let day = it.next()?;
    let month = match it.next()? {
        "Jan" => "01",
        "Feb" => "02",
        "Mar" => "03",
        "Apr" => "04",
        "May" => "05",
        "Jun" => "06",
        "Jul" => "07",
        "Aug" => "08",
        "Sep" => "09",
        "Oct" => "10",
        "Nov" => "11",
        "Dec" => "12",
        _ => return None,
    };
    let year = it.next()?;
    let time = it.next()?;
    humantime::parse_rfc3339(&format!("{year}-{month}-{day:0>2}T{time}Z")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            parse_retry_after(&h),
            None,
            "a date in the past means no wait"
        );
        assert!(httpdate("Sun, 06 Nov 1994 08:49:37 GMT").is_some());
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }

    #[test]
    fn fill_splits_long_series_in_order() {
        let ack = Arc::new(RecordAck {
            seq: 0,
            remaining: AtomicUsize::new(1),
        });
        let ts = TimeSeries {
            labels: vec![strata_wire::Label::new("__name__", "m")],
            samples: (0..25)
                .map(|t| strata_wire::Sample {
                    value: 0.0,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        };
        let mut part = Some(Part {
            ack,
            series: vec![ts],
            metadata: vec![],
        });
        let mut sent = Vec::new();
        while let Some(p) = part.take() {
            let mut batch = Batch::default();
            part = fill(&mut batch, p, 10);
            assert!(batch.items <= 10);
            sent.extend(
                batch.request.timeseries[0]
                    .samples
                    .iter()
                    .map(|s| s.timestamp),
            );
            assert_eq!(batch.completes.len(), usize::from(part.is_none()));
        }
        assert_eq!(sent, (0..25).collect::<Vec<_>>());
    }
}
