//! The write-ahead log: what makes an acknowledged sample survive a crash.
//!
//! # Layout
//! `wal/` holds numbered segment files (`00000001`, `00000002`, ...) and at most one
//! `checkpoint.NNNNNNNN`. Both are sequences of frames:
//!
//! ```text
//! [u32 LE payload length][u32 LE CRC-32 of the payload][payload]
//! ```
//!
//! A payload is one [`Record`]: a series definition (id and labels), a batch of samples (series
//! id, timestamp, value) or a deletion. A series is defined before any sample refers to it: the
//! head logs the definition while it still holds the lock under which it created the series.
//!
//! # Group commit
//! Appenders put framed records into one shared buffer and wait; a single writer thread takes
//! the whole buffer, writes it, calls `fdatasync` once and then wakes everyone whose records it
//! covered. Under load one sync covers many requests. A failed write or sync is fail-stop: the
//! log refuses every later append (the server answers 503) because the kernel may have dropped
//! the dirty pages, and only a restart that replays the files on disk can say what is durable.
//!
//! # Recovery
//! Every start opens a new segment, so existing files are only read. A frame that is cut short
//! or fails its checksum at the end of the last segment is a torn write: the file is truncated
//! there. The same in an older segment is corruption: the rest of that segment is skipped and
//! reported, and every other readable record is kept.
//!
//! # Truncation
//! When the head has written a block up to `boundary`, segments that hold only samples older
//! than the boundary are deleted, after a checkpoint has saved the definitions of all live
//! series (a later segment may refer to a series defined in a deleted one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use strata_wire::Label;
use tokio::sync::watch;

use crate::index::{MatchOp, Matcher};
use crate::sync::lock;
use crate::{Error, Result};

const FRAME_HEADER: usize = 8;
/// A frame longer than this is treated as corruption rather than allocated.
const MAX_RECORD_BYTES: usize = 256 << 20;
const CHECKPOINT_PREFIX: &str = "checkpoint.";

/// One logical WAL entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Series {
        id: u32,
        labels: Vec<Label>,
    },
    Samples(Vec<(u32, i64, f64)>),
    /// `delete_series`: samples of matching series in `[mint, maxt]` are gone.
    Delete {
        matchers: Vec<Matcher>,
        mint: i64,
        maxt: i64,
    },
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, ((x << 1) ^ (x >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

type Decoded<T> = std::result::Result<T, &'static str>;

impl<'a> Cursor<'a> {
    fn uvarint(&mut self) -> Decoded<u64> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.b.get(self.pos).ok_or("record ends inside a varint")?;
            self.pos += 1;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err("varint overflows 64 bits")
    }

    fn varint(&mut self) -> Decoded<i64> {
        let z = self.uvarint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn bytes(&mut self, n: usize) -> Decoded<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or("length overflows")?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or("record ends inside a field")?;
        self.pos = end;
        Ok(s)
    }

    fn string(&mut self) -> Decoded<String> {
        let n = self.uvarint()? as usize;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "label is not UTF-8")
    }

    fn u32(&mut self) -> Decoded<u32> {
        u32::try_from(self.uvarint()?).map_err(|_| "series id overflows u32")
    }
}

