//! Two group keys packed into one `UInt64`: a dictionary column's codes and a UTC
//! `date_trunc` of `timestamp`, the shape of the usual dashboard query (error rate per agent
//! per hour, tokens per model per day). DataFusion hashes a single primitive key with its
//! primitive group table; two keys take its general multi-column table, which costs about
//! twice as much per row. The code goes in the high 32 bits, the time bucket (its distance
//! from the scan's first bucket, in units, computed from the raw timestamp with the one
//! division `date_trunc` itself would make) in the low 32; `u32::MAX` in either half stands
//! for NULL. [`crate::codes::GroupCodesRule`] plans the packing when the scan's time bounds leave
//! fewer than `u32::MAX` buckets, and unpacks the (few) groups right above the partial
//! aggregate.

use std::fmt::{Display, Formatter};
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, AsArray, PrimitiveArray, RecordBatch, TimestampNanosecondArray, UInt32Array, UInt64Array};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampNanosecondType, UInt32Type, UInt64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;

/// The half-key that stands for NULL.
const NULL_HALF: u32 = u32::MAX;

/// Where a time bucket's packed number comes from: `(timestamp - base) / unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buckets {
    /// The start of the first bucket (a truncated timestamp, UTC nanoseconds): buckets start
    /// every `unit` from it, as `date_trunc`'s do.
    pub base: i64,
    /// Nanoseconds per bucket.
    pub unit: i64,
}

impl Buckets {
    /// The buckets from the one starting at `base` to the one holding `hi`, when they number
    /// fewer than `u32::MAX`.
    pub fn spanning(base: i64, hi: i64, unit: i64) -> Option<Buckets> {
        if unit <= 0 || base > hi {
            return None;
        }
        let count = (i128::from(hi) - i128::from(base)) / i128::from(unit);
        (count < i128::from(NULL_HALF)).then_some(Buckets { base, unit })
    }

    /// The bucket of raw timestamp `ts`.
    fn number(&self, ts: i64) -> Result<u32> {
        ts.checked_sub(self.base)
            .and_then(|d| u64::try_from(d).ok())
            .and_then(|d| u32::try_from(d / self.unit as u64).ok())
            .filter(|b| *b != NULL_HALF)
            .ok_or_else(|| DataFusionError::Internal(format!("timestamp {ts} outside the scan's planned time bounds")))
    }

    fn start(&self, number: u32) -> i64 {
        self.base + i64::from(number) * self.unit
    }
}

/// `(code << 32) | bucket` of a `UInt32` code expression and a (raw) timestamp expression.
#[derive(Debug, Clone)]
pub struct PackKey {
    code: Arc<dyn PhysicalExpr>,
    time: Arc<dyn PhysicalExpr>,
    buckets: Buckets,
}

impl PartialEq for PackKey {
    fn eq(&self, other: &Self) -> bool {
        self.code.as_ref() == other.code.as_ref()
            && self.time.as_ref() == other.time.as_ref()
            && self.buckets == other.buckets
    }
}

impl Eq for PackKey {}

impl Hash for PackKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.code.hash(state);
        self.time.hash(state);
        self.buckets.hash(state);
    }
}

impl PackKey {
    pub fn new(code: Arc<dyn PhysicalExpr>, time: Arc<dyn PhysicalExpr>, buckets: Buckets) -> Self {
        PackKey { code, time, buckets }
    }
}

/// Pack codes and the buckets of timestamps row by row.
pub fn pack(codes: &UInt32Array, times: &TimestampNanosecondArray, buckets: Buckets) -> Result<UInt64Array> {
    if codes.len() != times.len() {
        return Err(DataFusionError::Internal("packed key halves of different lengths".into()));
    }
    let mut out = Vec::with_capacity(codes.len());
    for (c, t) in codes.iter().zip(times.iter()) {
        if c == Some(NULL_HALF) {
            return Err(DataFusionError::Internal("a group code collides with the NULL half-key".into()));
        }
        let high = c.unwrap_or(NULL_HALF);
        let low = match t {
            Some(t) => buckets.number(t)?,
            None => NULL_HALF,
        };
        out.push((u64::from(high) << 32) | u64::from(low));
    }
    Ok(UInt64Array::from(out))
}

impl Display for PackKey {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "pack_key({}, {})", self.code, self.time)
    }
}

