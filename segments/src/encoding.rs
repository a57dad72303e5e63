//! Pure encoders and decoders for column values, before block compression.
//!
//! Every decoder reads through a bounds-checked [`Cursor`], uses wrapping arithmetic, and caps
//! allocations by the bytes actually present, so any input yields a value or an
//! [`EncodingError`], never a panic.
//!
//! - integers: frame-of-reference or delta + frame-of-reference, bit-packed; the smaller wins
//! - floats: byte-stream split (the 8 bytes of each value in 8 planes), which the block
//!   compressor then squeezes far better than raw doubles
//! - validity: a flag byte, then a bit per row when any value is null
//! - strings: dictionary (sorted distinct values + bit-packed codes, 0 = null) or plain
//!   (bit-packed lengths + bytes)

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("column data truncated at byte {0}")]
    Truncated(usize),
    #[error("column data corrupt at byte {at}: {what}")]
    Corrupt { at: usize, what: &'static str },
}

/// Bounds-checked reader over an encoded buffer.
#[derive(Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], EncodingError> {
        let end = self.pos.checked_add(n).ok_or(EncodingError::Truncated(self.pos))?;
        let s = self.buf.get(self.pos..end).ok_or(EncodingError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, EncodingError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, EncodingError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, EncodingError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn i64(&mut self) -> Result<i64, EncodingError> {
        Ok(self.u64()? as i64)
    }
    pub fn corrupt(&self, what: &'static str) -> EncodingError {
        EncodingError::Corrupt { at: self.pos, what }
    }
    pub fn finish(&self) -> Result<(), EncodingError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes"))
        }
    }
}

