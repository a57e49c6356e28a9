//! The classes the in-kernel gate computes for a program, computed from the object.
//!
//! The gate (`gate-bpf/src/bpf/gate.bpf.c`, `gate_scan_insn`) reads the kernel's copy of the linked instructions
//! twice, in order: a first pass marks jump and call targets and notes what callbacks may get, the second tags
//! what each register and 8-byte stack slot may hold ([`tag`]) and counts classes. Classes that come from calls it
//! gets exactly as the library does: helper classes from the catalogue (ids past its end are `unknown`, but a
//! call its kernel cannot execute, [`crate::target`], counts nothing), kfunc
//! classes by name (uncatalogued kfuncs are `unknown`), and override_return for fmod_ret programs. The three classes the library proves by dataflow it
//! counts from the tags, a superset of the library's:
//! - `kernel_read` for a load through a register that may hold a BTF pointer (a BTF-typed program's context
//!   fields, a helper or kfunc returning one, a typed `__ksym`, a kptr loaded from a map value);
//! - `map_write` for a store or atomic through a map value, or a helper or kfunc writing through an argument that
//!   may be one;
//! - `packet_write` the same through a packet pointer (a context field [`ProgType::packet_ctx_fields`](crate::progtype::ProgType::packet_ctx_fields) names);
//! - each of the three, too, for an access through an *unknown* register, when the program could hold such a
//!   pointer at all (a BTF-typed type, a BTF source or a map that may hold kptrs, [`MapDef::may_hold_kptr`]; a
//!   map reference or an arena cast; a packet program type), and map_write
//!   and packet_write for a call to an uncatalogued helper or kfunc, which could write anything.
//!
//! The tags follow the code in one linear pass. A forward jump's state waits at its target in a table of
//! [`JOIN_SLOTS`] entries, direct-mapped by target, and is joined there with the fall-through's; a function starts
//! with what the calls scanned before it passed in r1-r5 (a pointer to the caller's frame as unknown) and, if the
//! program takes a function's address, what the helpers it calls hand their callbacks
//! ([`crate::helpers::callback_args`]; a caller's context pointer as unknown, anything for a kfunc's callback).
//! Every register and slot becomes unknown, r10 excepted, where the state comes from code not scanned yet: the
//! target of a backward jump or of a call from the callee itself or a later function, and a forward target whose
//! table entry holds another pending target. A call to a subprogram, or to a helper that runs a callback, may
//! have stored anything in a frame whose address it was handed, and r0 after a subprogram is unknown. So the
//! gate counts a class the library does not prove when a pointer crosses a loop's back edge, comes back from a
//! subprogram, or reaches a callee through its caller's stack; the library's abstract interpretation follows
//! them all, the gate's verifier budget does not.
//!
//! One difference the object cannot settle: the gate knows the kfuncs of the modules loaded when its daemon
//! started or last reloaded; a catalogued kfunc of a module loaded since is `unknown` to it, while this view
//! takes every catalogued kfunc as known.
//!
//! `bpfgate check --gate` judges programs by this view, so an operator sees the decision the gate will take, and
//! the live conformance test requires the gate's events to equal it (and, on every fixture, the library's
//! classes).

use std::collections::BTreeMap;

use bpfgate_catalogue::Effect;

use crate::elf::{Extern, Object, RelocTarget};
use crate::helpers;
use crate::insn::{
    RawInsn, ATOMIC_CMPXCHG, ATOMIC_FETCH, ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL, ATOMIC_XCHG, CALL, CALLX, CALL_HELPER,
    CLASS_ALU, CLASS_ALU64, CLASS_JMP, CLASS_JMP32, CLASS_LD, CLASS_LDX, CLASS_MASK, CLASS_ST, CLASS_STX, EXIT, GOTOX,
    JA, JA32, LD_IMM64, MODE_ABS, MODE_ATOMIC, MODE_IND, MODE_MASK, MODE_MEM, MODE_MEMSX, OP_ADD, OP_END, OP_MASK,
    OP_MOV, OP_NEG, OP_SUB, PSEUDO_BTF_ID, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_IDX,
    PSEUDO_MAP_IDX_VALUE, PSEUDO_MAP_VALUE, REG_FP as FP, SIZE_DW, SIZE_MASK, SRC_X,
};
use crate::metadata::{Capability, ClassSet, KernelView, MapAccess, MapDef, ProgramMetadata, UNKNOWN_MAP};
use crate::progtype::{AttachType, ProgType, MAP_TYPE_ARRAY_OF_MAPS, MAP_TYPE_HASH_OF_MAPS};
use crate::target::Target;

