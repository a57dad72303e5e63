//! The SQL shape of the `events` table (fixed by the contract) and conversion of decoded
//! segment columns into Arrow arrays.

use std::sync::Arc;

use arrow::array::{
    make_view, ArrayRef, Float64Array, Int64Array, MapArray, StringArray, StringViewArray, StructArray,
    TimestampNanosecondArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use segments::{ColumnData, ColumnEncoding, ColumnId, DictColumn, StrColumn};

fn map_entries() -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    )
}

/// Arrow type and nullability of a stored column. Low-cardinality (dictionary-encoded)
/// strings are `Utf8View`: a block's rows become 16-byte views of its dictionary (values up to
/// 12 bytes inline), so no string bytes are copied per row, and DataFusion groups and compares
/// them on its view fast paths. Free text and ids are `Utf8`.
pub fn field_of(id: ColumnId) -> Field {
    use ColumnId::*;
    let nullable = !matches!(id, Tenant | TraceId | SpanId | AgentId | Timestamp | Kind | Status);
    let dt = match id {
        Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Confidence | DurationMs | CostUsd => DataType::Float64,
        InputTokens | OutputTokens => DataType::Int64,
        Attributes => DataType::Map(Arc::new(map_entries()), false),
        _ if id.encoding() == ColumnEncoding::Dict => DataType::Utf8View,
        _ => DataType::Utf8,
    };
    Field::new(id.name(), dt, nullable)
}

/// Schema of the `events` table: the contract's columns in order (no `timestamp_ns`).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(ColumnId::ALL.iter().map(|c| field_of(*c)).collect::<Vec<_>>()))
}

fn nulls(validity: &Option<Vec<bool>>) -> Option<NullBuffer> {
    // `collect_bool` packs 64 flags per word; `From<&[bool]>` goes bit by bit.
    validity.as_deref().map(|v| NullBuffer::new(BooleanBuffer::collect_bool(v.len(), |i| v[i])))
}

/// A string array of `s`, checked as `StringArray::try_new` checks it (offsets ascending from
/// within the data, the data UTF-8, every offset on a character boundary, one validity flag
/// per row) but with simdutf8, which is several times faster than the standard library's
/// check on text that is not all ASCII: content in Japanese or with emoji spent half a scan
/// validating.
pub(crate) fn strings(s: StrColumn) -> Result<StringArray, ArrowError> {
    let bad = |what: &str| ArrowError::InvalidArgumentError(format!("string column: {what}"));
    let StrColumn { mut offsets, data, validity } = s;
    if offsets.is_empty() {
        offsets.push(0);
    }
    let rows = offsets.len() - 1;
    if validity.as_ref().is_some_and(|v| v.len() != rows) {
        return Err(bad("validity length differs from the row count"));
    }
    if offsets.first().is_some_and(|o| *o < 0) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(bad("offsets not ascending from zero"));
    }
    if offsets.last().is_some_and(|o| *o as usize > data.len()) {
        return Err(bad("offsets past the end of the data"));
    }
    let text = simdutf8::basic::from_utf8(&data).map_err(|_| bad("data is not UTF-8"))?;
    if !offsets.iter().all(|o| text.is_char_boundary(*o as usize)) {
        return Err(bad("an offset splits a UTF-8 character"));
    }
    let nulls = nulls(&validity);
    // SAFETY: the checks above are those of `StringArray::try_new` (`GenericByteArray::try_new`
    // and `ByteArrayType::validate` in arrow-array 59): offsets non-negative and ascending
    // (what `OffsetBuffer::new` asserts), the last within `data`, `data` valid UTF-8, each
    // offset a character boundary, and a null buffer of exactly one flag per row. So the
    // unchecked constructor builds the same array `try_new` would. Tested against `try_new`
    // on arbitrary bytes, offsets and validity by `strings_accepts_what_try_new_accepts`.
    #[allow(unsafe_code)]
    let array = unsafe {
        StringArray::new_unchecked(
            OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
            Buffer::from_vec(data),
            nulls,
        )
    };
    Ok(array)
}

