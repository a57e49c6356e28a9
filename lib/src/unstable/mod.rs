//! Parsing internals for the fuzz targets, hostile-input tests and tools of this repository: the ELF and BTF
//! readers, the instruction decoder and the analysis. No stability promise: anything here may change in any
//! release, and it is hidden from the documentation.

pub mod analysis;
pub mod btf;
pub mod core_reloc;
pub mod elf;
pub mod insn;
pub mod section;

pub use crate::disasm::disassemble;
pub use crate::inspect::inspect_object;
