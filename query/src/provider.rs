//! The `events` table: a DataFusion `TableProvider` over an engine snapshot. `scan` prunes
//! segments and blocks by time bounds, bitmap indexes and the content token index, evaluates
//! the remaining filters itself on their own columns, then streams one record batch per
//! surviving block (only the projected columns of the passing rows decoded), spread over
//! several partitions.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::datatypes::{Field, Schema, SchemaRef, UInt32Type};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, DFSchema, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SortOrderPushdownResult};
use engine::{Engine, Snapshot};
use futures::StreamExt;
use index::{IndexedColumn, Term};
use roaring::RoaringBitmap;
use segments::{ColumnData, ColumnEncoding, ColumnId, Event, Segment, StrColumn};

use crate::archive::ArchivePart;
use crate::cache::{block_cache, text_page_cache, BlockCache, BlockKey, PageKey};
use crate::codes::{CodeBook, KeyForm};
use crate::pushdown::ScanPredicate;
use crate::schema::{events_schema, to_arrow};

/// The rows of a unit to keep.
#[derive(Debug, Clone)]
pub enum RowSet {
    /// Listed row numbers, ascending.
    Listed(Vec<u32>),
    /// The rows of `bitmap` in `start..start + len` (segment row ids), `count` of them,
    /// numbered from `start`. Kept as the bitmap so that listing the rows happens in the scan's
    /// partitions, not on the planning thread. `flat`, when set, holds the same bitmap as bits
    /// of the whole segment (see [`index::flat_words`]), for selections dense enough that
    /// slicing bits beats listing rows.
    Indexed { bitmap: Arc<RoaringBitmap>, start: u32, len: u32, count: usize, flat: Option<Buffer> },
}

impl RowSet {
    pub fn len(&self) -> usize {
        match self {
            RowSet::Listed(rows) => rows.len(),
            RowSet::Indexed { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row numbers within the unit, ascending.
    pub fn to_indices(&self) -> Result<UInt32Array> {
        match self {
            RowSet::Listed(rows) => Ok(UInt32Array::from(rows.clone())),
            RowSet::Indexed { flat: Some(bits), start, len, count, .. } => {
                let mut out = Vec::with_capacity(*count);
                out.extend(flat_slice(bits, *start, *len)?.set_indices().map(|i| i as u32));
                Ok(UInt32Array::from(out))
            }
            RowSet::Indexed { bitmap, start, len, count, flat: None } => {
                // Whole containers at a time (`next_many`), not a value per iterator step.
                let mut out = vec![0u32; *count];
                let got = bitmap.range(*start..start + len).next_many(&mut out).len();
                out.truncate(got);
                for r in out.iter_mut() {
                    *r -= start;
                }
                Ok(UInt32Array::from(out))
            }
        }
    }

    /// The rows as a mask of `len` bits (the unit's row count); a row at or past `len` is an
    /// error.
    pub fn to_mask(&self, len: usize) -> Result<BooleanBuffer> {
        let mut words = vec![0u64; len.div_ceil(64)];
        let outside = |r: u32| DataFusionError::Internal(format!("row {r} outside a unit of {len} rows"));
        // Rows come ascending: once the last of a run is inside, all of them are, and the
        // loop that sets them has no error path.
        let mut set_all = |rows: &[u32], start: u32| -> Result<()> {
            let Some(&last) = rows.last() else { return Ok(()) };
            if (last - start) as usize >= len {
                return Err(outside(last - start));
            }
            for r in rows {
                let r = (r - start) as usize;
                words[r >> 6] |= 1 << (r & 63);
            }
            Ok(())
        };
        match self {
            RowSet::Listed(rows) => {
                if rows.is_sorted() {
                    set_all(rows, 0)?;
                } else if let Some(r) = rows.iter().find(|r| **r as usize >= len) {
                    return Err(outside(*r));
                } else {
                    rows.iter().try_for_each(|r| set_all(std::slice::from_ref(r), 0))?;
                }
            }
            RowSet::Indexed { flat: Some(bits), start, len: n, .. } => {
                if *n as usize != len {
                    return Err(DataFusionError::Internal(format!("a selection of {n} rows for a unit of {len}")));
                }
                return flat_slice(bits, *start, *n);
            }
            RowSet::Indexed { bitmap, start, len: n, flat: None, .. } => {
                let mut it = bitmap.range(*start..start + n);
                let mut buf = [0u32; 1024];
                loop {
                    let got = it.next_many(&mut buf);
                    if got.is_empty() {
                        break;
                    }
                    set_all(got, *start)?;
                }
            }
        }
        Ok(BooleanBuffer::new(Buffer::from_vec(words), 0, len))
    }
}

/// Bits `start..start + len` of a segment's flat selection (no copy: an offset into it).
fn flat_slice(bits: &Buffer, start: u32, len: u32) -> Result<BooleanBuffer> {
    let end = start as usize + len as usize;
    if end > bits.len() * 8 {
        return Err(DataFusionError::Internal(format!(
            "rows up to {end} outside a selection of {} bits",
            bits.len() * 8
        )));
    }
    Ok(BooleanBuffer::new(bits.clone(), start as usize, len as usize))
}

/// One unit of scan work: a block of a segment, or an in-memory batch, with the rows to keep
/// (`None`: all rows).
#[derive(Debug, Clone)]
pub enum ScanUnit {
    Block {
        segment: Arc<Segment>,
        block: usize,
        rows: Option<RowSet>,
    },
    Memory {
        events: Arc<Vec<Event>>,
        rows: Option<RowSet>,
    },
    /// A row group of a cold-tier file, read (as events) only when the scan reaches it; its
    /// rows are then those `predicate` keeps, and it is read as a `Memory` unit (see
    /// [`ScanUnit::resolve`]).
    Archive {
        part: Arc<ArchivePart>,
        predicate: Arc<ScanPredicate>,
    },
    /// What an archive unit becomes once read ([`ScanUnit::resolve`]): its selected rows as
    /// Arrow columns of the table's types, by [`ColumnId::index`] (`None` for columns not
    /// read). Made while the scan runs, never planned.
    Columns {
        columns: Arc<Vec<Option<ArrayRef>>>,
        len: usize,
    },
}

impl ScanUnit {
    pub fn rows(&self) -> usize {
        match self {
            ScanUnit::Block { segment, block, rows } => {
                rows.as_ref().map_or(segment.blocks()[*block].rows as usize, RowSet::len)
            }
            ScanUnit::Memory { events, rows } => rows.as_ref().map_or(events.len(), RowSet::len),
            // At most.
            ScanUnit::Archive { part, .. } => part.bounds().rows,
            ScanUnit::Columns { len, .. } => *len,
        }
    }

    /// An archive unit read into a `Columns` unit of the rows its predicate keeps (`None`
    /// when none does); other units as they are. Only `columns` are read, so the unit must be
    /// read for those only.
    pub fn resolve(self, columns: &[ColumnId]) -> Result<Option<ScanUnit>> {
        let ScanUnit::Archive { part, predicate } = self else {
            return Ok(Some(self));
        };
        // The predicate's columns alone first, to find its rows; then the columns asked for,
        // of those rows only (a trace's few rows do not read every row's text).
        let mut pred_columns: Vec<ColumnId> = Vec::new();
        if predicate.min_ts.is_some() || predicate.max_ts.is_some() {
            pred_columns.push(ColumnId::Timestamp);
        }
        if predicate.conj.trace_ids.is_some() {
            pred_columns.push(ColumnId::TraceId);
        }
        for t in &predicate.conj.terms {
            if let Some(c) = ColumnId::ALL.iter().find(|c| c.name() == t.column.name()) {
                if !pred_columns.contains(c) {
                    pred_columns.push(*c);
                }
            }
        }
        let selected: Option<Vec<u32>> = if pred_columns.is_empty() {
            None
        } else {
            let (probe, len) = crate::archive::load_part_columns(&part, &pred_columns, None).map_err(ext)?;
            let rows = rows_matching(&probe, len, &predicate)?;
            if rows.is_empty() {
                return Ok(None);
            }
            (rows.len() < len).then_some(rows)
        };
        let (columns, len) = crate::archive::load_part_columns(&part, columns, selected.as_deref()).map_err(ext)?;
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(ScanUnit::Columns { columns: Arc::new(columns), len }))
    }

    fn is_archive(&self) -> bool {
        matches!(self, ScanUnit::Archive { .. })
    }
}

/// What pruning did for one scan (shown by `EXPLAIN` through the plan's name and by tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruningStats {
    pub segments_total: usize,
    pub segments_kept: usize,
    pub blocks_total: usize,
    pub blocks_kept: usize,
    pub rows_total: u64,
    pub rows_kept: u64,
}

/// The planned scan: units to read and what pruning did.
#[derive(Debug, Clone, Default)]
pub struct ScanPlan {
    pub units: Vec<ScanUnit>,
    pub stats: PruningStats,
}

pub(crate) fn event_matches(e: &Event, p: &ScanPredicate) -> bool {
    row_matches(p, e.timestamp_ns, || Some(e.trace_id), |c| e.indexed_value(c))
}

/// Whether a row with timestamp `ts`, trace id `trace_id()` and indexed values `value(c)`
/// satisfies `p` (the time bounds, the trace ids and every term).
fn row_matches<'a>(
    p: &ScanPredicate,
    ts: i64,
    trace_id: impl Fn() -> Option<[u8; 16]>,
    value: impl Fn(IndexedColumn) -> Option<&'a str>,
) -> bool {
    if p.min_ts.is_some_and(|m| ts < m) || p.max_ts.is_some_and(|m| ts > m) {
        return false;
    }
    if let Some(ids) = &p.conj.trace_ids {
        if !trace_id().is_some_and(|t| ids.contains(&t)) {
            return false;
        }
    }
    p.conj.terms.iter().all(|t| term_matches(value(t.column), t))
}

