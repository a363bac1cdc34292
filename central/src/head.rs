//! The in-memory head: the newest samples of every active series, compressed.
//!
//! Series live in 64 stripes, each behind its own mutex, chosen by the label fingerprint; a
//! series id carries its stripe in its low 6 bits, so an id finds its series without a global
//! map. Each series holds its labels as interned symbol pairs, a list of frozen XOR chunks
//! (120 samples, or up to a block boundary) and one open chunk, plus a sorted buffer for
//! out-of-order samples accepted within the window. A series is defined in the WAL while its
//! stripe is locked, so no sample record can precede its definition.
//!
//! Lock order: stripe, then symbols, then postings. Readers take symbols and postings without
//! a stripe, then stripes one at a time without symbols or postings.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};

use strata_wire::Label;
use strata_wire::labels::{self, LabelPair, fingerprint};

use crate::chunk::{SAMPLES_PER_CHUNK, XorChunk, XorIter};
use crate::index::{Matcher, Postings, Symbols};
use crate::sync::{lock, read, write};
use crate::wal::{Record, Wal};
use crate::{Error, Result};

const STRIPE_BITS: u32 = 6;
const STRIPES: usize = 1 << STRIPE_BITS;

/// A chunk that no longer grows.
#[derive(Debug)]
pub struct FrozenChunk {
    pub min_t: i64,
    pub max_t: i64,
    pub data: Box<[u8]>,
}

#[derive(Debug, Default)]
struct OutOfOrder {
    /// Accepted samples older than the series' newest, sorted by time.
    pending: Vec<(i64, f64)>,
    /// Samples being written into a block; still served until the block is on disk.
    cutting: Vec<(i64, f64)>,
}

#[derive(Debug)]
struct MemSeries {
    labels: Box<[(u32, u32)]>,
    frozen: Vec<FrozenChunk>,
    open: XorChunk,
    open_min_t: i64,
    open_max_t: i64,
    open_last: u64,
    ooo: Option<Box<OutOfOrder>>,
    /// Leading frozen chunks being written into a block by a cut in progress.
    cutting_chunks: u32,
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Older than the out-of-order window allows.
    TooOld { t: i64, newest: i64, window_ms: i64 },
    /// A different value for a timestamp that already has one.
    Conflict { t: i64, stored: f64, new: f64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooOld {
                t,
                newest,
                window_ms,
            } => write!(
                f,
                "out of order sample: timestamp {t} is {} behind the newest sample in the store ({newest}), more than the out-of-order window of {}",
                humantime::format_duration(std::time::Duration::from_millis(
                    newest.saturating_sub(*t).unsigned_abs()
                )),
                humantime::format_duration(std::time::Duration::from_millis(
                    window_ms.unsigned_abs()
                ))
            ),
            Refusal::Conflict { t, stored, new } => write!(
                f,
                "duplicate sample for timestamp {t} with a different value ({new}, stored {stored})"
            ),
        }
    }
}

impl MemSeries {
    fn new(labels: Box<[(u32, u32)]>) -> Self {
        Self {
            labels,
            frozen: Vec::new(),
            open: XorChunk::default(),
            open_min_t: i64::MAX,
            open_max_t: i64::MIN,
            open_last: 0,
            ooo: None,
            cutting_chunks: 0,
        }
    }

    /// The oldest sample's timestamp, in chunks or out of order; `i64::MAX` when empty.
    fn min_t(&self) -> i64 {
        let lo = self.frozen.first().map_or(
            if self.open.is_empty() {
                i64::MAX
            } else {
                self.open_min_t
            },
            |c| c.min_t,
        );
        self.ooo
            .as_ref()
            .and_then(|o| o.pending.first().or(o.cutting.first()))
            .map_or(lo, |x| lo.min(x.0))
    }

    fn max_t(&self) -> i64 {
        if self.open.is_empty() {
            self.frozen.last().map_or(i64::MIN, |c| c.max_t)
        } else {
            self.open_max_t
        }
    }

