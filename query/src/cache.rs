//! The decoded block cache: column blocks of segments, decompressed and decoded into Arrow
//! arrays, kept between queries up to a byte budget (like ClickHouse's uncompressed cache).
//! Segments never change once written and every open segment has a process-unique id, so an
//! entry never goes stale: it is only evicted (least recently and least frequently used
//! first, by `quick_cache`'s CLOCK-Pro policy) or left unused once its segment is compacted
//! away or expired.
//!
//! Free-text columns (`content`) are never cached: they are most of the bytes, and the scan
//! reads only the pages its rows need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arrow::array::{Array, ArrayRef};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use segments::ColumnId;

/// Default budget: room for the non-text columns of about a million events.
pub const DEFAULT_BLOCK_CACHE_BYTES: u64 = 256 << 20;

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

#[derive(Debug, Clone, Copy)]
struct ArrayBytes;

impl Weighter<BlockKey, ArrayRef> for ArrayBytes {
    fn weight(&self, _key: &BlockKey, array: &ArrayRef) -> u64 {
        // Never zero: zero-weight entries would never be evicted.
        (array.get_array_memory_size() as u64).max(1)
    }
}

/// Decoded column blocks with hit / miss counters.
pub struct BlockCache {
    entries: Cache<BlockKey, ArrayRef, ArrayBytes>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("bytes", &self.entries.weight())
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

/// Counters of a [`BlockCache`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
}

impl BlockCache {
    pub fn new(capacity_bytes: u64) -> BlockCache {
        let items = (capacity_bytes / (64 << 10)).clamp(16, 1 << 20) as usize;
        BlockCache {
            entries: Cache::with_weighter(items, capacity_bytes, ArrayBytes),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether `column` is kept here at all.
    pub fn caches(column: ColumnId) -> bool {
        column.encoding() != segments::ColumnEncoding::Plain
    }

    /// The cached block, or `decode`'s result (then kept, if it fits the budget). Concurrent
    /// callers for one key wait for a single decode.
    pub fn get_or_decode<E>(&self, key: BlockKey, decode: impl FnOnce() -> Result<ArrayRef, E>) -> Result<ArrayRef, E> {
        if self.entries.capacity() == 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return decode();
        }
        let mut decoded = false;
        let array = self.entries.get_or_insert_with(&key, || {
            decoded = true;
            decode()
        })?;
        let counter = if decoded { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(array)
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
/// [`BlockCache::set_capacity`] changes it).
pub fn block_cache() -> &'static BlockCache {
    static CACHE: OnceLock<BlockCache> = OnceLock::new();
    CACHE.get_or_init(|| BlockCache::new(DEFAULT_BLOCK_CACHE_BYTES))
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
        let cache = BlockCache::new(1 << 20);
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
        let cache = BlockCache::new(1 << 20);
        assert!(cache.get_or_decode(key(2), || Err::<ArrayRef, _>("corrupt")).is_err());
        let a = cache.get_or_decode(key(2), || Ok::<_, &str>(array(5))).expect("second try decodes");
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn stays_within_its_budget() {
        // 64 KiB budget, 8 KiB arrays: most of 100 blocks must be evicted.
        let cache = BlockCache::new(64 << 10);
        for b in 0..100 {
            cache.get_or_decode(key(b), || Ok::<_, &str>(array(1024))).expect("decode");
        }
        let s = cache.stats();
        assert!(s.bytes <= 64 << 10, "{s:?}");
        assert!(s.entries < 100, "{s:?}");
        // A zero budget caches nothing but still answers.
        let off = BlockCache::new(0);
        for _ in 0..2 {
            assert_eq!(off.get_or_decode(key(1), || Ok::<_, &str>(array(3))).expect("decode").len(), 3);
        }
        assert_eq!(off.stats().entries, 0);
        assert_eq!(off.stats().misses, 2);
    }
}
