//! Compaction: the background thread that merges hot segments (lz4, as flushes wrote them)
//! into warm ones (zstd, with the token index), and warm segments of similar size and time
//! span into larger ones; which segments a merge takes (size tiers, time spans, the memory
//! budget both kinds share) and how a merged segment replaces its inputs in the manifest.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use segments::{Event, Segment, SegmentWriter};

use crate::{
    merge, nap, new_segment_file, open_written, sort_for_compaction, stopping, EngineConfig, EngineError, Inner,
    LiveSegment, Tier,
};

/// Fewest hot rows that [`EngineConfig::idle_compaction`] compacts: a trickle of traffic
/// with pauses would otherwise turn each pause's few rows into a small warm segment.
pub const IDLE_COMPACTION_MIN_ROWS: u64 = 50_000;

/// Blocks of rows per piece a compaction merges and then encodes (on every core) at once.
const MERGE_PIECE_BLOCKS: usize = 4;

/// Hot segments per `compaction_trigger` from which compaction stops yielding the CPU (see
/// [`EngineConfig::compaction_niceness`]): at the default trigger, 16 hot segments.
pub const URGENT_HOT_SEGMENTS_PER_TRIGGER: usize = 4;

/// The compaction thread: compacts hot segments once `compaction_trigger` of them wait (one
/// after a quiet spell, see [`EngineConfig::idle_compaction`]), else merges warm ones, until
/// the engine closes.
pub(crate) fn compaction_loop(inner: &Arc<Inner>) {
    // Appends seen, and since when they have not changed.
    let mut appended = inner.stats.events_appended.load(Ordering::Relaxed);
    let mut quiet_since = std::time::Instant::now();
    while !inner.shutdown.load(Ordering::Acquire) {
        nap(inner);
        let now = inner.stats.events_appended.load(Ordering::Relaxed);
        if now != appended {
            appended = now;
            quiet_since = std::time::Instant::now();
        }
        let trigger = match inner.cfg.idle_compaction {
            Some(idle) if quiet_since.elapsed() >= idle && idle_hot_rows(inner) >= IDLE_COMPACTION_MIN_ROWS => 1,
            _ => inner.cfg.compaction_trigger,
        };
        let urgent = compaction_is_urgent(hot_segments(inner), inner.cfg.compaction_trigger);
        let compacted = match &inner.compaction_pool {
            Some(pool) if !urgent => {
                let done = pool.install(|| compact_once(inner, trigger));
                // The pool's threads have no naps of their own: give them the per-thread upkeep
                // here (the server returns their free memory once it is idle).
                if let Some(hook) = inner.cfg.background_thread_hook {
                    pool.broadcast(|_| hook());
                }
                if let (Ok(true), Some(hook)) = (&done, inner.cfg.after_compaction_hook) {
                    pool.broadcast(|_| hook());
                }
                done
            }
            Some(_) => {
                let done = compact_once(inner, trigger);
                if matches!(done, Ok(true)) {
                    inner.stats.compactions_urgent.fetch_add(1, Ordering::Relaxed);
                }
                done
            }
            None => compact_once(inner, trigger),
        };
        if let Err(e) = compacted {
            tracing::error!(error = %e, "compaction failed; will retry");
            std::thread::sleep(Duration::from_millis(500));
        }
        // Old warm segments to the cold tier, on this thread: writing one takes seconds, and
        // it must not overlap a merge that could take the same segment.
        if let (Some(age), Some(_)) = (inner.cfg.archive_after, &inner.cfg.archiver) {
            if let Err(e) = crate::archive::archive_once(inner, crate::wall_clock_cutoff(age)) {
                tracing::error!(error = %e, "archiving failed; will retry");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}

/// Merge `picked` into one warm segment: streamed when every input is in the compaction order
/// (see [`merge`]), calling `between_pieces` after each piece, else (hot segments flushed by
/// older versions, in time order) their rows sorted in memory if `sort_in_memory` allows it;
/// `None` when it does not, or when the engine is stopping (a merge stops between pieces
/// then, so that closing does not wait for one of millions of rows).
fn compact_segments(
    inner: &Inner,
    picked: &[LiveSegment],
    sort_in_memory: bool,
    between_pieces: &mut dyn FnMut() -> bool,
) -> Result<Option<LiveSegment>, EngineError> {
    let writer = SegmentWriter::new(inner.cfg.cold);
    let inputs: Vec<&Segment> = picked.iter().map(|s| &*s.segment).collect();
    let (file, path) = new_segment_file(inner);
    let piece_rows = inner.cfg.cold.block_rows.max(1) * MERGE_PIECE_BLOCKS;
    let merged = merge::merge_segments(&writer, &inputs, &path, piece_rows, between_pieces);
    match merged {
        Ok(Some(_)) => open_written(file, &path, Ok(()), Tier::Warm).map(Some),
        Ok(None) if !sort_in_memory || stopping(inner) => Ok(None),
        Ok(None) => {
            inner.stats.compactions_sorted_in_memory.fetch_add(1, Ordering::Relaxed);
            let mut events = Vec::new();
            for s in picked {
                events.extend(s.segment.read_all()?);
            }
            sort_for_compaction(&mut events);
            let written = writer.write(&path, &events).map(|_| ());
            drop(events);
            open_written(file, &path, written, Tier::Warm).map(Some)
        }
        Err(e) => open_written(file, &path, Err(e), Tier::Warm).map(Some),
    }
}

/// Estimated memory of a segment's rows once decoded for compaction.
fn compaction_bytes(seg: &Segment) -> u64 {
    seg.raw_bytes() + seg.rows() * std::mem::size_of::<Event>() as u64
}

/// Estimated memory a streaming merge holds for `seg`'s rows until the merged segment is
/// finished: the new segment's token index, first as (token, block) pairs and then encoded,
/// and its trace directory and value bitmaps. The rows themselves stream through a few
/// blocks at a time whatever the inputs' size. Measured: four segments of 500,000 generated
/// events (17 MB of token index each) merged into one took 250 MB more than at the merge's
/// start; this says 320 MB.
fn merge_bytes(seg: &Segment) -> u64 {
    let (_, text_index) = seg.index_raw_bytes();
    text_index.saturating_mul(4).saturating_add(seg.rows().saturating_mul(24))
}

/// Whether `hot` waiting segments are enough for compaction to stop yielding the CPU.
fn compaction_is_urgent(hot: usize, trigger: usize) -> bool {
    hot >= trigger.max(1).saturating_mul(URGENT_HOT_SEGMENTS_PER_TRIGGER)
}

/// Hot segments waiting for compaction.
fn hot_segments(inner: &Inner) -> usize {
    inner.state.lock().segments.iter().filter(|s| s.entry.tier == Tier::Hot).count()
}

/// Rows in hot segments, when nothing is buffered (else 0: the buffer's flush comes first).
fn idle_hot_rows(inner: &Inner) -> u64 {
    let st = inner.state.lock();
    if st.active_bytes + st.frozen_bytes > 0 {
        return 0;
    }
    st.segments.iter().filter(|s| s.entry.tier == Tier::Hot).map(|s| s.segment.rows()).sum()
}

/// Warm segments this small are merged with any others as small, whatever their sizes'
/// ratio (see `pick_warm_merge`).
pub const SMALL_WARM_SEGMENT_ROWS: u64 = 1 << 16;

/// A warm segment as [`pick_warm_merge`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WarmCandidate {
    rows: u64,
    /// Estimated memory of merging it ([`merge_bytes`]).
    bytes: u64,
    min_ts: i64,
    max_ts: i64,
}

/// What one merge of warm segments may take and make.
#[derive(Debug, Clone, Copy)]
struct MergeLimits {
    fan_in: usize,
    max_rows: u64,
    max_bytes: u64,
    /// Largest time span (newest event minus oldest, in ns) of a merged segment.
    max_span_ns: i64,
    /// A merged segment whose newest event is older than this (ns) may span up to
    /// `settled_span_ns` instead.
    settled_before_ns: i64,
    settled_span_ns: i64,
    /// The newest event stored: a group whose newest event is more than its span older is
    /// closed ([`pick_closing_merge`]).
    newest_ns: i64,
}

impl MergeLimits {
    /// The limits for warm segments when the newest event stored is at `newest_ns`.
    fn of(cfg: &EngineConfig, newest_ns: i64) -> Self {
        let ns = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        let settled_age = cfg.settled_merge_span.max(cfg.merge_span);
        let quarter = cfg.retention.map_or(Duration::MAX, |r| r / 4);
        MergeLimits {
            fan_in: cfg.compaction_trigger,
            max_rows: cfg.compaction_max_rows,
            max_bytes: cfg.compaction_max_bytes,
            max_span_ns: ns(cfg.merge_span.min(quarter)),
            settled_before_ns: newest_ns.saturating_sub(ns(settled_age)),
            settled_span_ns: ns(settled_age.min(quarter)),
            newest_ns,
        }
    }

    /// Largest span of a merged segment whose newest event is at `newest_ns`.
    fn span_for(&self, newest_ns: i64) -> i64 {
        if newest_ns < self.settled_before_ns {
            self.settled_span_ns.max(self.max_span_ns)
        } else {
            self.max_span_ns
        }
    }
}

/// Size-tiered merging of warm segments, given them in manifest order: the indexes
/// (ascending) of `fan_in` segments to merge into one, or `None`. Without it, every
/// compaction of hot segments leaves one more warm segment, however small: a trickle of
/// 1,000 events/s made a warm segment of 12,000 rows every 12 s, and each open segment
/// costs memory and a memory map, and every query pays per segment.
///
/// From each candidate, smallest first, the next larger ones that fit with it are gathered
/// until `fan_in` are. A group is merged when its largest segment is at most twice its
/// smallest, or all are below
/// [`SMALL_WARM_SEGMENT_ROWS`] (so segments of mixed small sizes never stay unmerged), its
/// total stays within `max_rows` and `max_bytes`, and its events span at most
/// `max_span_ns`, or `settled_span_ns` when its newest event is before `settled_before_ns`:
/// a merged segment is deleted by retention only once its newest event expires, and a
/// query's time bounds prune whole segments only as far as their spans allow (recent data
/// is read by the narrowest ranges). Segments above half of `max_rows` are left alone. Each row is rewritten about
/// once per factor of `fan_in` in its segment's growth, as in any size-tiered LSM.
fn pick_warm_merge(segs: &[WarmCandidate], limits: &MergeLimits) -> Option<Vec<usize>> {
    let fan_in = limits.fan_in.max(2);
    let mut order: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].rows <= limits.max_rows / 2).collect();
    order.sort_by_key(|&i| (segs[i].rows, i));
    // From each segment, smallest first, gather the next larger ones that fit with it.
    for (a, &first) in order.iter().enumerate() {
        let smallest = segs[first].rows;
        let mut group = vec![first];
        let (mut rows, mut bytes) = (smallest, segs[first].bytes);
        let (mut oldest, mut newest) = (segs[first].min_ts, segs[first].max_ts);
        for &next in &order[a + 1..] {
            let s = &segs[next];
            let similar = s.rows <= smallest.max(1).saturating_mul(2) || s.rows < SMALL_WARM_SEGMENT_ROWS;
            if !similar || rows.saturating_add(s.rows) > limits.max_rows {
                break; // Only larger segments follow.
            }
            let (lo, hi) = (oldest.min(s.min_ts), newest.max(s.max_ts));
            let spanned = i128::from(hi) - i128::from(lo) <= i128::from(limits.span_for(hi));
            if !spanned || bytes.saturating_add(s.bytes) > limits.max_bytes {
                continue;
            }
            group.push(next);
            (rows, bytes, oldest, newest) = (rows + s.rows, bytes + s.bytes, lo, hi);
            if group.len() == fan_in {
                group.sort_unstable();
                return Some(group);
            }
        }
    }
    None
}

