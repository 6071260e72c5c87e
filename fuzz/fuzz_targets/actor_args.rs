//! `dq_fuzz::actor_args` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dq_fuzz::actor_args(data));
