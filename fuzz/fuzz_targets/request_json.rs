#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slmkit::fuzzing::request_json(data));
