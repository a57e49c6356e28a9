//! Live evasion suite (issue 6): programs that hide a denied capability (in callbacks, subprograms, tail-called
//! programs, kfuncs, BTF pointer reads, spilled map pointers, exception callbacks) must still be refused by the
//! gate at their own load, and load when the policy allows the class.
//!
//! Every policy names only this test binary's executable, with default `allow`, as the gate's own tests do.

use bpfgate::metadata::Capability;
use bpfgate_gate::event::{evidence, RawEvent, VERDICT_ALLOW, VERDICT_DENY};

use super::gate::{class_names, load_object, named, this_exe, Live};
use super::live;

/// To the process's stderr directly: libtest hides the output of passing tests, and these lines are the record
/// in the VM logs.
macro_rules! object {
    ($f:literal) => {
        ($f, include_bytes!(concat!("../../../tests/fixtures/", $f)) as &[u8])
    };
}

const CALLBACKS: (&str, &[u8]) = object!("evasion_callbacks.bpf.o");
const TAIL_CALL: (&str, &[u8]) = object!("evasion_tail_call.bpf.o");
const KFUNC: (&str, &[u8]) = object!("evasion_kfunc.bpf.o");
const KFUNC_SIGNAL: (&str, &[u8]) = object!("evasion_kfunc_signal.bpf.o");
const BTF_READ: (&str, &[u8]) = object!("evasion_btf_read.bpf.o");
const MAP_WRITE: (&str, &[u8]) = object!("evasion_map_write.bpf.o");
const ATOMIC_FILL: (&str, &[u8]) = object!("evasion_atomic_fill.bpf.o");
const EXCEPTION_CB: (&str, &[u8]) = object!("evasion_exception_cb.bpf.o");
const STORAGE_CREATE: (&str, &[u8]) = object!("evasion_storage_create.bpf.o");

/// How the gate must prove the hidden class.
#[derive(Clone, Copy, Debug)]
enum Proof {
    /// Exactly, from this call: `evidence::HELPER | id`, or `evidence::KFUNC` (the kfunc's BTF id varies).
    Call(u32),
    /// Conservatively (`maybe_classes`: kernel_read, map_write, packet_write are a superset in the kernel).
    Conservative,
}

struct Case {
    object: (&'static str, &'static [u8]),
    prog: &'static str,
    class: Capability,
    proof: Proof,
    /// The oldest kernel with what the program needs; older ones are reported as not applicable.
    since: (u32, u32),
    /// Why the verifier may refuse the program where the gate allows it (a helper the kernel config leaves out).
    verifier_may_refuse: Option<&'static str>,
}

const fn case(object: (&'static str, &'static [u8]), prog: &'static str, class: Capability, proof: Proof) -> Case {
    Case { object, prog, class, proof, since: (6, 12), verifier_may_refuse: None }
}

const HELPER: u32 = evidence::HELPER;

