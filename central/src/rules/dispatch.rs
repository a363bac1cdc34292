//! Direct webhook receivers, grouped, deduplicated and repeated as Alertmanager 0.25 does
//! (its `dispatch` and `notify` packages), and delivered once across the two AZs.
//!
//! # Grouping
//! Every alert the rules send (the same alerts Alertmanager gets on `/api/v2/alerts`) is
//! routed through the [`route`](super::route) tree and kept in the group of each matching
//! route, keyed by the route and the alert's `group_by` labels. An alert is resolved once its
//! `endsAt` has passed. A group is flushed `group_wait` after it was created (at once when its
//! first alert started more than `group_wait` ago), then every `group_interval`. At a flush,
//! each webhook of the receiver is sent the whole group (Alertmanager's `DedupStage`) when
//! - nothing was sent for the group before and an alert fires;
//! - an alert fires that the last notification did not have firing;
//! - everything resolved and the last notification had alerts firing;
//! - with `send_resolved`, an alert resolved that the last notification did not have resolved;
//! - or the last notification is older than `repeat_interval`.
//!
//! A notification is retried on connection errors and 5xx until the group's next interval;
//! a 4xx is not retried. Resolved alerts leave the group after a successful flush.
//!
//! # Once across two AZs
//! Both AZs evaluate the same rules and keep the same groups. The notification log (what was
//! last sent for each receiver, webhook and group, as Alertmanager's `nflog`) is shared:
//! - The **sender** is the AZ whose `--az` sorts first while both answer. Every notification
//!   it sends is added to the peer's log (`POST /api/v1/notifications/log`), so the peer
//!   knows what the receivers have been told.
//! - The other AZ flushes its groups at the same intervals but sends nothing; a group it finds
//!   due is looked at again after one peer check, by which time the sender's log entry has
//!   normally arrived.
//! - Each AZ asks its peer for `/api/v1/notifications/status` every check interval. After two
//!   failed checks in a row the remaining AZ sends, starting from the shared log, so nothing
//!   already sent is sent again and nothing due waits longer than one group interval.
//! - An AZ that starts (or sees its peer come back) first reads the peer's whole log and
//!   sends only after two more checks, so the peer has seen it too and stopped sending.
//! - The log is written to the data directory, so a restart does not repeat notifications.
//!
//! Without `--peer-url` the central sends on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_wire::alert::{
    KV, NOT_ENDED, PostableAlert, Status, WebhookAlert, WebhookMessage, fingerprint,
    label_set_string,
};
use strata_wire::clock::now_ms;
use tokio::sync::{Notify, watch};

use super::notify::DRAIN_TIME;
use super::route::{NotifyConfig, Route, Webhook};

/// How long notification log entries are kept (Alertmanager's `--data.retention`, 120h).
const LOG_RETENTION_MS: i64 = 120 * 3600 * 1000;

/// Failed peer checks after which the remaining AZ sends.
const PEER_FAILURES: u32 = 2;

/// Where the dispatcher sends and with whom it shares the log.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub notify: Option<NotifyConfig>,
    /// This central's `--az`.
    pub az: String,
    /// The other AZ's central.
    pub peer: Option<String>,
    /// How often the peer is checked.
    pub peer_check: Duration,
    /// The central's `--external-url`, the `externalURL` of messages.
    pub external_url: String,
    /// Where the notification log is kept.
    pub log_file: Option<PathBuf>,
}

/// What was last sent to one webhook for one group (Alertmanager's `nflogpb.Entry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub receiver: String,
    /// Index of the webhook among the receiver's `webhook_configs`.
    pub integration: usize,
    pub group_key: String,
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    /// Unix milliseconds of the notification.
    pub timestamp_ms: i64,
}

impl LogEntry {
    fn key(&self) -> (String, usize, String) {
        (
            self.receiver.clone(),
            self.integration,
            self.group_key.clone(),
        )
    }
}

/// An alert kept in a group.
#[derive(Debug, Clone)]
struct Held {
    alert: PostableAlert,
    ends_ms: i64,
    /// Bumped when the alert is replaced; a resolved alert leaves the group after a flush
    /// only if it was not replaced meanwhile (Alertmanager's `DeleteIfNotModified`).
    version: u64,
}

