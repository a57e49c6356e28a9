//! Each fuzz target's properties, as a function of one input: the fuzz binaries call them, and
//! `tests/replay.rs` replays the seeds and regressions through them in `cargo test`.

pub mod btf_parse;
pub mod cbor_metadata;
pub mod compiled_policy_cbor;
pub mod decode_analyze;
pub mod inspect_elf;
pub mod policy_yaml;
