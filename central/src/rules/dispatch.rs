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
//! - Every check interval each AZ reads the entries of its peer's log that changed since its
//!   last read (`GET /api/v1/notifications/log?after=N`, which also gives the peer's status);
//!   the sender also pushes each entry to the peer as soon as it is sent
//!   (`POST /api/v1/notifications/log`).
//! - The **sender** is the AZ whose `--az` sorts first, once the other reports that it does
//!   not send; the other AZ stops sending as soon as it reads the first AZ's log. Each AZ
//!   keeps its role until it has read its peer's log, and a retry is dropped when the AZ
//!   stops being the sender. Between the two there is at most one check with no sender,
//!   and due groups are looked at again after one check.
//! - The other AZ flushes its groups at the same intervals, sends nothing, and keeps each
//!   resolved alert until the log shows it no longer firing.
//! - After two failed checks in a row the remaining AZ sends, from the shared log: nothing
//!   already sent is sent again, and what is due goes out at its group's next interval.
//! - A group the sender leaves unsent for two group intervals and three checks (it may have
//!   restarted and forgotten a resolved alert) is sent by the other AZ.
//! - The log is written to the data directory, so a restart does not repeat notifications.
//! - If the AZs cannot reach each other but both run, both send: a receiver may be told
//!   twice, and never not at all.
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
use super::route::{GroupOptions, NotifyConfig, Webhook};
use crate::backfill::{peer_body, peer_err};
use crate::server::parse_time;
use crate::sync::lock;

/// How long notification log entries are kept (Alertmanager's `--data.retention`, 120h).
const LOG_RETENTION_MS: i64 = 120 * 3600 * 1000;

/// Failed peer checks after which the remaining AZ sends.
const PEER_FAILURES: u32 = 2;

/// Where the dispatcher sends and with whom it shares the log.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The notification configuration file (`--notify-config`); reloaded by [`Dispatcher::reload`].
    pub notify_file: Option<PathBuf>,
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

/// A group: its route's id and its Alertmanager group key.
type GroupId = (String, String);

/// A log entry's identity: receiver, webhook index, group key.
type LogKey = (String, usize, String);

#[derive(Debug)]
struct Group {
    options: GroupOptions,
    labels: KV,
    alerts: BTreeMap<String, Held>,
    next_flush_ms: i64,
    flushed: bool,
    /// A flush is in flight.
    busy: bool,
    /// Since when flushes of this group found something due and left it to the peer AZ.
    deferred_since_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<GroupId, Group>,
    /// Each entry with the sequence number it got when it last changed here.
    log: BTreeMap<LogKey, (LogEntry, u64)>,
    /// The last sequence number given.
    seq: u64,
    version: u64,
    /// The log changed since it was last written to its file.
    dirty: bool,
}

impl State {
    /// Keeps `entry` unless the log has a newer one for its group.
    fn log_entry(&mut self, entry: LogEntry) {
        let key = entry.key();
        if self
            .log
            .get(&key)
            .is_some_and(|(have, _)| have.timestamp_ms >= entry.timestamp_ms)
        {
            return;
        }
        self.seq += 1;
        self.log.insert(key, (entry, self.seq));
        self.dirty = true;
    }
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

/// What the peer checks have found.
#[derive(Debug, Default)]
struct Peer {
    status: Option<PeerStatus>,
    failures: u32,
    /// The peer's log sequence number read up to; `None` until its log has been read since
    /// it (re)appeared.
    pulled: Option<u64>,
}

#[derive(Debug)]
pub struct Dispatcher {
    config: DispatchConfig,
    routing: Mutex<Option<Arc<NotifyConfig>>>,
    client: reqwest::Client,
    state: Mutex<State>,
    peer: Mutex<Peer>,
    sender: AtomicBool,
    more: Notify,
    pub metrics: DispatchMetrics,
}

/// How an AZ's dispatcher stands, on `/api/v1/notifications/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub az: String,
    /// Webhook receivers are configured.
    pub enabled: bool,
    /// This AZ sends the webhook notifications.
    pub sender: bool,
    pub groups: usize,
    pub log_entries: usize,
    /// The last sequence number of its log.
    pub seq: u64,
}