/// `BPF_F_RDONLY_PROG`: programs cannot write the map (libbpf sets it on `.rodata` and `.kconfig`).
const RDONLY_PROG: u32 = 1 << 7;

/// `prog` as the gate judges it, for [`Policy::evaluate`](crate::policy::Policy::evaluate) to predict the
/// gate's decision: the classes of its [`KernelView`]; an attach target only where the kernel names it at load
/// (the BTF-typed tracing, lsm and ext programs: kprobes and tracepoints learn theirs at attach time); and, when
/// the view counts map_write, a write to every map the program uses that programs can write, plus an unattributed
/// one if it uses a map-in-map (the gate cannot see inner maps).
///
/// This is the one conversion from the library's metadata to the gate's view; `bpfgate check --gate` evaluates
/// its result, and [`KernelProgram::from_metadata`](crate::policy::compiled::KernelProgram::from_metadata) encodes
/// it as the gate's records.
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

/// What a register or stack slot may hold in the gate's scan, one bit per kind; `gate.bpf.c` uses the same
/// bits (generated into `gate_scan.h`).
pub mod tag {
    /// A number.
    pub const SCALAR: u8 = 1 << 0;
    /// The program's context (r1 at entry).
    pub const CTX: u8 = 1 << 1;
    /// This function's stack frame.
    pub const STACK: u8 = 1 << 2;
    /// Packet data (a context field [`ProgType::packet_ctx_fields`](crate::progtype::ProgType::packet_ctx_fields) names).
    pub const PACKET: u8 = 1 << 3;
    /// BTF-typed kernel memory: loads through it are kernel reads.
    pub const BTF: u8 = 1 << 4;
    /// A map value (global data, a lookup's result, an arena).
    pub const MAP_VALUE: u8 = 1 << 5;
    /// A pointer no class is read or written through: a map, a function.
    pub const OTHER: u8 = 1 << 6;
    /// Not known (a block's entry, an indirect result): anything the program can hold, a caller's stack too.
    pub const UNKNOWN: u8 = 1 << 7;
    /// Every tag: a value about which nothing is known.
    pub const ANY: u8 = 0xff;
}

/// What r0 holds after a helper or kfunc with these effects.
pub fn returned(effects: &[Effect]) -> u8 {
    effects.iter().fold(tag::SCALAR, |t, e| match e {
        // A lookup in a map-in-map returns a map.
        Effect::RetMapValue(_) => t | tag::MAP_VALUE | tag::OTHER,
        Effect::RetKernelPtr => t | tag::BTF,
        _ => t,
    })
}

/// In [`call_flags`]: the call runs one of the program's functions while the caller waits, which could store
/// pointers through a stack pointer it was handed.
pub const CALLBACK: u8 = 0x80;

/// What the scan needs of a call besides r0: bit `r - 1` for each argument rN whose memory it writes, and
/// [`CALLBACK`].
pub fn call_flags(effects: &[Effect]) -> u8 {
    effects.iter().fold(0, |m, e| match *e {
        Effect::WriteMem(r @ 1..=5) => m | 1 << (r - 1),
        Effect::Callback(_) => m | CALLBACK,
        _ => m,
    })
}

/// The stack frame the verifier allows, in 8-byte slots.
const SLOTS: usize = 64;

/// Forward jump targets whose entry state the scan keeps at once, direct-mapped by index (`gate.bpf.c`'s
/// `GATE_JOIN_SLOTS`).
pub const JOIN_SLOTS: usize = 32;

