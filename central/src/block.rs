//! Immutable blocks: the head's past, persisted as plain Parquet.
//!
//! # Layout
//! A block is a directory `blocks/<id>/` (the id is the block's minimum time and a random
//! suffix, so ids sort by time) with three files:
//!
//! - `series.parquet`, one row per series, sorted by label set:
//!   `series_id: UInt32` (0, 1, 2, ... in label order), `metric_name: Utf8`,
//!   `labels: Map<Utf8, Utf8>` (every label, `__name__` included), `first_row: UInt64` and
//!   `rows: UInt32` (where the series' samples are in `samples.parquet`).
//! - `samples.parquet`, one row per sample, sorted by series then time:
//!   `series_id: UInt32` (RLE/dictionary: a run per series costs a few bytes),
//!   `timestamp: Int64` (milliseconds, `DELTA_BINARY_PACKED`: a regular scrape interval costs
//!   almost nothing), and the value in one of two forms:
//!   - `value_decimal: Int64` with `value_scale: Int8`: the value is exactly
//!     `value_decimal / 10^value_scale` (an IEEE division of two exact doubles). Most
//!     metrics are integers or short decimals; one scale per series (the most digits any of
//!     its samples needs) turns a counter into small steps that `DELTA_BINARY_PACKED` stores
//!     in a few bits, where the bits of a float would not compress.
//!   - `value: Float64` (`BYTE_STREAM_SPLIT`), set only for samples with no exact decimal
//!     form within 15 digits after the point and 2^53 (NaN, staleness markers, infinities,
//!     -0, computed ratios); `value_decimal` is null there.
//!
//!   So a plain reader's value is `coalesce(value, value_decimal / 10^value_scale)`. Every
//!   column is zstd-compressed; pages hold at most 32768 rows and the page index is written,
//!   so a reader that wants a few series skips every other page.
//! - `meta.json`: time range, counts, compaction level, source blocks, and the xxh3 checksum
//!   and size of both Parquet files (checked when the block is opened).
//!
//! Any Parquet reader gets labels, timestamps and values out of a block: join the two files
//! on `series_id`. strata itself loads `series.parquet` into a postings index when it opens a
//! block and reads only the rows of the selected series.
//!
//! A block directory is written as `<id>.tmp`, synced, and renamed into place, so a crash
//! never leaves half a block; leftover `.tmp` directories are removed at start.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::builder::{MapBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int8Array, Int64Array, MapArray, RecordBatch, StringArray,
    StructArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use strata_wire::Label;

use crate::head::SeriesData;
use crate::index::{Matcher, Postings, Symbols};
use crate::{Error, Result};

const SERIES_FILE: &str = "series.parquet";
const SAMPLES_FILE: &str = "samples.parquet";
const META_FILE: &str = "meta.json";
/// Samples buffered before a record batch is handed to the Parquet writer.
const BATCH_ROWS: usize = 65_536;

/// `meta.json` of a block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    pub id: String,
    pub min_t: i64,
    pub max_t: i64,
    pub series: u64,
    pub samples: u64,
    /// 1 for a block cut from the head; a compacted block is one more than its sources.
    pub level: u32,
    /// Every block this one replaces, directly or through earlier compactions and deletion
    /// rewrites. A block named here that is still on disk at start-up is left over from
    /// before a crash and is deleted.
    pub sources: Vec<String>,
    pub files: Vec<FileMeta>,
}

/// Size and checksum of one file of a block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileMeta {
    pub name: String,
    pub bytes: u64,
    pub xxh3: u64,
}

fn block_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Block {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn labels_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn series_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("labels", labels_type(), false),
        Field::new("first_row", DataType::UInt64, false),
        Field::new("rows", DataType::UInt32, false),
    ]))
}

fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("value_decimal", DataType::Int64, true),
        Field::new("value_scale", DataType::Int8, false),
    ]))
}

