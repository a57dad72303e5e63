//! The cold tier's file format: Parquet. [`ParquetArchiver`] writes a segment's rows as one
//! Parquet file (zstd, the `events` table's columns in their plain Arrow types, so DuckDB,
//! Spark or pyarrow read `archive/*.parquet` as they are); [`archive_parts`] lists a file's
//! row groups with what prunes them, and [`load_part_columns`] reads one back as Arrow
//! columns of the table's types (see `provider::ScanUnit::Archive`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use index::{Conjunction, IndexedColumn};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use segments::{ColumnId, Segment};

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

    fn archive(&self, segment: &Segment, path: &Path, stop: &dyn Fn() -> bool) -> Result<bool, String> {
        write_parquet(segment, path, self.row_group_rows, stop).map(|rows| rows.is_some()).map_err(|e| e.to_string())
    }
}

/// Every row of `segment`, block by block, into a new Parquet file at `path` (row groups of
/// `row_group_rows`), fsync'd. Returns the rows written, or `None` when `stop` said to stop
/// before the last block (the file is then incomplete).
pub fn write_parquet(
    segment: &Segment,
    path: &Path,
    row_group_rows: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Option<u64>, ArchiveError> {
    let schema = archive_schema();
    let file = File::create(path).map_err(|e| file_err(path, e))?;
    let level = ZstdLevel::try_new(ARCHIVE_ZSTD_LEVEL).map_err(|e| file_err(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        // A trace's lookup reads only the row groups whose filter may hold its id.
        .set_column_bloom_filter_enabled(ColumnPath::from(ColumnId::TraceId.name()), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(ColumnId::TraceId.name()), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(ColumnId::TraceId.name()), row_group_rows.max(1) as u64)
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| file_err(path, e))?;
    let mut rows = 0u64;
    for block in 0..segment.blocks().len() {
        if stop() {
            return Ok(None);
        }
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
    if rows != segment.rows() {
        return Err(file_err(path, format!("wrote {rows} rows of a segment of {}", segment.rows())));
    }
    let file = writer.into_inner().map_err(|e| file_err(path, e))?;
    file.sync_all().map_err(|e| file_err(path, e))?;
    Ok(Some(rows))
}

/// One row group of an archive file: what a scan unit of the cold tier reads.
#[derive(Debug, Clone)]
pub struct ArchivePart {
    pub path: PathBuf,
    /// The file, open (it stays readable after retention unlinks it).
    pub file: Arc<File>,
    pub row_group: usize,
    /// What the file says of the row group's values, for pruning.
    pub meta: Arc<RowGroupMeta>,
    /// The file's footer, parsed once (with its page index) for every read of it.
    pub reader: ArrowReaderMetadata,
}

impl ArchivePart {
    /// Its rows and time bounds.
    pub fn bounds(&self) -> RowGroupBounds {
        self.meta.bounds
    }
}

/// Rows and time bounds of a row group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowGroupBounds {
    pub rows: usize,
    /// Least and greatest `timestamp` of its rows (unix ns).
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Least and greatest value (bytes, as Parquet compares them) and null count of a string
/// column in a row group, each where the file records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueRange {
    pub min: Option<Vec<u8>>,
    pub max: Option<Vec<u8>>,
    pub nulls: Option<u64>,
}

/// A row group's statistics of the indexed columns and its `trace_id` bloom filter.
#[derive(Debug, Clone, Default)]
pub struct RowGroupMeta {
    pub bounds: RowGroupBounds,
    /// By indexed column, in [`IndexedColumn::ALL`]'s order.
    pub ranges: Vec<Option<ValueRange>>,
    pub trace_bloom: Option<Sbbf>,
    /// Bytes of the bloom filter in the file (what it takes in memory).
    pub bloom_bytes: usize,
}

impl RowGroupMeta {
    /// Whether any row of the row group may satisfy `conj`: false only when its statistics
    /// or its bloom filter rule every row out.
    pub fn may_match(&self, conj: &Conjunction) -> bool {
        if let (Some(ids), Some(bloom)) = (&conj.trace_ids, &self.trace_bloom) {
            let mut hex = String::with_capacity(32);
            let any = ids.iter().any(|id| {
                hex.clear();
                for b in id {
                    use std::fmt::Write;
                    let _ = write!(hex, "{b:02x}");
                }
                bloom.check(hex.as_str())
            });
            if !any {
                return false;
            }
        }
        conj.terms.iter().filter(|t| !t.negated).all(|t| {
            let at = IndexedColumn::ALL.iter().position(|c| *c == t.column);
            let Some(Some(range)) = at.and_then(|i| self.ranges.get(i)) else {
                return true;
            };
            t.values.iter().any(|v| match v {
                None => range.nulls != Some(0),
                Some(s) => {
                    let s = s.as_bytes();
                    range.min.as_deref().is_none_or(|m| m <= s) && range.max.as_deref().is_none_or(|m| s <= m)
                }
            })
        })
    }

    fn memory_bytes(&self) -> usize {
        let ranges: usize = self
            .ranges
            .iter()
            .flatten()
            .map(|r| r.min.as_ref().map_or(0, Vec::len) + r.max.as_ref().map_or(0, Vec::len) + 64)
            .sum();
        ranges + self.bloom_bytes + 64
    }
}

/// Row group metadata of archive files, by path (the files never change; a deleted file's
/// entry is harmless). Cleared once it holds more than [`META_CACHE_BYTES`].
fn meta_cache() -> &'static Mutex<MetaCache> {
    static CACHE: std::sync::OnceLock<Mutex<MetaCache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The parsed metadata of each archive file, by path, and the bytes they take.
type MetaCache = (usize, HashMap<PathBuf, Arc<FileMeta>>);

/// An archive file's footer and its row groups' pruning metadata.
#[derive(Debug)]
struct FileMeta {
    reader: ArrowReaderMetadata,
    groups: Vec<Arc<RowGroupMeta>>,
}

/// Budget of the archive files' row group metadata kept between queries (bloom filters are
/// most of it: about 20 KB per row group).
const META_CACHE_BYTES: usize = 64 << 20;

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
    let metas = row_group_metas(file)?;
    Ok(metas
        .groups
        .iter()
        .enumerate()
        .map(|(row_group, m)| ArchivePart {
            path: file.path.clone(),
            file: file.file.clone(),
            row_group,
            meta: m.clone(),
            reader: metas.reader.clone(),
        })
        .collect())
}

fn row_group_metas(archived: &engine::ArchivedFile) -> Result<Arc<FileMeta>, ArchiveError> {
    let path = archived.path.as_path();
    if let Some(p) = meta_cache().lock().ok().and_then(|c| c.1.get(path).cloned()) {
        return Ok(p);
    }
    let (file_min, file_max) = (archived.entry.min_ts, archived.entry.max_ts);
    let bytes = mapped(&archived.file, path)?;
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let reader = ArrowReaderMetadata::load(&bytes, options).map_err(|e| file_err(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), reader.clone());
    let meta = builder.metadata();
    let ts_col = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == ColumnId::Timestamp.name())
        .ok_or_else(|| file_err(path, "no timestamp column"))?;
    let column_at = |name: &str| builder.parquet_schema().columns().iter().position(|c| c.name() == name);
    let indexed: Vec<Option<usize>> = IndexedColumn::ALL.iter().map(|c| column_at(c.name())).collect();
    let trace_col = column_at(ColumnId::TraceId.name());
    let mut parts = Vec::with_capacity(meta.row_groups().len());
    for rg in meta.row_groups() {
        let (lo, hi) = match rg.column(ts_col).statistics() {
            Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied()),
            _ => (None, None),
        };
        let ranges = indexed
            .iter()
            .map(|at| {
                let stats = rg.column((*at)?).statistics()?;
                Some(ValueRange {
                    min: stats.min_bytes_opt().map(<[u8]>::to_vec),
                    max: stats.max_bytes_opt().map(<[u8]>::to_vec),
                    nulls: stats.null_count_opt(),
                })
            })
            .collect();
        // (A filter that does not read is no filter: the row group is read.)
        let trace_bloom = trace_col.and_then(|at| Sbbf::read_from_column_chunk(rg.column(at), &bytes).ok().flatten());
        let bloom_bytes =
            trace_col.and_then(|at| rg.column(at).bloom_filter_length()).map_or(0, |n| usize::try_from(n).unwrap_or(0));
        parts.push(Arc::new(RowGroupMeta {
            bounds: RowGroupBounds {
                rows: usize::try_from(rg.num_rows()).unwrap_or(0),
                min_ts: lo.unwrap_or(file_min),
                max_ts: hi.unwrap_or(file_max),
            },
            ranges,
            trace_bloom,
            bloom_bytes,
        }));
    }
    let parts = Arc::new(FileMeta { reader, groups: parts });
    if let Ok(mut c) = meta_cache().lock() {
        let bytes: usize =
            parts.groups.iter().map(|m| m.memory_bytes()).sum::<usize>() + parts.reader.metadata().memory_size();
        if c.0 + bytes > META_CACHE_BYTES {
            c.1.clear();
            c.0 = 0;
        }
        c.0 += bytes;
        c.1.insert(path.to_path_buf(), parts.clone());
    }
    Ok(parts)
}

