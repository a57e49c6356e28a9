//! The helper and kfunc catalogue: what a call to each BPF helper or kfunc proves about a program, and what the
//! analysis must know about its arguments.
//!
//! The data lives in `catalogue/helpers.tsv` and `catalogue/kfuncs.tsv`, the single source of truth this library
//! shares with the in-kernel gate; `build.rs` renders it through the `bpfgate-catalogue` crate into
//! `$OUT_DIR/catalogue.rs`, included below.

use crate::metadata::ClassSet;

/// A kernel helper (`BPF_FUNC_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helper {
    /// The `BPF_FUNC_*` id, also its index in [`HELPERS`].
    pub id: u32,
    /// The name without the `bpf_` prefix (`probe_read_kernel`).
    pub name: &'static str,
    /// The classes a call proves on its own.
    pub classes: ClassSet,
    /// What the helper does to its arguments and returns, beyond its classes (from the catalogue).
    pub effects: &'static [Effect],
    /// The kernel's own gate for the helper, or why it has no class.
    pub reason: &'static str,
}

/// A kernel function callable from BPF (`BPF_PSEUDO_KFUNC_CALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kfunc {
    /// The kernel symbol (`bpf_obj_new_impl`, `crash_kexec`).
    pub name: &'static str,
    /// The classes a call proves on its own.
    pub classes: ClassSet,
    /// What the kfunc does to its arguments and returns, beyond its classes (from the catalogue).
    pub effects: &'static [Effect],
    /// The `KF_*` flags and the kernel's gate, or why it has no class.
    pub reason: &'static str,
}

/// Argument and return semantics of a helper or kfunc, as the catalogue declares them.
pub use bpfgate_catalogue::Effect;

include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// The helper with this `BPF_FUNC_*` id.
pub fn helper(id: u32) -> Option<&'static Helper> {
    HELPERS.get(usize::try_from(id).ok()?)
}

/// The catalogued kfunc with this name.
pub fn kfunc(name: &str) -> Option<&'static Kfunc> {
    let index = KFUNCS.binary_search_by(|k| k.name.cmp(name)).ok()?;
    KFUNCS.get(index)
}

/// The helper with this name, with or without the `bpf_` prefix.
pub fn helper_by_name(name: &str) -> Option<&'static Helper> {
    let name = name.strip_prefix("bpf_").unwrap_or(name);
    HELPERS.iter().find(|h| h.name == name)
}

/// What a helper hands the callback it runs, argument by argument: the kernel's calling conventions, which the
/// analysis and the gate's view ([`crate::kernel_view`]) both follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackArg {
    /// A number: nothing a class is read or written through.
    Scalar,
    /// BTF-typed kernel memory (a task, a vma).
    Kernel,
    /// The map the helper's r1 refers to (the map itself, or the map value holding the timer).
    Map,
    /// A key or value of that map.
    MapValue,
    /// What the caller passed the helper in this register (a context for the callback).
    Caller(u8),
}

