//! The decoded caches: column blocks of segments decompressed and decoded into Arrow arrays,
//! and pages of free text (`content`) decompressed, kept between queries up to a byte budget
//! each (like ClickHouse's uncompressed cache). Segments never change once written and every
//! open segment has a process-unique id, so an entry never goes stale: it is only evicted
//! (least recently and least frequently used first, by `quick_cache`'s CLOCK-Pro policy) or
//! left unused once its segment is compacted away or expired.
//!
//! A third cache holds segments' token indexes of `content` ([`TextIndexCache`]), which
//! segments decode only when a `LIKE` needs them: they take about 47 bytes per event, so an
//! idle server or one that never searches text holds none. A fourth holds their value
//! bitmaps and trace directories ([`SegmentIndexCache`]), which most filtered queries use:
//! about 5.5 bytes per event, so that a store's memory does not grow with all it holds.
//!
//! Free text has its own, smaller budget: it is most of the bytes, and a query that reads
//! much of it must not push out the columns every aggregation reads. The scan reads only the
//! text pages its rows need, so what is kept are the pages that queries selected (a trace
//! looked at again, a dashboard's query repeated over recent rows).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef};
use index::{SegmentIndex, TextIndex};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use segments::{ColumnId, StrColumn};

/// Default budget of the block cache: room for the non-text columns of about a million events.
pub const DEFAULT_BLOCK_CACHE_BYTES: u64 = 256 << 20;

/// Default budget of the text page cache: a quarter of the block cache's.
pub const DEFAULT_TEXT_CACHE_BYTES: u64 = DEFAULT_BLOCK_CACHE_BYTES / 4;

/// Default budget of the token index cache: the indexes of about five million events.
pub const DEFAULT_TEXT_INDEX_CACHE_BYTES: u64 = 256 << 20;

/// Default budget of the segment index cache: the bitmaps and trace directories of about 45
/// million events.
pub const DEFAULT_SEGMENT_INDEX_CACHE_BYTES: u64 = 256 << 20;

/// Which column block an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// [`segments::Segment::uid`].
    pub segment: u64,
    pub block: u32,
    pub column: ColumnId,
    /// The block's dictionary keys ([`crate::codes`]) instead of its strings.
    pub codes: bool,
}

/// Which page of a paged text chunk an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// [`segments::Segment::uid`].
    pub segment: u64,
    pub block: u32,
    pub column: ColumnId,
    pub page: u32,
}

/// A decoded value and the memory it holds.
pub trait Decoded: Clone {
    fn bytes(&self) -> u64;
}

impl Decoded for ArrayRef {
    fn bytes(&self) -> u64 {
        self.get_array_memory_size() as u64
    }
}

impl Decoded for Arc<StrColumn> {
    fn bytes(&self) -> u64 {
        let validity = self.validity.as_ref().map_or(0, Vec::capacity);
        (self.offsets.capacity() * 4 + self.data.capacity() + validity + std::mem::size_of::<StrColumn>()) as u64
    }
}

impl Decoded for Arc<TextIndex> {
    fn bytes(&self) -> u64 {
        self.memory_bytes()
    }
}

