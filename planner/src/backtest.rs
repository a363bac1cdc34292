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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backtest {
    pub cut: String,
    pub window_days: u32,
    pub min_days: u32,
    /// Cell resources with too little history before the cut (not scored).
    pub skipped: usize,
    /// Already at the utilisation at the cut (not scored).
    pub already_reached: usize,
    pub all: Methods,
    /// Without the cases reached after a surprise.
    pub foreseeable: Methods,
    pub cases: Vec<Case>,
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
    let mut cases = Vec::new();
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
        let within = |got: Option<f64>| match (got, in_window) {
            (Some(g), Some(t)) => (g - t).abs() <= 0.1 * t,
            _ => false,
        };
        let band = match in_window {
            Some(t) => p10.is_some_and(|lo| lo <= t) && p90.is_none_or(|hi| t <= hi),
            None => false,
        };
        cases.push(Case {
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
        });
    }
    let window = f64::from(window_days);
    let methods = |cases: &[&Case]| {
        let figures = |p50: &dyn Fn(&Case) -> bool, alarm: &dyn Fn(&Case) -> bool, band: bool| {
            let reached: Vec<&&Case> = cases.iter().filter(|c| c.truth_days.is_some()).collect();
            let not: Vec<&&Case> = cases.iter().filter(|c| c.truth_days.is_none()).collect();
            Figures {
                reached: reached.len(),
                p50_within_10pct: reached.iter().filter(|c| p50(c)).count(),
                band_contains: band.then(|| reached.iter().filter(|c| c.band_contains).count()),
                not_reached: not.len(),
                false_alarms: not.iter().filter(|c| alarm(c)).count(),
            }
        };
        Methods {
            planner: figures(
                &|c| c.p50_within_10pct,
                &|c| c.p50_days.is_some_and(|d| d <= window),
                true,
            ),
            predict_linear: figures(
                &|c| c.predict_linear_within_10pct,
                &|c| c.predict_linear_days.is_some_and(|d| d <= window),
                false,
            ),
        }
    };
    let all: Vec<&Case> = cases.iter().collect();
    let foreseeable: Vec<&Case> = cases.iter().filter(|c| c.surprise.is_none()).collect();
    Backtest {
        cut: crate::plan::format_time(cut_ms),
        window_days,
        min_days,
        skipped,
        already_reached: already,
        all: methods(&all),
        foreseeable: methods(&foreseeable),
        cases,
    }
}

/// The figures of several backtests added up: all cases, and the foreseeable ones.
pub fn combine(all: &[Backtest]) -> [Methods; 2] {
    let zero = Methods {
        planner: Figures::zero(true),
        predict_linear: Figures::zero(false),
    };
    let sum = |pick: fn(&Backtest) -> Methods| all.iter().map(pick).fold(zero, Methods::plus);
    [sum(|b| b.all), sum(|b| b.foreseeable)]
}

/// The two methods' figures side by side, over all cases and over the foreseeable ones.
pub fn summary(title: &str, figures: &[Methods; 2]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    let _ = writeln!(
        out,
        "{:<16} {:>22} {:>22} {:>14}",
        title, "p50 within 10%", "p10-p90 contains", "false alarms"
    );
    let [all, foreseeable] = figures;
    let surprises = all.planner.reached - foreseeable.planner.reached;
    for (heading, m) in [
        ("all cases".to_string(), all),
        (
            format!("foreseeable ({surprises} reached after a surprise left out)"),
            foreseeable,
        ),
    ] {
        let _ = writeln!(out, "{heading}");
        for (name, f) in [
            ("  planner", &m.planner),
            ("  predict_linear", &m.predict_linear),
        ] {
            let _ = writeln!(
                out,
                "{:<16} {:>22} {:>22} {:>14}",
                name,
                format!(
                    "{}/{} = {}",
                    f.p50_within_10pct,
                    f.reached,
                    pct(f.p50_share())
                ),
                f.band_share().map_or_else(
                    || "no band".to_string(),
                    |s| format!(
                        "{}/{} = {}",
                        f.band_contains.unwrap_or(0),
                        f.reached,
                        pct(s)
                    )
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
        b.all.planner.reached, b.all.planner.not_reached, b.already_reached, b.skipped
    );
    out += &summary("method", &[b.all, b.foreseeable]);
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
        assert_eq!(b.all.planner.reached, 2);
        assert_eq!(b.all.planner.p50_within_10pct, 1, "{:?}", b.cases);
        assert_eq!(b.all.planner.band_contains, Some(1));
        assert_eq!(b.all.planner.not_reached, 1);
        assert_eq!(b.all.planner.false_alarms, 0);
        assert_eq!(b.all.predict_linear.p50_within_10pct, 1);
        assert_eq!(b.foreseeable.planner.reached, 1);
        assert_eq!(b.foreseeable.planner.p50_within_10pct, 1);
        assert_eq!(b.foreseeable.planner.not_reached, 1);
        let [all, foreseeable] = combine(&[b.clone(), b]);
        assert_eq!(all.planner.reached, 4);
        assert_eq!(foreseeable.planner.p50_within_10pct, 2);
        let text = summary("method", &[all, foreseeable]);
        assert!(
            text.contains("foreseeable (2 reached after a surprise left out)"),
            "{text}"
        );
    }
}