/// Where a value of the gate's `kfunc_classes` map keeps, beside the class bits (0-15), what the kfunc returns
/// ([`returned`]), its [`call_flags`] and its catalogue index, which events name it by (`GATE_KFUNC_*_SHIFT`).
pub const KFUNC_RET_SHIFT: u32 = 16;
/// Bit position of a kfunc's flags in [`kfunc_value`].
pub const KFUNC_FLAGS_SHIFT: u32 = 24;
/// Bit position of a kfunc's catalogue index in [`kfunc_value`].
pub const KFUNC_INDEX_SHIFT: u32 = 32;

/// The gate's `kfunc_classes` value for `k`, the kfunc at `index` in [`helpers::KFUNCS`].
pub fn kfunc_value(k: &helpers::Kfunc, index: usize) -> u64 {
    u64::from(k.classes.0)
        | u64::from(returned(k.effects)) << KFUNC_RET_SHIFT
        | u64::from(call_flags(k.effects)) << KFUNC_FLAGS_SHIFT
        | (index as u64) << KFUNC_INDEX_SHIFT
}

/// Tags of r0-r10 and of the frame's 8-byte slots.
#[derive(Clone, Copy)]
struct Tags {
    /// r0-r10, and r11-r15, which the verifier refuses, so that register fields index without a check.
    regs: [u8; 16],
    slots: [u8; SLOTS],
}

impl Tags {
    /// Where the state comes from code not scanned yet: anything could be anywhere.
    const ANY: Tags = {
        let mut regs = [tag::ANY; 16];
        regs[FP as usize] = tag::STACK;
        Tags { regs, slots: [tag::ANY; SLOTS] }
    };

    fn join(&mut self, other: &Tags) {
        for (a, b) in self.regs.iter_mut().zip(other.regs).chain(self.slots.iter_mut().zip(other.slots)) {
            *a |= b;
        }
    }
}

/// The state a forward jump carries to its target, joined over the jumps seen so far; `target` 0 is a free
/// entry (no forward jump reaches instruction 0).
#[derive(Clone, Copy)]
struct Join {
    target: u32,
    tags: Tags,
}

/// The scan's state: the tags, the states pending at forward jump targets, and the last instruction of each
/// kind that could prove a class.
struct Scan {
    prog_type: ProgType,
    classes: ClassSet,
    t: Tags,
    joins: [Join; JOIN_SLOTS],
    /// Where a block starts with every tag unknown: targets of backward jumps and calls, forward targets whose
    /// state the table could not keep, and every instruction of a program with an indirect jump.
    resets: Vec<bool>,
    /// What r1-r5 may hold where a function starts: what the calls before it passed, what the helpers that run
    /// callbacks pass them.
    args: [u8; 5],
    /// A load through a BTF pointer (or what was loaded from a map value: a kptr).
    btf_load: Option<u32>,
    /// A load through an unknown register.
    unknown_load: Option<u32>,
    /// A store (or memory-writing call) through a map value, a packet, an unknown register, or a call that
    /// could write anything.
    map_store: Option<u32>,
    packet_store: Option<u32>,
    unknown_store: Option<u32>,
    btf_source: bool,
    map_ref: bool,
    /// A map the program uses may hold kptrs ([`MapDef::may_hold_kptr`]; a raw map fd may too).
    kptr_map: bool,
    /// Which helper calls can execute.
    target: Target,
}

/// A frame offset's slot, if it is in the frame.
fn slot_of(off: i64) -> Option<usize> {
    usize::try_from(off + 8 * SLOTS as i64).ok().filter(|o| *o < 8 * SLOTS).map(|o| o / 8)
}

impl Scan {
    /// Instruction `at`'s entry state: unknown at a reset, the pending state of the forward jumps to it (joined
    /// with the fall-through's unless the previous instruction ends a block), and where a block starts that no
    /// jump reaches (a subprogram, dead code) a function's: [`Scan::args`] in r1-r5, a fresh frame.
    fn enter(&mut self, at: u32, block_ends: bool) {
        let e = &mut self.joins[at as usize % JOIN_SLOTS];
        let hit = at != 0 && e.target == at;
        if hit {
            e.target = 0;
        }
        if self.resets.get(at as usize).copied().unwrap_or(false) {
            self.t = Tags::ANY;
        } else if hit && block_ends {
            self.t = e.tags;
        } else if hit {
            self.t.join(&e.tags);
        } else if block_ends {
            self.t = Tags { regs: [tag::SCALAR; 16], slots: [tag::SCALAR; SLOTS] };
            self.t.regs[1..=5].copy_from_slice(&self.args);
            self.t.regs[FP as usize] = tag::STACK;
        }
    }

