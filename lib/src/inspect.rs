//! The inspection driver: parse an object, analyze each program, compute the gate's view beside the analysis,
//! and report problems as typed [`InspectError`]s.

use crate::analysis::{self, AnalysisError, Analyzed};
use crate::disasm;
use crate::elf::{self, ElfError};
use crate::kernel_view;
use crate::metadata::{
    AttachType, InspectError, InspectErrorKind, LoadRewrites, ObjectReport, PoisonReason, PoisonedInsn, ProgType,
    UnreachedCode, SCHEMA_VERSION,
};
use crate::target::Target;
use crate::unstable::core_reloc::{self, PoisonWhy};

/// Inspects one BPF ELF object: every program's capability metadata, or errors naming file, section and
/// instruction. Never panics on malformed input; a program that cannot be analyzed is reported in
/// [`ObjectReport::errors`] and the others are still analyzed.
pub fn inspect(file: &str, bytes: &[u8]) -> ObjectReport {
    inspect_with(file, bytes, &InspectOptions::default())
}

/// What a loader sets at run time for one program, over what the object says: judged as it will be loaded.
///
/// libbpf's `bpf_program__set_type`, `bpf_program__set_expected_attach_type` and
/// `bpf_program__set_attach_target` (bcc's fsdist, fsslower, funclatency and ksnoop load placeholders such as
/// `dummy_kprobe` and set the real function at run time); cilium/ebpf's `ProgramSpec.Type`, `AttachType` and
/// `AttachTo`; `tc`'s program type from its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOverride {
    /// The program: its name in the report, or the name the kernel keeps (its first 15 bytes).
    pub program: String,
    /// The program type the loader sets.
    pub prog_type: Option<ProgType>,
    /// The expected attach type the loader sets.
    pub attach_type: Option<AttachType>,
    /// The attach target the loader sets: a kernel function, tracepoint or BTF type name.
    pub attach_target: Option<String>,
}

/// Applies `overrides` to the programs of `obj`; errors for those that name no program.
fn apply_overrides(file: &str, obj: &mut elf::Object<'_>, overrides: &[LoadOverride]) -> Vec<InspectError> {
    let mut errors = Vec::new();
    for o in overrides {
        let mut found = false;
        for p in obj.programs.iter_mut().filter(|p| p.name == o.program || p.kernel_name == o.program) {
            found = true;
            let info = &mut p.info;
            if let Some(t) = o.prog_type {
                p.notes.push(format!("program type set by the loader: {t} (the section says {})", info.prog_type));
                info.prog_type = t;
                info.unspec_reason = None;
            }
            if let Some(a) = o.attach_type {
                let was = info.attach_type.map_or_else(|| "none".to_owned(), |a| a.to_string());
                p.notes.push(format!("expected attach type set by the loader: {a} (the section says {was})"));
                info.attach_type = Some(a);
            }
            if let Some(t) = &o.attach_target {
                let was = info.attach_target.as_deref().unwrap_or("none");
                p.notes.push(format!("attach target set by the loader: {t} (the section says {was})"));
                info.attach_target = Some(t.clone());
            }
        }
        if !found {
            let message = format!("{file}: load override for {}: the object has no such program", o.program);
            errors.push(InspectError {
                program: Some(o.program.clone()),
                ..InspectError::new(file, InspectErrorKind::Override, message)
            });
        }
    }
    errors
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
    /// Which helper calls can execute on the kernel the object is judged for ([`Target::helper_executable`]:
    /// libbpf's poison ids never; with the kernel's `__BPF_FUNC_MAX_ID`, no id past its last helper). With a
    /// `target_btf` and no `helper_max_id` here, the BTF's `enum bpf_func_id` gives it.
    pub target: Target,
    /// What the loader sets at run time per program. Each override applied is said in the program's `notes`;
    /// one that names no program is an error of kind [`InspectErrorKind::Override`].
    pub overrides: Vec<LoadOverride>,
}

/// [`inspect`] of the object as the loader will submit it (see [`InspectOptions`]).
pub fn inspect_with(file: &str, bytes: &[u8], options: &InspectOptions<'_>) -> ObjectReport {
    inspect_parsed(file, bytes, options).0
}

/// [`inspect_disassembled`] of the object as the loader will submit it: the disassembly shows the rewritten
/// instructions.
pub fn inspect_disassembled_with(
    file: &str,
    bytes: &[u8],
    options: &InspectOptions<'_>,
) -> (ObjectReport, Disassembly) {
    let (report, obj) = inspect_parsed(file, bytes, options);
    (report, Disassembly(obj.map(elf::Object::without_btf)))
}

/// The report, and the object it is of (`None` when it did not parse).
fn inspect_parsed<'data>(
    file: &str,
    bytes: &'data [u8],
    options: &InspectOptions<'_>,
) -> (ObjectReport, Option<elf::Object<'data>>) {
    let mut obj = match elf::Object::parse(bytes) {
        Ok(obj) => obj,
        Err(e) => return (ObjectReport { errors: vec![elf_error(file, &e)], ..empty(file) }, None),
    };
    let choices = core_reloc::LoaderChoices { not_created: &options.not_created };
    let outcome = core_reloc::rewrite(&mut obj, options.target_btf.map(|t| &t.0), &choices);
    let override_errors = apply_overrides(file, &mut obj, &options.overrides);
    let mut target = options.target;
    if target.helper_max_id.is_none() {
        target.helper_max_id = options.target_btf.and_then(|t| t.0.helper_max_id());
    }
    let mut report = inspect_object_for(file, &obj, &target);
    report.errors.extend(override_errors);
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
    (report, Some(obj))
}

