//! Token index over free text (the `content` column): which blocks of a segment contain each
//! token, so `content LIKE '%word%'` reads only the blocks that can match.
//!
//! A token is a maximal run of alphanumeric characters, kept as written (no case folding, so
//! building the index borrows the text and allocates nothing per token). Tokens longer than
//! [`WINDOW`] characters are stored as windows of `WINDOW` characters every [`STEP`]
//! characters, so any piece of at most `STEP` characters of a long token lies inside one
//! stored window.
//!
//! A query piece (one alphanumeric run of a LIKE pattern's literal part, cut to `STEP`
//! characters) occurs in a text only if some token of that text contains it, so the blocks of
//! the tokens that contain the piece are a superset of the blocks that match. The scan still
//! evaluates the LIKE on every row it reads; the index only skips blocks.
//!
//! A block whose text is dense with long distinct tokens (base64 payloads, hex dumps: text
//! that would make the index as large as the text itself, for nothing a search would look
//! for) keeps only its tokens of at most [`ALWAYS_INDEXED`] bytes, and is listed as such
//! under the empty token (no text yields an empty token). A piece that may lie in a longer
//! token keeps those blocks as candidates.

use memchr::memmem;

/// The distinct tokens of one block. A token of at most 8 bytes (most of them) is kept as
/// its bytes in a big-endian integer, zero-padded: tokens hold no NUL bytes, so the integer
/// names the token and sorts as it does, and hashing it costs no string compare. Longer
/// tokens are borrowed from the text being indexed.
///
/// Each kind goes to a hash set until it holds [`SET_TOKENS`] tokens, a table that stays in
/// the CPU's cache; later tokens not in the set are appended to a list (repeats and all) that
/// is sorted and deduplicated when it doubles and at the end. Text full of distinct tokens
/// (ids, hashes, hex) would otherwise make the set large and every insert a cache miss: on
/// such text the list takes half the time.
#[derive(Debug, Clone)]
pub struct TokenSet<'a> {
    short: foldhash::HashSet<u64>,
    long: foldhash::HashSet<&'a str>,
    /// Short tokens not in `short`, once it is full.
    short_more: Spill<u64>,
    /// Long tokens not in `long`, once it is full, after their first 8 bytes as
    /// [`long_head`] gives them: most comparisons of the sort then read no text.
    long_more: Spill<(u64, &'a str)>,
    /// Tokens each set holds at most ([`SET_TOKENS`] but in tests).
    set_tokens: usize,
    /// Bytes of text tokenized into this set.
    text_bytes: usize,
}

/// Most tokens a [`TokenSet`]'s hash set holds: the capacity of a table of 32,768 buckets
/// (hashbrown fills 7/8 of it), 288 KiB of short tokens, within the L2 cache.
pub const SET_TOKENS: usize = 28_672;

impl Default for TokenSet<'_> {
    fn default() -> Self {
        TokenSet::with_set_tokens(SET_TOKENS)
    }
}

impl<'a> TokenSet<'a> {
    /// A set whose hash sets hold at most `set_tokens` tokens each (tests use a few, to
    /// exercise the lists).
    pub fn with_set_tokens(set_tokens: usize) -> TokenSet<'a> {
        TokenSet {
            short: foldhash::HashSet::default(),
            long: foldhash::HashSet::default(),
            short_more: Spill::default(),
            long_more: Spill::default(),
            set_tokens,
            text_bytes: 0,
        }
    }

    /// Add one token (non-empty).
    fn insert(&mut self, tok: &'a str) {
        match tok.len() {
            0 => {}
            n @ 1..=8 => self.insert_short(short_key(tok.as_bytes(), 0, n)),
            _ => self.insert_long(tok),
        }
    }

    fn insert_short(&mut self, key: u64) {
        if self.short.len() < self.set_tokens {
            self.short.insert(key);
        } else if !self.short.contains(&key) {
            self.short_more.push(key);
        }
    }

    fn insert_long(&mut self, tok: &'a str) {
        if self.long.len() < self.set_tokens {
            self.long.insert(tok);
        } else if !self.long.contains(tok) {
            self.long_more.push((long_head(tok), tok));
        }
    }

    /// The distinct short tokens' keys and the distinct long tokens, in no particular order.
    fn into_tokens(self) -> (impl Iterator<Item = u64>, impl Iterator<Item = &'a str>) {
        // A list never holds what its set holds: it starts once the set stops growing.
        let long_more = self.long_more.finish().map(|(_, tok)| tok);
        (self.short.into_iter().chain(self.short_more.finish()), self.long.into_iter().chain(long_more))
    }
}

/// Tokens appended unsorted, repeats included, for a [`TokenSet`] whose hash set is full;
/// sorted and deduplicated whenever they reach `limit`, which then doubles what is left, so
/// they take at most about twice the memory of the distinct ones.
#[derive(Debug, Clone)]
struct Spill<T> {
    items: Vec<T>,
    limit: usize,
}

/// Tokens a [`Spill`] holds before its first sort (4 in tests, so that they sort often).
const SPILL_FIRST: usize = if cfg!(test) { 4 } else { 1 << 16 };

impl<T> Default for Spill<T> {
    fn default() -> Self {
        Spill { items: Vec::new(), limit: SPILL_FIRST }
    }
}

impl<T: Ord> Spill<T> {
    fn push(&mut self, item: T) {
        self.items.push(item);
        if self.items.len() >= self.limit {
            self.dedup();
            self.limit = self.limit.max(2 * self.items.len());
        }
    }

    fn dedup(&mut self) {
        self.items.sort_unstable();
        self.items.dedup();
    }

    /// The distinct items.
    fn finish(mut self) -> std::vec::IntoIter<T> {
        self.dedup();
        self.items.into_iter()
    }
}

/// The `len` (1 to 8) bytes of `bytes` at `start` as a big-endian integer, zero-padded on the
/// right. One unaligned load and a mask when 8 bytes are there to read.
fn short_key(bytes: &[u8], start: usize, len: usize) -> u64 {
    debug_assert!((1..=8).contains(&len));
    match bytes.get(start..).and_then(<[u8]>::first_chunk::<8>) {
        Some(w) => u64::from_be_bytes(*w) & (u64::MAX << (8 * (8 - len))),
        None => {
            let mut k = [0u8; 8];
            k[..len].copy_from_slice(&bytes[start..start + len]);
            u64::from_be_bytes(k)
        }
    }
}