impl PhysicalExpr for PackKey {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let n = batch.num_rows();
        let codes = self.code.evaluate(batch)?.into_array(n)?;
        let times = self.time.evaluate(batch)?.into_array(n)?;
        let codes = codes
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| DataFusionError::Internal(format!("packed codes are {}", codes.data_type())))?;
        let times = times
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(|| DataFusionError::Internal(format!("packed times are {}", times.data_type())))?;
        Ok(ColumnarValue::Array(Arc::new(pack(codes, times, self.buckets)?)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.code, &self.time]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [code, time] =
            <[_; 2]>::try_from(children).map_err(|_| DataFusionError::Internal("pack_key takes two inputs".into()))?;
        Ok(Arc::new(PackKey { code, time, buckets: self.buckets }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Which half of a packed key to take back out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Half {
    /// The codes, as `UInt32`.
    Code,
    /// The truncated timestamps, in time zone `tz`.
    Time { buckets: Buckets, tz: Arc<str> },
}

/// One half of a packed key column, NULL where the half is [`NULL_HALF`].
#[derive(Debug, Clone)]
pub struct UnpackKey {
    input: Arc<dyn PhysicalExpr>,
    half: Half,
    nullable: bool,
}

impl PartialEq for UnpackKey {
    fn eq(&self, other: &Self) -> bool {
        self.input.as_ref() == other.input.as_ref() && self.half == other.half && self.nullable == other.nullable
    }
}

impl Eq for UnpackKey {}

impl Hash for UnpackKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.half.hash(state);
        self.nullable.hash(state);
    }
}

impl UnpackKey {
    pub fn new(input: Arc<dyn PhysicalExpr>, half: Half, nullable: bool) -> Self {
        UnpackKey { input, half, nullable }
    }
}

/// The `half` of packed `keys`.
pub fn unpack(keys: &UInt64Array, half: &Half) -> Arc<dyn Array> {
    let part = |k: u64| match half {
        Half::Code => (k >> 32) as u32,
        Half::Time { .. } => k as u32,
    };
    let nulls = NullBuffer::from_iter(keys.values().iter().map(|k| part(*k) != NULL_HALF));
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    match half {
        Half::Code => {
            Arc::new(PrimitiveArray::<UInt32Type>::new(keys.values().iter().map(|k| part(*k)).collect(), nulls))
        }
        Half::Time { buckets, tz } => Arc::new(
            PrimitiveArray::<TimestampNanosecondType>::new(
                keys.values().iter().map(|k| buckets.start(part(*k) % NULL_HALF)).collect(),
                nulls,
            )
            .with_timezone(tz.as_ref()),
        ),
    }
}

impl Display for UnpackKey {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        let half = match self.half {
            Half::Code => "code",
            Half::Time { .. } => "time",
        };
        write!(f, "unpack_{half}({})", self.input)
    }
}

impl PhysicalExpr for UnpackKey {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(match &self.half {
            Half::Code => DataType::UInt32,
            Half::Time { tz, .. } => DataType::Timestamp(TimeUnit::Nanosecond, Some(tz.clone())),
        })
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(self.nullable)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let keys = self.input.evaluate(batch)?.into_array(batch.num_rows())?;
        let keys = keys
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| DataFusionError::Internal(format!("packed keys are {}", keys.data_type())))?;
        Ok(ColumnarValue::Array(unpack(keys, &self.half)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("unpacking a key takes one input".into()))?;
        Ok(Arc::new(UnpackKey { input, half: self.half.clone(), nullable: self.nullable }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Packing then unpacking gives back the codes and `date_trunc` of the timestamps,
        /// nulls included, for any bounds that qualify.
        #[test]
        fn unpack_inverts_pack(
            rows in proptest::collection::vec(
                (proptest::option::of(0u32..NULL_HALF), proptest::option::of(0i64..5000 * 604_800_000_000_000)),
                0..200,
            ),
            lo in -1_000_000_000_000_000_000i64..1_000_000_000_000_000_000,
            granularity in prop_oneof![Just("microsecond"), Just("second"), Just("hour"), Just("day"), Just("week")],
        ) {
            let unit = crate::functions::unit_ns(granularity).expect("unit");
            // Timestamps from `lo` on, within 5000 units.
            let times: Vec<Option<i64>> = rows.iter().map(|r| r.1.map(|d| lo + d % (5000 * unit))).collect();
            let base = crate::functions::trunc_ns(lo, unit);
            let hi = times.iter().flatten().copied().max().unwrap_or(lo);
            let buckets = Buckets::spanning(base, hi, unit).expect("5000 buckets fit");
            let codes = UInt32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
            let keys = pack(&codes, &TimestampNanosecondArray::from(times.clone()), buckets).expect("pack");
            prop_assert_eq!(keys.null_count(), 0);
            let back = unpack(&keys, &Half::Code);
            prop_assert_eq!(back.as_primitive::<UInt32Type>(), &codes);
            let back = unpack(&keys, &Half::Time { buckets, tz: "UTC".into() });
            let want = TimestampNanosecondArray::from(
                times.iter().map(|t| t.map(|t| crate::functions::trunc_ns(t, unit))).collect::<Vec<_>>(),
            )
            .with_timezone("UTC");
            prop_assert_eq!(back.as_primitive::<TimestampNanosecondType>(), &want);
            // Rows with the same code and truncated time, and only those, share a key.
            let groups: std::collections::HashSet<_> = codes.iter().zip(want.iter()).collect();
            let distinct_keys: std::collections::HashSet<_> = keys.values().iter().collect();
            prop_assert_eq!(groups.len(), distinct_keys.len());
        }
    }

    #[test]
    fn bounds_that_do_not_fit_are_refused() {
        assert!(Buckets::spanning(0, i64::from(u32::MAX - 1) * 1_000, 1_000).is_some());
        assert!(Buckets::spanning(0, i64::from(u32::MAX) * 1_000, 1_000).is_none());
        assert!(Buckets::spanning(i64::MIN, i64::MAX, 1).is_none());
        assert!(Buckets::spanning(10, 0, 1).is_none());
        // A timestamp outside the planned bounds is an error, not a wrong group.
        let b = Buckets::spanning(0, 10_000, 1_000).expect("fits");
        let times = TimestampNanosecondArray::from(vec![-1_000]);
        assert!(pack(&UInt32Array::from(vec![1]), &times, b).is_err());
        assert!(pack(&UInt32Array::from(vec![NULL_HALF]), &TimestampNanosecondArray::from(vec![0]), b).is_err());
    }
}
