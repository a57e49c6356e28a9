//! Capability analysis: reachable code, then an abstract interpretation of pointer provenance.
//!
//! For each program, the functions it can reach (BPF-to-BPF calls and callback addresses) are laid out the way
//! libbpf links them. Each function is then interpreted over a lattice of pointer kinds per register and per
//! 8-byte stack slot (context, own stack, a caller's stack, packet, BTF-typed kernel memory, map pointers, map
//! values, arena, function addresses), to a fixpoint across functions (context-insensitive: a function's inputs
//! are the join of all its call sites). Stores and helper arguments are then judged by what they may point to,
//! which is what tells a map write through a spilled pointer from a store to the stack.
//!
//! The parts: `lattice` (the abstract values), `reach` (which functions a program reaches and how they are
//! linked), `interp` (the interpretation of each function to a fixpoint), `report` (the metadata built from
//! what it found); this module drives them and holds the limits.
//!
//! The analysis over-approximates: a capability the program cannot have may be reported (for code the verifier
//! would reject anyway), but one it has is not missed, within the limits documented on [`analyze`].

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
use crate::target::Target;

mod interp;
mod lattice;
mod reach;
mod report;

use lattice::*;
use reach::*;
use report::*;

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
/// Bytes of abstract state one function's interpretation may keep at once (the entry states of the blocks an
/// edge can still reach, each with the registers and the stack slots that hold pointers; see `slot_bytes`). A
/// million one-instruction blocks inside one loop, with a frame full of spilled pointers, would need gigabytes;
/// code without loops keeps a few states at a time.
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
    /// Indexed like `ops`: the number (within its function) of the basic block an instruction starts, STATELESS
    /// for a block without an entry state of its own, or NOT_A_BLOCK (see `number_blocks`).
    blocks: Vec<u32>,
    /// `number_blocks`' scratch, indexed like `ops`.
    preds: Vec<u8>,
    /// `interpret`'s: the entry states of blocks (a pool: see `slots`), the blocks to visit (by leader, lowest
    /// first: in instruction order, a block runs after the blocks that jump forward to it, so code without loops
    /// is interpreted once; first in first out, a join reached by a short path first and a long one later was
    /// interpreted again with everything after it, quadratic on unrolled code), and which of them are queued.
    states: Vec<State>,
    /// Per block: its entry state's place in `states`, or that it has none (yet, or any more).
    slots: Vec<u32>,
    /// Places in `states` free for reuse; blocks whose states go once the interpretation passes a position
    /// (their loop region's end); the loop regions (see `loop_regions`).
    free: Vec<u32>,
    release: BinaryHeap<std::cmp::Reverse<(usize, u32)>>,
    regions: Vec<(usize, usize)>,
    work: BinaryHeap<std::cmp::Reverse<usize>>,
    queued: Vec<bool>,
    /// Per block: the first read of an unset register in its latest interpretation (instruction, register).
    uninit: Vec<Option<(usize, u8)>>,
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
    /// pages, and those page faults cost more than the allocations saved. The first 256 entry states stay (each
    /// a few hundred bytes and its stack's vector): freed, the next program with more than a few blocks grew the
    /// pool again from nothing, 2.5% of the instructions of a GCC object of 8 such programs (kprobe_multi).
    fn trim(&mut self) {
        if self.ops.capacity() > 4096 {
            self.ops = Vec::new();
            self.blocks = Vec::new();
            self.preds = Vec::new();
            self.slots = Vec::new();
        }
        if self.states.capacity() > 256 {
            self.states.truncate(256);
            self.states.shrink_to(256);
        }
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.blocks.clear();
        self.preds.clear();
        // `states` keeps its length: entries are overwritten before use (see `slots`), and refilling them costs.
        self.slots.clear();
        self.free.clear();
        self.release.clear();
        self.regions.clear();
        self.work.clear();
        self.queued.clear();
        self.uninit.clear();
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
    obj: &'o Object<'o>,
    prog: &'o ProgramEntry,
    /// Taken from `buf` for the analysis (it is used everywhere).
    funcs: Vec<Func>,
    buf: &'b mut Buffers,
    facts: Facts<'o>,
    /// Everything ever stored to a stack slot: what a load through a foreign stack pointer may see.
    foreign: Value,
    /// What is left of the object's budget ([`MAX_OBJECT_WORK`]) for this program's instructions.
    budget: usize,
    /// The first read of an unset register in the block being interpreted (instruction, register).
    block_uninit: Option<(usize, u8)>,
    /// The largest total of reached instructions `discover` checked against the budget and found within it
    /// (`usize::MAX` once one was not): with any budget at least this large, the analysis runs the same.
    discovered: usize,
    /// Which helper calls can execute on the kernel the program is judged for.
    target: Target,
}

