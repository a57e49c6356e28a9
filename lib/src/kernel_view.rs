//! The classes the in-kernel gate computes for a program, computed from the object.
//!
//! The gate (`gate-bpf/src/bpf/gate.bpf.c`, `scan_insn`) reads the kernel's copy of the linked instructions once,
//! in order, and tracks no pointers. Classes that come from calls it gets exactly as the library does: helper
//! classes from the catalogue (ids past its end are `unknown`), kfunc classes by name (uncatalogued kfuncs are
//! `unknown`), and override_return for fmod_ret programs. The three classes the library proves by dataflow it
//! counts conservatively instead, a superset of the library's:
//! - `kernel_read` if a load's base register is not r10, and the program can hold a BTF pointer: a BTF-typed
//!   program type (tracing, lsm, struct_ops, ext), a kfunc call, a helper returning a BTF pointer, or a load of a
//!   BTF id (a typed `__ksym` or a kfunc's address);
//! - `map_write` if it references a map (a map, global data, `.kconfig`) and has a store or atomic whose base
//!   register is not r10, or calls a helper or kfunc that writes memory through an argument;
//! - `packet_write` on the same instructions, when its program type hands out packet pointers.
//!
//! One difference the object cannot settle: the gate knows kfuncs by their BTF ids in vmlinux, so a catalogued
//! kfunc the running kernel defines in a module (nf_conntrack's `bpf_ct_*` where nf_conntrack is a module) is
//! `unknown` to it; this view takes every catalogued kfunc as known.
//!
//! `bpfgate check --gate` judges programs by this view, so an operator sees the decision the gate will take, and
//! the live conformance test requires the gate's events to equal it.

use std::collections::BTreeMap;

use bpfgate_catalogue::Effect;
use serde::{Deserialize, Serialize};

use crate::elf::{Extern, Object, RelocTarget, MAP_TYPE_ARRAY_OF_MAPS, MAP_TYPE_HASH_OF_MAPS};
use crate::helpers;
use crate::insn::RawInsn;
use crate::metadata::{Capability, ClassSet, MapAccess, MapDef, ProgramMetadata, UNKNOWN_MAP};
use crate::progtype::{AttachType, ProgType};

/// What the gate judges a program by: `classes`, of which `conservative` are counted without proof.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelView {
    /// Every class the gate counts, proved or conservative, in [`Capability`] order.
    pub classes: Vec<Capability>,
    /// Among `classes`, those counted conservatively: kernel_read, map_write and packet_write the gate cannot
    /// rule out and did not prove through a call.
    pub conservative: Vec<Capability>,
    /// For each conservative class, the instruction the gate cites: the last load (kernel_read) or store or
    /// memory-writing call (map_write, packet_write) in the linked program that could be it.
    #[serde(default)]
    pub evidence: BTreeMap<Capability, u32>,
}

impl KernelView {
    pub fn class_set(&self) -> ClassSet {
        self.classes.iter().copied().collect()
    }
}

/// `BPF_F_RDONLY_PROG`: programs cannot write the map (libbpf sets it on `.rodata` and `.kconfig`).
const RDONLY_PROG: u32 = 1 << 7;

/// `prog` as the gate judges it, for [`Policy::evaluate_in`](crate::policy::Policy::evaluate_in) to predict the
/// gate's decision: the classes of its [`KernelView`]; an attach target only where the kernel names it at load
/// (the BTF-typed tracing, lsm and ext programs: kprobes and tracepoints learn theirs at attach time); and, when
/// the view counts map_write, a write to every map the program uses that programs can write, plus an unattributed
/// one if it uses a map-in-map (the gate cannot see inner maps).
pub fn judged(prog: &ProgramMetadata, maps: &[MapDef]) -> ProgramMetadata {
    let mut p = prog.clone();
    p.capabilities.clone_from(&p.kernel_view.classes);
    p.evidence.retain(|c, _| p.kernel_view.classes.contains(c));
    for (&c, &at) in &p.kernel_view.evidence {
        p.evidence.entry(c).or_insert_with(|| vec![at]);
    }
    if !matches!(p.prog_type, ProgType::Tracing | ProgType::Lsm | ProgType::Ext) {
        p.attach_target = None;
    }
    if p.capabilities.contains(&Capability::MapWrite) {
        let mut inner = false;
        for m in &mut p.maps {
            match maps.iter().find(|d| d.name == m.name) {
                Some(d) if d.map_type == MAP_TYPE_ARRAY_OF_MAPS || d.map_type == MAP_TYPE_HASH_OF_MAPS => inner = true,
                Some(d) if d.read_only || d.flags & RDONLY_PROG != 0 => {}
                _ => m.write = true,
            }
        }
        if inner && !p.maps.iter().any(|m| m.name == UNKNOWN_MAP) {
            p.maps.push(MapAccess { name: UNKNOWN_MAP.into(), read: true, write: true });
        }
    }
    p
}

const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const MODE_MEM: u8 = 0x60;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;
const CALL: u8 = 0x85;
const CALLX: u8 = 0x8d;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_MAP_VALUE: u8 = 2;
const PSEUDO_BTF_ID: u8 = 3;
const PSEUDO_MAP_IDX: u8 = 5;
const PSEUDO_MAP_IDX_VALUE: u8 = 6;
const FP: u8 = 10;

