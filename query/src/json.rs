//! JSON output of query results: arrow-json's writer with a faster encoder for strings.
//! Free text is most of a result's bytes, and arrow-json escapes it through serde_json one
//! byte at a time; [`escape_str`] skips sixteen bytes at a time that need no escape (SSE2 on
//! x86_64, eight bytes in a word elsewhere) and writes exactly what serde_json writes (a
//! property test compares them).

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, GenericStringArray, OffsetSizeTrait, RecordBatch, StringViewArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, FieldRef, TimeUnit, TimestampNanosecondType};
use arrow::error::ArrowError;
use arrow::json::writer::{
    make_encoder, Encoder, EncoderFactory, EncoderOptions, JsonArray, NullableEncoder, WriterBuilder,
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is a control character (below 0x20), `"` or `\`.
fn needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    (below_space | zero(quote) | zero(backslash)) & HIGHS != 0
}

/// How many bytes at the start of `b` need no escape, counted sixteen at a time with SSE2
/// (part of every x86_64 CPU); the last fifteen or fewer are left to the caller. The returned
/// count is a multiple of 16 unless a byte needing an escape lies at that position.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn clean_prefix_wide(b: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut i = 0;
    #[allow(unsafe_code)]
    // SAFETY: the build enables SSE2 (the `cfg` above; every x86_64 CPU has it), and each load
    // reads the 16 bytes of `chunk`, a subslice of `b`, with no alignment requirement.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let last_control = _mm_set1_epi8(0x1f);
        while let Some(chunk) = b.get(i..i + 16) {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            // A byte is a control character when min(byte, 0x1f) == byte (unsigned).
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v);
            let special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
            let mask = _mm_movemask_epi8(_mm_or_si128(control, special)) as u32;
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    i
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn clean_prefix_wide(_: &[u8]) -> usize {
    0
}

/// How many bytes at the start of `b` need no escape.
fn clean_prefix(b: &[u8]) -> usize {
    let mut i = clean_prefix_wide(b);
    while let Some(word) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if needs_escape(u64::from_le_bytes(w)) {
            break;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], 0..=0x1f | b'"' | b'\\') {
        i += 1;
    }
    i
}

/// `s` as a JSON string literal, quotes included, appended to `out`: `"` and `\` escaped,
/// control characters as `\b \t \n \f \r` or `\u00XX`, everything else as it is.
pub fn escape_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut i = 0;
    loop {
        let clean = clean_prefix(&b[i..]);
        out.extend_from_slice(&b[i..i + clean]);
        i += clean;
        let Some(&c) = b.get(i) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]),
        }
        i += 1;
    }
    out.push(b'"');
}

struct Strings<'a, O: OffsetSizeTrait>(&'a GenericStringArray<O>);

impl<O: OffsetSizeTrait> Encoder for Strings<'_, O> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        escape_str(self.0.value(idx), out);
    }
}

struct StringViews<'a>(&'a StringViewArray);

impl Encoder for StringViews<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        escape_str(self.0.value(idx), out);
    }
}

/// `ns` (unix nanoseconds) as RFC 3339 in UTC, as arrow-json writes a `Timestamp(Nanosecond,
/// "UTC")` (chrono's `SecondsFormat::AutoSi`): no fraction for whole seconds, else 3, 6 or 9
/// digits, the fewest that hold it; `Z` for the offset. chrono's formatter was a tenth of
/// the encoding of results with a timestamp per row.
pub fn rfc3339_utc(ns: i64, out: &mut Vec<u8>) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = segments::civil_from_days(days);
    let two = |v: u32, out: &mut Vec<u8>| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    // i64 nanoseconds span the years 1677 to 2262: always four digits.
    let y = y as u32;
    two(y / 100, out);
    two(y % 100, out);
    out.push(b'-');
    two(m, out);
    out.push(b'-');
    two(d, out);
    out.push(b'T');
    two(sod / 3600, out);
    out.push(b':');
    two(sod / 60 % 60, out);
    out.push(b':');
    two(sod % 60, out);
    let digits = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    if digits > 0 {
        out.push(b'.');
        let mut frac = [b'0'; 9];
        let mut n = nanos;
        for c in frac.iter_mut().rev() {
            *c = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&frac[..digits]);
    }
    out.push(b'Z');
}

