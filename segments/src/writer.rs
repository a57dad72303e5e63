//! Writing a segment: rows in, encoded + compressed column blocks, index and footer out.
//! A segment is written whole ([`SegmentWriter::write`], [`SegmentWriter::encode`]) or piece
//! by piece ([`SegmentWriter::create`] then [`SegmentFile::push`]): each piece's blocks are
//! encoded on every core and written out, so a writer holds one piece of rows, not the
//! segment. The file is written to a temporary name, fsync'd and renamed, so a segment either
//! exists whole or not at all.

use std::borrow::Borrow;

use rayon::prelude::*;

/// One block's metadata, its column chunks (chunk metadata without offsets, stored bytes) and
/// the distinct tokens of its `content`.
type EncodedBlock<'a> = (BlockMeta, Vec<(ChunkMeta, Vec<u8>)>, TokenSet<'a>);
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use index::text::{TokenBlocks, TokenSet};
use index::{IndexBuilder, IndexedColumn};

use crate::column::{encode_column, numeric_stats, ColumnEncoding, ColumnId, COLUMN_COUNT};
use crate::error::SegmentError;
use crate::event::Event;
use crate::format::{
    BlockMeta, ChunkMeta, Codec, FooterExt, FooterHeader, DICT_PAGES, FORMAT_VERSION, HEAD_MAGIC, PAGED, TAIL_MAGIC,
};
use crate::pages;
use crate::textdict::{self, CompressionDictionary, DictCompressor, TextDictionaryOptions};

/// How to lay out and compress a segment.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Rows per block (the unit of pruning and decompression).
    pub block_rows: usize,
    /// Compressor for every column but free text.
    pub codec: Codec,
    /// Compressor for free-text columns (content, attributes).
    pub text_codec: Codec,
    /// Build the token index of `content` (see `index::text`). Off for hot segments: they
    /// are small, recent and short-lived, and tokenizing on every flush costs ingest CPU;
    /// compaction builds it.
    pub text_index: bool,
    /// Store `content` in independently compressed pages of this many rows (`None`: one
    /// frame per block). Reading a few rows (one trace) then decompresses one page, not the
    /// block's megabytes of text.
    pub text_page_rows: Option<usize>,
    /// Train a zstd dictionary on the segment's `content` and store it in pages of a few rows
    /// compressed against it (zstd text codec only; see [`crate::textdict`]). When the
    /// segment has too little text to train on, `text_page_rows` applies instead.
    pub text_dictionary: Option<TextDictionaryOptions>,
}

impl WriterOptions {
    /// Freshly flushed data: fast lz4 everywhere.
    pub fn hot() -> Self {
        WriterOptions {
            block_rows: 4096,
            codec: Codec::Lz4,
            text_codec: Codec::Lz4,
            text_index: false,
            text_page_rows: None,
            text_dictionary: None,
        }
    }
    /// Compacted data: zstd level 3, text included (measured on 2 MB blocks of agent text,
    /// `storage-bench --tune-text`: level 6 keeps 0.319 of the bytes at 46 MB/s, level 3 0.331
    /// at 130 MB/s; compression was the largest share of import CPU, so 4% more text bytes buy
    /// 2.8x the compression speed). Text in pages of 1,024 rows: 0.6% more bytes than one
    /// frame per 4,096-row block (256-row pages cost 4%), a quarter of the decompression for
    /// a point read. With a dictionary trained on the segment's text, pages of 8 rows keep
    /// 0.343 of the bytes (1,024-row pages without one 0.334) and a point read decompresses a
    /// few kilobytes.
    pub fn cold() -> Self {
        WriterOptions {
            block_rows: 4096,
            codec: Codec::Zstd(3),
            text_codec: Codec::Zstd(3),
            text_index: true,
            text_page_rows: Some(1024),
            text_dictionary: Some(TextDictionaryOptions::default()),
        }
    }
}

/// Blocks per piece that [`SegmentWriter::write`] encodes (on every core) and writes at once.
const WRITE_PIECE_BLOCKS: usize = 16;

