//! Immutable columnar segment files for agent events.
//!
//! This crate owns the event record type ([`Event`]) and everything about storing events at
//! rest: the pure per-type encoders ([`encoding`]), the column model ([`column`]), the on-disk
//! layout ([`format`], specified byte by byte in `docs/format/segment.md`), writing
//! ([`SegmentWriter`]) and mmap'd reading ([`Segment`]). A segment carries its bitmap indexes
//! (from the `index` crate) so it can be pruned without decoding data.

pub mod column;
pub mod encoding;
pub mod error;
pub mod event;
pub mod format;
pub mod pages;
mod reader;
pub mod textdict;
mod writer;

pub use column::{ColumnData, ColumnEncoding, ColumnId, StrColumn, COLUMN_COUNT};
pub use compact_str;
pub use encoding::DictColumn;
pub use error::SegmentError;
pub use event::{civil_from_days, decode_events, encode_events, parse_hex, Event, EventCodecError, Text};
pub use format::{BlockMeta, Codec};
pub use reader::Segment;
pub use textdict::TextDictionaryOptions;
pub use writer::{SegmentFile, SegmentInfo, SegmentWriter, TextDictionary, WriterOptions};

/// The fuzz target's body (also run over the seed corpus by the tests): open the bytes as a
/// segment and read every block; errors are fine, panics are not.
pub fn fuzz_open_and_read(data: &[u8]) {
    if let Ok(seg) = Segment::from_bytes("fuzz.seg", data.to_vec()) {
        for b in 0..seg.blocks().len() {
            for c in ColumnId::ALL {
                let _ = seg.read_column(b, c);
            }
            // Point reads of text (paged chunks decode only the pages asked for).
            let n = seg.blocks()[b].rows;
            let _ = seg.read_text_rows(b, ColumnId::Content, &[0, n / 2, n.saturating_sub(1), n]);
        }
        let _ = seg.load_index();
        let _ = seg.load_text_index();
    }
}
