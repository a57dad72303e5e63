//! Comparisons of a float column with a float literal, as the scan's row filters evaluate them
//! (`confidence < 0.7`, `duration_ms >= 1000`).
//!
//! DataFusion's comparison kernel first scans a float array for `-0.0` (SQL says
//! `-0.0 = 0.0`; Arrow's total order does not), rewriting the array when it finds one, then
//! compares: two passes, the first a branch per value. In a profile of `confidence < 0.5`
//! grouped by intent, that scan took more time than the comparison itself. [`FloatCompare`]
//! does both in one branch-free pass with the same answers: zeros made equal, then IEEE 754
//! total order (NaN above every number and equal to itself, as in DataFusion).

use std::fmt::{Display, Formatter};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::{DataType, Float64Type, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// The comparisons [`FloatCompare`] evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatOp {
    Lt,
    LtEq,
    Gt,
    GtEq,
    Eq,
    NotEq,
}

impl FloatOp {
    fn of(op: Operator) -> Option<FloatOp> {
        Some(match op {
            Operator::Lt => FloatOp::Lt,
            Operator::LtEq => FloatOp::LtEq,
            Operator::Gt => FloatOp::Gt,
            Operator::GtEq => FloatOp::GtEq,
            Operator::Eq => FloatOp::Eq,
            Operator::NotEq => FloatOp::NotEq,
            _ => return None,
        })
    }

    /// The operator with its sides swapped: `lit < col` is `col > lit`.
    fn swapped(self) -> FloatOp {
        match self {
            FloatOp::Lt => FloatOp::Gt,
            FloatOp::LtEq => FloatOp::GtEq,
            FloatOp::Gt => FloatOp::Lt,
            FloatOp::GtEq => FloatOp::LtEq,
            same => same,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            FloatOp::Lt => "<",
            FloatOp::LtEq => "<=",
            FloatOp::Gt => ">",
            FloatOp::GtEq => ">=",
            FloatOp::Eq => "=",
            FloatOp::NotEq => "!=",
        }
    }
}