    /// A jump from `at` with offset `off`: a forward one's target gets the current state.
    fn jump(&mut self, at: u32, off: i64) {
        let t = i64::from(at) + 1 + off;
        if t <= i64::from(at) || t >= self.resets.len() as i64 {
            return;
        }
        let t = t as u32;
        let e = &mut self.joins[t as usize % JOIN_SLOTS];
        if e.target == t {
            e.tags.join(&self.t);
        } else if e.target == 0 {
            *e = Join { target: t, tags: self.t };
        } else if let Some(r) = self.resets.get_mut(t as usize) {
            // The entry holds another pending target: this one starts unknown.
            *r = true;
        }
    }

    fn call(&mut self, at: u32, classes: ClassSet, effects: &[Effect]) -> (u8, bool) {
        self.classes = self.classes.union(classes);
        let ret = returned(effects);
        self.btf_source |= ret & tag::BTF != 0;
        let flags = call_flags(effects);
        for r in 1..=5 {
            if flags & 1 << (r - 1) != 0 {
                self.written(at, self.t.regs[r]);
            }
        }
        (ret, flags & CALLBACK != 0)
    }

    /// A call that could do anything.
    fn unknown_call(&mut self, at: u32) -> (u8, bool) {
        self.classes.insert(Capability::Unknown);
        self.unknown_store = Some(at);
        (tag::ANY, true)
    }

    fn kfunc(&mut self, at: u32, name: Option<&str>) -> (u8, bool) {
        self.btf_source = true;
        match name.and_then(helpers::kfunc) {
            Some(k) => self.call(at, k.classes, k.effects),
            None => self.unknown_call(at),
        }
    }

    /// Memory tagged `t` is written at `at`.
    fn written(&mut self, at: u32, t: u8) {
        if t & tag::UNKNOWN != 0 {
            self.unknown_store = Some(at);
            return;
        }
        if t & tag::MAP_VALUE != 0 {
            self.map_store = Some(at);
        }
        if t & tag::PACKET != 0 {
            self.packet_store = Some(at);
        }
    }

    fn load(&mut self, at: u32, base: u8, off: i16, dw: bool, sx: bool) -> u8 {
        let b = self.t.regs[usize::from(base)];
        if b & tag::UNKNOWN != 0 {
            self.unknown_load = Some(at);
            return tag::ANY;
        }
        if b & tag::BTF != 0 {
            self.btf_load = Some(at);
        }
        // Only 8-byte loads can yield a pointer.
        let wide = dw && !sx;
        let mut v = 0;
        if b & (tag::SCALAR | tag::PACKET | tag::OTHER) != 0 {
            v |= tag::SCALAR;
        }
        if b & tag::BTF != 0 {
            v |= tag::SCALAR | if wide { tag::BTF } else { 0 };
        }
        if b & tag::MAP_VALUE != 0 {
            // A kptr, or an arena pointer.
            v |= tag::SCALAR | if wide { tag::BTF | tag::MAP_VALUE } else { 0 };
        }
        if b & tag::CTX != 0 {
            v |= if self.prog_type.is_btf_typed() {
                tag::SCALAR | if wide { tag::BTF } else { 0 }
            } else if self.prog_type.packet_ctx_fields().contains(&i32::from(off)) {
                tag::PACKET
            } else {
                tag::SCALAR
            };
        }
        if b & tag::STACK != 0 {
            v |= match (base == FP, slot_of(i64::from(off))) {
                (true, Some(i)) if wide && off % 8 == 0 => self.t.slots[i],
                (true, _) => tag::SCALAR,
                (false, _) if wide => self.t.slots.iter().fold(tag::SCALAR, |a, s| a | s),
                (false, _) => tag::SCALAR,
            };
        }
        if v == 0 {
            tag::SCALAR
        } else {
            v
        }
    }