#[derive(Debug)]
struct Group {
    route: Route,
    labels: KV,
    alerts: BTreeMap<String, Held>,
    next_flush_ms: i64,
    flushed: bool,
    /// A flush is in flight.
    busy: bool,
}

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<String, Group>,
    log: BTreeMap<(String, usize, String), LogEntry>,
    version: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DispatchMetrics {
    /// Notifications delivered, by receiver.
    pub sent: Mutex<BTreeMap<String, u64>>,
    /// Notifications that could not be delivered before the group's next interval.
    pub failed: Mutex<BTreeMap<String, u64>>,
    /// Requests to webhooks that failed (each attempt).
    pub request_errors: AtomicU64,
    /// Flushes left to the peer AZ.
    pub deferred: AtomicU64,
    /// Failed checks of the peer.
    pub peer_check_failures: AtomicU64,
}

/// What the peer check has found.
#[derive(Debug, Default)]
struct Peer {
    az: Option<String>,
    failures: u32,
    /// When the peer's log was read after it (re)appeared; sending waits two checks after it.
    synced_at_ms: Option<i64>,
}

#[derive(Debug)]
pub struct Dispatcher {
    config: DispatchConfig,
    client: reqwest::Client,
    state: Mutex<State>,
    peer: Mutex<Peer>,
    sender: AtomicBool,
    more: Notify,
    pub metrics: DispatchMetrics,
}

/// The peer's answer on `/api/v1/notifications/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub az: String,
    pub sender: bool,
    pub groups: usize,
    pub log_entries: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_time(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Alertmanager's `DedupStage.needsUpdate`: whether a group with these firing and resolved
/// alerts must be sent, given the last notification.
fn needs_update(
    last: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat_ms: i64,
    now_ms: i64,
) -> bool {
    let Some(last) = last else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&last.firing) {
        return true;
    }
    if firing.is_empty() {
        // Alerts that fired and resolved between two flushes were never told: nothing to send.
        return !last.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&last.resolved) {
        return true;
    }
    last.timestamp_ms < now_ms - repeat_ms
}

/// Alertmanager's `types.AlertSlice` order: by `job`, then `instance` (alerts with the label
/// first), then by labels as `LabelSet.Before` compares them.
fn alert_order(a: &KV, b: &KV) -> std::cmp::Ordering {
    for name in ["job", "instance"] {
        match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            (Some(_), None) => return std::cmp::Ordering::Less,
            (None, Some(_)) => return std::cmp::Ordering::Greater,
            _ => {}
        }
    }
    for ((ka, va), (kb, vb)) in a.iter().zip(b.iter()) {
        if ka != kb {
            return ka.cmp(kb);
        }
        if va != vb {
            return va.cmp(vb);
        }
    }
    a.len().cmp(&b.len())
}

/// Go's `regexp.QuoteMeta`, which Alertmanager applies to the receiver name of webhook
/// messages (`web.hook` is sent as `web\.hook`); receivers reading Alertmanager's messages
/// see the same name from strata.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A flush in flight: what it sends and to whom.
struct Flush {
    group_key: String,
    route: Route,
    labels: KV,
    /// By fingerprint: the alert, resolved or not, and its version.
    alerts: Vec<(String, PostableAlert, bool, u64)>,
    now_ms: i64,
}

/// How one webhook's part of a flush went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Nothing new to tell, or told.
    Done,
    /// Due, but the peer AZ sends.
    Deferred,
    Failed,
}