impl Record {
    /// Appends the payload encoding of this record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Series { id, labels } => {
                out.push(1);
                put_uvarint(out, u64::from(*id));
                put_uvarint(out, labels.len() as u64);
                for l in labels {
                    put_str(out, &l.name);
                    put_str(out, &l.value);
                }
            }
            Record::Samples(samples) => {
                out.push(2);
                put_uvarint(out, samples.len() as u64);
                let base = samples.first().map_or(0, |s| s.1);
                put_varint(out, base);
                for &(id, t, v) in samples {
                    put_uvarint(out, u64::from(id));
                    put_varint(out, t.wrapping_sub(base));
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
            Record::Delete {
                matchers,
                mint,
                maxt,
            } => {
                out.push(3);
                put_varint(out, *mint);
                put_varint(out, *maxt);
                put_uvarint(out, matchers.len() as u64);
                for m in matchers {
                    out.push(m.op as u8);
                    put_str(out, &m.name);
                    put_str(out, &m.value);
                }
            }
        }
    }

    pub fn decode(payload: &[u8]) -> Decoded<Self> {
        let mut c = Cursor { b: payload, pos: 1 };
        match payload.first() {
            Some(1) => {
                let id = c.u32()?;
                let n = c.uvarint()? as usize;
                let mut labels = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    labels.push(Label {
                        name: c.string()?,
                        value: c.string()?,
                    });
                }
                Ok(Record::Series { id, labels })
            }
            Some(2) => {
                let n = c.uvarint()? as usize;
                let base = c.varint()?;
                let mut samples = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let id = c.u32()?;
                    let t = base.wrapping_add(c.varint()?);
                    let raw = c.bytes(8)?;
                    let mut b = [0u8; 8];
                    b.copy_from_slice(raw);
                    samples.push((id, t, f64::from_bits(u64::from_le_bytes(b))));
                }
                Ok(Record::Samples(samples))
            }
            Some(3) => {
                let mint = c.varint()?;
                let maxt = c.varint()?;
                let n = c.uvarint()? as usize;
                let mut matchers = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let op = match c.bytes(1)?[0] {
                        0 => MatchOp::Equal,
                        1 => MatchOp::NotEqual,
                        2 => MatchOp::Regex,
                        3 => MatchOp::NotRegex,
                        _ => return Err("unknown matcher type"),
                    };
                    let name = c.string()?;
                    let value = c.string()?;
                    matchers.push(
                        Matcher::new(op, &name, &value).map_err(|_| "invalid stored matcher")?,
                    );
                }
                Ok(Record::Delete {
                    matchers,
                    mint,
                    maxt,
                })
            }
            _ => Err("unknown record type"),
        }
    }
}

/// Frames a payload: length, CRC-32, bytes.
fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What recovery found in one file.
#[derive(Debug, Default, Clone)]
pub struct FileReport {
    pub records: usize,
    /// Bytes dropped from the end of the last segment (a torn write).
    pub torn_bytes: u64,
    /// Bytes skipped in an older segment, with the reason.
    pub corrupt: Option<(u64, String)>,
}

/// What the whole replay found.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: usize,
    pub torn_bytes: u64,
    pub corrupt_bytes: u64,
    /// One line per damaged file, for the log and `/api/v1/status/tsdb`.
    pub problems: Vec<String>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}"))
}

/// Segment ids, ascending, and the newest checkpoint with the segment it covers up to.
type Listing = (Vec<u64>, Option<(u64, PathBuf)>);

fn list(dir: &Path) -> io::Result<Listing> {
    let mut segments = Vec::new();
    let mut checkpoint: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(id) = name.parse::<u64>() {
            segments.push(id);
        } else if let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX)
            && let Ok(upto) = rest.parse::<u64>()
            && checkpoint.as_ref().is_none_or(|(u, _)| upto > *u)
        {
            checkpoint = Some((upto, entry.path()));
        }
    }
    segments.sort_unstable();
    Ok((segments, checkpoint))
}

/// Reads every frame of one file, passing decoded records to `f`. With `truncate_torn`, a bad
/// tail is cut off the file; otherwise it is reported as corruption.
fn read_file(
    path: &Path,
    truncate_torn: bool,
    f: &mut dyn FnMut(Record),
) -> io::Result<FileReport> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut report = FileReport::default();
    let mut pos = 0usize;
    let mut bad: Option<&'static str> = None;
    while pos < data.len() {
        if data.len() - pos < FRAME_HEADER {
            bad = Some("frame header cut short");
            break;
        }
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if len > MAX_RECORD_BYTES {
            bad = Some("frame length is implausible");
            break;
        }
        let start = pos + FRAME_HEADER;
        let Some(payload) = data.get(start..start + len) else {
            bad = Some("frame cut short");
            break;
        };
        if crc32fast::hash(payload) != crc {
            bad = Some("checksum mismatch");
            break;
        }
        match Record::decode(payload) {
            Ok(r) => {
                f(r);
                report.records += 1;
            }
            Err(e) => {
                bad = Some(e);
                break;
            }
        }
        pos = start + len;
    }
    if let Some(reason) = bad {
        let lost = (data.len() - pos) as u64;
        if truncate_torn {
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(pos as u64)?;
            file.sync_all()?;
            report.torn_bytes = lost;
        } else {
            report.corrupt = Some((lost, format!("{reason} at byte {pos}")));
        }
    }
    Ok(report)
}