/// Bits needed to represent `max`.
pub fn bit_width(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

fn mask(width: u8) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Pack each value's low `width` bits, LSB first.
pub fn bitpack(values: &[u64], width: u8, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    let total = (values.len() * width as usize).div_ceil(8);
    out.reserve(total);
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    let m = mask(width);
    for &v in values {
        acc |= u128::from(v & m) << bits;
        bits += u32::from(width);
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// Unpack `n` values of `width` bits from the cursor.
pub fn bitunpack(c: &mut Cursor<'_>, width: u8, n: usize) -> Result<Vec<u64>, EncodingError> {
    bitunpack_map(c, width, n, |v| v)
}

/// Unpack `n` values of `width` bits from the cursor, each passed through `f` on its way into
/// the output (so callers that want `i64` or `u32` need no second vector).
pub fn bitunpack_map<T: Copy + Default>(
    c: &mut Cursor<'_>,
    width: u8,
    n: usize,
    f: impl Fn(u64) -> T,
) -> Result<Vec<T>, EncodingError> {
    if width > 64 {
        return Err(c.corrupt("bit width above 64"));
    }
    if width == 0 {
        return Ok(vec![f(0); n]);
    }
    let bytes = n.checked_mul(width as usize).ok_or(c.corrupt("packed size overflows"))?.div_ceil(8);
    let src = c.take(bytes)?;
    Ok(unpack_bits_map(src, width, n, f))
}

/// Unpack `n` values of `width` (1..=64) bits from `src`, which holds at least
/// `ceil(n * width / 8)` bytes.
#[cfg(test)]
fn unpack_bits(src: &[u8], width: u8, n: usize) -> Vec<u64> {
    unpack_bits_map(src, width, n, |v| v)
}

/// [`unpack_bits`] with each value mapped by `f`. Values whose 8-byte window lies inside `src`
/// are read with one unaligned little-endian load each (the hot path, for widths up to 56); the
/// rest bit by bit.
fn unpack_bits_map<T: Copy + Default>(src: &[u8], width: u8, n: usize, f: impl Fn(u64) -> T) -> Vec<T> {
    let w = width as usize;
    let m = mask(width);
    let mut out = vec![T::default(); n];
    // Values i with (i * w) / 8 + 8 <= src.len() can use the word load.
    let fast = if w <= 56 && src.len() >= 8 { (((src.len() - 8) * 8) / w + 1).min(n) } else { 0 };
    for (i, slot) in out[..fast].iter_mut().enumerate() {
        let bit = i * w;
        let byte = bit >> 3;
        let mut word = [0u8; 8];
        word.copy_from_slice(&src[byte..byte + 8]);
        *slot = f((u64::from_le_bytes(word) >> (bit & 7)) & m);
    }
    for (i, slot) in out.iter_mut().enumerate().skip(fast) {
        let mut v: u128 = 0;
        let bit = i * w;
        let first = bit >> 3;
        let last = (bit + w).div_ceil(8).min(src.len());
        for (k, b) in src[first..last].iter().enumerate() {
            v |= u128::from(*b) << (8 * k);
        }
        *slot = f(((v >> (bit & 7)) as u64) & m);
    }
    out
}

const INT_FOR: u8 = 0;
const INT_DELTA: u8 = 1;

/// Frame of reference over signed values: `min`, bit width, then `v - min` bit-packed
/// (the difference of two i64 always fits a u64).
fn encode_for(values: &[i64], out: &mut Vec<u8>) {
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let width = bit_width(max.wrapping_sub(min) as u64);
    out.extend_from_slice(&min.to_le_bytes());
    out.push(width);
    let shifted: Vec<u64> = values.iter().map(|v| v.wrapping_sub(min) as u64).collect();
    bitpack(&shifted, width, out);
}

fn decode_for(c: &mut Cursor<'_>, n: usize) -> Result<Vec<i64>, EncodingError> {
    let min = c.i64()?;
    let width = c.u8()?;
    bitunpack_map(c, width, n, |x| min.wrapping_add(x as i64))
}

/// Encode integers: whichever of frame-of-reference or delta + frame-of-reference is smaller.
pub fn encode_ints(values: &[i64], out: &mut Vec<u8>) {
    let mut a = Vec::new();
    encode_for(values, &mut a);
    if values.len() > 1 {
        let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&values[0].to_le_bytes());
        encode_for(&deltas, &mut b);
        if b.len() < a.len() {
            out.push(INT_DELTA);
            out.extend_from_slice(&b);
            return;
        }
    }
    out.push(INT_FOR);
    out.extend_from_slice(&a);
}

pub fn decode_ints(c: &mut Cursor<'_>, n: usize) -> Result<Vec<i64>, EncodingError> {
    match c.u8()? {
        INT_FOR => decode_for(c, n),
        INT_DELTA => {
            let first = c.i64()?;
            if n == 0 {
                return Err(c.corrupt("delta encoding of zero values"));
            }
            // The deltas land one slot to the right of the first value, then a running sum turns
            // them into values in place.
            let mut out = Vec::with_capacity(n);
            out.push(first);
            out.extend(decode_for(c, n - 1)?);
            let mut cur = first;
            for v in out.iter_mut().skip(1) {
                cur = cur.wrapping_add(*v);
                *v = cur;
            }
            Ok(out)
        }
        _ => Err(c.corrupt("unknown integer encoding")),
    }
}

/// Byte-stream split: plane k holds byte k of every value.
pub fn encode_floats(values: &[f64], out: &mut Vec<u8>) {
    let n = values.len();
    let start = out.len();
    out.resize(start + n * 8, 0);
    for (i, v) in values.iter().enumerate() {
        for (k, b) in v.to_le_bytes().into_iter().enumerate() {
            out[start + k * n + i] = b;
        }
    }
}

pub fn decode_floats(c: &mut Cursor<'_>, n: usize) -> Result<Vec<f64>, EncodingError> {
    let bytes = c.take(n.checked_mul(8).ok_or(c.corrupt("float count overflows"))?)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    // One pass over the eight planes side by side: value i gathers byte i of each.
    let p: Vec<&[u8]> = bytes.chunks_exact(n).collect();
    let [p0, p1, p2, p3, p4, p5, p6, p7] = p[..] else {
        return Err(c.corrupt("float planes do not split evenly"));
    };
    Ok((0..n)
        .map(|i| f64::from_bits(u64::from_le_bytes([p0[i], p1[i], p2[i], p3[i], p4[i], p5[i], p6[i], p7[i]])))
        .collect())
}

/// Validity: `0` when every row is present, else `1` and one bit per row.
pub fn encode_validity(valid: &[bool], out: &mut Vec<u8>) {
    if valid.iter().all(|v| *v) {
        out.push(0);
        return;
    }
    out.push(1);
    let bits: Vec<u64> = valid.iter().map(|v| u64::from(*v)).collect();
    bitpack(&bits, 1, out);
}

pub fn decode_validity(c: &mut Cursor<'_>, n: usize) -> Result<Option<Vec<bool>>, EncodingError> {
    match c.u8()? {
        0 => Ok(None),
        1 => {
            let bits = c.take(n.div_ceil(8))?;
            Ok(Some((0..n).map(|i| (bits[i / 8] >> (i % 8)) & 1 == 1).collect()))
        }
        _ => Err(c.corrupt("bad validity flag")),
    }
}

/// Strings as one contiguous buffer with `n + 1` offsets (Arrow's layout) and optional validity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StrColumn {
    pub offsets: Vec<i32>,
    pub data: Vec<u8>,
    pub validity: Option<Vec<bool>>,
}

impl StrColumn {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity.as_ref().is_none_or(|v| v[i])
    }
    /// Value `i` (None when null). Offsets were validated to lie on UTF-8 boundaries.
    pub fn get(&self, i: usize) -> Option<&str> {
        if !self.is_valid(i) {
            return None;
        }
        let (s, e) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        std::str::from_utf8(&self.data[s..e]).ok()
    }
    /// Bytes of row `r`'s text (0 for a row it does not have).
    pub fn row_bytes(&self, r: usize) -> usize {
        match (self.offsets.get(r), self.offsets.get(r + 1)) {
            (Some(s), Some(e)) => usize::try_from(e - s).unwrap_or(0),
            _ => 0,
        }
    }

    /// Make room for `rows` more rows holding `bytes` of text in all.
    pub fn reserve(&mut self, rows: usize, bytes: usize) {
        self.offsets.reserve(rows + usize::from(self.offsets.is_empty()));
        self.data.reserve(bytes);
        // (`push_from` keeps a validity flag per row while building.)
        self.validity.get_or_insert_with(Vec::new).reserve(rows);
    }

    /// Append row `r` of `src` (false if `src` has no row `r`). Validity is kept as a flag per
    /// row while building; [`StrColumn::finish`] drops it when no row is null.
    pub fn push_from(&mut self, src: &StrColumn, r: usize) -> bool {
        let (Some(s), Some(e)) = (src.offsets.get(r), src.offsets.get(r + 1)) else {
            return false;
        };
        let Some(bytes) = src.data.get(*s as usize..*e as usize) else {
            return false;
        };
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.extend_from_slice(bytes);
        self.offsets.push(self.data.len() as i32);
        self.validity.get_or_insert_with(Vec::new).push(src.is_valid(r));
        true
    }

    /// Append every row of `src`.
    pub fn extend_from(&mut self, src: &StrColumn) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let base = self.data.len() as i32;
        self.data.extend_from_slice(&src.data);
        self.offsets.extend(src.offsets.iter().skip(1).map(|o| o + base));
        let valid = self.validity.get_or_insert_with(Vec::new);
        match &src.validity {
            Some(v) => valid.extend_from_slice(v),
            None => valid.resize(valid.len() + src.len(), true),
        }
    }

    /// End a column built with [`StrColumn::push_from`] / [`StrColumn::extend_from`].
    pub fn finish(mut self) -> StrColumn {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        if self.validity.as_ref().is_some_and(|v| v.iter().all(|x| *x)) {
            self.validity = None;
        }
        self
    }

    pub fn from_options<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> StrColumn {
        let mut col = StrColumn { offsets: vec![0], ..Default::default() };
        let mut valid = Vec::new();
        for v in values {
            valid.push(v.is_some());
            col.data.extend_from_slice(v.unwrap_or("").as_bytes());
            col.offsets.push(col.data.len() as i32);
        }
        if valid.iter().any(|v| !*v) {
            col.validity = Some(valid);
        }
        col
    }
}

