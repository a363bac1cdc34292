//! The simulated fleet and its ground truth.
//!
//! Each cell's number of hosted control planes follows a growth curve through the anchor
//! (`clusters_per_cell` clusters at the anchor), plus, in about half of the cells, a large
//! tenant onboarding several clusters at once (a step). A customer cluster is onboarded when
//! the curve passes its rank. Each cluster's node count then follows its own curve from its
//! onboarding, with daily and weekly cycles in its region's local time; pods, services,
//! namespaces, apiserver load and etcd size follow from its nodes. A cell's resources —
//! CPU and memory requested on the meta cluster, pod IP addresses per pool, ENIs, hosted
//! control planes, etcd database, apiserver inflight requests — are the sums of what its
//! clusters' control planes take, and their limits are sized from the usage at the anchor.
//!
//! Everything is a pure function of the seed, the sizes and the time ([`unit`] hashes them),
//! so a live page, a backfilled sample and the ground truth agree exactly. The signals here
//! are noiseless; [`crate::page`] adds the noise the exporters show, and
//! [`crate::truth`] reports crossings of these noiseless signals.

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::FleetConfig;
use crate::Result;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// How far before the anchor the fleet has history.
pub const HISTORY_DAYS: i64 = 400;
/// How far after the anchor the fleet is simulated.
pub const HORIZON_DAYS: i64 = 730;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// The meta cluster's own system pods and requests, besides the hosted control planes.
pub const OVERHEAD_CPU_CORES: f64 = 6.0;
pub const OVERHEAD_MEMORY_BYTES: f64 = 24.0 * GIB;
const OVERHEAD_PODS: f64 = 60.0;
/// kube-apiserver's defaults for `--max-requests-inflight` and
/// `--max-mutating-requests-inflight`.
pub const INFLIGHT_LIMIT_READ_ONLY: f64 = 400.0;
pub const INFLIGHT_LIMIT_MUTATING: f64 = 200.0;
/// A meta node: 16 cores, 64 GiB, and the ENI limits of an m5.4xlarge (8 ENIs, 30 IPv4
/// addresses each, one of them the ENI's own).
pub const CORES_PER_NODE: f64 = 16.0;
pub const MEMORY_PER_NODE_BYTES: f64 = 64.0 * GIB;
pub const ENI_MAX_PER_NODE: f64 = 8.0;
pub const IPS_PER_ENI: f64 = 29.0;
/// Each Calico IP pool is a /23.
pub const IPPOOL_SIZE: f64 = 512.0;
/// etcd's backend quota on the meta cluster and on each hosted cluster.
pub const META_ETCD_QUOTA_BYTES: f64 = 4.0 * GIB;
pub const HOSTED_ETCD_QUOTA_BYTES: f64 = 8.0 * GIB;
/// Cap on clusters a cell ever hosts, as a multiple of its clusters at the anchor.
const MAX_GROWTH: f64 = 4.0;

