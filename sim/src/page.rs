//! What each simulated exporter shows: scrape targets per cell, and the metric families of a
//! target's page at a moment, named and labelled as the real exporters do.
//!
//! | job | one per | exporter | families |
//! |---|---|---|---|
//! | `node` | meta node | node exporter | `node_cpu_seconds_total`, `node_memory_*`, `node_load1`, `node_boot_time_seconds` |
//! | `aws-cni` | meta node | AWS VPC CNI | `awscni_eni_allocated`, `awscni_eni_max`, `awscni_*_ip_addresses` |
//! | `cadvisor` | meta node | kubelet `/metrics/cadvisor` | `container_cpu_usage_seconds_total`, `container_memory_working_set_bytes` |
//! | `kube-state-metrics` | cell | kube-state-metrics | `kube_node_status_allocatable`, `kube_pod_container_resource_requests` |
//! | `ipam` | cell | calico-kube-controllers | `ipam_ippool_size`, `ipam_allocations_in_use` |
//! | `hypershift` | cell | HyperShift operator | `hypershift_hostedclusters`, `hypershift_hostedcluster_info{cluster,size}`, `cell_capacity_limit{resource}` |
//! | `apiserver`, `hosted-apiserver` | cell, hosted cluster | kube-apiserver | `apiserver_request_total`, `apiserver_request_duration_seconds`, `apiserver_current_inflight_requests`, `apiserver_storage_objects`, `process_start_time_seconds` |
//! | `etcd`, `hosted-etcd` | cell, hosted cluster | etcd | `etcd_mvcc_db_total_size_in_bytes`, `etcd_mvcc_db_total_size_in_use_in_bytes`, `etcd_server_quota_backend_bytes`, `etcd_server_has_leader` |
//!
//! Hosted targets carry a `cluster` target label. Gauges of usage carry the cell's noise
//! (a fresh draw each minute); limits, requests and counts do not. Counters are integrals of
//! their rate over a 5-minute grid from the process's last restart, so they reset when it
//! restarts and equal the same value whenever and however often they are read.

use std::collections::HashMap;

use serde::Serialize;
use strata_wire::expose::{Family, Kind, Sample};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::model::{
    CORES_PER_NODE, Cell, CellState, Cluster, DAY_MS, ENI_MAX_PER_NODE, Fleet,
    HOSTED_ETCD_QUOTA_BYTES, IPS_PER_ENI, MEMORY_PER_NODE_BYTES, META_ETCD_QUOTA_BYTES, MINUTE_MS,
    OVERHEAD_CPU_CORES, OVERHEAD_MEMORY_BYTES, noise, unit,
};

/// A scrape job of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Job {
    Node,
    AwsCni,
    Cadvisor,
    KubeStateMetrics,
    Ipam,
    Hypershift,
    Apiserver,
    Etcd,
    HostedApiserver,
    HostedEtcd,
}

impl Job {
    pub const ALL: [Job; 10] = [
        Job::Node,
        Job::AwsCni,
        Job::Cadvisor,
        Job::KubeStateMetrics,
        Job::Ipam,
        Job::Hypershift,
        Job::Apiserver,
        Job::Etcd,
        Job::HostedApiserver,
        Job::HostedEtcd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::Node => "node",
            Job::AwsCni => "aws-cni",
            Job::Cadvisor => "cadvisor",
            Job::KubeStateMetrics => "kube-state-metrics",
            Job::Ipam => "ipam",
            Job::Hypershift => "hypershift",
            Job::Apiserver => "apiserver",
            Job::Etcd => "etcd",
            Job::HostedApiserver => "hosted-apiserver",
            Job::HostedEtcd => "hosted-etcd",
        }
    }

    pub fn from_name(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }
}

/// One scrape target: `index` is the meta node or the hosted cluster, 0 for the cell's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub cell: usize,
    pub job: Job,
    pub index: usize,
}

