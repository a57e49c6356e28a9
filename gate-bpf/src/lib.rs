//! The in-kernel gate (issue 5): a BPF LSM program on `lsm/bpf_prog_load` (`src/bpf/gate.bpf.c`) that
//! decides every BPF program load from the program's instructions and the loading task, by a compiled
//! policy ([`bpfgate::policy::compiled`]) held in BPF maps, and reports each decision on a ring buffer.
//!
//! [`Gate`] loads it, installs policies atomically and attaches it; [`HostResolver`] turns policy paths into
//! the keys the kernel compares; [`event`] reads and formats decisions.
//!
//! What the kernel computes and what it does not yet (map ownership, dataflow classes) is documented at the
//! top of `src/bpf/gate.bpf.c`.

pub mod daemon;
pub mod event;
mod gate;
pub mod resolve;

pub use gate::{EventStream, Gate, GateError, HookVariant, Installed, MAX_RULES, MAX_SUBJECT_KEYS, MAX_TARGETS};
pub use resolve::HostResolver;