/// Analyzes one program of `obj` into its capability metadata.
///
/// Limits, by design: a function's inputs are the join over its call sites (context-insensitive); branch
/// conditions do not refine values; a pointer stored into map or context memory is not tracked (the verifier only
/// lets programs spill pointers to the stack, and kptrs loaded from maps are treated as BTF pointers).
pub fn analyze(obj: &Object<'_>, prog: &ProgramEntry) -> Result<ProgramMetadata, AnalysisError> {
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
pub fn analyze_within(obj: &Object<'_>, prog: &ProgramEntry, budget: &mut usize) -> Result<Analyzed, AnalysisError> {
    analyze_for(obj, prog, budget, &Target::ANY)
}

/// [`analyze_within`] for a target kernel: helper calls it cannot execute ([`Target::helper_executable`]) grant
/// no class.
pub fn analyze_for(
    obj: &Object<'_>,
    prog: &ProgramEntry,
    budget: &mut usize,
    target: &Target,
) -> Result<Analyzed, AnalysisError> {
    analyze_beside(obj, prog, budget, target, None)
}

/// [`analyze_for`], and `view` of the program's layout on a second thread while the analysis goes on.
fn analyze_beside(
    obj: &Object<'_>,
    prog: &ProgramEntry,
    budget: &mut usize,
    target: &Target,
    view: Option<&View<'_>>,
) -> Result<Analyzed, AnalysisError> {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let result = analyze_with(obj, prog, &mut buf, budget, *target, view).result;
            // Keep the buffers of ordinary programs only: a thread that once analyzed a huge one should not hold
            // its memory for good.
            if buf.ops.capacity() > RETAINED_INSNS {
                *buf = Buffers::default();
            }
            result
        }
        // Only if an analysis were running on this thread already: it keeps its buffers.
        Err(_) => analyze_with(obj, prog, &mut Buffers::default(), budget, *target, view).result,
    })
}

fn analyze_with(
    obj: &Object<'_>,
    prog: &ProgramEntry,
    buf: &mut Buffers,
    budget: &mut usize,
    target: Target,
    view: Option<&View<'_>>,
) -> Outcome {
    buf.clear();
    let funcs = std::mem::take(&mut buf.funcs);
    let mut cx = Ctx {
        obj,
        prog,
        funcs,
        buf,
        facts: Facts::default(),
        foreign: Value::BOTTOM,
        budget: *budget,
        block_uninit: None,
        discovered: 0,
        target,
    };
    let result = match view {
        Some(view) => cx.run_beside(view),
        None => cx.run(),
    };
    // Reached instructions are charged whether or not the analysis succeeded: decoding them was the work.
    let reached: usize = cx.funcs.iter().map(|f| f.end - f.start).sum();
    let report = result.as_ref().map_or(ENTRY_WORK + prog.name.len(), |a| report_work(&a.metadata));
    let charge = reached.saturating_add(report);
    *budget = budget.saturating_sub(charge);
    let discovered = cx.discovered;
    cx.buf.funcs = cx.funcs;
    cx.buf.trim();
    Outcome { result, discovered, charge }
}

/// One program's analysis, with what [`analyze_programs`] needs to charge it in program order.
struct Outcome {
    result: Result<Analyzed, AnalysisError>,
    /// `Ctx::discovered`.
    discovered: usize,
    /// What it charged to the budget.
    charge: usize,
}

/// Threads [`analyze_programs`] uses for the programs of one object; 0: one per core.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads [`analyze_programs`] (and so [`crate::inspect`]) uses for the programs of one object:
/// 0 (the default) one per core, 1 the calling thread only. The reports are the same whatever the number.
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// What a program may do with the worker threads [`analyze_programs`] starts, such as moving each to a CPU of its
/// own: the library makes no system calls itself. Set once, before any analysis ([`set_worker_hooks`]).
#[derive(Clone, Copy, Debug)]
pub struct WorkerHooks {
    /// Runs on the spawning thread before it starts workers; its value goes to each worker's `started`.
    pub spawning: fn() -> usize,
    /// Runs first on each worker, with `spawning`'s value and the worker's number (1, 2, ...; the spawning thread
    /// is worker 0). The spawning thread yields its CPU once after starting each worker, so this runs promptly
    /// even where the kernel keeps a new thread on its parent's CPU.
    pub started: fn(usize, usize),
}

static WORKER_HOOKS: std::sync::OnceLock<WorkerHooks> = std::sync::OnceLock::new();

