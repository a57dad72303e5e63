//! A roaring bitmap as a flat bit vector: bit `i % 64` of word `i / 64` is set when value `i`
//! is in the bitmap. The query layer masks the rows of dense selections with it, a block at a
//! time, instead of listing every selected row.
//!
//! The words are read from roaring's portable serialization
//! (<https://github.com/RoaringBitmap/RoaringFormatSpec>), the one public view of the
//! containers: a bitmap container's 1024 words are copied as they are, a run container fills
//! its ranges, and only array containers (at most 4096 values each) are set a value at a time.

use roaring::RoaringBitmap;

const SERIAL_COOKIE_NO_RUNCONTAINER: u32 = 12346;
const SERIAL_COOKIE: u32 = 12347;
/// Run-format bitmaps with fewer containers than this carry no offset table.
const NO_OFFSET_THRESHOLD: usize = 4;
/// An array container holds at most this many values; more make a bitmap container.
const ARRAY_LIMIT: usize = 4096;
const BITMAP_WORDS: usize = 1024;

/// The values of `bm` below `len` as `len.div_ceil(64)` words (bits at or past `len` clear).
/// `None` only if roaring's serialization is not the documented format.
pub fn flat_words(bm: &RoaringBitmap, len: u32) -> Option<Vec<u64>> {
    let mut bytes = Vec::with_capacity(bm.serialized_size());
    bm.serialize_into(&mut bytes).ok()?;
    let mut words = vec![0u64; (len as usize).div_ceil(64)];
    read_into(&bytes, &mut words)?;
    if !len.is_multiple_of(64) {
        if let Some(last) = words.last_mut() {
            *last &= (1u64 << (len % 64)) - 1;
        }
    }
    Some(words)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Set the bits of the serialized bitmap `bytes` in `words` (values past the words ignored).
fn read_into(bytes: &[u8], words: &mut [u64]) -> Option<()> {
    let mut r = Reader { bytes, pos: 0 };
    let cookie = r.u32()?;
    let (count, run_flags) = if cookie == SERIAL_COOKIE_NO_RUNCONTAINER {
        (r.u32()? as usize, None)
    } else if cookie & 0xFFFF == SERIAL_COOKIE {
        let count = (cookie >> 16) as usize + 1;
        (count, Some(r.take(count.div_ceil(8))?))
    } else {
        return None;
    };
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let key = r.u16()?;
        let cardinality = usize::from(r.u16()?) + 1;
        headers.push((key, cardinality));
    }
    if run_flags.is_none() || count >= NO_OFFSET_THRESHOLD {
        r.take(count.checked_mul(4)?)?;
    }
    for (i, (key, cardinality)) in headers.into_iter().enumerate() {
        let base = usize::from(key) << 16;
        let is_run = run_flags.is_some_and(|f| f[i / 8] & (1 << (i % 8)) != 0);
        if is_run {
            let runs = r.u16()?;
            for _ in 0..runs {
                let start = base + usize::from(r.u16()?);
                let end = start + usize::from(r.u16()?) + 1;
                set_range(words, start, end);
            }
        } else if cardinality > ARRAY_LIMIT {
            let src = r.take(BITMAP_WORDS * 8)?;
            let first = base / 64;
            for (w, b) in words.iter_mut().skip(first).zip(src.chunks_exact(8)) {
                *w |= u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            }
        } else {
            for b in r.take(cardinality * 2)?.chunks_exact(2) {
                let v = base + usize::from(u16::from_le_bytes([b[0], b[1]]));
                if let Some(w) = words.get_mut(v / 64) {
                    *w |= 1 << (v % 64);
                }
            }
        }
    }
    (r.pos == bytes.len()).then_some(())
}

/// Set bits `start..end` (clipped to the words).
fn set_range(words: &mut [u64], start: usize, end: usize) {
    let end = end.min(words.len() * 64);
    if start >= end {
        return;
    }
    let (first, last) = (start / 64, (end - 1) / 64);
    let head = u64::MAX << (start % 64);
    let tail = u64::MAX >> (63 - (end - 1) % 64);
    if first == last {
        words[first] |= head & tail;
        return;
    }
    words[first] |= head;
    for w in &mut words[first + 1..last] {
        *w = u64::MAX;
    }
    words[last] |= tail;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn listed(words: &[u64]) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, w) in words.iter().enumerate() {
            for b in 0..64 {
                if w & (1 << b) != 0 {
                    out.push((i * 64 + b) as u32);
                }
            }
        }
        out
    }

    /// Bitmaps with array, bitmap and run containers, over several containers.
    fn bitmaps() -> impl Strategy<Value = RoaringBitmap> {
        let sparse =
            proptest::collection::vec(0u32..300_000, 0..500).prop_map(|v| v.into_iter().collect::<RoaringBitmap>());
        let dense = (0u32..200_000, 1u32..9, 0u32..8).prop_map(|(start, step, skip)| {
            (start..start + 120_000).filter(|v| v % step != skip % step).collect::<RoaringBitmap>()
        });
        let runs = proptest::collection::vec((0u32..300_000, 1u32..5_000), 0..20).prop_map(|ranges| {
            let mut bm = RoaringBitmap::new();
            for (s, n) in ranges {
                bm.insert_range(s..s + n);
            }
            bm
        });
        (prop_oneof![sparse, dense, runs], any::<bool>()).prop_map(|(mut bm, optimize)| {
            if optimize {
                bm.optimize();
            } else {
                bm.remove_run_compression();
            }
            bm
        })
    }

    proptest! {
        /// The words name exactly the bitmap's values below `len`.
        #[test]
        fn words_hold_the_values_below_len(bm in bitmaps(), len in 0u32..400_000) {
            let words = flat_words(&bm, len).expect("documented format");
            prop_assert_eq!(words.len(), (len as usize).div_ceil(64));
            let want: Vec<u32> = bm.range(..len).collect();
            prop_assert_eq!(listed(&words), want);
        }

        #[test]
        fn set_range_sets_exactly_the_range(start in 0usize..700, n in 0usize..700, len in 0usize..12) {
            let mut words = vec![0u64; len];
            set_range(&mut words, start, start + n);
            let want: Vec<u32> = (start..start + n).filter(|v| *v < len * 64).map(|v| v as u32).collect();
            prop_assert_eq!(listed(&words), want);
        }
    }

    #[test]
    fn run_containers_are_read_as_ranges() {
        let mut bm = RoaringBitmap::new();
        bm.insert_range(10..70_000);
        bm.insert_range(131_000..131_072);
        bm.optimize();
        let mut bytes = Vec::new();
        bm.serialize_into(&mut bytes).expect("serialize");
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), SERIAL_COOKIE as u16, "run containers");
        let words = flat_words(&bm, 140_000).expect("words");
        assert_eq!(listed(&words), bm.iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_serialization_in_another_format_is_refused() {
        assert_eq!(read_into(&[1, 2, 3, 4], &mut [0u64; 2]), None);
        // A header that promises more bytes than there are.
        let mut bytes = Vec::new();
        RoaringBitmap::from_iter([1u32, 2, 3]).serialize_into(&mut bytes).expect("serialize");
        bytes.pop();
        assert_eq!(read_into(&bytes, &mut [0u64; 2]), None);
    }
}
