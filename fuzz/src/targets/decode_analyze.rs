//! `decode_analyze`: arbitrary bytes as an instruction stream, wrapped in a minimal valid BPF ELF and inspected.
//!
//! Input layout: byte 0 selects the byte order (bit 0: big-endian) and the program's section name (bits 1..,
//! an index into [`SECTIONS`], which sets the program type); bytes 1..3 select a helper for the monotonicity
//! check (little-endian u16); the rest is the code, truncated to a multiple of 8 bytes. The object is built by
//! `crate::object`: one executable section, one global FUNC symbol at 0 covering it, `license` "GPL".
//!
//! Properties:
//! 1. **Decoding is total**: `insn::decode` at every slot either succeeds or returns an error, never panics;
//!    a decoded instruction fits in the slots that remain; disassembly (`insn::Display`, with and without
//!    names, and `disasm::disassemble`) of every decodable slot never panics.
//! 2. **The writer is valid**: the generated object parses with no errors and has exactly one program.
//! 3. **Report invariants** of `crate::check_report` (evidence below `insn_count`, every capability has
//!    evidence, JSON and CBOR round trips).
//! 4. **Helper calls are evidence**: when the program analyzes OK, every helper call reachable in its control
//!    flow graph (from the entry and from every subprogram start; branch conditions are not evaluated, which is
//!    the analysis's own notion of reachable) appears in `helpers`, each class of the catalogue's
//!    `helper(id).classes` has that call site among its evidence (an uncatalogued id: `unknown`), a reachable
//!    `bpf_tail_call` is a `tail_calls` entry, and a reachable kfunc-by-BTF-id or `callx` is `unknown` evidence.
//!    So the class set is a superset of the classes of the helpers the program calls. `insn_count` is the sum of
//!    the entry's, the subprograms' and the unreached subprograms' lengths (the latter are linked in, never
//!    analyzed: issue 19).
//! 5. **Monotonicity**: adding reachable code only adds results. With A the input program and N a helper whose
//!    catalogue entry has no effects (or an id the catalogue does not know), B is A with the prefix
//!    `0: if r10 == 0 goto +2; 1: call N; 2: exit` in front. It reads only registers that are set (r10, and r0
//!    after the call), and it leaves the machine state at A's first instruction exactly as A's entry state (a
//!    jump changes nothing, branch conditions are not evaluated, and the call's path ends in `exit`), and it
//!    moves every instruction of A, and so every function of the linked program, by +3 (each subprogram extends
//!    to the section end, so every function boundary moves by 3 too). So if A analyzes OK, B analyzes OK with
//!    `insn_count + 3`, the same subprograms and unreached subprograms moved by 3, helpers, kfuncs, map accesses and tail calls
//!    (moved by 3) that include A's, every evidence instruction of A moved by 3 (the `override_return` that
//!    `fmod_ret` programs have at 0 by construction stays at 0), plus N and its classes at instruction 1.
//!    Skipped when a call or function address anywhere in A targets A's instruction 0: in B that is instruction 3,
//!    which is not the entry but a new function, so the linked layouts differ. Prepending a helper call directly
//!    (without the branch) would not be sound: the call clobbers r1-r5, and the context pointer in r1 would be lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::{check_report, object};
use bpfgate::helpers;
use bpfgate::metadata::{AttachType, Capability, ClassSet, ProgramMetadata};
use bpfgate::unstable::elf::Object;
use bpfgate::unstable::insn::{self, CallTarget, Imm64, NoNames, Op, RawInsn};
use bpfgate_test_support::insn::{call_helper, encode, exit, jeq_imm};

/// Section names, one per kind of context the analysis treats differently (packet pointers, BTF-typed
/// contexts, fmod_ret's implicit override, unknown types).
const SECTIONS: &[&str] = &[
    "kprobe/x",
    "xdp",
    "tc",
    "socket",
    "fentry/x",
    "lsm/x",
    "tracepoint/x/y",
    "fmod_ret/x",
    "cgroup/skb",
    "sk_msg",
    "struct_ops/x",
    "raw_tp/x",
    "perf_event",
    "sk_skb/stream_parser",
    "cgroup/getsockopt",
    "unknown_section",
];

/// Helper ids with no argument or return effects (or unknown to the catalogue): a call to one only adds
/// the helper and its classes.
fn effect_free_helpers() -> &'static [u32] {
    static IDS: OnceLock<Vec<u32>> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut ids: Vec<u32> = (0..)
            .map_while(|id| helpers::helper(id).map(|h| (id, h)))
            .filter(|(_, h)| h.effects.is_empty())
            .map(|(id, _)| id)
            .collect();
        let known = (0..).take_while(|&id| helpers::helper(id).is_some()).count() as u32;
        ids.extend([known, known + 1, 1000, 0x7fff_ffff, u32::MAX]);
        ids
    })
}

/// With `BPFGATE_FUZZ_STATS=1`, how many inputs reached each stage, printed at every power of two: a check that
/// the properties are exercised, not skipped.
static STATS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
const STAGES: [&str; 4] = ["inputs", "analyzed", "monotonicity checked", "programs with helper calls"];