impl Decoded for Arc<SegmentIndex> {
    fn bytes(&self) -> u64 {
        self.memory_bytes()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bytes;

impl<K, V: Decoded> Weighter<K, V> for Bytes {
    fn weight(&self, _key: &K, value: &V) -> u64 {
        // Never zero: zero-weight entries would never be evicted.
        value.bytes().max(1)
    }
}

/// The caches' key hasher: foldhash, not the standard library's SipHash (a lookup per text
/// page read hashed its key with SipHash; a trace or a filtered read of `content` makes
/// thousands of lookups).
type KeyHasher = foldhash::fast::RandomState;

/// Decoded values by key, with hit / miss counters.
pub struct DecodedCache<K, V> {
    entries: Cache<K, V, Bytes, KeyHasher>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Column blocks as Arrow arrays.
pub type BlockCache = DecodedCache<BlockKey, ArrayRef>;

/// Pages of free text.
pub type TextPageCache = DecodedCache<PageKey, Arc<StrColumn>>;

/// Token indexes of `content` by [`segments::Segment::uid`].
pub type TextIndexCache = DecodedCache<u64, Arc<TextIndex>>;

/// Value bitmaps and trace directories by [`segments::Segment::uid`].
pub type SegmentIndexCache = DecodedCache<u64, Arc<SegmentIndex>>;

impl<K, V> std::fmt::Debug for DecodedCache<K, V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Decoded,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedCache")
            .field("bytes", &self.entries.weight())
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

/// Counters of a [`DecodedCache`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
}

impl BlockCache {
    /// Whether `column` is kept here at all (free text goes to the [`TextPageCache`]).
    pub fn caches(column: ColumnId) -> bool {
        column.encoding() != segments::ColumnEncoding::Plain
    }
}

impl<K, V> DecodedCache<K, V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Decoded,
{
    /// A cache of `capacity_bytes` for values of about `typical_bytes` each.
    pub fn new(capacity_bytes: u64, typical_bytes: u64) -> DecodedCache<K, V> {
        let items = (capacity_bytes / typical_bytes.max(1)).clamp(16, 1 << 20) as usize;
        DecodedCache {
            entries: Cache::with(items, capacity_bytes, Bytes, KeyHasher::default(), Default::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached value, or `decode`'s result (then kept, if it fits the budget). Concurrent
    /// callers for one key wait for a single decode.
    pub fn get_or_decode<E>(&self, key: K, decode: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if self.entries.capacity() == 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return decode();
        }
        let mut decoded = false;
        let value = self.entries.get_or_insert_with(&key, || {
            decoded = true;
            decode()
        })?;
        let counter = if decoded { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    /// Whether `key` is cached (without counting a hit or changing its standing).
    pub fn contains(&self, key: &K) -> bool {
        self.entries.peek(key).is_some()
    }

    /// Change the byte budget (evicting down to it).
    pub fn set_capacity(&self, bytes: u64) {
        self.entries.set_capacity(bytes);
    }

    pub fn clear(&self) {
        self.entries.clear();
    }

    pub fn stats(&self) -> BlockCacheStats {
        BlockCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.len() as u64,
            bytes: self.entries.weight(),
            capacity: self.entries.capacity(),
        }
    }
}

/// The process's block cache (budget [`DEFAULT_BLOCK_CACHE_BYTES`] until
/// [`DecodedCache::set_capacity`] changes it).
pub fn block_cache() -> &'static BlockCache {
    static CACHE: OnceLock<BlockCache> = OnceLock::new();
    CACHE.get_or_init(|| BlockCache::new(DEFAULT_BLOCK_CACHE_BYTES, 64 << 10))
}

/// The process's text page cache (budget [`DEFAULT_TEXT_CACHE_BYTES`] until
/// [`DecodedCache::set_capacity`] changes it).
pub fn text_page_cache() -> &'static TextPageCache {
    static CACHE: OnceLock<TextPageCache> = OnceLock::new();
    CACHE.get_or_init(|| TextPageCache::new(DEFAULT_TEXT_CACHE_BYTES, 4 << 10))
}

/// The process's token index cache (budget [`DEFAULT_TEXT_INDEX_CACHE_BYTES`] until
/// [`DecodedCache::set_capacity`] changes it). An entry is tens of megabytes: sized for few
/// items, the cache keeps one shard, so any index up to the whole budget fits.
pub fn text_index_cache() -> &'static TextIndexCache {
    static CACHE: OnceLock<TextIndexCache> = OnceLock::new();
    CACHE.get_or_init(|| TextIndexCache::new(DEFAULT_TEXT_INDEX_CACHE_BYTES, DEFAULT_TEXT_INDEX_CACHE_BYTES / 16))
}

/// The process's segment index cache (budget [`DEFAULT_SEGMENT_INDEX_CACHE_BYTES`] until
/// [`DecodedCache::set_capacity`] changes it). Sized for few items like the token index
/// cache: one shard, so a large segment's index fits whatever the others.
pub fn segment_index_cache() -> &'static SegmentIndexCache {
    static CACHE: OnceLock<SegmentIndexCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        SegmentIndexCache::new(DEFAULT_SEGMENT_INDEX_CACHE_BYTES, DEFAULT_SEGMENT_INDEX_CACHE_BYTES / 16)
    })
}

/// `segment`'s value bitmaps and trace directory, from the cache or decoded into it.
pub fn segment_index(segment: &segments::Segment) -> Result<Arc<SegmentIndex>, segments::SegmentError> {
    segment_index_cache().get_or_decode(segment.uid(), || segment.load_index().map(Arc::new))
}

/// `segment`'s token index of `content`, from the cache or decoded into it; `None` when it has
/// none, or when it fails to decode (a file that passed its checksum on open, so a writer
/// bug: logged, and the scan then reads every block, which gives the same rows).
pub fn segment_text_index(segment: &segments::Segment) -> Option<Arc<TextIndex>> {
    if !segment.has_text_index() {
        return None;
    }
    let loaded = text_index_cache().get_or_decode(segment.uid(), || match segment.load_text_index() {
        Ok(Some(t)) => Ok(Arc::new(t)),
        Ok(None) => Err(None),
        Err(e) => Err(Some(e)),
    });
    match loaded {
        Ok(t) => Some(t),
        Err(e) => {
            if let Some(e) = e {
                tracing::warn!(error = %e, "token index unreadable; scanning every block of the segment");
            }
            None
        }
    }
}

/// Bring the token indexes of `segments` into the cache, decoding the missing ones on every
/// core: the first search after a start decodes one per segment, each tens of milliseconds.
/// On a multi-threaded tokio runtime (the server's) the calling worker hands its other tasks
/// to another thread meanwhile, so a search that decodes does not stall other requests.
pub fn prefetch_text_indexes(segments: &[&segments::Segment]) {
    let missing: Vec<&segments::Segment> =
        segments.iter().copied().filter(|s| s.has_text_index() && !text_index_cache().contains(&s.uid())).collect();
    // (Without a budget nothing would stay for the scan: it decodes them itself.)
    if text_index_cache().entries.capacity() > 0 {
        decode_on_every_core(&missing, |seg| {
            segment_text_index(seg);
        });
    }
}

