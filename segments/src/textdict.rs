//! Trained zstd dictionaries for text pages: a segment's free text is compressed in pages of a
//! few rows, each page alone, all against one dictionary trained on that segment's own text.
//! A point read then decompresses a few kilobytes instead of a block's megabytes, at nearly the
//! ratio of compressing the whole block as one frame (`storage-bench --tune-text`: 8-row pages
//! with a 64 KiB dictionary keep 0.343 of the bytes, 1,024-row pages without one 0.334, 8-row
//! pages without one 0.471).
//!
//! This module owns training ([`train`]), page compression against a prepared dictionary
//! ([`DictCompressor`]) and decompression ([`decompress_with`]). Frames carry no checksum,
//! content size or dictionary id: the page directory holds each page's length and CRC32 and the
//! segment holds its one dictionary.

use zstd::zstd_safe::{self, CCtx, CDict, CParameter, DCtx, DDict};

/// How to build a segment's text dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextDictionaryOptions {
    /// Largest dictionary to train, in bytes.
    pub dict_bytes: usize,
    /// Rows per page of text compressed against it.
    pub page_rows: usize,
    /// Most sample bytes handed to the trainer (training time grows with it).
    pub sample_bytes: usize,
}

impl Default for TextDictionaryOptions {
    /// 64 KiB dictionaries over 8-row pages, trained on up to 2 MiB of the segment's text.
    fn default() -> Self {
        TextDictionaryOptions { dict_bytes: 64 << 10, page_rows: 8, sample_bytes: 2 << 20 }
    }
}

/// A segment's text needs this many times the dictionary's size before a dictionary pays for
/// itself (below it, the dictionary would be a large share of the text it serves).
pub const MIN_TEXT_PER_DICT_BYTE: usize = 16;

/// Train a dictionary on `texts` (one sample each). `None` when there is too little text for
/// a dictionary to pay off, or the trainer declines (too few or too uniform samples).
///
/// Samples are spread evenly over the input so the dictionary sees the whole segment, and
/// capped at `opts.sample_bytes` in total.
pub fn train(texts: &[&str], opts: &TextDictionaryOptions) -> Option<Vec<u8>> {
    let total: usize = texts.iter().map(|t| t.len()).sum();
    train_on_sample(texts, total, opts)
}

/// Train a dictionary for a segment holding `total_text_bytes` of text on `sample`, texts
/// drawn evenly from it (a segment written piece by piece samples its text before it has it
/// all). The same rules as [`train`]: `None` when the segment has too little text for a
/// dictionary to pay off, or the trainer declines; at most `opts.sample_bytes` of the sample
/// are used, evenly spread.
pub fn train_on_sample(sample: &[&str], total_text_bytes: usize, opts: &TextDictionaryOptions) -> Option<Vec<u8>> {
    if opts.dict_bytes < 256 || total_text_bytes < opts.dict_bytes.saturating_mul(MIN_TEXT_PER_DICT_BYTE) {
        return None;
    }
    let sampled: usize = sample.iter().map(|t| t.len()).sum();
    // Every `step`-th text, so that the samples stay under the budget.
    let step = sampled.div_ceil(opts.sample_bytes.max(1)).max(1);
    let mut data = Vec::with_capacity(sampled.min(opts.sample_bytes) + 4096);
    let mut sizes = Vec::new();
    for t in sample.iter().step_by(step).filter(|t| !t.is_empty()) {
        data.extend_from_slice(t.as_bytes());
        sizes.push(t.len());
    }
    if sizes.len() < 16 {
        return None;
    }
    zstd::dict::from_continuous(&data, &sizes, opts.dict_bytes).ok().filter(|d| !d.is_empty())
}

/// A dictionary prepared for compression at one level.
pub struct CompressionDictionary(CDict<'static>);

impl CompressionDictionary {
    /// `None` if zstd cannot load `dict` (not a dictionary, or out of memory).
    pub fn new(dict: &[u8], level: i32) -> Option<Self> {
        CDict::try_create(dict, level).map(CompressionDictionary)
    }
}

/// A compression context bound to one [`CompressionDictionary`], for the pages of one block.
pub struct DictCompressor<'d> {
    cctx: CCtx<'d>,
}

impl<'d> DictCompressor<'d> {
    pub fn new(dict: &'d CompressionDictionary) -> Option<Self> {
        let mut cctx = CCtx::try_create()?;
        cctx.ref_cdict(&dict.0).ok()?;
        cctx.set_parameter(CParameter::ContentSizeFlag(false)).ok()?;
        cctx.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
        cctx.set_parameter(CParameter::DictIdFlag(false)).ok()?;
        Some(DictCompressor { cctx })
    }

    /// One page as a frame compressed against the dictionary; `None` if zstd fails.
    pub fn compress(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(raw.len()));
        self.cctx.compress2(&mut out, raw).ok()?;
        Some(out)
    }
}

