//! Runtime filters: predicates that operators above the `events` scan hand it after the plan
//! is built, whose values are only known while the query runs. DataFusion pushes three kinds:
//!
//! - a `FilterExec` predicate the logical pushdown could not take, such as
//!   `trace_id = (SELECT ...)` (its scalar subquery is computed before the scan starts);
//! - a hash join's dynamic filter on the probe side: the build side's key bounds and, for up
//!   to 150 keys, their IN list;
//! - a TopK's (`ORDER BY ... LIMIT k`) dynamic filter, which tightens as better rows arrive.
//!
//! The scan uses them twice, always re-reading a dynamic filter's current value before each
//! unit: the parts it can answer from the indexes (`trace_id` and indexed-column values,
//! `timestamp` bounds) skip whole blocks and rows before anything is decoded, and the whole
//! predicate is evaluated on its own columns before the other projected columns are decoded.
//! The operator that pushed a filter still applies it (the scan reports it as not pushed), so
//! the scan only has to never drop a row that passes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::array::RecordBatchOptions;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{binary_expr, ColumnarValue, Expr, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::{snapshot_generation, snapshot_physical_expr};
use roaring::RoaringBitmap;

use segments::ColumnId;

use crate::provider::{FilterExpr, RowSet, ScanUnit};
use crate::pushdown::ScanPredicate;

/// `e`, a physical predicate over `schema` with no dynamic parts left, as the logical filter
/// [`ScanPredicate`] reads, as far as it has a logical form: columns, literals, comparisons,
/// AND / OR, IN lists and IS [NOT] NULL. A part without columns (a scalar subquery's value, a
/// cast of a literal) is evaluated to its value. `None` when `e` has another shape.
///
/// `IS NULL` of a column the schema declares non-nullable is `false` (TopK's filter on
/// `timestamp` reads `timestamp IS NULL OR timestamp > t`), and `false OR x` is `x`.
pub fn to_logical(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Expr> {
    if let Some(c) = e.downcast_ref::<Column>() {
        return Some(Expr::Column(datafusion::common::Column::from_name(c.name())));
    }
    if let Some(l) = e.downcast_ref::<Literal>() {
        return Some(Expr::Literal(l.value().clone(), None));
    }
    if collect_columns(e).is_empty() {
        return constant(e).map(|v| Expr::Literal(v, None));
    }
    if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        let (l, r) = (to_logical(b.left(), schema)?, to_logical(b.right(), schema)?);
        return match b.op() {
            Operator::Or => Some(match (is_false(&l), is_false(&r)) {
                (true, _) => r,
                (_, true) => l,
                _ => l.or(r),
            }),
            op @ (Operator::And
            | Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq) => Some(binary_expr(l, *op, r)),
            _ => None,
        };
    }
    if let Some(list) = e.downcast_ref::<InListExpr>() {
        let values = list.list().iter().map(|v| to_logical(v, schema)).collect::<Option<Vec<_>>>()?;
        return Some(Expr::InList(InList::new(Box::new(to_logical(list.expr(), schema)?), values, list.negated())));
    }
    if let Some(n) = e.downcast_ref::<IsNullExpr>() {
        if never_null(n.arg(), schema) {
            return Some(Expr::Literal(ScalarValue::Boolean(Some(false)), None));
        }
        return Some(Expr::IsNull(Box::new(to_logical(n.arg(), schema)?)));
    }
    if let Some(n) = e.downcast_ref::<IsNotNullExpr>() {
        if never_null(n.arg(), schema) {
            return Some(Expr::Literal(ScalarValue::Boolean(Some(true)), None));
        }
        return Some(Expr::IsNotNull(Box::new(to_logical(n.arg(), schema)?)));
    }
    None
}