/// A uniform number in [0, 1) from the seed and a path of keys: the simulator's only source
/// of randomness, so equal inputs give equal fleets on every machine and version.
pub fn unit(seed: u64, keys: &[u64]) -> f64 {
    let mut bytes = Vec::with_capacity(keys.len() * 8);
    for k in keys {
        bytes.extend_from_slice(&k.to_le_bytes());
    }
    (xxh3_64_with_seed(&bytes, seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform number in [-1, 1).
pub fn noise(seed: u64, keys: &[u64]) -> f64 {
    unit(seed, keys) * 2.0 - 1.0
}

fn between(seed: u64, keys: &[u64], lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit(seed, keys)
}

/// Daily cycle in [-1, 1], highest at 15:00 local time.
pub fn daily(t: i64, utc_offset_hours: f64) -> f64 {
    let hours = (t as f64 / HOUR_MS as f64 + utc_offset_hours).rem_euclid(24.0);
    (std::f64::consts::TAU * (hours - 15.0) / 24.0).cos()
}

/// Weekly cycle in [-1, 1], lowest at the turn from Saturday to Sunday (UTC).
pub fn weekly(t: i64) -> f64 {
    // 1970-01-01 was a Thursday, so day 3 of each week since the epoch starts on a Sunday.
    let days = t as f64 / DAY_MS as f64;
    -(std::f64::consts::TAU * (days - 3.0) / 7.0).cos()
}

/// How a quantity grows, as a factor of its value at the curve's origin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Growth {
    Linear {
        per_day: f64,
    },
    Exponential {
        per_day: f64,
    },
    /// Levels off at `1 + e^(per_day × midpoint_days)` times the origin's value.
    Logistic {
        per_day: f64,
        midpoint_days: f64,
    },
}

impl Growth {
    pub fn factor(&self, days: f64) -> f64 {
        match *self {
            Growth::Linear { per_day } => (1.0 + per_day * days).max(0.05),
            Growth::Exponential { per_day } => (per_day * days).exp(),
            Growth::Logistic {
                per_day,
                midpoint_days,
            } => {
                (1.0 + (per_day * midpoint_days).exp())
                    / (1.0 + (-per_day * (days - midpoint_days)).exp())
            }
        }
    }

    fn draw(seed: u64, keys: &[u64], linear: (f64, f64), exp: (f64, f64), cap: (f64, f64)) -> Self {
        let pick = unit(seed, &[keys, &[1]].concat());
        let a = unit(seed, &[keys, &[2]].concat());
        let b = unit(seed, &[keys, &[3]].concat());
        if pick < 0.4 {
            Growth::Linear {
                per_day: linear.0 + (linear.1 - linear.0) * a,
            }
        } else if pick < 0.7 {
            Growth::Exponential {
                per_day: exp.0 + (exp.1 - exp.0) * a,
            }
        } else {
            let capacity = cap.0 + (cap.1 - cap.0) * a;
            let per_day = 0.008 + 0.03 * b;
            Growth::Logistic {
                per_day,
                midpoint_days: (capacity - 1.0).ln() / per_day,
            }
        }
    }
}

/// A large tenant onboarding several clusters into a cell at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    pub at_ms: i64,
    pub clusters: usize,
}

/// A Calico IP pool of a cell, and the share of the cell's pods that get addresses from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpPool {
    pub name: String,
    pub size: f64,
    pub share: f64,
}

/// A customer cluster whose control plane a cell hosts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub onboard_ms: i64,
    pub nodes_at_onboard: f64,
    pub growth: Growth,
    pub pods_per_node: f64,
    pub daily_amplitude: f64,
    pub weekly_amplitude: f64,
    /// Control-plane CPU requested per node of the cluster (the apiserver scales with it).
    pub cpu_requests_per_node: f64,
    pub latency_median_seconds: f64,
    /// Its apiserver and etcd restart about this often (counters reset).
    pub restart_period_ms: i64,
    /// Which meta node each of its three control-plane pods runs on.
    pub pod_nodes: [usize; 3],
    /// The size class the operator gave it at onboarding (HyperShift's
    /// `hypershift.openshift.io/hosted-cluster-size`), never changed since: clusters that
    /// grew past it need a resize.
    pub size: &'static str,
    #[serde(skip)]
    pub key: u64,
    #[serde(skip)]
    utc_offset_hours: f64,
}

/// What a hosted cluster is and takes at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClusterState {
    pub nodes: f64,
    pub pods: f64,
    pub services: f64,
    pub namespaces: f64,
    pub apiserver_requests_per_second: f64,
    pub latency_median_seconds: f64,
    pub etcd_db_bytes: f64,
    /// What its control plane takes on the meta cluster.
    pub cpu_requests_cores: f64,
    pub memory_requests_bytes: f64,
    pub cpu_used_cores: f64,
    pub memory_used_bytes: f64,
    pub meta_pods: f64,
    /// The daily cycle's load in [0, 1].
    pub load: f64,
}

impl Cluster {
    /// Nodes without the daily and weekly cycles.
    pub fn nodes_trend(&self, t: i64) -> f64 {
        let days = (t - self.onboard_ms) as f64 / DAY_MS as f64;
        self.nodes_at_onboard * self.growth.factor(days)
    }