fn stat(stage: usize) {
    static ON: OnceLock<bool> = OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("BPFGATE_FUZZ_STATS").is_some()) {
        return;
    }
    let n = STATS[stage].fetch_add(1, Ordering::Relaxed) + 1;
    if stage == 0 && n.is_power_of_two() {
        let counts: Vec<String> =
            STAGES.iter().zip(&STATS).map(|(s, c)| format!("{s} {}", c.load(Ordering::Relaxed))).collect();
        eprintln!("decode_analyze stats: {}", counts.join(", "));
    }
}

struct Catalogue;
impl insn::Names for Catalogue {
    fn helper(&self, id: u32) -> Option<&str> {
        helpers::helper(id).map(|h| h.name)
    }
}

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    stat(0);
    if data.len() < 3 {
        return;
    }
    let little_endian = data[0] & 1 == 0;
    let section = SECTIONS[usize::from(data[0] >> 1) % SECTIONS.len()];
    let selector = u16::from_le_bytes([data[1], data[2]]);
    let code = &data[3..];
    let code = &code[..code.len() / 8 * 8];

    // 1. Decoding and disassembly are total.
    let insns = RawInsn::parse_all(code, little_endian);
    assert_eq!(insns.len(), code.len() / 8);
    let mut targets_entry = false;
    for i in 0..insns.len() {
        let Ok(op) = insn::decode(&insns[i..]) else { continue };
        assert!(op.slots() <= insns.len() - i, "insn {i}: {op:?} decoded past the end");
        let _ = insn::Display { op: &op, names: &NoNames, reloc: None }.to_string();
        let _ = insn::Display { op: &op, names: &Catalogue, reloc: Some("sym") }.to_string();
        let _ = op.defs();
        let target = match op {
            Op::Call(CallTarget::Local(imm)) | Op::LdImm64 { value: Imm64::Func(imm), .. } => {
                Some(i as i64 + 1 + i64::from(imm))
            }
            _ => None,
        };
        targets_entry |= target == Some(0);
    }

    let a = object(little_endian, section, code);

    // 2. The writer's object is a clean BPF object.
    let obj = Object::parse(&a).expect("generated ELF parses");
    assert!(obj.errors.is_empty(), "generated ELF has errors: {:?}", obj.errors);
    assert_eq!(obj.programs.len(), usize::from(!code.is_empty()));
    for i in 0..insns.len() + 1 {
        let _ = bpfgate::unstable::disassemble(&obj, section, i);
    }

    // 3. Report invariants.
    let report = bpfgate::inspect("fuzz.o", &a);
    check_report(&report);
    let Some(prog) = report.programs.first() else { return };

    stat(1);
    if !prog.helpers.is_empty() {
        stat(3);
    }
    // 4. Reachable helper calls are evidence.
    check_call_evidence(&obj, prog);

    // 5. Monotonicity.
    if targets_entry || insns.len() > 100_000 {
        return;
    }
    let ids = effect_free_helpers();
    let n = ids[usize::from(selector) % ids.len()];
    // if r10 == 0 goto +2; call N; exit
    let mut b_code = encode(&[jeq_imm(10, 0, 2), call_helper(n as i32), exit()], little_endian);
    b_code.extend_from_slice(code);
    let b = object(little_endian, section, &b_code);
    let report_b = bpfgate::inspect("fuzz.o", &b);
    check_report(&report_b);
    let Some(prog_b) = report_b.programs.first() else {
        panic!("A analyzes but A with a prefix does not: {:?}", report_b.errors);
    };
    check_monotonic(prog, prog_b, n);
    stat(2);
}

/// A function of the linked program: where it starts in the section and in the layout.
struct LinkedFunc {
    section_offset: usize,
    layout: u32,
}

/// Property 4.
fn check_call_evidence(obj: &Object<'_>, p: &ProgramMetadata) {
    let cs = &obj.sections[0];
    let mut funcs = vec![LinkedFunc { section_offset: p.section_offset as usize, layout: 0 }];
    funcs.extend(
        p.subprograms.iter().map(|s| LinkedFunc { section_offset: s.section_offset as usize, layout: s.start }),
    );
    let helpers_seen: BTreeSet<u32> = p.helpers.iter().map(|h| h.id).collect();
    let tail_call_sites: BTreeSet<u32> = p.tail_calls.iter().map(|t| t.insn).collect();
    let has = |c: Capability, at: u32| p.evidence.get(&c).is_some_and(|v| v.contains(&at));
    // Unreached subprograms are in the layout and the count, and nothing of them is analyzed.
    let mut count: u32 = p
        .unreached_subprograms
        .iter()
        .map(|s| {
            let start = s.section_offset as usize;
            (cs.func_end(start).max(start + 1) - start) as u32
        })
        .sum();
    for f in &funcs {
        let start = f.section_offset;
        let end = cs.func_end(start).max(start + 1);
        count += (end - start) as u32;
        for (i, op) in reachable(&cs.insns[start..end]) {
            let at = f.layout + i as u32;
            match op {
                Op::Call(CallTarget::Helper(id)) => {
                    assert!(helpers_seen.contains(&id), "{}: helper {id} called at {at} is not in helpers", p.name);
                    let classes = match helpers::helper(id) {
                        Some(h) => h.classes,
                        None => [Capability::Unknown].into_iter().collect::<ClassSet>(),
                    };
                    for c in classes.iter() {
                        assert!(has(c, at), "{}: call of helper {id} at {at} is not evidence of {c}", p.name);
                    }
                    if helpers::helper(id).is_some_and(|h| h.name == "tail_call") {
                        assert!(tail_call_sites.contains(&at), "{}: tail call at {at} not reported", p.name);
                    }
                }
                Op::Call(CallTarget::Kfunc(_) | CallTarget::Indirect(_)) => {
                    assert!(has(Capability::Unknown, at), "{}: call at {at} is not evidence of unknown", p.name);
                }
                _ => {}
            }
        }
    }
    assert_eq!(p.insn_count, count, "{}: insn_count is not the sum of its functions", p.name);
}

