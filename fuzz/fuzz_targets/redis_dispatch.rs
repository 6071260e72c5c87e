//! `dq_fuzz::redis_dispatch` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dq_fuzz::redis_dispatch(data));