/// The rows of `columns` (a `Columns` unit's, `len` rows, holding at least the predicate's
/// columns) that satisfy `p`, as [`event_matches`] decides for an event.
fn rows_matching(columns: &[Option<ArrayRef>], len: usize, p: &ScanPredicate) -> Result<Vec<u32>> {
    let ts =
        match (p.min_ts.is_some() || p.max_ts.is_some(), columns.get(ColumnId::Timestamp.index()).cloned().flatten()) {
            (true, Some(a)) => Some(a),
            (true, None) => return Err(DataFusionError::Internal("archived timestamp was not read".into())),
            (false, _) => None,
        };
    let ts = ts.as_ref().and_then(|a| a.as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>());
    let traces = columns.get(ColumnId::TraceId.index()).cloned().flatten();
    let traces = traces.as_ref().and_then(|a| a.as_string_opt::<i32>());
    let mut values: Vec<(IndexedColumn, ArrayRef)> = Vec::new();
    for t in &p.conj.terms {
        let col = ColumnId::ALL.iter().find(|c| c.name() == t.column.name()).copied();
        match col.and_then(|c| columns.get(c.index()).cloned().flatten()) {
            Some(a) if a.as_string_view_opt().is_some() => values.push((t.column, a)),
            _ => return Err(DataFusionError::Internal(format!("archived {} was not read", t.column.name()))),
        }
    }
    let views: Vec<(IndexedColumn, &arrow::array::StringViewArray)> =
        values.iter().filter_map(|(c, a)| a.as_string_view_opt().map(|v| (*c, v))).collect();
    Ok((0..len)
        .filter(|&i| {
            let ts = ts.map_or(0, |a| a.value(i));
            let trace = || traces.filter(|a| a.is_valid(i)).and_then(|a| segments::parse_hex::<16>(a.value(i)));
            let value = |c: IndexedColumn| {
                views.iter().find(|(vc, _)| *vc == c).and_then(|(_, a)| a.is_valid(i).then(|| a.value(i)))
            };
            row_matches(p, ts, trace, value)
        })
        .map(|i| i as u32)
        .collect())
}

fn term_matches(v: Option<&str>, t: &Term) -> bool {
    let hit = t.values.iter().any(|x| x.as_deref() == v);
    if !t.negated {
        return hit;
    }
    match v {
        None => !t.values.iter().any(Option::is_some) && !hit,
        Some(_) => !hit,
    }
}

/// A segment's selection with at least one row in this many is dense: see [`RowSet::Indexed`].
const DENSE_SELECTION: u64 = 16;

/// Plan a scan of `snap` under predicate `p`.
pub fn plan_scan(snap: &Snapshot, p: &ScanPredicate) -> Result<ScanPlan> {
    let mut plan = ScanPlan::default();
    let st = &mut plan.stats;
    let time_ok = |lo: i64, hi: i64| p.min_ts.is_none_or(|m| hi >= m) && p.max_ts.is_none_or(|m| lo <= m);
    // The segments that time bounds and index conditions keep, with their selections (`None`:
    // every row).
    let mut kept: Vec<(&Arc<segments::Segment>, Option<Arc<RoaringBitmap>>)> = Vec::new();
    if !p.conj.is_empty() {
        let indexed: Vec<&segments::Segment> = snap
            .segments
            .iter()
            .map(|l| &*l.segment)
            .filter(|s| s.rows() > 0 && time_ok(s.min_ts(), s.max_ts()))
            .collect();
        crate::cache::prefetch_segment_indexes(&indexed);
    }
    for live in &snap.segments {
        let seg = &live.segment;
        st.segments_total += 1;
        st.blocks_total += seg.blocks().len();
        st.rows_total += seg.rows();
        if seg.rows() == 0 || !time_ok(seg.min_ts(), seg.max_ts()) {
            continue;
        }
        let bitmap = match p.conj.is_empty() {
            true => None,
            false => Some(Arc::new(crate::cache::segment_index(seg).map_err(ext)?.evaluate(&p.conj))),
        };
        if bitmap.as_ref().is_some_and(|b| b.is_empty()) {
            continue;
        }
        kept.push((seg, bitmap));
    }
    if !p.text_pieces.is_empty() {
        let searched: Vec<&segments::Segment> = kept.iter().map(|(seg, _)| &***seg).collect();
        crate::cache::prefetch_text_indexes(&searched);
    }
    for (seg, bitmap) in kept {
        // Blocks whose content can hold every LIKE piece (all blocks without pieces or without
        // a token index).
        // (The token index covers exactly the segment's blocks: checked when it is decoded.)
        let text_ok: Option<Vec<bool>> = if p.text_pieces.is_empty() {
            None
        } else {
            crate::cache::segment_text_index(seg).map(|t| t.candidate_blocks(&p.text_pieces))
        };
        // A selection of one row in 16 or more is kept as flat bits too: a block's mask is
        // then a slice of them, and its count a popcount, instead of a walk over its rows.
        // Making them costs a pass over the whole segment's bitmap, so only when the blocks
        // the time bounds keep span a 16th of the segment or more, and the selection is
        // dense there (a narrow time window walks its few blocks' rows instead).
        let rows_u32 = u32::try_from(seg.rows()).unwrap_or(u32::MAX);
        let span = seg.blocks().iter().filter(|m| time_ok(m.min_ts, m.max_ts)).fold(None, |acc, m| {
            let (lo, hi) = (m.first_row, m.first_row + u64::from(m.rows));
            Some(acc.map_or((lo, hi), |(l, h): (u64, u64)| (l.min(lo), h.max(hi))))
        });
        let flat = bitmap
            .as_ref()
            .zip(span)
            .filter(|(bm, (lo, hi))| {
                let width = hi - lo;
                width * DENSE_SELECTION >= seg.rows()
                    && bm.range_cardinality(*lo as u32..*hi as u32) * DENSE_SELECTION >= width
            })
            .and_then(|(bm, _)| index::flat_words(bm, rows_u32))
            .map(Buffer::from_vec);
        let mut kept_any = false;
        for (b, meta) in seg.blocks().iter().enumerate() {
            if !time_ok(meta.min_ts, meta.max_ts)
                || text_ok.as_ref().is_some_and(|ok| !ok.get(b).copied().unwrap_or(true))
            {
                continue;
            }
            let rows = match &bitmap {
                None => None,
                Some(bm) => {
                    let start = meta.first_row as u32;
                    let end = start + meta.rows;
                    let count = match &flat {
                        Some(bits) => flat_slice(bits, start, meta.rows).map(|b| b.count_set_bits() as u64).ok(),
                        None => None,
                    };
                    match count.unwrap_or_else(|| bm.range_cardinality(start..end)) {
                        0 => continue,
                        // Every row of the block: no selection to apply.
                        n if n == u64::from(meta.rows) => None,
                        n => Some(RowSet::Indexed {
                            bitmap: bm.clone(),
                            start,
                            len: meta.rows,
                            count: n as usize,
                            flat: flat.clone(),
                        }),
                    }
                }
            };
            kept_any = true;
            st.blocks_kept += 1;
            let unit = ScanUnit::Block { segment: seg.clone(), block: b, rows };
            st.rows_kept += unit.rows() as u64;
            plan.units.push(unit);
        }
        if kept_any {
            st.segments_kept += 1;
        }
    }
    let shared = Arc::new(p.clone());
    for file in &snap.archives {
        st.segments_total += 1;
        st.rows_total += file.entry.rows;
        if file.entry.rows == 0 || !time_ok(file.entry.min_ts, file.entry.max_ts) {
            continue;
        }
        let parts = crate::archive::archive_parts(file).map_err(ext)?;
        st.blocks_total += parts.len();
        let mut kept_any = false;
        let kept = parts.into_iter().filter(|part| {
            time_ok(part.bounds().min_ts, part.bounds().max_ts) && (p.conj.is_empty() || part.meta.may_match(&p.conj))
        });
        for part in kept {
            kept_any = true;
            st.blocks_kept += 1;
            st.rows_kept += part.bounds().rows as u64;
            plan.units.push(ScanUnit::Archive { part: Arc::new(part), predicate: shared.clone() });
        }
        if kept_any {
            st.segments_kept += 1;
        }
    }
    let filtering = !p.conj.is_empty() || p.min_ts.is_some() || p.max_ts.is_some();
    for m in &snap.memory {
        st.rows_total += m.len() as u64;
        let rows = filtering.then(|| {
            RowSet::Listed(m.iter().enumerate().filter(|(_, e)| event_matches(e, p)).map(|(i, _)| i as u32).collect())
        });
        if rows.as_ref().is_some_and(RowSet::is_empty) {
            continue;
        }
        let unit = ScanUnit::Memory { events: m.clone(), rows };
        st.rows_kept += unit.rows() as u64;
        plan.units.push(unit);
    }
    Ok(plan)
}