/// Rows of a dictionary column as views of its dictionary: the dictionary bytes become the
/// array's one data buffer, and each row's view is copied from its value's view.
fn dict_views(d: DictColumn) -> Result<StringViewArray, ArrowError> {
    let DictColumn { dict, codes } = d;
    let corrupt = |what: &str| ArrowError::InvalidArgumentError(format!("dictionary column: {what}"));
    let text = std::str::from_utf8(&dict.data).map_err(|_| corrupt("values are not UTF-8"))?;
    if dict.data.len() > u32::MAX as usize {
        return Err(corrupt("values larger than 4 GiB"));
    }
    // Index 0 is the null view; value k (1-based) is views[k].
    let mut value_views = Vec::with_capacity(dict.offsets.len());
    value_views.push(0u128);
    for w in dict.offsets.windows(2) {
        let (s, e) = (w[0] as usize, w[1] as usize);
        if s > e || e > text.len() || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            return Err(corrupt("value offsets out of order or inside a character"));
        }
        value_views.push(make_view(&dict.data[s..e], 0, s as u32));
    }
    let mut any_null = false;
    let mut views = Vec::with_capacity(codes.len());
    for &c in &codes {
        any_null |= c == 0;
        views.push(*value_views.get(c as usize).ok_or_else(|| corrupt("code out of range"))?);
    }
    let nulls = any_null.then(|| NullBuffer::new(BooleanBuffer::collect_bool(codes.len(), |i| codes[i] != 0)));
    // SAFETY: every view is either 0 (a null row, marked in `nulls`) or was made by
    // `make_view` from `dict.data[s..e]`, which lies inside the one buffer passed here
    // (buffer 0, checked above to be in bounds) and is valid UTF-8 because the whole buffer
    // was checked with `from_utf8` and `s`, `e` are character boundaries; so `try_new`'s
    // per-row validation would pass. Tested by `dict_views_match_strings` below.
    #[allow(unsafe_code)]
    let array = unsafe {
        StringViewArray::new_unchecked(
            arrow::buffer::ScalarBuffer::from(views),
            vec![Buffer::from_vec(dict.data)],
            nulls,
        )
    };
    Ok(array)
}

/// Two lowercase hex digits of every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

/// Fixed-width ids as lowercase hex strings (null rows empty). Every id becomes exactly
/// `2 * width` bytes, written a byte pair at a time into a buffer sized up front.
pub(crate) fn hex_strings(width: usize, bytes: &[u8], validity: &Option<Vec<bool>>) -> Result<StringArray, ArrowError> {
    let width = width.max(1);
    let n = bytes.len() / width;
    let mut offsets = Vec::with_capacity(n + 1);
    let mut data;
    match validity {
        None => {
            data = vec![0u8; n * width * 2];
            for (src, dst) in bytes.iter().zip(data.chunks_exact_mut(2)) {
                dst.copy_from_slice(&HEX_PAIRS[*src as usize]);
            }
            offsets.extend((0..=n).map(|i| (i * width * 2) as i32));
        }
        Some(valid) => {
            data = Vec::with_capacity(n * width * 2);
            offsets.push(0i32);
            for (id, ok) in bytes.chunks_exact(width).zip(valid) {
                if *ok {
                    for b in id {
                        data.extend_from_slice(&HEX_PAIRS[*b as usize]);
                    }
                }
                offsets.push(data.len() as i32);
            }
        }
    }
    StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(data), nulls(validity))
}

/// Convert one decoded column into its Arrow array.
pub fn to_arrow(id: ColumnId, data: ColumnData) -> Result<ArrayRef, ArrowError> {
    Ok(match data {
        ColumnData::Dict(d) if id.encoding() == ColumnEncoding::Dict => Arc::new(dict_views(d)?),
        ColumnData::Dict(d) => Arc::new(strings(d.to_strings())?),
        // In-memory rows of a dictionary column: each row is its own dictionary entry, so the
        // views point into the column's one buffer (no per-row copy).
        ColumnData::Str(s) if id.encoding() == ColumnEncoding::Dict => {
            let codes = (1..=s.len() as u32).map(|k| if s.is_valid(k as usize - 1) { k } else { 0 }).collect();
            Arc::new(dict_views(DictColumn { dict: StrColumn { validity: None, ..s }, codes })?)
        }
        ColumnData::Str(s) => Arc::new(strings(s)?),
        ColumnData::Fixed { width, bytes, validity } => Arc::new(hex_strings(width, &bytes, &validity)?),
        ColumnData::Int { values, validity } if id == ColumnId::Timestamp => {
            Arc::new(TimestampNanosecondArray::new(ScalarBuffer::from(values), nulls(&validity)).with_timezone("UTC"))
        }
        ColumnData::Int { values, validity } => Arc::new(Int64Array::new(ScalarBuffer::from(values), nulls(&validity))),
        ColumnData::Float { values, validity } => {
            Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(&validity)))
        }
        ColumnData::Map { offsets, keys, values } => {
            let DataType::Struct(fields) = map_entries().data_type().clone() else {
                return Err(ArrowError::SchemaError("map entries must be a struct".into()));
            };
            let entries =
                StructArray::try_new(fields, vec![Arc::new(strings(keys)?), Arc::new(strings(values)?)], None)?;
            Arc::new(MapArray::try_new(
                Arc::new(map_entries()),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                entries,
                None,
                false,
            )?)
        }
    })
}

