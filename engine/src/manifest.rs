//! The manifest: the list of live segment files and the WAL checkpoint (every record with
//! `lsn <= checkpoint_lsn` is in those segments). Replaced atomically: write a temp file,
//! fsync, rename, fsync the directory. Files in the directory but not in the manifest are
//! leftovers of an interrupted flush or compaction and are deleted on open.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::EngineError;

pub const MANIFEST_FILE: &str = "MANIFEST.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub checkpoint_lsn: u64,
    pub next_segment_id: u64,
    pub segments: Vec<SegmentEntry>,
    /// Files of the cold tier (see [`crate::archive`]), under `archive/`.
    #[serde(default)]
    pub archives: Vec<ArchiveEntry>,
}

/// One file of the cold tier: the rows of a warm segment, written by the [`crate::Archiver`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchiveEntry {
    pub file: String,
    pub rows: u64,
    /// Least and greatest event timestamp (unix ns) in the file.
    pub min_ts: i64,
    pub max_ts: i64,
    /// Size of the file.
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentEntry {
    pub file: String,
    pub rows: u64,
    pub tier: Tier,
}

/// Storage tier of a segment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Freshly flushed, lz4.
    Hot,
    /// Compacted, zstd.
    Warm,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest, EngineError> {
        let path = dir.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| EngineError::Corrupt(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest { version: 1, ..Default::default() }),
            Err(e) => Err(EngineError::io(&path, e)),
        }
    }

    pub fn store(&self, dir: &Path) -> Result<(), EngineError> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join("MANIFEST.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| EngineError::Corrupt(e.to_string()))?;
        let mut f = File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| EngineError::io(&tmp, e))?;
        f.sync_all().map_err(|e| EngineError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| EngineError::io(dir, e))
    }
}
