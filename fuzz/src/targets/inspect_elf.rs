//! `inspect_elf`: arbitrary bytes as a BPF ELF object, through `bpfgate::inspect`.
//!
//! Properties:
//! * `inspect` never panics (and never hangs) on any input;
//! * it is deterministic: inspecting the same bytes twice gives equal reports;
//! * every program's evidence offsets, tail call sites and subprogram starts are below its `insn_count`;
//! * `capabilities` are exactly the classes with evidence, and each has at least one evidence instruction;
//! * the report (and each program's metadata) round-trips through JSON and CBOR to an equal value.

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    let report = bpfgate::inspect("fuzz.o", data);
    let again = bpfgate::inspect("fuzz.o", data);
    assert_eq!(report, again, "inspect is not deterministic");
    crate::check_report(&report);
}