/// A reader of `columns` of the part's row group, of the rows at `rows` only when given.
fn part_reader(
    part: &ArchivePart,
    columns: &[ColumnId],
    rows: Option<&[u32]>,
) -> Result<ParquetRecordBatchReader, ArchiveError> {
    let path = &part.path;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(mapped(&part.file, path)?, part.reader.clone());
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.iter().any(|c| c.name() == f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder.with_projection(mask).with_row_groups(vec![part.row_group]);
    if let Some(rows) = rows {
        if let Some(last) = rows.last().filter(|r| **r as usize >= part.bounds().rows) {
            return Err(file_err(path, format!("row {last} outside row group {}", part.row_group)));
        }
        let ranges = consecutive_ranges(rows);
        builder =
            builder.with_row_selection(RowSelection::from_consecutive_ranges(ranges.into_iter(), part.bounds().rows));
    }
    builder.with_batch_size(part.bounds().rows.max(1)).build().map_err(|e| file_err(path, e))
}

/// The rows of one row group (only those at `rows` when given: pages without any are skipped
/// through the file's page index) as
/// Arrow columns of the `events` table's types, indexed by [`ColumnId::index`]: `Some` for
/// each of `columns`, `None` for the others. Returns them with the row count.
pub fn load_part_columns(
    part: &ArchivePart,
    columns: &[ColumnId],
    rows: Option<&[u32]>,
) -> Result<(Vec<Option<ArrayRef>>, usize), ArchiveError> {
    let path = &part.path;
    let batches: Vec<RecordBatch> =
        part_reader(part, columns, rows)?.collect::<Result<_, _>>().map_err(|e| file_err(path, e))?;
    let len = batches.iter().map(RecordBatch::num_rows).sum();
    let mut out: Vec<Option<ArrayRef>> = vec![None; ColumnId::ALL.len()];
    for col in columns {
        let parts: Vec<&dyn Array> = batches
            .iter()
            .map(|b| b.column_by_name(col.name()).map(|a| a.as_ref()))
            .collect::<Option<_>>()
            .ok_or_else(|| file_err(path, format!("column {} is missing", col.name())))?;
        let whole: ArrayRef = match parts.as_slice() {
            [] => arrow::array::new_empty_array(crate::schema::field_of(*col).data_type()),
            [one] => arrow::array::make_array(one.to_data()),
            many => arrow::compute::concat(many).map_err(|e| file_err(path, e))?,
        };
        let dt = crate::schema::field_of(*col).data_type().clone();
        let whole = if whole.data_type() == &dt {
            whole
        } else {
            arrow::compute::cast(&whole, &dt).map_err(|e| file_err(path, e))?
        };
        out[col.index()] = Some(whole);
    }
    Ok((out, len))
}

/// Runs of consecutive positions in ascending `rows`, as ranges.
fn consecutive_ranges(rows: &[u32]) -> Vec<std::ops::Range<usize>> {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for &r in rows {
        let r = r as usize;
        match ranges.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => ranges.push(r..r + 1),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use index::Term;
    use proptest::prelude::*;

    /// The statistics a writer records for `values` (min and max by bytes, nulls).
    fn range_of(values: &[Option<String>]) -> ValueRange {
        let present = values.iter().flatten().map(|s| s.as_bytes().to_vec());
        ValueRange {
            min: present.clone().min(),
            max: present.max(),
            nulls: Some(values.iter().filter(|v| v.is_none()).count() as u64),
        }
    }

    fn meta_with(column: IndexedColumn, range: Option<ValueRange>) -> RowGroupMeta {
        let mut ranges = vec![None; IndexedColumn::ALL.len()];
        let at = IndexedColumn::ALL.iter().position(|c| *c == column).expect("indexed");
        ranges[at] = range;
        RowGroupMeta { ranges, ..Default::default() }
    }

    fn term(column: IndexedColumn, values: &[Option<&str>], negated: bool) -> Conjunction {
        let values = values.iter().map(|v| v.map(str::to_owned)).collect();
        Conjunction { terms: vec![Term { column, values, negated }], trace_ids: None }
    }

    #[test]
    fn statistics_rule_out_only_what_they_exclude() {
        let values = [Some("acme".to_owned()), Some("globex".to_owned()), None];
        let m = meta_with(IndexedColumn::Tenant, Some(range_of(&values)));
        assert!(m.may_match(&term(IndexedColumn::Tenant, &[Some("acme")], false)));
        assert!(m.may_match(&term(IndexedColumn::Tenant, &[Some("beta")], false)), "inside the range");
        assert!(!m.may_match(&term(IndexedColumn::Tenant, &[Some("zeta")], false)));
        assert!(!m.may_match(&term(IndexedColumn::Tenant, &[Some("aaa"), Some("zzz")], false)));
        assert!(m.may_match(&term(IndexedColumn::Tenant, &[Some("aaa"), Some("globex")], false)));
        assert!(m.may_match(&term(IndexedColumn::Tenant, &[None], false)), "it has nulls");
        assert!(m.may_match(&term(IndexedColumn::Tenant, &[Some("zeta")], true)), "negations never prune");
        // Other columns' terms: no statistics kept for them here, so no pruning.
        assert!(m.may_match(&term(IndexedColumn::AgentId, &[Some("zeta")], false)));
        let no_nulls = meta_with(IndexedColumn::Tenant, Some(range_of(&values[..2])));
        assert!(!no_nulls.may_match(&term(IndexedColumn::Tenant, &[None], false)));
        let unknown = meta_with(IndexedColumn::Tenant, Some(ValueRange::default()));
        assert!(unknown.may_match(&term(IndexedColumn::Tenant, &[None], false)));
        assert!(unknown.may_match(&term(IndexedColumn::Tenant, &[Some("zeta")], false)));
    }

    #[test]
    fn the_trace_bloom_filter_rules_out_traces_it_does_not_hold() {
        let mut bloom = Sbbf::new_with_ndv_fpp(1000, 0.001).expect("bloom");
        let ids: Vec<[u8; 16]> = (0..500u128).map(|i| (i * 7_919 + 1).to_be_bytes()).collect();
        let hex = |id: &[u8; 16]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
        for id in &ids {
            bloom.insert(hex(id).as_str());
        }
        let m = RowGroupMeta { trace_bloom: Some(bloom), ..Default::default() };
        let lookup = |id: [u8; 16]| Conjunction { terms: vec![], trace_ids: Some(vec![id]) };
        assert!(ids.iter().all(|id| m.may_match(&lookup(*id))), "every inserted trace may match");
        let others = (0..1000u128).map(|i| (i * 7_919 + 2).to_be_bytes()).filter(|id| m.may_match(&lookup(*id)));
        assert!(others.count() <= 10, "at most about 0.1% false positives");
        let both = Conjunction { terms: vec![], trace_ids: Some(vec![2u128.to_be_bytes(), ids[3]]) };
        assert!(m.may_match(&both));
        // No filter in the file: no pruning.
        assert!(RowGroupMeta::default().may_match(&lookup(2u128.to_be_bytes())));
    }

    #[test]
    fn consecutive_rows_become_ranges() {
        assert_eq!(consecutive_ranges(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(consecutive_ranges(&[0, 1, 2, 5, 7, 8]), vec![0..3, 5..6, 7..9]);
    }

    proptest! {
        /// A row group holding a row that satisfies an equality / IN / IS NULL term is never
        /// ruled out by its statistics.
        #[test]
        fn statistics_never_rule_out_a_matching_row(
            rows in proptest::collection::vec(proptest::option::of("[a-c\u{e9}\u{65e5}]{0,3}"), 1..20),
            extra in proptest::collection::vec(proptest::option::of("[a-c\u{e9}\u{65e5}]{0,3}"), 0..3),
            pick in any::<prop::sample::Index>(),
        ) {
            let m = meta_with(IndexedColumn::AgentId, Some(range_of(&rows)));
            let mut values = extra.clone();
            values.push(rows[pick.index(rows.len())].clone());
            let conj = Conjunction {
                terms: vec![Term { column: IndexedColumn::AgentId, values, negated: false }],
                trace_ids: None,
            };
            prop_assert!(m.may_match(&conj));
            // And a term none of whose values occurs may still match only inside the range.
            let absent: Vec<Option<String>> = extra.into_iter().filter(|v| !rows.contains(v)).collect();
            let conj = Conjunction {
                terms: vec![Term { column: IndexedColumn::AgentId, values: absent.clone(), negated: false }],
                trace_ids: None,
            };
            let r = range_of(&rows);
            let inside = absent.iter().any(|v| match v {
                None => r.nulls != Some(0),
                Some(s) => r.min.as_deref().is_none_or(|m| m <= s.as_bytes()) && r.max.as_deref().is_none_or(|m| s.as_bytes() <= m),
            });
            prop_assert_eq!(m.may_match(&conj), inside);
        }
    }
}