/// Sets the [`WorkerHooks`]; a second call is ignored (the first hooks stay).
pub fn set_worker_hooks(hooks: WorkerHooks) {
    let _ = WORKER_HOOKS.set(hooks);
}

/// The threads [`set_threads`] asked for, resolved. The core count is read once: it reads files of /proc and
/// /sys (the cgroup's CPU quota), which costs as much as analyzing a small object.
pub fn threads() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match THREADS.load(Ordering::Relaxed) {
        0 => *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get)),
        n => n,
    }
}

/// Objects with less code than this (instructions over all code sections) are analyzed on the calling thread:
/// starting threads, and their first allocations, cost more than such an object's analysis.
pub const PARALLEL_ABOVE: usize = 8192;

/// Analyzes every program of `obj` in order, sharing the object's budget ([`MAX_OBJECT_WORK`]) as
/// [`analyze_within`] one after the other would: the result for each program, up to and including the first
/// [`AnalysisError::ObjectTooLarge`] (the programs after it are not analyzed).
///
/// Large objects are analyzed on [`threads`] threads, longest entry function first, and the results are the
/// same, in the same order. Each program claimed by a thread runs with a budget of what the object's budget
/// leaves after the programs already finished. Then the results are
/// charged in program order: a program whose analysis checked more reached instructions against the budget than
/// the programs before it left is an [`AnalysisError::ObjectTooLarge`], exactly where the analysis one after the
/// other stops; any other runs the same with either budget. A program a worker did not analyze (it stopped once
/// another's program ran out of budget) or analyzed with less budget than the programs before it leave (programs
/// after it finished first) is analyzed again on the calling thread with exactly that budget, so no program is
/// skipped and every result is the one-after-the-other one.
///
/// `view` gives each program analyzed its `kernel_view`, from the program's layout alone, and shares the
/// threads: on the thread that analyzed the program, or, for a large object's only program, on a thread of its
/// own while the program's analysis goes on. A result it ran on may still be replaced by the budget's error, as
/// above.
pub fn analyze_programs(obj: &Object<'_>, target: &Target, view: &View<'_>) -> Vec<Result<Analyzed, AnalysisError>> {
    analyze_programs_within(obj, MAX_OBJECT_WORK, threads, target, view)
}

/// What [`analyze_programs`]' caller computes from a program's layout alone (its functions and calls, as in
/// [`Analyzed`]): the gate's view of it.
pub type View<'a> = dyn Fn(&ProgramEntry, &[(usize, usize, usize)], &[(u32, u32)]) -> KernelView + Sync + 'a;