    fn is_empty(&self) -> bool {
        self.open.is_empty()
            && self.frozen.is_empty()
            && self
                .ooo
                .as_ref()
                .is_none_or(|o| o.pending.is_empty() && o.cutting.is_empty())
    }

    fn freeze_open(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let open = std::mem::take(&mut self.open);
        self.frozen.push(FrozenChunk {
            min_t: self.open_min_t,
            max_t: self.open_max_t,
            data: open.into_frozen(),
        });
        self.open_min_t = i64::MAX;
    }

    /// The stored value at `t` in the in-order chunks, if any.
    fn in_order_value(&self, t: i64) -> Option<f64> {
        if t == self.open_max_t && !self.open.is_empty() {
            return Some(f64::from_bits(self.open_last));
        }
        let chunk: &[u8] = if !self.open.is_empty() && t >= self.open_min_t {
            self.open.bytes()
        } else {
            &self
                .frozen
                .iter()
                .find(|c| c.min_t <= t && t <= c.max_t)?
                .data
        };
        XorIter::new(chunk)
            .ok()?
            .map_while(|r| r.ok())
            .find(|&(st, _)| st == t)
            .map(|(_, v)| v)
    }

    /// Appends one sample. `Ok(false)` is an identical duplicate (nothing to log).
    fn append(
        &mut self,
        t: i64,
        v: f64,
        min_valid: Option<(i64, i64, i64)>,
        block_ms: i64,
    ) -> std::result::Result<bool, Refusal> {
        let max_t = self.max_t();
        if t > max_t {
            if !self.open.is_empty() {
                let chunk_end = (self.open_min_t.div_euclid(block_ms) + 1) * block_ms;
                if self.open.len() >= SAMPLES_PER_CHUNK || t >= chunk_end {
                    self.freeze_open();
                }
            }
            if self.open.is_empty() {
                self.open_min_t = t;
            }
            self.open.append(t, v);
            self.open_max_t = t;
            self.open_last = v.to_bits();
            return Ok(true);
        }
        if let Some(stored) = self.in_order_value(t).or_else(|| {
            let o = self.ooo.as_ref()?;
            o.pending
                .binary_search_by_key(&t, |s| s.0)
                .ok()
                .map(|i| o.pending[i].1)
        }) {
            return if stored.to_bits() == v.to_bits() {
                Ok(false)
            } else {
                Err(Refusal::Conflict { t, stored, new: v })
            };
        }
        if let Some((limit, newest, window_ms)) = min_valid
            && t < limit
        {
            return Err(Refusal::TooOld {
                t,
                newest,
                window_ms,
            });
        }
        let o = self.ooo.get_or_insert_with(Box::default);
        let pos = o.pending.partition_point(|s| s.0 < t);
        o.pending.insert(pos, (t, v));
        Ok(true)
    }

    /// Samples in `[mint, maxt]` from every part of the series, sorted, one per timestamp.
    fn samples(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        let start = out.len();
        let mut push_chunk = |data: &[u8]| {
            if let Ok(it) = XorIter::new(data) {
                for (t, v) in it.map_while(|r| r.ok()) {
                    if t > maxt {
                        break;
                    }
                    if t >= mint {
                        out.push((t, v));
                    }
                }
            }
        };
        for c in &self.frozen {
            if c.max_t >= mint && c.min_t <= maxt {
                push_chunk(&c.data);
            }
        }
        if !self.open.is_empty() && self.open_max_t >= mint && self.open_min_t <= maxt {
            push_chunk(self.open.bytes());
        }
        if let Some(o) = &self.ooo
            && (!o.pending.is_empty() || !o.cutting.is_empty())
        {
            out.extend(
                o.pending
                    .iter()
                    .chain(&o.cutting)
                    .filter(|s| s.0 >= mint && s.0 <= maxt),
            );
            out[start..].sort_by_key(|s| s.0);
            dedup_by_time(out, start);
        }
    }

    fn allocated(&self) -> usize {
        size_of::<Self>()
            + self.labels.len() * 8
            + self.frozen.capacity() * size_of::<FrozenChunk>()
            + self.frozen.iter().map(|c| c.data.len()).sum::<usize>()
            + self.open.allocated()
            + self.ooo.as_ref().map_or(0, |o| {
                size_of::<OutOfOrder>() + (o.pending.capacity() + o.cutting.capacity()) * 16
            })
    }
}

