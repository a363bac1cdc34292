//! Backtesting: forecast from history cut at T−k days, then compare with what happened in
//! the k days after the cut.
//!
//! A case is one cell resource and one utilisation (the headroom line and the limit) with at
//! least `min_days` of history before the cut. For the cases whose utilisation was really
//! reached within the window (and not already at the cut), the score is how often the p50 time
//! is within 10% of the true time, and how often the p10–p90 band contains it. For the
//! others, a false alarm is a p50 inside the window. The same figures are given for
//! `predict_linear` (a least-squares line through the same daily means) side by side.
//!
//! A crossing that came after a surprise (a large tenant or a giant cluster onboarding between
//! the cut and the crossing) cannot be foretold from history; the figures are given for all
//! cases and for the foreseeable ones.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::forecast::{self, DAY_MS};
use crate::plan::{Forecasted, label};

/// When a cell resource really reached a utilisation after the cut (`None`: not in the
/// window), from ground truth or from the data after the cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub region: String,
    pub cell: String,
    pub resource: String,
    pub pool: Option<String>,
    pub utilisation: f64,
    pub days: Option<f64>,
    /// What came between the cut and the crossing that history could not foretell.
    pub surprise: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    pub cell: String,
    pub resource: String,
    pub utilisation: f64,
    pub truth_days: Option<f64>,
    pub surprise: Option<String>,
    pub p10_days: Option<f64>,
    pub p50_days: Option<f64>,
    pub p90_days: Option<f64>,
    pub predict_linear_days: Option<f64>,
    pub p50_within_10pct: bool,
    pub band_contains: bool,
    pub predict_linear_within_10pct: bool,
}

/// One method's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Cases whose utilisation was reached within the window.
    pub reached: usize,
    pub p50_within_10pct: usize,
    /// `None` for methods without a band.
    pub band_contains: Option<usize>,
    /// Reached cases whose p50 is more than 10% after the truth, or never comes.
    pub p50_late: usize,
    /// Reached cases whose p50 is more than 10% before the truth.
    pub p50_early: usize,
    /// Cases not reached within the window.
    pub not_reached: usize,
    pub false_alarms: usize,
}

impl Figures {
    /// No cases; `band` for methods that have a band.
    fn zero(band: bool) -> Figures {
        Figures {
            reached: 0,
            p50_within_10pct: 0,
            band_contains: band.then_some(0),
            p50_late: 0,
            p50_early: 0,
            not_reached: 0,
            false_alarms: 0,
        }
    }

    fn plus(self, other: Figures) -> Figures {
        Figures {
            reached: self.reached + other.reached,
            p50_within_10pct: self.p50_within_10pct + other.p50_within_10pct,
            band_contains: match (self.band_contains, other.band_contains) {
                (Some(x), Some(y)) => Some(x + y),
                _ => None,
            },
            p50_late: self.p50_late + other.p50_late,
            p50_early: self.p50_early + other.p50_early,
            not_reached: self.not_reached + other.not_reached,
            false_alarms: self.false_alarms + other.false_alarms,
        }
    }

    pub fn p50_share(&self) -> f64 {
        share(self.p50_within_10pct, self.reached)
    }

    pub fn band_share(&self) -> Option<f64> {
        self.band_contains.map(|b| share(b, self.reached))
    }
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// Both methods' figures over one set of cases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Methods {
    pub planner: Figures,
    pub predict_linear: Figures,
}

impl Methods {
    fn plus(self, other: Methods) -> Methods {
        Methods {
            planner: self.planner.plus(other.planner),
            predict_linear: self.predict_linear.plus(other.predict_linear),
        }
    }
}

/// Both methods' figures over all cases, over the foreseeable ones, and over the foreseeable
/// ones of each resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub all: Methods,
    /// Without the cases reached after a surprise.
    pub foreseeable: Methods,
    /// The foreseeable cases by resource (without the pool).
    pub by_resource: BTreeMap<String, Methods>,
}

