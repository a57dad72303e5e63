//! Row indexes stored with every segment.
//!
//! This crate owns the secondary structures that let a query skip data: a roaring bitmap of row
//! ids per distinct value of each indexed column ([`ValueIndex`]), a sorted trace-id directory
//! that finds the rows of one trace without scanning ([`TraceIndex`]), their byte encoding, and
//! the evaluation of a conjunction of equality / IN / IS NULL terms into a bitmap ([`Conjunction`]),
//! a per-block token index of free text for `LIKE` ([`TextIndex`]), and a bitmap as flat bit
//! words for masking dense selections ([`flat_words`]).
//! Pure data structures; no I/O.

mod codec;
mod conjunction;
pub mod text;
mod trace;
mod value;
mod words;

pub use codec::{IndexDecodeError, TextSection};
pub use conjunction::{Conjunction, Term};
pub use roaring::RoaringBitmap;
pub use text::TextIndex;
pub use trace::TraceIndex;
pub use value::ValueIndex;
pub use words::flat_words;

/// The columns that carry a per-value bitmap index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexedColumn {
    Tenant,
    AgentId,
    Intent,
    Kind,
    Status,
    Model,
}

impl IndexedColumn {
    pub const ALL: [IndexedColumn; 6] = [
        IndexedColumn::Tenant,
        IndexedColumn::AgentId,
        IndexedColumn::Intent,
        IndexedColumn::Kind,
        IndexedColumn::Status,
        IndexedColumn::Model,
    ];

    /// The SQL column name.
    pub fn name(self) -> &'static str {
        match self {
            IndexedColumn::Tenant => "tenant",
            IndexedColumn::AgentId => "agent_id",
            IndexedColumn::Intent => "intent",
            IndexedColumn::Kind => "kind",
            IndexedColumn::Status => "status",
            IndexedColumn::Model => "model",
        }
    }

    pub fn from_name(name: &str) -> Option<IndexedColumn> {
        IndexedColumn::ALL.into_iter().find(|c| c.name() == name)
    }

    fn ordinal(self) -> usize {
        self as usize
    }
}

/// All indexes of one segment (or one in-memory batch set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentIndex {
    pub columns: [ValueIndex; 6],
    pub traces: TraceIndex,
    pub rows: u32,
}

impl SegmentIndex {
    pub fn column(&self, c: IndexedColumn) -> &ValueIndex {
        &self.columns[c.ordinal()]
    }

    /// Heap bytes held, about (what keeping it in memory costs): the bitmaps as roaring
    /// serializes them, which is within a few percent of their containers, plus their values
    /// and the trace directory.
    pub fn memory_bytes(&self) -> u64 {
        let values: usize = self
            .columns
            .iter()
            .flat_map(|c| c.entries.iter())
            .map(|(k, b)| b.serialized_size() + k.as_ref().map_or(0, String::capacity) + 64)
            .sum();
        (values + self.traces.memory_bytes() + std::mem::size_of::<SegmentIndex>()) as u64
    }

    /// Rows that satisfy every term of `conj`.
    pub fn evaluate(&self, conj: &Conjunction) -> RoaringBitmap {
        conj.evaluate(self)
    }

    /// Encode, with the segment's token index of `content` after the rest when it has one
    /// (segment writers append it with [`text::TokenBlocks::encode_section`] instead).
    pub fn encode(&self, text: Option<&TextIndex>, out: &mut Vec<u8>) {
        codec::encode(self, text, out)
    }

    /// The row count and the token index's place in an encoded index, checking only that its
    /// lengths fit the bytes (what opening a segment needs; [`SegmentIndex::decode`] checks
    /// the rest). `bytes` may end anywhere after the token index's header.
    pub fn skim(bytes: &[u8]) -> Result<(u32, Option<TextSection>), IndexDecodeError> {
        codec::skim(bytes)
    }

    /// Decode all but the token index, whose place and header are returned: it is most of the
    /// bytes and only `LIKE` needs it, so readers decode it on demand ([`TextIndex::decode`]
    /// on `bytes[section.at..]`).
    pub fn decode(bytes: &[u8]) -> Result<(SegmentIndex, Option<TextSection>), IndexDecodeError> {
        codec::decode(bytes)
    }
}

/// Builds a [`SegmentIndex`] row by row, in row-id order.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    columns: [value::ValueIndexBuilder; 6],
    traces: trace::TraceIndexBuilder,
    rows: u32,
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the next row: its indexed values in [`IndexedColumn::ALL`] order and its trace id.
    pub fn push(&mut self, values: [Option<&str>; 6], trace_id: [u8; 16]) {
        let row = self.rows;
        for (b, v) in self.columns.iter_mut().zip(values) {
            b.push(row, v);
        }
        self.traces.push(row, trace_id);
        self.rows += 1;
    }

    pub fn finish(self) -> SegmentIndex {
        let columns = self.columns.map(|b| b.finish());
        SegmentIndex { columns, traces: self.traces.finish(), rows: self.rows }
    }
}
