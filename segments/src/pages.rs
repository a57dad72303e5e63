//! Paged text chunks: a block's free text stored as independently compressed pages of rows,
//! so that reading a few rows decompresses one page instead of the block's megabytes.
//!
//! Layout of a paged chunk (all `u32` little endian; the chunk's codec id carries
//! [`crate::format::PAGED`] and the pages' codec):
//!
//! ```text
//! u32 n_pages, u32 page_rows,
//! n_pages x (u32 stored_len, u32 raw_len [, u32 crc]),
//! the pages' stored bytes, in order
//! ```
//!
//! The per-page `crc` (CRC32 of the page's stored bytes) is present in checksummed
//! directories, the ones of chunks compressed against the segment's text dictionary
//! ([`crate::format::DICT_PAGES`]): their chunk CRC covers the directory only, so a point
//! read verifies the pages it reads and no more.
//!
//! Page `k` holds rows `k * page_rows ..` (the last page the rest); its raw bytes are the
//! column's ordinary encoding of those rows.

use std::borrow::Borrow;
use std::ops::Range;

use crate::column::{encode_column, ColumnId};
use crate::event::Event;
use crate::format::Codec;

/// One page of a paged chunk, as found in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Rows of the block the page holds.
    pub rows: Range<usize>,
    /// Its stored bytes within the chunk.
    pub stored: Range<usize>,
    /// Its length once decompressed.
    pub raw_len: usize,
    /// CRC32 of its stored bytes (checksummed directories only).
    pub crc: Option<u32>,
}

/// Bytes of one directory entry.
fn entry_len(checksummed: bool) -> usize {
    if checksummed {
        12
    } else {
        8
    }
}

/// Encode column `id` of `rows` as pages of `page_rows` rows, each compressed with `codec`.
/// Returns the chunk's bytes and the sum of the pages' raw lengths.
pub fn encode_pages<E: Borrow<Event>>(id: ColumnId, rows: &[E], page_rows: usize, codec: Codec) -> (Vec<u8>, u32) {
    let (out, raw_total) = encode_pages_with(id, rows, page_rows, false, |raw| Some(codec.compress(raw)))
        .unwrap_or_else(|| (Vec::new(), 0));
    (out, raw_total)
}

/// Encode column `id` of `rows` as pages of `page_rows` rows, each compressed by `compress`;
/// `checksummed` adds each page's CRC32 to the directory. `None` if `compress` fails.
/// Returns the chunk's bytes and the sum of the pages' raw lengths.
pub fn encode_pages_with<E: Borrow<Event>>(
    id: ColumnId,
    rows: &[E],
    page_rows: usize,
    checksummed: bool,
    mut compress: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Option<(Vec<u8>, u32)> {
    let page_rows = page_rows.max(1);
    let mut raw = Vec::new();
    let mut dir = Vec::new();
    let mut body = Vec::new();
    let mut raw_total = 0u32;
    for page in rows.chunks(page_rows) {
        raw.clear();
        encode_column(id, page, &mut raw);
        let stored = compress(&raw)?;
        dir.push((stored.len() as u32, raw.len() as u32, crc32fast::hash(&stored)));
        raw_total = raw_total.saturating_add(raw.len() as u32);
        body.extend_from_slice(&stored);
    }
    let mut out = Vec::with_capacity(8 + dir.len() * entry_len(checksummed) + body.len());
    out.extend_from_slice(&(dir.len() as u32).to_le_bytes());
    out.extend_from_slice(&(page_rows as u32).to_le_bytes());
    for (s, r, crc) in dir {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&r.to_le_bytes());
        if checksummed {
            out.extend_from_slice(&crc.to_le_bytes());
        }
    }
    out.extend_from_slice(&body);
    Some((out, raw_total))
}

/// Length of a paged chunk's directory (what a checksummed chunk's CRC covers), checked
/// against the chunk's length.
pub fn directory_len(chunk: &[u8], checksummed: bool) -> Result<usize, String> {
    let n_pages = chunk
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
        .ok_or("page directory cut at byte 0")?;
    n_pages
        .checked_mul(entry_len(checksummed))
        .and_then(|d| d.checked_add(8))
        .filter(|len| *len <= chunk.len())
        .ok_or_else(|| "page directory longer than the chunk".to_owned())
}