    pub fn state(&self, t: i64) -> ClusterState {
        let d = daily(t, self.utc_offset_hours);
        let cycle = 1.0 + self.daily_amplitude * d + self.weekly_amplitude * weekly(t);
        let nodes = (self.nodes_trend(t) * cycle).round().max(1.0);
        let pods = (nodes * self.pods_per_node).round();
        let services = (pods / 6.0).round() + 10.0;
        let namespaces = (pods / 25.0).round() + 8.0;
        let load = (1.0 + d) / 2.0;
        let cpu_requests = 1.5 + self.cpu_requests_per_node * nodes;
        let memory_requests = 4.0 * GIB + 8.0 * MIB * nodes;
        let objects = pods + 2.0 * services + 5.0 * nodes + 20.0 * namespaces;
        ClusterState {
            nodes,
            pods,
            services,
            namespaces,
            apiserver_requests_per_second: (3.0 + 0.5 * nodes + 0.01 * pods) * (0.7 + 0.6 * load),
            latency_median_seconds: self.latency_median_seconds * (0.8 + 0.4 * load),
            etcd_db_bytes: 64.0 * MIB + objects * 5.0 * 1024.0,
            cpu_requests_cores: cpu_requests,
            memory_requests_bytes: memory_requests,
            cpu_used_cores: cpu_requests * (0.35 + 0.4 * load),
            memory_used_bytes: memory_requests * (0.65 + 0.1 * load),
            meta_pods: 18.0 + 3.0 * (nodes / 100.0).ceil(),
            load,
        }
    }
}

/// The size class an operator picks at onboarding: the smallest whose node threshold (the
/// planner's default tiers: 100, 1,000, 5,000 nodes) leaves a quarter of headroom.
fn onboarding_size(nodes: f64) -> &'static str {
    if nodes * 1.25 <= 100.0 {
        "small"
    } else if nodes * 1.25 <= 1000.0 {
        "medium"
    } else {
        "large"
    }
}

/// A meta cluster and the customer clusters it hosts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub name: String,
    pub region: String,
    pub utc_offset_hours: f64,
    /// Hosted control planes over time, as a factor of `clusters_per_cell` at the anchor.
    pub growth: Growth,
    pub step: Option<Step>,
    /// Every cluster the cell ever hosts within the simulated span, by onboarding time.
    pub clusters: Vec<Cluster>,
    pub meta_nodes: usize,
    /// Relative share of the cell's load each meta node carries (mean 1).
    pub node_skew: Vec<f64>,
    pub ippools: Vec<IpPool>,
    pub max_hosted_control_planes: f64,
    /// Spread of the exporters' noise around the signal (relative).
    pub noise: f64,
    #[serde(skip)]
    pub key: u64,
}

/// What a cell's meta cluster carries at one moment (noiseless).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CellState {
    pub hosted_control_planes: f64,
    pub cpu_requests_cores: f64,
    pub memory_requests_bytes: f64,
    pub cpu_used_cores: f64,
    pub memory_used_bytes: f64,
    pub pods: f64,
    pub etcd_db_bytes: f64,
    /// Space etcd holds for deleted revisions until its weekly defragmentation.
    pub etcd_garbage_bytes: f64,
    pub inflight_read_only: f64,
    pub inflight_mutating: f64,
    pub apiserver_requests_per_second: f64,
    pub load: f64,
}

/// A cell resource that has a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    CpuRequests,
    MemoryRequests,
    PodIps,
    Enis,
    HostedControlPlanes,
    EtcdDatabase,
    ApiserverInflight,
}

impl Resource {
    pub const ALL: [Resource; 7] = [
        Resource::CpuRequests,
        Resource::MemoryRequests,
        Resource::PodIps,
        Resource::Enis,
        Resource::HostedControlPlanes,
        Resource::EtcdDatabase,
        Resource::ApiserverInflight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::CpuRequests => "cpu_requests",
            Resource::MemoryRequests => "memory_requests",
            Resource::PodIps => "pod_ips",
            Resource::Enis => "enis",
            Resource::HostedControlPlanes => "hosted_control_planes",
            Resource::EtcdDatabase => "etcd_database",
            Resource::ApiserverInflight => "apiserver_inflight",
        }
    }
}

