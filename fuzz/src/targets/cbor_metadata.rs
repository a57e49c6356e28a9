//! `cbor_metadata`: arbitrary bytes as CBOR metadata, through `from_cbor::<ObjectReport>` and
//! `from_cbor::<ProgramMetadata>`.
//!
//! Properties:
//! * decoding never panics (nor overflows the stack) on any input;
//! * whatever decodes re-encodes with `to_cbor`, and that decodes to an equal value;
//! * it also round-trips through JSON to an equal value (the two wire formats of `bpfgate inspect` agree);
//! * each program of a decoded report round-trips on its own as `ProgramMetadata`.
//!
//! Decoded values are not required to satisfy the analysis invariants (evidence below `insn_count`, ...): a
//! document from outside can say anything, and consumers must not assume otherwise.

use bpfgate::metadata::{from_cbor, to_cbor};
use bpfgate::{ObjectReport, ProgramMetadata};
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let cbor = to_cbor(value).expect("a decoded value encodes as CBOR");
    let back: T = from_cbor(&cbor).expect("re-encoded CBOR decodes");
    assert_eq!(&back, value, "CBOR re-encoding changed the value");
    let json = serde_json::to_string(value).expect("a decoded value encodes as JSON");
    let back: T = serde_json::from_str(&json).expect("its JSON decodes");
    assert_eq!(&back, value, "JSON round trip changed the value");
}

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    if let Ok(report) = from_cbor::<ObjectReport>(data) {
        round_trip(&report);
        for p in &report.programs {
            round_trip(p);
        }
    }
    if let Ok(prog) = from_cbor::<ProgramMetadata>(data) {
        round_trip(&prog);
    }
}
