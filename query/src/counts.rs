//! Index-only counts: `SELECT a, b, count(*) FROM events [WHERE <indexed terms>] GROUP BY a, b`
//! over indexed columns is answered from the segments' bitmaps (cardinalities of
//! intersections) without decoding a row. [`IndexCountRule`] is the physical optimizer rule
//! that puts the counts in place of the partial aggregate over the scan; [`count_groups`] is
//! the counting itself.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use index::IndexedColumn;
use roaring::RoaringBitmap;

use crate::provider::{RowSet, ScanUnit};

/// Most groups one segment may produce (the product of the columns' distinct values is
/// walked); beyond it the query is left to the ordinary aggregate.
const MAX_GROUPS_PER_SEGMENT: usize = 10_000;

/// A segment and the blocks of it a scan keeps, with their row sets.
type SegmentBlocks<'a> = (&'a Arc<segments::Segment>, Vec<(usize, &'a Option<RowSet>)>);

/// Row counts per combination of values of `cols` over the rows `units` keep. `None` when a
/// segment has too many combinations to be worth it. Only valid for units whose kept rows are
/// decided by the indexes alone (no row filter, time bound or text piece).
pub fn count_groups(units: &[ScanUnit], cols: &[IndexedColumn]) -> Option<HashMap<Vec<Option<String>>, u64>> {
    let mut out: HashMap<Vec<Option<String>>, u64> = HashMap::new();
    // Block units grouped by segment, in order of appearance.
    let mut segments: Vec<SegmentBlocks<'_>> = Vec::new();
    for u in units {
        match u {
            ScanUnit::Block { segment, block, rows } => {
                match segments.iter_mut().find(|(s, _)| Arc::ptr_eq(s, segment)) {
                    Some((_, blocks)) => blocks.push((*block, rows)),
                    None => segments.push((segment, vec![(*block, rows)])),
                }
            }
            ScanUnit::Memory { events, rows } => {
                let mut one = |i: usize| {
                    if let Some(e) = events.get(i) {
                        let key = cols.iter().map(|c| e.indexed_value(*c).map(str::to_owned)).collect();
                        *out.entry(key).or_insert(0) += 1;
                    }
                };
                match rows {
                    Some(rows) => rows.to_indices().ok()?.values().iter().for_each(|r| one(*r as usize)),
                    None => (0..events.len()).for_each(one),
                }
            }
            // Its rows are known only once read.
            ScanUnit::Archive { .. } | ScanUnit::Columns { .. } => return None,
        }
    }
    for (segment, blocks) in segments {
        // The segment's filter bitmap (shared by its filtered blocks); blocks kept whole match
        // it on every row, so intersecting with it is right for them too.
        let filter: Option<&RoaringBitmap> = blocks.iter().find_map(|(_, rows)| match rows {
            Some(RowSet::Indexed { bitmap, .. }) => Some(bitmap.as_ref()),
            _ => None,
        });
        let mut combos: Vec<(Vec<Option<String>>, Option<RoaringBitmap>)> = vec![(Vec::new(), filter.cloned())];
        // (An index that fails to load leaves the query to the ordinary aggregate.)
        let index = crate::cache::segment_index(segment).ok()?;
        for c in cols {
            let mut next = Vec::new();
            for (key, bm) in &combos {
                for (v, vbm) in index.column(*c).bitmaps() {
                    let inter = match bm {
                        Some(b) => b & vbm,
                        None => vbm.clone(),
                    };
                    if inter.is_empty() {
                        continue;
                    }
                    let mut k = key.clone();
                    k.push(v.map(str::to_owned));
                    next.push((k, Some(inter)));
                    if next.len() > MAX_GROUPS_PER_SEGMENT {
                        return None;
                    }
                }
            }
            combos = next;
        }
        // The kept blocks as runs of adjacent row ranges (usually one run: the whole segment).
        let mut runs: Vec<std::ops::Range<u32>> = Vec::new();
        let mut starts: Vec<(u32, u32)> = Vec::with_capacity(blocks.len());
        for (b, _) in &blocks {
            let meta = segment.blocks().get(*b)?;
            starts.push((meta.first_row as u32, meta.rows));
        }
        starts.sort_unstable();
        for (start, rows) in starts {
            match runs.last_mut() {
                Some(r) if r.end == start => r.end = start + rows,
                _ => runs.push(start..start + rows),
            }
        }
        let whole = runs.len() == 1 && runs[0] == (0..segment.rows() as u32);
        for (key, bm) in combos {
            let Some(bm) = bm else { continue };
            let n: u64 = if whole { bm.len() } else { runs.iter().map(|r| bm.range_cardinality(r.clone())).sum() };
            if n > 0 {
                *out.entry(key).or_insert(0) += n;
            }
        }
    }
    Some(out)
}

/// Replaces `AggregateExec(Partial, group by indexed columns, count(*) ...)` over an
/// [`crate::provider::EventsScanExec`] whose rows the indexes alone decide with the precomputed partial counts.
#[derive(Debug, Default)]
pub struct IndexCountRule;

impl PhysicalOptimizerRule for IndexCountRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        crate::replace_nodes(plan, counts_for)
    }

    fn name(&self) -> &str {
        "index_count"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The replacement for `node`, if it is a partial count over an index-decided scan.
fn counts_for(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some((agg, scan)) = crate::partial_over_scan(node) else { return Ok(None) };
    let Some(units) = scan.index_decided_units() else { return Ok(None) };
    // Every aggregate is count(<non-null literal>) without DISTINCT or FILTER.
    let counts_only = agg.aggr_expr().iter().zip(agg.filter_expr()).all(|(a, f)| {
        let args = a.expressions();
        f.is_none()
            && !a.is_distinct()
            && a.fun().name() == "count"
            && args.len() == 1
            && args[0].downcast_ref::<Literal>().is_some_and(|l| !l.value().is_null())
    });
    // Without GROUP BY the row count comes from the scan's exact statistics already.
    if !counts_only || agg.aggr_expr().is_empty() || agg.group_expr().expr().is_empty() {
        return Ok(None);
    }
    let scan_schema = agg.input().schema();
    let mut cols = Vec::new();
    for (expr, _) in agg.group_expr().expr() {
        let Some(c) = expr.downcast_ref::<Column>() else { return Ok(None) };
        let Some(ic) = scan_schema.fields().get(c.index()).and_then(|f| IndexedColumn::from_name(f.name())) else {
            return Ok(None);
        };
        cols.push(ic);
    }
    let Some(groups) = count_groups(units, &cols) else { return Ok(None) };
    let schema = agg.schema();
    let mut keys: Vec<(&Vec<Option<String>>, &u64)> = groups.iter().collect();
    keys.sort();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate().take(cols.len()) {
        let values = StringArray::from_iter(keys.iter().map(|(k, _)| k[i].as_deref()));
        arrays.push(arrow::compute::cast(&values, field.data_type())?);
    }
    let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(keys.iter().map(|(_, n)| **n as i64)));
    for field in schema.fields().iter().skip(cols.len()) {
        if field.data_type() != counts.data_type() {
            return Err(DataFusionError::Internal(format!(
                "count state {} is {}, expected Int64",
                field.name(),
                field.data_type()
            )));
        }
        arrays.push(counts.clone());
    }
    if arrays.len() != schema.fields().len() {
        return Ok(None);
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None)?;
    Ok(Some(exec))
}
