//! Running rule groups in the central (Prometheus's rules/manager.go): one task per group
//! evaluating at the group's slots, recorded series and `ALERTS` written into the store with
//! stale markers, alerts handed to the [`Notifier`], `for` state restored after a restart,
//! reloads that keep unchanged groups running and carry the state of changed ones over, and
//! the `/api/v1/rules` and `/api/v1/alerts` answers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_wire::alert::{KV, PostableAlert};
use strata_wire::{Label, Sample};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::dispatch::Dispatcher;
use super::group::{Alert, Env, GroupSpec, Health, RuleKind, RuleState};
use super::notify::{Notifier, postable};
use super::{RuleError, check_file};
use crate::db::Db;
use crate::head::AppendMode;
use crate::index::{MatchOp, Matcher};
use crate::promql::{self, Engine};
use crate::sync::lock;

/// How the central runs rules (Prometheus's flags of the same meaning in brackets).
#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// Rule files (`rule_files`).
    pub files: Vec<PathBuf>,
    /// Interval of groups that set none (`global.evaluation_interval`, 1m).
    pub evaluation_interval_ms: i64,
    /// The central's URL as users reach it: generator URLs, `$externalURL`.
    pub external_url: String,
    /// Added to alerts that lack them, and `$externalLabels` (`global.external_labels`).
    pub external_labels: KV,
    /// Least time between two sends of an unchanged alert (`--rules.alert.resend-delay`, 1m).
    pub resend_delay_ms: i64,
    /// How long resolved alerts are kept and re-sent (15m, fixed in Prometheus).
    pub resolved_retention_ms: i64,
    /// How far back restored `for` state may be (`--rules.alert.for-outage-tolerance`, 1h).
    pub outage_tolerance_ms: i64,
    /// Least `for` time left to a restored alert (`--rules.alert.for-grace-period`, 10m).
    pub grace_period_ms: i64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            evaluation_interval_ms: 60_000,
            external_url: String::new(),
            external_labels: KV::new(),
            resend_delay_ms: 60_000,
            resolved_retention_ms: super::group::RESOLVED_RETENTION_MS,
            outage_tolerance_ms: 3_600_000,
            grace_period_ms: 600_000,
        }
    }
}