/// The first 8 bytes of a token longer than 8 bytes, as [`short_key`] orders them.
fn long_head(tok: &str) -> u64 {
    tok.as_bytes().first_chunk::<8>().map_or(0, |w| u64::from_be_bytes(*w))
}

/// Longest token stored whole (characters).
pub const WINDOW: usize = 64;

/// Stride of the windows of a longer token, and the longest query piece used (characters).
pub const STEP: usize = 32;

/// Longest token (bytes) that every block indexes; a block drops its longer ones when their
/// distinct bytes reach 64 KiB and exceed an eighth of its text.
pub const ALWAYS_INDEXED: usize = 16;

/// See [`ALWAYS_INDEXED`]. Agent text (prose, JSON, ids) stays far below it; a block of
/// base64 or hex payloads is mostly long distinct tokens.
const LONG_TOKEN_SHARE: usize = 8;

/// See [`ALWAYS_INDEXED`]: a few long tokens cost the index little, and a search for them
/// keeps its pruning. 24 in tests, so that their small blocks drop some.
const PARTIAL_MIN_BYTES: usize = if cfg!(test) { 24 } else { 64 << 10 };

/// Tokens per front-coding group of a [`TextIndex`]: a lookup decodes at most this many.
const GROUP: usize = 16;

/// Bytes of decoded tokens searched at once by [`TextIndex::scan_inside`].
const SCAN_RUN: usize = 16 << 10;

/// Groups of tokens one parallel task of [`TextIndex::scan_inside`] decodes and searches
/// (about 128k tokens; 4 groups in tests, so that their small indexes take several tasks).
const SCAN_GROUPS_PER_TASK: usize = if cfg!(test) { 4 } else { 8192 };

/// Marks a [`TextIndex`] block entry that points into its list of tokens in several blocks.
const MANY: u32 = 1 << 31;

/// Sorted distinct tokens, each with the sorted block numbers it occurs in, kept compact: it
/// is held in memory for searches (a cache entry per segment), and most tokens of agent text
/// are order numbers and ids that occur in one block only.
///
/// - Tokens are front-coded in groups of [`GROUP`] (sorted neighbours share long prefixes):
///   a group's first token as varint length and bytes, each next one as varint bytes shared
///   with the one before, varint suffix length and suffix. A lookup binary-searches the
///   groups' first tokens, then decodes within one group.
/// - Per token one `u32`: its only block, or [`MANY`] and the place in `more` of its block
///   count followed by its blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextIndex {
    coded: Vec<u8>,
    /// Offset in `coded` of each group's first token.
    groups: Vec<u32>,
    blocks: Vec<u32>,
    more: Vec<u32>,
    n_blocks: u32,
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `*pos` of bytes this module wrote (a malformed one reads as what it holds).
pub(crate) fn take_varint(bytes: &[u8], pos: &mut usize) -> usize {
    let mut v = 0usize;
    let mut shift = 0;
    while let Some(&b) = bytes.get(*pos) {
        *pos += 1;
        v |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            break;
        }
    }
    v
}

/// Builds a [`TextIndex`] from its tokens in byte order.
#[derive(Debug)]
pub(crate) struct TextIndexBuilder {
    idx: TextIndex,
    prev: Vec<u8>,
}

impl TextIndexBuilder {
    pub(crate) fn new(n_blocks: u32, tokens_hint: usize) -> Self {
        let mut idx = TextIndex { n_blocks, ..Default::default() };
        idx.blocks.reserve(tokens_hint);
        idx.groups.reserve(tokens_hint / GROUP + 1);
        TextIndexBuilder { idx, prev: Vec::with_capacity(64) }
    }

    /// Append the next token (after the previous one in byte order) and its blocks (ascending;
    /// fewer than 2^31 entries in all).
    pub(crate) fn push(&mut self, token: &[u8], blocks: &[u32]) {
        let idx = &mut self.idx;
        if idx.blocks.len().is_multiple_of(GROUP) {
            idx.groups.push(idx.coded.len() as u32);
            put_varint(&mut idx.coded, token.len() as u32);
            idx.coded.extend_from_slice(token);
        } else {
            let shared = self.prev.iter().zip(token).take_while(|(a, b)| a == b).count();
            put_varint(&mut idx.coded, shared as u32);
            put_varint(&mut idx.coded, (token.len() - shared) as u32);
            idx.coded.extend_from_slice(&token[shared..]);
        }
        self.prev.clear();
        self.prev.extend_from_slice(token);
        match blocks {
            [b] if b & MANY == 0 => idx.blocks.push(*b),
            _ => {
                idx.blocks.push(MANY | idx.more.len() as u32);
                idx.more.push(blocks.len() as u32);
                idx.more.extend_from_slice(blocks);
            }
        }
    }

    /// Entries in the list of tokens in several blocks (bounded by [`MANY`]).
    pub(crate) fn more_len(&self) -> usize {
        self.idx.more.len()
    }

    pub(crate) fn finish(mut self) -> TextIndex {
        self.idx.coded.shrink_to_fit();
        self.idx.groups.shrink_to_fit();
        self.idx.blocks.shrink_to_fit();
        self.idx.more.shrink_to_fit();
        self.idx
    }
}

/// A token of more than 8 bytes in [`TokenBlocks`].
#[derive(Debug, Clone, Copy)]
struct LongToken {
    head: u64,
    at: usize,
    len: u32,
    block: u32,
}

/// The token sets of a segment's blocks, kept as they arrive (block by block, owning their
/// long tokens), until [`TokenBlocks::finish`] turns them into a [`TextIndex`]. A segment
/// written in pieces drops each piece's text once encoded; its tokens wait here.
#[derive(Debug, Default)]
pub struct TokenBlocks {
    /// (short token key, block).
    short: Vec<(u64, u32)>,
    /// The long tokens' bytes, one after another.
    long_text: String,
    /// Each long token: its first 8 bytes as [`long_head`] gives them, start in `long_text`,
    /// length and block.
    long: Vec<LongToken>,
    /// Blocks that dropped their tokens longer than [`ALWAYS_INDEXED`] bytes, ascending.
    partial: Vec<u32>,
    n_blocks: u32,
}

