//! The inspection driver: parse an object, analyze each program, compute the gate's view beside the analysis,
//! and report problems as typed [`InspectError`]s.

use crate::analysis::{self, AnalysisError, Analyzed};
use crate::disasm;
use crate::elf::{self, ElfError};
use crate::kernel_view;
use crate::metadata::{InspectError, InspectErrorKind, ObjectReport, SCHEMA_VERSION};
use crate::target::Target;

/// Inspects one BPF ELF object: every program's capability metadata, or errors naming file, section and
/// instruction. Never panics on malformed input; a program that cannot be analyzed is reported in
/// [`ObjectReport::errors`] and the others are still analyzed.
pub fn inspect(file: &str, bytes: &[u8]) -> ObjectReport {
    inspect_disassembled(file, bytes).0
}

/// [`inspect`] for a target kernel: helper calls it cannot execute ([`Target::helper_executable`]: libbpf's
/// poison ids, and with the kernel's `__BPF_FUNC_MAX_ID` every id past its last helper) grant no class, in the
/// analysis and in the gate's view alike. [`inspect`] is this with [`Target::ANY`].
pub fn inspect_for(file: &str, bytes: &[u8], target: &Target) -> ObjectReport {
    match elf::Object::parse(bytes) {
        Ok(obj) => inspect_object_for(file, &obj, target),
        Err(e) => ObjectReport { errors: vec![elf_error(file, &e)], ..empty(file) },
    }
}

/// [`inspect`], keeping the parsed object to disassemble the instructions the report cites: for a report a
/// person reads, without parsing twice.
pub fn inspect_disassembled(file: &str, bytes: &[u8]) -> (ObjectReport, Disassembly) {
    match elf::Object::parse(bytes) {
        Ok(obj) => (inspect_object(file, &obj), Disassembly(Some(obj))),
        Err(e) => (ObjectReport { errors: vec![elf_error(file, &e)], ..empty(file) }, Disassembly(None)),
    }
}

/// A parsed object, kept by [`inspect_disassembled`] to show instructions in the kernel's notation.
#[derive(Debug)]
pub struct Disassembly(Option<elf::Object>);

impl Disassembly {
    /// The instruction at `insn` of code section `section`, with helper and relocation names; `None` when there
    /// is no such instruction, it does not decode, or the object did not parse.
    pub fn insn(&self, section: &str, insn: usize) -> Option<String> {
        disasm::disassemble(self.0.as_ref()?, section, insn)
    }
}

fn empty(file: &str) -> ObjectReport {
    ObjectReport {
        schema_version: SCHEMA_VERSION,
        file: file.to_owned(),
        license: None,
        maps: Vec::new(),
        programs: Vec::new(),
        errors: Vec::new(),
    }
}

fn elf_error(file: &str, e: &ElfError) -> InspectError {
    InspectError {
        section: e.section().map(str::to_owned),
        offset: e.offset(),
        ..InspectError::new(file, e.kind(), format!("{file}: {e}"))
    }
}

fn program_error(
    file: &str,
    program: &str,
    kind: InspectErrorKind,
    section: Option<(&str, usize)>,
    message: String,
) -> InspectError {
    InspectError {
        program: Some(program.to_owned()),
        section: section.map(|(s, _)| s.to_owned()),
        insn: section.map(|(_, i)| i as u64),
        ..InspectError::new(file, kind, message)
    }
}

/// [`inspect`] for an object already parsed.
pub fn inspect_object(file: &str, obj: &elf::Object) -> ObjectReport {
    inspect_object_for(file, obj, &Target::ANY)
}

/// [`inspect_for`] for an object already parsed.
pub fn inspect_object_for(file: &str, obj: &elf::Object, target: &Target) -> ObjectReport {
    let mut report = empty(file);
    report.license = obj.license.clone();
    report.maps = obj.maps.clone();
    report.errors.extend(obj.errors.iter().map(|e| elf_error(file, e)));
    // A program whose code has an unreadable relocation cannot be trusted to be complete. Sorted: every program
    // looks its sections up.
    let mut broken: Vec<&str> = obj
        .errors
        .iter()
        .filter_map(|e| match e {
            ElfError::BadRelocation { section, .. } => Some(section.as_str()),
            _ => None,
        })
        .collect();
    broken.sort_unstable();
    broken.dedup();
    // Shared by the programs: each can reach code the others reach too (see `analysis::MAX_OBJECT_WORK`).
    let mut budget = analysis::MAX_OBJECT_WORK;
    for (i, prog) in obj.programs.iter().enumerate() {
        match analysis::analyze_for(obj, prog, &mut budget, target) {
            Ok(Analyzed { mut metadata, funcs, calls }) => {
                let bad = std::iter::once(metadata.section.as_str())
                    .chain(metadata.subprograms.iter().map(|s| s.section.as_str()))
                    .find(|s| broken.binary_search(s).is_ok());
                match bad {
                    Some(sec) => report.errors.push(InspectError {
                        section: Some(sec.to_owned()),
                        ..program_error(
                            file,
                            &prog.name,
                            InspectErrorKind::Tainted,
                            None,
                            format!("{file}: program {}: not analyzed: section {sec} has a bad relocation", prog.name),
                        )
                    }),
                    None => {
                        // The gate's view, from the same linked layout.
                        metadata.kernel_view = kernel_view::compute_for(
                            obj,
                            metadata.prog_type,
                            metadata.attach_type,
                            funcs,
                            &calls,
                            target,
                        );
                        report.programs.push(metadata);
                    }
                }
            }
            // The budget is spent: one error for all the programs left, not one each.
            Err(e @ AnalysisError::ObjectTooLarge { .. }) => {
                let rest = obj.programs.len() - i - 1;
                let after = if rest > 0 { format!(" (nor are the {rest} programs after it)") } else { String::new() };
                let message = format!("{file}: program {}: {e}{after}", prog.name);
                report.errors.push(program_error(file, &prog.name, e.kind(), None, message));
                break;
            }
            Err(e) => {
                let message = format!("{file}: program {}: {e}", prog.name);
                report.errors.push(program_error(file, &prog.name, e.kind(), e.location(), message));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_typed_and_keep_their_message() {
        let report = inspect("junk.o", b"not an ELF file");
        let [e] = report.errors.as_slice() else { panic!("{:?}", report.errors) };
        assert_eq!(
            (e.file.as_str(), e.kind, e.program.as_deref(), e.section.as_deref()),
            ("junk.o", InspectErrorKind::NotElf, None, None)
        );
        assert!(e.message.starts_with("junk.o: not a valid ELF file"), "{e}");
        assert_eq!(e.to_string(), e.message);
        let json = serde_json::to_value(e).expect("serializes");
        assert_eq!(json["kind"], "not_elf");
        assert!(json.get("program").is_none(), "absent fields are left out: {json}");
    }
}
