//! Reachability: the functions a program can reach, laid out as libbpf links them, each decoded and checked.

use super::*;

/// One function of the program.
pub(super) struct Func {
    pub(super) section: usize,
    pub(super) start: usize,
    pub(super) end: usize,
    /// First instruction in the linked program, and of its instructions in [`Buffers::ops`] and `blocks`.
    pub(super) layout: u32,
    pub(super) input: [Value; 5],
    pub(super) ret: Value,
    /// A call or callback site feeds it: only then are its register reads checked.
    pub(super) entered: bool,
    /// Its address is loaded somewhere (a callback).
    pub(super) address_taken: bool,
    /// Its address is loaded by an instruction the interpretation reached, or it is an exception callback: a
    /// callback the program can hand to the kernel. One whose address is loaded only in dead code is not.
    pub(super) address_live: bool,
    pub(super) n_blocks: usize,
    /// Needs (re-)interpretation: its inputs, a callee's result or the foreign-stack contents changed.
    pub(super) dirty: bool,
    /// Functions that call it, to revisit when its result grows.
    pub(super) callers: Vec<usize>,
    /// It loads through a foreign stack pointer or passes its own stack to a callee.
    pub(super) reads_foreign: bool,
    /// First read of an unset register in its latest interpretation.
    pub(super) uninit: Option<AnalysisError>,
}

pub(super) const NOT_A_BLOCK: u32 = u32::MAX;
/// A block that starts at an instruction but has no entry state (see [`number_blocks`]).
pub(super) const STATELESS: u32 = u32::MAX - 1;

/// What [`MAX_STATE_BYTES`] counts of the stack slots of a block's entry state, beyond the state itself: the
/// slots' entries (a vector grows by doubling, so up to twice that is allocated).
pub(super) fn slot_bytes(slots: usize) -> usize {
    slots * 2 * size_of::<(i32, Value)>()
}

/// Numbers the basic blocks of a decoded function (the entry, jump targets, and what follows a jump or exit) that
/// need an entry state: `blocks[i]` becomes the number of the block starting at instruction `i`, [`STATELESS`]
/// for a block that only runs on from its predecessor, NOT_A_BLOCK if no block starts there. Returns the count.
///
/// A block is stateless when one edge only enters it, from an instruction before it, and that edge is the one
/// the interpretation goes on along (the fall-through of a conditional jump or of a block's last instruction,
/// or the target of a `goto`): `interpret` runs it on with the state it has, so it needs no state of its own,
/// and no memory for one (at a million instructions, half the blocks of branchy code). `preds` is scratch.
pub(super) fn number_blocks(ops: &[Option<Op>], blocks: &mut [u32], preds: &mut [u8]) -> usize {
    // Leaders are marked 0 first, then numbered in order.
    blocks.fill(NOT_A_BLOCK);
    if let Some(l) = blocks.first_mut() {
        *l = 0;
    }
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op else { continue };
        let next = i + op.slots();
        let target = match *op {
            Op::Ja { off, .. } => Some(rel(i, 1, i64::from(off))),
            Op::Jump { off, .. } | Op::MayGoto { off } => Some(rel(i, 1, i64::from(off))),
            Op::Exit => None,
            _ => continue,
        };
        for t in target.into_iter().chain(Some(next)) {
            if let Some(l) = blocks.get_mut(t) {
                *l = 0;
            }
        }
    }
    // The edges out of instruction `i`: (the one the interpretation goes on along, the other).
    let edges = |i: usize, op: &Op, blocks: &[u32]| -> (Option<usize>, Option<usize>) {
        let next = i + op.slots();
        match *op {
            Op::Ja { off, .. } => (Some(rel(i, 1, i64::from(off))), None),
            Op::Jump { off, .. } | Op::MayGoto { off } => (Some(next), Some(rel(i, 1, i64::from(off)))),
            Op::Exit => (None, None),
            _ if blocks.get(next).is_some_and(|&b| b != NOT_A_BLOCK) => (Some(next), None),
            _ => (None, None),
        }
    };
    // Edges into each block (the entry counts one), up to 2; then bit 0x80 for a block that needs a state.
    const NEEDS: u8 = 0x80;
    preds.fill(0);
    if let Some(p) = preds.first_mut() {
        *p = 1;
    }
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op else { continue };
        let (on, other) = edges(i, op, blocks);
        for t in [on, other].into_iter().flatten() {
            if let Some(p) = preds.get_mut(t) {
                *p = p.saturating_add(1).min(2);
            }
        }
    }
    if let Some(p) = preds.first_mut() {
        *p |= NEEDS;
    }
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op else { continue };
        let (on, other) = edges(i, op, blocks);
        let on_alone = on.filter(|&t| t > i && preds.get(t).is_some_and(|&p| p & !NEEDS == 1));
        for t in [on.filter(|_| on_alone.is_none()), other].into_iter().flatten() {
            if let Some(p) = preds.get_mut(t) {
                *p |= NEEDS;
            }
        }
    }
    let mut n = 0u32;
    for (b, p) in blocks.iter_mut().zip(preds.iter()).filter(|(b, _)| **b != NOT_A_BLOCK) {
        if p & NEEDS != 0 {
            *b = n;
            n += 1;
        } else {
            *b = STATELESS;
        }
    }
    n as usize
}

