//! Fuzz WAL record decoding: any bytes decode to a prefix of records or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wal::record::fuzz_decode(data);
});
