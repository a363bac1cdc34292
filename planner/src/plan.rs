//! From what was read to what to do: a forecast per cell resource, a split decision per cell
//! whose headroom runs out, a resize decision per customer cluster that left its tier, and the
//! evidence for each. [`Report`] is also the JSON the planner prints and serves (schema
//! `strata.planner.report/v1`, described field by field in the README).
//!
//! Rules:
//! - **Split cell X** when the p90 forecast of any of its resources reaches the headroom line
//!   (default 60% of the limit): act by the p10 time of that crossing minus the lead time of
//!   a new cell. The binding resource is the one that gets there first. Every cell with such
//!   a crossing within the horizon is listed; those whose act-by date has come are `act_now`.
//! - **Proposed split:** the hosted clusters, largest part of the binding resource first, go
//!   one by one to the part that holds least of it; the smallest number of parts (2 to 8) in
//!   which every part stays below the headroom line for every resource, `split_planning_days`
//!   after the new cell is ready, at the p50 forecast, assuming each part keeps its share.
//! - **Promote cluster Y** when the peak of its last day is over any threshold of its tier, to
//!   the smallest tier that holds it. **Demote** only when every daily peak of the whole
//!   demotion window (default 30 days, and the cluster must have data that old) stayed below
//!   `demote_below` (default half) of a smaller tier's thresholds. Between the two there is a
//!   band where nothing changes, so a cluster never flaps.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::PlannerConfig;
use crate::forecast::{self, Crossing, DAY_MS, HOUR_MS, Input, Model, NodeUnits, TooLittleHistory};
use crate::scan::{
    CLUSTER_DIMENSIONS, ClusterSeries, NodeUse, Observed, ResourceQueries, ResourceSeries,
};
use crate::source::Stats;

pub const SCHEMA: &str = "strata.planner.report/v1";
const MAX_PARTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// The report's time: forecasts start here.
    pub at: String,
    pub at_ms: i64,
    pub source: String,
    pub settings: Settings,
    pub summary: Summary,
    /// Most urgent first.
    pub decisions: Vec<Decision>,
    /// Resources whose forecast could not be made, and why.
    pub attention: Vec<Attention>,
    pub cells: Vec<CellReport>,
    pub clusters: Vec<ClusterReport>,
    /// Queries issued and samples received to make this report.
    pub cost: Stats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub headroom: f64,
    pub lead_time_days: f64,
    pub history_days: u32,
    pub horizon_days: u32,
    pub split_planning_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub cells: usize,
    pub cell_resources: usize,
    pub clusters: usize,
    pub act_now: usize,
    pub planned: usize,
    pub splits: usize,
    pub promotions: usize,
    pub demotions: usize,
    pub too_little_history: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// The act-by date has come (or passed).
    ActNow,
    /// Within the horizon, not yet due.
    Planned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    SplitCell,
    PromoteCluster,
    DemoteCluster,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub urgency: Urgency,
    /// Start acting by then (RFC 3339) and how many days from the report's time (negative:
    /// overdue).
    pub act_by: String,
    pub act_by_days: f64,
    pub region: String,
    pub cell: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// One line for people: "split us-east-1-c03 by 2026-12-01: pod_ips (pool-b) ...".
    pub summary: String,
    pub evidence: Vec<Evidence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitProposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_tier: Option<String>,
}

/// What a decision rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// The resource or dimension, e.g. `pod_ips (pool-b)` or `nodes`.
    pub what: String,
    pub query: String,
    pub current: f64,
    pub limit: f64,
    pub utilisation: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_per_day: Option<f64>,
    /// Dates that matter, e.g. the p10/p50/p90 headroom crossings.
    pub dates: BTreeMap<String, String>,
}

impl Decision {
    /// The HTML report's anchor of this decision's row: `cell-<cell>` or `cluster-<cluster>`.
    pub fn anchor(&self) -> String {
        match &self.cluster {
            Some(c) => format!("cluster-{c}"),
            None => format!("cell-{}", self.cell),
        }
    }
}