impl Ctx<'_, '_> {
    /// Finds every function the program reaches, in linked order, and decodes it.
    pub(super) fn discover(&mut self) -> Result<(), AnalysisError> {
        let entry = (self.prog.section, self.prog.start);
        // An exception callback is reached through no instruction: the kernel calls it when bpf_throw unwinds.
        // Queued as a function whose address is taken, so it is analyzed with what any caller could pass.
        let entry_name = self.obj.entry_name(self.prog);
        let mut callbacks = Vec::new();
        for (_, cb) in self.obj.exception_callbacks.iter().filter(|(f, _)| f == entry_name) {
            let found = self
                .obj
                .sections
                .iter()
                .enumerate()
                .find_map(|(sec, cs)| cs.funcs.iter().find(|f| f.name == *cb).map(|f| (sec, f.start)));
            callbacks.push(found.ok_or_else(|| AnalysisError::MissingExceptionCallback { name: cb.clone() })?);
        }
        // What the code refers to, as found: local calls (caller, callee location, pc) for the recursion check,
        // and function addresses, which make callbacks. Taken from `buf` while `self` is borrowed.
        let mut queue = std::mem::take(&mut self.buf.queue);
        let mut calls = std::mem::take(&mut self.buf.calls);
        let mut addresses = std::mem::take(&mut self.buf.addresses);
        // A stack: libbpf appends the functions the entry reaches depth first, then the exception callbacks.
        queue.extend(callbacks.iter().rev());
        queue.push_back(entry);
        addresses.extend(&callbacks);
        let result = self.discover_all(&mut queue, &mut calls, &mut addresses);
        let result = result.and_then(|()| {
            // Functions whose address is loaded are callbacks.
            for t in &addresses {
                if let Some(callee) = self.buf.func_at(*t) {
                    self.funcs[callee].address_taken = true;
                }
            }
            // The kernel calls exception callbacks whatever the code does.
            for t in &callbacks {
                if let Some(callee) = self.buf.func_at(*t) {
                    self.funcs[callee].address_live = true;
                }
            }
            self.check_recursion(&calls)
        });
        self.buf.queue = queue;
        self.buf.calls = calls;
        self.buf.addresses = addresses;
        result
    }