/// Closing merges, for when [`pick_warm_merge`] finds no group of similar sizes: the indexes
/// (ascending) of the most warm segments (at least 2) whose events fit in one span
/// ([`MergeLimits::span_for`]) from the oldest of them, once that span has closed: it ended
/// more than another span before the newest event stored (so that events arriving a little
/// late still find it open). Within `max_rows` and `max_bytes`; or `None`.
///
/// Size tiers alone leave the segments of each span as they were when it closed: slow traffic,
/// flushed every 20 minutes, left three segments an hour, as four exceed the hour. Merged
/// once closed, an hour or a settled day of them becomes one segment in one rewrite, and no
/// later flush adds to it (a span still open would be merged again at every flush). Segments
/// above half of `max_rows` are left alone, as by size.
fn pick_closing_merge(segs: &[WarmCandidate], limits: &MergeLimits) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].rows <= limits.max_rows / 2).collect();
    order.sort_by_key(|&i| (segs[i].min_ts, segs[i].max_ts, i));
    let mut best: Option<(Vec<usize>, u64)> = None;
    // From each segment, oldest first, gather every later one that keeps the group closed and
    // within its span and bounds (a subset of such a group is such a group too).
    for (a, &first) in order.iter().enumerate() {
        let mut group = vec![first];
        let (mut rows, mut bytes) = (segs[first].rows, segs[first].bytes);
        let (oldest, mut newest) = (segs[first].min_ts, segs[first].max_ts);
        for &next in &order[a + 1..] {
            let s = &segs[next];
            let hi = newest.max(s.max_ts);
            let span = limits.span_for(hi);
            let closed = i128::from(oldest) + 2 * i128::from(span) < i128::from(limits.newest_ns);
            let within = i128::from(hi) - i128::from(oldest.min(s.min_ts)) <= i128::from(span);
            if closed
                && within
                && rows.saturating_add(s.rows) <= limits.max_rows
                && bytes.saturating_add(s.bytes) <= limits.max_bytes
            {
                group.push(next);
                (rows, bytes, newest) = (rows + s.rows, bytes + s.bytes, hi);
            }
        }
        let better = match &best {
            None => true,
            Some((g, r)) => group.len() > g.len() || (group.len() == g.len() && rows < *r),
        };
        if group.len() >= 2 && better {
            best = Some((group, rows));
        }
    }
    best.map(|(mut g, _)| {
        g.sort_unstable();
        g
    })
}