impl TokenBlocks {
    /// Add the next block's tokens.
    pub fn push_block(&mut self, set: TokenSet<'_>) {
        let b = self.n_blocks;
        let text_bytes = set.text_bytes;
        let (short, long) = set.into_tokens();
        self.short.extend(short.map(|k| (k, b)));
        let long: Vec<&str> = long.collect();
        let beyond: usize = long.iter().map(|t| t.len()).filter(|&n| n > ALWAYS_INDEXED).sum();
        let partial = beyond >= PARTIAL_MIN_BYTES && beyond.saturating_mul(LONG_TOKEN_SHARE) > text_bytes;
        if partial {
            self.partial.push(b);
        }
        for t in long.into_iter().filter(|t| !partial || t.len() <= ALWAYS_INDEXED) {
            self.long.push(LongToken { head: long_head(t), at: self.long_text.len(), len: t.len() as u32, block: b });
            self.long_text.push_str(t);
        }
        self.n_blocks += 1;
    }

    /// Blocks added so far.
    pub fn n_blocks(&self) -> u32 {
        self.n_blocks
    }

    /// The index of every block added.
    ///
    /// Both lists are sorted in place, short tokens by (integer key, block), long ones by
    /// (text, block), and merged as they are read: a compacted segment holds millions of
    /// (token, block) pairs, and a sorted copy of them all would triple the memory they take
    /// at the end of a merge.
    pub fn finish(self) -> TextIndex {
        let mut out = TextIndexBuilder::new(self.n_blocks, self.short.len() + self.long.len() + 1);
        self.merge(|token, blocks| out.push(token, blocks));
        out.finish()
    }

    /// Append the encoded text section of every block added (what
    /// [`crate::SegmentIndex::encode`] writes for [`TokenBlocks::finish`]'s index), without
    /// building the index: a segment writer needs only the bytes.
    pub fn encode_section(self, out: &mut Vec<u8>) {
        let mut writer = crate::codec::TextSectionWriter::start(out, self.n_blocks, !self.partial.is_empty());
        self.merge(|token, blocks| writer.push(out, token, blocks));
        writer.finish(out);
    }

    /// Calls `f(token, blocks)` for every token in byte order, with its blocks ascending: the
    /// empty token first when some block kept only its short tokens.
    fn merge(self, mut f: impl FnMut(&[u8], &[u32])) {
        use rayon::slice::ParallelSliceMut;
        let TokenBlocks { mut short, long_text, mut long, partial, n_blocks: _ } = self;
        // A short token's integer orders as its bytes do (zero padding sorts first).
        short.par_sort_unstable();
        let text = long_text.as_str();
        // Token boundaries are character boundaries: `push_block` appended whole strings.
        let long_token = |t: &LongToken| text.get(t.at..t.at + t.len as usize).unwrap_or("");
        // By the first 8 bytes as an integer, then the rest: byte order, with most
        // comparisons settled without a `memcmp`.
        long.par_sort_unstable_by(|a, b| {
            a.head.cmp(&b.head).then_with(|| long_token(a).cmp(long_token(b))).then(a.block.cmp(&b.block))
        });
        // The empty token sorts first.
        if !partial.is_empty() {
            f(b"", &partial);
        }
        let mut token = Vec::with_capacity(64);
        let mut list = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < short.len() || j < long.len() {
            list.clear();
            token.clear();
            // When a short token's integer equals a long token's head, the short one is a
            // prefix of it and sorts first.
            let short_next = match (short.get(i), long.get(j)) {
                (Some(s), Some(l)) => s.0 <= l.head,
                (s, _) => s.is_some(),
            };
            if short_next {
                let key = short[i].0;
                // Tokens hold no NUL byte: the key's length is where its zero padding starts.
                let len = 8 - (key.trailing_zeros() / 8) as usize;
                token.extend_from_slice(&key.to_be_bytes()[..len.min(8)]);
                while let Some(&(k, b)) = short.get(i).filter(|p| p.0 == key) {
                    debug_assert_eq!(k, key);
                    list.push(b);
                    i += 1;
                }
            } else {
                let first = long[j];
                let t = long_token(&first);
                token.extend_from_slice(t.as_bytes());
                while let Some(p) = long.get(j).filter(|p| p.head == first.head && long_token(p) == t) {
                    list.push(p.block);
                    j += 1;
                }
            }
            f(&token, &list);
        }
    }
}

/// Whether a character belongs to tokens: `char::is_alphanumeric`, answered without its table
/// search for the common letters of accented Latin, Greek, Cyrillic, Hebrew, Arabic,
/// Devanagari and Thai text and of Chinese, Japanese and Korean text (the unified ideographs,
/// kana, Hangul syllables), where every character would otherwise take it. The test compares
/// every code point.
fn is_token_char(ch: char) -> bool {
    match u32::from(ch) {
        // Latin letters with accents (Latin-1 without × and ÷, Latin Extended-A and -B),
        // Greek and Cyrillic letters.
        0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x24F | 0x391..=0x3A1 | 0x3A3..=0x3A9 | 0x3B1..=0x3C9 => true,
        0x400..=0x481 | 0x48A..=0x52F => true,
        // Hebrew, Arabic, Devanagari and Thai letters.
        0x5D0..=0x5EA | 0x620..=0x64A | 0x905..=0x939 | 0xE01..=0xE30 => true,
        // Kana, CJK unified ideographs, Hangul syllables.
        0x3041..=0x3096 | 0x30A1..=0x30FA | 0x4E00..=0x9FFF | 0xAC00..=0xD7A3 => true,
        _ => ch.is_alphanumeric(),
    }
}

/// 1 for the ASCII bytes that are token characters (letters and digits), else 0. Bytes of
/// non-ASCII characters are 0 here; their characters are classified one by one.
static ASCII_ALNUM: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 128 {
        if (i as u8).is_ascii_alphanumeric() {
            t[i] = 1;
        }
        i += 1;
    }
    t
};

