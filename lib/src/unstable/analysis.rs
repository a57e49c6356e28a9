//! Capability analysis: reachable code, then an abstract interpretation of pointer provenance.
//!
//! For each program, the functions it can reach (BPF-to-BPF calls and callback addresses) are laid out the way
//! libbpf links them. Each function is then interpreted over a lattice of pointer kinds per register and per
//! 8-byte stack slot (context, own stack, a caller's stack, packet, BTF-typed kernel memory, map pointers, map
//! values, arena, function addresses), to a fixpoint across functions (context-insensitive: a function's inputs
//! are the join of all its call sites). Stores and helper arguments are then judged by what they may point to,
//! which is what tells a map write through a spilled pointer from a store to the stack.
//!
//! The analysis over-approximates: a capability the program cannot have may be reported (for code the verifier
//! would reject anyway), but one it has is not missed, within the limits documented on [`analyze`].

use std::collections::{BTreeMap, VecDeque};
// The test support builds objects with it.
#[cfg(test)]
use std::collections::HashMap;

use crate::elf::{Extern, Object, ProgramEntry, RelocTarget};
use crate::helpers::{self, CallbackArg, Effect};
use crate::insn::{self, AluOp, AtomicOp, CallTarget, Imm64, InsnError, Op, Operand, Size};
use crate::metadata::{
    AttachType, Capability, ClassSet, HelperRef, InspectErrorKind, KernelView, MapAccess, ProgramMetadata, Subprogram,
    TailCall, UNKNOWN_MAP,
};
use crate::progtype::{MAP_TYPE_ARENA, MAP_TYPE_ARRAY_OF_MAPS, MAP_TYPE_HASH_OF_MAPS};

/// The kernel's limit on the instructions of one program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;
/// More functions than this in one program is not a real program.
pub const MAX_FUNCS: usize = 4096;
/// The kernel's `MAX_CALL_FRAMES`: a chain of BPF-to-BPF calls deeper than this is rejected by the verifier.
/// The analysis rejects it too, so the fixpoint, which carries a result one call level per round, always ends.
pub const MAX_CALL_FRAMES: usize = 8;
/// The kernel's `MAX_BPF_STACK`: only slots inside a frame of this many bytes are tracked one by one; an access
/// outside it, or a misaligned 8-byte one (both rejected by the verifier), counts as one at an unknown offset.
/// This bounds the slots a state holds, and so the passes a loop can need to carry a pointer from slot to slot.
pub const MAX_STACK: i32 = 512;
/// Bytes of abstract state one function's interpretation may keep (an entry state per basic block, each with
/// the registers and the stack slots that hold pointers; see `slot_bytes`). A million one-instruction blocks
/// with a frame full of spilled pointers would need gigabytes; a program at the kernel's instruction limit with
/// a branch every few instructions needs a few hundred megabytes.
pub const MAX_STATE_BYTES: usize = 1 << 30;
/// Work the analyses of one object's programs may do together: the instructions each program reaches, plus
/// [`ENTRY_WORK`] and the bytes of its names for the program and for each entry (subprogram, map, kfunc, ...)
/// its report lists. Without it a small object could have a million programs each analyze one huge subprogram
/// again, or each list its thousands of functions.
pub const MAX_OBJECT_WORK: usize = 16 * MAX_INSNS;
/// What a program, or an entry in its report, counts against [`MAX_OBJECT_WORK`] besides its names: building and
/// keeping an entry costs far more than interpreting an instruction.
pub const ENTRY_WORK: usize = 64;
/// The maps from the 128th on share one bit of the analysis' map sets, so a program that may touch one of them
/// lists them all; past this many, it is an error ([`AnalysisError::TooManyMaps`]) instead.
pub const MAX_SHARED_MAPS: usize = 1024;
/// Bound on fixpoint rounds across functions; each round can only grow the lattice, so this is never hit by
/// programs under the limits above, but it keeps hostile input from looping.
const MAX_ROUNDS: usize = 64;

/// Why a program could not be analyzed. `insn` is the instruction offset within `section`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("section {section} insn {insn}: {source}")]
    Insn { section: String, insn: usize, source: InsnError },
    #[error("section {section} insn {insn}: jump to {target} leaves the function ({start}..{end})")]
    JumpOutOfRange { section: String, insn: usize, target: i64, start: usize, end: usize },
    #[error("section {section} insn {insn}: jump into the middle of ld_imm64 at {target}")]
    JumpIntoLdImm64 { section: String, insn: usize, target: usize },
    #[error("section {section} insn {insn}: control falls off the end of the function")]
    FallsOffEnd { section: String, insn: usize },
    #[error("section {section} insn {insn}: call target {target} is outside section {target_section}")]
    CallOutOfRange { section: String, insn: usize, target: i64, target_section: String },
    #[error("section {section} insn {insn}: program entry is outside the section")]
    BadEntry { section: String, insn: usize },
    #[error("the exception callback {name} named by the program's BTF is not a function of the object")]
    MissingExceptionCallback { name: String },
    #[error("section {section} insn {insn}: program reaches more than {limit} instructions (the kernel's limit)")]
    TooManyInsns { section: String, insn: usize, limit: usize },
    #[error("section {section} insn {insn}: program reaches more than {limit} functions")]
    TooManyFuncs { section: String, insn: usize, limit: usize },
    #[error("section {section} insn {insn}: chain of {frames} BPF-to-BPF call frames, more than the kernel's {limit}")]
    CallTooDeep { section: String, insn: usize, frames: usize, limit: usize },
    #[error(
        "section {section} insn {insn}: function too complex to analyze: its per-block states need more than \
         {limit_mib} MiB"
    )]
    TooComplex { section: String, insn: usize, limit_mib: usize },
    #[error(
        "section {section} insn {insn}: program may touch any of the object's {count} maps from the 128th on, \
         more than the {limit} a report lists"
    )]
    TooManyMaps { section: String, insn: usize, count: usize, limit: usize },
    #[error(
        "not analyzed: the object's programs together exceed the analysis budget of {limit} (instructions reached, \
         report entries and their names)"
    )]
    ObjectTooLarge { limit: usize },
    #[error("section {section} insn {insn}: recursive BPF-to-BPF call (the kernel rejects recursion)")]
    Recursion { section: String, insn: usize },
    #[error("section {section} insn {insn}: r{reg} is read before it is set")]
    UninitRegister { section: String, insn: usize, reg: u8 },
    #[error("analysis did not reach a fixpoint in {rounds} rounds")]
    NoFixpoint { rounds: usize },
}

impl AnalysisError {
    /// The kind of an [`crate::InspectError`] reporting this.
    pub fn kind(&self) -> InspectErrorKind {
        use AnalysisError as E;
        match self {
            E::TooManyInsns { .. }
            | E::TooManyFuncs { .. }
            | E::CallTooDeep { .. }
            | E::TooComplex { .. }
            | E::TooManyMaps { .. }
            | E::ObjectTooLarge { .. }
            | E::NoFixpoint { .. } => InspectErrorKind::Limit,
            _ => InspectErrorKind::Code,
        }
    }