/// Which warm segments exist: their count and the sum of their [`Segment::uid`]s (a new
/// segment's uid exceeds every earlier one, so any change to the set, segments added,
/// removed or both, changes one of the two), and the newest event stored, which decides
/// which of them are settled ([`MergeLimits::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WarmSet {
    count: usize,
    uid_sum: u64,
    newest_ns: i64,
}

impl WarmSet {
    fn of(warm: &[LiveSegment], newest_ns: i64) -> Self {
        let uid_sum = warm.iter().fold(0u64, |a, s| a.wrapping_add(s.segment.uid()));
        WarmSet { count: warm.len(), uid_sum, newest_ns }
    }
}

/// Estimated memory held by a running warm merge and by a hot compaction. A merge of large
/// warm segments takes seconds (3 million rows about 10 s on 2 cores), and the hot segments
/// flushed meanwhile must not wait for it: they are compacted between the merge's pieces, on
/// the same thread (a thread of its own would keep its malloc arena, and on 2 cores would
/// only share them). Each picks its inputs within what the other holds of
/// `compaction_max_bytes` (a hot compaction takes at least one segment whatever is left), so
/// that together they stay within it.
#[derive(Debug, Default)]
pub(crate) struct LaneBudget {
    /// The running hot compaction's inputs, decoded ([`compaction_bytes`]).
    hot: u64,
    /// The running warm merge's estimate ([`merge_bytes`]).
    warm: u64,
}

