//! `strata cascade --config cascade.yaml`: who may write (tokens and their labels), per-cell
//! limits, stream aggregation rules, and the upstreams in Prometheus's `remote_write` format.
//!
//! Every section is read strictly: an unknown field or a bad value is an error naming the
//! field, its line and column. Checks that span fields name the token, rule or upstream.
//!
//! ```yaml
//! auth:
//!   tokens:
//!     - name: hz-07                       # the sender, in logs and metrics (never the token)
//!       token_file: /etc/strata/tokens/hz-07
//!       labels: {region: cn-hangzhou, cell: hz-07}
//!       action: enforce                   # or stamp
//! limits:
//!   max_active_series: 2000000            # per cell; 0 is no limit
//!   max_samples_per_second: 200000        # per cell; 0 is no limit
//! stream_aggregation:
//!   lateness: 30s
//!   rules:
//!     - match: 'container_cpu_usage_seconds_total'
//!       interval: 1m
//!       without: [pod, container, instance]
//!       outputs: [increase, rate]
//! remote_write:
//!   - url: http://central-a:9301/api/v1/write
//!     name: az-a
//!   - url: http://central-b:9301/api/v1/write
//!     name: az-b
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strata_relay::remote_write::{self, PromDuration, RemoteWriteConfig};
use strata_relay::{OverflowPolicy, QueueConfig};
use strata_wire::labels::is_valid_label_name;

use crate::aggregate::RuleConfig;
use crate::{Error, Result};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub stream_aggregation: AggregationConfig,
    pub queue: UpstreamQueueConfig,
    /// The upstreams: centrals, or another cascade. At least one.
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Largest accepted request body (compressed); 413 above. Default 32 MiB.
    pub max_request_bytes: Option<usize>,
    /// Largest decoded body; guards against snappy bombs. Default 256 MiB.
    pub max_decoded_bytes: Option<usize>,
}

/// Bearer tokens of the senders. Without tokens every request is accepted as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// What a token's labels do to the series written with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelAction {
    /// A request holding a series without exactly these labels is refused (403), nothing of
    /// it written.
    #[default]
    Enforce,
    /// Every series gets these labels, replacing values it carried.
    Stamp,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The sender's name in logs, metrics and status (the token itself never appears).
    pub name: String,
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored); read on start and reload.
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub action: LabelAction,
}

/// Limits per cell: the cell is the value of `cell_label` on each series (after stamping).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Default `cell`.
    pub cell_label: String,
    /// Series seen within `active_series_idle_timeout`; a new series over the limit is
    /// refused (429), known series keep flowing. 0: no limit.
    pub max_active_series: u64,
    /// Default 20m.
    pub active_series_idle_timeout: PromDuration,
    /// Samples (with histograms and exemplars) per second, averaged over
    /// `samples_burst_seconds`; a request over it is refused whole (429). 0: no limit.
    pub max_samples_per_second: u64,
    /// Default 10: a cell may send ten seconds' worth of its rate at once.
    pub samples_burst_seconds: u64,
    /// Limits of particular cells, overriding the two above.
    pub cells: BTreeMap<String, CellLimits>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            cell_label: "cell".into(),
            max_active_series: 0,
            active_series_idle_timeout: PromDuration(Duration::from_secs(20 * 60)),
            max_samples_per_second: 0,
            samples_burst_seconds: 10,
            cells: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CellLimits {
    pub max_active_series: Option<u64>,
    pub max_samples_per_second: Option<u64>,
}

impl LimitsConfig {
    /// The limits of `cell`: (max active series, max samples per second), 0 for none.
    pub fn of(&self, cell: &str) -> (u64, u64) {
        let over = self.cells.get(cell).copied().unwrap_or_default();
        (
            over.max_active_series.unwrap_or(self.max_active_series),
            over.max_samples_per_second
                .unwrap_or(self.max_samples_per_second),
        )
    }

