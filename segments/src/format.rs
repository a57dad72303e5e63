//! On-disk layout of a segment file (see `docs/format/segment.md`): fixed-size directory
//! records read zero-copy with bytemuck, codecs, and the constants that frame the file.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

/// First 8 bytes of every segment file.
pub const HEAD_MAGIC: [u8; 8] = *b"AMSEG\0\0\x01";
/// Last 8 bytes of every segment file.
pub const TAIL_MAGIC: [u8; 8] = *b"AMSEGEND";
/// Format version written in the footer header. Version 2 added paged text chunks
/// ([`PAGED`]); version 3 the footer extension ([`FooterExt`]) holding the segment's text
/// dictionary and pages compressed against it ([`DICT_PAGES`]). Versions 1 and 2 are still
/// read.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest format version still read.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Flag in a chunk's codec id: the chunk is a page directory followed by independently
/// compressed pages of rows (see [`crate::pages`]), so a few rows can be read without
/// decompressing the whole block.
pub const PAGED: u32 = 1 << 16;
/// Flag in a paged chunk's codec id (with [`PAGED`] and zstd): its pages are compressed
/// against the segment's text dictionary, its directory carries a CRC32 per page, and the
/// chunk's own CRC covers the directory only (each page is verified when it is read).
pub const DICT_PAGES: u32 = 1 << 17;
/// Trailer: footer length (u32), footer CRC32 (u32), tail magic.
pub const TRAILER_LEN: usize = 16;
/// Upper bound on one decompressed column block (guards allocations on corrupt input).
pub const MAX_RAW_CHUNK: u32 = 1 << 30;

/// Block compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Lz4,
    Zstd(i32),
}

impl Codec {
    pub fn to_u32(self) -> u32 {
        match self {
            Codec::None => 0,
            Codec::Lz4 => 1,
            Codec::Zstd(level) => 2 | ((level.clamp(-7, 22) + 64) as u32) << 8,
        }
    }

    pub fn from_u32(v: u32) -> Option<Codec> {
        match v & 0xff {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd(((v >> 8) & 0xff) as i32 - 64)),
            _ => None,
        }
    }

    pub fn compress(self, raw: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => raw.to_vec(),
            Codec::Lz4 => lz4_flex::block::compress(raw),
            // zstd into a Vec only fails on allocation failure; fall back to storing raw.
            Codec::Zstd(level) => zstd::bulk::compress(raw, level).unwrap_or_else(|_| raw.to_vec()),
        }
    }

    /// Like [`Codec::compress`], on every core for large inputs: zstd compresses pieces of
    /// at least `piece` bytes in parallel into concatenated frames, which one zstd
    /// decompression call reads back as a whole (the format allows any number of frames).
    /// Other codecs compress in one piece.
    pub fn compress_parallel(self, raw: &[u8], piece: usize) -> Vec<u8> {
        let Codec::Zstd(_) = self else { return self.compress(raw) };
        if raw.len() < 2 * piece.max(1) {
            return self.compress(raw);
        }
        let parts: Vec<Vec<u8>> = raw.par_chunks(piece.max(1)).map(|p| self.compress(p)).collect();
        parts.concat()
    }

    /// Decompress into exactly `raw_len` bytes.
    pub fn decompress(self, stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
        let out = match self {
            Codec::None => stored.to_vec(),
            Codec::Lz4 => lz4_flex::block::decompress(stored, raw_len).map_err(|e| format!("lz4: {e}"))?,
            Codec::Zstd(_) => zstd_decompress(stored, raw_len).map_err(|e| format!("zstd: {e}"))?,
        };
        if out.len() != raw_len {
            return Err(format!("decompressed to {} bytes, expected {raw_len}", out.len()));
        }
        Ok(out)
    }

    /// Bytes `from..raw_len` of what `stored` decompresses to. zstd input made by
    /// [`Codec::compress_parallel`] is several frames, each naming its decompressed size:
    /// frames that end before `from` are skipped unread. Otherwise the whole is decompressed.
    pub fn decompress_tail(self, stored: &[u8], raw_len: usize, from: usize) -> Result<Vec<u8>, String> {
        if from > raw_len {
            return Err(format!("offset {from} beyond the {raw_len} decompressed bytes"));
        }
        let (mut pos, mut start) = (0usize, 0usize);
        if let Codec::Zstd(_) = self {
            for (len, content) in zstd_frames(stored) {
                if start.saturating_add(content) > from {
                    break;
                }
                pos += len;
                start += content;
            }
        }
        let mut raw = self.decompress(&stored[pos..], raw_len - start)?;
        raw.drain(..from - start);
        Ok(raw)
    }

    /// Bytes `0..until` of what `stored` decompresses to: of zstd input made by
    /// [`Codec::compress_parallel`] (several frames, each naming its decompressed size), the
    /// frames that start at or past `until` are not read. Otherwise the whole is decompressed.
    pub fn decompress_head(self, stored: &[u8], raw_len: usize, until: usize) -> Result<Vec<u8>, String> {
        let mut raw = self.decompress_frames_through(stored, raw_len, until)?;
        raw.truncate(until);
        Ok(raw)
    }

    /// At least the first `until` bytes of what `stored` decompresses to: the zstd frames that
    /// hold them, whole (see [`Codec::decompress_tail`]); everything otherwise.
    pub fn decompress_frames_through(self, stored: &[u8], raw_len: usize, until: usize) -> Result<Vec<u8>, String> {
        if until > raw_len {
            return Err(format!("offset {until} beyond the {raw_len} decompressed bytes"));
        }
        if let Codec::Zstd(_) = self {
            let (mut pos, mut end) = (0usize, 0usize);
            for (len, content) in zstd_frames(stored) {
                if end >= until {
                    break;
                }
                pos += len;
                end = end.saturating_add(content);
            }
            if end >= until && end <= raw_len {
                return self.decompress(&stored[..pos], end);
            }
        }
        self.decompress(stored, raw_len)
    }
}

