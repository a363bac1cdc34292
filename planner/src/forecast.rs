//! Forecasting one cell resource: trend, weekly and daily seasonality, prediction intervals,
//! change points, and time to a threshold as p10 / p50 / p90.
//!
//! Inputs are aggregates the store computed: one mean per day over the history, and one mean
//! per hour over the last few days. Means, not peaks: the maximum of noisy samples sits above
//! the signal by an amount that depends on the noise and the scrape interval, and that bias
//! moves every crossing earlier; the mean is unbiased, and the daily cycle is put back from the
//! hourly means.
//!
//! The method, in order:
//! 1. **Change point.** Weekly differences of the daily means (`y[d] - y[d-7]`) cancel the weekly
//!    cycle and a steady trend. A level shift (a large tenant onboarding, a migration) shows
//!    as a run of several same-signed outliers (beyond 5 robust standard deviations and 8% of
//!    the level) starting on the day of the shift; a one-day spike shows as two short runs a
//!    week apart and is ignored. The forecast uses only the days after the last shift. Fewer
//!    than `min_history_days` of them is reported as too little history, never guessed.
//! 2. **Weekly cycle.** With three weeks or more, the median ratio of each weekday to a first
//!    linear fit (multiplicative seasonality), over the days where that line is not near
//!    zero; the series is divided by it. When the factors follow one wave through the week,
//!    each day's hours move with that wave, keeping the day's mean, so a forecast hour on a
//!    rising Monday evening stands above Monday's mean and the week's highest hour is where
//!    a threshold is first reached.
//! 3. **Trend.** Linear, exponential (log-linear) and logistic (logit-linear against a ceiling
//!    searched on a grid) weighted least squares, with weights halving every half of the
//!    usable history so the slope reflects the present. The one with the smaller error on
//!    the last third, fitted on the first two thirds, is the p50 (the exponential must be 10%
//!    closer than the line, the logistic twice as close as the better of the two); the
//!    others' forecasts widen the band, so the band grows where they disagree. The logistic
//!    is for growth that is slowing towards a ceiling, which an exponential overshoots.
//!
//!    A count that changes on few days (hosted control planes: one more cluster now and
//!    then) is a rounding of a smooth curve, which passes the level halfway between at the
//!    instant of each change. The instants come from the daily means (a day at 14.25 after
//!    a day at 14 went to 15 at 18:00), and the trend is fitted through them rather than the
//!    daily means, whose flat stretches pull a line up or down by up to half a step depending
//!    on where the history ends. The instants lie on the curve, so the right shape passes
//!    through all of them: a count's shape is judged by its distance from every instant
//!    rather than on a held-out third (one or two of a few steps), the exponential and the
//!    logistic each having to halve the distance of the simpler shapes. Such a count has no
//!    weekly or daily cycle, and its band is at least as wide as rounding makes it.
//!
//!    A resource that follows another one of its cell (its driver: the pods and requests a
//!    cell's hosted control planes bring) is fitted as `base + per_driver × driver +
//!    per_clock × clock` when the driver explains at least half of what a line in the clock
//!    leaves. The clock is days, or driver-days (the driver summed over the days: each
//!    cluster grows, so the clusters already there grow faster the more of them there are),
//!    whichever the driver is the less collinear with, so that what each cluster brings is
//!    told apart from the growth of those already there. What is left once `per_driver ×
//!    driver` is taken away gets a trend of its own in the clock, its shape chosen as above;
//!    ahead, driver-days add the driver's forecast. The forecast is `per_driver ×` the
//!    driver's forecast plus that trend, widened by the fit's residuals, so it steps and
//!    bends when the driver does. When the days since the driver's last step stand further
//!    from the fit than chance allows (a cluster much bigger or smaller than the usual one
//!    just onboarded), the forecast starts from their level.
//! 4. **Intervals.** The variance of the fitted trend at each future day (from the weights,
//!    inflated by the residuals' lag-1 autocorrelation) plus one day's residual variance;
//!    p10 and p90 are ±1.2816 standard deviations (normal quantiles).
//! 5. **Daily cycle.** The median ratio of each hour's mean to its day's mean over the hourly
//!    window, so a forecast hour is trend × weekly cycle × hour. The day's mean is taken as
//!    its level at noon and moved by the trend's growth and the weekly cycle for each hour,
//!    so neither a fast trend nor the week's rise is learnt as a cycle of every day.
//! 6. **Crossing.** The first hour whose p90 value reaches the threshold is the p10 time, the
//!    first whose p50 does is the p50 time, the first whose p10 does is the p90 time. Each
//!    hour's value stands for its middle, and the instant is where the line between the
//!    middles of that hour and the one before reaches the threshold.
//!
//! 7. **Units per node.** A resource each node allocates in whole units for its part of a
//!    smoother use (the AWS VPC CNI attaches an ENI for every so many pod addresses on a
//!    node, plus a warm one) stays flat for weeks and then steps when a node needs another
//!    unit, which no trend through the cell's sum foresees. Its model forecasts the use
//!    instead (summed over the cell's nodes), spreads it over the nodes as it was spread
//!    over the hourly window, and counts the units each node needs ([`NodeUnits`]); a
//!    threshold of units is reached when the use reaches the least total that needs that
//!    many.
//!
//! Counters must be turned into rates in the query (`rate()` handles their resets); gaps are
//! simply missing days and hours.

use serde::Serialize;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The standard normal's 90% quantile.
const Z90: f64 = 1.281_551_565_5;

/// The shape of a trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendKind {
    Linear,
    Exponential,
    /// Growth that slows towards a ceiling: `capacity / (1 + e^-(a + b·x))`.
    Logistic,
}

impl TrendKind {
    pub fn name(self) -> &'static str {
        match self {
            TrendKind::Linear => "linear",
            TrendKind::Exponential => "exponential",
            TrendKind::Logistic => "logistic",
        }
    }
}

/// A weighted least-squares line `a + b·x` (x in days since the model's origin), in the
/// value's scale (linear), its logarithm (exponential) or its logit against a capacity
/// (logistic), with what its variance needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fit {
    kind: TrendKind,
    /// The ceiling of a logistic trend (0 for the other shapes).
    capacity: f64,
    a: f64,
    b: f64,
    x_mean: f64,
    /// Variance of the fitted mean at `x_mean + d` is `sigma2 * inflation * (c0 + 2 c1 d + c2 d²)`.
    c0: f64,
    c1: f64,
    c2: f64,
    sigma2: f64,
    inflation: f64,
}

/// Ceilings a logistic trend is tried with, as multiples of the highest value seen: from
/// just above it to fifty times it, evenly on a log scale (4% apart). Fifty, because a
/// curve long before its midpoint (a cell at a tenth of its eventual size) bends too little
/// for a lower ceiling to follow, and is then taken for an exponential that overshoots.
const LOGISTIC_CAPACITIES: usize = 100;
const LOGISTIC_MAX_CAPACITY: f64 = 50.0;

impl Fit {
    fn new(kind: TrendKind, points: &[(f64, f64)], half_life_days: f64) -> Option<Fit> {
        match kind {
            TrendKind::Logistic => Fit::logistic(points, half_life_days),
            _ => Fit::line(
                kind,
                0.0,
                points,
                &recency_weights(points.iter().map(|p| p.0), half_life_days),
            ),
        }
    }

    /// The growing logistic trend whose ceiling gives the smallest weighted squared error in
    /// the value's scale, the ceiling searched on a grid (for a given ceiling the logit is a
    /// line in time).
    fn logistic(points: &[(f64, f64)], half_life_days: f64) -> Option<Fit> {
        let highest = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        if highest <= 0.0 {
            return None;
        }
        let w = recency_weights(points.iter().map(|p| p.0), half_life_days);
        let lowest = 1.02f64.ln();
        let step = (LOGISTIC_MAX_CAPACITY.ln() - lowest) / (LOGISTIC_CAPACITIES - 1) as f64;
        (0..LOGISTIC_CAPACITIES)
            .filter_map(|i| {
                let capacity = highest * (lowest + step * i as f64).exp();
                let fit =
                    Fit::line(TrendKind::Logistic, capacity, points, &w).filter(|f| f.b > 0.0)?;
                let error: f64 = points
                    .iter()
                    .zip(&w)
                    .map(|(p, w)| w * (fit.at(p.0, 0.0) - p.1).powi(2))
                    .sum();
                Some((fit, error))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(fit, _)| fit)
    }

    /// The value `y` in the scale the line is fitted in.
    fn transform(kind: TrendKind, capacity: f64, y: f64) -> Option<f64> {
        match kind {
            TrendKind::Linear => Some(y),
            TrendKind::Exponential => (y > 0.0).then(|| y.ln()),
            TrendKind::Logistic => (y > 0.0 && y < capacity).then(|| (y / (capacity - y)).ln()),
        }
    }

    /// The value of the line's `v` in the value's scale.
    fn value(&self, v: f64) -> f64 {
        match self.kind {
            TrendKind::Linear => v,
            TrendKind::Exponential => v.exp(),
            TrendKind::Logistic => self.capacity / (1.0 + (-v).exp()),
        }
    }

    /// Weighted least squares of the points (with weights `w`) in the scale of `kind`.
    fn line(kind: TrendKind, capacity: f64, points: &[(f64, f64)], w: &[f64]) -> Option<Fit> {
        if points.len() < 3 {
            return None;
        }
        let ys: Vec<f64> = points
            .iter()
            .map(|p| Fit::transform(kind, capacity, p.1))
            .collect::<Option<_>>()?;
        let sw: f64 = w.iter().sum();
        let x_mean = points.iter().zip(w).map(|(p, w)| w * p.0).sum::<f64>() / sw;
        let y_mean = ys.iter().zip(w).map(|(y, w)| w * y).sum::<f64>() / sw;
        let sxx: f64 = points
            .iter()
            .zip(w)
            .map(|(p, w)| w * (p.0 - x_mean).powi(2))
            .sum();
        // Points at one instant (several steps of a count at once) give no slope, though
        // rounding in their mean may leave a tiny spread.
        if sxx <= 0.0 || points.iter().all(|p| p.0 == points[0].0) {
            return None;
        }
        let sxy: f64 = points
            .iter()
            .zip(&ys)
            .zip(w)
            .map(|((p, y), w)| w * (p.0 - x_mean) * (y - y_mean))
            .sum();
        let b = sxy / sxx;
        let a = y_mean - b * x_mean;
        let residuals: Vec<f64> = points
            .iter()
            .zip(&ys)
            .map(|(p, y)| y - (a + b * p.0))
            .collect();
        let sw2: f64 = w.iter().map(|w| w * w).sum();
        let n_eff = sw * sw / sw2;
        let sigma2 = residuals.iter().zip(w).map(|(r, w)| w * r * r).sum::<f64>() / sw * n_eff
            / (n_eff - 2.0).max(1.0);
        let (mut c0, mut c1, mut c2) = (0.0, 0.0, 0.0);
        for (p, w) in points.iter().zip(w) {
            let dx = p.0 - x_mean;
            c0 += w * w / (sw * sw);
            c1 += w * w * dx / (sw * sxx);
            c2 += w * w * dx * dx / (sxx * sxx);
        }
        Some(Fit {
            kind,
            capacity,
            a,
            b,
            x_mean,
            c0,
            c1,
            c2,
            sigma2,
            inflation: autocorrelation_inflation(&residuals),
        })
    }

    /// The trend's quantile at `x` days: `z` standard deviations from its mean.
    fn at(&self, x: f64, z: f64) -> f64 {
        let d = x - self.x_mean;
        let var =
            self.sigma2 * (self.inflation * (self.c0 + 2.0 * self.c1 * d + self.c2 * d * d) + 1.0);
        self.value(self.a + self.b * x + z * var.max(0.0).sqrt())
    }

    /// Widens the residual variance to at least that of rounding to whole numbers (1/12),
    /// for a trend fitted through a count's steps, which lie exactly on a smooth curve when
    /// the count is a rounded one.
    fn at_least_rounding_variance(&mut self) {
        let rounding = 1.0 / 12.0;
        let y = self.value(self.a + self.b * self.x_mean);
        // Rounding's variance in the fitted scale: times the square of its derivative at the
        // typical value.
        let floor = match self.kind {
            TrendKind::Linear => rounding,
            TrendKind::Exponential => rounding / (y * y),
            TrendKind::Logistic => rounding * (self.capacity / (y * (self.capacity - y))).powi(2),
        };
        self.sigma2 = self.sigma2.max(floor);
    }

    /// Growth per day at `x`, in the value's unit.
    fn slope(&self, x: f64) -> f64 {
        let v = self.a + self.b * x;
        match self.kind {
            TrendKind::Linear => self.b,
            TrendKind::Exponential => self.b * v.exp(),
            TrendKind::Logistic => {
                let e = (-v).exp();
                self.capacity * self.b * e / (1.0 + e).powi(2)
            }
        }
    }
}

/// Weights of points at days `xs` for a fit: halving every `half_life` days before the last.
fn recency_weights(xs: impl Iterator<Item = f64> + Clone, half_life: f64) -> Vec<f64> {
    let last = xs.clone().fold(f64::MIN, f64::max);
    xs.map(|x| 0.5f64.powf((last - x) / half_life)).collect()
}

/// How much autocorrelated residuals shrink the information in a fit: `(1+ρ)/(1−ρ)` for the
/// lag-1 autocorrelation ρ, between 1 and 25.
fn autocorrelation_inflation(residuals: &[f64]) -> f64 {
    let n = residuals.len();
    let var: f64 = residuals.iter().map(|r| r * r).sum();
    if n < 3 || var <= 0.0 {
        return 1.0;
    }
    let cov: f64 = residuals.windows(2).map(|w| w[0] * w[1]).sum();
    let rho = (cov / var).clamp(0.0, 0.92);
    ((1.0 + rho) / (1.0 - rho)).clamp(1.0, 25.0)
}

/// What a forecast needs: daily means (timestamp = the end of the day they cover) and hourly
/// means (timestamp = the end of the hour), both in time order, and the forecast's "now".
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub daily: &'a [(i64, f64)],
    pub hourly: &'a [(i64, f64)],
    pub now_ms: i64,
    pub min_history_days: u32,
    /// Another resource of the same cell this one may follow (see [`Follows`]).
    pub driver: Option<Driver<'a>>,
}