/// Reads and checks every rule file; all errors when any file has one.
pub fn load(config: &RulesConfig) -> Result<Vec<GroupSpec>, Vec<RuleError>> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for path in &config.files {
        let checked = check_file(path);
        if !checked.errors.is_empty() {
            errors.extend(checked.errors);
            continue;
        }
        let file = path.display().to_string();
        for group in &checked.parsed.groups {
            match GroupSpec::new(&file, group, config.evaluation_interval_ms) {
                Ok(g) => groups.push(g),
                Err(reason) => errors.push(RuleError {
                    file: file.clone(),
                    group: Some(group.name.clone()),
                    rule: None,
                    reason,
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// What a group carries between evaluations.
#[derive(Debug)]
struct GroupState {
    rules: Vec<RuleState>,
    /// Wall-clock start of the last evaluation (ms) and how long it took (s).
    last_evaluation_ms: Option<i64>,
    evaluation_seconds: f64,
    /// Series of rules a reload removed, to mark stale at the next evaluation.
    stale: Vec<KV>,
}

#[derive(Debug)]
struct GroupRun {
    spec: GroupSpec,
    state: Mutex<GroupState>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl GroupRun {
    fn state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        lock(&self.state)
    }

    /// Stops the group's task and waits for it, so its state is final.
    async fn halt(&self) {
        // Stored even before the task subscribes, so the stop cannot be lost.
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The rule manager's self-metrics.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    pub evaluations: AtomicU64,
    pub evaluation_failures: AtomicU64,
    pub missed_iterations: AtomicU64,
    pub template_failures: AtomicU64,
    pub reload_ok: AtomicBool,
    pub last_reload_s: AtomicI64,
}

/// The central's rules.
#[derive(Debug)]
pub struct Manager {
    config: RulesConfig,
    db: Arc<Db>,
    query: promql::Options,
    notifier: Arc<Notifier>,
    dispatcher: Arc<Dispatcher>,
    groups: Mutex<BTreeMap<String, Arc<GroupRun>>>,
    reloading: tokio::sync::Mutex<()>,
    /// False until the first load is done: only the groups of the first load after a start
    /// restore `for` state (and write `ALERTS` only once that is done).
    started: AtomicBool,
    /// Set when the central stops: removed groups' stale markers are then not written.
    closing: watch::Receiver<bool>,
    /// Set by [`Manager::stop`]; a reload after it starts nothing.
    stopped: AtomicBool,
    pub metrics: RuleMetrics,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl Manager {
    /// Starts the groups [`load`] read from the rule files.
    pub async fn start(
        config: RulesConfig,
        groups: Vec<GroupSpec>,
        db: Arc<Db>,
        query: promql::Options,
        notifier: Arc<Notifier>,
        dispatcher: Arc<Dispatcher>,
        closing: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let manager = Arc::new(Self {
            config,
            db,
            query,
            notifier,
            dispatcher,
            groups: Mutex::new(BTreeMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            started: AtomicBool::new(false),
            closing,
            stopped: AtomicBool::new(false),
            metrics: RuleMetrics::default(),
        });
        manager.update(groups).await;
        manager.metrics.reload_ok.store(true, Ordering::Relaxed);
        manager
            .metrics
            .last_reload_s
            .store(strata_wire::clock::now_ms() / 1000, Ordering::Relaxed);
        manager.started.store(true, Ordering::Relaxed);
        manager
    }

    /// Reads the rule files again and applies them; on errors the running rules stay.
    pub async fn reload(self: &Arc<Self>) -> Result<usize, Vec<RuleError>> {
        let _guard = self.reloading.lock().await;
        let loaded = load(&self.config);
        self.metrics
            .last_reload_s
            .store(strata_wire::clock::now_ms() / 1000, Ordering::Relaxed);
        let groups = match loaded {
            Ok(g) => g,
            Err(errors) => {
                self.metrics.reload_ok.store(false, Ordering::Relaxed);
                for e in &errors {
                    tracing::error!("rules not reloaded: {e}");
                }
                return Err(errors);
            }
        };
        let count = groups.len();
        self.update(groups).await;
        self.metrics.reload_ok.store(true, Ordering::Relaxed);
        tracing::info!(groups = count, "rules reloaded");
        Ok(count)
    }

    /// Prometheus's `Manager.Update`: unchanged groups keep running; a changed group starts
    /// with the state of its rules that remain (matched by name and labels), and the series
    /// of its removed rules are marked stale; a removed group's series are marked stale two
    /// intervals after it stops.
    async fn update(self: &Arc<Self>, specs: Vec<GroupSpec>) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let restore = !self.started.load(Ordering::Relaxed);
        // The running groups stay listed until the new set replaces them.
        let mut old = lock(&self.groups).clone();
        let mut new = BTreeMap::new();
        for spec in specs {
            let key = spec.key();
            if let Some(run) = old.remove(&key) {
                if run.spec.same_as(&spec) {
                    new.insert(key, run);
                    continue;
                }
                run.halt().await;
                let fresh = carry_over(spec, &run.spec, &run.state());
                new.insert(key, self.spawn(fresh, false));
                continue;
            }
            let state = GroupState {
                rules: spec
                    .rules
                    .iter()
                    .map(|_| RuleState::new(!restore))
                    .collect(),
                last_evaluation_ms: None,
                evaluation_seconds: 0.0,
                stale: Vec::new(),
            };
            let (stop, _) = watch::channel(false);
            let run = Arc::new(GroupRun {
                spec,
                state: Mutex::new(state),
                stop,
                task: Mutex::new(None),
            });
            new.insert(key, self.spawn(run, restore));
        }
        for (_, run) in old {
            run.halt().await;
            let manager = self.clone();
            tokio::spawn(async move { manager.mark_removed_stale(run).await });
        }
        *lock(&self.groups) = new;
    }

    fn spawn(self: &Arc<Self>, run: Arc<GroupRun>, restore: bool) -> Arc<GroupRun> {
        let manager = self.clone();
        let task_run = run.clone();
        let task = tokio::spawn(async move { manager.run_group(task_run, restore).await });
        *lock(&run.task) = Some(task);
        run
    }

    /// Evaluates a group at each of its slots until stopped (`Group.run`): the first
    /// evaluation is at the first slot after the start; missed slots are skipped, not caught
    /// up; after the second evaluation of a restart the `for` state is restored.
    async fn run_group(self: Arc<Self>, run: Arc<GroupRun>, restore: bool) {
        let interval = i128::from(run.spec.interval_ms) * 1_000_000;
        let mut stop = run.stop.subscribe();
        let mut slot = run.spec.slot_at(now_ns()) + interval;
        let mut iterations = 0u64;
        loop {
            let wait = Duration::from_nanos(u64::try_from(slot - now_ns()).unwrap_or(0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|&s| s) => return,
            }
            let missed = (now_ns() - slot) / interval;
            if missed > 0 {
                slot += missed * interval;
                self.metrics
                    .missed_iterations
                    .fetch_add(missed as u64, Ordering::Relaxed);
            }
            self.eval_group(&run, (slot / 1_000_000) as i64, &stop)
                .await;
            iterations += 1;
            if restore && iterations == 2 {
                self.restore(&run, strata_wire::clock::now_ms()).await;
            }
            slot += interval;
        }
    }

    /// One evaluation of every rule of a group at `ts`, in order; each rule's samples are in
    /// the store before the next rule runs, so later rules see `ALERTS` of earlier ones.
    async fn eval_group(&self, run: &Arc<GroupRun>, ts: i64, stop: &watch::Receiver<bool>) {
        let started = Instant::now();
        let started_ms = strata_wire::clock::now_ms();
        for i in 0..run.spec.rules.len() {
            if *stop.borrow() {
                return;
            }
            let rule_started = Instant::now();
            let rule_started_ms = strata_wire::clock::now_ms();
            let mut state = run.state().rules[i].clone();
            let outcome = {
                let (db, opts, run) = (self.db.clone(), self.query.clone(), run.clone());
                let config = self.config.clone();
                tokio::task::spawn_blocking(move || {
                    let engine = Engine::new(db, opts);
                    let query = |q: &str, t: i64| instant_query(&engine, q, t);
                    let env = Env {
                        ts,
                        query: &query,
                        external_url: &config.external_url,
                        external_labels: &config.external_labels,
                        limit: run.spec.limit,
                        interval_ms: run.spec.interval_ms,
                        resend_delay_ms: config.resend_delay_ms,
                        resolved_retention_ms: config.resolved_retention_ms,
                    };
                    let result = run.spec.rules[i].eval(&mut state, &env);
                    (result, state)
                })
                .await
            };
            self.metrics.evaluations.fetch_add(1, Ordering::Relaxed);
            let (result, mut state) = match outcome {
                Ok(o) => o,
                Err(e) => (
                    Err(format!("rule evaluation panicked: {e}")),
                    run.state().rules[i].clone(),
                ),
            };
            match result {
                Ok(out) => {
                    self.metrics
                        .template_failures
                        .fetch_add(out.template_failures as u64, Ordering::Relaxed);
                    if !out.send.is_empty() {
                        let rule = &run.spec.rules[i];
                        let alerts: Vec<PostableAlert> = out
                            .send
                            .iter()
                            .map(|a| postable(a, &rule.query, &self.config))
                            .collect();
                        self.notifier.send(&alerts);
                        self.dispatcher.insert(&alerts);
                    }
                    let written: BTreeSet<KV> =
                        out.samples.iter().map(|(l, _)| l.clone()).collect();
                    let mut samples = out.samples;
                    samples.extend(
                        state
                            .series
                            .iter()
                            .filter(|s| !written.contains(*s))
                            .map(|s| (s.clone(), strata_wire::stale::stale_nan())),
                    );
                    match self.write(&samples, ts).await {
                        Ok(refused) => {
                            // Tracked: the series the store took (rules/manager.go keeps
                            // the appended ones); refused stale markers do not count.
                            let refused_output: Vec<&String> = written
                                .iter()
                                .map(render)
                                .filter(|r| refused.contains_key(r))
                                .map(|r| &refused[&r])
                                .collect();
                            match refused_output.first() {
                                Some(reason) => {
                                    state.health = Health::Err;
                                    state.last_error = Some((*reason).clone());
                                    self.metrics
                                        .evaluation_failures
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                                None => {
                                    state.health = Health::Ok;
                                    state.last_error = None;
                                }
                            }
                            state.series = written
                                .into_iter()
                                .filter(|l| !refused.contains_key(&render(l)))
                                .collect();
                        }
                        Err(e) => {
                            state.health = Health::Err;
                            state.last_error = Some(e);
                            self.metrics
                                .evaluation_failures
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %run.spec.name, rule = %run.spec.rules[i].name, "rule evaluation failed: {e}");
                    state.health = Health::Err;
                    state.last_error = Some(e);
                    self.metrics
                        .evaluation_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            state.last_evaluation_ms = Some(rule_started_ms);
            state.evaluation_seconds = rule_started.elapsed().as_secs_f64();
            run.state().rules[i] = state;
        }
        let stale = std::mem::take(&mut run.state().stale);
        if !stale.is_empty() {
            let samples: Vec<(KV, f64)> = stale
                .iter()
                .map(|s| (s.clone(), strata_wire::stale::stale_nan()))
                .collect();
            // Refused markers (out of order, duplicate) are let go, as Prometheus does.
            if self.write(&samples, ts).await.is_err() {
                run.state().stale = stale;
            }
        }
        let mut state = run.state();
        state.last_evaluation_ms = Some(started_ms);
        state.evaluation_seconds = started.elapsed().as_secs_f64();
    }

    /// Writes samples at `ts` into the store; the series it refused (rendered) with why, or
    /// why nothing could be written.
    async fn write(
        &self,
        samples: &[(KV, f64)],
        ts: i64,
    ) -> Result<BTreeMap<String, String>, String> {
        if samples.is_empty() {
            return Ok(BTreeMap::new());
        }
        let labels: Vec<Vec<Label>> = samples
            .iter()
            .map(|(l, _)| {
                l.iter()
                    .map(|(k, v)| Label::new(k.clone(), v.clone()))
                    .collect()
            })
            .collect();
        let values: Vec<[Sample; 1]> = samples
            .iter()
            .map(|(_, v)| {
                [Sample {
                    value: *v,
                    timestamp: ts,
                }]
            })
            .collect();
        let series = labels
            .iter()
            .zip(&values)
            .map(|(l, s)| strata_wire::view::SeriesRef {
                labels: l.as_slice(),
                samples: s.as_slice(),
                histograms: 0,
                exemplars: 0,
            });
        let outcome = self
            .db
            .write(series, AppendMode::Live)
            .await
            .map_err(|e| e.to_string())?;
        Ok(outcome
            .refused
            .into_iter()
            .map(|(series, why)| (series, why.to_string()))
            .collect())
    }

    /// Restores the `for` state of a group's alerts from `ALERTS_FOR_STATE`
    /// (`Group.RestoreForState`): an alert that was pending before the restart keeps its
    /// `activeAt`, moved by the downtime, and fires no sooner than the grace period after the
    /// restart.
    async fn restore(&self, run: &Arc<GroupRun>, now: i64) {
        let mut rules = run.state().rules.clone();
        for (spec, state) in run.spec.rules.iter().zip(rules.iter_mut()) {
            let RuleKind::Alerting { for_ms, .. } = spec.kind else {
                continue;
            };
            if for_ms >= self.config.grace_period_ms {
                for alert in state.active.values_mut() {
                    self.restore_alert(spec, alert, for_ms, now);
                }
            }
            state.restored = true;
        }
        run.state().rules = rules;
    }

    fn restore_alert(&self, spec: &super::group::RuleSpec, alert: &mut Alert, hold: i64, now: i64) {
        let labels = spec.alert_series(alert, "ALERTS_FOR_STATE");
        let matchers: Vec<Matcher> = labels
            .iter()
            .filter_map(|(k, v)| Matcher::new(MatchOp::Equal, k, v).ok())
            .collect();
        let Ok(found) = self
            .db
            .select(&matchers, now - self.config.outage_tolerance_ms, now)
        else {
            return;
        };
        let Some(series) = found.iter().find(|s| s.labels.len() == labels.len()) else {
            return;
        };
        let Some(&(down_at, value)) = series.samples.last() else {
            return;
        };
        if strata_wire::stale::is_stale_nan(value) {
            return;
        }
        let down_at = down_at.div_euclid(1000) * 1000;
        let mut active_at = (value as i64) * 1000;
        let remaining = hold - (down_at - active_at);
        if remaining <= 0 {
            // It was firing: keep when it became active.
        } else if remaining < self.config.grace_period_ms {
            active_at = now + self.config.grace_period_ms - hold;
        } else {
            active_at += now - down_at;
        }
        alert.active_at = active_at;
    }

    /// A removed group's series, marked stale two intervals after it stopped unless the
    /// central is stopping (rules/manager.go).
    async fn mark_removed_stale(&self, run: Arc<GroupRun>) {
        let stopped = strata_wire::clock::now_ms();
        let mut closing = self.closing.clone();
        let wait = Duration::from_millis(2 * run.spec.interval_ms as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closing.wait_for(|&c| c) => return,
        }
        let series: Vec<(KV, f64)> = {
            let state = run.state();
            state
                .rules
                .iter()
                .flat_map(|r| r.series.iter())
                .chain(state.stale.iter())
                .map(|s| (s.clone(), strata_wire::stale::stale_nan()))
                .collect()
        };
        if let Err(e) = self.write(&series, stopped).await {
            tracing::warn!(group = %run.spec.name, "cannot mark the removed group's series stale: {e}");
        }
    }

    /// Stops every group (at shutdown); no stale markers are written.
    pub async fn stop(&self) {
        let _guard = self.reloading.lock().await;
        self.stopped.store(true, Ordering::Relaxed);
        let groups = std::mem::take(&mut *lock(&self.groups));
        for run in groups.values() {
            run.halt().await;
        }
    }

    fn runs(&self) -> Vec<Arc<GroupRun>> {
        lock(&self.groups).values().cloned().collect()
    }

    /// Number of groups and of rules loaded.
    pub fn counts(&self) -> (usize, usize) {
        let runs = self.runs();
        let rules = runs.iter().map(|r| r.spec.rules.len()).sum();
        (runs.len(), rules)
    }

    /// `/api/v1/rules` data; `kind` is `alert`, `record` or `None` for both.
    pub fn rules_json(&self, kind: Option<&str>) -> Value {
        let mut runs = self.runs();
        runs.sort_by(|a, b| (&a.spec.file, &a.spec.name).cmp(&(&b.spec.file, &b.spec.name)));
        let groups: Vec<Value> = runs
            .iter()
            .map(|run| {
                let state = run.state();
                let rules: Vec<Value> = run
                    .spec
                    .rules
                    .iter()
                    .zip(&state.rules)
                    .filter(|(spec, _)| {
                        !matches!(
                            (kind, &spec.kind),
                            (Some("alert"), RuleKind::Recording)
                                | (Some("record"), RuleKind::Alerting { .. })
                        )
                    })
                    .map(|(spec, st)| rule_json(spec, st))
                    .collect();
                json!({
                    "name": run.spec.name,
                    "file": run.spec.file,
                    "rules": rules,
                    "interval": run.spec.interval_ms as f64 / 1000.0,
                    "limit": run.spec.limit,
                    "evaluationTime": state.evaluation_seconds,
                    "lastEvaluation": time_json(state.last_evaluation_ms),
                })
            })
            .collect();
        json!({ "groups": groups })
    }

    /// `/api/v1/alerts` data: every pending and firing alert.
    pub fn alerts_json(&self) -> Value {
        let alerts: Vec<Value> = self
            .runs()
            .iter()
            .flat_map(|run| {
                let state = run.state();
                state
                    .rules
                    .iter()
                    .flat_map(|r| r.active_alerts().map(alert_json))
                    .collect::<Vec<_>>()
            })
            .collect();
        json!({ "alerts": alerts })
    }
}

/// A changed group with the state of the old one's rules carried over, matched by name and
/// labels, duplicates in order (`Group.CopyState`): the series written last (to mark stale
/// when they vanish) and, from alerting rule to alerting rule, the alerts; series of rules
/// that are gone are marked stale at the first evaluation.
fn carry_over(spec: GroupSpec, old_spec: &GroupSpec, old: &GroupState) -> Arc<GroupRun> {
    let mut by_rule: BTreeMap<(&str, &KV), Vec<usize>> = BTreeMap::new();
    for (i, r) in old_spec.rules.iter().enumerate().rev() {
        by_rule.entry((&r.name, &r.labels)).or_default().push(i);
    }
    let mut used = BTreeSet::new();
    let rules = spec
        .rules
        .iter()
        .map(
            |r| match by_rule.get_mut(&(&r.name, &r.labels)).and_then(Vec::pop) {
                Some(i) if i < old.rules.len() => {
                    used.insert(i);
                    let mut state = RuleState::new(true);
                    state.series = old.rules[i].series.clone();
                    let alerting = |k: &RuleKind| matches!(k, RuleKind::Alerting { .. });
                    if alerting(&r.kind) && alerting(&old_spec.rules[i].kind) {
                        state.active = old.rules[i].active.clone();
                    }
                    state
                }
                _ => RuleState::new(true),
            },
        )
        .collect();
    let stale = old
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .flat_map(|(_, r)| r.series.iter().cloned())
        .chain(old.stale.iter().cloned())
        .collect();
    let (stop, _) = watch::channel(false);
    Arc::new(GroupRun {
        spec,
        state: Mutex::new(GroupState {
            rules,
            last_evaluation_ms: old.last_evaluation_ms,
            evaluation_seconds: old.evaluation_seconds,
            stale,
        }),
        stop,
        task: Mutex::new(None),
    })
}

/// Labels as the store names a series in its refusals.
fn render(labels: &KV) -> String {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.clone(), v.clone()))
        .collect();
    strata_wire::labels::render(&labels)
}

/// An instant query's result as labels and values (rules/manager.go `EngineQueryFunc`): a
/// scalar is one sample without labels; other types are an error.
fn instant_query(engine: &Engine<Db>, query: &str, t: i64) -> Result<Vec<(KV, f64)>, String> {
    let (value, _) = engine.instant(query, t).map_err(|e| e.message)?;
    let kv = |labels: &[Label]| -> KV {
        labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    };
    match value {
        promql::Value::Vector(v) => Ok(v.into_iter().map(|s| (kv(&s.metric), s.v)).collect()),
        promql::Value::Scalar(v) => Ok(vec![(KV::new(), v)]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

/// RFC 3339 as Go's JSON writes `time.Time` (no trailing zeros in the fraction); Go's zero
/// time when never.
fn time_json(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            let text =
                humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string();
            let (main, frac) = text
                .trim_end_matches('Z')
                .split_once('.')
                .unwrap_or((&text, ""));
            match frac.trim_end_matches('0') {
                "" => format!("{main}Z"),
                f => format!("{main}.{f}Z"),
            }
        }
        None => strata_wire::alert::NOT_ENDED.to_string(),
    }
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": time_json(Some(a.active_at)),
        "value": super::gofmt::format_float(a.value, 'e', -1),
    })
}

fn rule_json(spec: &super::group::RuleSpec, st: &RuleState) -> Value {
    let mut rule = match &spec.kind {
        RuleKind::Alerting {
            for_ms,
            keep_firing_for_ms,
            annotations,
            ..
        } => json!({
            "state": st.state().as_str(),
            "name": spec.name,
            "query": spec.query,
            "duration": *for_ms as f64 / 1000.0,
            "keepFiringFor": *keep_firing_for_ms as f64 / 1000.0,
            "labels": spec.labels,
            "annotations": annotations,
            "alerts": st.active_alerts().map(alert_json).collect::<Vec<_>>(),
            "health": st.health.as_str(),
            "evaluationTime": st.evaluation_seconds,
            "lastEvaluation": time_json(st.last_evaluation_ms),
            "type": "alerting",
        }),
        RuleKind::Recording => json!({
            "name": spec.name,
            "query": spec.query,
            "health": st.health.as_str(),
            "evaluationTime": st.evaluation_seconds,
            "lastEvaluation": time_json(st.last_evaluation_ms),
            "type": "recording",
        }),
    };
    if let Some(obj) = rule.as_object_mut() {
        if let RuleKind::Recording = spec.kind
            && !spec.labels.is_empty()
        {
            obj.insert("labels".into(), json!(spec.labels));
        }
        if let Some(e) = &st.last_error {
            obj.insert("lastError".into(), json!(e));
        }
    }
    rule
}
