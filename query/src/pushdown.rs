//! Turning DataFusion filter expressions into what the storage can use: a conjunction of
//! index terms (equality / IN / IS NULL on indexed columns, `trace_id` lookups) and a time
//! range. Anything not understood is left to DataFusion, which re-applies every filter.

use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use index::{Conjunction, IndexedColumn, Term};

/// What a scan can prune with. Time bounds are inclusive unix nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPredicate {
    pub conj: Conjunction,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
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