/// Inclusive `timestamp` bounds every row passing `e` lies within (`None`: unbounded on that
/// side). A disjunction is bounded by the hull of its sides (TopK on several keys filters
/// `timestamp > t OR (timestamp = t AND ...)`), a conjunction by the tighter of its sides.
pub fn time_hull(e: &Expr) -> (Option<i64>, Option<i64>) {
    use datafusion::logical_expr::BinaryExpr as Binary;
    match e {
        Expr::BinaryExpr(Binary { left, op: Operator::Or, right }) => {
            let ((l0, h0), (l1, h1)) = (time_hull(left), time_hull(right));
            (l0.zip(l1).map(|(a, b)| a.min(b)), h0.zip(h1).map(|(a, b)| a.max(b)))
        }
        Expr::BinaryExpr(Binary { left, op: Operator::And, right }) => {
            let ((l0, h0), (l1, h1)) = (time_hull(left), time_hull(right));
            let tighter_hi = match (h0, h1) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (l0.max(l1), tighter_hi)
        }
        leaf => {
            let p = ScanPredicate::from_filters(std::slice::from_ref(leaf));
            (p.min_ts, p.max_ts)
        }
    }
}

/// Whether `e` is built only from columns, literals, comparisons, boolean operators, IN lists
/// and null tests: per row a few compares or one set lookup, nothing hashed twice or cast.
pub fn is_cheap(e: &Arc<dyn PhysicalExpr>) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::physical_expr::expressions::NotExpr;
    let mut cheap = true;
    let _ = e.apply(|n| {
        let ok = n.downcast_ref::<Column>().is_some()
            || n.downcast_ref::<Literal>().is_some()
            || n.downcast_ref::<BinaryExpr>().is_some()
            || n.downcast_ref::<InListExpr>().is_some()
            || n.downcast_ref::<IsNullExpr>().is_some()
            || n.downcast_ref::<IsNotNullExpr>().is_some()
            || n.downcast_ref::<NotExpr>().is_some()
            || n.downcast_ref::<crate::strset::StringInList>().is_some()
            || n.downcast_ref::<crate::floatcmp::FloatCompare>().is_some();
        cheap &= ok;
        Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    cheap
}

fn is_false(e: &Expr) -> bool {
    matches!(e, Expr::Literal(ScalarValue::Boolean(Some(false)), _))
}

fn never_null(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    e.downcast_ref::<Column>().and_then(|c| schema.field_with_name(c.name()).ok()).is_some_and(|f| !f.is_nullable())
}

/// The value of an expression without columns, evaluated on one empty row.
fn constant(e: &Arc<dyn PhysicalExpr>) -> Option<ScalarValue> {
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        Vec::new(),
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .ok()?;
    match e.evaluate(&one_row).ok()? {
        ColumnarValue::Scalar(v) => Some(v),
        ColumnarValue::Array(a) if a.len() == 1 => ScalarValue::try_from_array(a.as_ref(), 0).ok(),
        ColumnarValue::Array(_) => None,
    }
}

/// `conjuncts` without the comparisons of a column with a literal when another conjunct
/// lists the column's values (`c IN (...)`): a hash join's filter bounds its keys and lists
/// them, and comparing every row's key with both bounds costs more than the list's hash
/// lookup. Dropping a conjunct only lets more rows through, which the operator that pushed
/// the filter removes.
fn without_implied_ranges(conjuncts: Vec<Arc<dyn PhysicalExpr>>) -> Vec<Arc<dyn PhysicalExpr>> {
    let column_of = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(|c| c.name().to_string());
    let listed: Vec<String> = conjuncts
        .iter()
        .filter_map(|c| c.downcast_ref::<InListExpr>())
        .filter(|l| !l.negated() && l.list().iter().all(|v| v.downcast_ref::<Literal>().is_some()))
        .filter_map(|l| column_of(l.expr()))
        .collect();
    if listed.is_empty() {
        return conjuncts;
    }
    conjuncts
        .into_iter()
        .filter(|c| {
            let Some(b) = c.downcast_ref::<BinaryExpr>() else { return true };
            let range = matches!(b.op(), Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq);
            let on_listed = column_of(b.left()).is_some_and(|n| listed.contains(&n))
                && b.right().downcast_ref::<Literal>().is_some();
            !(range && on_listed)
        })
        .collect()
}

/// What the runtime filters say at one moment: the predicate to evaluate on rows, and what
/// of it the indexes and block bounds answer.
#[derive(Debug)]
struct Current {
    generation: u64,
    filter: Option<FilterExpr>,
    predicate: ScanPredicate,
    /// The predicate's index bitmap per segment (by uid), computed when first needed.
    bitmaps: HashMap<u64, Arc<RoaringBitmap>>,
    /// The filter is made of comparisons, IN lists and null tests only (see [`is_cheap`]).
    cheap: bool,
    /// Units and rows the row filter was evaluated on, and the rows that passed.
    units_evaluated: usize,
    rows_evaluated: usize,
    rows_passed: usize,
}

impl Current {
    /// Whether evaluating the filter on rows still pays: it reads columns the scan would not
    /// decode otherwise only for passing rows, and it has not let most rows pass so far.
    /// (The operator that pushed the filter evaluates it again; when it lets most rows
    /// through, a hash join's key lookup would be done twice.)
    fn worth_evaluating(&self, projected: &[ColumnId]) -> bool {
        let Some(f) = &self.filter else { return false };
        let mut others = projected.iter().filter(|c| !f.columns.contains(c));
        // A filter with hashing in it (a hash join's lookup for a large build side) costs
        // about what the join's own probe does: it pays only by sparing free text.
        let saves_decoding =
            if self.cheap { others.next().is_some() } else { others.any(|c| !crate::cache::BlockCache::caches(*c)) };
        let unselective = self.units_evaluated >= 2
            && self.rows_evaluated >= UNSELECTIVE_AFTER_ROWS
            && self.rows_passed * 2 > self.rows_evaluated;
        saves_decoding && !unselective
    }
}

/// Rows a filter is evaluated on before it is judged by how many of them pass.
const UNSELECTIVE_AFTER_ROWS: usize = 8192;

/// One partition's view of the runtime filters while it streams its units.
#[derive(Debug)]
pub struct RuntimeFilter {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The scan's output schema, the one `exprs` are written against.
    schema: SchemaRef,
    /// The columns the scan decodes.
    projected: Vec<ColumnId>,
    current: Option<Current>,
}

impl RuntimeFilter {
    pub fn new(
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        projected: Vec<ColumnId>,
    ) -> Option<RuntimeFilter> {
        (!exprs.is_empty()).then_some(RuntimeFilter { exprs, schema, projected, current: None })
    }

    /// What evaluating the filter returned by the last [`RuntimeFilter::apply`] did: `passed`
    /// of `evaluated` rows were kept.
    pub fn record(&mut self, evaluated: usize, passed: usize) {
        if let Some(c) = self.current.as_mut() {
            c.units_evaluated += 1;
            c.rows_evaluated += evaluated;
            c.rows_passed += passed;
        }
    }

    /// `unit` narrowed by what the indexes and block bounds answer of the filters now, and
    /// the predicate to evaluate on its rows if that pays (then report what it did with
    /// [`RuntimeFilter::record`]); `None` when no row of it can pass.
    pub fn apply(&mut self, unit: ScanUnit) -> Result<Option<(ScanUnit, Option<FilterExpr>)>> {
        let current = refresh(&mut self.current, &self.exprs, &self.schema)?;
        let row_filter = if current.worth_evaluating(&self.projected) { current.filter.clone() } else { None };
        let p = &current.predicate;
        let narrowed = match unit {
            ScanUnit::Block { segment, block, rows } => {
                let Some(meta) = segment.blocks().get(block) else {
                    return Ok(Some((ScanUnit::Block { segment, block, rows }, row_filter)));
                };
                let outside = p.min_ts.is_some_and(|m| meta.max_ts < m) || p.max_ts.is_some_and(|m| meta.min_ts > m);
                if outside {
                    None
                } else if p.conj.is_empty() {
                    Some(ScanUnit::Block { segment, block, rows })
                } else {
                    let bitmap = match current.bitmaps.get(&segment.uid()) {
                        Some(b) => b.clone(),
                        None => {
                            let index = crate::cache::segment_index(&segment).map_err(crate::provider::ext)?;
                            let b = Arc::new(index.evaluate(&p.conj));
                            current.bitmaps.insert(segment.uid(), b.clone());
                            b
                        }
                    };
                    let start = meta.first_row as u32;
                    let kept = narrow(rows, bitmap, start, meta.rows)?;
                    kept.map(|rows| ScanUnit::Block { segment, block, rows })
                }
            }
            ScanUnit::Memory { events, rows } => {
                if p.conj.is_empty() && p.min_ts.is_none() && p.max_ts.is_none() {
                    Some(ScanUnit::Memory { events, rows })
                } else {
                    let candidates: Vec<u32> = match &rows {
                        Some(rs) => rs.to_indices()?.values().to_vec(),
                        None => (0..events.len() as u32).collect(),
                    };
                    let kept: Vec<u32> = candidates
                        .into_iter()
                        .filter(|i| events.get(*i as usize).is_some_and(|e| crate::provider::event_matches(e, p)))
                        .collect();
                    (!kept.is_empty()).then(|| ScanUnit::Memory { events, rows: Some(RowSet::Listed(kept)) })
                }
            }
            // Time bounds of its row group; its rows are not read yet (the row filter, when
            // worth it, applies once they are).
            // (Made while reading, never handed to the runtime filters.)
            ScanUnit::Columns { columns, len } => Some(ScanUnit::Columns { columns, len }),
            ScanUnit::Archive { part, predicate } => {
                let outside = p.min_ts.is_some_and(|m| part.bounds().max_ts < m)
                    || p.max_ts.is_some_and(|m| part.bounds().min_ts > m);
                (!outside).then_some(ScanUnit::Archive { part, predicate })
            }
        };
        Ok(narrowed.map(|u| (u, row_filter)))
    }
}

/// Re-read the filters if any dynamic part changed since the last unit.
fn refresh<'a>(
    slot: &'a mut Option<Current>,
    exprs: &[Arc<dyn PhysicalExpr>],
    schema: &Schema,
) -> Result<&'a mut Current> {
    let generation = exprs.iter().fold(0u64, |g, e| g.wrapping_add(snapshot_generation(e)));
    if slot.as_ref().is_some_and(|c| c.generation == generation) {
        return slot
            .as_mut()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("runtime filter not read".into()));
    }
    let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for e in exprs {
        let snap = snapshot_physical_expr(Arc::clone(e))?;
        for part in split_conjunction(&snap) {
            let always =
                part.downcast_ref::<Literal>().is_some_and(|l| matches!(l.value(), ScalarValue::Boolean(Some(true))));
            if !always {
                conjuncts.push(Arc::clone(part));
            }
        }
    }
    let logical: Vec<Expr> = conjuncts.iter().filter_map(|c| to_logical(c, schema)).collect();
    let conjuncts = without_implied_ranges(conjuncts);
    let mut predicate = ScanPredicate::from_filters(&logical);
    for e in &logical {
        let (lo, hi) = time_hull(e);
        predicate.min_ts = predicate.min_ts.max(lo);
        predicate.max_ts = match (predicate.max_ts, hi) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let filter = FilterExpr::from_physical(&conjuncts)?;
    Ok(slot.insert(Current {
        generation,
        cheap: filter.as_ref().is_some_and(|f| is_cheap(&f.expr)),
        filter,
        predicate,
        bitmaps: HashMap::new(),
        units_evaluated: 0,
        rows_evaluated: 0,
        rows_passed: 0,
    }))
}

