//! Dictionary codes as group keys (ClickHouse's LowCardinality idea): when a partial aggregate
//! groups the scan's rows by dictionary-encoded string columns (agent, model, intent, ...),
//! [`GroupCodesRule`] has the scan emit those columns as `UInt32` codes instead of strings, so
//! the aggregate hashes integers instead of every row's string; trace and span ids leave it as
//! their 16 / 8 raw bytes instead of 32 / 16 hex characters. The codes are numbered per
//! query in a [`CodeBook`]: each block maps its own dictionary to the book's codes once, and
//! every row then only looks its code up. A projection right above the partial aggregate
//! turns the (few) group codes back into the strings, so the rest of the plan sees exactly the
//! schema it was planned with.

use std::fmt::{Display, Formatter};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch, StringViewBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, UInt32Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use segments::{ColumnEncoding, ColumnId};

use crate::packed::{Buckets, Half, PackKey, UnpackKey};
use crate::provider::EventsScanExec;

/// The strings of one column numbered for one query: code `k` names `values[k]`.
#[derive(Debug, Default)]
pub struct CodeBook {
    inner: Mutex<BookInner>,
}

/// Each value is allocated once and shared by the map and the list; foldhash, not SipHash
/// (a high-cardinality key such as 15,000 agents spent 11% of its query hashing with SipHash
/// and 20% in malloc and free).
#[derive(Debug, Default)]
struct BookInner {
    codes: foldhash::HashMap<Arc<str>, u32>,
    values: Vec<Arc<str>>,
}