impl Target {
    /// The `instance` label the edge gives this target's series.
    pub fn instance(&self, fleet: &Fleet) -> String {
        let cell = &fleet.cells[self.cell];
        let node = || node_name(cell, self.index);
        let cluster = || &cell.clusters[self.index].name;
        match self.job {
            Job::Node => format!("{}:9100", node()),
            Job::AwsCni => format!("{}:61678", node()),
            Job::Cadvisor => format!("{}:10250", node()),
            Job::KubeStateMetrics => "kube-state-metrics:8080".into(),
            Job::Ipam => "calico-kube-controllers:9094".into(),
            Job::Hypershift => "hypershift-operator:9000".into(),
            Job::Apiserver => "kube-apiserver:6443".into(),
            Job::Etcd => "etcd:2379".into(),
            Job::HostedApiserver => format!("kube-apiserver.clusters-{}:6443", cluster()),
            Job::HostedEtcd => format!("etcd.clusters-{}:2379", cluster()),
        }
    }

    /// Labels service discovery gives the target besides `job` and `instance`.
    pub fn labels(&self, fleet: &Fleet) -> Vec<(&'static str, String)> {
        match self.job {
            Job::HostedApiserver | Job::HostedEtcd => {
                vec![(
                    "cluster",
                    fleet.cells[self.cell].clusters[self.index].name.clone(),
                )]
            }
            _ => Vec::new(),
        }
    }

    /// Where the simulator serves this target's page.
    pub fn path(&self, fleet: &Fleet) -> String {
        format!(
            "/cells/{}/{}/{}/metrics",
            fleet.cells[self.cell].name,
            self.job.name(),
            self.index
        )
    }

    fn key(&self, fleet: &Fleet) -> u64 {
        let cell = &fleet.cells[self.cell];
        xxh3_64_with_seed(
            &[
                self.job as u8,
                (self.index & 0xff) as u8,
                (self.index >> 8) as u8,
            ],
            cell.key,
        )
    }
}

pub fn node_name(cell: &Cell, i: usize) -> String {
    format!("{}-meta-{:02}", cell.name, i + 1)
}

impl Fleet {
    /// The targets of `job` in cell `cell` that exist at `t` (hosted ones once onboarded).
    pub fn targets(&self, cell: usize, job: Job, t: i64) -> Vec<Target> {
        let c = &self.cells[cell];
        let count = match job {
            Job::Node | Job::AwsCni | Job::Cadvisor => c.meta_nodes,
            Job::HostedApiserver | Job::HostedEtcd => c.active(t).len(),
            _ => 1,
        };
        (0..count)
            .map(|index| Target { cell, job, index })
            .collect()
    }

    /// Every target of every cell at `t`.
    pub fn all_targets(&self, t: i64) -> Vec<Target> {
        (0..self.cells.len())
            .flat_map(|cell| {
                Job::ALL
                    .into_iter()
                    .flat_map(move |job| self.targets(cell, job, t))
            })
            .collect()
    }

    /// Whether a target exists at `t`.
    pub fn exists(&self, target: &Target, t: i64) -> bool {
        target.cell < self.cells.len()
            && target.index < self.targets(target.cell, target.job, t).len()
    }
}

/// Spacing of the grid counters are integrated on.
const GRID_MS: i64 = 5 * MINUTE_MS;

#[derive(Debug, Clone, Default)]
struct Integral {
    reset_ms: i64,
    /// The integral covers `reset_ms..at_ms`; `at_ms` is `reset_ms` or a grid instant.
    at_ms: i64,
    acc: Vec<f64>,
}

/// The next grid instant after `t`.
fn next_grid(t: i64) -> i64 {
    (t.div_euclid(GRID_MS) + 1) * GRID_MS
}

/// The running integrals of every counter read so far, so that reading a counter again later
/// only integrates the time since.
#[derive(Debug, Default)]
struct Integrals(HashMap<(u64, u32), Integral>);

impl Integrals {
    /// ∫ `rate` from `reset_ms` to `t` (in per-second units × seconds): left Riemann sums
    /// over the restart instant and the grid instants (multiples of [`GRID_MS`]) after it, so
    /// the result depends only on `reset_ms` and `t`, and every target of a cell asks for the
    /// same instants.
    fn integrate(
        &mut self,
        key: (u64, u32),
        reset_ms: i64,
        t: i64,
        n: usize,
        mut rate: impl FnMut(i64, &mut [f64]),
    ) -> Vec<f64> {
        let state = self.0.entry(key).or_default();
        if state.reset_ms != reset_ms || state.acc.len() != n || t < state.at_ms {
            *state = Integral {
                reset_ms,
                at_ms: reset_ms,
                acc: vec![0.0; n],
            };
        }
        let mut buf = vec![0.0; n];
        loop {
            let next = next_grid(state.at_ms);
            if next > t {
                break;
            }
            rate(state.at_ms, &mut buf);
            let seconds = (next - state.at_ms) as f64 / 1000.0;
            for (a, r) in state.acc.iter_mut().zip(&buf) {
                *a += r * seconds;
            }
            state.at_ms = next;
        }
        rate(state.at_ms, &mut buf);
        let partial = (t - state.at_ms).max(0) as f64 / 1000.0;
        state
            .acc
            .iter()
            .zip(&buf)
            .map(|(a, r)| a + r * partial)
            .collect()
    }
}