/// Every evasion the gate must catch, each program on its own.
const CASES: &[Case] = &[
    case(CALLBACKS, "ev_cb_chain", Capability::SendSignal, Proof::Call(HELPER | 109)),
    Case {
        verifier_may_refuse: Some("bpf_override_return needs CONFIG_BPF_KPROBE_OVERRIDE, which Debian's kernels lack"),
        ..case(CALLBACKS, "ev_override_cb", Capability::OverrideReturn, Proof::Call(HELPER | 58))
    },
    case(CALLBACKS, "ev_timer_uwrite", Capability::UserWrite, Proof::Call(HELPER | 36)),
    case(TAIL_CALL, "ev_tail_callee", Capability::SendSignal, Proof::Call(HELPER | 109)),
    case(TAIL_CALL, "ev_tail_caller", Capability::TailCall, Proof::Call(HELPER | 12)),
    case(KFUNC, "ev_rdonly_cast", Capability::KernelRead, Proof::Call(evidence::KFUNC)),
    case(KFUNC, "ev_kexec_cb", Capability::Destructive, Proof::Call(evidence::KFUNC)),
    Case {
        since: (6, 13),
        ..case(KFUNC_SIGNAL, "ev_signal_kfunc", Capability::SendSignal, Proof::Call(evidence::KFUNC))
    },
    case(BTF_READ, "ev_btf_loop", Capability::KernelRead, Proof::Conservative),
    case(BTF_READ, "ev_btf_copy", Capability::KernelRead, Proof::Conservative),
    case(MAP_WRITE, "ev_spill_sub", Capability::MapWrite, Proof::Conservative),
    case(MAP_WRITE, "ev_out_param", Capability::MapWrite, Proof::Conservative),
    case(MAP_WRITE, "ev_helper_write", Capability::MapWrite, Proof::Conservative),
    case(MAP_WRITE, "ev_global_fn", Capability::MapWrite, Proof::Conservative),
    case(MAP_WRITE, "ev_partial_off", Capability::MapWrite, Proof::Conservative),
    case(ATOMIC_FILL, "ev_xchg_fill", Capability::MapWrite, Proof::Conservative),
    case(ATOMIC_FILL, "ev_cmpxchg_fill", Capability::MapWrite, Proof::Conservative),
    case(ATOMIC_FILL, "ev_fadd_fill", Capability::MapWrite, Proof::Conservative),
    // Found by this suite (the catalogue now gives storage_get map_write): F_CREATE inserts the init value.
    case(STORAGE_CREATE, "ev_storage_create", Capability::MapWrite, Proof::Call(HELPER | 156)),
    // Found by this suite: an exception callback no instruction refers to (the library follows the BTF decl tag).
    case(EXCEPTION_CB, "ev_exception_cb", Capability::SendSignal, Proof::Call(HELPER | 109)),
];

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

pub(crate) fn deny_policy(exe: &str, class: Capability) -> String {
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: deny-{class}\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: [{class}]\n"
    )
}

fn allow_policy(exe: &str) -> String {
    format!("version: 1\ndefault: deny\nrules:\n  - name: allow-all\n    subject:\n      exe: {exe}\n")
}

fn names_class(e: &RawEvent, class: Capability, proof: Proof) -> bool {
    let found = e.evidence[class as usize];
    match proof {
        Proof::Call(ev) if ev & !evidence::KIND_MASK == 0 => {
            e.classes & class.bit() != 0 && found & evidence::KIND_MASK == ev
        }
        Proof::Call(ev) => e.classes & class.bit() != 0 && found == ev,
        // A class the gate proves exactly counts too: it is stronger than a conservative one.
        Proof::Conservative => (e.classes | e.maybe_classes) & class.bit() != 0 && found != evidence::NONE,
    }
}

fn describe_all(g: &Live, events: &[&RawEvent]) -> String {
    events.iter().map(|e| g.describe(e)).collect::<Vec<_>>().join("; ")
}