/// The instructions of one function reachable from its first one, ignoring branch conditions, as (index, op).
/// The function has already been accepted by the analysis, so every slot decodes and every jump lands inside.
fn reachable(insns: &[RawInsn]) -> Vec<(usize, Op)> {
    let len = insns.len();
    let mut ops: Vec<Option<Op>> = vec![None; len];
    let mut i = 0;
    while i < len {
        let op = insn::decode(&insns[i..]).expect("an analyzed function decodes");
        ops[i] = Some(op);
        i += op.slots();
    }
    let mut seen = vec![false; len];
    let mut work = vec![0usize];
    let mut out = Vec::new();
    while let Some(i) = work.pop() {
        if i >= len || seen[i] {
            continue;
        }
        seen[i] = true;
        let Some(op) = ops[i] else { panic!("reachable insn {i} is the middle of an ld_imm64") };
        out.push((i, op));
        let jump = |off: i64| usize::try_from(i as i64 + 1 + off).expect("jump stays in the function");
        match op {
            Op::Exit => {}
            Op::Ja { off, .. } => work.push(jump(off.into())),
            Op::Jump { off, .. } | Op::MayGoto { off } => {
                work.push(i + 1);
                work.push(jump(off.into()));
            }
            _ => work.push(i + op.slots()),
        }
    }
    out
}

/// Property 5: `b` is `a` with the 3-instruction prefix calling helper `n`.
fn check_monotonic(a: &ProgramMetadata, b: &ProgramMetadata, n: u32) {
    const SHIFT: u32 = 3;
    let ctx = |what: &str| format!("monotonicity ({what}), helper {n}:\nA = {a:#?}\nB = {b:#?}");
    assert_eq!(b.insn_count, a.insn_count + SHIFT, "{}", ctx("insn_count"));
    assert_eq!(b.subprograms.len(), a.subprograms.len(), "{}", ctx("subprograms"));
    assert_eq!(b.unreached_subprograms.len(), a.unreached_subprograms.len(), "{}", ctx("unreached subprograms"));
    let pairs = a.subprograms.iter().zip(&b.subprograms);
    for (sa, sb) in pairs.chain(a.unreached_subprograms.iter().zip(&b.unreached_subprograms)) {
        assert!(
            sb.start == sa.start + SHIFT && sb.section_offset == sa.section_offset + SHIFT,
            "{}",
            ctx("subprogram layout")
        );
    }
    for h in &a.helpers {
        assert!(b.helpers.contains(h), "{}", ctx("helpers"));
    }
    assert!(b.helpers.iter().any(|h| h.id == n), "{}", ctx("helper N"));
    for k in &a.kfuncs {
        assert!(b.kfuncs.contains(k), "{}", ctx("kfuncs"));
    }
    for m in &a.maps {
        let ok = b.maps.iter().any(|x| x.name == m.name && (x.read || !m.read) && (x.write || !m.write));
        assert!(ok, "{}", ctx("map accesses"));
    }
    for t in &a.tail_calls {
        let ok = b.tail_calls.iter().any(|x| x.insn == t.insn + SHIFT && (x.map == t.map || x.map.is_none()));
        assert!(ok, "{}", ctx("tail calls"));
    }
    let fixed_override = a.attach_type == Some(AttachType::ModifyReturn);
    for (c, insns) in &a.evidence {
        let got = b.evidence.get(c);
        for &i in insns {
            let want = if fixed_override && *c == Capability::OverrideReturn && i == 0 { 0 } else { i + SHIFT };
            assert!(got.is_some_and(|v| v.contains(&want)), "{}", ctx(&format!("evidence of {c} at {i}")));
        }
    }
    let n_classes = match helpers::helper(n) {
        Some(h) => h.classes,
        None => [Capability::Unknown].into_iter().collect(),
    };
    for c in n_classes.iter() {
        assert!(b.evidence.get(&c).is_some_and(|v| v.contains(&1)), "{}", ctx(&format!("{c} of helper N at 1")));
    }
    assert_eq!(b.class_set().union(a.class_set()).union(n_classes), b.class_set(), "{}", ctx("class set"));
}
