//! Fuzz segment opening and reading: any bytes give a segment or a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    segments::fuzz_open_and_read(data);
});