    fn store(&mut self, at: u32, base: u8, off: i16, size: u8, value: u8) {
        let b = self.t.regs[usize::from(base)];
        self.written(at, b);
        if b & (tag::STACK | tag::UNKNOWN) == 0 {
            return;
        }
        if base != FP {
            // Somewhere in the frame, perhaps.
            for s in &mut self.t.slots {
                *s |= value;
            }
            return;
        }
        let off = i64::from(off);
        if size == 8 && off % 8 == 0 {
            if let Some(i) = slot_of(off) {
                self.t.slots[i] = value;
            }
        } else {
            // What is left of a pointer partly overwritten is no pointer.
            for o in [off, off + i64::from(size) - 1] {
                if let Some(i) = slot_of(o) {
                    self.t.slots[i] = tag::SCALAR;
                }
            }
        }
    }

    fn atomic(&mut self, at: u32, insn: &RawInsn, size: u8) {
        let (dst, src) = (insn.dst(), insn.src());
        let dw = size == 8;
        match insn.imm {
            ATOMIC_LOAD_ACQ => self.t.regs[usize::from(dst)] = self.load(at, src, insn.off, dw, false),
            ATOMIC_STORE_REL => self.store(at, dst, insn.off, size, self.t.regs[usize::from(src)]),
            ATOMIC_XCHG | ATOMIC_CMPXCHG => {
                let old = self.load(at, dst, insn.off, dw, false);
                self.store(at, dst, insn.off, size, self.t.regs[usize::from(src)]);
                let r = if insn.imm == ATOMIC_XCHG { src } else { 0 };
                self.t.regs[usize::from(r)] = old;
            }
            op => {
                let old = (op & ATOMIC_FETCH != 0).then(|| self.load(at, dst, insn.off, dw, false));
                self.store(at, dst, insn.off, size, tag::SCALAR);
                if let Some(old) = old {
                    self.t.regs[usize::from(src)] = old;
                }
            }
        }
    }
}

/// The first pass over the linked code: where the scan resets every tag (targets of backward jumps and of calls
/// from their own function or later, whose state comes from code not scanned yet; every insn when the program
/// has an indirect jump), and what a function's r1-r5 start with before any call is scanned: a scalar, and, when
/// the program takes a function's address, whatever the helpers and kfuncs it calls hand their callbacks.
fn first_pass(
    obj: &Object<'_>,
    funcs: &[(usize, usize, usize)],
    calls: &[(u32, u32)],
    len: usize,
    target: &Target,
) -> (Vec<bool>, u8) {
    let mut resets = vec![false; len];
    for &(_, entry) in calls.iter().filter(|(site, entry)| entry <= site) {
        if let Some(r) = resets.get_mut(entry as usize) {
            *r = true;
        }
    }
    let (mut callbacks, mut address_taken) = (0, false);
    let mut base = 0i64;
    for &(sec, start, end) in funcs {
        let Some(cs) = obj.sections.get(sec) else { continue };
        let insns = cs.insns.get(start..end).unwrap_or_default();
        for (i, insn) in insns.iter().enumerate() {
            let reloc = if matches!(insn.code, CALL | LD_IMM64) { cs.relocs.get(&(start + i)) } else { None };
            match (insn.code, insn.src(), reloc) {
                (GOTOX, ..) => return (vec![true; len], tag::ANY),
                // A kfunc: the gate does not look up what it hands a callback.
                (CALL, _, Some(RelocTarget::Extern { .. })) | (CALL, PSEUDO_KFUNC_CALL, _) => callbacks = tag::ANY,
                // A call that cannot execute runs no callback.
                (CALL, CALL_HELPER, _) if !target.helper_executable(insn.imm as u32) => {}
                (CALL, CALL_HELPER, _) => callbacks |= callback_tags(helpers::helper(insn.imm as u32)),
                (LD_IMM64, PSEUDO_FUNC, _) | (LD_IMM64, _, Some(RelocTarget::Code { .. })) => address_taken = true,
                _ => {}
            }
            let Some(off) = jump_offset(insn) else { continue };
            let at = base + i as i64;
            let t = at + 1 + off;
            if let Some(r) = usize::try_from(t).ok().filter(|_| t <= at).and_then(|t| resets.get_mut(t)) {
                *r = true;
            }
        }
        base += insns.len() as i64;
    }
    (resets, tag::SCALAR | if address_taken { callbacks } else { 0 })
}