pub(crate) fn ext<E: std::error::Error + Send + Sync + 'static>(e: E) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A planned filter expression and the columns it reads.
#[derive(Debug, Clone)]
pub struct FilterExpr {
    pub(crate) columns: Vec<ColumnId>,
    schema: SchemaRef,
    pub(crate) expr: Arc<dyn PhysicalExpr>,
}

impl FilterExpr {
    fn new(state: &dyn Session, table: &SchemaRef, filters: Vec<Expr>) -> Result<Option<FilterExpr>> {
        let Some(expr) = conjunction(filters) else { return Ok(None) };
        let expr = unnormalize_col(expr);
        let mut columns = Vec::new();
        for c in expr.column_refs() {
            let id = ColumnId::from_name(&c.name)
                .ok_or_else(|| DataFusionError::Plan(format!("events has no column `{}`", c.name)))?;
            columns.push(id);
        }
        FilterExpr::planned(columns, table, |schema| {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
            state.create_physical_expr(expr, &df_schema)
        })
        .map(Some)
    }

    /// The conjunction of physical predicates `exprs` over `events` columns (matched by
    /// name, whatever their positions), planned for the batch of the columns it reads;
    /// `None` when there are none or one reads a column `events` does not have.
    pub fn from_physical(exprs: &[Arc<dyn PhysicalExpr>]) -> Result<Option<FilterExpr>> {
        use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
        use datafusion::physical_expr::expressions::Column;
        let Some(expr) = datafusion::physical_expr::conjunction_opt(exprs.iter().cloned()) else { return Ok(None) };
        let mut columns = Vec::new();
        for c in datafusion::physical_expr::utils::collect_columns(&expr) {
            match ColumnId::from_name(c.name()) {
                Some(id) => columns.push(id),
                None => return Ok(None),
            }
        }
        FilterExpr::planned(columns, &events_schema(), |schema| {
            expr.transform(|e| match e.downcast_ref::<Column>() {
                Some(c) => {
                    let moved: Arc<dyn PhysicalExpr> = Arc::new(Column::new(c.name(), schema.index_of(c.name())?));
                    Ok(Transformed::yes(moved))
                }
                None => Ok(Transformed::no(e)),
            })
            .data()
        })
        .map(Some)
    }

    /// The filter over `columns` of `table`: `build` makes the expression for the batch of
    /// just those columns (in column order), which then gets the scan's own comparison and
    /// IN-list kernels.
    fn planned(
        mut columns: Vec<ColumnId>,
        table: &SchemaRef,
        build: impl FnOnce(&SchemaRef) -> Result<Arc<dyn PhysicalExpr>>,
    ) -> Result<FilterExpr> {
        columns.sort();
        columns.dedup();
        let indices: Vec<usize> = columns.iter().map(|c| c.index()).collect();
        let schema = Arc::new(table.project(&indices)?);
        let expr = build(&schema)?;
        let expr = crate::floatcmp::with_float_compares(expr, &schema)?;
        let expr = crate::strset::with_string_sets(expr, &schema)?;
        Ok(FilterExpr { columns, schema, expr })
    }
}

/// Filters the scan evaluates itself, row for row, on just the columns they read, before any
/// other projected column is decoded (late materialization): a block none of whose rows pass
/// is never decompressed beyond those columns.
///
/// Filters that only bound `timestamp` hold for every row of a block whose min/max lie inside
/// the bounds; such a block is filtered by the other filters alone (`rest`), so its
/// timestamps are not decoded just to be compared.
#[derive(Debug, Clone)]
pub struct RowFilter {
    full: FilterExpr,
    /// Inclusive bounds implied by the pure time filters, and the filter without them (`None`
    /// inside: nothing else to apply). `None`: no pure time filter.
    time: Option<(Option<i64>, Option<i64>, Option<FilterExpr>)>,
}

impl RowFilter {
    /// The conjunction of `filters` (over the `events` schema `table`), planned for the batch
    /// of the columns it reads; `None` when there are no filters.
    pub fn new(state: &dyn Session, table: &SchemaRef, filters: Vec<Expr>) -> Result<Option<RowFilter>> {
        let (time, rest): (Vec<Expr>, Vec<Expr>) =
            filters.iter().cloned().partition(|f| crate::pushdown::time_bounds(f).is_some());
        let Some(full) = FilterExpr::new(state, table, filters)? else { return Ok(None) };
        let time = if time.is_empty() {
            None
        } else {
            let p = ScanPredicate::from_filters(&time);
            Some((p.min_ts, p.max_ts, FilterExpr::new(state, table, rest)?))
        };
        Ok(Some(RowFilter { full, time }))
    }

    /// The filter to apply to the rows of a block whose timestamps lie in `lo..=hi`: `None`
    /// when every row passes.
    fn for_block(&self, lo: i64, hi: i64) -> Option<&FilterExpr> {
        match &self.time {
            Some((min, max, rest)) if min.is_none_or(|m| lo >= m) && max.is_none_or(|m| hi <= m) => rest.as_ref(),
            _ => Some(&self.full),
        }
    }
}

/// Min / max / null count of the integer columns (`timestamp`, token counts) over the rows of
/// `units`, from block and chunk metadata without reading data. Exact when every block unit is
/// read whole and nothing filters rows; otherwise the block bounds are only bounds. Floats are
/// left out: their chunk bounds skip NaN, which SQL's min/max would not.
fn column_statistics(units: &[ScanUnit], columns: &[ColumnId], filtered: bool) -> Vec<ColumnStatistics> {
    let whole =
        !filtered && units.iter().all(|u| matches!(u, ScanUnit::Block { rows: None, .. } | ScanUnit::Memory { .. }));
    columns
        .iter()
        .map(|col| {
            if !matches!(col, ColumnId::Timestamp | ColumnId::InputTokens | ColumnId::OutputTokens) {
                return ColumnStatistics::new_unknown();
            }
            let mut lo: Option<i64> = None;
            let mut hi: Option<i64> = None;
            let mut nulls = 0usize;
            let mut exact = whole;
            let mut see = |v: i64| {
                lo = Some(lo.map_or(v, |l| l.min(v)));
                hi = Some(hi.map_or(v, |h| h.max(v)));
            };
            for u in units {
                match u {
                    ScanUnit::Block { segment, block, .. } => {
                        let meta = &segment.blocks()[*block];
                        if *col == ColumnId::Timestamp {
                            see(meta.min_ts);
                            see(meta.max_ts);
                            continue;
                        }
                        let ch = segment.chunk(*block, *col);
                        nulls += ch.null_count as usize;
                        if ch.min.is_nan() || ch.max.is_nan() {
                            continue;
                        }
                        // Bounds are stored as f64: exact below 2^53.
                        if ch.min.abs() >= 9.007_199_254_740_992e15 || ch.max.abs() >= 9.007_199_254_740_992e15 {
                            exact = false;
                        }
                        see(ch.min as i64);
                        see(ch.max as i64);
                    }
                    // Row group bounds of the time; nothing known of the rest.
                    ScanUnit::Archive { part, .. } if *col == ColumnId::Timestamp => {
                        see(part.bounds().min_ts);
                        see(part.bounds().max_ts);
                    }
                    ScanUnit::Archive { .. } | ScanUnit::Columns { .. } => return ColumnStatistics::new_unknown(),
                    ScanUnit::Memory { events, rows } => {
                        let mut one = |e: &Event| match col.int_of(e) {
                            Some(v) => see(v),
                            None => nulls += 1,
                        };
                        match rows.as_ref().map(RowSet::to_indices) {
                            Some(Ok(rows)) => {
                                rows.values().iter().filter_map(|r| events.get(*r as usize)).for_each(&mut one)
                            }
                            None => events.iter().for_each(&mut one),
                            // Rows that cannot be listed give no statistics (the scan reports
                            // the error).
                            Some(Err(_)) => return ColumnStatistics::new_unknown(),
                        }
                    }
                }
            }
            let scalar = |v: i64| match col {
                ColumnId::Timestamp => ScalarValue::TimestampNanosecond(Some(v), Some("UTC".into())),
                _ => ScalarValue::Int64(Some(v)),
            };
            let precision = |v: Option<i64>| match (v, exact) {
                (None, _) => Precision::Absent,
                (Some(v), true) => Precision::Exact(scalar(v)),
                (Some(v), false) => Precision::Inexact(scalar(v)),
            };
            let mut cs = ColumnStatistics::new_unknown();
            cs.min_value = precision(lo);
            cs.max_value = precision(hi);
            cs.null_count = if exact { Precision::Exact(nulls) } else { Precision::Absent };
            cs
        })
        .collect()
}

