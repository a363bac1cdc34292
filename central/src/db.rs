//! The store: WAL, head and blocks together, and the maintenance that moves data between them.
//!
//! - Writes go to the head and the WAL; [`Db::write`] returns once the WAL is fsynced.
//! - When the head's newest sample is half a block past the first block boundary after its
//!   oldest, everything before that boundary is cut into blocks (one per aligned block range
//!   the samples fall in, so old out-of-order or backfilled samples land in their own range),
//!   then `head.json` records the cut and the WAL is checkpointed and truncated.
//! - Blocks that overlap, and blocks that fit together in an aligned window of 3, 12, 36, 108
//!   and then 324 block ranges (no longer than `max_block_duration`), are compacted into one;
//!   blocks past the retention are deleted.
//! - Queries merge blocks and head by series, one sample per timestamp.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use strata_wire::Label;
use strata_wire::labels::LabelPair;
use strata_wire::view::SeriesRef;

use crate::block::{self, Block, BlockMeta, BlockPart, BlockWriter, SeriesCursor};
use crate::head::{self, AppendMode, Head, HeadStats, Refusal, SeriesData};
use crate::index::{self, Matcher};
use crate::sync::{lock, read, write};
use crate::wal::{self, Record, ReplayReport, SegmentInfo, Wal};
use crate::{Error, Result};

/// Compaction windows, in blocks, smallest first, each a multiple of the one before: blocks
/// that fit in one window are merged once the head has moved past it. With 2-hour blocks they
/// are 6 hours, a day, then 3, 9 and 27 days; only those up to `max_block_duration` are used.
/// Prometheus steps by 3 from the block (6h, 18h, 54h, ...); these keep a day window, which
/// the cut of a head far behind reaches directly (see [`CUT_WINDOW_FACTOR`]) and which lines
/// blocks up with the days that queries and retention are counted in.
const COMPACTION_FACTORS: [i64; 5] = [3, 12, 36, 108, 324];

/// A head far behind (a backfill) is cut at most this many blocks at a time, a day with
/// 2-hour blocks, so that a cut in progress stops soon when the store stops and the WAL is
/// checkpointed often; longer blocks come from compaction.
const CUT_WINDOW_FACTOR: i64 = 12;

/// The longest block by default, whatever the retention (Prometheus's 31 days).
const MAX_BLOCK_DURATION_CAP: Duration = Duration::from_secs(31 * 24 * 3600);

/// Storage options.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub block_duration: Duration,
    pub retention: Duration,
    pub out_of_order_window: Duration,
    pub wal_segment_bytes: u64,
    /// The longest time range compaction makes one block span. A block is deleted whole once
    /// its newest sample is past the retention, so its oldest can outlive it by this much;
    /// fewer, longer blocks hold fewer copies of each series' labels and postings.
    pub max_block_duration: Duration,
}

impl Options {
    /// The default longest block: as Prometheus's `--storage.tsdb.max-block-duration`, a
    /// tenth of the retention, at most 31 days; and at least the day window (12 blocks) that
    /// cuts reach anyway, so a short retention still gets its blocks compacted into days.
    pub fn default_max_block_duration(retention: Duration, block: Duration) -> Duration {
        (retention / 10)
            .min(MAX_BLOCK_DURATION_CAP)
            .max(block * CUT_WINDOW_FACTOR as u32)
    }

    fn block_ms(&self) -> i64 {
        self.block_duration.as_millis() as i64
    }

    /// The compaction windows in use, in milliseconds, smallest first.
    fn windows(&self) -> impl DoubleEndedIterator<Item = i64> {
        let block_ms = self.block_ms();
        let longest = self.max_block_duration.as_millis() as i64;
        COMPACTION_FACTORS
            .into_iter()
            .map(move |factor| block_ms * factor)
            .filter(move |&window| window <= longest)
    }
}

/// Where the last cut ended: samples older than `boundary` in WAL segments before `segment`
/// are in blocks.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CutMarker {
    segment: u64,
    boundary: i64,
}

/// The result of one write.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub appended: usize,
    pub duplicates: usize,
    /// Per refused sample: the series and why (the first few are reported to the sender).
    pub refused: Vec<(String, Refusal)>,
    pub refused_count: usize,
    pub histograms_refused: usize,
}

impl WriteOutcome {
    /// A 400 body when some samples were refused.
    pub fn refusal_message(&self) -> Option<String> {
        if self.refused_count == 0 && self.histograms_refused == 0 {
            return None;
        }
        let mut msg = String::new();
        if self.refused_count > 0 {
            msg.push_str(&format!(
                "{} samples refused; the other {} were accepted:",
                self.refused_count, self.appended
            ));
            for (series, why) in &self.refused {
                msg.push_str(&format!("\n  {series}: {why}"));
            }
            if self.refused_count > self.refused.len() {
                msg.push_str(&format!(
                    "\n  ... and {} more",
                    self.refused_count - self.refused.len()
                ));
            }
        }
        if self.histograms_refused > 0 {
            if !msg.is_empty() {
                msg.push('\n');
            }
            msg.push_str(&format!(
                "{} native histogram samples refused: strata central stores float samples only; \
                 convert them to classic histograms before sending",
                self.histograms_refused
            ));
        }
        Some(msg)
    }
}

/// Counters the server exports on `/metrics`.
#[derive(Debug, Default)]
pub struct DbCounters {
    pub samples_appended: Counter,
    pub samples_duplicate: Counter,
    pub samples_refused: Counter,
    pub samples_backfilled: Counter,
    pub blocks_cut: Counter,
    pub compactions: Counter,
    pub blocks_deleted: Counter,
    pub maintenance_failures: Counter,
    pub backfill_compared: Counter,
    pub backfill_fetched: Counter,
    pub backfill_rounds: Counter,
    pub backfill_failures: Counter,
    /// Unix seconds of the last successful backfill round.
    pub backfill_last_success: AtomicI64,
}

