//! One rule group's evaluation, as Prometheus 2.42 evaluates it (rules/manager.go,
//! recording.go, alerting.go): the group's slots, recording rules' output, and alerts going
//! pending → firing → resolved with `for` and `keep_firing_for`, with the `ALERTS` and
//! `ALERTS_FOR_STATE` series and the alerts due to be sent.
//!
//! Everything here works on one evaluation timestamp `ts` (the group's slot, not the wall
//! clock): queries run at `ts`, and every sample written and every alert time is `ts`.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::Expr;
use strata_wire::alert::KV;
use strata_wire::duration::parse_duration_ms;

use super::RuleGroup;
use super::expand::{self, Context, Data, Sample};
use super::template::Template;

/// How long a resolved alert is kept, and re-sent as resolved: 15 minutes in Prometheus
/// (rules/alerting.go `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// A group ready to run.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub file: String,
    pub name: String,
    pub interval_ms: i64,
    /// Most series (recording) or alerts (alerting) a rule may produce; 0 is no limit.
    pub limit: usize,
    pub rules: Vec<RuleSpec>,
    /// The group as written, to tell an unchanged group on reload.
    pub source: RuleGroup,
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    /// The expression as Prometheus prints it (`/api/v1/rules` `query`, generator URLs).
    pub query: String,
    pub labels: KV,
    pub kind: RuleKind,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Recording,
    Alerting {
        for_ms: i64,
        keep_firing_for_ms: i64,
        annotations: KV,
        /// Parsed templates of the labels and annotations, by text.
        templates: BTreeMap<String, Template>,
    },
}

impl GroupSpec {
    /// A checked group of rule file `file`; `default_interval_ms` serves groups without one.
    pub fn new(file: &str, group: &RuleGroup, default_interval_ms: i64) -> Result<Self, String> {
        let interval_ms = match &group.interval {
            Some(i) => parse_duration_ms(i)?,
            None => default_interval_ms,
        };
        if interval_ms <= 0 {
            return Err(format!("group {:?}: interval must be positive", group.name));
        }
        let mut rules = Vec::new();
        for rule in &group.rules {
            let expr: Expr = promql_parser::parser::parse(&rule.expr)?;
            let duration = |d: &Option<String>| d.as_deref().map_or(Ok(0), parse_duration_ms);
            let kind = if rule.alert.is_empty() {
                RuleKind::Recording
            } else {
                let template_name = format!("__alert_{}", rule.alert);
                let mut templates = BTreeMap::new();
                for text in rule.labels.values().chain(rule.annotations.values()) {
                    let t = Template::parse(&template_name, text).map_err(|e| e.to_string())?;
                    templates.insert(text.clone(), t);
                }
                RuleKind::Alerting {
                    for_ms: duration(&rule.for_)?,
                    keep_firing_for_ms: duration(&rule.keep_firing_for)?,
                    annotations: rule.annotations.clone(),
                    templates,
                }
            };
            rules.push(RuleSpec {
                name: if rule.alert.is_empty() {
                    rule.record.clone()
                } else {
                    rule.alert.clone()
                },
                query: expr.to_string(),
                labels: rule.labels.clone(),
                kind,
            });
        }
        Ok(Self {
            file: file.to_string(),
            name: group.name.clone(),
            interval_ms,
            limit: usize::try_from(group.limit).unwrap_or(0),
            rules,
            source: group.clone(),
        })
    }

