//! Turning DataFusion filter expressions into what the storage can use: a conjunction of
//! index terms (equality / IN / IS NULL on indexed columns, `trace_id` lookups), a time range
//! and the pieces `content LIKE` patterns need; and deciding which filters the scan applies
//! exactly (answered by an index, or evaluated row by row in the scan).

use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use index::{Conjunction, IndexedColumn, Term};

/// What a scan can prune with. Time bounds are inclusive unix nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPredicate {
    pub conj: Conjunction,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
    /// Pieces every matching `content` must contain (from `content LIKE` patterns), looked up
    /// in the segments' token indexes to skip blocks.
    pub text_pieces: Vec<index::text::Piece>,
}

impl ScanPredicate {
    pub fn from_filters(filters: &[Expr]) -> ScanPredicate {
        let mut p = ScanPredicate::default();
        for f in filters {
            p.add(f);
        }
        p
    }

    fn add(&mut self, e: &Expr) {
        if let Some(list) = or_chain_as_in_list(e) {
            return self.add(&Expr::InList(list));
        }
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.add(left);
                self.add(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let (Some(col), Some(v)) = (column_name(left), literal(right)) {
                    self.comparison(&col, *op, &v);
                } else if let (Some(v), Some(col)) = (literal(left), column_name(right)) {
                    if let Some(op) = op.swap() {
                        self.comparison(&col, op, &v);
                    }
                }
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                if let (Some(col), Some(lo), Some(hi)) = (column_name(expr), literal(low), literal(high)) {
                    self.comparison(&col, Operator::GtEq, &lo);
                    self.comparison(&col, Operator::LtEq, &hi);
                }
            }
            Expr::InList(list) => {
                let Some(col) = column_name(&list.expr) else { return };
                let values: Option<Vec<ScalarValue>> = list.list.iter().map(literal).collect();
                let Some(values) = values else { return };
                if col == "trace_id" && !list.negated {
                    let ids: Option<Vec<[u8; 16]>> = values.iter().map(trace_id).collect();
                    if let Some(ids) = ids {
                        self.add_traces(ids);
                    }
                } else if let Some(c) = IndexedColumn::from_name(&col) {
                    let vals: Option<Vec<Option<String>>> = values.iter().map(string).collect();
                    if let Some(vals) = vals {
                        if vals.iter().all(Option::is_some) {
                            self.conj.terms.push(Term { column: c, values: vals, negated: list.negated });
                        }
                    }
                }
            }
            Expr::Like(like) if !like.negated && column_name(&like.expr).as_deref() == Some("content") => {
                let Some(Some(pattern)) = literal(&like.pattern).as_ref().and_then(string) else { return };
                if like.escape_char.is_some_and(|c| pattern.contains(c)) {
                    return;
                }
                let Some(pieces) = index::text::like_pieces(&pattern) else { return };
                for piece in pieces {
                    // ILIKE folds case in ways lowercasing does not mirror (U+017F, U+212A):
                    // only digit pieces are safe to look up for it.
                    if like.case_insensitive && !piece.text.chars().all(|c| c.is_ascii_digit()) {
                        continue;
                    }
                    if !self.text_pieces.contains(&piece) {
                        self.text_pieces.push(piece);
                    }
                }
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                if let Some(c) = column_name(inner).and_then(|c| IndexedColumn::from_name(&c)) {
                    let negated = matches!(e, Expr::IsNotNull(_));
                    self.conj.terms.push(Term { column: c, values: vec![None], negated });
                }
            }
            _ => {}
        }
    }

    fn add_traces(&mut self, ids: Vec<[u8; 16]>) {
        self.conj.trace_ids = Some(match self.conj.trace_ids.take() {
            None => ids,
            Some(prev) => prev.into_iter().filter(|p| ids.contains(p)).collect(),
        });
    }

    fn comparison(&mut self, col: &str, op: Operator, v: &ScalarValue) {
        if col == "timestamp" {
            let Some(ns) = timestamp_ns(v) else { return };
            let (lo, hi) = match op {
                Operator::Eq => (Some(ns), Some(ns)),
                Operator::Gt => (ns.checked_add(1), None),
                Operator::GtEq => (Some(ns), None),
                Operator::Lt => (None, ns.checked_sub(1)),
                Operator::LtEq => (None, Some(ns)),
                _ => (None, None),
            };
            if let Some(lo) = lo {
                self.min_ts = Some(self.min_ts.map_or(lo, |m| m.max(lo)));
            }
            if let Some(hi) = hi {
                self.max_ts = Some(self.max_ts.map_or(hi, |m| m.min(hi)));
            }
            return;
        }
        if col == "trace_id" && op == Operator::Eq {
            if let Some(id) = trace_id(v) {
                self.add_traces(vec![id]);
            }
            return;
        }
        let Some(c) = IndexedColumn::from_name(col) else { return };
        let Some(Some(s)) = string(v) else { return };
        match op {
            Operator::Eq => self.conj.terms.push(Term { column: c, values: vec![Some(s)], negated: false }),
            Operator::NotEq => self.conj.terms.push(Term { column: c, values: vec![Some(s)], negated: true }),
            _ => {}
        }
    }
}