struct UtcTimestamps<'a>(&'a TimestampNanosecondArray);

impl Encoder for UtcTimestamps<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'"');
        rfc3339_utc(self.0.value(idx), out);
        out.push(b'"');
    }
}

/// Encodes string arrays (at any depth) with [`escape_str`] and UTC nanosecond timestamps with
/// [`rfc3339_utc`]; everything else as arrow-json does.
#[derive(Debug)]
pub struct FastStrings;

impl EncoderFactory for FastStrings {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.nulls().cloned();
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Utf8 => Box::new(Strings(array.as_string::<i32>())),
            DataType::LargeUtf8 => Box::new(Strings(array.as_string::<i64>())),
            DataType::Utf8View => Box::new(StringViews(array.as_string_view())),
            DataType::Timestamp(TimeUnit::Nanosecond, Some(tz)) if tz.as_ref() == "UTC" => {
                Box::new(UtcTimestamps(array.as_primitive::<TimestampNanosecondType>()))
            }
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, nulls)))
    }
}

/// Results with fewer rows are encoded on the calling thread: a thread costs tens of
/// microseconds, and a large result (the contract query's 4,212 rows, 3.9 MB) took 3.5-5 ms.
const PARALLEL_ROWS: usize = 2048;

/// `batches` as a JSON array of row objects, every column in every object (nulls explicit).
/// A large result is cut into contiguous runs of rows encoded on threads of their own (at
/// most one per core, up to 4), then joined: the same bytes as one writer gives.
pub fn to_json_array(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    to_json_array_on(batches, crate::cores().min(4), PARALLEL_ROWS)
}

/// [`to_json_array`] on up to `threads` threads, when there are at least `min_rows` rows.
fn to_json_array_on(batches: &[RecordBatch], threads: usize, min_rows: usize) -> Result<Vec<u8>, ArrowError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if threads < 2 || rows < min_rows.max(2) {
        return encode_array(batches);
    }
    let parts = split_rows(batches, threads);
    let encoded: Vec<Result<Vec<u8>, ArrowError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts.iter().map(|part| scope.spawn(|| encode_array(part))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ArrowError::ComputeError("JSON encoder panicked".into()))))
            .collect()
    });
    let mut out = Vec::with_capacity(encoded.iter().map(|e| e.as_ref().map_or(0, Vec::len)).sum::<usize>());
    out.push(b'[');
    for part in encoded {
        let part = part?;
        // Each part is `[...]`; its rows go in between, after a comma once rows are there.
        let inner = part.get(1..part.len().saturating_sub(1)).unwrap_or_default();
        if inner.is_empty() {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(inner);
    }
    out.push(b']');
    Ok(out)
}

/// `batches` cut into `n` runs of consecutive rows, as even as the rows allow (slices share
/// the batches' buffers).
fn split_rows(batches: &[RecordBatch], n: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let per = total.div_ceil(n.max(1)).max(1);
    let mut parts = vec![Vec::new()];
    let mut room = per;
    for b in batches {
        let mut at = 0;
        while at < b.num_rows() {
            if room == 0 {
                parts.push(Vec::new());
                room = per;
            }
            let take = room.min(b.num_rows() - at);
            if let Some(part) = parts.last_mut() {
                part.push(b.slice(at, take));
            }
            at += take;
            room -= take;
        }
    }
    parts
}

/// `batches` as a JSON array on the calling thread.
fn encode_array(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_encoder_factory(Arc::new(FastStrings))
            .build::<_, JsonArray>(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    Ok(buf)
}

fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Struct(_)
            | DataType::Map(..)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
    )
}

