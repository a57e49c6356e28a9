//! bpfgate: decide whether a BPF program may be loaded from what it can do.
//!
//! The library reads a BPF ELF object, decodes every program's instructions, follows the code each program can
//! reach, and reports its capabilities (helpers, kfuncs, kernel and user memory access, signals, map writes, ...)
//! as [`metadata::ProgramMetadata`]. A [`policy`] then decides, per subject, whether such a program may load.
//! It is pure: no syscalls, no libbpf.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/kprobe_read.bpf.o"))?;
//! let report = bpfgate::inspect("kprobe_read.bpf.o", &bytes);
//! for prog in &report.programs {
//!     println!("{} ({}): {:?}", prog.name, prog.prog_type, prog.capabilities);
//! }
//! # Ok(())
//! # }
//! ```

pub mod analysis;
pub mod btf;
pub mod elf;
pub mod gate_abi;
pub mod helpers;
pub mod insn;
pub mod kernel_view;
pub mod metadata;
pub mod policy;
pub mod progtype;
pub mod section;

pub use metadata::{Capability, ClassSet, ObjectReport, ProgramMetadata};

/// Inspects one BPF ELF object: every program's capability metadata, or errors naming file, section and
/// instruction. Never panics on malformed input; a program that cannot be analyzed is reported in
/// [`ObjectReport::errors`] and the others are still analyzed.
pub fn inspect(file: &str, bytes: &[u8]) -> ObjectReport {
    match elf::Object::parse(bytes) {
        Ok(obj) => inspect_object(file, &obj),
        Err(e) => ObjectReport {
            schema_version: metadata::SCHEMA_VERSION,
            file: file.to_owned(),
            license: None,
            maps: Vec::new(),
            programs: Vec::new(),
            errors: vec![format!("{file}: {e}")],
        },
    }
}

/// [`inspect`] for an object already parsed (a caller that also disassembles it parses it once).
pub fn inspect_object(file: &str, obj: &elf::Object) -> ObjectReport {
    let mut report = ObjectReport {
        schema_version: metadata::SCHEMA_VERSION,
        file: file.to_owned(),
        license: None,
        maps: Vec::new(),
        programs: Vec::new(),
        errors: Vec::new(),
    };
    report.license = obj.license.clone();
    report.maps = obj.maps.clone();
    report.errors.extend(obj.errors.iter().map(|e| format!("{file}: {e}")));
    // A program whose code has an unreadable relocation cannot be trusted to be complete. Sorted: every program
    // looks its sections up.
    let mut broken: Vec<&str> = obj
        .errors
        .iter()
        .filter_map(|e| match e {
            elf::ElfError::BadRelocation { section, .. } => Some(section.as_str()),
            _ => None,
        })
        .collect();
    broken.sort_unstable();
    broken.dedup();
    // Shared by the programs: each can reach code the others reach too (see `analysis::MAX_OBJECT_WORK`).
    let mut budget = analysis::MAX_OBJECT_WORK;
    for (i, prog) in obj.programs.iter().enumerate() {
        match analysis::analyze_within(obj, prog, &mut budget) {
            Ok(meta) => {
                let bad = std::iter::once(meta.section.as_str())
                    .chain(meta.subprograms.iter().map(|s| s.section.as_str()))
                    .find(|s| broken.binary_search(s).is_ok());
                match bad {
                    Some(sec) => report.errors.push(format!(
                        "{file}: program {}: not analyzed: section {sec} has a bad relocation",
                        prog.name
                    )),
                    None => report.programs.push(meta),
                }
            }
            // The budget is spent: one error for all the programs left, not one each.
            Err(e @ analysis::AnalysisError::ObjectTooLarge { .. }) => {
                let rest = obj.programs.len() - i - 1;
                let after = if rest > 0 { format!(" (nor are the {rest} programs after it)") } else { String::new() };
                report.errors.push(format!("{file}: program {}: {e}{after}", prog.name));
                break;
            }
            Err(e) => report.errors.push(format!("{file}: program {}: {e}", prog.name)),
        }
    }
    report
}