fn read_strings(c: &mut Cursor<'_>, lens: &[u64]) -> Result<(Vec<i32>, Vec<u8>), EncodingError> {
    let total: u64 =
        lens.iter().try_fold(0u64, |a, l| a.checked_add(*l)).ok_or(c.corrupt("string lengths overflow"))?;
    if total > i32::MAX as u64 {
        return Err(c.corrupt("strings larger than 2 GiB"));
    }
    let data = c.take(total as usize)?;
    // simdutf8: the same check as `std::str::from_utf8`, several times faster on text that is
    // not all ASCII (it was half a content scan's CPU on Japanese and emoji text).
    let Ok(text) = simdutf8::basic::from_utf8(data) else {
        return Err(c.corrupt("string data is not UTF-8"));
    };
    let mut offsets = Vec::with_capacity(lens.len() + 1);
    let mut off = 0i32;
    offsets.push(0);
    for l in lens {
        off += *l as i32;
        if !text.is_char_boundary(off as usize) {
            return Err(c.corrupt("string boundary inside a UTF-8 character"));
        }
        offsets.push(off);
    }
    Ok((offsets, data.to_vec()))
}

/// Plain strings: validity, lengths (as integers), bytes.
pub fn encode_plain(values: &[Option<&str>], out: &mut Vec<u8>) {
    let valid: Vec<bool> = values.iter().map(Option::is_some).collect();
    encode_validity(&valid, out);
    let lens: Vec<i64> = values.iter().map(|v| v.map_or(0, |s| s.len() as i64)).collect();
    encode_ints(&lens, out);
    for s in values.iter().flatten() {
        out.extend_from_slice(s.as_bytes());
    }
}

