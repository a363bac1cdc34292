//! The durable, segmented on-disk queue of one destination.
//!
//! # On-disk layout
//! ```text
//! <dir>/00000000000000000007.seg   segment files, named by a 20-digit increasing id
//! <dir>/00000000000000000008.seg
//! <dir>/checkpoint                 read position: segment id (u64 LE), offset (u64 LE), crc32 (u32 LE)
//! ```
//! A segment is a sequence of records:
//! ```text
//! | payload length u32 LE | crc32 u32 LE over (samples ‖ payload) | samples u32 LE | payload |
//! ```
//! The payload is a snappy-compressed protobuf `prometheus.WriteRequest` (a remote-write 1.0
//! body), so a record is exactly what goes on the wire.
//!
//! # Guarantees
//! - [`Queue::append`] returns only after the record is fsynced (group commit: a dedicated
//!   thread fsyncs whatever has been written since its last fsync, so concurrent appends share
//!   one fsync). A caller may acknowledge its own sender once `append` returns.
//! - Records are handed to the reader in append order and stay on disk until [`Queue::ack`].
//!   The position of the oldest unacknowledged record is checkpointed every
//!   `checkpoint_interval_ms`; a crash re-delivers at most that much already-acknowledged data
//!   (at-least-once: receivers treat identical duplicates as no-ops).
//! - On start every record after the checkpoint is verified. A torn or corrupt tail of the last
//!   segment (a crash mid-write) is truncated; a corrupt record in an older segment is reported
//!   and the rest of that segment skipped. Nothing panics on bad bytes. Writing continues in a
//!   new segment, never after recovered bytes.
//! - An fsync error is fail-stop: Linux reports it once and may drop the dirty pages, so a
//!   retry could claim durability that is not there. The waiting appenders get an error (the
//!   receiver answers 503), later appends are refused, and a restart re-verifies every record.
//! - Segment ids never repeat, even after everything was delivered and deleted, so a stale
//!   checkpoint can never point past live data.
//! - At most `max_queue_bytes` are pending. When full, `block` refuses new records
//!   ([`Error::QueueFull`]) and `drop_oldest` deletes the oldest segments, counting their
//!   samples as dropped (`queue_full`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strata_wire::WriteRequest;
use strata_wire::raw::Entry;
use tokio::sync::{Notify, watch};

use crate::config::{OverflowPolicy, QueueConfig};
use crate::metrics::{DropReason, RelayMetrics};
use crate::{Error, Result};

const HEADER_LEN: u64 = 12;
/// Larger records are treated as corruption on recovery.
const MAX_RECORD_BYTES: u64 = 256 << 20;
const CHECKPOINT: &str = "checkpoint";

/// One record handed to the reader.
#[derive(Debug, Clone)]
pub struct Record {
    /// Position in the queue; pass it to [`Queue::ack`] once delivered.
    pub seq: u64,
    pub decoded: Decoded,
    pub samples: u64,
}

/// A record's decompressed `prometheus.WriteRequest` and its series and metadata entries, in
/// order. A hop writing one batch to several queues decodes it once and hands it to each
/// ([`Queue::submit_decoded`]); their readers then share it instead of reading the record back
/// from disk, decompressing and splitting it once per queue.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub body: Arc<Vec<u8>>,
    pub entries: Arc<Vec<Entry>>,
}

impl Decoded {
    /// A body with its entries as [`strata_wire::raw::entries`] gives them (for example from
    /// [`strata_wire::view::ValidatedView::take_entries`]).
    pub fn with_entries(body: Vec<u8>, entries: Vec<Entry>) -> Self {
        Self {
            body: Arc::new(body),
            entries: Arc::new(entries),
        }
    }

    /// Splits a decompressed body into its entries.
    pub fn new(body: Vec<u8>) -> Result<Self> {
        let entries = strata_wire::raw::entries(&body)?;
        Ok(Self::with_entries(body, entries))
    }
}

/// Decoded bodies kept for the reader at most, per queue; beyond, records are read back from
/// disk when their turn comes.
const DECODED_CACHE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    seq: u64,
    segment: u64,
    offset: u64,
    /// Header plus payload.
    len: u64,
    samples: u64,
    acked: bool,
}