impl Evidence {
    /// One line for people: `what: current of limit (utilisation%), growth/day; dates`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}: {} of {} ({:.1}%)",
            self.what,
            human(self.current),
            human(self.limit),
            self.utilisation * 100.0
        );
        if let Some(g) = self.growth_per_day {
            line.push_str(&format!(", {}/day", human(g)));
        }
        let dates: Vec<String> = self.dates.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if !dates.is_empty() {
            line.push_str(&format!("; {}", dates.join(", ")));
        }
        line
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitProposal {
    /// The part that stays is the first; the others move to new cells.
    pub parts: Vec<SplitPart>,
    /// When the utilisations below are forecast for.
    pub evaluated_at: String,
    /// Every part stays below the headroom line for every resource at `evaluated_at`.
    pub keeps_headroom: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitPart {
    pub clusters: Vec<String>,
    /// Forecast p50 peak utilisation per resource at `evaluated_at`.
    pub utilisation: BTreeMap<String, f64>,
}

impl SplitPart {
    /// The resource this part uses most of, and how much.
    pub fn highest(&self) -> Option<(&String, &f64)> {
        self.utilisation
            .iter()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attention {
    pub region: String,
    pub cell: String,
    pub resource: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellReport {
    pub region: String,
    pub cell: String,
    pub clusters: usize,
    /// The resource that reaches the headroom line first, if any does within the horizon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    pub resources: Vec<ResourceReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    Ok,
    TooLittleHistory,
    NoLimit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceReport {
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub unit: String,
    pub status: ResourceStatus,
    /// Peak of the hourly means over the last day.
    pub current: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilisation: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_per_day: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<Following>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_point: Option<String>,
    pub days_used: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<Exhaustion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exhaustion: Option<Exhaustion>,
    pub queries: ResourceQueries,
}

/// The resource a forecast follows, and how: `per_unit` more for each one more of it, and
/// `per_day` besides (the clusters already there growing, at the present count of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Following {
    pub resource: String,
    pub per_unit: f64,
    pub per_day: f64,
}

/// Time to a utilisation of the limit as p10 / p50 / p90; `None` beyond the horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exhaustion {
    pub utilisation: f64,
    pub value: f64,
    pub p10_days: Option<f64>,
    pub p50_days: Option<f64>,
    pub p90_days: Option<f64>,
    pub p10: Option<String>,
    pub p50: Option<String>,
    pub p90: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterReport {
    pub region: String,
    pub cell: String,
    pub cluster: String,
    /// The size class it has now (`None`: the store does not say).
    pub tier: Option<String>,
    /// The tier its size calls for, by the promotion and demotion rules.
    pub recommended_tier: Option<String>,
    /// Peaks of the last day per dimension.
    pub peaks: BTreeMap<&'static str, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_latency_p99_seconds: Option<f64>,
    /// Conditions worth a look that no tier change fixes.
    pub flags: Vec<String>,
}

/// Everything a forecast gave for one resource, kept for charts and backtests.
#[derive(Debug, Clone)]
pub struct Forecasted {
    pub series: ResourceSeries,
    pub model: Result<Model, TooLittleHistory>,
    /// Why a resource allocated per node is forecast from its own steps instead.
    pub warning: Option<String>,
}

/// Units counted from the nodes' use may differ from those allocated by this fraction
/// before the per-node terms are taken to be wrong.
const UNITS_AGREE: f64 = 0.05;

/// Forecasts every resource of `observed`: first those that follow no other, then those that
/// do, each with its cell's driver. A resource allocated per node is forecast from the use
/// its units are for when the per-node terms count the units allocated now.
pub fn forecast_all(config: &PlannerConfig, observed: &Observed) -> Vec<Forecasted> {
    let fit = |s: &ResourceSeries, driver: Option<forecast::Driver<'_>>| {
        let input = |daily, hourly| Input {
            daily,
            hourly,
            now_ms: observed.now_ms,
            min_history_days: config.min_history_days,
            driver,
        };
        let own = || forecast::fit(input(&s.daily, &s.hourly));
        let warm = config
            .resource(&s.resource)
            .and_then(|r| r.per_node.as_ref())
            .map(|p| p.warm);
        let (model, warning) = match (warm, &s.per_node) {
            (None, _) => (own(), None),
            (Some(_), None) => (
                own(),
                Some(
                    "per_node.used gave nothing for this cell; forecast from the units' own steps"
                        .to_string(),
                ),
            ),
            (Some(warm), Some(u)) => match per_node_units(s, u, warm) {
                Ok(units) => (
                    forecast::fit(input(&u.daily, &u.hourly)).map(|m| m.in_units(units)),
                    None,
                ),
                Err(why) => (own(), Some(why)),
            },
        };
        Forecasted {
            series: s.clone(),
            model,
            warning,
        }
    };
    let mut out: Vec<Option<Forecasted>> = observed
        .resources
        .iter()
        .map(|s| config.follows(&s.resource).is_none().then(|| fit(s, None)))
        .collect();
    let followers: Vec<(usize, Forecasted)> = observed
        .resources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let name = config.follows(&s.resource)?;
            let driver = out.iter().flatten().find(|d| {
                d.series.resource == name && d.series.region == s.region && d.series.cell == s.cell
            });
            let driver = driver.and_then(|d| {
                Some(forecast::Driver {
                    daily: &d.series.daily,
                    model: d.model.as_ref().ok()?,
                })
            });
            Some((i, fit(s, driver)))
        })
        .collect();
    for (i, f) in followers {
        out[i] = Some(f);
    }
    out.into_iter().flatten().collect()
}

/// The per-node terms of a resource allocated per node, if for the last hour's use they count
/// the units allocated in that hour to within [`UNITS_AGREE`]; else what to check.
fn per_node_units(s: &ResourceSeries, u: &NodeUse, warm: f64) -> Result<NodeUnits, String> {
    let units = NodeUnits::new(&u.nodes, warm).ok_or_else(|| {
        "per_node gave no node with a use, holds and max for this cell; forecast from the units' own steps".to_string()
    })?;
    let last = |points: &[(i64, f64)]| points.iter().rev().copied().find(|p| p.1.is_finite());
    let (Some((t, used)), Some((t_allocated, allocated))) = (last(&u.hourly), last(&s.hourly))
    else {
        return Ok(units);
    };
    if t != t_allocated {
        return Ok(units);
    }
    let counted = units.units(used);
    if (counted - allocated).abs() > UNITS_AGREE * allocated.max(1.0) {
        return Err(format!(
            "per_node counts {counted} units for this cell's {} nodes where {allocated} are allocated; check per_node.holds and per_node.warm (forecast from the units' own steps until they agree)",
            u.nodes.len()
        ));
    }
    Ok(units)
}

/// RFC 3339 in UTC, to the second.
pub fn format_time(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn days_between(from: i64, to: i64) -> f64 {
    ((to - from) as f64 / DAY_MS as f64 * 100.0).round() / 100.0
}

/// `v` to `digits` significant digits, so that stores summing in another order agree.
fn significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let magnitude = v.abs().log10().floor() as i32;
    round(v, digits - 1 - magnitude)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    // `+ 0.0` turns -0.0 into 0.0.
    (v * f).round() / f + 0.0
}

/// The resource's name with its pool, as people read it.
pub fn label(resource: &str, pool: Option<&str>) -> String {
    match pool {
        Some(p) => format!("{resource} ({p})"),
        None => resource.to_string(),
    }
}

fn exhaustion(now: i64, utilisation: f64, limit: f64, c: Crossing) -> Exhaustion {
    let days = |t: Option<i64>| t.map(|t| days_between(now, t).max(0.0));
    let date = |t: Option<i64>| t.map(format_time);
    Exhaustion {
        utilisation,
        value: limit * utilisation,
        p10_days: days(c.p10_ms),
        p50_days: days(c.p50_ms),
        p90_days: days(c.p90_ms),
        p10: date(c.p10_ms),
        p50: date(c.p50_ms),
        p90: date(c.p90_ms),
    }
}

/// The peak of the hourly means over the day before `now`, else the last daily mean.
fn current(s: &ResourceSeries, now: i64) -> f64 {
    s.hourly
        .iter()
        .filter(|(t, v)| *t > now - DAY_MS && v.is_finite())
        .map(|p| p.1)
        .reduce(f64::max)
        .or_else(|| s.daily.iter().rev().find(|p| p.1.is_finite()).map(|p| p.1))
        .unwrap_or(f64::NAN)
}

/// Builds the report.
pub fn plan(
    config: &PlannerConfig,
    observed: &Observed,
    forecasts: &[Forecasted],
    source: &str,
    cost: Stats,
) -> Report {
    let now = observed.now_ms;
    let mut cells: BTreeMap<(String, String), CellReport> = BTreeMap::new();
    let mut attention = Vec::new();
    let units: BTreeMap<&str, &str> = config
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_str()))
        .collect();
    let clusters_per_cell = clusters_by_cell(observed);
    for f in forecasts {
        let s = &f.series;
        let cell = cells
            .entry((s.region.clone(), s.cell.clone()))
            .or_insert_with(|| CellReport {
                region: s.region.clone(),
                cell: s.cell.clone(),
                clusters: clusters_per_cell
                    .get(&(s.region.clone(), s.cell.clone()))
                    .map_or(0, Vec::len),
                binding: None,
                resources: Vec::new(),
            });
        let current = current(s, now);
        let mut r = ResourceReport {
            resource: s.resource.clone(),
            pool: s.pool.clone(),
            unit: units
                .get(s.resource.as_str())
                .copied()
                .unwrap_or("")
                .to_string(),
            status: ResourceStatus::Ok,
            current: round(current, 3),
            limit: s.limit,
            utilisation: s.limit.map(|l| round(current / l, 4)),
            growth_per_day: None,
            trend: None,
            follows: None,
            change_point: None,
            days_used: 0,
            headroom: None,
            exhaustion: None,
            queries: observed
                .queries
                .get(&s.resource)
                .cloned()
                .unwrap_or(ResourceQueries {
                    daily: String::new(),
                    hourly: String::new(),
                    limit: String::new(),
                    per_node: None,
                }),
        };
        if let Some(w) = &f.warning {
            attention.push(Attention {
                region: s.region.clone(),
                cell: s.cell.clone(),
                resource: label(&s.resource, s.pool.as_deref()),
                message: w.clone(),
            });
        }
        match (&f.model, s.limit) {
            (Err(e), _) => {
                r.status = ResourceStatus::TooLittleHistory;
                r.days_used = e.days as usize;
                r.change_point = e.change_point_ms.map(format_time);
                attention.push(Attention {
                    region: s.region.clone(),
                    cell: s.cell.clone(),
                    resource: label(&s.resource, s.pool.as_deref()),
                    message: match e.change_point_ms {
                        Some(c) => format!(
                            "too little history since the change on {}: {} days, {} needed; no forecast until then",
                            &format_time(c)[..10],
                            e.days,
                            e.needed_days
                        ),
                        None => format!(
                            "too little history: {} days, {} needed; no forecast until then",
                            e.days, e.needed_days
                        ),
                    },
                });
            }
            (Ok(model), limit) => {
                r.growth_per_day = Some(significant(model.growth_per_day(), 6));
                r.trend = Some(model.trend().name());
                let per_use = model.units_per_use();
                r.follows = model.follows.as_ref().and_then(|f| {
                    Some(Following {
                        resource: config.follows(&s.resource)?.to_string(),
                        per_unit: significant(f.per_driver * per_use, 4),
                        per_day: significant(f.per_day * per_use, 4),
                    })
                });
                r.change_point = model.change_point_ms.map(format_time);
                r.days_used = model.days_used;
                match limit {
                    Some(limit) => {
                        let threshold = |u: f64| {
                            let c = if current >= u * limit {
                                Crossing {
                                    p10_ms: Some(now),
                                    p50_ms: Some(now),
                                    p90_ms: Some(now),
                                }
                            } else {
                                model.crossing(u * limit, config.horizon_days)
                            };
                            exhaustion(now, u, limit, c)
                        };
                        r.headroom = Some(threshold(config.headroom));
                        r.exhaustion = Some(threshold(1.0));
                    }
                    None => {
                        r.status = ResourceStatus::NoLimit;
                        attention.push(Attention {
                            region: s.region.clone(),
                            cell: s.cell.clone(),
                            resource: label(&s.resource, s.pool.as_deref()),
                            message: "no limit: the limit query returned nothing for this cell; check it or set limit_value".into(),
                        });
                    }
                }
            }
        }
        cell.resources.push(r);
    }
    let mut decisions = Vec::new();
    for cell in cells.values_mut() {
        if let Some(d) = split_decision(config, observed, forecasts, cell, &clusters_per_cell) {
            decisions.push(d);
        }
    }
    let (cluster_reports, resize) = resize_decisions(config, observed);
    decisions.extend(resize);
    decisions.sort_by(|a, b| {
        (a.urgency, a.act_by_days)
            .partial_cmp(&(b.urgency, b.act_by_days))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| (&a.cell, &a.cluster).cmp(&(&b.cell, &b.cluster)))
    });
    let count = |k: DecisionKind| decisions.iter().filter(|d| d.kind == k).count();
    let summary = Summary {
        cells: cells.len(),
        cell_resources: forecasts.len(),
        clusters: cluster_reports.len(),
        act_now: decisions
            .iter()
            .filter(|d| d.urgency == Urgency::ActNow)
            .count(),
        planned: decisions
            .iter()
            .filter(|d| d.urgency == Urgency::Planned)
            .count(),
        splits: count(DecisionKind::SplitCell),
        promotions: count(DecisionKind::PromoteCluster),
        demotions: count(DecisionKind::DemoteCluster),
        too_little_history: forecasts.iter().filter(|f| f.model.is_err()).count(),
    };
    Report {
        schema: SCHEMA,
        at: format_time(now),
        at_ms: now,
        source: source.to_string(),
        settings: Settings {
            headroom: config.headroom,
            lead_time_days: config.lead_time_days,
            history_days: config.history_days,
            horizon_days: config.horizon_days,
            split_planning_days: config.split_planning_days,
        },
        summary,
        decisions,
        attention,
        cells: cells.into_values().collect(),
        clusters: cluster_reports,
        cost,
    }
}