impl Totals {
    fn plus(mut self, other: &Totals) -> Totals {
        self.all = self.all.plus(other.all);
        self.foreseeable = self.foreseeable.plus(other.foreseeable);
        for (kind, m) in &other.by_resource {
            self.by_resource
                .entry(kind.clone())
                .and_modify(|mine| *mine = mine.plus(*m))
                .or_insert(*m);
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backtest {
    pub cut: String,
    pub window_days: u32,
    pub min_days: u32,
    /// Cell resources with too little history before the cut (not scored).
    pub skipped: usize,
    /// Already at the utilisation at the cut (not scored).
    pub already_reached: usize,
    #[serde(flatten)]
    pub totals: Totals,
    pub cases: Vec<Case>,
}

/// How a forecast time in days stands against the true one: within 10% of it (`Equal`), more
/// than 10% after it or never (`Greater`), more than 10% before it (`Less`).
fn side(got: Option<f64>, truth: f64) -> Ordering {
    match got {
        Some(d) if (d - truth).abs() <= 0.1 * truth => Ordering::Equal,
        Some(d) if d < truth => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// Scores forecasts made at `cut_ms` against `truths`.
pub fn score(
    forecasts: &[Forecasted],
    truths: &[Truth],
    cut_ms: i64,
    window_days: u32,
    min_days: u32,
) -> Backtest {
    type Key = (String, String, Option<String>);
    let by_key: BTreeMap<Key, &Forecasted> = forecasts
        .iter()
        .map(|f| {
            (
                (
                    f.series.cell.clone(),
                    f.series.resource.clone(),
                    f.series.pool.clone(),
                ),
                f,
            )
        })
        .collect();
    // Each case with its resource's name.
    let mut cases: Vec<(&str, Case)> = Vec::new();
    let (mut skipped, mut already) = (0, 0);
    let days = |t: Option<i64>| t.map(|t| (t - cut_ms) as f64 / DAY_MS as f64);
    for truth in truths {
        let key = (
            truth.cell.clone(),
            truth.resource.clone(),
            truth.pool.clone(),
        );
        let Some(f) = by_key.get(&key) else {
            skipped += 1;
            continue;
        };
        let history = f.series.daily.iter().filter(|p| p.1.is_finite()).count();
        let (Ok(model), Some(limit)) = (&f.model, f.series.limit) else {
            skipped += 1;
            continue;
        };
        if history < min_days as usize {
            skipped += 1;
            continue;
        }
        let threshold = truth.utilisation * limit;
        let in_window = truth.days.filter(|d| *d <= f64::from(window_days));
        if in_window == Some(0.0) {
            already += 1;
            continue;
        }
        let c = model.crossing(threshold, window_days.max(1) * 4);
        let naive = days(forecast::predict_linear(
            &f.series.daily,
            cut_ms,
            threshold,
            window_days * 4,
        ));
        let (p10, p50, p90) = (days(c.p10_ms), days(c.p50_ms), days(c.p90_ms));
        let within = |got: Option<f64>| in_window.is_some_and(|t| side(got, t).is_eq());
        let band = match in_window {
            Some(t) => p10.is_some_and(|lo| lo <= t) && p90.is_none_or(|hi| t <= hi),
            None => false,
        };
        cases.push((
            &truth.resource,
            Case {
                cell: truth.cell.clone(),
                resource: label(&truth.resource, truth.pool.as_deref()),
                utilisation: truth.utilisation,
                truth_days: in_window,
                surprise: truth.surprise.clone().filter(|_| in_window.is_some()),
                p10_days: p10,
                p50_days: p50,
                p90_days: p90,
                predict_linear_days: naive,
                p50_within_10pct: within(p50),
                band_contains: band,
                predict_linear_within_10pct: within(naive),
            },
        ));
    }
    let window = f64::from(window_days);
    let methods = |cases: &[&Case]| {
        let figures = |p50: &dyn Fn(&Case) -> Option<f64>, band: bool| {
            let reached: Vec<&&Case> = cases.iter().filter(|c| c.truth_days.is_some()).collect();
            let not: Vec<&&Case> = cases.iter().filter(|c| c.truth_days.is_none()).collect();
            let count = |want: Ordering| {
                reached
                    .iter()
                    .filter(|c| side(p50(c), c.truth_days.unwrap_or(0.0)) == want)
                    .count()
            };
            Figures {
                reached: reached.len(),
                p50_within_10pct: count(Ordering::Equal),
                band_contains: band.then(|| reached.iter().filter(|c| c.band_contains).count()),
                p50_late: count(Ordering::Greater),
                p50_early: count(Ordering::Less),
                not_reached: not.len(),
                false_alarms: not
                    .iter()
                    .filter(|c| p50(c).is_some_and(|d| d <= window))
                    .count(),
            }
        };
        Methods {
            planner: figures(&|c| c.p50_days, true),
            predict_linear: figures(&|c| c.predict_linear_days, false),
        }
    };
    let all: Vec<&Case> = cases.iter().map(|c| &c.1).collect();
    let foreseeable: Vec<&Case> = all
        .iter()
        .copied()
        .filter(|c| c.surprise.is_none())
        .collect();
    let mut kinds: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for (kind, case) in cases.iter().filter(|c| c.1.surprise.is_none()) {
        kinds.entry(kind).or_default().push(case);
    }
    Backtest {
        cut: crate::plan::format_time(cut_ms),
        window_days,
        min_days,
        skipped,
        already_reached: already,
        totals: Totals {
            all: methods(&all),
            foreseeable: methods(&foreseeable),
            by_resource: kinds
                .into_iter()
                .map(|(kind, cases)| (kind.to_string(), methods(&cases)))
                .collect(),
        },
        cases: cases.into_iter().map(|c| c.1).collect(),
    }
}

/// The figures of several backtests added up.
pub fn combine(all: &[Backtest]) -> Totals {
    let zero = Methods {
        planner: Figures::zero(true),
        predict_linear: Figures::zero(false),
    };
    let totals = Totals {
        all: zero,
        foreseeable: zero,
        by_resource: BTreeMap::new(),
    };
    all.iter().fold(totals, |sum, b| sum.plus(&b.totals))
}

/// The two methods' figures side by side, over all cases, over the foreseeable ones, and over
/// the foreseeable ones of each resource.
pub fn summary(title: &str, totals: &Totals) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    // A share of no cases is no figure.
    let of = |n: usize, reached: usize, share: f64| {
        if reached == 0 {
            "-".to_string()
        } else {
            format!("{n}/{reached} = {}", pct(share))
        }
    };
    let _ = writeln!(
        out,
        "{:<18} {:>20} {:>18} {:>20} {:>14}",
        title, "p50 within 10%", "misses", "p10-p90 contains", "false alarms"
    );
    let surprises = totals.all.planner.reached - totals.foreseeable.planner.reached;
    let mut sections = vec![
        ("all cases".to_string(), &totals.all),
        (
            format!("foreseeable ({surprises} reached after a surprise left out)"),
            &totals.foreseeable,
        ),
    ];
    sections.extend(
        totals
            .by_resource
            .iter()
            .map(|(kind, m)| (format!("foreseeable {kind}"), m)),
    );
    for (heading, m) in sections {
        let _ = writeln!(out, "{heading}");
        for (name, f) in [
            ("  planner", &m.planner),
            ("  predict_linear", &m.predict_linear),
        ] {
            let _ = writeln!(
                out,
                "{:<18} {:>20} {:>18} {:>20} {:>14}",
                name,
                of(f.p50_within_10pct, f.reached, f.p50_share()),
                format!("{} late, {} early", f.p50_late, f.p50_early),
                f.band_share().map_or_else(
                    || "no band".to_string(),
                    |s| of(f.band_contains.unwrap_or(0), f.reached, s)
                ),
                format!("{}/{}", f.false_alarms, f.not_reached),
            );
        }
    }
    out
}

/// The backtest for people: the two methods side by side, then the cases that were reached.
pub fn table(b: &Backtest) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backtest: forecasts made at {} (history of at least {} days), compared with the {} days after",
        b.cut, b.min_days, b.window_days
    );
    let _ = writeln!(
        out,
        "{} utilisations reached in the window, {} not reached, {} already reached at the cut, {} cell resources skipped (too little history or no limit)\n",
        b.totals.all.planner.reached,
        b.totals.all.planner.not_reached,
        b.already_reached,
        b.skipped
    );
    out += &summary("method", &b.totals);
    let _ = writeln!(
        out,
        "\n{:<22} {:<30} {:>6} {:>8} {:>26} {:>15}  surprise",
        "cell", "resource", "util", "truth d", "planner p10/p50/p90 d", "predict_linear"
    );
    let d = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for c in b.cases.iter().filter(|c| c.truth_days.is_some()) {
        let _ = writeln!(
            out,
            "{:<22} {:<30} {:>6} {:>8} {:>26} {:>15}  {}",
            c.cell,
            c.resource,
            format!("{:.0}%", c.utilisation * 100.0),
            d(c.truth_days),
            format!(
                "{}/{}/{}{}",
                d(c.p10_days),
                d(c.p50_days),
                d(c.p90_days),
                if c.p50_within_10pct { "" } else { " x" }
            ),
            format!(
                "{}{}",
                d(c.predict_linear_days),
                if c.predict_linear_within_10pct {
                    ""
                } else {
                    " x"
                }
            ),
            c.surprise.as_deref().unwrap_or("-"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::{HOUR_MS, Input};
    use crate::scan::ResourceSeries;

    const CUT: i64 = 1_790_006_400_000;

    /// A resource growing by one a day from 100 at the cut, with a limit of 300.
    fn forecasted(cell: &str) -> Forecasted {
        let daily: Vec<(i64, f64)> = (0..60)
            .rev()
            .map(|d| (CUT - d * DAY_MS, 100.0 - d as f64 - 0.5))
            .collect();
        let hourly: Vec<(i64, f64)> = (0..72)
            .map(|h| (CUT - (71 - h) * HOUR_MS, 100.0 - (71 - h) as f64 / 24.0))
            .collect();
        let model = forecast::fit(Input {
            daily: &daily,
            hourly: &hourly,
            now_ms: CUT,
            min_history_days: 30,
            driver: None,
        });
        Forecasted {
            series: ResourceSeries {
                region: "r".into(),
                cell: cell.into(),
                resource: "cpu_requests".into(),
                pool: None,
                daily,
                hourly,
                limit: Some(300.0),
                per_node: None,
            },
            warning: None,
            model,
        }
    }

    fn truth(cell: &str, utilisation: f64, days: Option<f64>, surprise: Option<&str>) -> Truth {
        Truth {
            region: "r".into(),
            cell: cell.into(),
            resource: "cpu_requests".into(),
            pool: None,
            utilisation,
            days,
            surprise: surprise.map(str::to_string),
        }
    }

    #[test]
    fn cases_after_a_surprise_are_scored_apart() {
        let forecasts = [forecasted("a"), forecasted("b")];
        let truths = [
            // 180 is reached in 80 days as forecast.
            truth("a", 0.6, Some(80.0), None),
            // A large tenant brought it forward to 10 days: a miss no history could avoid.
            truth("b", 0.6, Some(10.0), Some("large tenant onboarded")),
            // 300 is not reached in the window, and not forecast to be.
            truth("a", 1.0, None, None),
            // No forecast for a cell the store does not have.
            truth("c", 0.6, Some(5.0), None),
        ];
        let b = score(&forecasts, &truths, CUT, 90, 30);
        assert_eq!(b.skipped, 1);
        let t = &b.totals;
        assert_eq!(t.all.planner.reached, 2);
        assert_eq!(t.all.planner.p50_within_10pct, 1, "{:?}", b.cases);
        assert_eq!(t.all.planner.band_contains, Some(1));
        assert_eq!(t.all.planner.not_reached, 1);
        assert_eq!(t.all.planner.false_alarms, 0);
        assert_eq!(t.all.predict_linear.p50_within_10pct, 1);
        assert_eq!(t.foreseeable.planner.reached, 1);
        assert_eq!(t.foreseeable.planner.p50_within_10pct, 1);
        assert_eq!(t.foreseeable.planner.not_reached, 1);
        // The surprise's p50 (80 days) came long after the truth (10 days).
        assert_eq!((t.all.planner.p50_late, t.all.planner.p50_early), (1, 0));
        assert_eq!(t.foreseeable.planner.p50_late, 0);
        let kinds: Vec<&str> = t.by_resource.keys().map(String::as_str).collect();
        assert_eq!(kinds, ["cpu_requests"]);
        assert_eq!(t.by_resource["cpu_requests"], t.foreseeable);
        let all = combine(&[b.clone(), b]);
        assert_eq!(all.all.planner.reached, 4);
        assert_eq!(all.all.planner.p50_late, 2);
        assert_eq!(all.foreseeable.planner.p50_within_10pct, 2);
        assert_eq!(all.by_resource["cpu_requests"].planner.reached, 2);
        let text = summary("method", &all);
        assert!(
            text.contains("foreseeable (2 reached after a surprise left out)"),
            "{text}"
        );
        assert!(text.contains("foreseeable cpu_requests"), "{text}");
    }

    #[test]
    fn a_p50_is_early_late_or_within_a_tenth_of_the_truth() {
        assert_eq!(side(Some(9.0), 10.0), Ordering::Equal);
        assert_eq!(side(Some(11.0), 10.0), Ordering::Equal);
        assert_eq!(side(Some(8.9), 10.0), Ordering::Less);
        assert_eq!(side(Some(11.1), 10.0), Ordering::Greater);
        assert_eq!(side(None, 10.0), Ordering::Greater, "never reached is late");
    }
}