/// Orders label sets as Prometheus does: label by label, name then value.
pub fn label_order(a: &[Label], b: &[Label]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value));
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Keeps the first sample of each timestamp in `out[start..]` (already sorted by time).
pub(crate) fn dedup_by_time(out: &mut Vec<(i64, f64)>, start: usize) {
    let mut w = start;
    for r in start..out.len() {
        if w == start || out[w - 1].0 != out[r].0 {
            out[w] = out[r];
            w += 1;
        }
    }
    out.truncate(w);
}

#[derive(Debug, Default)]
struct Stripe {
    by_hash: HashMap<u64, u32>,
    /// Ids of series whose fingerprint collides with another series' (compared by labels).
    collided: Vec<u32>,
    series: HashMap<u32, MemSeries>,
}

/// How a write treats old samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// Remote-write: older than the out-of-order window is refused.
    Live,
    /// Peer backfill and WAL replay: any age is accepted.
    Backfill,
}

/// What one series of a write did.
#[derive(Debug, Default)]
pub struct SeriesOutcome {
    pub appended: usize,
    pub duplicates: usize,
    pub refused: Vec<Refusal>,
}

/// A series and its samples, as queries see them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub labels: Vec<Label>,
    pub samples: Vec<(i64, f64)>,
}

/// Head statistics for `/api/v1/status/tsdb` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct HeadStats {
    pub series: usize,
    pub chunks: usize,
    pub samples_in_chunks: usize,
    pub min_t: Option<i64>,
    pub max_t: Option<i64>,
    pub bytes: usize,
    pub symbols: usize,
}

/// The head's cardinality: per label name `(name, distinct values, series)`, and per label
/// pair `(name, value, series)`.
#[derive(Debug, Default)]
pub struct Cardinality {
    pub names: Vec<(String, usize, usize)>,
    pub pairs: Vec<(String, String, usize)>,
}

/// The head block.
#[derive(Debug)]
pub struct Head {
    stripes: Box<[Mutex<Stripe>]>,
    symbols: RwLock<Symbols>,
    postings: RwLock<Postings>,
    next: AtomicU32,
    max_t: AtomicI64,
    ooo_window_ms: i64,
    block_ms: i64,
}