/// The hosted clusters of each cell, by name.
fn clusters_by_cell(observed: &Observed) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for c in &observed.clusters {
        out.entry((c.region.clone(), c.cell.clone()))
            .or_default()
            .push(c.cluster.clone());
    }
    out
}

fn split_decision(
    config: &PlannerConfig,
    observed: &Observed,
    forecasts: &[Forecasted],
    cell: &mut CellReport,
    clusters: &BTreeMap<(String, String), Vec<String>>,
) -> Option<Decision> {
    let now = observed.now_ms;
    let binding = cell
        .resources
        .iter()
        .filter_map(|r| {
            let h = r.headroom.as_ref()?;
            Some((h.p10_days?, h.p50_days.unwrap_or(f64::INFINITY), r, h))
        })
        .min_by(|a, b| {
            (a.0, a.1)
                .partial_cmp(&(b.0, b.1))
                .unwrap_or(std::cmp::Ordering::Equal)
        })?;
    let (p10_days, _, r, h) = binding;
    let what = label(&r.resource, r.pool.as_deref());
    cell.binding = Some(what.clone());
    let act_by_days = round(p10_days - config.lead_time_days, 2);
    let act_by_ms = now + (act_by_days * DAY_MS as f64) as i64;
    let urgency = if act_by_days <= 0.0 {
        Urgency::ActNow
    } else {
        Urgency::Planned
    };
    let mut dates = BTreeMap::new();
    for (k, v) in [
        ("headroom_p10", &h.p10),
        ("headroom_p50", &h.p50),
        ("headroom_p90", &h.p90),
    ] {
        if let Some(v) = v {
            dates.insert(k.to_string(), v.clone());
        }
    }
    if let Some(v) = r.exhaustion.as_ref().and_then(|e| e.p50.as_ref()) {
        dates.insert("limit_p50".into(), v.clone());
    }
    let limit = r.limit.unwrap_or(f64::NAN);
    let evidence = vec![Evidence {
        what: what.clone(),
        query: r.queries.daily.clone(),
        current: r.current,
        limit,
        utilisation: r.utilisation.unwrap_or(f64::NAN),
        growth_per_day: r.growth_per_day,
        dates,
    }];
    let members = clusters
        .get(&(cell.region.clone(), cell.cell.clone()))
        .cloned()
        .unwrap_or_default();
    let ready = act_by_ms.max(now) + (config.lead_time_days * DAY_MS as f64) as i64;
    let split = propose_split(
        config,
        observed,
        forecasts,
        cell,
        &r.resource,
        &members,
        ready,
    );
    let headroom_pct = (config.headroom * 100.0).round();
    let summary = format!(
        "split {} by {}: {what} reaches {headroom_pct}% of its limit by {} (p10; p50 {}), now at {:.0}%, growing {}/day",
        cell.cell,
        &format_time(act_by_ms)[..10],
        h.p10.as_deref().map_or("-", |d| &d[..10]),
        h.p50.as_deref().map_or("beyond the horizon", |d| &d[..10]),
        r.utilisation.unwrap_or(0.0) * 100.0,
        human(r.growth_per_day.unwrap_or(0.0)),
    );
    Some(Decision {
        kind: DecisionKind::SplitCell,
        urgency,
        act_by: format_time(act_by_ms),
        act_by_days,
        region: cell.region.clone(),
        cell: cell.cell.clone(),
        cluster: None,
        summary,
        evidence,
        split,
        from_tier: None,
        to_tier: None,
    })
}

