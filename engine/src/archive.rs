//! The cold tier: warm segments whose newest event is older than
//! [`crate::EngineConfig::archive_after`] are rewritten by an [`Archiver`] (the query crate's
//! writes Parquet; the engine knows no Arrow) into `archive/`, listed in the manifest, and
//! their segment files deleted. Retention deletes archive files as it deletes segments.
//! Queries read them through [`crate::Snapshot::archives`].
//!
//! Crash safety: the archiver writes `<name>.tmp` and makes it durable; the engine renames it,
//! fsyncs the directory, then replaces the manifest (segment out, archive in) atomically. A
//! crash before the manifest lands leaves the segment live and the archive file unlisted,
//! and opening deletes unlisted files of `archive/`: no row is lost or seen twice.

use std::collections::HashSet;
use std::fmt::Debug;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use segments::Segment;

use crate::manifest::ArchiveEntry;
use crate::{stopping, EngineError, Inner, Tier};

/// Directory of the cold tier's files, inside the data directory.
pub const ARCHIVE_DIR: &str = "archive";

/// Writes a segment's rows into the cold tier's file format.
pub trait Archiver: Send + Sync + Debug {
    /// The file name extension of what [`Archiver::archive`] writes (`parquet`).
    fn extension(&self) -> &'static str;

    /// Write every row of `segment` to a new file at `path`, durable (fsync'd) when it returns
    /// `Ok(true)`. `stop` says the engine is closing: an archiver should check it now and
    /// then (between blocks) and return `Ok(false)` when it stopped early (the caller deletes
    /// what it wrote), so that closing does not wait for a whole segment.
    fn archive(&self, segment: &Segment, path: &Path, stop: &dyn Fn() -> bool) -> Result<bool, String>;
}

/// A file of the cold tier, as a snapshot lists it: open, so that a snapshot's readers keep
/// reading it after retention unlinks it (as a segment's mapping stays valid).
#[derive(Debug, Clone)]
pub struct ArchivedFile {
    pub path: PathBuf,
    pub entry: ArchiveEntry,
    pub file: Arc<File>,
}

impl ArchivedFile {
    pub(crate) fn open(dir: &Path, entry: &ArchiveEntry) -> Result<ArchivedFile, EngineError> {
        let path = dir.join(ARCHIVE_DIR).join(&entry.file);
        let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        Ok(ArchivedFile { path, entry: entry.clone(), file: Arc::new(file) })
    }
}

/// The archive file name of segment file `segment_file` (`seg-N.seg` -> `seg-N.parquet`).
pub(crate) fn archive_file_name(segment_file: &str, extension: &str) -> String {
    let stem = segment_file.strip_suffix(".seg").unwrap_or(segment_file);
    format!("{stem}.{extension}")
}

/// Delete the files of `archive/` the manifest does not list (an archive interrupted before
/// its manifest landed), and check that every listed one is there. Returns how many were
/// deleted.
pub(crate) fn open_archive_dir(dir: &Path, listed: &[ArchiveEntry]) -> Result<usize, EngineError> {
    let archive_dir = dir.join(ARCHIVE_DIR);
    std::fs::create_dir_all(&archive_dir).map_err(|e| EngineError::io(&archive_dir, e))?;
    let names: HashSet<&str> = listed.iter().map(|a| a.file.as_str()).collect();
    let removed = crate::remove_unlisted(&archive_dir, &names)?;
    for a in listed {
        let path = archive_dir.join(&a.file);
        if !path.is_file() {
            return Err(EngineError::Corrupt(format!(
                "archive file {} listed in the manifest is missing",
                path.display()
            )));
        }
    }
    Ok(removed)
}

/// Move the warm segments whose newest event is older than `cutoff_ns` to the cold tier, the
/// oldest first, one at a time (stopping early when the engine closes). Returns the rows
/// moved. Without an archiver, nothing.
pub(crate) fn archive_once(inner: &Inner, cutoff_ns: i64) -> Result<u64, EngineError> {
    let Some(archiver) = inner.cfg.archiver.clone() else {
        return Ok(0);
    };
    let mut due: Vec<_> = {
        let st = inner.state.lock();
        st.segments
            .iter()
            .filter(|s| s.entry.tier == Tier::Warm && s.segment.rows() > 0 && s.segment.max_ts() < cutoff_ns)
            .cloned()
            .collect()
    };
    due.sort_by_key(|s| s.segment.max_ts());
    let archive_dir = inner.dir.join(ARCHIVE_DIR);
    let mut moved = 0;
    for live in due {
        if stopping(inner) {
            break;
        }
        let name = archive_file_name(&live.entry.file, archiver.extension());
        let path = archive_dir.join(&name);
        let tmp = archive_dir.join(format!("{name}.tmp"));
        let started = std::time::Instant::now();
        match archiver.archive(&live.segment, &tmp, &|| stopping(inner)) {
            Ok(true) => {}
            Ok(false) => {
                let _ = std::fs::remove_file(&tmp);
                break;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(EngineError::Archive { segment: live.entry.file.clone(), reason: e });
            }
        }
        std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
        File::open(&archive_dir).and_then(|d| d.sync_all()).map_err(|e| EngineError::io(&archive_dir, e))?;
        let file = Arc::new(File::open(&path).map_err(|e| EngineError::io(&path, e))?);
        let bytes = file.metadata().map_err(|e| EngineError::io(&path, e))?.len();
        let entry = ArchiveEntry {
            file: name,
            rows: live.segment.rows(),
            min_ts: live.segment.min_ts(),
            max_ts: live.segment.max_ts(),
            bytes,
        };
        {
            let _m = inner.manifest_lock.lock();
            let mut manifest = {
                let st = inner.state.lock();
                // Retention (or a merge run by hand) may have taken the segment meanwhile.
                if !st.segments.iter().any(|s| s.entry.file == live.entry.file) {
                    drop(st);
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                st.manifest.clone()
            };
            manifest.segments.retain(|s| s.file != live.entry.file);
            manifest.archives.push(entry.clone());
            manifest.store(&inner.dir)?;
            let mut st = inner.state.lock();
            st.segments.retain(|s| s.entry.file != live.entry.file);
            st.archives.push(ArchivedFile { path: path.clone(), entry: entry.clone(), file: file.clone() });
            st.manifest = manifest;
        }
        let seg_path = live.segment.path().to_path_buf();
        if let Err(e) = std::fs::remove_file(&seg_path) {
            tracing::warn!(file = %seg_path.display(), error = %e, "could not remove archived segment");
        }
        moved += entry.rows;
        inner.stats.archived_segments.fetch_add(1, Ordering::Relaxed);
        inner.stats.archived_rows.fetch_add(entry.rows, Ordering::Relaxed);
        tracing::info!(
            segment = %live.entry.file,
            file = %entry.file,
            rows = entry.rows,
            bytes = entry.bytes,
            secs = started.elapsed().as_secs_f64(),
            "moved a segment to the cold tier"
        );
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_files_are_named_after_their_segment() {
        assert_eq!(archive_file_name("seg-0000000000000042.seg", "parquet"), "seg-0000000000000042.parquet");
        assert_eq!(archive_file_name("odd", "parquet"), "odd.parquet");
    }
}