/// One resource's use against its limit; `pool` names the IP pool for [`Resource::PodIps`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceUse {
    pub resource: Resource,
    pub pool: Option<String>,
    pub used: f64,
    pub limit: f64,
}

impl Cell {
    /// Clusters onboarded by `t`.
    pub fn active(&self, t: i64) -> &[Cluster] {
        let n = self.clusters.partition_point(|c| c.onboard_ms <= t);
        &self.clusters[..n]
    }

    pub fn state(&self, t: i64) -> CellState {
        let clusters = self.active(t);
        let mut s = CellState {
            hosted_control_planes: clusters.len() as f64,
            cpu_requests_cores: OVERHEAD_CPU_CORES,
            memory_requests_bytes: OVERHEAD_MEMORY_BYTES,
            cpu_used_cores: OVERHEAD_CPU_CORES * 0.5,
            memory_used_bytes: OVERHEAD_MEMORY_BYTES * 0.7,
            pods: OVERHEAD_PODS,
            ..Default::default()
        };
        for c in clusters {
            let cs = c.state(t);
            s.cpu_requests_cores += cs.cpu_requests_cores;
            s.memory_requests_bytes += cs.memory_requests_bytes;
            s.cpu_used_cores += cs.cpu_used_cores;
            s.memory_used_bytes += cs.memory_used_bytes;
            s.pods += cs.meta_pods;
        }
        let load = (1.0 + daily(t, self.utc_offset_hours)) / 2.0;
        let hcp = s.hosted_control_planes;
        let week = (t as f64 / (7 * DAY_MS) as f64).fract();
        s.etcd_garbage_bytes = 200.0 * MIB * week;
        s.etcd_db_bytes = 256.0 * MIB + 40.0 * MIB * hcp + s.etcd_garbage_bytes;
        s.inflight_read_only = (20.0 + 6.0 * hcp) * (0.85 + 0.3 * load);
        s.inflight_mutating = (8.0 + 2.0 * hcp) * (0.85 + 0.3 * load);
        s.apiserver_requests_per_second = (50.0 + 30.0 * hcp) * (0.85 + 0.3 * load);
        s.load = load;
        s
    }

    /// Meta pods on node `i`.
    pub fn pods_on_node(&self, state: &CellState, i: usize) -> f64 {
        (state.pods * self.node_skew[i] / self.meta_nodes as f64).round()
    }

    /// ENIs the AWS VPC CNI holds on node `i`: enough for its pods plus one warm.
    pub fn enis_on_node(&self, state: &CellState, i: usize) -> f64 {
        ((self.pods_on_node(state, i) / IPS_PER_ENI).ceil() + 1.0).min(ENI_MAX_PER_NODE)
    }

    /// Addresses in use in each IP pool.
    pub fn pool_allocations(&self, state: &CellState) -> Vec<f64> {
        self.ippools
            .iter()
            .map(|p| (state.pods * p.share).round())
            .collect()
    }

    /// Every resource's use against its limit at `t`, noiseless.
    pub fn resources(&self, t: i64) -> Vec<ResourceUse> {
        let s = self.state(t);
        let nodes = self.meta_nodes as f64;
        let whole = |resource, used, limit| ResourceUse {
            resource,
            pool: None,
            used,
            limit,
        };
        let mut out = vec![
            whole(
                Resource::CpuRequests,
                s.cpu_requests_cores,
                nodes * CORES_PER_NODE,
            ),
            whole(
                Resource::MemoryRequests,
                s.memory_requests_bytes,
                nodes * MEMORY_PER_NODE_BYTES,
            ),
        ];
        for (pool, used) in self.ippools.iter().zip(self.pool_allocations(&s)) {
            out.push(ResourceUse {
                resource: Resource::PodIps,
                pool: Some(pool.name.clone()),
                used,
                limit: pool.size,
            });
        }
        let enis = (0..self.meta_nodes).map(|i| self.enis_on_node(&s, i)).sum();
        out.push(whole(Resource::Enis, enis, nodes * ENI_MAX_PER_NODE));
        out.push(whole(
            Resource::HostedControlPlanes,
            s.hosted_control_planes,
            self.max_hosted_control_planes,
        ));
        out.push(whole(
            Resource::EtcdDatabase,
            s.etcd_db_bytes,
            META_ETCD_QUOTA_BYTES,
        ));
        out.push(whole(
            Resource::ApiserverInflight,
            s.inflight_read_only,
            INFLIGHT_LIMIT_READ_ONLY,
        ));
        out
    }
}