/// Calls `f` with the byte range (start, end) of every maximal alphanumeric run of `s`, in
/// order. Both ends are character boundaries.
///
/// Branch-light: one bit per byte says "token character" (a table lookup per ASCII byte;
/// non-ASCII characters decoded only when the text has any), then run starts and ends are
/// read off each 64-bit word with bit tricks. Three times the speed of a byte-by-byte state
/// machine on generated agent text, where tokens average five bytes.
fn alnum_runs(s: &str, mut f: impl FnMut(usize, usize)) {
    let bytes = s.as_bytes();
    let mut bits = vec![0u64; bytes.len().div_ceil(64)];
    for (word, chunk) in bits.iter_mut().zip(bytes.chunks(64)) {
        let mut w = 0u64;
        let mut lanes = chunk.chunks_exact(8);
        for (j, eight) in lanes.by_ref().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(eight);
            w |= u64::from(ascii_alnum_mask(u64::from_le_bytes(b))) << (8 * j);
        }
        let done = chunk.len() - lanes.remainder().len();
        for (j, &b) in lanes.remainder().iter().enumerate() {
            w |= u64::from(ASCII_ALNUM[usize::from(b)]) << (done + j);
        }
        *word = w;
    }
    // Only the non-ASCII characters are decoded: real text with a few curly quotes, accents
    // or emoji is still mostly ASCII, and decoding every character of it cost more than the
    // rest of the tokenizer.
    let mut at = if s.is_ascii() { None } else { next_non_ascii(bytes, 0) };
    while let Some(i) = at {
        // `i` is a character boundary: the search starts at one and skips whole characters.
        let Some(ch) = s.get(i..).and_then(|rest| rest.chars().next()) else { break };
        let end = i + ch.len_utf8();
        if is_token_char(ch) {
            for k in i..end {
                bits[k / 64] |= 1 << (k % 64);
            }
        }
        at = next_non_ascii(bytes, end);
    }
    // A run starts at a set bit whose predecessor is clear, and ends at a clear bit whose
    // predecessor is set; `carry` is the last bit of the previous word. Bits past the end are
    // clear, so a run reaching the end closes inside the last word unless the text fills it.
    let mut carry = 0u64;
    let mut start = 0usize;
    for (k, &w) in bits.iter().enumerate() {
        let prev = (w << 1) | carry;
        let starts = w & !prev;
        let mut edges = starts | (!w & prev);
        carry = w >> 63;
        while edges != 0 {
            let t = edges.trailing_zeros() as usize;
            let pos = k * 64 + t;
            if (starts >> t) & 1 != 0 {
                start = pos;
            } else {
                f(start, pos);
            }
            edges &= edges - 1;
        }
    }
    if carry != 0 {
        f(start, s.len());
    }
}

/// Bit `j` set when byte `j` of the little-endian word `w` is an ASCII letter or digit: the
/// [`ASCII_ALNUM`] table for eight bytes at once, with range checks on 7-bit lanes (adding
/// `0x80 - lo` to a lane below `0x80` sets its top bit exactly when the lane is at least `lo`,
/// and never carries into the next lane).
fn ascii_alnum_mask(w: u64) -> u8 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let ascii = !w & HIGH;
    let x = w & !HIGH;
    let at_least = |v: u64, lo: u8| (v + ONES * u64::from(0x80 - lo)) & HIGH;
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    // Setting bit 5 maps 'A'..='Z' onto 'a'..='z' and nothing else into that range.
    let folded = x | (ONES * 0x20);
    let letter = at_least(folded, b'a') & !at_least(folded, b'z' + 1);
    // One bit per lane (bit 8k + 7), gathered into the top byte: lane k lands on bit 56 + k.
    (((digit | letter) & ascii) >> 7).wrapping_mul(0x0102_0408_1020_4080).to_be_bytes()[0]
}

/// The position of the first byte at or after `from` that is not ASCII, eight bytes at a time.
fn next_non_ascii(bytes: &[u8], from: usize) -> Option<usize> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(w) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let high = u64::from_le_bytes(*w) & HIGH;
        if high != 0 {
            return Some(i + (high.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes.get(i..)?.iter().position(|&b| !b.is_ascii()).map(|p| i + p)
}

/// A token set sized for about `text_bytes` of text (generated agent text holds one distinct
/// token per 50 to 100 bytes in a block), so filling it rarely rehashes.
pub fn token_set_for<'a>(text_bytes: usize) -> TokenSet<'a> {
    TokenSet {
        short: foldhash::HashSet::with_capacity_and_hasher((text_bytes / 64).clamp(64, SET_TOKENS), Default::default()),
        long: foldhash::HashSet::with_capacity_and_hasher(
            (text_bytes / 1024).clamp(16, SET_TOKENS),
            Default::default(),
        ),
        ..TokenSet::default()
    }
}

/// The tokens of `text` as stored (long ones as windows), added to `out`.
pub fn tokenize<'a>(text: &'a str, out: &mut TokenSet<'a>) {
    let bytes = text.as_bytes();
    out.text_bytes += bytes.len();
    alnum_runs(text, |start, end| {
        let len = end - start;
        if len <= 8 {
            out.insert_short(short_key(bytes, start, len));
            return;
        }
        let tok = &text[start..end];
        // At most WINDOW bytes means at most WINDOW characters.
        if len <= WINDOW {
            out.insert_long(tok);
            return;
        }
        let chars: Vec<usize> = tok.char_indices().map(|(i, _)| i).collect();
        if chars.len() <= WINDOW {
            out.insert(tok);
            return;
        }
        let mut start = 0;
        loop {
            let end = (start + WINDOW).min(chars.len());
            let b = chars.get(end).copied().unwrap_or(tok.len());
            out.insert(&tok[chars[start]..b]);
            if end == chars.len() {
                break;
            }
            start += STEP;
        }
    });
}

/// How a piece of a LIKE pattern must sit in a token of a matching text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceKind {
    /// Bounded by non-token characters (or an anchored pattern end) on both sides: a whole
    /// token. Looked up by binary search.
    Exact,
    /// Bounded on the left only: the start of a token. A range of the sorted dictionary.
    Prefix,
    /// Anything else (a wildcard on its left): somewhere inside a token. Needs a scan of the
    /// dictionary, so it is used only when a pattern has no exact or prefix piece.
    Inside,
}

/// One alphanumeric run of a LIKE pattern's literal part, cut to [`STEP`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Piece {
    pub text: String,
    pub kind: PieceKind,
}