/// [`analyze_programs`] with an object budget of `total`, on up to `threads()` threads (asked only for a large
/// object).
fn analyze_programs_within(
    obj: &Object<'_>,
    total: usize,
    threads: impl FnOnce() -> usize,
    target: &Target,
    view: &View<'_>,
) -> Vec<Result<Analyzed, AnalysisError>> {
    let with_view = |prog: &ProgramEntry, mut r: Result<Analyzed, AnalysisError>| {
        if let Ok(a) = &mut r {
            a.metadata.kernel_view = view(prog, &a.funcs, &a.calls);
        }
        r
    };
    let progs = &obj.programs;
    let code: usize = obj.sections.iter().map(|s| s.insns.len()).sum();
    let cores = if !progs.is_empty() && code >= PARALLEL_ABOVE { threads() } else { 1 };
    let threads = cores.min(progs.len());
    let mut budget = total;
    let mut out = Vec::with_capacity(progs.len());
    if threads <= 1 {
        for prog in progs {
            let result = if cores > 1 {
                analyze_beside(obj, prog, &mut budget, target, Some(view))
            } else {
                with_view(prog, analyze_for(obj, prog, &mut budget, target))
            };
            let stop = matches!(result, Err(AnalysisError::ObjectTooLarge { .. }));
            out.push(result);
            if stop {
                break;
            }
        }
        return out;
    }
    // One program on this thread, with `left` of the budget, and its view.
    let analyze_here = |prog: &ProgramEntry, left: &mut usize| {
        let mut o = BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => analyze_with(obj, prog, &mut buf, left, *target, None),
            Err(_) => analyze_with(obj, prog, &mut Buffers::default(), left, *target, None),
        });
        o.result = with_view(prog, o.result);
        o
    };
    // Longest entry function first, so that no long program starts last while the other threads run out of
    // work (the results are placed by index, whatever the order).
    let mut order: Vec<usize> = (0..progs.len()).collect();
    order.sort_by_cached_key(|&i| {
        let len =
            progs.get(i).and_then(|p| Some(obj.sections.get(p.section)?.func_end(p.start).saturating_sub(p.start)));
        std::cmp::Reverse(len.unwrap_or(0))
    });
    let next = AtomicUsize::new(0);
    let spent = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let work = || {
        let mut done = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let Some(prog) = progs.get(i) else { break };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut left = total.saturating_sub(spent.load(Ordering::Relaxed));
            let outcome = analyze_here(prog, &mut left);
            spent.fetch_add(outcome.charge, Ordering::Relaxed);
            if matches!(outcome.result, Err(AnalysisError::ObjectTooLarge { .. })) {
                stop.store(true, Ordering::Relaxed);
            }
            done.push((i, outcome));
        }
        // This thread's buffers go with it; the calling thread keeps only an ordinary program's.
        BUFFERS.with(|cell| {
            if let Ok(mut buf) = cell.try_borrow_mut() {
                if buf.ops.capacity() > RETAINED_INSNS {
                    *buf = Buffers::default();
                }
            }
        });
        done
    };
    let mut outcomes: Vec<Option<Outcome>> = progs.iter().map(|_| None).collect();
    std::thread::scope(|s| {
        let placed = placement();
        let others: Vec<_> = (1..threads).map(|k| spawn_placed(s, placed, k, work)).collect();
        let mine = work();
        // A worker that panicked would have panicked the caller alone too; its programs are reported missing below.
        for (i, o) in mine.into_iter().chain(others.into_iter().flat_map(|h| h.join().unwrap_or_default())) {
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(o);
            }
        }
    });
    for (o, prog) in outcomes.into_iter().zip(progs) {
        let o = match o {
            Some(o) if o.discovered <= budget => o,
            // Not analyzed (a worker stopped once another's program ran out of budget), or analyzed with less
            // budget than the programs before it leave (programs after it had finished first): again, here, with
            // exactly what one-after-the-other leaves, so the result is that analysis's.
            _ => {
                let mut left = budget;
                analyze_here(prog, &mut left)
            }
        };
        if o.discovered > budget {
            out.push(Err(AnalysisError::ObjectTooLarge { limit: MAX_OBJECT_WORK }));
            break;
        }
        budget = budget.saturating_sub(o.charge);
        out.push(o.result);
    }
    out
}

/// The `started` hook and what `spawning` gave ([`WorkerHooks`]).
type Placed = (fn(usize, usize), usize);

/// The hooks' placement for workers started now, when hooks are set.
fn placement() -> Option<Placed> {
    WORKER_HOOKS.get().map(|h| (h.started, (h.spawning)()))
}

/// Starts worker `k` on `s`, placed by the hooks (and the starter yields its CPU once, so it runs promptly).
fn spawn_placed<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    placed: Option<Placed>,
    k: usize,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    let worker = s.spawn(move || {
        if let Some((started, here)) = placed {
            started(here, k);
        }
        f()
    });
    if placed.is_some() {
        std::thread::yield_now();
    }
    worker
}

impl Ctx<'_, '_> {
    fn run(&mut self) -> Result<Analyzed, AnalysisError> {
        self.discover()?;
        self.after_discovery()
    }

    /// [`Ctx::run`], with `view` of the layout on a second thread from the end of discovery on: a large object's
    /// only program would otherwise leave the other cores idle.
    fn run_beside(&mut self, view: &View<'_>) -> Result<Analyzed, AnalysisError> {
        self.discover()?;
        let (funcs, calls) = self.layout();
        let prog = self.prog;
        std::thread::scope(|s| {
            let beside = spawn_placed(s, placement(), 1, || view(prog, &funcs, &calls));
            let result = self.after_discovery();
            let kernel_view = beside.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            result.map(|mut a| {
                a.metadata.kernel_view = kernel_view;
                a
            })
        })
    }

