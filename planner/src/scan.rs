//! Reading the fleet from the store: for every resource its daily means over the history,
//! its hourly means over the profile window and its limit; each hosted cluster's share of the
//! resources; and each customer cluster's daily peaks and size class. Every query asks the
//! store for aggregates at a fixed step, so the samples pulled are (cells × resources ×
//! (history days + profile hours)) plus a handful per cluster, whatever the scrape interval.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use futures_util::future::try_join_all;

use crate::config::{NodeValue, PerNode, PlannerConfig, ResourceConfig, WINDOW};
use crate::forecast::{DAY_MS, HOUR_MS, Node};
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
    /// For a resource allocated per node: what its units are for.
    pub per_node: Option<NodeUse>,
}

/// The use a resource allocated per node is for: its daily and hourly means summed over the
/// cell's nodes, and each node's use (its mean over the hourly window) and terms now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeUse {
    pub daily: Vec<(i64, f64)>,
    pub hourly: Vec<(i64, f64)>,
    pub nodes: Vec<Node>,
}

/// The queries sent for one resource, as evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResourceQueries {
    pub daily: String,
    pub hourly: String,
    pub limit: String,
    /// For a resource allocated per node: the daily query of the use its forecast is of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_node: Option<String>,
}

/// A customer cluster's size: the peak of the last day and the highest daily peak over the
/// demotion window, per dimension; `None` where the store had nothing.
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

/// Reads everything a report at `now_ms` needs, with up to `max_concurrent_queries` queries
/// in flight.
pub async fn scan(
    source: &Source,
    config: &PlannerConfig,
    now_ms: i64,
    progress: impl FnMut(Progress),
) -> Result<Observed> {
    let source = &source.with_concurrency(config.max_concurrent_queries as usize);
    let per_node = config
        .resources
        .iter()
        .filter(|r| r.per_node.is_some())
        .count();
    let total = config.resources.len() * 4 + per_node * 3 + CLUSTER_DIMENSIONS.len() * 2 + 2;
    // The queries run concurrently within this task, each ticking when it is answered; the
    // lock is never held across an await.
    let progress = Mutex::new((0, progress));
    let tick = |n: usize| {
        let mut guard = progress.lock().unwrap_or_else(PoisonError::into_inner);
        let (done, report) = &mut *guard;
        *done += n;
        report(Progress { done: *done, total });
    };
    // Windows end a second before the hour, so that a sample exactly on the boundary falls
    // in one window whether the store's windows are closed at the start (Prometheus 2) or
    // open (Prometheus 3, strata central).
    let day_end = now_ms.div_euclid(DAY_MS) * DAY_MS - BOUNDARY_MS;
    let hour_end = now_ms.div_euclid(HOUR_MS) * HOUR_MS - BOUNDARY_MS;
    let windows = Windows {
        daily_start: day_end - (i64::from(config.history_days) - 1) * DAY_MS,
        day_end,
        hourly_start: hour_end - (i64::from(config.profile_days) * 24 - 1) * HOUR_MS,
        hour_end,
        max_span: i64::from(config.max_days_per_query) * DAY_MS,
    };
    let (resources, clusters) = tokio::try_join!(
        try_join_all(
            config
                .resources
                .iter()
                .map(|r| scan_resource(source, r, windows, now_ms, &tick))
        ),
        scan_clusters(source, config, now_ms, &tick),
    )?;
    let mut observed = Observed {
        now_ms,
        clusters,
        ..Default::default()
    };
    for (r, (series, queries, shares)) in config.resources.iter().zip(resources) {
        observed.resources.extend(series);
        observed.queries.insert(r.name.clone(), queries);
        if let Some(parts) = shares {
            observed.shares.insert(r.name.clone(), parts);
        }
    }
    Ok(observed)
}

/// One resource as read: its series, the queries sent for it, and each hosted cluster's
/// part of it when it has a `share` query.
type ResourceScan = (
    Vec<ResourceSeries>,
    ResourceQueries,
    Option<BTreeMap<ClusterKey, f64>>,
);