pub fn decode_plain(c: &mut Cursor<'_>, n: usize) -> Result<StrColumn, EncodingError> {
    let validity = decode_validity(c, n)?;
    let lens = decode_ints(c, n)?;
    if lens.iter().any(|l| *l < 0) {
        return Err(c.corrupt("negative string length"));
    }
    let lens: Vec<u64> = lens.into_iter().map(|l| l as u64).collect();
    let (offsets, data) = read_strings(c, &lens)?;
    Ok(StrColumn { offsets, data, validity })
}

/// Dictionary strings, decoded form: `codes[i] == 0` is null, else `dict[codes[i] - 1]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DictColumn {
    pub dict: StrColumn,
    pub codes: Vec<u32>,
}

impl DictColumn {
    pub fn get(&self, i: usize) -> Option<&str> {
        match self.codes[i] {
            0 => None,
            c => self.dict.get(c as usize - 1),
        }
    }

    /// Expand into plain strings (one copy per row, no per-row UTF-8 check: the dictionary
    /// was validated when decoded).
    pub fn to_strings(&self) -> StrColumn {
        let d = &self.dict;
        let span = |code: u32| -> (usize, usize) {
            let k = code as usize;
            match (d.offsets.get(k - 1), d.offsets.get(k)) {
                (Some(s), Some(e)) => (*s as usize, *e as usize),
                _ => (0, 0),
            }
        };
        let mut total = 0usize;
        for &c in &self.codes {
            if c != 0 {
                let (s, e) = span(c);
                total += e - s;
            }
        }
        let mut data = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(self.codes.len() + 1);
        offsets.push(0i32);
        for &c in &self.codes {
            if c != 0 {
                let (s, e) = span(c);
                data.extend_from_slice(&d.data[s..e]);
            }
            offsets.push(data.len() as i32);
        }
        let validity = self.codes.contains(&0).then(|| self.codes.iter().map(|c| *c != 0).collect());
        StrColumn { offsets, data, validity }
    }
}

