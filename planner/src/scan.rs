//! Reading the fleet from the store: for every resource its daily means over the history,
//! its hourly means over the profile window and its limit; each hosted cluster's share of the
//! resources; and each customer cluster's daily peaks and size class. Every query asks the
//! store for aggregates at a fixed step, so the samples pulled are (cells × resources ×
//! (history days + profile hours)) plus a handful per cluster, whatever the scrape interval.

use std::collections::BTreeMap;

use crate::config::{PlannerConfig, ResourceConfig, WINDOW};
use crate::forecast::{DAY_MS, HOUR_MS};
use crate::source::Source;
use crate::{Error, Result};

const BOUNDARY_MS: i64 = 1000;

/// One cell resource (or one pool of it) as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSeries {
    pub region: String,
    pub cell: String,
    pub resource: String,
    pub pool: Option<String>,
    pub daily: Vec<(i64, f64)>,
    pub hourly: Vec<(i64, f64)>,
    pub limit: Option<f64>,
}

/// The queries sent for one resource, as evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResourceQueries {
    pub daily: String,
    pub hourly: String,
    pub limit: String,
}

/// A customer cluster's size: the peak of the last day and the peak over the demotion
/// window, per dimension; `None` where the store had nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterSeries {
    pub region: String,
    pub cell: String,
    pub cluster: String,
    pub size: Option<String>,
    /// Indexed like [`CLUSTER_DIMENSIONS`].
    pub last_day: [Option<f64>; 5],
    pub window: [Option<f64>; 5],
    /// Peak of the day one demotion window ago: the cluster has data that old.
    pub window_start: [Option<f64>; 5],
    pub latency_p99_seconds: Option<f64>,
}

/// The dimensions a tier bounds, in the order of [`ClusterSeries`]' arrays and
/// [`crate::config::ClusterQueries::dimensions`].
pub const CLUSTER_DIMENSIONS: [&str; 5] = [
    "nodes",
    "pods",
    "services",
    "apiserver_requests_per_second",
    "etcd_database_bytes",
];

/// Everything one report needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub now_ms: i64,
    pub resources: Vec<ResourceSeries>,
    pub queries: BTreeMap<String, ResourceQueries>,
    /// Per resource with a `share` query: each (region, cell, cluster)'s part.
    pub shares: BTreeMap<String, BTreeMap<ClusterKey, f64>>,
    pub clusters: Vec<ClusterSeries>,
}

/// Where the scan is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// Reads everything a report at `now_ms` needs.
pub async fn scan(
    source: &Source,
    config: &PlannerConfig,
    now_ms: i64,
    mut progress: impl FnMut(Progress),
) -> Result<Observed> {
    let total = config.resources.len() * 4 + CLUSTER_DIMENSIONS.len() * 3 + 2;
    let mut done = 0;
    let mut tick = |n: usize| {
        done += n;
        progress(Progress { done, total });
    };
    // Windows end a second before the hour, so that a sample exactly on the boundary falls
    // in one window whether the store's windows are closed at the start (Prometheus 2) or
    // open (Prometheus 3, strata central).
    let day_end = now_ms.div_euclid(DAY_MS) * DAY_MS - BOUNDARY_MS;
    let hour_end = now_ms.div_euclid(HOUR_MS) * HOUR_MS - BOUNDARY_MS;
    let max_span = i64::from(config.max_days_per_query) * DAY_MS;
    let mut observed = Observed {
        now_ms,
        ..Default::default()
    };
    for r in &config.resources {
        let daily_query = r.used.replace(WINDOW, "1d");
        let hourly_query = r.used.replace(WINDOW, "1h");
        let start = day_end - (i64::from(config.history_days) - 1) * DAY_MS;
        let daily = source
            .range(&daily_query, start, day_end, DAY_MS, max_span)
            .await?;
        tick(1);
        let hourly_start = hour_end - (i64::from(config.profile_days) * 24 - 1) * HOUR_MS;
        let hourly = source
            .range(&hourly_query, hourly_start, hour_end, HOUR_MS, max_span)
            .await?;
        tick(1);
        let limits = match (&r.limit, r.limit_value) {
            (Some(q), _) => Some(source.latest(q, now_ms, HOUR_MS).await?),
            _ => None,
        };
        tick(1);
        observed
            .resources
            .extend(join(r, daily, hourly, limits.as_deref())?);
        if let Some(q) = &r.share {
            let mut parts = BTreeMap::new();
            for (m, v) in source.latest(q, now_ms, HOUR_MS).await? {
                if let Some(key) = cluster_key(&m) {
                    parts.insert(key, v);
                }
            }
            observed.shares.insert(r.name.clone(), parts);
        }
        tick(1);
        observed.queries.insert(
            r.name.clone(),
            ResourceQueries {
                daily: daily_query,
                hourly: hourly_query,
                limit: r
                    .limit
                    .clone()
                    .unwrap_or_else(|| format!("{} (limit_value)", r.limit_value.unwrap_or(0.0))),
            },
        );
    }
    observed.clusters = scan_clusters(source, config, now_ms, &mut tick).await?;
    Ok(observed)
}