/// Decode one column of a unit: every row (`rows` None) or the rows listed. Dictionary
/// columns pick their codes before expanding them into strings.
fn decode(unit: &ScanUnit, col: ColumnId, rows: Option<&UInt32Array>) -> Result<ArrayRef> {
    let data = match (unit, rows) {
        // Free text: read only the listed rows (of a paged chunk, only their pages).
        (ScanUnit::Block { segment, block, .. }, Some(rows)) if col.encoding() == ColumnEncoding::Plain => {
            let cache = text_page_cache();
            let text = segment
                .read_text_rows_with(*block, col, rows.values(), |page, decode| {
                    let key = PageKey { segment: segment.uid(), block: *block as u32, column: col, page: page as u32 };
                    cache.get_or_decode(key, || decode().map(Arc::new))
                })
                .map_err(ext)?;
            return to_arrow(col, ColumnData::Str(text)).map_err(ext);
        }
        // Other columns of a block: decoded whole once, then kept in the block cache.
        (ScanUnit::Block { segment, block, .. }, _) if BlockCache::caches(col) => {
            let key = BlockKey { segment: segment.uid(), block: *block as u32, column: col, codes: false };
            let full = block_cache().get_or_decode(key, || {
                let data = segment.read_column(*block, col).map_err(ext)?;
                to_arrow(col, data).map_err(ext)
            })?;
            return select(&full, rows);
        }
        // Free text of a block, every row (the arms above take every other block read).
        (ScanUnit::Block { segment, block, .. }, _) => segment.read_column(*block, col).map_err(ext)?,
        (ScanUnit::Memory { events, .. }, _) => ColumnData::from_events(col, events),
        (ScanUnit::Columns { columns, .. }, rows) => return select(&read_column(columns, col)?, rows),
        (ScanUnit::Archive { .. }, _) => return Err(unresolved()),
    };
    match (data, rows) {
        (ColumnData::Str(st), Some(rows)) => {
            // Memory units: copy only the listed rows' bytes.
            let mut picked = StrColumn::default();
            picked.reserve(rows.len(), rows.values().iter().map(|r| st.row_bytes(*r as usize)).sum());
            for r in rows.values().iter() {
                if !picked.push_from(&st, *r as usize) {
                    return Err(DataFusionError::Internal(format!("row {r} outside the unit")));
                }
            }
            to_arrow(col, ColumnData::Str(picked.finish())).map_err(ext)
        }
        (data, rows) => {
            let full = to_arrow(col, data).map_err(ext)?;
            select(&full, rows)
        }
    }
}

/// Evaluate filter `f` on the unit's `rows` (all rows: `None`), `n` of them: the positions
/// that pass (among `rows`), and the filter's columns as decoded. With `and_mask`, only
/// positions also set there pass. Columns in `have` (already decoded for the same rows) are
/// not decoded again.
fn evaluate_filter(
    unit: &ScanUnit,
    f: &FilterExpr,
    rows: Option<&UInt32Array>,
    n: usize,
    and_mask: Option<&BooleanBuffer>,
    have: &[(ColumnId, ArrayRef)],
) -> Result<(UInt32Array, Vec<ArrayRef>)> {
    let arrays = f
        .columns
        .iter()
        .map(|col| match have.iter().find(|(c, _)| c == col) {
            Some((_, a)) => Ok(a.clone()),
            None => decode(unit, *col, rows),
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new_with_options(
        f.schema.clone(),
        arrays.clone(),
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(ext)?;
    let mask = f.expr.evaluate(&batch)?.into_array(n)?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Internal("a filter did not evaluate to booleans".into()))?;
    // NULL counts as false, as in WHERE.
    let mut bits = match mask.nulls() {
        Some(nulls) => mask.values() & nulls.inner(),
        None => mask.values().clone(),
    };
    if let Some(sel) = and_mask {
        bits = &bits & sel;
    }
    // Sized up front: collecting the indices grows the buffer step by step otherwise.
    let mut passing = Vec::with_capacity(bits.count_set_bits());
    passing.extend(bits.set_indices().map(|i| i as u32));
    Ok((UInt32Array::from(passing), arrays))
}

/// Dictionary column `col` of the unit's `rows` (all: `None`) as codes of `book`. A block maps
/// its dictionary to the book once (its keys cached as a dictionary array); in-memory rows
/// look each string up.
fn decode_codes(unit: &ScanUnit, col: ColumnId, rows: Option<&UInt32Array>, book: &CodeBook) -> Result<ArrayRef> {
    match unit {
        ScanUnit::Block { segment, block, .. } => {
            let key = BlockKey { segment: segment.uid(), block: *block as u32, column: col, codes: true };
            let cached =
                block_cache().get_or_decode(key, || match segment.read_column(*block, col).map_err(ext)? {
                    ColumnData::Dict(d) => dictionary_array(d),
                    _ => Err(DataFusionError::Internal(format!("{} is not dictionary-encoded", col.name()))),
                })?;
            let dict = cached
                .as_dictionary_opt::<UInt32Type>()
                .ok_or_else(|| DataFusionError::Internal(format!("cached {} block is not a dictionary", col.name())))?;
            let values = dict.values().as_string_opt::<i32>().ok_or_else(|| {
                DataFusionError::Internal(format!("{} dictionary values are not strings", col.name()))
            })?;
            let table = book.codes_for(values.iter().map(|v| v.unwrap_or_default()))?;
            let keys = match rows {
                Some(r) => arrow::compute::take(dict.keys(), r, None).map_err(ext)?,
                None => Arc::new(dict.keys().clone()),
            };
            let keys = keys.as_primitive::<UInt32Type>();
            // Null slots hold 0, which maps to anything: their validity is kept as it was.
            let codes: UInt32Array = keys.unary(|k| table.get(k as usize).copied().unwrap_or(0));
            Ok(Arc::new(codes))
        }
        ScanUnit::Memory { events, .. } => {
            let pick = |i: usize| events.get(i).and_then(|e| col.str_of(e));
            let strings: Vec<Option<&str>> = match rows {
                Some(r) => r.values().iter().map(|i| pick(*i as usize)).collect(),
                None => (0..events.len()).map(pick).collect(),
            };
            codes_of(&strings, book)
        }
        ScanUnit::Columns { columns, .. } => {
            let values = select(&read_column(columns, col)?, rows)?;
            let values = values.as_string_view_opt().ok_or_else(|| {
                DataFusionError::Internal(format!("archived {} is not a string view column", col.name()))
            })?;
            let strings: Vec<Option<&str>> = values.iter().collect();
            codes_of(&strings, book)
        }
        ScanUnit::Archive { .. } => Err(unresolved()),
    }
}

/// The codes of `book` for `strings`, null where a string is.
fn codes_of(strings: &[Option<&str>], book: &CodeBook) -> Result<ArrayRef> {
    let codes = book.codes_for(strings.iter().flatten().copied())?;
    let mut it = codes.into_iter();
    let codes: UInt32Array = strings.iter().map(|s| s.and_then(|_| it.next())).collect();
    Ok(Arc::new(codes))
}

/// `batch` with each run of equal consecutive rows reduced to its first row (rows are equal
/// when every column is, nulls equal to nulls).
fn first_of_runs(batch: RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() < 2 {
        return Ok(batch);
    }
    let runs = arrow::compute::partition(batch.columns()).map_err(ext)?;
    if runs.len() == batch.num_rows() {
        return Ok(batch);
    }
    let firsts = UInt32Array::from_iter_values(runs.ranges().iter().map(|r| r.start as u32));
    let columns = batch.columns().iter().map(|c| select(c, Some(&firsts))).collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(firsts.len())),
    )
    .map_err(ext)
}

