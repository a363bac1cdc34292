//! Ground truth: for each cell and resource, its use against its limit now and the first time
//! its noiseless signal (trend, cycles and steps, without the exporters' noise) reaches each
//! given utilisation. This is what a perfect forecaster would say, to score the planner's
//! forecasts against.
//!
//! A crossing also says whether an event no history can foretell came first: a large tenant
//! onboarding many clusters at once, or a giant cluster (800 nodes or more) onboarding, which
//! moves every resource that scales with nodes and pods. Forecasts are scored with and
//! without those cases.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::format_time_ms;
use crate::model::{Cell, DAY_MS, Fleet, HORIZON_DAYS, HOUR_MS, MINUTE_MS, Resource};

/// When a resource first reaches a utilisation; `None` when not within the horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossing {
    pub utilisation: f64,
    pub at_ms: Option<i64>,
    /// `at_ms` as RFC 3339, for people.
    pub at: Option<String>,
    pub days: Option<f64>,
    /// What happened between `from` and the crossing that history could not foretell.
    pub surprise: Option<Surprise>,
}

/// An event that moves a resource by more than its growth could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Surprise {
    LargeTenant,
    GiantCluster,
}

impl Surprise {
    pub fn name(self) -> &'static str {
        match self {
            Surprise::LargeTenant => "large tenant onboarded",
            Surprise::GiantCluster => "giant cluster onboarded",
        }
    }
}

/// Nodes from which a cluster's onboarding is a surprise for node-driven resources.
const GIANT_NODES: f64 = 800.0;

impl Resource {
    /// Whether the resource scales with the clusters' nodes and pods (and so jumps when a
    /// giant cluster arrives), rather than with the number of clusters only.
    fn scales_with_nodes(self) -> bool {
        matches!(
            self,
            Resource::CpuRequests | Resource::MemoryRequests | Resource::PodIps | Resource::Enis
        )
    }
}

/// The first surprise for `resource` of `cell` in `(from_ms, to_ms]`.
fn surprise(cell: &Cell, resource: Resource, from_ms: i64, to_ms: i64) -> Option<Surprise> {
    let within = |t: i64| t > from_ms && t <= to_ms;
    let tenant = cell
        .step
        .filter(|s| within(s.at_ms))
        .map(|s| (s.at_ms, Surprise::LargeTenant));
    let giant = cell
        .clusters
        .iter()
        .filter(|c| resource.scales_with_nodes() && c.nodes_at_onboard >= GIANT_NODES)
        .find(|c| within(c.onboard_ms))
        .map(|c| (c.onboard_ms, Surprise::GiantCluster));
    [tenant, giant]
        .into_iter()
        .flatten()
        .min_by_key(|e| e.0)
        .map(|e| e.1)
}

/// One cell resource's truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    pub region: String,
    pub cell: String,
    pub resource: Resource,
    /// The IP pool, for `pod_ips`.
    pub pool: Option<String>,
    pub used: f64,
    pub limit: f64,
    pub utilisation: f64,
    pub crossings: Vec<Crossing>,
}

/// Step of the search for crossings; a crossing found is then narrowed down to the minute.
pub const RESOLUTION_MS: i64 = HOUR_MS;

/// The truth of every cell resource from `from_ms` up to `horizon_days` later, for each of
/// `utilisations` (fractions of the limit, e.g. 0.6 and 1.0).
pub fn truths(fleet: &Fleet, from_ms: i64, horizon_days: i64, utilisations: &[f64]) -> Vec<Truth> {
    let horizon_days = horizon_days.clamp(1, HORIZON_DAYS);
    let mut out = Vec::new();
    for cell in &fleet.cells {
        let now = cell.resources(from_ms);
        let mut found: Vec<Vec<Option<i64>>> = vec![vec![None; utilisations.len()]; now.len()];
        let mut t = from_ms;
        while t <= from_ms + horizon_days * DAY_MS {
            for (r, used) in cell.resources(t).iter().enumerate() {
                for (u, &threshold) in utilisations.iter().enumerate() {
                    if found[r][u].is_none() && used.used >= threshold * used.limit {
                        found[r][u] = Some(if t > from_ms {
                            narrow(cell, r, threshold, t)
                        } else {
                            t
                        });
                    }
                }
            }
            if found.iter().flatten().all(Option::is_some) {
                break;
            }
            t += RESOLUTION_MS;
        }
        for (r, found) in now.into_iter().zip(found) {
            out.push(Truth {
                region: cell.region.clone(),
                cell: cell.name.clone(),
                resource: r.resource,
                pool: r.pool,
                used: r.used,
                limit: r.limit,
                utilisation: r.used / r.limit,
                crossings: utilisations
                    .iter()
                    .zip(found)
                    .map(|(&utilisation, at_ms)| Crossing {
                        utilisation,
                        at_ms,
                        at: at_ms.map(format_time_ms),
                        days: at_ms.map(|t| (t - from_ms) as f64 / DAY_MS as f64),
                        surprise: at_ms.and_then(|t| surprise(cell, r.resource, from_ms, t)),
                    })
                    .collect(),
            });
        }
    }
    out
}

