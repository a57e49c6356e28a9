//! The evasion suite (issue 6): fixture programs that hide a capability a policy denies (in subprograms,
//! callbacks of callbacks, tail-called programs, kfuncs, BTF pointer reads, map pointers spilled, passed around
//! or refilled by atomics). For each, a policy denying the hidden class must deny the program, and the evidence
//! must point at the instruction that does the hidden thing, in the function that hides it.
//!

use bpfgate::metadata::{Capability, ObjectReport, ProgramMetadata};
use bpfgate::policy::{Decision, Policy, Reason, Subject};
use bpfgate::unstable::elf::Object;
use bpfgate::unstable::insn::{self, CallTarget, Op};

use crate::support::{files_with, fixtures};

/// What the hiding instruction is.
#[derive(Debug, Clone, Copy)]
enum Insn {
    Helper(u32),
    Kfunc(&'static str),
    /// A store or atomic read-modify-write to memory.
    Store,
    Load,
}

struct Case {
    file: &'static str,
    prog: &'static str,
    class: Capability,
    /// The function holding the hiding instruction: the program's own name for the entry function.
    func: &'static str,
    insn: Insn,
}

const fn case(file: &'static str, prog: &'static str, class: Capability, func: &'static str, insn: Insn) -> Case {
    Case { file, prog, class, func, insn }
}

use Capability::*;

const CASES: &[Case] = &[
    case("evasion_callbacks", "ev_cb_chain", SendSignal, "deliver_signal", Insn::Helper(109)),
    case("evasion_callbacks", "ev_override_cb", OverrideReturn, "override_now", Insn::Helper(58)),
    case("evasion_callbacks", "ev_timer_uwrite", UserWrite, "scribble", Insn::Helper(36)),
    case("evasion_tail_call", "ev_tail_callee", SendSignal, "signal_from_callee", Insn::Helper(109)),
    case("evasion_tail_call", "ev_tail_caller", TailCall, "ev_tail_caller", Insn::Helper(12)),
    case("evasion_kfunc", "ev_rdonly_cast", KernelRead, "as_sleeper", Insn::Kfunc("bpf_rdonly_cast")),
    case("evasion_kfunc", "ev_kexec_cb", Destructive, "kexec_cb", Insn::Kfunc("crash_kexec")),
    case("evasion_kfunc_signal", "ev_signal_kfunc", SendSignal, "signal_task", Insn::Kfunc("bpf_send_signal_task")),
    case("evasion_btf_read", "ev_btf_loop", KernelRead, "parent_tgid", Insn::Load),
    case("evasion_btf_read", "ev_btf_copy", KernelRead, "ev_btf_copy", Insn::Load),
    case("evasion_map_write", "ev_spill_sub", MapWrite, "store_via", Insn::Store),
    case("evasion_map_write", "ev_out_param", MapWrite, "ev_out_param", Insn::Store),
    case("evasion_map_write", "ev_helper_write", MapWrite, "read_cb", Insn::Helper(113)),
    case("evasion_map_write", "ev_global_fn", MapWrite, "ev_bump", Insn::Store),
    case("evasion_map_write", "ev_partial_off", MapWrite, "ev_partial_off", Insn::Store),
    case("evasion_atomic_fill", "ev_xchg_fill", MapWrite, "ev_xchg_fill", Insn::Store),
    case("evasion_atomic_fill", "ev_cmpxchg_fill", MapWrite, "ev_cmpxchg_fill", Insn::Store),
    case("evasion_atomic_fill", "ev_fadd_fill", MapWrite, "ev_fadd_fill", Insn::Store),
    // Found by this suite: F_CREATE inserts the init value, a write with no store and no update helper.
    case("evasion_storage_create", "ev_storage_create", MapWrite, "ev_storage_create", Insn::Helper(156)),
    // Found by this suite: an exception callback is named only by a BTF decl tag on the entry function.
    case("evasion_exception_cb", "ev_exception_cb", SendSignal, "ev_on_throw", Insn::Helper(109)),
];

const EXE: &str = "/usr/bin/evasion";

fn subject() -> Subject {
    Subject { exe: Some(EXE.into()), cgroup: None, uid: Some(0) }
}

fn deny(class: Capability) -> Policy {
    let yaml = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: deny-{class}\n    subject: {{exe: {EXE}}}\n    \
         capabilities:\n      deny: [{class}]\n"
    );
    Policy::parse("evasion.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"))
}

struct Fixture {
    report: ObjectReport,
    object: Object<'static>,
}

fn load(file: &str) -> Fixture {
    let path = fixtures().join(format!("{file}.bpf.o"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let object = Object::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    let report = bpfgate::unstable::inspect_object(file, &object);
    assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
    Fixture { report, object: object.without_btf() }
}

fn program<'a>(fx: &'a Fixture, name: &str) -> &'a ProgramMetadata {
    fx.report.programs.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no program {name}"))
}

/// The function of `prog` that linked instruction `at` belongs to.
fn function_of(prog: &ProgramMetadata, at: u32) -> &str {
    prog.subprograms.iter().rev().find(|s| s.start <= at).map_or(prog.name.as_str(), |s| s.name.as_str())
}

/// The instruction at linked offset `at`, decoded from the object.
fn decode_at(fx: &Fixture, prog: &ProgramMetadata, at: u32) -> Op {
    let (section, offset) = prog.locate(at);
    let code = fx.object.sections.iter().find(|s| s.name == section).unwrap_or_else(|| panic!("no {section}"));
    let insns = code.insns.get(offset as usize..).unwrap_or_default();
    insn::decode(insns).unwrap_or_else(|e| panic!("{section}+{offset}: {e}"))
}

