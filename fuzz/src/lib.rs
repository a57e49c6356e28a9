//! Shared pieces of the bpfgate fuzz targets: report invariants, the one-program objects `decode_analyze` wraps
//! its input in (written by `bpfgate_test_support::elf`), and (in [`policy`]) the fixed programs, subjects and
//! checks of the two policy targets.

pub mod policy;
pub mod targets;

use bpfgate::metadata::{from_cbor, to_cbor};
use bpfgate::{ObjectReport, ProgramMetadata};
use bpfgate_test_support::elf::Elf;

/// Invariants every report must satisfy, whatever the input:
///
/// * every program's evidence offsets are below its `insn_count`, and so are tail call sites and subprogram
///   starts;
/// * `capabilities` are exactly the classes that have evidence, and every one has at least one instruction;
/// * the report round-trips through JSON (serde_json) and CBOR (`to_cbor` / `from_cbor`) to an equal value,
///   and so does each program's metadata on its own.
pub fn check_report(report: &ObjectReport) {
    for p in &report.programs {
        check_program(p);
    }
    let json = serde_json::to_string(report).expect("report encodes as JSON");
    let back: ObjectReport = serde_json::from_str(&json).expect("report JSON decodes");
    assert_eq!(&back, report, "JSON round trip changed the report");
    let cbor = to_cbor(report).expect("report encodes as CBOR");
    let back: ObjectReport = from_cbor(&cbor).expect("report CBOR decodes");
    assert_eq!(&back, report, "CBOR round trip changed the report");
}

/// The per-program part of [`check_report`].
pub fn check_program(p: &ProgramMetadata) {
    for (c, insns) in &p.evidence {
        assert!(!insns.is_empty(), "{}: capability {c} has an empty evidence list", p.name);
        assert!(p.capabilities.contains(c), "{}: evidence for {c}, which is not among the capabilities", p.name);
        for &i in insns {
            assert!(i < p.insn_count, "{}: evidence {i} for {c} is past insn_count {}", p.name, p.insn_count);
            // Every evidence instruction can be located in a section.
            let _ = p.locate(i);
        }
    }
    for c in &p.capabilities {
        assert!(p.evidence.get(c).is_some_and(|v| !v.is_empty()), "{}: capability {c} has no evidence", p.name);
    }
    for t in &p.tail_calls {
        assert!(t.insn < p.insn_count, "{}: tail call at {} is past insn_count {}", p.name, t.insn, p.insn_count);
    }
    for s in p.subprograms.iter().chain(&p.unreached_subprograms) {
        assert!(s.start < p.insn_count, "{}: subprogram {} starts past insn_count", p.name, s.name);
    }
    let cbor = to_cbor(p).expect("program encodes as CBOR");
    let back: ProgramMetadata = from_cbor(&cbor).expect("program CBOR decodes");
    assert_eq!(&back, p, "CBOR round trip changed the program metadata");
}

/// A minimal relocatable BPF ELF64 object in the given byte order: one executable section `section` holding
/// `code` (a trailing partial instruction dropped), the global function `prog` covering all of it, and a
/// `license` section ("GPL").
pub fn object(little_endian: bool, section: &str, code: &[u8]) -> Vec<u8> {
    let code = &code[..code.len() / 8 * 8];
    let mut e = Elf::with_byte_order(little_endian);
    let s = e.code_bytes(section, code.to_vec());
    e.license();
    e.func("prog", s, 0, code.len() / 8);
    e.finish()
}