/// Cell states already computed, for one cell at a time: every meta node's counters integrate
/// the same cell state at the same grid instants, and computing one sums all its clusters.
#[derive(Debug, Default)]
struct CellStates {
    cell: Option<usize>,
    states: HashMap<i64, CellState>,
}

/// Instants [`CellStates`] keeps before it starts over: 57 days of the 5-minute grid, more
/// than the longest time between restarts, so a first read integrates each instant once.
const CELL_STATES_KEPT: usize = 1 << 14;

impl CellStates {
    fn at(&mut self, index: usize, cell: &Cell, t: i64) -> CellState {
        if self.cell != Some(index) || self.states.len() >= CELL_STATES_KEPT {
            self.cell = Some(index);
            self.states.clear();
        }
        *self.states.entry(t).or_insert_with(|| cell.state(t))
    }
}

/// What rendering pages keeps between calls: the counters' running integrals and a cache of
/// cell states.
#[derive(Debug, Default)]
pub struct Counters {
    integrals: Integrals,
    states: CellStates,
}

impl Counters {
    /// How many counter groups have state.
    pub fn len(&self) -> usize {
        self.integrals.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.integrals.0.is_empty()
    }
}

/// The start of the restart period containing `t`: restarts happen about every `period_ms`,
/// at times drawn from `key`.
fn last_restart(seed: u64, key: u64, period_ms: i64, t: i64) -> i64 {
    let offset = (unit(seed, &[key, 0]) * period_ms as f64) as i64;
    let at = |k: i64| {
        offset + k * period_ms + (unit(seed, &[key, 1, k as u64]) * period_ms as f64 / 2.0) as i64
    };
    let k = (t - offset).div_euclid(period_ms);
    if at(k) <= t { at(k) } else { at(k - 1) }
}

/// Values of a page at one moment.
struct Ctx<'a> {
    fleet: &'a Fleet,
    cell: &'a Cell,
    target: Target,
    key: u64,
    t: i64,
}

impl Ctx<'_> {
    /// The exporter's noise around `value` for series `series` (one draw per minute).
    fn noisy(&self, series: u64, value: f64) -> f64 {
        let n = noise(
            self.fleet.seed,
            &[self.key, series, self.t.div_euclid(MINUTE_MS) as u64],
        );
        value * (1.0 + self.cell.noise * n)
    }

    fn grid_noise(&self, series: u64, g: i64) -> f64 {
        1.0 + self.cell.noise * noise(self.fleet.seed, &[self.key, series, 1 << 40, g as u64])
    }
}

/// The families of `target`'s page at `t`.
pub fn render(fleet: &Fleet, target: Target, t: i64, counters: &mut Counters) -> Vec<Family> {
    let cell = &fleet.cells[target.cell];
    let ctx = Ctx {
        fleet,
        cell,
        target,
        key: target.key(fleet),
        t,
    };
    let mut now = || counters.states.at(target.cell, cell, t);
    match target.job {
        Job::Node => node(&ctx, counters),
        Job::AwsCni => aws_cni(&ctx, &now()),
        Job::Cadvisor => cadvisor(&ctx, &mut counters.integrals),
        Job::KubeStateMetrics => kube_state_metrics(&ctx),
        Job::Ipam => ipam(&ctx, &now()),
        Job::Hypershift => hypershift(cell, t),
        Job::Apiserver => meta_apiserver(&ctx, counters),
        Job::Etcd => {
            let s = now();
            etcd(s.etcd_db_bytes, s.etcd_garbage_bytes, META_ETCD_QUOTA_BYTES)
        }
        Job::HostedApiserver => hosted_apiserver(&ctx, &mut counters.integrals),
        Job::HostedEtcd => {
            let s = cell.clusters[target.index].state(t);
            let garbage = 0.1 * s.etcd_db_bytes * (t as f64 / (7 * DAY_MS) as f64).fract();
            etcd(s.etcd_db_bytes + garbage, garbage, HOSTED_ETCD_QUOTA_BYTES)
        }
    }
}