    pub(super) fn discover_all(
        &mut self,
        queue: &mut VecDeque<(usize, usize)>,
        calls: &mut Vec<(usize, (usize, usize), usize)>,
        addresses: &mut Vec<(usize, usize)>,
    ) -> Result<(), AnalysisError> {
        let obj = self.obj;
        let mut total = 0usize;
        while let Some((sec, start)) = queue.pop_back() {
            let Err(slot) = self.buf.by_loc.binary_search_by_key(&(sec, start), |&(l, _)| l) else { continue };
            let cs = &obj.sections[sec];
            if start >= cs.insns.len() {
                return Err(AnalysisError::BadEntry { section: cs.name.clone(), insn: start });
            }
            let end = cs.func_end(start).max(start + 1);
            total += end - start;
            if total > MAX_INSNS {
                return Err(AnalysisError::TooManyInsns { section: cs.name.clone(), insn: start, limit: MAX_INSNS });
            }
            if total > self.budget {
                self.discovered = usize::MAX;
                return Err(AnalysisError::ObjectTooLarge { limit: MAX_OBJECT_WORK });
            }
            self.discovered = total;
            if self.funcs.len() >= MAX_FUNCS {
                return Err(AnalysisError::TooManyFuncs { section: cs.name.clone(), insn: start, limit: MAX_FUNCS });
            }
            let id = self.funcs.len();
            let layout = self.funcs.last().map(|f| f.layout + (f.end - f.start) as u32).unwrap_or(0);
            // Functions are laid out back to back: this one's instructions start where the buffer ends.
            let base = self.buf.ops.len();
            decode_func(cs, start, end, &mut self.buf.ops)?;
            let ops = self.buf.ops.get(base..).unwrap_or_default();
            self.buf.blocks.resize(self.buf.ops.len(), NOT_A_BLOCK);
            self.buf.preds.resize(self.buf.ops.len(), 0);
            let n_blocks = number_blocks(
                ops,
                self.buf.blocks.get_mut(base..).unwrap_or_default(),
                self.buf.preds.get_mut(base..).unwrap_or_default(),
            );
            self.buf.by_loc.insert(slot, ((sec, start), id));
            // libbpf's layout: each function the code refers to is appended where it is first referred to, and
            // what it refers to right after it (depth first), so its targets go on the stack last one first.
            let refs = queue.len();
            for (i, op) in ops.iter().enumerate() {
                let pc = start + i;
                // Only local calls and ld_imm64 can refer to code (checked here: this loop sees every instruction).
                if let Some(op @ (Op::Call(CallTarget::Local(_)) | Op::LdImm64 { .. })) = op {
                    if let Some(target) = self.code_target(sec, pc, op)? {
                        queue.push_back(target);
                        match op {
                            Op::Call(_) => calls.push((id, target, pc)),
                            _ => addresses.push(target),
                        }
                    }
                }
            }
            queue.make_contiguous()[refs..].reverse();
            self.funcs.push(Func {
                section: sec,
                start,
                end,
                layout,
                input: [Value::BOTTOM; 5],
                ret: Value::BOTTOM,
                entered: false,
                address_taken: false,
                address_live: false,
                n_blocks,
                dirty: false,
                callers: Vec::new(),
                reads_foreign: false,
                uninit: None,
            });
        }
        Ok(())
    }

