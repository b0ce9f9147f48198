//! Fuzz target `body`: the checks of [`oracles/body.rs`](../oracles/body.rs) on arbitrary bytes.
#![no_main]

#[path = "../oracles/body.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::fuzz(data));