/// Most digits after the decimal point a stored decimal has.
const MAX_SCALE: usize = 15;
const POW10: [f64; MAX_SCALE + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// Integers up to this magnitude are exact doubles.
const EXACT: i64 = 1 << 53;

/// `v` as `m / 10^scale` with the smallest scale, if some scale up to [`MAX_SCALE`] gives
/// back exactly `v`.
fn to_decimal(v: f64) -> Option<(i64, usize)> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    POW10.iter().enumerate().find_map(|(scale, &p)| {
        let m = (v * p).round();
        (m.abs() < EXACT as f64 && m / p == v).then_some((m as i64, scale))
    })
}

/// A decimal `(m, s)` rescaled to `scale` (at least `s`), if the result stays exact.
fn at_scale((m, s): (i64, usize), scale: usize) -> Option<i64> {
    let m = m.checked_mul(10i64.pow((scale - s) as u32))?;
    (m.abs() < EXACT).then_some(m)
}

/// The value of one sample row.
fn row_value(float: &Float64Array, decimal: Option<(&Int64Array, &Int8Array)>, i: usize) -> f64 {
    match decimal {
        Some((m, scale)) if float.is_null(i) => {
            m.value(i) as f64 / POW10[scale.value(i).clamp(0, MAX_SCALE as i8) as usize]
        }
        _ => float.value(i),
    }
}

fn samples_props() -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(9).unwrap_or_default());
    WriterProperties::builder()
        .set_compression(zstd)
        .set_data_page_row_count_limit(32768)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_dictionary_enabled(ColumnPath::from("value_decimal"), false)
        .set_column_encoding(
            ColumnPath::from("value_decimal"),
            Encoding::DELTA_BINARY_PACKED,
        )
        .build()
}

fn series_props() -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default());
    WriterProperties::builder().set_compression(zstd).build()
}

/// Writes one block from series given in label order. Samples of each series must be sorted
/// by time with one sample per timestamp.
#[derive(Debug)]
pub struct BlockWriter {
    tmp: PathBuf,
    dest: PathBuf,
    id: String,
    level: u32,
    sources: Vec<String>,
    samples: ArrowWriter<File>,
    ids: Vec<u32>,
    ts: Vec<i64>,
    floats: Vec<Option<f64>>,
    decimals: Vec<Option<i64>>,
    scales: Vec<i8>,
    series: Vec<(Vec<Label>, u64, u32)>,
    rows: u64,
    min_t: i64,
    max_t: i64,
}

