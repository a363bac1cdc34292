//! Sending alerts to Alertmanager as Prometheus 2.42's notifier does: a bounded queue (the
//! oldest alerts are dropped when it is full), batches of 64 POSTed as JSON to
//! `/api/v2/alerts` of every Alertmanager at once, a batch counting as sent when one of them
//! took it. There are no retries: an alert that keeps firing is sent again after the resend
//! delay, and Alertmanager ends an alert that is not re-sent at its `endsAt`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_wire::alert::PostableAlert;
use tokio::sync::{Notify, watch};

use super::expand::query_escape;
use super::group::Alert;
use super::manager::RulesConfig;
use crate::sync::lock;

/// Alerts per request (Prometheus 2.42's `maxBatchSize`).
pub const BATCH: usize = 64;

/// How long a stopping central keeps sending what is queued.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Where alerts go.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Base URLs of the Alertmanagers (`http://am:9093`); each gets every alert.
    pub alertmanagers: Vec<String>,
    /// Per request (`alertmanagers[].timeout`, 10s).
    pub timeout: Duration,
    /// Most alerts waiting (`--alertmanager.notification-queue-capacity`, 10000).
    pub queue_capacity: usize,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            alertmanagers: Vec::new(),
            timeout: Duration::from_secs(10),
            queue_capacity: 10_000,
        }
    }
}

/// Counters of the notifier, for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifierMetrics {
    /// Alerts in batches at least one Alertmanager accepted.
    pub sent: AtomicU64,
    /// Requests that failed (per Alertmanager).
    pub errors: AtomicU64,
    /// Alerts dropped: queue full, or no Alertmanager took their batch.
    pub dropped: AtomicU64,
}

#[derive(Debug)]
pub struct Notifier {
    config: NotifierConfig,
    client: reqwest::Client,
    queue: Mutex<VecDeque<PostableAlert>>,
    more: Notify,
    pub metrics: NotifierMetrics,
}

/// The alert as Alertmanager's API takes it (Prometheus's `rules.SendAlerts`): starting when
/// it fired, ending when it resolved or, while firing, when it is due again (valid until),
/// with a link to the rule's expression.
pub fn postable(alert: &Alert, query: &str, config: &RulesConfig) -> PostableAlert {
    let mut labels = alert.labels.clone();
    for (k, v) in &config.external_labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let time = |ms: i64| {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_millis(at).to_string()
    };
    PostableAlert {
        labels,
        annotations: alert.annotations.clone(),
        starts_at: time(alert.fired_at.unwrap_or(alert.active_at)),
        ends_at: time(alert.resolved_at.unwrap_or(alert.valid_until)),
        generator_url: format!(
            "{}/graph?g0.expr={}&g0.tab=1",
            config.external_url.trim_end_matches('/'),
            query_escape(query)
        ),
    }
}

impl Notifier {
    pub fn new(config: NotifierConfig) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Arc::new(Self {
            config,
            client,
            queue: Mutex::new(VecDeque::new()),
            more: Notify::new(),
            metrics: NotifierMetrics::default(),
        }))
    }

    /// Queues a rule's alerts; the oldest queued alerts make room when the queue is full.
    pub fn send(&self, alerts: &[PostableAlert]) {
        if self.config.alertmanagers.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        queue.extend(alerts.iter().cloned());
        let over = queue.len().saturating_sub(self.config.queue_capacity);
        if over > 0 {
            queue.drain(..over);
            self.metrics
                .dropped
                .fetch_add(over as u64, Ordering::Relaxed);
            tracing::warn!(dropped = over, "alert queue full, oldest alerts dropped");
        }
        drop(queue);
        self.more.notify_one();
    }

    /// Alerts waiting to be sent.
    pub fn queue_length(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Sends queued alerts until `stop`; what is queued then gets [`DRAIN_TIME`] to go.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            while let Some(batch) = self.next_batch() {
                self.send_batch(batch).await;
            }
            tokio::select! {
                _ = self.more.notified() => {}
                _ = stop.wait_for(|&s| s) => break,
            }
        }
        let drain = async {
            while let Some(batch) = self.next_batch() {
                self.send_batch(batch).await;
            }
        };
        if tokio::time::timeout(DRAIN_TIME, drain).await.is_err() {
            let left = self.queue_length();
            tracing::warn!(left, "alerts not sent before stopping");
        }
    }

    fn next_batch(&self) -> Option<Vec<PostableAlert>> {
        let mut queue = lock(&self.queue);
        if queue.is_empty() {
            return None;
        }
        let n = queue.len().min(BATCH);
        Some(queue.drain(..n).collect())
    }

    /// POSTs one batch to every Alertmanager at once.
    async fn send_batch(&self, batch: Vec<PostableAlert>) {
        let body = match serde_json::to_vec(&batch) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!("cannot encode alerts: {e}");
                return;
            }
        };
        let mut requests = tokio::task::JoinSet::new();
        for base in &self.config.alertmanagers {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            let request = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            requests.spawn(async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{url}: HTTP {}", r.status())),
                    Err(e) => Err(format!("{url}: {e}")),
                }
            });
        }
        let mut delivered = false;
        while let Some(result) = requests.join_next().await {
            match result {
                Ok(Ok(())) => delivered = true,
                Ok(Err(e)) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("cannot send alerts to Alertmanager: {e}");
                }
                Err(e) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("alert request task failed: {e}");
                }
            }
        }
        let n = batch.len() as u64;
        if delivered {
            self.metrics.sent.fetch_add(n, Ordering::Relaxed);
        } else {
            self.metrics.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}
