//! Membership of a string column in a list of string literals (`name IN ('a', 'b')`, or the
//! key list of a hash join's dynamic filter, see [`crate::runtime`]), as the scan's row
//! filters evaluate it.
//!
//! DataFusion's IN list keeps a general static filter for strings: a hash per row, then a
//! row comparator called through the array. In a profile of a join whose filter listed 14
//! span ids, it took 68% of the query. [`StringInList`] answers the same from a foldhash set
//! of the listed bytes, with SQL's three-valued result (NULL when the value is NULL, or when
//! it is not listed and the list holds a NULL).

use std::fmt::{Display, Formatter};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{Column, InListExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

const SKETCH_WORDS: usize = 64;

/// A value's bit in the sketch: its length and first 8 bytes, multiplied and shifted to 12 bits.
fn sketch(bytes: &[u8]) -> usize {
    let head = match bytes.get(..8) {
        Some(h) => u64::from_le_bytes(h.try_into().unwrap_or_default()),
        None => bytes.iter().enumerate().fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i))),
    };
    let x = head ^ (bytes.len() as u64).rotate_left(40);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize
}

/// `input [NOT] IN (strings)` over a string column.
#[derive(Debug, Clone)]
pub struct StringInList {
    /// The IN list it replaces: its display, its equality, and the fallback for an input
    /// that is not a string array.
    original: Arc<dyn PhysicalExpr>,
    input: Arc<dyn PhysicalExpr>,
    set: foldhash::HashSet<Box<[u8]>>,
    /// Bit [`sketch`] of every listed value is set: most unlisted values are rejected by one
    /// bit test, before any hashing.
    sketch: Box<[u64; SKETCH_WORDS]>,
    list_has_null: bool,
    negated: bool,
}

impl StringInList {
    /// The replacement for `list` when it is a column against string literals only.
    fn of(list: &InListExpr, original: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<StringInList>> {
        let Some(c) = list.expr().downcast_ref::<Column>() else { return Ok(None) };
        if !matches!(c.data_type(schema)?, DataType::Utf8 | DataType::Utf8View) {
            return Ok(None);
        }
        let mut set = foldhash::HashSet::default();
        let mut sketch_bits = Box::new([0u64; SKETCH_WORDS]);
        let mut list_has_null = false;
        for v in list.list() {
            match v.downcast_ref::<Literal>().map(Literal::value) {
                Some(ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s)) => match s {
                    Some(s) => {
                        let bit = sketch(s.as_bytes());
                        sketch_bits[bit >> 6] |= 1 << (bit & 63);
                        set.insert(s.as_bytes().into());
                    }
                    None => list_has_null = true,
                },
                _ => return Ok(None),
            }
        }
        Ok(Some(StringInList {
            original: Arc::clone(original),
            input: Arc::clone(list.expr()),
            set,
            sketch: sketch_bits,
            list_has_null,
            negated: list.negated(),
        }))
    }

    fn contains(&self, value: &[u8]) -> bool {
        let bit = sketch(value);
        self.sketch[bit >> 6] & (1 << (bit & 63)) != 0 && self.set.contains(value)
    }

    /// The answer for `len` values, `listed(i)` telling whether value `i` is in the list,
    /// `nulls` the input's nulls.
    fn answer(&self, len: usize, nulls: Option<&NullBuffer>, listed: impl Fn(usize) -> bool) -> BooleanArray {
        let found = BooleanBuffer::collect_bool(len, listed);
        // Unlisted values are NULL, not false, when the list holds a NULL.
        let valid = match (nulls, self.list_has_null) {
            (n, false) => n.cloned(),
            (None, true) => Some(NullBuffer::new(found.clone())),
            (Some(n), true) => Some(NullBuffer::new(n.inner() & &found)),
        };
        let values = if self.negated { !&found } else { found };
        BooleanArray::new(values, valid)
    }
}

impl PartialEq for StringInList {
    fn eq(&self, other: &Self) -> bool {
        self.original.as_ref() == other.original.as_ref()
    }
}

impl Eq for StringInList {}

impl Hash for StringInList {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.original.hash(state);
    }
}

impl Display for StringInList {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.original)
    }
}