/// A dictionary prepared for decompression (a segment keeps one while open).
pub struct DecompressionDictionary(DDict<'static>);

impl DecompressionDictionary {
    pub fn new(dict: &[u8]) -> Option<Self> {
        DDict::try_create(dict).map(DecompressionDictionary)
    }
}

impl std::fmt::Debug for DecompressionDictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecompressionDictionary")
    }
}

thread_local! {
    /// One decompression context per thread (creating one costs more than a small page).
    static DCTX: std::cell::RefCell<Option<DCtx<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Decompress one page frame into exactly `raw_len` bytes.
pub fn decompress_with(dict: &DecompressionDictionary, stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw_len);
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = DCtx::try_create();
        }
        let dctx = slot.as_mut().ok_or("zstd: no decompression context")?;
        dctx.decompress_using_ddict(&mut out, stored, &dict.0)
            .map_err(|code| format!("zstd: {}", zstd_safe::get_error_name(code)))
    })?;
    if out.len() != raw_len {
        return Err(format!("decompressed to {} bytes, expected {raw_len}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rows of words drawn from a small vocabulary (a seeded LCG), like agent text: each page
    /// of a few rows repeats little, the segment repeats a lot.
    fn texts(n: usize) -> Vec<String> {
        let words = [
            "refund",
            "order",
            "customer",
            "the",
            "tool",
            "call",
            "returned",
            "status",
            "shipping",
            "ok",
            "account",
            "invoice",
            "please",
            "check",
            "delivered",
            "tracking",
            "number",
            "issue",
            "resolved",
            "escalate",
            "policy",
            "within",
            "days",
            "payment",
            "failed",
            "retry",
            "agent",
            "summary",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|i| {
                let len = 5 + i % 40;
                let mut s = String::new();
                for _ in 0..len {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    s.push_str(words[(x >> 33) as usize % words.len()]);
                    s.push(' ');
                }
                s + &format!("#{i}")
            })
            .collect()
    }

    fn small() -> TextDictionaryOptions {
        TextDictionaryOptions { dict_bytes: 1024, page_rows: 4, sample_bytes: 64 << 10 }
    }

    /// One dictionary trained on 2,000 rows, shared by the tests (training is the slow part).
    fn trained() -> &'static [u8] {
        static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        DICT.get_or_init(|| {
            let t = texts(2000);
            let refs: Vec<&str> = t.iter().map(String::as_str).collect();
            train(&refs, &small()).expect("enough text to train on")
        })
    }

    #[test]
    fn too_little_text_trains_no_dictionary() {
        let t = texts(10);
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        assert!(train(&refs, &small()).is_none());
        assert!(train(&[], &small()).is_none());
    }

    #[test]
    fn a_dictionary_makes_small_pages_smaller() {
        let t = texts(2000);
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        let dict = trained();
        assert!(dict.len() <= 1024);
        let cd = CompressionDictionary::new(dict, 3).expect("cdict");
        let dd = DecompressionDictionary::new(dict).expect("ddict");
        let mut c = DictCompressor::new(&cd).expect("cctx");
        let (mut with, mut without) = (0, 0);
        for page in refs.chunks(4) {
            let raw = page.concat();
            let stored = c.compress(raw.as_bytes()).expect("compress");
            assert_eq!(decompress_with(&dd, &stored, raw.len()).expect("page"), raw.as_bytes());
            with += stored.len();
            without += zstd::bulk::compress(raw.as_bytes(), 3).expect("plain zstd").len();
        }
        assert!(with * 10 < without * 8, "with a dictionary {with} bytes, without {without}");
    }

    #[test]
    fn wrong_lengths_and_garbage_are_errors() {
        let dict = trained();
        let cd = CompressionDictionary::new(dict, 3).expect("cdict");
        let dd = DecompressionDictionary::new(dict).expect("ddict");
        let raw = texts(4).concat();
        let stored = DictCompressor::new(&cd).and_then(|mut c| c.compress(raw.as_bytes())).expect("compress");
        assert!(decompress_with(&dd, &stored, raw.len() - 1).is_err());
        assert!(decompress_with(&dd, &stored, raw.len() + 1).is_err());
        assert!(decompress_with(&dd, b"not a zstd frame", 10).is_err());
    }

    proptest! {
        /// Any bytes round-trip through a dictionary trained on other text, and corrupt frames
        /// are errors, never panics.
        #[test]
        fn pages_round_trip(raw in prop::collection::vec(any::<u8>(), 0..3000), flip in any::<prop::sample::Index>()) {
            let dict = trained();
            let cd = CompressionDictionary::new(dict, 3).expect("cdict");
            let dd = DecompressionDictionary::new(dict).expect("ddict");
            let stored = DictCompressor::new(&cd).and_then(|mut c| c.compress(&raw)).expect("compress");
            prop_assert_eq!(decompress_with(&dd, &stored, raw.len()).expect("round trip"), raw.clone());
            let mut bad = stored.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x5a;
            // A flipped byte may still decode (to other bytes); it must not panic.
            let _ = decompress_with(&dd, &bad, raw.len());
        }
    }
}