    /// Everything after discovery: the fixpoint, the callbacks, the report.
    fn after_discovery(&mut self) -> Result<Analyzed, AnalysisError> {
        let cx = self;
        let mut entry_input = [Value::BOTTOM; 5];
        entry_input[0] = Value::kind(CTX);
        cx.funcs[0].input = entry_input;
        cx.funcs[0].entered = true;
        cx.funcs[0].dirty = true;
        cx.fixpoint()?;
        // Callbacks handed to something the analysis does not model get what the kernel may pass them: those whose
        // address reached code loads, and exception callbacks. Feeding one can reach more code, which can load
        // more addresses: each round enters at least one more function. A function referred to only from code no
        // path reaches is never entered: libbpf links it in all the same (it is in the layout and `insn_count`,
        // and the verifier refuses the program for its unreachable instructions), and the report lists it in
        // `unreached_subprograms`, not analyzed (issue 19: a report lists exactly what it analyzed).
        loop {
            let unfed: Vec<usize> = (0..cx.funcs.len())
                .filter(|&f| {
                    let func = &cx.funcs[f];
                    func.address_live && func.input.iter().all(|v| *v == Value::BOTTOM)
                })
                .collect();
            if unfed.is_empty() {
                break;
            }
            for f in unfed {
                cx.feed(f, [Value::kind(SCALAR | BTF); 5]);
            }
            cx.fixpoint()?;
        }
        // A read of an unset register: the verifier rejects it on any path it cannot prove dead, and its range
        // tracking proves paths dead that this analysis follows. Not a reason to report nothing: said in a note,
        // and the program analyzed with the register holding nothing (its uses prove no capability).
        let uninit = cx.funcs.iter_mut().find_map(|f| f.uninit.take());
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
        let mut analyzed = cx.finish();
        if let Some(e) = uninit {
            analyzed.metadata.notes.push(format!(
                "{e}: the verifier rejects the program unless it proves that path dead (analyzed as if it were)"
            ));
        }
        Ok(analyzed)
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

    fn section_name(&self, s: usize) -> String {
        self.obj.sections.get(s).map(|c| c.name.clone()).unwrap_or_default()
    }

    fn at(&self, f: usize, pc: usize) -> u32 {
        let func = &self.funcs[f];
        func.layout + (pc - func.start) as u32
    }
}

#[cfg(test)]
mod tests_support {
    use std::collections::BTreeMap;

    use super::*;
    use crate::elf::{CodeSection, Func as ElfFunc};
    use crate::insn::RawInsn;
    use crate::metadata::{MapDef, MapKind};

    // The instructions come from the one builder the repository's tests share (bpfgate-test-support).
    use bpfgate_test_support::insn as t;

    pub(super) fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
        t::insn(code, dst, src, off, imm).into()
    }
    pub(super) fn mov(dst: u8, src: u8) -> RawInsn {
        t::mov(dst, src).into()
    }
    pub(super) fn movi(dst: u8, imm: i32) -> RawInsn {
        t::mov_imm(dst, imm).into()
    }
    pub(super) fn addi(dst: u8, imm: i32) -> RawInsn {
        t::add_imm(dst, imm).into()
    }
    pub(super) fn ldx(dst: u8, src: u8, off: i16) -> RawInsn {
        t::ldx_dw(dst, src, off).into()
    }
    pub(super) fn stx(dst: u8, off: i16, src: u8) -> RawInsn {
        t::stx_dw(dst, off, src).into()
    }
    pub(super) fn call(id: i32) -> RawInsn {
        t::call_helper(id).into()
    }
    pub(super) fn call_local(rel: i32) -> RawInsn {
        t::call_local(rel).into()
    }
    pub(super) fn exit() -> RawInsn {
        t::exit().into()
    }
    /// `r{dst} = map 0`: the two ld_imm64 slots; the caller adds the relocation.
    pub(super) fn ld_map(dst: u8) -> [RawInsn; 2] {
        t::ld_imm64(dst, 0, 0).map(RawInsn::from)
    }

    /// An object with one kprobe section holding `insns`, map 0 (`m`, an array), relocations of `ld_map`
    /// slots at `map_relocs`, and function symbols at `funcs` (the program is the first).
    pub(super) fn object(
        insns: Vec<RawInsn>,
        map_relocs: &[usize],
        funcs: &[usize],
    ) -> (Object<'static>, ProgramEntry) {
        let len = insns.len();
        let mut relocs = BTreeMap::new();
        for &at in map_relocs {
            relocs.insert(at, RelocTarget::Map(0));
        }
        let funcs: Vec<ElfFunc> = funcs
            .iter()
            .enumerate()
            .map(|(n, &start)| ElfFunc { name: format!("f{n}"), start, end: 0, global: n == 0, is_func: true })
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
            id: None,
            inner_map: None,
            inner_idx: None,
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
            btf_data: None,
            btf_ext_data: None,
            weak_externs: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
            void_funcs: Vec::new(),
            struct_ops_members: Vec::new(),
            dropped_errors: 0,
            by_name: Vec::new(),
            btf_parts: None,
        };
        let prog = ProgramEntry {
            name: "f0".into(),
            section: 0,
            start: 0,
            info: crate::section::classify("kprobe/x"),
            loaders: vec![crate::metadata::Loader::Libbpf],
            kernel_name: "f0".into(),
            notes: Vec::new(),
        };
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
    use bpfgate_test_support::insn as t;

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