impl PhysicalExpr for StringInList {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.original.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.input.evaluate(batch)?.into_array(batch.num_rows())?;
        let len = array.len();
        let answer = if let Some(s) = array.as_string_opt::<i32>() {
            self.answer(len, s.nulls(), |i| self.contains(s.value(i).as_bytes()))
        } else if let Some(s) = array.as_string_view_opt() {
            self.answer(len, s.nulls(), |i| self.contains(s.value(i).as_bytes()))
        } else {
            return self.original.evaluate(batch);
        };
        Ok(ColumnarValue::Array(Arc::new(answer)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a string IN list takes one input".into()))?;
        // The original's children are its input, then its literals.
        let mut inner: Vec<Arc<dyn PhysicalExpr>> = self.original.children().into_iter().cloned().collect();
        if let Some(first) = inner.first_mut() {
            *first = Arc::clone(&input);
        }
        let original = Arc::clone(&self.original).with_new_children(inner)?;
        Ok(Arc::new(StringInList { original, input, ..self.as_ref().clone() }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        self.original.fmt_sql(f)
    }
}

/// `expr` with every IN list of a string column against string literals replaced by a
/// [`StringInList`]; everything else as it was.
pub fn with_string_sets(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| {
        let Some(list) = e.downcast_ref::<InListExpr>() else { return Ok(Transformed::no(e)) };
        Ok(match StringInList::of(list, &e, schema)? {
            Some(s) => Transformed::yes(Arc::new(s) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, StringViewArray};
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::lit;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            "[ab]{1,3}".prop_map(Some),
            "[0-9a-f]{16}".prop_map(Some),
            ".{0,5}".prop_map(Some),
        ]
    }

    proptest! {
        /// The same answers as DataFusion's IN list, NULLs in the column and in the list
        /// included, negated or not, over both string layouts.
        #[test]
        fn answers_as_datafusion_does(
            values in proptest::collection::vec(word(), 0..100),
            list in proptest::collection::vec(word(), 1..12),
            negated: bool,
            view: bool,
        ) {
            let (dt, array): (DataType, Arc<dyn Array>) = if view {
                (DataType::Utf8View, Arc::new(StringViewArray::from(values.clone())))
            } else {
                (DataType::Utf8, Arc::new(StringArray::from(values.clone())))
            };
            let schema = Schema::new(vec![Field::new("x", dt, true)]);
            let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![array]).expect("batch");
            // The literals have the column's type, as the planner casts them.
            let literals = list
                .iter()
                .map(|v| lit(if view { ScalarValue::Utf8View(v.clone()) } else { ScalarValue::Utf8(v.clone()) }))
                .collect();
            let stock: Arc<dyn PhysicalExpr> = Arc::new(
                InListExpr::try_new(Arc::new(Column::new("x", 0)), literals, negated, &schema).expect("list"),
            );
            let fast = with_string_sets(stock.clone(), &schema).expect("rewrite");
            prop_assert!(fast.downcast_ref::<StringInList>().is_some(), "{} was not replaced", stock);
            let want = stock.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())).expect("stock");
            let got = fast.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())).expect("fast");
            prop_assert_eq!(got.as_boolean(), want.as_boolean(), "{}", stock);
        }
    }

    #[test]
    fn other_lists_stay_as_they_were_and_children_are_rewritable() {
        let schema = Schema::new(vec![Field::new("x", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]);
        let x: Arc<dyn PhysicalExpr> = Arc::new(Column::new("x", 0));
        let n: Arc<dyn PhysicalExpr> = Arc::new(Column::new("n", 1));
        let ints: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new(n, vec![lit(1i64), lit(2i64)], false, &schema).expect("list"));
        assert!(with_string_sets(ints.clone(), &schema).expect("rewrite").downcast_ref::<InListExpr>().is_some());
        let strings: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new(x.clone(), vec![lit("a"), lit("b")], false, &schema).expect("list"));
        let fast = with_string_sets(strings.clone(), &schema).expect("rewrite");
        assert_eq!(fast.to_string(), strings.to_string());
        // Its column moved to another position (as a plan rewrite would do it).
        let moved = Arc::clone(&fast).with_new_children(vec![Arc::new(Column::new("x", 1))]).expect("children");
        assert_eq!(moved.to_string(), "x@1 IN (SET) ([a, b])");
        let other = Schema::new(vec![Field::new("n", DataType::Int64, true), Field::new("x", DataType::Utf8, true)]);
        let batch = RecordBatch::try_new(
            Arc::new(other),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec!["b", "c"]))],
        )
        .expect("batch");
        let got = moved.evaluate(&batch).and_then(|v| v.into_array(2)).expect("evaluate");
        assert_eq!(got.as_boolean(), &BooleanArray::from(vec![true, false]));
    }
}