/// Id column `col` (trace or span ids) of the unit's `rows` as raw bytes. A block's ids are
/// cached in that form.
fn decode_id_bytes(unit: &ScanUnit, col: ColumnId, rows: Option<&UInt32Array>) -> Result<ArrayRef> {
    let binary = |data: ColumnData| -> Result<ArrayRef> {
        match data {
            ColumnData::Fixed { width, bytes, validity } => {
                let width = i32::try_from(width).map_err(ext)?;
                let nulls = validity.map(|v| NullBuffer::from_iter(v.iter().copied()));
                Ok(Arc::new(FixedSizeBinaryArray::try_new(width, Buffer::from_vec(bytes), nulls).map_err(ext)?))
            }
            _ => Err(DataFusionError::Internal(format!("{} is not a fixed-width column", col.name()))),
        }
    };
    let full = match unit {
        ScanUnit::Block { segment, block, .. } => {
            let key = BlockKey { segment: segment.uid(), block: *block as u32, column: col, codes: true };
            block_cache().get_or_decode(key, || binary(segment.read_column(*block, col).map_err(ext)?))?
        }
        ScanUnit::Memory { events, .. } => binary(ColumnData::from_events(col, events))?,
        ScanUnit::Columns { columns, .. } => {
            let hex = select(&read_column(columns, col)?, rows)?;
            let hex = hex
                .as_string_opt::<i32>()
                .ok_or_else(|| DataFusionError::Internal(format!("archived {} is not a string column", col.name())))?;
            let width = if col == ColumnId::TraceId { 16 } else { 8 };
            let mut bytes = Vec::with_capacity(hex.len() * width);
            let mut validity = Vec::with_capacity(hex.len());
            for v in hex.iter() {
                let before = bytes.len();
                let parsed = match (v, width) {
                    (None, _) => false,
                    (Some(s), 16) => segments::parse_hex::<16>(s).map(|b| bytes.extend_from_slice(&b)).is_some(),
                    (Some(s), _) => segments::parse_hex::<8>(s).map(|b| bytes.extend_from_slice(&b)).is_some(),
                };
                if v.is_some() && !parsed {
                    return Err(DataFusionError::Execution(format!("archived {} is not hex: {v:?}", col.name())));
                }
                validity.push(parsed);
                bytes.resize(before + width, 0);
            }
            let validity = validity.contains(&false).then_some(validity);
            // (Rows are selected already.)
            return binary(ColumnData::Fixed { width, bytes, validity });
        }
        ScanUnit::Archive { .. } => return Err(unresolved()),
    };
    select(&full, rows)
}

/// A dictionary block as an Arrow dictionary array: keys (null where the row is null) into
/// the block's values.
fn dictionary_array(d: segments::DictColumn) -> Result<ArrayRef> {
    let nulls = d.codes.contains(&0).then(|| NullBuffer::from_iter(d.codes.iter().map(|c| *c != 0)));
    let keys = UInt32Array::new(d.codes.iter().map(|c| c.saturating_sub(1)).collect(), nulls);
    let values = crate::schema::strings(d.dict).map_err(ext)?;
    Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(keys, Arc::new(values)).map_err(ext)?))
}

/// The error for an archive unit that reached the decoders without [`ScanUnit::resolve`].
fn unresolved() -> DataFusionError {
    DataFusionError::Internal("an archive unit was read before it was resolved".into())
}

/// Column `col` of a `Columns` unit.
fn read_column(columns: &[Option<ArrayRef>], col: ColumnId) -> Result<ArrayRef> {
    columns
        .get(col.index())
        .cloned()
        .flatten()
        .ok_or_else(|| DataFusionError::Internal(format!("archived column {} was not read for this scan", col.name())))
}

fn select(array: &ArrayRef, rows: Option<&UInt32Array>) -> Result<ArrayRef> {
    match rows {
        Some(idx) => arrow::compute::take(array.as_ref(), idx, None).map_err(ext),
        None => Ok(array.clone()),
    }
}

/// Decode one unit into a record batch of the projected columns: first the row filter's
/// columns for the unit's rows, then the runtime filter's (see [`crate::runtime`]) for the
/// rows that passed, then, under a TopK by time (`top`), the unit's best rows among those
/// (see [`crate::topk`]), then, for the rows kept, the rest. `None` when no row passes.
pub fn read_unit(
    unit: &ScanUnit,
    columns: &[ColumnId],
    schema: &SchemaRef,
    filter: Option<&RowFilter>,
    runtime: Option<&FilterExpr>,
    top: Option<crate::topk::TimeTop>,
    coded: &[Option<KeyForm>],
) -> Result<Option<RecordBatch>> {
    let rowset = match unit {
        ScanUnit::Block { rows, .. } | ScanUnit::Memory { rows, .. } => rows.as_ref(),
        ScanUnit::Columns { .. } => None,
        // Read now, then as the columns it becomes.
        ScanUnit::Archive { .. } => {
            // Every column this read may decode: the projection, the filters', and the time
            // (a TopK reads it).
            let mut read: Vec<ColumnId> = columns.to_vec();
            let filter_columns = filter.map(|f| &f.full.columns).into_iter().flatten();
            let runtime_columns = runtime.map(|f| &f.columns).into_iter().flatten();
            for c in filter_columns.chain(runtime_columns).chain([&ColumnId::Timestamp]) {
                if !read.contains(c) {
                    read.push(*c);
                }
            }
            return match unit.clone().resolve(&read)? {
                Some(u) => read_unit(&u, columns, schema, filter, runtime, top, coded),
                None => Ok(None),
            };
        }
    };
    // The selected rows' numbers, listed once needed (a dense filtered block never lists them).
    let mut selection: Option<UInt32Array> = None;
    let mut n = unit.rows();
    // Filter columns as decoded for the unit's rows (narrowed to the passing ones), reused
    // below when also projected.
    let mut decoded: Vec<(ColumnId, ArrayRef)> = Vec::new();
    let filter = match (filter, unit) {
        (Some(f), ScanUnit::Block { segment, block, .. }) => {
            let meta = segment.blocks().get(*block).ok_or_else(|| {
                DataFusionError::Internal(format!("block {block} outside {}", segment.path().display()))
            })?;
            f.for_block(meta.min_ts, meta.max_ts)
        }
        (Some(f), _) => Some(&f.full),
        (None, _) => None,
    };
    if let Some(f) = filter {
        // A dense selection of a block (a quarter of its rows or more) whose filter reads no
        // free text: evaluate the filter on every row of the block's whole (cached) columns and
        // AND the result with the selection, instead of gathering the selected rows of each
        // filter column first.
        let dense_rows = match (unit, rowset) {
            (ScanUnit::Block { segment, block, .. }, Some(rs)) => segment
                .blocks()
                .get(*block)
                .map(|m| m.rows as usize)
                .filter(|total| rs.len() * 4 >= *total && f.columns.iter().all(|c| BlockCache::caches(*c))),
            _ => None,
        };
        // Rows the selection excludes may make an expression fail (a cast of a value it
        // cannot convert): then the filter is evaluated on the selected rows only after all.
        let dense = match (dense_rows, rowset) {
            (Some(total), Some(rs)) => {
                let mask = rs.to_mask(total)?;
                evaluate_filter(unit, f, None, total, Some(&mask), &[]).ok()
            }
            _ => None,
        };
        let (dense, (passing, filter_arrays)) = match dense {
            Some(result) => (true, result),
            None => {
                selection = rowset.map(RowSet::to_indices).transpose()?;
                (false, evaluate_filter(unit, f, selection.as_ref(), n, None, &[])?)
            }
        };
        if passing.is_empty() {
            return Ok(None);
        }
        decoded = f.columns.iter().copied().zip(filter_arrays).collect();
        if dense || passing.len() < n {
            // Filter columns that are also projected: take the passing positions.
            decoded.retain(|(c, _)| columns.contains(c));
            for (_, a) in decoded.iter_mut() {
                *a = select(a, Some(&passing))?;
            }
            // Dense: `passing` are block rows already; else positions within the selection.
            selection = Some(match selection {
                Some(rows) if !dense => passing.values().iter().map(|p| rows.value(*p as usize)).collect(),
                _ => passing,
            });
            n = selection.as_ref().map_or(n, |s| s.len());
        }
    }
    if filter.is_none() {
        selection = rowset.map(RowSet::to_indices).transpose()?;
    }
    if let Some(f) = runtime {
        // `decoded` holds columns for exactly the `selection` rows here.
        let (passing, arrays) = evaluate_filter(unit, f, selection.as_ref(), n, None, &decoded)?;
        if passing.is_empty() {
            return Ok(None);
        }
        for (c, a) in f.columns.iter().zip(arrays) {
            if columns.contains(c) && !decoded.iter().any(|(d, _)| d == c) {
                decoded.push((*c, a));
            }
        }
        if passing.len() < n {
            narrow_to(&passing, &mut selection, &mut decoded, &mut n)?;
        }
    }
    if let Some(top) = top.filter(|t| t.k < n) {
        let ts = match decoded.iter().find(|(c, _)| *c == ColumnId::Timestamp) {
            Some((_, a)) => a.clone(),
            None => decode(unit, ColumnId::Timestamp, selection.as_ref())?,
        };
        let values = ts
            .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
            .ok_or_else(|| DataFusionError::Internal("timestamp is not in nanoseconds".into()))?;
        let passing = UInt32Array::from(crate::topk::best_positions(values.values(), top));
        if columns.contains(&ColumnId::Timestamp) && !decoded.iter().any(|(c, _)| *c == ColumnId::Timestamp) {
            decoded.push((ColumnId::Timestamp, ts));
        }
        if passing.len() < n {
            narrow_to(&passing, &mut selection, &mut decoded, &mut n)?;
        }
    }
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, col) in columns.iter().enumerate() {
        let a = match (coded.get(i).and_then(Option::as_ref), decoded.iter().find(|(c, _)| c == col)) {
            (Some(KeyForm::Codes(book)), _) => decode_codes(unit, *col, selection.as_ref(), book)?,
            (Some(KeyForm::Bytes(_)), _) => decode_id_bytes(unit, *col, selection.as_ref())?,
            (None, Some((_, a))) => a.clone(),
            (None, None) => decode(unit, *col, selection.as_ref())?,
        };
        arrays.push(a);
    }
    RecordBatch::try_new_with_options(schema.clone(), arrays, &RecordBatchOptions::new().with_row_count(Some(n)))
        .map(Some)
        .map_err(ext)
}