/// Whether the scan applies `e` exactly, row for row, so DataFusion need not re-apply it:
/// equality / IN (not negated) with string literals on an indexed column, IS [NOT] NULL on an
/// indexed column (answered by the bitmaps), and `trace_id` equality / IN with valid ids
/// (answered by the trace directory). The in-memory buffer applies the same predicate per row.
/// Negations (`!=`, `NOT IN`) are not exact: their bitmaps keep NULL rows that SQL drops.
/// Time bounds are not exact either: they prune blocks, rows are cut by DataFusion.
pub fn is_exact(e: &Expr) -> bool {
    fn plain_column(e: &Expr) -> Option<&str> {
        match e {
            Expr::Column(c) => Some(c.name.as_str()),
            _ => None,
        }
    }
    let plain_string = |e: &Expr| match e {
        Expr::Literal(v, _) => match string(v) {
            Some(Some(s)) => Some(s),
            _ => None,
        },
        _ => None,
    };
    let exact_value = |col: &str, v: Option<String>| match v {
        None => false,
        Some(v) if col == "trace_id" => segments::parse_hex::<16>(&v).is_some(),
        Some(_) => IndexedColumn::from_name(col).is_some(),
    };
    if let Some(list) = or_chain_as_in_list(e) {
        return is_exact(&Expr::InList(list));
    }
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            match (plain_column(left), plain_column(right)) {
                (Some(col), None) => exact_value(col, plain_string(right)),
                (None, Some(col)) => exact_value(col, plain_string(left)),
                _ => false,
            }
        }
        Expr::InList(list) if !list.negated && !list.list.is_empty() => match plain_column(&list.expr) {
            Some(col) => list.list.iter().all(|v| exact_value(col, plain_string(v))),
            None => false,
        },
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            plain_column(inner).is_some_and(|c| IndexedColumn::from_name(c).is_some())
        }
        _ => false,
    }
}

/// The inclusive bounds of `e` when it bounds the `timestamp` column and nothing else:
/// `timestamp` (the column itself, not a cast of it) compared with a literal (`=`, `<`, `<=`,
/// `>`, `>=`), `BETWEEN` two literals, or a conjunction of those. Each comparison must give a
/// bound ([`ScanPredicate`] computes it, so pruning and this agree): a row passes `e` exactly
/// when its timestamp lies inside them.
pub fn time_bounds(e: &Expr) -> Option<(Option<i64>, Option<i64>)> {
    fn is_ts(e: &Expr) -> bool {
        matches!(e, Expr::Column(c) if c.name == "timestamp")
    }
    fn one_bound(e: &Expr) -> bool {
        let p = ScanPredicate::from_filters(std::slice::from_ref(e));
        let shape = match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                matches!(op, Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq)
                    && ((is_ts(left) && literal(right).is_some()) || (is_ts(right) && literal(left).is_some()))
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                is_ts(expr) && literal(low).is_some() && literal(high).is_some()
            }
            _ => false,
        };
        let bounded = match e {
            Expr::Between(_) | Expr::BinaryExpr(BinaryExpr { op: Operator::Eq, .. }) => {
                p.min_ts.is_some() && p.max_ts.is_some()
            }
            _ => p.min_ts.is_some() || p.max_ts.is_some(),
        };
        shape && bounded && p.conj.is_empty() && p.text_pieces.is_empty()
    }
    fn pure(e: &Expr) -> bool {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => pure(left) && pure(right),
            other => one_bound(other),
        }
    }
    if !pure(e) {
        return None;
    }
    let p = ScanPredicate::from_filters(std::slice::from_ref(e));
    Some((p.min_ts, p.max_ts))
}

/// Whether the scan can evaluate `e` itself on the columns it decodes: a tree of columns,
/// literals, operators, comparisons, LIKE, IN lists, CASE, casts and non-volatile scalar
/// functions. Such a filter is applied row for row inside the scan (before the other columns
/// are decoded), so it is `Exact` too. Subqueries, aggregates, window functions, placeholders
/// and volatile functions (`random()`) are left to DataFusion.
pub fn is_evaluable(e: &Expr) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Volatility;
    let mut ok = true;
    let _ = e.apply(|node| {
        let allowed = match node {
            Expr::Column(_)
            | Expr::Literal(..)
            | Expr::BinaryExpr(_)
            | Expr::Like(_)
            | Expr::SimilarTo(_)
            | Expr::Not(_)
            | Expr::IsNotNull(_)
            | Expr::IsNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsNotUnknown(_)
            | Expr::Negative(_)
            | Expr::Between(_)
            | Expr::Case(_)
            | Expr::Cast(_)
            | Expr::TryCast(_)
            | Expr::InList(_) => true,
            Expr::ScalarFunction(f) => f.func.signature().volatility != Volatility::Volatile,
            _ => false,
        };
        if allowed {
            Ok(TreeNodeRecursion::Continue)
        } else {
            ok = false;
            Ok(TreeNodeRecursion::Stop)
        }
    });
    ok
}