/// A lane's share of [`LaneBudget`], given back when dropped.
struct LaneShare<'a> {
    inner: &'a Inner,
    warm: bool,
}

impl Drop for LaneShare<'_> {
    fn drop(&mut self) {
        let mut budget = self.inner.lane_budget.lock();
        if self.warm {
            budget.warm = 0;
        } else {
            budget.hot = 0;
        }
    }
}

/// Compact hot segments now if at least `trigger` of them wait, else merge warm ones if a
/// merge is due.
pub(crate) fn compact_once(inner: &Inner, trigger: usize) -> Result<bool, EngineError> {
    if compact_hot(inner, trigger)? {
        return Ok(true);
    }
    merge_warm(inner)
}

/// The oldest hot segments, if at least `trigger` of them wait, into one warm segment, within
/// the rows and memory a compaction may take.
fn compact_hot(inner: &Inner, trigger: usize) -> Result<bool, EngineError> {
    let _lane = inner.hot_lane.lock();
    let (picked, _share) = {
        let mut budget = inner.lane_budget.lock();
        let available = inner.cfg.compaction_max_bytes.saturating_sub(budget.warm);
        let st = inner.state.lock();
        let hot: Vec<&LiveSegment> = st.segments.iter().filter(|s| s.entry.tier == Tier::Hot).collect();
        if hot.len() < trigger.max(1) {
            return Ok(false);
        }
        let sizes: Vec<(u64, u64)> = hot.iter().map(|s| (s.segment.rows(), compaction_bytes(&s.segment))).collect();
        let take = hot_compaction_len(&sizes, inner.cfg.compaction_max_rows, available);
        let picked: Vec<LiveSegment> = hot.into_iter().take(take).cloned().collect();
        budget.hot = sizes[..take].iter().map(|&(_, b)| b).sum();
        (picked, LaneShare { inner, warm: false })
    };
    match compact_segments(inner, &picked, true, &mut || !stopping(inner))? {
        Some(live) => install_compacted(inner, &picked, live, false),
        None => Ok(false),
    }
}

/// How many of the oldest hot segments (their rows and decoded bytes, oldest first) one
/// compaction takes: as many as stay within `max_rows` and `max_bytes` together, and at least
/// one, so that a segment larger than the budget is still compacted.
fn hot_compaction_len(sizes: &[(u64, u64)], max_rows: u64, max_bytes: u64) -> usize {
    let (mut rows, mut bytes) = (0u64, 0u64);
    let within = sizes
        .iter()
        .take_while(|&&(r, b)| {
            rows = rows.saturating_add(r);
            bytes = bytes.saturating_add(b);
            rows <= max_rows && bytes <= max_bytes
        })
        .count();
    within.max(1).min(sizes.len())
}