type Metric = strata_wire::api::Metric;
/// (region, cell, cluster).
pub type ClusterKey = (String, String, String);

fn cell_key(m: &Metric) -> Option<(String, String)> {
    Some((m.get("region")?.clone(), m.get("cell")?.clone()))
}

fn cluster_key(m: &Metric) -> Option<ClusterKey> {
    let (region, cell) = cell_key(m)?;
    Some((region, cell, m.get("cluster")?.clone()))
}

/// Joins a resource's daily and hourly series and limits by (region, cell, per).
fn join(
    r: &ResourceConfig,
    daily: Vec<crate::source::Series>,
    hourly: Vec<crate::source::Series>,
    limits: Option<&[(Metric, f64)]>,
) -> Result<Vec<ResourceSeries>> {
    type Key = (String, String, Option<String>);
    let key = |m: &Metric| -> Result<Key> {
        let (region, cell) = cell_key(m).ok_or_else(|| {
            Error::Config(format!(
                "resource {:?}: a series of `used` has no region or cell label ({m:?}); aggregate `by (region, cell)`",
                r.name
            ))
        })?;
        let pool = match &r.per {
            Some(label) => Some(m.get(label).cloned().ok_or_else(|| {
                Error::Config(format!(
                    "resource {:?}: a series has no {label:?} label ({m:?}); keep it in the `by` clause",
                    r.name
                ))
            })?),
            None => None,
        };
        Ok((region, cell, pool))
    };
    // Each cell's (and pool's) limit, looked up once per series; the first series wins.
    let mut by_key: BTreeMap<Key, f64> = BTreeMap::new();
    for (m, v) in limits.unwrap_or_default() {
        if let Some((region, cell)) = cell_key(m) {
            let pool = r.per.as_ref().and_then(|label| m.get(label).cloned());
            by_key.entry((region, cell, pool)).or_insert(*v);
        }
    }
    // A cell with hours but no whole day yet (a new cell) is listed with too little history.
    let mut out: BTreeMap<Key, ResourceSeries> = BTreeMap::new();
    let new = |k: Key| ResourceSeries {
        limit: r
            .limit_value
            .or_else(|| by_key.get(&k).copied())
            .filter(|v| v.is_finite() && *v > 0.0),
        region: k.0,
        cell: k.1,
        resource: r.name.clone(),
        pool: k.2,
        daily: Vec::new(),
        hourly: Vec::new(),
    };
    for (m, points) in daily {
        let k = key(&m)?;
        out.entry(k.clone()).or_insert_with(|| new(k)).daily = points;
    }
    for (m, points) in hourly {
        let k = key(&m)?;
        out.entry(k.clone()).or_insert_with(|| new(k)).hourly = points;
    }
    Ok(out.into_values().collect())
}

async fn scan_clusters(
    source: &Source,
    config: &PlannerConfig,
    now_ms: i64,
    tick: &mut impl FnMut(usize),
) -> Result<Vec<ClusterSeries>> {
    let q = &config.clusters;
    let mut clusters: BTreeMap<ClusterKey, ClusterSeries> = BTreeMap::new();
    for (m, _) in source.latest(&q.size, now_ms, HOUR_MS).await? {
        if let Some(k) = cluster_key(&m) {
            cluster_mut(&mut clusters, k).size = m.get(&q.size_label).cloned();
        }
    }
    tick(1);
    let window_days = config.resize.demote_after_days.max(1);
    let now_ms = now_ms - BOUNDARY_MS;
    let window_start = now_ms - i64::from(window_days - 1) * DAY_MS;
    for (i, query) in q.dimensions().into_iter().enumerate() {
        let day = query.replace(WINDOW, "1d");
        let window = query.replace(WINDOW, &format!("{window_days}d"));
        for (text, at, slot) in [
            (&day, now_ms, 0),
            (&window, now_ms, 1),
            (&day, window_start, 2),
        ] {
            for (m, v) in source.instant(text, at).await? {
                let Some(k) = cluster_key(&m) else { continue };
                let c = cluster_mut(&mut clusters, k);
                let value = v.is_finite().then_some(v);
                match slot {
                    0 => c.last_day[i] = value,
                    1 => c.window[i] = value,
                    _ => c.window_start[i] = value,
                }
            }
            tick(1);
        }
    }
    let latency = q.apiserver_latency_p99_seconds.replace(WINDOW, "1d");
    for (m, v) in source.instant(&latency, now_ms).await? {
        if let (Some(k), true) = (cluster_key(&m), v.is_finite()) {
            cluster_mut(&mut clusters, k).latency_p99_seconds = Some(v);
        }
    }
    tick(1);
    Ok(clusters.into_values().collect())
}

fn cluster_mut(
    clusters: &mut BTreeMap<ClusterKey, ClusterSeries>,
    k: ClusterKey,
) -> &mut ClusterSeries {
    clusters.entry(k.clone()).or_insert_with(|| ClusterSeries {
        region: k.0,
        cell: k.1,
        cluster: k.2,
        ..Default::default()
    })
}