/// Summary of a written segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Writes segment files (rows in the order given).
#[derive(Debug)]
pub struct SegmentWriter {
    opts: WriterOptions,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io { path: path.to_path_buf(), source }
}

fn indexed_values(e: &Event) -> [Option<&str>; 6] {
    IndexedColumn::ALL.map(|c| e.indexed_value(c))
}

impl SegmentWriter {
    pub fn new(opts: WriterOptions) -> Self {
        SegmentWriter { opts }
    }

    pub fn options(&self) -> &WriterOptions {
        &self.opts
    }

    /// Encode `events` into the bytes of a segment file.
    pub fn encode<E: Borrow<Event>>(&self, events: &[E]) -> Vec<u8> {
        let events: Vec<&Event> = events.iter().map(Borrow::borrow).collect();
        let dict = self.dictionary_for(&events);
        let mut b = SegmentBuilder::new(self.opts, Vec::new(), Path::new("<memory>"), dict);
        // Writing to memory cannot fail.
        let done = b.push(&events).and_then(|()| b.finish());
        done.map(|(bytes, _)| bytes).unwrap_or_else(|e| unreachable!("encoding a segment in memory failed: {e}"))
    }

    /// This writer's text dictionary for a segment holding `total_text_bytes` of `content`,
    /// trained on `sample` (texts drawn evenly from it), if the options ask for one and there
    /// is enough text (see [`textdict::train_on_sample`]).
    pub fn train_dictionary(&self, sample: &[&str], total_text_bytes: usize) -> Option<TextDictionary> {
        let (td, level) = self.dictionary_settings()?;
        let bytes = textdict::train_on_sample(sample, total_text_bytes, &td)?;
        let prepared = CompressionDictionary::new(&bytes, level)?;
        Some(TextDictionary { bytes, prepared })
    }

    /// How this writer's options train a text dictionary and the zstd level it serves, or
    /// `None` if they train none.
    fn dictionary_settings(&self) -> Option<(TextDictionaryOptions, i32)> {
        match (self.opts.text_dictionary, self.opts.text_codec) {
            (Some(td), Codec::Zstd(level)) => Some((td, level)),
            _ => None,
        }
    }

    /// The text dictionary for a segment of exactly `events` (in any order), trained on all
    /// their text.
    pub fn dictionary_for<E: Borrow<Event>>(&self, events: &[E]) -> Option<TextDictionary> {
        // Hot segments train none: no list of their texts on every flush.
        self.dictionary_settings()?;
        let texts: Vec<&str> = events.iter().filter_map(|e| e.borrow().content.as_deref()).collect();
        self.train_dictionary(&texts, texts.iter().map(|t| t.len()).sum())
    }

    /// Start writing a segment to `path` piece by piece (see [`SegmentFile`]), its text
    /// compressed against `dict` if given (see [`SegmentWriter::train_dictionary`]).
    pub fn create(&self, path: &Path, dict: Option<TextDictionary>) -> Result<SegmentFile, SegmentError> {
        let tmp = path.with_extension("tmp");
        let f = File::create(&tmp).map_err(io(&tmp))?;
        let builder = SegmentBuilder::new(self.opts, BufWriter::with_capacity(1 << 20, f), &tmp, dict);
        Ok(SegmentFile { builder: Some(builder), tmp, path: path.to_path_buf() })
    }

    /// Write `events` (in this order) to `path` atomically and durably.
    pub fn write<E: Borrow<Event>>(&self, path: &Path, events: &[E]) -> Result<SegmentInfo, SegmentError> {
        self.write_with_dictionary(path, events, self.dictionary_for(events))
    }