    /// Identity across reloads: file and name (rules/manager.go `GroupKey`).
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }

    /// Where the group's slots fall within its interval, in nanoseconds: Prometheus's
    /// `hash % interval`, the xxhash64 of the labels `{file, name}`, so a group evaluates at
    /// the same phase in Prometheus and in strata, and in both AZs.
    pub fn offset_ns(&self) -> u64 {
        let mut bytes = Vec::new();
        for (name, value) in [("file", &self.file), ("name", &self.name)] {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0xff);
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0xff);
        }
        xxhash_rust::xxh64::xxh64(&bytes, 0) % (self.interval_ms as u64 * 1_000_000)
    }

    /// The latest slot at or before `now_ns` (`Group.EvalTimestamp`), in nanoseconds.
    pub fn slot_at(&self, now_ns: i128) -> i128 {
        let interval = i128::from(self.interval_ms) * 1_000_000;
        let offset = i128::from(self.offset_ns());
        let adjusted = now_ns - offset;
        adjusted - adjusted.rem_euclid(interval) + offset
    }

    /// Whether `other` is the same group (then a reload leaves it running).
    pub fn same_as(&self, other: &GroupSpec) -> bool {
        self.file == other.file
            && self.interval_ms == other.interval_ms
            && self.source == other.source
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule; times are evaluation timestamps in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: KV,
    pub annotations: KV,
    pub value: f64,
    pub state: AlertState,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    /// When Alertmanager should consider it resolved unless sent again.
    pub valid_until: i64,
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Whether it is due to be sent at `ts` (rules/alerting.go `needsSending`): firing or
    /// resolved since the last send, or last sent more than `resend_delay_ms` ago.
    fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.resolved_at > self.last_sent_at {
            return true;
        }
        self.last_sent_at
            .is_none_or(|sent| sent + resend_delay_ms < ts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// What a rule carries from one evaluation to the next.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub health: Health,
    pub last_error: Option<String>,
    /// Wall-clock start of the last evaluation (ms) and how long it took (s).
    pub last_evaluation_ms: Option<i64>,
    pub evaluation_seconds: f64,
    /// Series written at the last successful evaluation, to mark stale when they vanish.
    pub series: BTreeSet<KV>,
    /// Alerts by labels: pending, firing, and resolved ones for the resolved retention.
    pub active: BTreeMap<KV, Alert>,
    /// Whether the `for` state was restored (until then no `ALERTS` series are written).
    pub restored: bool,
}

impl RuleState {
    pub fn new(restored: bool) -> Self {
        Self {
            health: Health::Unknown,
            last_error: None,
            last_evaluation_ms: None,
            evaluation_seconds: 0.0,
            series: BTreeSet::new(),
            active: BTreeMap::new(),
            restored,
        }
    }

    /// The rule's state: the most advanced of its alerts'.
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// Pending and firing alerts (not resolved ones).
    pub fn active_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().filter(|a| a.resolved_at.is_none())
    }
}

/// An instant query at a timestamp: the result as labels and values, or why it failed.
pub type QueryAt<'a> = &'a (dyn Fn(&str, i64) -> Result<Vec<(KV, f64)>, String> + Sync);

/// What one evaluation needs besides the rule and its state.
pub struct Env<'a> {
    pub ts: i64,
    pub query: QueryAt<'a>,
    pub external_url: &'a str,
    pub external_labels: &'a KV,
    pub limit: usize,
    pub interval_ms: i64,
    pub resend_delay_ms: i64,
    /// How long resolved alerts are kept and re-sent ([`RESOLVED_RETENTION_MS`]).
    pub resolved_retention_ms: i64,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("ts", &self.ts)
            .field("limit", &self.limit)
            .field("interval_ms", &self.interval_ms)
            .finish_non_exhaustive()
    }
}

/// What one evaluation of a rule produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Samples to write at `ts`.
    pub samples: Vec<(KV, f64)>,
    /// Alerts due to be sent (copies, with `last_sent_at` and `valid_until` set).
    pub send: Vec<Alert>,
    /// Label and annotation templates that failed (their text says why).
    pub template_failures: usize,
}

impl RuleSpec {
    /// Evaluates the rule at `env.ts`. On error nothing of `state` changes but what the
    /// error path of Prometheus changes (an alerting rule over its limit drops its alerts).
    pub fn eval(&self, state: &mut RuleState, env: &Env) -> Result<Outcome, String> {
        let vector = (env.query)(&self.query, env.ts)?;
        match &self.kind {
            RuleKind::Recording => self.record(vector, env),
            RuleKind::Alerting {
                for_ms,
                keep_firing_for_ms,
                annotations,
                templates,
            } => {
                let alerting = Alerting {
                    rule: self,
                    for_ms: *for_ms,
                    keep_firing_for_ms: *keep_firing_for_ms,
                    annotations,
                    templates,
                };
                alerting.eval(vector, state, env)
            }
        }
    }

