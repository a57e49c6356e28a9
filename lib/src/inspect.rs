//! The inspection driver: parse an object, analyze each program, compute the gate's view beside the analysis,
//! and report problems as typed [`InspectError`]s.

use crate::analysis::{self, AnalysisError, Analyzed};
use crate::disasm;
use crate::elf::{self, ElfError};
use crate::kernel_view;
use crate::metadata::{
    InspectError, InspectErrorKind, LoadRewrites, ObjectReport, PoisonReason, PoisonedInsn, SCHEMA_VERSION,
};
use crate::unstable::core_reloc::{self, PoisonWhy};

/// Inspects one BPF ELF object: every program's capability metadata, or errors naming file, section and
/// instruction. Never panics on malformed input; a program that cannot be analyzed is reported in
/// [`ObjectReport::errors`] and the others are still analyzed.
pub fn inspect(file: &str, bytes: &[u8]) -> ObjectReport {
    inspect_with(file, bytes, &InspectOptions::default())
}

/// [`inspect`], keeping the parsed object to disassemble the instructions the report cites: for a report a
/// person reads, without parsing twice.
pub fn inspect_disassembled(file: &str, bytes: &[u8]) -> (ObjectReport, Disassembly) {
    inspect_disassembled_with(file, bytes, &InspectOptions::default())
}

/// A kernel's BTF (`/sys/kernel/btf/vmlinux`, or the `.BTF` section of its image, as a raw blob), checked and
/// indexed by type name once, to judge objects as libbpf will load them on that kernel ([`InspectOptions`]).
#[derive(Debug, Clone)]
pub struct TargetBtf(core_reloc::Target);

impl TargetBtf {
    /// Reads a raw BTF blob (not an ELF file). A kernel module's split BTF is not supported.
    pub fn parse(bytes: &[u8]) -> Result<TargetBtf, TargetBtfError> {
        core_reloc::Target::parse(bytes).map(TargetBtf).map_err(|e| TargetBtfError { reason: e.to_string() })
    }

    /// Number of types, not counting `void`.
    pub fn type_count(&self) -> u32 {
        self.0.type_count()
    }
}

/// A blob that is not valid raw BTF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid raw BTF: {reason}")]
pub struct TargetBtfError {
    reason: String,
}

/// How to judge an object: as compiled ([`Default`]), or as libbpf will submit it to one kernel.
///
/// With a [`TargetBtf`], the object's CO-RE relocations are applied as libbpf applies them (failed ones
/// poisoned as `call 0xbad2310`), and its weak kfuncs missing from that kernel poisoned; with `not_created`,
/// the `ld_imm64` of each map named there is poisoned as `call 2001000000 + map index`, as libbpf does for a map
/// whose loader turned `autocreate` off. The report's [`ObjectReport::load_rewrites`] says what changed.
#[derive(Debug, Clone, Default)]
pub struct InspectOptions<'a> {
    /// The kernel the object will be loaded on.
    pub target_btf: Option<&'a TargetBtf>,
    /// Maps the loader does not create (`bpf_map__set_autocreate(map, false)`), by name.
    pub not_created: Vec<String>,
}

/// [`inspect`] of the object as the loader will submit it (see [`InspectOptions`]).
pub fn inspect_with(file: &str, bytes: &[u8], options: &InspectOptions<'_>) -> ObjectReport {
    inspect_disassembled_with(file, bytes, options).0
}

/// [`inspect_disassembled`] of the object as the loader will submit it: the disassembly shows the rewritten
/// instructions.
pub fn inspect_disassembled_with(
    file: &str,
    bytes: &[u8],
    options: &InspectOptions<'_>,
) -> (ObjectReport, Disassembly) {
    let mut obj = match elf::Object::parse(bytes) {
        Ok(obj) => obj,
        Err(e) => return (ObjectReport { errors: vec![elf_error(file, &e)], ..empty(file) }, Disassembly(None)),
    };
    let choices = core_reloc::LoaderChoices { not_created: &options.not_created };
    let outcome = core_reloc::rewrite(&mut obj, options.target_btf.map(|t| &t.0), &choices);
    let mut report = inspect_object(file, &obj);
    report.errors.extend(outcome.errors.iter().map(|e| InspectError {
        section: e.location().map(|(s, _)| s.to_owned()),
        insn: e.location().map(|(_, i)| i as u64),
        ..InspectError::new(file, InspectErrorKind::Relocation, format!("{file}: the loader would fail: {e}"))
    }));
    let asked = options.target_btf.is_some() || !options.not_created.is_empty();
    if outcome.core_relocations > 0 || asked {
        report.load_rewrites = Some(LoadRewrites {
            core_relocations: outcome.core_relocations as u64,
            target_btf: outcome.applied,
            not_created: options.not_created.clone(),
            poisoned: outcome
                .poisoned
                .into_iter()
                .map(|p| {
                    let (reason, what) = match p.why {
                        PoisonWhy::Core { spec, .. } => (PoisonReason::CoreRelocation, spec),
                        PoisonWhy::MapNotCreated { map } => (PoisonReason::MapNotCreated, map),
                        PoisonWhy::KfuncMissing { name } => (PoisonReason::KfuncMissing, name),
                    };
                    PoisonedInsn { section: p.section, insn: p.insn as u64, reason, what }
                })
                .collect(),
        });
    }
    (report, Disassembly(Some(obj)))
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
        load_rewrites: None,
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
        match analysis::analyze_within(obj, prog, &mut budget) {
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
                        metadata.kernel_view =
                            kernel_view::compute(obj, metadata.prog_type, metadata.attach_type, funcs, &calls);
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