/// A resource another one follows: its daily means and its forecast.
#[derive(Debug, Clone, Copy)]
pub struct Driver<'a> {
    pub daily: &'a [(i64, f64)],
    pub model: &'a Model,
}

/// A resource that follows a driver (a cell's pods and requests follow the hosted control
/// planes it carries): `per_driver ×` the driver's forecast plus a trend of the rest. A
/// count driver's forecast is taken whole, so the resource steps when the driver does.
#[derive(Debug, Clone, PartialEq)]
pub struct Follows {
    driver: Box<Model>,
    pub per_driver: f64,
    /// The rest: the resource less `per_driver × driver`, in the follower's days.
    rest: Fit,
    /// The rest's growth per day at the end of the history.
    pub per_day: f64,
    /// Residual standard deviation.
    sigma: f64,
    /// How far the days since the driver's last step stand from the fit, when that is more
    /// than chance: a cluster far bigger or smaller than the usual one just onboarded.
    level: f64,
    clock: Clock,
}

/// Why a resource has no forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TooLittleHistory {
    /// Usable days (since the last change point, if any).
    pub days: f64,
    pub needed_days: u32,
    pub change_point_ms: Option<i64>,
}

/// A fitted forecast of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Start of the days the model was fitted on (after the last change point).
    pub origin_ms: i64,
    pub change_point_ms: Option<i64>,
    pub days_used: usize,
    primary: Fit,
    /// The other fits the band spans: the other trend shape, and both shapes fitted on the
    /// most recent weeks only.
    alternatives: Vec<Fit>,
    weekly: Weekly,
    profile: [f64; 24],
    /// Whether hourly means gave the daily cycle (else the forecast is of daily means).
    pub has_daily_cycle: bool,
    /// Whether the resource is a count (whole numbers, such as hosted control planes): its
    /// trend runs through the middle of each step, so it reaches a whole number n when the
    /// trend reaches n − 0.5.
    pub counts: bool,
    /// The driver the forecast follows, when the driver explains the history.
    pub follows: Option<Follows>,
    /// For a resource allocated per node: the model is of the use, and this counts its units.
    pub units: Option<NodeUnits>,
    pub now_ms: i64,
}

/// One node of a resource allocated per node in whole units: its use now, the use one unit
/// holds, and the most units it can have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    pub used: f64,
    pub holds: f64,
    pub max: f64,
}

/// How many units a cell's nodes hold for a total use spread over them as it was over the
/// hourly window: each node holds `min(ceil(use / holds) + warm, max)`, the AWS VPC CNI's
/// rule for ENIs with `WARM_ENI_TARGET` = `warm`. The use is of whole things (addresses), so
/// a node's share of a forecast is rounded: a node needs another unit at `k × holds + 1`,
/// which a smooth forecast of a count reaches at `k × holds + 0.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUnits {
    /// Each node's (share of the use, use one unit holds, most units).
    nodes: Vec<(f64, f64, f64)>,
    warm: f64,
}

/// Bisection steps when looking for the least use that needs a number of units: the
/// interval shrinks to 2⁻⁶⁰ of the use at which every node is full.
const USE_FOR_STEPS: usize = 60;

impl NodeUnits {
    /// `None` when the nodes use nothing between them, or a node's terms are not numbers a
    /// unit count can come from.
    pub fn new(nodes: &[Node], warm: f64) -> Option<Self> {
        let total: f64 = nodes.iter().map(|n| n.used).sum();
        let valid = |n: &Node| n.used >= 0.0 && n.holds > 0.0 && n.max >= 0.0 && n.max.is_finite();
        if !(total > 0.0 && total.is_finite() && warm >= 0.0 && nodes.iter().all(valid)) {
            return None;
        }
        Some(Self {
            nodes: nodes
                .iter()
                .map(|n| (n.used / total, n.holds, n.max))
                .collect(),
            warm,
        })
    }

    /// Units the nodes hold when they use `total` between them.
    pub fn units(&self, total: f64) -> f64 {
        let total = total.max(0.0);
        self.nodes
            .iter()
            .map(|&(share, holds, max)| {
                (((total * share).round() / holds).ceil() + self.warm).min(max)
            })
            .sum()
    }