/// Read the page directory of a chunk holding `block_rows` rows (`checksummed`: entries carry
/// a CRC32). Every length is checked against the bytes present; the pages must cover exactly
/// the block's rows.
pub fn parse_pages(chunk: &[u8], block_rows: usize, max_raw: usize, checksummed: bool) -> Result<Vec<Page>, String> {
    let u32_at = |at: usize| -> Result<usize, String> {
        chunk
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
            .ok_or_else(|| format!("page directory cut at byte {at}"))
    };
    let n_pages = u32_at(0)?;
    let page_rows = u32_at(4)?;
    if page_rows == 0 || n_pages != block_rows.div_ceil(page_rows) {
        return Err(format!("{n_pages} pages of {page_rows} rows do not cover a block of {block_rows} rows"));
    }
    let entry = entry_len(checksummed);
    let body_start = n_pages.checked_mul(entry).and_then(|d| d.checked_add(8)).ok_or("page directory too large")?;
    if body_start > chunk.len() {
        return Err("page directory longer than the chunk".into());
    }
    let mut pages = Vec::with_capacity(n_pages);
    let mut at = body_start;
    for k in 0..n_pages {
        let stored_len = u32_at(8 + k * entry)?;
        let raw_len = u32_at(12 + k * entry)?;
        let crc = if checksummed { Some(u32_at(16 + k * entry)? as u32) } else { None };
        let end = at.checked_add(stored_len).filter(|e| *e <= chunk.len()).ok_or("page outside the chunk")?;
        if raw_len > max_raw {
            return Err(format!("page {k} claims {raw_len} raw bytes"));
        }
        let first = k * page_rows;
        pages.push(Page { rows: first..(first + page_rows).min(block_rows), stored: at..end, raw_len, crc });
        at = end;
    }
    if at != chunk.len() {
        return Err(format!("{} bytes after the last page", chunk.len() - at));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                content: (i % 7 != 3).then(|| format!("row {i} says {}", "é".repeat(i % 5))),
                ..Event::default()
            })
            .collect()
    }

    proptest! {
        /// Pages cover every row once, in order, and each decodes to its rows' values.
        #[test]
        fn pages_round_trip(n in 1usize..300, page_rows in 1usize..70, lz4 in any::<bool>()) {
            let evs = events(n);
            let codec = if lz4 { Codec::Lz4 } else { Codec::Zstd(3) };
            let (chunk, raw_total) = encode_pages(ColumnId::Content, &evs, page_rows, codec);
            let pages = parse_pages(&chunk, n, 1 << 30, false).expect("directory");
            prop_assert_eq!(pages.iter().map(|p| p.raw_len as u32).sum::<u32>(), raw_total);
            let mut next = 0;
            for p in &pages {
                prop_assert_eq!(p.rows.start, next);
                next = p.rows.end;
                let raw = codec.decompress(&chunk[p.stored.clone()], p.raw_len).expect("page");
                let col = crate::column::decode_column(ColumnId::Content, &raw, p.rows.len()).expect("decode");
                let crate::ColumnData::Str(s) = col else { panic!("content decodes to strings") };
                for (i, r) in p.rows.clone().enumerate() {
                    prop_assert_eq!(s.get(i), evs[r].content.as_deref());
                }
            }
            prop_assert_eq!(next, n);
        }

        /// A directory cut short or padded, or claiming another row count, is an error, never
        /// a panic.
        #[test]
        fn bad_directories_are_errors(n in 1usize..100, page_rows in 1usize..40, cut in any::<prop::sample::Index>()) {
            let (chunk, _) = encode_pages(ColumnId::Content, &events(n), page_rows, Codec::Lz4);
            let cut = cut.index(chunk.len());
            prop_assert!(parse_pages(&chunk[..cut], n, 1 << 30, false).is_err());
            let mut longer = chunk.clone();
            longer.push(0);
            prop_assert!(parse_pages(&longer, n, 1 << 30, false).is_err());
            prop_assert!(parse_pages(&chunk, n + page_rows, 1 << 30, false).is_err());
            // The same bytes read as a checksummed directory do not fit either.
            prop_assert!(parse_pages(&chunk, n, 1 << 30, true).is_err());
        }

        /// Checksummed directories: each page's CRC is that of its stored bytes, and the
        /// directory length is where the first page starts.
        #[test]
        fn checksummed_pages_round_trip(n in 1usize..300, page_rows in 1usize..70) {
            let evs = events(n);
            let (chunk, raw_total) =
                encode_pages_with(ColumnId::Content, &evs, page_rows, true, |raw| Some(Codec::Lz4.compress(raw)))
                    .expect("pages");
            let pages = parse_pages(&chunk, n, 1 << 30, true).expect("directory");
            prop_assert_eq!(pages.iter().map(|p| p.raw_len as u32).sum::<u32>(), raw_total);
            prop_assert_eq!(directory_len(&chunk, true).expect("len"), pages[0].stored.start);
            for p in &pages {
                prop_assert_eq!(p.crc, Some(crc32fast::hash(&chunk[p.stored.clone()])));
                let raw = Codec::Lz4.decompress(&chunk[p.stored.clone()], p.raw_len).expect("page");
                let col = crate::column::decode_column(ColumnId::Content, &raw, p.rows.len()).expect("decode");
                let crate::ColumnData::Str(s) = col else { panic!("content decodes to strings") };
                for (i, r) in p.rows.clone().enumerate() {
                    prop_assert_eq!(s.get(i), evs[r].content.as_deref());
                }
            }
            prop_assert!(directory_len(&chunk[..4], true).is_err() || n == 0);
        }
    }
}
