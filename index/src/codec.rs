//! Byte encoding of a [`SegmentIndex`] (little endian, every length checked on decode):
//!
//! ```text
//! u32 rows
//! 6 x column: u32 n_values, then per value: u8 present (0 = null), [u32 len, utf8 bytes],
//!             u32 bitmap_len, roaring portable serialization
//! u32 n_traces, n_traces x 16-byte ids (sorted), then per trace: u32 bitmap_len, bitmap
//! optional text section (absent in segments written before it existed):
//!   u8 1, u32 n_blocks, u32 n_tokens, then per token (sorted): varint bytes shared with the
//!   previous token, varint suffix length, suffix bytes, varint block count, block numbers as
//!   varint deltas (the first absolute). u8 2 instead of 1: the same, and the first token is
//!   the empty one, whose blocks kept only their tokens of at most 16 bytes (see
//!   `text::ALWAYS_INDEXED`).
//! ```
//!
//! The text section is most of the bytes, and a reader needs it only for `LIKE`: [`decode`]
//! reads its header alone ([`TextSection`]) and [`TextIndex::decode`] the section itself, when
//! a query asks.

use std::collections::BTreeMap;

use roaring::RoaringBitmap;

use crate::text::{put_varint, TextIndexBuilder};
use crate::{SegmentIndex, TextIndex, TraceIndex, ValueIndex};

const TEXT_SECTION: u8 = 1;
/// A text section whose first token is the empty one, listing the blocks that kept only their
/// short tokens ([`crate::text::ALWAYS_INDEXED`]): a reader that predates it would take those
/// lists as complete, so it names the section unknown and refuses the segment instead.
const TEXT_SECTION_PARTIAL: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexDecodeError {
    #[error("index section truncated at byte {0}")]
    Truncated(usize),
    #[error("index section corrupt at byte {at}: {what}")]
    Corrupt { at: usize, what: &'static str },
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bitmap(out: &mut Vec<u8>, b: &RoaringBitmap) {
    put_u32(out, b.serialized_size() as u32);
    // Writing into a Vec cannot fail.
    let _ = b.serialize_into(&mut *out);
}

/// Tokens front-coded against the previous one (sorted neighbours share long prefixes), block
/// lists as varint deltas.
fn encode_text(t: &TextIndex, out: &mut Vec<u8>) {
    let mut writer = TextSectionWriter::start(out, t.n_blocks(), !t.partial_blocks().is_empty());
    t.for_each(|tok, blocks| writer.push(out, tok, blocks));
    writer.finish(out);
}

/// Writes a text section into `out`: its header, then its tokens one after another in byte
/// order; the token count in the header is filled in at the end.
#[derive(Debug)]
pub(crate) struct TextSectionWriter {
    count_at: usize,
    prev: Vec<u8>,
    tokens: u32,
}

impl TextSectionWriter {
    pub(crate) fn start(out: &mut Vec<u8>, n_blocks: u32, partial: bool) -> Self {
        out.push(if partial { TEXT_SECTION_PARTIAL } else { TEXT_SECTION });
        put_u32(out, n_blocks);
        put_u32(out, 0);
        TextSectionWriter { count_at: out.len() - 4, prev: Vec::with_capacity(64), tokens: 0 }
    }

    pub(crate) fn push(&mut self, out: &mut Vec<u8>, tok: &[u8], blocks: &[u32]) {
        let shared = self.prev.iter().zip(tok).take_while(|(a, b)| a == b).count();
        put_varint(out, shared as u32);
        put_varint(out, (tok.len() - shared) as u32);
        out.extend_from_slice(&tok[shared..]);
        put_varint(out, blocks.len() as u32);
        let mut last = 0u32;
        for (k, b) in blocks.iter().enumerate() {
            put_varint(out, if k == 0 { *b } else { b - last });
            last = *b;
        }
        self.prev.clear();
        self.prev.extend_from_slice(tok);
        self.tokens += 1;
    }

    pub(crate) fn finish(self, out: &mut [u8]) {
        out[self.count_at..self.count_at + 4].copy_from_slice(&self.tokens.to_le_bytes());
    }
}

pub(crate) fn encode(idx: &SegmentIndex, text: Option<&TextIndex>, out: &mut Vec<u8>) {
    put_u32(out, idx.rows);
    for col in &idx.columns {
        put_u32(out, col.entries.len() as u32);
        for (k, b) in &col.entries {
            match k {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    put_u32(out, s.len() as u32);
                    out.extend_from_slice(s.as_bytes());
                }
            }
            put_bitmap(out, b);
        }
    }
    put_u32(out, idx.traces.ids.len() as u32);
    for id in &idx.traces.ids {
        out.extend_from_slice(id);
    }
    for (_, b) in idx.traces.traces() {
        put_bitmap(out, &b);
    }
    if let Some(t) = text {
        encode_text(t, out);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexDecodeError> {
        let end = self.pos.checked_add(n).ok_or(IndexDecodeError::Truncated(self.pos))?;
        let s = self.buf.get(self.pos..end).ok_or(IndexDecodeError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, IndexDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, IndexDecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn varint(&mut self) -> Result<u32, IndexDecodeError> {
        let at = self.pos;
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            v |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                if shift == 28 && b > 0x0f {
                    break;
                }
                return Ok(v);
            }
        }
        Err(IndexDecodeError::Corrupt { at, what: "bad varint" })
    }
    /// A count that must fit in the remaining bytes at `min_each` bytes per item.
    fn count(&mut self, min_each: usize) -> Result<usize, IndexDecodeError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        if n.saturating_mul(min_each) > self.buf.len() - self.pos {
            return Err(IndexDecodeError::Corrupt { at, what: "count larger than the section" });
        }
        Ok(n)
    }
    fn bitmap(&mut self, rows: u32) -> Result<RoaringBitmap, IndexDecodeError> {
        let at = self.pos;
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let b = RoaringBitmap::deserialize_from(bytes)
            .map_err(|_| IndexDecodeError::Corrupt { at, what: "invalid roaring bitmap" })?;
        if b.max().is_some_and(|m| m >= rows) {
            return Err(IndexDecodeError::Corrupt { at, what: "row id beyond the segment" });
        }
        Ok(b)
    }
}

/// Where an encoded index's text section starts, and the block count its header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextSection {
    /// Byte offset of the section in the encoded index.
    pub at: usize,
    pub n_blocks: u32,
}

