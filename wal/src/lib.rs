//! The ActiveMirrorOS write-ahead log.
//!
//! This crate owns the durable byte log that sits in front of the columnar segments: record
//! framing ([`record`]), the file layer that can be swapped for fault injection ([`fs`]), and the
//! group-committing, rotating, recovering log itself ([`log`]). It knows nothing about events:
//! a record payload is opaque bytes. The on-disk format is specified in `docs/format/wal.md`.

pub mod fs;
pub mod log;
pub mod record;

pub use fs::{StdFs, WalFile, WalFs};
pub use log::{RecoveryReport, Wal, WalConfig, WalError, WalStats, FSYNC_BUCKETS_S, GROUP_BUCKETS};
pub use record::{decode_record, encode_record, DecodeError, Record, HEADER_LEN, MAX_PAYLOAD};