impl BlockWriter {
    /// Starts a block in `blocks_dir`; `min_t` names it.
    pub fn create(blocks_dir: &Path, min_t: i64, level: u32, sources: Vec<String>) -> Result<Self> {
        let id = format!("{:016x}-{:08x}", min_t, rand::random::<u32>());
        let tmp = blocks_dir.join(format!("{id}.tmp"));
        let dest = blocks_dir.join(&id);
        fs::create_dir_all(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        let path = tmp.join(SAMPLES_FILE);
        let file = File::create(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let samples = ArrowWriter::try_new(file, samples_schema(), Some(samples_props()))
            .map_err(|e| block_err(&path, e))?;
        Ok(Self {
            tmp,
            dest,
            id,
            level,
            sources,
            samples,
            ids: Vec::with_capacity(BATCH_ROWS),
            ts: Vec::with_capacity(BATCH_ROWS),
            floats: Vec::with_capacity(BATCH_ROWS),
            decimals: Vec::with_capacity(BATCH_ROWS),
            scales: Vec::with_capacity(BATCH_ROWS),
            series: Vec::new(),
            rows: 0,
            min_t: i64::MAX,
            max_t: i64::MIN,
        })
    }

    /// Adds the next series (in label order). Empty series are skipped.
    pub fn add(&mut self, labels: Vec<Label>, samples: &[(i64, f64)]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let id = self.series.len() as u32;
        self.series.push((labels, self.rows, samples.len() as u32));
        let decimals: Vec<Option<(i64, usize)>> =
            samples.iter().map(|&(_, v)| to_decimal(v)).collect();
        let scale = decimals
            .iter()
            .flatten()
            .map(|&(_, s)| s)
            .max()
            .unwrap_or(0);
        for (&(t, v), d) in samples.iter().zip(decimals) {
            self.ids.push(id);
            self.ts.push(t);
            let decimal = d.and_then(|d| at_scale(d, scale));
            self.decimals.push(decimal);
            self.floats.push(decimal.is_none().then_some(v));
            self.scales.push(scale as i8);
            if self.ids.len() >= BATCH_ROWS {
                self.flush_batch()?;
            }
        }
        self.rows += samples.len() as u64;
        self.min_t = self.min_t.min(samples[0].0);
        self.max_t = self.max_t.max(samples[samples.len() - 1].0);
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.ids))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.ts))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.floats))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.decimals))),
            Arc::new(Int8Array::from(std::mem::take(&mut self.scales))),
        ];
        let batch =
            RecordBatch::try_new(samples_schema(), cols).map_err(|e| block_err(&self.tmp, e))?;
        self.samples
            .write(&batch)
            .map_err(|e| block_err(&self.tmp, e))?;
        Ok(())
    }

    /// Finishes the files, syncs them, and moves the block into place. Returns `None` when no
    /// sample was added (nothing is left on disk).
    pub fn finish(mut self) -> Result<Option<BlockMeta>> {
        self.flush_batch()?;
        let tmp = self.tmp.clone();
        if self.series.is_empty() {
            drop(self.samples);
            let _ = fs::remove_dir_all(&tmp);
            return Ok(None);
        }
        let samples_file = self.samples.into_inner().map_err(|e| block_err(&tmp, e))?;
        samples_file.sync_all().map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        write_series(&tmp.join(SERIES_FILE), &self.series)?;
        let mut files = Vec::new();
        for name in [SERIES_FILE, SAMPLES_FILE] {
            let (bytes, xxh3) = checksum(&tmp.join(name))?;
            files.push(FileMeta {
                name: name.to_owned(),
                bytes,
                xxh3,
            });
        }
        let meta = BlockMeta {
            id: self.id,
            min_t: self.min_t,
            max_t: self.max_t,
            series: self.series.len() as u64,
            samples: self.rows,
            level: self.level,
            sources: self.sources,
            files,
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let meta_path = tmp.join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| block_err(&tmp, e))?;
        let mut f = File::create(&meta_path).map_err(io(&meta_path))?;
        f.write_all(&json).map_err(io(&meta_path))?;
        f.sync_all().map_err(io(&meta_path))?;
        File::open(&tmp)
            .and_then(|d| d.sync_all())
            .map_err(io(&tmp))?;
        fs::rename(&tmp, &self.dest).map_err(io(&self.dest))?;
        if let Some(parent) = self.dest.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
        Ok(Some(meta))
    }
}

fn write_series(path: &Path, series: &[(Vec<Label>, u64, u32)]) -> Result<()> {
    let mut names = StringBuilder::new();
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for (labels, _, _) in series {
        names.append_value(
            labels
                .iter()
                .find(|l| l.name == "__name__")
                .map_or("", |l| l.value.as_str()),
        );
        for l in labels {
            map.keys().append_value(&l.name);
            map.values().append_value(&l.value);
        }
        map.append(true).map_err(|e| block_err(path, e))?;
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(0..series.len() as u32)),
        Arc::new(names.finish()),
        Arc::new(map.finish()),
        Arc::new(UInt64Array::from_iter_values(series.iter().map(|s| s.1))),
        Arc::new(UInt32Array::from_iter_values(series.iter().map(|s| s.2))),
    ];
    let batch = RecordBatch::try_new(series_schema(), cols).map_err(|e| block_err(path, e))?;
    let file = File::create(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(series_props()))
        .map_err(|e| block_err(path, e))?;
    w.write(&batch).map_err(|e| block_err(path, e))?;
    let file = w.into_inner().map_err(|e| block_err(path, e))?;
    file.sync_all().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn checksum(path: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, h.digest()))
}