    /// The least total use at which the nodes hold `units`; `None` when they cannot, full.
    fn use_for(&self, units: f64) -> Option<f64> {
        if self.units(0.0) >= units {
            return Some(0.0);
        }
        let full = self
            .nodes
            .iter()
            .filter(|n| n.0 > 0.0)
            .map(|&(share, holds, max)| max * holds / share)
            .fold(0.0, f64::max);
        if self.units(full) < units {
            return None;
        }
        let (mut lo, mut hi) = (0.0, full);
        for _ in 0..USE_FOR_STEPS {
            let mid = (lo + hi) / 2.0;
            if self.units(mid) >= units {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// Units per use at `total`, on average: each node that is not full adds one for every
    /// `holds` of its share.
    fn per_use(&self, total: f64) -> f64 {
        self.nodes
            .iter()
            .filter(|&&(share, holds, max)| {
                ((total * share).round() / holds).ceil() + self.warm < max
            })
            .map(|&(share, holds, _)| share / holds)
            .sum()
    }
}

/// Time to a threshold: instants (ms) of the p10, p50 and p90 crossings, `None` when not
/// within the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Crossing {
    pub p10_ms: Option<i64>,
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
}

/// One forecast hour with its band, for charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BandPoint {
    pub t_ms: i64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

/// Fits a model, or says why there is too little history.
pub fn fit(input: Input<'_>) -> Result<Model, TooLittleHistory> {
    let daily: Vec<(i64, f64)> = input
        .daily
        .iter()
        .copied()
        .filter(|(t, v)| v.is_finite() && *t <= input.now_ms + DAY_MS)
        .collect();
    let counts = is_count(input.hourly);
    let change = if counts {
        count_jump(&daily).unwrap_or_else(|| change_point(&daily))
    } else {
        change_point(&daily)
    };
    let used: Vec<(i64, f64)> = daily
        .iter()
        .copied()
        .filter(|(t, _)| change.is_none_or(|c| day_of(*t) > day_of_ms(c)))
        .collect();
    let too_little = |days: f64| TooLittleHistory {
        days,
        needed_days: input.min_history_days,
        change_point_ms: change,
    };
    let (Some(first), Some(last)) = (used.first(), used.last()) else {
        return Err(too_little(0.0));
    };
    let span_days = (last.0 - first.0) as f64 / DAY_MS as f64 + 1.0;
    if used.len() < input.min_history_days as usize || span_days < f64::from(input.min_history_days)
    {
        return Err(too_little(used.len() as f64));
    }
    let origin_ms = first.0 - DAY_MS;
    let x = |t: i64| ((t - DAY_MS / 2) - origin_ms) as f64 / DAY_MS as f64;
    let points: Vec<(f64, f64)> = used.iter().map(|&(t, v)| (x(t), v)).collect();
    let half_life = (span_days / 2.0).max(14.0);
    // A count that changes on few days has no weekly or daily cycle, however few its steps.
    let changes = if counts { steps(&used) } else { Vec::new() };
    let stepped = step_trend(&changes, origin_ms, half_life);
    let (primary, alternatives, weekly, profile, has_daily_cycle, follows) = match stepped {
        Some((primary, alternatives)) => {
            (primary, alternatives, Weekly::FLAT, [1.0; 24], false, None)
        }
        None => {
            // Fitted through the daily means; a count here has too few steps to fit through,
            // and no cycles.
            let cycles = changes.is_empty();
            let weekly = if cycles {
                Weekly::new(weekly_factors(&used, &points, half_life))
            } else {
                Weekly::FLAT
            };
            // A weekday with (almost) no use says nothing of the trend the weekly cycle
            // scales, and dividing by its factor would leave no number, or a wild one.
            let factor = |t: i64| weekly.of_day(day_of(t));
            let seasonal: Vec<(i64, f64)> = used
                .iter()
                .copied()
                .filter(|p| factor(p.0) >= QUIET_WEEKDAY)
                .collect();
            let adjusted: Vec<(f64, f64)> = seasonal
                .iter()
                .map(|&(t, v)| (x(t), v / factor(t)))
                .collect();
            let (primary, alternatives) = choose_trend(&adjusted, half_life, Judge::HeldOut)
                .ok_or_else(|| too_little(used.len() as f64))?;
            let growth = |t: i64| primary.slope((t - origin_ms) as f64 / DAY_MS as f64);
            let (profile, has_daily_cycle) = if cycles {
                daily_profile(input.hourly, change, &weekly, growth)
            } else {
                ([1.0; 24], false)
            };
            let follows = input
                .driver
                .and_then(|d| follow(&seasonal, &adjusted, d, half_life));
            (
                primary,
                alternatives,
                weekly,
                profile,
                has_daily_cycle,
                follows,
            )
        }
    };
    Ok(Model {
        origin_ms,
        change_point_ms: change,
        days_used: used.len(),
        primary,
        alternatives,
        weekly,
        profile,
        has_daily_cycle,
        counts,
        follows,
        units: None,
        now_ms: input.now_ms,
    })
}

/// Weekly factor below which a weekday's days are left out of the trend fit: dividing by it
/// would multiply their noise more than twentyfold.
const QUIET_WEEKDAY: f64 = 0.05;

/// How much of what a time trend leaves unexplained the driver must explain to be followed.
const DRIVER_EXPLAINS: f64 = 0.5;

/// Fits `adjusted` (weekday-adjusted daily means, at the days of `used`) as `base +
/// per_driver × driver + per_clock × clock` by weighted least squares, if the driver explains
/// at least [`DRIVER_EXPLAINS`] of the squared error a line in the clock leaves; then fits the
/// rest (`adjusted − per_driver × driver`) against the clock with [`choose_trend`]. The clock
/// is days or driver-days (see [`Clock`]).
fn follow(
    used: &[(i64, f64)],
    adjusted: &[(f64, f64)],
    driver: Driver<'_>,
    half_life: f64,
) -> Option<Follows> {
    let by_day: std::collections::BTreeMap<i64, f64> = driver
        .daily
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(t, v)| (day_of(t), v))
        .collect();
    // (x, driver, value)
    let rows: Vec<(f64, f64, f64)> = used
        .iter()
        .zip(adjusted)
        .filter_map(|(&(t, _), &(x, v))| by_day.get(&day_of(t)).map(|&d| (x, d, v)))
        .collect();
    if rows.len() < 8 {
        return None;
    }
    let w = recency_weights(rows.iter().map(|r| r.0), half_life);
    // Of days and driver-days, the clock less collinear with the driver: with it, the fit
    // best tells what each of the driver's units brings from the growth of those already
    // there. A driver that grows by the same each day is a line in days; one that grows by
    // the same share each day, a line in its driver-days.
    let (last_x, last_driver) = rows.last().map(|r| (r.0, r.1))?;
    let by_driver_days = (last_driver > 0.0).then(|| {
        let timed = driver_days(&rows, last_driver);
        let clock = Clock::DriverDays {
            last_x,
            last: timed.last().map_or(0.0, |r| r.0),
            driver: last_driver,
        };
        (clock, timed)
    });
    let (clock, timed, fit) = std::iter::once((Clock::Days, rows.clone()))
        .chain(by_driver_days)
        .filter_map(|(clock, timed)| Regression::new(&timed, &w).map(|f| (clock, timed, f)))
        .min_by(|a, b| a.2.collinear.total_cmp(&b.2.collinear))?;
    if fit.error > (1.0 - DRIVER_EXPLAINS) * fit.line_error {
        return None;
    }
    let sw: f64 = w.iter().sum();
    let n_eff = sw * sw / w.iter().map(|w| w * w).sum::<f64>();
    let rest: Vec<(f64, f64)> = timed
        .iter()
        .map(|r| (r.0, r.2 - fit.per_driver * r.1))
        .collect();
    let (rest_fit, _) = choose_trend(&rest, half_life, Judge::HeldOut)?;
    let last = timed.last().map_or(0.0, |r| r.0);
    let sigma = (fit.error / sw * n_eff / (n_eff - 3.0).max(1.0)).sqrt();
    let residuals: Vec<f64> = rest.iter().map(|&(c, v)| v - rest_fit.at(c, 0.0)).collect();
    Some(Follows {
        driver: Box::new(driver.model.clone()),
        per_driver: fit.per_driver,
        rest: rest_fit,
        per_day: rest_fit.slope(last),
        sigma,
        level: since_last_step(&rows, &residuals, sigma),
        clock,
    })
}

/// What the rest of a follower (the resource less `per_driver ×` its driver) grows with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clock {
    /// Days: the rest grows with time alone.
    Days,
    /// Days weighted by the driver, counted in days at the driver's last value: each of the
    /// clusters a cell hosts grows, so the rest grows faster as clusters are added.
    DriverDays {
        /// The follower's last day of history, and its driver-days then.
        last_x: f64,
        last: f64,
        /// The driver's last value.
        driver: f64,
    },
}

impl Clock {
    /// The clock at `x` days of the follower's model, when the driver is `then` there (the
    /// driver taken to move in a straight line from its last value).
    fn at(&self, x: f64, then: f64) -> f64 {
        match *self {
            Clock::Days => x,
            Clock::DriverDays {
                last_x,
                last,
                driver,
            } => last + (x - last_x).max(0.0) * (driver + then) / 2.0 / driver,
        }
    }
}

/// Rows of (x, driver, value) with x replaced by the driver's integral from the first row
/// (trapezoids between rows), in days at `per` of the driver.
fn driver_days(rows: &[(f64, f64, f64)], per: f64) -> Vec<(f64, f64, f64)> {
    let mut total = 0.0;
    let mut before: Option<(f64, f64)> = None;
    rows.iter()
        .map(|&(x, d, v)| {
            if let Some((bx, bd)) = before {
                total += (x - bx) * (d + bd) / 2.0 / per;
            }
            before = Some((x, d));
            (total, d, v)
        })
        .collect()
}

/// A weighted least-squares fit of `value = base + per_driver × driver + per_clock × clock`
/// to rows of (clock, driver, value).
struct Regression {
    per_driver: f64,
    /// Weighted squared error of the fit, and of a line in the clock alone.
    error: f64,
    line_error: f64,
    /// The squared weighted correlation of the clock and the driver.
    collinear: f64,
}

impl Regression {
    fn new(rows: &[(f64, f64, f64)], w: &[f64]) -> Option<Regression> {
        let sw: f64 = w.iter().sum();
        let moment = |f: &dyn Fn(&(f64, f64, f64)) -> f64| {
            rows.iter().zip(w).map(|(r, w)| w * f(r)).sum::<f64>()
        };
        let (mx, md, my) = (
            moment(&|r| r.0) / sw,
            moment(&|r| r.1) / sw,
            moment(&|r| r.2) / sw,
        );
        let sxx = moment(&|r| (r.0 - mx).powi(2));
        let sdd = moment(&|r| (r.1 - md).powi(2));
        let sxd = moment(&|r| (r.0 - mx) * (r.1 - md));
        let sxy = moment(&|r| (r.0 - mx) * (r.2 - my));
        let sdy = moment(&|r| (r.1 - md) * (r.2 - my));
        let syy = moment(&|r| (r.2 - my).powi(2));
        let det = sxx * sdd - sxd * sxd;
        if sxx <= 0.0 || det <= 1e-9 * sxx * sdd {
            return None;
        }
        let per_clock = (sxy * sdd - sdy * sxd) / det;
        let per_driver = (sdy * sxx - sxy * sxd) / det;
        Some(Regression {
            per_driver,
            error: (syy - per_clock * sxy - per_driver * sdy).max(0.0),
            line_error: syy - sxy * sxy / sxx,
            collinear: sxd * sxd / (sxx * sdd),
        })
    }
}

/// Most days since the driver's last step that the level moves to, and fewest before it that
/// it is compared with.
const STEP_DAYS: usize = 14;

/// How many residual standard deviations the days since the driver's last step must stand
/// from the days before it for the level to move.
const STEP_SURPRISE: f64 = 3.0;

/// The mean residual of the whole days since the driver last changed, less that of the
/// [`STEP_DAYS`] before its last change, when the difference is beyond [`STEP_SURPRISE`]
/// standard errors; else 0. The fit spreads a step bigger than the usual one over the
/// whole history; the days since show the level it left.
fn since_last_step(rows: &[(f64, f64, f64)], residuals: &[f64], sigma: f64) -> f64 {
    let Some(now) = rows.last().map(|r| r.1) else {
        return 0.0;
    };
    let after = rows.iter().rev().take_while(|r| r.1 == now).count();
    // The day of the step is part old level, part new, and is left out.
    let Some(before_end) = rows.len().checked_sub(after + 1) else {
        return 0.0;
    };
    if after > STEP_DAYS || before_end < STEP_DAYS {
        return 0.0;
    }
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let after_mean = mean(&residuals[rows.len() - after..]);
    let before_mean = mean(&residuals[before_end - STEP_DAYS..before_end]);
    let difference = after_mean - before_mean;
    let error = sigma * (1.0 / after as f64 + 1.0 / STEP_DAYS as f64).sqrt();
    if difference.abs() > STEP_SURPRISE * error {
        difference
    } else {
        0.0
    }
}

impl Model {
    pub fn trend(&self) -> TrendKind {
        self.primary.kind
    }

    fn x(&self, t_ms: i64) -> f64 {
        (t_ms - self.origin_ms) as f64 / DAY_MS as f64
    }

    /// The model of a resource allocated per node: this model (of the use) counted in units.
    pub fn in_units(self, units: NodeUnits) -> Self {
        Self {
            units: Some(units),
            ..self
        }
    }

    /// Growth of the trend per day at the forecast's "now", in the value's unit (units, for
    /// a resource allocated per node).
    pub fn growth_per_day(&self) -> f64 {
        let trend = match &self.follows {
            Some(f) => f.per_driver * f.driver.growth_per_day() + f.per_day,
            None => self.primary.slope(self.x(self.now_ms)),
        };
        trend * self.weekly.mean() * self.units_per_use()
    }

