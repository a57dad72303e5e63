//! The cold tier's file format: Parquet. [`ParquetArchiver`] writes a segment's rows as one
//! Parquet file (zstd, the `events` table's columns in their plain Arrow types, so DuckDB,
//! Spark or pyarrow read `archive/*.parquet` as they are); [`archive_parts`] lists a file's
//! row groups with their time bounds, and [`load_part`] reads one back as events, which the
//! scan then treats as it treats the in-memory buffer (see `provider::ScanUnit::Archive`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, MapArray, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampNanosecondType};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use segments::{parse_hex, ColumnId, Event, Segment};

use crate::schema::{events_schema, plain_batch, plain_type, to_arrow};

/// Rows per Parquet row group by default: the unit a query reads back (as events, about 2 KB
/// each in memory).
pub const ARCHIVE_ROW_GROUP_ROWS: usize = 16_384;

/// zstd level of archive files (the warm segments' text level).
const ARCHIVE_ZSTD_LEVEL: i32 = 6;

/// Errors of the cold tier's files.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn file_err(path: &Path, reason: impl ToString) -> ArchiveError {
    ArchiveError::File { path: path.to_path_buf(), reason: reason.to_string() }
}

/// The `events` schema as archive files store it (no view types).
fn archive_schema() -> SchemaRef {
    let schema = events_schema();
    Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(plain_type(f.data_type())))
            .collect::<Vec<_>>(),
    ))
}

/// Writes a segment's rows as one Parquet file.
#[derive(Debug, Clone)]
pub struct ParquetArchiver {
    /// Rows per row group.
    pub row_group_rows: usize,
}

impl Default for ParquetArchiver {
    fn default() -> Self {
        ParquetArchiver { row_group_rows: ARCHIVE_ROW_GROUP_ROWS }
    }
}