/// A region and its cells.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    pub name: String,
    pub utc_offset_hours: f64,
}

/// The whole simulated fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    pub seed: u64,
    pub anchor_ms: i64,
    pub regions: Vec<Region>,
    pub cells: Vec<Cell>,
}

const REGIONS: &[(&str, f64)] = &[
    ("us-east-1", -5.0),
    ("eu-west-1", 0.0),
    ("ap-southeast-1", 8.0),
    ("us-west-2", -8.0),
    ("eu-central-1", 1.0),
    ("ap-northeast-1", 9.0),
    ("sa-east-1", -3.0),
    ("ap-south-1", 5.5),
    ("ca-central-1", -5.0),
    ("eu-north-1", 1.0),
    ("me-central-1", 4.0),
    ("af-south-1", 2.0),
];

// Keys of the random draws, so that adding a draw never changes another one.
const K_CELL: u64 = 1;
const K_CLUSTER: u64 = 2;
const K_SIZING: u64 = 4;
const K_NODE: u64 = 5;

impl Fleet {
    /// Builds the fleet a configuration describes.
    pub fn new(config: &FleetConfig) -> Result<Self> {
        config.validate()?;
        let anchor_ms = config.anchor_ms()?;
        let seed = config.seed;
        let regions: Vec<Region> = (0..config.regions)
            .map(|r| match REGIONS.get(r) {
                Some((name, offset)) => Region {
                    name: (*name).to_string(),
                    utc_offset_hours: *offset,
                },
                None => Region {
                    name: format!("region-{}", r + 1),
                    utc_offset_hours: ((r * 5) % 24) as f64 - 11.0,
                },
            })
            .collect();
        let mut cells = Vec::with_capacity(config.regions * config.cells_per_region);
        for region in &regions {
            for c in 0..config.cells_per_region {
                let name = format!("{}-c{:02}", region.name, c + 1);
                cells.push(Cell::build(
                    seed,
                    anchor_ms,
                    name,
                    region,
                    config.clusters_per_cell,
                ));
            }
        }
        Ok(Fleet {
            seed,
            anchor_ms,
            regions,
            cells,
        })
    }

    pub fn cell(&self, name: &str) -> Option<(usize, &Cell)> {
        self.cells.iter().enumerate().find(|(_, c)| c.name == name)
    }
}

