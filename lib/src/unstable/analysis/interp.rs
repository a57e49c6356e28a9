//! The abstract interpretation of each function's instructions, and what calls and stores reveal.

use std::cmp::Reverse;

use super::*;
use crate::progtype::ProgType;

impl Ctx<'_, '_> {
    /// Everything that depends on the foreign-stack contents must be looked at again.
    pub(super) fn foreign_grew(&mut self) {
        for func in &mut self.funcs {
            func.dirty |= func.reads_foreign;
        }
    }

    /// Records the first read, in the block being interpreted, of a register no path has set (the verifier
    /// rejects it). Only each block's last interpretation counts, which ran on its final entry state, so what is
    /// reported does not depend on the order blocks were visited in.
    pub(super) fn read(&mut self, _f: usize, pc: usize, st: &State, reg: u8) {
        if self.block_uninit.is_none() && st.regs.get(usize::from(reg)) == Some(&Value::BOTTOM) {
            self.block_uninit = Some((pc, reg));
        }
    }

    /// Interprets function `f` from its current inputs, updating facts, callee inputs and its return value.
    pub(super) fn interpret(&mut self, f: usize) -> Result<(), AnalysisError> {
        if !self.interpret_releasing(f, true)? {
            // A released state was needed again: cannot happen (see `loop_regions`); run again keeping them all.
            debug_assert!(false, "a block's entry state was needed after its release");
            self.interpret_releasing(f, false)?;
        }
        Ok(())
    }