impl Dispatcher {
    /// A dispatcher; reads the notification log file when there is one.
    pub fn new(config: DispatchConfig) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut state = State::default();
        if let Some(path) = &config.log_file
            && path.exists()
        {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let entries: Vec<LogEntry> = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}: {e}; it is the log of webhook notifications sent, remove it to start \
                     afresh (alerts firing now will then be sent again)",
                    path.display()
                )
            })?;
            for e in entries {
                state.log.insert(e.key(), e);
            }
        }
        let sender = config.peer.is_none();
        Ok(Arc::new(Self {
            config,
            client,
            state: Mutex::new(state),
            peer: Mutex::new(Peer::default()),
            sender: AtomicBool::new(sender),
            more: Notify::new(),
            metrics: DispatchMetrics::default(),
        }))
    }

    /// Whether any webhook receivers are configured.
    pub fn enabled(&self) -> bool {
        self.config.notify.is_some()
    }

    /// Whether this AZ sends webhook notifications now.
    pub fn is_sender(&self) -> bool {
        self.sender.load(Ordering::Relaxed)
    }

    /// The alert groups held.
    pub fn group_count(&self) -> usize {
        lock(&self.state).groups.len()
    }

    pub fn status(&self) -> PeerStatus {
        let state = lock(&self.state);
        PeerStatus {
            az: self.config.az.clone(),
            sender: self.is_sender(),
            groups: state.groups.len(),
            log_entries: state.log.len(),
        }
    }

    /// The notification log.
    pub fn log(&self) -> Vec<LogEntry> {
        lock(&self.state).log.values().cloned().collect()
    }

    /// Adds the peer's entries to the log, keeping the newer entry of each group.
    pub fn merge(&self, entries: Vec<LogEntry>) {
        {
            let mut state = lock(&self.state);
            for e in entries {
                let key = e.key();
                match state.log.get(&key) {
                    Some(have) if have.timestamp_ms >= e.timestamp_ms => {}
                    _ => {
                        state.log.insert(key, e);
                    }
                }
            }
        }
        self.save();
    }

    /// Takes alerts as they are sent to Alertmanager.
    pub fn insert(&self, alerts: &[PostableAlert]) {
        let Some(notify) = &self.config.notify else {
            return;
        };
        let now = now_ms();
        let mut state = lock(&self.state);
        for alert in alerts {
            let (Some(starts), Some(ends)) =
                (parse_time(&alert.starts_at), parse_time(&alert.ends_at))
            else {
                tracing::warn!(labels = ?alert.labels, "alert with unreadable times not routed");
                continue;
            };
            let fp = fingerprint(&alert.labels);
            for route in notify.route.matching(&alert.labels) {
                let labels = route.group_labels(&alert.labels);
                let key = format!("{}:{}", route.key, label_set_string(&labels));
                state.version += 1;
                let version = state.version;
                let group = state.groups.entry(key).or_insert_with(|| Group {
                    route: route.clone(),
                    labels,
                    alerts: BTreeMap::new(),
                    next_flush_ms: now + ms(route.group_wait),
                    flushed: false,
                    busy: false,
                });
                group.alerts.insert(
                    fp.clone(),
                    Held {
                        alert: alert.clone(),
                        ends_ms: ends,
                        version,
                    },
                );
                if !group.flushed && starts + ms(route.group_wait) < now {
                    group.next_flush_ms = now;
                }
            }
        }
        drop(state);
        self.more.notify_one();
    }

    /// Flushes groups when due until `stop`; flushes in flight then get [`DRAIN_TIME`].
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.enabled() {
            return;
        }
        let checker = self
            .config
            .peer
            .clone()
            .map(|peer| tokio::spawn(self.clone().check_peer(peer, stop.clone())));
        let mut flushes = tokio::task::JoinSet::new();
        loop {
            let now = now_ms();
            let mut next = now + 1000;
            for flush in self.due(now, &mut next) {
                let me = self.clone();
                flushes.spawn(async move { me.flush(flush).await });
            }
            while flushes.try_join_next().is_some() {}
            let wait = Duration::from_millis(u64::try_from(next - now).unwrap_or(0).max(10));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.more.notified() => {}
                _ = stop.wait_for(|&s| s) => break,
            }
        }
        if tokio::time::timeout(DRAIN_TIME, async {
            while flushes.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("webhook notifications still in flight at stop");
        }
        if let Some(c) = checker {
            let _ = c.await;
        }
    }

    /// Groups whose flush is due, marked busy; `next` becomes the earliest later flush.
    fn due(&self, now: i64, next: &mut i64) -> Vec<Flush> {
        let mut state = lock(&self.state);
        let mut out = Vec::new();
        for (key, g) in &mut state.groups {
            if g.busy {
                continue;
            }
            if g.next_flush_ms > now {
                *next = (*next).min(g.next_flush_ms);
                continue;
            }
            g.busy = true;
            g.flushed = true;
            g.next_flush_ms = now + ms(g.route.group_interval);
            let mut alerts: Vec<_> = g
                .alerts
                .iter()
                .map(|(fp, h)| (fp.clone(), h.alert.clone(), h.ends_ms <= now, h.version))
                .collect();
            alerts.sort_by(|a, b| alert_order(&a.1.labels, &b.1.labels));
            out.push(Flush {
                group_key: key.clone(),
                route: g.route.clone(),
                labels: g.labels.clone(),
                alerts,
                now_ms: now,
            });
        }
        out
    }

    async fn flush(self: Arc<Self>, f: Flush) {
        let Some(notify) = &self.config.notify else {
            return;
        };
        let webhooks = notify
            .receivers
            .get(&f.route.receiver)
            .cloned()
            .unwrap_or_default();
        let firing: BTreeSet<String> = f
            .alerts
            .iter()
            .filter(|a| !a.2)
            .map(|a| a.0.clone())
            .collect();
        let resolved: BTreeSet<String> = f
            .alerts
            .iter()
            .filter(|a| a.2)
            .map(|a| a.0.clone())
            .collect();
        let mut outcomes = Vec::new();
        for (i, hook) in webhooks.iter().enumerate() {
            let key = (f.route.receiver.clone(), i, f.group_key.clone());
            let last = lock(&self.state).log.get(&key).cloned();
            let due = needs_update(
                last.as_ref(),
                &firing,
                &resolved,
                hook.send_resolved,
                ms(f.route.repeat_interval),
                f.now_ms,
            );
            let outcome = if !due {
                Outcome::Done
            } else if !self.is_sender() {
                self.metrics.deferred.fetch_add(1, Ordering::Relaxed);
                Outcome::Deferred
            } else if self.send(&f, hook).await {
                let entry = LogEntry {
                    receiver: f.route.receiver.clone(),
                    integration: i,
                    group_key: f.group_key.clone(),
                    firing: firing.clone(),
                    resolved: resolved.clone(),
                    timestamp_ms: f.now_ms,
                };
                lock(&self.state).log.insert(key, entry.clone());
                self.save();
                self.replicate(entry).await;
                Outcome::Done
            } else {
                Outcome::Failed
            };
            outcomes.push(outcome);
        }
        let mut state = lock(&self.state);
        let in_log: BTreeSet<String> = (0..webhooks.len())
            .filter_map(|i| {
                state
                    .log
                    .get(&(f.route.receiver.clone(), i, f.group_key.clone()))
            })
            .flat_map(|e| e.firing.iter().cloned())
            .collect();
        let Some(g) = state.groups.get_mut(&f.group_key) else {
            return;
        };
        g.busy = false;
        let all_done = outcomes.iter().all(|&o| o == Outcome::Done);
        for (fp, _, is_resolved, version) in &f.alerts {
            // Resolved alerts leave after a flush that told every webhook; while the peer AZ
            // sends, once its log shows them no longer firing.
            let told = all_done || (outcomes.contains(&Outcome::Deferred) && !in_log.contains(fp));
            if *is_resolved && told && g.alerts.get(fp).is_some_and(|h| h.version == *version) {
                g.alerts.remove(fp);
            }
        }
        if outcomes.contains(&Outcome::Deferred) {
            // The sender's log entry is due soon; look again after one peer check.
            g.next_flush_ms = g.next_flush_ms.min(now_ms() + ms(self.config.peer_check));
        }
        if g.alerts.is_empty() {
            state.groups.remove(&f.group_key);
        }
    }

    /// POSTs the group to one webhook, retrying connection errors and 5xx until the group's
    /// next interval (Alertmanager's `RetryStage` with the webhook's `shouldRetry`).
    async fn send(&self, f: &Flush, hook: &Webhook) -> bool {
        let alerts: Vec<WebhookAlert> = f
            .alerts
            .iter()
            .filter(|a| hook.send_resolved || !a.2)
            .map(|(fp, alert, resolved, _)| {
                let mut alert = alert.clone();
                if !resolved {
                    alert.ends_at = NOT_ENDED.to_string();
                }
                WebhookAlert {
                    status: if *resolved {
                        Status::Resolved
                    } else {
                        Status::Firing
                    },
                    alert,
                    fingerprint: fp.clone(),
                }
            })
            .collect();
        if alerts.is_empty() {
            // Only resolved alerts and no send_resolved: logged as told, nothing to POST.
            return true;
        }
        let total = alerts.len();
        let keep = match hook.max_alerts {
            0 => total,
            n => total.min(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let mut message = WebhookMessage::new(
            &quote_meta(&f.route.receiver),
            f.group_key.clone(),
            f.labels.clone(),
            &self.config.external_url,
            alerts.into_iter().take(keep).collect(),
        );
        message.truncated_alerts = (total - keep) as u64;
        let body = match serde_json::to_vec(&message) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!("cannot encode a webhook message: {e}");
                return false;
            }
        };
        let deadline = tokio::time::Instant::now() + f.route.group_interval;
        let mut backoff = Duration::from_millis(500);
        let receiver = &f.route.receiver;
        loop {
            let attempt = self
                .client
                .post(&hook.url)
                .timeout(hook.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let retry = match attempt {
                Ok(r) if r.status().is_success() => {
                    *lock(&self.metrics.sent)
                        .entry(receiver.clone())
                        .or_default() += 1;
                    return true;
                }
                Ok(r) => {
                    let status = r.status();
                    tracing::warn!(%receiver, url = %hook.url, %status, "webhook refused the notification");
                    status.is_server_error()
                }
                Err(e) => {
                    tracing::warn!(%receiver, url = %hook.url, "webhook not reached: {e}");
                    true
                }
            };
            self.metrics.request_errors.fetch_add(1, Ordering::Relaxed);
            if !retry || tokio::time::Instant::now() + backoff >= deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        *lock(&self.metrics.failed)
            .entry(receiver.clone())
            .or_default() += 1;
        false
    }

    /// Adds a log entry to the peer's log.
    async fn replicate(&self, entry: LogEntry) {
        let Some(peer) = &self.config.peer else {
            return;
        };
        let url = format!("{}/api/v1/notifications/log", peer.trim_end_matches('/'));
        let sent = self
            .client
            .post(&url)
            .timeout(self.config.peer_check)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&[entry]).unwrap_or_default())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(%url, status = %r.status(), "peer refused a notification log entry")
            }
            Err(e) => tracing::debug!(%url, "peer did not take a notification log entry: {e}"),
        }
    }

    /// Writes the log file, without entries past the retention.
    fn save(&self) {
        let Some(path) = &self.config.log_file else {
            return;
        };
        let entries: Vec<LogEntry> = {
            let mut state = lock(&self.state);
            let oldest = now_ms() - LOG_RETENTION_MS;
            state.log.retain(|_, e| e.timestamp_ms >= oldest);
            state.log.values().cloned().collect()
        };
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&entries)?)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::error!(path = %path.display(), "cannot write the notification log: {e}");
        }
    }

    /// Checks the peer every `peer_check` and decides which AZ sends.
    async fn check_peer(self: Arc<Self>, peer: String, mut stop: watch::Receiver<bool>) {
        let base = peer.trim_end_matches('/').to_string();
        let check = self.config.peer_check;
        loop {
            let status: Option<PeerStatus> = self
                .get_json(&format!("{base}/api/v1/notifications/status"), check)
                .await;
            let synced = status.is_some() && lock(&self.peer).synced_at_ms.is_some();
            let log = if status.is_some() && !synced {
                self.fetch_log(&base).await
            } else {
                None
            };
            let now = now_ms();
            let sender = {
                let mut p = lock(&self.peer);
                match status {
                    Some(s) => {
                        p.failures = 0;
                        if let Some(entries) = log {
                            drop(p);
                            self.merge(entries);
                            p = lock(&self.peer);
                            p.synced_at_ms = Some(now);
                        }
                        if s.az == self.config.az {
                            tracing::error!(az = %s.az, "both centrals have the same --az; give them different names, or both send webhook notifications");
                        }
                        p.az = Some(s.az);
                    }
                    None => {
                        p.failures += 1;
                        self.metrics
                            .peer_check_failures
                            .fetch_add(1, Ordering::Relaxed);
                        if p.failures >= PEER_FAILURES {
                            p.synced_at_ms = None;
                        }
                    }
                }
                self.decide(&p, now)
            };
            let was = self.sender.swap(sender, Ordering::Relaxed);
            if was != sender {
                tracing::info!(
                    az = %self.config.az,
                    sender,
                    "webhook notifications are now {} this AZ",
                    if sender { "sent from" } else { "left to the peer of" }
                );
            }
            tokio::select! {
                () = tokio::time::sleep(check) => {}
                _ = stop.wait_for(|&s| s) => return,
            }
        }
    }

    /// Whether this AZ sends, given what the peer check found.
    fn decide(&self, p: &Peer, now: i64) -> bool {
        if p.failures >= PEER_FAILURES {
            return true;
        }
        let (Some(az), Some(synced)) = (&p.az, p.synced_at_ms) else {
            return false;
        };
        let settled = now - synced >= 2 * ms(self.config.peer_check);
        settled && self.config.az.as_str() <= az.as_str()
    }

    async fn fetch_log(&self, base: &str) -> Option<Vec<LogEntry>> {
        let timeout = self.config.peer_check.max(Duration::from_secs(10));
        self.get_json(&format!("{base}/api/v1/notifications/log"), timeout)
            .await
    }

    /// GETs `url` and decodes its JSON; `None` on any failure.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Option<T> {
        let r = self.client.get(url).timeout(timeout).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        serde_json::from_slice(&r.bytes().await.ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn entry(firing: &[&str], resolved: &[&str], at: i64) -> LogEntry {
        LogEntry {
            receiver: "r".into(),
            integration: 0,
            group_key: "{}:{}".into(),
            firing: set(firing),
            resolved: set(resolved),
            timestamp_ms: at,
        }
    }

    #[test]
    fn groups_are_sent_when_alertmanager_would_send_them() {
        let repeat = 3_600_000;
        let now = 10_000_000;
        let recent = now - 60_000;
        let cases = [
            (
                "nothing sent yet, one fires",
                None,
                &["a"][..],
                &[][..],
                true,
                true,
            ),
            (
                "nothing sent yet, only resolved",
                None,
                &[],
                &["a"],
                true,
                false,
            ),
            (
                "same firing set within the repeat interval",
                Some(entry(&["a"], &[], recent)),
                &["a"],
                &[],
                true,
                false,
            ),
            (
                "a new alert fires",
                Some(entry(&["a"], &[], recent)),
                &["a", "b"],
                &[],
                true,
                true,
            ),
            (
                "one of two resolved, send_resolved",
                Some(entry(&["a", "b"], &[], recent)),
                &["a"],
                &["b"],
                true,
                true,
            ),
            (
                "one of two resolved, no send_resolved",
                Some(entry(&["a", "b"], &[], recent)),
                &["a"],
                &["b"],
                false,
                false,
            ),
            (
                "all resolved: sent even without send_resolved, to clear the log",
                Some(entry(&["a"], &[], recent)),
                &[],
                &["a"],
                false,
                true,
            ),
            (
                "fired and resolved between two flushes after an all-resolved message",
                Some(entry(&[], &["a"], recent)),
                &[],
                &["b"],
                true,
                false,
            ),
            (
                "repeat interval passed",
                Some(entry(&["a"], &[], now - repeat - 1)),
                &["a"],
                &[],
                true,
                true,
            ),
        ];
        for (why, last, firing, resolved, send_resolved, want) in cases {
            let got = needs_update(
                last.as_ref(),
                &set(firing),
                &set(resolved),
                send_resolved,
                repeat,
                now,
            );
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn alerts_sort_by_job_then_instance_then_labels() {
        let kv = |pairs: &[(&str, &str)]| -> KV {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut alerts = vec![
            kv(&[("a", "1")]),
            kv(&[("instance", "i2"), ("job", "x")]),
            kv(&[("instance", "i1"), ("job", "x")]),
            kv(&[("job", "a")]),
            kv(&[("a", "0"), ("b", "1")]),
            kv(&[("a", "0")]),
        ];
        alerts.sort_by(alert_order);
        assert_eq!(
            alerts,
            [
                kv(&[("job", "a")]),
                kv(&[("instance", "i1"), ("job", "x")]),
                kv(&[("instance", "i2"), ("job", "x")]),
                kv(&[("a", "0")]),
                kv(&[("a", "0"), ("b", "1")]),
                kv(&[("a", "1")]),
            ]
        );
        assert_eq!(quote_meta("web.hook(1)"), "web\\.hook\\(1\\)");
    }
}