#[derive(Default)]
struct Scan {
    classes: ClassSet,
    /// The last load through a register other than r10.
    last_load: Option<u32>,
    /// The last store or atomic through a register other than r10, or call that writes memory it was handed.
    last_write: Option<u32>,
    btf_source: bool,
    map_ref: bool,
}

impl Scan {
    fn call(&mut self, at: u32, classes: ClassSet, effects: &[Effect]) {
        self.classes = self.classes.union(classes);
        self.btf_source |= Effect::returns_kernel_ptr(effects);
        if Effect::writes_memory(effects) {
            self.last_write = Some(at);
        }
    }
    fn unknown_call(&mut self, at: u32) {
        self.classes.insert(Capability::Unknown);
        self.last_write = Some(at);
    }
    fn kfunc(&mut self, at: u32, name: Option<&str>) {
        self.btf_source = true;
        match name.and_then(helpers::kfunc) {
            Some(k) => self.call(at, k.classes, k.effects),
            None => self.unknown_call(at),
        }
    }
}

/// The gate's view of a program whose linked code is `funcs`, `(section, start, end)` in layout order (the entry
/// function first), as libbpf will hand it to the kernel.
pub fn compute(
    obj: &Object,
    prog_type: ProgType,
    attach_type: Option<AttachType>,
    funcs: impl IntoIterator<Item = (usize, usize, usize)>,
) -> KernelView {
    let mut s = Scan::default();
    let mut base = 0u32;
    for (sec, start, end) in funcs {
        let Some(cs) = obj.sections.get(sec) else { continue };
        let insns = cs.insns.get(start..end).unwrap_or_default();
        for (i, insn) in insns.iter().enumerate() {
            // Only calls and ld_imm64 are relocated. The second slot of an ld_imm64 is all zeros but for imm:
            // it matches no case of `scan`.
            let reloc = if matches!(insn.code, CALL | LD_IMM64) { cs.relocs.get(&(start + i)) } else { None };
            scan(&mut s, obj, base + i as u32, insn, reloc);
        }
        base += insns.len() as u32;
    }
    if attach_type == Some(AttachType::ModifyReturn) {
        s.classes.insert(Capability::OverrideReturn);
    }
    let mut conservative = ClassSet::EMPTY;
    let mut evidence = BTreeMap::new();
    let mut maybe = |c: Capability, at: Option<u32>, cond: bool| {
        if let (Some(at), true, false) = (at, cond, s.classes.contains(c)) {
            conservative.insert(c);
            evidence.insert(c, at);
        }
    };
    maybe(Capability::KernelRead, s.last_load, prog_type.is_btf_typed() || s.btf_source);
    maybe(Capability::MapWrite, s.last_write, s.map_ref);
    maybe(Capability::PacketWrite, s.last_write, prog_type.has_packet_ctx());
    let all = s.classes.union(conservative);
    KernelView { classes: all.iter().collect(), conservative: conservative.iter().collect(), evidence }
}

fn scan(s: &mut Scan, obj: &Object, at: u32, insn: &RawInsn, reloc: Option<&RelocTarget>) {
    match insn.code {
        CALL => match (insn.src, reloc) {
            // libbpf turns `call -1` against an extern into BPF_PSEUDO_KFUNC_CALL.
            (_, Some(RelocTarget::Extern { name })) => s.kfunc(at, Some(name)),
            (0, _) => match helpers::helper(insn.imm as u32) {
                Some(h) => s.call(at, h.classes, h.effects),
                None => s.unknown_call(at),
            },
            // A kfunc by raw BTF id: the gate knows the id, the library cannot name it.
            (2, _) => s.kfunc(at, None),
            _ => {}
        },
        // The gate refuses to guess what an indirect call reaches.
        CALLX => s.unknown_call(at),
        LD_IMM64 => match reloc {
            Some(RelocTarget::Map(_) | RelocTarget::MapValue { .. }) => s.map_ref = true,
            Some(RelocTarget::Extern { name }) => {
                // A kfunc's address or a typed `__ksym` becomes a BTF id; a typeless `__ksym` a plain address.
                s.btf_source |= matches!(obj.externs.get(name), Some(Extern::Func { .. } | Extern::Var { typed: true }))
            }
            Some(RelocTarget::Code { .. }) => {}
            None => match insn.src {
                PSEUDO_BTF_ID => s.btf_source = true,
                PSEUDO_MAP_FD | PSEUDO_MAP_VALUE | PSEUDO_MAP_IDX | PSEUDO_MAP_IDX_VALUE => s.map_ref = true,
                _ => {}
            },
        },
        code => {
            let (class, mode) = (code & 0x07, code & 0xe0);
            if class == CLASS_LDX && (mode == MODE_MEM || mode == MODE_MEMSX) && insn.src != FP {
                s.last_load = Some(at);
            } else if (class == CLASS_ST || class == CLASS_STX)
                && (mode == MODE_MEM || mode == MODE_ATOMIC)
                && insn.dst != FP
            {
                s.last_write = Some(at);
            }
        }
    }
}
