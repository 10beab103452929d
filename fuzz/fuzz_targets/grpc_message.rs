//! Fuzz target: see `nereid::fuzz_api::grpc_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nereid::fuzz_api::grpc_message(data));
