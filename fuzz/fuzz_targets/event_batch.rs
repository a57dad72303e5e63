//! Fuzz WAL payload decoding (`segments::decode_events`): any bytes give events or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = segments::decode_events(data);
});