/// `dt` with every `Utf8View` (also inside structs, lists and maps) replaced by `Utf8`: the
/// form results take when they leave the process as Arrow IPC or Parquet, so that readers
/// without view support (older pyarrow, Spark, BigQuery) read them.
pub fn plain_type(dt: &DataType) -> DataType {
    let field = |f: &Field| f.clone().with_data_type(plain_type(f.data_type()));
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| field(f)).collect()),
        DataType::List(f) => DataType::List(Arc::new(field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(field(f))),
        DataType::Map(f, sorted) => DataType::Map(Arc::new(field(f)), *sorted),
        other => other.clone(),
    }
}

/// `batch` with its view-typed columns cast to plain types ([`plain_type`]).
pub fn plain_batch(batch: &arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| plain_type(f.data_type()) != *f.data_type()) {
        return Ok(batch.clone());
    }
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(plain_type(f.data_type()))).collect();
    let columns = batch
        .columns()
        .iter()
        .zip(&fields)
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    arrow::array::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use proptest::prelude::*;

    fn dict_column(values: &[Option<String>]) -> DictColumn {
        let mut distinct: Vec<&str> = values.iter().flatten().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let dict = StrColumn::from_options(distinct.iter().map(|s| Some(*s)));
        let codes = values
            .iter()
            .map(|v| v.as_deref().map_or(0, |v| distinct.binary_search(&v).map_or(0, |k| k as u32 + 1)))
            .collect();
        DictColumn { dict: StrColumn { validity: None, ..dict }, codes }
    }

    /// What `StringArray::try_new` says of the same parts (`OffsetBuffer::new` panics on
    /// offsets that are empty, negative or descending: those are `None` here).
    fn try_new_reference(
        offsets: &[i32],
        data: &[u8],
        validity: &Option<Vec<bool>>,
    ) -> Option<Result<StringArray, ArrowError>> {
        if offsets.is_empty() || offsets[0] < 0 || offsets.windows(2).any(|w| w[0] > w[1]) {
            return None;
        }
        Some(StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets.to_vec())),
            Buffer::from_vec(data.to_vec()),
            nulls(validity),
        ))
    }

    proptest! {
        /// `strings` accepts exactly what arrow's checked constructor accepts, and builds the
        /// same array: bytes that are and are not UTF-8 (multi-byte characters and stray
        /// bytes), offsets inside characters, past the end, descending or negative, and
        /// validity of the wrong length.
        #[test]
        fn strings_accepts_what_try_new_accepts(
            text in "[a\u{e9}\u{540d}\u{1F600}]{0,12}",
            junk in proptest::collection::vec(any::<u8>(), 0..4),
            use_junk in any::<bool>(),
            cuts in proptest::collection::vec(-1i32..60, 0..8),
            sort in any::<bool>(),
            validity in proptest::option::of(proptest::collection::vec(any::<bool>(), 0..9)),
        ) {
            let mut data = text.into_bytes();
            if use_junk {
                data.extend_from_slice(&junk);
            }
            let mut offsets = cuts;
            if sort {
                offsets.sort_unstable();
            }
            let ours = strings(StrColumn { offsets: offsets.clone(), data: data.clone(), validity: validity.clone() });
            // An empty offset list is read as no rows, as `[0]` is.
            if offsets.is_empty() {
                offsets.push(0);
            }
            match try_new_reference(&offsets, &data, &validity) {
                Some(Ok(want)) => prop_assert_eq!(ours.expect("try_new accepts it"), want),
                Some(Err(_)) => prop_assert!(ours.is_err()),
                // `OffsetBuffer::new` would panic: an error here.
                None => prop_assert!(ours.is_err()),
            }
        }

        /// Columns built to fit are accepted, and equal to `try_new`'s array.
        #[test]
        fn strings_match_try_new_on_valid_columns(
            values in proptest::collection::vec(proptest::option::of("[a\u{e9}\u{1F600} ]{0,6}"), 0..20),
        ) {
            let col = StrColumn::from_options(values.iter().map(|v| v.as_deref()));
            let want = try_new_reference(&col.offsets, &col.data, &col.validity).expect("ascending").expect("valid");
            prop_assert_eq!(strings(col).expect("valid"), want);
        }
    }

    proptest! {
        /// Views of a dictionary read back as the strings the rows hold, nulls included,
        /// for short (inline) and long (buffer) values and multi-byte characters.
        #[test]
        fn dict_views_match_strings(values in proptest::collection::vec(
            proptest::option::of(prop_oneof!["[a-z]{0,12}", "[a-zé€]{10,30}", Just(String::new())]), 0..200)) {
            let array = dict_views(dict_column(&values)).expect("views");
            // A validating constructor accepts the same views and buffers.
            let checked = StringViewArray::try_new(array.views().clone(), array.data_buffers().to_vec(), array.nulls().cloned());
            prop_assert!(checked.is_ok());
            let got: Vec<Option<String>> = array.iter().map(|v| v.map(str::to_owned)).collect();
            prop_assert_eq!(got, values);
        }
    }

    proptest! {
        /// Hex strings of ids match `format!("{:02x}")` per byte, nulls included.
        #[test]
        fn hex_strings_match_format(ids in proptest::collection::vec(proptest::option::of(any::<[u8; 8]>()), 0..100)) {
            let bytes: Vec<u8> = ids.iter().flat_map(|id| id.unwrap_or_default()).collect();
            let validity = ids.iter().any(Option::is_none).then(|| ids.iter().map(Option::is_some).collect());
            let array = hex_strings(8, &bytes, &validity).expect("hex");
            let got: Vec<Option<String>> = array.iter().map(|v| v.map(str::to_owned)).collect();
            let want: Vec<Option<String>> =
                ids.iter().map(|id| id.map(|id| id.iter().map(|b| format!("{b:02x}")).collect())).collect();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        /// In-memory (plain) strings of a dictionary column become views of their own buffer
        /// and read back as the same values, nulls included.
        #[test]
        fn plain_strings_of_dict_columns_become_views(values in proptest::collection::vec(
            proptest::option::of(prop_oneof!["[a-z]{0,12}", "[a-zé€]{10,30}"]), 0..100)) {
            let col = StrColumn::from_options(values.iter().map(|v| v.as_deref()));
            let array = to_arrow(ColumnId::Kind, ColumnData::Str(col)).expect("views");
            let views = array.as_any().downcast_ref::<StringViewArray>().expect("Utf8View");
            let got: Vec<Option<String>> = views.iter().map(|v| v.map(str::to_owned)).collect();
            prop_assert_eq!(got, values);
        }
    }

    #[test]
    fn dict_views_reject_bad_codes_and_bytes() {
        let mut d = dict_column(&[Some("a".into()), Some("b".into())]);
        d.codes.push(3);
        assert!(dict_views(d).is_err());
        let bad = DictColumn {
            dict: StrColumn { offsets: vec![0, 2], data: vec![0xff, 0xfe], validity: None },
            codes: vec![1],
        };
        assert!(dict_views(bad).is_err());
        let split = DictColumn {
            dict: StrColumn { offsets: vec![0, 1, 2], data: "é".as_bytes().to_vec(), validity: None },
            codes: vec![1],
        };
        assert!(dict_views(split).is_err());
    }

    #[test]
    fn plain_batch_casts_nested_views() {
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![Some("x"), None]));
        let st: ArrayRef =
            Arc::new(StructArray::from(vec![(Arc::new(Field::new("k", DataType::Utf8View, true)), views.clone())]));
        let schema = Schema::new(vec![
            Field::new("v", DataType::Utf8View, true),
            Field::new("s", st.data_type().clone(), false),
        ]);
        let batch = arrow::array::RecordBatch::try_new(Arc::new(schema), vec![views, st]).expect("batch");
        let plain = plain_batch(&batch).expect("plain");
        assert_eq!(plain.column(0).data_type(), &DataType::Utf8);
        assert_eq!(plain.column(1).data_type(), &DataType::Struct(vec![Field::new("k", DataType::Utf8, true)].into()));
        let s = plain.column(0).as_any().downcast_ref::<StringArray>().expect("utf8");
        assert_eq!((s.value(0), s.is_null(1)), ("x", true));
    }
}