    /// [`Self::interpret`], freeing each block's entry state once no edge can reach the block again (with
    /// `release`): a block outside every loop region as soon as it ran, one inside when the interpretation has
    /// moved past the region. So the states kept are those of the blocks between what ran and what waits, not of
    /// every block: at a million instructions, a few instead of hundreds of megabytes. Returns false when a
    /// released state was needed after all (the caller runs again without releasing).
    fn interpret_releasing(&mut self, f: usize, release: bool) -> Result<bool, AnalysisError> {
        let start = self.funcs[f].start;
        let len = self.funcs[f].end - start;
        let base = self.funcs[f].layout as usize;
        self.funcs[f].uninit = None;
        let mut st = State { regs: [Value::BOTTOM; 11], stack: Slots::new(), stack_rest: Value::SCALAR };
        for (i, v) in self.funcs[f].input.iter().enumerate() {
            st.regs[i + 1] = *v;
        }
        st.regs[10] = Value::stack(0);
        // This function's instructions and block numbers, by instruction index within it.
        let op_at = |cx: &Self, i: usize| if i < len { cx.buf.ops.get(base + i).copied().flatten() } else { None };
        let block_at = |cx: &Self, i: usize| {
            if i < len {
                cx.buf.blocks.get(base + i).copied().unwrap_or(NOT_A_BLOCK)
            } else {
                NOT_A_BLOCK
            }
        };
        // The entry states (a pool, by slot) and each block's slot; the buffers are taken for the duration so
        // that `step` can borrow `self` mutably.
        let mut pool = std::mem::take(&mut self.buf.states);
        let mut slots = std::mem::take(&mut self.buf.slots);
        let mut free = std::mem::take(&mut self.buf.free);
        let mut later = std::mem::take(&mut self.buf.release);
        let mut regions = std::mem::take(&mut self.buf.regions);
        let mut work = std::mem::take(&mut self.buf.work);
        let mut queued = std::mem::take(&mut self.buf.queued);
        let mut uninit = std::mem::take(&mut self.buf.uninit);
        let n_blocks = self.funcs[f].n_blocks;
        loop_regions(self.buf.ops.get(base..base + len).unwrap_or_default(), &mut regions);
        // The bytes of the entry states kept ([`MAX_STATE_BYTES`]): each state, and its stack slots.
        let mut kept = 0usize;
        let mut too_big = false;
        let mut released_needed = false;
        // Pool entries past `used` are left over from before: overwritten before use, their vectors reused.
        let mut used = 0usize;
        slots.clear();
        slots.resize(n_blocks, NO_SLOT);
        free.clear();
        later.clear();
        work.clear();
        queued.clear();
        queued.resize(n_blocks, false);
        uninit.clear();
        uninit.resize(n_blocks, None);
        // A free pool entry for a state: a released one, or the next one.
        let mut alloc = |pool: &mut Vec<State>, free: &mut Vec<u32>| -> u32 {
            if let Some(i) = free.pop() {
                return i;
            }
            if used == pool.len() {
                pool.push(State::BOTTOM);
            }
            used += 1;
            (used - 1) as u32
        };
        if n_blocks > 0 {
            let slot = alloc(&mut pool, &mut free);
            pool[slot as usize].clone_from(&st);
            kept += size_of::<State>() + slot_bytes(st.stack.len());
            slots[0] = slot;
            queued[0] = true;
            work.push(Reverse(0));
        }
        while let Some(Reverse(leader)) = work.pop() {
            if kept > MAX_STATE_BYTES {
                too_big = true;
                break;
            }
            // Regions the interpretation has moved past: their blocks are never entered again.
            while let Some(&Reverse((end, b))) = later.peek() {
                if end >= leader {
                    break;
                }
                later.pop();
                if let Some(slot) = slots.get_mut(b as usize) {
                    release_slot(slot, &pool, &mut free, &mut kept);
                }
            }
            let block = block_at(self, leader) as usize;
            let Some(q) = queued.get_mut(block) else { continue };
            *q = false;
            match slots.get(block) {
                Some(&slot) if slot < RELEASED => st.clone_from(&pool[slot as usize]),
                // Queued means its state grew: released since, it would be lost (as for an edge into it, below).
                Some(&RELEASED) => {
                    released_needed = true;
                    break;
                }
                _ => continue,
            }
            self.block_uninit = None;
            let mut i = leader;
            while let Some(op) = op_at(self, i) {
                self.step(f, start + i, &op, &mut st);
                let next = i + op.slots();
                // The successors: the one taken last, `on`, is where this run may go on.
                let (other, on) = match op {
                    Op::Exit => (None, None),
                    Op::Ja { off, .. } => (None, Some(rel(i, 1, i64::from(off)))),
                    Op::Jump { off, .. } | Op::MayGoto { off } => (Some(rel(i, 1, i64::from(off))), Some(next)),
                    // Straight-line code continues in this block unless `next` starts another.
                    _ if next < len && block_at(self, next) == NOT_A_BLOCK => {
                        i = next;
                        continue;
                    }
                    _ => (None, Some(next)),
                };
                // A block after this one that only this edge enters runs on from here with this state: its entry
                // state would be a copy of it, and it runs again whenever this block does. Forward only, so a run
                // ends. This saves a state copy (and a join) on most edges of unrolled code.
                let alone = |s: usize| s > i && s < len && block_at(self, s) == STATELESS;
                for s in [other, on.filter(|&s| !alone(s))].into_iter().flatten() {
                    // Targets were checked when decoding: every successor in range starts a block.
                    let b = block_at(self, s) as usize;
                    let (Some(slot), Some(q)) = (slots.get_mut(b), queued.get_mut(b)) else { continue };
                    let grew = match *slot {
                        NO_SLOT => {
                            *slot = alloc(&mut pool, &mut free);
                            let entry = &mut pool[*slot as usize];
                            entry.clone_from(&st);
                            kept += size_of::<State>() + slot_bytes(entry.stack.len());
                            true
                        }
                        RELEASED => {
                            released_needed = true;
                            false
                        }
                        at => {
                            let entry = &mut pool[at as usize];
                            let before = entry.stack.len();
                            let grew = entry.join_from(&st);
                            kept += slot_bytes(entry.stack.len()).saturating_sub(slot_bytes(before));
                            grew
                        }
                    };
                    if grew && !*q {
                        *q = true;
                        work.push(Reverse(s));
                    }
                }
                match on {
                    Some(s) if alone(s) => i = s,
                    _ => break,
                }
            }
            if let Some(u) = uninit.get_mut(block) {
                *u = self.block_uninit;
            }
            if released_needed {
                break;
            }
            if release {
                // The end of the loop region this block is in: until the interpretation passes it, a back edge
                // can enter the block again.
                let r = regions.partition_point(|&(first, _)| first <= leader);
                match r.checked_sub(1).and_then(|r| regions.get(r)).filter(|&&(_, last)| last >= leader) {
                    Some(&(_, last)) => later.push(Reverse((last, block as u32))),
                    None => {
                        if let Some(slot) = slots.get_mut(block) {
                            release_slot(slot, &pool, &mut free, &mut kept);
                        }
                    }
                }
            }
        }
        // The first read of an unset register, by instruction.
        if let Some((pc, reg)) = uninit.iter().flatten().min().copied() {
            let section = self.section_name(self.funcs[f].section);
            self.funcs[f].uninit = Some(AnalysisError::UninitRegister { section, insn: pc, reg });
        }
        self.buf.uninit = uninit;
        if too_big {
            // Not kept for the next program: that is the memory the limit is about.
            pool = Vec::new();
        }
        self.buf.states = pool;
        self.buf.slots = slots;
        self.buf.free = free;
        self.buf.release = later;
        self.buf.regions = regions;
        self.buf.work = work;
        self.buf.queued = queued;
        if too_big {
            let func = &self.funcs[f];
            return Err(AnalysisError::TooComplex {
                section: self.section_name(func.section),
                insn: func.start,
                limit_mib: MAX_STATE_BYTES >> 20,
            });
        }
        Ok(!released_needed)
    }

