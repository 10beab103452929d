//! Fuzz target: see `nereid::fuzz_api::http1_connection`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nereid::fuzz_api::http1_connection(data));