impl Cell {
    fn build(seed: u64, anchor_ms: i64, name: String, region: &Region, clusters: usize) -> Cell {
        let key = xxh3_64_with_seed(name.as_bytes(), seed);
        let k = |tag: u64| unit(seed, &[K_CELL, key, tag]);
        let growth = Growth::draw(
            seed,
            &[K_CELL, key, 10],
            (0.0, 0.006),
            (0.0005, 0.003),
            (1.6, 3.5),
        );
        let n = clusters as f64;
        let step = (k(1) < 0.5).then(|| Step {
            at_ms: anchor_ms + ((-90.0 + 210.0 * k(2)) * DAY_MS as f64) as i64,
            clusters: ((0.15 + 0.25 * k(3)) * n).round().max(1.0) as usize,
        });
        let hcp = |t: i64| {
            let days = (t - anchor_ms) as f64 / DAY_MS as f64;
            let stepped = step.map_or(0.0, |s| {
                let after = |t: i64| if t >= s.at_ms { s.clusters as f64 } else { 0.0 };
                after(t) - after(anchor_ms)
            });
            n * growth.factor(days) + stepped
        };
        let first = anchor_ms - HISTORY_DAYS * DAY_MS;
        let last = anchor_ms + HORIZON_DAYS * DAY_MS;
        let cap = (n * MAX_GROWTH).ceil() as usize;
        let mut onboard = Vec::new();
        let before = hcp(first).round().max(0.0) as usize;
        for rank in 0..before.min(cap) {
            let earlier = (30.0 + 300.0 * unit(seed, &[K_CLUSTER, key, rank as u64, 0])) as i64;
            onboard.push((first - earlier * DAY_MS, false));
        }
        let mut t = first;
        while t < last && onboard.len() < cap {
            let h = hcp(t);
            while (onboard.len() as f64) < h.round() && onboard.len() < cap {
                let stepped = step.is_some_and(|s| t >= s.at_ms && t < s.at_ms + HOUR_MS);
                onboard.push((t, stepped));
            }
            t += HOUR_MS;
        }
        onboard.sort_by_key(|(t, _)| *t);
        let mut cell = Cell {
            name,
            region: region.name.clone(),
            utc_offset_hours: region.utc_offset_hours,
            growth,
            step,
            clusters: Vec::new(),
            meta_nodes: 1,
            node_skew: vec![1.0],
            ippools: Vec::new(),
            max_hosted_control_planes: (n / (0.45 + 0.25 * k(4))).ceil(),
            noise: 0.01 + 0.02 * k(5),
            key,
        };
        cell.clusters = onboard
            .into_iter()
            .enumerate()
            .map(|(i, (at, large_tenant))| cell.cluster(seed, i, at, large_tenant, region))
            .collect();
        cell.size(seed, anchor_ms);
        cell
    }

    fn cluster(
        &self,
        seed: u64,
        i: usize,
        onboard_ms: i64,
        large_tenant: bool,
        region: &Region,
    ) -> Cluster {
        let name = format!("{}-k{:03}", self.name, i + 1);
        let key = xxh3_64_with_seed(name.as_bytes(), seed);
        let u = |tag: u64| unit(seed, &[K_CLUSTER, key, tag]);
        let mut nodes = (3f64.ln() + (400f64.ln() - 3f64.ln()) * u(1)).exp();
        if u(2) < 0.05 {
            nodes = (800f64.ln() + (3000f64.ln() - 800f64.ln()) * u(3)).exp();
        }
        if large_tenant {
            nodes *= 3.0;
        }
        let size = onboarding_size(nodes);
        let growth = Growth::draw(
            seed,
            &[K_CLUSTER, key, 10],
            (-0.002, 0.01),
            (0.0005, 0.006),
            (1.5, 6.0),
        );
        Cluster {
            name,
            onboard_ms,
            nodes_at_onboard: nodes.round(),
            growth,
            pods_per_node: between(seed, &[K_CLUSTER, key, 4], 8.0, 35.0),
            daily_amplitude: 0.25 * u(5),
            weekly_amplitude: 0.15 * u(6),
            cpu_requests_per_node: between(seed, &[K_CLUSTER, key, 7], 0.002, 0.005),
            latency_median_seconds: between(seed, &[K_CLUSTER, key, 8], 0.01, 0.05),
            restart_period_ms: (between(seed, &[K_CLUSTER, key, 9], 3.0, 14.0) * DAY_MS as f64)
                as i64,
            pod_nodes: [0; 3],
            size,
            key,
            utc_offset_hours: region.utc_offset_hours,
        }
    }

