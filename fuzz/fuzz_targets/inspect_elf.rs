//! `inspect_elf`: arbitrary bytes as a BPF ELF object, through `bpfgate::inspect`.
//! The properties are in `bpfgate_fuzz::targets::inspect_elf`, where `cargo test` replays the seeds too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpfgate_fuzz::targets::inspect_elf::check(data));