    /// Units per use where the forecast starts (1 for a resource not allocated per node).
    pub fn units_per_use(&self) -> f64 {
        self.units
            .as_ref()
            .map_or(1.0, |u| u.per_use(self.use_band(self.now_ms).p50))
    }

    /// The band of the hour starting at `t_ms`, in units for a resource allocated per node.
    pub fn band(&self, t_ms: i64) -> BandPoint {
        let b = self.use_band(t_ms);
        match &self.units {
            Some(u) => BandPoint {
                t_ms,
                p10: u.units(b.p10),
                p50: u.units(b.p50),
                p90: u.units(b.p90),
            },
            None => b,
        }
    }

    /// The band of the hour starting at `t_ms`, of the use for a resource allocated per node.
    fn use_band(&self, t_ms: i64) -> BandPoint {
        let x = self.x(t_ms + HOUR_MS / 2);
        let season = self.weekly.at(t_ms + HOUR_MS / 2)
            * self.profile[(t_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize];
        let (p50, lo, hi) = match &self.follows {
            Some(f) => f.band(t_ms, x),
            None => {
                let (mut lo, mut hi) = (self.primary.at(x, -Z90), self.primary.at(x, Z90));
                for alt in &self.alternatives {
                    let other = alt.at(x, 0.0);
                    lo = lo.min(other);
                    hi = hi.max(other);
                }
                (self.primary.at(x, 0.0), lo, hi)
            }
        };
        BandPoint {
            t_ms,
            p10: lo * season,
            p50: p50 * season,
            p90: hi * season,
        }
    }

    /// The band every `step_ms` from the hour after "now" for `days`.
    pub fn bands(&self, days: u32, step_ms: i64) -> Vec<BandPoint> {
        let start = self.now_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let end = start + i64::from(days) * DAY_MS;
        (0..)
            .map(|i| start + i * step_ms)
            .take_while(|t| *t < end)
            .map(|t| self.band(t))
            .collect()
    }

    /// When the forecast reaches `threshold`, searched hour by hour up to `horizon_days`
    /// ahead. Each hour's band stands for the middle of the hour; a crossing is put between
    /// the middles of the hour before and the hour that reaches the threshold, where the line
    /// joining them does (never before "now": a threshold already reached is reached now).
    /// A threshold of units allocated per node is reached when the use reaches the least total
    /// that needs that many.
    pub fn crossing(&self, threshold: f64, horizon_days: u32) -> Crossing {
        let mut c = Crossing {
            p10_ms: None,
            p50_ms: None,
            p90_ms: None,
        };
        let threshold = match &self.units {
            Some(u) => match u.use_for(threshold) {
                Some(used) => used,
                None => return c,
            },
            None => threshold,
        };
        let threshold = if self.counts {
            threshold.ceil() - 0.5
        } else {
            threshold
        };
        let start = self.now_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let hours = i64::from(horizon_days) * 24;
        let mut before = self.use_band(start - HOUR_MS);
        for h in 0..hours {
            let t = start + h * HOUR_MS;
            let b = self.use_band(t);
            let at = |v0: f64, v1: f64| {
                // v1 reaches the threshold, so v1 > v0 unless v0 already did.
                let f = if v0 >= threshold {
                    0.0
                } else {
                    ((threshold - v0) / (v1 - v0)).clamp(0.0, 1.0)
                };
                (t - HOUR_MS / 2 + (f * HOUR_MS as f64).round() as i64).max(self.now_ms)
            };
            if c.p10_ms.is_none() && b.p90 >= threshold {
                c.p10_ms = Some(at(before.p90, b.p90));
            }
            if c.p50_ms.is_none() && b.p50 >= threshold {
                c.p50_ms = Some(at(before.p50, b.p50));
            }
            if b.p10 >= threshold {
                c.p90_ms = Some(at(before.p10, b.p10));
                break;
            }
            before = b;
        }
        c
    }
}

impl Follows {
    /// The trend's p50, p10 and p90 at `x` days of the follower's model, for the hour
    /// starting at `t_ms`: the driver's band (whole, for a count), mapped through the fit,
    /// widened by the fit's residuals.
    fn band(&self, t_ms: i64, x: f64) -> (f64, f64, f64) {
        let d = self.driver.band(t_ms);
        let whole = |v: f64| if self.driver.counts { v.round() } else { v };
        let level = |v: f64| {
            let v = whole(v);
            self.per_driver * v + self.rest.at(self.clock.at(x, v), 0.0) + self.level
        };
        let (a, b) = (level(d.p10), level(d.p90));
        (
            level(d.p50),
            a.min(b) - Z90 * self.sigma,
            a.max(b) + Z90 * self.sigma,
        )
    }
}

/// Day number since the epoch of the day a daily mean stamped `t` covers.
fn day_of(t: i64) -> i64 {
    (t - 1).div_euclid(DAY_MS)
}

fn day_of_ms(t: i64) -> i64 {
    t.div_euclid(DAY_MS)
}

fn weekday(day: i64) -> usize {
    day.rem_euclid(7) as usize
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Most changes of a count in one day that are still growth, not a level shift.
const COUNT_JUMP: usize = 3;

/// The level shift of a count that changes on few days (see [`steps`]): the start of the last
/// day it moved by more than [`COUNT_JUMP`] at once (a large tenant onboarding several
/// clusters), `Some(None)` if it never did. `None` for a count with no steps to go by, whose
/// shifts [`change_point`] finds. A busy week of growth is not a shift, though its weekly
/// difference may be twice the usual one.
fn count_jump(daily: &[(i64, f64)]) -> Option<Option<i64>> {
    let steps = steps(daily);
    if steps.is_empty() {
        return None;
    }
    let mut jumps: Vec<(i64, usize)> = Vec::new();
    for &(at, _) in &steps {
        match jumps.last_mut() {
            Some(j) if j.0 == at => j.1 += 1,
            _ => jumps.push((at, 1)),
        }
    }
    Some(
        jumps
            .iter()
            .rev()
            .find(|j| j.1 > COUNT_JUMP)
            .map(|j| j.0.div_euclid(DAY_MS) * DAY_MS),
    )
}

/// The start (ms) of the day of the last level shift in daily means, if any.
pub fn change_point(daily: &[(i64, f64)]) -> Option<i64> {
    let by_day: std::collections::BTreeMap<i64, f64> =
        daily.iter().map(|&(t, v)| (day_of(t), v)).collect();
    let diffs: Vec<(i64, f64)> = by_day
        .iter()
        .filter_map(|(&d, &v)| by_day.get(&(d - 7)).map(|&w| (d, v - w)))
        .collect();
    if diffs.len() < 7 {
        return None;
    }
    let mut values: Vec<f64> = diffs.iter().map(|d| d.1).collect();
    let center = median(&mut values);
    let mut deviations: Vec<f64> = diffs.iter().map(|d| (d.1 - center).abs()).collect();
    let sigma = 1.4826 * median(&mut deviations);
    let mut levels: Vec<f64> = by_day.values().map(|v| v.abs()).collect();
    let level = median(&mut levels);
    let threshold = (5.0 * sigma).max(0.08 * level).max(f64::MIN_POSITIVE);
    let last_day = *by_day.keys().next_back()?;
    // Runs of consecutive flagged days with one sign: (first day, last day, count).
    let mut runs: Vec<(i64, i64, usize, f64)> = Vec::new();
    for &(d, v) in &diffs {
        let dev = v - center;
        // Differences of whole numbers can sit exactly on a threshold made of them.
        if dev.abs() <= threshold * (1.0 + 1e-9) {
            continue;
        }
        match runs.last_mut() {
            Some(run) if d - run.1 <= 2 && run.3.signum() == dev.signum() => {
                run.1 = d;
                run.2 += 1;
            }
            _ => runs.push((d, d, 1, dev)),
        }
    }
    runs.iter()
        .rev()
        .find(|run| run.2 >= 4 || (run.2 >= 2 && run.1 == last_day))
        .map(|run| run.0 * DAY_MS)
}

/// Multiplicative weekday factors (mean 1) from three weeks or more, else all 1: each
/// weekday's median ratio to a first linear fit.
fn weekly_factors(used: &[(i64, f64)], points: &[(f64, f64)], half_life: f64) -> [f64; 7] {
    let mut factors = [1.0; 7];
    let span = points.last().map_or(0.0, |p| p.0) - points.first().map_or(0.0, |p| p.0);
    if span < 20.0 {
        return factors;
    }
    let Some(line) = Fit::new(TrendKind::Linear, points, half_life) else {
        return factors;
    };
    // Where the line runs near zero (a resource that started from almost nothing) its ratios
    // are meaningless, and one of them would swamp a weekday's factor: those days are left
    // out, and each weekday takes the median of its ratios.
    let mut levels: Vec<f64> = points.iter().map(|p| p.1.abs()).collect();
    let floor = 0.25 * median(&mut levels);
    let mut ratios: [Vec<f64>; 7] = Default::default();
    for (&(t, _), &(x, v)) in used.iter().zip(points) {
        let fitted = line.at(x, 0.0);
        if fitted > floor && fitted > 0.0 {
            ratios[weekday(day_of(t))].push(v / fitted);
        }
    }
    if ratios.iter().any(|r| r.len() < 2) {
        return factors;
    }
    for (f, r) in factors.iter_mut().zip(ratios.iter_mut()) {
        *f = median(r);
    }
    let mean = factors.iter().sum::<f64>() / 7.0;
    factors.iter_mut().for_each(|f| *f /= mean);
    factors
}

/// Share of the weekday factors' spread the week's fundamental wave must explain before
/// [`Weekly`] moves the hours of a day with it: a smooth rise and fall through the week,
/// not a step between workdays and a quiet weekend, which one wave would turn into a sawtooth
/// overshooting at each midnight.
const WEEKLY_WAVE_SHARE: f64 = 0.9;

/// The weekly cycle: a factor per weekday (mean 1), and the week's fundamental wave through
/// them when the factors follow it, which moves the hours of each day.
///
/// The wave is the first term of the discrete Fourier transform of the seven factors (each
/// day's at its noon). A day's mean of it is its value at noon times sinc(1/7), so the wave
/// divided by that, less its value at the day's noon, moves the hours of the day and keeps
/// the day's mean. A weekly cycle that rises through Monday and falls through Friday has
/// Monday evening above Monday's mean, and the week's highest hour, where a threshold is
/// first reached, above what one factor for the whole day gives. The faster terms are left
/// out: they carry more of the factors' noise, amplified by up to 1/sinc(3/7) = 1.37.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Weekly {
    factors: [f64; 7],
    /// The wave's cosine and sine sums, when it explains [`WEEKLY_WAVE_SHARE`] of the spread.
    wave: Option<(f64, f64)>,
}

impl Weekly {
    const FLAT: Weekly = Weekly {
        factors: [1.0; 7],
        wave: None,
    };

