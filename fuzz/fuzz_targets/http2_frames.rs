//! Fuzz target: see `nereid::fuzz_api::http2_connection`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nereid::fuzz_api::http2_connection(data));