    /// The section and instruction offset in it the problem is at, where known.
    pub fn location(&self) -> Option<(&str, usize)> {
        use AnalysisError as E;
        match self {
            E::Insn { section, insn, .. }
            | E::JumpOutOfRange { section, insn, .. }
            | E::JumpIntoLdImm64 { section, insn, .. }
            | E::FallsOffEnd { section, insn }
            | E::CallOutOfRange { section, insn, .. }
            | E::BadEntry { section, insn }
            | E::TooManyInsns { section, insn, .. }
            | E::TooManyFuncs { section, insn, .. }
            | E::CallTooDeep { section, insn, .. }
            | E::TooComplex { section, insn, .. }
            | E::TooManyMaps { section, insn, .. }
            | E::Recursion { section, insn }
            | E::UninitRegister { section, insn, .. } => Some((section, *insn)),
            E::MissingExceptionCallback { .. } | E::ObjectTooLarge { .. } | E::NoFixpoint { .. } => None,
        }
    }
}

// Pointer kinds a value may have.
const SCALAR: u16 = 1 << 0;
const CTX: u16 = 1 << 1;
const STACK: u16 = 1 << 2;
/// A pointer into some caller's stack frame (a stack pointer passed as an argument).
const FOREIGN: u16 = 1 << 3;
const PACKET: u16 = 1 << 4;
/// A BTF-typed kernel pointer: loads through it read kernel memory.
const BTF: u16 = 1 << 5;
const ARENA: u16 = 1 << 6;
const FUNC: u16 = 1 << 7;

/// Map sets are bitmasks; maps at index 127 and above, and maps the object does not name (inner maps, raw fds),
/// share the last bit, which is read as "any of those".
const OTHER_MAPS: u32 = 127;

fn map_bit(i: usize) -> u128 {
    1u128 << (i.min(OTHER_MAPS as usize) as u32)
}

const NO_FUNC: u32 = u32::MAX;
const MANY_FUNCS: u32 = u32::MAX - 1;

/// The abstract value of a register or stack slot. The empty value is "uninitialized".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value {
    kinds: u16,
    /// Offset from the frame pointer, when `kinds` has STACK and it is known.
    stack_off: Option<i32>,
    /// Function id, when `kinds` has FUNC (NO_FUNC / MANY_FUNCS otherwise).
    func: u32,
    map_ptr: u128,
    map_val: u128,
}

impl Value {
    const BOTTOM: Value = Value { kinds: 0, stack_off: None, func: NO_FUNC, map_ptr: 0, map_val: 0 };
    const SCALAR: Value = Value { kinds: SCALAR, ..Value::BOTTOM };

    fn kind(kinds: u16) -> Value {
        Value { kinds, ..Value::BOTTOM }
    }
    fn stack(off: i32) -> Value {
        Value { kinds: STACK, stack_off: Some(off), ..Value::BOTTOM }
    }
    /// Anything a register may hold that matters: not a plain scalar.
    fn is_pointer(&self) -> bool {
        self.kinds & !SCALAR != 0 || self.map_ptr != 0 || self.map_val != 0
    }
    fn join(&self, o: &Value) -> Value {
        let stack_off = match (self.kinds & STACK != 0, o.kinds & STACK != 0) {
            (true, true) if self.stack_off == o.stack_off => self.stack_off,
            (true, true) => None,
            (true, false) => self.stack_off,
            (false, true) => o.stack_off,
            (false, false) => None,
        };
        let func = match (self.func, o.func) {
            (NO_FUNC, f) | (f, NO_FUNC) => f,
            (a, b) if a == b => a,
            _ => MANY_FUNCS,
        };
        Value {
            kinds: self.kinds | o.kinds,
            stack_off,
            func,
            map_ptr: self.map_ptr | o.map_ptr,
            map_val: self.map_val | o.map_val,
        }
    }
    /// The value as seen by a callee: the caller's stack becomes a foreign stack.
    fn into_callee(self) -> Value {
        if self.kinds & STACK != 0 {
            Value { kinds: (self.kinds & !STACK) | FOREIGN, stack_off: None, ..self }
        } else {
            self
        }
    }
    /// A value returned to a caller: a pointer into the callee's frame would be dangling; one into a caller's
    /// frame is (conservatively) somewhere in this caller's own stack.
    fn into_caller(self) -> Value {
        let mut v = self;
        v.kinds &= !STACK;
        if v.kinds & FOREIGN != 0 {
            v.kinds |= STACK;
            v.stack_off = None;
        }
        v
    }
}

/// Abstract machine state: r0-r10 and the pointer-holding stack slots (absent slots hold `stack_rest`).
#[derive(Debug, PartialEq, Eq)]
struct State {
    regs: [Value; 11],
    stack: BTreeMap<i32, Value>,
    stack_rest: Value,
}

impl Clone for State {
    fn clone(&self) -> State {
        State { regs: self.regs, stack: self.stack.clone(), stack_rest: self.stack_rest }
    }
    /// In place, without the temporary the default builds: states are copied on every basic block.
    fn clone_from(&mut self, o: &State) {
        self.regs = o.regs;
        self.stack.clone_from(&o.stack);
        self.stack_rest = o.stack_rest;
    }
}

impl State {
    const BOTTOM: State = State { regs: [Value::BOTTOM; 11], stack: BTreeMap::new(), stack_rest: Value::BOTTOM };

    fn join_from(&mut self, o: &State) -> bool {
        let mut grew = false;
        let mut join = |a: &mut Value, b: &Value| {
            // Joining a value with itself changes nothing, unless it keeps a stale stack offset without STACK
            // (the join drops it): skip the common case.
            if a == b && (a.kinds & STACK != 0 || a.stack_off.is_none()) {
                return;
            }
            let j = a.join(b);
            if j != *a {
                *a = j;
                grew = true;
            }
        };
        for (a, b) in self.regs.iter_mut().zip(o.regs.iter()) {
            join(a, b);
        }
        for (off, v) in &o.stack {
            let rest = self.stack_rest;
            join(self.stack.entry(*off).or_insert(rest), v);
        }
        for (off, v) in self.stack.iter_mut() {
            if !o.stack.contains_key(off) {
                join(v, &o.stack_rest);
            }
        }
        join(&mut self.stack_rest, &o.stack_rest);
        grew
    }
    fn slot(&self, off: i32) -> Value {
        self.stack.get(&off).copied().unwrap_or(self.stack_rest)
    }
    fn all_slots(&self) -> Value {
        self.stack.values().fold(self.stack_rest, |acc, v| acc.join(v))
    }
    /// A write the analysis cannot place: every slot may now hold `v`.
    fn weak_update_all(&mut self, v: &Value) {
        for slot in self.stack.values_mut() {
            *slot = slot.join(v);
        }
        self.stack_rest = self.stack_rest.join(v);
    }
}

