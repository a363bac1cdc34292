//! The planner's configuration (`planner.yaml`): the headroom rule, how much history to read,
//! the PromQL of every cell resource and its limit, and the customer-cluster tiers.
//!
//! Every field has a default, so an empty file (or none) plans a fleet whose metrics carry the
//! names of the real exporters (kube-state-metrics, Calico IPAM, the AWS VPC CNI, HyperShift,
//! etcd, kube-apiserver) and the `region`, `cell` and `cluster` labels strata's edges add.
//!
//! ```yaml
//! headroom: 0.6            # act when the p90 forecast reaches 60% of a limit...
//! lead_time_days: 14       # ...within the time it takes to build a new cell
//! history_days: 90
//! resources:
//!   - name: cpu_requests
//!     used: sum by (region, cell) (avg_over_time(kube_pod_container_resource_requests{resource="cpu"}[$window]))
//!     limit: sum by (region, cell) (kube_node_status_allocatable{resource="cpu"})
//!     follows: hosted_control_planes
//!   - name: hosted_control_planes
//!     used: max by (region, cell) (avg_over_time(hypershift_hostedclusters[$window]))
//!     limit: max by (region, cell) (cell_capacity_limit{resource="hosted_control_planes"})
//!   - name: enis
//!     used: sum by (region, cell) (avg_over_time(awscni_eni_allocated[$window]))
//!     limit: sum by (region, cell) (awscni_eni_max)
//!     per_node:              # forecast from the pod addresses on each node
//!       used: sum by (region, cell, instance) (avg_over_time(awscni_assigned_ip_addresses[$window]))
//!       holds: max by (region, cell, instance) (awscni_total_ip_addresses / awscni_eni_allocated)
//!       max: max by (region, cell, instance) (awscni_eni_max)
//!       warm: 1
//!   - name: apiserver_inflight
//!     used: max by (region, cell) (avg_over_time(apiserver_current_inflight_requests{job="apiserver", request_kind="readOnly"}[$window]))
//!     limit_value: 400
//! tiers:
//!   - {name: small, nodes: 100, pods: 5000, services: 1000}
//! ```
//!
//! `used` queries contain `$window`: the planner asks for daily means (`$window` = `1d`, one
//! point per day) over the history and hourly means (`1h`) over the last `profile_days`, so
//! the store aggregates and the samples pulled grow with the fleet, not with the history.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The placeholder for the averaging window in `used` queries.
pub const WINDOW: &str = "$window";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerConfig {
    /// Utilisation (fraction of a limit) that must not be reached without a plan.
    pub headroom: f64,
    /// Days it takes to build a new cell (or resize a cluster): a decision is due when the
    /// p90 forecast reaches the headroom line within this many days.
    pub lead_time_days: f64,
    /// Days of history to read for each forecast.
    pub history_days: u32,
    /// Days of hourly means that shape the daily cycle.
    pub profile_days: u32,
    /// Fewer days than this since the last change point: reported as too little history.
    pub min_history_days: u32,
    /// How far ahead to look for exhaustion.
    pub horizon_days: u32,
    /// After a split, each part must stay below the headroom line for this many days.
    pub split_planning_days: u32,
    /// Longest range one `query_range` covers; longer ranges are asked for in pieces, so no
    /// single query loads too many samples in the store.
    pub max_days_per_query: u32,
    /// Queries a report has in flight at once. More make a report of a large fleet quicker
    /// where the store has the cores for them (Prometheus runs up to 20 at once by default,
    /// `--query.max-concurrency`); fewer leave more to the store's other users.
    pub max_concurrent_queries: u32,
    pub resources: Vec<ResourceConfig>,
    /// Customer-cluster size classes, smallest first.
    pub tiers: Vec<TierConfig>,
    pub resize: ResizeConfig,
    pub clusters: ClusterQueries,
}