    fn new(factors: [f64; 7]) -> Self {
        use std::f64::consts::TAU;
        let mean = factors.iter().sum::<f64>() / 7.0;
        let spread: f64 = factors.iter().map(|f| (f - mean).powi(2)).sum();
        let (mut a, mut b) = (0.0, 0.0);
        for (j, f) in factors.iter().enumerate() {
            let angle = TAU * (j as f64 + 0.5) / 7.0;
            a += f * angle.cos();
            b += f * angle.sin();
        }
        // The wave's share of the spread: 2/7 (a² + b²) of the sum of squares about the mean.
        let follows = spread > 0.0 && 2.0 / 7.0 * (a * a + b * b) >= WEEKLY_WAVE_SHARE * spread;
        Self {
            factors,
            wave: follows.then_some((a, b)),
        }
    }

    /// The factor of the day that `day` (days since the epoch) is.
    fn of_day(&self, day: i64) -> f64 {
        self.factors[weekday(day)]
    }

    /// The cycle at `t_ms`: the weekday's factor, moved within the day by the wave.
    fn at(&self, t_ms: i64) -> f64 {
        use std::f64::consts::{PI, TAU};
        let day = t_ms.rem_euclid(7 * DAY_MS) as f64 / DAY_MS as f64;
        let weekday = (day.floor() as usize).min(6);
        let factor = self.factors[weekday];
        let Some((a, b)) = self.wave else {
            return factor;
        };
        let wave = |day: f64| {
            let angle = TAU * day / 7.0;
            2.0 / 7.0 * (a * angle.cos() + b * angle.sin())
        };
        let sinc = (PI / 7.0).sin() / (PI / 7.0);
        (factor + wave(day) / sinc - wave(weekday as f64 + 0.5)).max(0.0)
    }

    fn mean(&self) -> f64 {
        self.factors.iter().sum::<f64>() / 7.0
    }
}

/// Days of the most recent history that the band's recent fits are made on.
const RECENT_DAYS: f64 = 28.0;

/// How [`choose_trend`] judges a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// By its forecast of the last third, fitted on the first two thirds: for noisy means.
    HeldOut,
    /// By its distance from every point: for points that lie on the curve (the instants a
    /// rounded count changed), which the right shape passes through and a wrong one bends
    /// away from, while a third of a few steps says little.
    OnCurve,
}

/// Picks the trend shape that [`Judge`] finds closer, refits it on everything, and returns it
/// and the others the band spans: the other shapes, and the linear and exponential ones
/// fitted on the last [`RECENT_DAYS`] when the history is longer (a change in the pace of
/// growth shows there first).
fn choose_trend(points: &[(f64, f64)], half_life: f64, judge: Judge) -> Option<(Fit, Vec<Fit>)> {
    let linear = Fit::new(TrendKind::Linear, points, half_life)?;
    let last = points.last().map_or(0.0, |p| p.0);
    let recent: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 > last - RECENT_DAYS)
        .collect();
    let mut others: Vec<Fit> = if recent.len() + 7 <= points.len() {
        [TrendKind::Linear, TrendKind::Exponential]
            .into_iter()
            .filter_map(|kind| Fit::new(kind, &recent, half_life))
            .collect()
    } else {
        Vec::new()
    };
    let Some(exponential) = Fit::new(TrendKind::Exponential, points, half_life) else {
        return Some((linear, others));
    };
    let cut = (points.len() * 2 / 3).max(3).min(points.len() - 1);
    let (train, test) = points.split_at(cut);
    let distance = |f: &Fit, judged: &[(f64, f64)]| {
        judged
            .iter()
            .map(|&(x, v)| (f.at(x, 0.0) - v).abs())
            .sum::<f64>()
    };
    // On the curve, the shape fitted on every point is judged on every point.
    let error = |kind, whole: &Fit| match judge {
        Judge::HeldOut => {
            Fit::new(kind, train, half_life).map_or(f64::INFINITY, |f| distance(&f, test))
        }
        Judge::OnCurve => distance(whole, points),
    };
    // The exponential must earn its place: it extrapolates faster (and on the curve, where
    // every shape is close, it must halve the line's distance). The logistic must be twice
    // as close as the better of the two: its ceiling is a third parameter, which fits any
    // bend.
    let exponential_factor = match judge {
        Judge::HeldOut => 0.9,
        Judge::OnCurve => 0.5,
    };
    let (linear_error, exponential_error) = (
        error(TrendKind::Linear, &linear),
        error(TrendKind::Exponential, &exponential),
    );
    let (mut chosen, chosen_error) = if exponential_error < exponential_factor * linear_error {
        others.push(linear);
        (exponential, exponential_error)
    } else {
        others.push(exponential);
        (linear, linear_error)
    };
    if let Some(logistic) = Fit::new(TrendKind::Logistic, points, half_life) {
        let logistic_error = error(TrendKind::Logistic, &logistic);
        if logistic_error < 0.5 * chosen_error {
            others.push(chosen);
            chosen = logistic;
        } else {
            others.push(logistic);
        }
    }
    Some((chosen, others))
}

/// The trend of a count fitted through `steps`, the instants it changed (see [`steps`]), with
/// the band at least as wide as rounding makes it; `None` with fewer than [`MIN_STEPS`].
fn step_trend(steps: &[(i64, f64)], origin_ms: i64, half_life: f64) -> Option<(Fit, Vec<Fit>)> {
    if steps.len() < MIN_STEPS {
        return None;
    }
    let points: Vec<(f64, f64)> = steps
        .iter()
        .map(|&(t, mid)| ((t - origin_ms) as f64 / DAY_MS as f64, mid))
        .collect();
    let (mut primary, mut alternatives) = choose_trend(&points, half_life, Judge::OnCurve)?;
    for f in std::iter::once(&mut primary).chain(&mut alternatives) {
        f.at_least_rounding_variance();
    }
    Some((primary, alternatives))
}

/// Fewest changes of a count its trend is fitted through (else its daily means are used).
const MIN_STEPS: usize = 3;

/// When a count changed, from its daily means, if it changed on at most a third of the days
/// (hosted control planes, rather than pods that come and go every day): for each change by
/// one, its instant (ms) and the level halfway between, where a smooth curve the count is a
/// rounding of passes. A day whose mean lies between two whole numbers changed at one
/// instant from its first level to the level of the day after when that day's mean is whole
/// and beyond it (a large tenant's clusters onboarded at once, which the day boundary must
/// not split into two smaller jumps), else to the next whole number, at the instant that
/// gives that mean; several changes in one day are put at one instant.
fn steps(daily: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let whole = |v: f64| ((v - v.round()).abs() < 1e-6).then(|| v.round());
    // (instant, level before, level after) of each day that changed.
    let mut changes = Vec::new();
    // A first day between two whole numbers, followed by a whole day one away, started at the
    // other whole number.
    let mut level = match daily {
        [(_, first), (_, next), ..] => whole(*first).or_else(|| {
            whole(*next)
                .filter(|n| (n - first).abs() < 1.0)
                .map(|n| n - (n - first).signum())
        }),
        _ => None,
    };
    for (i, &(t, mean)) in daily.iter().enumerate() {
        let Some(start) = level else {
            level = whole(mean);
            continue;
        };
        let exact = whole(mean);
        let m = exact.unwrap_or(mean);
        if m == start {
            continue;
        }
        let next = daily.get(i + 1).and_then(|p| whole(p.1));
        let end = exact.unwrap_or(if m > start {
            next.filter(|n| *n > m).unwrap_or(m.ceil())
        } else {
            next.filter(|n| *n < m).unwrap_or(m.floor())
        });
        // The day's mean is start + (end − start)·(1 − f) for changes at fraction f of it.
        let f = 1.0 - (m - start) / (end - start);
        changes.push((t - DAY_MS + (f * DAY_MS as f64).round() as i64, start, end));
        level = Some(end);
    }
    // A count changes on a day whose mean is not whole, so days before the first whole one
    // count too: a mean that moves every day and happens to be whole once is not a count.
    let fractional = daily.iter().filter(|p| whole(p.1).is_none()).count();
    let total: f64 = changes.iter().map(|c| (c.2 - c.1).abs()).sum();
    if changes.len().max(fractional) * 3 > daily.len() || total > daily.len() as f64 {
        return Vec::new();
    }
    changes
        .into_iter()
        .flat_map(|(at, start, end)| {
            let direction = (end - start).signum();
            (0..(end - start).abs() as usize)
                .map(move |j| (at, start + direction * (j as f64 + 0.5)))
        })
        .collect()
}

/// Whether hourly means are of a count: at least a day of them, nine in ten whole numbers.
fn is_count(hourly: &[(i64, f64)]) -> bool {
    let values: Vec<f64> = hourly
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .collect();
    let whole = values.iter().filter(|v| v.fract() == 0.0).count();
    values.len() >= 24 && whole * 10 >= values.len() * 9
}

/// Median ratio of each UTC hour's mean to its day's mean (moved to the hour by `growth`, the
/// trend's growth per day at an instant, and by the weekly cycle within the day), over days
/// with at least 20 hourly means after the change point; flat when fewer than 3 such days.
fn daily_profile(
    hourly: &[(i64, f64)],
    change: Option<i64>,
    weekly: &Weekly,
    growth: impl Fn(i64) -> f64,
) -> ([f64; 24], bool) {
    let mut days: std::collections::BTreeMap<i64, Vec<(usize, f64)>> = Default::default();
    for &(t, v) in hourly {
        let start = t - 1;
        if !v.is_finite() || change.is_some_and(|c| start.div_euclid(DAY_MS) <= day_of_ms(c)) {
            continue;
        }
        days.entry(start.div_euclid(DAY_MS))
            .or_default()
            .push(((start.rem_euclid(DAY_MS) / HOUR_MS) as usize, v));
    }
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); 24];
    let mut full_days = 0;
    for (&day, hours) in days.iter().filter(|(_, h)| h.len() >= 20) {
        let mean = hours.iter().map(|h| h.1).sum::<f64>() / hours.len() as f64;
        if mean <= 0.0 {
            continue;
        }
        full_days += 1;
        // The day's mean is its level at noon; the trend and the weekly cycle move it each
        // hour.
        let per_hour = growth(day * DAY_MS + DAY_MS / 2) / 24.0;
        let day_factor = weekly.of_day(day);
        for &(h, v) in hours {
            let middle = day * DAY_MS + h as i64 * HOUR_MS + HOUR_MS / 2;
            let week = if day_factor > 0.0 {
                weekly.at(middle) / day_factor
            } else {
                1.0
            };
            let level = (mean + per_hour * (h as f64 + 0.5 - 12.0)) * week;
            if level > 0.0 {
                ratios[h].push(v / level);
            }
        }
    }
    if full_days < 3 {
        return ([1.0; 24], false);
    }
    let mut profile = [1.0; 24];
    for (p, r) in profile.iter_mut().zip(ratios.iter_mut()) {
        if !r.is_empty() {
            *p = median(r);
        }
    }
    let mean = profile.iter().sum::<f64>() / 24.0;
    profile.iter_mut().for_each(|p| *p /= mean);
    (profile, true)
}

