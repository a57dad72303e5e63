//! Trace directory: sorted distinct trace ids, each with the bitmap of its rows. Finding a trace
//! is a binary search; rows of one trace may be anywhere in the segment.

use roaring::RoaringBitmap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceIndex {
    pub(crate) ids: Vec<[u8; 16]>,
    pub(crate) rows: Vec<RoaringBitmap>,
}

impl TraceIndex {
    pub fn rows(&self, trace_id: &[u8; 16]) -> Option<&RoaringBitmap> {
        self.ids.binary_search(trace_id).ok().map(|i| &self.rows[i])
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct TraceIndexBuilder {
    map: foldhash::HashMap<[u8; 16], RoaringBitmap>,
}

impl TraceIndexBuilder {
    pub(crate) fn push(&mut self, row: u32, id: [u8; 16]) {
        self.map.entry(id).or_default().insert(row);
    }

    pub(crate) fn finish(self) -> TraceIndex {
        let mut pairs: Vec<_> = self.map.into_iter().collect();
        pairs.sort_by_key(|p| p.0);
        let (ids, rows) = pairs.into_iter().unzip();
        TraceIndex { ids, rows }
    }
}