    pub(super) fn step(&mut self, f: usize, pc: usize, op: &Op, st: &mut State) {
        let at = self.at(f, pc);
        let n_maps = self.obj.maps.len();
        let uses = match *op {
            Op::Call(CallTarget::Indirect(r)) => 1 << r,
            // The verifier wants r0 set at the exit of the entry, of global functions and of callbacks only: a
            // static subprogram (a `void` one) may return nothing, which matters only if its caller reads r0.
            Op::Exit if !self.exit_reads_r0(f) => 0,
            _ => op.uses(),
        };
        // Only the first read of an unset register in a block is recorded: once one is, there is nothing to check.
        if self.block_uninit.is_none() {
            let mut regs = uses & 0x7ff;
            while regs != 0 {
                let r = regs.trailing_zeros() as u8;
                regs &= regs - 1;
                self.read(f, pc, st, r);
            }
        }
        match *op {
            Op::Alu { wide, op: aop, dst, src } => {
                let d = st.regs[dst as usize];
                let s = match src {
                    Operand::Reg(r) => st.regs[r as usize],
                    Operand::Imm(_) => Value::SCALAR,
                };
                st.regs[dst as usize] = if !wide {
                    Value::SCALAR
                } else {
                    match aop {
                        AluOp::Mov => s,
                        AluOp::Movsx(_) => Value::SCALAR,
                        AluOp::Add | AluOp::Sub => match src {
                            // Constant offsets keep the pointer exactly, and a known stack offset stays known.
                            Operand::Imm(k) => {
                                let mut v = d;
                                v.stack_off = d.stack_off.and_then(|o| {
                                    if aop == AluOp::Add {
                                        o.checked_add(k)
                                    } else {
                                        o.checked_sub(k)
                                    }
                                });
                                v
                            }
                            Operand::Reg(_) => {
                                let mut v = d.join(&s);
                                if d.is_pointer() && s.is_pointer() {
                                    v.kinds |= SCALAR; // pointer difference
                                }
                                v.stack_off = None;
                                v
                            }
                        },
                        // Other arithmetic on a pointer keeps its provenance, conservatively.
                        _ => {
                            let mut v = d.join(&s);
                            v.kinds |= SCALAR;
                            v.stack_off = None;
                            v
                        }
                    }
                };
            }
            Op::Neg { dst, .. } | Op::End { dst, .. } => st.regs[dst as usize] = Value::SCALAR,
            Op::AddrSpaceCast { dst, .. } => st.regs[dst as usize] = Value::kind(ARENA | SCALAR),
            Op::LdImm64 { dst, value } => {
                let v = self.ld_imm64(f, pc, value);
                st.regs[dst as usize] = v;
            }
            Op::LdAbs { .. } | Op::LdInd { .. } => {
                for r in 1..=5 {
                    st.regs[r] = Value::BOTTOM;
                }
                st.regs[0] = Value::SCALAR;
            }
            Op::Load { size, dst, src, off, .. } => {
                self.funcs[f].reads_foreign |= st.regs[src as usize].kinds & FOREIGN != 0;
                let v = self.load(at, st, src, off, size);
                st.regs[dst as usize] = v;
            }
            Op::Store { size, dst, off, value } => {
                let v = match value {
                    Operand::Reg(r) => st.regs[r as usize],
                    Operand::Imm(_) => Value::SCALAR,
                };
                self.store(at, st, dst, off, size, v);
            }
            Op::Atomic { size, op: aop, dst, src, off } => {
                // Every atomic but a release store reads the memory it changes.
                if aop != AtomicOp::StoreRelease && st.regs[dst as usize].map_val != 0 {
                    self.facts.maps(st.regs[dst as usize].map_val, n_maps, false);
                }
                match aop {
                    AtomicOp::LoadAcquire => {
                        self.funcs[f].reads_foreign |= st.regs[src as usize].kinds & FOREIGN != 0;
                        let v = self.load(at, st, src, off, size);
                        st.regs[dst as usize] = v;
                    }
                    AtomicOp::StoreRelease | AtomicOp::Xchg => {
                        let old = (aop == AtomicOp::Xchg).then(|| self.fetch(f, at, st, dst, off, size));
                        let v = st.regs[src as usize];
                        self.store(at, st, dst, off, size, v);
                        if let Some(old) = old {
                            st.regs[src as usize] = old;
                        }
                    }
                    AtomicOp::Cmpxchg => {
                        let old = self.fetch(f, at, st, dst, off, size);
                        let v = st.regs[src as usize];
                        self.store(at, st, dst, off, size, v);
                        st.regs[0] = old;
                    }
                    AtomicOp::Add { fetch }
                    | AtomicOp::Or { fetch }
                    | AtomicOp::And { fetch }
                    | AtomicOp::Xor { fetch } => {
                        let old = fetch.then(|| self.fetch(f, at, st, dst, off, size));
                        self.store(at, st, dst, off, size, Value::SCALAR);
                        if let Some(old) = old {
                            st.regs[src as usize] = old;
                        }
                    }
                }
            }
            Op::Ja { .. } | Op::Jump { .. } | Op::MayGoto { .. } => {}
            Op::Exit => {
                let r = st.regs[0].into_caller();
                let joined = self.funcs[f].ret.join(&r);
                if joined != self.funcs[f].ret {
                    self.funcs[f].ret = joined;
                    for c in self.funcs[f].callers.clone() {
                        self.funcs[c].dirty = true;
                    }
                }
            }
            Op::Call(target) => self.call(f, pc, at, target, st, n_maps),
        }
    }

