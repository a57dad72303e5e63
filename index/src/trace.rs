//! Trace directory: sorted distinct trace ids, each with the rows it has in the segment.
//! Finding a trace is a binary search; rows of one trace may be anywhere in the segment.
//!
//! In memory a trace's rows are varint gaps in one shared byte buffer, about two bytes per
//! row: a bitmap per trace cost about 100 bytes per trace in allocations and headers, and
//! segments hold tens of thousands of traces. A lookup builds the one trace's bitmap.

use roaring::RoaringBitmap;

use crate::text::{put_varint, take_varint};

#[derive(Debug, Clone, PartialEq)]
pub struct TraceIndex {
    /// Distinct trace ids, ascending.
    pub(crate) ids: Vec<[u8; 16]>,
    /// Where each trace's rows start in `gaps`, and one more entry: where the last ends.
    starts: Vec<usize>,
    /// Each trace's row ids ascending, as varints: the first row, then gaps to the previous.
    gaps: Vec<u8>,
}

impl Default for TraceIndex {
    fn default() -> Self {
        TraceIndex { ids: Vec::new(), starts: vec![0], gaps: Vec::new() }
    }
}

impl TraceIndex {
    /// The rows of one trace, if it has any in this segment.
    pub fn rows(&self, trace_id: &[u8; 16]) -> Option<RoaringBitmap> {
        let i = self.ids.binary_search(trace_id).ok()?;
        Some(self.bitmap(i))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Trace ids with their rows, in id order.
    pub fn traces(&self) -> impl Iterator<Item = (&[u8; 16], RoaringBitmap)> + '_ {
        self.ids.iter().enumerate().map(|(i, id)| (id, self.bitmap(i)))
    }

    /// Append a trace whose id sorts after every id already added, with its rows strictly
    /// ascending. `false` (and nothing added) when the id does not sort after the last one or
    /// the rows do not ascend.
    pub(crate) fn push(&mut self, id: [u8; 16], rows: impl IntoIterator<Item = u32>) -> bool {
        if self.ids.last().is_some_and(|last| *last >= id) {
            return false;
        }
        let from = self.gaps.len();
        let mut prev = None;
        for row in rows {
            match prev {
                Some(p) if row <= p => {
                    self.gaps.truncate(from);
                    return false;
                }
                _ => put_varint(&mut self.gaps, prev.map_or(row, |p| row - p)),
            }
            prev = Some(row);
        }
        self.ids.push(id);
        self.starts.push(self.gaps.len());
        true
    }

    /// Heap bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.ids.capacity() * 16 + self.starts.capacity() * std::mem::size_of::<usize>() + self.gaps.capacity()
    }

    /// Trim spare capacity once every trace is added.
    pub(crate) fn shrink(&mut self) {
        self.ids.shrink_to_fit();
        self.starts.shrink_to_fit();
        self.gaps.shrink_to_fit();
    }

    /// The rows of the `i`th trace, ascending (`push` let no other order in).
    fn bitmap(&self, i: usize) -> RoaringBitmap {
        let (mut pos, end) = (self.starts[i], self.starts[i + 1]);
        let bytes = &self.gaps[..end];
        let mut row: Option<u32> = None;
        let rows = std::iter::from_fn(|| {
            (pos < end).then(|| {
                let gap = take_varint(bytes, &mut pos) as u32;
                let next = row.map_or(gap, |r| r.wrapping_add(gap));
                row = Some(next);
                next
            })
        });
        // Never fails: the rows ascend, so each is appended without a search.
        RoaringBitmap::from_sorted_iter(rows).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
pub(crate) struct TraceIndexBuilder {
    map: foldhash::HashMap<[u8; 16], Vec<u32>>,
}

impl TraceIndexBuilder {
    /// Rows come in ascending order.
    pub(crate) fn push(&mut self, row: u32, id: [u8; 16]) {
        self.map.entry(id).or_default().push(row);
    }

    pub(crate) fn finish(self) -> TraceIndex {
        let mut pairs: Vec<_> = self.map.into_iter().collect();
        pairs.sort_unstable_by_key(|p| p.0);
        let mut idx = TraceIndex::default();
        for (id, mut rows) in pairs {
            // Rows arrive in row order; sorting an ordered run only checks it.
            rows.sort_unstable();
            rows.dedup();
            idx.push(id, rows);
        }
        idx.shrink();
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Every trace's rows come back as they went in, and absent ids find nothing.
        #[test]
        fn lookups_match_a_reference(
            rows in proptest::collection::vec((0u8..40, 0u32..5_000_000), 0..400),
            probe in 0u8..60,
        ) {
            let mut rows = rows;
            rows.sort_by_key(|r| r.1);
            rows.dedup_by_key(|r| r.1);
            let id = |k: u8| { let mut id = [0u8; 16]; id[15] = k; id[0] = k.wrapping_mul(7); id };
            let mut builder = TraceIndexBuilder::default();
            let mut reference: BTreeMap<[u8; 16], RoaringBitmap> = BTreeMap::new();
            for (k, row) in &rows {
                builder.push(*row, id(*k));
                reference.entry(id(*k)).or_default().insert(*row);
            }
            let idx = builder.finish();
            prop_assert_eq!(idx.len(), reference.len());
            for (k, b) in &reference {
                prop_assert_eq!(idx.rows(k), Some(b.clone()));
            }
            let listed: Vec<([u8; 16], RoaringBitmap)> = idx.traces().map(|(k, b)| (*k, b)).collect();
            let expected: Vec<([u8; 16], RoaringBitmap)> = reference.iter().map(|(k, b)| (*k, b.clone())).collect();
            prop_assert_eq!(listed, expected);
            prop_assert_eq!(idx.rows(&id(probe)).is_some(), reference.contains_key(&id(probe)));
        }
    }

    #[test]
    fn ids_must_ascend() {
        let mut idx = TraceIndex::default();
        assert!(idx.push([2; 16], [0, 5]));
        assert!(!idx.push([2; 16], [7]), "a repeated id");
        assert!(!idx.push([1; 16], [7]), "a smaller id");
        assert!(idx.push([3; 16], []));
        assert!(!idx.push([4; 16], [3, 9, 9]), "rows that do not ascend");
        assert!(!idx.push([5; 16], [3, 1]), "rows that descend");
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.rows(&[2; 16]).map(|b| b.iter().collect::<Vec<_>>()), Some(vec![0, 5]));
        assert_eq!(idx.rows(&[3; 16]).map(|b| b.len()), Some(0));
    }
}
