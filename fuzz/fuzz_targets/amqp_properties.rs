//! `dq_fuzz::amqp_properties` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dq_fuzz::amqp_properties(data));