impl Head {
    pub fn new(ooo_window_ms: i64, block_ms: i64) -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            symbols: RwLock::default(),
            postings: RwLock::default(),
            next: AtomicU32::new(0),
            max_t: AtomicI64::new(i64::MIN),
            ooo_window_ms,
            block_ms,
        }
    }

    fn stripe_of(id: u32) -> usize {
        (id as usize) & (STRIPES - 1)
    }

    fn same_labels<L: LabelPair>(sym: &Symbols, stored: &[(u32, u32)], labels: &[L]) -> bool {
        stored.len() == labels.len()
            && stored
                .iter()
                .zip(labels)
                .all(|(&(n, v), l)| sym.resolve(n) == l.name() && sym.resolve(v) == l.value())
    }

    fn find<L: LabelPair>(&self, stripe: &Stripe, hash: u64, labels: &[L]) -> Option<u32> {
        let sym = read(&self.symbols);
        if let Some(&id) = stripe.by_hash.get(&hash)
            && stripe
                .series
                .get(&id)
                .is_some_and(|s| Self::same_labels(&sym, &s.labels, labels))
        {
            return Some(id);
        }
        // A colliding series stays in `collided` when a cut removes the one `by_hash` held for
        // their fingerprint, so it is looked for there even when `by_hash` has none.
        stripe.collided.iter().copied().find(|c| {
            stripe
                .series
                .get(c)
                .is_some_and(|s| Self::same_labels(&sym, &s.labels, labels))
        })
    }

    fn create<L: LabelPair>(
        &self,
        stripe: &mut Stripe,
        stripe_no: usize,
        hash: u64,
        labels: &[L],
        id: Option<u32>,
    ) -> u32 {
        let id = id.unwrap_or_else(|| {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            (n << STRIPE_BITS) | stripe_no as u32
        });
        self.next
            .fetch_max((id >> STRIPE_BITS) + 1, Ordering::Relaxed);
        let syms: Box<[(u32, u32)]> = {
            let mut sym = write(&self.symbols);
            labels
                .iter()
                .map(|l| (sym.intern(l.name()), sym.intern(l.value())))
                .collect()
        };
        write(&self.postings).add(id, &syms);
        match stripe.by_hash.get(&hash) {
            Some(_) => stripe.collided.push(id),
            None => {
                stripe.by_hash.insert(hash, id);
            }
        }
        stripe.series.insert(id, MemSeries::new(syms));
        id
    }

    /// Appends the samples of one series (labels sorted and valid), creating the series if it
    /// is new. New series and accepted samples are added to `log`; a new series' definition is
    /// appended to `wal` before the stripe is unlocked.
    pub fn append<L: LabelPair>(
        &self,
        labels: &[L],
        samples: impl Iterator<Item = (i64, f64)>,
        mode: AppendMode,
        wal: &Wal,
        log: &mut Vec<(u32, i64, f64)>,
    ) -> Result<SeriesOutcome> {
        let hash = fingerprint(labels);
        let stripe_no = (hash as usize) & (STRIPES - 1);
        let mut stripe = lock(&self.stripes[stripe_no]);
        let id = match self.find(&stripe, hash, labels) {
            Some(id) => id,
            None => {
                let id = self.create(&mut stripe, stripe_no, hash, labels, None);
                wal.append(&[Record::Series {
                    id,
                    labels: labels::to_owned(labels),
                }])?;
                id
            }
        };
        let series = stripe
            .series
            .get_mut(&id)
            .ok_or(Error::Internal("series vanished under its stripe lock"))?;
        let mut out = SeriesOutcome::default();
        let mut newest = i64::MIN;
        for (t, v) in samples {
            let min_valid = match mode {
                AppendMode::Backfill => None,
                AppendMode::Live => {
                    let head_max = self.max_t.load(Ordering::Relaxed).max(newest);
                    Some((
                        head_max.saturating_sub(self.ooo_window_ms),
                        head_max,
                        self.ooo_window_ms,
                    ))
                }
            };
            match series.append(t, v, min_valid, self.block_ms) {
                Ok(true) => {
                    out.appended += 1;
                    newest = newest.max(t);
                    log.push((id, t, v));
                }
                Ok(false) => out.duplicates += 1,
                Err(r) => out.refused.push(r),
            }
        }
        drop(stripe);
        if newest > i64::MIN {
            self.max_t.fetch_max(newest, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Replays a WAL series definition.
    pub fn replay_series(&self, id: u32, labels: &[Label]) {
        let hash = fingerprint(labels);
        let stripe_no = Self::stripe_of(id);
        let mut stripe = lock(&self.stripes[stripe_no]);
        if !stripe.series.contains_key(&id) {
            self.create(&mut stripe, stripe_no, hash, labels, Some(id));
        }
    }

    /// Replays WAL samples; returns how many referred to unknown series (lost with a corrupt
    /// segment).
    pub fn replay_samples(
        &self,
        samples: &[(u32, i64, f64)],
        skip_before: impl Fn(i64) -> bool,
    ) -> usize {
        let mut unknown = 0;
        for &(id, t, v) in samples {
            if skip_before(t) {
                continue;
            }
            let mut stripe = lock(&self.stripes[Self::stripe_of(id)]);
            match stripe.series.get_mut(&id) {
                Some(s) => {
                    // Conflicts cannot be logged; anything else is what was acknowledged.
                    let _ = s.append(t, v, None, self.block_ms);
                    self.max_t.fetch_max(t, Ordering::Relaxed);
                }
                None => unknown += 1,
            }
        }
        unknown
    }

    /// Ids of the series matching all matchers.
    pub fn select_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        let sym = read(&self.symbols);
        read(&self.postings).select(&sym, matchers)
    }

    fn resolve(&self, syms: &[(u32, u32)]) -> Vec<Label> {
        let sym = read(&self.symbols);
        syms.iter()
            .map(|&(n, v)| Label::new(sym.resolve(n), sym.resolve(v)))
            .collect()
    }

    /// Series matching `matchers` with their samples in `[mint, maxt]`; series without
    /// samples in the range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        let mut out = Vec::new();
        for id in self.select_ids(matchers) {
            let stripe = lock(&self.stripes[Self::stripe_of(id)]);
            let Some(s) = stripe.series.get(&id) else {
                continue;
            };
            let mut samples = Vec::new();
            s.samples(mint, maxt, &mut samples);
            if samples.is_empty() {
                continue;
            }
            let syms = s.labels.clone();
            drop(stripe);
            out.push(SeriesData {
                labels: self.resolve(&syms),
                samples,
            });
        }
        out
    }

    /// Label sets of the series matching `matchers` that hold samples and whose newest one is
    /// at or after `mint` (out-of-order samples count as recent).
    pub fn series_labels(&self, matchers: &[Matcher], mint: i64) -> Vec<Vec<Label>> {
        self.select_ids(matchers)
            .into_iter()
            .filter_map(|id| {
                let stripe = lock(&self.stripes[Self::stripe_of(id)]);
                let s = stripe.series.get(&id)?;
                if s.is_empty() || (s.max_t() < mint && s.ooo.is_none()) {
                    return None;
                }
                let syms = s.labels.clone();
                drop(stripe);
                Some(self.resolve(&syms))
            })
            .collect()
    }

    /// Whether the head holds samples in `[mint, maxt]`: its newest is at or after `mint` and
    /// some series' oldest at or before `maxt` (a walk over the series, without their labels).
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.max_t.load(Ordering::Relaxed) >= mint
            && self
                .stripes
                .iter()
                .any(|stripe| lock(stripe).series.values().any(|s| s.min_t() <= maxt))
    }

    /// Label names of the head's series, unsorted.
    pub fn label_names(&self) -> Vec<String> {
        read(&self.postings).label_names(&read(&self.symbols))
    }

    /// Values of label `name` in the head's series, unsorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        read(&self.postings).label_values(&read(&self.symbols), name)
    }

    /// Starts cutting everything older than `boundary` into blocks: freezes open chunks that
    /// end before it, marks the frozen chunks and out-of-order samples to cut, and returns the
    /// series that have any, sorted by labels. Marked samples stay queryable until
    /// [`Head::finish_cut`]; [`Head::cut_samples`] reads them.
    pub fn start_cut(&self, boundary: i64) -> Vec<(Vec<Label>, u32)> {
        let mut ids = Vec::new();
        for stripe in self.stripes.iter() {
            let mut stripe = lock(stripe);
            for (&id, s) in stripe.series.iter_mut() {
                if !s.open.is_empty() && s.open_max_t < boundary {
                    s.freeze_open();
                }
                s.cutting_chunks = s.frozen.partition_point(|c| c.max_t < boundary) as u32;
                let mut any = s.cutting_chunks > 0;
                if let Some(o) = &mut s.ooo {
                    let split = o.pending.partition_point(|x| x.0 < boundary);
                    let old: Vec<(i64, f64)> = o.pending.drain(..split).collect();
                    o.cutting.extend(old);
                    o.cutting.sort_by_key(|x| x.0);
                    any |= !o.cutting.is_empty();
                }
                if any {
                    ids.push((id, s.labels.clone()));
                }
            }
        }
        let mut out: Vec<(Vec<Label>, u32)> = ids
            .into_iter()
            .map(|(id, syms)| (self.resolve(&syms), id))
            .collect();
        out.sort_unstable_by(|a, b| label_order(&a.0, &b.0));
        out
    }

    /// The samples of series `id` marked by [`Head::start_cut`], sorted, one per timestamp.
    pub fn cut_samples(&self, id: u32) -> Vec<(i64, f64)> {
        let stripe = lock(&self.stripes[Self::stripe_of(id)]);
        let Some(s) = stripe.series.get(&id) else {
            return Vec::new();
        };
        let mut samples = Vec::new();
        for c in &s.frozen[..s.cutting_chunks as usize] {
            if let Ok(it) = XorIter::new(&c.data) {
                samples.extend(it.map_while(|r| r.ok()));
            }
        }
        if let Some(o) = &s.ooo
            && !o.cutting.is_empty()
        {
            samples.extend_from_slice(&o.cutting);
            samples.sort_by_key(|x| x.0);
            dedup_by_time(&mut samples, 0);
        }
        samples
    }

    /// Drops what [`Head::start_cut`] marked (now in blocks) and removes series left empty.
    /// Returns the number of series removed.
    pub fn finish_cut(&self) -> usize {
        let mut removed = Vec::new();
        for stripe in self.stripes.iter() {
            let mut stripe = lock(stripe);
            let mut empty = Vec::new();
            for (&id, s) in stripe.series.iter_mut() {
                s.frozen.drain(..s.cutting_chunks as usize);
                s.cutting_chunks = 0;
                if let Some(o) = &mut s.ooo {
                    o.cutting.clear();
                    if o.pending.is_empty() {
                        s.ooo = None;
                    }
                }
                if s.is_empty() {
                    empty.push(id);
                }
            }
            if empty.is_empty() {
                continue;
            }
            for id in &empty {
                if let Some(s) = stripe.series.remove(id) {
                    removed.push((*id, s.labels));
                }
            }
            // One pass over the stripe's maps for all its removed series: a pass for each
            // would take time in the square of the stripe's series when a cut empties it.
            let gone: HashSet<u32> = empty.into_iter().collect();
            stripe.collided.retain(|c| !gone.contains(c));
            stripe.by_hash.retain(|_, v| !gone.contains(v));
        }
        let n = removed.len();
        let mut postings = write(&self.postings);
        for (id, syms) in removed {
            postings.remove(id, &syms);
        }
        n
    }

    /// The definitions of every series in the head, for a WAL checkpoint.
    pub fn series_records(&self) -> Vec<Record> {
        let mut defs = Vec::new();
        for stripe in self.stripes.iter() {
            let stripe = lock(stripe);
            defs.extend(stripe.series.iter().map(|(&id, s)| (id, s.labels.clone())));
        }
        defs.into_iter()
            .map(|(id, syms)| Record::Series {
                id,
                labels: self.resolve(&syms),
            })
            .collect()
    }

    /// Removes samples in `[mint, maxt]` from the matching series; returns samples removed.
    pub fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> usize {
        let mut removed = 0;
        for id in self.select_ids(matchers) {
            let mut stripe = lock(&self.stripes[Self::stripe_of(id)]);
            let Some(s) = stripe.series.get_mut(&id) else {
                continue;
            };
            let mut all = Vec::new();
            s.samples(i64::MIN, i64::MAX, &mut all);
            let before = all.len();
            all.retain(|x| x.0 < mint || x.0 > maxt);
            if all.len() == before {
                continue;
            }
            removed += before - all.len();
            let mut fresh = MemSeries::new(std::mem::take(&mut s.labels));
            for (t, v) in all {
                let _ = fresh.append(t, v, None, self.block_ms);
            }
            *s = fresh;
        }
        removed
    }

    /// The oldest and newest sample time in the head, `None` when it is empty: what
    /// maintenance needs, without [`Head::stats`]' walk of every chunk.
    pub fn time_range(&self) -> (Option<i64>, Option<i64>) {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for stripe in self.stripes.iter() {
            for s in lock(stripe).series.values() {
                lo = lo.min(s.min_t());
                hi = hi.max(s.max_t());
            }
        }
        ((lo < i64::MAX).then_some(lo), (hi > i64::MIN).then_some(hi))
    }

    /// Counts and sizes, walking every stripe.
    pub fn stats(&self) -> HeadStats {
        let mut st = HeadStats::default();
        for stripe in self.stripes.iter() {
            let stripe = lock(stripe);
            st.series += stripe.series.len();
            st.bytes += stripe.series.capacity() * (size_of::<MemSeries>() + 12)
                + stripe.by_hash.capacity() * 16;
            for s in stripe.series.values() {
                st.bytes += s.allocated() - size_of::<MemSeries>();
                st.chunks += s.frozen.len() + usize::from(!s.open.is_empty());
                st.samples_in_chunks += s
                    .frozen
                    .iter()
                    .map(|c| usize::from(u16::from_be_bytes([c.data[0], c.data[1]])))
                    .sum::<usize>()
                    + usize::from(s.open.len());
                let lo = s.min_t();
                if lo < i64::MAX {
                    st.min_t = Some(st.min_t.map_or(lo, |m| m.min(lo)));
                }
                let hi = s.max_t();
                if hi > i64::MIN {
                    st.max_t = Some(st.max_t.map_or(hi, |m| m.max(hi)));
                }
            }
        }
        let sym = read(&self.symbols);
        st.symbols = sym.len();
        st.bytes += sym.allocated();
        st
    }

    /// Series counts per label name and per label pair, for the cardinality view.
    pub fn cardinality(&self) -> Cardinality {
        let sym = read(&self.symbols);
        let postings = read(&self.postings);
        let names = postings
            .names()
            .map(|(n, values, series)| (sym.resolve(n).to_owned(), values, series))
            .collect();
        let mut pairs = Vec::new();
        for (n, _, _) in postings.names() {
            for (v, count) in postings.values(n) {
                pairs.push((sym.resolve(n).to_owned(), sym.resolve(v).to_owned(), count));
            }
        }
        Cardinality { names, pairs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::MatchOp;

    const HOUR: i64 = 3_600_000;

    fn labels(name: &str, job: &str) -> Vec<Label> {
        vec![Label::new("__name__", name), Label::new("job", job)]
    }

    /// A head with a WAL, and the sample log its appends fill.
    struct Fixture {
        head: Head,
        wal: Wal,
        log: Vec<(u32, i64, f64)>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Self {
                head: Head::new(10 * 60_000, 2 * HOUR),
                wal: Wal::open(dir.path(), 1 << 20, vec![]).unwrap(),
                log: Vec::new(),
                _dir: dir,
            }
        }

        fn append(
            &mut self,
            l: &[Label],
            samples: &[(i64, f64)],
            mode: AppendMode,
        ) -> SeriesOutcome {
            self.head
                .append(l, samples.iter().copied(), mode, &self.wal, &mut self.log)
                .unwrap()
        }
    }

    #[test]
    fn in_order_duplicate_and_out_of_order_samples() {
        let mut f = Fixture::new();
        let l = labels("up", "node");
        let base = 100 * HOUR;
        let samples: Vec<(i64, f64)> = (0..300).map(|i| (base + i * 15_000, i as f64)).collect();
        let o = f.append(&l, &samples, AppendMode::Live);
        assert_eq!(o.appended, 300);
        // A retry of the same samples is a no-op.
        let o = f.append(&l, &samples, AppendMode::Live);
        assert_eq!((o.appended, o.duplicates), (0, 300));
        // A different value at a stored timestamp is refused.
        let o = f.append(&l, &[(base, 9.0)], AppendMode::Live);
        assert!(matches!(o.refused[0], Refusal::Conflict { .. }));
        // Inside the 10m window: accepted out of order; older: refused unless backfilling.
        let newest = base + 299 * 15_000;
        let o = f.append(
            &l,
            &[(newest - 7_000, -1.0), (newest - HOUR + 1, -2.0)],
            AppendMode::Live,
        );
        assert_eq!(o.appended, 1);
        assert!(
            o.refused[0]
                .to_string()
                .contains("out-of-order window of 10m"),
            "{}",
            o.refused[0]
        );
        let o = f.append(&l, &[(newest - HOUR + 1, -2.0)], AppendMode::Backfill);
        assert_eq!(o.appended, 1);
        let got = f.head.select(
            &[Matcher::new(MatchOp::Equal, "job", "node").unwrap()],
            i64::MIN,
            i64::MAX,
        );
        assert_eq!(got.len(), 1);
        let s = &got[0].samples;
        assert_eq!(s.len(), 302);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(s.contains(&(newest - 7_000, -1.0)));
        assert_eq!(f.log.len(), 302);
    }

    #[test]
    fn chunks_do_not_cross_block_boundaries_and_cuts_drop_only_what_was_copied() {
        let mut f = Fixture::new();
        assert_eq!(f.head.time_range(), (None, None));
        let l = labels("up", "node");
        // 3 hours at 60s: 180 samples across the 2h boundary.
        let samples: Vec<(i64, f64)> = (0..180).map(|i| (i * 60_000, i as f64)).collect();
        f.append(&l, &samples, AppendMode::Live);
        assert_eq!(f.head.time_range(), (Some(0), Some(179 * 60_000)));
        let cut = f.head.start_cut(2 * HOUR);
        assert_eq!(cut.len(), 1);
        let samples = f.head.cut_samples(cut[0].1);
        assert_eq!(samples.len(), 120);
        assert_eq!(samples.last().unwrap().0, 2 * HOUR - 60_000);
        // Still served until the block is written.
        let all = f.head.select(&[], 0, i64::MAX);
        assert_eq!(all[0].samples.len(), 180);
        assert_eq!(f.head.finish_cut(), 0);
        let rest = f.head.select(&[], 0, i64::MAX);
        assert_eq!(rest[0].samples.len(), 60);
        assert_eq!(rest[0].samples[0].0, 2 * HOUR);
        assert_eq!(f.head.time_range(), (Some(2 * HOUR), Some(179 * 60_000)));
        let stats = f.head.stats();
        assert_eq!(f.head.time_range(), (stats.min_t, stats.max_t));
    }

    #[test]
    fn empty_series_are_dropped_after_a_cut() {
        let mut f = Fixture::new();
        f.append(&labels("a", "x"), &[(1000, 1.0)], AppendMode::Live);
        f.append(&labels("b", "x"), &[(3 * HOUR, 1.0)], AppendMode::Live);
        f.head.start_cut(2 * HOUR);
        assert_eq!(f.head.finish_cut(), 1);
        let m = [Matcher::new(MatchOp::Equal, "job", "x").unwrap()];
        assert_eq!(f.head.series_labels(&m, i64::MIN), vec![labels("b", "x")]);
        assert_eq!(f.head.series_records().len(), 1);
    }

    #[test]
    fn delete_removes_only_the_range() {
        let mut f = Fixture::new();
        let l = labels("up", "node");
        f.append(
            &l,
            &(0..10).map(|i| (i * 1000, i as f64)).collect::<Vec<_>>(),
            AppendMode::Live,
        );
        let m = [Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()];
        assert_eq!(f.head.delete(&m, 2000, 4000), 3);
        let got = f.head.select(&m, i64::MIN, i64::MAX);
        assert_eq!(got[0].samples.len(), 7);
        assert!(!got[0].samples.iter().any(|s| (2000..=4000).contains(&s.0)));
    }

    #[test]
    fn a_colliding_series_is_found_after_the_one_holding_its_fingerprint_is_cut_away() {
        let f = Fixture::new();
        let (a, b) = (labels("up", "a"), labels("up", "b"));
        // Two series given one fingerprint, as a 64-bit collision would.
        let hash = 42;
        let (first, second) = {
            let mut stripe = lock(&f.head.stripes[0]);
            let first = f.head.create(&mut stripe, 0, hash, &a, None);
            let second = f.head.create(&mut stripe, 0, hash, &b, None);
            assert_eq!(f.head.find(&stripe, hash, &b), Some(second));
            (first, second)
        };
        // The first is emptied and removed by a cut; the second keeps a sample.
        lock(&f.head.stripes[0])
            .series
            .get_mut(&second)
            .expect("second")
            .append(HOUR, 1.0, None, 2 * HOUR)
            .expect("append");
        assert_eq!(f.head.finish_cut(), 1);
        let stripe = lock(&f.head.stripes[0]);
        assert!(!stripe.series.contains_key(&first));
        assert_eq!(f.head.find(&stripe, hash, &b), Some(second));
        assert_eq!(f.head.find(&stripe, hash, &a), None);
    }
}