/// The first minute of the hour before `t` at which resource `r` of `cell` reaches
/// `utilisation`, given that it had not an hour before `t` and has at `t` (by bisection over
/// whole minutes).
fn narrow(cell: &Cell, r: usize, utilisation: f64, t: i64) -> i64 {
    let (mut below, mut reached) = (t - RESOLUTION_MS, t);
    while reached - below > MINUTE_MS {
        let mid = below + (reached - below) / MINUTE_MS / 2 * MINUTE_MS;
        let used = &cell.resources(mid)[r];
        if used.used >= utilisation * used.limit {
            reached = mid;
        } else {
            below = mid;
        }
    }
    reached
}

/// The truths as an aligned text table, soonest first crossing first.
pub fn table(truths: &[Truth]) -> String {
    let mut rows: Vec<&Truth> = truths.iter().collect();
    let first = |t: &Truth| {
        t.crossings
            .iter()
            .filter_map(|c| c.days)
            .fold(f64::INFINITY, f64::min)
    };
    rows.sort_by(|a, b| first(a).total_cmp(&first(b)).then(a.cell.cmp(&b.cell)));
    let mut header = vec![
        "REGION".to_string(),
        "CELL".into(),
        "RESOURCE".into(),
        "USED".into(),
        "LIMIT".into(),
        "NOW".into(),
    ];
    if let Some(t) = truths.first() {
        for c in &t.crossings {
            header.push(format!("REACHES {:.0}%", c.utilisation * 100.0));
        }
    }
    let mut lines = vec![header];
    for t in rows {
        let mut line = vec![
            t.region.clone(),
            t.cell.clone(),
            match &t.pool {
                Some(pool) => format!("{}/{pool}", t.resource.name()),
                None => t.resource.name().to_string(),
            },
            human(t.used),
            human(t.limit),
            format!("{:.1}%", t.utilisation * 100.0),
        ];
        for c in &t.crossings {
            line.push(match (&c.at, c.days, c.surprise) {
                (Some(at), Some(days), None) => format!("{} (in {days:.1}d)", &at[..10]),
                (Some(at), Some(days), Some(why)) => {
                    format!("{} (in {days:.1}d, {})", &at[..10], why.name())
                }
                _ => "not within horizon".into(),
            });
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn human(v: f64) -> String {
    let abs = v.abs();
    if abs >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}Gi", v / (1024.0 * 1024.0 * 1024.0))
    } else if abs >= 1024.0 * 1024.0 {
        format!("{:.1}Mi", v / (1024.0 * 1024.0))
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FleetConfig;

    #[test]
    fn crossings_are_where_the_signal_first_reaches_the_threshold() {
        let fleet = Fleet::new(&FleetConfig {
            regions: 1,
            cells_per_region: 3,
            clusters_per_cell: 20,
            anchor: Some("2026-11-01T00:00:00Z".into()),
            ..Default::default()
        })
        .expect("fleet");
        let from = fleet.anchor_ms;
        let truths = truths(&fleet, from, 365, &[0.6, 1.0]);
        assert!(truths.iter().any(|t| t.crossings[0].at_ms.is_some()));
        assert!(
            truths
                .iter()
                .any(|t| t.crossings.iter().any(|c| c.surprise.is_some()))
        );
        for t in &truths {
            let cell = fleet.cell(&t.cell).expect("cell").1;
            let find = |at: i64| {
                cell.resources(at)
                    .into_iter()
                    .find(|r| r.resource == t.resource && r.pool == t.pool)
                    .expect("resource")
            };
            for c in &t.crossings {
                if let Some(at) = c.at_ms {
                    let r = find(at);
                    assert!(r.used >= c.utilisation * r.limit);
                    if at > from {
                        let before = find(at - MINUTE_MS);
                        assert!(before.used < c.utilisation * before.limit);
                    }
                }
            }
            for c in &t.crossings {
                let step = cell
                    .step
                    .filter(|s| c.at_ms.is_some_and(|at| s.at_ms > from && s.at_ms <= at));
                if step.is_some() {
                    assert!(c.surprise.is_some(), "{t:?}");
                }
                if c.surprise == Some(Surprise::GiantCluster) {
                    assert!(t.resource.scales_with_nodes(), "{t:?}");
                }
            }
            let (sixty, full) = (&t.crossings[0], &t.crossings[1]);
            if let Some(full) = full.at_ms {
                assert!(sixty.at_ms.is_some_and(|s| s <= full));
            }
        }
        let text = table(&truths);
        assert!(text.starts_with("REGION"));
        assert_eq!(text.lines().count(), truths.len() + 1);
    }
}