    /// Recording rules: the result renamed and relabelled (an empty label value removes the
    /// label), refused when two series end up the same or there are more than the limit.
    fn record(&self, vector: Vec<(KV, f64)>, env: &Env) -> Result<Outcome, String> {
        let mut seen = BTreeSet::new();
        let mut samples = Vec::with_capacity(vector.len());
        for (mut labels, v) in vector {
            labels.insert("__name__".into(), self.name.clone());
            set_labels(&mut labels, &self.labels);
            if !seen.insert(labels.clone()) {
                return Err(
                    "vector contains metrics with the same labelset after applying rule labels"
                        .into(),
                );
            }
            samples.push((labels, v));
        }
        if env.limit > 0 && samples.len() > env.limit {
            return Err(format!(
                "exceeded limit of {} with {} series",
                env.limit,
                samples.len()
            ));
        }
        Ok(Outcome {
            samples,
            ..Outcome::default()
        })
    }
}

impl RuleSpec {
    /// `ALERTS` (with `alertstate`) or `ALERTS_FOR_STATE` of an alert: the rule's labels as
    /// written, overlaid by the alert's (rules/alerting.go `sample`, `forStateSample`).
    pub fn alert_series(&self, alert: &Alert, name: &str) -> KV {
        let mut labels = self.labels.clone();
        labels.extend(alert.labels.clone());
        labels.insert("__name__".into(), name.into());
        labels.insert("alertname".into(), self.name.clone());
        if name == "ALERTS" {
            labels.insert("alertstate".into(), alert.state.as_str().into());
        }
        labels
    }
}

/// Sets `extra` on `labels`; an empty value removes the label (Prometheus's labels.Builder).
fn set_labels(labels: &mut KV, extra: &KV) {
    for (k, v) in extra {
        if v.is_empty() {
            labels.remove(k);
        } else {
            labels.insert(k.clone(), v.clone());
        }
    }
}

struct Alerting<'a> {
    rule: &'a RuleSpec,
    for_ms: i64,
    keep_firing_for_ms: i64,
    annotations: &'a KV,
    templates: &'a BTreeMap<String, Template>,
}