/// Whether `op` is the hiding instruction `want`, given the kfunc relocations of its section.
fn is(fx: &Fixture, prog: &ProgramMetadata, at: u32, op: Op, want: Insn) -> bool {
    match (want, op) {
        (Insn::Helper(id), Op::Call(CallTarget::Helper(h))) => h == id,
        // An object's kfunc call is `call -1` relocated against the kfunc's extern symbol.
        (Insn::Kfunc(name), Op::Call(_)) => {
            let (section, offset) = prog.locate(at);
            fx.object.sections.iter().any(|s| {
                s.name == section
                    && matches!(s.relocs.get(&(offset as usize)),
                        Some(bpfgate::unstable::elf::RelocTarget::Extern { name: n }) if n == name)
            })
        }
        (Insn::Store, Op::Store { .. } | Op::Atomic { .. }) => true,
        (Insn::Load, Op::Load { .. }) => true,
        _ => false,
    }
}

#[test]
fn each_hidden_capability_is_denied_with_evidence_at_the_hiding_instruction() {
    let policy_subject = subject();
    let mut failures = Vec::new();
    for c in CASES {
        let fx = load(c.file);
        let prog = program(&fx, c.prog);
        let verdict = deny(c.class).evaluate(&policy_subject, prog, &fx.report.maps);
        let denied_for = verdict.reasons.iter().find_map(|r| match r {
            Reason::ClassDenied { class, evidence } if *class == c.class => Some(evidence),
            _ => None,
        });
        let Some(evidence) = denied_for.filter(|_| verdict.decision == Decision::Deny) else {
            failures.push(format!("{} {}: not denied for {}: {verdict}", c.file, c.prog, c.class));
            continue;
        };
        let mut hiding = Vec::new();
        for &at in &evidence.insns {
            let op = decode_at(&fx, prog, at);
            // Evidence is an instruction that acts: a call, a load or a store, never arithmetic or a jump.
            if !matches!(op, Op::Call(_) | Op::Load { .. } | Op::Store { .. } | Op::Atomic { .. }) {
                failures.push(format!("{} {}: evidence insn {at} is {op:?}", c.file, c.prog));
            }
            if function_of(prog, at) == c.func && is(&fx, prog, at, op, c.insn) {
                hiding.push(at);
            }
        }
        if hiding.is_empty() {
            failures.push(format!(
                "{} {}: no evidence of {} is a {:?} in {}: evidence {evidence} in {:?}",
                c.file,
                c.prog,
                c.class,
                c.insn,
                c.func,
                evidence.insns.iter().map(|&at| function_of(prog, at)).collect::<Vec<_>>()
            ));
        }
        // The reason names the helper or kfunc too, when a call proves the class.
        let named = match c.insn {
            Insn::Helper(id) => bpfgate::helpers::helper(id)
                .is_some_and(|h| !h.classes.contains(c.class) || evidence.helpers.iter().any(|n| n == h.name)),
            Insn::Kfunc(k) => bpfgate::helpers::kfunc(k)
                .is_some_and(|f| !f.classes.contains(c.class) || evidence.kfuncs.iter().any(|n| n == k)),
            Insn::Store | Insn::Load => true,
        };
        if !named {
            failures.push(format!("{} {}: the reason does not name the call: {evidence}", c.file, c.prog));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The caller of a tail call shows tail_call and nothing of the callee: a policy that denies the callee's class
/// allows the caller, and the callee is denied on its own.
#[test]
fn tail_call_caller_is_judged_without_its_callee() {
    let fx = load("evasion_tail_call");
    let caller = program(&fx, "ev_tail_caller");
    let verdict = deny(SendSignal).evaluate(&subject(), caller, &fx.report.maps);
    assert_eq!(verdict.decision, Decision::Allow, "{verdict}");
    assert_eq!(caller.capabilities, [TailCall]);
    assert_eq!(caller.tail_calls.first().and_then(|t| t.map.as_deref()), Some("ev_jmp"));
    let callee = program(&fx, "ev_tail_callee");
    assert_eq!(deny(SendSignal).evaluate(&subject(), callee, &fx.report.maps).decision, Decision::Deny);
}

/// Without the denied class the same programs are allowed: the denials above come from the hidden class.
#[test]
fn evasion_programs_are_allowed_when_their_class_is_not_denied() {
    for c in CASES {
        let fx = load(c.file);
        let prog = program(&fx, c.prog);
        // Deny a class the program does not have.
        let other = Capability::ALL.into_iter().find(|k| !prog.capabilities.contains(k)).unwrap_or(Unknown);
        let verdict = deny(other).evaluate(&subject(), prog, &fx.report.maps);
        assert_eq!(verdict.decision, Decision::Allow, "{} {}: {verdict}", c.file, c.prog);
    }
}

/// Every program of every `evasion_*` fixture is a case.
#[test]
fn every_evasion_fixture_program_is_covered() {
    let mut seen = 0;
    for src in files_with(&fixtures(), &[".bpf.c"]) {
        let stem = src.file_name().map(|n| n.to_string_lossy().replace(".bpf.c", "")).unwrap_or_default();
        if !stem.starts_with("evasion_") {
            continue;
        }
        for p in &load(&stem).report.programs {
            seen += 1;
            let covered = CASES.iter().any(|c| c.file == stem && c.prog == p.name);
            assert!(covered, "{stem} {}: not in CASES", p.name);
        }
    }
    assert_eq!(seen, CASES.len());
}