/// What a helper hands the callbacks it runs, all arguments together ([`helpers::callback_args`]): nothing for
/// one that runs none, anything for one not catalogued or whose convention is not modelled.
pub fn callback_tags(helper: Option<&helpers::Helper>) -> u8 {
    use helpers::CallbackArg;
    let Some(h) = helper else { return tag::ANY };
    if !h.effects.iter().any(|e| matches!(e, Effect::Callback(_))) {
        return 0;
    }
    helpers::callback_args(h.name).map_or(tag::ANY, |args| {
        args.iter().fold(0, |t, a| {
            t | match a {
                CallbackArg::Scalar => tag::SCALAR,
                CallbackArg::Kernel => tag::BTF | tag::SCALAR,
                CallbackArg::Map => tag::OTHER,
                CallbackArg::MapValue => tag::MAP_VALUE | tag::SCALAR,
                // The gate reads this before it knows the caller's registers.
                CallbackArg::Caller(_) => tag::UNKNOWN,
            }
        })
    })
}

/// A caller's tag as its callee sees it: a pointer to the caller's frame is no pointer to the callee's.
fn into_callee(t: u8) -> u8 {
    if t & tag::STACK != 0 {
        t & !tag::STACK | tag::UNKNOWN
    } else {
        t
    }
}

/// A jump's offset: every JMP/JMP32 instruction but call, callx, exit and gotox (ja32's is in imm).
fn jump_offset(insn: &RawInsn) -> Option<i64> {
    let class = insn.code & CLASS_MASK;
    if class != CLASS_JMP && class != CLASS_JMP32 || matches!(insn.code, CALL | CALLX | EXIT | GOTOX) {
        return None;
    }
    Some(if insn.code == JA32 { i64::from(insn.imm) } else { i64::from(insn.off) })
}

/// The gate's view of a program whose linked code is `funcs`, `(section, start, end)` in layout order (the entry
/// function first), as libbpf will hand it to the kernel, with `calls` between them as (call instruction,
/// callee's first instruction), both linked indexes.
pub fn compute(
    obj: &Object<'_>,
    prog_type: ProgType,
    attach_type: Option<AttachType>,
    funcs: impl IntoIterator<Item = (usize, usize, usize)>,
    calls: &[(u32, u32)],
) -> KernelView {
    compute_for(obj, prog_type, attach_type, funcs, calls, &Target::ANY)
}