/// Dictionary strings: `u32 n_dict`, dict lengths (ints), dict bytes, bit width, packed codes.
pub fn encode_dict(values: &[Option<&str>], out: &mut Vec<u8>) {
    // Distinct values through a hash set (a block holds few), with a shortcut for runs of
    // one value (rows are ordered by tenant and agent): sorting every row's value costs a
    // dozen string comparisons per row.
    let mut seen: foldhash::HashMap<&str, u64> = foldhash::HashMap::default();
    let mut prev: Option<&str> = None;
    for v in values.iter().flatten() {
        if prev != Some(*v) {
            seen.entry(*v).or_insert(0);
            prev = Some(*v);
        }
    }
    let mut dict: Vec<&str> = seen.keys().copied().collect();
    dict.sort_unstable();
    for (i, s) in dict.iter().enumerate() {
        seen.insert(s, i as u64 + 1);
    }
    out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    let lens: Vec<i64> = dict.iter().map(|s| s.len() as i64).collect();
    encode_ints(&lens, out);
    for s in &dict {
        out.extend_from_slice(s.as_bytes());
    }
    let mut last: Option<(&str, u64)> = None;
    let codes: Vec<u64> = values
        .iter()
        .map(|v| match v {
            None => 0,
            Some(s) => match last {
                Some((p, c)) if p == *s => c,
                _ => {
                    let c = seen.get(s).copied().unwrap_or(0);
                    last = Some((s, c));
                    c
                }
            },
        })
        .collect();
    let width = bit_width(dict.len() as u64);
    out.push(width);
    bitpack(&codes, width, out);
}