/// Reads one resource: its daily and hourly means, its limit, the use of a resource
/// allocated per node and the clusters' shares, all at once.
async fn scan_resource(
    source: &Source,
    r: &ResourceConfig,
    windows: Windows,
    now_ms: i64,
    tick: &impl Fn(usize),
) -> Result<ResourceScan> {
    let (daily, hourly, limits, uses, shares) = tokio::try_join!(
        ticked(windows.read(source, &r.used, false), tick),
        ticked(windows.read(source, &r.used, true), tick),
        ticked(
            async {
                Ok(match (&r.limit, r.limit_value) {
                    (Some(q), _) => Some(source.latest(q, now_ms, HOUR_MS).await?),
                    _ => None,
                })
            },
            tick
        ),
        async {
            match &r.per_node {
                Some(p) => scan_per_node(source, p, windows, now_ms, tick)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        },
        ticked(
            async {
                Ok(match &r.share {
                    Some(q) => Some(
                        source
                            .latest(q, now_ms, HOUR_MS)
                            .await?
                            .into_iter()
                            .filter_map(|(m, v)| Some((cluster_key(&m)?, v)))
                            .collect(),
                    ),
                    None => None,
                })
            },
            tick
        ),
    )?;
    let mut series = join(r, daily, hourly, limits.as_deref())?;
    if let Some(mut uses) = uses {
        for s in &mut series {
            s.per_node = uses.remove(&(s.region.clone(), s.cell.clone()));
        }
    }
    let queries = ResourceQueries {
        daily: r.used.replace(WINDOW, "1d"),
        hourly: r.used.replace(WINDOW, "1h"),
        limit: r
            .limit
            .clone()
            .unwrap_or_else(|| format!("{} (limit_value)", r.limit_value.unwrap_or(0.0))),
        per_node: r
            .per_node
            .as_ref()
            .map(|p| cell_use(p).replace(WINDOW, "1d")),
    };
    Ok((series, queries, shares))
}

/// `read`'s answer, ticking the progress bar once it is in.
async fn ticked<T>(read: impl Future<Output = Result<T>>, tick: &impl Fn(usize)) -> Result<T> {
    let answer = read.await?;
    tick(1);
    Ok(answer)
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
        per_node: None,
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

/// The cell's use of a resource allocated per node: its nodes' use, summed.
fn cell_use(p: &PerNode) -> String {
    format!("sum by (region, cell) ({})", p.used)
}

/// The windows every resource is read over: daily means over the history and hourly means
/// over the profile window.
#[derive(Debug, Clone, Copy)]
struct Windows {
    daily_start: i64,
    day_end: i64,
    hourly_start: i64,
    hour_end: i64,
    /// Longest range one query covers.
    max_span: i64,
}

impl Windows {
    /// The span of the hourly means, as a PromQL range (`168h` for a week).
    fn hourly_span(&self) -> String {
        format!("{}h", (self.hour_end - self.hourly_start) / HOUR_MS + 1)
    }

    /// `query`'s daily means (`$window` = `1d`) or hourly means (`1h`).
    async fn read(
        &self,
        source: &Source,
        query: &str,
        hourly: bool,
    ) -> Result<Vec<crate::source::Series>> {
        let (window, start, end, step) = if hourly {
            ("1h", self.hourly_start, self.hour_end, HOUR_MS)
        } else {
            ("1d", self.daily_start, self.day_end, DAY_MS)
        };
        source
            .range(
                &query.replace(WINDOW, window),
                start,
                end,
                step,
                self.max_span,
            )
            .await
    }
}

/// Reads the use of a resource allocated per node, by cell: daily and hourly means of the sum
/// over the cell (the same windows as the resource's own), each node's mean over the hourly
/// window (its share of the use), and its `holds` and `max`. A node without all three is left
/// out. The share is a mean over days, not the last hour: each node's use is a whole number,
/// and one hour's rounding moves a node's share enough to move the use at which it needs
/// another unit by a percent, which a slowly growing use takes weeks to cover.
async fn scan_per_node(
    source: &Source,
    p: &PerNode,
    windows: Windows,
    now_ms: i64,
    tick: &impl Fn(usize),
) -> Result<BTreeMap<(String, String), NodeUse>> {
    let cell = &cell_use(p);
    let used = p.used.replace(WINDOW, &windows.hourly_span());
    let (daily, hourly, holds, max, nodes) = tokio::try_join!(
        ticked(windows.read(source, cell, false), tick),
        ticked(windows.read(source, cell, true), tick),
        node_values(source, &p.holds, now_ms),
        node_values(source, &p.max, now_ms),
        source.instant(&used, windows.hour_end),
    )?;
    let mut out: BTreeMap<(String, String), NodeUse> = BTreeMap::new();
    for (hourly, series) in [(false, daily), (true, hourly)] {
        for (m, points) in series {
            if let Some(k) = cell_key(&m) {
                let u = out.entry(k).or_default();
                if hourly {
                    u.hourly = points;
                } else {
                    u.daily = points;
                }
            }
        }
    }
    for (m, used) in nodes {
        let (Some(k), Some(holds), Some(max)) = (cell_key(&m), holds.get(&m), max.get(&m)) else {
            continue;
        };
        out.entry(k)
            .or_default()
            .nodes
            .push(Node { used, holds, max });
    }
    tick(1);
    Ok(out)
}

/// A per-node value as read: one for every node, or one per node's labels.
enum NodeValues {
    Every(f64),
    PerNode(BTreeMap<Metric, f64>),
}

impl NodeValues {
    fn get(&self, node: &Metric) -> Option<f64> {
        match self {
            Self::Every(v) => Some(*v),
            Self::PerNode(by) => by.get(&without_name(node)).copied(),
        }
    }
}

fn without_name(m: &Metric) -> Metric {
    let mut m = m.clone();
    m.remove("__name__");
    m
}

/// A number, or the latest value of a query per node; a query that gives one series without
/// labels (a scalar such as `29`) gives that value to every node.
async fn node_values(source: &Source, v: &NodeValue, now_ms: i64) -> Result<NodeValues> {
    let q = match v {
        NodeValue::Value(v) => return Ok(NodeValues::Every(*v)),
        NodeValue::Query(q) => q,
    };
    let values = source.latest(q, now_ms, HOUR_MS).await?;
    if let [(m, v)] = values.as_slice()
        && without_name(m).is_empty()
    {
        return Ok(NodeValues::Every(*v));
    }
    Ok(NodeValues::PerNode(
        values
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(m, v)| (without_name(&m), v))
            .collect(),
    ))
}

async fn scan_clusters(
    source: &Source,
    config: &PlannerConfig,
    now_ms: i64,
    tick: &impl Fn(usize),
) -> Result<Vec<ClusterSeries>> {
    let q = &config.clusters;
    let window_days = config.resize.demote_after_days.max(1);
    let end_ms = now_ms - BOUNDARY_MS;
    let window_start = end_ms - i64::from(window_days - 1) * DAY_MS;
    // Each dimension's last daily peak, and its daily peaks over the demotion window in one
    // range query (demotion needs every daily peak below; a window as long as the demotion
    // period in one instant query would make the store load every raw sample of it at once).
    let span = i64::from(config.max_days_per_query) * DAY_MS;
    let dimension = |query: &str| {
        let day = query.replace(WINDOW, "1d");
        async move {
            tokio::try_join!(
                ticked(source.instant(&day, end_ms), tick),
                ticked(source.range(&day, window_start, end_ms, DAY_MS, span), tick),
            )
        }
    };
    let latency = q.apiserver_latency_p99_seconds.replace(WINDOW, "1d");
    let (sizes, dimensions, latencies) = tokio::try_join!(
        ticked(source.latest(&q.size, now_ms, HOUR_MS), tick),
        try_join_all(q.dimensions().into_iter().map(dimension)),
        ticked(source.instant(&latency, end_ms), tick),
    )?;
    let mut clusters: BTreeMap<ClusterKey, ClusterSeries> = BTreeMap::new();
    for (m, _) in sizes {
        if let Some(k) = cluster_key(&m) {
            cluster_mut(&mut clusters, k).size = m.get(&q.size_label).cloned();
        }
    }
    for (i, (last_day, peaks)) in dimensions.into_iter().enumerate() {
        for (m, v) in last_day {
            if let Some(k) = cluster_key(&m) {
                cluster_mut(&mut clusters, k).last_day[i] = v.is_finite().then_some(v);
            }
        }
        for (m, points) in peaks {
            let Some(k) = cluster_key(&m) else { continue };
            let c = cluster_mut(&mut clusters, k);
            let finite = points.iter().filter(|p| p.1.is_finite());
            c.window_start[i] = finite.clone().find(|p| p.0 == window_start).map(|p| p.1);
            c.window[i] = finite.map(|p| p.1).reduce(f64::max);
        }
    }
    for (m, v) in latencies {
        if let (Some(k), true) = (cluster_key(&m), v.is_finite()) {
            cluster_mut(&mut clusters, k).latency_p99_seconds = Some(v);
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A store that answers every query with no series, holding each answer until `gate`
    /// queries are in flight (or a moment has passed, for the last few), and counts the most
    /// in flight at once.
    async fn store(gate: usize) -> (String, Arc<AtomicUsize>) {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let answer = |kind: &'static str| {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            move || async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                for _ in 0..30 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if in_flight.load(Ordering::SeqCst) >= gate {
                        break;
                    }
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                format!(r#"{{"status":"success","data":{{"resultType":"{kind}","result":[]}}}}"#)
            }
        };
        let app = axum::Router::new()
            .route("/api/v1/query", axum::routing::post(answer("vector")))
            .route("/api/v1/query_range", axum::routing::post(answer("matrix")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), most)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_has_as_many_queries_in_flight_as_configured_and_no_more() {
        for limit in [1, 3] {
            let (url, most) = store(limit).await;
            let source = Source::new(&url, Duration::from_secs(10), None).unwrap();
            let config = PlannerConfig {
                max_concurrent_queries: limit as u32,
                ..Default::default()
            };
            let mut ticks = Vec::new();
            let observed = scan(&source, &config, 100 * DAY_MS, |p| ticks.push(p))
                .await
                .unwrap();
            assert!(observed.resources.is_empty() && observed.clusters.is_empty());
            assert_eq!(most.load(Ordering::SeqCst), limit, "limit {limit}");
            // Every step of the progress bar is reported once, in order, up to its total.
            let total = ticks[0].total;
            let done: Vec<usize> = ticks.iter().map(|p| p.done).collect();
            assert_eq!(done, (1..=total).collect::<Vec<_>>());
            assert!(source.stats().queries >= total as u64);
        }
    }
}