    /// The old value a fetching atomic puts in its register. The verifier reads it as a load from the same place
    /// (check_atomic), so a pointer spilled to that stack slot comes back: an xchg/cmpxchg/fetch-add "fill".
    pub(super) fn fetch(&mut self, f: usize, at: u32, st: &State, base: u8, off: i16, size: Size) -> Value {
        self.funcs[f].reads_foreign |= st.regs[base as usize].kinds & FOREIGN != 0;
        self.load(at, st, base, off, size)
    }

    /// Whether the verifier requires r0 to be set at an exit of function `f`: the entry function, a global
    /// function (checked on its own, check_return_code) or a callback (prepare_func_exit), not a static
    /// subprogram. Without a symbol to tell, it is required, as before.
    pub(super) fn exit_reads_r0(&self, f: usize) -> bool {
        let func = &self.funcs[f];
        if f == 0 {
            return !self.returns_void();
        }
        if func.address_taken {
            return true;
        }
        let Some(cs) = self.obj.sections.get(func.section) else { return true };
        let i = cs.funcs.partition_point(|s| s.start < func.start);
        cs.funcs.get(i).filter(|s| s.start == func.start).is_none_or(|s| s.global)
    }

    /// A struct_ops or LSM program whose hook returns `void`: the kernel does not check r0 at its exit
    /// (`check_return_code`). For struct_ops, the hook is the member of the struct_ops map that points to the
    /// program (its BTF prototype); for LSM, or a struct_ops program no map member points to, the program's own
    /// BTF prototype stands for the hook's, as `BPF_PROG` and `BPF_STRUCT_OPS` declare the program with the
    /// hook's return type.
    fn returns_void(&self) -> bool {
        let info = &self.prog.info;
        let obj = self.obj;
        let name = obj.entry_name(self.prog);
        let own = || obj.void_funcs.binary_search_by(|v| v.as_str().cmp(name)).is_ok();
        match info.prog_type {
            ProgType::StructOps => match obj.struct_ops_members.binary_search_by(|(f, _)| f.as_str().cmp(name)) {
                Ok(i) => obj.struct_ops_members.get(i).is_some_and(|&(_, void)| void),
                Err(_) => own(),
            },
            ProgType::Lsm => info.attach_type != Some(AttachType::LsmCgroup) && own(),
            _ => false,
        }
    }

