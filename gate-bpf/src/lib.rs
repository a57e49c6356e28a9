//! The in-kernel gate (issue 5): BPF LSM programs (`src/bpf/gate.bpf.c`) that decide every BPF program load
//! from the program's instructions, the maps the verifier bound and the loading task, by a compiled policy
//! ([`bpfgate::policy::compiled`]) held in BPF maps; record map owners and keep other subjects from
//! writing them; keep everyone but the daemon away from the gate's own objects; and report each decision
//! on a ring buffer.
//!
//! [`Gate`] loads it, installs policies atomically and attaches it; [`HostResolver`] turns policy paths into
//! the keys the kernel compares, and [`identity::IdentityResolver`] does so for the daemon while holding and
//! watching the executables; [`event`] reads and formats decisions.
//!
//! What the kernel computes, and where it is conservative (dataflow classes, which maps are written), is
//! documented at the top of `src/bpf/gate.bpf.c`.

pub mod daemon;
pub mod event;
mod gate;
pub mod identity;
pub mod metrics;
pub mod preflight;
pub mod resolve;
pub mod status;

pub use gate::{
    kernel_btfs, kernel_helper_max_id, object_id, unpin, EventStream, Gate, GateError, GateObject, HookVariant,
    Installed, LinkGuard, PolicySource, DEFAULT_PIN_DIR,
};
pub use resolve::HostResolver;
