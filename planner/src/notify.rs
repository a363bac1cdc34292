//! Notifications of decisions that have entered their lead time (urgency `act_now`).
//!
//! Each such decision is one alert: `alertname` says what to do (`StrataPlannerSplitCell`,
//! `StrataPlannerPromoteCluster`, `StrataPlannerDemoteCluster`), and `region`, `cell` and
//! `cluster` say where; the summary, act-by date and evidence are annotations, so a change of
//! the binding resource or the dates does not make a new alert.
//!
//! - **Webhook receivers** get the Alertmanager webhook payload, version "4", one group per
//!   alert (as Alertmanager with `group_by: ['...']`). An alert is sent when it first fires,
//!   again every `repeat_interval` while it fires, and once resolved when it no longer does
//!   (with `send_resolved`). What was sent to which receiver is remembered, in the state file
//!   when one is given, so neither a new report nor a restart sends anything twice.
//!   Connection errors, 429 and 5xx are retried with backoff; a receiver that stays down gets
//!   what is due on the next report.
//! - **Alertmanagers** get every firing alert on every report through `POST /api/v2/alerts`,
//!   with `endsAt` four report intervals ahead (as Prometheus re-sends its alerts); a resolved
//!   alert is sent once with `endsAt` at its resolution. Alertmanager groups, deduplicates,
//!   repeats and routes them itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_wire::alert::{
    KV, NOT_ENDED, PostableAlert, Status, WebhookAlert, WebhookMessage, fingerprint, group_key,
};
use tracing::warn;

use crate::plan::{Decision, DecisionKind, Report, Urgency, format_time};
use crate::{Error, Result};

/// Where notifications go and how often.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    pub webhooks: Vec<String>,
    pub alertmanagers: Vec<String>,
    /// The `receiver` named in webhook payloads.
    pub receiver: String,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    /// Timeout of each delivery attempt.
    pub timeout: Duration,
    /// The planner's own URL, for links in the payloads.
    pub external_url: String,
    /// How often reports are made (an Alertmanager alert ends four of these after it was sent).
    pub report_interval: Duration,
    /// Remembers what was sent across restarts.
    pub state_file: Option<PathBuf>,
}

/// An alert made from a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: KV,
    pub annotations: KV,
    pub generator_url: String,
}

/// The alerts of a report: one per decision whose act-by date has come.
pub fn alerts(report: &Report, external_url: &str) -> Vec<Alert> {
    report
        .decisions
        .iter()
        .filter(|d| d.urgency == Urgency::ActNow)
        .map(|d| alert(d, external_url))
        .collect()
}

fn alert(d: &Decision, external_url: &str) -> Alert {
    let alertname = match d.kind {
        DecisionKind::SplitCell => "StrataPlannerSplitCell",
        DecisionKind::PromoteCluster => "StrataPlannerPromoteCluster",
        DecisionKind::DemoteCluster => "StrataPlannerDemoteCluster",
    };
    let mut labels = KV::from([
        ("alertname".to_string(), alertname.to_string()),
        ("region".into(), d.region.clone()),
        ("cell".into(), d.cell.clone()),
        ("severity".into(), "warning".into()),
    ]);
    if let Some(cluster) = &d.cluster {
        labels.insert("cluster".into(), cluster.clone());
    }
    let evidence = d
        .evidence
        .iter()
        .map(|e| format!("{}; query: {}", e.describe(), e.query))
        .collect::<Vec<_>>()
        .join("\n");
    let generator_url = format!("{}/#{}", external_url.trim_end_matches('/'), d.anchor());
    let annotations = KV::from([
        ("summary".to_string(), d.summary.clone()),
        ("act_by".into(), d.act_by.clone()),
        ("description".into(), evidence),
        ("report".into(), generator_url.clone()),
    ]);
    Alert {
        labels,
        annotations,
        generator_url,
    }
}

/// What the notifier remembers of one alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tracked {
    labels: KV,
    annotations: KV,
    generator_url: String,
    starts_at_ms: i64,
    /// When it stopped firing.
    resolved_at_ms: Option<i64>,
    /// Webhook receiver → when it was last sent the alert firing.
    sent: BTreeMap<String, i64>,
    /// Webhook receivers and Alertmanagers that have been sent the resolution.
    resolved_sent: Vec<String>,
}