/// The pieces a LIKE pattern requires of a matching text. `None` when the pattern uses an
/// escape character (no pruning then).
pub fn like_pieces(pattern: &str) -> Option<Vec<Piece>> {
    if pattern.contains('\\') {
        return None;
    }
    let fragments: Vec<&str> = pattern.split(['%', '_']).collect();
    let last = fragments.len() - 1;
    let mut pieces: Vec<Piece> = Vec::new();
    for (f, fragment) in fragments.iter().enumerate() {
        alnum_runs(fragment, |at, end| {
            let run = &fragment[at..end];
            // The text's start or end bounds a run at the pattern's own start or end.
            let left = at > 0 || f == 0;
            let mut right = at + run.len() < fragment.len() || f == last;
            let mut text: String = run.chars().take(STEP).collect();
            if text.len() < run.len() {
                right = false;
            }
            let kind = match (left, right) {
                (true, true) => PieceKind::Exact,
                (true, false) => PieceKind::Prefix,
                _ => PieceKind::Inside,
            };
            let piece = Piece { text: std::mem::take(&mut text), kind };
            if !pieces.contains(&piece) {
                pieces.push(piece);
            }
        });
    }
    Some(pieces)
}

impl TextIndex {
    /// Build from the distinct tokens of each block, in block order.
    pub fn from_blocks(blocks: Vec<TokenSet<'_>>) -> TextIndex {
        let mut acc = TokenBlocks::default();
        for set in blocks {
            acc.push_block(set);
        }
        acc.finish()
    }

    /// Decode a text section: `bytes` from its first byte ([`crate::TextSection::at`]) to the
    /// end of the encoded index.
    pub fn decode(bytes: &[u8]) -> Result<TextIndex, crate::IndexDecodeError> {
        crate::codec::decode_text(bytes)
    }

    /// Heap bytes held (what caching it costs).
    pub fn memory_bytes(&self) -> u64 {
        (self.coded.capacity()
            + 4 * (self.groups.capacity() + self.blocks.capacity() + self.more.capacity())
            + std::mem::size_of::<TextIndex>()) as u64
    }

    pub fn n_tokens(&self) -> usize {
        self.blocks.len()
    }

    pub fn n_blocks(&self) -> u32 {
        self.n_blocks
    }

    /// The blocks token `i` occurs in.
    pub(crate) fn token_blocks(&self, i: usize) -> &[u32] {
        match self.blocks.get(i) {
            None => &[],
            Some(v) if v & MANY == 0 => std::slice::from_ref(v),
            Some(v) => {
                let at = (v & !MANY) as usize;
                let n = self.more.get(at).map_or(0, |n| *n as usize);
                self.more.get(at + 1..at + 1 + n).unwrap_or(&[])
            }
        }
    }

    /// The blocks that kept only their tokens of at most [`ALWAYS_INDEXED`] bytes: the blocks
    /// of the empty token, which sorts first.
    pub fn partial_blocks(&self) -> &[u32] {
        match self.groups.first() {
            Some(_) if self.group_head(0).is_empty() => self.token_blocks(0),
            _ => &[],
        }
    }

    /// The first token of group `g`.
    fn group_head(&self, g: usize) -> &[u8] {
        let mut pos = self.groups[g] as usize;
        let len = take_varint(&self.coded, &mut pos);
        self.coded.get(pos..pos + len).unwrap_or(&[])
    }

    /// Calls `f(i, token)` for every token from the first of group `g` on, in order, until it
    /// returns false.
    fn walk(&self, g: usize, mut f: impl FnMut(usize, &[u8]) -> bool) {
        let Some(&start) = self.groups.get(g) else { return };
        let mut pos = start as usize;
        let mut token: Vec<u8> = Vec::with_capacity(64);
        for i in g * GROUP..self.n_tokens() {
            let keep = if i.is_multiple_of(GROUP) {
                token.clear();
                0
            } else {
                take_varint(&self.coded, &mut pos)
            };
            let len = take_varint(&self.coded, &mut pos);
            token.truncate(keep);
            token.extend_from_slice(self.coded.get(pos..pos + len).unwrap_or(&[]));
            pos += len;
            if !f(i, &token) {
                return;
            }
        }
    }

    /// Calls `f(i, token)` for the tokens not below `key` in byte order, from the first of
    /// them, until it returns false.
    fn seek(&self, key: &[u8], mut f: impl FnMut(usize, &[u8]) -> bool) {
        // The first group whose first token is not below `key`; the answer starts in the
        // group before it (or at its head).
        let (mut lo, mut hi) = (0, self.groups.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.group_head(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.walk(lo.saturating_sub(1), |i, token| token < key || f(i, token));
    }

    /// Calls `f(token, blocks)` for every token, in order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u32])) {
        self.walk(0, |i, token| {
            f(token, self.token_blocks(i));
            true
        });
    }

    /// Every token with its blocks, in order (tests and tools).
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u32>)> {
        let mut out = Vec::with_capacity(self.n_tokens());
        self.for_each(|token, blocks| out.push((token.to_vec(), blocks.to_vec())));
        out
    }