/// (compressed, decompressed) sizes of the zstd frames `stored` begins with, in order, up to
/// the first that does not name both (or is cut short).
fn zstd_frames(stored: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let frame = stored.get(pos..).filter(|f| !f.is_empty())?;
        let (Ok(len), Ok(Some(content))) =
            (zstd::zstd_safe::find_frame_compressed_size(frame), zstd::zstd_safe::get_frame_content_size(frame))
        else {
            return None;
        };
        if len == 0 || len > frame.len() {
            return None;
        }
        pos += len;
        Some((len, usize::try_from(content).unwrap_or(usize::MAX)))
    })
}

thread_local! {
    /// One zstd decompression context per thread: creating one costs more than decompressing
    /// a small block.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(stored, raw_len),
            None => zstd::bulk::decompress(stored, raw_len),
        }
    })
}

/// Footer header (64 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct FooterHeader {
    pub version: u32,
    pub n_columns: u32,
    pub n_blocks: u32,
    pub rows: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub index_offset: u64,
    pub index_len: u32,
    pub index_raw_len: u32,
    pub index_crc: u32,
    pub index_codec: u32,
    pub created_unix_ms: u64,
}

/// Footer extension (16 bytes, version 3 on), right after the [`FooterHeader`]: where the
/// segment's text dictionary lies in the data area (`dict_len` 0: none).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Default)]
pub struct FooterExt {
    pub dict_offset: u64,
    pub dict_len: u32,
    pub dict_crc: u32,
}

/// Per-block directory entry (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct BlockMeta {
    pub rows: u32,
    pub _pad: u32,
    pub first_row: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Per-block, per-column directory entry (48 bytes). `min`/`max` are numeric bounds of the
/// non-null values for numeric columns (NaN otherwise or when all null).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct ChunkMeta {
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
    pub crc: u32,
    pub codec: u32,
    pub null_count: u32,
    pub _pad: u32,
    pub min: f64,
    pub max: f64,
}

pub const FOOTER_HEADER_LEN: usize = std::mem::size_of::<FooterHeader>();
pub const FOOTER_EXT_LEN: usize = std::mem::size_of::<FooterExt>();
pub const BLOCK_META_LEN: usize = std::mem::size_of::<BlockMeta>();
pub const CHUNK_META_LEN: usize = std::mem::size_of::<ChunkMeta>();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_records_have_the_documented_sizes() {
        assert_eq!(FOOTER_HEADER_LEN, 64);
        assert_eq!(FOOTER_EXT_LEN, 16);
        assert_eq!(BLOCK_META_LEN, 32);
        assert_eq!(CHUNK_META_LEN, 48);
    }

    proptest::proptest! {
        /// Pieces compressed in parallel read back whole through the one-call decompressor,
        /// for every codec, piece size and length (piece edges included).
        #[test]
        fn parallel_compression_reads_back_whole(
            data in proptest::collection::vec(0u8..8, 0..3000),
            piece in 1usize..700,
            codec in proptest::sample::select(vec![Codec::None, Codec::Lz4, Codec::Zstd(1), Codec::Zstd(3)]),
        ) {
            let stored = codec.compress_parallel(&data, piece);
            proptest::prop_assert_eq!(codec.decompress(&stored, data.len()).expect("decompress"), data);
        }

        /// The tail from any offset (frame edges, 0 and the end included) is the whole's
        /// tail; an offset past the end is an error.
        #[test]
        fn tails_match_the_whole(
            data in proptest::collection::vec(0u8..8, 0..3000),
            piece in 1usize..700,
            cut in 0usize..3100,
            codec in proptest::sample::select(vec![Codec::None, Codec::Lz4, Codec::Zstd(1), Codec::Zstd(3)]),
        ) {
            let stored = codec.compress_parallel(&data, piece);
            let edge = (cut / piece.max(1)) * piece;
            for from in [cut, edge, 0, data.len()] {
                let got = codec.decompress_tail(&stored, data.len(), from);
                match data.get(from..) {
                    Some(want) => proptest::prop_assert_eq!(got.expect("tail"), want.to_vec()),
                    None => proptest::prop_assert!(got.is_err()),
                }
                let got = codec.decompress_head(&stored, data.len(), from);
                match data.get(..from) {
                    Some(want) => proptest::prop_assert_eq!(got.expect("head"), want.to_vec()),
                    None => proptest::prop_assert!(got.is_err()),
                }
            }
        }
    }

    #[test]
    fn codec_ids_roundtrip() {
        for c in [Codec::None, Codec::Lz4, Codec::Zstd(1), Codec::Zstd(19), Codec::Zstd(-3)] {
            assert_eq!(Codec::from_u32(c.to_u32()), Some(c));
        }
        assert_eq!(Codec::from_u32(7), None);
    }

    #[test]
    fn codecs_roundtrip_and_reject_wrong_sizes() {
        let raw: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for c in [Codec::None, Codec::Lz4, Codec::Zstd(3)] {
            let stored = c.compress(&raw);
            assert_eq!(c.decompress(&stored, raw.len()).expect("roundtrip"), raw);
            assert!(c.decompress(&stored, raw.len() - 1).is_err());
        }
    }
}
