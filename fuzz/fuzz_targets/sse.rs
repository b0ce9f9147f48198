//! Fuzz target `sse`: the checks of [`oracles/sse.rs`](../oracles/sse.rs) on arbitrary bytes.
#![no_main]

#[path = "../oracles/sse.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::fuzz(data));