/// Replays the checkpoint and then every segment in order. `f` gets each record with the id of
/// the segment it came from (0 for the checkpoint).
pub fn replay(dir: &Path, mut f: impl FnMut(u64, Record)) -> Result<ReplayReport> {
    let io_err = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_err)?;
    let (segments, checkpoint) = list(dir).map_err(io_err)?;
    let mut report = ReplayReport::default();
    let note = |path: &Path, r: FileReport, report: &mut ReplayReport| {
        report.records += r.records;
        if r.torn_bytes > 0 {
            report.torn_bytes += r.torn_bytes;
            report.problems.push(format!(
                "{}: truncated a torn write of {} bytes at its end",
                path.display(),
                r.torn_bytes
            ));
        }
        if let Some((lost, why)) = r.corrupt {
            report.corrupt_bytes += lost;
            report.problems.push(format!(
                "{}: corrupt ({why}); skipped its last {lost} bytes, kept {} records before it",
                path.display(),
                r.records
            ));
        }
    };
    if let Some((_, path)) = &checkpoint {
        let r = read_file(path, false, &mut |rec| f(0, rec)).map_err(io_err)?;
        note(path, r, &mut report);
    }
    let last = segments.last().copied();
    for &id in &segments {
        let path = segment_path(dir, id);
        let r = read_file(&path, Some(id) == last, &mut |rec| f(id, rec)).map_err(io_err)?;
        note(&path, r, &mut report);
        report.segments += 1;
    }
    for p in &report.problems {
        tracing::error!("WAL recovery: {p}");
    }
    Ok(report)
}

#[derive(Debug, Clone)]
struct Durable {
    seq: u64,
    failed: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// Bytes ever appended; an append's position is the value after it.
    seq: u64,
    /// The newest sample timestamp in `buf`.
    max_t: Option<i64>,
    closed: bool,
    failed: Option<Arc<str>>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    file: File,
    size: u64,
}

/// Per-segment newest sample timestamp, for truncation.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    pub id: u64,
    pub max_t: Option<i64>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
    active: Mutex<Segment>,
    segments: Mutex<Vec<SegmentInfo>>,
    bytes_written: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An open write-ahead log.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Opens `dir` for writing after [`replay`]: starts a new segment after the existing ones.
    /// `known` is what replay saw of the existing segments.
    pub fn open(dir: &Path, segment_bytes: u64, known: Vec<SegmentInfo>) -> Result<Self> {
        let io_err = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        let (segments, _) = list(dir).map_err(io_err)?;
        let id = segments.last().map_or(1, |l| l + 1);
        let file = create_segment(dir, id).map_err(io_err)?;
        let mut infos = known;
        infos.push(SegmentInfo { id, max_t: None });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segment_bytes,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable: watch::channel(Durable {
                seq: 0,
                failed: None,
            })
            .0,
            active: Mutex::new(Segment { id, file, size: 0 }),
            segments: Mutex::new(infos),
            bytes_written: 0.into(),
            syncs: 0.into(),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("strata-wal".into())
            .spawn(move || writer_loop(&s))
            .map_err(io_err)?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues records; returns the position to pass to [`Wal::wait`]. Fails once the log has
    /// failed or closed.
    pub fn append(&self, records: &[Record]) -> Result<u64> {
        let mut payload = Vec::new();
        let mut p = lock(&self.shared.pending);
        if let Some(f) = &p.failed {
            return Err(Error::WalFailed(f.to_string()));
        }
        if p.closed {
            return Err(Error::Closed);
        }
        let before = p.buf.len();
        for r in records {
            payload.clear();
            r.encode(&mut payload);
            frame(&mut p.buf, &payload);
            if let Record::Samples(s) = r
                && let Some(t) = s.iter().map(|x| x.1).max()
            {
                p.max_t = Some(p.max_t.map_or(t, |m| m.max(t)));
            }
        }
        p.seq += (p.buf.len() - before) as u64;
        let seq = p.seq;
        drop(p);
        self.shared.wake.notify_one();
        Ok(seq)
    }

    /// Waits until everything up to `seq` is fsynced.
    pub async fn wait(&self, seq: u64) -> Result<()> {
        let mut rx = self.shared.durable.subscribe();
        let d = rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        match d.failed {
            Some(f) if d.seq < seq => Err(Error::WalFailed(f.to_string())),
            _ => Ok(()),
        }
    }

    /// Appends and waits for durability.
    pub async fn log(&self, records: &[Record]) -> Result<()> {
        let seq = self.append(records)?;
        self.wait(seq).await
    }

    /// Closes the current segment and starts a new one; returns the new segment's id. Every
    /// record appended before the call is in an older segment.
    pub fn rotate(&self) -> Result<u64> {
        // Flush what is pending into the current segment first, under the same lock order as
        // the writer (pending, then active).
        let mut p = lock(&self.shared.pending);
        let mut active = lock(&self.shared.active);
        flush(&self.shared, &mut p, &mut active);
        if let Some(f) = &p.failed {
            return Err(Error::WalFailed(f.to_string()));
        }
        rotate_locked(&self.shared, &mut active).map_err(|e| fail(&self.shared, &mut p, &e))?;
        Ok(active.id)
    }

    /// Writes a checkpoint of `series` covering segments before `upto`, then deletes the
    /// segments before `upto` for which `deletable` says yes, and older checkpoints.
    pub fn checkpoint(
        &self,
        upto: u64,
        series: impl Iterator<Item = Record>,
        deletable: impl Fn(&SegmentInfo) -> bool,
    ) -> Result<usize> {
        let dir = &self.shared.dir;
        let io_err = |source| Error::Io {
            path: dir.clone(),
            source,
        };
        let tmp = dir.join("checkpoint.tmp");
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for r in series {
            payload.clear();
            r.encode(&mut payload);
            frame(&mut buf, &payload);
        }
        {
            let mut f = File::create(&tmp).map_err(io_err)?;
            f.write_all(&buf).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
        }
        let final_path = dir.join(format!("{CHECKPOINT_PREFIX}{upto:08}"));
        fs::rename(&tmp, &final_path).map_err(io_err)?;
        sync_dir(dir).map_err(io_err)?;
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            if let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
                && rest.parse::<u64>().is_ok_and(|u| u < upto)
            {
                fs::remove_file(entry.path()).map_err(io_err)?;
            }
        }
        let mut deleted = 0;
        let mut segs = lock(&self.shared.segments);
        let mut keep = Vec::with_capacity(segs.len());
        for s in segs.drain(..) {
            if s.id < upto && deletable(&s) {
                match fs::remove_file(segment_path(dir, s.id)) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        keep.push(s);
                        tracing::warn!(segment = s.id, error = %e, "cannot delete WAL segment");
                    }
                }
            } else {
                keep.push(s);
            }
        }
        *segs = keep;
        drop(segs);
        sync_dir(dir).map_err(io_err)?;
        Ok(deleted)
    }

    /// Total bytes written and fsyncs done since start.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.bytes_written.load(Relaxed),
            self.shared.syncs.load(Relaxed),
        )
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.pending)
            .failed
            .as_deref()
            .map(str::to_owned)
    }

    /// Flushes what is pending and stops the writer thread.
    pub fn close(&self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, id))?;
    sync_dir(dir)?;
    Ok(f)
}

