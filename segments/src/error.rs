//! Typed errors of segment I/O. Corruption names the file, and the block and column when known.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment {path}: I/O error: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("segment {path}: corrupt{}: {detail}", location(*block, *column))]
    Corrupt { path: PathBuf, block: Option<usize>, column: Option<&'static str>, detail: String },
}

fn location(block: Option<usize>, column: Option<&'static str>) -> String {
    match (block, column) {
        (Some(b), Some(c)) => format!(" in block {b}, column {c}"),
        (Some(b), None) => format!(" in block {b}"),
        (None, Some(c)) => format!(" in column {c}"),
        (None, None) => String::new(),
    }
}