    #[inline(never)]
    pub(super) fn ld_imm64(&mut self, f: usize, pc: usize, value: Imm64) -> Value {
        let sec = self.funcs[f].section;
        let obj = self.obj;
        match (obj.sections[sec].relocs.get(&pc), value) {
            (Some(&RelocTarget::Map(m)), _) => Value { map_ptr: map_bit(m), ..Value::BOTTOM },
            (Some(&RelocTarget::MapValue { map, .. }), _) => {
                if obj.maps.get(map).is_some_and(|m| m.name == ".addr_space.1") {
                    Value { kinds: ARENA, map_val: map_bit(map), ..Value::BOTTOM }
                } else {
                    Value { map_val: map_bit(map), ..Value::BOTTOM }
                }
            }
            // A typed `__ksym` variable is a BTF pointer; a kfunc address is only compared.
            (Some(RelocTarget::Extern { .. }), _) => Value::kind(BTF | SCALAR),
            (Some(RelocTarget::Code { .. }), _) | (None, Imm64::Func(_)) => {
                let op = Op::LdImm64 { dst: 0, value };
                match self.code_target(sec, pc, &op) {
                    Ok(Some(t)) => {
                        let func = self.buf.func_at(t);
                        if let Some(id) = func {
                            self.funcs[id].address_live = true;
                        }
                        Value { kinds: FUNC, func: func.map(|i| i as u32).unwrap_or(MANY_FUNCS), ..Value::BOTTOM }
                    }
                    _ => Value::kind(FUNC),
                }
            }
            (None, Imm64::MapFd(_)) => Value { map_ptr: map_bit(OTHER_MAPS as usize), ..Value::BOTTOM },
            (None, Imm64::MapValue { .. }) => Value { map_val: map_bit(OTHER_MAPS as usize), ..Value::BOTTOM },
            (None, Imm64::MapIdx(i)) => {
                Value { map_ptr: map_bit(usize::try_from(i).unwrap_or(OTHER_MAPS as usize)), ..Value::BOTTOM }
            }
            (None, Imm64::MapIdxValue { idx, .. }) => {
                Value { map_val: map_bit(usize::try_from(idx).unwrap_or(OTHER_MAPS as usize)), ..Value::BOTTOM }
            }
            (None, Imm64::BtfId(_)) => Value::kind(BTF | SCALAR),
            (None, Imm64::Const { .. }) => Value::SCALAR,
        }
    }

    pub(super) fn load(&mut self, at: u32, st: &State, src: u8, off: i16, size: Size) -> Value {
        let base = st.regs[src as usize];
        let n_maps = self.obj.maps.len();
        let wide = size == Size::DW;
        let mut v = Value::BOTTOM;
        if base.kinds & SCALAR != 0 || base.kinds == 0 && !base.is_pointer() {
            v = v.join(&Value::SCALAR);
        }
        if base.kinds & BTF != 0 {
            self.facts.class(Capability::KernelRead, at);
            v = v.join(&Value::kind(SCALAR | if wide { BTF } else { 0 }));
        }
        if base.map_val != 0 {
            self.facts.maps(base.map_val, n_maps, false);
            // Only kptrs can be loaded from a map value and dereferenced, and they are BTF pointers.
            v = v.join(&Value::kind(SCALAR | if wide { BTF } else { 0 }));
        }
        if base.kinds & (PACKET | ARENA) != 0 {
            v = v.join(&Value::kind(SCALAR | if wide { base.kinds & ARENA } else { 0 }));
        }
        if base.kinds & CTX != 0 {
            v = v.join(&self.ctx_load(i32::from(off), wide));
        }
        if base.kinds & STACK != 0 {
            let slot = match base.stack_off.and_then(|o| in_frame(o, off, size)) {
                Some(o) if wide => st.slot(o),
                Some(_) => Value::SCALAR,
                None => st.all_slots(),
            };
            v = v.join(&slot);
        }
        if base.kinds & FOREIGN != 0 {
            v = v.join(&if wide { self.foreign.join(&Value::SCALAR) } else { Value::SCALAR });
        }
        if v.kinds == 0 && !v.is_pointer() {
            v = Value::SCALAR;
        }
        v
    }

    /// What a load from the context at byte `off` yields for this program type.
    pub(super) fn ctx_load(&self, off: i32, wide: bool) -> Value {
        let pt = self.prog.info.prog_type;
        if pt.is_btf_typed() {
            return Value::kind(SCALAR | if wide { BTF } else { 0 });
        }
        let packet_fields = pt.packet_ctx_fields();
        if packet_fields.contains(&off) {
            Value::kind(PACKET)
        } else {
            Value::SCALAR
        }
    }

    pub(super) fn store(&mut self, at: u32, st: &mut State, dst: u8, off: i16, size: Size, v: Value) {
        let base = st.regs[dst as usize];
        let n_maps = self.obj.maps.len();
        if base.map_val != 0 {
            self.facts.class(Capability::MapWrite, at);
            self.facts.maps(base.map_val, n_maps, true);
        }
        if base.kinds & PACKET != 0 {
            self.facts.class(Capability::PacketWrite, at);
        }
        if base.kinds & ARENA != 0 {
            self.arena_write(at);
        }
        if v.is_pointer() && base.kinds & (STACK | FOREIGN) != 0 {
            let joined = self.foreign.join(&v);
            if joined != self.foreign {
                self.foreign = joined;
                self.foreign_grew();
            }
        }
        if base.kinds & STACK != 0 {
            match base.stack_off.and_then(|o| in_frame(o, off, size)) {
                Some(o) if base.kinds & !STACK == 0 && base.map_ptr == 0 && base.map_val == 0 => {
                    // Strong update: the slot now holds exactly this (an 8-byte spill keeps a pointer; a narrower
                    // store leaves bytes the verifier no longer treats as a pointer).
                    if size == Size::DW && v.is_pointer() {
                        st.stack.insert(o, v);
                    } else {
                        st.stack.remove(&o);
                        if st.stack_rest.is_pointer() {
                            st.stack.insert(o, Value::SCALAR);
                        }
                    }
                }
                Some(o) => {
                    let cur = st.slot(o);
                    st.stack.insert(o, cur.join(&v));
                }
                None => st.weak_update_all(&v),
            }
        }
    }