/// [`compute`] for a target kernel: helper calls it cannot execute ([`Target::helper_executable`]) count
/// nothing, as in the gate, which knows its kernel's last helper.
pub fn compute_for(
    obj: &Object<'_>,
    prog_type: ProgType,
    attach_type: Option<AttachType>,
    funcs: impl IntoIterator<Item = (usize, usize, usize)>,
    calls: &[(u32, u32)],
    target: &Target,
) -> KernelView {
    let funcs: Vec<_> = funcs.into_iter().collect();
    let len = funcs.iter().map(|&(_, start, end)| end.saturating_sub(start)).sum();
    let (resets, args) = first_pass(obj, &funcs, calls, len, target);
    let mut t = Tags { regs: [tag::SCALAR; 16], slots: [tag::SCALAR; SLOTS] };
    t.regs[1] = tag::CTX;
    t.regs[FP as usize] = tag::STACK;
    let mut s = Scan {
        prog_type,
        classes: ClassSet::EMPTY,
        t,
        joins: [Join { target: 0, tags: Tags::ANY }; JOIN_SLOTS],
        resets,
        args: [args; 5],
        btf_load: None,
        unknown_load: None,
        map_store: None,
        packet_store: None,
        unknown_store: None,
        btf_source: false,
        map_ref: false,
        kptr_map: false,
        target: *target,
    };
    let mut base = 0u32;
    let mut block_ends = false;
    for (sec, start, end) in funcs {
        let Some(cs) = obj.sections.get(sec) else { continue };
        let insns = cs.insns.get(start..end).unwrap_or_default();
        for (i, insn) in insns.iter().enumerate() {
            let at = base + i as u32;
            s.enter(at, block_ends);
            // Only calls and ld_imm64 are relocated. The second slot of an ld_imm64 is all zeros but for imm:
            // it matches no case of `scan`.
            let reloc = if matches!(insn.code, CALL | LD_IMM64) { cs.relocs.get(&(start + i)) } else { None };
            block_ends = scan(&mut s, obj, at, insn, reloc);
        }
        base += insns.len() as u32;
    }
    if attach_type == Some(AttachType::ModifyReturn) {
        s.classes.insert(Capability::OverrideReturn);
    }
    let mut conservative = ClassSet::EMPTY;
    let mut evidence = BTreeMap::new();
    let mut maybe = |c: Capability, proved: Option<u32>, unknown: Option<u32>, cond: bool| {
        let at = proved.max(unknown.filter(|_| cond));
        if let (Some(at), false) = (at, s.classes.contains(c)) {
            conservative.insert(c);
            evidence.insert(c, at);
        }
    };
    let btf = prog_type.is_btf_typed() || s.btf_source || s.kptr_map;
    maybe(Capability::KernelRead, s.btf_load, s.unknown_load, btf);
    maybe(Capability::MapWrite, s.map_store, s.unknown_store, s.map_ref);
    maybe(Capability::PacketWrite, s.packet_store, s.unknown_store, prog_type.has_packet_ctx());
    let all = s.classes.union(conservative);
    KernelView { classes: all.iter().collect(), conservative: conservative.iter().collect(), evidence }
}