/// One function of the program.
struct Func {
    section: usize,
    start: usize,
    end: usize,
    /// First instruction in the linked program, and of its instructions in [`Buffers::ops`] and `blocks`.
    layout: u32,
    input: [Value; 5],
    ret: Value,
    /// A call or callback site feeds it: only then are its register reads checked.
    entered: bool,
    /// Its address is loaded somewhere (a callback).
    address_taken: bool,
    n_blocks: usize,
    /// Needs (re-)interpretation: its inputs, a callee's result or the foreign-stack contents changed.
    dirty: bool,
    /// Functions that call it, to revisit when its result grows.
    callers: Vec<usize>,
    /// It loads through a foreign stack pointer or passes its own stack to a callee.
    reads_foreign: bool,
    /// First read of an unset register in its latest interpretation.
    uninit: Option<AnalysisError>,
}

const NOT_A_BLOCK: u32 = u32::MAX;

/// What [`MAX_STATE_BYTES`] counts of the stack slots of a block's entry state, beyond the state itself: a B-tree
/// node of 11 slots, holding at least 5 unless it is the root, per 5 slots.
fn slot_bytes(slots: usize) -> usize {
    const NODE: usize = 8 + 11 * std::mem::size_of::<(i32, Value)>();
    slots.div_ceil(5) * NODE
}

/// Numbers the basic blocks of a decoded function (the entry, jump targets, and what follows a jump or exit):
/// `blocks[i]` becomes the block starting at instruction `i`, NOT_A_BLOCK if none does. Returns the count.
fn number_blocks(ops: &[Option<Op>], blocks: &mut [u32]) -> usize {
    // Leaders are marked 0 first, then numbered in order.
    blocks.fill(NOT_A_BLOCK);
    if let Some(l) = blocks.first_mut() {
        *l = 0;
    }
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op else { continue };
        let next = i + op.slots();
        let target = match *op {
            Op::Ja { off, .. } => Some(rel(i, 1, off as i64)),
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
    let mut n = 0u32;
    for b in blocks.iter_mut().filter(|b| **b != NOT_A_BLOCK) {
        *b = n;
        n += 1;
    }
    n as usize
}

/// What the analysis found, accumulated across the fixpoint (only ever grows). The lists may repeat entries
/// (an instruction is interpreted again when its inputs grow): `finish` sorts and deduplicates them, which is
/// cheaper than keeping ordered sets on every step.
#[derive(Default)]
struct Facts<'o> {
    /// Evidence instructions by `Capability as usize`.
    evidence: [Vec<u32>; Capability::ALL.len()],
    helpers: Vec<u32>,
    kfuncs: Vec<&'o str>,
    /// Maps read and written, as map sets (bit 127: every map from 127 on), only of maps the object has.
    reads: u128,
    writes: u128,
    unknown_map: (bool, bool),
    /// Prog arrays per tail call instruction; an instruction may appear more than once.
    tail_calls: Vec<(u32, u128)>,
}

impl Facts<'_> {
    fn class(&mut self, c: Capability, at: u32) {
        if let Some(list) = self.evidence.get_mut(c as usize) {
            if list.last() != Some(&at) {
                list.push(at);
            }
        }
    }
    fn classes(&mut self, set: ClassSet, at: u32) {
        // The set bits, in `Capability::ALL` (bit) order, as `ClassSet::iter` gives them.
        let mut bits = set.0;
        while bits != 0 {
            if let Some(&c) = Capability::ALL.get(bits.trailing_zeros() as usize) {
                self.class(c, at);
            }
            bits &= bits - 1;
        }
    }
    fn maps(&mut self, set: u128, n_maps: usize, write: bool) {
        // The bits of maps the object has: those below `n_maps`, and the shared last bit once maps reach it.
        let named = if n_maps > OTHER_MAPS as usize { u128::MAX } else { (1u128 << n_maps) - 1 };
        if write {
            self.writes |= set & named;
        } else {
            self.reads |= set & named;
        }
        // The shared bit with fewer maps: one the object does not name.
        if set & map_bit(OTHER_MAPS as usize) & !named != 0 {
            if write {
                self.unknown_map.1 = true;
            } else {
                self.unknown_map.0 = true;
            }
        }
    }
}

/// The analysis' working memory that does not borrow the object. Kept between analyses (see [`BUFFERS`]): most
/// programs are small, and allocating these for each cost more than interpreting it.
#[derive(Default)]
struct Buffers {
    /// Decoded instructions of every function, function `f`'s at `f.layout..` (one buffer, not one per function).
    ops: Vec<Option<Op>>,
    /// Indexed like `ops`: the number (within its function) of the basic block an instruction starts, or
    /// NOT_A_BLOCK.
    blocks: Vec<u32>,
    /// `interpret`'s: each block's entry state (valid where `seen`), the blocks to visit, and which of them are
    /// queued.
    states: Vec<State>,
    seen: Vec<bool>,
    work: VecDeque<usize>,
    queued: Vec<bool>,
    /// The functions, and their ids by (section, start instruction), sorted.
    funcs: Vec<Func>,
    by_loc: Vec<((usize, usize), usize)>,
    /// `discover`'s: functions still to decode; local calls (caller, callee location, pc) and function addresses
    /// found in the code.
    queue: VecDeque<(usize, usize)>,
    calls: Vec<(usize, (usize, usize), usize)>,
    addresses: Vec<(usize, usize)>,
}

impl Buffers {
    /// Frees what a big program left behind: kept, it would only make later programs' memory come from fresh
    /// pages, and those page faults cost more than the allocations saved.
    fn trim(&mut self) {
        if self.ops.capacity() > 4096 {
            self.ops = Vec::new();
            self.blocks = Vec::new();
        }
        if self.states.capacity() > 16 {
            self.states = Vec::new();
        }
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.blocks.clear();
        // `states` keeps its length: entries are overwritten before use (see `seen`), and refilling them costs.
        self.seen.clear();
        self.work.clear();
        self.queued.clear();
        self.funcs.clear();
        self.by_loc.clear();
        self.queue.clear();
        self.calls.clear();
        self.addresses.clear();
    }

    /// The function at `loc`: (section, start instruction).
    fn func_at(&self, loc: (usize, usize)) -> Option<usize> {
        let i = self.by_loc.binary_search_by_key(&loc, |&(l, _)| l).ok()?;
        self.by_loc.get(i).map(|&(_, f)| f)
    }
}

/// Programs up to this many instructions leave their working buffers for the next analysis on the thread.
const RETAINED_INSNS: usize = 1 << 16;

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

struct Ctx<'o, 'b> {
    obj: &'o Object,
    prog: &'o ProgramEntry,
    /// Taken from `buf` for the analysis (it is used everywhere).
    funcs: Vec<Func>,
    buf: &'b mut Buffers,
    facts: Facts<'o>,
    /// Everything ever stored to a stack slot: what a load through a foreign stack pointer may see.
    foreign: Value,
    /// What is left of the object's budget ([`MAX_OBJECT_WORK`]) for this program's instructions.
    budget: usize,
}