/// A cell resource: its use, its limit, and how it divides among the hosted clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub name: String,
    /// PromQL giving the use per `region` and `cell` (and `per`), with `$window` where the
    /// averaging window goes.
    pub used: String,
    /// PromQL giving the limit per `region` and `cell` (and `per`), evaluated at the report
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// A fixed limit, for limits no metric carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_value: Option<f64>,
    /// A label that divides the resource within a cell (e.g. `ippool`): each value is
    /// forecast against its own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// PromQL giving each hosted cluster's part of the use (by `region`, `cell`, `cluster`),
    /// used to propose which clusters move when the cell splits. Without it every cluster
    /// counts the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Another resource (of the whole cell, without `per`) this one grows with, such as the
    /// hosted control planes a cell's pods and requests come from. When that resource
    /// explains the history, the forecast follows that resource's forecast: it steps when
    /// another cluster is onboarded and bends where onboarding speeds up or slows down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// A resource each node allocates in whole units for its part of a smoother use (ENIs
    /// for pod addresses): forecast from that use, spread over the nodes, instead of from
    /// the steps of `used`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_node: Option<PerNode>,
    /// Unit for people (`cores`, `bytes`, ...).
    #[serde(default)]
    pub unit: String,
}

/// How each node of a cell allocates a resource: `min(ceil(used / holds) + warm, max)`
/// units. The AWS VPC CNI attaches ENIs this way, `holds` being the secondary addresses of
/// one ENI and `warm` its `WARM_ENI_TARGET`.
///
/// `used`, `holds` and `max` are PromQL giving one value per node, by `region`, `cell` and
/// the labels that name the node (the same in all three); `holds` and `max` may instead be
/// numbers, for every node alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerNode {
    /// PromQL giving each node's use, with `$window` where the averaging window goes.
    pub used: String,
    /// The use one unit holds on each node.
    pub holds: NodeValue,
    /// The most units each node can have.
    pub max: NodeValue,
    /// Spare units each node keeps.
    #[serde(default)]
    pub warm: f64,
}

/// A value per node: PromQL, or one number for every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeValue {
    Value(f64),
    Query(String),
}

/// A customer-cluster size class: the most a cluster of this class may have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub name: String,
    pub nodes: f64,
    pub pods: f64,
    pub services: f64,
    pub apiserver_requests_per_second: f64,
    pub etcd_database_bytes: f64,
}

/// When a cluster changes tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResizeConfig {
    /// Demote only when every daily peak of the last `demote_after_days` stayed below this
    /// fraction of the smaller tier's thresholds (hysteresis: promotion happens at 1.0).
    pub demote_below: f64,
    pub demote_after_days: u32,
    /// Pods per node above this are flagged (kubelet's default `--max-pods`).
    pub max_pods_per_node: f64,
    /// Apiserver p99 latency above this is flagged (the Kubernetes API call latency SLO).
    pub apiserver_latency_p99_seconds: f64,
}

/// PromQL for the customer clusters' sizes and control-plane load, each per `region`,
/// `cell` and `cluster`, with `$window` where the window goes (daily peaks are asked for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterQueries {
    pub nodes: String,
    pub pods: String,
    pub services: String,
    pub apiserver_requests_per_second: String,
    pub apiserver_latency_p99_seconds: String,
    pub etcd_database_bytes: String,
    /// Series per cluster whose `size_label` is the cluster's current tier.
    pub size: String,
    pub size_label: String,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            headroom: 0.6,
            lead_time_days: 14.0,
            history_days: 90,
            profile_days: 7,
            min_history_days: 14,
            horizon_days: 365,
            split_planning_days: 180,
            max_days_per_query: 30,
            max_concurrent_queries: crate::source::DEFAULT_CONCURRENCY as u32,
            resources: default_resources(),
            tiers: default_tiers(),
            resize: ResizeConfig::default(),
            clusters: ClusterQueries::default(),
        }
    }
}

impl Default for ResizeConfig {
    fn default() -> Self {
        Self {
            demote_below: 0.5,
            demote_after_days: 30,
            max_pods_per_node: 110.0,
            apiserver_latency_p99_seconds: 1.0,
        }
    }
}

/// HyperShift runs a hosted cluster's control plane in the namespace `clusters-<name>`.
const HCP_PODS: &str = r#"label_replace(kube_pod_container_resource_requests{resource="RES", namespace=~"clusters-.+"}, "cluster", "$1", "namespace", "clusters-(.+)")"#;