/// One series of an open block: labels as symbols, and where its samples are.
#[derive(Debug)]
struct BlockSeries {
    labels: Box<[(u32, u32)]>,
    first_row: u64,
    rows: u32,
}

/// An open block: its metadata and a postings index over its series.
///
/// A block replaced by compaction, a deletion or retention is [retired](Block::retire): its
/// directory is removed when the last reader lets go of it, so a query that took the block
/// list before the replacement still reads every file it expects.
#[derive(Debug)]
pub struct Block {
    pub dir: PathBuf,
    pub meta: BlockMeta,
    symbols: Symbols,
    postings: Postings,
    series: Vec<BlockSeries>,
    retired: AtomicBool,
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire)
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(block = %self.dir.display(), error = %e, "cannot remove a replaced block; it is removed at the next start");
        }
    }
}

fn downcast<'a, T: 'static>(col: &'a ArrayRef, what: &str, path: &Path) -> Result<&'a T> {
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| block_err(path, format!("column {what} has an unexpected type")))
}

impl Block {
    /// Opens a block directory, verifying both files against their checksums.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let raw = fs::read(&meta_path).map_err(|source| Error::Io {
            path: meta_path.clone(),
            source,
        })?;
        let meta: BlockMeta = serde_json::from_slice(&raw).map_err(|e| block_err(&meta_path, e))?;
        for f in &meta.files {
            let path = dir.join(&f.name);
            let (bytes, xxh3) = checksum(&path)?;
            if bytes != f.bytes || xxh3 != f.xxh3 {
                return Err(block_err(
                    &path,
                    format!(
                        "checksum mismatch ({bytes} bytes, expected {}); the file is damaged",
                        f.bytes
                    ),
                ));
            }
        }
        let path = dir.join(SERIES_FILE);
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| block_err(&path, e))?;
        let mut symbols = Symbols::default();
        let mut postings = Postings::default();
        let mut series = Vec::with_capacity(meta.series as usize);
        for batch in reader {
            let batch = batch.map_err(|e| block_err(&path, e))?;
            let ids = downcast::<UInt32Array>(batch.column(0), "series_id", &path)?;
            let map = downcast::<MapArray>(batch.column(2), "labels", &path)?;
            let first = downcast::<UInt64Array>(batch.column(3), "first_row", &path)?;
            let rows = downcast::<UInt32Array>(batch.column(4), "rows", &path)?;
            for i in 0..batch.num_rows() {
                let entries: StructArray = map.value(i);
                let keys = downcast::<StringArray>(entries.column(0), "labels.keys", &path)?;
                let values = downcast::<StringArray>(entries.column(1), "labels.values", &path)?;
                let syms: Box<[(u32, u32)]> = (0..keys.len())
                    .map(|j| {
                        (
                            symbols.intern(keys.value(j)),
                            symbols.intern(values.value(j)),
                        )
                    })
                    .collect();
                let id = ids.value(i);
                if id as usize != series.len() {
                    return Err(block_err(&path, "series ids are not dense and in order"));
                }
                postings.add(id, &syms);
                series.push(BlockSeries {
                    labels: syms,
                    first_row: first.value(i),
                    rows: rows.value(i),
                });
            }
        }
        if series.len() as u64 != meta.series {
            return Err(block_err(
                &path,
                format!(
                    "holds {} series, meta.json says {}",
                    series.len(),
                    meta.series
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            symbols,
            postings,
            series,
            retired: AtomicBool::new(false),
        })
    }

    /// Marks the block as replaced: its directory is removed once no reader holds it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    fn labels(&self, id: u32) -> Vec<Label> {
        self.series[id as usize]
            .labels
            .iter()
            .map(|&(n, v)| Label::new(self.symbols.resolve(n), self.symbols.resolve(v)))
            .collect()
    }

    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_t <= maxt && self.meta.max_t >= mint
    }

    /// Label names of the block's series, unsorted.
    pub fn label_names(&self) -> Vec<String> {
        self.postings.label_names(&self.symbols)
    }

    /// Values of label `name` in the block's series, unsorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.label_values(&self.symbols, name)
    }

    /// Label sets of the matching series.
    pub fn series_labels(&self, matchers: &[Matcher]) -> Vec<Vec<Label>> {
        self.postings
            .select(&self.symbols, matchers)
            .into_iter()
            .map(|id| self.labels(id))
            .collect()
    }

    /// Reads the samples in `[mint, maxt]` of the given series ids (sorted), in id order.
    fn read_series(&self, ids: &[u32], mint: i64, maxt: i64) -> Result<Vec<SeriesData>> {
        Ok(self
            .read_samples(ids, mint, maxt)?
            .into_iter()
            .map(|s| s.into_series())
            .collect())
    }

    /// Reads the samples in `[mint, maxt]` of the given series ids (sorted), in id order,
    /// leaving their labels in the block until they are needed.
    fn read_samples(&self, ids: &[u32], mint: i64, maxt: i64) -> Result<Vec<BlockPart<'_>>> {
        let path = self.dir.join(SAMPLES_FILE);
        let mut selectors = Vec::new();
        let mut at = 0u64;
        for &id in ids {
            let BlockSeries {
                first_row: first,
                rows,
                ..
            } = self.series[id as usize];
            if first > at {
                selectors.push(RowSelector::skip((first - at) as usize));
            }
            selectors.push(RowSelector::select(rows as usize));
            at = first + u64::from(rows);
        }
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .and_then(|b| {
                b.with_row_selection(RowSelection::from(selectors))
                    .with_batch_size(8192)
                    .build()
            })
            .map_err(|e| block_err(&path, e))?;
        // A read of the whole block knows each series' length; a part of it does not.
        let whole = mint <= self.meta.min_t && maxt >= self.meta.max_t;
        let mut out: Vec<BlockPart<'_>> = Vec::with_capacity(ids.len());
        let mut current: Option<u32> = None;
        for batch in reader {
            let batch = batch.map_err(|e| block_err(&path, e))?;
            let sid = downcast::<UInt32Array>(batch.column(0), "series_id", &path)?;
            let ts = downcast::<Int64Array>(batch.column(1), "timestamp", &path)?;
            let vs = downcast::<Float64Array>(batch.column(2), "value", &path)?;
            // Blocks written before decimal values have only the `value` column.
            let decimal = match (
                batch.column_by_name("value_decimal"),
                batch.column_by_name("value_scale"),
            ) {
                (Some(m), Some(s)) => Some((
                    downcast::<Int64Array>(m, "value_decimal", &path)?,
                    downcast::<Int8Array>(s, "value_scale", &path)?,
                )),
                _ => None,
            };
            for i in 0..batch.num_rows() {
                let id = sid.value(i);
                if current != Some(id) {
                    current = Some(id);
                    out.push(BlockPart {
                        block: self,
                        id,
                        samples: if whole {
                            Vec::with_capacity(self.series[id as usize].rows as usize)
                        } else {
                            Vec::new()
                        },
                    });
                }
                let t = ts.value(i);
                if t >= mint
                    && t <= maxt
                    && let Some(last) = out.last_mut()
                {
                    last.samples.push((t, row_value(vs, decimal, i)));
                }
            }
        }
        out.retain(|s| !s.samples.is_empty());
        Ok(out)
    }

    /// Series matching `matchers` with their samples in `[mint, maxt]`, in label order.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<BlockPart<'_>>> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let ids = self.postings.select(&self.symbols, matchers);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read_samples(&ids, mint, maxt)
    }

    /// Every series of the block in label order (for deletion rewrites).
    pub fn for_each_series(&self, mut f: impl FnMut(SeriesData) -> Result<()>) -> Result<()> {
        let mut cursor = SeriesCursor::new(self);
        while let Some(s) = cursor.next_series()? {
            f(s)?;
        }
        Ok(())
    }

    /// Bytes on disk (both Parquet files).
    pub fn bytes(&self) -> u64 {
        self.meta.files.iter().map(|f| f.bytes).sum()
    }
}

