//! `policy_yaml`: arbitrary bytes, as UTF-8 (invalid sequences replaced), as a policy file through `Policy::parse`,
//! The properties are in `bpfgate_fuzz::targets::policy_yaml`, where `cargo test` replays the seeds too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpfgate_fuzz::targets::policy_yaml::check(data));
