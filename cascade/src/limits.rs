//! Per-cell limits: active series and samples per second.
//!
//! A cell is the value of `cell_label` on a series (after the sender's labels were stamped),
//! so the limits hold whether or not senders authenticate, and a sender writing for several
//! cells is held to each cell's limits.
//!
//! - Samples per second: a token bucket per cell holding `samples_burst_seconds` of its rate.
//!   A request is admitted while every cell it writes to has tokens left (it may take the
//!   bucket below zero, so a request larger than the burst still gets through once the bucket
//!   is full) and refused whole otherwise (429: the sender retries it later; nothing of it
//!   was written).
//! - Active series: the fingerprints seen per cell within `active_series_idle_timeout`. A
//!   known series is always admitted; a new one only while the cell is under its limit.
//!   Refused series are left out of what is written, the rest of the request is written, and
//!   the answer is 429 naming the limit. Fingerprints are tracked only for cells that have a
//!   series limit: 8 bytes of key and 4 of time per series.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::LimitsConfig;

/// One accepted series of a request, as the limits see it.
#[derive(Debug, Clone, Copy)]
pub struct SeriesKey<'a> {
    pub cell: &'a str,
    pub fingerprint: u64,
    pub items: u64,
}

/// What the limits did with a request's series.
#[derive(Debug, Default)]
pub struct Admission {
    /// Indices (into the keys given) of new series refused by a series limit.
    pub refused: Vec<usize>,
    /// Items of the refused series.
    pub refused_items: u64,
    /// A message naming the cells and limits, when series were refused.
    pub message: Option<String>,
}

#[derive(Debug, Default)]
struct CellState {
    /// Fingerprint → last seen (seconds since start), when the cell has a series limit.
    series: HashMap<u64, u32>,
    tokens: f64,
    refilled: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    config: LimitsConfig,
    cells: HashMap<String, CellState>,
}

/// The limits of every cell; cheap to consult when none are configured.
#[derive(Debug)]
pub struct Limits {
    inner: Mutex<Inner>,
    start: Instant,
}