/// Bring the value bitmaps and trace directories of `segments` into the cache, decoding the
/// missing ones on every core (the first filtered query after a start decodes one per
/// segment), as [`prefetch_text_indexes`] does. Errors are left for the scan to meet.
pub fn prefetch_segment_indexes(segments: &[&segments::Segment]) {
    let missing: Vec<&segments::Segment> =
        segments.iter().copied().filter(|s| !segment_index_cache().contains(&s.uid())).collect();
    if segment_index_cache().entries.capacity() > 0 && missing.len() > 1 {
        decode_on_every_core(&missing, |seg| {
            let _ = segment_index(seg);
        });
    }
}

/// Called by each thread [`prefetch_text_indexes`] and [`prefetch_segment_indexes`] start,
/// before it exits: the server returns the thread's free allocator memory there (a thread's
/// malloc arena keeps what it freed, and the next thread inherits it untrimmed).
static DECODE_THREAD_EXIT_HOOK: OnceLock<fn()> = OnceLock::new();

/// Set [`DECODE_THREAD_EXIT_HOOK`] (once per process; later calls are ignored).
pub fn set_decode_thread_exit_hook(hook: fn()) {
    let _ = DECODE_THREAD_EXIT_HOOK.set(hook);
}

/// Run `decode` on each of `segments`, on every core, off the tokio worker (see
/// [`prefetch_text_indexes`]).
fn decode_on_every_core(segments: &[&segments::Segment], decode: impl Fn(&segments::Segment) + Sync) {
    if segments.is_empty() {
        return;
    }
    let decode_all = || {
        let threads = crate::cores().min(segments.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            while let Some(seg) = segments.get(next.fetch_add(1, Ordering::Relaxed)) {
                decode(seg);
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|| {
                    work();
                    if let Some(hook) = DECODE_THREAD_EXIT_HOOK.get() {
                        hook();
                    }
                });
            }
            work();
        });
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(decode_all)
        }
        _ => decode_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn key(block: u32) -> BlockKey {
        BlockKey { segment: 7, block, column: ColumnId::DurationMs, codes: false }
    }

    fn array(n: i64) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(0..n))
    }

    #[test]
    fn decodes_once_then_hits() {
        let cache = BlockCache::new(1 << 20, 64 << 10);
        let mut calls = 0;
        for _ in 0..3 {
            let a = cache
                .get_or_decode(key(1), || {
                    calls += 1;
                    Ok::<_, std::convert::Infallible>(array(100))
                })
                .expect("decode");
            assert_eq!(a.len(), 100);
        }
        assert_eq!(calls, 1);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.entries), (2, 1, 1));
        assert!(s.bytes >= 800, "{s:?}");
    }

    #[test]
    fn errors_are_not_cached() {
        let cache = BlockCache::new(1 << 20, 64 << 10);
        assert!(cache.get_or_decode(key(2), || Err::<ArrayRef, _>("corrupt")).is_err());
        let a = cache.get_or_decode(key(2), || Ok::<_, &str>(array(5))).expect("second try decodes");
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn stays_within_its_budget() {
        // 64 KiB budget, 8 KiB arrays: most of 100 blocks must be evicted.
        let cache = BlockCache::new(64 << 10, 64 << 10);
        for b in 0..100 {
            cache.get_or_decode(key(b), || Ok::<_, &str>(array(1024))).expect("decode");
        }
        let s = cache.stats();
        assert!(s.bytes <= 64 << 10, "{s:?}");
        assert!(s.entries < 100, "{s:?}");
        // A zero budget caches nothing but still answers.
        let off = BlockCache::new(0, 64 << 10);
        for _ in 0..2 {
            assert_eq!(off.get_or_decode(key(1), || Ok::<_, &str>(array(3))).expect("decode").len(), 3);
        }
        assert_eq!(off.stats().entries, 0);
        assert_eq!(off.stats().misses, 2);
    }

    #[test]
    fn text_pages_weigh_their_bytes() {
        let page = |n: usize| {
            let rows: Vec<String> = (0..8).map(|i| "x".repeat(n + i)).collect();
            Arc::new(StrColumn::from_options(rows.iter().map(|r| Some(r.as_str()))))
        };
        let key = |page: u32| PageKey { segment: 3, block: 0, column: ColumnId::Content, page };
        // 32 KiB budget, pages of about 4 KiB: at most 8 fit.
        let cache = TextPageCache::new(32 << 10, 4 << 10);
        for p in 0..40 {
            let got = cache.get_or_decode(key(p), || Ok::<_, &str>(page(500))).expect("decode");
            assert_eq!(got.len(), 8);
        }
        let s = cache.stats();
        assert!(s.bytes <= 32 << 10 && s.entries <= 8 && s.entries >= 1, "{s:?}");
        assert!(page(500).bytes() >= 8 * 500, "a page weighs at least its text");
    }
}