    /// A subprogram called only from code no path reaches is in the layout (libbpf appends it) and counts in
    /// `insn_count`, but it is listed as unreached, not analyzed: its calls are not in the report, and what it
    /// calls is unreached too (issue 19's fuzz finding on evasion_callbacks' .text). A subprogram after it in
    /// the layout keeps its place, and one the program reaches is analyzed.
    #[test]
    fn a_subprogram_called_only_from_dead_code_is_listed_as_unreached() {
        let code = vec![
            call_local(8), // 0: g at 9
            movi(0, 0),    // 1
            exit(),        // 2
            call_local(1), // 3: unreachable, calls f at 5
            exit(),        // 4
            movi(1, 9),    // 5 (f): send_signal(9), then h
            call(109),     // 6
            call_local(4), // 7: h at 12
            exit(),        // 8
            movi(1, 9),    // 9 (g): send_signal(9)
            call(109),     // 10
            exit(),        // 11
            call(6),       // 12 (h): trace_printk
            exit(),        // 13
        ];
        let meta = run(code, &[], &[0, 5, 9, 12]).expect("analyzes");
        // libbpf's layout: main (0..5), g (5..8) first called at 0, then f (8..12) and h (12..14) from dead code.
        let list = |s: &[Subprogram]| s.iter().map(|s| (s.name.clone(), s.start, s.section_offset)).collect::<Vec<_>>();
        assert_eq!(list(&meta.subprograms), vec![("f2".into(), 5, 9)]);
        assert_eq!(list(&meta.unreached_subprograms), vec![("f1".into(), 8, 5), ("f3".into(), 12, 12)]);
        assert_eq!(meta.insn_count, 14);
        assert_eq!(meta.helpers.iter().map(|h| h.id).collect::<Vec<_>>(), vec![109]);
        assert_eq!(meta.evidence[&Capability::SendSignal], vec![6]);
        assert!(!meta.capabilities.contains(&Capability::TracePrintk), "{:?}", meta.capabilities);
        assert_eq!(meta.locate(9), ("kprobe/x", 6));
        assert_eq!(meta.locate(12), ("kprobe/x", 12));
    }

