//! Bitmap per distinct value of one column; `None` is the bitmap of null rows.

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringBitmap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueIndex {
    /// Sorted by value; null (None) sorts first.
    pub(crate) entries: BTreeMap<Option<String>, RoaringBitmap>,
}

impl ValueIndex {
    /// Rows whose value equals `v` (`None`: rows where the column is null).
    pub fn rows(&self, v: Option<&str>) -> Option<&RoaringBitmap> {
        self.entries.get(&v.map(str::to_owned))
    }

    /// Distinct values with their row counts.
    pub fn values(&self) -> impl Iterator<Item = (Option<&str>, u64)> {
        self.entries.iter().map(|(k, b)| (k.as_deref(), b.len()))
    }

    pub fn distinct(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug, Default)]
pub(crate) struct ValueIndexBuilder {
    map: HashMap<Option<String>, RoaringBitmap>,
}

impl ValueIndexBuilder {
    pub(crate) fn push(&mut self, row: u32, v: Option<&str>) {
        let key = v.map(str::to_owned);
        self.map.entry(key).or_default().insert(row);
    }

    pub(crate) fn finish(self) -> ValueIndex {
        ValueIndex { entries: self.map.into_iter().collect() }
    }
}