    /// [`SegmentWriter::write`] with the text dictionary already trained on these events
    /// ([`SegmentWriter::dictionary_for`]), e.g. while they were being sorted.
    pub fn write_with_dictionary<E: Borrow<Event>>(
        &self,
        path: &Path,
        events: &[E],
        dict: Option<TextDictionary>,
    ) -> Result<SegmentInfo, SegmentError> {
        let events: Vec<&Event> = events.iter().map(Borrow::borrow).collect();
        let mut file = self.create(path, dict)?;
        // In pieces, so that the encoded blocks and token sets of a piece, not of the whole
        // segment, wait to be written.
        for piece in events.chunks(self.opts.block_rows.max(1) * WRITE_PIECE_BLOCKS) {
            file.push(piece)?;
        }
        file.finish()
    }
}

/// A trained text dictionary: its bytes (stored in the segment) and its compression form.
pub struct TextDictionary {
    bytes: Vec<u8>,
    prepared: CompressionDictionary,
}

/// A segment file being written piece by piece: [`SegmentFile::push`] the rows in order (each
/// piece but the last a whole number of blocks, else the segment gets a short block inside),
/// then [`SegmentFile::finish`]. Dropped unfinished, it removes its temporary file.
pub struct SegmentFile {
    builder: Option<SegmentBuilder<BufWriter<File>>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl SegmentFile {
    /// Encode and write the next rows.
    pub fn push(&mut self, rows: &[&Event]) -> Result<(), SegmentError> {
        match &mut self.builder {
            Some(b) => b.push(rows),
            None => Ok(()),
        }
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.builder.as_ref().map_or(0, |b| b.rows)
    }

    /// Write the index and footer, make the file durable and give it its name.
    pub fn finish(mut self) -> Result<SegmentInfo, SegmentError> {
        let Some(builder) = self.builder.take() else {
            return Err(SegmentError::Io {
                path: self.tmp.clone(),
                source: std::io::Error::other("segment file already finished"),
            });
        };
        let (w, mut info) = builder.finish()?;
        let f = w.into_inner().map_err(|e| SegmentError::Io { path: self.tmp.clone(), source: e.into_error() })?;
        f.sync_all().map_err(io(&self.tmp))?;
        drop(f);
        fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        info.path = self.path.clone();
        Ok(info)
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if self.builder.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Encodes a segment into `out` as its rows arrive.
struct SegmentBuilder<W: Write> {
    opts: WriterOptions,
    out: W,
    /// Names the output in errors.
    path: PathBuf,
    /// Bytes written to `out`.
    written: u64,
    dict: Option<TextDictionary>,
    blocks: Vec<BlockMeta>,
    chunks: Vec<ChunkMeta>,
    tokens: TokenBlocks,
    index: IndexBuilder,
    rows: u64,
}

impl<W: Write> SegmentBuilder<W> {
    fn new(opts: WriterOptions, out: W, path: &Path, dict: Option<TextDictionary>) -> Self {
        // The head magic goes out with the first write, in `push` or `finish`, whose errors
        // are returned.
        SegmentBuilder {
            opts,
            out,
            path: path.to_path_buf(),
            written: 0,
            dict,
            blocks: Vec::new(),
            chunks: Vec::new(),
            tokens: TokenBlocks::default(),
            index: IndexBuilder::new(),
            rows: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SegmentError> {
        self.out.write_all(bytes).map_err(io(&self.path))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn push(&mut self, rows: &[&Event]) -> Result<(), SegmentError> {
        if self.written == 0 {
            self.write(&HEAD_MAGIC)?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let block_rows = self.opts.block_rows.max(1);
        let first_row = self.rows;
        let opts = &self.opts;
        let dict_pages = opts.text_dictionary.zip(self.dict.as_ref().map(|d| &d.prepared));
        let index = &mut self.index;
        // Blocks are encoded and compressed on every core (compression dominates writing)
        // while the bitmap index (a serial build) takes the rows.
        let (encoded, ()) = rayon::join(
            || {
                rows.par_chunks(block_rows)
                    .enumerate()
                    .map(|(b, chunk)| encode_block(opts, first_row + (b * block_rows) as u64, chunk, dict_pages))
                    .collect::<Vec<EncodedBlock>>()
            },
            || {
                for e in rows {
                    index.push(indexed_values(e), e.trace_id);
                }
            },
        );
        for (meta, cols, tokens) in encoded {
            self.blocks.push(meta);
            if self.opts.text_index {
                self.tokens.push_block(tokens);
            }
            for (mut chunk, stored) in cols {
                chunk.offset = self.written;
                self.write(&stored)?;
                self.chunks.push(chunk);
            }
        }
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Write the text dictionary, the index section and the footer; the output and a summary.
    fn finish(mut self) -> Result<(W, SegmentInfo), SegmentError> {
        if self.written == 0 {
            self.write(&HEAD_MAGIC)?;
        }
        // The text dictionary, in the data area (the footer extension points at it).
        let mut ext = FooterExt::default();
        if let Some(d) = self.dict.take() {
            ext = FooterExt {
                dict_offset: self.written,
                dict_len: d.bytes.len() as u32,
                dict_crc: crc32fast::hash(&d.bytes),
            };
            self.write(&d.bytes)?;
        }
        // Index section.
        let (tokens, index) = (std::mem::take(&mut self.tokens), std::mem::take(&mut self.index));
        let text_index = self.opts.text_index;
        // The token index is encoded straight from the blocks' tokens (the writer never needs
        // it as a searchable index); it and the bitmaps both sort and build serially for part
        // of their time: side by side.
        let encode_text = move || {
            text_index.then(|| {
                let mut section = Vec::new();
                tokens.encode_section(&mut section);
                section
            })
        };
        let (text_raw, index) = rayon::join(encode_text, move || index.finish());
        let mut head = Vec::new();
        index.encode(None, &mut head);
        let idx_codec = Codec::Zstd(3);
        // A compacted segment's index is tens of megabytes: compressed on every core. The
        // token index starts a new frame, so that opening the segment, or a query that needs
        // only the bitmaps, decompresses none of it.
        let mut idx_stored = idx_codec.compress_parallel(&head, 4 << 20);
        let idx_raw_len = head.len() + text_raw.as_ref().map_or(0, Vec::len);
        if let Some(text_raw) = &text_raw {
            idx_stored.extend_from_slice(&idx_codec.compress_parallel(text_raw, 4 << 20));
        }
        let index_offset = self.written;
        self.write(&idx_stored)?;
        // Footer, 8-aligned so the directory can be read zero-copy from the mmap.
        let pad = (8 - self.written % 8) % 8;
        self.write(&[0u8; 8][..pad as usize])?;
        let min_ts = self.blocks.iter().map(|b| b.min_ts).min().unwrap_or(0);
        let max_ts = self.blocks.iter().map(|b| b.max_ts).max().unwrap_or(0);
        let header = FooterHeader {
            version: FORMAT_VERSION,
            n_columns: COLUMN_COUNT as u32,
            n_blocks: self.blocks.len() as u32,
            rows: self.rows as u32,
            min_ts,
            max_ts,
            index_offset,
            index_len: idx_stored.len() as u32,
            index_raw_len: idx_raw_len as u32,
            index_crc: crc32fast::hash(&idx_stored),
            index_codec: idx_codec.to_u32(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let mut footer = Vec::with_capacity(
            std::mem::size_of::<FooterHeader>()
                + std::mem::size_of::<FooterExt>()
                + std::mem::size_of_val(&self.blocks[..])
                + std::mem::size_of_val(&self.chunks[..])
                + 16,
        );
        footer.extend_from_slice(bytemuck::bytes_of(&header));
        footer.extend_from_slice(bytemuck::bytes_of(&ext));
        footer.extend_from_slice(bytemuck::cast_slice(&self.blocks));
        footer.extend_from_slice(bytemuck::cast_slice(&self.chunks));
        let footer_len = footer.len() as u32;
        let footer_crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&footer_len.to_le_bytes());
        footer.extend_from_slice(&footer_crc.to_le_bytes());
        footer.extend_from_slice(&TAIL_MAGIC);
        self.write(&footer)?;
        let info = SegmentInfo { path: self.path.clone(), rows: self.rows, bytes: self.written, min_ts, max_ts };
        Ok((self.out, info))
    }
}

/// Encode one block of rows (the segment's rows `first_row..`): its metadata, its column
/// chunks, its tokens (when the options index text). Text goes in dictionary pages when
/// `dict_pages` is given.
fn encode_block<'a>(
    opts: &WriterOptions,
    first_row: u64,
    rows: &[&'a Event],
    dict_pages: Option<(TextDictionaryOptions, &CompressionDictionary)>,
) -> EncodedBlock<'a> {
    let min_ts = rows.iter().map(|e| e.timestamp_ns).min().unwrap_or(0);
    let max_ts = rows.iter().map(|e| e.timestamp_ns).max().unwrap_or(0);
    let meta = BlockMeta { rows: rows.len() as u32, _pad: 0, first_row, min_ts, max_ts };
    let mut raw = Vec::new();
    let cols = ColumnId::ALL
        .iter()
        .map(|&id| {
            let codec = match id {
                ColumnId::Content | ColumnId::Attributes => opts.text_codec,
                _ => opts.codec,
            };
            // Free text (the reader accepts pages on plain columns only) in dictionary pages,
            // else plain pages, else one frame.
            let plain = id.encoding() == ColumnEncoding::Plain;
            let in_dict_pages = dict_pages.filter(|_| plain).and_then(|(td, cd)| {
                let mut c = DictCompressor::new(cd)?;
                pages::encode_pages_with(id, rows, td.page_rows, true, |raw| c.compress(raw))
            });
            let (stored, raw_len, codec_id, crc) = match (in_dict_pages, opts.text_page_rows) {
                (Some((stored, raw_len)), _) => {
                    // The chunk's CRC covers its directory; the directory holds each page's CRC.
                    let dir = pages::directory_len(&stored, true).unwrap_or(stored.len());
                    let crc = crc32fast::hash(&stored[..dir]);
                    (stored, raw_len, codec.to_u32() | PAGED | DICT_PAGES, crc)
                }
                (None, Some(page_rows)) if plain => {
                    let (stored, raw_len) = pages::encode_pages(id, rows, page_rows, codec);
                    let crc = crc32fast::hash(&stored);
                    (stored, raw_len, codec.to_u32() | PAGED, crc)
                }
                _ => {
                    raw.clear();
                    encode_column(id, rows, &mut raw);
                    let stored = codec.compress(&raw);
                    let crc = crc32fast::hash(&stored);
                    (stored, raw.len() as u32, codec.to_u32(), crc)
                }
            };
            let (min, max, nulls) = numeric_stats(id, rows);
            let chunk = ChunkMeta {
                offset: 0,
                len: stored.len() as u32,
                raw_len,
                crc,
                codec: codec_id,
                null_count: nulls,
                _pad: 0,
                min,
                max,
            };
            (chunk, stored)
        })
        .collect();
    let texts = || rows.iter().filter_map(|e| e.content.as_deref());
    let mut tokens = match opts.text_index {
        true => index::text::token_set_for(texts().map(str::len).sum()),
        false => TokenSet::default(),
    };
    if opts.text_index {
        texts().for_each(|text| index::text::tokenize(text, &mut tokens));
    }
    (meta, cols, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_options_with_a_dictionary_train_one() {
        let events: Vec<Event> = (0..4000)
            .map(|i| Event {
                content: Some(format!("order ORD-{i} refunded to customer {} after review {}", i * 7 % 991, i % 13)),
                ..Default::default()
            })
            .collect();
        assert!(SegmentWriter::new(WriterOptions::hot()).dictionary_for(&events).is_none());
        let cold = SegmentWriter::new(WriterOptions {
            text_dictionary: Some(TextDictionaryOptions { dict_bytes: 1024, page_rows: 4, sample_bytes: 64 << 10 }),
            ..WriterOptions::cold()
        });
        assert!(cold.dictionary_for(&events).is_some());
    }
}