    /// Sizes the meta cluster from the busiest hour of the anchor's day: each limit is the
    /// usage divided by a utilisation drawn between 35% and 65%.
    fn size(&mut self, seed: u64, anchor_ms: i64) {
        let u = |tag: u64, lo: f64, hi: f64| between(seed, &[K_SIZING, self.key, tag], lo, hi);
        let (u_cpu, u_ip) = (u(1, 0.35, 0.6), u(2, 0.4, 0.65));
        let peak = (0..24).map(|h| self.state(anchor_ms + h * HOUR_MS)).fold(
            CellState::default(),
            |a, s| CellState {
                cpu_requests_cores: a.cpu_requests_cores.max(s.cpu_requests_cores),
                pods: a.pods.max(s.pods),
                ..a
            },
        );
        self.meta_nodes = (peak.cpu_requests_cores / (u_cpu * CORES_PER_NODE))
            .ceil()
            .max(3.0) as usize;
        let raw: Vec<f64> = (0..self.meta_nodes)
            .map(|i| 1.0 + 0.15 * noise(seed, &[K_NODE, self.key, i as u64]))
            .collect();
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        self.node_skew = raw.iter().map(|s| s / mean).collect();
        let pools = (peak.pods / (u_ip * IPPOOL_SIZE)).ceil().max(1.0) as usize;
        let weights: Vec<f64> = (0..pools)
            .map(|p| 1.0 + 0.3 * u(10 + p as u64, 0.0, 1.0))
            .collect();
        let total: f64 = weights.iter().sum();
        self.ippools = weights
            .iter()
            .enumerate()
            .map(|(p, w)| IpPool {
                name: format!("pool-{}", (b'a' + (p % 26) as u8) as char),
                size: IPPOOL_SIZE,
                share: w / total,
            })
            .collect();
        let nodes = self.meta_nodes as u64;
        for c in &mut self.clusters {
            for (p, node) in c.pod_nodes.iter_mut().enumerate() {
                *node = (xxh3_64_with_seed(&[p as u8], c.key) % nodes) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FleetConfig {
        FleetConfig {
            anchor: Some("2026-11-01T00:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn same_seed_same_fleet_and_other_seed_other_fleet() {
        let a = Fleet::new(&config()).expect("fleet");
        let b = Fleet::new(&config()).expect("fleet");
        assert_eq!(a, b);
        let c = Fleet::new(&FleetConfig {
            seed: 2,
            ..config()
        })
        .expect("fleet");
        assert_ne!(a.cells[0].clusters, c.cells[0].clusters);
        assert_eq!(a.cells.len(), 12);
        assert_eq!(a.cells[0].name, "us-east-1-c01");
    }

    #[test]
    fn every_cell_hosts_the_configured_clusters_at_the_anchor() {
        let fleet = Fleet::new(&config()).expect("fleet");
        for cell in &fleet.cells {
            assert_eq!(cell.active(fleet.anchor_ms).len(), 25, "{}", cell.name);
            assert!(
                cell.clusters
                    .windows(2)
                    .all(|w| w[0].onboard_ms <= w[1].onboard_ms)
            );
        }
    }

    #[test]
    fn limits_are_sized_so_the_anchor_is_below_them() {
        let fleet = Fleet::new(&config()).expect("fleet");
        for cell in &fleet.cells {
            for r in cell.resources(fleet.anchor_ms) {
                let u = r.used / r.limit;
                assert!(u > 0.0 && u < 0.8, "{} {:?} at {u}", cell.name, r.resource);
            }
        }
    }

    #[test]
    fn growth_curves_pass_through_one_at_their_origin() {
        for g in [
            Growth::Linear { per_day: 0.01 },
            Growth::Exponential { per_day: 0.01 },
            Growth::Logistic {
                per_day: 0.02,
                midpoint_days: 40.0,
            },
        ] {
            assert!((g.factor(0.0) - 1.0).abs() < 1e-12);
            assert!(g.factor(100.0) > g.factor(10.0));
        }
    }

    #[test]
    fn cycles_peak_in_the_afternoon_and_dip_on_weekends() {
        let monday_15h_utc = 1_793_718_000_000; // 2026-11-02T15:00:00Z
        assert!((daily(monday_15h_utc, 0.0) - 1.0).abs() < 1e-9);
        assert!(daily(monday_15h_utc, 12.0) < -0.99);
        let sunday = 1_793_491_200_000; // 2026-11-01T00:00:00Z, a Sunday
        assert!(weekly(sunday) < -0.99);
        assert!(weekly(sunday + 7 * DAY_MS / 2) > 0.99);
    }
}