/// Merge warm segments of similar size ([`pick_warm_merge`]) or those of a closed span
/// ([`pick_closing_merge`]), within what a running hot compaction left of the memory budget;
/// between the merge's pieces, compact the hot segments flushed meanwhile.
fn merge_warm(inner: &Inner) -> Result<bool, EngineError> {
    let mut fruitless = inner.warm_lane.lock();
    let (picked, set, available, _share) = {
        let mut budget = inner.lane_budget.lock();
        let whole_budget = budget.hot == 0;
        let available = inner.cfg.compaction_max_bytes.saturating_sub(budget.hot);
        // The search runs outside the state lock (appends take it), and only when the warm
        // segments changed since the last one that found nothing.
        let (warm, newest) = {
            let st = inner.state.lock();
            let warm: Vec<LiveSegment> = st.segments.iter().filter(|s| s.entry.tier == Tier::Warm).cloned().collect();
            (warm, st.segments.iter().map(|s| s.segment.max_ts()).max().unwrap_or(i64::MIN))
        };
        let set = WarmSet::of(&warm, newest);
        if *fruitless == Some(set) {
            return Ok(false);
        }
        let candidates: Vec<WarmCandidate> = warm
            .iter()
            .map(|s| WarmCandidate {
                rows: s.segment.rows(),
                bytes: merge_bytes(&s.segment),
                min_ts: s.segment.min_ts(),
                max_ts: s.segment.max_ts(),
            })
            .collect();
        let limits = MergeLimits { max_bytes: available, ..MergeLimits::of(&inner.cfg, newest) };
        let Some(picked) = pick_warm_merge(&candidates, &limits).or_else(|| pick_closing_merge(&candidates, &limits))
        else {
            // With part of the budget taken by a hot compaction, a later search may find one.
            if whole_budget {
                *fruitless = Some(set);
            }
            return Ok(false);
        };
        budget.warm = picked.iter().map(|&i| candidates[i].bytes).sum();
        let picked: Vec<LiveSegment> = picked.into_iter().map(|i| warm[i].clone()).collect();
        (picked, set, available, LaneShare { inner, warm: true })
    };
    if let Some(hook) = inner.cfg.warm_merge_hook {
        hook();
    }
    // Warm segments are picked by what a streaming merge holds, which may be far less than
    // their rows sorted in memory; should one turn out not to be in the compaction order
    // (none is written so), the rows are sorted in memory only within the memory the hot
    // lane left when the merge was picked.
    let sort_in_memory = picked.iter().map(|s| compaction_bytes(&s.segment)).sum::<u64>() <= available;
    let mut hot_between_pieces = || {
        if stopping(inner) {
            return false;
        }
        if let Err(e) = compact_hot(inner, inner.cfg.compaction_trigger) {
            tracing::error!(error = %e, "compaction during a merge of warm segments failed; will retry");
        }
        true
    };
    match compact_segments(inner, &picked, sort_in_memory, &mut hot_between_pieces)? {
        Some(live) => install_compacted(inner, &picked, live, true),
        None if stopping(inner) => Ok(false),
        None => {
            tracing::warn!(
                segments = picked.len(),
                "warm segments out of the compaction order are too large to merge in memory; left as they are"
            );
            *fruitless = Some(set);
            Ok(false)
        }
    }
}