/// The row count and the text section's place, read off the encoded index without decoding
/// it: lengths are checked against the bytes present, values and bitmaps skipped unread (a
/// segment opening checks this much; [`decode`] checks the rest when a query loads it).
pub(crate) fn skim(bytes: &[u8]) -> Result<(u32, Option<TextSection>), IndexDecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let rows = r.u32()?;
    for _ in 0..6 {
        let n = r.count(5)?;
        for _ in 0..n {
            let at = r.pos;
            match r.u8()? {
                0 => {}
                1 => {
                    let len = r.u32()? as usize;
                    r.take(len)?;
                }
                _ => return Err(IndexDecodeError::Corrupt { at, what: "bad null marker" }),
            }
            let len = r.u32()? as usize;
            r.take(len)?;
        }
    }
    let n = r.count(20)?;
    r.take(n * 16)?;
    for _ in 0..n {
        let len = r.u32()? as usize;
        r.take(len)?;
    }
    text_header(&mut r).map(|t| (rows, t))
}

/// The text section's marker and block count, if any bytes follow the rest of the index.
fn text_header(r: &mut Reader<'_>) -> Result<Option<TextSection>, IndexDecodeError> {
    if r.pos >= r.buf.len() {
        return Ok(None);
    }
    let at = r.pos;
    if !matches!(r.u8()?, TEXT_SECTION | TEXT_SECTION_PARTIAL) {
        return Err(IndexDecodeError::Corrupt { at, what: "unknown index section" });
    }
    Ok(Some(TextSection { at, n_blocks: r.u32()? }))
}

