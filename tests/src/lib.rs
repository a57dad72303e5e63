//! Shared helpers for the end-to-end tests: the crash writer's wire format.

/// Span id of event `seq` of writer `w`: unique per event across writers.
pub fn span_of(writer: u32, seq: u32) -> u64 {
    (u64::from(writer) << 32) | u64::from(seq)
}