    pub(super) fn arena_write(&mut self, at: u32) {
        let n_maps = self.obj.maps.len();
        self.facts.class(Capability::MapWrite, at);
        let arenas: u128 = self
            .obj
            .maps
            .iter()
            .enumerate()
            .filter(|(_, m)| m.map_type == MAP_TYPE_ARENA)
            .fold(0, |acc, (i, _)| acc | map_bit(i));
        self.facts.maps(if arenas == 0 { map_bit(OTHER_MAPS as usize) } else { arenas }, n_maps, true);
    }

    #[inline(never)]
    pub(super) fn call(&mut self, f: usize, pc: usize, at: u32, target: CallTarget, st: &mut State, n_maps: usize) {
        let args: [Value; 5] = [st.regs[1], st.regs[2], st.regs[3], st.regs[4], st.regs[5]];
        // In an object a kfunc call is `call -1` (src_reg 1 or 2) relocated against an undefined symbol.
        let sec = self.funcs[f].section;
        let obj = self.obj;
        let extern_name = match obj.sections[sec].relocs.get(&pc) {
            Some(RelocTarget::Extern { name }) => Some(name),
            _ => None,
        };
        let kfunc = extern_name.is_some();
        // Only code can store a pointer through a stack pointer it is given: a BPF function, a callback, or
        // something the catalogue does not know. A catalogued helper with no callback writes data only (the
        // verifier reads what a helper wrote to the stack as scalars), so passing it a buffer on the stack
        // changes no pointer the analysis tracks, and does not make this function depend on the foreign-stack
        // contents (which cost every such function a second interpretation).
        let plain_helper = match target {
            CallTarget::Helper(id) if !kfunc => {
                helpers::helper(id).is_some_and(|h| !h.effects.iter().any(|e| matches!(e, Effect::Callback(_))))
            }
            _ => false,
        };
        let escapes = !plain_helper && args.iter().any(|a| a.kinds & STACK != 0);
        let ret = if let Some(name) = extern_name {
            // The object's BTF says how many arguments a kfunc takes; each must be set.
            let params = match obj.externs.get(name) {
                Some(&Extern::Func { params }) => params,
                _ => 0,
            };
            for r in 1..=params.min(5) as u8 {
                self.read(f, pc, st, r);
            }
            self.facts.kfuncs.push(name);
            self.kfunc(at, name, &args, n_maps)
        } else {
            self.call_target(f, pc, at, target, &args, n_maps)
        };
        for r in 1..=5 {
            st.regs[r] = Value::BOTTOM;
        }
        st.regs[0] = ret;
        if escapes {
            self.funcs[f].reads_foreign = true;
            // A callee or callback may have stored pointers through the stack pointer it was given.
            let foreign = self.foreign;
            st.weak_update_all(&foreign);
        }
    }

    pub(super) fn call_target(
        &mut self,
        f: usize,
        pc: usize,
        at: u32,
        target: CallTarget,
        args: &[Value; 5],
        n_maps: usize,
    ) -> Value {
        let mut ret = Value::SCALAR;
        match target {
            CallTarget::Local(_) => {
                let op = Op::Call(target);
                let callee =
                    self.code_target(self.funcs[f].section, pc, &op).ok().flatten().and_then(|t| self.buf.func_at(t));
                if let Some(c) = callee {
                    if !self.funcs[c].callers.contains(&f) {
                        self.funcs[c].callers.push(f);
                    }
                    self.feed(c, args.map(Value::into_callee));
                    ret = self.funcs[c].ret.into_caller();
                    if ret.kinds == 0 && !ret.is_pointer() {
                        ret = Value::SCALAR;
                    }
                }
            }
            CallTarget::Helper(id) => {
                self.facts.helpers.push(id);
                // A call the target refuses to run (crate::target): no class; a path through it does not exist
                // in a program that loads, so what it returns is a plain number.
                if !self.target.helper_executable(id) {
                    return ret;
                }
                match helpers::helper(id) {
                    Some(h) => {
                        self.facts.classes(h.classes, at);
                        ret = self.effects(at, h.effects, args, Some(h.name), n_maps);
                        if h.name == "tail_call" {
                            match self.facts.tail_calls.last_mut() {
                                Some((insn, maps)) if *insn == at => *maps |= args[1].map_ptr,
                                _ => self.facts.tail_calls.push((at, args[1].map_ptr)),
                            }
                        }
                    }
                    None => self.facts.class(Capability::Unknown, at),
                }
            }
            CallTarget::Kfunc(_) => {
                // A kfunc by raw BTF id cannot be named without the kernel's BTF.
                self.facts.class(Capability::Unknown, at);
                ret = Value::kind(SCALAR | BTF);
            }
            CallTarget::Indirect(_) => self.facts.class(Capability::Unknown, at),
        }
        ret
    }