pub fn decode_dict(c: &mut Cursor<'_>, n: usize) -> Result<DictColumn, EncodingError> {
    let n_dict = c.u32()? as usize;
    if n_dict > c.remaining() {
        return Err(c.corrupt("dictionary larger than the block"));
    }
    let lens = decode_ints(c, n_dict)?;
    if lens.iter().any(|l| *l < 0) {
        return Err(c.corrupt("negative string length"));
    }
    let lens: Vec<u64> = lens.into_iter().map(|l| l as u64).collect();
    let (offsets, data) = read_strings(c, &lens)?;
    let width = c.u8()?;
    // A code above u32 saturates, so the range check below still sees it.
    let codes = bitunpack_map(c, width, n, |k| u32::try_from(k).unwrap_or(u32::MAX))?;
    if codes.iter().any(|k| *k as usize > n_dict) {
        return Err(c.corrupt("dictionary code out of range"));
    }
    Ok(DictColumn { dict: StrColumn { offsets, data, validity: None }, codes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edge_ints() -> impl Strategy<Value = i64> {
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1), any::<i64>(), -1000i64..1000]
    }

    proptest! {
        #[test]
        fn bitpack_roundtrip(width in 0u8..=64, raw in proptest::collection::vec(any::<u64>(), 0..100)) {
            let vals: Vec<u64> = raw.iter().map(|v| v & mask(width)).map(|v| if width == 0 { 0 } else { v }).collect();
            let mut buf = Vec::new();
            bitpack(&vals, width, &mut buf);
            let mut c = Cursor::new(&buf);
            prop_assert_eq!(bitunpack(&mut c, width, vals.len()).expect("unpack"), vals);
            prop_assert!(c.finish().is_ok());
        }

        #[test]
        fn word_unpacking_matches_bit_by_bit(width in 1u8..=64, src in proptest::collection::vec(any::<u8>(), 0..200)) {
            let n = src.len() * 8 / width as usize;
            let got = unpack_bits(&src, width, n);
            for (i, v) in got.iter().enumerate() {
                let mut want = 0u64;
                for k in 0..width as usize {
                    let bit = i * width as usize + k;
                    want |= u64::from((src[bit / 8] >> (bit % 8)) & 1) << k;
                }
                prop_assert_eq!(*v, want, "value {} of width {}", i, width);
            }
        }

        #[test]
        fn dictionary_expands_to_its_values(vals in proptest::collection::vec(proptest::option::of("[a-zé]{0,6}"), 0..100)) {
            let refs: Vec<Option<&str>> = vals.iter().map(|v| v.as_deref()).collect();
            let mut buf = Vec::new();
            encode_dict(&refs, &mut buf);
            let d = decode_dict(&mut Cursor::new(&buf), refs.len()).expect("decode");
            let s = d.to_strings();
            prop_assert_eq!(s.clone(), StrColumn::from_options(refs.iter().copied()));
            for (i, v) in refs.iter().enumerate() {
                prop_assert_eq!(s.get(i), *v);
            }
        }

        #[test]
        fn ints_roundtrip(vals in proptest::collection::vec(edge_ints(), 0..200)) {
            let mut buf = Vec::new();
            encode_ints(&vals, &mut buf);
            let mut c = Cursor::new(&buf);
            prop_assert_eq!(decode_ints(&mut c, vals.len()).expect("decode"), vals);
            prop_assert!(c.finish().is_ok());
        }

        #[test]
        fn sorted_timestamps_use_few_bits(start in 0i64..1_800_000_000_000_000_000, steps in proptest::collection::vec(0i64..1_000_000_000, 1..500)) {
            let mut t = start;
            let vals: Vec<i64> = steps.iter().map(|s| { t += s; t }).collect();
            let mut buf = Vec::new();
            encode_ints(&vals, &mut buf);
            // 30 bits per delta at most, versus 64 raw.
            prop_assert!(buf.len() <= 32 + vals.len() * 30 / 8 + 1);
            let mut c = Cursor::new(&buf);
            prop_assert_eq!(decode_ints(&mut c, vals.len()).expect("decode"), vals);
        }

        #[test]
        fn floats_roundtrip(vals in proptest::collection::vec(any::<f64>(), 0..100)) {
            let mut buf = Vec::new();
            encode_floats(&vals, &mut buf);
            let got = decode_floats(&mut Cursor::new(&buf), vals.len()).expect("decode");
            prop_assert_eq!(got.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), vals.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn validity_roundtrip(vals in proptest::collection::vec(any::<bool>(), 0..100)) {
            let mut buf = Vec::new();
            encode_validity(&vals, &mut buf);
            let got = decode_validity(&mut Cursor::new(&buf), vals.len()).expect("decode");
            let got = got.unwrap_or_else(|| vec![true; vals.len()]);
            prop_assert_eq!(got, vals);
        }

        #[test]
        fn plain_strings_roundtrip(vals in proptest::collection::vec(proptest::option::of(".{0,20}"), 0..50)) {
            let refs: Vec<Option<&str>> = vals.iter().map(|v| v.as_deref()).collect();
            let mut buf = Vec::new();
            encode_plain(&refs, &mut buf);
            let mut c = Cursor::new(&buf);
            let col = decode_plain(&mut c, refs.len()).expect("decode");
            prop_assert!(c.finish().is_ok());
            prop_assert_eq!((0..refs.len()).map(|i| col.get(i)).collect::<Vec<_>>(), refs);
        }

        #[test]
        fn dict_strings_roundtrip(vals in proptest::collection::vec(proptest::option::of("(a|b|\u{e9}t\u{e9}|)"), 0..80)) {
            let refs: Vec<Option<&str>> = vals.iter().map(|v| v.as_deref()).collect();
            let mut buf = Vec::new();
            encode_dict(&refs, &mut buf);
            let mut c = Cursor::new(&buf);
            let col = decode_dict(&mut c, refs.len()).expect("decode");
            prop_assert!(c.finish().is_ok());
            prop_assert_eq!((0..refs.len()).map(|i| col.get(i)).collect::<Vec<_>>(), refs.clone());
            let plain = col.to_strings();
            prop_assert_eq!((0..refs.len()).map(|i| plain.get(i)).collect::<Vec<_>>(), refs);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), n in 0usize..100) {
            let _ = decode_ints(&mut Cursor::new(&bytes), n);
            let _ = decode_floats(&mut Cursor::new(&bytes), n);
            let _ = decode_plain(&mut Cursor::new(&bytes), n);
            let _ = decode_dict(&mut Cursor::new(&bytes), n);
            let _ = decode_validity(&mut Cursor::new(&bytes), n);
        }
    }
}