/// The integer whose order is the comparison order of `v`: `-0.0` as `0.0`, then the bit
/// trick of `f64::total_cmp`.
pub fn order_key(v: f64) -> i64 {
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// `input <op> literal` over a Float64 input (a column, as the rewrite makes it), in one pass.
#[derive(Debug, Clone)]
pub struct FloatCompare {
    input: Arc<dyn PhysicalExpr>,
    op: FloatOp,
    /// The literal's bits (f64 is neither `Eq` nor `Hash`).
    literal: u64,
}

impl FloatCompare {
    pub fn new(input: Arc<dyn PhysicalExpr>, op: FloatOp, literal: f64) -> Self {
        FloatCompare { input, op, literal: literal.to_bits() }
    }

    fn literal(&self) -> f64 {
        f64::from_bits(self.literal)
    }

    /// The comparison on `values` (nulls kept as nulls).
    ///
    /// For a number literal, a chunk of 64 values without a NaN is compared the IEEE 754 way,
    /// which is the same order there (`-0.0 = 0.0` in both) and a loop the compiler
    /// vectorizes; a chunk holding a NaN, and a NaN literal, take the total order.
    pub fn compare(&self, values: &arrow::array::Float64Array) -> BooleanArray {
        let lit = self.literal();
        let k = order_key(lit);
        let v = values.values();
        let words = match (self.op, lit.is_nan()) {
            (_, true) => pack(v, |x| self.op.holds(order_key(x), k), |_| false, |_| false),
            (FloatOp::Lt, false) => pack(v, |x| x < lit, |x| order_key(x) < k, f64::is_nan),
            (FloatOp::LtEq, false) => pack(v, |x| x <= lit, |x| order_key(x) <= k, f64::is_nan),
            (FloatOp::Gt, false) => pack(v, |x| x > lit, |x| order_key(x) > k, f64::is_nan),
            (FloatOp::GtEq, false) => pack(v, |x| x >= lit, |x| order_key(x) >= k, f64::is_nan),
            (FloatOp::Eq, false) => pack(v, |x| x == lit, |x| order_key(x) == k, f64::is_nan),
            (FloatOp::NotEq, false) => pack(v, |x| x != lit, |x| order_key(x) != k, f64::is_nan),
        };
        let bits = BooleanBuffer::new(Buffer::from_vec(words), 0, v.len());
        BooleanArray::new(bits, values.nulls().cloned())
    }
}

impl FloatOp {
    /// `a <op> b` on order keys.
    fn holds(self, a: i64, b: i64) -> bool {
        match self {
            FloatOp::Lt => a < b,
            FloatOp::LtEq => a <= b,
            FloatOp::Gt => a > b,
            FloatOp::GtEq => a >= b,
            FloatOp::Eq => a == b,
            FloatOp::NotEq => a != b,
        }
    }
}

/// `v` as bits packed 64 to a word (least significant first): `fast` decides a chunk unless
/// `slow_here` holds for one of its values, then `exact` decides that chunk. The closures are
/// monomorphised, so each loop compiles to straight-line code.
fn pack(
    v: &[f64],
    fast: impl Fn(f64) -> bool,
    exact: impl Fn(f64) -> bool,
    slow_here: impl Fn(f64) -> bool,
) -> Vec<u64> {
    let word = |chunk: &[f64]| {
        let mut bits = 0u64;
        let mut slow = false;
        for (j, x) in chunk.iter().enumerate() {
            bits |= u64::from(fast(*x)) << j;
            slow |= slow_here(*x);
        }
        if slow {
            bits = 0;
            for (j, x) in chunk.iter().enumerate() {
                bits |= u64::from(exact(*x)) << j;
            }
        }
        bits
    };
    let chunks = v.chunks_exact(64);
    let rest = chunks.remainder();
    let mut words = Vec::with_capacity(v.len().div_ceil(64));
    words.extend(chunks.map(word));
    if !rest.is_empty() {
        words.push(word(rest));
    }
    words
}

impl PartialEq for FloatCompare {
    fn eq(&self, other: &Self) -> bool {
        self.input.as_ref() == other.input.as_ref() && self.op == other.op && self.literal == other.literal
    }
}

impl Eq for FloatCompare {}

impl std::hash::Hash for FloatCompare {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.op.hash(state);
        self.literal.hash(state);
    }
}

impl Display for FloatCompare {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.input, self.op.symbol(), self.literal())
    }
}