    pub(super) fn kfunc(&mut self, at: u32, name: &str, args: &[Value; 5], n_maps: usize) -> Value {
        match helpers::kfunc(name) {
            Some(k) => {
                self.facts.classes(k.classes, at);
                self.effects(at, k.effects, args, None, n_maps)
            }
            None => {
                self.facts.class(Capability::Unknown, at);
                Value::kind(SCALAR | BTF)
            }
        }
    }

    /// Applies a helper's or kfunc's effects; returns what r0 holds afterwards.
    #[inline(never)]
    pub(super) fn effects(
        &mut self,
        at: u32,
        effects: &[Effect],
        args: &[Value; 5],
        helper: Option<&str>,
        n_maps: usize,
    ) -> Value {
        let arg = |r: u8| -> Value { args.get(usize::from(r).wrapping_sub(1)).copied().unwrap_or(Value::BOTTOM) };
        let mut ret = Value::SCALAR;
        // Memory a helper is handed is read by it, unless it is an output buffer only.
        for (i, a) in args.iter().enumerate() {
            if a.map_val != 0 && !effects.iter().any(|e| *e == Effect::WriteMem(i as u8 + 1)) {
                self.facts.maps(a.map_val, n_maps, false);
            }
        }
        for e in effects {
            match *e {
                Effect::MapRead(r) => {
                    let m = arg(r).map_ptr;
                    self.facts.maps(if m == 0 { map_bit(OTHER_MAPS as usize) } else { m }, n_maps, false);
                }
                Effect::MapWrite(r) => {
                    let m = arg(r).map_ptr;
                    self.facts.class(Capability::MapWrite, at);
                    self.facts.maps(if m == 0 { map_bit(OTHER_MAPS as usize) } else { m }, n_maps, true);
                }
                Effect::RetMapValue(r) => {
                    let maps = arg(r).map_ptr;
                    let mut v = Value::BOTTOM;
                    // The object's maps in the set, below the shared bit.
                    let mut named = maps & (map_bit(n_maps.min(OTHER_MAPS as usize)) - 1);
                    while named != 0 {
                        let i = named.trailing_zeros() as usize;
                        named &= named - 1;
                        let t = self.obj.maps[i].map_type;
                        if t == MAP_TYPE_ARRAY_OF_MAPS || t == MAP_TYPE_HASH_OF_MAPS {
                            v.map_ptr |= map_bit(OTHER_MAPS as usize);
                        } else {
                            v.map_val |= map_bit(i);
                        }
                    }
                    if maps & map_bit(OTHER_MAPS as usize) != 0 || maps == 0 {
                        v.map_val |= map_bit(OTHER_MAPS as usize);
                        v.map_ptr |= map_bit(OTHER_MAPS as usize);
                    }
                    v.kinds |= SCALAR;
                    ret = ret.join(&v);
                }
                Effect::WriteMem(r) => {
                    let a = arg(r);
                    if a.map_val != 0 {
                        self.facts.class(Capability::MapWrite, at);
                        self.facts.maps(a.map_val, n_maps, true);
                    }
                    if a.kinds & ARENA != 0 {
                        self.arena_write(at);
                    }
                    if a.kinds & PACKET != 0 {
                        self.facts.class(Capability::PacketWrite, at);
                    }
                }
                Effect::RetKernelPtr => ret = ret.join(&Value::kind(BTF | SCALAR)),
                Effect::Callback(r) => {
                    let cb = arg(r);
                    self.callback(helper.unwrap_or(""), cb, args);
                }
            }
        }
        ret
    }

