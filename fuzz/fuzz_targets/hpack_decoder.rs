//! Fuzz target: see `nereid::fuzz_api::hpack_blocks`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nereid::fuzz_api::hpack_blocks(data));