/// Keep only positions `passing` (ascending, within the current `n` rows) of the unit's
/// `selection` (`None`: all its rows) and of the columns `decoded` for it.
fn narrow_to(
    passing: &UInt32Array,
    selection: &mut Option<UInt32Array>,
    decoded: &mut [(ColumnId, ArrayRef)],
    n: &mut usize,
) -> Result<()> {
    for (_, a) in decoded.iter_mut() {
        *a = select(a, Some(passing))?;
    }
    *selection = Some(match selection.take() {
        Some(rows) => passing.values().iter().map(|p| rows.value(*p as usize)).collect(),
        None => passing.clone(),
    });
    *n = passing.len();
    Ok(())
}

/// One partition's share of the units.
#[derive(Debug, Clone)]
struct UnitStream {
    schema: SchemaRef,
    columns: Vec<ColumnId>,
    units: Vec<ScanUnit>,
    filter: Option<RowFilter>,
    limit: Option<usize>,
    /// Per output column: the form it is emitted in instead of strings (group keys).
    coded: Vec<Option<KeyForm>>,
    /// The consumer only needs each distinct row (a GROUP BY without aggregates over every
    /// column): a run of equal consecutive rows leaves the scan as its first row.
    distinct_runs: bool,
    /// Filters operators above the scan pushed into it once the plan was built (over
    /// `schema`'s columns; see [`crate::runtime`]).
    runtime: Vec<Arc<dyn PhysicalExpr>>,
    /// The TopK by time above the scan, if any (see [`crate::topk`]).
    top: Option<crate::topk::TimeTop>,
    /// The scan's metrics and this part's partition.
    metrics: Option<(ExecutionPlanMetricsSet, usize)>,
}

impl PartitionStream for UnitStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let columns = self.columns.clone();
        let units = self.units.clone();
        let filter = self.filter.clone();
        let limit = self.limit;
        let coded = self.coded.clone();
        let distinct_runs = self.distinct_runs;
        let runtime = crate::runtime::RuntimeFilter::new(self.runtime.clone(), self.schema.clone(), columns.clone());
        let top = self.top;
        // Units the runtime filters skipped whole, and their rows.
        let skipped = self.metrics.as_ref().map(|(m, i)| {
            (
                MetricBuilder::new(m).counter("runtime_skipped_units", *i),
                MetricBuilder::new(m).counter("runtime_skipped_rows", *i),
            )
        });
        // Stop once `limit` rows were produced (counting rows that passed the filter).
        let stream = futures::stream::iter(units)
            .scan((0usize, runtime), move |(produced, runtime), u| {
                if limit.is_some_and(|l| *produced >= l) {
                    return futures::future::ready(None);
                }
                let batch = match runtime.as_mut() {
                    None => read_unit(&u, &columns, &schema, filter.as_ref(), None, top, &coded),
                    Some(r) => {
                        let rows = u.rows();
                        r.apply(u).and_then(|kept| match kept {
                            None => {
                                if let Some((units, skipped_rows)) = &skipped {
                                    units.add(1);
                                    skipped_rows.add(rows);
                                }
                                Ok(None)
                            }
                            Some((unit, None)) => {
                                read_unit(&unit, &columns, &schema, filter.as_ref(), None, top, &coded)
                            }
                            Some((unit, Some(rf))) => {
                                let b = read_unit(&unit, &columns, &schema, filter.as_ref(), Some(&rf), top, &coded)?;
                                r.record(unit.rows(), b.as_ref().map_or(0, RecordBatch::num_rows));
                                Ok(b)
                            }
                        })
                    }
                };
                let batch = batch.and_then(|b| if distinct_runs { b.map(first_of_runs).transpose() } else { Ok(b) });
                if let Ok(Some(b)) = &batch {
                    *produced += b.num_rows();
                }
                futures::future::ready(Some(batch))
            })
            .filter_map(|b| futures::future::ready(b.transpose()));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// The `events` table over an engine, optionally scoped to one tenant.
#[derive(Debug)]
pub struct EventsTable {
    engine: Arc<Engine>,
    schema: SchemaRef,
    tenant: Option<String>,
}

impl EventsTable {
    pub fn new(engine: Arc<Engine>, tenant: Option<String>) -> Self {
        EventsTable { engine, schema: events_schema(), tenant }
    }

    /// The predicate for `filters`, plus the tenant scope.
    pub fn predicate(&self, filters: &[Expr]) -> ScanPredicate {
        let mut p = ScanPredicate::from_filters(filters);
        if let Some(t) = &self.tenant {
            p.conj.terms.push(Term { column: IndexedColumn::Tenant, values: vec![Some(t.clone())], negated: false });
        }
        p
    }