impl CodeBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, BookInner> {
        // A panic while holding the lock leaves the book consistent (entries are added whole).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The code of each string, numbering new strings as they come (one lock for all).
    pub fn codes_for<'a>(&self, strings: impl Iterator<Item = &'a str>) -> Result<Vec<u32>> {
        let mut book = self.lock();
        strings
            .map(|s| match book.codes.get(s) {
                Some(c) => Ok(*c),
                None => {
                    let c = u32::try_from(book.values.len())
                        .map_err(|_| DataFusionError::Internal("more than 2^32 distinct group values".into()))?;
                    let value: Arc<str> = Arc::from(s);
                    book.codes.insert(value.clone(), c);
                    book.values.push(value);
                    Ok(c)
                }
            })
            .collect()
    }

    /// The strings of `codes` (nulls stay null).
    pub fn decode(&self, codes: &dyn Array) -> Result<Arc<dyn Array>> {
        let codes = codes
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| DataFusionError::Internal(format!("group codes are {}, not UInt32", codes.data_type())))?;
        let book = self.lock();
        let mut out = StringViewBuilder::with_capacity(codes.len());
        for c in codes.iter() {
            match c {
                None => out.append_null(),
                Some(c) => {
                    let s = book
                        .values
                        .get(c as usize)
                        .ok_or_else(|| DataFusionError::Internal(format!("group code {c} was never given out")))?;
                    out.append_value(s);
                }
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

/// How a group key column leaves the scan instead of as strings.
#[derive(Debug, Clone)]
pub enum KeyForm {
    /// A dictionary column as `UInt32` codes of the book.
    Codes(Arc<CodeBook>),
    /// A fixed-width id column (trace and span ids) as its raw bytes (`FixedSizeBinary`),
    /// not as hex text: half the bytes to hash and compare.
    Bytes(i32),
}

impl KeyForm {
    pub fn data_type(&self) -> DataType {
        match self {
            KeyForm::Codes(_) => DataType::UInt32,
            KeyForm::Bytes(width) => DataType::FixedSizeBinary(*width),
        }
    }

    /// The strings of a key column in this form.
    fn decode(&self, keys: &dyn Array) -> Result<Arc<dyn Array>> {
        match self {
            KeyForm::Codes(book) => book.decode(keys),
            KeyForm::Bytes(_) => {
                let ids = keys.as_fixed_size_binary_opt().ok_or_else(|| {
                    DataFusionError::Internal(format!("id keys are {}, not fixed-size binary", keys.data_type()))
                })?;
                let validity = ids.nulls().map(|n| n.iter().collect::<Vec<bool>>());
                let width = usize::try_from(ids.value_length()).unwrap_or(0);
                Ok(Arc::new(crate::schema::hex_strings(width, ids.value_data(), &validity)?))
            }
        }
    }

    fn same(&self, other: &KeyForm) -> bool {
        match (self, other) {
            (KeyForm::Codes(a), KeyForm::Codes(b)) => Arc::ptr_eq(a, b),
            (KeyForm::Bytes(a), KeyForm::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

/// The strings of a key column (a projection above the partial aggregate).
#[derive(Debug)]
pub struct DecodeCodes {
    input: Arc<dyn PhysicalExpr>,
    form: KeyForm,
    nullable: bool,
}

impl PartialEq for DecodeCodes {
    fn eq(&self, other: &Self) -> bool {
        self.input.as_ref() == other.input.as_ref() && self.form.same(&other.form)
    }
}

impl Eq for DecodeCodes {}

impl Hash for DecodeCodes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        match &self.form {
            KeyForm::Codes(book) => Arc::as_ptr(book).hash(state),
            KeyForm::Bytes(width) => width.hash(state),
        }
    }
}

impl Display for DecodeCodes {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "decode_codes({})", self.input)
    }
}

impl PhysicalExpr for DecodeCodes {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(match self.form {
            KeyForm::Codes(_) => DataType::Utf8View,
            KeyForm::Bytes(_) => DataType::Utf8,
        })
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(self.nullable)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let codes = self.input.evaluate(batch)?.into_array(batch.num_rows())?;
        Ok(ColumnarValue::Array(self.form.decode(&codes)?))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("decode_codes takes one input".into()))?;
        Ok(Arc::new(DecodeCodes { input, form: self.form.clone(), nullable: self.nullable }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "decode_codes({})", self.input)
    }
}

/// Physical optimizer rule: partial aggregates over the `events` scan that group by
/// dictionary columns group by their codes (see the module docs).
#[derive(Debug, Default)]
pub struct GroupCodesRule;

impl PhysicalOptimizerRule for GroupCodesRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        crate::replace_nodes(plan, coded_partial)
    }

    fn name(&self) -> &str {
        "group_codes"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Scan column positions `expr` reads.
fn columns_of(expr: &Arc<dyn PhysicalExpr>) -> Vec<usize> {
    let mut out = Vec::new();
    let _ = expr.apply(|e| {
        if let Some(c) = e.downcast_ref::<Column>() {
            out.push(c.index());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// The replacement for `node` if it is a partial aggregate over the scan grouping by
/// dictionary columns that nothing else in the aggregate reads.
fn coded_partial(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some((agg, scan)) = crate::partial_over_scan(node) else { return Ok(None) };
    let scan_schema = agg.input().schema();
    // Group keys that are plain dictionary or id columns, each with the form it leaves the
    // scan in.
    let mut forms: Vec<(usize, KeyForm)> = Vec::new();
    for (expr, _) in agg.group_expr().expr() {
        let Some(c) = expr.downcast_ref::<Column>() else { continue };
        let id = scan_schema.fields().get(c.index()).and_then(|f| ColumnId::from_name(f.name()));
        let form = match id.map(ColumnId::encoding) {
            Some(ColumnEncoding::Dict) => KeyForm::Codes(Arc::new(CodeBook::default())),
            Some(ColumnEncoding::Fixed(width)) => KeyForm::Bytes(i32::try_from(width).unwrap_or(i32::MAX)),
            _ => continue,
        };
        if !forms.iter().any(|(i, _)| *i == c.index()) {
            forms.push((c.index(), form));
        }
    }
    if forms.is_empty() {
        return Ok(None);
    }
    let coded = |i: usize| forms.iter().any(|(c, _)| *c == i);
    // Nothing but those keys may read the coded columns: other group expressions, aggregate
    // arguments, their ORDER BY and FILTER clauses all still see strings otherwise.
    let mut others: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for (expr, _) in agg.group_expr().expr() {
        if expr.downcast_ref::<Column>().is_none_or(|c| !coded(c.index())) {
            others.push(expr.clone());
        }
    }
    for a in agg.aggr_expr() {
        others.extend(a.expressions());
        others.extend(a.order_bys().iter().map(|s| s.expr.clone()));
    }
    others.extend(agg.filter_expr().iter().flatten().cloned());
    if others.iter().flat_map(columns_of).any(coded) {
        return Ok(None);
    }
    // A GROUP BY without aggregates whose keys are every column the scan emits only needs each
    // distinct row once: the scan may drop repeats of the previous row (compacted segments are
    // ordered by tenant and agent, so a trace's rows often follow each other).
    let group_cols: Vec<usize> =
        agg.group_expr().expr().iter().filter_map(|(e, _)| e.downcast_ref::<Column>().map(Column::index)).collect();
    let distinct_runs = agg.aggr_expr().is_empty()
        && group_cols.len() == agg.group_expr().expr().len()
        && (0..scan_schema.fields().len()).all(|i| group_cols.contains(&i));
    let Some(new_scan) = scan.with_coded_columns(&forms, distinct_runs)? else { return Ok(None) };
    let packed = packed_key(agg, scan, &forms)?;
    let group_by = match &packed {
        Some(p) => PhysicalGroupBy::new_single(vec![(p.key.clone(), PACKED_KEY.to_owned())]),
        None => agg.group_expr().clone(),
    };
    let partial = AggregateExec::try_new(
        AggregateMode::Partial,
        group_by,
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        Arc::new(new_scan),
        agg.input_schema(),
    )?
    .with_limit_options(agg.limit_options());
    let partial: Arc<dyn ExecutionPlan> = Arc::new(partial);
    // Back to strings, field for field the schema the partial aggregate had.
    let want = agg.schema();
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(want.fields().len());
    for (i, field) in want.fields().iter().enumerate() {
        if let Some(p) = &packed {
            exprs.push((p.unpacked(i, field), field.name().clone()));
            continue;
        }
        let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
        let key = agg.group_expr().expr().get(i).and_then(|(e, _)| e.downcast_ref::<Column>().map(Column::index));
        let expr = match key.and_then(|k| forms.iter().find(|(c, _)| *c == k)) {
            Some((_, form)) => Arc::new(DecodeCodes { input: col, form: form.clone(), nullable: field.is_nullable() })
                as Arc<dyn PhysicalExpr>,
            None => col,
        };
        exprs.push((expr, field.name().clone()));
    }
    let projection = ProjectionExec::try_new(exprs, partial)?;
    if projection.schema().fields() != want.fields() {
        return Ok(None);
    }
    Ok(Some(Arc::new(projection)))
}

/// The name of the packed group key column.
const PACKED_KEY: &str = "packed_key";

/// A partial aggregate's two group keys packed into one ([`crate::packed`]).
struct Packed {
    key: Arc<dyn PhysicalExpr>,
    /// The half each original group key is, in their order.
    halves: [Half; 2],
    /// The code column's form (its book).
    form: KeyForm,
}

impl Packed {
    /// The expression for field `i` of the original partial aggregate's output over the
    /// packed one: a group key unpacked (codes back to strings), or an accumulator's state,
    /// one position nearer the front.
    fn unpacked(&self, i: usize, field: &Field) -> Arc<dyn PhysicalExpr> {
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new(PACKED_KEY, 0));
        match self.halves.get(i) {
            Some(half @ Half::Code) => Arc::new(DecodeCodes {
                input: Arc::new(UnpackKey::new(key, half.clone(), true)),
                form: self.form.clone(),
                nullable: field.is_nullable(),
            }),
            Some(half) => Arc::new(UnpackKey::new(key, half.clone(), field.is_nullable())),
            None => Arc::new(Column::new(field.name(), i + 1 - self.halves.len())),
        }
    }
}

/// The packed key for `agg`'s group keys when they are exactly a column coded by `forms` and
/// a UTC `date_trunc` of `timestamp` (either order), and the scan's time bounds leave fewer
/// than `u32::MAX` buckets.
fn packed_key(agg: &AggregateExec, scan: &EventsScanExec, forms: &[(usize, KeyForm)]) -> Result<Option<Packed>> {
    let groups = agg.group_expr().expr();
    let [(first, _), (second, _)] = groups else { return Ok(None) };
    let schema = agg.input().schema();
    let code_of = |e: &Arc<dyn PhysicalExpr>| {
        let c = e.downcast_ref::<Column>()?;
        forms.iter().find(|(i, f)| *i == c.index() && matches!(f, KeyForm::Codes(_))).map(|(_, f)| (e.clone(), f))
    };
    let trunc_of = |e: &Arc<dyn PhysicalExpr>| {
        let f = e.downcast_ref::<ScalarFunctionExpr>()?;
        let [granularity, ts] = f.args() else { return None };
        let granularity = match granularity.downcast_ref::<Literal>()?.value() {
            ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) | ScalarValue::LargeUtf8(Some(g)) => {
                g.to_lowercase()
            }
            _ => return None,
        };
        let unit = crate::functions::unit_ns(&granularity)?;
        let field = schema.fields().get(ts.downcast_ref::<Column>()?.index())?;
        let out = e.data_type(&schema).ok()?;
        match field.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, Some(tz))
                if f.name() == "date_trunc"
                    && field.name() == ColumnId::Timestamp.name()
                    && crate::functions::is_utc(tz)
                    && out == *field.data_type() =>
            {
                Some((ts.clone(), unit, tz.clone()))
            }
            _ => None,
        }
    };
    let (code_first, (code, form), (ts, unit, tz)) = match (code_of(first), trunc_of(second)) {
        (Some(c), Some(t)) => (true, c, t),
        _ => match (trunc_of(first), code_of(second)) {
            (Some(t), Some(c)) => (false, c, t),
            _ => return Ok(None),
        },
    };
    let Some((lo, hi)) = scan.time_bounds().filter(|(lo, hi)| crate::functions::arithmetic_ok(*lo, *hi)) else {
        return Ok(None);
    };
    let Some(buckets) = Buckets::spanning(crate::functions::trunc_ns(lo, unit), hi, unit) else { return Ok(None) };
    let time = Half::Time { buckets, tz };
    Ok(Some(Packed {
        key: Arc::new(PackKey::new(code, ts, buckets)),
        halves: if code_first { [Half::Code, time] } else { [time, Half::Code] },
        form: form.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringViewArray, UInt32Array};

    #[test]
    fn codes_number_strings_once_and_decode_back() {
        let book = CodeBook::default();
        assert_eq!(book.codes_for(["b", "a", "b"].into_iter()).expect("codes"), vec![0, 1, 0]);
        assert_eq!(book.codes_for(["a", "c"].into_iter()).expect("codes"), vec![1, 2]);
        let codes = UInt32Array::from(vec![Some(2), None, Some(0), Some(1)]);
        let strings = book.decode(&codes).expect("decode");
        let strings = strings.as_any().downcast_ref::<StringViewArray>().expect("views");
        let got: Vec<Option<&str>> = strings.iter().collect();
        assert_eq!(got, vec![Some("c"), None, Some("b"), Some("a")]);
        assert!(book.decode(&UInt32Array::from(vec![9])).is_err(), "a code never given out");
    }
}