fn node(ctx: &Ctx, counters: &mut Counters) -> Vec<Family> {
    let (cell, i, t) = (ctx.cell, ctx.target.index, ctx.t);
    let seed = ctx.fleet.seed;
    let period = ((14.0 + 31.0 * unit(seed, &[ctx.key, 2])) * DAY_MS as f64) as i64;
    let reset = last_restart(seed, ctx.key, period, t);
    let skew = cell.node_skew[i] / cell.meta_nodes as f64;
    let Counters { integrals, states } = counters;
    let busy = integrals.integrate((ctx.key, 0), reset, t, 1, |g, out| {
        let used = states.at(ctx.target.cell, cell, g).cpu_used_cores * skew * ctx.grid_noise(0, g);
        out[0] = (used / CORES_PER_NODE).clamp(0.0, 0.8);
    })[0];
    let mut cpu = Family::new(
        "node_cpu_seconds_total",
        Kind::Counter,
        "Seconds the CPUs spent in each mode.",
    );
    let up_seconds = (t - reset) as f64 / 1000.0;
    for c in 0..CORES_PER_NODE as u64 {
        let w = 0.85 + 0.3 * unit(seed, &[ctx.key, 3, c]);
        let busy_c = w * busy;
        for (mode, value) in [
            ("idle", up_seconds - busy_c),
            ("system", 0.3 * busy_c),
            ("user", 0.7 * busy_c),
        ] {
            cpu.push(
                vec![("cpu", c.to_string()), ("mode", mode.to_string())],
                value,
            );
        }
    }
    let s = states.at(ctx.target.cell, cell, t);
    let used_bytes = s.memory_used_bytes * skew + 4.0 * (1u64 << 30) as f64;
    vec![
        Family::new(
            "node_boot_time_seconds",
            Kind::Gauge,
            "Node boot time, in unixtime.",
        )
        .with(vec![], (reset / 1000) as f64),
        cpu,
        Family::new("node_load1", Kind::Gauge, "1m load average.")
            .with(vec![], ctx.noisy(1, s.cpu_used_cores * skew)),
        Family::new(
            "node_memory_MemAvailable_bytes",
            Kind::Gauge,
            "Memory information field MemAvailable_bytes.",
        )
        .with(vec![], MEMORY_PER_NODE_BYTES - ctx.noisy(2, used_bytes)),
        Family::new(
            "node_memory_MemTotal_bytes",
            Kind::Gauge,
            "Memory information field MemTotal_bytes.",
        )
        .with(vec![], MEMORY_PER_NODE_BYTES),
    ]
}

fn aws_cni(ctx: &Ctx, s: &CellState) -> Vec<Family> {
    let i = ctx.target.index;
    let enis = ctx.cell.enis_on_node(s, i);
    vec![
        Family::new(
            "awscni_assigned_ip_addresses",
            Kind::Gauge,
            "The number of IP addresses assigned to pods",
        )
        .with(vec![], ctx.cell.pods_on_node(s, i)),
        Family::new(
            "awscni_eni_allocated",
            Kind::Gauge,
            "The number of ENIs allocated",
        )
        .with(vec![], enis),
        Family::new(
            "awscni_eni_max",
            Kind::Gauge,
            "The maximum number of ENIs that can be attached to the instance, accounting for unmanaged ENIs",
        )
        .with(vec![], ENI_MAX_PER_NODE),
        Family::new(
            "awscni_total_ip_addresses",
            Kind::Gauge,
            "The total number of IP addresses",
        )
        .with(vec![], enis * IPS_PER_ENI),
    ]
}

/// The three control-plane pods of a hosted cluster: component, share of its CPU and of its
/// memory.
const COMPONENTS: [(&str, f64, f64); 3] = [
    ("kube-apiserver", 0.6, 0.5),
    ("etcd", 0.25, 0.35),
    ("kube-controller-manager", 0.15, 0.15),
];