/// Scans one instruction; returns whether it ends a block (the next instruction is reached only by a jump).
fn scan(s: &mut Scan, obj: &Object<'_>, at: u32, insn: &RawInsn, reloc: Option<&RelocTarget>) -> bool {
    let (dst, src) = (usize::from(insn.dst()), usize::from(insn.src()));
    let class = insn.code & CLASS_MASK;
    let size = [4, 2, 1, 8][usize::from(insn.code >> 3 & 3)];
    if let Some(off) = jump_offset(insn) {
        s.jump(at, off);
        return matches!(insn.code, JA | JA32);
    }
    match class {
        CLASS_JMP | CLASS_JMP32 => {
            let (ret, escapes) = match (insn.code, insn.src(), reloc) {
                (EXIT | GOTOX, ..) => return true,
                // libbpf turns `call -1` against an extern into BPF_PSEUDO_KFUNC_CALL.
                (CALL, _, Some(RelocTarget::Extern { name })) => s.kfunc(at, Some(name)),
                // Cannot execute (crate::target): no class, and a path through it does not exist.
                (CALL, CALL_HELPER, _) if !s.target.helper_executable(insn.imm as u32) => (tag::SCALAR, false),
                (CALL, CALL_HELPER, _) => match helpers::helper(insn.imm as u32) {
                    Some(h) => s.call(at, h.classes, h.effects),
                    None => s.unknown_call(at),
                },
                // A subprogram: it starts with these arguments, and could store anything through a stack pointer
                // it is handed.
                (CALL, PSEUDO_CALL, _) => {
                    for (a, r) in s.args.iter_mut().zip(&s.t.regs[1..=5]) {
                        *a |= into_callee(*r);
                    }
                    (tag::ANY, true)
                }
                // A kfunc by raw BTF id: the gate knows the id, the library cannot name it.
                (CALL, PSEUDO_KFUNC_CALL, _) => s.kfunc(at, None),
                // The gate refuses to guess what an indirect call reaches.
                (CALLX, ..) => s.unknown_call(at),
                _ => return false,
            };
            if escapes && s.t.regs[1..=5].iter().any(|t| t & (tag::STACK | tag::UNKNOWN) != 0) {
                s.t.slots = [tag::ANY; SLOTS];
            }
            s.t.regs[0] = ret;
            s.t.regs[1..=5].fill(tag::SCALAR);
        }
        CLASS_LD if insn.code == LD_IMM64 => {
            s.t.regs[dst] = match reloc {
                Some(RelocTarget::Map(map)) => {
                    s.map_ref = true;
                    s.kptr_map |= obj.maps.get(*map).is_none_or(MapDef::may_hold_kptr);
                    tag::OTHER
                }
                Some(RelocTarget::MapValue { map, .. }) => {
                    s.map_ref = true;
                    s.kptr_map |= obj.maps.get(*map).is_none_or(MapDef::may_hold_kptr);
                    tag::MAP_VALUE
                }
                Some(RelocTarget::Extern { name }) => {
                    // A kfunc's address or a typed `__ksym` becomes a BTF id; a typeless `__ksym` a plain address.
                    if matches!(obj.externs.get(name), Some(Extern::Func { .. } | Extern::Var { typed: true })) {
                        s.btf_source = true;
                        tag::BTF | tag::SCALAR
                    } else {
                        tag::SCALAR
                    }
                }
                Some(RelocTarget::Code { .. }) => tag::OTHER,
                None => match insn.src() {
                    PSEUDO_BTF_ID => {
                        s.btf_source = true;
                        tag::BTF | tag::SCALAR
                    }
                    // A map the object does not declare: it may hold kptrs.
                    PSEUDO_MAP_FD | PSEUDO_MAP_IDX => {
                        s.map_ref = true;
                        s.kptr_map = true;
                        tag::OTHER
                    }
                    PSEUDO_MAP_VALUE | PSEUDO_MAP_IDX_VALUE => {
                        s.map_ref = true;
                        s.kptr_map = true;
                        tag::MAP_VALUE
                    }
                    PSEUDO_FUNC => tag::OTHER,
                    _ => tag::SCALAR,
                },
            };
        }
        // LD_ABS and LD_IND: r0 is the packet's data, r1-r5 are clobbered.
        CLASS_LD if matches!(insn.code & MODE_MASK, MODE_ABS | MODE_IND) => s.t.regs[0..=5].fill(tag::SCALAR),
        CLASS_LDX if matches!(insn.code & MODE_MASK, MODE_MEM | MODE_MEMSX) => {
            let sx = insn.code & MODE_MASK == MODE_MEMSX;
            s.t.regs[dst] = s.load(at, src as u8, insn.off, insn.code & SIZE_MASK == SIZE_DW, sx);
        }
        CLASS_ST | CLASS_STX if insn.code & MODE_MASK == MODE_MEM => {
            let value = if class == CLASS_ST { tag::SCALAR } else { s.t.regs[src] };
            s.store(at, dst as u8, insn.off, size, value);
        }
        CLASS_STX if insn.code & MODE_MASK == MODE_ATOMIC => s.atomic(at, insn, size),
        CLASS_ALU => s.t.regs[dst] = tag::SCALAR,
        CLASS_ALU64 => {
            let x = insn.code & SRC_X != 0;
            let srct = if x { s.t.regs[src] } else { tag::SCALAR };
            s.t.regs[dst] = match insn.code & OP_MASK {
                // addr_space_cast to an arena pointer: the verifier wants an arena bound, which fd_array binds with
                // no ld_imm64 naming it, so stores through unknown registers may write a map.
                OP_MOV if x && insn.off == 1 => {
                    s.map_ref = true;
                    tag::ANY
                }
                // mov; movsx when off is set.
                OP_MOV if insn.off == 0 => srct,
                OP_MOV | OP_NEG | OP_END => tag::SCALAR,
                // add, sub: a pointer moves.
                OP_ADD | OP_SUB => s.t.regs[dst] | srct,
                // Other arithmetic on a pointer keeps its provenance, conservatively (the library's rule).
                _ => s.t.regs[dst] | srct | tag::SCALAR,
            };
        }
        _ => {}
    }
    false
}