/// The rows of a block (`rows`, `None`: all `len` of them, numbered from segment row `start`)
/// that are also in segment bitmap `bitmap`: `Ok(None)` when none are, `Some(None)` when all
/// rows of the block are.
fn narrow(rows: Option<RowSet>, bitmap: Arc<RoaringBitmap>, start: u32, len: u32) -> Result<Option<Option<RowSet>>> {
    match rows {
        None => {
            let count = bitmap.range_cardinality(start..start + len) as usize;
            Ok(match count {
                0 => None,
                c if c == len as usize => Some(None),
                count => Some(Some(RowSet::Indexed { bitmap, start, len, count, flat: None })),
            })
        }
        Some(rs) => {
            let kept: Vec<u32> =
                rs.to_indices()?.values().iter().copied().filter(|r| bitmap.contains(start + r)).collect();
            Ok((!kept.is_empty()).then_some(Some(RowSet::Listed(kept))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, TimeUnit};
    use datafusion::logical_expr::{col, lit};
    use datafusion::physical_expr::expressions::{self as pe};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("timestamp", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("agent_id", DataType::Utf8, true),
        ])
    }

    fn column(name: &str) -> Arc<dyn PhysicalExpr> {
        let s = schema();
        Arc::new(Column::new(name, s.index_of(name).expect("column")))
    }

    #[test]
    fn topk_filter_on_a_non_nullable_column_becomes_a_time_bound() {
        let s = schema();
        let ts = ScalarValue::TimestampNanosecond(Some(1_000), Some("UTC".into()));
        let cmp: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(column("timestamp"), Operator::Gt, pe::lit(ts)));
        let topk: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(pe::is_null(column("timestamp")).expect("is null"), Operator::Or, cmp));
        let e = to_logical(&topk, &s).expect("logical");
        let p = ScanPredicate::from_filters(&[e]);
        assert_eq!((p.min_ts, p.max_ts), (Some(1_001), None));
        // On a nullable column IS NULL stays, and the OR gives no bound.
        let agent: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            pe::is_null(column("agent_id")).expect("is null"),
            Operator::Or,
            Arc::new(BinaryExpr::new(column("agent_id"), Operator::Eq, pe::lit("a"))),
        ));
        let e = to_logical(&agent, &s).expect("logical");
        assert_eq!(e, col("agent_id").is_null().or(col("agent_id").eq(lit("a"))));
        assert!(ScanPredicate::from_filters(&[e]).conj.is_empty());
    }

    #[test]
    fn a_disjunction_is_bounded_by_the_hull_of_its_sides() {
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        let t = || col("timestamp");
        // TopK over (timestamp DESC, span_id): `t > 100 OR (t = 100 AND span_id < 'x')`.
        let topk = t().gt(ts(100)).or(t().eq(ts(100)).and(col("span_id").lt(lit("x"))));
        assert_eq!(time_hull(&topk), (Some(100), None));
        assert_eq!(time_hull(&t().lt(ts(5)).or(t().gt(ts(50)))), (None, None));
        assert_eq!(time_hull(&t().between(ts(5), ts(9)).or(t().eq(ts(20)))), (Some(5), Some(20)));
        assert_eq!(time_hull(&t().gt_eq(ts(5)).and(t().lt_eq(ts(9)))), (Some(5), Some(9)));
        // A side that does not bound time leaves the disjunction unbounded.
        assert_eq!(time_hull(&t().gt(ts(100)).or(col("agent_id").eq(lit("a")))), (None, None));
    }

    #[test]
    fn join_key_lists_become_trace_lookups() {
        let s = schema();
        let id = "0123456789abcdef0123456789abcdef";
        let list: Arc<dyn PhysicalExpr> = Arc::new(
            InListExpr::try_new(column("trace_id"), vec![pe::lit(id), pe::lit("not hex")], false, &s).expect("list"),
        );
        let e = to_logical(&list, &s).expect("logical");
        assert_eq!(e, col("trace_id").in_list(vec![lit(id), lit("not hex")], false));
        // A value that is no trace id makes the list unusable for the lookup, never wrong.
        assert!(ScanPredicate::from_filters(&[e]).conj.trace_ids.is_none());
        let one: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new(column("trace_id"), vec![pe::lit(id)], false, &s).expect("list"));
        let p = ScanPredicate::from_filters(&[to_logical(&one, &s).expect("logical")]);
        assert_eq!(p.conj.trace_ids.map(|ids| ids.len()), Some(1));
    }

    #[test]
    fn parts_without_columns_are_evaluated() {
        let s = schema();
        // `'a' || 'b'` stands for a scalar subquery's value: no column, one value.
        let concat: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(pe::lit("a"), Operator::StringConcat, pe::lit("b")));
        let eq: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(column("agent_id"), Operator::Eq, concat));
        assert_eq!(to_logical(&eq, &s), Some(col("agent_id").eq(lit("ab"))));
        // A shape it does not know gives nothing, not a wrong predicate.
        let like: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(column("agent_id"), Operator::LikeMatch, pe::lit("a%")));
        assert_eq!(to_logical(&like, &s), None);
    }

    #[test]
    fn bounds_implied_by_a_key_list_are_not_evaluated() {
        let s = schema();
        let bound = |op| -> Arc<dyn PhysicalExpr> { Arc::new(BinaryExpr::new(column("trace_id"), op, pe::lit("a"))) };
        let list: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new(column("trace_id"), vec![pe::lit("a")], false, &s).expect("list"));
        let other: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(column("agent_id"), Operator::GtEq, pe::lit("a")));
        let kept =
            without_implied_ranges(vec![bound(Operator::GtEq), bound(Operator::LtEq), list.clone(), other.clone()]);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().any(|k| k.downcast_ref::<InListExpr>().is_some()));
        // Without a list nothing is dropped.
        assert_eq!(without_implied_ranges(vec![bound(Operator::GtEq), other]).len(), 2);
    }

    #[test]
    fn hashing_and_casts_are_not_cheap() {
        let s = schema();
        let list: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new(column("trace_id"), vec![pe::lit("a")], false, &s).expect("list"));
        let both: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            list.clone(),
            Operator::And,
            pe::is_not_null(column("agent_id")).expect("not null"),
        ));
        assert!(is_cheap(&both));
        let cast: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            pe::cast(column("timestamp"), &s, DataType::Utf8).expect("cast"),
            Operator::Eq,
            pe::lit("x"),
        ));
        assert!(!is_cheap(&cast));
        let mixed: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(list, Operator::And, cast));
        assert!(!is_cheap(&mixed));
    }

    #[test]
    fn narrowing_keeps_exactly_the_rows_in_both() {
        let bitmap: Arc<RoaringBitmap> = Arc::new([5u32, 7, 100, 101, 4000].into_iter().collect());
        // Block of rows 100..200: only 100 and 101 are in the bitmap.
        let all = narrow(None, bitmap.clone(), 100, 100).expect("narrow").expect("some rows");
        assert_eq!(all.expect("a selection").to_indices().expect("rows").values().to_vec(), vec![0, 1]);
        let listed = narrow(Some(RowSet::Listed(vec![1, 2, 3])), bitmap.clone(), 100, 100).expect("narrow");
        assert_eq!(listed.expect("some").expect("a selection").to_indices().expect("rows").values().to_vec(), vec![1]);
        assert!(narrow(Some(RowSet::Listed(vec![2, 3])), bitmap.clone(), 100, 100).expect("narrow").is_none());
        assert!(narrow(None, bitmap.clone(), 200, 100).expect("narrow").is_none());
        // Every row of the block: no selection left to apply.
        let full: Arc<RoaringBitmap> = Arc::new((0u32..10).collect());
        assert!(matches!(narrow(None, full, 0, 10).expect("narrow"), Some(None)));
    }
}