/// `c = 'a' OR c = 'b' OR ...` on one column (DataFusion rewrites short IN lists this way),
/// as the IN list it means.
fn or_chain_as_in_list(e: &Expr) -> Option<datafusion::logical_expr::expr::InList> {
    fn collect<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
                collect(left, out);
                collect(right, out);
            }
            other => out.push(other),
        }
    }
    let mut parts = Vec::new();
    collect(e, &mut parts);
    if parts.len() < 2 {
        return None;
    }
    let mut column: Option<&Expr> = None;
    let mut values = Vec::new();
    for p in parts {
        let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = p else { return None };
        let (c, v) = match (left.as_ref(), right.as_ref()) {
            (c @ Expr::Column(_), v @ Expr::Literal(..)) | (v @ Expr::Literal(..), c @ Expr::Column(_)) => (c, v),
            _ => return None,
        };
        if column.is_some_and(|prev| prev != c) {
            return None;
        }
        column = Some(c);
        values.push(v.clone());
    }
    Some(datafusion::logical_expr::expr::InList::new(Box::new(column?.clone()), values, false))
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) => Some(c.name.clone()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => {
            let v = literal(&c.expr)?;
            v.cast_to(c.field.data_type()).ok()
        }
        _ => None,
    }
}

fn string(v: &ScalarValue) -> Option<Option<String>> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => string(inner),
        _ => None,
    }
}

fn trace_id(v: &ScalarValue) -> Option<[u8; 16]> {
    segments::parse_hex::<16>(&string(v)??)
}

fn timestamp_ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampMicrosecond(Some(x), _) => x.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000_000),
        ScalarValue::Utf8(Some(_)) | ScalarValue::LargeUtf8(Some(_)) | ScalarValue::Utf8View(Some(_)) => {
            let ts =
                v.cast_to(&arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None)).ok()?;
            timestamp_ns(&ts)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, TimeUnit};
    use datafusion::prelude::{cast, col, in_list, lit};

    #[test]
    fn exactness() {
        let trace = "0123456789abcdef0123456789abcdef";
        for e in [
            col("agent_id").eq(lit("a")),
            lit("a").eq(col("tenant")),
            in_list(col("intent"), vec![lit("refund"), lit("billing")], false),
            col("model").is_null(),
            col("status").is_not_null(),
            col("trace_id").eq(lit(trace)),
            in_list(col("trace_id"), vec![lit(trace)], false),
            col("agent_id").eq(lit("a")).or(col("agent_id").eq(lit("b"))).or(lit("c").eq(col("agent_id"))),
        ] {
            assert!(is_exact(&e), "{e}");
            // And the predicate really absorbs it.
            let p = ScanPredicate::from_filters(std::slice::from_ref(&e));
            assert!(!p.conj.is_empty(), "{e}");
        }
        for e in [
            col("agent_id").not_eq(lit("a")),
            in_list(col("intent"), vec![lit("refund")], true),
            col("content").eq(lit("x")),
            col("trace_id").eq(lit("ABC")),
            col("trace_id").eq(lit(trace.to_uppercase())),
            col("timestamp").gt(lit("2024-01-01")),
            col("agent_id").eq(lit(ScalarValue::Utf8(None))),
            col("confidence").lt(lit(0.5)),
            col("agent_id").eq(lit("a")).or(col("intent").eq(lit("b"))),
            col("agent_id").eq(lit("a")).or(col("confidence").lt(lit(0.5))),
        ] {
            assert!(!is_exact(&e), "{e}");
        }
    }

    #[test]
    fn time_bounds_only_for_pure_timestamp_filters() {
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        let cases = [
            (col("timestamp").gt_eq(ts(10)), Some((Some(10), None))),
            (col("timestamp").gt(ts(10)), Some((Some(11), None))),
            (col("timestamp").lt(ts(10)), Some((None, Some(9)))),
            (col("timestamp").lt_eq(ts(10)), Some((None, Some(10)))),
            (ts(10).lt(col("timestamp")), Some((Some(11), None))),
            (col("timestamp").eq(ts(7)), Some((Some(7), Some(7)))),
            (col("timestamp").between(ts(3), ts(9)), Some((Some(3), Some(9)))),
            (col("timestamp").gt_eq(ts(3)).and(col("timestamp").lt(ts(9))), Some((Some(3), Some(8)))),
            // Not pure bounds: other columns, negations, casts of the column, no bound at all.
            (col("timestamp").gt_eq(ts(3)).and(col("confidence").lt(lit(0.5))), None),
            (col("timestamp").not_eq(ts(3)), None),
            (col("timestamp").gt_eq(ts(3)).or(col("timestamp").lt(ts(1))), None),
            (col("timestamp").not_between(ts(3), ts(9)), None),
            (col("timestamp").gt(ts(i64::MAX)), None),
            (col("timestamp").lt(ts(i64::MIN)), None),
            (col("timestamp").gt(lit(ScalarValue::TimestampNanosecond(None, None))), None),
            (cast(col("timestamp"), DataType::Timestamp(TimeUnit::Second, None)).gt(ts(3)), None),
            (col("duration_ms").gt(lit(3.0)), None),
        ];
        for (e, want) in cases {
            assert_eq!(time_bounds(&e), want, "{e}");
        }
    }
}
