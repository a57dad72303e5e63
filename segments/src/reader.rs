//! Reading a segment: mmap the file, validate trailer, footer and index up front, then decode
//! column blocks on demand. Every offset and length from the file is checked before use, so a
//! truncated or corrupted file yields [`SegmentError::Corrupt`] naming the file and block.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use index::{SegmentIndex, TextIndex, TextSection};
use memmap2::Mmap;

use crate::column::{decode_column, events_from_columns, ColumnData, ColumnEncoding, ColumnId, COLUMN_COUNT};
use crate::encoding::StrColumn;
use crate::error::SegmentError;
use crate::event::Event;
use crate::format::{
    BlockMeta, ChunkMeta, Codec, FooterExt, FooterHeader, BLOCK_META_LEN, CHUNK_META_LEN, DICT_PAGES, FOOTER_EXT_LEN,
    FOOTER_HEADER_LEN, FORMAT_VERSION, HEAD_MAGIC, MAX_RAW_CHUNK, MIN_FORMAT_VERSION, PAGED, TAIL_MAGIC, TRAILER_LEN,
};
use crate::pages::{directory_len, parse_pages, Page};
use crate::textdict::{decompress_with, DecompressionDictionary};

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open, validated, immutable segment.
pub struct Segment {
    path: PathBuf,
    bytes: Bytes,
    header: FooterHeader,
    blocks: Vec<BlockMeta>,
    chunks: Vec<ChunkMeta>,
    /// Where the token index of `content` lies in the decompressed index section: decoded
    /// only when a query asks ([`Segment::load_text_index`]), as it is most of the index's
    /// memory (about 47 bytes per event) and only `LIKE` reads it.
    text_section: Option<TextSection>,
    /// The text dictionary that [`DICT_PAGES`] chunks were compressed against.
    text_dict: Option<TextDictionary>,
    /// Unique among the segments this process opened (a cache key that no later segment
    /// reuses, unlike a path or an address).
    uid: u64,
    /// [`Segment::raw_bytes`], summed once at open.
    raw_bytes: u64,
}

/// A segment's text dictionary: where it lies in the file (checksummed at open), prepared for
/// decompression the first time a page needs it. A prepared dictionary holds a copy of the
/// dictionary and its entropy tables, about 90 KB for the 64 KiB default, and most queries
/// read no text: an open segment used to hold one from the start, about 90 of the 160 KB an
/// idle server kept per segment.
struct TextDictionary {
    range: std::ops::Range<usize>,
    prepared: std::sync::OnceLock<DecompressionDictionary>,
}

/// Source of [`Segment::uid`].
static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("path", &self.path).field("rows", &self.header.rows).finish()
    }
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: segment files are immutable once renamed into place: nothing in ActiveMirrorOS
    // writes to or truncates a published segment, it is only unlinked (which keeps an existing
    // mapping valid). Every read through the map is bounds-checked against its length.
    unsafe { Mmap::map(file) }
}

impl Segment {
    /// Map and validate the segment at `path`.
    pub fn open(path: &Path) -> Result<Segment, SegmentError> {
        let io = |source| SegmentError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bytes = if len == 0 { Bytes::Owned(Vec::new()) } else { Bytes::Mapped(map_file(&file).map_err(io)?) };
        Self::parse(path.to_path_buf(), bytes)
    }

