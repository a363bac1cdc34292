//! The fleet's description: how many regions, cells and clusters, the seed, and the anchor —
//! the moment at which every cell hosts `clusters_per_cell` clusters. Growth runs backwards
//! and forwards from the anchor, so the same file always describes the same fleet.
//!
//! ```yaml
//! seed: 7
//! regions: 3
//! cells_per_region: 4
//! clusters_per_cell: 25
//! anchor: 2026-11-01T00:00:00Z   # default: the start of today (UTC)
//! ```

use std::path::Path;
use std::time::UNIX_EPOCH;
use strata_wire::clock::now_ms;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Most cells a fleet may have (200 cells × 50 clusters is the planner's scale benchmark).
pub const MAX_CELLS: usize = 5_000;
/// Most clusters a cell may host at the anchor.
pub const MAX_CLUSTERS_PER_CELL: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Everything random in the fleet derives from this; equal seeds give equal fleets.
    pub seed: u64,
    pub regions: usize,
    pub cells_per_region: usize,
    /// Customer clusters each cell hosts at the anchor.
    pub clusters_per_cell: usize,
    /// RFC 3339 time at which each cell hosts `clusters_per_cell` clusters; unset means the
    /// start of the current UTC day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            regions: 3,
            cells_per_region: 4,
            clusters_per_cell: 25,
            anchor: None,
        }
    }
}

impl FleetConfig {
    /// Reads a fleet file; unknown fields are errors.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_norway::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks sizes and the anchor; called by [`crate::Fleet::new`] too.
    pub fn validate(&self) -> Result<()> {
        if self.regions == 0 || self.cells_per_region == 0 || self.clusters_per_cell == 0 {
            return Err(Error::Config(
                "regions, cells_per_region and clusters_per_cell must be at least 1".into(),
            ));
        }
        let cells = self.regions.saturating_mul(self.cells_per_region);
        if cells > MAX_CELLS {
            return Err(Error::Config(format!(
                "{cells} cells is more than the simulator's {MAX_CELLS}; lower regions or cells_per_region"
            )));
        }
        if self.clusters_per_cell > MAX_CLUSTERS_PER_CELL {
            return Err(Error::Config(format!(
                "clusters_per_cell {} is more than {MAX_CLUSTERS_PER_CELL}",
                self.clusters_per_cell
            )));
        }
        self.anchor_ms()?;
        Ok(())
    }

    /// The anchor in milliseconds since the epoch.
    pub fn anchor_ms(&self) -> Result<i64> {
        match &self.anchor {
            Some(text) => parse_time_ms(text).map_err(|e| {
                Error::Config(format!(
                    "anchor {text:?} is not an RFC 3339 time ({e}); write e.g. 2026-11-01T00:00:00Z"
                ))
            }),
            None => Ok(start_of_day_ms(now_ms())),
        }
    }

    /// The fleet file's text, as [`FleetConfig::load`] reads it.
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// The same fleet with its anchor written out, so it can be saved and resumed later.
    pub fn pinned(&self) -> Result<Self> {
        let anchor = self.anchor_ms()?;
        Ok(Self {
            anchor: Some(format_time_ms(anchor)),
            ..self.clone()
        })
    }
}

fn start_of_day_ms(t: i64) -> i64 {
    t - t.rem_euclid(crate::model::DAY_MS)
}

/// Parses an RFC 3339 time such as `2026-11-01T00:00:00Z`.
pub fn parse_time_ms(text: &str) -> Result<i64, humantime::TimestampError> {
    let t = humantime::parse_rfc3339_weak(text.trim())?;
    Ok(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn format_time_ms(t: i64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_and_rejects_unknown_fields_and_bad_anchors() {
        let c: FleetConfig = serde_norway::from_str("seed: 7\nregions: 2\n").expect("parses");
        assert_eq!((c.seed, c.regions, c.cells_per_region), (7, 2, 4));
        assert!(serde_norway::from_str::<FleetConfig>("cells: 3\n").is_err());
        let bad = FleetConfig {
            anchor: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("RFC 3339"));
        let zero = FleetConfig {
            clusters_per_cell: 0,
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn pinning_keeps_the_anchor() {
        let c = FleetConfig {
            anchor: Some("2026-11-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(c.anchor_ms().expect("anchor"), 1_793_491_200_000);
        assert_eq!(c.pinned().expect("pins"), c);
        let text = c.to_yaml().expect("yaml");
        assert_eq!(
            serde_norway::from_str::<FleetConfig>(&text).expect("reads"),
            c
        );
        let today = FleetConfig::default().pinned().expect("pins");
        assert_eq!(today.anchor_ms().expect("anchor") % crate::model::DAY_MS, 0);
    }
}