/// A number for a sentence: three significant digits, SI suffixes for large ones.
pub fn human(v: f64) -> String {
    let v = if v.abs() < 0.005 { 0.0 } else { v };
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

/// The forecast p50 peak of a resource on the day starting at `t`.
fn peak_on_day(model: &Model, t: i64) -> f64 {
    (0..24)
        .map(|h| model.band(t + h * HOUR_MS).p50)
        .fold(f64::MIN, f64::max)
}

fn propose_split(
    config: &PlannerConfig,
    observed: &Observed,
    forecasts: &[Forecasted],
    cell: &CellReport,
    binding: &str,
    members: &[String],
    ready_ms: i64,
) -> Option<SplitProposal> {
    if members.len() < 2 {
        return None;
    }
    let at = ready_ms + i64::from(config.split_planning_days) * DAY_MS;
    let weights = |resource: &str| -> Vec<f64> {
        let shares = observed.shares.get(resource);
        let w: Vec<f64> = members
            .iter()
            .map(|m| {
                shares
                    .and_then(|s| s.get(&(cell.region.clone(), cell.cell.clone(), m.clone())))
                    .copied()
                    .unwrap_or(if shares.is_some() { 0.0 } else { 1.0 })
            })
            .collect();
        let total: f64 = w.iter().sum();
        if total > 0.0 {
            w.iter().map(|v| v / total).collect()
        } else {
            vec![1.0 / members.len() as f64; members.len()]
        }
    };
    // Forecast utilisation of each resource of the whole cell at `at`.
    let whole: Vec<(String, String, f64)> = forecasts
        .iter()
        .filter(|f| f.series.region == cell.region && f.series.cell == cell.cell)
        .filter_map(|f| {
            let model = f.model.as_ref().ok()?;
            let limit = f.series.limit?;
            Some((
                f.series.resource.clone(),
                label(&f.series.resource, f.series.pool.as_deref()),
                peak_on_day(model, at.div_euclid(DAY_MS) * DAY_MS) / limit,
            ))
        })
        .collect();
    let binding_weights = weights(binding);
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        binding_weights[b]
            .partial_cmp(&binding_weights[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(members[a].cmp(&members[b]))
    });
    let resource_weights: BTreeMap<String, Vec<f64>> = whole
        .iter()
        .map(|(r, _, _)| (r.clone(), weights(r)))
        .collect();
    let mut best = None;
    for parts in 2..=MAX_PARTS.min(members.len()) {
        let mut load = vec![0.0; parts];
        let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); parts];
        for &i in &order {
            let p = (0..parts)
                .min_by(|&a, &b| {
                    load[a]
                        .partial_cmp(&load[b])
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0);
            load[p] += binding_weights[i];
            assigned[p].push(i);
        }
        let split_parts: Vec<SplitPart> = assigned
            .iter()
            .map(|idx| SplitPart {
                clusters: idx.iter().map(|&i| members[i].clone()).collect(),
                utilisation: whole
                    .iter()
                    .map(|(r, what, u)| {
                        let share: f64 = idx.iter().map(|&i| resource_weights[r][i]).sum();
                        (what.clone(), round(u * share, 4))
                    })
                    .collect(),
            })
            .collect();
        let keeps = split_parts
            .iter()
            .all(|p| p.utilisation.values().all(|u| *u < config.headroom));
        best = Some(SplitProposal {
            parts: split_parts,
            evaluated_at: format_time(at),
            keeps_headroom: keeps,
        });
        if keeps {
            break;
        }
    }
    best
}