    /// A callback whose address only dead code loads is unreached too; one that reached code loads is analyzed
    /// with what the kernel may pass it.
    #[test]
    fn a_callback_loaded_only_in_dead_code_is_unreached() {
        // ld_imm64 with BPF_PSEUDO_FUNC (src 4): the function at pc + imm + 1.
        let func_addr = |imm: i32| t::ld_imm64(2, 4, imm).map(RawInsn::from);
        let mut code = Vec::new();
        code.extend(func_addr(6)); // 0-1: r2 = &g (at 7)
        code.extend([movi(0, 0), exit()]); // 2-3
        code.extend(func_addr(5)); // 4-5: unreachable: r2 = &f (at 10)
        code.push(exit()); // 6
        code.extend([call(109), movi(0, 0), exit()]); // 7 (g): send_signal
        code.extend([call(109), movi(0, 0), exit()]); // 10 (f): send_signal
        let meta = run(code, &[], &[0, 7, 10]).expect("analyzes");
        let list = |s: &[Subprogram]| s.iter().map(|s| (s.name.clone(), s.start)).collect::<Vec<_>>();
        assert_eq!(list(&meta.subprograms), vec![("f1".into(), 7)]);
        assert_eq!(list(&meta.unreached_subprograms), vec![("f2".into(), 10)]);
        assert_eq!(meta.insn_count, 13);
        assert_eq!(meta.evidence[&Capability::SendSignal], vec![7]);
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
    fn reading_an_unset_register_is_a_note_naming_the_instruction() {
        // The verifier rejects it unless it proves the path dead (its range tracking proves more dead than this
        // analysis): the program is reported, with a note.
        let meta = run(vec![movi(0, 0), mov(0, 3), exit()], &[], &[0]).expect("analyzed");
        assert_eq!(meta.notes.len(), 1, "{:?}", meta.notes);
        assert!(meta.notes[0].starts_with("section kprobe/x insn 1: r3 is read before it is set: the verifier"));
        // After a helper call r1-r5 are clobbered.
        let meta = run(vec![call(5), mov(0, 1), exit()], &[], &[0]).expect("analyzed");
        assert!(meta.notes[0].starts_with("section kprobe/x insn 1: r1 is read"), "{:?}", meta.notes);
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

    /// The analysis and the gate's view of a program for `target`.
    fn judged_for(insns: Vec<RawInsn>, target: &Target) -> (ProgramMetadata, crate::metadata::KernelView) {
        let (obj, prog) = object(insns, &[], &[0]);
        let mut budget = usize::MAX;
        let a = analyze_for(&obj, &prog, &mut budget, target).expect("analyzes");
        let view = crate::kernel_view::compute_for(
            &obj,
            a.metadata.prog_type,
            a.metadata.attach_type,
            a.funcs.iter().copied(),
            &a.calls,
            target,
        );
        (a.metadata, view)
    }

    /// libbpf's poisoned instructions (a failed CO-RE relocation in a branch the verifier proves dead, a map it
    /// did not create as two calls) grant nothing, with or without a target kernel; code beside them still
    /// counts; an id past the catalogue stays `unknown` unless the target kernel's last helper is known.
    #[test]
    fn calls_that_cannot_execute_grant_nothing() {
        let core = crate::gate_abi::poison::CORE_RELO as i32;
        let map = (crate::gate_abi::poison::MAP_BASE + 2) as i32;
        // r0 = 0; if r0 == 0 goto +3; call poison; call map poison x2; r1 = 9; call send_signal; exit
        let dead =
            vec![movi(0, 0), i(0x15, 0, 0, 3, 0), call(core), call(map), call(map), movi(1, 9), call(109), exit()];
        for target in [Target::ANY, Target { helper_max_id: Some(212) }] {
            let (meta, view) = judged_for(dead.clone(), &target);
            assert_eq!(meta.capabilities, vec![Capability::SendSignal], "{target:?}");
            assert_eq!(view.classes, vec![Capability::SendSignal], "{target:?}");
            let names: Vec<&str> = meta.helpers.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(names, ["send_signal", "libbpf_poison_core_relo", "libbpf_poison_map_2"]);
        }
        // A store through what a poison call "returned" is through a plain number, not an unknown pointer.
        let store = vec![call(core), movi(1, 5), stx(0, 0, 1), movi(0, 0), exit()];
        let (meta, view) = judged_for(store, &Target::ANY);
        assert!(meta.capabilities.is_empty() && view.classes.is_empty(), "{meta:?} {view:?}");

        // Not poison and past the catalogue: a helper of some kernel, unknown, until the target says it has none.
        let past = vec![call(4000), movi(0, 0), exit()];
        let (meta, view) = judged_for(past.clone(), &Target::ANY);
        assert_eq!((meta.capabilities, view.classes), (vec![Capability::Unknown], vec![Capability::Unknown]));
        let (meta, view) = judged_for(past, &Target { helper_max_id: Some(212) });
        assert!(meta.capabilities.is_empty() && view.classes.is_empty(), "{meta:?} {view:?}");
        // A catalogued helper the target kernel lacks (6.1 ends at 209): refused there, so nothing.
        let (meta, _) = judged_for(vec![call(210), movi(0, 0), exit()], &Target { helper_max_id: Some(210) });
        assert!(meta.capabilities.is_empty(), "{meta:?}");
        let (meta, _) = judged_for(vec![call(210), movi(0, 0), exit()], &Target::ANY);
        assert!(!meta.capabilities.is_empty(), "cgrp_storage_get writes a map: {meta:?}");
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
mod parallel {
    use super::*;
    use bpfgate_test_support::hostile::shared_subprogram;

    /// What a result says, comparable: the metadata, or the error.
    fn outcome(r: &Result<Analyzed, AnalysisError>) -> Result<ProgramMetadata, AnalysisError> {
        r.as_ref().map(|a| a.metadata.clone()).map_err(Clone::clone)
    }

    /// The hooks run: `started` on each worker, with `spawning`'s value and the worker's number. (Set for the
    /// whole test process: other tests' workers call them too, which only counts more.)
    #[test]
    fn worker_hooks_run_on_each_worker() {
        use std::sync::atomic::AtomicUsize;
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        static BAD: AtomicUsize = AtomicUsize::new(0);
        fn started(here: usize, k: usize) {
            if here != 7 || k == 0 {
                BAD.fetch_add(1, Ordering::Relaxed);
            }
            STARTED.fetch_add(1, Ordering::Relaxed);
        }
        set_worker_hooks(WorkerHooks { spawning: || 7, started });
        let bytes = shared_subprogram(8, 9_000);
        let obj = Object::parse(&bytes).expect("parses");
        let before = STARTED.load(Ordering::Relaxed);
        let results =
            analyze_programs_within(&obj, MAX_OBJECT_WORK, || 3, &Target::ANY, &|_, _, _| KernelView::default());
        assert_eq!(results.len(), 8);
        assert!(STARTED.load(Ordering::Relaxed) >= before + 2, "two workers started");
        assert_eq!(BAD.load(Ordering::Relaxed), 0, "a worker got another value or number 0");
    }

    /// A large object's only program: its view runs on a second thread when there is one, and sees the layout
    /// the finished analysis reports (the calls between its functions included); on one thread, on that one.
    #[test]
    fn a_lone_programs_view_runs_beside_its_analysis() {
        type Seen = (std::thread::ThreadId, Vec<(usize, usize, usize)>, Vec<(u32, u32)>);
        let bytes = shared_subprogram(1, 9_000);
        let obj = Object::parse(&bytes).expect("parses");
        assert_eq!(obj.programs.len(), 1);
        for threads in [1, 2] {
            let seen: std::sync::Mutex<Vec<Seen>> = std::sync::Mutex::new(Vec::new());
            let view = |_: &ProgramEntry, funcs: &[(usize, usize, usize)], calls: &[(u32, u32)]| {
                seen.lock().expect("lock").push((std::thread::current().id(), funcs.to_vec(), calls.to_vec()));
                KernelView { classes: vec![Capability::MapWrite], ..KernelView::default() }
            };
            let results = analyze_programs_within(&obj, MAX_OBJECT_WORK, || threads, &Target::ANY, &view);
            let a = results[0].as_ref().expect("analyzed");
            assert_eq!(a.metadata.kernel_view.classes, vec![Capability::MapWrite], "the view's result is kept");
            let seen = seen.into_inner().expect("lock");
            assert_eq!(seen.len(), 1, "one view per program");
            let (on, funcs, calls) = &seen[0];
            assert_eq!((funcs, calls), (&a.funcs, &a.calls), "the layout known after discovery is the final one");
            assert!(!calls.is_empty(), "the program calls its subprogram");
            assert_eq!(*on == std::thread::current().id(), threads == 1, "{threads} threads");
        }
    }

    /// The results of `obj`'s programs analyzed one after the other with an object budget of `total`.
    fn one_after_the_other(obj: &Object<'_>, total: usize) -> Vec<Result<ProgramMetadata, AnalysisError>> {
        let mut budget = total;
        let mut out = Vec::new();
        for prog in &obj.programs {
            let r = analyze_within(obj, prog, &mut budget);
            out.push(outcome(&r));
            if matches!(r, Err(AnalysisError::ObjectTooLarge { .. })) {
                break;
            }
        }
        out
    }

    /// Programs of growing size, so the threads (longest first) analyze the last ones first and charge the
    /// object's budget out of program order: the results are still those of one after the other.
    #[test]
    fn longest_first_gives_the_results_of_one_after_the_other() {
        use bpfgate_test_support::{elf::Elf, insn::*};
        let n = 40;
        let mut code = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(code.len());
            code.push(mov_imm(0, 0));
            code.extend((0..100 * i).map(|_| add_imm(0, 1)));
            code.push(exit());
        }
        let mut e = Elf::new();
        e.license();
        let s = e.code("kprobe/x", &code);
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(code.len());
            e.func(&format!("p{i}"), s, start, end - start);
        }
        let bytes = e.finish();
        let obj = Object::parse(&bytes).expect("parses");
        for total in [MAX_OBJECT_WORK, 40_000] {
            let one_by_one = one_after_the_other(&obj, total);
            for threads in [2, 3] {
                let got: Vec<_> =
                    analyze_programs_within(&obj, total, || threads, &Target::ANY, &|_, _, _| KernelView::default())
                        .iter()
                        .map(outcome)
                        .collect();
                assert_eq!(got, one_by_one, "budget {total}, {threads} threads");
            }
            assert_eq!(one_by_one.len() < n, total < MAX_OBJECT_WORK, "the small budget runs out, the large not");
        }
    }

    /// The programs of a large object analyzed on several threads give the results of one after the other, in
    /// order, up to the same program where the object's budget runs out.
    #[test]
    fn threads_give_the_results_of_one_after_the_other() {
        // 40 programs each reaching a 9,000-instruction subprogram; with a budget of 200,000 it runs out at the
        // 22nd.
        for total in [MAX_OBJECT_WORK, 200_000] {
            let n = 40;
            let bytes = shared_subprogram(n, 9_000);
            let obj = Object::parse(&bytes).expect("parses");
            let one_by_one = one_after_the_other(&obj, total);
            for threads in [1, 2, 3] {
                let got: Vec<_> =
                    analyze_programs_within(&obj, total, || threads, &Target::ANY, &|_, _, _| KernelView::default())
                        .iter()
                        .map(outcome)
                        .collect();
                assert_eq!(got, one_by_one, "budget {total}, {threads} threads");
            }
            if total < MAX_OBJECT_WORK {
                assert!(one_by_one.len() < n && one_by_one.last().is_some_and(Result::is_err), "the budget runs out");
            }
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
