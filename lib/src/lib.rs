#![deny(missing_docs)]
//! bpfgate: decide whether a BPF program may be loaded from what it can do.
//!
//! The library reads a BPF ELF object, decodes every program's instructions, follows the code each program can
//! reach, and reports its capabilities (helpers, kfuncs, kernel and user memory access, signals, map writes, ...)
//! as [`metadata::ProgramMetadata`]. A [`policy`] then decides, per subject, whether such a program may load.
//! It is pure: no syscalls, no libbpf.
//!
//! What a loader needs is at the crate root: [`inspect`], the report types ([`ObjectReport`],
//! [`ProgramMetadata`], [`MapDef`], [`InspectError`]), and the policy ([`Policy`], [`Subject`], [`Verdict`]).
//! The in-kernel gate's side is in [`kernel_view`] and [`policy::compiled`]. Parsing internals (ELF, BTF,
//! instruction decoder, the analysis) are in a hidden `unstable` module without any stability promise.
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

mod disasm;
pub mod gate_abi;
pub mod helpers;
mod inspect;
pub mod kernel_view;
pub mod metadata;
pub mod policy;
pub mod progtype;
pub mod target;

#[doc(hidden)]
#[allow(missing_docs)]
pub mod unstable;
pub(crate) use unstable::{analysis, btf, elf, insn, section};

pub use inspect::{
    inspect, inspect_disassembled, inspect_disassembled_with, inspect_with, Disassembly, InspectOptions, LoadOverride,
    TargetBtf, TargetBtfError,
};
pub use metadata::{
    AttachType, Capability, ClassSet, InspectError, InspectErrorKind, KernelView, Loader, MapAccess, MapDef,
    ObjectReport, ProgType, ProgramMetadata, UnreachedCode,
};
pub use policy::{Decision, Policy, PolicyErrors, Reason, Subject, Verdict};
