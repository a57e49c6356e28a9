//! Test support for bpfgate: raw BPF instructions ([`insn`]), a BPF ELF object writer ([`elf`]), BTF blobs
//! ([`btf`]), generators of hostile inputs ([`hostile`]), random programs for differential tests ([`random`]) and the walk over test inputs on disk
//! ([`files`]).
//!
//! It does not depend on the `bpfgate` library, so the library's own unit tests can use it, and it knows nothing
//! the library decides: it writes what it is told, byte by byte, including objects no linker would write.

pub mod btf;
pub mod elf;
pub mod files;
pub mod hostile;
pub mod insn;
pub mod random;