/// A parsed object, kept by [`inspect_disassembled`] to show instructions in the kernel's notation.
#[derive(Debug)]
pub struct Disassembly(Option<elf::Object<'static>>);

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
        unreached: Vec::new(),
        notes: Vec::new(),
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
pub fn inspect_object(file: &str, obj: &elf::Object<'_>) -> ObjectReport {
    inspect_object_for(file, obj, &Target::ANY)
}

/// [`inspect_object`] for a target kernel: helper calls it cannot execute ([`Target::helper_executable`]) grant
/// no class, in the analysis and in the gate's view alike.
pub fn inspect_object_for(file: &str, obj: &elf::Object<'_>, target: &Target) -> ObjectReport {
    let mut report = empty(file);
    report.notes = obj.notes.clone();
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
    // What the reported programs hold: (section, start, end) of every function each contains or reaches; for a
    // program in `errors`, its entry function.
    let mut covered: Vec<(usize, usize, usize)> = Vec::new();
    // In program order, on several threads for a large object, sharing the object's budget (see
    // `analysis::MAX_OBJECT_WORK`, `analysis::analyze_programs`).
    // The gate's view of each program is computed beside its analysis, on the same threads.
    let view = |prog: &elf::ProgramEntry, funcs: &[(usize, usize, usize)], calls: &[(u32, u32)]| {
        kernel_view::compute_for(obj, prog.info.prog_type, prog.info.attach_type, funcs.iter().copied(), calls, target)
    };
    for ((i, prog), result) in obj.programs.iter().enumerate().zip(analysis::analyze_programs(obj, target, &view)) {
        let entry = obj.sections.get(prog.section).map(|cs| (prog.section, prog.start, cs.func_end(prog.start)));
        covered.extend(entry);
        match result {
            Ok(Analyzed { metadata, funcs, .. }) => {
                covered.extend(&funcs);
                let bad = std::iter::once(metadata.section.as_str())
                    .chain(
                        metadata.subprograms.iter().chain(&metadata.unreached_subprograms).map(|s| s.section.as_str()),
                    )
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
                    None => report.programs.push(metadata),
                }
            }
            // The budget is spent: one error for all the programs left, not one each.
            Err(e @ AnalysisError::ObjectTooLarge { .. }) => {
                let rest = obj.programs.len() - i - 1;
                let after = if rest > 0 { format!(" (nor are the {rest} programs after it)") } else { String::new() };
                let message = format!("{file}: program {}: {e}{after}", prog.name);
                report.errors.push(program_error(file, &prog.name, e.kind(), None, message));
                // Not analyzed, but named in `errors`: their entry functions are not unreached code.
                for p in obj.programs.get(i + 1..).unwrap_or_default() {
                    covered.extend(obj.sections.get(p.section).map(|cs| (p.section, p.start, cs.func_end(p.start))));
                }
                break;
            }
            Err(e) => {
                let message = format!("{file}: program {}: {e}", prog.name);
                report.errors.push(program_error(file, &prog.name, e.kind(), e.location(), message));
            }
        }
    }
    report.unreached = unreached(obj, covered);
    report
}

/// The runs of each code section that `covered` (section, start, end) leaves out, split where a function symbol
/// starts, each named after the symbol it starts at.
fn unreached(obj: &elf::Object<'_>, mut covered: Vec<(usize, usize, usize)>) -> Vec<UnreachedCode> {
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut runs = covered.iter().peekable();
    for (pos, cs) in obj.sections.iter().enumerate() {
        let mut at = 0;
        let mut gaps = Vec::new();
        while let Some(&&(_, start, end)) = runs.peek().filter(|r| r.0 == pos) {
            if start > at {
                gaps.push((at, start));
            }
            at = at.max(end);
            runs.next();
        }
        if at < cs.insns.len() {
            gaps.push((at, cs.insns.len()));
        }
        for (start, end) in gaps {
            // Split at every function start inside the run.
            let first = cs.funcs.partition_point(|f| f.start <= start);
            let mut from = start;
            for f in cs.funcs.get(first..).unwrap_or_default().iter().take_while(|f| f.start < end) {
                out.push(run(cs, from, f.start));
                from = f.start;
            }
            out.push(run(cs, from, end));
        }
    }
    out
}

fn run(cs: &elf::CodeSection, start: usize, end: usize) -> UnreachedCode {
    UnreachedCode {
        section: cs.name.clone(),
        start: start as u32,
        end: end as u32,
        symbol: cs.func_name(start).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_the_first_15_bytes() {
        use crate::metadata::kernel_name;
        assert_eq!(kernel_name("xdp_program_with_a_long_name"), "xdp_program_wit");
        assert_eq!(kernel_name("exactly_15_byte"), "exactly_15_byte");
        assert_eq!(kernel_name("short"), "short");
        // Cut at a character boundary: 9 two-byte characters are 18 bytes, 7 fit.
        assert_eq!(kernel_name("ééééééééé"), "ééééééé");
    }

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