/// Per-cell figures for the status page and self-metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CellStatus {
    pub cell: String,
    pub active_series: usize,
    pub max_active_series: u64,
    pub max_samples_per_second: u64,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                config,
                cells: HashMap::new(),
            }),
            start: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a reloaded configuration; what is known of each cell is kept.
    pub fn reconfigure(&self, config: LimitsConfig) {
        self.lock().config = config;
    }

    /// The label that names a series' cell, and whether any limit is configured.
    pub fn cell_label(&self) -> (String, bool) {
        let inner = self.lock();
        (inner.config.cell_label.clone(), inner.config.any())
    }

    /// Applies both limits to a request. `Err` carries the 429 message of a rate limit: the
    /// whole request is refused and nothing was counted.
    pub fn admit(&self, keys: &[SeriesKey<'_>], now: Instant) -> Result<Admission, String> {
        let mut inner = self.lock();
        let Inner { config, cells } = &mut *inner;
        // Samples per cell in this request.
        let mut per_cell: Vec<(&str, u64)> = Vec::new();
        for k in keys {
            match per_cell.iter_mut().find(|(c, _)| *c == k.cell) {
                Some((_, n)) => *n += k.items,
                None => per_cell.push((k.cell, k.items)),
            }
        }
        let mut over = Vec::new();
        for &(cell, _) in &per_cell {
            let (_, rate) = config.of(cell);
            if rate == 0 {
                continue;
            }
            let burst = (rate * config.samples_burst_seconds) as f64;
            let state = cells.entry(cell.to_string()).or_default();
            let elapsed = state.refilled.map_or(f64::INFINITY, |t| {
                now.saturating_duration_since(t).as_secs_f64()
            });
            state.tokens = (state.tokens + elapsed * rate as f64).min(burst);
            state.refilled = Some(now);
            if state.tokens <= 0.0 {
                over.push(format!(
                    "cell {cell:?} is over its limit of {rate} samples/s"
                ));
            }
        }
        if !over.is_empty() {
            return Err(format!(
                "{}; nothing of this request was written, retry later",
                over.join("; ")
            ));
        }
        for &(cell, n) in &per_cell {
            if config.of(cell).1 > 0
                && let Some(state) = cells.get_mut(cell)
            {
                state.tokens -= n as f64;
            }
        }
        let now_s = now.saturating_duration_since(self.start).as_secs() as u32;
        let mut admission = Admission::default();
        let mut refused_cells: Vec<(&str, u64)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (max_series, _) = config.of(k.cell);
            if max_series == 0 {
                continue;
            }
            let state = match cells.get_mut(k.cell) {
                Some(s) => s,
                None => cells.entry(k.cell.to_string()).or_default(),
            };
            if let Some(seen) = state.series.get_mut(&k.fingerprint) {
                *seen = now_s;
            } else if (state.series.len() as u64) < max_series {
                state.series.insert(k.fingerprint, now_s);
            } else {
                admission.refused.push(i);
                admission.refused_items += k.items;
                if !refused_cells.iter().any(|(c, _)| *c == k.cell) {
                    refused_cells.push((k.cell, max_series));
                }
            }
        }
        if !refused_cells.is_empty() {
            let cells: Vec<String> = refused_cells
                .iter()
                .map(|(c, max)| format!("cell {c:?} is at its limit of {max} active series"))
                .collect();
            admission.message = Some(format!(
                "{} new series refused: {}; the series already known were written. New series are admitted again as old ones go idle or the limit is raised",
                admission.refused.len(),
                cells.join("; ")
            ));
        }
        Ok(admission)
    }

    /// Forgets series idle for longer than the timeout and returns every tracked cell's
    /// figures.
    pub fn prune(&self, now: Instant) -> Vec<CellStatus> {
        let mut inner = self.lock();
        let Inner { config, cells } = &mut *inner;
        let idle = config.active_series_idle_timeout.0.as_secs() as u32;
        let now_s = now.saturating_duration_since(self.start).as_secs() as u32;
        let mut out = Vec::with_capacity(cells.len());
        for (cell, state) in cells.iter_mut() {
            state
                .series
                .retain(|_, seen| now_s.saturating_sub(*seen) <= idle);
            let (max_active_series, max_samples_per_second) = config.of(cell);
            out.push(CellStatus {
                cell: cell.clone(),
                active_series: state.series.len(),
                max_active_series,
                max_samples_per_second,
            });
        }
        out.sort_by(|a, b| a.cell.cmp(&b.cell));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::CellLimits;

    fn key(cell: &str, fingerprint: u64, items: u64) -> SeriesKey<'_> {
        SeriesKey {
            cell,
            fingerprint,
            items,
        }
    }

    #[test]
    fn new_series_over_the_limit_are_refused_known_ones_flow() {
        let limits = Limits::new(LimitsConfig {
            max_active_series: 2,
            cells: [(
                "big".to_string(),
                CellLimits {
                    max_active_series: Some(3),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        });
        let t = Instant::now();
        let a = limits
            .admit(
                &[
                    key("a", 1, 1),
                    key("a", 2, 1),
                    key("a", 3, 5),
                    key("big", 3, 1),
                ],
                t,
            )
            .unwrap();
        assert_eq!(a.refused, [2]);
        assert_eq!(a.refused_items, 5);
        assert!(a.message.unwrap().contains("limit of 2 active series"));
        let a = limits.admit(&[key("a", 2, 1), key("a", 1, 1)], t).unwrap();
        assert!(a.refused.is_empty());
        let status = limits.prune(t);
        assert_eq!(status[0].active_series, 2);
        assert_eq!(status[1].max_active_series, 3);
        // After the idle timeout the old series are forgotten and new ones fit.
        let later = t + Duration::from_secs(21 * 60);
        assert_eq!(limits.prune(later)[0].active_series, 0);
        assert!(
            limits
                .admit(&[key("a", 3, 1)], later)
                .unwrap()
                .refused
                .is_empty()
        );
    }

    #[test]
    fn rate_limit_refuses_whole_requests_and_refills() {
        let limits = Limits::new(LimitsConfig {
            max_samples_per_second: 100,
            samples_burst_seconds: 2,
            ..Default::default()
        });
        let t = Instant::now();
        // A full bucket admits even a request larger than the burst, then refuses.
        limits.admit(&[key("a", 1, 250)], t).unwrap();
        let err = limits
            .admit(&[key("a", 1, 1), key("b", 2, 1)], t)
            .unwrap_err();
        assert!(
            err.contains("\"a\" is over its limit of 100 samples/s"),
            "{err}"
        );
        // Cell b was not charged for the refused request; a is refilled after a second.
        limits.admit(&[key("b", 2, 200)], t).unwrap();
        assert!(
            limits
                .admit(&[key("a", 1, 1)], t + Duration::from_millis(400))
                .is_err()
        );
        limits
            .admit(&[key("a", 1, 1)], t + Duration::from_millis(1000))
            .unwrap();
    }
}