#[test]
fn evasion_each_hidden_class_is_denied_at_load_and_allowed_by_policy() {
    let Some(_guard) = live("evasion_each_hidden_class_is_denied_at_load_and_allowed_by_policy") else { return };
    let exe = this_exe();
    let kernel = kernel_version();
    let mut g = Live::new();
    let mut failures = Vec::new();
    let mut caught = 0;
    for c in CASES {
        let (file, bytes) = c.object;
        let only = |n: &str| n == c.prog;
        g.install(&deny_policy(&exe, c.class));
        g.take();
        let result = load_object(bytes, only);
        let events = g.take();
        let ours = named(&events, c.prog);
        // On a kernel older than the program needs, libbpf may refuse the object before BPF_PROG_LOAD (a kfunc the
        // kernel lacks): nothing to decide. When the load reached the gate, it is judged as on any kernel.
        let old_kernel = kernel < c.since;
        if old_kernel && ours.is_empty() {
            if result.is_ok() {
                failures.push(format!("{file} {}: loaded before {:?} without a decision", c.prog, c.since));
            } else {
                report!("not applicable before {:?}: {file} {} ({result:?}, no load)", c.since, c.prog);
            }
            continue;
        }
        let denied = ours.iter().find(|e| e.verdict == VERDICT_DENY);
        match (result, denied) {
            (r, Some(e))
                if super::gate_refused(r, &format!("{file} {}", c.prog)) && names_class(e, c.class, c.proof) =>
            {
                caught += 1;
                report!("evasion caught: {file} {}: {}", c.prog, g.describe(e));
            }
            (r, _) => failures.push(format!(
                "{file} {}: expected EPERM and a deny event proving {} ({:?}), got {r:?} and [{}]",
                c.prog,
                c.class,
                c.proof,
                describe_all(&g, &ours)
            )),
        }
        // The same program loads once the class is allowed: the verifier accepts the evasion, so it is real.
        g.install(&allow_policy(&exe));
        g.take();
        let result = load_object(bytes, only);
        let events = g.take();
        let ours = named(&events, c.prog);
        let refused_ok = match (result, c.verifier_may_refuse) {
            (Ok(()), _) => true,
            (Err(errno), Some(why)) if errno != libc::EPERM => {
                report!("{file} {}: the gate allowed it, the verifier refused it ({errno}): {why}", c.prog);
                true
            }
            (Err(errno), None) if old_kernel && errno != libc::EPERM => {
                report!(
                    "{file} {}: the gate allowed it, this kernel's verifier (older than {:?}) refused it ({errno})",
                    c.prog,
                    c.since
                );
                true
            }
            _ => false,
        };
        if !refused_ok || ours.is_empty() || ours.iter().any(|e| e.verdict != VERDICT_ALLOW) {
            failures.push(format!(
                "{file} {}: expected the program to load under an allowing policy, got {result:?} and [{}]",
                c.prog,
                describe_all(&g, &ours)
            ));
        }
    }
    report!("evasion: {caught} of {} hidden capabilities caught on {kernel:?}", CASES.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A tail call only shows `tail_call` in the caller: the callee's capability is judged at the callee's own load.
#[test]
fn evasion_tail_call_caller_shows_only_tail_call() {
    let Some(_guard) = live("evasion_tail_call_caller_shows_only_tail_call") else { return };
    let exe = this_exe();
    let (_, bytes) = TAIL_CALL;
    let mut g = Live::new();
    g.install(&deny_policy(&exe, Capability::SendSignal));
    g.take();
    let caller = load_object(bytes, |n| n == "ev_tail_caller");
    let events = g.take();
    let ours = named(&events, "ev_tail_caller");
    report!("tail-call caller under deny send_signal: {caller:?}: [{}]", describe_all(&g, &ours));
    assert_eq!(caller, Ok(()), "the caller alone has nothing denied");
    assert!(
        !ours.is_empty()
            && ours.iter().all(|e| e.verdict == VERDICT_ALLOW
                && e.classes == Capability::TailCall.bit()
                && e.maybe_classes & Capability::SendSignal.bit() == 0),
        "the caller's decision shows tail_call only: {}",
        class_names(ours.first().map_or(0, |e| e.classes))
    );
    // Loading the whole object loads the callee too, which is refused, and libbpf fails the object.
    let whole = load_object(bytes, |_| true);
    let events = g.take();
    let callee = named(&events, "ev_tail_callee");
    report!("whole object under deny send_signal: {whole:?}: [{}]", describe_all(&g, &callee));
    assert_eq!(whole, Err(libc::EPERM));
    assert!(callee.iter().any(|e| e.verdict == VERDICT_DENY && e.classes & Capability::SendSignal.bit() != 0));
}

/// Names of the programs of an evasion object, from the library (pure: no syscalls, safe on any host).
fn program_names(file: &str, bytes: &[u8]) -> Vec<String> {
    // The library's ELF reader needs 8-byte aligned input; include_bytes! data is only 1-aligned: a heap copy.
    let copy = bytes.to_vec();
    let report = bpfgate::inspect(file, &copy);
    report.programs.into_iter().map(|p| p.name).collect()
}

/// Every program of every evasion object is a case here.
#[test]
fn evasion_cases_cover_every_fixture_program() {
    let objects =
        [CALLBACKS, TAIL_CALL, KFUNC, KFUNC_SIGNAL, BTF_READ, MAP_WRITE, ATOMIC_FILL, EXCEPTION_CB, STORAGE_CREATE];
    let mut missing = Vec::new();
    for (file, bytes) in objects {
        let names = program_names(file, bytes);
        assert!(!names.is_empty(), "{file}: no programs");
        missing.extend(names.into_iter().filter(|n| !CASES.iter().any(|c| c.prog == n)).map(|n| format!("{file} {n}")));
    }
    assert!(missing.is_empty(), "evasion programs without a live case: {missing:?}");
}