    /// Plan (without executing) the scan for `filters`.
    pub fn plan(&self, filters: &[Expr]) -> Result<ScanPlan> {
        plan_scan(&self.engine.snapshot(), &self.predicate(filters))
    }
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters the scan applies row for row are Exact (DataFusion drops them): the indexed
        // ones through the bitmaps, the others evaluated in the scan. The rest still prune
        // segments and blocks where they can, and DataFusion applies them above the scan.
        Ok(filters
            .iter()
            .map(|f| {
                if crate::pushdown::is_exact(f) || crate::pushdown::is_evaluable(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicate = self.predicate(filters);
        let plan = plan_scan(&self.engine.snapshot(), &predicate)?;
        tracing::debug!(stats = ?plan.stats, "events scan pruning");
        let residual: Vec<Expr> = filters
            .iter()
            .filter(|f| !crate::pushdown::is_exact(f) && crate::pushdown::is_evaluable(f))
            .cloned()
            .collect();
        let filter = RowFilter::new(state, &self.schema, residual)?;
        let columns: Vec<ColumnId> = match projection {
            Some(p) => p.iter().map(|i| ColumnId::ALL[*i]).collect(),
            None => ColumnId::ALL.to_vec(),
        };
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let n = state.config().target_partitions().clamp(1, 16).min(plan.units.len().max(1));
        let mut shares: Vec<Vec<ScanUnit>> = vec![Vec::new(); n];
        let column_stats = column_statistics(&plan.units, &columns, filter.is_some() || limit.is_some());
        // Rows decided by the indexes alone (no row filter, time bound, text piece or limit):
        // group counts can come from the bitmaps (see `counts`).
        // Archive units' rows are known only once read: no exact counts with them.
        let archived = plan.units.iter().any(ScanUnit::is_archive);
        let index_units = (filter.is_none()
            && !archived
            && limit.is_none()
            && predicate.min_ts.is_none()
            && predicate.max_ts.is_none()
            && predicate.text_pieces.is_empty())
        .then(|| plan.units.clone());
        for (i, u) in plan.units.into_iter().enumerate() {
            shares[i % n].push(u);
        }
        // Without a row filter the scan emits exactly the rows it kept, so the row counts it
        // offers the optimizer are exact; with one they are upper bounds.
        let cap = |rows: usize| limit.map_or(rows, |l| rows.min(l));
        let count = |rows: usize| {
            if filter.is_none() && !archived {
                Precision::Exact(cap(rows))
            } else {
                Precision::Inexact(cap(rows))
            }
        };
        let partition_rows: Vec<Precision<usize>> =
            shares.iter().map(|units| count(units.iter().map(ScanUnit::rows).sum::<usize>())).collect();
        let mut total = Statistics::new_unknown(&projected);
        total.num_rows = count(plan.stats.rows_kept as usize);
        total.column_statistics = column_stats;
        let parts: Vec<UnitStream> = shares
            .into_iter()
            .map(|units| UnitStream {
                schema: projected.clone(),
                columns: columns.clone(),
                units,
                filter: filter.clone(),
                limit,
                coded: vec![None; columns.len()],
                distinct_runs: false,
                runtime: Vec::new(),
                top: None,
                metrics: None,
            })
            .collect();
        let mut parts = parts;
        let metrics = attach_metrics(&mut parts);
        let inner = streaming_exec(projected, &parts, limit)?;
        Ok(Arc::new(EventsScanExec {
            inner,
            parts,
            limit,
            stats: plan.stats,
            statistics: Arc::new(total),
            partition_rows,
            metrics,
            index_units,
        }))
    }
}

/// The streaming plan over `parts`, one partition each.
fn streaming_exec(schema: SchemaRef, parts: &[UnitStream], limit: Option<usize>) -> Result<Arc<StreamingTableExec>> {
    let partitions: Vec<Arc<dyn PartitionStream>> =
        parts.iter().map(|p| Arc::new(p.clone()) as Arc<dyn PartitionStream>).collect();
    Ok(Arc::new(StreamingTableExec::try_new(schema, partitions, None, Vec::new(), false, limit)?))
}

/// The scan node: streams the planned units and shows what pruning did in `EXPLAIN`.
#[derive(Debug)]
pub struct EventsScanExec {
    inner: Arc<StreamingTableExec>,
    /// What each partition streams (kept to re-plan the scan with coded columns).
    parts: Vec<UnitStream>,
    limit: Option<usize>,
    stats: PruningStats,
    /// Exact output row count, offered to the optimizer.
    statistics: Arc<Statistics>,
    partition_rows: Vec<Precision<usize>>,
    /// `output_rows`: rows that left the scan after its own filters (shown by EXPLAIN ANALYZE
    /// beside the rows the indexes kept).
    metrics: ExecutionPlanMetricsSet,
    /// The planned units when the indexes alone decide which rows the scan returns.
    index_units: Option<Vec<ScanUnit>>,
}

impl EventsScanExec {
    pub fn stats(&self) -> &PruningStats {
        &self.stats
    }

    /// The least and greatest timestamp of any row the scan can emit (block bounds, and the
    /// selected in-memory events); `None` when it has no units.
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        let mut bounds: Option<(i64, i64)> = None;
        let mut see = |lo: i64, hi: i64| {
            bounds = Some(bounds.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))));
        };
        for u in self.parts.iter().flat_map(|p| p.units.iter()) {
            match u {
                ScanUnit::Block { segment, block, .. } => {
                    let meta = segment.blocks().get(*block)?;
                    see(meta.min_ts, meta.max_ts);
                }
                // Every event of the batch bounds the selected ones.
                ScanUnit::Memory { events, .. } => events.iter().for_each(|e| see(e.timestamp_ns, e.timestamp_ns)),
                ScanUnit::Archive { part, .. } => see(part.bounds().min_ts, part.bounds().max_ts),
                // (Never planned; any time.)
                ScanUnit::Columns { .. } => see(i64::MIN, i64::MAX),
            }
        }
        bounds
    }

    /// The same scan with the output columns at the given positions emitted in another form
    /// ([`crate::codes`]): dictionary columns as codes, id columns as raw bytes. `None` if a
    /// form does not fit its column. With `distinct_runs` (for a consumer that needs each
    /// distinct row once), runs of equal consecutive rows leave as their first row; ignored
    /// when the scan has a row limit.
    pub fn with_coded_columns(
        &self,
        forms: &[(usize, KeyForm)],
        distinct_runs: bool,
    ) -> Result<Option<EventsScanExec>> {
        let schema = self.inner.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut parts = self.parts.clone();
        for p in parts.iter_mut() {
            p.distinct_runs = distinct_runs && self.limit.is_none();
        }
        for (i, form) in forms {
            let Some(field) = fields.get_mut(*i) else { return Ok(None) };
            let fits = ColumnId::from_name(field.name()).is_some_and(|c| match (c.encoding(), form) {
                (ColumnEncoding::Dict, KeyForm::Codes(_)) => true,
                (ColumnEncoding::Fixed(w), KeyForm::Bytes(b)) => usize::try_from(*b).is_ok_and(|b| b == w),
                _ => false,
            });
            if !fits {
                return Ok(None);
            }
            *field = field.clone().with_data_type(form.data_type());
            for p in parts.iter_mut() {
                if let Some(slot) = p.coded.get_mut(*i) {
                    *slot = Some(form.clone());
                }
            }
        }
        let coded_schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        for p in parts.iter_mut() {
            p.schema = coded_schema.clone();
        }
        let metrics = attach_metrics(&mut parts);
        let inner = streaming_exec(coded_schema.clone(), &parts, self.limit)?;
        let mut statistics = self.statistics.as_ref().clone();
        for (i, _) in forms {
            if let Some(cs) = statistics.column_statistics.get_mut(*i) {
                *cs = ColumnStatistics::new_unknown();
            }
        }
        let mut partition_rows = self.partition_rows.clone();
        if parts.iter().any(|p| p.distinct_runs) {
            // Dropped repeats make the row counts upper bounds.
            statistics.num_rows = statistics.num_rows.to_inexact();
            partition_rows = partition_rows.into_iter().map(|r| r.to_inexact()).collect();
        }
        Ok(Some(EventsScanExec {
            inner,
            parts,
            limit: self.limit,
            stats: self.stats.clone(),
            statistics: Arc::new(statistics),
            partition_rows,
            metrics,
            index_units: self.index_units.clone(),
        }))
    }

    /// The scan's units, if the indexes alone decide its rows (no row filter, time bound,
    /// text piece or limit); aggregates over indexed columns can then be counted from bitmaps.
    pub fn index_decided_units(&self) -> Option<&[ScanUnit]> {
        self.index_units.as_deref()
    }

    /// The same scan under a TopK by time that keeps `top.k` rows: each unit emits only its
    /// best rows (see [`crate::topk`]). `None` when the scan has a row limit (it then picks
    /// which rows to return, and must return that many).
    pub fn with_time_top(&self, top: crate::topk::TimeTop) -> Result<Option<EventsScanExec>> {
        if self.limit.is_some() {
            return Ok(None);
        }
        let mut parts = self.parts.clone();
        for p in parts.iter_mut() {
            p.top = Some(top);
        }
        self.with_parts(parts, true).map(Some)
    }

    /// The TopK by time the scan serves, if any.
    pub fn parts_top(&self) -> Option<crate::topk::TimeTop> {
        self.parts.first().and_then(|p| p.top)
    }

    /// The filters operators above pushed into the scan at run time (see [`crate::runtime`]).
    pub fn runtime_filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        self.parts.first().map_or(&[], |p| p.runtime.as_slice())
    }

    /// The same scan streaming `parts`. With `filtered`, its rows may be fewer than planned:
    /// row counts and column bounds become estimates, and the indexes no longer decide the
    /// rows alone.
    fn with_parts(&self, mut parts: Vec<UnitStream>, filtered: bool) -> Result<EventsScanExec> {
        let metrics = attach_metrics(&mut parts);
        let inner = streaming_exec(self.inner.schema(), &parts, self.limit)?;
        let (statistics, partition_rows, index_units) = if filtered {
            (
                Arc::new(self.statistics.as_ref().clone().to_inexact()),
                self.partition_rows.iter().map(|r| r.to_inexact()).collect(),
                None,
            )
        } else {
            (self.statistics.clone(), self.partition_rows.clone(), self.index_units.clone())
        };
        Ok(EventsScanExec {
            inner,
            parts,
            limit: self.limit,
            stats: self.stats.clone(),
            statistics,
            partition_rows,
            metrics,
            index_units,
        })
    }
}

/// A metrics set for a scan over `parts`, each part told its partition, so that what the
/// parts skip at run time shows in `EXPLAIN ANALYZE`.
fn attach_metrics(parts: &mut [UnitStream]) -> ExecutionPlanMetricsSet {
    let metrics = ExecutionPlanMetricsSet::new();
    for (i, p) in parts.iter_mut().enumerate() {
        p.metrics = Some((metrics.clone(), i));
    }
    metrics
}

