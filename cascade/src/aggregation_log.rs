//! The durable input of stream aggregation, so that a crash loses no window.
//!
//! Series that match an aggregation rule are written, before the request is acknowledged, to
//! a relay queue of their own (`<data-dir>/aggregation/queue`), and the aggregator takes its
//! input only from that queue. After each flush whose outputs are durable upstream, the time
//! through which every window has been emitted is persisted (`<data-dir>/aggregation/emitted`:
//! milliseconds since the epoch, little-endian `i64`, and its crc32, replaced atomically).
//!
//! A queue record is acknowledged once no window it can still feed is open: it was read at
//! time T, so its usable samples are at most T + [`MAX_FUTURE_MS`], and every window holding
//! them has ended by T + [`MAX_FUTURE_MS`] + the longest interval. On start the aggregator
//! resumes after the persisted time and replays the records still in the queue: windows
//! emitted before the stop are skipped, the others are rebuilt from their full input. A crash
//! between writing outputs upstream and persisting the time emits those windows again with
//! the same values, which receivers take as duplicates.
//!
//! [`MAX_FUTURE_MS`]: crate::aggregate::MAX_FUTURE_MS

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use prometheus_client::registry::Registry;
use strata_relay::metrics::RelayMetrics;
use strata_relay::{OverflowPolicy, Queue, QueueConfig};

use crate::{Error, Result};

const EMITTED: &str = "emitted";

/// The aggregation input queue and the emitted-through time.
#[derive(Debug)]
pub struct AggregationLog {
    pub queue: Queue,
    dir: PathBuf,
}

impl AggregationLog {
    /// Opens (or creates) the log under `data_dir`; its queue reports as the `aggregation`
    /// destination in `strata_relay_*`.
    pub fn open(data_dir: &Path, registry: &mut Registry) -> Result<Self> {
        let dir = data_dir.join("aggregation");
        let metrics = RelayMetrics::register(registry, "aggregation");
        let config = QueueConfig {
            max_queue_bytes: 1 << 30,
            // Nothing accepted may be lost: a full log refuses new input (429).
            overflow: OverflowPolicy::Block,
            ..QueueConfig::default()
        };
        let queue = Queue::open(dir.join("queue"), config, metrics)?;
        Ok(Self { queue, dir })
    }

    /// The time through which every window was emitted before the last stop, if recorded and
    /// intact.
    pub fn emitted_through(&self) -> Option<i64> {
        let bytes = fs::read(self.dir.join(EMITTED)).ok()?;
        let (value, crc) = bytes.split_at_checked(8)?;
        let crc = u32::from_le_bytes(crc.try_into().ok()?);
        (crc32fast::hash(value) == crc)
            .then(|| i64::from_le_bytes(value.try_into().unwrap_or_default()))
    }

    /// Records that every window ending at or before `ms` was emitted and is durable upstream.
    pub fn set_emitted_through(&self, ms: i64) -> Result<()> {
        let value = ms.to_le_bytes();
        let mut bytes = value.to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&value).to_le_bytes());
        let tmp = self.dir.join(format!("{EMITTED}.tmp"));
        let io = |source| Error::Io {
            path: self.dir.clone(),
            source,
        };
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_data().map_err(io)?;
        fs::rename(&tmp, self.dir.join(EMITTED)).map_err(io)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn emitted_time_survives_reopen_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let log = AggregationLog::open(dir.path(), &mut registry).unwrap();
        assert_eq!(log.emitted_through(), None);
        log.set_emitted_through(1_700_000_000_000).unwrap();
        log.queue.close();
        let log = AggregationLog::open(dir.path(), &mut Registry::default()).unwrap();
        assert_eq!(log.emitted_through(), Some(1_700_000_000_000));
        fs::write(
            dir.path().join("aggregation").join(EMITTED),
            b"garbage!xxxx",
        )
        .unwrap();
        assert_eq!(log.emitted_through(), None);
    }
}