/// Replace the segments `picked` by `live`, their compaction, in the manifest and the live
/// set, and delete their files.
fn install_compacted(
    inner: &Inner,
    picked: &[LiveSegment],
    live: LiveSegment,
    warm_merge: bool,
) -> Result<bool, EngineError> {
    let gone: HashSet<String> = picked.iter().map(|s| s.entry.file.clone()).collect();
    {
        let _m = inner.manifest_lock.lock();
        let mut manifest = {
            let st = inner.state.lock();
            // Retention may have deleted an input meanwhile: then this result would bring
            // its rows back. Drop it; the next round compacts what is left.
            if st.segments.iter().filter(|s| gone.contains(&s.entry.file)).count() != gone.len() {
                drop(st);
                let _ = std::fs::remove_file(live.segment.path());
                return Ok(false);
            }
            st.manifest.clone()
        };
        manifest.segments.retain(|s| !gone.contains(&s.file));
        manifest.segments.push(live.entry.clone());
        manifest.next_segment_id = inner.next_segment_id.load(Ordering::Acquire);
        // On failure the new segment file stays: see `write_new_segment`.
        manifest.store(&inner.dir)?;
        let mut st = inner.state.lock();
        st.segments.retain(|s| !gone.contains(&s.entry.file));
        st.segments.push(live);
        st.manifest = manifest;
    }
    for f in gone {
        let p = inner.dir.join("segments").join(f);
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(file = %p.display(), error = %e, "could not remove compacted segment");
        }
    }
    inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
    if warm_merge {
        inner.stats.compactions_warm.fetch_add(1, Ordering::Relaxed);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Warm segments of these sizes, each holding one instant.
    fn candidates(rows: &[u64]) -> Vec<WarmCandidate> {
        rows.iter().map(|&r| WarmCandidate { rows: r, bytes: r * 100, min_ts: 0, max_ts: 0 }).collect()
    }

    fn limits(fan_in: usize) -> MergeLimits {
        MergeLimits {
            fan_in,
            max_rows: 4_000_000,
            max_bytes: u64::MAX,
            max_span_ns: i64::MAX,
            settled_before_ns: i64::MIN,
            settled_span_ns: i64::MAX,
            newest_ns: 0,
        }
    }

    #[test]
    fn warm_merges_take_the_smallest_similar_segments() {
        let k = SMALL_WARM_SEGMENT_ROWS;
        let pick = |rows: &[u64], fan_in| pick_warm_merge(&candidates(rows), &limits(fan_in));
        assert_eq!(pick(&[800, 800, 800], 4), None, "too few");
        assert_eq!(pick(&[900, 800, 5_000, 800, 800], 4), Some(vec![0, 1, 3, 4]), "the smallest");
        assert_eq!(pick(&[900, 800, 50_000, 800], 4), Some(vec![0, 1, 2, 3]), "small ones, any mix");
        assert_eq!(pick(&[4 * k, k, k, k, k / 4, 2 * k], 4), Some(vec![1, 2, 3, 5]), "twice the smallest at most");
        assert_eq!(pick(&[k, 3 * k, 9 * k, 27 * k], 4), None, "no similar group");
        assert_eq!(pick(&[2_100_000; 4], 4), None, "above half the largest segment");
        assert_eq!(pick(&[1_000_000; 5], 4), Some(vec![0, 1, 2, 3]), "up to the largest segment");
        assert_eq!(pick(&[0, 0, 7], 1), Some(vec![0, 1]), "a fan-in of 1 acts as 2");
        let bounded = MergeLimits { max_bytes: 399_999, ..limits(4) };
        assert_eq!(pick_warm_merge(&candidates(&[1000; 4]), &bounded), None, "the byte budget holds");
    }

    #[test]
    fn warm_merges_keep_within_the_time_span() {
        let hour = 3_600_000_000_000i64;
        // Five equal segments of ten minutes each; the fourth two hours after the others.
        let mut segs = candidates(&[1000; 5]);
        for (i, start) in [0, 0, 10 * 60 * 1_000_000_000, 2 * hour, 0].into_iter().enumerate() {
            segs[i].min_ts = start;
            segs[i].max_ts = start + hour / 6;
        }
        let within = MergeLimits { max_span_ns: hour, ..limits(4) };
        assert_eq!(pick_warm_merge(&segs, &within), Some(vec![0, 1, 2, 4]), "the late one left out");
        assert_eq!(pick_warm_merge(&segs[..4], &within), None, "no four within the hour");
        assert_eq!(pick_warm_merge(&segs[..4], &limits(4)), Some(vec![0, 1, 2, 3]), "unbounded");
        // Retention bounds the span to a quarter of it.
        let cfg = EngineConfig { retention: Some(Duration::from_secs(2 * 3600)), ..EngineConfig::default() };
        assert_eq!(MergeLimits::of(&cfg, 0).max_span_ns, hour / 2);
        assert_eq!(MergeLimits::of(&cfg, 0).span_for(-100 * hour), hour / 2, "settled or not");
        assert_eq!(MergeLimits::of(&EngineConfig::default(), 0).max_span_ns, hour);
    }

    /// Segments whose events are all a day older than the newest event stored may merge into
    /// a segment spanning up to a day; newer ones only up to the hour.
    #[test]
    fn settled_warm_segments_merge_across_a_day() {
        let hour = 3_600_000_000_000i64;
        let now = 100 * 24 * hour;
        let lim = MergeLimits::of(&EngineConfig::default(), now);
        assert_eq!((lim.span_for(now), lim.span_for(now - 25 * hour)), (hour, 24 * hour));
        assert_eq!(lim.span_for(now - 24 * hour), hour, "settled strictly before a day");
        // Four segments of an hour each, four hours apart: settled two days ago, or recent.
        let hourly = |end: i64| -> Vec<WarmCandidate> {
            (0..4i64)
                .map(|i| WarmCandidate {
                    rows: 1000,
                    bytes: 1,
                    min_ts: end - 16 * hour + 4 * i * hour,
                    max_ts: end - 15 * hour + 4 * i * hour,
                })
                .collect()
        };
        assert_eq!(pick_warm_merge(&hourly(now - 48 * hour), &lim), Some(vec![0, 1, 2, 3]), "settled");
        assert_eq!(pick_warm_merge(&hourly(now), &lim), None, "recent");
        // Settled is judged by the group's newest event: a group of 13 hours ending 30 hours
        // before the newest event stored merges, one ending 20 hours before does not.
        assert!(pick_warm_merge(&hourly(now - 27 * hour), &lim).is_some());
        assert!(pick_warm_merge(&hourly(now - 17 * hour), &lim).is_none());
        // Never less than `merge_span`, and within a quarter of the retention.
        let short = EngineConfig { settled_merge_span: Duration::from_secs(60), ..EngineConfig::default() };
        assert_eq!(MergeLimits::of(&short, now).span_for(i64::MIN), hour);
        let kept = EngineConfig { retention: Some(Duration::from_secs(8 * 3600)), ..EngineConfig::default() };
        assert_eq!(MergeLimits::of(&kept, now).span_for(i64::MIN), 2 * hour);
    }

    /// Segments of a closed hour merge into one whatever their sizes; an open hour's wait.
    #[test]
    fn closed_spans_merge_into_one_segment() {
        let (min, hour) = (60_000_000_000i64, 3_600_000_000_000i64);
        let seg = |rows: u64, from_min: i64, to_min: i64| WarmCandidate {
            rows,
            bytes: rows,
            min_ts: from_min * min,
            max_ts: to_min * min,
        };
        let lim = |newest_ns| MergeLimits { max_span_ns: hour, settled_span_ns: hour, newest_ns, ..limits(4) };
        let hourly = [seg(10, 0, 19), seg(5_000, 20, 39), seg(70_000, 40, 59)];
        assert_eq!(pick_closing_merge(&hourly, &lim(2 * hour + 1)), Some(vec![0, 1, 2]), "closed");
        assert_eq!(pick_closing_merge(&hourly, &lim(2 * hour)), None, "open until an hour after the hour");
        assert_eq!(pick_warm_merge(&hourly, &lim(3 * hour)), None, "not by size");
        // Across an hour's edge: the most segments that fit in an hour, then the fewest rows.
        let edge = [seg(30, 0, 20), seg(20, 40, 60), seg(10, 70, 90)];
        assert_eq!(pick_closing_merge(&edge, &lim(5 * hour)), Some(vec![1, 2]));
        assert_eq!(pick_closing_merge(&edge, &lim(2 * hour + 35 * min)), Some(vec![0, 1]), "the later not closed");
        // Never above half the largest segment, nor past the byte budget.
        let big = [seg(2_100_000, 0, 10), seg(10, 20, 30)];
        assert_eq!(pick_closing_merge(&big, &lim(5 * hour)), None);
        let budget = MergeLimits { max_bytes: 5_010, ..lim(5 * hour) };
        assert_eq!(pick_closing_merge(&hourly, &budget), Some(vec![0, 1]));
    }

    proptest! {
        /// A closing merge obeys every rule, and is found whenever some group would qualify
        /// under one span.
        #[test]
        fn closing_merge_picks_are_sound_and_complete(
            segs in proptest::collection::vec((0u64..300_000, 0i64..10_000, 0i64..3_000), 0..8),
            max_span in 0i64..4_000,
            settled_before in 0i64..12_000,
            settled_span in 0i64..8_000,
            newest in 0i64..16_000,
            max_bytes in 1_000_000u64..60_000_000,
        ) {
            let segs: Vec<WarmCandidate> = segs
                .iter()
                .map(|&(r, t, len)| WarmCandidate { rows: r, bytes: r * 100 + 7, min_ts: t, max_ts: t + len })
                .collect();
            let lim = MergeLimits {
                fan_in: 4,
                max_rows: 1_000_000,
                max_bytes,
                max_span_ns: max_span,
                settled_before_ns: settled_before,
                settled_span_ns: settled_span,
                newest_ns: newest,
            };
            let ok = |set: &[usize]| {
                let oldest = set.iter().map(|&i| segs[i].min_ts).min().unwrap_or(0);
                let hi = set.iter().map(|&i| segs[i].max_ts).max().unwrap_or(0);
                let span = if hi < settled_before { settled_span.max(max_span) } else { max_span };
                set.len() >= 2
                    && set.iter().all(|&i| segs[i].rows <= 500_000)
                    && set.iter().map(|&i| segs[i].rows).sum::<u64>() <= 1_000_000
                    && set.iter().map(|&i| segs[i].bytes).sum::<u64>() <= max_bytes
                    && hi - oldest <= span
                    && oldest + 2 * span < newest
            };
            let exists = (0u32..1 << segs.len()).any(|m| ok(&(0..segs.len()).filter(|i| m & (1 << i) != 0).collect::<Vec<_>>()));
            match pick_closing_merge(&segs, &lim) {
                Some(set) => {
                    prop_assert!(set.windows(2).all(|w| w[0] < w[1]), "ascending, distinct: {:?}", set);
                    prop_assert!(ok(&set), "{:?} of {:?}", set, segs);
                }
                // Complete where one span applies to every group (a settled pair may need a
                // wider closed window than the group it came from).
                None => prop_assert!(!exists || settled_span > max_span, "a group of {:?} qualifies", segs),
            }
        }

        /// What is picked obeys every rule; without a span limit, something is picked whenever
        /// some group would qualify (byte estimates growing with rows, as they do).
        #[test]
        fn warm_merge_picks_are_sound_and_complete(
            rows in proptest::collection::vec(0u64..300_000, 0..8),
            starts in proptest::collection::vec(0i64..10_000, 8),
            fan_in in 2usize..5,
            max_rows in 100_000u64..1_000_000,
            max_bytes in 1_000_000u64..100_000_000,
            max_span in prop_oneof![Just(i64::MAX), 0i64..12_000],
            settled_before in 0i64..12_000,
            settled_span in prop_oneof![Just(i64::MAX), 0i64..12_000],
        ) {
            let segs: Vec<WarmCandidate> = rows
                .iter()
                .zip(&starts)
                .map(|(&r, &t)| WarmCandidate { rows: r, bytes: r * 100 + 7, min_ts: t, max_ts: t + 500 })
                .collect();
            let lim = MergeLimits {
                fan_in,
                max_rows,
                max_bytes,
                max_span_ns: max_span,
                settled_before_ns: settled_before,
                settled_span_ns: settled_span,
                newest_ns: 20_000,
            };
            let ok = |set: &[usize]| {
                let lo = set.iter().map(|&i| rows[i]).min().unwrap_or(0);
                let hi = set.iter().map(|&i| rows[i]).max().unwrap_or(0);
                let oldest = set.iter().map(|&i| segs[i].min_ts).min().unwrap_or(0);
                let newest = set.iter().map(|&i| segs[i].max_ts).max().unwrap_or(0);
                set.iter().all(|&i| rows[i] <= max_rows / 2)
                    && (hi <= lo.max(1) * 2 || hi < SMALL_WARM_SEGMENT_ROWS)
                    && set.iter().map(|&i| rows[i]).sum::<u64>() <= max_rows
                    && set.iter().map(|&i| segs[i].bytes).sum::<u64>() <= max_bytes
                    && newest - oldest <= if newest < settled_before { settled_span.max(max_span) } else { max_span }
            };
            // Every set of `fan_in` segments, by bit mask.
            let exists = (0u32..1 << rows.len())
                .filter(|m| m.count_ones() as usize == fan_in)
                .any(|m| ok(&(0..rows.len()).filter(|i| m & (1 << i) != 0).collect::<Vec<_>>()));
            match pick_warm_merge(&segs, &lim) {
                Some(set) => {
                    prop_assert_eq!(set.len(), fan_in);
                    prop_assert!(set.windows(2).all(|w| w[0] < w[1]), "ascending, distinct: {:?}", set);
                    prop_assert!(ok(&set), "{:?} of {:?}", set, rows);
                }
                None => prop_assert!(
                    !exists || max_span != i64::MAX,
                    "a group of {:?} qualifies",
                    rows
                ),
            }
        }
    }

    #[test]
    fn hot_compactions_take_what_the_budget_left_and_at_least_one_segment() {
        let sizes = [(100, 1_000), (100, 1_000), (100, 1_000), (100, 1_000)];
        assert_eq!(hot_compaction_len(&sizes, 1_000, 10_000), 4);
        assert_eq!(hot_compaction_len(&sizes, 1_000, 2_500), 2, "a warm merge holds the rest");
        assert_eq!(hot_compaction_len(&sizes, 250, 10_000), 2, "rows bound it too");
        assert_eq!(hot_compaction_len(&sizes, 1_000, 0), 1, "one segment whatever the budget");
        assert_eq!(hot_compaction_len(&[(5_000, 9_000)], 10, 10), 1);
        assert_eq!(hot_compaction_len(&[], 10, 10), 0);
        assert_eq!(hot_compaction_len(&[(u64::MAX, u64::MAX), (1, 1)], u64::MAX, u64::MAX), 2);
    }

    #[test]
    fn compaction_stops_yielding_at_four_times_the_trigger() {
        assert!(!compaction_is_urgent(15, 4));
        assert!(compaction_is_urgent(16, 4));
        assert!(!compaction_is_urgent(3, 1));
        assert!(compaction_is_urgent(4, 1));
        assert!(compaction_is_urgent(4, 0), "a trigger of 0 acts as 1, as compact_once does");
        assert!(!compaction_is_urgent(usize::MAX - 1, usize::MAX), "no overflow");
    }
}
