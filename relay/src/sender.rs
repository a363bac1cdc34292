//! The remote-write sender: drains a [`Queue`] to one destination.
//!
//! Records are split by series fingerprint over `shards` concurrent senders, so every series
//! keeps its sample order while shards proceed independently. Series travel as the bytes the
//! queue holds ([`strata_wire::raw`]): a record is split and regrouped into requests by
//! copying its entries, never decoded and encoded again, except to cut a series longer than
//! one request, to apply the age limit to a batch that holds old samples, or to send 2.0. Each shard batches up to
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
use strata_wire::protocol::{WriteVersion, request_headers};
use strata_wire::raw::{Entry, EntryKind};
use strata_wire::{TimeSeries, WriteRequest, snappy};
use tokio::sync::mpsc;

use crate::config::SenderConfig;
use crate::metrics::{DropReason, RelayMetrics};
use crate::queue::{Decoded, Queue};
use crate::{Error, Result};

/// Outstanding parts of one queue record; the record is acknowledged when the count hits zero.
#[derive(Debug)]
struct RecordAck {
    seq: u64,
    remaining: AtomicUsize,
}

/// The share of one record that belongs to one shard: entries of the record's body, in order,
/// from `next` on.
#[derive(Debug)]
struct Part {
    ack: Arc<RecordAck>,
    body: Arc<Vec<u8>>,
    entries: Vec<Entry>,
    next: usize,
}

/// Runs the sender until `shutdown` resolves. Unacknowledged records stay in the queue.
pub async fn run(
    queue: Queue,
    config: SenderConfig,
    metrics: RelayMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let client = crate::tls::client_builder(config.tls_config.as_ref())
        .map_err(Error::Client)?
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
            scratch: Vec::new(),
        };
        tasks.spawn(shard.run(rx));
    }
    let dispatch = dispatch(&queue, &senders, config.max_samples_per_send);
    tokio::select! {
        () = dispatch => {}
        () = shutdown => {}
    }
    tasks.abort_all();
    Ok(())
}

/// Reads records in order and hands each shard its part. Series are never decoded here: the
/// record's entries are routed by the fingerprint of their labels and copied as bytes.
async fn dispatch(queue: &Queue, shards: &[mpsc::Sender<Part>], max: usize) {
    while let Some(record) = queue.next().await {
        let (body, entries) = split_long_series(record.decoded, max);
        let n = shards.len();
        let mut parts: Vec<Vec<Entry>> = vec![Vec::new(); n];
        for e in entries.iter().cloned() {
            let shard = match e.kind {
                EntryKind::Series(info) => (info.fingerprint % n as u64) as usize,
                EntryKind::Metadata => 0,
            };
            parts[shard].push(e);
        }
        let used = parts.iter().filter(|p| !p.is_empty()).count();
        if used == 0 {
            queue.ack(record.seq);
            continue;
        }
        let ack = Arc::new(RecordAck {
            seq: record.seq,
            remaining: AtomicUsize::new(used),
        });
        for (shard, entries) in parts.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let part = Part {
                ack: ack.clone(),
                body: body.clone(),
                entries,
                next: 0,
            };
            if shards[shard].send(part).await.is_err() {
                return;
            }
        }
    }
}