fn rotate_locked(shared: &Shared, active: &mut Segment) -> io::Result<()> {
    active.file.sync_all()?;
    let id = active.id + 1;
    active.file = create_segment(&shared.dir, id)?;
    active.id = id;
    active.size = 0;
    lock(&shared.segments).push(SegmentInfo { id, max_t: None });
    Ok(())
}

fn fail(shared: &Shared, p: &mut Pending, e: &io::Error) -> Error {
    let msg: Arc<str> = Arc::from(format!(
        "WAL write to {} failed: {e}; restart strata central to recover from what is on disk",
        shared.dir.display()
    ));
    tracing::error!("{msg}");
    p.failed = Some(msg.clone());
    p.buf.clear();
    shared.durable.send_modify(|d| d.failed = Some(msg.clone()));
    Error::WalFailed(msg.to_string())
}

/// Writes and syncs what is pending; called with both locks held.
fn flush(shared: &Shared, p: &mut Pending, active: &mut Segment) {
    use std::sync::atomic::Ordering::Relaxed;
    if p.buf.is_empty() || p.failed.is_some() {
        return;
    }
    let buf = std::mem::take(&mut p.buf);
    let seq = p.seq;
    let max_t = p.max_t.take();
    let result = (|| {
        if active.size > 0 && active.size + buf.len() as u64 > shared.segment_bytes {
            rotate_locked(shared, active)?;
        }
        active.file.write_all(&buf)?;
        active.file.sync_data()
    })();
    match result {
        Ok(()) => {
            active.size += buf.len() as u64;
            shared.bytes_written.fetch_add(buf.len() as u64, Relaxed);
            shared.syncs.fetch_add(1, Relaxed);
            if let Some(t) = max_t
                && let Some(info) = lock(&shared.segments)
                    .iter_mut()
                    .rev()
                    .find(|s| s.id == active.id)
            {
                info.max_t = Some(info.max_t.map_or(t, |m| m.max(t)));
            }
            shared.durable.send_modify(|d| d.seq = seq);
        }
        Err(e) => {
            fail(shared, p, &e);
        }
    }
}

