//! Peer backfill: how the two AZ copies converge.
//!
//! Each central asks its peer for a coverage summary of recent time (`GET
//! /api/v1/status/coverage`): per bucket of [`BUCKET_MS`], the number of series and samples and
//! an order-independent digest of every `(series, timestamp, value)`. Where the peer's bucket
//! differs from its own, it fetches that bucket from the peer by remote-read and writes it
//! through the backfill path (any age accepted, identical samples are no-ops). Both centrals
//! do the same, so each ends up with the union of both: identical copies.
//!
//! On start the whole lookback is compared; afterwards, every interval, the last few buckets
//! and, once per lookback-sized round, the whole lookback again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_wire::prompb::{Query, ReadRequest, ReadResponse};
use strata_wire::protocol::{
    CONTENT_ENCODING_SNAPPY, CONTENT_TYPE_V1, HEADER_READ_VERSION, READ_VERSION,
};
use strata_wire::{TimeSeries, WriteRequest};

use crate::db::Db;
use crate::head::AppendMode;
use crate::index::{MatchOp, Matcher};
use crate::{Error, Result};

/// The width of a coverage bucket.
pub const BUCKET_MS: i64 = 10 * 60_000;
/// The most a peer's remote-read answer may decompress to.
const MAX_READ_BYTES: usize = 1 << 30;

/// Coverage of one bucket `[start, start + BUCKET_MS)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start: i64,
    pub series: u64,
    pub samples: u64,
    pub digest: u64,
}

/// The matcher that selects every series.
pub fn all_series() -> Matcher {
    Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap_or_else(|_| unreachable!())
}

/// Coverage of `[start, end)` in buckets aligned to [`BUCKET_MS`]; empty buckets are left out.
pub fn coverage(db: &Db, start: i64, end: i64) -> Result<Vec<Bucket>> {
    let mut out = Vec::new();
    let mut b = start.div_euclid(BUCKET_MS) * BUCKET_MS;
    let all = [all_series()];
    while b < end {
        let mut bucket = Bucket {
            start: b,
            series: 0,
            samples: 0,
            digest: 0,
        };
        for s in db.select(&all, b, b + BUCKET_MS - 1)? {
            let fp = strata_wire::labels::fingerprint(&s.labels);
            bucket.series += 1;
            bucket.samples += s.samples.len() as u64;
            for (t, v) in s.samples {
                let mut buf = [0u8; 24];
                buf[..8].copy_from_slice(&fp.to_le_bytes());
                buf[8..16].copy_from_slice(&t.to_le_bytes());
                buf[16..].copy_from_slice(&v.to_bits().to_le_bytes());
                bucket.digest = bucket.digest.wrapping_add(xxhash_rust::xxh3::xxh3_64(&buf));
            }
        }
        if bucket.samples > 0 {
            out.push(bucket);
        }
        b += BUCKET_MS;
    }
    Ok(out)
}

/// Backfill settings.
#[derive(Debug, Clone)]
pub struct BackfillConfig {
    pub peer_url: String,
    pub interval: Duration,
    pub lookback: Duration,
    /// Samples newer than this are not compared yet: they may still be in flight from the
    /// cascades' queues, so the AZs differ there by nature.
    pub settle: Duration,
}

/// What one comparison round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundReport {
    pub buckets_compared: u64,
    pub buckets_differing: u64,
    pub samples_compared: u64,
    pub samples_fetched: u64,
    pub samples_written: u64,
}