/// `batch` with every nested column (struct, map, list) replaced by a string column holding
/// each value as JSON text, as it appears in `to_json_array`'s output; other columns are kept.
/// For formats that have no nested values, such as CSV: `attributes` and the `traces` view's
/// `events` struct then read back as JSON in a spreadsheet or `read_csv`.
pub fn nested_as_json_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let options = EncoderOptions::default().with_explicit_nulls(true).with_encoder_factory(Arc::new(FastStrings));
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_nested(field.data_type()) {
            fields.push(field.clone());
            columns.push(column.clone());
            continue;
        }
        let mut encoder = make_encoder(field, column.as_ref(), &options)?;
        let mut text = arrow::array::StringBuilder::with_capacity(column.len(), column.len() * 16);
        let mut value = Vec::new();
        for row in 0..column.len() {
            if column.is_null(row) {
                text.append_null();
                continue;
            }
            value.clear();
            encoder.encode(row, &mut value);
            text.append_value(String::from_utf8_lossy(&value));
        }
        fields.push(Arc::new(arrow::datatypes::Field::new(field.name(), DataType::Utf8, field.is_nullable())));
        columns.push(Arc::new(text.finish()) as arrow::array::ArrayRef);
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, MapBuilder, StringArray, StringBuilder, StructArray};
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    fn serde(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).unwrap_or_default()
    }

    fn ours(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        escape_str(s, &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Exactly serde_json's output, for any text: control characters, quotes,
        /// backslashes and multi-byte characters at every position of an 8-byte word.
        #[test]
        fn escapes_as_serde_json_does(s in "(\\PC|[\\x00-\\x1f\"\\\\\\x7f])*") {
            prop_assert_eq!(ours(&s), serde(&s));
        }

        #[test]
        fn escapes_any_string_as_serde_json_does(s in any::<String>()) {
            prop_assert_eq!(ours(&s), serde(&s));
        }
    }

    /// A UTC nanosecond timestamp as arrow-json's own encoder writes it (the reference).
    fn arrow_json_timestamp(ns: i64) -> Vec<u8> {
        let array = TimestampNanosecondArray::from(vec![ns]).with_timezone("UTC");
        let schema = Arc::new(Schema::new(vec![Field::new("t", array.data_type().clone(), false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(array)]).expect("batch");
        let mut buf = Vec::new();
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        w.write(&batch).expect("write");
        w.finish().expect("finish");
        drop(w);
        // `[{"t":"..."}]`: the value with its quotes.
        buf.get(6..buf.len().saturating_sub(2)).unwrap_or_default().to_vec()
    }

    fn our_timestamp(ns: i64) -> Vec<u8> {
        let mut out = vec![b'"'];
        rfc3339_utc(ns, &mut out);
        out.push(b'"');
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// Exactly arrow-json's text, over the whole range of i64 nanoseconds, and at whole
        /// seconds, milliseconds and microseconds (the shorter fractions).
        #[test]
        fn timestamps_as_arrow_json_writes_them(ns in any::<i64>(), cut in 0u32..4) {
            let unit = [1, 1_000, 1_000_000, 1_000_000_000][cut as usize];
            let ns = ns - ns.rem_euclid(unit);
            let (ours, theirs) = (our_timestamp(ns), arrow_json_timestamp(ns));
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    #[test]
    fn timestamps_at_the_edges() {
        // 1970, before it, leap days, centuries, and i64's ends.
        for ns in [
            0,
            -1,
            1,
            -1_000_000_000,
            951_782_400_000_000_000,    // 2000-02-29
            4_107_542_400_000_000_000,  // 2100-03-01
            -2_203_891_200_000_000_000, // 1900-03-01
            1_748_736_000_123_000_000,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(our_timestamp(ns), arrow_json_timestamp(ns), "{ns}");
        }
        assert_eq!(our_timestamp(1_748_736_000_500_000_000), b"\"2025-06-01T00:00:00.500Z\"");
    }

    #[test]
    fn every_byte_value_in_every_word_position() {
        // Every position of two 16-byte chunks, an 8-byte word after them and the bytes left.
        let base = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for c in 0u8..=0x7f {
            for len in [1, 15, 16, 17, 31, 32, 33, 40, 43, base.len()] {
                for at in 0..len {
                    let mut s = base[..len].to_owned();
                    s.replace_range(at..=at, &char::from(c).to_string());
                    assert_eq!(ours(&s), serde(&s), "{c:#x} at {at} of {len}");
                }
            }
        }
        assert_eq!(ours(""), b"\"\"");
    }

    /// The clean prefix as its definition says, one byte at a time.
    fn clean_prefix_reference(b: &[u8]) -> usize {
        b.iter().position(|&c| c < 0x20 || c == b'"' || c == b'\\').unwrap_or(b.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Any bytes (bytes of 0x80 and above are never escaped, whatever their sign as i8),
        /// with the dirty bytes sparse so that long clean runs cross chunk boundaries.
        #[test]
        fn the_clean_prefix_is_the_reference_one(
            b in proptest::collection::vec(prop_oneof![8 => 0x20u8..=0xff, 1 => any::<u8>()], 0..100),
        ) {
            prop_assert_eq!(clean_prefix(&b), clean_prefix_reference(&b));
            prop_assert!(clean_prefix_wide(&b) <= clean_prefix_reference(&b));
        }
    }

    #[test]
    fn the_factory_takes_strings_and_leaves_the_rest() {
        let options = EncoderOptions::default();
        let cases: Vec<(ArrayRef, bool)> = vec![
            (Arc::new(StringArray::from(vec!["a"])), true),
            (Arc::new(arrow::array::LargeStringArray::from(vec!["a"])), true),
            (Arc::new(StringViewArray::from(vec!["a"])), true),
            (Arc::new(Int64Array::from(vec![1])), false),
            (Arc::new(TimestampNanosecondArray::from(vec![0]).with_timezone("UTC")), true),
            (Arc::new(TimestampNanosecondArray::from(vec![0]).with_timezone("+01:00")), false),
            (Arc::new(TimestampNanosecondArray::from(vec![0])), false),
        ];
        for (array, ours) in cases {
            let field: FieldRef = Arc::new(Field::new("c", array.data_type().clone(), true));
            let made = FastStrings.make_default_encoder(&field, array.as_ref(), &options).expect("factory");
            assert_eq!(made.is_some(), ours, "{}", array.data_type());
            if let Some(mut encoder) = made {
                let mut out = Vec::new();
                encoder.encode(0, &mut out);
                let want: &[u8] = if array.data_type().is_temporal() { b"\"1970-01-01T00:00:00Z\"" } else { b"\"a\"" };
                assert_eq!(out, want);
            }
        }
    }

    /// Strings and views, a struct, a map with a null row.
    fn mixed_batch() -> RecordBatch {
        let text = ["plain", "a \"quoted\"\n line\twith \\ and \u{1} é 日本", ""];
        let utf8: ArrayRef = Arc::new(StringArray::from(vec![Some(text[0]), None, Some(text[1])]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec![Some(text[1]), Some(text[2]), None]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let inner = StructArray::from(vec![
            (Arc::new(Field::new("s", arrow::datatypes::DataType::Utf8View, true)), view.clone()),
            (Arc::new(Field::new("n", arrow::datatypes::DataType::Int64, true)), n.clone()),
        ]);
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..3 {
            map.keys().append_value(format!("k\"{i}"));
            map.values().append_value(text[i % 3]);
            map.append(i != 1).unwrap_or_default();
        }
        let map: ArrayRef = Arc::new(map.finish());
        let schema = Arc::new(Schema::new(vec![
            Field::new("utf8", utf8.data_type().clone(), true),
            Field::new("view", view.data_type().clone(), true),
            Field::new("st", inner.data_type().clone(), false),
            Field::new("map", map.data_type().clone(), true),
        ]));
        RecordBatch::try_new(schema, vec![utf8, view, Arc::new(inner), map]).expect("batch")
    }

    #[test]
    fn batches_encode_as_arrow_json_does() {
        let batch = mixed_batch();
        let batches = [batch.clone(), batch.slice(1, 2)];
        let mut plain = Vec::new();
        {
            let mut w = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(&mut plain);
            for b in &batches {
                w.write(b).expect("write");
            }
            w.finish().expect("finish");
        }
        assert_eq!(String::from_utf8_lossy(&to_json_array(&batches).expect("json")), String::from_utf8_lossy(&plain));
        assert_eq!(to_json_array(&[]).expect("empty"), b"[]");
    }

    #[test]
    fn threads_encode_the_bytes_one_writer_does() {
        let batch = mixed_batch();
        let n = batch.num_rows();
        let cases: Vec<Vec<RecordBatch>> = vec![
            vec![],
            vec![batch.slice(0, 0)],
            vec![batch.clone()],
            vec![batch.clone(), batch.slice(0, 0), batch.slice(1, n - 1), batch.clone()],
            vec![batch.slice(0, 1), batch.slice(1, 1), batch.slice(2, n - 2)],
        ];
        for batches in &cases {
            let one = encode_array(batches).expect("one writer");
            for threads in 1..=5 {
                let many = to_json_array_on(batches, threads, 0).expect("threads");
                assert_eq!(String::from_utf8_lossy(&many), String::from_utf8_lossy(&one), "{threads} threads");
            }
            let parsed: serde_json::Value =
                serde_json::from_slice(&to_json_array_on(batches, 3, 0).expect("json")).expect("valid JSON");
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(parsed.as_array().map(Vec::len), Some(rows));
        }
    }

    #[test]
    fn rows_split_into_even_contiguous_runs() {
        let batch = mixed_batch();
        let n = batch.num_rows();
        let batches = [batch.clone(), batch.slice(1, n - 1), batch.clone()];
        let total = 3 * n - 1;
        for parts in 1..=total + 2 {
            let split = split_rows(&batches, parts);
            let sizes: Vec<usize> = split.iter().map(|p| p.iter().map(RecordBatch::num_rows).sum()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), total);
            assert!(split.len() <= parts.max(1), "{parts}: {sizes:?}");
            let per = total.div_ceil(parts);
            assert!(sizes.iter().all(|&s| s <= per), "{parts}: {sizes:?}");
        }
    }

    #[test]
    fn nested_columns_become_their_json_text() {
        let batch = mixed_batch().slice(0, 3);
        let flat = nested_as_json_text(&batch).expect("flatten");
        let names: Vec<_> = flat.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        assert_eq!(names[2], ("st".to_owned(), DataType::Utf8));
        assert_eq!(names[3], ("map".to_owned(), DataType::Utf8));
        assert_eq!(flat.column(0), batch.column(0), "flat columns are kept as they are");
        // Each text parses to the value the JSON output gives that column in that row.
        let rows: serde_json::Value = serde_json::from_slice(&to_json_array(&[batch]).expect("json")).expect("parse");
        for (r, row) in rows.as_array().expect("rows").iter().enumerate() {
            for (c, name) in [(2, "st"), (3, "map")] {
                let text = flat.column(c).as_string::<i32>();
                let got = if text.is_null(r) {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(text.value(r)).expect("json text")
                };
                assert_eq!(got, row[name], "row {r} column {name}");
            }
        }
        assert!(flat.column(3).is_null(1), "a null map stays null");
        let plain = flat.project(&[0, 1]).expect("project");
        assert_eq!(nested_as_json_text(&plain).expect("same"), plain);
    }
}