fn writer_loop(shared: &Shared) {
    loop {
        let mut p = lock(&shared.pending);
        while p.buf.is_empty() && !p.closed {
            p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.buf.is_empty() && p.closed {
            let active = lock(&shared.active);
            let _ = active.file.sync_all();
            return;
        }
        // Take the buffer and release the appenders while writing, so the next group forms.
        let buf = std::mem::take(&mut p.buf);
        let seq = p.seq;
        let max_t = p.max_t.take();
        drop(p);
        let mut active = lock(&shared.active);
        let mut staged = Pending {
            buf,
            seq,
            max_t,
            ..Pending::default()
        };
        flush(shared, &mut staged, &mut active);
        drop(active);
        if let Some(f) = staged.failed {
            let mut p = lock(&shared.pending);
            p.failed = Some(f);
            p.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(id: u32, name: &str) -> Record {
        Record::Series {
            id,
            labels: vec![Label::new("__name__", name)],
        }
    }

    fn collect(dir: &Path) -> (Vec<Record>, ReplayReport) {
        let mut out = Vec::new();
        let report = replay(dir, |_, r| out.push(r)).unwrap();
        (out, report)
    }

    #[tokio::test]
    async fn records_roundtrip_through_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 200, vec![]).unwrap();
        let recs = vec![
            series(1, "up"),
            Record::Samples(vec![(1, 1000, 1.0), (1, 2000, f64::NAN), (1, -5, 2.5)]),
            Record::Delete {
                matchers: vec![Matcher::new(MatchOp::Regex, "job", "n.*").unwrap()],
                mint: 0,
                maxt: 10,
            },
        ];
        for _ in 0..5 {
            wal.log(&recs).await.unwrap();
        }
        wal.close();
        let (got, report) = collect(dir.path());
        assert!(report.segments > 1, "segments rotate at 200 bytes");
        assert!(report.problems.is_empty());
        assert_eq!(got.len(), 15);
        assert_eq!(got[0], recs[0]);
        assert_eq!(got[2], recs[2]);
        let Record::Samples(s) = &got[1] else {
            panic!()
        };
        assert!(s[1].2.is_nan());
        assert_eq!(s[2], (1, -5, 2.5));
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, vec![]).unwrap();
        wal.log(&[series(1, "a"), series(2, "b")]).await.unwrap();
        wal.close();
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (got, report) = collect(dir.path());
        assert_eq!(got, vec![series(1, "a")]);
        assert!(report.torn_bytes > 0);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        // The file was truncated: a second replay is clean.
        let (_, again) = collect(dir.path());
        assert!(again.problems.is_empty());
    }

    #[tokio::test]
    async fn corrupt_older_segment_keeps_every_readable_record() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, vec![]).unwrap();
        wal.log(&[series(1, "a"), series(2, "b")]).await.unwrap();
        wal.rotate().unwrap();
        wal.log(&[series(3, "c")]).await.unwrap();
        wal.close();
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let (got, report) = collect(dir.path());
        assert_eq!(got, vec![series(1, "a"), series(3, "c")]);
        assert!(report.corrupt_bytes > 0);
        assert!(
            report.problems[0].contains("checksum mismatch"),
            "{:?}",
            report.problems
        );
    }

    #[tokio::test]
    async fn checkpoint_replaces_deleted_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, vec![]).unwrap();
        wal.log(&[series(1, "a"), Record::Samples(vec![(1, 10, 1.0)])])
            .await
            .unwrap();
        let upto = wal.rotate().unwrap();
        wal.log(&[Record::Samples(vec![(1, 20, 2.0)])])
            .await
            .unwrap();
        let deleted = wal
            .checkpoint(upto, [series(1, "a")].into_iter(), |s| {
                s.max_t.is_some_and(|t| t < 15)
            })
            .unwrap();
        assert_eq!(deleted, 1);
        wal.close();
        let (got, _) = collect(dir.path());
        assert_eq!(
            got,
            vec![series(1, "a"), Record::Samples(vec![(1, 20, 2.0)])]
        );
    }

    #[tokio::test]
    async fn concurrent_appenders_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), 1 << 30, vec![]).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                wal.log(&[series(i, "x")]).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        wal.close();
        assert_eq!(collect(dir.path()).0.len(), 64);
    }
}