pub(crate) fn peer_err(url: &str, reason: impl std::fmt::Display) -> Error {
    Error::Peer {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// Sends a request to the peer; the body of a 2xx answer, or an error naming the URL.
pub(crate) async fn peer_body(url: &str, request: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
    let resp = request.send().await.map_err(|e| peer_err(url, e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| peer_err(url, e))?;
    if !status.is_success() {
        return Err(peer_err(
            url,
            format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        ));
    }
    Ok(body)
}

/// Fetches `[start, end]` of every series from the peer by remote-read (SAMPLES).
pub async fn remote_read(
    client: &reqwest::Client,
    peer: &str,
    start: i64,
    end: i64,
) -> Result<Vec<TimeSeries>> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: vec![all_series().to_remote_read()],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let url = format!("{}/api/v1/read", peer.trim_end_matches('/'));
    let request = client
        .post(&url)
        .header("Content-Type", CONTENT_TYPE_V1)
        .header("Content-Encoding", CONTENT_ENCODING_SNAPPY)
        .header(HEADER_READ_VERSION, READ_VERSION)
        .body(req.encode_snappy()?);
    let body = peer_body(&url, request).await?;
    let mut decoded = ReadResponse::decode_snappy(&body, MAX_READ_BYTES)?;
    Ok(decoded
        .results
        .pop()
        .map(|r| r.timeseries)
        .unwrap_or_default())
}

async fn peer_coverage(
    client: &reqwest::Client,
    peer: &str,
    start: i64,
    end: i64,
) -> Result<Vec<Bucket>> {
    let url = format!("{}/api/v1/status/coverage", peer.trim_end_matches('/'));
    let request = client.get(&url).query(&[("start", start), ("end", end)]);
    let body = peer_body(&url, request).await?;
    #[derive(Deserialize)]
    struct Env {
        data: Vec<Bucket>,
    }
    let env: Env = serde_json::from_slice(&body).map_err(|e| peer_err(&url, e))?;
    Ok(env.data)
}

/// Compares `[start, end)` with the peer and fetches every bucket that differs.
pub async fn round(
    db: &Db,
    client: &reqwest::Client,
    peer: &str,
    start: i64,
    end: i64,
) -> Result<RoundReport> {
    let theirs = peer_coverage(client, peer, start, end).await?;
    let ours = coverage(db, start, end)?;
    let mut report = RoundReport::default();
    for b in &theirs {
        report.buckets_compared += 1;
        report.samples_compared += b.samples;
        if ours.iter().any(|o| o == b) {
            continue;
        }
        report.buckets_differing += 1;
        let series = remote_read(client, peer, b.start, b.start + BUCKET_MS - 1).await?;
        let fetched: usize = series.iter().map(|s| s.samples.len()).sum();
        report.samples_fetched += fetched as u64;
        let req = WriteRequest {
            timeseries: series,
            metadata: vec![],
        };
        let validated = strata_wire::validate::Validated::split(req);
        let outcome = db
            .write(validated.accepted.series_refs(), AppendMode::Backfill)
            .await?;
        report.samples_written += outcome.appended as u64;
    }
    let c = &db.counters;
    c.backfill_compared.inc_by(report.samples_compared);
    c.backfill_fetched.inc_by(report.samples_fetched);
    Ok(report)
}

/// Runs backfill rounds until `stop` is set.
pub async fn run(
    db: Arc<Db>,
    config: BackfillConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "peer backfill cannot start an HTTP client");
            return;
        }
    };
    let lookback = config.lookback.as_millis() as i64;
    let recent = 3 * BUCKET_MS;
    let mut full_due = 0i64;
    loop {
        let now = strata_wire::clock::now_ms();
        let end = now - config.settle.as_millis() as i64;
        let start = if now >= full_due {
            full_due = now + lookback;
            end - lookback
        } else {
            end - recent
        };
        match round(&db, &client, &config.peer_url, start, end).await {
            Ok(r) => {
                db.counters.backfill_rounds.inc();
                db.counters
                    .backfill_last_success
                    .store(now / 1000, Ordering::Relaxed);
                if r.buckets_differing > 0 {
                    tracing::info!(
                        peer = %config.peer_url,
                        buckets = r.buckets_differing,
                        fetched = r.samples_fetched,
                        written = r.samples_written,
                        "peer backfill filled differing buckets"
                    );
                }
            }
            Err(e) => {
                db.counters.backfill_failures.inc();
                // Next time compare the whole lookback again: the gap may be older than `recent`.
                full_due = 0;
                tracing::warn!(peer = %config.peer_url, error = %e, "peer backfill round failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.wait_for(|&s| s) => return,
        }
    }
}