#[derive(Debug)]
struct State {
    /// Live segment ids, oldest first; the last one is being written.
    segments: VecDeque<u64>,
    writer: File,
    writer_len: u64,
    /// Unacknowledged records, oldest first, with contiguous `seq`.
    records: VecDeque<RecordMeta>,
    /// Seq of the next record appended; also the count of records written (the target of
    /// the next fsync).
    next_seq: u64,
    /// Next record to hand to the reader.
    read_seq: u64,
    pending_bytes: u64,
    pending_samples: u64,
    /// Count of records known to be fsynced.
    synced_seq: u64,
    checkpoint_dirty: bool,
    /// Decoded records not yet read, by seq, and their body bytes in total.
    decoded: std::collections::HashMap<u64, Decoded>,
    decoded_bytes: usize,
    closed: bool,
    /// Set when an fsync failed; see the module docs.
    failed: bool,
}

/// What appenders wait on: the highest fsynced seq, and whether waiting is over regardless
/// (closed or failed).
#[derive(Debug, Clone, Copy)]
struct Durable {
    synced: u64,
    stopped: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: QueueConfig,
    segment_bytes: u64,
    metrics: RelayMetrics,
    state: Mutex<State>,
    /// Wakes the sync thread.
    work: Condvar,
    /// Highest fsynced seq, for appenders waiting on durability.
    synced: watch::Sender<Durable>,
    /// Wakes the reader when a record arrives.
    readable: Notify,
}

/// A handle to the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// A record written by [`Queue::submit`], not yet known to be durable.
#[derive(Debug)]
#[must_use = "a submitted record is acknowledged only once durable() returned Ok"]
pub struct Submitted {
    queue: Queue,
    seq: u64,
}

