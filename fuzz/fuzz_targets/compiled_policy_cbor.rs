//! `compiled_policy_cbor`: arbitrary bytes as a compiled policy (`CompiledPolicy::from_cbor`, which decodes and
//! The properties are in `bpfgate_fuzz::targets::compiled_policy_cbor`, where `cargo test` replays the seeds too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpfgate_fuzz::targets::compiled_policy_cbor::check(data));