    /// Marks the blocks of every token containing `piece` (which holds no NUL byte): a scan
    /// of the whole dictionary, in parallel over ranges of groups when it is large.
    fn scan_inside(&self, piece: &[u8], hit: &mut [bool]) {
        use rayon::prelude::*;
        let ranges = self.groups.len().div_ceil(SCAN_GROUPS_PER_TASK);
        let found = (0..ranges)
            .into_par_iter()
            .map(|r| {
                let mut part = vec![false; hit.len()];
                let end = ((r + 1) * SCAN_GROUPS_PER_TASK).min(self.groups.len());
                self.scan_inside_groups(piece, r * SCAN_GROUPS_PER_TASK..end, &mut part);
                part
            })
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x |= y);
                a
            });
        if let Some(found) = found {
            hit.iter_mut().zip(found).for_each(|(x, y)| *x |= y);
        }
    }

    /// [`Self::scan_inside`] over the tokens of `groups`. Tokens are decoded into runs of
    /// about [`SCAN_RUN`] bytes, NUL-separated, and each run is searched at once: one SIMD
    /// search over kilobytes instead of one short search per token.
    fn scan_inside_groups(&self, piece: &[u8], groups: std::ops::Range<usize>, hit: &mut [bool]) {
        let finder = memmem::Finder::new(piece);
        let mut run: Vec<u8> = Vec::with_capacity(SCAN_RUN + 256);
        let mut starts: Vec<(usize, usize)> = Vec::with_capacity(SCAN_RUN / 4);
        let mut search = |run: &mut Vec<u8>, starts: &mut Vec<(usize, usize)>| {
            for at in finder.find_iter(run) {
                let k = starts.partition_point(|&(start, _)| start <= at);
                if let Some(&(_, token)) = k.checked_sub(1).and_then(|k| starts.get(k)) {
                    self.mark(token, hit);
                }
            }
            run.clear();
            starts.clear();
        };
        let end = groups.end * GROUP;
        self.walk(groups.start, |i, token| {
            if i >= end {
                return false;
            }
            starts.push((run.len(), i));
            run.extend_from_slice(token);
            run.push(0);
            if run.len() >= SCAN_RUN {
                search(&mut run, &mut starts);
            }
            true
        });
        search(&mut run, &mut starts);
    }

    fn mark(&self, t: usize, hit: &mut [bool]) {
        for b in self.token_blocks(t) {
            if let Some(slot) = hit.get_mut(*b as usize) {
                *slot = true;
            }
        }
    }

    /// Blocks that may hold a text with every piece (see [`like_pieces`]): one flag per
    /// block. Exact and prefix pieces are binary searches; inside pieces scan the dictionary
    /// and are used only when there is nothing cheaper (skipping a piece only keeps more
    /// blocks). No pieces: every block.
    pub fn candidate_blocks(&self, pieces: &[Piece]) -> Vec<bool> {
        let n = self.n_blocks as usize;
        let mut keep = vec![true; n];
        let cheap = pieces.iter().any(|p| p.kind != PieceKind::Inside);
        let partial = self.partial_blocks();
        for piece in pieces {
            let bytes = piece.text.as_bytes();
            let mut hit = vec![false; n];
            match piece.kind {
                PieceKind::Exact => self.seek(bytes, |t, token| {
                    if token == bytes {
                        self.mark(t, &mut hit);
                    }
                    false
                }),
                PieceKind::Prefix => self.seek(bytes, |t, token| {
                    let inside = token.starts_with(bytes);
                    if inside {
                        self.mark(t, &mut hit);
                    }
                    inside
                }),
                PieceKind::Inside if cheap => continue,
                PieceKind::Inside => self.scan_inside(bytes, &mut hit),
            }
            // Only a whole token of at most ALWAYS_INDEXED bytes is surely in every block's
            // list; anything else may lie in a token a block did not keep.
            if piece.kind != PieceKind::Exact || bytes.len() > ALWAYS_INDEXED {
                for b in partial {
                    if let Some(slot) = hit.get_mut(*b as usize) {
                        *slot = true;
                    }
                }
            }
            for (k, h) in keep.iter_mut().zip(hit) {
                *k &= h;
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What LIKE means, for patterns without escapes: `%` any run, `_` one character.
    fn like(text: &str, pattern: &str) -> bool {
        fn go(t: &[char], p: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
                Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
                Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
            }
        }
        go(&text.chars().collect::<Vec<_>>(), &pattern.chars().collect::<Vec<_>>())
    }

    /// The index of `blocks` keeps every block that holds a match for `pattern`.
    fn candidates_hold_every_match(blocks: &[Vec<String>], pattern: &str) -> Result<(), TestCaseError> {
        let keep = index_of(blocks).candidate_blocks(&like_pieces(pattern).expect("no escapes"));
        for (b, texts) in blocks.iter().enumerate() {
            if texts.iter().any(|t| like(t, pattern)) {
                prop_assert!(keep[b], "block {} holds a match for {:?}", b, pattern);
            }
        }
        Ok(())
    }

    fn index_of(blocks: &[Vec<String>]) -> TextIndex {
        TextIndex::from_blocks(
            blocks
                .iter()
                .map(|texts| {
                    let mut set = TokenSet::default();
                    for t in texts {
                        tokenize(t, &mut set);
                    }
                    set
                })
                .collect(),
        )
    }

    #[test]
    fn finds_the_blocks_of_an_order_number() {
        let idx = index_of(&[
            vec!["Refund for ORD-8244153 approved".into(), "hello".into()],
            vec!["ORD-1 and ord-82441530".into()],
            vec!["nothing here".into()],
        ]);
        let p = like_pieces("%ORD-8244153%").expect("pieces");
        let kinds: Vec<(&str, PieceKind)> = p.iter().map(|p| (p.text.as_str(), p.kind)).collect();
        assert_eq!(kinds, [("ORD", PieceKind::Inside), ("8244153", PieceKind::Prefix)]);
        let kinds = |pat: &str| -> Vec<PieceKind> { like_pieces(pat).expect("p").iter().map(|p| p.kind).collect() };
        assert_eq!(kinds("Refund for%"), [PieceKind::Exact, PieceKind::Prefix]);
        assert_eq!(kinds("%a b c"), [PieceKind::Inside, PieceKind::Exact, PieceKind::Exact]);
        assert_eq!(kinds("%a_b%"), [PieceKind::Inside, PieceKind::Inside]);
        // Only the prefix piece is looked up ("ORD" would need a scan): both blocks with a
        // token starting 8244153 stay.
        assert_eq!(idx.candidate_blocks(&p), [true, true, false]);
        // Case matters, as in LIKE: only block 1 has a token "ord".
        assert_eq!(idx.candidate_blocks(&like_pieces("ord-8244153%").expect("p")), [false, true, false]);
        assert_eq!(idx.candidate_blocks(&like_pieces("%Ord %").expect("p")), [false, false, false]);
        assert_eq!(idx.candidate_blocks(&like_pieces("%Refund for%").expect("p")), [true, false, false]);
        assert_eq!(idx.candidate_blocks(&like_pieces("%zzz%").expect("p")), [false, false, false]);
        assert_eq!(idx.candidate_blocks(&[]), [true, true, true]);
        assert_eq!(like_pieces("a\\%b"), None);
    }

    #[test]
    fn long_tokens_are_found_anywhere_inside() {
        let long: String = (0..300).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        let idx = index_of(&[vec![format!("x {long} y")], vec!["short".into()]]);
        for start in [0, 1, 31, 32, 33, 100, 250, 268] {
            let piece = &long[start..(start + 32).min(long.len())];
            let p = like_pieces(&format!("%{piece}%")).expect("pieces");
            assert_eq!(idx.candidate_blocks(&p), [true, false], "at {start}");
        }
        // Longer pieces are cut to STEP characters and still found.
        let p = like_pieces(&format!("%{}%", &long[10..200])).expect("pieces");
        assert_eq!(idx.candidate_blocks(&p), [true, false]);
    }

    #[test]
    fn token_chars_are_the_alphanumeric_ones() {
        let differ: Vec<char> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|&ch| is_token_char(ch) != ch.is_alphanumeric())
            .collect();
        assert!(differ.is_empty(), "{differ:?}");
    }

    /// The plain definition: maximal runs of characters that are alphanumeric.
    fn runs_reference(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, ch) in s.char_indices() {
            match (ch.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(st)) => {
                    out.push(&s[st..i]);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(st) = start {
            out.push(&s[st..]);
        }
        out
    }

    fn runs(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        alnum_runs(s, |a, b| out.push(&s[a..b]));
        out
    }

    /// A block of base64-like payloads keeps its short tokens and is listed as partial; a
    /// block of prose next to it keeps everything and is pruned as before.
    #[test]
    fn blocks_dense_with_long_tokens_keep_short_ones_and_stay_candidates() {
        let payload = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg";
        let dense = vec![format!("image {payload} ref ORD1 {}", payload.to_lowercase())];
        let prose = vec!["refund for ORD2 was approved yesterday".to_owned()];
        let idx = index_of(&[dense, prose]);
        assert_eq!(idx.partial_blocks(), &[0]);
        let tokens: Vec<Vec<u8>> = idx.entries().into_iter().map(|(t, _)| t).collect();
        assert!(tokens.iter().all(|t| t.len() <= ALWAYS_INDEXED), "{tokens:?}");
        assert!(tokens.contains(&b"ORD1".to_vec()) && tokens.contains(&b"approved".to_vec()));
        let candidates = |pattern: &str| idx.candidate_blocks(&like_pieces(pattern).expect("pattern"));
        // Whole short tokens are looked up exactly, in both blocks.
        assert_eq!(candidates("% ORD1 %"), vec![true, false]);
        assert_eq!(candidates("%approved%"), vec![true, true]);
        assert_eq!(candidates("% approved %"), vec![false, true]);
        // A piece of the dropped payload: only the partial block can hold it.
        assert_eq!(candidates("%0KGgoAAAANSUhEUgAAAAEAAAAB%"), vec![true, false]);
        assert_eq!(candidates("% iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB%"), vec![true, false]);
        // The codec keeps the partial list (a section tag older readers refuse).
        let mut out = Vec::new();
        crate::codec::encode(&crate::SegmentIndex::default(), Some(&idx), &mut out);
        let (_, section) = crate::codec::decode(&out).expect("decode");
        let at = section.expect("text section").at;
        assert_eq!(out[at], 2);
        assert_eq!(TextIndex::decode(&out[at..]).expect("text"), idx);
    }

    /// Every byte value in every lane, beside neighbours that sit on each range's edges.
    #[test]
    fn ascii_alnum_mask_is_exact_for_every_byte_in_every_lane() {
        for fill in [0u8, b'/', b'0', b'9', b':', b'@', b'A', b'Z', b'[', b'`', b'a', b'z', b'{', 0x7f, 0x80, 0xff] {
            for j in 0..8 {
                for b in 0..=255u8 {
                    let mut lanes = [fill; 8];
                    lanes[j] = b;
                    let expected =
                        lanes.iter().enumerate().fold(0u8, |m, (k, &c)| m | (ASCII_ALNUM[usize::from(c)] << k));
                    assert_eq!(ascii_alnum_mask(u64::from_le_bytes(lanes)), expected, "lanes {lanes:?}");
                }
            }
        }
    }

    #[test]
    fn runs_at_word_edges() {
        for len in [0, 1, 63, 64, 65, 127, 128, 129] {
            let a = "a".repeat(len);
            assert_eq!(runs(&a), runs_reference(&a), "{len}");
            let spaced = format!(" {a}");
            assert_eq!(runs(&spaced), runs_reference(&spaced), "{len}");
        }
        assert_eq!(runs("naïve café—ok 名前 x"), ["naïve", "café", "ok", "名前", "x"]);
        assert_eq!(runs("---"), Vec::<&str>::new());
    }

    proptest! {
        /// The bit-parallel scan finds exactly the runs of the definition, Unicode included.
        #[test]
        fn runs_match_the_definition(s in "[a-z0-9 .,é—名\\u{1F600}-]{0,200}") {
            prop_assert_eq!(runs(&s), runs_reference(&s));
        }

        /// The index is the sorted distinct tokens with their sorted blocks, whatever the
        /// token lengths around the 8-byte integer key.
        #[test]
        fn index_lists_every_token_with_its_blocks(
            blocks in proptest::collection::vec(proptest::collection::vec("[abé名]{1,12}( [abé名]{1,12}){0,6}", 0..4), 1..6),
        ) {
            let idx = index_of(&blocks);
            let mut want: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
            for (b, texts) in blocks.iter().enumerate() {
                // A block dense with distinct long tokens keeps the short ones only.
                let distinct: std::collections::BTreeSet<&str> = texts.iter().flat_map(|t| runs_reference(t)).collect();
                let beyond: usize = distinct.iter().map(|t| t.len()).filter(|&n| n > ALWAYS_INDEXED).sum();
                let text: usize = texts.iter().map(|t| t.len()).sum();
                let partial = beyond >= PARTIAL_MIN_BYTES && beyond * LONG_TOKEN_SHARE > text;
                if partial {
                    want.entry(String::new()).or_default().push(b as u32);
                }
                for tok in distinct.into_iter().filter(|t| !partial || t.len() <= ALWAYS_INDEXED) {
                    want.entry(tok.to_owned()).or_default().push(b as u32);
                }
            }
            let got: Vec<(String, Vec<u32>)> = idx
                .entries()
                .into_iter()
                .map(|(token, blocks)| (String::from_utf8_lossy(&token).into_owned(), blocks))
                .collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }

        /// Many tokens (dozens of front-coding groups) sharing prefixes: whole-token and
        /// prefix lookups name exactly the blocks a reference map gives, whatever group the
        /// key falls in (before the first token, on a group's head, past the last); inside
        /// lookups name every block whose tokens contain the piece.
        #[test]
        fn lookups_across_groups_match_a_reference(
            words in proptest::collection::vec(("[ab]{1,3}[0-9]{0,4}", 0u32..40), 1..600),
            keys in proptest::collection::vec("[ab]{0,3}[0-9]{0,3}", 1..20),
        ) {
            let n_blocks = 40;
            let mut sets: Vec<TokenSet<'_>> = (0..n_blocks).map(|_| TokenSet::default()).collect();
            let mut want: std::collections::BTreeMap<&str, std::collections::BTreeSet<u32>> = Default::default();
            for (w, b) in &words {
                tokenize(w, &mut sets[*b as usize]);
                want.entry(w.as_str()).or_default().insert(*b);
            }
            let idx = TextIndex::from_blocks(sets);
            prop_assert_eq!(idx.n_tokens(), want.len());
            let flags = |blocks: std::collections::BTreeSet<u32>| (0..n_blocks).map(|b| blocks.contains(&b)).collect::<Vec<bool>>();
            for key in keys.iter().filter(|k| !k.is_empty()) {
                let piece = |kind| vec![Piece { text: key.clone(), kind }];
                let exact = want.get(key.as_str()).cloned().unwrap_or_default();
                prop_assert_eq!(idx.candidate_blocks(&piece(PieceKind::Exact)), flags(exact), "exact {}", key);
                let prefix: std::collections::BTreeSet<u32> =
                    want.iter().filter(|(t, _)| t.starts_with(key.as_str())).flat_map(|(_, b)| b.iter().copied()).collect();
                prop_assert_eq!(idx.candidate_blocks(&piece(PieceKind::Prefix)), flags(prefix), "prefix {}", key);
                let inside: std::collections::BTreeSet<u32> =
                    want.iter().filter(|(t, _)| t.contains(key.as_str())).flat_map(|(_, b)| b.iter().copied()).collect();
                prop_assert_eq!(idx.candidate_blocks(&piece(PieceKind::Inside)), flags(inside), "inside {}", key);
            }
        }

        /// Sets whose hash sets fill after a few tokens (the rest going to their sorted
        /// lists, sorted again every few tokens) index exactly what unbounded ones do.
        #[test]
        fn full_sets_spill_to_lists_and_index_the_same(
            blocks in proptest::collection::vec(
                proptest::collection::vec("([ab1]{1,3}|[a-f0-9]{1,20}|x{60,80}|é{1,3}[ -])([ -,][a-f0-9é]{1,12}){0,8}", 0..6),
                1..5,
            ),
            set_tokens in 0usize..6,
        ) {
            let section = |set_tokens: usize| {
                let mut acc = TokenBlocks::default();
                for texts in &blocks {
                    let mut set = TokenSet::with_set_tokens(set_tokens);
                    for t in texts {
                        tokenize(t, &mut set);
                    }
                    acc.push_block(set);
                }
                let mut out = Vec::new();
                acc.encode_section(&mut out);
                out
            };
            prop_assert_eq!(section(set_tokens), section(usize::MAX));
        }

        #[test]
        fn runs_match_the_definition_on_any_text(s in any::<String>()) {
            prop_assert_eq!(runs(&s), runs_reference(&s));
        }

        /// Mostly ASCII with a non-ASCII character now and then (letters, digits, punctuation
        /// and emoji of every UTF-8 length), at every offset of the eight-byte search.
        #[test]
        fn runs_match_the_definition_on_mostly_ascii_text(
            s in "([a-z0-9 ,.]{0,19}[é—名٣ǅ\u{1F600}\u{10400}Ⅻ’]?){0,40}"
        ) {
            prop_assert_eq!(runs(&s), runs_reference(&s));
        }

        /// Blocks dense with long tokens keep only their short ones: long exact pieces, prefixes
        /// and inside pieces still find every block that matches.
        #[test]
        fn candidate_blocks_never_miss_a_match_in_partial_blocks(
            blocks in proptest::collection::vec(proptest::collection::vec("([ab1]{1,30}[ -]){1,6}", 0..5), 1..6),
            pattern in "[% -]?[ab1]{1,30}[% -]?",
        ) {
            candidates_hold_every_match(&blocks, &pattern)?;
        }

        #[test]
        fn ascii_alnum_mask_matches_the_table(w in any::<u64>()) {
            let expected = w.to_le_bytes().iter().enumerate()
                .fold(0u8, |m, (j, &b)| m | (ASCII_ALNUM[usize::from(b)] << j));
            prop_assert_eq!(ascii_alnum_mask(w), expected);
        }

        #[test]
        fn next_non_ascii_finds_the_first_non_ascii_byte(s in "([a-z ]{0,12}[é名\u{1F600}]?){0,20}", from in 0usize..300) {
            let bytes = s.as_bytes();
            let expected = (from..bytes.len()).find(|&i| !bytes[i].is_ascii());
            prop_assert_eq!(next_non_ascii(bytes, from), expected);
        }

        /// Never prunes a block holding a match (the scan re-checks the rows it reads).
        #[test]
        fn candidate_blocks_never_miss_a_match(
            blocks in proptest::collection::vec(proptest::collection::vec("[a-cA-Cé1 ,.-]{0,80}", 0..5), 1..6),
            pattern in "[%_]?[a-cA-Cé1 ,.-]{1,8}[%_]?[a-c1 ]{0,3}%?",
        ) {
            candidates_hold_every_match(&blocks, &pattern)?;
        }

        #[test]
        fn long_runs_never_miss(run in "[ab]{60,200}", start in 0usize..200, len in 1usize..80) {
            let idx = index_of(&[vec![format!("<{run}>")]]);
            let start = start.min(run.len() - 1);
            let end = (start + len).min(run.len());
            let p = like_pieces(&format!("%{}%", &run[start..end])).expect("pieces");
            prop_assert_eq!(idx.candidate_blocks(&p), vec![true]);
        }
    }
}