fn tier_fits(config: &PlannerConfig, tier: usize, values: &[Option<f64>; 5], factor: f64) -> bool {
    values
        .iter()
        .zip(config.tiers[tier].limits())
        .all(|(v, l)| v.is_none_or(|v| v <= l * factor))
}

fn resize_decisions(
    config: &PlannerConfig,
    observed: &Observed,
) -> (Vec<ClusterReport>, Vec<Decision>) {
    let now = observed.now_ms;
    let mut reports = Vec::new();
    let mut decisions = Vec::new();
    for c in &observed.clusters {
        let current = c.size.as_deref().and_then(|s| config.tier(s));
        let fits = (0..config.tiers.len()).find(|&t| tier_fits(config, t, &c.last_day, 1.0));
        let mut flags = Vec::new();
        if fits.is_none() {
            flags.push("over the largest tier: split this cluster or raise the large tier".into());
        }
        if let (Some(nodes), Some(pods)) = (c.last_day[0], c.last_day[1])
            && nodes > 0.0
            && pods / nodes > config.resize.max_pods_per_node
        {
            flags.push(format!(
                "{:.0} pods per node, over {}",
                pods / nodes,
                config.resize.max_pods_per_node
            ));
        }
        if let Some(l) = c.latency_p99_seconds
            && l > config.resize.apiserver_latency_p99_seconds
        {
            flags.push(format!(
                "apiserver p99 latency {l:.2}s, over the {}s SLO",
                config.resize.apiserver_latency_p99_seconds
            ));
        }
        let has_full_window = c.window_start.iter().any(Option::is_some);
        let recommended = match (current, fits) {
            (Some(cur), Some(fit)) if fit > cur => Some(fit),
            (Some(cur), _) if has_full_window => (0..cur)
                .find(|&t| tier_fits(config, t, &c.window, config.resize.demote_below))
                .or(Some(cur)),
            (Some(cur), _) => Some(cur),
            (None, fit) => fit,
        };
        let peaks: BTreeMap<&'static str, f64> = CLUSTER_DIMENSIONS
            .iter()
            .zip(&c.last_day)
            .filter_map(|(d, v)| v.map(|v| (*d, round(v, 3))))
            .collect();
        if let (Some(cur), Some(rec)) = (current, recommended)
            && rec != cur
        {
            decisions.push(resize_decision(config, c, cur, rec, now));
        }
        reports.push(ClusterReport {
            region: c.region.clone(),
            cell: c.cell.clone(),
            cluster: c.cluster.clone(),
            tier: c.size.clone(),
            recommended_tier: recommended.map(|t| config.tiers[t].name.clone()),
            peaks,
            apiserver_latency_p99_seconds: c.latency_p99_seconds.map(|l| round(l, 4)),
            flags,
        });
    }
    (reports, decisions)
}