/// The answer on `/api/v1/notifications/log?after=N`: the entries changed after sequence
/// number N.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogPage {
    pub status: PeerStatus,
    pub entries: Vec<LogEntry>,
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
    id: GroupId,
    options: GroupOptions,
    labels: KV,
    /// By fingerprint: the alert, resolved or not, and its version.
    alerts: Vec<(String, PostableAlert, bool, u64)>,
    now_ms: i64,
    /// The peer AZ has left this group's due notifications unsent for too long: send them.
    overdue: bool,
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
    /// A dispatcher routing by `routing` (loaded from `config.notify_file`); reads the
    /// notification log file when there is one (a log that cannot be read is set aside with
    /// an error: alerts firing now are then notified again).
    pub fn new(config: DispatchConfig, routing: Option<NotifyConfig>) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut state = State::default();
        if let Some(path) = &config.log_file
            && path.exists()
        {
            let read = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<Vec<LogEntry>>(&b).map_err(|e| e.to_string())
                });
            match read {
                Ok(entries) => {
                    for e in entries {
                        state.log_entry(e);
                    }
                    state.dirty = false;
                }
                Err(e) => tracing::error!(
                    path = %path.display(),
                    "cannot read the log of webhook notifications sent ({e}); starting without \
                     it, so alerts firing now are notified again"
                ),
            }
        }
        let sender = config.peer.is_none();
        Ok(Arc::new(Self {
            config,
            routing: Mutex::new(routing.map(Arc::new)),
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
        self.routing().is_some()
    }

    fn routing(&self) -> Option<Arc<NotifyConfig>> {
        lock(&self.routing).clone()
    }

    /// Reads the notification configuration file again and gives the number of receivers;
    /// on errors the running configuration stays. The alerts held are routed again through
    /// the new tree, as Alertmanager does on a reload; the notification log keeps what was
    /// sent, so regrouping sends nothing twice.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.config.notify_file else {
            return Ok(0);
        };
        let routing = match NotifyConfig::load(path) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!("notification configuration not reloaded: {e}");
                return Err(e);
            }
        };
        let receivers = routing.receivers.len();
        let held: Vec<PostableAlert> = {
            let mut state = lock(&self.state);
            let mut latest: BTreeMap<String, Held> = BTreeMap::new();
            for group in std::mem::take(&mut state.groups).into_values() {
                for (fp, h) in group.alerts {
                    if latest.get(&fp).is_none_or(|have| have.version < h.version) {
                        latest.insert(fp, h);
                    }
                }
            }
            latest.into_values().map(|h| h.alert).collect()
        };
        *lock(&self.routing) = Some(routing);
        self.insert(&held);
        tracing::info!(receivers, "notification configuration reloaded");
        Ok(receivers)
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
            enabled: self.enabled(),
            sender: self.is_sender(),
            groups: state.groups.len(),
            log_entries: state.log.len(),
            seq: state.seq,
        }
    }

    /// The log entries that changed after sequence number `after` (all of them for 0).
    pub fn log_after(&self, after: u64) -> LogPage {
        let status = self.status();
        let entries = lock(&self.state)
            .log
            .values()
            .filter(|(_, seq)| *seq > after)
            .map(|(e, _)| e.clone())
            .collect();
        LogPage { status, entries }
    }

    /// Adds the peer's entries to the log, keeping the newer entry of each group.
    pub fn merge(&self, entries: Vec<LogEntry>) {
        let mut state = lock(&self.state);
        for e in entries {
            state.log_entry(e);
        }
    }

    /// Takes alerts as they are sent to Alertmanager.
    pub fn insert(&self, alerts: &[PostableAlert]) {
        let Some(notify) = self.routing() else {
            return;
        };
        let now = now_ms();
        let mut state = lock(&self.state);
        for alert in alerts {
            let (Some(starts), Some(ends)) = (
                parse_time(&alert.starts_at).ok(),
                parse_time(&alert.ends_at).ok(),
            ) else {
                tracing::warn!(labels = ?alert.labels, "alert with unreadable times not routed");
                continue;
            };
            let fp = fingerprint(&alert.labels);
            for route in notify.route.matching(&alert.labels) {
                let labels = route.group_labels(&alert.labels);
                let options = &route.options;
                let key = format!("{}:{}", options.key, label_set_string(&labels));
                state.version += 1;
                let version = state.version;
                let wait = ms(options.group_wait);
                let group = state
                    .groups
                    .entry((options.id.clone(), key))
                    .or_insert_with(|| Group {
                        options: options.clone(),
                        labels,
                        alerts: BTreeMap::new(),
                        next_flush_ms: now + wait,
                        flushed: false,
                        busy: false,
                        deferred_since_ms: None,
                    });
                group.alerts.insert(
                    fp.clone(),
                    Held {
                        alert: alert.clone(),
                        ends_ms: ends,
                        version,
                    },
                );
                if !group.flushed && starts + wait < now {
                    group.next_flush_ms = now;
                }
            }
        }
        drop(state);
        self.more.notify_one();
    }

    /// Flushes groups when due until `stop`; flushes in flight then get [`DRAIN_TIME`]. The
    /// log file is written at most once a second, when it changed.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let checker = self
            .config
            .peer
            .clone()
            .map(|peer| tokio::spawn(self.clone().check_peer(peer, stop.clone())));
        let mut flushes = tokio::task::JoinSet::new();
        let mut saved = tokio::time::Instant::now();
        loop {
            let now = now_ms();
            let mut next = now + 1000;
            for flush in self.due(now, &mut next) {
                flushes.spawn(self.clone().flush(flush));
            }
            while flushes.try_join_next().is_some() {}
            if saved.elapsed() >= Duration::from_secs(1) {
                self.save().await;
                saved = tokio::time::Instant::now();
            }
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
        self.save().await;
        if let Some(c) = checker {
            let _ = c.await;
        }
    }

    /// Groups whose flush is due, marked busy; `next` becomes the earliest later flush.
    fn due(&self, now: i64, next: &mut i64) -> Vec<Flush> {
        let patience = |o: &GroupOptions| 2 * ms(o.group_interval) + 3 * ms(self.config.peer_check);
        let mut state = lock(&self.state);
        let mut out = Vec::new();
        for (id, g) in &mut state.groups {
            if g.busy {
                continue;
            }
            if g.next_flush_ms > now {
                *next = (*next).min(g.next_flush_ms);
                continue;
            }
            g.busy = true;
            g.flushed = true;
            g.next_flush_ms = now + ms(g.options.group_interval);
            let mut alerts: Vec<_> = g
                .alerts
                .iter()
                .map(|(fp, h)| (fp.clone(), h.alert.clone(), h.ends_ms <= now, h.version))
                .collect();
            alerts.sort_by(|a, b| alert_order(&a.1.labels, &b.1.labels));
            out.push(Flush {
                id: id.clone(),
                options: g.options.clone(),
                labels: g.labels.clone(),
                alerts,
                now_ms: now,
                overdue: g
                    .deferred_since_ms
                    .is_some_and(|since| now - since > patience(&g.options)),
            });
        }
        out
    }

    async fn flush(self: Arc<Self>, f: Flush) {
        let webhooks = self
            .routing()
            .and_then(|n| n.receivers.get(&f.options.receiver).cloned())
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
        let receiver = f.options.receiver.clone();
        let group_key = f.id.1.clone();
        if f.overdue && !self.is_sender() {
            tracing::warn!(%receiver, %group_key, "the sender AZ has left this group's notification unsent; sending it from this AZ");
        }
        // Every webhook at once, with one deadline: the group's next interval (Alertmanager's
        // fan-out under the flush's context).
        let deadline = tokio::time::Instant::now() + f.options.group_interval;
        let f = Arc::new(f);
        let mut sends = tokio::task::JoinSet::new();
        let mut outcomes = vec![Outcome::Done; webhooks.len()];
        for (i, hook) in webhooks.iter().enumerate() {
            let key = (receiver.clone(), i, group_key.clone());
            let last = lock(&self.state).log.get(&key).map(|(e, _)| e.clone());
            let due = needs_update(
                last.as_ref(),
                &firing,
                &resolved,
                hook.send_resolved,
                ms(f.options.repeat_interval),
                f.now_ms,
            );
            if !due {
                continue;
            }
            if !self.is_sender() && !f.overdue {
                self.metrics.deferred.fetch_add(1, Ordering::Relaxed);
                outcomes[i] = Outcome::Deferred;
                continue;
            }
            let (me, f, hook) = (self.clone(), f.clone(), hook.clone());
            let entry = LogEntry {
                receiver: receiver.clone(),
                integration: i,
                group_key: group_key.clone(),
                firing: firing.clone(),
                resolved: resolved.clone(),
                timestamp_ms: f.now_ms,
            };
            sends.spawn(async move {
                let outcome = me.send(&f, &hook, deadline).await;
                if outcome == Outcome::Done {
                    lock(&me.state).log_entry(entry.clone());
                    me.replicate(entry).await;
                }
                (i, outcome)
            });
        }
        while let Some(done) = sends.join_next().await {
            if let Ok((i, outcome)) = done {
                outcomes[i] = outcome;
            }
        }
        let mut state = lock(&self.state);
        let in_log: BTreeSet<String> = (0..webhooks.len())
            .filter_map(|i| state.log.get(&(receiver.clone(), i, group_key.clone())))
            .flat_map(|(e, _)| e.firing.iter().cloned())
            .collect();
        // A reload may have regrouped the alerts meanwhile.
        let Some(g) = state.groups.get_mut(&f.id) else {
            return;
        };
        g.busy = false;
        let deferred = outcomes.contains(&Outcome::Deferred);
        let all_done = outcomes.iter().all(|&o| o == Outcome::Done);
        for (fp, _, is_resolved, version) in &f.alerts {
            // Resolved alerts leave after a flush that told every webhook; while the peer AZ
            // sends, once its log shows them no longer firing.
            let told = all_done || (deferred && !in_log.contains(fp));
            if *is_resolved && told && g.alerts.get(fp).is_some_and(|h| h.version == *version) {
                g.alerts.remove(fp);
            }
        }
        if deferred {
            g.deferred_since_ms.get_or_insert(f.now_ms);
            // The sender's log entry is due soon; look again after one peer check.
            g.next_flush_ms = g.next_flush_ms.min(now_ms() + ms(self.config.peer_check));
        } else {
            g.deferred_since_ms = None;
        }
        if g.alerts.is_empty() {
            state.groups.remove(&f.id);
        }
    }

    /// POSTs the group to one webhook, retrying connection errors and 5xx until `deadline`
    /// (Alertmanager's `RetryStage` with the webhook's `shouldRetry`). A retry is dropped
    /// when the peer AZ has become the sender meanwhile.
    async fn send(&self, f: &Flush, hook: &Webhook, deadline: tokio::time::Instant) -> Outcome {
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
            return Outcome::Done;
        }
        let total = alerts.len();
        let keep = match hook.max_alerts {
            0 => total,
            n => total.min(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let receiver = &f.options.receiver;
        let mut message = WebhookMessage::new(
            &quote_meta(receiver),
            f.id.1.clone(),
            f.labels.clone(),
            &self.config.external_url,
            alerts.into_iter().take(keep).collect(),
        );
        message.truncated_alerts = (total - keep) as u64;
        let body = match serde_json::to_vec(&message) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!("cannot encode a webhook message: {e}");
                return Outcome::Failed;
            }
        };
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut request = hook
                .client
                .post(&hook.url)
                .timeout(hook.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            match hook.http.authorization_header() {
                Ok(Some(auth)) => request = request.header(reqwest::header::AUTHORIZATION, auth),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%receiver, url = %hook.url, "webhook not sent: {e}");
                    break;
                }
            }
            let attempt = request.send().await;
            let retry = match attempt {
                Ok(r) if r.status().is_success() => {
                    *lock(&self.metrics.sent)
                        .entry(receiver.clone())
                        .or_default() += 1;
                    return Outcome::Done;
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
            if !self.is_sender() && !f.overdue {
                return Outcome::Deferred;
            }
        }
        *lock(&self.metrics.failed)
            .entry(receiver.clone())
            .or_default() += 1;
        Outcome::Failed
    }

    /// Adds a log entry to the peer's log at once; the peer also reads what it missed at its
    /// next check.
    async fn replicate(&self, entry: LogEntry) {
        let Some(peer) = &self.config.peer else {
            return;
        };
        let url = format!("{}/api/v1/notifications/log", peer.trim_end_matches('/'));
        let request = self
            .client
            .post(&url)
            .timeout(self.config.peer_check)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&[entry]).unwrap_or_default());
        if let Err(e) = peer_body(&url, request).await {
            tracing::debug!("the peer did not take a notification log entry: {e}");
        }
    }

    /// Writes the log file when the log changed, without entries past the retention.
    async fn save(&self) {
        let Some(path) = self.config.log_file.clone() else {
            return;
        };
        let entries: Vec<LogEntry> = {
            let mut state = lock(&self.state);
            let oldest = now_ms() - LOG_RETENTION_MS;
            let before = state.log.len();
            state.log.retain(|_, (e, _)| e.timestamp_ms >= oldest);
            if !state.dirty && state.log.len() == before {
                return;
            }
            state.dirty = false;
            state.log.values().map(|(e, _)| e.clone()).collect()
        };
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, &serde_json::to_vec(&entries)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                lock(&self.state).dirty = true;
                tracing::error!("cannot write the notification log: {e}");
            }
            Err(e) => tracing::error!("notification log writer failed: {e}"),
        }
    }

    /// Reads the peer's log changes every `peer_check` and decides which AZ sends.
    async fn check_peer(self: Arc<Self>, peer: String, mut stop: watch::Receiver<bool>) {
        let base = peer.trim_end_matches('/').to_string();
        let check = self.config.peer_check;
        let timeout = check.max(Duration::from_secs(2));
        loop {
            let after = lock(&self.peer).pulled.unwrap_or(0);
            let url = format!("{base}/api/v1/notifications/log?after={after}");
            let mut page = self.fetch_log(&url, timeout).await;
            if let Ok(p) = &page
                && p.status.seq < after
            {
                // The peer restarted and numbers its log afresh: read all of it.
                let url = format!("{base}/api/v1/notifications/log?after=0");
                page = self.fetch_log(&url, timeout).await;
            }
            let sender = {
                let mut p = lock(&self.peer);
                match page {
                    Ok(page) => {
                        p.failures = 0;
                        p.pulled = Some(page.status.seq);
                        if page.status.az == self.config.az {
                            tracing::error!(az = %page.status.az, "both centrals have the same --az; give them different names, or both send webhook notifications");
                        }
                        p.status = Some(page.status);
                        self.merge(page.entries);
                    }
                    Err(e) => {
                        p.failures += 1;
                        self.metrics
                            .peer_check_failures
                            .fetch_add(1, Ordering::Relaxed);
                        if p.failures == PEER_FAILURES {
                            tracing::warn!("the peer AZ does not answer: {e}");
                        }
                        if p.failures >= PEER_FAILURES {
                            p.pulled = None;
                        }
                    }
                }
                self.decide(&p)
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

    /// Whether this AZ sends, given what the peer checks found: alone when the peer is down or
    /// has no receivers; else the AZ whose name sorts first, once the other has stopped.
    fn decide(&self, p: &Peer) -> bool {
        if p.failures >= PEER_FAILURES {
            return true;
        }
        let (Some(status), Some(_)) = (&p.status, p.pulled) else {
            return self.is_sender();
        };
        if !status.enabled || status.az == self.config.az {
            return true;
        }
        self.config.az < status.az && !status.sender
    }

    /// GETs a page of the peer's log.
    async fn fetch_log(&self, url: &str, timeout: Duration) -> crate::Result<LogPage> {
        let body = peer_body(url, self.client.get(url).timeout(timeout)).await?;
        serde_json::from_slice(&body).map_err(|e| peer_err(url, e))
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
    fn a_reload_regroups_the_alerts_held_and_a_wrong_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.yml");
        let config = |group_by: &str| {
            format!(
                "route: {{receiver: r, group_by: {group_by}}}\nreceivers: [{{name: r, webhook_configs: [{{url: 'http://127.0.0.1:1/'}}]}}]\n"
            )
        };
        std::fs::write(&path, config("[alertname]")).unwrap();
        let d = Dispatcher::new(
            DispatchConfig {
                notify_file: Some(path.clone()),
                az: "az-a".into(),
                peer: None,
                peer_check: Duration::from_secs(5),
                external_url: "http://central:9301".into(),
                log_file: None,
            },
            Some(NotifyConfig::load(&path).unwrap()),
        )
        .unwrap();
        let alert = |instance: &str| PostableAlert {
            labels: KV::from([
                ("alertname".to_string(), "X".to_string()),
                ("instance".to_string(), instance.to_string()),
            ]),
            annotations: KV::new(),
            starts_at: "2026-11-22T08:00:00Z".into(),
            ends_at: "2099-01-01T00:00:00Z".into(),
            generator_url: String::new(),
        };
        d.insert(&[alert("a"), alert("b")]);
        assert_eq!(d.group_count(), 1);
        std::fs::write(&path, config("['...']")).unwrap();
        assert_eq!(d.reload(), Ok(1));
        assert_eq!(d.group_count(), 2);
        std::fs::write(&path, "route: {receiver: nobody}\n").unwrap();
        let err = d.reload().unwrap_err();
        assert!(err.contains("\"nobody\" is not defined"), "{err}");
        assert_eq!(d.group_count(), 2);
        d.insert(&[alert("c")]);
        assert_eq!(d.group_count(), 3, "the running tree still routes");
    }

    #[test]
    fn the_first_az_sends_once_the_other_has_stopped_and_either_sends_alone() {
        let d = |az: &str| {
            Dispatcher::new(
                DispatchConfig {
                    notify_file: None,
                    az: az.into(),
                    peer: Some("http://127.0.0.1:1".into()),
                    peer_check: Duration::from_secs(5),
                    external_url: String::new(),
                    log_file: None,
                },
                None,
            )
            .unwrap()
        };
        let peer = |az: &str, sender: bool, enabled: bool| Peer {
            status: Some(PeerStatus {
                az: az.into(),
                enabled,
                sender,
                groups: 0,
                log_entries: 0,
                seq: 0,
            }),
            failures: 0,
            pulled: Some(0),
        };
        let (a, b) = (d("az-a"), d("az-b"));
        assert!(
            !a.decide(&peer("az-b", true, true)),
            "waits for az-b to stop"
        );
        assert!(a.decide(&peer("az-b", false, true)));
        assert!(!b.decide(&peer("az-a", false, true)));
        assert!(
            b.decide(&peer("az-a", false, false)),
            "az-a has no receivers"
        );
        let down = Peer {
            failures: PEER_FAILURES,
            ..peer("az-a", true, true)
        };
        assert!(b.decide(&down));
        let unread = Peer {
            pulled: None,
            ..peer("az-b", false, true)
        };
        assert!(
            !a.decide(&unread),
            "keeps its role until it has read the peer's log"
        );
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