/// Decode everything but the text section, whose header only is read and checked.
pub(crate) fn decode(bytes: &[u8]) -> Result<(SegmentIndex, Option<TextSection>), IndexDecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let rows = r.u32()?;
    let mut columns: [ValueIndex; 6] = Default::default();
    for col in columns.iter_mut() {
        let n = r.count(5)?;
        let mut entries = BTreeMap::new();
        for _ in 0..n {
            let at = r.pos;
            let key = match r.u8()? {
                0 => None,
                1 => {
                    let len = r.u32()? as usize;
                    let s = r.take(len)?;
                    Some(
                        std::str::from_utf8(s)
                            .map_err(|_| IndexDecodeError::Corrupt { at, what: "value is not UTF-8" })?
                            .to_owned(),
                    )
                }
                _ => return Err(IndexDecodeError::Corrupt { at, what: "bad null marker" }),
            };
            let mut b = r.bitmap(rows)?;
            // Segments written before value bitmaps were stored in their smallest form hold
            // runs as arrays and bitmaps, and the bitmaps stay in memory while in use.
            b.optimize();
            entries.insert(key, b);
        }
        col.entries = entries;
    }
    let n = r.count(20)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let s = r.take(16)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(s);
        ids.push(id);
    }
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(IndexDecodeError::Corrupt { at: r.pos, what: "trace ids not sorted" });
    }
    let mut traces = TraceIndex::default();
    for id in ids {
        let at = r.pos;
        if !traces.push(id, &r.bitmap(rows)?) {
            return Err(IndexDecodeError::Corrupt { at, what: "trace ids not sorted" });
        }
    }
    traces.shrink();
    let text = text_header(&mut r)?;
    Ok((SegmentIndex { columns, traces, rows }, text))
}