    /// True when some cell has a limit of either kind.
    pub fn any(&self) -> bool {
        self.max_active_series > 0
            || self.max_samples_per_second > 0
            || self.cells.values().any(|c| {
                c.max_active_series.is_some_and(|n| n > 0)
                    || c.max_samples_per_second.is_some_and(|n| n > 0)
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregationConfig {
    /// How long after a window's end samples for it are still taken. Default 30s.
    pub lateness: PromDuration,
    pub rules: Vec<RuleConfig>,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            lateness: PromDuration(Duration::from_secs(30)),
            rules: Vec::new(),
        }
    }
}

/// The queue of every upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamQueueConfig {
    /// Bound of each upstream's queue on disk. Default 4 GiB.
    pub max_queue_bytes: u64,
    /// `block` (default): a full queue makes the cascade answer 429, so senders keep the data
    /// in their own queues; nothing is lost, but a long outage of one upstream eventually
    /// holds back the others too. `drop_oldest`: the other upstreams never wait; the oldest
    /// data of the full queue is dropped (counted), and centrals fill the gap from their
    /// peer (peer backfill).
    pub overflow: OverflowPolicy,
}

impl Default for UpstreamQueueConfig {
    fn default() -> Self {
        Self {
            max_queue_bytes: 4 << 30,
            overflow: OverflowPolicy::Block,
        }
    }
}

impl UpstreamQueueConfig {
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            max_queue_bytes: self.max_queue_bytes,
            overflow: self.overflow,
            ..QueueConfig::default()
        }
    }
}

impl Config {
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 << 20;
    pub const DEFAULT_MAX_DECODED_BYTES: usize = 256 << 20;

    /// Reads and checks the file at `path`; the error names the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read {}: {e}; pass the cascade's YAML file with --config",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a configuration; the error says which field, where, and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        // The rules compile here, so a bad rule fails the load (and `--check`), not the start.
        crate::aggregate::Aggregator::new(
            &c.stream_aggregation.rules,
            c.stream_aggregation.lateness.0.as_millis() as i64,
        )?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.remote_write.is_empty() {
            return Err(
                "remote_write: at least one upstream is needed, e.g.\n  remote_write:\n    - url: http://127.0.0.1:9301/api/v1/write"
                    .into(),
            );
        }
        remote_write::check_all(&self.remote_write)?;
        self.queue
            .queue_config()
            .validate()
            .map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let at = |m: &str| format!("auth.tokens[{i}] ({:?}): {m}", t.name);
            if t.name.is_empty() {
                return Err(format!(
                    "auth.tokens[{i}]: name is empty; name the sender, e.g. its cell"
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(at("another token has the same name"));
            }
            match (&t.token, &t.token_file) {
                (Some(_), Some(_)) => return Err(at("set token or token_file, not both")),
                (None, None) => return Err(at("set token or token_file")),
                (Some(tok), None) if tok.trim().is_empty() => return Err(at("token is empty")),
                _ => {}
            }
            for (name, value) in &t.labels {
                if !is_valid_label_name(name) || name == "__name__" {
                    return Err(at(&format!("{name:?} cannot be a token label")));
                }
                if value.is_empty() {
                    return Err(at(&format!("label {name} has an empty value")));
                }
            }
        }
        if !is_valid_label_name(&self.limits.cell_label) {
            return Err(format!(
                "limits.cell_label {:?} is not a valid label name",
                self.limits.cell_label
            ));
        }
        if self.limits.samples_burst_seconds == 0 {
            return Err("limits.samples_burst_seconds must be at least 1".into());
        }
        if self.limits.active_series_idle_timeout.0 < Duration::from_secs(1) {
            return Err("limits.active_series_idle_timeout must be at least 1s".into());
        }
        Ok(())
    }

    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
            .unwrap_or(Self::DEFAULT_MAX_REQUEST_BYTES)
    }

    pub fn max_decoded_bytes(&self) -> usize {
        self.max_decoded_bytes
            .unwrap_or(Self::DEFAULT_MAX_DECODED_BYTES)
    }
}
