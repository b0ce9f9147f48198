//! Fuzz target `classify`: the checks of [`oracles/classify.rs`](../oracles/classify.rs) on arbitrary bytes.
#![no_main]

#[path = "../oracles/classify.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::fuzz(data));