/// A series' samples read from a block, its labels still the block's symbols: a query over
/// many blocks builds each label set once, from the first block that has the series.
pub struct BlockPart<'a> {
    block: &'a Block,
    id: u32,
    pub samples: Vec<(i64, f64)>,
}

impl std::fmt::Debug for BlockPart<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockPart")
            .field("block", &self.block.meta.id)
            .field("id", &self.id)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl BlockPart<'_> {
    /// Orders the series' labels against `labels` as [`crate::head::label_order`] does, without
    /// building them.
    pub fn label_order(&self, labels: &[Label]) -> std::cmp::Ordering {
        let symbols = &self.block.symbols;
        self.block.series[self.id as usize]
            .labels
            .iter()
            .map(|&(n, v)| (symbols.resolve(n), symbols.resolve(v)))
            .cmp(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    pub fn into_series(self) -> SeriesData {
        SeriesData {
            labels: self.block.labels(self.id),
            samples: self.samples,
        }
    }
}

/// Reads a block's series in label order, a batch of series at a time, so compaction and
/// rewrites hold only one batch per source block in memory.
#[derive(Debug)]
pub struct SeriesCursor<'a> {
    block: &'a Block,
    next_id: u32,
    batch: std::vec::IntoIter<SeriesData>,
}

impl<'a> SeriesCursor<'a> {
    /// Series read from the file at a time.
    const BATCH: u32 = 4096;