/// Analyzes one program of `obj` into its capability metadata.
///
/// Limits, by design: a function's inputs are the join over its call sites (context-insensitive); branch
/// conditions do not refine values; a pointer stored into map or context memory is not tracked (the verifier only
/// lets programs spill pointers to the stack, and kptrs loaded from maps are treated as BTF pointers).
pub fn analyze(obj: &Object, prog: &ProgramEntry) -> Result<ProgramMetadata, AnalysisError> {
    let mut unlimited = usize::MAX;
    analyze_within(obj, prog, &mut unlimited).map(|a| a.metadata)
}

/// A program's metadata (its [`ProgramMetadata::kernel_view`] left empty) and the linked layout it was found in,
/// from which [`crate::kernel_view::compute`] derives the gate's view beside the analysis.
#[derive(Debug, Clone)]
pub struct Analyzed {
    /// What the analysis found.
    pub metadata: ProgramMetadata,
    /// The linked program's functions, `(section, start, end)` in layout order (the entry function first).
    pub funcs: Vec<(usize, usize, usize)>,
    /// Calls between them: (call instruction, callee's first instruction), both linked indexes.
    pub calls: Vec<(u32, u32)>,
}

/// [`analyze`], charging the instructions the program reaches and the maps it lists to `budget`, which the
/// programs of one object share (start it at [`MAX_OBJECT_WORK`]). A program that would exceed what is left is
/// not analyzed ([`AnalysisError::ObjectTooLarge`]).
pub fn analyze_within(obj: &Object, prog: &ProgramEntry, budget: &mut usize) -> Result<Analyzed, AnalysisError> {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let result = analyze_with(obj, prog, &mut buf, budget);
            // Keep the buffers of ordinary programs only: a thread that once analyzed a huge one should not hold
            // its memory for good.
            if buf.ops.capacity() > RETAINED_INSNS {
                *buf = Buffers::default();
            }
            result
        }
        // Only if an analysis were running on this thread already: it keeps its buffers.
        Err(_) => analyze_with(obj, prog, &mut Buffers::default(), budget),
    })
}

fn analyze_with(
    obj: &Object,
    prog: &ProgramEntry,
    buf: &mut Buffers,
    budget: &mut usize,
) -> Result<Analyzed, AnalysisError> {
    buf.clear();
    let funcs = std::mem::take(&mut buf.funcs);
    let mut cx = Ctx { obj, prog, funcs, buf, facts: Facts::default(), foreign: Value::BOTTOM, budget: *budget };
    let result = cx.run();
    // Reached instructions are charged whether or not the analysis succeeded: decoding them was the work.
    let reached: usize = cx.funcs.iter().map(|f| f.end - f.start).sum();
    let report = result.as_ref().map_or(ENTRY_WORK + prog.name.len(), |a| report_work(&a.metadata));
    *budget = budget.saturating_sub(reached.saturating_add(report));
    cx.buf.funcs = cx.funcs;
    cx.buf.trim();
    result
}

impl Ctx<'_, '_> {
    fn run(&mut self) -> Result<Analyzed, AnalysisError> {
        let cx = self;
        cx.discover()?;
        let mut entry_input = [Value::BOTTOM; 5];
        entry_input[0] = Value::kind(CTX);
        cx.funcs[0].input = entry_input;
        cx.funcs[0].entered = true;
        cx.funcs[0].dirty = true;
        cx.fixpoint()?;
        // Callbacks handed to something the analysis does not model get what the kernel may pass them.
        let unfed: Vec<usize> = (0..cx.funcs.len())
            .filter(|&f| cx.funcs[f].address_taken && cx.funcs[f].input.iter().all(|v| *v == Value::BOTTOM))
            .collect();
        if !unfed.is_empty() {
            for f in unfed {
                cx.feed(f, [Value::kind(SCALAR | BTF); 5]);
            }
            cx.fixpoint()?;
        }
        if let Some(e) = cx.funcs.iter_mut().find_map(|f| f.uninit.take()) {
            return Err(e);
        }
        // Listing every map of the shared bit would make one program's report as long as the object's map table
        // (and the next program's again); naming none would let its writes pass map rules as if unattributed.
        let shared = cx.obj.maps.len().saturating_sub(OTHER_MAPS as usize);
        if (cx.facts.reads | cx.facts.writes) & map_bit(OTHER_MAPS as usize) != 0 && shared > MAX_SHARED_MAPS {
            return Err(AnalysisError::TooManyMaps {
                section: cx.section_name(cx.prog.section),
                insn: cx.prog.start,
                count: shared,
                limit: MAX_SHARED_MAPS,
            });
        }
        Ok(cx.finish())
    }

    /// Re-interprets functions whose inputs, callees' results or the foreign-stack contents changed, until none
    /// did.
    fn fixpoint(&mut self) -> Result<(), AnalysisError> {
        for _ in 0..MAX_ROUNDS {
            if !self.funcs.iter().any(|f| f.dirty) {
                return Ok(());
            }
            for f in 0..self.funcs.len() {
                if std::mem::take(&mut self.funcs[f].dirty) {
                    self.interpret(f)?;
                }
            }
        }
        Err(AnalysisError::NoFixpoint { rounds: MAX_ROUNDS })
    }

    /// Everything that depends on the foreign-stack contents must be looked at again.
    fn foreign_grew(&mut self) {
        for func in &mut self.funcs {
            func.dirty |= func.reads_foreign;
        }
    }

    /// Records the first read of a register no path has set (the verifier rejects it). Only a function's last
    /// interpretation counts, which ran on its final inputs.
    fn read(&mut self, f: usize, pc: usize, st: &State, reg: u8) {
        if self.funcs[f].uninit.is_none() && st.regs.get(usize::from(reg)) == Some(&Value::BOTTOM) {
            let section = self.section_name(self.funcs[f].section);
            self.funcs[f].uninit = Some(AnalysisError::UninitRegister { section, insn: pc, reg });
        }
    }

    fn section_name(&self, s: usize) -> String {
        self.obj.sections.get(s).map(|c| c.name.clone()).unwrap_or_default()
    }