    /// Feeds a callback's arguments, as the helper that calls it will pass them.
    #[inline(never)]
    pub(super) fn callback(&mut self, helper: &str, cb: Value, args: &[Value; 5]) {
        let targets: Vec<usize> = match cb.func {
            NO_FUNC => return,
            MANY_FUNCS => (0..self.funcs.len()).collect(),
            id => vec![id as usize],
        };
        let btf = Value::kind(BTF | SCALAR);
        // r1 is the map (for_each_map_elem) or a value of it holding the timer (timer_set_callback).
        let m = args[0].map_ptr | args[0].map_val;
        let input: [Value; 5] = match helpers::callback_args(helper) {
            Some(conv) => conv.map(|a| match a {
                CallbackArg::Scalar => Value::SCALAR,
                CallbackArg::Kernel => btf,
                CallbackArg::Map => Value { map_ptr: m, ..Value::BOTTOM },
                CallbackArg::MapValue => Value { map_val: m, kinds: SCALAR, ..Value::BOTTOM },
                CallbackArg::Caller(r) => args.get(usize::from(r).wrapping_sub(1)).map_or(btf, |v| v.into_callee()),
            }),
            // Unknown calling convention: anything the caller passed, or kernel memory.
            None => {
                let all = args.iter().fold(btf, |acc, a| acc.join(&a.into_callee()));
                [all; 5]
            }
        };
        for t in targets {
            self.feed(t, input);
        }
    }

    pub(super) fn feed(&mut self, callee: usize, input: [Value; 5]) {
        let func = &mut self.funcs[callee];
        if !func.entered {
            func.entered = true;
            func.dirty = true;
        }
        for (cur, new) in func.input.iter_mut().zip(input.iter()) {
            let joined = cur.join(new);
            if joined != *cur {
                *cur = joined;
                func.dirty = true;
            }
        }
    }
}

/// A block without an entry state yet, and one whose state was released (`interpret_releasing`): slot values.
const NO_SLOT: u32 = u32::MAX;
const RELEASED: u32 = u32::MAX - 1;

/// Frees the pool entry of a block's state for reuse, its bytes no longer kept.
fn release_slot(slot: &mut u32, pool: &[State], free: &mut Vec<u32>, kept: &mut usize) {
    if *slot < RELEASED {
        let entry = &pool[*slot as usize];
        *kept = kept.saturating_sub(size_of::<State>() + slot_bytes(entry.stack.len()));
        free.push(*slot);
        *slot = RELEASED;
    }
}

/// The loop regions of a function's instructions: every back edge (a jump to an instruction at or before it)
/// spans its target to its source, and overlapping spans merge; `(first, last)` instruction, sorted. Once the
/// interpretation (which takes the lowest waiting block first) moves past a region's last instruction, nothing
/// enters the region again: that would take a back edge from past the region into it, which would have widened it.
fn loop_regions(ops: &[Option<Op>], regions: &mut Vec<(usize, usize)>) {
    regions.clear();
    for (i, op) in ops.iter().enumerate() {
        let off = match op {
            Some(Op::Ja { off, .. }) => i64::from(*off),
            Some(Op::Jump { off, .. } | Op::MayGoto { off }) => i64::from(*off),
            _ => continue,
        };
        let target = rel(i, 1, off);
        if target <= i {
            regions.push((target, i));
        }
    }
    regions.sort_unstable();
    let mut merged = 0usize;
    for k in 0..regions.len() {
        let (first, last) = regions[k];
        match merged.checked_sub(1).map(|m| &mut regions[m]) {
            Some(prev) if first <= prev.1 => prev.1 = prev.1.max(last),
            _ => {
                regions[merged] = (first, last);
                merged += 1;
            }
        }
    }
    regions.truncate(merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Back edges' spans merge where they overlap, even by one instruction, and not where they only touch;
    /// forward jumps make none.
    #[test]
    fn loop_regions_merge_overlapping_back_edges() {
        let mut ops = vec![Some(Op::Exit); 12];
        ops[0] = Some(Op::Ja { off: 4, long: false }); // forward
        ops[3] = Some(Op::MayGoto { off: -3 }); // 3 -> 1
        ops[6] = Some(Op::MayGoto { off: -4 }); // 6 -> 3: overlaps 1..=3 at 3
        ops[9] = Some(Op::Ja { off: -2, long: true }); // 9 -> 8
        ops[10] = Some(Op::MayGoto { off: -2 }); // 10 -> 9: overlaps 8..=9 at 9
        ops[11] = Some(Op::MayGoto { off: -1 }); // 11 -> 11: a block jumping to itself, apart
        let mut regions = vec![(99, 99)];
        loop_regions(&ops, &mut regions);
        assert_eq!(regions, [(1, 6), (8, 10), (11, 11)]);
    }
}