    /// Validate a segment held in memory (tests and fuzzing).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Segment, SegmentError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn corrupt(path: &Path, block: Option<usize>, column: Option<ColumnId>, detail: impl Into<String>) -> SegmentError {
        SegmentError::Corrupt {
            path: path.to_path_buf(),
            block,
            column: column.map(ColumnId::name),
            detail: detail.into(),
        }
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Segment, SegmentError> {
        let bad = |d: String| Self::corrupt(&path, None, None, d);
        let n = bytes.len();
        if n < HEAD_MAGIC.len() + TRAILER_LEN + FOOTER_HEADER_LEN {
            return Err(bad(format!("file is {n} bytes, too short to be a segment (truncated?)")));
        }
        if bytes[..8] != HEAD_MAGIC {
            return Err(bad("bad head magic: not an ActiveMirrorOS segment".into()));
        }
        if bytes[n - 8..] != TAIL_MAGIC {
            return Err(bad("bad tail magic: the file is truncated or was not finished".into()));
        }
        let footer_len = u32::from_le_bytes([bytes[n - 16], bytes[n - 15], bytes[n - 14], bytes[n - 13]]) as usize;
        let footer_crc = u32::from_le_bytes([bytes[n - 12], bytes[n - 11], bytes[n - 10], bytes[n - 9]]);
        let footer_end = n - TRAILER_LEN;
        let footer_start = footer_end
            .checked_sub(footer_len)
            .filter(|s| *s >= 8 && footer_len >= FOOTER_HEADER_LEN)
            .ok_or_else(|| bad(format!("footer length {footer_len} does not fit the file")))?;
        let footer = &bytes[footer_start..footer_end];
        if crc32fast::hash(footer) != footer_crc {
            return Err(bad("footer checksum mismatch".into()));
        }
        let header: FooterHeader = bytemuck::pod_read_unaligned(&footer[..FOOTER_HEADER_LEN]);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&header.version) {
            return Err(bad(format!("unsupported format version {}", header.version)));
        }
        if header.n_columns as usize != COLUMN_COUNT {
            return Err(bad(format!("{} columns, expected {COLUMN_COUNT}", header.n_columns)));
        }
        // Version 3 on: the footer extension follows the header.
        let head_len = if header.version >= 3 { FOOTER_HEADER_LEN + FOOTER_EXT_LEN } else { FOOTER_HEADER_LEN };
        let nb = header.n_blocks as usize;
        let expect =
            nb.checked_mul(BLOCK_META_LEN + COLUMN_COUNT * CHUNK_META_LEN).and_then(|x| x.checked_add(head_len));
        if expect != Some(footer_len) {
            return Err(bad(format!("footer of {footer_len} bytes does not hold {nb} blocks")));
        }
        let ext: FooterExt = if header.version >= 3 {
            bytemuck::pod_read_unaligned(&footer[FOOTER_HEADER_LEN..head_len])
        } else {
            FooterExt::default()
        };
        let blocks_bytes = &footer[head_len..head_len + nb * BLOCK_META_LEN];
        let chunk_bytes = &footer[head_len + nb * BLOCK_META_LEN..];
        // Zero-copy when the directory is aligned in memory (always, for an mmap'd file).
        let blocks: Vec<BlockMeta> = match bytemuck::try_cast_slice(blocks_bytes) {
            Ok(s) => s.to_vec(),
            Err(_) => bytemuck::pod_collect_to_vec(blocks_bytes),
        };
        let chunks: Vec<ChunkMeta> = match bytemuck::try_cast_slice(chunk_bytes) {
            Ok(s) => s.to_vec(),
            Err(_) => bytemuck::pod_collect_to_vec(chunk_bytes),
        };
        let data_end = header.index_offset as usize;
        if data_end < 8 || data_end > footer_start {
            return Err(bad(format!("index offset {data_end} outside the data area")));
        }
        let text_dict = if ext.dict_len == 0 {
            None
        } else {
            let end = ext.dict_offset.checked_add(u64::from(ext.dict_len));
            if ext.dict_offset < 8 || end.is_none_or(|e| e > data_end as u64) {
                return Err(bad("text dictionary outside the data area".into()));
            }
            let range = ext.dict_offset as usize..(ext.dict_offset + u64::from(ext.dict_len)) as usize;
            if crc32fast::hash(&bytes[range.clone()]) != ext.dict_crc {
                return Err(bad("text dictionary checksum mismatch".into()));
            }
            Some(TextDictionary { range, prepared: std::sync::OnceLock::new() })
        };
        let mut row = 0u64;
        for (b, meta) in blocks.iter().enumerate() {
            if meta.first_row != row || meta.rows == 0 || meta.min_ts > meta.max_ts {
                return Err(Self::corrupt(&path, Some(b), None, "inconsistent block directory entry"));
            }
            row += u64::from(meta.rows);
            for c in 0..COLUMN_COUNT {
                let ch = &chunks[b * COLUMN_COUNT + c];
                let end = ch.offset.checked_add(u64::from(ch.len));
                if ch.offset < 8 || end.is_none_or(|e| e > data_end as u64) || ch.raw_len > MAX_RAW_CHUNK {
                    return Err(Self::corrupt(&path, Some(b), Some(ColumnId::ALL[c]), "chunk outside the data area"));
                }
                if Codec::from_u32(ch.codec).is_none() {
                    return Err(Self::corrupt(&path, Some(b), Some(ColumnId::ALL[c]), "unknown codec"));
                }
                if ch.codec & PAGED != 0 && ColumnId::ALL[c].encoding() != ColumnEncoding::Plain {
                    return Err(Self::corrupt(
                        &path,
                        Some(b),
                        Some(ColumnId::ALL[c]),
                        "paged chunk of a non-text column",
                    ));
                }
                if ch.codec & DICT_PAGES != 0
                    && (ch.codec & PAGED == 0
                        || text_dict.is_none()
                        || !matches!(Codec::from_u32(ch.codec), Some(Codec::Zstd(_))))
                {
                    return Err(Self::corrupt(
                        &path,
                        Some(b),
                        Some(ColumnId::ALL[c]),
                        "dictionary pages without zstd pages or a text dictionary",
                    ));
                }
            }
        }
        if row != u64::from(header.rows) {
            return Err(bad(format!("blocks hold {row} rows, footer says {}", header.rows)));
        }
        let idx_end = data_end
            .checked_add(header.index_len as usize)
            .filter(|e| *e <= footer_start)
            .ok_or_else(|| bad("index section outside the file".into()))?;
        let idx_stored = &bytes[data_end..idx_end];
        if crc32fast::hash(idx_stored) != header.index_crc {
            return Err(bad("index checksum mismatch".into()));
        }
        if header.index_raw_len > MAX_RAW_CHUNK {
            return Err(bad("index section too large".into()));
        }
        let codec = Codec::from_u32(header.index_codec).ok_or_else(|| bad("unknown index codec".into()))?;
        // Skimmed for its row count and the token index's place, not decoded: the query layer
        // decodes the parts it needs when a query needs them, and keeps them within a memory
        // budget ([`Segment::load_index`]). Only the frames before the token index are
        // decompressed (writers start it in a new frame); more frames are taken, twice as many
        // bytes each time, while the skim runs out of bytes.
        let raw_len = header.index_raw_len as usize;
        let mut until = raw_len.min(1);
        let (rows, text_section) = loop {
            let raw =
                codec.decompress_frames_through(idx_stored, raw_len, until).map_err(|e| bad(format!("index: {e}")))?;
            match SegmentIndex::skim(&raw) {
                Ok((rows, Some(section))) => break (rows, Some(section)),
                Ok((rows, None)) if raw.len() >= raw_len => break (rows, None),
                // The frames read end where the bitmaps and trace directory end, and more
                // follow: the token index, in frames of its own. Its marker and block count
                // are checked when it is loaded.
                Ok((rows, None)) => break (rows, Some(TextSection { at: raw.len(), n_blocks: header.n_blocks })),
                Err(e) if raw.len() >= raw_len => return Err(bad(format!("index: {e}"))),
                _ => until = raw_len.min(raw.len().saturating_mul(2).max(1)),
            }
        };
        if rows != header.rows {
            return Err(bad("index row count differs from the footer".into()));
        }
        if text_section.is_some_and(|t| t.n_blocks != header.n_blocks) {
            return Err(bad("token index block count differs from the footer".into()));
        }
        let uid = NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let raw_bytes = chunks.iter().map(|c| u64::from(c.raw_len)).sum();
        Ok(Segment { path, bytes, header, blocks, chunks, text_section, text_dict, uid, raw_bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// This open segment's process-unique id (two opens of one file get two ids).
    pub fn uid(&self) -> u64 {
        self.uid
    }
    pub fn rows(&self) -> u64 {
        u64::from(self.header.rows)
    }
    pub fn min_ts(&self) -> i64 {
        self.header.min_ts
    }
    pub fn max_ts(&self) -> i64 {
        self.header.max_ts
    }
    pub fn file_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub fn blocks(&self) -> &[BlockMeta] {
        &self.blocks
    }
    pub fn chunk(&self, block: usize, col: ColumnId) -> &ChunkMeta {
        &self.chunks[block * COLUMN_COUNT + col.index()]
    }
    /// Whether the segment carries a text dictionary (its text is in dictionary pages).
    pub fn has_text_dictionary(&self) -> bool {
        self.text_dict.is_some()
    }

    /// Whether the text dictionary has been prepared (a page compressed against it was read).
    pub fn text_dictionary_prepared(&self) -> bool {
        self.text_dict.as_ref().is_some_and(|d| d.prepared.get().is_some())
    }

    /// The text dictionary, prepared on first use.
    fn prepared_text_dictionary(&self) -> Result<&DecompressionDictionary, String> {
        let dict = self.text_dict.as_ref().ok_or("no text dictionary")?;
        if let Some(prepared) = dict.prepared.get() {
            return Ok(prepared);
        }
        let bytes = self.bytes.get(dict.range.clone()).ok_or("text dictionary outside the file")?;
        let prepared = DecompressionDictionary::new(bytes).ok_or("text dictionary does not load")?;
        // Two readers may prepare it at once: one copy is kept, the other dropped.
        Ok(dict.prepared.get_or_init(|| prepared))
    }

    /// The stored index section and its codec. Bounds and checksum were verified on open, and
    /// the file is immutable.
    fn index_section(&self) -> Result<(&[u8], Codec), &'static str> {
        let start = self.header.index_offset as usize;
        let stored = self.bytes.get(start..start + self.header.index_len as usize).ok_or("outside the file")?;
        Ok((stored, Codec::from_u32(self.header.index_codec).ok_or("unknown codec")?))
    }

    /// Decode the value bitmaps and the trace directory. Not kept: an open segment used to
    /// hold them from the start, about 5.5 bytes per row, so a store's memory grew with all
    /// it held; callers cache them within a memory budget (the query layer). Decompresses
    /// only the index frames before the token index.
    pub fn load_index(&self) -> Result<SegmentIndex, SegmentError> {
        let bad = |what: String| Self::corrupt(&self.path, None, None, format!("index: {what}"));
        let (stored, codec) = self.index_section().map_err(|e| bad(e.into()))?;
        let raw_len = self.header.index_raw_len as usize;
        let until = self.text_section.map_or(raw_len, |t| t.at);
        let raw = codec.decompress_head(stored, raw_len, until).map_err(bad)?;
        let (index, _) = SegmentIndex::decode(&raw).map_err(|e| bad(e.to_string()))?;
        if index.rows != self.header.rows {
            return Err(bad("row count differs from the footer".into()));
        }
        Ok(index)
    }

    /// Drop this process's mapping of the file's pages (they stay in the page cache, and the
    /// next read maps them again): an idle server then counts none of its data as resident.
    /// A no-op for segments held in memory or off Linux.
    pub fn release_pages(&self) {
        #[cfg(target_os = "linux")]
        if let Bytes::Mapped(m) = &self.bytes {
            #[allow(unsafe_code)]
            // SAFETY: the map is a read-only shared mapping of an immutable file (see
            // `map_file`). MADV_DONTNEED on it only unmaps its pages from this process: a
            // later read, even through a slice borrowed before, faults the same bytes back in
            // from the page cache. (It would zero anonymous or private written pages; this map
            // has neither.)
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Whether the segment has a token index of `content` (compacted segments do).
    pub fn has_text_index(&self) -> bool {
        self.text_section.is_some()
    }

    /// Decode the token index of `content` (`None` without one). Not kept: callers cache it
    /// within a memory budget. Decompresses only the index frames that hold it.
    pub fn load_text_index(&self) -> Result<Option<TextIndex>, SegmentError> {
        let Some(section) = self.text_section else { return Ok(None) };
        let bad = |what: String| Self::corrupt(&self.path, None, None, format!("token index: {what}"));
        let (stored, codec) = self.index_section().map_err(|e| bad(e.into()))?;
        let raw = codec.decompress_tail(stored, self.header.index_raw_len as usize, section.at).map_err(bad)?;
        let text = TextIndex::decode(&raw).map_err(|e| bad(e.to_string()))?;
        if text.n_blocks() != self.header.n_blocks {
            return Err(bad("block count differs from the footer".into()));
        }
        Ok(Some(text))
    }
    /// Uncompressed bytes of every column block: what decoding the whole segment produces
    /// before it becomes rows (used to bound the memory of compaction).
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Stored (compressed) bytes of the index section: bitmaps, trace directory, token index.
    pub fn index_bytes(&self) -> u64 {
        u64::from(self.header.index_len)
    }
    /// Uncompressed bytes of the index section and, of them, the token index's (0 without one).
    pub fn index_raw_bytes(&self) -> (u64, u64) {
        let raw = u64::from(self.header.index_raw_len);
        (raw, self.text_section.map_or(0, |t| raw.saturating_sub(t.at as u64)))
    }

    /// Stored (compressed) bytes of one column over all blocks.
    pub fn column_bytes(&self, col: ColumnId) -> u64 {
        (0..self.blocks.len()).map(|b| u64::from(self.chunk(b, col).len)).sum()
    }

    /// Decode one column of one block, verifying its checksum.
    pub fn read_column(&self, block: usize, col: ColumnId) -> Result<ColumnData, SegmentError> {
        let (rows, ch, stored) = self.checked_chunk(block, col)?;
        self.decode_chunk(block, col, rows, ch, stored)
    }

    /// Decode a chunk whose checksum was verified: one frame, or every page of a paged chunk.
    fn decode_chunk(
        &self,
        block: usize,
        col: ColumnId,
        rows: usize,
        ch: &ChunkMeta,
        stored: &[u8],
    ) -> Result<ColumnData, SegmentError> {
        let bad = |d: String| Self::corrupt(&self.path, Some(block), Some(col), d);
        let codec = Codec::from_u32(ch.codec).ok_or_else(|| bad("unknown codec".into()))?;
        if ch.codec & PAGED != 0 {
            let mut out = StrColumn::default();
            out.data.reserve(ch.raw_len as usize);
            out.offsets.reserve(rows + 1);
            let checksummed = ch.codec & DICT_PAGES != 0;
            for page in parse_pages(stored, rows, MAX_RAW_CHUNK as usize, checksummed).map_err(bad)? {
                out.extend_from(&self.read_page(block, col, ch.codec, stored, &page)?);
            }
            return Ok(ColumnData::Str(out.finish()));
        }
        let raw = codec.decompress(stored, ch.raw_len as usize).map_err(bad)?;
        decode_column(col, &raw, rows).map_err(|e| bad(e.to_string()))
    }

    /// The listed rows (numbers within the block, ascending for speed; any order is correct)
    /// of a free-text column. Of a paged chunk only the pages holding those rows are
    /// decompressed.
    pub fn read_text_rows(&self, block: usize, col: ColumnId, rows: &[u32]) -> Result<StrColumn, SegmentError> {
        self.read_text_rows_with(block, col, rows, |_, decode| decode().map(Arc::new))
    }

    /// [`Segment::read_text_rows`], with each page of a paged chunk obtained through
    /// `page(k, decode)`: `k` is the page's index in the block, `decode` decodes it (a caller
    /// may answer from a cache instead).
    pub fn read_text_rows_with<F>(
        &self,
        block: usize,
        col: ColumnId,
        rows: &[u32],
        mut page_of: F,
    ) -> Result<StrColumn, SegmentError>
    where
        F: FnMut(usize, &mut dyn FnMut() -> Result<StrColumn, SegmentError>) -> Result<Arc<StrColumn>, SegmentError>,
    {
        let bad = |d: String| Self::corrupt(&self.path, Some(block), Some(col), d);
        let (n, ch, stored) = self.checked_chunk(block, col)?;
        let mut out = StrColumn::default();
        if ch.codec & PAGED == 0 {
            // One frame: decode it whole (its checksum is verified once, above).
            let ColumnData::Str(all) = self.decode_chunk(block, col, n, ch, stored)? else {
                return Err(bad("not a text column".into()));
            };
            out.reserve(rows.len(), rows.iter().map(|r| all.row_bytes(*r as usize)).sum());
            for r in rows {
                if !out.push_from(&all, *r as usize) {
                    return Err(bad(format!("row {r} outside the block")));
                }
            }
            return Ok(out.finish());
        }
        let pages = parse_pages(stored, n, MAX_RAW_CHUNK as usize, ch.codec & DICT_PAGES != 0).map_err(bad)?;
        let page_rows = pages.first().map_or(1, |p| p.rows.len().max(1));
        // Each row's page and its row in it, the pages fetched first: the text is then copied
        // once, into a column sized for it (grown by doubling, most of it was copied twice).
        // `current` is the page last fetched: rows come in ascending order (bitmap order), so
        // each page is fetched once (rows out of order fetch a page again, correctly).
        let mut picked: Vec<(Arc<StrColumn>, usize)> = Vec::with_capacity(rows.len());
        let mut current: Option<(usize, Arc<StrColumn>)> = None;
        for r in rows {
            let r = *r as usize;
            let k = r / page_rows;
            let page = pages.get(k).ok_or_else(|| bad(format!("row {r} outside the block")))?;
            let decoded = match &current {
                Some((at, p)) if *at == k => p.clone(),
                _ => {
                    let decoded = page_of(k, &mut || self.read_page(block, col, ch.codec, stored, page))?;
                    if decoded.len() != page.rows.len() {
                        return Err(bad(format!("page {k} has {} rows, expected {}", decoded.len(), page.rows.len())));
                    }
                    current = Some((k, decoded.clone()));
                    decoded
                }
            };
            picked.push((decoded, r - page.rows.start));
        }
        out.reserve(picked.len(), picked.iter().map(|(p, i)| p.row_bytes(*i)).sum());
        for (p, i) in &picked {
            if !out.push_from(p, *i) {
                return Err(bad(format!("row {i} of a page outside it")));
            }
        }
        Ok(out.finish())
    }

    /// One block's chunk of `col`: the block's row count, the chunk's directory entry and its
    /// stored bytes, checksum verified.
    fn checked_chunk(&self, block: usize, col: ColumnId) -> Result<(usize, &ChunkMeta, &[u8]), SegmentError> {
        let meta =
            self.blocks.get(block).ok_or_else(|| Self::corrupt(&self.path, Some(block), Some(col), "no such block"))?;
        let ch = self.chunk(block, col);
        let start = ch.offset as usize;
        let stored = &self.bytes[start..start + ch.len as usize];
        // A dictionary-paged chunk's CRC covers its directory (each page has its own).
        let covered = if ch.codec & DICT_PAGES != 0 {
            let dir = directory_len(stored, true).map_err(|d| Self::corrupt(&self.path, Some(block), Some(col), d))?;
            &stored[..dir]
        } else {
            stored
        };
        if crc32fast::hash(covered) != ch.crc {
            return Err(Self::corrupt(&self.path, Some(block), Some(col), "block checksum mismatch"));
        }
        Ok((meta.rows as usize, ch, stored))
    }

    fn read_page(
        &self,
        block: usize,
        col: ColumnId,
        codec_id: u32,
        stored: &[u8],
        page: &Page,
    ) -> Result<StrColumn, SegmentError> {
        let bad = |d: String| Self::corrupt(&self.path, Some(block), Some(col), d);
        let codec = Codec::from_u32(codec_id).ok_or_else(|| bad("unknown codec".into()))?;
        let bytes = &stored[page.stored.clone()];
        if page.crc.is_some_and(|crc| crc != crc32fast::hash(bytes)) {
            return Err(bad(format!("page of rows {:?}: checksum mismatch", page.rows)));
        }
        let raw = if codec_id & DICT_PAGES != 0 {
            let dict = self.prepared_text_dictionary().map_err(bad)?;
            decompress_with(dict, bytes, page.raw_len).map_err(bad)?
        } else {
            codec.decompress(bytes, page.raw_len).map_err(bad)?
        };
        match decode_column(col, &raw, page.rows.len()).map_err(|e| bad(e.to_string()))? {
            ColumnData::Str(s) => Ok(s),
            _ => Err(bad("paged chunk of a column that is not text".into())),
        }
    }

    /// Decode every column of a block back into rows.
    pub fn read_events(&self, block: usize) -> Result<Vec<Event>, SegmentError> {
        let cols = ColumnId::ALL.iter().map(|c| self.read_column(block, *c)).collect::<Result<Vec<_>, _>>()?;
        Ok(events_from_columns(&cols))
    }

    /// Every row of the segment, in order.
    pub fn read_all(&self) -> Result<Vec<Event>, SegmentError> {
        let mut out = Vec::with_capacity(self.rows() as usize);
        for b in 0..self.blocks.len() {
            out.extend(self.read_events(b)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, SegmentWriter, WriterOptions};

    /// The token index starts its own zstd frame: the frames before it hold exactly the
    /// bitmaps and trace directory that opening a segment skims and `load_index` decodes.
    #[test]
    fn the_token_index_starts_a_frame_of_its_own() {
        let dir = tempfile::tempdir().expect("tmp");
        let events: Vec<Event> = (0..3_000u32)
            .map(|i| Event {
                trace_id: [(i % 251) as u8; 16],
                span_id: i.to_le_bytes().repeat(2).try_into().expect("8 bytes"),
                timestamp_ns: i64::from(i) * 1_000,
                agent_id: format!("agent-{}", i % 7).into(),
                content: Some(format!("order ORD-{i:07} for customer {}", i * 7919 % 10_007)),
                ..Event::default()
            })
            .collect();
        let path = dir.path().join("t.seg");
        let opts = WriterOptions { block_rows: 256, ..WriterOptions::cold() };
        SegmentWriter::new(opts).write(&path, &events).expect("write");
        let seg = Segment::open(&path).expect("open");
        let section = seg.text_section.expect("a token index");
        let (stored, codec) = seg.index_section().expect("index");
        let head = codec.decompress_frames_through(stored, seg.header.index_raw_len as usize, 1).expect("head");
        assert_eq!(head.len(), section.at, "the first frames end where the token index starts");
        assert_eq!(seg.load_index().expect("bitmaps").rows, 3_000);
        assert_eq!(seg.load_text_index().expect("tokens").expect("some").n_blocks(), seg.blocks().len() as u32);
    }
}
