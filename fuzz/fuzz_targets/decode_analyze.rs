//! `decode_analyze`: arbitrary bytes as an instruction stream, wrapped in a minimal valid BPF ELF and inspected.
//! The properties are in `bpfgate_fuzz::targets::decode_analyze`, where `cargo test` replays the seeds too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpfgate_fuzz::targets::decode_analyze::check(data));