/// Where a unit goes when the scan reads the newest (`descending`) or oldest rows first: the
/// greatest (least) timestamp it can hold. The in-memory buffer holds the newest events.
fn time_order_key(unit: &ScanUnit, descending: bool) -> i64 {
    let (lo, hi) = match unit {
        ScanUnit::Block { segment, block, .. } => {
            segment.blocks().get(*block).map_or((i64::MIN, i64::MAX), |m| (m.min_ts, m.max_ts))
        }
        ScanUnit::Memory { events, .. } => {
            events.iter().fold((i64::MAX, i64::MIN), |(lo, hi), e| (lo.min(e.timestamp_ns), hi.max(e.timestamp_ns)))
        }
        ScanUnit::Archive { part, .. } => (part.bounds().min_ts, part.bounds().max_ts),
        ScanUnit::Columns { .. } => (i64::MIN, i64::MAX),
    };
    if descending {
        // Greatest first: sort ascending on the negation.
        hi.checked_neg().unwrap_or(i64::MAX)
    } else {
        lo
    }
}

impl DisplayAs for EventsScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "EventsScanExec: segments={}/{}, blocks={}/{}, rows={}/{}, partitions={}",
            s.segments_kept,
            s.segments_total,
            s.blocks_kept,
            s.blocks_total,
            s.rows_kept,
            s.rows_total,
            self.inner.partitions().len()
        )?;
        let runtime = self.runtime_filters();
        if !runtime.is_empty() {
            let shown: Vec<String> = runtime.iter().map(|e| e.to_string()).collect();
            write!(f, ", runtime_filters=[{}]", shown.join(", "))?;
        }
        if let Some(top) = self.parts_top() {
            write!(f, ", best_per_unit={} by timestamp {}", top.k, if top.descending { "DESC" } else { "ASC" })?;
        }
        Ok(())
    }
}

impl ExecutionPlan for EventsScanExec {
    fn name(&self) -> &str {
        "EventsScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        // A hash join computes its dynamic filter only if it finds it below it, here.
        for e in self.runtime_filters() {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        // Every filter is taken, and reported as not pushed: its operator still applies it,
        // the scan only uses it to skip blocks and rows (see `crate::runtime`).
        let filters: Vec<Arc<dyn PhysicalExpr>> =
            child_pushdown_result.parent_filters.into_iter().map(|f| f.filter).collect();
        let result = FilterPushdownPropagation::with_parent_pushdown_result(vec![PushedDown::No; filters.len()]);
        if filters.is_empty() {
            return Ok(result);
        }
        let mut parts = self.parts.clone();
        for p in parts.iter_mut() {
            p.runtime.extend(filters.iter().cloned());
        }
        Ok(result.with_updated_node(Arc::new(self.with_parts(parts, true)?)))
    }

    fn try_pushdown_sort(&self, order: &[PhysicalSortExpr]) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        // Sorted by time (a TopK, usually: the latest events): each partition reads its
        // newest (oldest) blocks first, so a TopK's dynamic filter excludes the rest early.
        // The sort stays. A scan with a row limit keeps its order (it picks which rows).
        let by_time = order.first().filter(|o| {
            o.expr
                .downcast_ref::<datafusion::physical_expr::expressions::Column>()
                .is_some_and(|c| c.name() == "timestamp")
        });
        let Some(first) = by_time else { return Ok(SortOrderPushdownResult::Unsupported) };
        if self.limit.is_some() {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let descending = first.options.descending;
        let mut parts = self.parts.clone();
        for p in parts.iter_mut() {
            p.units.sort_by_cached_key(|u| time_order_key(u, descending));
        }
        Ok(SortOrderPushdownResult::Inexact { inner: Arc::new(self.with_parts(parts, false)?) })
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let stream = self.inner.execute(partition, context)?;
        let output = MetricBuilder::new(&self.metrics).output_rows(partition);
        let schema = stream.schema();
        let counted = stream.inspect(move |b| {
            if let Ok(b) = b {
                output.add(b.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(match partition {
            None => self.statistics.clone(),
            Some(i) => {
                let mut s = Statistics::new_unknown(&self.inner.schema());
                s.num_rows = self.partition_rows.get(i).cloned().unwrap_or(Precision::Absent);
                Arc::new(s)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;
    use proptest::prelude::*;

    proptest! {
        /// A row set's mask and its listed rows name the same rows, for bitmaps across
        /// container boundaries and for listed rows.
        #[test]
        fn row_set_mask_matches_its_rows(
            values in proptest::collection::btree_set(0u32..140_000, 0..3000),
            start in 0u32..70_000,
            len in 1u32..70_000,
        ) {
            let bitmap: RoaringBitmap = values.iter().copied().collect();
            let count = bitmap.range_cardinality(start..start + len) as usize;
            let flat = index::flat_words(&bitmap, start + len).map(Buffer::from_vec);
            prop_assert!(flat.is_some());
            let bitmap = Arc::new(bitmap);
            let want: Vec<u32> = values.range(start..start + len).map(|v| v - start).collect();
            // As the bitmap's rows, and as a slice of its flat bits.
            for flat in [None, flat] {
                let indexed = RowSet::Indexed { bitmap: bitmap.clone(), start, len, count, flat };
                prop_assert_eq!(indexed.to_indices().expect("rows").values().to_vec(), want.clone());
                let mask = indexed.to_mask(len as usize).expect("mask");
                prop_assert_eq!(mask.set_indices().map(|i| i as u32).collect::<Vec<_>>(), want.clone());
                prop_assert_eq!(mask.count_set_bits(), count);
            }
            // Flat bits that end before the unit are an error, not a panic.
            let short = RowSet::Indexed {
                bitmap: bitmap.clone(),
                start,
                len,
                count,
                flat: Some(Buffer::from_vec(vec![0u64; (start + len - 1) as usize / 64])),
            };
            prop_assert!(short.to_mask(len as usize).is_err());
            prop_assert!(short.to_indices().is_err());
            let listed = RowSet::Listed(want.clone());
            let mask = listed.to_mask(len as usize).expect("mask");
            prop_assert_eq!(mask.set_indices().map(|i| i as u32).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn blocks_inside_the_time_bounds_skip_the_time_filters() {
        use datafusion::prelude::{col, lit, SessionContext};
        let state = SessionContext::new().state();
        let table = events_schema();
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        let time = col("timestamp").gt_eq(ts(10)).and(col("timestamp").lt(ts(20)));
        let cols = |f: Option<&FilterExpr>| f.map(|f| f.columns.clone());
        let f = RowFilter::new(&state, &table, vec![time.clone(), col("confidence").lt(lit(0.5))])
            .expect("plan")
            .expect("filter");
        // Inside 10..=19: only the confidence filter is left.
        assert_eq!(cols(f.for_block(10, 19)), Some(vec![ColumnId::Confidence]));
        // Reaching past either bound: the whole filter, timestamps included.
        assert_eq!(cols(f.for_block(9, 19)), Some(vec![ColumnId::Timestamp, ColumnId::Confidence]));
        assert_eq!(cols(f.for_block(10, 20)), Some(vec![ColumnId::Timestamp, ColumnId::Confidence]));
        // Time filters alone: a covered block needs no filter at all.
        let only_time = RowFilter::new(&state, &table, vec![time]).expect("plan").expect("filter");
        assert!(only_time.for_block(12, 15).is_none());
        assert_eq!(cols(only_time.for_block(0, 15)), Some(vec![ColumnId::Timestamp]));
    }

    #[test]
    fn runs_of_equal_rows_keep_their_first_row() {
        let codes: ArrayRef =
            Arc::new(UInt32Array::from(vec![Some(1), Some(1), None, None, Some(1), Some(2), Some(2)]));
        let ids: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                [Some([7u8, 7]), Some([7, 7]), Some([7, 7]), Some([7, 7]), Some([7, 7]), Some([7, 7]), Some([8, 8])]
                    .into_iter(),
                2,
            )
            .expect("ids"),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::UInt32, true),
            Field::new("id", DataType::FixedSizeBinary(2), true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![codes, ids]).expect("batch");
        let out = first_of_runs(batch).expect("runs");
        let k = out.column(0).as_primitive::<UInt32Type>();
        assert_eq!(k.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(1), Some(2), Some(2)]);
        let id = out.column(1).as_fixed_size_binary();
        assert_eq!(
            id.iter().map(|v| v.map(|b| b[0])).collect::<Vec<_>>(),
            vec![Some(7), Some(7), Some(7), Some(7), Some(8)]
        );
    }

    #[test]
    fn rows_outside_the_unit_are_an_error() {
        assert!(RowSet::Listed(vec![0, 9]).to_mask(9).is_err());
        assert!(RowSet::Listed(vec![0, 8]).to_mask(9).is_ok());
    }
}