    /// Detects cycles in the call graph (the kernel rejects recursive BPF-to-BPF calls) and chains of calls
    /// deeper than [`MAX_CALL_FRAMES`]. `calls` are the local calls (caller, callee location, pc) in function and
    /// instruction order.
    pub(super) fn check_recursion(&self, calls: &[(usize, (usize, usize), usize)]) -> Result<(), AnalysisError> {
        if calls.is_empty() {
            return Ok(());
        }
        let n = self.funcs.len();
        let mut callees: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        for &(id, t, pc) in calls {
            if let (Some(callee), Some(list)) = (self.buf.func_at(t), callees.get_mut(id)) {
                list.push((callee, pc));
            }
        }
        // Iterative DFS with colors (recursion here would overflow the stack on a deep chain). A function's
        // frames, itself and its deepest chain of callees, are known when it is finished.
        let mut color = vec![0u8; n];
        let mut frames = vec![0usize; n];
        for root in 0..n {
            if color[root] != 0 {
                continue;
            }
            let mut stack = vec![(root, 0usize)];
            color[root] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&(callee, pc)) = callees[node].get(*next) {
                    *next += 1;
                    match color[callee] {
                        0 => {
                            color[callee] = 1;
                            stack.push((callee, 0));
                        }
                        1 => {
                            let f = &self.funcs[node];
                            return Err(AnalysisError::Recursion { section: self.section_name(f.section), insn: pc });
                        }
                        _ => {}
                    }
                } else {
                    color[node] = 2;
                    frames[node] = 1 + callees[node].iter().map(|&(c, _)| frames[c]).max().unwrap_or(0);
                    stack.pop();
                }
            }
        }
        // Report the first call of the deepest chain.
        let deepest = (0..n).max_by_key(|&f| (frames[f], std::cmp::Reverse(f)));
        if let Some(f) = deepest.filter(|&f| frames[f] > MAX_CALL_FRAMES) {
            let pc = callees[f].iter().find(|&&(c, _)| frames[c] + 1 == frames[f]).map_or(0, |&(_, pc)| pc);
            return Err(AnalysisError::CallTooDeep {
                section: self.section_name(self.funcs[f].section),
                insn: pc,
                frames: frames[f],
                limit: MAX_CALL_FRAMES,
            });
        }
        Ok(())
    }

    /// The function a call or function-address load at `(sec, pc)` refers to, following libbpf's rules.
    pub(super) fn code_target(&self, sec: usize, pc: usize, op: &Op) -> Result<Option<(usize, usize)>, AnalysisError> {
        // Only these refer to code; everything else needs no relocation lookup.
        if !matches!(op, Op::Call(CallTarget::Local(_)) | Op::LdImm64 { .. }) {
            return Ok(None);
        }
        let cs = &self.obj.sections[sec];
        let reloc = cs.relocs.get(&pc);
        let (tsec, target): (usize, i64) = match (op, reloc) {
            (Op::Call(CallTarget::Local(imm)), Some(RelocTarget::Code { section, base, .. })) => {
                (*section, *base as i64 + i64::from(*imm) + 1)
            }
            (Op::Call(CallTarget::Local(imm)), None) => (sec, pc as i64 + i64::from(*imm) + 1),
            (Op::LdImm64 { value, .. }, Some(RelocTarget::Code { section, base, .. })) => {
                // Before relocation the immediate of a function address is a byte offset from the symbol (libbpf).
                let imm = match value {
                    Imm64::Func(imm) => i64::from(*imm),
                    Imm64::Const { lo, .. } => i64::from(*lo as i32),
                    _ => return Ok(None),
                };
                (*section, (*base as i64 * 8 + imm) / 8)
            }
            (Op::LdImm64 { value: Imm64::Func(imm), .. }, None) => (sec, pc as i64 + i64::from(*imm) + 1),
            _ => return Ok(None),
        };
        let tcs = &self.obj.sections[tsec];
        if target < 0 || target as usize >= tcs.insns.len() {
            return Err(AnalysisError::CallOutOfRange {
                section: cs.name.clone(),
                insn: pc,
                target,
                target_section: tcs.name.clone(),
            });
        }
        Ok(Some((tsec, target as usize)))
    }
}

pub(super) fn rel(i: usize, step: usize, off: i64) -> usize {
    let t = i as i64 + step as i64 + off;
    usize::try_from(t).unwrap_or(usize::MAX)
}

/// Decodes a function's instructions, appended to `out`, and checks its control flow stays inside it.
pub(super) fn decode_func(
    cs: &crate::elf::CodeSection,
    start: usize,
    end: usize,
    out: &mut Vec<Option<Op>>,
) -> Result<(), AnalysisError> {
    let len = end - start;
    let base = out.len();
    out.resize(base + len, None);
    let ops = out.get_mut(base..).unwrap_or_default();
    let mut i = 0;
    let err = |i: usize, source| AnalysisError::Insn { section: cs.name.clone(), insn: start + i, source };
    while i < len {
        let op = insn::decode(&cs.insns[start + i..end]).map_err(|e| err(i, e))?;
        ops[i] = Some(op);
        i += op.slots();
    }
    // Jumps must land on an instruction of this function; the last instruction must not fall through.
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op else { continue };
        let target = match *op {
            Op::Ja { off, .. } => Some(i as i64 + 1 + i64::from(off)),
            Op::Jump { off, .. } | Op::MayGoto { off } => Some(i as i64 + 1 + i64::from(off)),
            _ => None,
        };
        if let Some(t) = target {
            if t < 0 || t as usize >= len {
                return Err(AnalysisError::JumpOutOfRange {
                    section: cs.name.clone(),
                    insn: start + i,
                    target: start as i64 + t,
                    start,
                    end,
                });
            }
            if ops[t as usize].is_none() {
                return Err(AnalysisError::JumpIntoLdImm64 {
                    section: cs.name.clone(),
                    insn: start + i,
                    target: start + t as usize,
                });
            }
        }
        let falls_through = !matches!(op, Op::Exit | Op::Ja { .. });
        if falls_through && i + op.slots() >= len {
            return Err(AnalysisError::FallsOffEnd { section: cs.name.clone(), insn: start + i });
        }
    }
    Ok(())
}
