#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sidekick::fuzz::prometheus_protobuf(data));
