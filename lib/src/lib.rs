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
pub mod helpers;
pub mod insn;
pub mod metadata;
pub mod policy;
pub mod progtype;
pub mod section;

pub use metadata::{Capability, ClassSet, ObjectReport, ProgramMetadata};
