//! Fuzz target `registry`: see `fuzz/checks/registry.rs` (shared with the
//! regression test that replays every seed and finding, `tests/it/fuzz.rs`).
#![no_main]

#[path = "../checks/registry.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