fn pod_name(cluster: &Cluster, p: usize) -> String {
    format!(
        "{}-{:05x}",
        COMPONENTS[p].0,
        (cluster.key >> (p * 20)) & 0xfffff
    )
}

fn pod_labels(cluster: &Cluster, p: usize) -> Vec<(&'static str, String)> {
    vec![
        ("container", COMPONENTS[p].0.to_string()),
        ("namespace", format!("clusters-{}", cluster.name)),
        ("pod", pod_name(cluster, p)),
    ]
}

fn cadvisor(ctx: &Ctx, integrals: &mut Integrals) -> Vec<Family> {
    let seed = ctx.fleet.seed;
    let mut cpu = Family::new(
        "container_cpu_usage_seconds_total",
        Kind::Counter,
        "Cumulative cpu time consumed in seconds.",
    );
    let mut memory = Family::new(
        "container_memory_working_set_bytes",
        Kind::Gauge,
        "Current working set in bytes.",
    );
    for cluster in ctx.cell.active(ctx.t) {
        for (p, &(_, cpu_share, memory_share)) in COMPONENTS.iter().enumerate() {
            if cluster.pod_nodes[p] != ctx.target.index {
                continue;
            }
            let pod_key = cluster.key ^ (p as u64 + 1);
            let reset = last_restart(seed, pod_key, 2 * cluster.restart_period_ms, ctx.t)
                .max(cluster.onboard_ms);
            let used = integrals.integrate((pod_key, 0), reset, ctx.t, 1, |g, out| {
                out[0] = cluster.state(g).cpu_used_cores * cpu_share * ctx.grid_noise(pod_key, g);
            })[0];
            cpu.push(pod_labels(cluster, p), used);
            let bytes = cluster.state(ctx.t).memory_used_bytes * memory_share;
            memory.push(pod_labels(cluster, p), ctx.noisy(pod_key, bytes));
        }
    }
    vec![cpu, memory]
}

fn kube_state_metrics(ctx: &Ctx) -> Vec<Family> {
    let cell = ctx.cell;
    let mut allocatable = Family::new(
        "kube_node_status_allocatable",
        Kind::Gauge,
        "The allocatable for different resources of a node that are available for scheduling.",
    );
    let mut requests = Family::new(
        "kube_pod_container_resource_requests",
        Kind::Gauge,
        "The number of requested request resource by a container.",
    );
    let nodes = cell.meta_nodes as f64;
    for i in 0..cell.meta_nodes {
        let node = node_name(cell, i);
        for (resource, unit, value) in [
            ("cpu", "core", CORES_PER_NODE),
            ("memory", "byte", MEMORY_PER_NODE_BYTES),
            ("pods", "integer", 250.0),
        ] {
            allocatable.push(
                vec![
                    ("node", node.clone()),
                    ("resource", resource.into()),
                    ("unit", unit.into()),
                ],
                value,
            );
        }
        for (resource, unit, value) in [
            ("cpu", "core", OVERHEAD_CPU_CORES / nodes),
            ("memory", "byte", OVERHEAD_MEMORY_BYTES / nodes),
        ] {
            requests.push(
                vec![
                    ("container", "node-agents".into()),
                    ("namespace", "kube-system".into()),
                    ("node", node.clone()),
                    ("pod", format!("node-agents-{}", i + 1)),
                    ("resource", resource.into()),
                    ("unit", unit.into()),
                ],
                value,
            );
        }
    }
    for cluster in cell.active(ctx.t) {
        let s = cluster.state(ctx.t);
        for (p, &(_, cpu_share, memory_share)) in COMPONENTS.iter().enumerate() {
            for (resource, unit, value) in [
                ("cpu", "core", s.cpu_requests_cores * cpu_share),
                ("memory", "byte", s.memory_requests_bytes * memory_share),
            ] {
                let mut labels = pod_labels(cluster, p);
                labels.insert(2, ("node", node_name(cell, cluster.pod_nodes[p])));
                labels.push(("resource", resource.into()));
                labels.push(("unit", unit.into()));
                requests.push(labels, value);
            }
        }
    }
    vec![allocatable, requests]
}

