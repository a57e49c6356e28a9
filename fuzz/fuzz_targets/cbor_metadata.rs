//! `cbor_metadata`: arbitrary bytes as CBOR metadata, through `from_cbor::<ObjectReport>` and
//! The properties are in `bpfgate_fuzz::targets::cbor_metadata`, where `cargo test` replays the seeds too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpfgate_fuzz::targets::cbor_metadata::check(data));
