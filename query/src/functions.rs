//! SQL functions we replace in our sessions. `date_trunc` on UTC timestamps: DataFusion takes
//! its per-row calendar path (time zone lookup, chrono arithmetic) for any timestamp that
//! carries a time zone, even `UTC`. Our `timestamp` column is always UTC, so truncating to a
//! second, minute, hour, day or week is integer arithmetic. Everything else goes to the
//! built-in function unchanged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
use arrow::datatypes::{DataType, FieldRef, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// Nanoseconds in one unit of `granularity`, for the granularities that are plain arithmetic
/// in UTC; weeks are handled by [`trunc_ns`].
pub(crate) fn unit_ns(granularity: &str) -> Option<i64> {
    Some(match granularity {
        "microsecond" => 1_000,
        "millisecond" => 1_000_000,
        "second" => 1_000_000_000,
        "minute" => 60_000_000_000,
        "hour" => 3_600_000_000_000,
        "day" => NANOS_PER_DAY,
        "week" => 7 * NANOS_PER_DAY,
        _ => return None,
    })
}

/// Timestamps within this of either end of `i64` could overflow [`trunc_ns`] (the step back
/// to a unit's start, a week's 3-day shift); arrays holding one go to the built-in function.
const EDGE_NS: i64 = 8 * NANOS_PER_DAY;

/// Whether [`trunc_ns`] is exact (no overflow) for every timestamp in `lo..=hi`.
pub(crate) fn arithmetic_ok(lo: i64, hi: i64) -> bool {
    lo > i64::MIN + EDGE_NS && hi < i64::MAX - EDGE_NS
}

/// Truncate `ns` (UTC nanoseconds, inside [`arithmetic_ok`]'s range) to a multiple of `unit`;
/// weeks start on Monday (1970-01-01 was a Thursday, so Monday 1969-12-29 is 3 days before the
/// epoch).
pub(crate) fn trunc_ns(ns: i64, unit: i64) -> i64 {
    if unit == 7 * NANOS_PER_DAY {
        let shifted = ns + 3 * NANOS_PER_DAY;
        return shifted - shifted.rem_euclid(unit) - 3 * NANOS_PER_DAY;
    }
    ns - ns.rem_euclid(unit)
}

pub(crate) fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "Z" | "+00:00" | "Etc/UTC")
}

/// `date_trunc` with an arithmetic path for UTC nanosecond timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl UtcDateTrunc {
    pub fn new() -> Self {
        UtcDateTrunc { inner: datafusion::functions::datetime::date_trunc() }
    }

    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(UtcDateTrunc::new())
    }

    /// The arithmetic path, when it applies to these arguments.
    fn fast(args: &ScalarFunctionArgs) -> Option<ArrayRef> {
        let granularity = match args.args.first()? {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) | ScalarValue::LargeUtf8(Some(g)),
            ) => g.to_lowercase(),
            _ => return None,
        };
        let unit = unit_ns(&granularity)?;
        let ColumnarValue::Array(array) = args.args.get(1)? else {
            return None;
        };
        let DataType::Timestamp(TimeUnit::Nanosecond, Some(tz)) = array.data_type() else {
            return None;
        };
        if !is_utc(tz) {
            return None;
        }
        let ts = array.as_any().downcast_ref::<TimestampNanosecondArray>()?;
        // Every slot, null ones too: `unary` computes them all.
        // Every slot, null ones too: `unary` computes them all.
        let (lo, hi) = ts.values().iter().fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if !ts.is_empty() && !arithmetic_ok(lo, hi) {
            return None;
        }
        let out: TimestampNanosecondArray = ts.unary(|v| trunc_ns(v, unit));
        Some(Arc::new(out.with_timezone(tz.clone())))
    }
}