/// Cuts every series with more than `max` items into pieces of at most `max`, in order
/// (samples first, then histograms, then exemplars), so each fits in one request. Rare: only
/// then is the record decoded and encoded again.
fn split_long_series(decoded: Decoded, max: usize) -> (Arc<Vec<u8>>, Arc<Vec<Entry>>) {
    let Decoded { body, entries } = decoded;
    if entries.iter().all(|e| e.items() <= max) {
        return (body, entries);
    }
    let mut out = Vec::with_capacity(body.len());
    for e in entries.iter() {
        let bytes = &body[e.bytes.clone()];
        if e.items() <= max {
            out.extend_from_slice(bytes);
            continue;
        }
        let Ok(mut req) = WriteRequest::decode_body(bytes) else {
            // `raw::entries` accepted this entry, so prost does too; keep it whole regardless.
            out.extend_from_slice(bytes);
            continue;
        };
        for mut ts in std::mem::take(&mut req.timeseries) {
            while ts.item_count() > 0 {
                let mut piece = TimeSeries {
                    labels: ts.labels.clone(),
                    ..Default::default()
                };
                let mut left = max;
                let k = left.min(ts.samples.len());
                piece.samples = ts.samples.drain(..k).collect();
                left -= k;
                let k = left.min(ts.histograms.len());
                piece.histograms = ts.histograms.drain(..k).collect();
                left -= k;
                let k = left.min(ts.exemplars.len());
                piece.exemplars = ts.exemplars.drain(..k).collect();
                req.timeseries.push(piece);
            }
        }
        out.extend_from_slice(&req.encode_body());
    }
    match Decoded::new(out) {
        Ok(split) => (split.body, split.entries),
        Err(_) => (body, entries),
    }
}

struct Shard {
    client: reqwest::Client,
    config: Arc<SenderConfig>,
    metrics: RelayMetrics,
    queue: Queue,
    /// The compressor's output buffer, kept between batches.
    scratch: Vec<u8>,
}