/// The naive forecast operators reach for first: PromQL's `predict_linear`, an ordinary
/// least-squares line through the same daily means, with no seasonality, change points or
/// band. Returns when the line reaches `threshold`, if it does within `horizon_days`.
pub fn predict_linear(
    daily: &[(i64, f64)],
    now_ms: i64,
    threshold: f64,
    horizon_days: u32,
) -> Option<i64> {
    let points: Vec<(f64, f64)> = daily
        .iter()
        .filter(|(t, v)| v.is_finite() && *t <= now_ms + DAY_MS)
        .map(|&(t, v)| ((t - now_ms) as f64 / DAY_MS as f64, v))
        .collect();
    let n = points.len() as f64;
    if n < 2.0 {
        return None;
    }
    let xm = points.iter().map(|p| p.0).sum::<f64>() / n;
    let ym = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - xm).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - xm) * (p.1 - ym)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let now_value = ym - b * xm;
    if now_value >= threshold {
        return Some(now_ms);
    }
    if b <= 0.0 {
        return None;
    }
    let days = (threshold - now_value) / b;
    (days <= f64::from(horizon_days)).then(|| now_ms + (days * DAY_MS as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_790_000_000_000 / DAY_MS * DAY_MS;

    type Points = Vec<(i64, f64)>;

    /// Daily and hourly means of `f` (hourly, averaged) over `days` days before `now`.
    fn sample(f: impl Fn(i64) -> f64, days: i64, now: i64) -> (Points, Points) {
        let hour_mean =
            |end: i64| (0..12).map(|i| f(end - HOUR_MS + i * 300_000)).sum::<f64>() / 12.0;
        let daily = (0..days)
            .map(|d| {
                let end = now - (days - 1 - d) * DAY_MS;
                (
                    end,
                    (0..24).map(|h| hour_mean(end - h * HOUR_MS)).sum::<f64>() / 24.0,
                )
            })
            .collect();
        let hourly = (0..7 * 24)
            .map(|h| {
                let end = now - (7 * 24 - 1 - h) * HOUR_MS;
                (end, hour_mean(end))
            })
            .collect();
        (daily, hourly)
    }

    fn fit_at(
        daily: &[(i64, f64)],
        hourly: &[(i64, f64)],
        now: i64,
    ) -> Result<Model, TooLittleHistory> {
        fit(Input {
            daily,
            hourly,
            now_ms: now,
            min_history_days: 14,
            driver: None,
        })
    }

    /// The model of `follower`, sampled over `days` to `now`, following `driver`, sampled
    /// and fitted the same way.
    fn fit_following(
        follower: impl Fn(i64) -> f64,
        driver: impl Fn(i64) -> f64,
        days: i64,
        now: i64,
    ) -> Model {
        let (driver_daily, driver_hourly) = sample(driver, days, now);
        let model = fit_at(&driver_daily, &driver_hourly, now).expect("driver");
        let (daily, hourly) = sample(follower, days, now);
        fit(Input {
            daily: &daily,
            hourly: &hourly,
            now_ms: now,
            min_history_days: 14,
            driver: Some(Driver {
                daily: &driver_daily,
                model: &model,
            }),
        })
        .expect("model")
    }

    fn cycle(t: i64) -> f64 {
        let hour = (t.rem_euclid(DAY_MS)) as f64 / HOUR_MS as f64;
        1.0 + 0.1 * (std::f64::consts::TAU * (hour - 15.0) / 24.0).cos()
    }

    fn days_to(c: Option<i64>, now: i64) -> f64 {
        (c.expect("crossing") - now) as f64 / DAY_MS as f64
    }

    #[test]
    fn a_linear_trend_with_a_daily_cycle_crosses_where_it_should() {
        let now = T0 + 120 * DAY_MS;
        let f = |t: i64| (100.0 + (t - T0) as f64 / DAY_MS as f64) * cycle(t);
        let (daily, hourly) = sample(f, 90, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert_eq!(model.trend(), TrendKind::Linear);
        assert!(model.has_daily_cycle);
        assert!(
            (model.growth_per_day() - 1.0).abs() < 0.02,
            "{}",
            model.growth_per_day()
        );
        // The truth: first hour with f >= 300.
        let truth = (0..)
            .map(|h| now + h * HOUR_MS)
            .find(|&t| f(t) >= 300.0)
            .expect("truth");
        let c = model.crossing(300.0, 365);
        let (p10, p50, p90) = (
            days_to(c.p10_ms, now),
            days_to(c.p50_ms, now),
            days_to(c.p90_ms, now),
        );
        let want = (truth - now) as f64 / DAY_MS as f64;
        assert!((p50 - want).abs() < 0.05 * want, "p50 {p50} vs {want}");
        assert!(p10 <= want && want <= p90, "{p10} {want} {p90}");
    }

    #[test]
    fn a_crossing_is_placed_within_its_hour() {
        // A steady line without cycles (its hourly means rise through every day) reaches the
        // threshold 9 days, 14 hours and 5 minutes after now, 25 minutes from the middle of
        // its hour.
        let now = T0 + 90 * DAY_MS;
        let f = |t: i64| 100.0 + 5.0 * (t - T0 - 80 * DAY_MS) as f64 / DAY_MS as f64;
        let (daily, hourly) = sample(f, 60, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        let want = now + 9 * DAY_MS + 14 * HOUR_MS + 5 * 60_000;
        let got = model.crossing(f(want), 365).p50_ms.expect("crossing");
        assert!(
            (got - want).abs() <= 5 * 60_000,
            "{} minutes off",
            (got - want) / 60_000
        );
        // A threshold already reached is reached now.
        assert_eq!(model.crossing(f(now) - 1.0, 365).p50_ms, Some(now));
    }

    #[test]
    fn units_per_node_follow_the_vpc_cni_rule() {
        // Three m5.4xlarge-like nodes (29 addresses per ENI, at most 8 ENIs, one warm) with
        // 40%, 35% and 25% of 200 addresses: 80, 70 and 50, so 3 + 1, 3 + 1 and 2 + 1 ENIs.
        let node = |used| Node {
            used,
            holds: 29.0,
            max: 8.0,
        };
        let units = NodeUnits::new(&[node(80.0), node(70.0), node(50.0)], 1.0).expect("units");
        assert_eq!(units.units(200.0), 11.0);
        // The first node needs a fourth ENI at 88 addresses (87 = 3 × 29 still fit): 220 in
        // all; rounding puts a smooth forecast of the count there at 218.75.
        let at = units.use_for(12.0).expect("reachable");
        assert!((at - 218.75).abs() < 1e-6, "{at}");
        assert_eq!(units.units(at - 1e-3), 11.0);
        assert_eq!(units.units(at), 12.0);
        // Full at 8 ENIs each: 24 is the most, and 25 is never reached.
        assert_eq!(units.units(1e9), 24.0);
        assert_eq!(units.use_for(25.0), None);
        assert_eq!(units.use_for(3.0), Some(0.0));
        // Nodes that use nothing between them, or a unit that holds nothing, count nothing.
        assert_eq!(NodeUnits::new(&[node(0.0)], 1.0), None);
        assert_eq!(
            NodeUnits::new(
                &[Node {
                    used: 5.0,
                    holds: 0.0,
                    max: 8.0
                }],
                1.0
            ),
            None
        );
    }

    #[test]
    fn a_resource_allocated_per_node_is_forecast_from_its_use() {
        // Ten nodes share pod addresses unevenly; the cell's addresses grow by 6 a day. The ENIs stay flat for days and then step;
        // the forecast of the addresses, counted in ENIs, finds the hour the cell reaches 46.
        let now = T0 + 90 * DAY_MS;
        let shares = [
            0.13, 0.12, 0.11, 0.105, 0.1, 0.095, 0.09, 0.09, 0.085, 0.075,
        ];
        let f = |t: i64| 700.0 + 6.0 * (t - T0 - 60 * DAY_MS) as f64 / DAY_MS as f64;
        let (daily, hourly) = sample(f, 60, now);
        let nodes: Vec<Node> = shares
            .iter()
            .map(|s| Node {
                used: s * f(now - HOUR_MS / 2),
                holds: 29.0,
                max: 8.0,
            })
            .collect();
        let units = NodeUnits::new(&nodes, 1.0).expect("units");
        let enis = |t: i64| -> f64 {
            shares
                .iter()
                .map(|s| ((s * f(t)).round() / 29.0).ceil() + 1.0)
                .sum()
        };
        let want = (0..)
            .map(|h| now + h * HOUR_MS)
            .find(|&t| enis(t) >= 46.0)
            .expect("reached");
        let model = fit_at(&daily, &hourly, now).expect("model").in_units(units);
        assert_eq!(model.band(now).p50, enis(now));
        let got = model.crossing(46.0, 365).p50_ms.expect("crossing");
        let (want_days, got_days) = (days_to(Some(want), now), days_to(Some(got), now));
        assert!(
            (got_days - want_days).abs() < 0.02 * want_days,
            "{got_days} days vs {want_days}"
        );
        // Its growth is in ENIs: about one for every 29 addresses spread over the nodes.
        let growth = model.growth_per_day();
        assert!((growth - 6.0 / 29.0).abs() < 0.01, "{growth}");
    }

    #[test]
    fn an_exponential_trend_is_recognised() {
        let now = T0 + 200 * DAY_MS;
        let f = |t: i64| 100.0 * (0.01 * (t - T0) as f64 / DAY_MS as f64).exp();
        let (daily, hourly) = sample(f, 120, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert_eq!(model.trend(), TrendKind::Exponential);
        let want = (1500.0f64 / f(now)).ln() / 0.01;
        let got = days_to(model.crossing(1500.0, 365).p50_ms, now);
        assert!((got - want).abs() < 0.05 * want, "{got} vs {want}");
    }

    #[test]
    fn a_step_is_a_change_point_and_the_forecast_starts_after_it() {
        let now = T0 + 100 * DAY_MS;
        let step = T0 + 60 * DAY_MS + 7 * HOUR_MS;
        let f = |t: i64| {
            100.0 + 0.5 * (t - T0) as f64 / DAY_MS as f64 + if t >= step { 40.0 } else { 0.0 }
        };
        let (daily, hourly) = sample(f, 90, now);
        let cp = change_point(&daily).expect("change point");
        assert_eq!(cp.div_euclid(DAY_MS), step.div_euclid(DAY_MS));
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(
            (model.growth_per_day() - 0.5).abs() < 0.02,
            "{}",
            model.growth_per_day()
        );
        // Right after a step, too little history is said, not guessed.
        let soon = step + 5 * DAY_MS;
        let (daily, hourly) = sample(f, 60, soon.div_euclid(DAY_MS) * DAY_MS);
        let err = fit_at(&daily, &hourly, soon).expect_err("too little");
        assert!(err.days < 14.0 && err.change_point_ms.is_some(), "{err:?}");
    }

    #[test]
    fn spikes_and_gaps_do_not_move_the_forecast() {
        let now = T0 + 100 * DAY_MS;
        let f = |t: i64| 100.0 + 0.5 * (t - T0) as f64 / DAY_MS as f64;
        let (mut daily, hourly) = sample(f, 90, now);
        daily[40].1 *= 1.5;
        daily.drain(50..55);
        assert_eq!(change_point(&daily), None);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(
            (model.growth_per_day() - 0.5).abs() < 0.05,
            "{}",
            model.growth_per_day()
        );
    }

    /// Growth from 100 by 0.2 a day, times `low` on one weekday (Sundays).
    fn sundays_at(low: f64) -> impl Fn(i64) -> f64 {
        move |t: i64| {
            let day = t.div_euclid(DAY_MS);
            (100.0 + 0.2 * (t - T0) as f64 / DAY_MS as f64) * if day % 7 == 3 { low } else { 1.0 }
        }
    }

    #[test]
    fn weekly_cycles_are_learnt() {
        let now = T0 + 100 * DAY_MS;
        let (daily, hourly) = sample(sundays_at(0.8), 60, now);
        assert_eq!(change_point(&daily), None);
        let model = fit_at(&daily, &hourly, now).expect("model");
        let low = model.weekly.factors[3];
        assert!(
            low < 0.85 && model.weekly.factors[4] > 1.0,
            "{:?}",
            model.weekly
        );
    }

    /// The mean of the weekly cycle over day `day` of the week, minute by minute.
    fn day_mean(weekly: &Weekly, day: usize) -> f64 {
        let minutes = 24 * 60;
        (0..minutes)
            .map(|m| weekly.at(day as i64 * DAY_MS + m * 60_000 + 30_000))
            .sum::<f64>()
            / minutes as f64
    }

    #[test]
    fn the_weekly_wave_moves_each_days_hours_and_keeps_its_mean() {
        let factors: [f64; 7] = std::array::from_fn(|j| {
            1.0 + 0.05 * (std::f64::consts::TAU * (j as f64 + 0.5 - 2.4) / 7.0).cos()
        });
        let weekly = Weekly::new(factors);
        for (day, want) in factors.iter().enumerate() {
            let mean = day_mean(&weekly, day);
            assert!((mean - want).abs() < 1e-6, "day {day}: {mean} vs {want}");
        }
        let highest = (0..7 * 24)
            .map(|h| weekly.at(h * HOUR_MS + HOUR_MS / 2))
            .fold(f64::MIN, f64::max);
        let factor_highest = factors.iter().copied().fold(f64::MIN, f64::max);
        assert!(highest > factor_highest, "{highest} vs {factor_highest}");
        assert!((Weekly::FLAT.at(T0 + 5 * HOUR_MS) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_quiet_weekend_is_a_step_not_a_wave() {
        // Flat workdays and a quieter weekend: one wave through them would overshoot at the
        // midnights next to the weekend, so each day keeps its factor.
        let factors = [1.04, 1.04, 0.9, 0.9, 1.04, 1.04, 1.04];
        let weekly = Weekly::new(factors);
        for h in 0..7 * 24 {
            let t = h * HOUR_MS + HOUR_MS / 2;
            let day = (h / 24) as usize;
            assert_eq!(weekly.at(t), factors[day], "hour {h}");
        }
    }

    #[test]
    fn a_weekday_without_use_keeps_the_forecast_finite_and_not_negative() {
        let now = T0 + 100 * DAY_MS;
        let f = sundays_at(0.0);
        let (daily, hourly) = sample(|t| f(t) * cycle(t), 60, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert_eq!(model.weekly.factors[3], 0.0, "{:?}", model.weekly);
        for b in model.bands(14, HOUR_MS) {
            assert!(
                b.p10.is_finite() && b.p50.is_finite() && b.p90.is_finite(),
                "{b:?}"
            );
            assert!(b.p10 >= 0.0 && b.p50 >= 0.0, "{b:?}");
        }
    }

    #[test]
    fn a_threshold_is_reached_at_the_weeks_highest_hour() {
        // Slow growth under a weekly cycle that peaks at the turn of a day: the threshold is
        // first reached in the afternoon before, where the weekly cycle is still rising, eight
        // weeks on. Taking the weekly cycle as one factor per day puts it two weeks later.
        let now = T0 + 120 * DAY_MS;
        let f = |t: i64| {
            let days = (t - T0) as f64 / DAY_MS as f64;
            let week = (std::f64::consts::TAU * days / 7.0).cos();
            (100.0 + 0.05 * days) * (1.0 + 0.05 * week) * cycle(t)
        };
        let (daily, hourly) = sample(f, 90, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        let truth = (0..)
            .map(|h| now + h * HOUR_MS)
            .find(|&t| f(t) >= 125.0)
            .expect("truth");
        let want = (truth - now) as f64 / DAY_MS as f64;
        let p50 = days_to(model.crossing(125.0, 365).p50_ms, now);
        assert!((p50 - want).abs() < 0.05 * want, "p50 {p50} vs {want}");
    }

    #[test]
    fn growth_slowing_towards_a_ceiling_is_logistic() {
        // Past its midpoint (day 60), the curve slows towards 300 and reaches 280 on day 126,
        // 36 days after now; a line or an exponential through the history gets there weeks
        // sooner.
        let now = T0 + 90 * DAY_MS;
        let f = |t: i64| {
            let d = (t - T0) as f64 / DAY_MS as f64;
            300.0 / (1.0 + (-0.04 * (d - 60.0)).exp())
        };
        let (daily, hourly) = sample(f, 90, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert_eq!(model.trend(), TrendKind::Logistic);
        let want = days_to(
            (0..).map(|h| now + h * HOUR_MS).find(|&t| f(t) >= 280.0),
            now,
        );
        let got = days_to(model.crossing(280.0, 365).p50_ms, now);
        assert!((got - want).abs() < 0.1 * want, "{got} days, want {want}");
    }

    #[test]
    fn a_count_long_before_its_midpoint_is_told_from_an_exponential() {
        // Hosted control planes rounding a logistic curve whose ceiling (70) is 18 times
        // the count now, 75 days before its midpoint: it looks exponential, but bends enough
        // for the instants it changed to show it. An exponential through them overshoots
        // and reaches 25 too soon.
        let now = T0 + 90 * DAY_MS;
        let curve = |t: i64| {
            let d = (t - T0) as f64 / DAY_MS as f64;
            70.0 / (1.0 + (-0.038 * (d - 165.0)).exp())
        };
        let (daily, hourly) = sample(|t| curve(t).round(), 90, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(model.counts);
        assert_eq!(model.trend(), TrendKind::Logistic);
        let want = days_to(
            (0..).map(|h| now + h * HOUR_MS).find(|&t| curve(t) >= 24.5),
            now,
        );
        let got = days_to(model.crossing(25.0, 365).p50_ms, now);
        assert!((got - want).abs() < 0.1 * want, "{got} days, want {want}");
    }

    #[test]
    fn a_resource_grown_from_almost_nothing_gets_no_wild_weekday() {
        // From 1 to 15 over 90 days, exponentially: a straight line through it runs near zero
        // (or below) at the start, where ratios to it mean nothing.
        let now = T0 + 90 * DAY_MS;
        let f = |t: i64| (((t - T0) as f64 / DAY_MS as f64) * 15f64.ln() / 90.0).exp();
        let (daily, hourly) = sample(f, 90, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(
            model.weekly.factors.iter().all(|w| (0.9..1.1).contains(w)),
            "{:?}",
            model.weekly
        );
        let want = (28.2f64 / 15.0).ln() / (15f64.ln() / 90.0);
        let got = days_to(model.crossing(28.2, 365).p50_ms, now);
        assert!((got - want).abs() < 0.1 * want, "{got} days, want {want}");
    }

    #[test]
    fn too_little_history_is_reported() {
        let now = T0 + 100 * DAY_MS;
        let (daily, hourly) = sample(|_| 5.0, 10, now);
        let err = fit_at(&daily, &hourly, now).expect_err("too little");
        assert_eq!(err.days, 10.0);
    }

    #[test]
    fn a_count_reaches_a_whole_number_when_its_trend_is_half_a_step_below() {
        // One more cluster every five days: the count reaches 31 (the first whole number
        // at or above 30.2) on day 105, when the line through the steps is at 30.5.
        let now = T0 + 81 * DAY_MS;
        let f = |t: i64| 10.0 + ((t - T0) / (5 * DAY_MS)) as f64;
        let (daily, hourly) = sample(f, 80, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(model.counts);
        let got = days_to(model.crossing(30.2, 365).p50_ms, now);
        assert!((got - 24.0).abs() < 0.015 * 24.0, "{got} days, want 24");
    }

    #[test]
    fn a_count_is_forecast_from_the_instants_it_changed() {
        // A count that is the rounding of an exponential curve (onboardings come faster and
        // faster): its steps say when the curve passed each half, and the next steps follow.
        let now = T0 + 90 * DAY_MS + 7 * HOUR_MS;
        let curve = |t: i64| 6.0 * (0.012 * (t - T0) as f64 / DAY_MS as f64).exp();
        let f = |t: i64| curve(t).round();
        let (daily, hourly) = sample(f, 90, now.div_euclid(DAY_MS) * DAY_MS);
        let found = steps(&daily);
        assert!(found.len() >= 4, "{found:?}");
        for &(at, mid) in &found {
            let truth = (0..)
                .map(|h| T0 + h * HOUR_MS)
                .find(|&t| curve(t) >= mid)
                .expect("step");
            assert!((at - truth).abs() <= HOUR_MS, "{at} vs {truth} for {mid}");
        }
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(model.counts && !model.has_daily_cycle);
        assert_eq!(model.trend(), TrendKind::Exponential);
        let truth = (0..).map(|h| now + h * HOUR_MS).find(|&t| f(t) >= 24.0);
        let want = days_to(truth, now);
        let c = model.crossing(23.6, 365);
        let got = days_to(c.p50_ms, now);
        assert!((got - want).abs() < 0.02 * want, "{got} days, want {want}");
        assert!(days_to(c.p10_ms, now) <= want && want <= days_to(c.p90_ms, now));
    }

    #[test]
    fn a_resource_that_follows_a_count_steps_when_the_count_does() {
        // Pods: 60 plus 21 for each cluster; clusters onboard faster and faster.
        let now = T0 + 90 * DAY_MS;
        let clusters = |t: i64| (6.0 * (0.012 * (t - T0) as f64 / DAY_MS as f64).exp()).round();
        let pods = |t: i64| 60.0 + 21.0 * clusters(t);
        let model = fit_following(pods, clusters, 90, now);
        let follows = model.follows.as_ref().expect("follows");
        assert!((follows.per_driver - 21.0).abs() < 0.5, "{follows:?}");
        // 60 + 21 × 24 = 564 is reached when the 24th cluster onboards.
        let truth = (0..).map(|h| now + h * HOUR_MS).find(|&t| pods(t) >= 560.0);
        let want = days_to(truth, now);
        let got = days_to(model.crossing(560.0, 365).p50_ms, now);
        assert!((got - want).abs() < 0.02 * want, "{got} days, want {want}");

        // The clusters already there grow faster and faster: the rest bends up too.
        let nodes = |t: i64| 200.0 * (0.01 * (t - T0) as f64 / DAY_MS as f64).exp();
        let busy = |t: i64| pods(t) + nodes(t);
        let model = fit_following(busy, clusters, 90, now);
        assert!(model.follows.is_some());
        let truth = (0..)
            .map(|h| now + h * HOUR_MS)
            .find(|&t| busy(t) >= 2000.0);
        let want = days_to(truth, now);
        let got = days_to(model.crossing(2000.0, 365).p50_ms, now);
        assert!((got - want).abs() < 0.05 * want, "{got} days, want {want}");

        // A resource whose wiggles the driver does not explain keeps its own trend.
        let other = |t: i64| {
            let d = (t - T0) as f64 / DAY_MS as f64;
            100.0 + 0.5 * d + 3.0 * (std::f64::consts::TAU * d / 10.0).sin()
        };
        let model = fit_following(other, clusters, 90, now);
        assert!(model.follows.is_none());
    }

    #[test]
    fn clusters_already_there_grow_faster_the_more_of_them_there_are() {
        // One more cluster every three days, each bringing 21 pods and then growing by 0.2 a
        // day: the pods besides the 21 each grow by 0.2 a day times the clusters there are.
        let now = T0 + 90 * DAY_MS;
        let days = |t: i64| (t - T0) as f64 / DAY_MS as f64;
        let clusters = |t: i64| (10.0 + days(t) / 3.0).floor();
        let pods = |t: i64| {
            let grown: f64 = (0..clusters(t) as i64)
                .map(|k| {
                    let onboarded = if k < 10 { -30.0 } else { 3.0 * (k - 9) as f64 };
                    0.2 * (days(t) - onboarded)
                })
                .sum();
            60.0 + 21.0 * clusters(t) + grown
        };
        let model = fit_following(pods, clusters, 90, now);
        let follows = model.follows.as_ref().expect("follows");
        assert!((follows.per_driver - 21.0).abs() < 1.0, "{follows:?}");
        // Between onboardings, where only the growth crosses the threshold.
        for ahead in [31, 91, 181] {
            let threshold = pods(now + ahead * DAY_MS + DAY_MS / 2);
            let truth = (0..)
                .map(|h| now + h * HOUR_MS)
                .find(|&t| pods(t) >= threshold);
            let want = days_to(truth, now);
            let got = days_to(model.crossing(threshold, 365).p50_ms, now);
            assert!((got - want).abs() < 0.03 * want, "{got} days, want {want}");
        }
    }

    #[test]
    fn a_follower_moves_to_the_level_a_bigger_cluster_than_usual_left() {
        // Pods: 60 plus 21 for each cluster, but the cluster that onboarded three days ago
        // brought 33 (not so many more that it is a level shift). The fit through the whole
        // history spreads its 12 extra pods over every day; the days since it came show where
        // the level is.
        let clusters = |t: i64| (6.0 * (0.012 * (t - T0) as f64 / DAY_MS as f64).exp()).round();
        let big = (0..)
            .map(|h| T0 + 85 * DAY_MS + h * HOUR_MS)
            .find(|&t| clusters(t) > clusters(t - HOUR_MS))
            .expect("an onboarding");
        let now = big + 3 * DAY_MS;
        assert_eq!(clusters(now), clusters(big), "no other onboarding since");
        let pods = |t: i64| 60.0 + 21.0 * clusters(t) + if t >= big { 12.0 } else { 0.0 };
        let days = (now - T0) / DAY_MS;
        let model = fit_following(pods, clusters, days, now);
        assert!(model.follows.is_some());
        // The next cluster brings the usual 21.
        let threshold = pods(now) + 20.0;
        let truth = (0..)
            .map(|h| now + h * HOUR_MS)
            .find(|&t| pods(t) >= threshold);
        let want = days_to(truth, now);
        let got = days_to(model.crossing(threshold, 365).p50_ms, now);
        assert!((got - want).abs() < 0.05 * want, "{got} days, want {want}");
    }

    #[test]
    fn a_count_shifts_only_when_it_jumps_by_several_at_once() {
        // One more cluster every four days, two more on day 40 (a busy week, whose weekly
        // difference is twice the usual one): growth, not a shift.
        let now = T0 + 90 * DAY_MS;
        let busy = |t: i64| {
            let d = (t - T0) as f64 / DAY_MS as f64;
            10.0 + (d / 4.0).floor() + if d >= 40.3 { 2.0 } else { 0.0 }
        };
        let (daily, hourly) = sample(busy, 90, now);
        assert_eq!(count_jump(&daily), Some(None));
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert_eq!(model.change_point_ms, None);
        // Six at once on day 60 (a large tenant): the forecast starts after it.
        let tenant = |t: i64| busy(t) + if t >= T0 + 60 * DAY_MS { 6.0 } else { 0.0 };
        let (daily, hourly) = sample(tenant, 90, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert_eq!(model.change_point_ms, Some(T0 + 60 * DAY_MS));
        // Five at once at 11:00 on day 70: the day's mean is between the levels before and
        // after, and the jump is one, not three and two split at midnight.
        let midday = |t: i64| {
            busy(t)
                + if t >= T0 + 70 * DAY_MS + 11 * HOUR_MS {
                    5.0
                } else {
                    0.0
                }
        };
        let (daily, _) = sample(midday, 90, now);
        assert_eq!(count_jump(&daily), Some(Some(T0 + 70 * DAY_MS)));
        // Pods that change every day have no steps: their shifts are found from the weekly
        // differences.
        let pods: Vec<(i64, f64)> = (0..30)
            .map(|d| (T0 + d * DAY_MS, 100.0 + (d % 3) as f64 + 0.5))
            .collect();
        assert_eq!(count_jump(&pods), None);
    }

    #[test]
    fn steps_are_read_from_daily_means() {
        let day = |d: i64| T0 + d * DAY_MS;
        // The first day (mean 4.25) went up at 18:00 to the 5 of the next day; then up one at
        // 18:00 on day 2, down one at 06:00 on day 4, up one at midnight before day 6 (a whole
        // mean one above the day before).
        let mut daily = vec![
            (day(1), 4.25),
            (day(2), 5.0),
            (day(3), 5.25),
            (day(4), 6.0),
            (day(5), 5.25),
            (day(6), 5.0),
            (day(7), 6.0),
        ];
        daily.extend((8..16).map(|d| (day(d), 6.0)));
        let hour = |d: i64, h: i64| day(d) + h * HOUR_MS;
        assert_eq!(
            steps(&daily),
            vec![
                (hour(0, 18), 4.5),
                (hour(2, 18), 5.5),
                (hour(4, 6), 5.5),
                (hour(6, 0), 5.5),
            ]
        );
        // A count that changes every day (pods coming and going) has no steps to go by.
        let busy: Vec<(i64, f64)> = (0..30)
            .map(|d| (day(d), 100.0 + (d % 3) as f64 + 0.5))
            .collect();
        assert!(steps(&busy).is_empty());
        // Nor does one whose mean moves every day and is whole on the last day but one by
        // chance: the fall to the last day is not seven clusters leaving at once.
        let mut by_chance: Vec<(i64, f64)> = (0..14)
            .map(|d| (day(d), 750.0 + 10.0 * (d as f64).sin() + 0.3))
            .collect();
        by_chance.extend([(day(14), 776.0), (day(15), 769.5)]);
        assert!(steps(&by_chance).is_empty());
    }

    #[test]
    fn the_band_spans_a_recent_change_in_pace() {
        // Growth slows from 1 to 0.5 a day for the last four weeks: the whole history's line
        // reaches 230 in about 30 days, the recent pace in 48; the band reaches out to the
        // recent pace (to within a few days: the weekday factors a bent line leaves move a
        // crossing by a day or two).
        let now = T0 + 120 * DAY_MS;
        let bend = now - 28 * DAY_MS;
        let f = |t: i64| {
            let d = (t - T0) as f64 / DAY_MS as f64;
            let after = ((t - bend) as f64 / DAY_MS as f64).max(0.0);
            100.0 + d - 0.5 * after
        };
        let (daily, hourly) = sample(f, 120, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(!model.counts);
        let want = days_to(
            (0..).map(|h| now + h * HOUR_MS).find(|&t| f(t) >= 230.0),
            now,
        );
        let c = model.crossing(230.0, 365);
        let (p10, p90) = (days_to(c.p10_ms, now), days_to(c.p90_ms, now));
        assert!(p10 <= want && want <= p90 / 0.9, "{p10} {want} {p90}");
    }

    #[test]
    fn a_count_with_too_few_steps_for_their_instants_has_no_weekly_cycle() {
        // A new cell's first hosted control plane: none for five weeks, then one. One step is
        // too few to fit a trend through; the daily means still say it is a count that moves
        // on few days, and a weekday ratio to a line through 0s and a 1 is not a cycle.
        let now = T0 + 60 * DAY_MS;
        let first = T0 + 35 * DAY_MS + 5 * HOUR_MS;
        let f = |t: i64| if t >= first { 1.0 } else { 0.0 };
        let (daily, hourly) = sample(f, 60, now);
        let model = fit_at(&daily, &hourly, now).expect("model");
        assert!(model.counts);
        let bands = model.bands(28, HOUR_MS);
        for pair in bands.windows(2) {
            assert!(
                pair[1].p50 >= pair[0].p50 - 1e-9,
                "a count that only grew falls from {} to {} at {}",
                pair[0].p50,
                pair[1].p50,
                pair[1].t_ms
            );
        }
    }

    #[test]
    fn predict_linear_is_a_least_squares_line() {
        let now = T0 + 100 * DAY_MS;
        let daily: Vec<(i64, f64)> = (0..30)
            .map(|d| (now - d * DAY_MS, 100.0 - d as f64))
            .collect();
        let at = predict_linear(&daily, now, 110.0, 365).expect("crossing");
        assert_eq!((at - now) / HOUR_MS, 240);
        assert_eq!(predict_linear(&daily, now, 1e9, 365), None);
    }
}