/// One open store.
#[derive(Debug)]
pub struct Db {
    opts: Options,
    head: Head,
    wal: Wal,
    blocks: RwLock<Vec<Arc<Block>>>,
    /// Serialises cuts, compactions, retention and deletions.
    maintenance: Mutex<()>,
    /// Set when the store is stopping: a cut or compaction in progress finishes its current
    /// block and leaves the rest (in the head and WAL, or as uncompacted blocks) for the next
    /// start.
    stopping: std::sync::atomic::AtomicBool,
    /// What start-up found damaged, for the log and `/api/v1/status/tsdb`.
    problems: Vec<String>,
    replay: ReplayReport,
    pub counters: DbCounters,
}

const MAX_REPORTED_REFUSALS: usize = 10;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_marker(path: &Path) -> Result<CutMarker> {
    match fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw).map_err(|e| Error::Block {
            path: path.to_path_buf(),
            reason: format!("cannot parse the cut marker: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CutMarker::default()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_marker(path: &Path, m: CutMarker) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec(&m).map_err(|_| Error::Internal("cut marker serialises"))?;
    {
        let f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::Write::write_all(&mut &f, &json).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Merges series from several sources (the head, each block) into one list sorted by labels,
/// one sample per timestamp; a series in several sources keeps its parts in source order.
/// A source holds each series at most once (parts of one series go in separate sources).
///
/// Each source is sorted by labels (a block's series already are, which costs one pass), then
/// merged into what came before in one pass, so a series found in every block costs one
/// comparison per block. Label sets are compared in place, never copied into keys.
pub fn merge_series(sources: impl IntoIterator<Item = Vec<SeriesData>>) -> Vec<SeriesData> {
    let mut out: Vec<Merging> = Vec::new();
    for mut source in sources {
        source.sort_by(|a, b| head::label_order(&a.labels, &b.labels));
        out = merge_sorted(out, source);
    }
    out.into_iter().map(Merging::finish).collect()
}

/// A series being merged: its labels, and its samples from each source in source order.
struct Merging {
    labels: Vec<Label>,
    parts: Vec<Vec<(i64, f64)>>,
}

impl Merging {
    fn new(series: SeriesData) -> Self {
        Self {
            labels: series.labels,
            parts: vec![series.samples],
        }
    }

    /// The series with its samples by time, one per timestamp (the first source's). Parts
    /// that follow one another in time (blocks and the head, as a store holds them) are laid
    /// end to end in one allocation; parts that overlap are sorted together.
    fn finish(self) -> SeriesData {
        let mut parts = self.parts;
        parts.retain(|p| !p.is_empty());
        let mut samples = if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            let total = parts.iter().map(Vec::len).sum();
            let mut samples = Vec::with_capacity(total);
            let mut by_start: Vec<&Vec<(i64, f64)>> = parts.iter().collect();
            // Stable, so parts starting together keep their source order.
            by_start.sort_by_key(|p| p[0].0);
            let apart = by_start.iter().all(|p| p.is_sorted_by_key(|x| x.0))
                && by_start
                    .windows(2)
                    .all(|w| w[0][w[0].len() - 1].0 < w[1][0].0);
            if apart {
                for p in by_start {
                    samples.extend_from_slice(p);
                }
            } else {
                for p in &parts {
                    samples.extend_from_slice(p);
                }
            }
            samples
        };
        if !samples.is_sorted_by_key(|x| x.0) {
            samples.sort_by_key(|x| x.0);
        }
        head::dedup_by_time(&mut samples, 0);
        SeriesData {
            labels: self.labels,
            samples,
        }
    }
}

/// One series' samples from one source of a merge.
trait Part {
    /// Orders its labels against `labels` as [`head::label_order`] does.
    fn label_order(&self, labels: &[Label]) -> Ordering;
    fn into_samples(self) -> Vec<(i64, f64)>;
    fn into_series(self) -> SeriesData;
}

impl Part for SeriesData {
    fn label_order(&self, labels: &[Label]) -> Ordering {
        head::label_order(&self.labels, labels)
    }

    fn into_samples(self) -> Vec<(i64, f64)> {
        self.samples
    }

    fn into_series(self) -> SeriesData {
        self
    }
}

/// A block's series builds its labels only when the merge does not have them yet.
impl Part for BlockPart<'_> {
    fn label_order(&self, labels: &[Label]) -> Ordering {
        BlockPart::label_order(self, labels)
    }

    fn into_samples(self) -> Vec<(i64, f64)> {
        self.samples
    }

    fn into_series(self) -> SeriesData {
        BlockPart::into_series(self)
    }
}

/// Merges two lists of series sorted by labels; a series in both gets `a`'s samples first.
/// The series of `b` that `a` has (with blocks of one fleet, nearly all of them) are added in
/// place; only those it lacks are interleaved, so a merge of many blocks does not move every
/// series once per block.
fn merge_sorted<P: Part>(mut a: Vec<Merging>, b: Vec<P>) -> Vec<Merging> {
    if a.is_empty() {
        return b
            .into_iter()
            .map(|p| Merging::new(p.into_series()))
            .collect();
    }
    let mut missing = Vec::new();
    let mut i = 0;
    for y in b {
        loop {
            match a.get(i).map(|x| y.label_order(&x.labels).reverse()) {
                Some(Ordering::Less) => i += 1,
                Some(Ordering::Equal) => {
                    a[i].parts.push(y.into_samples());
                    i += 1;
                    break;
                }
                _ => {
                    missing.push(Merging::new(y.into_series()));
                    break;
                }
            }
        }
    }
    if missing.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + missing.len());
    let (mut a, mut b) = (a.into_iter().peekable(), missing.into_iter().peekable());
    loop {
        let a_first = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => head::label_order(&x.labels, &y.labels).is_lt(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if a_first { a.next() } else { b.next() });
    }
}

/// The `sources` of a block that replaces `blocks`: their ids and everything they replaced,
/// so a block left over from any earlier generation is recognised at start-up.
fn replaced_by_any(blocks: &[Arc<Block>]) -> Vec<String> {
    let mut out: Vec<String> = blocks
        .iter()
        .flat_map(|b| std::iter::once(&b.meta.id).chain(&b.meta.sources))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Opens every block in `blocks_dir`, as many at once as there are cores. A block that
/// cannot be read is moved aside (`<id>.corrupt`) and reported in the second list.
fn open_blocks(blocks_dir: &Path) -> Result<(Vec<Arc<Block>>, Vec<String>)> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(blocks_dir).map_err(io_err(blocks_dir))? {
        let entry = entry.map_err(io_err(blocks_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.ends_with(".corrupt") {
            dirs.push((name, entry.path()));
        }
    }
    dirs.sort();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut opened: Vec<(usize, Result<Block>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(dirs.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((_, dir)) = dirs.get(i) else {
                            return mine;
                        };
                        mine.push((i, Block::open(dir)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    opened.sort_by_key(|o| o.0);
    let (mut blocks, mut problems) = (Vec::new(), Vec::new());
    for ((name, dir), (_, block)) in dirs.iter().zip(opened) {
        match block {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(e) => {
                let aside = blocks_dir.join(format!("{name}.corrupt"));
                let msg = format!(
                    "block {name} is unreadable and was moved to {}: {e}; its time range is \
                     missing until peer backfill refills it",
                    aside.display()
                );
                tracing::error!("{msg}");
                let _ = fs::rename(dir, &aside);
                problems.push(msg);
            }
        }
    }
    Ok((blocks, problems))
}

/// The head as the WAL in `wal_dir` leaves it, the replay's report, the segments the WAL
/// keeps (with their newest sample) and how many samples referred to unknown series.
fn replay_wal(
    opts: &Options,
    wal_dir: &Path,
) -> Result<(Head, ReplayReport, Vec<SegmentInfo>, usize)> {
    let marker = read_marker(&opts.data_dir.join("head.json"))?;
    let head = Head::new(opts.out_of_order_window.as_millis() as i64, opts.block_ms());
    let mut segments: HashMap<u64, Option<i64>> = HashMap::new();
    let mut unknown = 0usize;
    let replay = wal::replay(wal_dir, |seg, rec| match rec {
        Record::Series { id, labels } => head.replay_series(id, &labels),
        Record::Samples(samples) => {
            if seg > 0 {
                let max = samples.iter().map(|s| s.1).max();
                let e = segments.entry(seg).or_default();
                *e = max.max(*e);
            }
            let persisted = |t: i64| seg < marker.segment && t < marker.boundary;
            unknown += head.replay_samples(&samples, persisted);
        }
        Record::Delete {
            matchers,
            mint,
            maxt,
        } => {
            head.delete(&matchers, mint, maxt);
        }
    })?;
    let mut known: Vec<SegmentInfo> = segments
        .into_iter()
        .map(|(id, max_t)| SegmentInfo { id, max_t })
        .collect();
    known.sort_by_key(|s| s.id);
    Ok((head, replay, known, unknown))
}

impl Db {
    /// Opens (or creates) the store in `opts.data_dir`: loads blocks, replays the WAL.
    pub fn open(opts: Options) -> Result<Self> {
        let blocks_dir = opts.data_dir.join("blocks");
        let wal_dir = opts.data_dir.join("wal");
        fs::create_dir_all(&blocks_dir).map_err(io_err(&blocks_dir))?;
        block::remove_partial(&blocks_dir)?;
        let started = std::time::Instant::now();
        // The blocks are opened (several at once) while the WAL is replayed.
        let (opened, replayed) = std::thread::scope(|s| {
            let blocks = s.spawn(|| open_blocks(&blocks_dir));
            let replayed = replay_wal(&opts, &wal_dir);
            let blocks = blocks
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (blocks, replayed)
        });
        let (mut blocks, mut problems) = opened?;
        let (head, replay, known, unknown) = replayed?;
        let replaced: HashSet<String> = blocks
            .iter()
            .flat_map(|b| b.meta.sources.iter().cloned())
            .collect();
        for b in blocks.iter().filter(|b| replaced.contains(&b.meta.id)) {
            tracing::info!(block = %b.meta.id, "block replaced before the last stop removed");
            b.retire();
        }
        blocks.retain(|b| !replaced.contains(&b.meta.id));
        blocks.sort_by_key(|b| (b.meta.min_t, b.meta.id.clone()));
        problems.extend(replay.problems.iter().cloned());
        if unknown > 0 {
            let msg = format!(
                "{unknown} WAL samples refer to series whose definition was in a damaged part \
                 of the WAL; they are lost"
            );
            tracing::error!("{msg}");
            problems.push(msg);
        }
        let wal = Wal::open(&wal_dir, opts.wal_segment_bytes, known)?;
        let stats = head.stats();
        tracing::info!(
            blocks = blocks.len(),
            head_series = stats.series,
            wal_records = replay.records,
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "store opened"
        );
        Ok(Self {
            opts,
            head,
            wal,
            blocks: RwLock::new(blocks),
            maintenance: Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            problems,
            replay,
            counters: DbCounters::default(),
        })
    }

    /// What recovery found damaged at start-up.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub fn replay_report(&self) -> &ReplayReport {
        &self.replay
    }

    /// Why writes are refused, if they are (a failed WAL).
    pub fn write_failure(&self) -> Option<String> {
        self.wal.failure()
    }

    /// Appends validated series; returns once what was accepted is fsynced.
    pub async fn write<'v, L: LabelPair + 'v>(
        &self,
        series: impl IntoIterator<Item = SeriesRef<'v, L>>,
        mode: AppendMode,
    ) -> Result<WriteOutcome> {
        let mut log = Vec::new();
        let mut out = WriteOutcome::default();
        for ts in series {
            out.histograms_refused += ts.histograms;
            if ts.samples.is_empty() {
                continue;
            }
            let o = self.head.append(
                ts.labels,
                ts.samples.iter().map(|s| (s.timestamp, s.value)),
                mode,
                &self.wal,
                &mut log,
            )?;
            out.appended += o.appended;
            out.duplicates += o.duplicates;
            out.refused_count += o.refused.len();
            for r in o.refused {
                if out.refused.len() < MAX_REPORTED_REFUSALS {
                    out.refused
                        .push((strata_wire::labels::render(ts.labels), r));
                }
            }
        }
        if !log.is_empty() {
            self.wal.log(&[Record::Samples(log)]).await?;
        }
        let c = &self.counters;
        c.samples_appended.inc_by(out.appended as u64);
        c.samples_duplicate.inc_by(out.duplicates as u64);
        c.samples_refused
            .inc_by((out.refused_count + out.histograms_refused) as u64);
        if mode == AppendMode::Backfill {
            c.samples_backfilled.inc_by(out.appended as u64);
        }
        Ok(out)
    }

    fn blocks(&self) -> Vec<Arc<Block>> {
        read(&self.blocks).clone()
    }

    /// Series matching `matchers` with samples in `[mint, maxt]`, from blocks and head,
    /// sorted by labels, one sample per timestamp.
    ///
    /// The head is read before the block list: a cut adds its blocks before it drops their
    /// samples from the head, so whatever leaves the head meanwhile is in the blocks read
    /// after it. (Blocks first would miss samples cut between the two reads.)
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<SeriesData>> {
        let mut newest = self.head.select(matchers, mint, maxt);
        newest.sort_by(|a, b| head::label_order(&a.labels, &b.labels));
        let mut out: Vec<Merging> = newest.into_iter().map(Merging::new).collect();
        for b in self.blocks() {
            if b.overlaps(mint, maxt) {
                out = merge_sorted(out, b.select(matchers, mint, maxt)?);
            }
        }
        Ok(out.into_iter().map(Merging::finish).collect())
    }

    /// Label sets of the series matching `matchers` with samples in `[mint, maxt]` (blocks by
    /// their time range, head series by their newest sample), sorted, each once.
    /// The head is read first, as in [`Db::select`].
    pub fn series_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Vec<Label>> {
        let mut out = self.head.series_labels(matchers, mint);
        for b in self.blocks() {
            if b.overlaps(mint, maxt) {
                out.extend(b.series_labels(matchers));
            }
        }
        out.sort_by(|a, b| head::label_order(a, b));
        out.dedup();
        out
    }

    /// Label names (without `name`) or values of label `name` in the blocks and the head
    /// when they overlap `[mint, maxt]`, read from their postings
    /// without building any label set (as Prometheus answers `/api/v1/labels` without
    /// `match[]`), sorted, each once.
    /// The head is read first, as in [`Db::select`].
    pub fn label_index(&self, name: Option<&str>, mint: i64, maxt: i64) -> Vec<String> {
        let mut out = Vec::new();
        if self.head.overlaps(mint, maxt) {
            out.extend(name.map_or_else(|| self.head.label_names(), |n| self.head.label_values(n)));
        }
        for b in self.blocks() {
            if b.overlaps(mint, maxt) {
                out.extend(name.map_or_else(|| b.label_names(), |n| b.label_values(n)));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn head_stats(&self) -> HeadStats {
        self.head.stats()
    }

    /// Metadata of the loaded blocks, oldest first.
    pub fn block_metas(&self) -> Vec<BlockMeta> {
        self.blocks().iter().map(|b| b.meta.clone()).collect()
    }

    /// Bytes of all blocks on disk.
    pub fn block_bytes(&self) -> u64 {
        self.blocks().iter().map(|b| b.bytes()).sum()
    }

    /// WAL bytes written and fsyncs since start.
    pub fn wal_stats(&self) -> (u64, u64) {
        self.wal.stats()
    }

    fn blocks_dir(&self) -> PathBuf {
        self.opts.data_dir.join("blocks")
    }

    /// The next boundary to cut at, if the head is ready for a cut: the latest block boundary
    /// at least half a block behind the newest sample, but no further than the end of the
    /// largest compaction window of at most [`CUT_WINDOW_FACTOR`] blocks (else the block) the
    /// oldest sample is in, so that a head far behind (a backfill) is cut a window at a time.
    fn cut_boundary(&self) -> Option<i64> {
        let block_ms = self.opts.block_ms();
        let (lo, hi) = self.head.time_range();
        let (lo, hi) = (lo?, hi?);
        let window = self
            .opts
            .windows()
            .rfind(|&w| w <= block_ms * CUT_WINDOW_FACTOR)
            .unwrap_or(block_ms);
        let latest = (hi - block_ms / 2).div_euclid(block_ms) * block_ms;
        let boundary = latest.min((lo.div_euclid(window) + 1) * window);
        (boundary > lo).then_some(boundary)
    }

    /// The block a sample at `t` goes to when the head is cut at `boundary`, as its start
    /// and end: the largest compaction window holding `t` that ends by the boundary, else
    /// `t`'s block. A head cut a block at a time would write as many blocks as it spans, each
    /// with every series, and compact them again.
    fn cut_range(&self, t: i64, boundary: i64) -> (i64, i64) {
        let block_ms = self.opts.block_ms();
        for window in self.opts.windows().rev() {
            let start = t.div_euclid(window) * window;
            if start + window <= boundary {
                return (start, start + window);
            }
        }
        let start = t.div_euclid(block_ms) * block_ms;
        (start, start + block_ms)
    }

    /// Cuts the head into blocks while it spans enough; returns the blocks written.
    pub fn cut(&self) -> Result<Vec<BlockMeta>> {
        let _m = lock(&self.maintenance);
        let mut written = Vec::new();
        while !self.stopping()
            && let Some(boundary) = self.cut_boundary()
        {
            written.extend(self.cut_at(boundary)?);
        }
        Ok(written)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes a running cut or compaction stop after its current block, so that a store with
    /// a long backfilled head stops in moments; what is left is done on the next start.
    pub fn stop_maintenance(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Cuts everything older than `boundary` into blocks (with the maintenance lock held).
    fn cut_at(&self, boundary: i64) -> Result<Vec<BlockMeta>> {
        let segment = self.wal.rotate()?;
        let series = self.head.start_cut(boundary);
        let mut writers: BTreeMap<i64, BlockWriter> = BTreeMap::new();
        let blocks_dir = self.blocks_dir();
        for (labels, id) in series {
            let samples = self.head.cut_samples(id);
            let mut start = 0;
            while start < samples.len() {
                let (range, range_end) = self.cut_range(samples[start].0, boundary);
                let end = start + samples[start..].partition_point(|s| s.0 < range_end);
                let w = match writers.entry(range) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(BlockWriter::create(&blocks_dir, range, 1, Vec::new())?)
                    }
                };
                w.add(labels.clone(), &samples[start..end])?;
                start = end;
            }
        }
        let mut metas = Vec::new();
        for (_, w) in writers {
            if let Some(meta) = w.finish()? {
                let block = Block::open(&blocks_dir.join(&meta.id))?;
                self.add_block(block);
                metas.push(meta);
            }
        }
        write_marker(
            &self.opts.data_dir.join("head.json"),
            CutMarker { segment, boundary },
        )?;
        let removed = self.head.finish_cut();
        let deleted =
            self.wal
                .checkpoint(segment, self.head.series_records().into_iter(), |s| {
                    s.max_t.is_none_or(|t| t < boundary)
                })?;
        self.counters.blocks_cut.inc_by(metas.len() as u64);
        tracing::info!(
            boundary,
            blocks = metas.len(),
            series_removed = removed,
            wal_segments_deleted = deleted,
            "head cut into blocks"
        );
        Ok(metas)
    }

    fn add_block(&self, block: Block) {
        let mut blocks = write(&self.blocks);
        blocks.push(Arc::new(block));
        blocks.sort_by_key(|b| (b.meta.min_t, b.meta.id.clone()));
    }

    /// Groups of blocks to compact: overlapping blocks first, then blocks sharing an aligned
    /// compaction window, smallest first, that ends before the head starts.
    fn plan_compaction(&self) -> Option<Vec<Arc<Block>>> {
        let blocks = self.blocks();
        for (i, a) in blocks.iter().enumerate() {
            let group: Vec<Arc<Block>> = blocks[i..]
                .iter()
                .filter(|b| b.meta.min_t <= a.meta.max_t && b.meta.max_t >= a.meta.min_t)
                .cloned()
                .collect();
            if group.len() > 1 {
                return Some(group);
            }
        }
        let head_min = self.head.time_range().0.unwrap_or(i64::MAX);
        for window in self.opts.windows() {
            let mut by_window: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
            for b in &blocks {
                let w = b.meta.min_t.div_euclid(window);
                if b.meta.max_t.div_euclid(window) == w && (w + 1) * window <= head_min {
                    by_window.entry(w).or_default().push(b.clone());
                }
            }
            if let Some(group) = by_window.into_values().find(|g| g.len() > 1) {
                return Some(group);
            }
        }
        None
    }

    /// Compacts until nothing is left to compact; returns the number of compactions.
    pub fn compact(&self) -> Result<usize> {
        let _m = lock(&self.maintenance);
        let mut n = 0;
        while !self.stopping()
            && let Some(group) = self.plan_compaction()
        {
            self.merge_blocks(&group)?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes one block holding the union of `group` and removes the sources.
    fn merge_blocks(&self, group: &[Arc<Block>]) -> Result<()> {
        let min_t = group.iter().map(|b| b.meta.min_t).min().unwrap_or(0);
        let level = group.iter().map(|b| b.meta.level).max().unwrap_or(1) + 1;
        let ids: Vec<String> = group.iter().map(|b| b.meta.id.clone()).collect();
        let mut writer =
            BlockWriter::create(&self.blocks_dir(), min_t, level, replaced_by_any(group))?;
        // Each source yields its series in label order; merge them as sorted runs, holding one
        // batch of series per source in memory.
        let mut cursors: Vec<SeriesCursor<'_>> =
            group.iter().map(|b| SeriesCursor::new(b)).collect();
        let mut heads: Vec<Option<SeriesData>> = cursors
            .iter_mut()
            .map(SeriesCursor::next_series)
            .collect::<Result<_>>()?;
        while let Some(min_labels) = heads
            .iter()
            .flatten()
            .map(|s| &s.labels)
            .min_by(|a, b| head::label_order(a, b))
            .cloned()
        {
            let mut parts = Vec::new();
            for (h, c) in heads.iter_mut().zip(cursors.iter_mut()) {
                if h.as_ref().is_some_and(|s| s.labels == min_labels) {
                    let next = c.next_series()?;
                    parts.push(std::mem::replace(h, next).ok_or(Error::Internal("cursor"))?);
                }
            }
            for s in merge_series(parts.into_iter().map(|p| vec![p])) {
                writer.add(s.labels, &s.samples)?;
            }
        }
        let meta = writer.finish()?;
        let new_block = match &meta {
            Some(m) => Some(Arc::new(Block::open(&self.blocks_dir().join(&m.id))?)),
            None => None,
        };
        {
            let mut blocks = write(&self.blocks);
            blocks.retain(|b| !ids.contains(&b.meta.id));
            blocks.extend(new_block);
            blocks.sort_by_key(|b| (b.meta.min_t, b.meta.id.clone()));
        }
        for b in group {
            b.retire();
        }
        self.counters.compactions.inc();
        tracing::info!(sources = ?ids, into = ?meta.map(|m| m.id), "blocks compacted");
        Ok(())
    }

    /// Deletes blocks whose newest sample is older than `now_ms - retention`.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let _m = lock(&self.maintenance);
        let cutoff = now_ms - self.opts.retention.as_millis() as i64;
        let expired: Vec<Arc<Block>> = self
            .blocks()
            .into_iter()
            .filter(|b| b.meta.max_t < cutoff)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        {
            let mut blocks = write(&self.blocks);
            blocks.retain(|b| b.meta.max_t >= cutoff);
        }
        for b in &expired {
            b.retire();
            tracing::info!(block = %b.meta.id, max_t = b.meta.max_t, "block past retention deleted");
        }
        self.counters.blocks_deleted.inc_by(expired.len() as u64);
        Ok(expired.len())
    }

    /// Cut, compact, apply retention; logs and counts failures.
    pub fn maintain(&self, now_ms: i64) {
        let results = [
            self.cut().map(|_| ()),
            self.compact().map(|_| ()),
            self.apply_retention(now_ms).map(|_| ()),
        ];
        for r in results {
            if let Err(e) = r {
                self.counters.maintenance_failures.inc();
                tracing::error!(error = %e, "store maintenance failed; it is retried on the next round");
            }
        }
    }

    /// Deletes the samples of matching series in `[mint, maxt]` from head and blocks. The
    /// deletion is logged first, so it survives a crash.
    pub async fn delete_series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<usize> {
        self.wal
            .log(&[Record::Delete {
                matchers: matchers.to_vec(),
                mint,
                maxt,
            }])
            .await?;
        let _m = lock(&self.maintenance);
        let mut removed = self.head.delete(matchers, mint, maxt);
        for b in self.blocks() {
            if !b.overlaps(mint, maxt) || b.series_labels(matchers).is_empty() {
                continue;
            }
            removed += self.rewrite_block_without(&b, matchers, mint, maxt)?;
        }
        Ok(removed)
    }

    fn rewrite_block_without(
        &self,
        b: &Arc<Block>,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<usize> {
        let mut writer = BlockWriter::create(
            &self.blocks_dir(),
            b.meta.min_t,
            b.meta.level,
            replaced_by_any(std::slice::from_ref(b)),
        )?;
        let mut removed = 0;
        b.for_each_series(|mut s| {
            if index::matches_all(matchers, &s.labels) {
                let before = s.samples.len();
                s.samples.retain(|x| x.0 < mint || x.0 > maxt);
                removed += before - s.samples.len();
            }
            writer.add(s.labels, &s.samples)
        })?;
        let meta = writer.finish()?;
        let replacement = match &meta {
            Some(m) => Some(Arc::new(Block::open(&self.blocks_dir().join(&m.id))?)),
            None => None,
        };
        {
            let mut blocks = write(&self.blocks);
            blocks.retain(|x| x.meta.id != b.meta.id);
            blocks.extend(replacement);
            blocks.sort_by_key(|x| (x.meta.min_t, x.meta.id.clone()));
        }
        b.retire();
        Ok(removed)
    }

    /// Flushes and closes the WAL.
    pub fn close(&self) {
        self.wal.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::MatchOp;
    use strata_wire::{Label, Sample, TimeSeries, WriteRequest};

    const HOUR: i64 = 3_600_000;

    fn opts(dir: &Path) -> Options {
        Options {
            data_dir: dir.to_path_buf(),
            block_duration: Duration::from_secs(2 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            out_of_order_window: Duration::from_secs(600),
            wal_segment_bytes: 1 << 20,
            max_block_duration: Duration::from_secs(3 * 24 * 3600),
        }
    }

    fn req(series: usize, from: i64, to: i64, step: i64) -> WriteRequest {
        WriteRequest {
            timeseries: (0..series)
                .map(|i| TimeSeries {
                    labels: vec![
                        Label::new("__name__", "cpu"),
                        Label::new("cell", format!("c{i:03}")),
                    ],
                    samples: (from..to)
                        .step_by(step as usize)
                        .map(|t| Sample {
                            value: (t / step) as f64 + i as f64,
                            timestamp: t,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        }
    }

    fn all(db: &Db) -> Vec<SeriesData> {
        let m = Matcher::new(MatchOp::Equal, "__name__", "cpu").unwrap();
        db.select(&[m], i64::MIN, i64::MAX).unwrap()
    }

    fn total(data: &[SeriesData]) -> usize {
        data.iter().map(|s| s.samples.len()).sum()
    }

    #[test]
    fn merged_sources_are_in_label_order_and_the_first_source_wins_a_timestamp() {
        let series = |cell: &str, samples: &[(i64, f64)]| SeriesData {
            labels: vec![Label::new("__name__", "cpu"), Label::new("cell", cell)],
            samples: samples.to_vec(),
        };
        // The head gives its series in the order they were created, a block in label order.
        let head = vec![
            series("c", &[(30, 3.0)]),
            series("a", &[(10, 1.0)]),
            series("e", &[(50, 5.0), (60, 6.0)]),
        ];
        let older = vec![
            series("a", &[(0, 0.5), (10, 9.0)]),
            series("b", &[(0, 2.0)]),
            series("e", &[(0, 1.0), (10, 2.0)]),
        ];
        let newer = vec![
            series("b", &[(20, 2.5)]),
            series("d", &[(0, 4.0)]),
            series("e", &[(20, 3.0), (30, 4.0)]),
        ];
        let mut longer = series("a", &[(5, 7.0)]);
        longer.labels.push(Label::new("zone", "z1"));
        // A source whose series all came before is added in place.
        let latest = vec![series("c", &[(40, 3.5)])];
        let merged = merge_series([head, older, newer, vec![longer], latest]);
        let names: Vec<String> = merged
            .iter()
            .map(|s| s.labels[1..].iter().map(|l| l.value.as_str()).collect())
            .collect();
        assert_eq!(names, ["a", "az1", "b", "c", "d", "e"]);
        assert_eq!(merged[0].samples, [(0, 0.5), (10, 1.0)]);
        assert_eq!(merged[2].samples, [(0, 2.0), (20, 2.5)]);
        assert_eq!(merged[3].samples, [(30, 3.0), (40, 3.5)]);
        // Parts apart in time, from sources not in time order, are laid out by time.
        assert_eq!(
            merged[5].samples,
            [
                (0, 1.0),
                (10, 2.0),
                (20, 3.0),
                (30, 4.0),
                (50, 5.0),
                (60, 6.0)
            ]
        );
    }

    #[tokio::test]
    async fn survives_restart_through_wal_and_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        // 6 hours at 60s for 20 series: cuts at 2h and 4h leave the last 2 hours in the head.
        db.write(req(20, 0, 6 * HOUR, 60_000).series_refs(), AppendMode::Live)
            .await
            .unwrap();
        let before = all(&db);
        assert_eq!(total(&before), 20 * 360);
        let cut = db.cut().unwrap();
        assert_eq!(cut.len(), 2, "{cut:?}");
        assert_eq!(all(&db), before, "a cut changes nothing a query sees");
        db.close();
        drop(db);
        let db = Db::open(opts(dir.path())).unwrap();
        assert!(db.problems().is_empty(), "{:?}", db.problems());
        assert_eq!(db.block_metas().len(), 2);
        assert_eq!(all(&db), before, "same data after restart, no duplicates");
        // More data, a late out-of-order batch for an old range through backfill, compaction.
        db.write(
            req(20, 6 * HOUR, 9 * HOUR, 60_000).series_refs(),
            AppendMode::Live,
        )
        .await
        .unwrap();
        db.write(
            req(20, 30_000, HOUR, 60_000).series_refs(),
            AppendMode::Backfill,
        )
        .await
        .unwrap();
        db.cut().unwrap();
        let n = db.compact().unwrap();
        assert!(n >= 1);
        let blocks = db.block_metas();
        for w in blocks.windows(2) {
            assert!(
                w[0].max_t < w[1].min_t,
                "no overlapping blocks left: {blocks:?}"
            );
        }
        let data = all(&db);
        assert_eq!(total(&data), 20 * (540 + 60));
        db.close();
        drop(db);
        let db = Db::open(opts(dir.path())).unwrap();
        assert_eq!(all(&db), data);
    }

    #[tokio::test]
    async fn a_head_far_behind_is_cut_into_the_largest_windows_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        // Three days at 1h, as a backfill sends them: whole days become day blocks, the rest
        // 6h and 2h blocks up to the last block boundary at least an hour behind 71h.
        db.write(
            req(20, 0, 72 * HOUR, HOUR).series_refs(),
            AppendMode::Backfill,
        )
        .await
        .unwrap();
        let before = all(&db);
        let cut = db.cut().unwrap();
        let ranges: Vec<(i64, i64)> = cut
            .iter()
            .map(|m| (m.min_t / HOUR, m.max_t / HOUR))
            .collect();
        assert_eq!(
            ranges,
            [
                (0, 23),
                (24, 47),
                (48, 53),
                (54, 59),
                (60, 65),
                (66, 67),
                (68, 69)
            ]
        );
        assert_eq!(db.head_stats().min_t, Some(70 * HOUR));
        assert_eq!(db.compact().unwrap(), 0, "nothing left to compact");
        assert_eq!(all(&db), before, "a cut changes nothing a query sees");
    }

    #[tokio::test]
    async fn blocks_are_compacted_into_windows_up_to_the_longest_block() {
        let dir = tempfile::tempdir().unwrap();
        let day_blocks = Options {
            max_block_duration: Duration::from_secs(24 * 3600),
            ..opts(dir.path())
        };
        let db = Db::open(day_blocks).unwrap();
        // Seven days at 1h, cut into day blocks where blocks may be a day at most.
        db.write(
            req(20, 0, 7 * 24 * HOUR, HOUR).series_refs(),
            AppendMode::Backfill,
        )
        .await
        .unwrap();
        db.cut().unwrap();
        assert_eq!(db.compact().unwrap(), 0);
        let ranges = |db: &Db| -> Vec<(i64, i64)> {
            db.block_metas()
                .iter()
                .map(|m| (m.min_t / HOUR, m.max_t / HOUR))
                .collect()
        };
        let days: Vec<(i64, i64)> = (0..6).map(|d| (d * 24, d * 24 + 23)).collect();
        assert_eq!(ranges(&db)[..6], days[..]);
        let before = all(&db);
        db.close();
        drop(db);
        // Reopened where blocks may be three days, the day blocks of each whole 3-day window
        // the head has left behind are merged into one.
        let db = Db::open(opts(dir.path())).unwrap();
        assert_eq!(db.compact().unwrap(), 2);
        assert_eq!(ranges(&db)[..2], [(0, 71), (72, 143)]);
        assert!(
            ranges(&db)[2..]
                .iter()
                .all(|&(lo, hi)| lo >= 144 && hi - lo < 24),
            "{:?}",
            ranges(&db)
        );
        assert_eq!(all(&db), before, "compaction changes nothing a query sees");
        let two_hours = Duration::from_secs(2 * 3600);
        let days = |d: u64| Duration::from_secs(d * 24 * 3600);
        assert_eq!(
            Options::default_max_block_duration(days(15), two_hours),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(
            Options::default_max_block_duration(days(3650), two_hours),
            MAX_BLOCK_DURATION_CAP
        );
        assert_eq!(
            Options::default_max_block_duration(days(2), two_hours),
            days(1),
            "a short retention still compacts into days"
        );
    }

    #[tokio::test]
    async fn label_index_reads_blocks_and_head_by_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        // Cells c000-c001 only before 2h (cut into a block); c000-c004 from 4h on (head).
        db.write(req(2, 0, HOUR, 60_000).series_refs(), AppendMode::Live)
            .await
            .unwrap();
        db.write(
            req(5, 4 * HOUR, 5 * HOUR, 60_000).series_refs(),
            AppendMode::Live,
        )
        .await
        .unwrap();
        db.cut().unwrap();
        assert_eq!(db.block_metas().len(), 1);
        let cells = |mint, maxt| db.label_index(Some("cell"), mint, maxt);
        assert_eq!(cells(0, HOUR), ["c000", "c001"]);
        assert_eq!(
            cells(4 * HOUR, 5 * HOUR),
            ["c000", "c001", "c002", "c003", "c004"]
        );
        assert_eq!(cells(i64::MIN, i64::MAX).len(), 5);
        assert!(cells(6 * HOUR, 7 * HOUR).is_empty(), "nothing that late");
        assert!(db.label_index(Some("zone"), 0, 5 * HOUR).is_empty());
        assert_eq!(
            db.label_index(None, i64::MIN, i64::MAX),
            ["__name__", "cell"]
        );
    }

    #[tokio::test]
    async fn retention_and_delete_series() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        db.write(req(3, 0, 6 * HOUR, 60_000).series_refs(), AppendMode::Live)
            .await
            .unwrap();
        assert_eq!(db.cut().unwrap().len(), 2);
        let m = Matcher::new(MatchOp::Equal, "cell", "c001").unwrap();
        let removed = db
            .delete_series(std::slice::from_ref(&m), HOUR, 3 * HOUR)
            .await
            .unwrap();
        assert_eq!(removed, 121);
        let left = db.select(&[m], i64::MIN, i64::MAX).unwrap();
        assert_eq!(total(&left), 360 - 121);
        assert_eq!(db.apply_retention(2 * HOUR + 30 * 24 * HOUR).unwrap(), 1);
        assert_eq!(db.block_metas().len(), 1);
    }

    #[tokio::test]
    async fn queries_see_every_sample_while_the_head_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        // Two days at 60s for 40 series: the cut writes a day block, then three 6h and two 2h
        // blocks, one window at a time.
        db.write(
            req(40, 0, 48 * HOUR, 60_000).series_refs(),
            AppendMode::Live,
        )
        .await
        .unwrap();
        let want = 40 * 48 * 60;
        let done = std::sync::atomic::AtomicBool::new(false);
        let reads = std::thread::scope(|s| {
            s.spawn(|| {
                db.cut().unwrap();
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                assert_eq!(total(&all(&db)), want, "read {reads} during the cut");
                reads += 1;
            }
            reads
        });
        assert_eq!(db.block_metas().len(), 6, "{:?}", db.block_metas());
        assert_eq!(total(&all(&db)), want, "after {reads} reads during the cut");
    }

    #[tokio::test]
    async fn a_query_over_blocks_holding_different_series_gets_each_once_in_label_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        let some = |cells: &[usize], from: i64, to: i64| {
            let all = req(4, from, to, 60_000);
            WriteRequest {
                timeseries: cells.iter().map(|&i| all.timeseries[i].clone()).collect(),
                metadata: vec![],
            }
        };
        // c002 is in every block, c000 only in the first and the head, c001 only in the
        // second, c003 only in the third and the head.
        for (cells, from, to) in [
            (&[0, 2][..], 0, 4 * HOUR),
            (&[1, 2][..], 4 * HOUR, 6 * HOUR),
            (&[2, 3][..], 6 * HOUR, 8 * HOUR),
        ] {
            db.write(some(cells, from, to).series_refs(), AppendMode::Live)
                .await
                .unwrap();
            db.cut().unwrap();
        }
        assert!(db.blocks().len() >= 3, "{:?}", db.block_metas());
        db.write(
            some(&[3, 0], 8 * HOUR, 9 * HOUR).series_refs(),
            AppendMode::Live,
        )
        .await
        .unwrap();
        let got = all(&db);
        let cells: Vec<&str> = got.iter().map(|s| s.labels[1].value.as_str()).collect();
        assert_eq!(cells, ["c000", "c001", "c002", "c003"]);
        let minutes = |hours: i64| (hours * 60) as usize;
        let lengths: Vec<usize> = got.iter().map(|s| s.samples.len()).collect();
        assert_eq!(lengths, [minutes(5), minutes(2), minutes(8), minutes(3)]);
        for s in &got {
            assert!(
                s.samples.windows(2).all(|w| w[0].0 < w[1].0),
                "{:?}",
                s.labels
            );
        }
    }

    #[tokio::test]
    async fn a_replaced_block_is_readable_until_its_last_reader_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(opts(dir.path())).unwrap();
        // Written and cut as time passes, two hours at a time: three blocks of one window.
        for from in [0, 4 * HOUR, 6 * HOUR] {
            let to = if from == 0 { 4 * HOUR } else { from + 2 * HOUR };
            db.write(req(3, from, to, 60_000).series_refs(), AppendMode::Live)
                .await
                .unwrap();
            db.cut().unwrap();
        }
        let taken = db.blocks();
        assert_eq!(taken.len(), 3);
        assert_eq!(db.compact().unwrap(), 1);
        let m = Matcher::new(MatchOp::Equal, "__name__", "cpu").unwrap();
        let read: usize = taken
            .iter()
            .flat_map(|b| {
                b.select(std::slice::from_ref(&m), i64::MIN, i64::MAX)
                    .unwrap()
            })
            .map(|s| s.samples.len())
            .sum();
        assert_eq!(read, 3 * 6 * 60);
        let dirs: Vec<PathBuf> = taken.iter().map(|b| b.dir.clone()).collect();
        drop(taken);
        for d in dirs {
            assert!(!d.exists(), "{} is still there", d.display());
        }
        assert_eq!(db.block_metas().len(), 1);
    }

    #[tokio::test]
    async fn blocks_replaced_before_a_crash_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let blocks_dir = dir.path().join("blocks");
        let copy = |from: &Path, to: &Path| {
            fs::create_dir_all(to).unwrap();
            for f in fs::read_dir(from).unwrap() {
                let f = f.unwrap();
                fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        };
        let aside = tempfile::tempdir().unwrap();
        {
            let db = Db::open(opts(dir.path())).unwrap();
            db.write(req(3, 0, 8 * HOUR, 60_000).series_refs(), AppendMode::Live)
                .await
                .unwrap();
            db.cut().unwrap();
            for b in db.blocks() {
                copy(&b.dir, &aside.path().join(&b.meta.id));
            }
            db.compact().unwrap();
            let m = Matcher::new(MatchOp::Equal, "cell", "c001").unwrap();
            db.delete_series(&[m], 0, 8 * HOUR).await.unwrap();
            db.stop_maintenance();
        }
        // As if the process died before removing the sources of the compaction.
        for f in fs::read_dir(aside.path()).unwrap() {
            let f = f.unwrap();
            copy(&f.path(), &blocks_dir.join(f.file_name()));
        }
        let db = Db::open(opts(dir.path())).unwrap();
        assert_eq!(db.block_metas().len(), 1, "{:?}", db.block_metas());
        assert_eq!(total(&all(&db)), 2 * 8 * 60);
        assert_eq!(fs::read_dir(&blocks_dir).unwrap().count(), 1);
    }
}