impl Tracked {
    fn postable(&self, ends_at: String) -> PostableAlert {
        PostableAlert {
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            starts_at: format_time(self.starts_at_ms),
            ends_at,
            generator_url: self.generator_url.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// By fingerprint.
    alerts: BTreeMap<String, Tracked>,
}

/// Deliveries of one report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub firing: usize,
    pub resolved: usize,
    /// Payloads that could not be delivered (they are due again on the next report).
    pub failed: usize,
}

#[derive(Debug)]
pub struct Notifier {
    options: NotifyOptions,
    client: reqwest::Client,
    state: State,
}

impl Notifier {
    /// A notifier; reads the state file when it exists.
    pub fn new(options: NotifyOptions) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(concat!("strata-planner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let state = match &options.state_file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|e| Error::Parse {
                    path: path.clone(),
                    message: format!(
                        "{e}; it is the planner's record of notifications sent, remove it to \
                         start afresh (alerts firing now will then be sent again)"
                    ),
                })?
            }
            _ => State::default(),
        };
        Ok(Self {
            options,
            client,
            state,
        })
    }

    /// Alerts tracked and still firing.
    pub fn firing(&self) -> usize {
        self.state
            .alerts
            .values()
            .filter(|t| t.resolved_at_ms.is_none())
            .count()
    }

    /// Sends what is due now that `active` are the alerts firing at `now_ms`.
    pub async fn process(&mut self, active: Vec<Alert>, now_ms: i64) -> Delivered {
        self.track(active, now_ms);
        let mut out = Delivered::default();
        let webhooks = self.options.webhooks.clone();
        let alertmanagers = self.options.alertmanagers.clone();
        let repeat = self.options.repeat_interval.as_millis() as i64;
        let fingerprints: Vec<String> = self.state.alerts.keys().cloned().collect();
        for fp in &fingerprints {
            for url in &webhooks {
                let Some(t) = self.state.alerts.get(fp) else {
                    continue;
                };
                let due = match t.resolved_at_ms {
                    None => t.sent.get(url).is_none_or(|&at| now_ms - at >= repeat),
                    Some(_) => {
                        self.options.send_resolved
                            && t.sent.contains_key(url)
                            && !t.resolved_sent.contains(url)
                    }
                };
                if !due {
                    continue;
                }
                let message = self.message(fp, t);
                let resolved = t.resolved_at_ms.is_some();
                if self.post(url, &message).await {
                    let Some(t) = self.state.alerts.get_mut(fp) else {
                        continue;
                    };
                    if resolved {
                        t.resolved_sent.push(url.clone());
                        out.resolved += 1;
                    } else {
                        t.sent.insert(url.clone(), now_ms);
                        out.firing += 1;
                    }
                } else {
                    out.failed += 1;
                }
            }
        }
        for url in &alertmanagers {
            let (batch, resolved) = self.postable(url, now_ms);
            if batch.is_empty() {
                continue;
            }
            let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
            if self.post(&endpoint, &batch).await {
                out.firing += batch.len() - resolved.len();
                out.resolved += resolved.len();
                for fp in resolved {
                    if let Some(t) = self.state.alerts.get_mut(&fp) {
                        t.resolved_sent.push(url.clone());
                    }
                }
            } else {
                out.failed += 1;
            }
        }
        self.forget_delivered();
        if let Err(e) = self.save() {
            warn!("{e}");
        }
        out
    }

    /// Starts tracking new alerts, refreshes the others, and marks those gone as resolved.
    fn track(&mut self, active: Vec<Alert>, now_ms: i64) {
        let mut seen = BTreeSet::new();
        for a in active {
            let fp = fingerprint(&a.labels);
            let t = self.state.alerts.entry(fp.clone()).or_default();
            if t.labels.is_empty() || t.resolved_at_ms.is_some() {
                *t = Tracked {
                    starts_at_ms: now_ms,
                    ..Tracked::default()
                };
            }
            t.labels = a.labels;
            t.annotations = a.annotations;
            t.generator_url = a.generator_url;
            seen.insert(fp);
        }
        for (fp, t) in &mut self.state.alerts {
            if t.resolved_at_ms.is_none() && !seen.contains(fp) {
                t.resolved_at_ms = Some(now_ms);
            }
        }
    }

    /// Drops resolved alerts every target that should hear of the resolution has heard of.
    fn forget_delivered(&mut self) {
        let opts = &self.options;
        self.state.alerts.retain(|_, t| {
            if t.resolved_at_ms.is_none() {
                return true;
            }
            let webhooks_done = !opts.send_resolved
                || opts
                    .webhooks
                    .iter()
                    .all(|u| !t.sent.contains_key(u) || t.resolved_sent.contains(u));
            let alertmanagers_done = opts
                .alertmanagers
                .iter()
                .all(|u| t.resolved_sent.contains(u));
            !(webhooks_done && alertmanagers_done)
        });
    }

    fn message(&self, fp: &str, t: &Tracked) -> WebhookMessage {
        let (status, ends_at) = match t.resolved_at_ms {
            None => (Status::Firing, NOT_ENDED.to_string()),
            Some(at) => (Status::Resolved, format_time(at)),
        };
        WebhookMessage::new(
            &self.options.receiver,
            group_key(&t.labels),
            t.labels.clone(),
            &self.options.external_url,
            vec![WebhookAlert {
                status,
                alert: t.postable(ends_at),
                fingerprint: fp.to_string(),
            }],
        )
    }

    /// The alerts for one Alertmanager, and the fingerprints of the resolutions among them.
    fn postable(&self, url: &str, now_ms: i64) -> (Vec<PostableAlert>, Vec<String>) {
        let valid_for = 4 * self.options.report_interval.as_millis() as i64;
        let mut batch = Vec::new();
        let mut resolved = Vec::new();
        for (fp, t) in &self.state.alerts {
            let ends_at = match t.resolved_at_ms {
                None => now_ms + valid_for,
                Some(_) if t.resolved_sent.iter().any(|u| u == url) => continue,
                Some(at) => {
                    resolved.push(fp.clone());
                    at
                }
            };
            batch.push(t.postable(format_time(ends_at)));
        }
        (batch, resolved)
    }

    /// POSTs `body` as JSON; retries connection errors, 429 and 5xx three times with backoff.
    async fn post<T: Serialize>(&self, url: &str, body: &T) -> bool {
        let body = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => {
                warn!(%url, "cannot encode the notification: {e}");
                return false;
            }
        };
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=4 {
            let outcome = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let retry = match outcome {
                Ok(resp) if resp.status().is_success() => return true,
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    warn!(%url, %status, attempt, "notification refused: {}", text.trim());
                    status.is_server_error() || status.as_u16() == 429
                }
                Err(e) => {
                    warn!(%url, attempt, "notification not delivered: {e}");
                    true
                }
            };
            if !retry || attempt == 4 {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        false
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.options.state_file else {
            return Ok(());
        };
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| Error::Config(format!("cannot encode the notification state: {e}")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