fn hypershift(cell: &Cell, t: i64) -> Vec<Family> {
    let active = cell.active(t);
    let mut info = Family::new(
        "hypershift_hostedcluster_info",
        Kind::Gauge,
        "Information about a HostedCluster: its size class.",
    );
    for c in active {
        info.push(
            vec![("cluster", c.name.clone()), ("size", c.size.into())],
            1.0,
        );
    }
    vec![
        Family::new(
            "hypershift_hostedclusters",
            Kind::Gauge,
            "Number of HostedClusters.",
        )
        .with(vec![], active.len() as f64),
        info,
        // Limits no exporter knows are published by the operator (for example through the
        // node exporter's textfile collector); the planner reads them from here.
        Family::new(
            "cell_capacity_limit",
            Kind::Gauge,
            "Planned capacity of the cell for a resource, published by its operator.",
        )
        .with(
            vec![("resource", "hosted_control_planes".into())],
            cell.max_hosted_control_planes,
        ),
    ]
}

fn ipam(ctx: &Ctx, s: &CellState) -> Vec<Family> {
    let mut size = Family::new(
        "ipam_ippool_size",
        Kind::Gauge,
        "Total number of addresses in the IP Pool",
    );
    let mut in_use = Family::new(
        "ipam_allocations_in_use",
        Kind::Gauge,
        "IPs currently allocated in IPAM to a workload or tunnel endpoint.",
    );
    for (pool, used) in ctx.cell.ippools.iter().zip(ctx.cell.pool_allocations(s)) {
        size.push(vec![("ippool", pool.name.clone())], pool.size);
        in_use.push(vec![("ippool", pool.name.clone())], used);
    }
    vec![in_use, size]
}

fn etcd(db: f64, garbage: f64, quota: f64) -> Vec<Family> {
    vec![
        Family::new(
            "etcd_mvcc_db_total_size_in_bytes",
            Kind::Gauge,
            "Total size of the underlying database physically allocated in bytes.",
        )
        .with(vec![], db.round()),
        Family::new(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            Kind::Gauge,
            "Total size of the underlying database logically in use in bytes.",
        )
        .with(vec![], (db - garbage).round()),
        Family::new(
            "etcd_server_has_leader",
            Kind::Gauge,
            "Whether or not a leader exists. 1 is existence, 0 is not.",
        )
        .with(vec![], 1.0),
        Family::new(
            "etcd_server_quota_backend_bytes",
            Kind::Gauge,
            "Current backend storage quota size in bytes.",
        )
        .with(vec![], quota),
    ]
}

/// kube-apiserver's requests by verb and code, as shares of all requests.
const REQUESTS: [(&str, &str, f64); 9] = [
    ("GET", "200", 0.33),
    ("GET", "404", 0.02),
    ("LIST", "200", 0.15),
    ("WATCH", "200", 0.05),
    ("POST", "201", 0.15),
    ("PUT", "200", 0.09),
    ("PUT", "409", 0.01),
    ("PATCH", "200", 0.15),
    ("DELETE", "200", 0.05),
];
/// Verbs with a latency histogram: share of all requests, and latency relative to GET.
const LATENCY_VERBS: [(&str, f64, f64); 3] =
    [("GET", 0.35, 1.0), ("LIST", 0.15, 4.0), ("POST", 0.15, 1.5)];
/// kube-apiserver's `apiserver_request_duration_seconds` buckets (without +Inf).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Spread of the latency distribution (log-normal σ).
const LATENCY_SIGMA: f64 = 0.8;

/// What an apiserver page needs at one moment.
struct ApiserverLoad {
    requests_per_second: f64,
    latency_median_seconds: f64,
}

struct ApiserverNow {
    reset_ms: i64,
    inflight_read_only: f64,
    inflight_mutating: f64,
    objects: [f64; 4],
}

fn meta_apiserver(ctx: &Ctx, counters: &mut Counters) -> Vec<Family> {
    let cell = ctx.cell;
    let seed = ctx.fleet.seed;
    let period = ((7.0 + 14.0 * unit(seed, &[ctx.key, 2])) * DAY_MS as f64) as i64;
    let Counters { integrals, states } = counters;
    let s = states.at(ctx.target.cell, cell, ctx.t);
    let now = ApiserverNow {
        reset_ms: last_restart(seed, ctx.key, period, ctx.t),
        inflight_read_only: s.inflight_read_only,
        inflight_mutating: s.inflight_mutating,
        objects: [
            cell.meta_nodes as f64,
            s.pods,
            40.0 + 3.0 * s.hosted_control_planes,
            20.0 + s.hosted_control_planes,
        ],
    };
    apiserver(ctx, integrals, &now, |g| {
        let s = states.at(ctx.target.cell, cell, g);
        ApiserverLoad {
            requests_per_second: s.apiserver_requests_per_second,
            latency_median_seconds: 0.02 * (0.8 + 0.4 * s.load),
        }
    })
}