    /// Finds every function the program reaches, in linked order, and decodes it.
    fn discover(&mut self) -> Result<(), AnalysisError> {
        let entry = (self.prog.section, self.prog.start);
        // An exception callback is reached through no instruction: the kernel calls it when bpf_throw unwinds.
        // Queued as a function whose address is taken, so it is analyzed with what any caller could pass.
        let entry_name = self.obj.sections[entry.0].func_name(entry.1).unwrap_or(&self.prog.name);
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
            self.check_recursion(&calls)
        });
        self.buf.queue = queue;
        self.buf.calls = calls;
        self.buf.addresses = addresses;
        result
    }

    fn discover_all(
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
                return Err(AnalysisError::ObjectTooLarge { limit: MAX_OBJECT_WORK });
            }
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
            let n_blocks = number_blocks(ops, self.buf.blocks.get_mut(base..).unwrap_or_default());
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
    fn check_recursion(&self, calls: &[(usize, (usize, usize), usize)]) -> Result<(), AnalysisError> {
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
    fn code_target(&self, sec: usize, pc: usize, op: &Op) -> Result<Option<(usize, usize)>, AnalysisError> {
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
                    Imm64::Const(v) => i64::from(*v as i32),
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

    fn at(&self, f: usize, pc: usize) -> u32 {
        let func = &self.funcs[f];
        func.layout + (pc - func.start) as u32
    }

    /// Interprets function `f` from its current inputs, updating facts, callee inputs and its return value.
    fn interpret(&mut self, f: usize) -> Result<(), AnalysisError> {
        let start = self.funcs[f].start;
        let len = self.funcs[f].end - start;
        let base = self.funcs[f].layout as usize;
        self.funcs[f].uninit = None;
        let mut st = State { regs: [Value::BOTTOM; 11], stack: BTreeMap::new(), stack_rest: Value::SCALAR };
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
        // The state at the start of each basic block, by block number; the buffers are taken for the duration so
        // that `step` can borrow `self` mutably.
        let mut states = std::mem::take(&mut self.buf.states);
        let mut seen = std::mem::take(&mut self.buf.seen);
        let mut work = std::mem::take(&mut self.buf.work);
        let mut queued = std::mem::take(&mut self.buf.queued);
        let n_blocks = self.funcs[f].n_blocks;
        // The bytes of the entry states kept ([`MAX_STATE_BYTES`]): one per block, then their stack slots.
        let mut kept = n_blocks.saturating_mul(std::mem::size_of::<State>());
        let mut too_big = kept > MAX_STATE_BYTES;
        // Entries past `n_blocks` and those not `seen` are left over from before, unused.
        if states.len() < n_blocks && !too_big {
            states.resize(n_blocks, State::BOTTOM);
        }
        seen.clear();
        seen.resize(n_blocks, false);
        work.clear();
        queued.clear();
        queued.resize(n_blocks, false);
        if let (Some(s), Some(v), Some(q), false) = (states.first_mut(), seen.first_mut(), queued.first_mut(), too_big)
        {
            s.clone_from(&st);
            *v = true;
            *q = true;
            work.push_back(0);
        }
        while let Some(leader) = work.pop_front() {
            if kept > MAX_STATE_BYTES {
                too_big = true;
                break;
            }
            let block = block_at(self, leader) as usize;
            let Some(q) = queued.get_mut(block) else { continue };
            *q = false;
            match (states.get(block), seen.get(block)) {
                (Some(entry), Some(true)) => st.clone_from(entry),
                _ => continue,
            }
            let mut i = leader;
            while let Some(op) = op_at(self, i) {
                self.step(f, start + i, &op, &mut st);
                let next = i + op.slots();
                let succs: [Option<usize>; 2] = match op {
                    Op::Exit => [None, None],
                    Op::Ja { off, .. } => [Some(rel(i, 1, off as i64)), None],
                    Op::Jump { off, .. } | Op::MayGoto { off } => [Some(next), Some(rel(i, 1, i64::from(off)))],
                    // Straight-line code continues in this block unless `next` starts another.
                    _ if next < len && block_at(self, next) == NOT_A_BLOCK => {
                        i = next;
                        continue;
                    }
                    _ => [Some(next), None],
                };
                for s in succs.into_iter().flatten() {
                    // Targets were checked when decoding: every successor in range starts a block.
                    let b = block_at(self, s) as usize;
                    let (Some(entry), Some(v), Some(q)) = (states.get_mut(b), seen.get_mut(b), queued.get_mut(b))
                    else {
                        continue;
                    };
                    let grew = if *v {
                        let slots = entry.stack.len();
                        let grew = entry.join_from(&st);
                        kept += slot_bytes(entry.stack.len()).saturating_sub(slot_bytes(slots));
                        grew
                    } else {
                        entry.clone_from(&st);
                        kept += slot_bytes(entry.stack.len());
                        *v = true;
                        true
                    };
                    if grew && !*q {
                        *q = true;
                        work.push_back(s);
                    }
                }
                break;
            }
        }
        if too_big {
            // Not kept for the next program: that is the memory the limit is about.
            states = Vec::new();
        }
        self.buf.states = states;
        self.buf.seen = seen;
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
        Ok(())
    }

    fn step(&mut self, f: usize, pc: usize, op: &Op, st: &mut State) {
        let at = self.at(f, pc);
        let n_maps = self.obj.maps.len();
        let uses = match *op {
            Op::Call(CallTarget::Indirect(r)) => 1 << r,
            // The verifier wants r0 set at the exit of the entry, of global functions and of callbacks only: a
            // static subprogram (a `void` one) may return nothing, which matters only if its caller reads r0.
            Op::Exit if !self.exit_reads_r0(f) => 0,
            _ => op.uses(),
        };
        // Only the first read of an unset register is recorded: once one is, there is nothing to check.
        if self.funcs[f].uninit.is_none() {
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
    fn fetch(&mut self, f: usize, at: u32, st: &State, base: u8, off: i16, size: Size) -> Value {
        self.funcs[f].reads_foreign |= st.regs[base as usize].kinds & FOREIGN != 0;
        self.load(at, st, base, off, size)
    }

    /// Whether the verifier requires r0 to be set at an exit of function `f`: the entry function, a global
    /// function (checked on its own, check_return_code) or a callback (prepare_func_exit), not a static
    /// subprogram. Without a symbol to tell, it is required, as before.
    fn exit_reads_r0(&self, f: usize) -> bool {
        let func = &self.funcs[f];
        if f == 0 || func.address_taken {
            return true;
        }
        let Some(cs) = self.obj.sections.get(func.section) else { return true };
        let i = cs.funcs.partition_point(|s| s.start < func.start);
        cs.funcs.get(i).filter(|s| s.start == func.start).is_none_or(|s| s.global)
    }

    #[inline(never)]
    fn ld_imm64(&mut self, f: usize, pc: usize, value: Imm64) -> Value {
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
                    Ok(Some(t)) => Value {
                        kinds: FUNC,
                        func: self.buf.func_at(t).map(|i| i as u32).unwrap_or(MANY_FUNCS),
                        ..Value::BOTTOM
                    },
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
            (None, Imm64::Const(_)) => Value::SCALAR,
        }
    }

    fn load(&mut self, at: u32, st: &State, src: u8, off: i16, size: Size) -> Value {
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
    fn ctx_load(&self, off: i32, wide: bool) -> Value {
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

    fn store(&mut self, at: u32, st: &mut State, dst: u8, off: i16, size: Size, v: Value) {
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

    fn arena_write(&mut self, at: u32) {
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
    fn call(&mut self, f: usize, pc: usize, at: u32, target: CallTarget, st: &mut State, n_maps: usize) {
        let args: [Value; 5] = [st.regs[1], st.regs[2], st.regs[3], st.regs[4], st.regs[5]];
        let escapes = args.iter().any(|a| a.kinds & STACK != 0);
        // In an object a kfunc call is `call -1` (src_reg 1 or 2) relocated against an undefined symbol.
        let sec = self.funcs[f].section;
        let obj = self.obj;
        let ret = if let Some(RelocTarget::Extern { name }) = obj.sections[sec].relocs.get(&pc) {
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

    fn call_target(
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

    fn kfunc(&mut self, at: u32, name: &str, args: &[Value; 5], n_maps: usize) -> Value {
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
    fn effects(
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
    fn callback(&mut self, helper: &str, cb: Value, args: &[Value; 5]) {
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

    fn feed(&mut self, callee: usize, input: [Value; 5]) {
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

    fn finish(&mut self) -> Analyzed {
        let obj = self.obj;
        let prog = self.prog;
        let info = &prog.info;
        // fmod_ret programs replace the traced function's return value by construction.
        if info.attach_type == Some(AttachType::ModifyReturn) {
            self.facts.class(Capability::OverrideReturn, 0);
        }
        let mut facts = std::mem::take(&mut self.facts);
        let name_of = |i: usize| obj.maps.get(i).map(|m| m.name.clone()).unwrap_or_else(|| UNKNOWN_MAP.into());
        // One entry per map name, sorted by name (maps sharing a name share an entry).
        let (reads, writes) = (facts.reads, facts.writes);
        let mut maps: Vec<MapAccess> = Vec::new();
        let mut access = |i: usize| {
            let (read, write) = (reads & map_bit(i) != 0, writes & map_bit(i) != 0);
            maps.push(MapAccess { name: name_of(i), read, write });
        };
        let mut low = (reads | writes) & (map_bit(OTHER_MAPS as usize) - 1);
        while low != 0 {
            access(low.trailing_zeros() as usize);
            low &= low - 1;
        }
        // At most MAX_SHARED_MAPS of them (checked in `run`).
        if (reads | writes) & map_bit(OTHER_MAPS as usize) != 0 {
            (OTHER_MAPS as usize..obj.maps.len()).for_each(&mut access);
        }
        if facts.unknown_map.0 || facts.unknown_map.1 {
            let (read, write) = facts.unknown_map;
            maps.push(MapAccess { name: UNKNOWN_MAP.into(), read, write });
        }
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        maps.dedup_by(|dup, kept| {
            let same = dup.name == kept.name;
            if same {
                kept.read |= dup.read;
                kept.write |= dup.write;
            }
            same
        });
        facts.tail_calls.sort_by_key(|&(insn, _)| insn);
        facts.tail_calls.dedup_by(|dup, kept| {
            let same = dup.0 == kept.0;
            if same {
                kept.1 |= dup.1;
            }
            same
        });
        let named = if obj.maps.len() >= OTHER_MAPS as usize {
            map_bit(OTHER_MAPS as usize) - 1
        } else {
            (1u128 << obj.maps.len()) - 1
        };
        let tail_calls = facts
            .tail_calls
            .iter()
            .map(|&(insn, set)| {
                // Named only when exactly one map the object names (below the shared bit) may be the prog array.
                let set = set & named;
                let map = (set.count_ones() == 1).then(|| name_of(set.trailing_zeros() as usize));
                TailCall { insn, map }
            })
            .collect();
        let subprograms = self
            .funcs
            .iter()
            .skip(1)
            .map(|f| Subprogram {
                name: match obj.sections[f.section].func_name(f.start) {
                    Some(name) => name.to_owned(),
                    None => format!("{}+{}", obj.sections[f.section].name, f.start),
                },
                section: obj.sections[f.section].name.clone(),
                start: f.layout,
                section_offset: f.start as u32,
            })
            .collect();
        let insn_count = self.funcs.iter().map(|f| (f.end - f.start) as u32).sum();
        let mut capabilities = Vec::new();
        let mut evidence = BTreeMap::new();
        for (c, mut at) in Capability::ALL.into_iter().zip(facts.evidence) {
            if !at.is_empty() {
                at.sort_unstable();
                at.dedup();
                capabilities.push(c);
                evidence.insert(c, at);
            }
        }
        facts.helpers.sort_unstable();
        facts.helpers.dedup();
        facts.kfuncs.sort_unstable();
        facts.kfuncs.dedup();
        let calls: Vec<(u32, u32)> = self
            .buf
            .calls
            .iter()
            .filter_map(|&(caller, target, pc)| {
                let site = self.at(caller, pc);
                Some((site, self.funcs.get(self.buf.func_at(target)?)?.layout))
            })
            .collect();
        let metadata = ProgramMetadata {
            name: prog.name.clone(),
            section: obj.sections[prog.section].name.clone(),
            section_offset: prog.start as u32,
            prog_type: info.prog_type,
            attach_type: info.attach_type,
            attach_target: info.attach_target.clone(),
            sleepable: info.sleepable,
            unspec_reason: info.unspec_reason.clone(),
            license: obj.license.clone(),
            insn_count,
            helpers: facts
                .helpers
                .iter()
                .map(|&id| HelperRef {
                    id,
                    name: helpers::helper(id).map(|h| h.name.to_owned()).unwrap_or_else(|| "unknown".into()),
                })
                .collect(),
            kfuncs: facts.kfuncs.iter().map(|&k| k.to_owned()).collect(),
            subprograms,
            tail_calls,
            maps,
            capabilities,
            evidence,
            kernel_view: KernelView::default(),
        };
        Analyzed { metadata, funcs: self.funcs.iter().map(|f| (f.section, f.start, f.end)).collect(), calls }
    }
}

/// What a report counts against [`MAX_OBJECT_WORK`]: [`ENTRY_WORK`] per entry, a unit per byte of its names and
/// per evidence instruction.
fn report_work(m: &ProgramMetadata) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let program = ENTRY_WORK + m.name.len() + m.section.len() + opt(&m.attach_target) + opt(&m.unspec_reason);
    let subprograms: usize = m.subprograms.iter().map(|s| ENTRY_WORK + s.name.len() + s.section.len()).sum();
    let maps: usize = m.maps.iter().map(|a| ENTRY_WORK + a.name.len()).sum();
    let kfuncs: usize = m.kfuncs.iter().map(|k| ENTRY_WORK + k.len()).sum();
    let tail_calls: usize = m.tail_calls.iter().map(|t| ENTRY_WORK + opt(&t.map)).sum();
    let evidence: usize = m.evidence.values().map(Vec::len).sum();
    program + opt(&m.license) + subprograms + maps + kfuncs + tail_calls + evidence + ENTRY_WORK * m.helpers.len()
}

/// The frame offset of an access at `off` from a stack pointer at `base`, if it is inside the kernel's frame
/// ([`MAX_STACK`]) and, for an 8-byte access, 8-byte aligned (the verifier wants stack accesses aligned); any
/// other access is treated as one at an unknown offset. Only 8-byte accesses move pointers, so at most 64 slots
/// can hold one.
fn in_frame(base: i32, off: i16, size: Size) -> Option<i32> {
    let aligned = |o: &i32| size != Size::DW || o % 8 == 0;
    base.checked_add(i32::from(off)).filter(|o| (-MAX_STACK..0).contains(o) && aligned(o))
}

fn rel(i: usize, step: usize, off: i64) -> usize {
    let t = i as i64 + step as i64 + off;
    usize::try_from(t).unwrap_or(usize::MAX)
}

/// Decodes a function's instructions, appended to `out`, and checks its control flow stays inside it.
fn decode_func(
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

#[cfg(test)]
mod tests_support {
    use std::collections::BTreeMap;

    use super::*;
    use crate::elf::{CodeSection, Func as ElfFunc};
    use crate::insn::RawInsn;
    use crate::metadata::{MapDef, MapKind};

    pub(super) fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
        RawInsn { code, dst, src, off, imm }
    }
    pub(super) fn mov(dst: u8, src: u8) -> RawInsn {
        i(0xbf, dst, src, 0, 0)
    }
    pub(super) fn movi(dst: u8, imm: i32) -> RawInsn {
        i(0xb7, dst, 0, 0, imm)
    }
    pub(super) fn addi(dst: u8, imm: i32) -> RawInsn {
        i(0x07, dst, 0, 0, imm)
    }
    pub(super) fn ldx(dst: u8, src: u8, off: i16) -> RawInsn {
        i(0x79, dst, src, off, 0)
    }
    pub(super) fn stx(dst: u8, off: i16, src: u8) -> RawInsn {
        i(0x7b, dst, src, off, 0)
    }
    pub(super) fn call(id: i32) -> RawInsn {
        i(0x85, 0, 0, 0, id)
    }
    pub(super) fn call_local(rel: i32) -> RawInsn {
        i(0x85, 0, 1, 0, rel)
    }
    pub(super) fn exit() -> RawInsn {
        i(0x95, 0, 0, 0, 0)
    }
    /// `r{dst} = map 0`: the two ld_imm64 slots; the caller adds the relocation.
    pub(super) fn ld_map(dst: u8) -> [RawInsn; 2] {
        [i(0x18, dst, 0, 0, 0), i(0, 0, 0, 0, 0)]
    }

    /// An object with one kprobe section holding `insns`, map 0 (`m`, an array), relocations of `ld_map`
    /// slots at `map_relocs`, and function symbols at `funcs` (the program is the first).
    pub(super) fn object(insns: Vec<RawInsn>, map_relocs: &[usize], funcs: &[usize]) -> (Object, ProgramEntry) {
        let len = insns.len();
        let mut relocs = BTreeMap::new();
        for &at in map_relocs {
            relocs.insert(at, RelocTarget::Map(0));
        }
        let funcs: Vec<ElfFunc> = funcs
            .iter()
            .enumerate()
            .map(|(n, &start)| ElfFunc { name: format!("f{n}"), start, end: 0, global: n == 0 })
            .collect();
        let mut cs = CodeSection { elf_index: 1, name: "kprobe/x".into(), insns, relocs, funcs };
        let bounds: Vec<usize> = cs.funcs.iter().map(|f| f.start).collect();
        for (n, f) in cs.funcs.iter_mut().enumerate() {
            f.end = bounds.get(n + 1).copied().unwrap_or(len);
        }
        let map = MapDef {
            name: "m".into(),
            kind: MapKind::Btf,
            map_type: 2,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            flags: 0,
            pinning: 0,
            read_only: false,
            kptr: false,
        };
        let obj = Object {
            little_endian: true,
            license: None,
            maps: vec![map],
            sections: vec![cs],
            programs: Vec::new(),
            externs: HashMap::new(),
            exception_callbacks: Vec::new(),
            errors: Vec::new(),
            dropped_errors: 0,
            by_name: Vec::new(),
        };
        let prog = ProgramEntry { name: "f0".into(), section: 0, start: 0, info: crate::section::classify("kprobe/x") };
        (obj, prog)
    }

    pub(super) fn run(
        insns: Vec<RawInsn>,
        map_relocs: &[usize],
        funcs: &[usize],
    ) -> Result<ProgramMetadata, AnalysisError> {
        let (obj, prog) = object(insns, map_relocs, funcs);
        analyze(&obj, &prog)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::insn::RawInsn;

    /// r0 = bpf_map_lookup_elem(&m, r10-8) with a null check, as the first 9 instructions.
    fn lookup() -> Vec<RawInsn> {
        let [a, b] = ld_map(1);
        vec![movi(2, 0), stx(10, -8, 2), a, b, mov(2, 10), addi(2, -8), call(1), i(0x55, 0, 0, 1, 0), exit()]
    }

    #[test]
    fn write_through_a_pointer_spilled_to_the_stack_is_a_map_write() {
        let mut code = lookup();
        // spill, clobber r1-r5 with a call, fill, store through the filled pointer
        code.extend([stx(10, -16, 0), call(5), ldx(1, 10, -16), stx(1, 0, 0), movi(0, 0), exit()]);
        let meta = run(code, &[2], &[0]).expect("analyzes");
        assert_eq!(meta.maps, vec![MapAccess { name: "m".into(), read: true, write: true }]);
        assert_eq!(meta.evidence[&Capability::MapWrite], vec![12]);
    }

    #[test]
    fn stores_to_the_stack_are_not_map_writes() {
        let mut code = lookup();
        code.extend([ldx(3, 0, 0), stx(10, -24, 3), movi(0, 0), exit()]);
        let meta = run(code, &[2], &[0]).expect("analyzes");
        assert!(!meta.capabilities.contains(&Capability::MapWrite), "{:?}", meta.capabilities);
        assert_eq!(meta.maps, vec![MapAccess { name: "m".into(), read: true, write: false }]);
    }

    #[test]
    fn a_callee_writing_through_a_spilled_pointer_in_its_callers_frame_is_found() {
        let mut code = lookup();
        // main: spill the value pointer, pass the slot's address to f at 15.
        code.extend([stx(10, -16, 0), mov(1, 10), addi(1, -16), call_local(2), movi(0, 0), exit()]);
        // f: fill the caller's slot through its argument and store through it.
        code.extend([ldx(2, 1, 0), stx(2, 0, 10), movi(0, 0), exit()]);
        let meta = run(code, &[2], &[0, 15]).expect("analyzes");
        assert!(meta.maps.iter().any(|m| m.name == "m" && m.write), "{:?}", meta.maps);
        assert_eq!(meta.subprograms.len(), 1);
        assert_eq!(meta.evidence[&Capability::MapWrite], vec![15 + 1]);
    }

    /// libbpf appends a subprogram where it is first referred to and what it refers to right after it: main calls
    /// a then b, a calls c, so the kernel sees main, a, c, b (breadth first would be main, a, b, c).
    #[test]
    fn subprograms_are_laid_out_depth_first_as_libbpf_does() {
        let code = vec![
            call_local(3), // 0: a at 4
            call_local(5), // 1: b at 7
            movi(0, 0),
            exit(),
            call_local(4), // 4 (a): c at 9
            movi(0, 0),
            exit(),
            movi(0, 0), // 7 (b)
            exit(),
            movi(0, 0), // 9 (c)
            exit(),
        ];
        let meta = run(code, &[], &[0, 4, 7, 9]).expect("analyzes");
        let layout: Vec<_> = meta.subprograms.iter().map(|s| (s.section_offset, s.start)).collect();
        assert_eq!(layout, vec![(4, 4), (9, 7), (7, 9)]);
    }

    #[test]
    fn a_callee_spilling_into_its_callers_frame_is_found() {
        // main: pass r10-8 to f; afterwards fill the slot and store through it.
        let mut code = vec![mov(1, 10), addi(1, -8), call_local(4), ldx(1, 10, -8), stx(1, 0, 10), movi(0, 0), exit()];
        // f at 7: r6 = arg; r0 = lookup; *(arg) = r0
        let [a, b] = ld_map(1);
        code.extend([mov(6, 1), movi(2, 0), stx(10, -8, 2), a, b, mov(2, 10), addi(2, -8), call(1)]);
        code.extend([stx(6, 0, 0), movi(0, 0), exit()]);
        // call at 2 targets 2 + 4 + 1 = 7
        let meta = run(code, &[10], &[0, 7]).expect("analyzes");
        assert!(meta.maps.iter().any(|m| m.name == "m" && m.write), "{:?}", meta.maps);
    }

    #[test]
    fn reading_an_unset_register_is_an_error_naming_the_instruction() {
        let err = run(vec![movi(0, 0), mov(0, 3), exit()], &[], &[0]).expect_err("r3 is unset");
        assert_eq!(err, AnalysisError::UninitRegister { section: "kprobe/x".into(), insn: 1, reg: 3 });
        assert_eq!(err.to_string(), "section kprobe/x insn 1: r3 is read before it is set");
        // After a helper call r1-r5 are clobbered.
        let err = run(vec![call(5), mov(0, 1), exit()], &[], &[0]).expect_err("r1 clobbered");
        assert!(matches!(err, AnalysisError::UninitRegister { insn: 1, reg: 1, .. }), "{err}");
    }

    #[test]
    fn malformed_control_flow_is_an_error() {
        let out = run(vec![i(0x05, 0, 0, 5, 0), exit()], &[], &[0]).expect_err("jump out");
        assert!(matches!(out, AnalysisError::JumpOutOfRange { insn: 0, .. }), "{out}");
        let fall = run(vec![movi(0, 0)], &[], &[0]).expect_err("falls off");
        assert!(matches!(fall, AnalysisError::FallsOffEnd { insn: 0, .. }), "{fall}");
        let bad = run(vec![i(0xff, 0, 0, 0, 0), exit()], &[], &[0]).expect_err("bad opcode");
        assert_eq!(bad.to_string(), "section kprobe/x insn 0: invalid opcode 0xff");
        let rec = run(vec![call_local(-1), exit()], &[], &[0]).expect_err("recursion");
        assert!(matches!(rec, AnalysisError::Recursion { insn: 0, .. }), "{rec}");
        let mid = run(vec![i(0x05, 0, 0, 1, 0), i(0x18, 0, 0, 0, 0), i(0, 0, 0, 0, 0), exit()], &[], &[0]);
        assert!(matches!(mid, Err(AnalysisError::JumpIntoLdImm64 { .. })), "{mid:?}");
    }

    #[test]
    fn helper_classes_come_with_their_call_site() {
        let code = vec![movi(1, 9), call(109), movi(0, 0), exit()];
        let meta = run(code, &[], &[0]).expect("analyzes");
        assert_eq!(meta.capabilities, vec![Capability::SendSignal]);
        assert_eq!(meta.evidence[&Capability::SendSignal], vec![1]);
        let unknown = run(vec![call(4000), movi(0, 0), exit()], &[], &[0]).expect("analyzes");
        assert_eq!(unknown.capabilities, vec![Capability::Unknown]);
        assert_eq!(unknown.helpers[0].name, "unknown");
    }

    #[test]
    fn unreached_subprograms_do_not_count() {
        // f1 at 2 sends a signal but nothing calls it.
        let code = vec![movi(0, 0), exit(), movi(1, 9), call(109), exit()];
        let meta = run(code, &[], &[0, 2]).expect("analyzes");
        assert!(meta.capabilities.is_empty());
        assert_eq!(meta.insn_count, 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Random instruction streams (biased towards valid opcodes) never panic and finish quickly.
        #[test]
        fn random_programs_never_panic(
            raw in proptest::collection::vec(
                (proptest::sample::select(vec![0x07u8, 0x0f, 0x05, 0x15, 0x1d, 0x18, 0x61, 0x79, 0x7b, 0x7a,
                    0x85, 0x95, 0xb7, 0xbf, 0xdb, 0xc3, 0x55, 0x25, 0x06, 0xe5, 0x00, 0xff]),
                 0u8..12, 0u8..12, -8i16..8, -3i32..220),
                1..200),
            funcs in proptest::collection::vec(0usize..200, 0..4),
        ) {
            let insns: Vec<RawInsn> = raw.iter().map(|&(c, d, s, o, m)| i(c, d, s, o, m)).collect();
            let len = insns.len();
            let mut starts: Vec<usize> = std::iter::once(0).chain(funcs.into_iter().filter(|&f| f < len)).collect();
            starts.sort();
            starts.dedup();
            let (obj, prog) = object(insns, &[], &starts);
            let start = std::time::Instant::now();
            if let Ok(meta) = analyze(&obj, &prog) {
                for (c, e) in &meta.evidence {
                    proptest::prop_assert!(e.iter().all(|&at| at < meta.insn_count), "{c} evidence out of range");
                }
            }
            proptest::prop_assert!(start.elapsed() < std::time::Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod limits {
    use super::tests_support::*;
    use super::*;

    /// The kernel's instruction limit, with a branch every few instructions: analysis must finish.
    /// Run with `cargo test --release -p bpfgate --lib limits -- --ignored --nocapture` to see the time.
    #[test]
    #[ignore = "slow in debug builds; run in release to measure"]
    fn a_program_at_the_kernel_instruction_limit_is_analyzed() {
        let mut code = Vec::with_capacity(MAX_INSNS);
        code.push(movi(0, 0));
        while code.len() < MAX_INSNS - 8 {
            code.extend([stx(10, -8, 10), ldx(1, 10, -8), addi(0, 1), i(0x15, 0, 0, 1, 7), movi(2, 3)]);
        }
        code.push(exit());
        let start = std::time::Instant::now();
        let meta = run(code, &[], &[0]).expect("analyzes");
        eprintln!("{} insns in {:?}", meta.insn_count, start.elapsed());
        assert!(meta.capabilities.is_empty());
    }
}