impl Submitted {
    /// Waits until the record is fsynced.
    pub async fn durable(self) -> Result<()> {
        let mut rx = self.queue.inner.synced.subscribe();
        let durable = *rx
            .wait_for(|d| d.synced >= self.seq || d.stopped)
            .await
            .map_err(|_| Error::QueueClosed)?;
        if durable.synced >= self.seq {
            Ok(())
        } else if self.queue.lock().failed {
            Err(Error::QueueIo {
                path: self.queue.inner.dir.clone(),
                source: std::io::Error::other("fsync failed; the batch may not be durable"),
            })
        } else {
            Err(Error::QueueClosed)
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Creates segment `id` for appending and makes its directory entry durable.
fn create_segment(dir: &Path, id: u64) -> Result<File> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, recovering whatever a previous process left.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: QueueConfig,
        metrics: RelayMetrics,
    ) -> Result<Self> {
        let dir = dir.into();
        let segment_bytes = config.validate()?;
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let recovered = recover(&dir, &metrics)?;
        let next_id = recovered.max_id + 1;
        let writer = create_segment(&dir, next_id)?;
        let mut segments: VecDeque<u64> = recovered.segments.into();
        segments.push_back(next_id);
        let records: VecDeque<RecordMeta> = recovered.records.into();
        let pending_bytes = records.iter().map(|r| r.len).sum();
        let pending_samples = records.iter().map(|r| r.samples).sum();
        let next_seq = records.len() as u64;
        metrics.pending_bytes.set(pending_bytes as i64);
        metrics.pending_samples.set(pending_samples as i64);
        let (synced, _) = watch::channel(Durable {
            synced: next_seq,
            stopped: false,
        });
        let inner = Arc::new(Inner {
            dir,
            config,
            segment_bytes,
            metrics,
            state: Mutex::new(State {
                segments,
                writer,
                writer_len: 0,
                records,
                next_seq,
                read_seq: 0,
                pending_bytes,
                pending_samples,
                synced_seq: next_seq,
                checkpoint_dirty: true,
                decoded: std::collections::HashMap::new(),
                decoded_bytes: 0,
                closed: false,
                failed: false,
            }),
            work: Condvar::new(),
            synced,
            readable: Notify::new(),
        });
        let sync_inner = inner.clone();
        std::thread::Builder::new()
            .name("queue-sync".into())
            .spawn(move || sync_loop(&sync_inner))
            .map_err(Error::io(&inner.dir))?;
        // Recovery kept only segments with undelivered records, so nothing is left to delete.
        Ok(Queue { inner })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state is still consistent
        // enough to keep serving (every mutation is completed before the guard drops).
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `request` and waits until it is durable on disk.
    pub async fn append(&self, request: &WriteRequest) -> Result<()> {
        let payload = request.encode_snappy()?;
        self.append_payload(&payload, request.item_count() as u64)
            .await
    }

    /// Appends an already encoded record, a snappy-compressed `prometheus.WriteRequest`
    /// holding `items` samples, histograms and exemplars, and waits until it is durable.
    pub async fn append_payload(&self, payload: &[u8], items: u64) -> Result<()> {
        self.submit(payload, items)?.durable().await
    }

    /// Writes a record like [`Queue::append_payload`] without waiting: a hop writing one
    /// batch to several queues submits to all, then waits on each, so their fsyncs overlap.
    pub fn submit(&self, payload: &[u8], items: u64) -> Result<Submitted> {
        let seq = self.append_encoded(payload, items, None)?;
        Ok(Submitted {
            queue: self.clone(),
            seq,
        })
    }

    /// [`Queue::submit`], handing the reader the record already decoded when it has room for it.
    pub fn submit_decoded(
        &self,
        payload: &[u8],
        items: u64,
        decoded: &Decoded,
    ) -> Result<Submitted> {
        let seq = self.append_encoded(payload, items, Some(decoded))?;
        Ok(Submitted {
            queue: self.clone(),
            seq,
        })
    }

    /// False when a record of `bytes` would be refused as full under the `block` policy
    /// (always true under `drop_oldest`).
    pub fn has_room(&self, bytes: u64) -> bool {
        self.inner.config.overflow == OverflowPolicy::DropOldest
            || self.lock().pending_bytes + HEADER_LEN + bytes <= self.inner.config.max_queue_bytes
    }

    /// Writes one record; returns the seq the caller must see synced (1-based count).
    fn append_encoded(
        &self,
        payload: &[u8],
        samples: u64,
        decoded: Option<&Decoded>,
    ) -> Result<u64> {
        let len = HEADER_LEN + payload.len() as u64;
        let max = self.inner.config.max_queue_bytes;
        if len > max || payload.len() as u64 > MAX_RECORD_BYTES {
            return Err(Error::RecordTooLarge {
                bytes: len,
                max_bytes: max.min(MAX_RECORD_BYTES),
            });
        }
        let mut st = self.lock();
        if st.closed {
            return Err(Error::QueueClosed);
        }
        if st.failed {
            return Err(Error::QueueIo {
                path: self.inner.dir.clone(),
                source: std::io::Error::other("an earlier fsync failed; restart to recover"),
            });
        }
        if st.pending_bytes + len > max {
            match self.inner.config.overflow {
                OverflowPolicy::Block => {
                    return Err(Error::QueueFull {
                        pending_bytes: st.pending_bytes,
                        max_bytes: max,
                    });
                }
                OverflowPolicy::DropOldest => self.drop_oldest(&mut st, len)?,
            }
        }
        if st.writer_len > 0 && st.writer_len + len > self.inner.segment_bytes {
            self.rotate(&mut st)?;
        }
        let mut buf = Vec::with_capacity(len as usize);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&(samples as u32).to_le_bytes());
        crc.update(payload);
        buf.extend_from_slice(&crc.finalize().to_le_bytes());
        buf.extend_from_slice(&(samples as u32).to_le_bytes());
        buf.extend_from_slice(payload);
        let segment = *st.segments.back().unwrap_or(&0);
        if let Err(e) = st.writer.write_all(&buf) {
            // Leave no partial record behind: cut the segment back to its last good length.
            let _ = st.writer.set_len(st.writer_len);
            return Err(Error::io(segment_path(&self.inner.dir, segment))(e));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let offset = st.writer_len;
        st.writer_len += len;
        st.records.push_back(RecordMeta {
            seq,
            segment,
            offset,
            len,
            samples,
            acked: false,
        });
        st.pending_bytes += len;
        st.pending_samples += samples;
        if let Some(d) = decoded
            && st.decoded_bytes + d.body.len() <= DECODED_CACHE_BYTES
        {
            st.decoded_bytes += d.body.len();
            st.decoded.insert(seq, d.clone());
        }
        self.publish(&st);
        self.inner.metrics.samples_enqueued.inc_by(samples);
        drop(st);
        self.inner.work.notify_one();
        self.inner.readable.notify_one();
        Ok(seq + 1)
    }

    /// Closes the active segment (fsynced) and starts the next one.
    fn rotate(&self, st: &mut State) -> Result<()> {
        let dir = &self.inner.dir;
        let current = *st.segments.back().unwrap_or(&0);
        st.writer
            .sync_data()
            .map_err(Error::io(segment_path(dir, current)))?;
        let id = current + 1;
        st.writer = create_segment(dir, id)?;
        st.segments.push_back(id);
        st.writer_len = 0;
        Ok(())
    }

    /// Deletes whole oldest segments until `need` more bytes fit.
    fn drop_oldest(&self, st: &mut State, need: u64) -> Result<()> {
        let max = self.inner.config.max_queue_bytes;
        while st.pending_bytes + need > max {
            if st.segments.len() == 1 {
                self.rotate(st)?;
            }
            let Some(victim) = st.segments.pop_front() else {
                break;
            };
            let mut dropped = 0;
            while st.records.front().is_some_and(|r| r.segment == victim) {
                if let Some(r) = st.records.pop_front() {
                    st.pending_bytes -= r.len;
                    st.pending_samples -= r.samples;
                    if let Some(d) = st.decoded.remove(&r.seq) {
                        st.decoded_bytes -= d.body.len();
                    }
                    // Records already handed to the sender are counted as sent or rejected there.
                    if !r.acked && r.seq >= st.read_seq {
                        dropped += r.samples;
                    }
                }
            }
            let path = segment_path(&self.inner.dir, victim);
            let _ = fs::remove_file(&path);
            self.inner.metrics.dropped(DropReason::QueueFull, dropped);
            tracing::warn!(segment = %path.display(), samples = dropped, "queue full: dropped oldest segment");
        }
        if let Some(front) = st.records.front() {
            st.read_seq = st.read_seq.max(front.seq);
        } else {
            st.read_seq = st.next_seq;
        }
        st.checkpoint_dirty = true;
        self.publish(st);
        Ok(())
    }

    fn publish(&self, st: &State) {
        self.inner
            .metrics
            .pending_bytes
            .set(st.pending_bytes as i64);
        self.inner
            .metrics
            .pending_samples
            .set(st.pending_samples as i64);
    }

    /// Waits for and returns the next record in order. Returns `None` once the queue is closed.
    pub async fn next(&self) -> Option<Record> {
        loop {
            let notified = self.inner.readable.notified();
            let found = {
                let mut st = self.lock();
                if st.closed {
                    return None;
                }
                let front = st.records.front().map_or(st.next_seq, |r| r.seq);
                st.read_seq = st.read_seq.max(front);
                let meta = st.records.get((st.read_seq - front) as usize).copied();
                if meta.is_some() {
                    st.read_seq += 1;
                }
                meta
            };
            match found {
                Some(meta) => match self.take_decoded(meta).map_or_else(|| self.read(meta), Ok) {
                    Ok(record) => return Some(record),
                    Err(Error::Wire(e)) => {
                        // The checksum matched but the payload does not decode: nothing will
                        // ever send it, so count it and move on.
                        tracing::error!(seq = meta.seq, error = %e, "undecodable queue record; dropping it");
                        self.inner.metrics.corrupt_bytes.inc_by(meta.len);
                        self.ack(meta.seq);
                    }
                    Err(e) => {
                        let still_queued = {
                            let mut st = self.lock();
                            let queued = st.records.front().is_some_and(|f| f.seq <= meta.seq);
                            if queued {
                                st.read_seq = st.read_seq.min(meta.seq);
                            }
                            queued
                        };
                        if still_queued {
                            // A transient I/O error (e.g. out of file descriptors): keep the
                            // record and read it again shortly.
                            tracing::warn!(seq = meta.seq, error = %e, "cannot read queue record; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                },
                None => notified.await,
            }
        }
    }

    /// The record as its writer decoded it, if that is cached.
    fn take_decoded(&self, meta: RecordMeta) -> Option<Record> {
        let mut st = self.lock();
        let decoded = st.decoded.remove(&meta.seq)?;
        st.decoded_bytes -= decoded.body.len();
        Some(Record {
            seq: meta.seq,
            decoded,
            samples: meta.samples,
        })
    }

    fn read(&self, meta: RecordMeta) -> Result<Record> {
        let path = segment_path(&self.inner.dir, meta.segment);
        let file = File::open(&path).map_err(Error::io(&path))?;
        let mut buf = vec![0; (meta.len - HEADER_LEN) as usize];
        file.read_exact_at(&mut buf, meta.offset + HEADER_LEN)
            .map_err(Error::io(&path))?;
        let body = strata_wire::snappy::decompress(&buf, usize::MAX)?;
        Ok(Record {
            seq: meta.seq,
            decoded: Decoded::new(body)?,
            samples: meta.samples,
        })
    }

    /// Marks a record delivered (or given up on). Its space is reclaimed once every older
    /// record is acknowledged too.
    pub fn ack(&self, seq: u64) {
        let mut st = self.lock();
        let Some(front) = st.records.front().map(|r| r.seq) else {
            return;
        };
        if seq < front {
            return; // already dropped
        }
        if let Some(r) = st.records.get_mut((seq - front) as usize) {
            r.acked = true;
        }
        let mut advanced = false;
        while st.records.front().is_some_and(|r| r.acked) {
            if let Some(r) = st.records.pop_front() {
                st.pending_bytes -= r.len;
                st.pending_samples -= r.samples;
                advanced = true;
            }
        }
        if advanced {
            st.checkpoint_dirty = true;
            self.publish(&st);
            self.delete_acked_segments(&mut st);
        }
    }

    /// Unlinks segments that hold no unacknowledged record and are not being written.
    fn delete_acked_segments(&self, st: &mut State) {
        let keep_from = st
            .records
            .front()
            .map_or_else(|| *st.segments.back().unwrap_or(&0), |r| r.segment);
        while st.segments.len() > 1 && st.segments.front().is_some_and(|&id| id < keep_from) {
            if let Some(id) = st.segments.pop_front() {
                let path = segment_path(&self.inner.dir, id);
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete delivered segment");
                }
            }
        }
    }

    /// The seq the next record will get: every record already in the queue has a lower one
    /// (so a reader can tell records recovered on open from those written since).
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Unacknowledged bytes and samples.
    pub fn pending(&self) -> (u64, u64) {
        let st = self.lock();
        (st.pending_bytes, st.pending_samples)
    }

    /// Stops the queue: writes a final checkpoint, wakes readers (they get `None`) and the sync
    /// thread (it exits).
    pub fn close(&self) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        if !st.failed && st.writer.sync_data().is_ok() {
            st.synced_seq = st.next_seq;
        }
        self.inner.synced.send_replace(Durable {
            synced: st.synced_seq,
            stopped: true,
        });
        if let Err(e) = write_checkpoint(&self.inner.dir, &st) {
            tracing::warn!(error = %e, "cannot write queue checkpoint on close");
        }
        drop(st);
        self.inner.work.notify_all();
        self.inner.readable.notify_waiters();
    }
}

/// The group-commit thread: fsyncs what was written since the last fsync, wakes the waiting
/// appenders, and checkpoints the read position periodically.
fn sync_loop(inner: &Inner) {
    let interval = Duration::from_millis(inner.config.checkpoint_interval_ms.max(10));
    let mut last_checkpoint = Instant::now();
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.closed || st.failed {
            return;
        }
        // Checkpoint on schedule even under constant appends, so re-delivery stays bounded.
        if st.checkpoint_dirty && last_checkpoint.elapsed() >= interval {
            last_checkpoint = Instant::now();
            match write_checkpoint(&inner.dir, &st) {
                Ok(()) => st.checkpoint_dirty = false,
                Err(e) => tracing::warn!(error = %e, "cannot write queue checkpoint; will retry"),
            }
        }
        if st.next_seq > st.synced_seq {
            let target = st.next_seq;
            let file = st.writer.try_clone();
            drop(st);
            let synced = file.and_then(|f| f.sync_data());
            st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            match synced {
                Ok(()) => st.synced_seq = st.synced_seq.max(target),
                Err(e) => {
                    tracing::error!(error = %e, dir = %inner.dir.display(),
                        "queue fsync failed: refusing further writes until restart");
                    st.failed = true;
                }
            }
            inner.synced.send_replace(Durable {
                synced: st.synced_seq,
                stopped: st.failed,
            });
            continue;
        }
        st = inner
            .work
            .wait_timeout(st, interval)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn write_checkpoint(dir: &Path, st: &State) -> Result<()> {
    let (segment, offset) = match st.records.front() {
        Some(r) => (r.segment, r.offset),
        None => (*st.segments.back().unwrap_or(&0), st.writer_len),
    };
    let mut buf = Vec::with_capacity(20);
    buf.extend_from_slice(&segment.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&buf).to_le_bytes());
    let tmp = dir.join("checkpoint.tmp");
    let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .map_err(Error::io(&tmp))?;
    fs::rename(&tmp, dir.join(CHECKPOINT)).map_err(Error::io(dir))?;
    sync_dir(dir)
}

fn read_checkpoint(dir: &Path) -> Option<(u64, u64)> {
    let mut buf = Vec::new();
    File::open(dir.join(CHECKPOINT))
        .and_then(|mut f| f.read_to_end(&mut buf))
        .ok()?;
    if buf.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes(buf[16..20].try_into().ok()?);
    if crc32fast::hash(&buf[..16]) != crc {
        return None;
    }
    Some((
        u64::from_le_bytes(buf[0..8].try_into().ok()?),
        u64::from_le_bytes(buf[8..16].try_into().ok()?),
    ))
}

struct Recovered {
    segments: Vec<u64>,
    /// Highest segment id seen on disk or in the checkpoint; new ids start above it.
    max_id: u64,
    records: Vec<RecordMeta>,
}

/// Scans the segments after the checkpoint; see the module docs for what is kept.
fn recover(dir: &Path, metrics: &RelayMetrics) -> Result<Recovered> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    let (cp_segment, cp_offset) = read_checkpoint(dir).unwrap_or((0, 0));
    let mut out = Recovered {
        max_id: ids.last().copied().unwrap_or(0).max(cp_segment),
        segments: Vec::new(),
        records: Vec::new(),
    };
    let last = ids.last().copied();
    for id in ids {
        let path = segment_path(dir, id);
        if id < cp_segment {
            fs::remove_file(&path).map_err(Error::io(&path))?;
            continue;
        }
        let start = if id == cp_segment { cp_offset } else { 0 };
        let data = fs::read(&path).map_err(Error::io(&path))?;
        let (records, good_end) = scan_segment(id, &data, start, out.records.len() as u64);
        if good_end < data.len() as u64 {
            let bad = data.len() as u64 - good_end;
            if Some(id) == last {
                tracing::warn!(segment = %path.display(), offset = good_end, bytes = bad,
                    "truncating torn or corrupt tail of the queue (interrupted write)");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(good_end).and_then(|()| f.sync_all()))
                    .map_err(Error::io(&path))?;
            } else {
                tracing::error!(segment = %path.display(), offset = good_end, bytes = bad,
                    "corrupt record in queue segment; skipping the rest of this segment");
            }
            metrics.corrupt_bytes.inc_by(bad);
        }
        if records.is_empty() {
            fs::remove_file(&path).map_err(Error::io(&path))?;
            continue;
        }
        out.segments.push(id);
        out.records.extend(records);
    }
    Ok(out)
}

/// Returns the valid records from `start` and the offset where valid data ends.
fn scan_segment(id: u64, data: &[u8], start: u64, first_seq: u64) -> (Vec<RecordMeta>, u64) {
    let mut records = Vec::new();
    let mut pos = start.min(data.len() as u64);
    loop {
        let rest = &data[pos as usize..];
        if rest.len() < HEADER_LEN as usize {
            break;
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let payload_len = u64::from(word(0));
        let crc = word(4);
        let samples = word(8);
        let len = HEADER_LEN + payload_len;
        if payload_len > MAX_RECORD_BYTES || len > rest.len() as u64 {
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[8..len as usize]);
        if h.finalize() != crc {
            break;
        }
        records.push(RecordMeta {
            seq: first_seq + records.len() as u64,
            segment: id,
            offset: pos,
            len,
            samples: u64::from(samples),
            acked: false,
        });
        pos += len;
    }
    (records, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use strata_wire::{Label, Sample, TimeSeries};

    fn metrics() -> RelayMetrics {
        RelayMetrics::register(&mut Registry::default(), "test")
    }

    fn request(i: i64, n: usize) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "m"), Label::new("i", i.to_string())],
                samples: (0..n)
                    .map(|t| Sample {
                        value: t as f64,
                        timestamp: t as i64,
                    })
                    .collect(),
                ..Default::default()
            }],
            metadata: vec![],
        }
    }

    fn config() -> QueueConfig {
        QueueConfig {
            max_queue_bytes: 1 << 20,
            segment_bytes: 4096,
            checkpoint_interval_ms: 10,
            ..Default::default()
        }
    }

    fn label_i(r: &Record) -> String {
        let request = WriteRequest::decode_body(&r.decoded.body).expect("a queued request decodes");
        request.timeseries[0].labels[1].value.clone()
    }

    #[tokio::test]
    async fn delivers_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        for i in 0..100 {
            q.append(&request(i, 10)).await.unwrap();
        }
        assert_eq!(q.pending().1, 1000);
        for i in 0..40 {
            let r = q.next().await.unwrap();
            assert_eq!(label_i(&r), i.to_string());
            q.ack(r.seq);
        }
        q.close();
        let m = metrics();
        let q = Queue::open(dir.path(), config(), m.clone()).unwrap();
        assert_eq!(
            q.pending().1,
            600,
            "acknowledged records are not redelivered"
        );
        assert_eq!(m.pending_samples.get(), 600);
        for i in 40..100 {
            let r = q.next().await.unwrap();
            assert_eq!(label_i(&r), i.to_string());
            q.ack(r.seq);
        }
        assert_eq!(q.pending(), (0, 0));
        q.close();
        // Delivered segments are deleted: only the active (empty) segment and checkpoint stay.
        let segs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count();
        assert!(segs <= 2, "{segs} segments left");
    }

    #[tokio::test]
    async fn decoded_records_are_shared_and_the_disk_copy_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        let req = request(7, 3);
        let decoded = Decoded::new(req.encode_body()).unwrap();
        let payload = req.encode_snappy().unwrap();
        q.submit_decoded(&payload, 3, &decoded)
            .unwrap()
            .durable()
            .await
            .unwrap();
        q.append(&request(8, 2)).await.unwrap();
        let shared = q.next().await.unwrap();
        assert!(Arc::ptr_eq(&shared.decoded.body, &decoded.body));
        assert_eq!((shared.seq, shared.samples), (0, 3));
        let from_disk = q.next().await.unwrap();
        assert_eq!(label_i(&from_disk), "8");
        // After a restart the same record comes from disk, decoded the same way.
        q.close();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        let again = q.next().await.unwrap();
        assert_eq!(again.decoded.body, decoded.body);
        assert_eq!(again.decoded.entries, decoded.entries);
    }

    #[tokio::test]
    async fn out_of_order_acks_keep_unacked_records() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        for i in 0..3 {
            q.append(&request(i, 1)).await.unwrap();
        }
        let a = q.next().await.unwrap();
        let b = q.next().await.unwrap();
        let c = q.next().await.unwrap();
        q.ack(c.seq);
        q.ack(b.seq);
        assert_eq!(q.pending().1, 3, "head not acknowledged yet");
        q.close();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        let again = q.next().await.unwrap();
        assert_eq!(
            label_i(&again),
            label_i(&a),
            "unacknowledged head is redelivered"
        );
        q.ack(a.seq);
        q.close();
    }

    #[tokio::test]
    async fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        for i in 0..5 {
            q.append(&request(i, 3)).await.unwrap();
        }
        q.close();
        let last = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "seg") && fs::metadata(p).unwrap().len() > 0
            })
            .max()
            .unwrap();
        // Simulate a crash mid-write: half a record at the end, then garbage in the last byte.
        let len = fs::metadata(&last).unwrap().len();
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(len - 7).unwrap();
        let m = metrics();
        let q = Queue::open(dir.path(), config(), m.clone()).unwrap();
        assert_eq!(q.pending().1, 12, "four whole records survive");
        assert!(m.corrupt_bytes.get() > 0);
        for i in 0..4 {
            assert_eq!(label_i(&q.next().await.unwrap()), i.to_string());
        }
        q.append(&request(9, 1)).await.unwrap();
        assert_eq!(label_i(&q.next().await.unwrap()), "9");
        q.close();
    }

    #[tokio::test]
    async fn segment_ids_never_repeat_so_a_stale_checkpoint_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        for i in 0..20 {
            q.append(&request(i, 50)).await.unwrap();
            let r = q.next().await.unwrap();
            q.ack(r.seq);
        }
        q.close();
        let old_checkpoint = fs::read(dir.path().join(CHECKPOINT)).unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        for i in 0..5 {
            q.append(&request(100 + i, 1)).await.unwrap();
        }
        q.close();
        // A crash that lost the newer checkpoint: the old one names a higher segment id than
        // a restarted id sequence would use, but ids continue upwards, so nothing is deleted.
        fs::write(dir.path().join(CHECKPOINT), old_checkpoint).unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        assert_eq!(q.pending().1, 5);
        assert_eq!(label_i(&q.next().await.unwrap()), "100");
        q.close();
    }

    #[tokio::test]
    async fn corrupt_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("00000000000000000001.seg"),
            b"\xff\xff\xff\x7fgarbage",
        )
        .unwrap();
        fs::write(dir.path().join("00000000000000000002.seg"), [0u8; 100]).unwrap();
        fs::write(dir.path().join(CHECKPOINT), b"short").unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        assert_eq!(q.pending(), (0, 0));
        q.append(&request(1, 1)).await.unwrap();
        assert_eq!(label_i(&q.next().await.unwrap()), "1");
        q.close();
    }

    #[tokio::test]
    async fn block_policy_refuses_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), config(), metrics()).unwrap();
        let big = request(0, 20_000);
        let mut accepted = 0;
        let err = loop {
            match q.append(&big).await {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::QueueFull { .. }), "{err}");
        assert!(accepted > 0);
        let r = q.next().await.unwrap();
        q.ack(r.seq);
        q.append(&big).await.unwrap();
        q.close();
    }

    #[tokio::test]
    async fn drop_oldest_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let m = metrics();
        let cfg = QueueConfig {
            overflow: OverflowPolicy::DropOldest,
            ..config()
        };
        let q = Queue::open(dir.path(), cfg, m.clone()).unwrap();
        let mut total = 0;
        for i in 0..400 {
            q.append(&request(i, 2000)).await.unwrap();
            total += 2000;
        }
        let (bytes, pending) = q.pending();
        assert!(bytes <= 1 << 20);
        let dropped = m.dropped_count(DropReason::QueueFull);
        assert!(dropped > 0);
        assert_eq!(
            pending + dropped,
            total,
            "every sample is pending or counted as dropped"
        );
        let first = q.next().await.unwrap();
        assert_ne!(label_i(&first), "0", "the oldest were dropped");
        q.close();
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(
            dir.path(),
            QueueConfig {
                segment_bytes: 1 << 16,
                ..config()
            },
            metrics(),
        )
        .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    q.append(&request(t * 1000 + i, 5)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(q.pending().1, 8 * 50 * 5);
        q.close();
    }
}