/// The callback arguments of a helper (by name, without `bpf_`) that runs one; `None` for one not modelled,
/// whose callback could get anything its caller passed, or kernel memory.
pub fn callback_args(helper: &str) -> Option<[CallbackArg; 5]> {
    use CallbackArg::*;
    Some(match helper {
        "loop" => [Scalar, Caller(3), Scalar, Scalar, Scalar],
        "for_each_map_elem" => [Map, MapValue, MapValue, Caller(3), Scalar],
        "timer_set_callback" => [Map, MapValue, MapValue, Scalar, Scalar],
        "find_vma" => [Kernel, Kernel, Caller(4), Scalar, Scalar],
        "user_ringbuf_drain" => [Scalar, Caller(3), Scalar, Scalar, Scalar],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Capability;

    fn classes(list: &[Capability]) -> ClassSet {
        list.iter().copied().collect()
    }

    #[test]
    fn catalogue_class_order_matches_capability() {
        let names: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, CATALOGUE_CLASS_NAMES);
    }

    #[test]
    fn helpers_are_dense() {
        assert_eq!(HELPERS.len(), 212);
        for (i, h) in HELPERS.iter().enumerate() {
            assert_eq!(h.id as usize, i);
        }
        assert_eq!(helper(0).map(|h| h.name), Some("unspec"));
        assert_eq!(helper(211).map(|h| h.name), Some("cgrp_storage_delete"));
        assert!(helper(212).is_none());
        assert!(helper(u32::MAX).is_none());
    }

    #[test]
    fn helper_spot_checks() {
        let get = |name: &str| helper_by_name(name).unwrap();
        assert_eq!(get("probe_write_user").classes, classes(&[Capability::UserWrite]));
        assert_eq!(get("send_signal").classes, classes(&[Capability::SendSignal]));
        assert_eq!(get("send_signal_thread").classes, classes(&[Capability::SendSignal]));
        assert_eq!(get("override_return").classes, classes(&[Capability::OverrideReturn]));
        assert_eq!(get("probe_read_kernel").classes, classes(&[Capability::KernelRead]));
        assert_eq!(get("probe_read_user").classes, classes(&[Capability::UserRead]));
        assert_eq!(get("sys_bpf").classes, classes(&[Capability::SysBpf]));
        assert!(get("trace_printk").classes.contains(Capability::TracePrintk));
        assert!(get("skb_store_bytes").classes.contains(Capability::PacketWrite));
        assert!(get("redirect_map").classes.contains(Capability::Redirect));
        assert!(get("map_update_elem").classes.contains(Capability::MapWrite));
        assert!(get("ktime_get_ns").classes.is_empty());

        let tail_call = get("tail_call");
        assert_eq!(tail_call.id, 12);
        assert_eq!(tail_call.classes, classes(&[Capability::TailCall]));
        assert_eq!(tail_call.effects, &[Effect::MapRead(2)]);
        let lookup = get("map_lookup_elem");
        assert_eq!(lookup.id, 1);
        assert!(lookup.effects.contains(&Effect::RetMapValue(1)));
        assert!(get("probe_read_kernel").effects.contains(&Effect::WriteMem(1)));
        assert!(get("get_current_task_btf").effects.contains(&Effect::RetKernelPtr));
        assert!(get("loop").effects.contains(&Effect::Callback(2)));
        assert!(get("perf_event_output").effects.contains(&Effect::MapWrite(2)));
    }

    #[test]
    fn helper_by_name_accepts_prefix() {
        assert_eq!(helper_by_name("bpf_probe_read_kernel").map(|h| h.id), Some(113));
        assert_eq!(helper_by_name("probe_read_kernel").map(|h| h.id), Some(113));
        assert!(helper_by_name("no_such_helper").is_none());
    }

    #[test]
    fn kfunc_lookup() {
        assert!(KFUNCS.windows(2).all(|w| w[0].name < w[1].name));
        assert_eq!(kfunc("crash_kexec").map(|k| k.classes), Some(classes(&[Capability::Destructive])));
        assert!(kfunc("bpf_rdonly_cast").is_some_and(|k| k.classes.contains(Capability::KernelRead)));
        assert!(kfunc("bpf_send_signal_task").is_some_and(|k| k.classes.contains(Capability::SendSignal)));
        assert!(kfunc("bpf_copy_from_user_str").is_some_and(|k| k.classes.contains(Capability::UserRead)));
        assert!(kfunc("bpf_task_acquire").is_some_and(|k| k.effects.contains(&Effect::RetKernelPtr)));
        // Kfuncs the corpus objects import.
        for name in ["bpf_skb_ct_lookup", "bpf_ct_release", "bpf_cpumask_create", "bpf_cpumask_release"] {
            assert!(kfunc(name).is_some(), "{name} missing");
        }
        for k in KFUNCS {
            assert_eq!(kfunc(k.name).map(|found| found.name), Some(k.name));
        }
        assert!(kfunc("bpf_kfunc_call_test_mem_len_pass1").is_none());
        assert!(kfunc("").is_none());
    }
}