impl PhysicalExpr for FloatCompare {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.input.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.input.evaluate(batch)?.into_array(batch.num_rows())?;
        let values = array.as_primitive_opt::<Float64Type>().ok_or_else(|| {
            DataFusionError::Internal(format!("{} is {}, not Float64", self.input, array.data_type()))
        })?;
        Ok(ColumnarValue::Array(Arc::new(self.compare(values))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a float comparison takes one input".into()))?;
        Ok(Arc::new(FloatCompare { input, op: self.op, literal: self.literal }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// `expr` with every comparison of a Float64 column and a non-null Float64 literal (either
/// side) replaced by a [`FloatCompare`]; everything else as it was.
pub fn with_float_compares(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else { return Ok(Transformed::no(e)) };
        let Some(op) = FloatOp::of(*b.op()) else { return Ok(Transformed::no(e)) };
        let as_column = |x: &Arc<dyn PhysicalExpr>| -> Result<Option<Arc<dyn PhysicalExpr>>> {
            let Some(c) = x.downcast_ref::<Column>() else { return Ok(None) };
            Ok((c.data_type(schema)? == DataType::Float64).then(|| Arc::clone(x)))
        };
        let as_literal = |x: &Arc<dyn PhysicalExpr>| match x.downcast_ref::<Literal>().map(Literal::value) {
            Some(ScalarValue::Float64(Some(v))) => Some(*v),
            _ => None,
        };
        let replaced = match (as_column(b.left())?, as_literal(b.right()), as_literal(b.left()), as_column(b.right())?)
        {
            (Some(c), Some(v), _, _) => Some(FloatCompare::new(c, op, v)),
            (_, _, Some(v), Some(c)) => Some(FloatCompare::new(c, op.swapped(), v)),
            _ => None,
        };
        Ok(match replaced {
            Some(f) => Transformed::yes(Arc::new(f) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::lit;
    use proptest::prelude::*;

    fn special() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(0.0)),
            Just(Some(-0.0)),
            Just(Some(f64::NAN)),
            Just(Some(-f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            Just(Some(0.5)),
            (-2.0f64..2.0).prop_map(Some),
            any::<f64>().prop_map(Some),
        ]
    }

    const OPS: [Operator; 6] =
        [Operator::Lt, Operator::LtEq, Operator::Gt, Operator::GtEq, Operator::Eq, Operator::NotEq];

    proptest! {
        /// Same answers as DataFusion's own comparison, zeros, NaNs, infinities and nulls
        /// included, with the literal on either side.
        #[test]
        fn answers_as_datafusion_does(
            values in proptest::collection::vec(special(), 0..200),
            literal in special().prop_filter("a literal", Option::is_some),
            op in 0usize..6,
            literal_left: bool,
        ) {
            let schema = Schema::new(vec![Field::new("x", DataType::Float64, true)]);
            let batch = RecordBatch::try_new(
                Arc::new(schema.clone()),
                vec![Arc::new(Float64Array::from(values))],
            ).expect("batch");
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new("x", 0));
            let l = lit(ScalarValue::Float64(literal));
            let (left, right) = if literal_left { (l, column) } else { (column, l) };
            let stock: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(left, OPS[op], right));
            let fast = with_float_compares(stock.clone(), &schema).expect("rewrite");
            prop_assert!(fast.downcast_ref::<FloatCompare>().is_some(), "{} was not replaced", stock);
            let want = stock.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())).expect("stock");
            let got = fast.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())).expect("fast");
            prop_assert_eq!(got.as_boolean(), want.as_boolean(), "{}", stock);
        }
    }

    #[test]
    fn other_comparisons_stay_as_they_were() {
        let schema =
            Schema::new(vec![Field::new("x", DataType::Float64, true), Field::new("n", DataType::Int64, true)]);
        let x: Arc<dyn PhysicalExpr> = Arc::new(Column::new("x", 0));
        let n: Arc<dyn PhysicalExpr> = Arc::new(Column::new("n", 1));
        for e in [
            // An integer column, a null literal, two columns, an arithmetic operator.
            Arc::new(BinaryExpr::new(n.clone(), Operator::Lt, lit(ScalarValue::Int64(Some(3)))))
                as Arc<dyn PhysicalExpr>,
            Arc::new(BinaryExpr::new(x.clone(), Operator::Lt, lit(ScalarValue::Float64(None)))),
            Arc::new(BinaryExpr::new(x.clone(), Operator::Lt, x.clone())),
            Arc::new(BinaryExpr::new(x.clone(), Operator::Plus, lit(ScalarValue::Float64(Some(1.0))))),
        ] {
            let out = with_float_compares(e.clone(), &schema).expect("rewrite");
            assert_eq!(out.to_string(), e.to_string());
        }
        // Inside a conjunction, each comparison is replaced.
        let both: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(x.clone(), Operator::Lt, lit(ScalarValue::Float64(Some(0.7))))),
            Operator::And,
            Arc::new(BinaryExpr::new(n, Operator::Gt, lit(ScalarValue::Int64(Some(1))))),
        ));
        let out = with_float_compares(both, &schema).expect("rewrite");
        assert_eq!(out.to_string(), "x@0 < 0.7 AND n@1 > 1");
        // Its column is a child, so plan rewrites reach it.
        let fc = Arc::clone(out.children()[0]);
        assert!(fc.downcast_ref::<FloatCompare>().is_some());
        assert_eq!(fc.children().len(), 1);
        let same = Arc::clone(&fc).with_new_children(vec![x]).expect("children");
        assert!(same.as_ref() == fc.as_ref());
    }
}