    pub fn new(block: &'a Block) -> Self {
        Self {
            block,
            next_id: 0,
            batch: Vec::new().into_iter(),
        }
    }

    /// The next series, or `None` after the last.
    pub fn next_series(&mut self) -> Result<Option<SeriesData>> {
        loop {
            if let Some(s) = self.batch.next() {
                return Ok(Some(s));
            }
            let total = self.block.series.len() as u32;
            if self.next_id >= total {
                return Ok(None);
            }
            let end = (self.next_id + Self::BATCH).min(total);
            let ids: Vec<u32> = (self.next_id..end).collect();
            self.next_id = end;
            self.batch = self
                .block
                .read_series(&ids, i64::MIN, i64::MAX)?
                .into_iter();
        }
    }
}

/// Removes `.tmp` directories left by a crash while a block was written.
pub fn remove_partial(blocks_dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(blocks_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: blocks_dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            tracing::warn!(dir = %entry.path().display(), "removing a block left half-written by a crash");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::MatchOp;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    use proptest::prelude::*;

    /// Two series: `hz-01` with 300 samples of thirds (mostly no decimal form), `hz-02` with
    /// 5 samples of quarters (all decimal).
    fn write_test_block(dir: &Path) -> BlockMeta {
        let mut w = BlockWriter::create(dir, 0, 1, vec![]).unwrap();
        for (cell, n, div) in [("hz-01", 300i64, 3.0), ("hz-02", 5, 4.0)] {
            let labels = vec![
                Label::new("__name__", "up"),
                Label::new("cell", cell),
                Label::new("job", "node"),
            ];
            let samples: Vec<(i64, f64)> = (0..n).map(|i| (i * 15_000, i as f64 / div)).collect();
            w.add(labels, &samples).unwrap();
        }
        w.finish().unwrap().unwrap()
    }

    #[test]
    fn decimals_are_exact_or_absent() {
        for (v, want) in [
            (0.0, Some((0, 0))),
            (42.0, Some((42, 0))),
            (0.1, Some((1, 1))),
            (-123.456, Some((-123_456, 3))),
            (1e15, Some((1_000_000_000_000_000, 0))),
            (1.0 / 3.0, None),
            (-0.0, None),
            (f64::NAN, None),
            (strata_wire::stale_nan(), None),
            (f64::INFINITY, None),
            (1e300, None),
        ] {
            assert_eq!(to_decimal(v), want, "{v}");
        }
    }

    proptest! {
        #[test]
        fn any_value_survives_a_block_bit_for_bit(
            values in prop::collection::vec(
                prop_oneof![
                    prop::num::f64::ANY,
                    (-1_000_000i64..1_000_000, 0u32..6)
                        .prop_map(|(m, s)| m as f64 / 10f64.powi(s as i32)),
                    Just(strata_wire::stale_nan()),
                ],
                1..200,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut w = BlockWriter::create(dir.path(), 0, 1, vec![]).unwrap();
            let samples: Vec<(i64, f64)> =
                values.iter().enumerate().map(|(i, &v)| (i as i64, v)).collect();
            w.add(vec![Label::new("__name__", "x")], &samples).unwrap();
            let meta = w.finish().unwrap().unwrap();
            let block = Block::open(&dir.path().join(&meta.id)).unwrap();
            let got = block.select(&[], i64::MIN, i64::MAX).unwrap();
            let bits = |s: &[(i64, f64)]| -> Vec<(i64, u64)> {
                s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
            };
            prop_assert_eq!(bits(&got[0].samples), bits(&samples));
        }
    }

    #[test]
    fn roundtrip_select_by_matchers_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        assert_eq!((meta.series, meta.samples), (2, 305));
        let block = Block::open(&dir.path().join(&meta.id)).unwrap();
        let m = [Matcher::new(MatchOp::Equal, "cell", "hz-02").unwrap()];
        let got = block.select(&m, i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), 5);
        let labels = [
            Label::new("__name__", "up"),
            Label::new("cell", "hz-02"),
            Label::new("job", "node"),
        ];
        assert!(got[0].label_order(&labels).is_eq());
        assert!(got[0].label_order(&labels[..2]).is_gt());
        let later = [Label::new("__name__", "up"), Label::new("cell", "hz-03")];
        assert!(got[0].label_order(&later).is_lt());
        assert_eq!(got.into_iter().next().unwrap().into_series().labels, labels);
        let m = [Matcher::new(MatchOp::Regex, "cell", "hz-.*").unwrap()];
        let got = block.select(&m, 15_000, 30_000).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].samples,
            vec![(15_000, 1.0 / 3.0), (30_000, 2.0 / 3.0)]
        );
        assert_eq!(got[1].samples, vec![(15_000, 0.25), (30_000, 0.5)]);
    }

    /// Every row of a Parquet file through the crate's generic row API.
    fn plain_rows(path: &Path) -> Vec<parquet::record::Row> {
        SerializedFileReader::new(File::open(path).unwrap())
            .unwrap()
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn a_plain_parquet_reader_gets_labels_timestamps_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        let block_dir = dir.path().join(&meta.id);
        // series.parquet through the generic row API: no strata code involved.
        let rows = plain_rows(&block_dir.join("series.parquet"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].get_string(1).unwrap(), "up");
        let labels = rows[1].get_map(2).unwrap();
        let rendered = format!("{labels:?}");
        assert!(rendered.contains("hz-02"), "{rendered}");
        let rows = plain_rows(&block_dir.join("samples.parquet"));
        assert_eq!(rows.len(), 305);
        // The value as the layout note says: coalesce(value, value_decimal / 10^value_scale).
        let value = |row: &parquet::record::Row| match row.get_double(2) {
            Ok(v) => v,
            Err(_) => row.get_long(3).unwrap() as f64 / 10f64.powi(row.get_byte(4).unwrap().into()),
        };
        assert_eq!(rows[1].get_uint(0).unwrap(), 0);
        assert_eq!(rows[1].get_long(1).unwrap(), 15_000);
        assert_eq!(value(&rows[1]), 1.0 / 3.0);
        assert_eq!(value(&rows[3]), 1.0);
        assert_eq!(rows[302].get_uint(0).unwrap(), 1);
        assert_eq!(rows[302].get_long(1).unwrap(), 30_000);
        assert_eq!(value(&rows[302]), 0.5);
        assert_eq!(rows[302].get_long(3).unwrap(), 50, "quarters at scale 2");
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        let path = dir.path().join(&meta.id).join("samples.parquet");
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 0x55;
        fs::write(&path, bytes).unwrap();
        let e = Block::open(&dir.path().join(&meta.id)).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }
}