fn resize_decision(
    config: &PlannerConfig,
    c: &ClusterSeries,
    cur: usize,
    rec: usize,
    now: i64,
) -> Decision {
    let promote = rec > cur;
    let (from, to) = (&config.tiers[cur], &config.tiers[rec]);
    let queries = config.clusters.dimensions();
    let mut evidence = Vec::new();
    for i in 0..CLUSTER_DIMENSIONS.len() {
        let (value, limit) = if promote {
            (c.last_day[i], from.limits()[i])
        } else {
            (c.window[i], to.limits()[i] * config.resize.demote_below)
        };
        let Some(value) = value else { continue };
        if promote && value <= limit {
            continue;
        }
        let window = if promote {
            "1d".to_string()
        } else {
            format!("{}d", config.resize.demote_after_days)
        };
        evidence.push(Evidence {
            what: CLUSTER_DIMENSIONS[i].to_string(),
            query: queries[i].replace(crate::config::WINDOW, &window),
            current: round(value, 3),
            limit,
            utilisation: round(value / limit, 4),
            growth_per_day: c.window_start[i].map(|old| {
                round(
                    (c.last_day[i].unwrap_or(old) - old)
                        / f64::from(config.resize.demote_after_days.max(1)),
                    4,
                )
            }),
            dates: BTreeMap::new(),
        });
    }
    let (kind, urgency, act_by_days, summary) = if promote {
        let over: Vec<String> = evidence
            .iter()
            .map(|e| format!("{} {} > {}", e.what, human(e.current), human(e.limit)))
            .collect();
        (
            DecisionKind::PromoteCluster,
            Urgency::ActNow,
            0.0,
            format!(
                "resize {} from {} to {}: {}",
                c.cluster,
                from.name,
                to.name,
                over.join(", ")
            ),
        )
    } else {
        (
            DecisionKind::DemoteCluster,
            Urgency::Planned,
            config.lead_time_days,
            format!(
                "resize {} from {} to {}: every daily peak of the last {} days stayed below {:.0}% of {}",
                c.cluster,
                from.name,
                to.name,
                config.resize.demote_after_days,
                config.resize.demote_below * 100.0,
                to.name
            ),
        )
    };
    Decision {
        kind,
        urgency,
        act_by: format_time(now + (act_by_days * DAY_MS as f64) as i64),
        act_by_days,
        region: c.region.clone(),
        cell: c.cell.clone(),
        cluster: Some(c.cluster.clone()),
        summary,
        evidence,
        split: None,
        from_tier: Some(from.name.clone()),
        to_tier: Some(to.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_793_718_000_000), "2026-11-03T15:00:00Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn per_node_settings_that_miscount_what_is_allocated_are_not_used() {
        // Two nodes with 80 and 70 addresses hold 4 + 4 ENIs by the VPC CNI's rule (29 per
        // ENI, one warm).
        let t = 1_790_000_000_000;
        let enis = |v: f64| ResourceSeries {
            region: "r".into(),
            cell: "c".into(),
            resource: "enis".into(),
            pool: None,
            daily: Vec::new(),
            hourly: vec![(t, v)],
            limit: Some(16.0),
            per_node: None,
        };
        let nodes = |holds| NodeUse {
            daily: Vec::new(),
            hourly: vec![(t, 150.0)],
            nodes: [80.0, 70.0]
                .map(|used| forecast::Node {
                    used,
                    holds,
                    max: 8.0,
                })
                .to_vec(),
        };
        assert!(per_node_units(&enis(8.0), &nodes(29.0), 1.0).is_ok());
        // 8 allocated where 14 addresses per ENI would need 7 + 6: the settings are wrong.
        let err = per_node_units(&enis(8.0), &nodes(14.0), 1.0).expect_err("miscounted");
        assert!(
            err.contains("counts 13 units") && err.contains("per_node.holds"),
            "{err}"
        );
        // No node with terms: nothing to count with.
        let none = NodeUse {
            nodes: Vec::new(),
            ..nodes(29.0)
        };
        assert!(per_node_units(&enis(8.0), &none, 1.0).is_err());
    }

    fn cluster(size: &str, last_day: [f64; 5], window: [f64; 5], old: bool) -> ClusterSeries {
        ClusterSeries {
            region: "r".into(),
            cell: "c".into(),
            cluster: "k".into(),
            size: Some(size.into()),
            last_day: last_day.map(Some),
            window: window.map(Some),
            window_start: if old { last_day.map(Some) } else { [None; 5] },
            latency_p99_seconds: None,
        }
    }

    fn recommend(c: ClusterSeries) -> (Option<String>, usize) {
        let config = PlannerConfig::default();
        let observed = Observed {
            clusters: vec![c],
            ..Default::default()
        };
        let (reports, decisions) = resize_decisions(&config, &observed);
        (reports[0].recommended_tier.clone(), decisions.len())
    }

    #[test]
    fn promotes_over_a_threshold_and_demotes_only_well_below_for_the_whole_window() {
        let small = [50.0, 1000.0, 100.0, 20.0, 1e8];
        let just_over = [101.0, 1000.0, 100.0, 20.0, 1e8];
        // Over small's 100 nodes: medium, at once.
        assert_eq!(
            recommend(cluster("small", just_over, just_over, true)),
            (Some("medium".into()), 1)
        );
        // Back at 60 nodes the day after: still medium (60 is not below half of 100).
        let sixty = [60.0, 1000.0, 100.0, 20.0, 1e8];
        assert_eq!(
            recommend(cluster("medium", sixty, sixty, true)),
            (Some("medium".into()), 0)
        );
        // Below half of small for the whole window, with a window of data: small.
        assert_eq!(
            recommend(cluster(
                "medium",
                [40.0, 900.0, 100.0, 20.0, 1e8],
                [45.0, 1000.0, 120.0, 30.0, 1e8],
                true
            )),
            (Some("small".into()), 1)
        );
        // The same without 30 days of data: no demotion.
        assert_eq!(
            recommend(cluster(
                "medium",
                small,
                [45.0, 1000.0, 120.0, 30.0, 1e8],
                false
            )),
            (Some("medium".into()), 0)
        );
        // One peak in the window above half: no demotion.
        assert_eq!(
            recommend(cluster(
                "medium",
                small,
                [70.0, 1000.0, 120.0, 30.0, 1e8],
                true
            )),
            (Some("medium".into()), 0)
        );
    }
}