impl Alerting<'_> {
    fn eval(
        &self,
        vector: Vec<(KV, f64)>,
        state: &mut RuleState,
        env: &Env,
    ) -> Result<Outcome, String> {
        let ts = env.ts;
        let mut out = Outcome::default();
        let mut current: BTreeMap<KV, Alert> = BTreeMap::new();
        for (series, value) in vector {
            let data = Data {
                labels: series.clone(),
                external_labels: env.external_labels.clone(),
                external_url: env.external_url.to_string(),
                value,
            };
            let query = |q: &str| -> Result<Vec<Sample>, String> {
                Ok((env.query)(q, ts)?
                    .into_iter()
                    .map(|(labels, value)| Sample { labels, value })
                    .collect())
            };
            let ctx = Context {
                data: &data,
                query: &query,
            };
            let mut expand = |text: &str| -> String {
                let Some(template) = self.templates.get(text) else {
                    return text.to_string();
                };
                expand::execute(template, &ctx).unwrap_or_else(|e| {
                    out.template_failures += 1;
                    format!(
                        "<error expanding template: error executing template {}: {e}>",
                        template.name
                    )
                })
            };
            let mut labels = series;
            labels.remove("__name__");
            for (k, v) in &self.rule.labels {
                let v = expand(v);
                if v.is_empty() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), v);
                }
            }
            labels.insert("alertname".into(), self.rule.name.clone());
            let annotations: KV = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect();
            if current.contains_key(&labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            current.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    value,
                    state: AlertState::Pending,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: 0,
                    keep_firing_since: None,
                },
            );
        }
        let returned: BTreeSet<KV> = current.keys().cloned().collect();
        for (labels, alert) in current {
            match state.active.get_mut(&labels) {
                Some(old) if old.state != AlertState::Inactive => {
                    old.value = alert.value;
                    old.annotations = alert.annotations;
                }
                _ => {
                    state.active.insert(labels, alert);
                }
            }
        }
        let mut active_or_pending = 0;
        let mut deleted = Vec::new();
        for (labels, alert) in state.active.iter_mut() {
            if !returned.contains(labels) {
                let mut keep_firing = false;
                if alert.state == AlertState::Firing && self.keep_firing_for_ms > 0 {
                    let since = *alert.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < self.keep_firing_for_ms;
                }
                // A pending alert that vanished, or one resolved long enough ago, goes.
                if alert.state == AlertState::Pending
                    || alert
                        .resolved_at
                        .is_some_and(|r| ts - r > env.resolved_retention_ms)
                {
                    deleted.push(labels.clone());
                }
                if alert.state != AlertState::Inactive && !keep_firing {
                    alert.state = AlertState::Inactive;
                    alert.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                alert.keep_firing_since = None;
            }
            active_or_pending += 1;
            if alert.state == AlertState::Pending && ts - alert.active_at >= self.for_ms {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(ts);
            }
            if state.restored {
                out.samples
                    .push((self.rule.alert_series(alert, "ALERTS"), 1.0));
                out.samples.push((
                    self.rule.alert_series(alert, "ALERTS_FOR_STATE"),
                    (alert.active_at.div_euclid(1000)) as f64,
                ));
            }
        }
        for labels in deleted {
            state.active.remove(&labels);
        }
        if env.limit > 0 && active_or_pending > env.limit {
            state.active.clear();
            return Err(format!(
                "exceeded limit of {} with {} alerts",
                env.limit, active_or_pending
            ));
        }
        let valid_for = 4 * env.interval_ms.max(env.resend_delay_ms);
        for alert in state.active.values_mut() {
            if alert.needs_sending(ts, env.resend_delay_ms) {
                alert.last_sent_at = Some(ts);
                alert.valid_until = ts + valid_for;
                out.send.push(alert.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::check;

    fn spec(yaml: &str) -> GroupSpec {
        let checked = check("rules.yml", yaml);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        GroupSpec::new("rules.yml", &checked.parsed.groups[0], 60_000).unwrap()
    }

    fn kv(pairs: &[(&str, &str)]) -> KV {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs rule 0 of `group` at each `(ts seconds, value or None)`, on a series `{job="a"}`.
    fn run(group: &GroupSpec, steps: &[(i64, Option<f64>)]) -> Vec<(i64, RuleState, Outcome)> {
        let mut state = RuleState::new(true);
        let mut out = Vec::new();
        for &(t, v) in steps {
            let query = move |_: &str, _: i64| -> Result<Vec<(KV, f64)>, String> {
                Ok(v.map(|v| (kv(&[("job", "a")]), v)).into_iter().collect())
            };
            let labels = KV::new();
            let env = Env {
                ts: t * 1000,
                query: &query,
                external_url: "http://strata:9301",
                external_labels: &labels,
                limit: 0,
                interval_ms: group.interval_ms,
                resend_delay_ms: 60_000,
                resolved_retention_ms: RESOLVED_RETENTION_MS,
            };
            let o = group.rules[0].eval(&mut state, &env).unwrap();
            out.push((t, state.clone(), o));
        }
        out
    }

    #[test]
    fn alerts_go_pending_firing_resolved_with_for() {
        let g = spec(
            "groups:\n- name: g\n  interval: 30s\n  rules:\n  - alert: High\n    expr: x > 10\n    for: 1m\n    labels: {severity: page}\n    annotations: {summary: 'value {{ $value }} on {{ $labels.job }}'}\n",
        );
        let steps: Vec<(i64, Option<f64>)> = vec![
            (0, Some(11.0)),
            (30, Some(12.0)),
            (60, Some(13.0)),
            (90, Some(14.0)),
            (120, None),
            (150, None),
        ];
        let r = run(&g, &steps);
        let states: Vec<&str> = r.iter().map(|(_, s, _)| s.state().as_str()).collect();
        // `for: 1m` at 30s: fires at the third evaluation (ts - activeAt >= for).
        assert_eq!(
            states,
            [
                "pending", "pending", "firing", "firing", "inactive", "inactive"
            ]
        );
        let alert = |i: usize| r[i].1.active.values().next().unwrap().clone();
        assert_eq!(alert(2).fired_at, Some(60_000));
        assert_eq!(alert(3).annotations["summary"], "value 14 on a");
        assert_eq!(
            alert(3).labels,
            kv(&[("alertname", "High"), ("job", "a"), ("severity", "page")])
        );
        // Sent when it fires, not again 30s later (resend delay 1m), sent resolved at once.
        let sent: Vec<usize> = r.iter().map(|(_, _, o)| o.send.len()).collect();
        assert_eq!(sent, [0, 0, 1, 0, 1, 0]);
        assert_eq!(r[2].2.send[0].valid_until, 60_000 + 240_000);
        assert_eq!(r[4].2.send[0].resolved_at, Some(120_000));
        // ALERTS and ALERTS_FOR_STATE while pending or firing.
        let names: Vec<String> = r[3]
            .2
            .samples
            .iter()
            .map(|(l, v)| {
                format!(
                    "{}{{{}}}={v}",
                    l["__name__"],
                    l.get("alertstate").map_or("", String::as_str)
                )
            })
            .collect();
        assert_eq!(names, ["ALERTS{firing}=1", "ALERTS_FOR_STATE{}=0"]);
        assert!(r[4].2.samples.is_empty());
    }

    #[test]
    fn resolved_alerts_are_resent_for_fifteen_minutes_then_dropped() {
        let g = spec("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n");
        let mut steps = vec![(0, Some(1.0))];
        steps.extend((1..=17).map(|m| (m * 60, None)));
        let r = run(&g, &steps);
        // 1m interval and 1m resend delay: resent every 2 minutes (strictly later than 1m).
        let sent: Vec<i64> = r
            .iter()
            .filter(|(_, _, o)| !o.send.is_empty())
            .map(|(t, _, _)| *t)
            .collect();
        assert_eq!(sent, [0, 60, 180, 300, 420, 540, 660, 780, 900]);
        assert!(!r[16].1.active.is_empty(), "dropped at 15 minutes");
        assert!(r[17].1.active.is_empty(), "kept past 15 minutes");
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let g = spec(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n    keep_firing_for: 2m\n",
        );
        let r = run(
            &g,
            &[
                (0, Some(1.0)),
                (60, None),
                (120, None),
                (180, None),
                (240, Some(1.0)),
            ],
        );
        let states: Vec<&str> = r.iter().map(|(_, s, _)| s.state().as_str()).collect();
        // Missing from 60: kept while ts - 60 < 2m, resolved at 180; back at 240 as new.
        assert_eq!(states, ["firing", "firing", "firing", "inactive", "firing"]);
        assert_eq!(r[4].1.active.values().next().unwrap().active_at, 240_000);
    }

    #[test]
    fn zero_for_fires_at_once_and_pending_alerts_that_vanish_are_forgotten() {
        let g = spec("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n    for: 5m\n");
        let r = run(&g, &[(0, Some(1.0)), (60, None)]);
        assert_eq!(r[0].1.state(), AlertState::Pending);
        assert!(r[1].1.active.is_empty());
        assert!(r.iter().all(|(_, _, o)| o.send.is_empty()));
        let g = spec("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n");
        let r = run(&g, &[(0, Some(1.0))]);
        assert_eq!(r[0].1.state(), AlertState::Firing);
    }

    #[test]
    fn recording_rules_rename_and_relabel() {
        let g = spec(
            "groups:\n- name: g\n  rules:\n  - record: job:x:sum\n    expr: sum by (job) (x)\n    labels: {team: infra, job: ''}\n",
        );
        let r = run(&g, &[(0, Some(3.0))]);
        assert_eq!(
            r[0].2.samples,
            vec![(kv(&[("__name__", "job:x:sum"), ("team", "infra")]), 3.0)]
        );
    }

    #[test]
    fn slots_follow_prometheus_hash_of_file_and_name() {
        let g = spec("groups:\n- name: g\n  interval: 30s\n  rules:\n  - record: r\n    expr: x\n");
        let offset = g.offset_ns();
        assert!(offset < 30_000_000_000);
        let now = 1_700_000_000_123_456_789_i128;
        let slot = g.slot_at(now);
        assert!(slot <= now && now - slot < 30_000_000_000);
        assert_eq!((slot - i128::from(offset)).rem_euclid(30_000_000_000), 0);
    }
}
