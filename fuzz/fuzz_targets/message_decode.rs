//! `dq_fuzz::message_decode` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dq_fuzz::message_decode(data));
