//! `inspect_elf`: arbitrary bytes as a BPF ELF object, through `bpfgate::inspect`.
//!
//! Properties:
//! * `inspect` never panics (and never hangs) on any input;
//! * it is deterministic: inspecting the same bytes twice gives equal reports;
//! * every program's evidence offsets, tail call sites and subprogram starts are below its `insn_count`;
//! * `capabilities` are exactly the classes with evidence, and each has at least one evidence instruction;
//! * the report (and each program's metadata) round-trips through JSON and CBOR to an equal value;
//! * judged as loaded on a kernel whose BTF is the object's own (every CO-RE relocation finds candidates, so all
//!   of the relocation code runs), with its first map not created, the same holds.

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    let report = bpfgate::inspect("fuzz.o", data);
    let again = bpfgate::inspect("fuzz.o", data);
    assert_eq!(report, again, "inspect is not deterministic");
    crate::check_report(&report);
    let Ok(obj) = bpfgate::unstable::elf::Object::parse(data) else { return };
    let Some(target) = obj.btf_data.as_deref().and_then(|b| bpfgate::TargetBtf::parse(b).ok()) else { return };
    let options = bpfgate::InspectOptions {
        target_btf: Some(&target),
        not_created: obj.maps.iter().take(1).map(|m| m.name.clone()).collect(),
        ..Default::default()
    };
    let relocated = bpfgate::inspect_with("fuzz.o", data, &options);
    assert_eq!(relocated, bpfgate::inspect_with("fuzz.o", data, &options), "inspect_with is not deterministic");
    crate::check_report(&relocated);
}
