//! Writing a segment: rows in, encoded + compressed column blocks, index and footer out.
//! The file is written to a temporary name, fsync'd and renamed, so a segment either exists
//! whole or not at all.

use std::borrow::Borrow;

use rayon::prelude::*;

/// One block's metadata, its column chunks (chunk metadata without offsets, stored bytes) and
/// the distinct tokens of its `content`.
type EncodedBlock<'a> = (BlockMeta, Vec<(ChunkMeta, Vec<u8>)>, TokenSet<'a>);
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use index::text::TokenSet;
use index::{IndexBuilder, IndexedColumn, TextIndex};

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

/// Summary of a written segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Writes one segment file from rows sorted by timestamp.
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

    /// Encode `events` into the bytes of a segment file.
    pub fn encode<E: Borrow<Event>>(&self, events: &[E]) -> Vec<u8> {
        let events: &[&Event] = &events.iter().map(Borrow::borrow).collect::<Vec<_>>();
        let mut out = Vec::new();
        out.extend_from_slice(&HEAD_MAGIC);
        let block_rows = self.opts.block_rows.max(1);
        // Blocks are encoded and compressed in parallel (compression dominates writing), then
        // laid out in order, text against `dict_pages`' dictionary if there is one.
        let encode_blocks = |dict_pages: Option<(TextDictionaryOptions, &CompressionDictionary)>| -> Vec<EncodedBlock> {
            events
                .par_chunks(block_rows)
                .enumerate()
                .map(|(b, rows)| {
                    let min_ts = rows.iter().map(|e| e.timestamp_ns).min().unwrap_or(0);
                    let max_ts = rows.iter().map(|e| e.timestamp_ns).max().unwrap_or(0);
                    let meta = BlockMeta {
                        rows: rows.len() as u32,
                        _pad: 0,
                        first_row: (b * block_rows) as u64,
                        min_ts,
                        max_ts,
                    };
                    let mut raw = Vec::new();
                    let cols = ColumnId::ALL
                        .iter()
                        .map(|&id| {
                            let codec = match id {
                                ColumnId::Content | ColumnId::Attributes => self.opts.text_codec,
                                _ => self.opts.codec,
                            };
                            // Free text (the reader accepts pages on plain columns only) in
                            // dictionary pages, else plain pages, else one frame.
                            let plain = id.encoding() == ColumnEncoding::Plain;
                            let in_dict_pages = dict_pages.filter(|_| plain).and_then(|(td, cd)| {
                                let mut c = DictCompressor::new(cd)?;
                                pages::encode_pages_with(id, rows, td.page_rows, true, |raw| c.compress(raw))
                            });
                            let (stored, raw_len, codec_id, crc) = match (in_dict_pages, self.opts.text_page_rows) {
                                (Some((stored, raw_len)), _) => {
                                    // The chunk's CRC covers its directory; the directory holds
                                    // each page's CRC.
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
                    let mut tokens = match self.opts.text_index {
                        true => index::text::token_set_for(texts().map(str::len).sum()),
                        false => TokenSet::default(),
                    };
                    if self.opts.text_index {
                        texts().for_each(|text| index::text::tokenize(text, &mut tokens));
                    }
                    (meta, cols, tokens)
                })
                .collect()
        };
        let build_index = || {
            let mut ib = IndexBuilder::new();
            for e in events {
                ib.push(indexed_values(e), e.trace_id);
            }
            ib.finish()
        };
        // The bitmap index (a serial build) is built meanwhile the text dictionary is trained
        // on this segment's content (zstd text only) and the blocks are encoded.
        let ((dict, encoded), idx) = rayon::join(
            || {
                let dict = self.text_dictionary(events);
                let encoded = encode_blocks(self.opts.text_dictionary.zip(dict.as_ref().map(|(_, cdict)| cdict)));
                (dict, encoded)
            },
            build_index,
        );
        // The data area's size is known now: one allocation instead of doublings (each a
        // copy, and fresh pages the kernel zeroes).
        let data_len: usize = encoded.iter().flat_map(|(_, cols, _)| cols.iter().map(|(_, stored)| stored.len())).sum();
        let dict_len = dict.as_ref().map_or(0, |(d, _)| d.len());
        out.reserve(data_len + dict_len + data_len / 8 + (1 << 16));
        let mut blocks = Vec::with_capacity(encoded.len());
        let mut chunks = Vec::with_capacity(encoded.len() * COLUMN_COUNT);
        let mut block_tokens = Vec::with_capacity(encoded.len());
        for (meta, cols, tokens) in encoded {
            blocks.push(meta);
            block_tokens.push(tokens);
            for (mut chunk, stored) in cols {
                chunk.offset = out.len() as u64;
                out.extend_from_slice(&stored);
                chunks.push(chunk);
            }
        }
        // The text dictionary, in the data area (the footer extension points at it).
        let mut ext = FooterExt::default();
        if let Some((dict, _)) = &dict {
            ext = FooterExt {
                dict_offset: out.len() as u64,
                dict_len: dict.len() as u32,
                dict_crc: crc32fast::hash(dict),
            };
            out.extend_from_slice(dict);
        }
        // Index section.
        let text = self.opts.text_index.then(|| TextIndex::from_blocks(block_tokens));
        let mut idx_raw = Vec::new();
        idx.encode(text.as_ref(), &mut idx_raw);
        let idx_codec = Codec::Zstd(3);
        // A compacted segment's index is tens of megabytes: compressed on every core.
        let idx_stored = idx_codec.compress_parallel(&idx_raw, 4 << 20);
        let index_offset = out.len() as u64;
        out.extend_from_slice(&idx_stored);
        // Footer, 8-aligned so the directory can be read zero-copy from the mmap.
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let footer_start = out.len();
        let header = FooterHeader {
            version: FORMAT_VERSION,
            n_columns: COLUMN_COUNT as u32,
            n_blocks: blocks.len() as u32,
            rows: events.len() as u32,
            min_ts: blocks.iter().map(|b| b.min_ts).min().unwrap_or(0),
            max_ts: blocks.iter().map(|b| b.max_ts).max().unwrap_or(0),
            index_offset,
            index_len: idx_stored.len() as u32,
            index_raw_len: idx_raw.len() as u32,
            index_crc: crc32fast::hash(&idx_stored),
            index_codec: idx_codec.to_u32(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(bytemuck::bytes_of(&ext));
        out.extend_from_slice(bytemuck::cast_slice(&blocks));
        out.extend_from_slice(bytemuck::cast_slice(&chunks));
        let footer_len = (out.len() - footer_start) as u32;
        let footer_crc = crc32fast::hash(&out[footer_start..]);
        out.extend_from_slice(&footer_len.to_le_bytes());
        out.extend_from_slice(&footer_crc.to_le_bytes());
        out.extend_from_slice(&TAIL_MAGIC);
        out
    }

    /// Train this segment's text dictionary, if the options ask for one and there is enough
    /// text: the dictionary's bytes and its compression form.
    fn text_dictionary(&self, events: &[&Event]) -> Option<(Vec<u8>, CompressionDictionary)> {
        let (Some(td), Codec::Zstd(level)) = (self.opts.text_dictionary, self.opts.text_codec) else {
            return None;
        };
        let texts: Vec<&str> = events.iter().filter_map(|e| e.content.as_deref()).collect();
        let dict = textdict::train(&texts, &td)?;
        let cdict = CompressionDictionary::new(&dict, level)?;
        Some((dict, cdict))
    }

    /// Write `events` (sorted by timestamp) to `path` atomically and durably.
    pub fn write<E: Borrow<Event>>(&self, path: &Path, events: &[E]) -> Result<SegmentInfo, SegmentError> {
        let bytes = self.encode(events);
        let events: &[&Event] = &events.iter().map(Borrow::borrow).collect::<Vec<_>>();
        let tmp = path.with_extension("tmp");
        {
            let f = File::create(&tmp).map_err(io(&tmp))?;
            let mut w = BufWriter::new(f);
            w.write_all(&bytes).map_err(io(&tmp))?;
            let f = w.into_inner().map_err(|e| SegmentError::Io { path: tmp.clone(), source: e.into_error() })?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(SegmentInfo {
            path: path.to_path_buf(),
            rows: events.len() as u64,
            bytes: bytes.len() as u64,
            min_ts: events.iter().map(|e| e.timestamp_ns).min().unwrap_or(0),
            max_ts: events.iter().map(|e| e.timestamp_ns).max().unwrap_or(0),
        })
    }
}