fn hosted_apiserver(ctx: &Ctx, integrals: &mut Integrals) -> Vec<Family> {
    let cluster = &ctx.cell.clusters[ctx.target.index];
    let s = cluster.state(ctx.t);
    let reset = last_restart(
        ctx.fleet.seed,
        cluster.key,
        cluster.restart_period_ms,
        ctx.t,
    )
    .max(cluster.onboard_ms);
    let now = ApiserverNow {
        reset_ms: reset,
        inflight_read_only: (2.0 + 0.1 * s.apiserver_requests_per_second).round(),
        inflight_mutating: (1.0 + 0.03 * s.apiserver_requests_per_second).round(),
        objects: [s.nodes, s.pods, s.services, s.namespaces],
    };
    apiserver(ctx, integrals, &now, |g| {
        let s = cluster.state(g);
        ApiserverLoad {
            requests_per_second: s.apiserver_requests_per_second,
            latency_median_seconds: s.latency_median_seconds,
        }
    })
}

/// Standard normal CDF (Abramowitz and Stegun 7.1.26, error below 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn apiserver(
    ctx: &Ctx,
    integrals: &mut Integrals,
    now: &ApiserverNow,
    mut load: impl FnMut(i64) -> ApiserverLoad,
) -> Vec<Family> {
    // Integrals: all requests, then per latency verb its buckets and its latency sum.
    let per_verb = BUCKETS.len() + 1;
    let n = 1 + LATENCY_VERBS.len() * per_verb;
    let totals = integrals.integrate((ctx.key, 0), now.reset_ms, ctx.t, n, |g, out| {
        let l = load(g);
        let rps = l.requests_per_second * ctx.grid_noise(0, g);
        out[0] = rps;
        for (v, &(_, share, slower)) in LATENCY_VERBS.iter().enumerate() {
            let median = l.latency_median_seconds * slower;
            let base = 1 + v * per_verb;
            for (b, le) in BUCKETS.iter().enumerate() {
                out[base + b] = rps * share * normal_cdf((le / median).ln() / LATENCY_SIGMA);
            }
            out[base + BUCKETS.len()] =
                rps * share * median * (LATENCY_SIGMA * LATENCY_SIGMA / 2.0).exp();
        }
    });
    let mut requests = Family::new(
        "apiserver_request_total",
        Kind::Counter,
        "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
    );
    for (verb, code, share) in REQUESTS {
        requests.push(
            vec![("code", code.into()), ("verb", verb.into())],
            (totals[0] * share).floor(),
        );
    }
    let mut duration = Family::new(
        "apiserver_request_duration_seconds",
        Kind::Histogram,
        "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
    );
    for (v, &(verb, share, _)) in LATENCY_VERBS.iter().enumerate() {
        let base = 1 + v * per_verb;
        let count = (totals[0] * share).floor();
        for (b, le) in BUCKETS.iter().enumerate() {
            duration.samples.push(Sample {
                suffix: "_bucket",
                labels: vec![("le", le.to_string()), ("verb", verb.into())],
                value: totals[base + b].floor().min(count),
            });
        }
        duration.samples.push(Sample {
            suffix: "_bucket",
            labels: vec![("le", "+Inf".into()), ("verb", verb.into())],
            value: count,
        });
        duration.samples.push(Sample {
            suffix: "_sum",
            labels: vec![("verb", verb.into())],
            value: totals[base + BUCKETS.len()],
        });
        duration.samples.push(Sample {
            suffix: "_count",
            labels: vec![("verb", verb.into())],
            value: count,
        });
    }
    let mut inflight = Family::new(
        "apiserver_current_inflight_requests",
        Kind::Gauge,
        "Maximal number of currently used inflight request limit of this apiserver per request kind in last second.",
    );
    inflight.push(
        vec![("request_kind", "mutating".into())],
        ctx.noisy(1, now.inflight_mutating).round(),
    );
    inflight.push(
        vec![("request_kind", "readOnly".into())],
        ctx.noisy(2, now.inflight_read_only).round(),
    );
    let mut objects = Family::new(
        "apiserver_storage_objects",
        Kind::Gauge,
        "Number of stored objects at the time of last check split by kind.",
    );
    for (resource, value) in ["nodes", "pods", "services", "namespaces"]
        .into_iter()
        .zip(now.objects)
    {
        objects.push(vec![("resource", resource.into())], value.round());
    }
    vec![
        duration,
        requests,
        inflight,
        objects,
        Family::new(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
        )
        .with(vec![], (now.reset_ms / 1000) as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FleetConfig;
    use strata_wire::expose::expose;

    fn fleet() -> Fleet {
        Fleet::new(&FleetConfig {
            regions: 1,
            cells_per_region: 2,
            clusters_per_cell: 6,
            anchor: Some("2026-11-01T00:00:00Z".into()),
            ..Default::default()
        })
        .expect("fleet")
    }

    fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
        families
            .iter()
            .flat_map(|f| f.samples.iter().map(move |s| (f, s)))
            .find(|(f, s)| {
                format!("{}{}", f.name, s.suffix) == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, s)| s.value)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    #[test]
    fn counters_are_the_same_however_often_they_are_read() {
        let fleet = fleet();
        let t0 = fleet.anchor_ms;
        for job in [
            Job::Node,
            Job::Cadvisor,
            Job::Apiserver,
            Job::HostedApiserver,
        ] {
            let target = fleet.targets(0, job, t0)[0];
            let mut often = Counters::default();
            for k in 0..200 {
                render(&fleet, target, t0 + k * 15_000, &mut often);
            }
            let end = t0 + 200 * 15_000;
            let a = render(&fleet, target, end, &mut often);
            let b = render(&fleet, target, end, &mut Counters::default());
            assert_eq!(a, b, "{job:?}");
        }
    }

    #[test]
    fn counters_grow_between_restarts_and_histograms_stay_cumulative() {
        let fleet = fleet();
        let target = fleet.targets(0, Job::HostedApiserver, fleet.anchor_ms)[0];
        let mut counters = Counters::default();
        let mut last = 0.0;
        let mut resets = 0;
        for h in 0..24 * 30 {
            let t = fleet.anchor_ms + h * 3_600_000;
            let page = render(&fleet, target, t, &mut counters);
            let total = value(
                &page,
                "apiserver_request_total",
                &[("verb", "GET"), ("code", "200")],
            );
            if total < last {
                resets += 1;
            }
            last = total;
            let buckets: Vec<f64> = page[0]
                .samples
                .iter()
                .filter(|s| s.suffix == "_bucket" && s.labels[1].1 == "LIST")
                .map(|s| s.value)
                .collect();
            assert_eq!(buckets.len(), 12);
            assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        }
        assert!((2..=10).contains(&resets), "{resets} restarts in 30 days");
    }

    #[test]
    fn requests_on_the_page_add_up_to_the_cell_state() {
        let fleet = fleet();
        let t = fleet.anchor_ms + 5 * 3_600_000;
        let ksm = render(
            &fleet,
            Target {
                cell: 1,
                job: Job::KubeStateMetrics,
                index: 0,
            },
            t,
            &mut Counters::default(),
        );
        let cpu: f64 = ksm[1]
            .samples
            .iter()
            .filter(|s| s.labels.iter().any(|(k, v)| *k == "resource" && v == "cpu"))
            .map(|s| s.value)
            .sum();
        let truth = fleet.cells[1].state(t).cpu_requests_cores;
        assert!((cpu - truth).abs() < 1e-9, "{cpu} vs {truth}");
    }

    #[test]
    fn pages_parse_as_prometheus_text() {
        let fleet = fleet();
        let t = fleet.anchor_ms;
        for target in fleet.all_targets(t) {
            let text = expose(&render(&fleet, target, t, &mut Counters::default()));
            let parsed =
                strata_wire::exposition::parse(&text, strata_wire::exposition::Format::Text)
                    .expect("parses");
            assert!(!parsed.samples.is_empty(), "{:?}", target.job);
        }
    }
}