impl Default for ClusterQueries {
    fn default() -> Self {
        let objects = |kind: &str| {
            format!(
                r#"max by (region, cell, cluster) (max_over_time(apiserver_storage_objects{{job="hosted-apiserver", resource="{kind}"}}[$window]))"#
            )
        };
        Self {
            nodes: objects("nodes"),
            pods: objects("pods"),
            services: objects("services"),
            apiserver_requests_per_second: r#"sum by (region, cell, cluster) (rate(apiserver_request_total{job="hosted-apiserver"}[$window]))"#.into(),
            apiserver_latency_p99_seconds: r#"histogram_quantile(0.99, sum by (region, cell, cluster, le) (rate(apiserver_request_duration_seconds_bucket{job="hosted-apiserver", verb!~"WATCH|CONNECT"}[$window])))"#.into(),
            etcd_database_bytes: r#"max by (region, cell, cluster) (max_over_time(etcd_mvcc_db_total_size_in_bytes{job="hosted-etcd"}[$window]))"#.into(),
            size: "max by (region, cell, cluster, size) (hypershift_hostedcluster_info)".into(),
            size_label: "size".into(),
        }
    }
}

/// The default resource every other one follows.
const HOSTED_CONTROL_PLANES: &str = "hosted_control_planes";

fn default_resources() -> Vec<ResourceConfig> {
    let requests = |name: &str, res: &str, unit: &str| ResourceConfig {
        name: name.into(),
        used: format!(
            r#"sum by (region, cell) (avg_over_time(kube_pod_container_resource_requests{{resource="{res}"}}[$window]))"#
        ),
        limit: Some(format!(
            r#"sum by (region, cell) (kube_node_status_allocatable{{resource="{res}"}})"#
        )),
        limit_value: None,
        per: None,
        share: Some(format!(
            "sum by (region, cell, cluster) ({})",
            HCP_PODS.replace("RES", res)
        )),
        follows: Some(HOSTED_CONTROL_PLANES.into()),
        per_node: None,
        unit: unit.into(),
    };
    let pods = format!(
        "count by (region, cell, cluster) ({})",
        HCP_PODS.replace("RES", "cpu")
    );
    vec![
        requests("cpu_requests", "cpu", "cores"),
        requests("memory_requests", "memory", "bytes"),
        ResourceConfig {
            name: "pod_ips".into(),
            used: "sum by (region, cell, ippool) (avg_over_time(ipam_allocations_in_use[$window]))"
                .into(),
            limit: Some("sum by (region, cell, ippool) (ipam_ippool_size)".into()),
            limit_value: None,
            per: Some("ippool".into()),
            share: Some(pods.clone()),
            follows: Some(HOSTED_CONTROL_PLANES.into()),
            per_node: None,
            unit: "addresses".into(),
        },
        ResourceConfig {
            name: "enis".into(),
            used: "sum by (region, cell) (avg_over_time(awscni_eni_allocated[$window]))".into(),
            limit: Some("sum by (region, cell) (awscni_eni_max)".into()),
            limit_value: None,
            per: None,
            share: Some(pods),
            follows: Some(HOSTED_CONTROL_PLANES.into()),
            // The AWS VPC CNI with its default WARM_ENI_TARGET of 1; the addresses one ENI
            // holds (its secondary ones) depend on the instance type and come from the CNI.
            per_node: Some(PerNode {
                used: "sum by (region, cell, instance) (avg_over_time(awscni_assigned_ip_addresses[$window]))".into(),
                holds: NodeValue::Query(
                    "max by (region, cell, instance) (awscni_total_ip_addresses / awscni_eni_allocated)".into(),
                ),
                max: NodeValue::Query("max by (region, cell, instance) (awscni_eni_max)".into()),
                warm: 1.0,
            }),
            unit: "ENIs".into(),
        },
        ResourceConfig {
            name: HOSTED_CONTROL_PLANES.into(),
            used: "max by (region, cell) (avg_over_time(hypershift_hostedclusters[$window]))".into(),
            limit: Some(
                r#"max by (region, cell) (cell_capacity_limit{resource="hosted_control_planes"})"#
                    .into(),
            ),
            limit_value: None,
            per: None,
            share: None,
            follows: None,
            per_node: None,
            unit: "clusters".into(),
        },
        ResourceConfig {
            name: "etcd_database".into(),
            used: r#"max by (region, cell) (avg_over_time(etcd_mvcc_db_total_size_in_bytes{job="etcd"}[$window]))"#.into(),
            limit: Some(r#"max by (region, cell) (etcd_server_quota_backend_bytes{job="etcd"})"#.into()),
            limit_value: None,
            per: None,
            share: None,
            follows: Some(HOSTED_CONTROL_PLANES.into()),
            per_node: None,
            unit: "bytes".into(),
        },
        ResourceConfig {
            name: "apiserver_inflight".into(),
            used: r#"max by (region, cell) (avg_over_time(apiserver_current_inflight_requests{job="apiserver", request_kind="readOnly"}[$window]))"#.into(),
            // kube-apiserver's default --max-requests-inflight.
            limit: None,
            limit_value: Some(400.0),
            per: None,
            share: None,
            follows: Some(HOSTED_CONTROL_PLANES.into()),
            per_node: None,
            unit: "requests".into(),
        },
    ]
}

/// Defaults grounded in the Kubernetes scalability thresholds
/// (<https://github.com/kubernetes/community/blob/master/sig-scalability/configs-and-limits/thresholds.md>):
/// `large` is the tested limit of one cluster (5,000 nodes, 150,000 pods, 10,000 services,
/// at most 110 pods per node); the smaller classes are a tenth and a fiftieth of it.
fn default_tiers() -> Vec<TierConfig> {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let tier = |name: &str, nodes, pods, services, rps, etcd| TierConfig {
        name: String::from(name),
        nodes,
        pods,
        services,
        apiserver_requests_per_second: rps,
        etcd_database_bytes: etcd,
    };
    vec![
        tier("small", 100.0, 5_000.0, 1_000.0, 150.0, GIB),
        tier("medium", 1_000.0, 30_000.0, 5_000.0, 1_500.0, 4.0 * GIB),
        tier("large", 5_000.0, 150_000.0, 10_000.0, 6_000.0, 8.0 * GIB),
    ]
}

impl TierConfig {
    /// Thresholds in the order of [`ClusterQueries::dimensions`].
    pub fn limits(&self) -> [f64; 5] {
        [
            self.nodes,
            self.pods,
            self.services,
            self.apiserver_requests_per_second,
            self.etcd_database_bytes,
        ]
    }
}

impl ClusterQueries {
    /// The queries a tier bounds: nodes, pods, services, apiserver requests per second and
    /// etcd database bytes.
    pub fn dimensions(&self) -> [&str; 5] {
        [
            &self.nodes,
            &self.pods,
            &self.services,
            &self.apiserver_requests_per_second,
            &self.etcd_database_bytes,
        ]
    }
}

impl PlannerConfig {
    /// Reads a planner file; unknown fields are errors, and the result is validated.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_norway::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.headroom > 0.0 && self.headroom <= 1.0) {
            return bad(format!(
                "headroom is {}; it is a fraction of the limit in (0, 1], e.g. 0.6",
                self.headroom
            ));
        }
        if !(self.lead_time_days >= 0.0 && self.lead_time_days.is_finite()) {
            return bad(format!(
                "lead_time_days is {}; give 0 or more",
                self.lead_time_days
            ));
        }
        if self.min_history_days < 7 {
            return bad(format!(
                "min_history_days is {}; a forecast needs at least 7 days to see a week",
                self.min_history_days
            ));
        }
        if self.history_days < self.min_history_days {
            return bad(format!(
                "history_days ({}) is less than min_history_days ({})",
                self.history_days, self.min_history_days
            ));
        }
        if self.profile_days == 0 || self.profile_days > self.history_days {
            return bad(format!(
                "profile_days is {}; give 1 to history_days ({})",
                self.profile_days, self.history_days
            ));
        }
        if self.horizon_days == 0
            || self.max_days_per_query == 0
            || self.max_concurrent_queries == 0
        {
            return bad(
                "horizon_days, max_days_per_query and max_concurrent_queries must be at least 1"
                    .into(),
            );
        }
        if self.resources.is_empty() {
            return bad("resources is empty; remove it to use the defaults".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.resources {
            if !names.insert(r.name.as_str()) {
                return bad(format!("resource {:?} is defined twice", r.name));
            }
            if !r.used.contains(WINDOW) {
                return bad(format!(
                    "resource {:?}: `used` has no {WINDOW}; write e.g. sum by (region, cell) (avg_over_time(metric[{WINDOW}]))",
                    r.name
                ));
            }
            if let Some(p) = &r.per_node {
                if !p.used.contains(WINDOW) {
                    return bad(format!(
                        "resource {:?}: per_node.used has no {WINDOW}; write e.g. sum by (region, cell, instance) (avg_over_time(metric[{WINDOW}]))",
                        r.name
                    ));
                }
                if r.per.is_some() {
                    return bad(format!(
                        "resource {:?}: per_node and per cannot go together; give per_node to a whole-cell resource",
                        r.name
                    ));
                }
                for (field, v) in [("holds", &p.holds), ("max", &p.max)] {
                    if let NodeValue::Value(v) = v
                        && !(*v > 0.0 && v.is_finite())
                    {
                        return bad(format!(
                            "resource {:?}: per_node.{field} {v} is not positive; give a positive number or PromQL",
                            r.name
                        ));
                    }
                }
                if !(p.warm >= 0.0 && p.warm.is_finite()) {
                    return bad(format!(
                        "resource {:?}: per_node.warm {} is not a number of spare units (0 or more)",
                        r.name, p.warm
                    ));
                }
            }
            match (&r.limit, r.limit_value) {
                (Some(_), None) => {}
                (None, Some(v)) if v > 0.0 && v.is_finite() => {}
                (None, Some(v)) => {
                    return bad(format!(
                        "resource {:?}: limit_value {v} is not positive",
                        r.name
                    ));
                }
                _ => {
                    return bad(format!(
                        "resource {:?}: give exactly one of `limit` (PromQL) and `limit_value`",
                        r.name
                    ));
                }
            }
        }
        for r in &self.resources {
            let Some(name) = &r.follows else { continue };
            match self.resources.iter().find(|d| &d.name == name) {
                None => {
                    return bad(format!(
                        "resource {:?} follows {name:?}, which is not a resource; name one of the resources",
                        r.name
                    ));
                }
                Some(d) if d.name == r.name || d.per.is_some() || d.follows.is_some() => {
                    return bad(format!(
                        "resource {:?} follows {name:?}, which follows another resource, is itself or is divided by `per`; follow a whole-cell resource that follows none",
                        r.name
                    ));
                }
                Some(_) => {}
            }
        }
        if self.tiers.is_empty() {
            return bad("tiers is empty; remove it to use the defaults".into());
        }
        for pair in self.tiers.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.nodes >= b.nodes || a.pods >= b.pods || a.services > b.services {
                return bad(format!(
                    "tier {:?} is not smaller than {:?}; list tiers smallest first",
                    a.name, b.name
                ));
            }
        }
        if !(self.resize.demote_below > 0.0 && self.resize.demote_below < 1.0) {
            return bad(format!(
                "resize.demote_below is {}; a fraction in (0, 1) leaves a band where nothing changes",
                self.resize.demote_below
            ));
        }
        Ok(())
    }

    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&ResourceConfig> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The resource `resource` follows, if any.
    pub fn follows(&self, resource: &str) -> Option<&str> {
        self.resource(resource)?.follows.as_deref()
    }

    pub fn tier(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        PlannerConfig::default().validate().expect("defaults");
        let parsed: PlannerConfig = serde_norway::from_str("{}").expect("empty");
        assert_eq!(parsed, PlannerConfig::default());
    }

    #[test]
    fn rejects_what_cannot_work() {
        for (yaml, needle) in [
            ("headroom: 1.5", "headroom"),
            ("unknown: 1", "unknown field"),
            (
                "resources: [{name: a, used: 'sum(x)', limit_value: 1}]",
                "$window",
            ),
            ("resources: [{name: a, used: 'x[$window]'}]", "exactly one"),
            (
                "tiers: [{name: big, nodes: 10, pods: 10, services: 1, apiserver_requests_per_second: 1, etcd_database_bytes: 1}, {name: small, nodes: 5, pods: 5, services: 1, apiserver_requests_per_second: 1, etcd_database_bytes: 1}]",
                "smallest first",
            ),
            ("resize: {demote_below: 1}", "demote_below"),
            (
                "resources: [{name: a, used: 'x[$window]', limit_value: 1, follows: b}]",
                "not a resource",
            ),
            (
                "resources: [{name: a, used: 'x[$window]', limit_value: 1, follows: a}]",
                "is itself",
            ),
            (
                "resources: [{name: a, used: 'x[$window]', limit_value: 1, per_node: {used: 'y', holds: 29, max: 8}}]",
                "per_node.used",
            ),
            (
                "resources: [{name: a, used: 'x[$window]', limit_value: 1, per_node: {used: 'y[$window]', holds: 29, max: 8, warm: -1}}]",
                "per_node.warm",
            ),
            (
                "resources: [{name: a, used: 'x[$window]', limit_value: 1, per_node: {used: 'y[$window]', holds: 0, max: 8}}]",
                "per_node.holds",
            ),
        ] {
            let err = serde_norway::from_str::<PlannerConfig>(yaml)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map_err(|e| e.to_string()))
                .expect_err(yaml);
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