impl engine::Archiver for ParquetArchiver {
    fn extension(&self) -> &'static str {
        "parquet"
    }

    fn archive(&self, segment: &Segment, path: &Path) -> Result<(), String> {
        write_parquet(segment, path, self.row_group_rows).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Every row of `segment`, block by block, into a new Parquet file at `path` (row groups of
/// `row_group_rows`), fsync'd. Returns the rows written.
pub fn write_parquet(segment: &Segment, path: &Path, row_group_rows: usize) -> Result<u64, ArchiveError> {
    let schema = archive_schema();
    let file = File::create(path).map_err(|e| file_err(path, e))?;
    let level = ZstdLevel::try_new(ARCHIVE_ZSTD_LEVEL).map_err(|e| file_err(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| file_err(path, e))?;
    let mut rows = 0u64;
    for block in 0..segment.blocks().len() {
        let columns = ColumnId::ALL
            .iter()
            .map(|col| {
                let data = segment.read_column(block, *col).map_err(|e| file_err(path, e))?;
                to_arrow(*col, data).map_err(|e| file_err(path, e))
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let batch = RecordBatch::try_new(events_schema(), columns).map_err(|e| file_err(path, e))?;
        let batch = plain_batch(&batch).map_err(|e| file_err(path, e))?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(|e| file_err(path, e))?;
    }
    let file = writer.into_inner().map_err(|e| file_err(path, e))?;
    file.sync_all().map_err(|e| file_err(path, e))?;
    Ok(rows)
}

/// One row group of an archive file: what a scan unit of the cold tier reads.
#[derive(Debug, Clone)]
pub struct ArchivePart {
    pub path: PathBuf,
    /// The file, open (it stays readable after retention unlinks it).
    pub file: Arc<File>,
    pub row_group: usize,
    pub bounds: RowGroupBounds,
}

/// Rows and time bounds of a row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupBounds {
    pub rows: usize,
    /// Least and greatest `timestamp` of its rows (unix ns).
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Row group bounds of archive files, by path (the files never change; a deleted file's entry
/// is harmless and the map is cleared when it grows large).
fn bounds_cache() -> &'static Mutex<HashMap<PathBuf, Arc<Vec<RowGroupBounds>>>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<PathBuf, Arc<Vec<RowGroupBounds>>>>> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The whole of an open archive file, mapped.
fn mapped(file: &File, path: &Path) -> Result<bytes::Bytes, ArchiveError> {
    #[allow(unsafe_code)]
    // SAFETY: archive files are immutable once renamed into place: nothing in ActiveMirrorOS
    // writes to or truncates a published archive file, it is only unlinked (which keeps an
    // existing mapping valid). The Parquet reader bounds-checks every range it reads against
    // the map's length. Exercised by the archive tests in `tests/tests/sql_differential.rs`.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| file_err(path, e))?;
    Ok(bytes::Bytes::from_owner(map))
}

/// The row groups of archive file `file` with their time bounds (from the file's statistics;
/// the file's bounds where a row group has none).
pub fn archive_parts(file: &engine::ArchivedFile) -> Result<Vec<ArchivePart>, ArchiveError> {
    let bounds = row_group_bounds(file)?;
    Ok(bounds
        .iter()
        .enumerate()
        .map(|(row_group, b)| ArchivePart { path: file.path.clone(), file: file.file.clone(), row_group, bounds: *b })
        .collect())
}

fn row_group_bounds(archived: &engine::ArchivedFile) -> Result<Arc<Vec<RowGroupBounds>>, ArchiveError> {
    let path = archived.path.as_path();
    if let Some(p) = bounds_cache().lock().ok().and_then(|c| c.get(path).cloned()) {
        return Ok(p);
    }
    let (file_min, file_max) = (archived.entry.min_ts, archived.entry.max_ts);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(mapped(&archived.file, path)?).map_err(|e| file_err(path, e))?;
    let meta = builder.metadata();
    let ts_col = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == ColumnId::Timestamp.name())
        .ok_or_else(|| file_err(path, "no timestamp column"))?;
    let parts: Vec<RowGroupBounds> = meta
        .row_groups()
        .iter()
        .map(|rg| {
            let (lo, hi) = match rg.column(ts_col).statistics() {
                Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied()),
                _ => (None, None),
            };
            RowGroupBounds {
                rows: usize::try_from(rg.num_rows()).unwrap_or(0),
                min_ts: lo.unwrap_or(file_min),
                max_ts: hi.unwrap_or(file_max),
            }
        })
        .collect();
    let parts = Arc::new(parts);
    if let Ok(mut c) = bounds_cache().lock() {
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(path.to_path_buf(), parts.clone());
    }
    Ok(parts)
}

/// The rows of one row group of an archive file, as events.
pub fn load_part(part: &ArchivePart) -> Result<Vec<Event>, ArchiveError> {
    let path = &part.path;
    let reader = ParquetRecordBatchReaderBuilder::try_new(mapped(&part.file, path)?)
        .map_err(|e| file_err(path, e))?
        .with_row_groups(vec![part.row_group])
        .with_batch_size(part.bounds.rows.max(1))
        .build()
        .map_err(|e| file_err(path, e))?;
    let mut events = Vec::with_capacity(part.bounds.rows);
    for batch in reader {
        let batch = batch.map_err(|e| file_err(path, e))?;
        events_from_batch(&batch, &mut events).map_err(|e| file_err(path, e))?;
    }
    Ok(events)
}

/// Column `col` of `batch` cast to `dt` (so that a file written with other string or integer
/// widths still reads).
fn column_as(batch: &RecordBatch, col: ColumnId, dt: &DataType) -> Result<ArrayRef, ArrowError> {
    let a = batch
        .column_by_name(col.name())
        .ok_or_else(|| ArrowError::SchemaError(format!("column {} is missing", col.name())))?;
    if a.data_type() == dt {
        Ok(a.clone())
    } else {
        arrow::compute::cast(a, dt)
    }
}

fn strings_of(batch: &RecordBatch, col: ColumnId) -> Result<StringArray, ArrowError> {
    Ok(column_as(batch, col, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn floats_of(batch: &RecordBatch, col: ColumnId) -> Result<Float64Array, ArrowError> {
    Ok(column_as(batch, col, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
}

fn ints_of(batch: &RecordBatch, col: ColumnId) -> Result<Int64Array, ArrowError> {
    Ok(column_as(batch, col, &DataType::Int64)?.as_primitive::<Int64Type>().clone())
}

fn opt_string(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_owned())
}

fn opt<T: arrow::datatypes::ArrowPrimitiveType>(a: &arrow::array::PrimitiveArray<T>, i: usize) -> Option<T::Native> {
    a.is_valid(i).then(|| a.value(i))
}

/// Append the rows of `batch` (the `events` columns, plain types) to `out` as events.
pub fn events_from_batch(batch: &RecordBatch, out: &mut Vec<Event>) -> Result<(), ArrowError> {
    use ColumnId::*;
    let bad = |what: String| ArrowError::InvalidArgumentError(what);
    let tenant = strings_of(batch, Tenant)?;
    let trace = strings_of(batch, TraceId)?;
    let span = strings_of(batch, SpanId)?;
    let parent = strings_of(batch, ParentSpanId)?;
    let agent = strings_of(batch, AgentId)?;
    let session = strings_of(batch, SessionId)?;
    let ts = column_as(batch, Timestamp, &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))?;
    let ts: &TimestampNanosecondArray = ts.as_primitive::<TimestampNanosecondType>();
    let kind = strings_of(batch, Kind)?;
    let name = strings_of(batch, Name)?;
    let content = strings_of(batch, Content)?;
    let intent = strings_of(batch, Intent)?;
    let confidence = floats_of(batch, Confidence)?;
    let duration = floats_of(batch, DurationMs)?;
    let status = strings_of(batch, Status)?;
    let error = strings_of(batch, ErrorMessage)?;
    let model = strings_of(batch, Model)?;
    let input = ints_of(batch, InputTokens)?;
    let output = ints_of(batch, OutputTokens)?;
    let cost = floats_of(batch, CostUsd)?;
    let attrs = batch.column_by_name(Attributes.name()).ok_or_else(|| bad("column attributes is missing".into()))?;
    let attrs: &MapArray = attrs.as_map_opt().ok_or_else(|| bad("attributes is not a map".into()))?;
    let keys = arrow::compute::cast(attrs.keys(), &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let values = arrow::compute::cast(attrs.values(), &DataType::Utf8)?;
    let values = values.as_string::<i32>();
    let offsets = attrs.value_offsets();
    let id = |a: &StringArray, i: usize, what: ColumnId| -> Result<String, ArrowError> {
        a.is_valid(i).then(|| a.value(i).to_owned()).ok_or_else(|| bad(format!("row {i}: {} is null", what.name())))
    };
    out.reserve(batch.num_rows());
    for i in 0..batch.num_rows() {
        let trace_id = parse_hex::<16>(&id(&trace, i, TraceId)?)
            .ok_or_else(|| bad(format!("row {i}: trace_id is not 32 hex digits")))?;
        let span_id = parse_hex::<8>(&id(&span, i, SpanId)?)
            .ok_or_else(|| bad(format!("row {i}: span_id is not 16 hex digits")))?;
        let parent_span_id = match opt_string(&parent, i) {
            Some(p) => {
                Some(parse_hex::<8>(&p).ok_or_else(|| bad(format!("row {i}: parent_span_id is not 16 hex digits")))?)
            }
            None => None,
        };
        let (lo, hi) = (offsets[i] as usize, offsets[i + 1] as usize);
        let attributes = (lo..hi)
            .map(|k| {
                (keys.value(k).to_owned(), if values.is_valid(k) { values.value(k).to_owned() } else { String::new() })
            })
            .collect();
        out.push(Event {
            tenant: id(&tenant, i, Tenant)?,
            trace_id,
            span_id,
            parent_span_id,
            agent_id: id(&agent, i, AgentId)?,
            session_id: opt_string(&session, i),
            timestamp_ns: opt(ts, i).ok_or_else(|| bad(format!("row {i}: timestamp is null")))?,
            kind: id(&kind, i, Kind)?,
            name: opt_string(&name, i),
            content: opt_string(&content, i),
            intent: opt_string(&intent, i),
            confidence: opt(&confidence, i),
            duration_ms: opt(&duration, i),
            status: id(&status, i, Status)?,
            error_message: opt_string(&error, i),
            model: opt_string(&model, i),
            input_tokens: opt(&input, i),
            output_tokens: opt(&output, i),
            cost_usd: opt(&cost, i),
            attributes,
        });
    }
    Ok(())
}
