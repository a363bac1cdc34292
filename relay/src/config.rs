//! Configuration of queues, senders and the standalone relay. Option names carry their units;
//! each `Default` is the documented default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::tls::TlsConfig;
use crate::{Error, Result};

/// What a full queue does with a new batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse the batch; the receiver answers 429 so the sender backs off (no data is lost).
    #[default]
    Block,
    /// Delete the oldest segments to make room, counted as dropped with reason `queue_full`.
    DropOldest,
}

/// The durable queue of one destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Upper bound on unacknowledged bytes on disk. Default 1 GiB.
    pub max_queue_bytes: u64,
    /// Size at which a segment file is closed and a new one started. Default 16 MiB, at most
    /// a quarter of `max_queue_bytes` so `drop_oldest` frees space in small steps.
    pub segment_bytes: u64,
    pub overflow: OverflowPolicy,
    /// How often the read position is persisted; after a crash at most this much already
    /// delivered data is sent again. Default 1 s.
    pub checkpoint_interval_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queue_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            overflow: OverflowPolicy::Block,
            checkpoint_interval_ms: 1000,
        }
    }
}

impl QueueConfig {
    /// Checks limits and returns the effective segment size.
    pub fn validate(&self) -> Result<u64> {
        if self.max_queue_bytes < 1 << 20 {
            return Err(Error::Config(format!(
                "max_queue_bytes = {} is too small: use at least 1048576 (1 MiB)",
                self.max_queue_bytes
            )));
        }
        if self.segment_bytes < 4096 {
            return Err(Error::Config("segment_bytes must be at least 4096".into()));
        }
        Ok(self.segment_bytes.min(self.max_queue_bytes / 4))
    }
}

/// One remote-write destination, as Prometheus's `remote_write` + `queue_config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderConfig {
    /// Receiver URL, e.g. `http://central-a:9090/api/v1/write`.
    pub url: String,
    /// Name used in self-metrics (`destination` label); defaults to the URL's host:port.
    pub name: Option<String>,
    /// Extra HTTP headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Maximum samples (plus histograms and exemplars) per request. Default 2000.
    pub max_samples_per_send: usize,
    /// Send a partial batch after this long. Default 5 s.
    pub batch_send_deadline_seconds: f64,
    /// Concurrent senders; series are sharded by fingerprint so each keeps its order. Default 4.
    pub shards: usize,
    /// First retry delay. Default 30 ms.
    pub min_backoff_ms: u64,
    /// Cap of the exponential backoff. Default 5 s.
    pub max_backoff_ms: u64,
    /// Per-request timeout. Default 30 s.
    pub remote_timeout_seconds: f64,
    /// Retry on 429 (default true, as Prometheus 2.x); when false a 429 drops the batch.
    pub retry_on_http_429: bool,
    /// Drop samples older than this instead of sending them; 0 disables. Default 0.
    pub sample_age_limit_seconds: u64,
    /// Send remote-write 2.0 (`io.prometheus.write.v2.Request`) instead of 1.0. Default false.
    pub remote_write_v2: bool,
    /// TLS for `https://` URLs; none: the system's roots.
    pub tls_config: Option<TlsConfig>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            name: None,
            headers: BTreeMap::new(),
            max_samples_per_send: 2000,
            batch_send_deadline_seconds: 5.0,
            shards: 4,
            min_backoff_ms: 30,
            max_backoff_ms: 5000,
            remote_timeout_seconds: 30.0,
            retry_on_http_429: true,
            sample_age_limit_seconds: 0,
            remote_write_v2: false,
            tls_config: None,
        }
    }
}

impl SenderConfig {
    /// Checks the configuration and returns the destination name.
    pub fn validate(&self) -> Result<String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            Error::Config(format!(
                "remote_write url {:?} is not a valid URL ({e}); use e.g. http://host:9090/api/v1/write",
                self.url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "remote_write url {:?}: use http:// or https://",
                self.url
            )));
        }
        if let Some(tls) = &self.tls_config {
            tls.validate().map_err(Error::Config)?;
        }
        if self.max_samples_per_send == 0 || self.shards == 0 {
            return Err(Error::Config(
                "max_samples_per_send and shards must be at least 1".into(),
            ));
        }
        if !(self.batch_send_deadline_seconds > 0.0 && self.remote_timeout_seconds > 0.0) {
            return Err(Error::Config(
                "batch_send_deadline_seconds and remote_timeout_seconds must be positive".into(),
            ));
        }
        if self.min_backoff_ms == 0 || self.max_backoff_ms < self.min_backoff_ms {
            return Err(Error::Config(
                "need 0 < min_backoff_ms <= max_backoff_ms".into(),
            ));
        }
        Ok(destination_name(self.name.as_deref(), &url))
    }

    pub(crate) fn batch_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.batch_send_deadline_seconds)
    }
}

/// A destination's name in self-metrics and queue directories: `name`, or the URL's
/// host:port.
pub fn destination_name(name: Option<&str>, url: &reqwest::Url) -> String {
    match name {
        Some(n) => n.to_string(),
        None => format!(
            "{}:{}",
            url.host_str().unwrap_or("unknown"),
            url.port_or_known_default().unwrap_or(80)
        ),
    }
}

/// The standalone relay: one listener, one queue, one destination.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    pub queue_dir: PathBuf,
    pub queue: QueueConfig,
    pub remote_write: SenderConfig,
    /// Largest accepted request body (compressed). Default 32 MiB: 413 above.
    pub max_request_bytes: usize,
    /// Largest accepted decoded body; guards against snappy bombs. Default 256 MiB.
    pub max_decoded_bytes: usize,
}

impl RelayConfig {
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 << 20;
    pub const DEFAULT_MAX_DECODED_BYTES: usize = 256 << 20;
}