/// A request being assembled (encoded series and metadata entries), and the parts whose last
/// piece it carries.
struct Batch {
    body: Vec<u8>,
    items: usize,
    metadata: usize,
    oldest: i64,
    newest_sample: i64,
    completes: Vec<Arc<RecordAck>>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            body: Vec::new(),
            items: 0,
            metadata: 0,
            oldest: i64::MAX,
            newest_sample: i64::MIN,
            completes: Vec::new(),
        }
    }
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.items == 0 && self.metadata == 0 && self.completes.is_empty()
    }

    fn push(&mut self, body: &[u8], entry: &Entry) {
        self.body.extend_from_slice(&body[entry.bytes.clone()]);
        match entry.kind {
            EntryKind::Series(info) => {
                self.items += info.items;
                self.oldest = self.oldest.min(info.oldest);
                self.newest_sample = self.newest_sample.max(info.newest_sample);
            }
            EntryKind::Metadata => self.metadata += 1,
        }
    }

    /// Replaces the body with `request`'s encoding after its contents changed.
    fn replace(&mut self, request: &WriteRequest) {
        self.body = request.encode_body();
        self.items = request.item_count();
        self.metadata = request.metadata.len();
    }
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<Part>) {
        let max = self.config.max_samples_per_send;
        let mut carry: Option<Part> = None;
        loop {
            let mut batch = Batch::default();
            let deadline = tokio::time::Instant::now() + self.config.batch_deadline();
            loop {
                let part = match carry.take() {
                    Some(p) => p,
                    None if batch.is_empty() => match rx.recv().await {
                        Some(p) => p,
                        None => return,
                    },
                    None => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(p)) => p,
                        Ok(None) => return,
                        Err(_) => break,
                    },
                };
                carry = fill(&mut batch, part, max);
                if carry.is_some() || batch.items >= max {
                    break;
                }
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
    async fn send(&mut self, batch: &mut Batch) {
        let mut backoff = Duration::from_millis(self.config.min_backoff_ms);
        let max_backoff = Duration::from_millis(self.config.max_backoff_ms);
        loop {
            self.drop_too_old(batch);
            if batch.items == 0 && batch.metadata == 0 {
                return;
            }
            let version = if self.config.remote_write_v2 {
                WriteVersion::V2
            } else {
                WriteVersion::V1
            };
            let encoded = match version {
                WriteVersion::V1 => snappy::compress_reusing(&batch.body, &mut self.scratch),
                WriteVersion::V2 => WriteRequest::decode_body(&batch.body)
                    .and_then(|req| strata_wire::v2::Request::from_v1(&req).encode_snappy()),
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
        if batch.newest_sample > i64::MIN {
            let secs = batch.newest_sample as f64 / 1000.0;
            if secs > self.metrics.highest_sent_timestamp.get() {
                self.metrics.highest_sent_timestamp.set(secs);
            }
        }
    }

    /// Applies `sample_age_limit_seconds`, before every attempt as Prometheus does. Only a
    /// batch that holds something too old is decoded.
    fn drop_too_old(&self, batch: &mut Batch) {
        let limit = self.config.sample_age_limit_seconds;
        if limit == 0 {
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let oldest_ok = now_ms - (limit as i64) * 1000;
        if batch.oldest >= oldest_ok {
            return;
        }
        let Ok(mut request) = WriteRequest::decode_body(&batch.body) else {
            return;
        };
        let before = request.item_count();
        for ts in &mut request.timeseries {
            ts.samples.retain(|s| s.timestamp >= oldest_ok);
            ts.histograms.retain(|h| h.timestamp >= oldest_ok);
            ts.exemplars.retain(|e| e.timestamp >= oldest_ok);
        }
        request.timeseries.retain(|ts| ts.item_count() > 0);
        batch.replace(&request);
        batch.oldest = oldest_ok;
        let dropped = before - batch.items;
        if dropped > 0 {
            self.metrics.dropped(DropReason::TooOld, dropped as u64);
        }
    }
}

/// Copies entries of `part` into `batch` while they fit in `max` items; returns the rest.
/// An entry never fits only when the batch already holds something ([`split_long_series`]
/// cut every series to at most `max`).
fn fill(batch: &mut Batch, mut part: Part, max: usize) -> Option<Part> {
    // One allocation for what may be copied, rather than growing the body entry by entry.
    let (mut bytes, mut items) = (0, batch.items);
    for e in &part.entries[part.next..] {
        if items > 0 && items + e.items() > max {
            break;
        }
        items += e.items();
        bytes += e.bytes.len();
    }
    batch.body.reserve(bytes);
    while let Some(entry) = part.entries.get(part.next) {
        if batch.items > 0 && batch.items + entry.items() > max {
            return Some(part);
        }
        batch.push(&part.body, entry);
        part.next += 1;
    }
    batch.completes.push(part.ack);
    None
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
    fn long_series_are_cut_and_sent_in_order() {
        let samples = |name: &str, n: i64| TimeSeries {
            labels: vec![strata_wire::Label::new("__name__", name)],
            samples: (0..n)
                .map(|t| strata_wire::Sample {
                    value: 0.0,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        };
        let req = WriteRequest {
            timeseries: vec![samples("a", 4), samples("long", 25), samples("b", 3)],
            metadata: vec![],
        };
        let decoded = Decoded::new(req.encode_body()).expect("valid");
        let (body, entries) = split_long_series(decoded, 10);
        assert!(entries.iter().all(|e| e.items() <= 10));
        let mut part = Some(Part {
            ack: Arc::new(RecordAck {
                seq: 0,
                remaining: AtomicUsize::new(1),
            }),
            body,
            entries: entries.to_vec(),
            next: 0,
        });
        let mut sent: Vec<(String, i64)> = Vec::new();
        while let Some(p) = part.take() {
            let mut batch = Batch::default();
            part = fill(&mut batch, p, 10);
            assert!(batch.items <= 10, "{} items", batch.items);
            assert_eq!(batch.completes.len(), usize::from(part.is_none()));
            let got = WriteRequest::decode_body(&batch.body).expect("a batch decodes");
            assert_eq!(got.item_count(), batch.items);
            for ts in got.timeseries {
                sent.extend(
                    ts.samples
                        .iter()
                        .map(|s| (ts.labels[0].value.clone(), s.timestamp)),
                );
            }
        }
        let want: Vec<(String, i64)> = req
            .timeseries
            .iter()
            .flat_map(|ts| {
                ts.samples
                    .iter()
                    .map(|s| (ts.labels[0].value.clone(), s.timestamp))
            })
            .collect();
        assert_eq!(sent, want);
    }
}
