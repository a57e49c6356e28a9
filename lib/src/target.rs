//! Calls that cannot execute: what the kernel a program is loaded into refuses to run, so that such a call
//! grants no class.
//!
//! The verifier checks every helper call it can reach and refuses the whole program when the id is not one of
//! the kernel's helpers (`check_helper_call`: `func_id < 0 || func_id >= __BPF_FUNC_MAX_ID` gives "invalid func
//! unknown#ID" and `-EINVAL`). A call it cannot reach (a branch it proves dead from constants) is never checked
//! and never runs. So a helper call with such an id either sits in dead code or keeps the program from loading
//! at all: in both cases it does nothing, and counting it as `unknown` would refuse programs that load and run
//! fine. libbpf relies on exactly this: where it knows an instruction cannot work on the kernel it loads into, it
//! overwrites it with a helper call of a recognisable id ([`crate::gate_abi::poison`]) and leaves it to the
//! verifier to prove it dead, for a CO-RE relocation that failed (behind `bpf_core_field_exists` and the like),
//! a map it did not create (behind `bpf_core_type_exists`) and a weak kfunc the kernel lacks.
//!
//! Why this cannot smuggle a capability in:
//! - Only helper calls (src_reg 0) with an id the verifier refuses are "not executable": ids at or past the
//!   target kernel's `__BPF_FUNC_MAX_ID` ([`Target::helper_max_id`]) and, when that is not known, libbpf's
//!   poison ids, which are far past the last helper of any kernel (helper ids are dense from 0, and the kernel
//!   stopped adding helpers at 212). A helper the kernel has but the catalogue lacks still counts `unknown`, as
//!   do uncatalogued kfuncs and indirect calls.
//! - Such a call grants nothing but hides nothing either: every other instruction is still scanned and counted,
//!   whether or not it is reachable, so code behind the call, or beside it, keeps its classes. What the call
//!   returns is taken as a plain number: only a path through the call would see it, and there is none in a
//!   program that loads.
//! - The judged instructions are the kernel's copy, which the verifier then checks: a loader cannot show the
//!   gate a poison call and have the kernel run something else.
//!
//! Without a target kernel the library treats only libbpf's poison ids as not executable; other ids past the
//! catalogue stay `unknown`. The gate reads its kernel's `__BPF_FUNC_MAX_ID` from the kernel's BTF.

use crate::gate_abi::poison;

/// The kernel a program is judged for, as far as which calls can execute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    /// The kernel's `__BPF_FUNC_MAX_ID` (`enum bpf_func_id` in its BTF): helper ids at or past it are refused by
    /// the verifier. None: not known, and only libbpf's poison ids are taken as not executable.
    pub helper_max_id: Option<u32>,
}

impl Target {
    /// No kernel known: only libbpf's poison ids are not executable.
    pub const ANY: Target = Target { helper_max_id: None };

    /// Whether a helper call (src_reg 0) with this id (`imm` as u32) can run on the target: false for an id the
    /// verifier refuses wherever it is reachable.
    pub fn helper_executable(&self, id: u32) -> bool {
        match self.helper_max_id {
            Some(max) => id < max,
            None => poison(id).is_none(),
        }
    }
}

/// What libbpf meant by a poisoned helper call ([`crate::gate_abi::poison`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    /// A CO-RE relocation that failed on the target kernel (`bpf_core_poison_insn`).
    CoreRelocation,
    /// A reference to the object's map of this index, which the loader did not create (`poison_map_ldimm64`).
    Map(u32),
    /// A call to the object's weak kfunc extern of this index, which the kernel lacks (`poison_kfunc_call`).
    Kfunc(u32),
}

impl Poison {
    /// A name for reports (the `name` of the helper call): `libbpf_poison_core_relo`, `libbpf_poison_map_3`,
    /// `libbpf_poison_kfunc_0`.
    pub fn name(&self) -> String {
        match self {
            Poison::CoreRelocation => "libbpf_poison_core_relo".to_owned(),
            Poison::Map(i) => format!("libbpf_poison_map_{i}"),
            Poison::Kfunc(i) => format!("libbpf_poison_kfunc_{i}"),
        }
    }
}

/// The poison a helper id is, if it is one of libbpf's.
pub fn poison(id: u32) -> Option<Poison> {
    match id {
        poison::CORE_RELO => Some(Poison::CoreRelocation),
        _ if id.wrapping_sub(poison::MAP_BASE) < poison::SPAN => Some(Poison::Map(id - poison::MAP_BASE)),
        _ if id.wrapping_sub(poison::KFUNC_BASE) < poison::SPAN => Some(Poison::Kfunc(id - poison::KFUNC_BASE)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libbpf_poison_ids() {
        assert_eq!(poison(0xbad2310), Some(Poison::CoreRelocation));
        assert_eq!(poison(2_001_000_000), Some(Poison::Map(0)));
        assert_eq!(poison(2_001_000_123), Some(Poison::Map(123)));
        assert_eq!(poison(2_002_000_007), Some(Poison::Kfunc(7)));
        assert_eq!(poison(2_002_999_999), Some(Poison::Kfunc(999_999)));
        for id in [0, 1, 211, 212, 999, 195_896_079, 195_896_081, 2_000_999_999, 2_003_000_000, u32::MAX] {
            assert_eq!(poison(id), None, "{id}");
        }
        assert_eq!(Poison::Map(3).name(), "libbpf_poison_map_3");
    }

    #[test]
    fn executable_without_and_with_a_kernel() {
        // No kernel: only poison is not executable; an uncatalogued id may be a helper of some kernel.
        assert!(Target::ANY.helper_executable(6));
        assert!(Target::ANY.helper_executable(999));
        assert!(Target::ANY.helper_executable(u32::MAX));
        assert!(!Target::ANY.helper_executable(195_896_080));
        assert!(!Target::ANY.helper_executable(2_001_000_001));
        // 6.1's kernel: ids 0-209; 210 (cgrp_storage_get) came in 6.2.
        let k61 = Target { helper_max_id: Some(210) };
        assert!(k61.helper_executable(209));
        assert!(!k61.helper_executable(210));
        assert!(!k61.helper_executable(999));
        assert!(!k61.helper_executable(195_896_080));
        // A negative imm (as u32) is refused by the verifier too.
        assert!(!k61.helper_executable(-1i32 as u32));
    }
}