impl Default for UtcDateTrunc {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match Self::fast(&args) {
            Some(array) => Ok(ColumnarValue::Array(array)),
            None => self.inner.invoke_with_args(args),
        }
    }
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }
    fn preimage(&self, args: &[Expr], lit_expr: &Expr, info: &SimplifyContext) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }
    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }
    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }
    fn propagate_constraints(&self, interval: &Interval, inputs: &[&Interval]) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }
    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }
    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    /// The built-in function's answer for one value, through SQL on a session without our
    /// replacement.
    async fn builtin(granularity: &str, ns: i64) -> i64 {
        let ctx = SessionContext::new();
        let sql =
            format!("SELECT date_trunc('{granularity}', arrow_cast({ns}, 'Timestamp(Nanosecond, Some(\"UTC\"))'))");
        let batches = ctx.sql(&sql).await.expect("plan").collect().await.expect("run");
        let col = batches[0].column(0);
        let ts = col.as_any().downcast_ref::<TimestampNanosecondArray>().expect("timestamp");
        ts.value(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn agrees_with_the_builtin_calendar_path(
            ns in 0i64..4_000_000_000_000_000_000,
            g in prop::sample::select(vec!["microsecond", "millisecond", "second", "minute", "hour", "day", "week"]),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let want = rt.block_on(builtin(g, ns));
            let unit = unit_ns(g).expect("granularity");
            prop_assert_eq!(trunc_ns(ns, unit), want, "{} of {}", g, ns);
        }
    }

    #[test]
    fn before_the_epoch_truncation_rounds_down() {
        // DataFusion's scalar path rounds toward zero there; its array path, like ours, floors.
        assert_eq!(trunc_ns(-1, 1_000), -1_000);
        assert_eq!(trunc_ns(-1, NANOS_PER_DAY), -NANOS_PER_DAY);
        // 1969-12-31 is a Wednesday: its week began on Monday 1969-12-29.
        assert_eq!(trunc_ns(-1, 7 * NANOS_PER_DAY), -3 * NANOS_PER_DAY);
    }

    #[tokio::test]
    async fn timestamps_at_the_ends_of_i64_go_to_the_builtin() {
        let ctx = SessionContext::new();
        ctx.register_udf(UtcDateTrunc::udf());
        for g in ["hour", "week"] {
            for ns in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - NANOS_PER_DAY] {
                let sql = format!("SELECT date_trunc('{g}', arrow_cast({ns}, 'Timestamp(Nanosecond, Some(\"UTC\"))'))");
                let ours = match ctx.sql(&sql).await {
                    Ok(df) => df.collect().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let stock = match SessionContext::new().sql(&sql).await {
                    Ok(df) => df.collect().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let text = |r: Result<Vec<arrow::array::RecordBatch>, String>| {
                    r.and_then(|b| {
                        arrow::util::pretty::pretty_format_batches(&b).map(|t| t.to_string()).map_err(|e| e.to_string())
                    })
                };
                assert_eq!(text(ours), text(stock), "{g} of {ns}");
            }
        }
        assert!(arithmetic_ok(0, 0) && !arithmetic_ok(i64::MIN, 0) && !arithmetic_ok(0, i64::MAX));
    }

    #[tokio::test]
    async fn replaces_date_trunc_in_sql_and_keeps_other_zones_on_the_builtin() {
        let ctx = SessionContext::new();
        ctx.register_udf(UtcDateTrunc::udf());
        let sql = "SELECT date_trunc('hour', arrow_cast(7200000000001, 'Timestamp(Nanosecond, Some(\"UTC\"))')) AS a, \
                   date_trunc('day', arrow_cast(7200000000001, 'Timestamp(Nanosecond, Some(\"+05:00\"))')) AS b, \
                   date_trunc('month', arrow_cast(7200000000001, 'Timestamp(Nanosecond, Some(\"UTC\"))')) AS c";
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string();
        assert!(text.contains("1970-01-01T02:00:00Z"), "{text}");
        // 02:00Z is 07:00 at +05:00; the day starts at 00:00+05:00 = 1969-12-31T19:00Z.
        assert!(text.contains("1970-01-01T00:00:00+05:00"), "{text}");
        assert!(text.contains("1970-01-01T00:00:00Z"), "{text}");
    }
}
