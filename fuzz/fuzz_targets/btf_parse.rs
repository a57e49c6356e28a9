//! `btf_parse`: arbitrary bytes as a `.BTF` section, through `bpfgate::unstable::btf::parse` in both byte orders.
//! The properties are in `bpfgate_fuzz::targets::btf_parse`, where `cargo test` replays the seeds too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpfgate_fuzz::targets::btf_parse::check(data));