/// Decode a text section: `bytes` starts at its first byte and ends with its last. Offsets in
/// errors count from the section's start.
pub(crate) fn decode_text(bytes: &[u8]) -> Result<TextIndex, IndexDecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    if !matches!(r.u8()?, TEXT_SECTION | TEXT_SECTION_PARTIAL) {
        return Err(IndexDecodeError::Corrupt { at: 0, what: "unknown index section" });
    }
    let n_blocks = r.u32()?;
    // Each token takes at least 3 bytes (shared, suffix length, block count).
    let n_tokens = r.count(3)?;
    let mut t = TextIndexBuilder::new(n_blocks, n_tokens);
    let (mut token, mut blocks) = (Vec::<u8>::with_capacity(64), Vec::<u32>::new());
    for _ in 0..n_tokens {
        let at = r.pos;
        let shared = r.varint()? as usize;
        let suffix = r.varint()? as usize;
        if shared > token.len() {
            return Err(IndexDecodeError::Corrupt { at, what: "token shares more than the previous one" });
        }
        token.truncate(shared);
        token.extend_from_slice(r.take(suffix)?);
        if token.len() > u32::MAX as usize {
            return Err(IndexDecodeError::Corrupt { at, what: "token text too large" });
        }
        let count = r.varint()? as usize;
        if count > r.buf.len() - r.pos {
            return Err(IndexDecodeError::Corrupt { at: r.pos, what: "block list larger than the section" });
        }
        blocks.clear();
        let mut block = 0u32;
        for k in 0..count {
            let at = r.pos;
            let v = r.varint()?;
            block = if k == 0 { v } else { block.saturating_add(v) };
            if block >= n_blocks {
                return Err(IndexDecodeError::Corrupt { at, what: "block number beyond the segment" });
            }
            blocks.push(block);
        }
        if blocks.is_empty() || t.more_len() + blocks.len() >= 1 << 30 {
            return Err(IndexDecodeError::Corrupt { at, what: "token without blocks, or too many" });
        }
        t.push(&token, &blocks);
    }
    let t = t.finish();
    if r.pos != bytes.len() {
        return Err(IndexDecodeError::Corrupt { at: r.pos, what: "trailing bytes" });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IndexedColumn;
    use proptest::prelude::*;

    /// Both parts: what a reader gets on open, then the token index it decodes on demand.
    fn decode_all(bytes: &[u8]) -> Result<(SegmentIndex, Option<TextIndex>), IndexDecodeError> {
        let (idx, section) = decode(bytes)?;
        let text = section.map(|s| decode_text(&bytes[s.at..])).transpose()?;
        if let (Some(s), Some(t)) = (section, &text) {
            assert_eq!(s.n_blocks, t.n_blocks(), "the header read on open names the block count");
        }
        Ok((idx, text))
    }

    #[test]
    fn text_section_roundtrips_and_old_indexes_still_decode() {
        let mut b = crate::IndexBuilder::new();
        b.push([Some("t"), Some("a"), None, Some("k"), Some("ok"), None], [7; 16]);
        let idx = b.finish();
        let mut old = Vec::new();
        encode(&idx, None, &mut old);
        assert_eq!(decode(&old).expect("without text"), (idx.clone(), None));
        let mut sets = vec![crate::text::TokenSet::default(), crate::text::TokenSet::default()];
        crate::text::tokenize("Refund ORD-77 please", &mut sets[0]);
        crate::text::tokenize("other words", &mut sets[1]);
        let text = TextIndex::from_blocks(sets);
        let mut new = Vec::new();
        encode(&idx, Some(&text), &mut new);
        let section = TextSection { at: old.len(), n_blocks: 2 };
        assert_eq!(decode(&new).expect("head").1, Some(section));
        // Skimming finds the same, from the whole or from the bytes through the header.
        assert_eq!(skim(&old), Ok((idx.rows, None)));
        assert_eq!(skim(&new), Ok((idx.rows, Some(section))));
        assert_eq!(skim(&new[..old.len() + 5]), Ok((idx.rows, Some(section))));
        for cut in (0..old.len()).chain(old.len() + 1..old.len() + 5) {
            assert!(skim(&new[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_all(&new).expect("with text"), (idx, Some(text)));
        // Every truncation of the text section is an error, never a panic: on open when its
        // header is cut, else when the section is decoded.
        for cut in old.len() + 1..new.len() {
            assert!(decode_all(&new[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = new.clone();
        longer.push(0);
        assert!(decode_all(&longer).is_err(), "trailing bytes after the text section");
    }

    /// Rows in the compaction order hold each agent's rows as one run: built or decoded
    /// (also from a segment that stored the run as plain containers), its bitmap is a run
    /// container of a few bytes, where plain containers of 20,000 rows take 8 KB each.
    #[test]
    fn contiguous_values_are_kept_as_runs() {
        let mut b = crate::IndexBuilder::new();
        for row in 0..100_000u32 {
            let agent = format!("agent-{}", row / 20_000);
            let kind = ["thought", "tool_call", "llm_call"][(row * 7919 % 3) as usize];
            b.push([Some("t"), Some(&agent), None, Some(kind), Some("ok"), None], [(row / 10) as u8; 16]);
        }
        let idx = b.finish();
        let agents = |idx: &SegmentIndex| -> Vec<(u64, usize)> {
            idx.column(IndexedColumn::AgentId).bitmaps().map(|(_, b)| (b.len(), b.serialized_size())).collect()
        };
        assert_eq!(agents(&idx).len(), 5);
        assert!(agents(&idx).iter().all(|&(rows, bytes)| rows == 20_000 && bytes < 64), "{:?}", agents(&idx));
        // The same index with plain containers, as older segments stored it.
        let mut plain = idx.clone();
        for col in plain.columns.iter_mut() {
            for bm in col.entries.values_mut() {
                bm.remove_run_compression();
            }
        }
        assert!(agents(&plain).iter().all(|&(_, bytes)| bytes > 8192), "{:?}", agents(&plain));
        let mut buf = Vec::new();
        encode(&plain, None, &mut buf);
        let (decoded, _) = decode(&buf).expect("decode");
        assert!(agents(&decoded).iter().all(|&(_, bytes)| bytes < 64), "{:?}", agents(&decoded));
        assert_eq!(decoded, idx, "the same rows");
        let kinds: Vec<u64> = decoded.column(IndexedColumn::Kind).bitmaps().map(|(_, b)| b.len()).collect();
        assert_eq!(kinds.iter().sum::<u64>(), 100_000);
    }

    proptest! {
        #[test]
        fn text_sections_roundtrip(blocks in proptest::collection::vec(proptest::collection::vec("[a-c0-9é]{0,70}( [a-c0-9]{1,5})?", 0..8), 1..300)) {
            let sets: Vec<crate::text::TokenSet<'_>> = blocks
                .iter()
                .map(|texts| {
                    let mut set = crate::text::TokenSet::default();
                    for t in texts {
                        crate::text::tokenize(t, &mut set);
                    }
                    set
                })
                .collect();
            // Encoded straight from the blocks' tokens, as segment writers do, the section is
            // the same bytes as the index's own encoding.
            let mut acc = crate::text::TokenBlocks::default();
            for set in sets.iter().cloned() {
                acc.push_block(set);
            }
            let mut direct = Vec::new();
            acc.encode_section(&mut direct);
            let text = TextIndex::from_blocks(sets);
            let mut section = Vec::new();
            encode_text(&text, &mut section);
            prop_assert_eq!(&direct, &section);
            let idx = SegmentIndex::default();
            let mut buf = Vec::new();
            encode(&idx, Some(&text), &mut buf);
            prop_assert_eq!(decode_all(&buf).expect("decode"), (idx, Some(text)));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            let _ = decode_all(&bytes);
            let _ = decode_text(&bytes);
            let _ = skim(&bytes);
        }
    }
}
