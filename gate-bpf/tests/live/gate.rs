//! Live tests of the gate (issue 5), run inside the VM harness on each kernel.
//!
//! Every test attaches the real gate to the kernel and installs policies whose rules name this test
//! binary's executable (or, for the bpftrace test, /usr/bin/bpftrace): other processes keep the policy
//! default, `allow`.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bpfgate::metadata::{Capability, ClassSet};
use bpfgate::policy::compiled::{self, CompiledPolicy};
use bpfgate::policy::Policy;
use bpfgate_gate::event::{
    evidence, scan_flags, Event, RawEvent, OP_PROG_LOAD, OP_PROG_MAPS, VERDICT_ALLOW, VERDICT_AUDIT, VERDICT_DENY,
};
use bpfgate_gate::{EventStream, Gate, HookVariant, HostResolver, LinkGuard};
use bpfgate_test_support::btf::{Btf, INT_SIGNED};
use bpfgate_test_support::insn::{
    add_imm, call_helper, call_kfunc, exit, insn, jeq_imm, jmp_imm, ld_map_fd, ldx, ldx_dw, mov, mov_imm, op, st_imm,
    Insn,
};
use libbpf_rs::libbpf_sys;

use super::live;

/// Writes to the process's stderr directly: libtest hides eprintln! output of passing tests, and these lines
/// are the evidence in the VM logs.
struct Fixture {
    file: &'static str,
    bytes: &'static [u8],
}

macro_rules! fixtures {
    ($($f:literal),* $(,)?) => {
        &[$(Fixture { file: $f, bytes: include_bytes!(concat!("../../../tests/fixtures/", $f)) }),*]
    };
}

/// Every fixture object of the library's tests (tests/fixtures/), carried inside the binary.
const FIXTURES: &[Fixture] = fixtures![
    "destructive_kfunc.bpf.o",
    "evasion_atomic_fill.bpf.o",
    "evasion_btf_read.bpf.o",
    "evasion_callbacks.bpf.o",
    "evasion_exception_cb.bpf.o",
    "evasion_kfunc.bpf.o",
    "evasion_kfunc_signal.bpf.o",
    "evasion_map_write.bpf.o",
    "evasion_storage_create.bpf.o",
    "evasion_tail_call.bpf.o",
    "fentry_btf_read.bpf.o",
    "fmod_ret_override.bpf.o",
    "kconfig_extern.bpf.o",
    "kfunc_known.bpf.o",
    "kprobe_read.bpf.o",
    "lsm_read.bpf.o",
    "map_read_only.bpf.o",
    "map_write_by_helper.bpf.o",
    "map_write_global.bpf.o",
    "map_write_spilled_ptr.bpf.o",
    "map_write_update.bpf.o",
    "map_write_value_ptr.bpf.o",
    "maps_btf.bpf.o",
    "maps_iproute2.bpf.o",
    "maps_legacy.bpf.o",
    "module_kfunc.bpf.o",
    "negative_pure_helper.bpf.o",
    "net_agent.bpf.o",
    "net_agent_write_user.bpf.o",
    "negative_tracepoint.bpf.o",
    "override_return.bpf.o",
    "reach_bpf_loop.bpf.o",
    "reach_for_each_map_elem.bpf.o",
    "reach_subprog.bpf.o",
    "reach_two_progs_one_section.bpf.o",
    "reach_unused_subprog.bpf.o",
    "rodata_read.bpf.o",
    "send_signal.bpf.o",
    "socket_filter_read.bpf.o",
    "sys_bpf.bpf.o",
    "tail_call.bpf.o",
    "tc_store_redirect.bpf.o",
    "trace_printk.bpf.o",
    "unknown_helper.bpf.o",
    "unknown_kfunc.bpf.o",
    "user_read.bpf.o",
    "user_write.bpf.o",
    "xdp_packet_write.bpf.o",
];

fn fixture(file: &str) -> &'static Fixture {
    FIXTURES.iter().find(|f| f.file == file).unwrap_or_else(|| panic!("no fixture {file}"))
}

/// The name the kernel keeps (`aux->name`, 15 bytes).
fn kname(name: &str) -> String {
    name.chars().take(15).collect()
}

pub(crate) fn this_exe() -> String {
    let exe = std::env::current_exe().and_then(|p| p.canonicalize()).expect("the test binary's path");
    exe.display().to_string()
}

fn compile(yaml: &str) -> CompiledPolicy {
    let policy = Policy::parse("test-policy.yaml", yaml).unwrap_or_else(|e| panic!("test policy:\n{e}\n{yaml}"));
    compiled::compile(&policy, 1).unwrap_or_else(|e| panic!("test policy does not compile:\n{e}\n{yaml}"))
}

/// Loads an object with libbpf, only the programs `keep` accepts; `Err(errno)` when the load fails.
pub(crate) fn load_object(bytes: &[u8], keep: impl Fn(&str) -> bool) -> Result<(), i32> {
    let opts = libbpf_sys::bpf_object_open_opts {
        sz: size_of::<libbpf_sys::bpf_object_open_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: the buffer outlives the call (libbpf copies it); opts is a valid, sized options struct.
    let obj = unsafe { libbpf_sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len() as _, &opts) };
    // SAFETY: libbpf_get_error accepts any pointer returned by libbpf.
    let err = unsafe { libbpf_sys::libbpf_get_error(obj.cast()) };
    if obj.is_null() || err != 0 {
        return Err(-(err as i32));
    }
    let mut prog = std::ptr::null_mut();
    loop {
        // SAFETY: obj is a live object; prog is null or a program of obj.
        prog = unsafe { libbpf_sys::bpf_object__next_program(obj, prog) };
        if prog.is_null() {
            break;
        }
        // SAFETY: prog is a program of obj; its name is a NUL-terminated string owned by libbpf.
        let name = unsafe { CStr::from_ptr(libbpf_sys::bpf_program__name(prog)) }.to_string_lossy().into_owned();
        // SAFETY: prog is a program of obj that is not loaded yet.
        unsafe { libbpf_sys::bpf_program__set_autoload(prog, keep(&name)) };
    }
    // SAFETY: obj is a live, opened object.
    let rc = unsafe { libbpf_sys::bpf_object__load(obj) };
    // SAFETY: obj is closed exactly once; this unloads whatever loaded.
    unsafe { libbpf_sys::bpf_object__close(obj) };
    if rc < 0 {
        Err(-rc)
    } else {
        Ok(())
    }
}

/// The gate, attached, with its decision stream.
pub(crate) struct Live {
    gate: Gate,
    stream: EventStream,
    seen: Vec<RawEvent>,
}

impl Live {
    pub(crate) fn new() -> Live {
        Live::with_link_guard(LinkGuard::Auto)
    }

    pub(crate) fn with_link_guard(guard: LinkGuard) -> Live {
        let mut gate = Gate::load().unwrap_or_else(|e| panic!("loading the gate: {e:#}"));
        gate.set_link_guard(guard);
        gate.attach().unwrap_or_else(|e| panic!("attaching the gate: {e:#}"));
        let stream = gate.events().unwrap_or_else(|e| panic!("opening the event stream: {e:#}"));
        Live { gate, stream, seen: Vec::new() }
    }

    pub(crate) fn install(&mut self, yaml: &str) -> u64 {
        let installed = self
            .gate
            .install(&compile(yaml), &HostResolver::new(), false)
            .unwrap_or_else(|e| panic!("installing the policy: {e:#}\n{yaml}"));
        assert!(installed.unresolved.is_empty(), "unresolved policy paths: {:?}", installed.unresolved);
        installed.generation
    }

    /// Events that arrived since the last call.
    pub(crate) fn take(&mut self) -> Vec<RawEvent> {
        let mut new = self.stream.drain().unwrap_or_else(|e| panic!("reading events: {e:#}"));
        self.seen.extend(new.iter().copied());
        std::mem::take(&mut new)
    }

    pub(crate) fn describe(&self, raw: &RawEvent) -> String {
        Event::from_raw(raw, self.gate.names()).to_string()
    }

    /// The kernel the gate judges for (its last helper id), for the library to judge the same.
    pub(crate) fn target(&self) -> bpfgate::target::Target {
        self.gate.target()
    }
}

/// The decisions on loads of programs named `name` (map events may carry the same name).
pub(crate) fn named<'a>(events: &'a [RawEvent], name: &str) -> Vec<&'a RawEvent> {
    let want = kname(name);
    events.iter().filter(|e| matches!(e.op, OP_PROG_LOAD | OP_PROG_MAPS) && event_name(e) == want).collect()
}

fn event_name(e: &RawEvent) -> String {
    let end = e.name.iter().position(|&b| b == 0).unwrap_or(e.name.len());
    String::from_utf8_lossy(&e.name[..end]).into_owned()
}

pub(crate) fn class_names(bits: u32) -> String {
    let names: Vec<&str> = Capability::ALL.iter().filter(|c| bits & c.bit() != 0).map(|c| c.name()).collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

#[test]
fn gate_loads_the_hook_variant_of_this_kernel() {
    let Some(_guard) = live("gate_loads_the_hook_variant_of_this_kernel") else { return };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut nums = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let gate = Gate::load().unwrap_or_else(|e| panic!("loading the gate: {e:#}"));
    let expected = match version {
        v if v >= (6, 16) => HookVariant::FourArgs,
        v if v >= (6, 9) => HookVariant::ThreeArgs,
        // No security_bpf_prog_load: scanned at fentry/bpf_check, decided at lsm/bpf_prog.
        _ => HookVariant::Legacy,
    };
    assert_eq!(gate.variant(), expected, "kernel {}", release.trim());
    // 6.1 has fewer kfuncs (29 of the catalogue's); 6.12 and later well over 50.
    let floor = if version >= (6, 9) { 50 } else { 20 };
    assert!(gate.kfuncs_found() > floor, "only {} catalogued kfuncs found in vmlinux BTF", gate.kfuncs_found());
    report!(
        "gate: kernel {} uses {:?}; {} catalogued kfuncs in vmlinux BTF",
        release.trim(),
        gate.variant(),
        gate.kfuncs_found()
    );
}

#[test]
fn gate_without_policy_allows_and_reports() {
    let Some(_guard) = live("gate_without_policy_allows_and_reports") else { return };
    let mut g = Live::new();
    super::load_socket_filter("bpfgate_nopol").unwrap_or_else(|e| panic!("load without a policy failed: {e}"));
    let events = g.take();
    let ours = named(&events, "bpfgate_nopol");
    assert_eq!(ours.len(), 1, "one decision expected: {events:?}");
    let e = ours[0];
    assert_eq!(e.verdict, VERDICT_ALLOW);
    assert!(e.flags & bpfgate_gate::event::flags::NO_POLICY != 0);
    assert_eq!(e.tgid, std::process::id());
    assert_eq!(e.insn_cnt, 2);
    assert_eq!(e.prog_type, 1);
    report!("no policy: {}", g.describe(e));
}

/// (fixture, program, class the policy denies, expected evidence)
const DENIALS: &[(&str, &str, Capability, u32)] = &[
    ("send_signal.bpf.o", "send_signal", Capability::SendSignal, evidence::HELPER | 109),
    ("kprobe_read.bpf.o", "kprobe_read", Capability::KernelRead, evidence::HELPER | 113),
    ("user_read.bpf.o", "user_read", Capability::UserRead, evidence::HELPER | 112),
    ("user_write.bpf.o", "user_write", Capability::UserWrite, evidence::HELPER | 36),
    ("trace_printk.bpf.o", "trace_printk", Capability::TracePrintk, evidence::HELPER | 6),
    ("tail_call.bpf.o", "tail_call", Capability::TailCall, evidence::HELPER | 12),
    ("override_return.bpf.o", "override_return", Capability::OverrideReturn, evidence::HELPER | 58),
    ("fmod_ret_override.bpf.o", "fmod_ret_override", Capability::OverrideReturn, evidence::INSN),
    ("sys_bpf.bpf.o", "sys_bpf", Capability::SysBpf, evidence::HELPER | 166),
    ("tc_store_redirect.bpf.o", "tc_store_redirect", Capability::Redirect, evidence::HELPER | 23),
    ("destructive_kfunc.bpf.o", "destructive_kfunc", Capability::Destructive, evidence::KFUNC),
];

#[test]
fn gate_denies_each_class_for_this_subject_and_allows_it_otherwise() {
    let Some(_guard) = live("gate_denies_each_class_for_this_subject_and_allows_it_otherwise") else { return };
    let exe = this_exe();
    let mut g = Live::new();
    let mut failures = Vec::new();
    for &(file, prog, class, ev) in DENIALS {
        let bytes = fixture(file).bytes;
        // Denied: the class is in this subject's rule.
        let deny = format!(
            "version: 1\ndefault: allow\nrules:\n  - name: deny-{class}\n    subject:\n      exe: {exe}\n    \
             capabilities:\n      deny: [{class}]\n"
        );
        g.install(&deny);
        g.take();
        let result = load_object(bytes, |_| true);
        let events = g.take();
        let ours = named(&events, prog);
        let denied = ours.iter().find(|e| e.verdict == VERDICT_DENY);
        match (result, denied) {
            (r, Some(e)) if super::gate_refused(r, file) => {
                let slot = class as usize;
                let found = e.evidence[slot];
                let ok_evidence =
                    if ev & !evidence::KIND_MASK == 0 { found & evidence::KIND_MASK == ev } else { found == ev };
                if e.classes & class.bit() == 0 || !ok_evidence {
                    failures.push(format!("{file}: denied, but the event does not prove {class}: {}", g.describe(e)));
                } else {
                    report!("denied as expected: {}", g.describe(e));
                }
            }
            (r, _) => failures.push(format!(
                "{file}: expected EPERM and a deny event naming {class}, got {r:?} and events [{}]",
                ours.iter().map(|e| g.describe(e)).collect::<Vec<_>>().join("; ")
            )),
        }
        // Allowed: same subject, the class no longer denied. The verifier may still refuse the program
        // (unknown_helper), but never the gate.
        let allow = format!("version: 1\ndefault: deny\nrules:\n  - name: allow-all\n    subject:\n      exe: {exe}\n");
        g.install(&allow);
        g.take();
        let result = load_object(bytes, |_| true);
        let events = g.take();
        let ours = named(&events, prog);
        if result == Err(libc::EPERM) || ours.is_empty() || ours.iter().any(|e| e.verdict != VERDICT_ALLOW) {
            failures.push(format!(
                "{file}: expected the gate to allow, got {result:?} and events [{}]",
                ours.iter().map(|e| g.describe(e)).collect::<Vec<_>>().join("; ")
            ));
        } else {
            report!("allowed as expected: {file} -> {result:?}");
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn gate_allows_a_program_without_denied_classes() {
    let Some(_guard) = live("gate_allows_a_program_without_denied_classes") else { return };
    let exe = this_exe();
    let mut g = Live::new();
    let all_call_classes = "[kernel_read, user_read, user_write, send_signal, override_return, sys_bpf, map_write, \
                            tail_call, destructive, trace_printk, packet_write, redirect, unknown]";
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: strict\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: {all_call_classes}\n"
    ));
    g.take();
    let result = load_object(fixture("negative_pure_helper.bpf.o").bytes, |_| true);
    let events = g.take();
    let ours = named(&events, "negative_pure_helper");
    assert_eq!(result, Ok(()), "events: {:?}", ours.iter().map(|e| g.describe(e)).collect::<Vec<_>>());
    assert!(ours.iter().all(|e| e.verdict == VERDICT_ALLOW && e.classes == 0 && e.maybe_classes == 0));
}

/// Calls the kernel cannot execute grant nothing (`bpfgate::target`): libbpf's poison in a branch the verifier
/// proves dead loads under a rule that denies `unknown` (and every other class); the same call reachable passes
/// the gate, which grants it nothing, and the verifier refuses the program (EINVAL), as it does a helper id past
/// the kernel's last (the unknown_helper fixture, 999). `unknown` stays for what can run: an indirect call.
#[test]
fn gate_calls_that_cannot_execute_grant_nothing() {
    let Some(_guard) = live("gate_calls_that_cannot_execute_grant_nothing") else { return };
    let exe = this_exe();
    let mut g = Live::new();
    let max = g.gate.helper_max_id();
    report!("this kernel's __BPF_FUNC_MAX_ID: {max:?}");
    assert!(max.is_some_and(|m| (200..1000).contains(&m)), "the gate read no helper count from BTF: {max:?}");
    let all = "[kernel_read, user_read, user_write, send_signal, override_return, sys_bpf, map_write, tail_call, \
               destructive, trace_printk, packet_write, redirect, unknown]";
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: strict\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: {all}\n"
    ));
    g.take();
    let core = bpfgate::gate_abi::poison::CORE_RELO as i32;
    let map = (bpfgate::gate_abi::poison::MAP_BASE + 1) as i32;
    let kfunc = bpfgate::gate_abi::poison::KFUNC_BASE as i32;
    // As libbpf leaves a failed relocation behind `bpf_core_field_exists` (relocated to 0) and a map it did not
    // create (its ld_imm64 as two calls).
    let dead = [
        mov_imm(1, 0),
        jeq_imm(1, 0, 4),
        call_helper(core),
        call_helper(map),
        call_helper(map),
        call_helper(kfunc),
        mov_imm(0, 0),
        exit(),
    ];
    let reachable = [call_helper(core), mov_imm(0, 0), exit()];
    let mut results = Vec::new();
    for (name, insns) in [("poison_dead", &dead[..]), ("poison_reached", &reachable[..])] {
        let result = load_insns(name, insns);
        let events = g.take();
        let ours = named(&events, name);
        for e in &ours {
            report!("{name}: {result:?}: {}", g.describe(e));
        }
        let e = ours.first().unwrap_or_else(|| panic!("{name}: no decision"));
        results.push((name, result, e.verdict, e.classes | e.maybe_classes, e.scan_flags & scan_flags::NOT_EXECUTABLE));
    }
    let result = load_object(fixture("unknown_helper.bpf.o").bytes, |_| true);
    let events = g.take();
    let ours = named(&events, "unknown_helper");
    let e = ours.first().expect("unknown_helper: no decision");
    report!("unknown_helper (999): {result:?}: {}", g.describe(e));
    results.push((
        "unknown_helper",
        result,
        e.verdict,
        e.classes | e.maybe_classes,
        e.scan_flags & scan_flags::NOT_EXECUTABLE,
    ));
    let flag = scan_flags::NOT_EXECUTABLE;
    assert_eq!(
        results,
        [
            ("poison_dead", Ok(()), VERDICT_ALLOW, 0, flag),
            ("poison_reached", Err(libc::EINVAL), VERDICT_ALLOW, 0, flag),
            ("unknown_helper", Err(libc::EINVAL), VERDICT_ALLOW, 0, flag),
        ]
    );
    // An indirect call can run as far as the gate knows: unknown, denied.
    let callx = [mov_imm(1, 0), insn(0x8d, 0, 1, 0, 0), mov_imm(0, 0), exit()];
    let result = load_insns("callx", &callx);
    let events = g.take();
    let ours = named(&events, "callx");
    let e = ours.first().expect("callx: no decision");
    report!("callx: {result:?}: {}", g.describe(e));
    assert!(crate::gate_refused(result, "callx"), "callx: {result:?}");
    assert_eq!((e.verdict, e.classes), (VERDICT_DENY, Capability::Unknown.bit()));
}

/// Environment variable that turns `gate_child_loader` into the other subject of
/// `gate_other_subjects_are_unaffected`.
const CHILD_ENV: &str = "BPFGATE_GATE_CHILD_FIXTURE";

/// Not a test on its own: run as a child process (another executable) by
/// `gate_other_subjects_are_unaffected`. Exits 0 when the fixture loads, with the errno otherwise.
#[test]
fn gate_child_loader() {
    let Ok(file) = std::env::var(CHILD_ENV) else { return };
    let code = match load_object(fixture(&file).bytes, |_| true) {
        Ok(()) => 0,
        Err(errno) => errno.clamp(1, 255),
    };
    std::process::exit(code);
}

#[test]
fn gate_other_subjects_are_unaffected() {
    let Some(_guard) = live("gate_other_subjects_are_unaffected") else { return };
    let exe = this_exe();
    // A copy is another inode: another subject for the gate.
    let other = std::env::temp_dir().join(format!("bpfgate-other-subject-{}", std::process::id()));
    std::fs::copy(&exe, &other).expect("copying the test binary");
    let mut g = Live::new();
    g.install(&no_signals_policy());
    let here = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    let status = Command::new(&other)
        .args(["--exact", "gate::gate_child_loader", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "send_signal.bpf.o")
        .stdout(Stdio::null())
        .status()
        .expect("running the other subject");
    let _ = std::fs::remove_file(&other);
    let events = g.take();
    for e in named(&events, "send_signal") {
        report!("other subjects: {}", g.describe(e));
    }
    assert_eq!(here, Err(libc::EPERM), "this subject must be denied");
    assert_eq!(status.code(), Some(0), "the other executable must load send_signal.bpf.o");
}

/// A load whose scan is preempted by another load's scan on the same CPU cannot trust the per-CPU jump targets
/// and join table the other took over: its event says so (`contended`) and it counts kernel_read, map_write and
/// packet_write by their preconditions alone; here map_write, as the program references a map, which an
/// uncontended scan does not count. The VM harness boots with preempt=full (elsewhere the test skips without
/// it: under voluntary preemption a BPF program runs to its end). On the VM's one CPU, one thread loads a
/// program of 500,000 instructions back to back, and a SCHED_FIFO thread wakes every few milliseconds and
/// loads it too: a real-time wake-up preempts the other thread at once, mostly in the middle of its scan, so
/// the preemption does not depend on when the fair scheduler ends a time slice (left to two equal threads,
/// one full-suite run on 6.12 saw 200 loads without one preempted scan). The real-time thread's own scans
/// run to their end: clean ones. The program has no exit, so the verifier refuses it at once after the
/// gate's hook: the loads are mostly the gate's scans.
#[test]
fn gate_scan_contention_counts_by_preconditions() {
    let Some(_guard) = live("gate_scan_contention_counts_by_preconditions") else { return };
    if !preempt_full("gate_scan_contention_counts_by_preconditions") {
        return;
    }
    if !super::has_prog_load_hook() {
        return unscanned_loads_fail_closed();
    }
    let exe = this_exe();
    let mut g = Live::new();
    g.install(&format!(
        "version: 1\nmode: audit\ndefault: deny\nrules:\n  - name: audit-everything\n    subject:\n      \
         exe: {exe}\n    action: audit\n"
    ));
    g.take();
    let insns = long_scan();
    let (loads, loaded) = (AtomicUsize::new(0), AtomicBool::new(false));
    let load = || {
        // The load fails (no exit); only the gate's decision on it matters. Not an assert: the polling loop waits
        // for both threads to finish.
        loaded.fetch_or(load_insns("contend", &insns).is_ok(), Ordering::SeqCst);
        loads.fetch_add(1, Ordering::SeqCst);
    };
    let is_contended = |e: &RawEvent| e.scan_flags & scan_flags::CONTENDED != 0;
    // Until a contended and a clean scan were seen: the real-time thread's wake-up lands in a scan most of the
    // time, not always.
    let events = preempting_loads(&mut g, &load, &load, |events| {
        let ours = named(events, "contend");
        ours.iter().any(|e| is_contended(e)) && ours.iter().any(|e| !is_contended(e))
    });
    assert!(!loaded.load(Ordering::SeqCst), "a program without exit loaded");
    let ours = named(&events, "contend");
    let map_write = Capability::MapWrite.bit();
    let contended = ours.iter().filter(|e| is_contended(e)).count();
    for e in &ours {
        let c = is_contended(e);
        assert_eq!(
            e.maybe_classes & map_write != 0,
            c,
            "a {} scan must {}count map_write: {}",
            if c { "contended" } else { "clean" },
            if c { "" } else { "not " },
            g.describe(e)
        );
    }
    let loads = loads.load(Ordering::SeqCst);
    report!("contention: {loads} loads, {} decided, {contended} of them with a contended scan", ours.len());
    assert_eq!(ours.len(), loads, "one decision per load");
    assert!(contended > 0, "no scan was contended in {loads} loads");
    assert!(contended < ours.len(), "every scan was contended in {loads} loads");
}

/// Whether the kernel was booted with preempt=full, which `test` needs to have a real-time wake-up preempt a task
/// inside a BPF program or a syscall (under voluntary preemption that waits for the program's end); the VM
/// harness always boots so, elsewhere the test skips.
pub(crate) fn preempt_full(test: &str) -> bool {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !cmdline.contains("preempt=full") {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness boots with preempt=full: {cmdline}");
        report!("SKIPPED: {test} needs a kernel booted with preempt=full");
        return false;
    }
    true
}

/// A 500,000-instruction program without exit: the verifier refuses it at once after the gate's hook, so its loads
/// are mostly the gate's scan (about 30 ms here). r1 = map fd -1 (BPF_PSEUDO_MAP_FD: a map reference to the
/// gate), then `r0 = 0` to the end.
fn long_scan() -> Vec<Insn> {
    let mut insns = ld_map_fd(1, -1).to_vec();
    insns.resize(500_000, mov_imm(0, 0));
    insns
}

/// Two loaders on the VM's one CPU: one calls `background` back to back; a SCHED_FIFO thread sleeps 3 to 19 ms in
/// turn, then calls `realtime`, so its wake-up preempts the other thread at once, mostly in the middle of a scan
/// (not at the end of a time slice of the fair scheduler). Each makes at most 100 loads; both stop early once
/// `enough` holds for the events so far, or after 120 s. Returns the events.
fn preempting_loads(
    g: &mut Live,
    background: &(dyn Fn() + Sync),
    realtime: &(dyn Fn() + Sync),
    enough: impl Fn(&[RawEvent]) -> bool,
) -> Vec<RawEvent> {
    const MAX_LOADS: usize = 100;
    let (stop, done, refused) = (AtomicBool::new(false), AtomicUsize::new(0), AtomicBool::new(false));
    let start = Barrier::new(2);
    let mut events = Vec::new();
    std::thread::scope(|scope| {
        let (stop, done, refused, start) = (&stop, &done, &refused, &start);
        scope.spawn(move || {
            start.wait();
            for _ in 0..MAX_LOADS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                background();
            }
            done.fetch_add(1, Ordering::SeqCst);
        });
        scope.spawn(move || {
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: pid 0 is this thread; param is a valid sched_param.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            // Not an assert (the other thread waits at the barrier): checked after the threads end.
            refused.store(rc != 0, Ordering::SeqCst);
            start.wait();
            for i in 0..MAX_LOADS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(3 + 4 * (i as u64 % 5)));
                realtime();
            }
            done.fetch_add(1, Ordering::SeqCst);
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(100));
            events.extend(g.take());
            if enough(&events) || Instant::now() > deadline {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
    events.extend(g.take());
    assert!(!refused.load(Ordering::SeqCst), "the second loader could not be made SCHED_FIFO");
    events
}

/// The contention test's setting on 6.1, where the scan is a fentry program with recursion protection: a load
/// that preempts another's scan on its CPU does not run the scan at all (the program is already active there),
/// so no scan is ever contended. Such a load was recorded at lsm/bpf_prog_alloc_security, stays unscanned, and
/// is denied at lsm/bpf_prog under an enforced policy (fail closed), even one that allows everything. Here the
/// real-time thread loads a valid two-instruction program: each load of it is either scanned and allowed, or
/// unscanned and denied; both must be seen.
fn unscanned_loads_fail_closed() {
    let mut g = Live::new();
    g.install("version: 1\ndefault: allow\nrules: []\n");
    g.take();
    let insns = long_scan();
    let loads = std::sync::Mutex::new(Vec::new());
    let background = || {
        let _ = load_insns("contend", &insns);
    };
    let realtime = || {
        let r = load_insns("rt_small", &[mov_imm(0, 0), exit()]);
        loads.lock().unwrap().push(r);
    };
    let events = preempting_loads(&mut g, &background, &realtime, |events| {
        let ours = named(events, "rt_small");
        ours.iter().any(|e| e.verdict == VERDICT_DENY) && ours.iter().any(|e| e.verdict == VERDICT_ALLOW)
    });
    let loads = loads.into_inner().unwrap();
    let ours = named(&events, "rt_small");
    for e in &ours {
        report!("rt_small: {}", g.describe(e));
    }
    let denied: Vec<_> = ours.iter().filter(|e| e.verdict == VERDICT_DENY).collect();
    let allowed = ours.iter().filter(|e| e.verdict == VERDICT_ALLOW).count();
    report!(
        "6.1 contention: {} loads of rt_small, {allowed} scanned and allowed, {} unscanned and denied",
        loads.len(),
        denied.len()
    );
    assert_eq!(ours.len(), loads.len(), "one decision per load");
    assert_eq!(loads.iter().filter(|r| r.is_ok()).count(), allowed, "{loads:?}");
    assert_eq!(loads.iter().filter(|r| **r == Err(libc::EPERM)).count(), denied.len(), "{loads:?}");
    // Allowed only with the whole program scanned; denied only as unscanned (no reason of the policy's).
    assert!(ours.iter().filter(|e| e.verdict == VERDICT_ALLOW).all(|e| e.scanned == 2));
    assert!(denied.iter().all(|e| e.scanned == 0 && e.reasons == 0 && e.rule == u32::MAX));
    assert!(!denied.is_empty(), "no load preempted a scan in {} loads", loads.len());
    assert!(allowed > 0, "every load preempted a scan");
}

/// In audit mode the gate denies nothing, and for every fixture program it sees, the classes it counts (proved
/// by calls, or by its tags) equal the library's classes for the program, and equal the library's model of the
/// gate (`bpfgate::kernel_view`) exactly, split the same way into proved and conservative ones.
#[test]
fn gate_conformance_with_the_library_in_audit_mode() {
    let Some(_guard) = live("gate_conformance_with_the_library_in_audit_mode") else { return };
    let exe = this_exe();
    let mut g = Live::new();
    let generation = g.install(&audit_deny_everything(&exe));
    g.take();
    let mut compared = 0;
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for f in FIXTURES {
        // The library's ELF reader needs 8-byte aligned input; include_bytes! data is only 1-aligned.
        let copy = f.bytes.to_vec();
        assert_eq!(copy.as_ptr() as usize % 8, 0, "heap copies are 8-byte aligned");
        // Judged for this kernel, as the gate judges: its last helper id comes from the kernel's BTF.
        let report = bpfgate::inspect_with(
            f.file,
            &copy,
            &bpfgate::InspectOptions { target: g.gate.target(), ..Default::default() },
        );
        for err in &report.errors {
            table.push(format!("{:<34} library error: {err}", f.file));
            failures.push(format!("{}: the library could not analyze it: {err}", f.file));
        }
        for p in &report.programs {
            let result = load_object(f.bytes, |n| n == p.name);
            let events = g.take();
            let ours = named(&events, &p.name);
            let Some(e) = ours.first() else {
                table.push(format!(
                    "{:<34} {:<24} no decision (libbpf stopped before BPF_PROG_LOAD: {result:?})",
                    f.file, p.name
                ));
                continue;
            };
            compared += 1;
            let mut lib = p.class_set().0;
            let view = &p.kernel_view;
            let conservative: ClassSet = view.conservative.iter().copied().collect();
            let mut proved = view.class_set().0 & !conservative.0;
            // A weak kfunc this kernel lacks: libbpf poisons its call at load (the gate counts nothing), which the
            // library, reading the ELF without the kernel's BTF, cannot know; it says `unknown`, the stricter.
            let weak_kfunc_poisoned = e.scan_flags & scan_flags::NOT_EXECUTABLE != 0
                && e.classes & Capability::Unknown.bit() == 0
                && p.kfuncs.iter().all(|k| bpfgate::helpers::kfunc(k).is_none())
                && !p.kfuncs.is_empty();
            if weak_kfunc_poisoned {
                lib &= !Capability::Unknown.bit();
                proved &= !Capability::Unknown.bit();
                table.push(format!(
                    "{:<34} {:<24} libbpf poisoned the call of weak kfunc {:?}: the library's `unknown` is left out",
                    f.file, p.name, p.kfuncs
                ));
            }
            let mut bad = Vec::new();
            if result == Err(libc::EPERM) || ours.iter().any(|e| e.verdict != VERDICT_AUDIT) {
                bad.push("audit mode refused a load".to_owned());
            }
            if e.generation != generation {
                bad.push(format!("generation {} instead of {generation}", e.generation));
            }
            if e.classes != proved {
                bad.push(format!("proved {} != library's view {}", class_names(e.classes), class_names(proved)));
            }
            if e.maybe_classes != conservative.0 {
                bad.push(format!(
                    "conservative {} != library's view {}",
                    class_names(e.maybe_classes),
                    class_names(conservative.0)
                ));
            }
            if e.classes | e.maybe_classes != lib {
                bad.push(format!("gate {} != library {}", class_names(e.classes | e.maybe_classes), class_names(lib)));
            }
            if e.insn_cnt != p.insn_count {
                bad.push(format!("{} insns, library {}", e.insn_cnt, p.insn_count));
            }
            if ours.iter().any(|o| o.classes != e.classes || o.maybe_classes != e.maybe_classes) {
                bad.push("retries disagree".to_owned());
            }
            table.push(format!(
                "{:<34} {:<24} gate {:<40} maybe {:<28} library {:<40} load {:?}{}",
                f.file,
                p.name,
                class_names(e.classes),
                class_names(e.maybe_classes),
                class_names(lib),
                result.map_err(|errno| std::io::Error::from_raw_os_error(errno).to_string()),
                if bad.is_empty() { String::new() } else { format!("  MISMATCH: {}", bad.join("; ")) }
            ));
            if !bad.is_empty() {
                failures.push(format!("{} {}: {}", f.file, p.name, bad.join("; ")));
            }
        }
    }
    report!("conformance ({compared} programs decided):\n{}", table.join("\n"));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 30, "only {compared} fixture programs reached the gate");
}

/// An audit-mode policy whose rule for `exe` denies everything: every load is decided, reported and let through.
pub(crate) fn audit_deny_everything(exe: &str) -> String {
    format!(
        "version: 1\nmode: audit\ndefault: deny\nrules:\n  - name: deny-everything\n    subject:\n      \
         exe: {exe}\n    action: deny\n"
    )
}

/// `bpfgate check --gate` predicts the gate: under an enforced policy that restricts the conservative classes and
/// attach targets, the gate's final decision on every fixture program equals the library's verdict on the
/// program as the gate judges it (`kernel_view::judged`), allow or deny.
#[test]
fn gate_decisions_match_check_gate() {
    let Some(_guard) = live("gate_decisions_match_check_gate") else { return };
    let exe = this_exe();
    let text = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: strict\n    subject:\n      exe: {exe}\n    \
         attach_targets: [\"do_*\", \"sched_*\", \"syscalls/*\"]\n    capabilities:\n      \
         deny: [kernel_read, packet_write, send_signal]\n"
    );
    let policy = Policy::parse("strict.yaml", &text).expect("the test policy parses");
    let subject = bpfgate::policy::Subject { exe: Some(exe.clone()), cgroup: None, uid: Some(0) };
    let mut g = Live::new();
    g.install(&text);
    g.take();
    let (mut compared, mut denied) = (0, 0);
    let mut failures = Vec::new();
    for f in FIXTURES {
        let copy = f.bytes.to_vec();
        let report = bpfgate::inspect_with(
            f.file,
            &copy,
            &bpfgate::InspectOptions { target: g.gate.target(), ..Default::default() },
        );
        for p in &report.programs {
            let _ = load_object(f.bytes, |n| n == p.name);
            let events = g.take();
            let decisions: Vec<_> =
                named(&events, &p.name).into_iter().filter(|e| matches!(e.op, OP_PROG_LOAD | OP_PROG_MAPS)).collect();
            // The last decision of the last attempt is the load's (libbpf may stop before BPF_PROG_LOAD).
            let Some(e) = decisions.last() else { continue };
            let want = policy.evaluate(&subject, &bpfgate::kernel_view::judged(p, &report.maps), &report.maps);
            let gate_denies = e.verdict == VERDICT_DENY;
            let check_denies = want.decision == bpfgate::policy::Decision::Deny;
            compared += 1;
            denied += usize::from(gate_denies);
            if gate_denies != check_denies {
                failures.push(format!("{} {}: gate {} / check --gate {want}", f.file, p.name, g.describe(e)));
            }
        }
    }
    report!("check --gate against the gate: {compared} programs, {denied} denied by both");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 30 && denied >= 10 && denied < compared, "{compared} compared, {denied} denied");
}

#[test]
fn gate_reload_is_atomic_under_concurrent_loads() {
    let Some(_guard) = live("gate_reload_is_atomic_under_concurrent_loads") else { return };
    let exe = this_exe();
    let mut g = Live::new();
    let allow = format!("version: 1\ndefault: allow\nrules:\n  - name: allow\n    subject:\n      exe: {exe}\n");
    let deny = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: kprobes-only\n    subject:\n      exe: {exe}\n    \
         prog_types: [kprobe]\n"
    );
    let mut denying = BTreeMap::new();
    let first = g.install(&allow);
    denying.insert(first, false);
    g.take();

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut ok, mut eperm, mut other) = (0u32, 0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match super::load_socket_filter("bpfgate_gen") {
                    Ok(_) => ok += 1,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
                    Err(e) => other.push(e.to_string()),
                }
            }
            (ok, eperm, other)
        })
    };
    let mut all = Vec::new();
    for i in 0..20 {
        let deny_now = i % 2 == 0;
        let generation = g.install(if deny_now { &deny } else { &allow });
        denying.insert(generation, deny_now);
        std::thread::sleep(Duration::from_millis(20));
        all.extend(g.take());
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, eperm, other) = loader.join().expect("loader thread");
    std::thread::sleep(Duration::from_millis(50));
    all.extend(g.take());

    // A bad policy is refused and the one in force stays.
    let last = *denying.keys().last().expect("installed");
    let mut bad = compile(&allow);
    bad.header.magic = 0;
    assert!(g.gate.install(&bad, &HostResolver::new(), false).is_err(), "a corrupt policy was accepted");
    assert_eq!(g.gate.generation(), Some(last));

    // A load the verifier accepted is decided again at lsm/bpf_prog when the policy changed meanwhile
    // (op load_maps, right after its load event from the same thread): that decision is the load's.
    let mut ours: Vec<&RawEvent> = Vec::new();
    for e in named(&all, "bpfgate_gen") {
        if e.op == OP_PROG_MAPS && ours.last().is_some_and(|p| p.op == OP_PROG_LOAD && p.pid == e.pid) {
            ours.pop();
        }
        ours.push(e);
    }
    let redecided = ours.iter().filter(|e| e.op == OP_PROG_MAPS).count();
    let mut wrong = Vec::new();
    let (mut ev_allow, mut ev_deny) = (0u32, 0u32);
    for e in &ours {
        match denying.get(&e.generation) {
            Some(&d) if d == (e.verdict == VERDICT_DENY) => {}
            _ => wrong.push(g.describe(e)),
        }
        if e.verdict == VERDICT_DENY {
            ev_deny += 1;
        } else {
            ev_allow += 1;
        }
    }
    report!(
        "reload: {} loads ({ok} allowed, {eperm} EPERM) across {} generations; decisions {ev_allow} allow, \
         {ev_deny} deny ({redecided} taken again after verification under a newer policy); dropped {}",
        ok + eperm,
        denying.len(),
        g.gate.dropped().unwrap_or(0)
    );
    assert!(other.is_empty(), "unexpected load errors: {other:?}");
    assert!(wrong.is_empty(), "decisions inconsistent with their generation:\n{}", wrong.join("\n"));
    assert_eq!((ev_allow, ev_deny), (ok, eperm), "every load has exactly one decision");
    assert!(ok > 0 && eperm > 0, "both policies must have decided some loads");
}

/// The gate's count of loads in flight (`pending_records`, which lets an fd by id skip the pending-load lookup
/// while it is 0) never falls below 0 under concurrent loads of every outcome (allowed, denied by the gate,
/// refused by the verifier) and comes back to 0 once they are done: a count left above 0 would only cost the
/// skip, one below the records would let an fd by id pass a load not yet decided (`first_fd` tests that race).
#[test]
fn gate_counts_loads_in_flight_back_to_zero() {
    let Some(_guard) = live("gate_counts_loads_in_flight_back_to_zero") else { return };
    let mut g = Live::new();
    g.install(&no_signals_policy());
    g.take();
    assert_eq!(g.gate.loads_in_flight(), 0, "before any load");
    const ROUNDS: usize = 40;
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                let mut outcomes = BTreeMap::<&str, Vec<Result<(), i32>>>::new();
                let mut kept = Vec::new();
                for _ in 0..ROUNDS {
                    match load_insns_fd("bpfgate_fl_ok", &[mov_imm(0, 0), exit()]) {
                        Ok(fd) => kept.push(fd),
                        Err(e) => outcomes.entry("allowed").or_default().push(Err(e)),
                    }
                    let signal = [mov_imm(1, 10), call_helper(109), mov_imm(0, 0), exit()];
                    let r = load_typed_fd(libbpf_sys::BPF_PROG_TYPE_KPROBE, "bpfgate_fl_sig", &signal).map(fd_result);
                    outcomes.entry("send_signal").or_default().push(r.map(drop));
                    // r0 is never set: the verifier refuses it after the gate's scan.
                    outcomes.entry("unverifiable").or_default().push(load_insns("bpfgate_fl_bad", &[exit()]));
                }
                for fd in kept {
                    fd_result(fd);
                }
                done.fetch_add(1, Ordering::Relaxed);
                outcomes
            })
        })
        .collect();
    let (mut samples, mut busy) = (0u32, 0u32);
    while done.load(Ordering::Relaxed) < 2 {
        let n = g.gate.loads_in_flight();
        assert!(n >= 0, "loads in flight {n}");
        samples += 1;
        busy += u32::from(n > 0);
        std::thread::yield_now();
    }
    let (mut wrong, mut refused) = (Vec::new(), 0);
    for outcomes in loaders.into_iter().map(|l| l.join().expect("loader thread")) {
        for (what, results) in outcomes {
            let want = match what {
                "allowed" => Ok(()),
                "send_signal" => Err(libc::EPERM),
                _ => Err(libc::EACCES),
            };
            for r in results.into_iter().filter(|r| *r != want) {
                // 6.1: a load that preempts the other thread's scan on the one CPU is not scanned (the fentry
                // program is already active there) and is denied, fail closed (`unscanned_loads_fail_closed`).
                if what == "allowed" && r == Err(libc::EPERM) {
                    refused += 1;
                } else {
                    wrong.push(format!("{what}: {r:?}"));
                }
            }
        }
    }
    // A program is freed from deferred work after its last fd closes (RCU): its record goes then.
    wait_for("the loads in flight to come back to 0", Duration::from_secs(10), || g.gate.loads_in_flight() == 0);
    let events = g.take();
    let denied: Vec<_> = named(&events, "bpfgate_fl_ok").into_iter().filter(|e| e.verdict == VERDICT_DENY).collect();
    report!(
        "loads in flight: {samples} samples while {} loads ran, {busy} above 0; back to 0 ({refused} unscanned and denied)",
        2 * 3 * ROUNDS
    );
    assert!(wrong.is_empty(), "unexpected outcomes: {wrong:?}");
    assert_eq!(denied.len(), refused, "one unscanned denial per refused allowed load");
    assert!(denied.iter().all(|e| e.scanned == 0 && e.reasons == 0), "denied only as unscanned");
}

pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> (Option<i32>, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tick();
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status, out, err)
}

/// A real client: Debian's bpftrace, under the shipped observability policy (examples/policies/observability.yaml).
#[test]
fn gate_bpftrace_observability_policy() {
    let Some(_guard) = live("gate_bpftrace_observability_policy") else { return };
    let bpftrace = "/usr/bin/bpftrace";
    if !std::path::Path::new(bpftrace).exists() {
        panic!("{bpftrace} is not in this system; the VM harness installs it");
    }
    let mut g = Live::new();
    // The example policy users start from, as shipped: its `maps.write: own` and `pinned: deny` hold for
    // bpftrace's own maps. Its other subjects (BCC's service cgroup, an audit agent) are not in the VM.
    let policy = include_str!("../../../examples/policies/observability.yaml");
    let installed = g
        .gate
        .install(&compile(policy), &HostResolver::new(), false)
        .unwrap_or_else(|e| panic!("installing observability.yaml: {e:#}"));
    report!("observability.yaml installed; absent here: {:?}", installed.unresolved);
    g.take();
    // The counting program runs; this test's own nanosleeps trigger the probe.
    let (status, out, err) = run_with_timeout(
        Command::new(bpftrace).args(["-e", "kprobe:do_nanosleep { @[comm] = count(); exit(); }"]),
        Duration::from_secs(120),
        || std::thread::sleep(Duration::from_millis(10)),
    );
    let events = g.take();
    let from_bpftrace: Vec<&RawEvent> = events.iter().filter(|e| e.comm.starts_with(b"bpftrace")).collect();
    for e in &from_bpftrace {
        report!("bpftrace counting: {}", g.describe(e));
    }
    assert_eq!(status, Some(0), "bpftrace counting run failed\nstdout: {out}\nstderr: {err}");
    assert!(out.contains("@["), "no map printed: {out}");
    assert!(from_bpftrace.iter().any(|e| e.verdict == VERDICT_ALLOW && e.prog_type == 2), "no allowed kprobe load");

    let (status, out, err) = run_with_timeout(
        Command::new(bpftrace).args(["--unsafe", "-e", "kprobe:do_nanosleep { signal(\"KILL\"); }"]),
        Duration::from_secs(120),
        || {},
    );
    let events = g.take();
    let denied: Vec<&RawEvent> =
        events.iter().filter(|e| e.comm.starts_with(b"bpftrace") && e.verdict == VERDICT_DENY).collect();
    for e in events.iter().filter(|e| e.comm.starts_with(b"bpftrace") && e.verdict == VERDICT_DENY) {
        report!("bpftrace signal: {}", g.describe(e));
    }
    assert_ne!(status, Some(0), "bpftrace with signal() must fail\nstdout: {out}\nstderr: {err}");
    assert!(status.is_some(), "bpftrace with signal() did not stop by itself\nstderr: {err}");
    assert!(
        denied.iter().any(|e| e.classes & Capability::SendSignal.bit() != 0
            && e.evidence[Capability::SendSignal as usize] == evidence::HELPER | 109),
        "no denial naming send_signal (helper 109)\nstderr: {err}"
    );
    report!(
        "bpftrace --unsafe signal(): exit {status:?}; stderr: {}",
        err.lines().take(3).collect::<Vec<_>>().join(" | ")
    );
}

/// A Write that several threads can share and read back.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `bpfgate enforce`'s loop on a thread of this process (`daemon::run`), with its output and log kept.
struct RunningDaemon {
    control: std::sync::Arc<bpfgate_gate::daemon::Control>,
    out: Shared,
    log: Shared,
    /// Taken by `stop`; a test that panics first stops the loop when this drops (its gate must not outlive the
    /// test: it would judge the next tests' loads).
    thread: Option<std::thread::JoinHandle<Result<bpfgate_gate::daemon::Summary, bpfgate_gate::daemon::DaemonError>>>,
}

impl RunningDaemon {
    /// Starts the loop with the policy file at `policy` and returns once the gate enforces it.
    fn start(policy: &std::path::Path, audit: bool, json: bool) -> RunningDaemon {
        use bpfgate_gate::daemon::{self, Control, Options};
        let control = std::sync::Arc::new(Control::default());
        let (out, log) = (Shared::default(), Shared::default());
        let ready = std::sync::Arc::new(AtomicBool::new(false));
        let opts = Options {
            policy: policy.to_owned(),
            audit,
            json,
            persist: None,
            metrics: None,
            link_guard: LinkGuard::Auto,
        };
        let thread = {
            let (control, mut out, mut log, ready) = (control.clone(), out.clone(), log.clone(), ready.clone());
            std::thread::spawn(move || {
                daemon::run(&opts, &control, &mut out, &mut log, &mut || ready.store(true, Ordering::SeqCst))
            })
        };
        wait_for("the gate to enforce", Duration::from_secs(300), || {
            ready.load(Ordering::SeqCst) || thread.is_finished()
        });
        RunningDaemon { control, out, log, thread: Some(thread) }
    }

    /// Stops the loop; its summary. Every decision made so far is printed by then: the loop drains the event
    /// ring after it detaches the gate, and a decision's event is in the ring before its syscall returns.
    fn stop(mut self) -> bpfgate_gate::daemon::Summary {
        self.control.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("running");
        thread.join().expect("the loop thread").unwrap_or_else(|e| panic!("bpfgate enforce loop: {e}"))
    }
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.control.stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
    }
}

/// The loop behind `bpfgate enforce`: prints decisions, reloads (refusing a bad policy, keeping the old one),
/// and stops, taking the gate with it.
#[test]
fn gate_enforce_loop_reloads_refuses_bad_policy_and_stops() {
    let Some(_guard) = live("gate_enforce_loop_reloads_refuses_bad_policy_and_stops") else { return };
    let exe = this_exe();
    let path = std::env::temp_dir().join(format!("bpfgate-enforce-{}.yaml", std::process::id()));
    let deny = no_signals_policy();
    let allow = format!("version: 1\ndefault: allow\nrules:\n  - name: anything\n    subject:\n      exe: {exe}\n");
    std::fs::write(&path, &deny).expect("writing the policy");
    let daemon = RunningDaemon::start(&path, false, false);
    let (control, out, log) = (daemon.control.clone(), daemon.out.clone(), daemon.log.clone());
    let send_signal = fixture("send_signal.bpf.o").bytes;
    let reload = |text: &str, expect: &str| {
        let before = log.text().matches(expect).count();
        std::fs::write(&path, text).expect("writing the policy");
        control.reload.store(true, Ordering::SeqCst);
        wait_for(expect, Duration::from_secs(60), || log.text().matches(expect).count() > before);
    };

    let first = load_object(send_signal, |_| true);
    reload("version: 1\nrules: [", "reload refused");
    let after_bad = load_object(send_signal, |_| true);
    reload(&allow, "bpfgate: reloaded");
    let allowed = load_object(send_signal, |_| true);
    reload(&deny, "bpfgate: reloaded");
    let denied_again = load_object(send_signal, |_| true);
    let summary = daemon.stop();
    let after_stop = load_object(send_signal, |_| true);
    let _ = std::fs::remove_file(&path);

    let (out, log) = (out.text(), log.text());
    report!("enforce loop log:\n{log}");
    for line in out.lines().filter(|l| l.contains("name: send_signal")) {
        report!("enforce: {line}");
    }
    assert_eq!(first, Err(libc::EPERM), "the first policy denies send_signal");
    assert_eq!(after_bad, Err(libc::EPERM), "a refused reload keeps the policy in force");
    assert_eq!(allowed, Ok(()), "the reloaded policy allows it");
    assert_eq!(denied_again, Err(libc::EPERM), "reloading back denies again");
    assert_eq!(after_stop, Ok(()), "the gate goes away with the loop");
    assert_eq!((summary.reloads, summary.refused_reloads), (2, 1));
    // libbpf retries a refused load once (to fetch a log), so a denial can print twice.
    let ours: Vec<&str> = out.lines().filter(|l| l.contains("name: send_signal")).collect();
    let allowed_at: Vec<usize> =
        ours.iter().enumerate().filter(|(_, l)| l.contains("action: BPFAllowed")).map(|(i, _)| i).collect();
    assert_eq!(allowed_at.len(), 1, "one allowed load:\n{out}");
    let (before, after) = ours.split_at(allowed_at[0]);
    assert!(before.len() >= 2 && after.len() >= 2, "two denials before the allow and one after:\n{out}");
    let denial = "classes: send_signal(helper 109 send_signal) rule: 0 (no-signals) action: BPFDenied";
    assert!(before.iter().chain(&after[1..]).all(|l| l.contains(denial)), "denials name the class:\n{out}");
    assert!(after[0].contains("rule: 0 (anything) action: BPFAllowed"), "{}", after[0]);
}

#[test]
fn gate_enforce_loop_json_audit() {
    let Some(_guard) = live("gate_enforce_loop_json_audit") else { return };
    let path = std::env::temp_dir().join(format!("bpfgate-enforce-json-{}.yaml", std::process::id()));
    std::fs::write(&path, no_signals_policy()).expect("writing the policy");
    let daemon = RunningDaemon::start(&path, true, true);
    let out = daemon.out.clone();
    let loaded = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    daemon.stop();
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded, Ok(()), "--audit never denies");
    let text = out.text();
    let line =
        text.lines().find(|l| l.contains("\"name\":\"send_signal\"")).unwrap_or_else(|| panic!("no event:\n{text}"));
    report!("enforce --json --audit: {line}");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["verdict"], "audit");
    assert_eq!(v["audit_mode"], true);
    assert_eq!(v["classes"][0]["class"], "send_signal");
    assert_eq!(v["classes"][0]["evidence"]["id"], 109);
    assert_eq!(v["rule_name"], "no-signals");
}

/// Loads a socket filter made of `insns`; `Err(errno)` when the load fails.
fn load_insns(name: &str, insns: &[Insn]) -> Result<(), i32> {
    let fd = load_insns_fd(name, insns)?;
    // SAFETY: fd is a fresh program fd that we own and close here.
    unsafe { libc::close(fd) };
    Ok(())
}

/// As `load_insns`, keeping the program: its fd, which the caller closes.
fn load_insns_fd(name: &str, insns: &[Insn]) -> Result<i32, i32> {
    load_typed_fd(libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER, name, insns)
}

/// Loads `insns` as a GPL program of `prog_type` named `name`; the fd, which the caller closes, or the errno.
pub(crate) fn load_typed_fd(prog_type: libbpf_sys::bpf_prog_type, name: &str, insns: &[Insn]) -> Result<i32, i32> {
    load_attached_fd(prog_type, 0, 0, name, insns)
}

/// As `load_typed_fd`, with the expected attach type and the attach target's BTF id (0: none).
pub(crate) fn load_attached_fd(
    prog_type: libbpf_sys::bpf_prog_type,
    attach_type: libbpf_sys::bpf_attach_type,
    attach_btf_id: u32,
    name: &str,
    insns: &[Insn],
) -> Result<i32, i32> {
    let opts =
        libbpf_sys::bpf_prog_load_opts { expected_attach_type: attach_type, attach_btf_id, ..Default::default() };
    load_with_opts(prog_type, name, insns, opts)
}

/// `bpf_prog_load` with these options (`sz` is set here): a new fd or the errno.
pub(crate) fn load_with_opts(
    prog_type: libbpf_sys::bpf_prog_type,
    name: &str,
    insns: &[Insn],
    mut opts: libbpf_sys::bpf_prog_load_opts,
) -> Result<i32, i32> {
    let name = std::ffi::CString::new(name).map_err(|_| libc::EINVAL)?;
    opts.sz = size_of::<libbpf_sys::bpf_prog_load_opts>() as libbpf_sys::size_t;
    // SAFETY: all pointers are valid for the call (Insn has struct bpf_insn's layout; the caller keeps what
    // opts points to alive); opts is sized.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            name.as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr().cast(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(-fd);
    }
    Ok(fd)
}

/// The kernel's limit is 1M instructions: the gate scans all of them and finds a helper call in the last ones.
#[test]
fn gate_scans_a_program_at_the_kernel_limit() {
    let Some(_guard) = live("gate_scans_a_program_at_the_kernel_limit") else { return };
    const LIMIT: usize = 1_000_000;
    let mut insns = vec![mov_imm(0, 0); LIMIT - 3];
    insns.push(mov_imm(1, 10));
    insns.push(call_helper(109)); // bpf_send_signal
    insns.push(exit());
    let mut g = Live::new();
    g.install(&no_signals_policy());
    g.take();
    let start = Instant::now();
    let result = load_insns("bpfgate_1m", &insns);
    let took = start.elapsed();
    let events = g.take();
    let ours = named(&events, "bpfgate_1m");
    let e = ours.first().unwrap_or_else(|| panic!("no decision for the 1M-instruction program"));
    report!("1M instructions: load {result:?} in {took:?} (gate scan plus syscall): {}", g.describe(e));
    assert!(super::gate_refused(result, "1M instructions"), "{result:?}");
    assert_eq!(e.verdict, VERDICT_DENY, "{}", g.describe(e));
    assert_eq!((e.insn_cnt, e.scanned), (LIMIT as u32, LIMIT as u32), "every instruction scanned");
    assert_eq!(e.flags & bpfgate_gate::event::flags::TRUNCATED, 0);
    assert_eq!(e.evidence[Capability::SendSignal as usize], evidence::HELPER | 109);
}

// ---- map ownership, cgroup subjects, self-protection ---------------------------------------------------------

/// Environment variables of `gate_child_actions`: a cgroup (path under the cgroup2 mount) to move into
/// first, and the actions to run.
const CHILD_CGROUP_ENV: &str = "BPFGATE_GATE_CHILD_CGROUP";
const CHILD_ACTIONS_ENV: &str = "BPFGATE_GATE_CHILD_ACTIONS";

/// 0 or the errno of a libbpf call that returns a new fd or -errno (the fd is closed).
pub(crate) fn fd_result(fd: i32) -> i32 {
    if fd < 0 {
        -fd
    } else {
        // SAFETY: a fresh fd this process owns.
        unsafe { libc::close(fd) };
        0
    }
}

pub(crate) fn map_fd_by_id(id: u32, flags: u32) -> i32 {
    let opts = libbpf_sys::bpf_get_fd_by_id_opts {
        sz: size_of::<libbpf_sys::bpf_get_fd_by_id_opts>() as libbpf_sys::size_t,
        open_flags: flags,
        ..Default::default()
    };
    // SAFETY: opts is a valid, sized options struct.
    unsafe { libbpf_sys::bpf_map_get_fd_by_id_opts(id, &opts) }
}

pub(crate) fn create_map(name: &str) -> i32 {
    let name = std::ffi::CString::new(name).expect("map name");
    // SAFETY: valid name; null opts means defaults.
    unsafe { libbpf_sys::bpf_map_create(libbpf_sys::BPF_MAP_TYPE_HASH, name.as_ptr(), 4, 4, 8, std::ptr::null()) }
}

/// The kernel id of a BPF object fd of this test.
pub(crate) fn obj_id(fd: i32) -> u32 {
    bpfgate_gate::object_id(fd).expect("the id of a BPF object fd")
}

/// A socket filter that updates the map behind `map_fd` (helper 2, map_update_elem).
fn load_map_writer(name: &str, map_fd: i32) -> Result<(), i32> {
    let [ld, ld_hi] = ld_map_fd(1, map_fd);
    let insns = [
        st_imm(op::W, 10, -4, 0),
        st_imm(op::W, 10, -8, 1),
        ld,
        ld_hi,
        mov(2, 10),
        add_imm(2, -4),
        mov(3, 10),
        add_imm(3, -8),
        mov_imm(4, 0),
        call_helper(2),
        mov_imm(0, 0),
        exit(),
    ];
    load_insns(name, &insns)
}

/// Not a test on its own: the other subject of the ownership and self-protection tests, run as a child
/// process. Moves into the cgroup it is given, runs each action and prints `ACTION=ERRNO` lines (0: success).
#[test]
fn gate_child_actions() {
    let Ok(actions) = std::env::var(CHILD_ACTIONS_ENV) else { return };
    if let Ok(cgroup) = std::env::var(CHILD_CGROUP_ENV) {
        std::fs::write(format!("{cgroup}/cgroup.procs"), "0").expect("joining the test cgroup");
    }
    for action in actions.split(',') {
        let (verb, arg) = action.split_once(':').unwrap_or((action, "0"));
        let id: u32 = arg.parse().unwrap_or(0);
        let result = match verb {
            "map_rw" => fd_result(map_fd_by_id(id, 0)),
            "map_ro" => fd_result(map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY)),
            "write_foreign" => {
                let fd = map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY);
                let r = if fd < 0 { -fd } else { load_map_writer("bpfgate_wforeign", fd).err().unwrap_or(0) };
                fd_result(fd);
                r
            }
            "write_own" => {
                let fd = create_map("bpfgate_child");
                let r = if fd < 0 { -fd } else { load_map_writer("bpfgate_wown", fd).err().unwrap_or(0) };
                fd_result(fd);
                r
            }
            // SAFETY: plain id lookups; the fd is closed by fd_result.
            "prog" => fd_result(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) }),
            // SAFETY: as above.
            "link" => fd_result(unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) }),
            // With an fd to the link (when the gate lets it be had): replace its program, then detach it.
            "link_update" | "link_detach" => {
                // SAFETY: as above.
                let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
                let r = if fd < 0 {
                    -fd
                } else if verb == "link_detach" {
                    // SAFETY: a link fd this process owns.
                    -unsafe { libbpf_sys::bpf_link_detach(fd) }
                } else {
                    match load_insns_fd("bpfgate_takeover", &[mov_imm(0, 0), exit()]) {
                        Ok(prog) => {
                            // SAFETY: a link fd and a program fd this process owns.
                            let r = -unsafe { libbpf_sys::bpf_link_update(fd, prog, std::ptr::null()) };
                            fd_result(prog);
                            r
                        }
                        Err(e) => e,
                    }
                };
                fd_result(fd);
                r
            }
            "send_signal" => load_object(fixture("send_signal.bpf.o").bytes, |_| true).err().unwrap_or(0),
            // The real uid only: the effective uid stays 0, so the child keeps its capabilities.
            // SAFETY: setresuid has no memory preconditions.
            "ruid" => unsafe { libc::setresuid(id, 0, 0) },
            "lsm_bpf_hook" => super::load_smoke().err().unwrap_or(0),
            other => panic!("unknown child action {other}"),
        };
        println!("{verb}={result}");
    }
    std::process::exit(0);
}

/// Runs `gate_child_actions` in a child process (a fresh process of this executable: same exe, uid), in
/// `cgroup` when given; returns each action's errno.
pub(crate) fn run_child(cgroup: Option<&std::path::Path>, actions: &[String]) -> BTreeMap<String, i32> {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "gate::gate_child_actions", "--test-threads=1", "--nocapture"])
        .env(CHILD_ACTIONS_ENV, actions.join(","))
        .stderr(Stdio::inherit());
    if let Some(c) = cgroup {
        cmd.env(CHILD_CGROUP_ENV, c);
    }
    let out = cmd.output().expect("running the child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed: {text}");
    // libtest prints "test NAME ... " before the first line: take the last word of each line.
    text.lines()
        .filter_map(|l| l.split_whitespace().last()?.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// A fresh cgroup below the cgroup2 root, removed on drop.
pub(crate) struct TestCgroup {
    pub(crate) path: std::path::PathBuf,
    /// As policies name it: relative to the cgroup2 mount.
    pub(crate) policy_path: String,
}

impl TestCgroup {
    pub(crate) fn new(name: &str) -> TestCgroup {
        let root = HostResolver::new().cgroup_root().to_path_buf();
        let leaf = format!("{name}-{}", std::process::id());
        let path = root.join(&leaf);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TestCgroup { path, policy_path: format!("/{leaf}") }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A policy whose one rule denies `class` to tasks in `cg`; everything else is allowed.
fn cgroup_denies(cg: &TestCgroup, class: &str) -> String {
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: cgroup\n    subject:\n      cgroup: {}\n    \
         capabilities:\n      deny: [{class}]\n",
        cg.policy_path
    )
}

/// A cgroup is a subject: a rule for it decides for tasks in it (and below), not for this test's cgroup.
#[test]
fn gate_cgroup_subject_is_enforced() {
    let Some(_guard) = live("gate_cgroup_subject_is_enforced") else { return };
    let cg = TestCgroup::new("bpfgate-cgsubj");
    let mut g = Live::new();
    g.install(&cgroup_denies(&cg, "send_signal"));
    g.take();
    let inside = run_child(Some(&cg.path), &["send_signal".into()]);
    let outside = run_child(None, &["send_signal".into()]);
    let events = g.take();
    for e in named(&events, "send_signal") {
        report!("cgroup subject: {}", g.describe(e));
    }
    assert_eq!(inside.get("send_signal"), Some(&libc::EPERM), "a task in the cgroup must be denied");
    assert_eq!(outside.get("send_signal"), Some(&0), "a task outside the cgroup must be allowed");
    let denied = named(&events, "send_signal").into_iter().find(|e| e.verdict == VERDICT_DENY).copied();
    let denied = denied.unwrap_or_else(|| panic!("no deny event"));
    assert_ne!(denied.cgroup_id, 0);
    assert_eq!(denied.rule, 0);
}

/// A uid is a subject: the task's real uid (`docs/policy.md`), read from its credentials. A child whose real uid
/// is 4242 (effective uid 0: still privileged) is denied by a rule for uid 4242; the same child as root is not.
#[test]
fn gate_uid_subject_is_the_real_uid() {
    let Some(_guard) = live("gate_uid_subject_is_the_real_uid") else { return };
    let mut g = Live::new();
    g.install(
        "version: 1\ndefault: allow\nrules:\n  - name: uid\n    subject:\n      uid: 4242\n    capabilities:\n      \
         deny: [send_signal]\n",
    );
    g.take();
    let as_4242 = run_child(None, &["ruid:4242".into(), "send_signal".into()]);
    let as_root = run_child(None, &["send_signal".into()]);
    let events = g.take();
    for e in named(&events, "send_signal") {
        report!("uid subject: {}", g.describe(e));
    }
    assert_eq!(as_4242.get("ruid"), Some(&0), "setresuid in the child");
    assert_eq!(as_4242.get("send_signal"), Some(&libc::EPERM), "real uid 4242 must be denied");
    assert_eq!(as_root.get("send_signal"), Some(&0), "root must be allowed");
    let uids: Vec<(u32, u8)> = named(&events, "send_signal").iter().map(|e| (e.uid, e.verdict)).collect();
    assert!(uids.contains(&(4242, VERDICT_DENY)), "a deny event with uid 4242: {uids:?}");
    assert!(uids.iter().all(|&(uid, v)| (uid == 4242) == (v == VERDICT_DENY)), "{uids:?}");
}

/// A map created by one subject cannot be opened writable, or written by a program, of another subject
/// whose rule says `maps.write: own`; read-only opens and its own maps are fine; `write: any` allows both.
#[test]
fn gate_map_isolation_between_subjects() {
    let Some(_guard) = live("gate_map_isolation_between_subjects") else { return };
    let cg = TestCgroup::new("bpfgate-maps");
    let mut g = Live::new();
    let policy = |write: &str| {
        format!(
            "version: 1\ndefault: allow\nrules:\n  - name: other\n    subject:\n      cgroup: {}\n    \
             maps:\n      write: {write}\n",
            cg.policy_path
        )
    };
    g.install(&policy("own"));
    // Created by this process after the gate attached: this subject owns it.
    let fd = create_map("bpfgate_iso");
    assert!(fd >= 0, "creating the map: errno {}", -fd);
    let id = obj_id(fd);
    g.take();
    let actions: Vec<String> =
        ["map_rw", "map_ro", "write_foreign", "write_own"].iter().map(|a| format!("{a}:{id}")).collect();
    let own = run_child(Some(&cg.path), &actions);
    let events = g.take();
    for e in &events {
        report!("maps, write: own: {}", g.describe(e));
    }
    g.install(&policy("any"));
    g.take();
    let any = run_child(Some(&cg.path), &actions);
    // The owner itself may always write it.
    let mine = fd_result(map_fd_by_id(id, 0));
    // SAFETY: fd is this test's map fd.
    unsafe { libc::close(fd) };
    report!("write: own -> {own:?}; write: any -> {any:?}; owner rw open -> {mine}");
    assert_eq!(own.get("map_rw"), Some(&libc::EPERM), "writable open of another subject's map");
    assert_eq!(own.get("map_ro"), Some(&0), "read-only open");
    assert_eq!(own.get("write_foreign"), Some(&libc::EPERM), "a program writing another subject's map");
    assert_eq!(own.get("write_own"), Some(&0), "a program writing the subject's own map");
    assert!(
        events
            .iter()
            .any(|e| e.op == OP_PROG_MAPS && e.verdict == VERDICT_DENY && e.map_name.starts_with(b"bpfgate_iso")),
        "no load_maps denial naming the map"
    );
    assert!(
        events.iter().any(|e| e.op == bpfgate_gate::event::OP_MAP_OPEN && e.verdict == VERDICT_DENY),
        "no map_open denial"
    );
    for a in ["map_rw", "map_ro", "write_foreign", "write_own"] {
        assert_eq!(any.get(a), Some(&0), "{a} under write: any");
    }
    assert_eq!(mine, 0, "the owner opens its map writable");
}

/// A map reached through a pin (`BPF_OBJ_GET`) is marked pinned, even for its owner: under `pinned: deny` the
/// owner's writable open by id is given before the map is reached through its pin, and refused after; a
/// read-only open through the pin is always given.
#[test]
fn gate_marks_maps_reached_through_a_pin() {
    let Some(_guard) = live("gate_marks_maps_reached_through_a_pin") else { return };
    let exe = this_exe();
    let mut g = Live::new();
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: no-pinned\n    subject:\n      exe: {exe}\n    maps:\n      \
         write: own\n      pinned: deny\n"
    ));
    let fd = create_map("bpfgate_pin");
    assert!(fd >= 0, "creating the map: errno {}", -fd);
    let id = obj_id(fd);
    let before = fd_result(map_fd_by_id(id, 0));
    // A BPF_OBJ_GET that reaches no map (no such pin) leaves no note behind: the next open by id is not a pin's.
    // SAFETY: a NUL-terminated path; fd_result closes an fd.
    let missing = fd_result(unsafe { libbpf_sys::bpf_obj_get(c"/sys/fs/bpf/bpfgate_no_such_pin".as_ptr()) });
    let after_missing = fd_result(map_fd_by_id(id, 0));
    let path = c"/sys/fs/bpf/bpfgate_test_pin";
    let _ = std::fs::remove_file("/sys/fs/bpf/bpfgate_test_pin");
    // SAFETY: fd is this test's map; the path is NUL-terminated.
    assert_eq!(unsafe { libbpf_sys::bpf_obj_pin(fd, path.as_ptr()) }, 0, "pinning the map in the VM's bpffs");
    g.take();
    let read_only_opts = libbpf_sys::bpf_obj_get_opts {
        sz: size_of::<libbpf_sys::bpf_obj_get_opts>() as libbpf_sys::size_t,
        file_flags: libbpf_sys::BPF_F_RDONLY,
        ..Default::default()
    };
    // SAFETY: valid path and options; fd_result closes the fds.
    let read_only = fd_result(unsafe { libbpf_sys::bpf_obj_get_opts(path.as_ptr(), &read_only_opts) });
    // SAFETY: as above.
    let through_pin = fd_result(unsafe { libbpf_sys::bpf_obj_get(path.as_ptr()) });
    let after = fd_result(map_fd_by_id(id, 0));
    let events = g.take();
    let _ = std::fs::remove_file("/sys/fs/bpf/bpfgate_test_pin");
    // SAFETY: this test's map fd.
    unsafe { libc::close(fd) };
    for e in &events {
        report!("pinned: {}", g.describe(e));
    }
    report!(
        "by id before {before}; no such pin {missing}, then by id {after_missing}; through the pin: read-only \
         {read_only}, writable {through_pin}; by id after {after}"
    );
    assert_eq!(before, 0, "the owner's writable open of its unpinned map");
    assert_eq!(missing, libc::ENOENT, "BPF_OBJ_GET of a path that does not exist");
    assert_eq!(after_missing, 0, "a failed BPF_OBJ_GET does not mark the next open by id as a pin's");
    assert_eq!(read_only, 0, "a read-only open through the pin");
    assert_eq!(through_pin, libc::EPERM, "a writable open through the pin under pinned: deny");
    assert_eq!(after, libc::EPERM, "once reached through a pin, the map stays pinned");
    assert!(
        events.iter().any(|e| e.op == bpfgate_gate::event::OP_MAP_OPEN
            && e.verdict == VERDICT_DENY
            && e.flags & bpfgate_gate::event::flags::PINNED != 0),
        "no map_open denial of a pinned map"
    );
}

/// A program another subject loaded goes (by id or pin) only to a subject whose own rule would let it load
/// that program: a subject whose rule denies trace_printk cannot take this test's trace_printk program, not
/// to attach it nor to tail-call it, but takes a plain one; the loader itself always can.
#[test]
fn gate_program_isolation_between_subjects() {
    let Some(_guard) = live("gate_program_isolation_between_subjects") else { return };
    use libbpf_sys::*;
    let cg = TestCgroup::new("bpfgate-progs");
    let mut g = Live::new();
    g.install(&cgroup_denies(&cg, "trace_printk"));
    // bpf_trace_printk("", 8) from a zeroed stack slot.
    let printk =
        [st_imm(op::DW, 10, -8, 0), mov(1, 10), add_imm(1, -8), mov_imm(2, 8), call_helper(6), mov_imm(0, 0), exit()];
    let printk_fd = load_insns_fd("bpfgate_printk", &printk).expect("loading the trace_printk program");
    let plain_fd = load_insns_fd("bpfgate_plain", &[mov_imm(0, 0), exit()]).expect("loading the plain program");
    let (printk_id, plain_id) = (obj_id(printk_fd), obj_id(plain_fd));
    g.take();
    let denied = run_child(Some(&cg.path), &[format!("prog:{printk_id}")]);
    let allowed = run_child(Some(&cg.path), &[format!("prog:{plain_id}")]);
    let events = g.take();
    // SAFETY: an id lookup; fd_result closes the fd.
    let mine = fd_result(unsafe { bpf_prog_get_fd_by_id(printk_id) });
    // SAFETY: this test's own program fds.
    unsafe {
        libc::close(printk_fd);
        libc::close(plain_fd);
    }
    for e in &events {
        report!("programs: {}", g.describe(e));
    }
    report!("trace_printk program -> {denied:?}; plain program -> {allowed:?}; the loader -> {mine}");
    assert_eq!(denied.get("prog"), Some(&libc::EPERM), "another subject's program its rule denies");
    assert_eq!(allowed.get("prog"), Some(&0), "another subject's program its rule allows");
    assert_eq!(mine, 0, "the loader takes its own program");
    assert!(
        events.iter().any(|e| e.op == bpfgate_gate::event::OP_PROG_OPEN
            && e.verdict == VERDICT_DENY
            && e.classes & Capability::TracePrintk.bit() != 0),
        "no prog_open denial naming trace_printk"
    );
}

/// Nobody but the gate's own process gets a writable fd to its maps or an fd to its programs, takes its links
/// over, or loads an LSM program on the bpf* hooks unless a rule names the hook. With the link guard (always
/// attached on request; by default where a link fd could detach a link or replace its program), nobody else
/// gets an fd to its links either. Both ways on every kernel.
#[test]
fn gate_protects_itself() {
    let Some(_guard) = live("gate_protects_itself") else { return };
    protects_itself(LinkGuard::Always);
    protects_itself(LinkGuard::Auto);
}

fn protects_itself(guard: LinkGuard) {
    use bpfgate_gate::GateObject;
    let mut g = Live::with_link_guard(guard);
    let guarded = g.gate.link_guarded();
    report!("link guard {guard:?}: attached {guarded}");
    assert!(guarded || guard == LinkGuard::Auto);
    g.install("version: 1\ndefault: allow\nrules: []\n");
    g.take();
    let objects = g.gate.objects().to_vec();
    let map = objects.iter().find_map(|o| if let GateObject::Map(id) = o { Some(*id) } else { None });
    let prog = objects.iter().find_map(|o| if let GateObject::Prog(id) = o { Some(*id) } else { None });
    let link = objects.iter().find_map(|o| if let GateObject::Link(id) = o { Some(*id) } else { None });
    let (map, prog, link) = (map.expect("a map"), prog.expect("a program"), link.expect("a link"));
    let actions = [
        format!("map_rw:{map}"),
        format!("map_ro:{map}"),
        format!("prog:{prog}"),
        format!("link:{link}"),
        format!("link_update:{link}"),
        format!("link_detach:{link}"),
        "lsm_bpf_hook".into(),
    ];
    let other = run_child(None, &actions);
    let events = g.take();
    for e in events.iter().filter(|e| e.verdict == VERDICT_DENY) {
        report!("self-protection: {}", g.describe(e));
    }
    // The gate's own process may.
    let daemon_rw = fd_result(map_fd_by_id(map, 0));
    report!("another process -> {other:?}; the gate's process, writable map fd -> {daemon_rw}");
    assert_eq!(other.get("map_rw"), Some(&libc::EPERM));
    assert_eq!(other.get("map_ro"), Some(&0));
    assert_eq!(other.get("prog"), Some(&libc::EPERM));
    if guarded {
        for action in ["link", "link_update", "link_detach"] {
            assert_eq!(other.get(action), Some(&libc::EPERM), "{action}");
        }
    } else {
        // The fd grants nothing: no program replaced (EINVAL: tracing links have no update), nothing detached.
        assert_eq!(other.get("link"), Some(&0));
        assert_eq!(other.get("link_update"), Some(&libc::EINVAL));
        assert_eq!(other.get("link_detach"), Some(&libc::EOPNOTSUPP));
    }
    // The gate still decides after the attempts: the LSM program, the child's last action, was refused.
    let hook = super::smoke_hook();
    assert_eq!(other.get("lsm_bpf_hook"), Some(&libc::EPERM), "an LSM program on {hook}");
    assert_eq!(daemon_rw, 0);

    // A rule that names the hook allows it.
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: second-lsm\n    subject:\n      exe: {}\n    \
         attach_targets: [{hook}]\n",
        this_exe()
    ));
    let named_hook = run_child(None, &["lsm_bpf_hook".into()]);
    assert_eq!(named_hook.get("lsm_bpf_hook"), Some(&0), "a rule naming {hook} allows it");
}

// ---- daemon death: fd-bound by default, pinned with --persist ------------------------------------------------

/// Environment variables of `gate_child_daemon`: the policy file, and the pin directory for `--persist`.
const DAEMON_POLICY_ENV: &str = "BPFGATE_GATE_DAEMON_POLICY";
const DAEMON_PERSIST_ENV: &str = "BPFGATE_GATE_DAEMON_PERSIST";

/// Not a test on its own: `bpfgate enforce` in a child process, killed by the daemon tests. Prints READY
/// once enforcing.
#[test]
fn gate_child_daemon() {
    use bpfgate_gate::daemon::{self, Control, Options};
    let Ok(policy) = std::env::var(DAEMON_POLICY_ENV) else { return };
    let opts = Options {
        policy: policy.into(),
        audit: false,
        json: false,
        persist: std::env::var(DAEMON_PERSIST_ENV).ok().map(Into::into),
        metrics: None,
        link_guard: LinkGuard::Auto,
    };
    let control = Control::default();
    let mut ready = || {
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    };
    let result = daemon::run(&opts, &control, &mut std::io::sink(), &mut std::io::stderr(), &mut ready);
    panic!("the daemon returned: {:?}", result.map(|_| ()).map_err(|e| e.to_string()));
}

/// Starts `gate_child_daemon` and waits until it enforces.
fn spawn_daemon(policy: &std::path::Path, persist: Option<&std::path::Path>) -> std::process::Child {
    use std::io::BufRead as _;
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "gate::gate_child_daemon", "--test-threads=1", "--nocapture"])
        .env(DAEMON_POLICY_ENV, policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(dir) = persist {
        cmd.env(DAEMON_PERSIST_ENV, dir);
    }
    let mut child = cmd.spawn().expect("spawning the daemon");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("READY") => break,
            Some(Ok(_)) => {}
            _ => panic!("the daemon exited before enforcing: {:?}", child.wait()),
        }
    }
    child
}

fn kill_hard(mut child: std::process::Child) {
    // SIGKILL: no clean-up code runs in the daemon.
    child.kill().expect("killing the daemon");
    let status = child.wait().expect("reaping the daemon");
    report!("daemon killed: {status}");
}

/// The events ring buffer's dropped counter of a persisted gate, read through its pin (read-only).
fn pinned_dropped(dir: &std::path::Path) -> u64 {
    let path = std::ffi::CString::new(dir.join("map_dropped").as_os_str().as_encoded_bytes()).expect("path");
    let opts = libbpf_sys::bpf_obj_get_opts {
        sz: size_of::<libbpf_sys::bpf_obj_get_opts>() as libbpf_sys::size_t,
        file_flags: libbpf_sys::BPF_F_RDONLY,
        ..Default::default()
    };
    // SAFETY: valid path and options.
    let fd = unsafe { libbpf_sys::bpf_obj_get_opts(path.as_ptr(), &opts) };
    assert!(fd >= 0, "opening the pinned dropped counter read-only: errno {}", -fd);
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libbpf_sys::libbpf_num_possible_cpus() }.max(1) as usize;
    let mut values = vec![0u64; cpus];
    let key = 0u32;
    // SAFETY: a per-CPU array lookup writes one u64 per possible CPU into `values`.
    let rc = unsafe { libbpf_sys::bpf_map_lookup_elem(fd, (&key as *const u32).cast(), values.as_mut_ptr().cast()) };
    fd_result(fd);
    assert_eq!(rc, 0, "reading the dropped counter");
    values.iter().sum()
}

/// Default: the links are bound to the daemon, so killing it (SIGKILL, no clean-up) detaches the gate.
#[test]
fn gate_daemon_killed_detaches_by_default() {
    let Some(_guard) = live("gate_daemon_killed_detaches_by_default") else { return };
    let policy = std::env::temp_dir().join(format!("bpfgate-killed-{}.yaml", std::process::id()));
    std::fs::write(&policy, no_signals_policy()).expect("writing the policy");
    let daemon = spawn_daemon(&policy, None);
    let while_running = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    kill_hard(daemon);
    let after = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    let _ = std::fs::remove_file(&policy);
    report!("fd-bound: while the daemon runs {while_running:?}, after SIGKILL {after:?}");
    assert_eq!(while_running, Err(libc::EPERM));
    assert_eq!(after, Ok(()), "the gate must go away with its daemon");
}

/// `--persist`: the gate outlives its killed daemon and keeps enforcing with nobody reading its events (the
/// ring buffer fills, denials still happen, drops are counted); `--stop` removes it.
#[test]
fn gate_persisted_gate_survives_its_daemon_until_stopped() {
    let Some(_guard) = live("gate_persisted_gate_survives_its_daemon_until_stopped") else { return };
    let policy = std::env::temp_dir().join(format!("bpfgate-persist-{}.yaml", std::process::id()));
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/bpfgate-test-{}", std::process::id()));
    std::fs::write(&policy, no_signals_policy()).expect("writing the policy");
    let daemon = spawn_daemon(&policy, Some(&dir));
    let pins = std::fs::read_dir(&dir).map(std::iter::Iterator::count).unwrap_or(0);
    kill_hard(daemon);
    let after_kill = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    // A second daemon refuses to start over a persisted gate.
    let mut second = Command::new(std::env::current_exe().expect("test binary"));
    second
        .args(["--exact", "gate::gate_child_daemon", "--test-threads=1"])
        .env(DAEMON_POLICY_ENV, &policy)
        .env(DAEMON_PERSIST_ENV, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let second = second.status().expect("running a second daemon");

    // The ring buffer holds about 3,500 events; with no reader, loads past that are still denied.
    let mut denied = 0;
    let before = pinned_dropped(&dir);
    for _ in 0..5000 {
        if load_signal_denied() {
            denied += 1;
        }
    }
    let dropped = pinned_dropped(&dir) - before;
    let removed = bpfgate_gate::daemon::stop(&dir, &mut std::io::sink()).expect("--stop");
    let after_stop = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    let _ = std::fs::remove_file(&policy);
    report!(
        "persist: {pins} pins; after SIGKILL {after_kill:?}; second daemon {second}; 5000 loads with nobody \
         reading: {denied} denied, {dropped} events dropped; --stop removed {removed} pins; after --stop \
         {after_stop:?}"
    );
    assert!(pins >= 6, "links and maps pinned");
    assert_eq!(after_kill, Err(libc::EPERM), "the persisted gate must still deny");
    assert!(!second.success(), "a second daemon must refuse to start over a persisted gate");
    assert_eq!(denied, 5000, "every load decided while the ring buffer is full");
    assert!(dropped >= 1000, "a full ring buffer must count drops ({dropped})");
    assert_eq!(removed, pins);
    assert_eq!(after_stop, Ok(()), "--stop must detach the gate");
    assert!(!dir.exists());
}

// ---- executable identity across upgrades (issue 20) ----------------------------------------------------------

/// Environment variable of `gate_child_stdin_loader`.
const CHILD_STDIN_ENV: &str = "BPFGATE_GATE_CHILD_STDIN_LOADS";

/// Not a test on its own: an agent that loads a program whenever asked. For each line on stdin it loads
/// send_signal.bpf.o and prints `load=ERRNO` (0: loaded); it exits at the end of its input. Run from copies of
/// this binary, so that it is another executable (inode) than the test and the daemon.
#[test]
fn gate_child_stdin_loader() {
    use std::io::{BufRead as _, Write as _};
    if std::env::var_os(CHILD_STDIN_ENV).is_none() {
        return;
    }
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let result = load_object(fixture("send_signal.bpf.o").bytes, |_| true).err().unwrap_or(0);
        let _ = writeln!(out, "load={result}");
        let _ = out.flush();
    }
    std::process::exit(0);
}

/// A running `gate_child_stdin_loader`: a process whose executable stays the inode it was started from.
struct Agent {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Agent {
    fn start(exe: &std::path::Path) -> Agent {
        use std::io::BufRead as _;
        let mut child = Command::new(exe)
            .args(["--exact", "gate::gate_child_stdin_loader", "--test-threads=1", "--nocapture"])
            .env(CHILD_STDIN_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let stdin = child.stdin.take();
        let lines = std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Agent { child, stdin, lines }
    }

    /// Asks for one load of send_signal.bpf.o: 0 when it loaded, else the errno.
    fn load(&mut self) -> i32 {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("the agent's stdin");
        writeln!(stdin, "load").and_then(|()| stdin.flush()).expect("asking the agent to load");
        loop {
            let line = self.lines.next().expect("the agent exited").expect("reading the agent's output");
            // libtest prints "test NAME ... " before the first line.
            if let Some((_, n)) = line.split_once("load=") {
                return n.trim().parse().expect("an errno");
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // End of input ends the agent.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// A child process killed (SIGKILL) and reaped when this drops, also when a test panics.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether process `pid` has an open fd on the inode `(dev, ino)` (st_dev as stat reports it).
fn holds(pid: u32, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok).any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

/// Every key of every `policy_exe` map in the kernel (the gate's exe table, both slots): (slot, dev, ino), the
/// dev in the kernel's encoding. Read through read-only fds, which the gate gives anyone.
fn gate_exe_keys() -> Vec<(u32, u64, u64)> {
    let (mut id, mut keys) = (0u32, Vec::new());
    // SAFETY: a valid out-pointer; the loop ends when the kernel reports no further id.
    while unsafe { libbpf_sys::bpf_map_get_next_id(id, &mut id) } == 0 {
        let fd = map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY);
        if fd < 0 {
            continue;
        }
        let mut info = libbpf_sys::bpf_map_info::default();
        let mut len = size_of_val(&info) as u32;
        // SAFETY: the kernel writes at most len bytes into info.
        let rc = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd, &mut info, &mut len) };
        let name: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        if rc == 0 && name == b"policy_exe" {
            let mut key = [0u8; 24];
            let mut prev: Option<[u8; 24]> = None;
            loop {
                let p = prev.as_ref().map_or(std::ptr::null(), |k| k.as_ptr().cast());
                // SAFETY: prev is null or a 24-byte key; key has room for one.
                if unsafe { libbpf_sys::bpf_map_get_next_key(fd, p, key.as_mut_ptr().cast()) } != 0 {
                    break;
                }
                let word = |i: usize| u64::from_ne_bytes(key[i..i + 8].try_into().expect("8 bytes"));
                keys.push((u32::from_ne_bytes(key[..4].try_into().expect("4 bytes")), word(8), word(16)));
                prev = Some(key);
            }
        }
        fd_result(fd);
    }
    keys
}

/// Polls `agent` until its load gets `want` (0 or an errno), at most `limit`; the time it took from `since`.
fn until_agent(agent: &mut Agent, want: i32, since: Instant, limit: Duration) -> Duration {
    loop {
        let got = agent.load();
        if got == want {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "the agent still gets {got}, not {want}, after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An upgrade replaces an allowed executable: a new file is written and renamed over the old one (as dpkg and
/// rpm do). The daemon follows it: within a bounded time, measured here, the new executable's loads are allowed
/// while a process still running the old one is denied; the daemon held the old file open while its identity
/// was in force (so no other file could get its inode number) and neither holds it nor has its key in the
/// gate's tables afterwards. Then the executable is deleted (its rule no longer matches anything) and installed
/// again (matched again).
#[test]
fn gate_exe_identity_follows_replacement_and_deletion() {
    use std::os::unix::fs::MetadataExt;
    let Some(_guard) = live("gate_exe_identity_follows_replacement_and_deletion") else { return };
    let limit = Duration::from_secs(5);
    let dir = std::env::temp_dir().join(format!("bpfgate-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the agent's directory");
    let agent = dir.join("agent");
    // Each version: a fresh copy of this binary, another inode every time.
    let version = |name: &str| {
        let path = dir.join(name);
        std::fs::copy(this_exe(), &path).expect("copying the test binary");
        let md = std::fs::metadata(&path).expect("stat");
        (path, md.dev(), md.ino())
    };
    let (v1, dev, v1_ino) = version("agent.v1");
    std::fs::rename(&v1, &agent).expect("installing v1");
    let policy_path = dir.join("policy.yaml");
    std::fs::write(
        &policy_path,
        format!(
            "version: 1\ndefault: allow\nrules:\n  - name: agent\n    subject:\n      exe: {}\n  - name: others\n    \
             subject: {{}}\n    capabilities:\n      deny: [send_signal]\n",
            agent.display()
        ),
    )
    .expect("writing the policy");
    // Killed however the test ends: a daemon left behind would keep its policy on the later tests.
    let daemon = KillOnDrop(Some(spawn_daemon(&policy_path, None)));
    let daemon_pid = daemon.0.as_ref().map_or(0, std::process::Child::id);
    let kdev = bpfgate_gate::resolve::kernel_dev(dev);

    // v1 runs (the agent started before the upgrade).
    let mut old = Agent::start(&agent);
    let old_before = old.load();
    let others = load_object(fixture("send_signal.bpf.o").bytes, |_| true);
    let held_v1 = holds(daemon_pid, dev, v1_ino);
    let keys_v1 = gate_exe_keys();

    // The upgrade: v2 written beside it, started (it runs v2's inode), then renamed over the old path.
    let (v2, _, v2_ino) = version("agent.v2");
    let mut new = Agent::start(&v2);
    let new_before = new.load();
    let replaced = Instant::now();
    std::fs::rename(&v2, &agent).expect("renaming v2 over v1");
    let allowed_after = until_agent(&mut new, 0, replaced, limit);
    let old_after = old.load();
    // The daemon lets v1 go and empties the old slot just after the switch (which is what the loads saw).
    let has = |keys: &[(u32, u64, u64)], ino: u64| keys.iter().any(|&(_, d, i)| d == kdev && i == ino);
    wait_for("the daemon to let v1 go", limit, || !holds(daemon_pid, dev, v1_ino) && !has(&gate_exe_keys(), v1_ino));
    let released_v1 = replaced.elapsed();
    let held_v2 = holds(daemon_pid, dev, v2_ino);
    let keys_v2 = gate_exe_keys();

    // Deleted: the rule matches nothing (v2's process is another subject now), and the daemon lets it go.
    let deleted = Instant::now();
    std::fs::remove_file(&agent).expect("deleting the agent");
    let denied_after_delete = until_agent(&mut new, libc::EPERM, deleted, limit);
    wait_for("the daemon to let v2 go", limit, || !holds(daemon_pid, dev, v2_ino) && !has(&gate_exe_keys(), v2_ino));
    let released_v2 = deleted.elapsed();

    // Installed again (v3): matched again.
    let (v3, _, v3_ino) = version("agent.v3");
    let mut third = Agent::start(&v3);
    let third_before = third.load();
    let reinstalled = Instant::now();
    std::fs::rename(&v3, &agent).expect("installing v3");
    let allowed_after_reinstall = until_agent(&mut third, 0, reinstalled, limit);

    drop(daemon);
    drop((old, new, third));
    let _ = std::fs::remove_dir_all(&dir);
    report!(
        "exe identity: v1 ({v1_ino}) loads {old_before}, others {others:?}, daemon holds v1: {held_v1}; v2 \
         ({v2_ino}) before the rename {new_before}; rename over v1 -> v2 allowed after {allowed_after:?}; v1's \
         process then {old_after}; v1 let go and its key gone after {released_v1:?}, v2 held {held_v2}; deleted \
         -> v2 denied after {denied_after_delete:?}, let go and key gone after {released_v2:?}; v3 ({v3_ino}) \
         before {third_before}, renamed in -> allowed after {allowed_after_reinstall:?}"
    );
    assert_eq!(old_before, 0, "v1 is the allowed subject");
    assert_eq!(others, Err(libc::EPERM), "other executables are denied send_signal");
    assert!(held_v1, "the daemon holds v1 open while its identity is in force");
    assert!(has(&keys_v1, v1_ino), "v1's key is in the gate: {keys_v1:?}");
    assert_eq!(new_before, libc::EPERM, "v2 is not the agent before it replaces v1");
    assert!(allowed_after < limit);
    assert_eq!(old_after, libc::EPERM, "v1's identity no longer matches once v2 replaced it");
    assert!(held_v2, "the daemon holds v2 while its identity is in force");
    assert!(has(&keys_v2, v2_ino), "v2's key is in the gate: {keys_v2:?}");
    assert_eq!(third_before, libc::EPERM);
    assert!(allowed_after_reinstall < limit);
}

pub(crate) fn no_signals_policy() -> String {
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: no-signals\n    subject:\n      exe: {}\n    \
         capabilities:\n      deny: [send_signal]\n",
        this_exe()
    )
}

/// A small denied load (send_signal, helper 109) straight through the syscall: true when refused with EPERM. A
/// kprobe, for which the verifier accepts the call: on 6.1 the gate decides after the verifier.
fn load_signal_denied() -> bool {
    let insns = [mov_imm(1, 10), call_helper(109), mov_imm(0, 0), exit()];
    match load_typed_fd(libbpf_sys::BPF_PROG_TYPE_KPROBE, "bpfgate_flood", &insns) {
        Ok(fd) => {
            // SAFETY: fd is a fresh program fd that we own and close here.
            unsafe { libc::close(fd) };
            false
        }
        Err(e) => e == libc::EPERM,
    }
}

/// A kfunc call the catalogue does not know (here the BTF id of a kernel function that is no kfunc at all) is
/// class `unknown`: denied when the rule denies `unknown`; with `unknown` allowed the gate lets it through (and
/// the verifier, not the gate, refuses it).
#[test]
fn gate_unknown_kfunc_is_denied_unless_allowed() {
    let Some(_guard) = live("gate_unknown_kfunc_is_denied_unless_allowed") else { return };
    // SAFETY: libbpf parses the running kernel's BTF; the handle is freed below.
    let btf = unsafe { libbpf_sys::btf__load_vmlinux_btf() };
    assert!(!btf.is_null(), "vmlinux BTF");
    // SAFETY: btf is a live handle; the name is NUL-terminated.
    let id = unsafe { libbpf_sys::btf__find_by_name_kind(btf, c"bpf_lsm_bpf".as_ptr(), libbpf_sys::BTF_KIND_FUNC) };
    // SAFETY: freed once.
    unsafe { libbpf_sys::btf__free(btf) };
    assert!(id > 0, "bpf_lsm_bpf in vmlinux BTF");
    let insns = [call_kfunc(id, 0), mov_imm(0, 0), exit()];
    let exe = this_exe();
    let mut g = Live::new();
    let mut results = Vec::new();
    for verdict in ["deny", "allow"] {
        // The second rule constrains nothing: `unknown` is allowed like every class.
        let caps = if verdict == "deny" { "\n    capabilities:\n      deny: [unknown]" } else { "" };
        g.install(&format!(
            "version: 1\ndefault: allow\nrules:\n  - name: kfuncs\n    subject:\n      exe: {exe}{caps}\n"
        ));
        g.take();
        let result = load_insns("bpfgate_kfunc", &insns);
        let events = g.take();
        let e = *named(&events, "bpfgate_kfunc").first().unwrap_or_else(|| panic!("no decision ({verdict})"));
        report!("unknown kfunc, rule that {verdict}s it: {result:?}: {}", g.describe(e));
        results.push((result, e.verdict, e.classes, e.evidence[Capability::Unknown as usize]));
    }
    let unknown = Capability::Unknown.bit();
    let ev = evidence::KFUNC | id as u32;
    assert!(super::gate_refused(results[0].0, "unknown kfunc, denied"), "{:?}", results[0]);
    assert_eq!((results[0].1, results[0].2, results[0].3), (VERDICT_DENY, unknown, ev));
    assert_ne!(results[1].0, Err(libc::EPERM), "allowed by the gate, refused (if at all) by the verifier");
    assert_eq!((results[1].1, results[1].2, results[1].3), (VERDICT_ALLOW, unknown, ev));
}

/// Kfuncs a module defines are known to the gate by the module BTF their call's fd_array slot names (the VM
/// harness loads nf_conntrack and nf_nat): a conntrack lookup has no class and loads under a rule that denies
/// `unknown`, packet_write and redirect, while setting NAT info is refused with an event naming
/// bpf_ct_set_nat_info. The same after the daemon's refresh of module kfuncs.
#[test]
fn gate_resolves_module_kfuncs() {
    let Some(_guard) = live("gate_resolves_module_kfuncs") else { return };
    for m in ["nf_conntrack", "nf_nat"] {
        if !std::path::Path::new("/sys/kernel/btf").join(m).exists() {
            assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness loads {m}: no /sys/kernel/btf/{m}");
            report!("SKIPPED gate_resolves_module_kfuncs: module {m} (with BTF) is not loaded");
            return;
        }
    }
    let bytes = fixture("module_kfunc.bpf.o").bytes;
    let nat_index = bpfgate::helpers::KFUNCS.iter().position(|k| k.name == "bpf_ct_set_nat_info");
    let nat_index = nat_index.expect("bpf_ct_set_nat_info is catalogued") as u32;
    let exe = this_exe();
    let mut g = Live::new();
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: no-nat\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: [unknown, packet_write, redirect]\n"
    ));
    for refresh in [false, true] {
        if refresh {
            g.gate.refresh_kfuncs().unwrap_or_else(|e| panic!("refreshing module kfuncs: {e:#}"));
        }
        g.take();
        let lookup = load_object(bytes, |n| n == "ct_lookup");
        let events = g.take();
        let e = *named(&events, "ct_lookup").first().expect("a decision on ct_lookup");
        report!("module kfunc lookup (refreshed: {refresh}): {lookup:?}: {}", g.describe(e));
        assert_eq!(lookup, Ok(()), "{}", g.describe(e));
        assert_eq!((e.verdict, e.classes, e.maybe_classes), (VERDICT_ALLOW, 0, 0), "{}", g.describe(e));

        let nat = load_object(bytes, |n| n == "ct_nat");
        let events = g.take();
        let e = *named(&events, "ct_nat").first().expect("a decision on ct_nat");
        let text = g.describe(e);
        report!("module kfunc NAT (refreshed: {refresh}): {nat:?}: {text}");
        let wanted = Capability::PacketWrite.bit() | Capability::Redirect.bit();
        assert_eq!((nat, e.verdict, e.classes, e.maybe_classes), (Err(libc::EPERM), VERDICT_DENY, wanted, 0), "{text}");
        let ev = evidence::KFUNC | evidence::CATALOGUED | nat_index;
        assert_eq!(e.evidence[Capability::PacketWrite as usize], ev, "{text}");
        assert!(text.contains("kfunc bpf_ct_set_nat_info"), "{text}");
    }
}

/// `bpfgate enforce` maps the kfuncs of a module loaded after it started, with no reload: nf_nat is unloaded and
/// loaded again (a new BTF object), and once the daemon has logged both changes a program calling its
/// bpf_ct_set_nat_info loads under a rule that denies `unknown`, its event naming the kfunc. (Before, those kfuncs
/// stayed `unknown` until a SIGHUP.)
#[test]
fn gate_daemon_maps_kfuncs_of_a_module_loaded_after_it_started() {
    let Some(_guard) = live("gate_daemon_maps_kfuncs_of_a_module_loaded_after_it_started") else { return };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let modules = std::path::Path::new("/lib/modules").join(release.trim());
    let order = std::fs::read_to_string(modules.join("load-order")).unwrap_or_default();
    let Some(ko) =
        order.lines().find(|l| l.rsplit('/').next() == Some("nf_nat")).map(|l| modules.join(format!("{l}.ko")))
    else {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness loads nf_nat from {}", modules.display());
        report!(
            "SKIPPED gate_daemon_maps_kfuncs_of_a_module_loaded_after_it_started: nf_nat was not loaded by the harness"
        );
        return;
    };
    let exe = this_exe();
    let path = std::env::temp_dir().join(format!("bpfgate-modules-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "version: 1\ndefault: allow\nrules:\n  - name: no-unknown\n    subject:\n      exe: {exe}\n    \
             capabilities:\n      deny: [unknown]\n"
        ),
    )
    .expect("writing the policy");
    let daemon = RunningDaemon::start(&path, false, false);
    let changes = || daemon.log.text().matches(" modules with BTF now: ").count();
    // The guest's module tools are busybox's.
    let run = |cmd: &str, arg: &std::path::Path| {
        let status = Command::new("/bin/busybox").arg(cmd).arg(arg).status().unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(status.success(), "{cmd} {}: {status}", arg.display());
    };
    run("rmmod", std::path::Path::new("nf_nat"));
    wait_for("the daemon to see nf_nat go", Duration::from_secs(60), || changes() >= 1);
    run("insmod", &ko);
    wait_for("the daemon to see nf_nat back", Duration::from_secs(60), || changes() >= 2);
    let nat = load_object(fixture("module_kfunc.bpf.o").bytes, |n| n == "ct_nat");
    let (out, log) = (daemon.out.clone(), daemon.log.clone());
    let summary = daemon.stop();
    let _ = std::fs::remove_file(&path);
    let (out, log) = (out.text(), log.text());
    report!("module refreshes: {}; log:\n{log}", summary.module_refreshes);
    let line = out.lines().find(|l| l.contains("name: ct_nat")).unwrap_or_else(|| panic!("no ct_nat event:\n{out}"));
    report!("ct_nat: {nat:?}: {line}");
    assert_eq!(nat, Ok(()), "{line}");
    assert!(line.contains("kfunc bpf_ct_set_nat_info") && !line.contains("unknown("), "{line}");
    assert_eq!(summary.module_refreshes, 2, "{log}");
}

/// The `bpfgate` binary itself (the VM harness puts it at /usr/bin/bpfgate): `bpfgate enforce` denies by its
/// policy and prints the decision, SIGHUP reloads (a bad policy is refused and the one in force stays), SIGINT
/// stops it with exit status 0 and the gate goes away with it.
#[test]
fn gate_cli_enforce_denies_reloads_and_stops() {
    use std::io::{BufRead, BufReader};
    let Some(_guard) = live("gate_cli_enforce_denies_reloads_and_stops") else { return };
    let cli = std::path::Path::new("/usr/bin/bpfgate");
    if !cli.is_file() {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness installs {}", cli.display());
        report!("SKIPPED gate_cli_enforce_denies_reloads_and_stops: no {}", cli.display());
        return;
    }
    let exe = this_exe();
    let path = std::env::temp_dir().join(format!("bpfgate-cli-{}.yaml", std::process::id()));
    let deny = no_signals_policy();
    let allow = format!("version: 1\ndefault: allow\nrules:\n  - name: anything\n    subject:\n      exe: {exe}\n");
    std::fs::write(&path, &deny).expect("writing the policy");
    let mut child = Command::new(cli)
        .args(["enforce", "--policy"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bpfgate enforce");
    // The log (stderr) says when the gate enforces and what each reload did.
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).try_for_each(|l| log_tx.send(l)));
    let stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    let mut log = Vec::new();
    let mut wait_log = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while let Ok(line) = log_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            log.push(line.clone());
            if line.contains(what) {
                return;
            }
        }
        panic!("bpfgate enforce never logged {what:?}:\n{}", log.join("\n"));
    };
    let signal = |sig| {
        // SAFETY: kill has no memory preconditions; the child is ours and not reaped yet.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0, "signalling bpfgate");
    };
    let send_signal = fixture("send_signal.bpf.o").bytes;

    wait_log("bpfgate: enforcing");
    let denied = load_object(send_signal, |_| true);
    std::fs::write(&path, "version: 1\nrules: [").expect("writing the policy");
    signal(libc::SIGHUP);
    wait_log("reload refused");
    let after_bad = load_object(send_signal, |_| true);
    std::fs::write(&path, &allow).expect("writing the policy");
    signal(libc::SIGHUP);
    wait_log("bpfgate: reloaded");
    let allowed = load_object(send_signal, |_| true);
    std::thread::sleep(Duration::from_millis(300));
    signal(libc::SIGINT);
    let status = child.wait().expect("waiting for bpfgate");
    wait_log("bpfgate: stopped");
    let after_stop = {
        std::fs::write(&path, &deny).expect("writing the policy");
        load_object(send_signal, |_| true)
    };
    let _ = std::fs::remove_file(&path);
    let out = out.join().expect("stdout reader");
    report!("bpfgate enforce log:\n{}", log.join("\n"));
    for line in out.iter().filter(|l| l.contains("name: send_signal")) {
        report!("bpfgate enforce: {line}");
    }
    assert_eq!(denied, Err(libc::EPERM), "the policy denies send_signal");
    assert_eq!(after_bad, Err(libc::EPERM), "a refused reload keeps the policy in force");
    assert_eq!(allowed, Ok(()), "the reloaded policy allows it");
    assert!(status.success(), "bpfgate enforce exits 0 on SIGINT: {status}");
    assert_eq!(after_stop, Ok(()), "the gate goes away with the daemon");
    let denial = "classes: send_signal(helper 109 send_signal) rule: 0 (no-signals) action: BPFDenied";
    let ours: Vec<&String> = out.iter().filter(|l| l.contains("name: send_signal")).collect();
    assert!(ours.iter().filter(|l| l.contains(denial)).count() >= 2, "both denials printed:\n{}", out.join("\n"));
    assert!(ours.iter().any(|l| l.contains("rule: 0 (anything) action: BPFAllowed")), "{}", out.join("\n"));
    // On a kernel without security_bpf_prog_load (6.1) the daemon says how it gates at start; on 6.9+ nothing.
    let facts = bpfgate_gate::preflight::KernelFacts::read();
    let notice = log.iter().find(|l| l.contains("has no security_bpf_prog_load"));
    match bpfgate_gate::preflight::notice(&facts) {
        Some(expected) => assert_eq!(notice, Some(&format!("bpfgate: {expected}")), "{}", log.join("\n")),
        None => assert_eq!(notice, None, "{}", log.join("\n")),
    }
}

/// Hand-made BTF for a map value `struct val { struct task_struct __kptr_untrusted *t; }`: types 1 int, 2
/// task_struct, 3 the type tag, 4 the pointer, 5 val.
fn kptr_value_btf() -> Vec<u8> {
    let mut b = Btf::new();
    let int = b.int("int", 4, INT_SIGNED);
    let task = b.struct_("task_struct", 4, &[("pid", int, 0)]);
    // 6.1 and 6.2 call an untrusted (unreferenced) kptr "kptr"; 6.3 renamed it (and "kptr" became referenced).
    let tag = b.type_tag(if super::has_prog_load_hook() { "kptr_untrusted" } else { "kptr" }, task);
    let ptr = b.ptr(tag);
    b.struct_("val", 8, &[("t", ptr, 0)]);
    b.finish()
}

/// A kprobe that looks up `map_fd`'s value, loses track of what it loaded in a loop the gate's tags reset at,
/// then loads through it: with `kptr`, through the kptr it read from the value (a kernel read the library
/// proves), otherwise through the map value again.
fn load_after_loop(name: &str, map_fd: i32, kptr: bool) -> Result<(), i32> {
    let [ld, ld_hi] = ld_map_fd(1, map_fd);
    let insns = [
        st_imm(op::W, 10, -4, 0), // *(u32 *)(r10 - 4) = 0
        mov(2, 10),
        add_imm(2, -4),
        ld,
        ld_hi,
        call_helper(1),   // bpf_map_lookup_elem
        jeq_imm(0, 0, 6), // null: to r0 = 0; exit
        ldx_dw(1, 0, 0),  // r1 = *(u64 *)(r0 + 0)
        mov_imm(7, 0),
        add_imm(7, 1), // the loop head
        jmp_imm(op::JLT, 7, 2, -2),
        jeq_imm(1, 0, 1),
        if kptr {
            ldx(op::W, 2, 1, 0) // r2 = *(u32 *)(r1 + 0): the kptr's target
        } else {
            ldx_dw(2, 0, 0) // r2 = *(u64 *)(r0 + 0): the map value
        },
        mov_imm(0, 0),
        exit(),
    ];
    let fd = load_typed_fd(libbpf_sys::BPF_PROG_TYPE_KPROBE, name, &insns)?;
    // SAFETY: fd is a fresh program fd that we own and close here.
    unsafe { libc::close(fd) };
    Ok(())
}

/// A kptr dereferenced where the gate's tags lost it (after a loop head) in a kprobe, which has no BTF-typed
/// context and no BTF source: the scan cannot tell, but at lsm/bpf_prog the map's kptr fields (map->record) make
/// the load through an unknown register a kernel read, which the policy then refuses. The same loop over a map
/// without kptr fields reads only the map value: no kernel_read.
#[test]
fn gate_counts_kernel_read_through_a_kptr_it_lost_track_of() {
    use libbpf_sys::*;
    let Some(_guard) = live("gate_counts_kernel_read_through_a_kptr_it_lost_track_of") else { return };
    let btf = kptr_value_btf();
    // SAFETY: the buffer is valid for its length; null opts means defaults.
    let btf_fd = unsafe { bpf_btf_load(btf.as_ptr().cast(), btf.len() as _, std::ptr::null_mut()) };
    assert!(btf_fd >= 0, "loading the kptr BTF: {}", std::io::Error::from_raw_os_error(-btf_fd));
    let opts = bpf_map_create_opts {
        sz: size_of::<bpf_map_create_opts>() as _,
        btf_fd: btf_fd as u32,
        btf_key_type_id: 1,
        btf_value_type_id: 5,
        ..Default::default()
    };
    // SAFETY: the name is NUL-terminated and opts is a valid, sized options struct.
    let kptr_map = unsafe { bpf_map_create(BPF_MAP_TYPE_ARRAY, c"kptrs".as_ptr(), 4, 8, 1, &opts) };
    assert!(kptr_map >= 0, "creating the kptr map: {}", std::io::Error::from_raw_os_error(-kptr_map));
    // SAFETY: the name is NUL-terminated; null opts means defaults.
    let plain_map = unsafe { bpf_map_create(BPF_MAP_TYPE_ARRAY, c"plain".as_ptr(), 4, 8, 1, std::ptr::null()) };
    assert!(plain_map >= 0, "creating the plain map");

    let exe = this_exe();
    let mut g = Live::new();
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: no-kernel-reads\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: [kernel_read]\n"
    ));
    g.take();
    let kptr = load_after_loop("bpfgate_kptr", kptr_map, true);
    let events = g.take();
    let ours = named(&events, "bpfgate_kptr");
    report!("kptr after a loop: {kptr:?}: {:?}", ours.iter().map(|e| g.describe(e)).collect::<Vec<_>>());
    let plain = load_after_loop("bpfgate_plain", plain_map, false);
    let events = g.take();
    let theirs = named(&events, "bpfgate_plain");
    report!("map value after a loop: {plain:?}: {:?}", theirs.iter().map(|e| g.describe(e)).collect::<Vec<_>>());
    g.install(&format!("version: 1\ndefault: allow\nrules:\n  - name: anything\n    subject:\n      exe: {exe}\n"));
    let verified = load_after_loop("bpfgate_kptr", kptr_map, true);
    for fd in [kptr_map, plain_map, btf_fd] {
        // SAFETY: fds we created and close once.
        unsafe { libc::close(fd) };
    }

    let read = Capability::KernelRead.bit();
    assert_eq!(verified, Ok(()), "the verifier accepts the kptr program: the refusal is the gate's");
    assert_eq!(kptr, Err(libc::EPERM));
    let load = ours.iter().find(|e| e.op == OP_PROG_LOAD).expect("a load event");
    assert_eq!(load.maybe_classes & read, 0, "the scan alone cannot tell: {}", g.describe(load));
    let maps = ours.iter().find(|e| e.op == OP_PROG_MAPS).expect("a decision after verification");
    assert_eq!((maps.verdict, maps.maybe_classes & read), (VERDICT_DENY, read), "{}", g.describe(maps));
    assert_ne!(maps.scan_flags & scan_flags::KPTR_READ, 0, "{}", g.describe(maps));
    assert_eq!(plain, Ok(()));
    assert!(theirs.iter().all(|e| e.verdict == VERDICT_ALLOW && (e.classes | e.maybe_classes) & read == 0));
}

/// A pointer spilled to the frame and then partly overwritten is no pointer when filled again, however the
/// overwrite is aligned: the gate's short path for frame stores clears both slots an unaligned 8-byte store
/// touches, as the library does (`kernel_view`), and a spill left whole keeps its tag (the control).
#[test]
fn gate_partly_overwritten_spill_is_no_pointer() {
    use bpfgate_test_support::insn::{ld_imm64, stx_dw};
    let Some(_guard) = live("gate_partly_overwritten_spill_is_no_pointer") else { return };
    // SAFETY: the name is NUL-terminated; null opts means defaults.
    let map = unsafe {
        libbpf_sys::bpf_map_create(libbpf_sys::BPF_MAP_TYPE_ARRAY, c"values".as_ptr(), 4, 8, 1, std::ptr::null())
    };
    assert!(map >= 0, "creating the map: {}", std::io::Error::from_raw_os_error(-map));
    let exe = this_exe();
    let mut g = Live::new();
    g.install(&crate::evasion::deny_policy(&exe, Capability::MapWrite));
    g.take();
    // r1 = &value; spill it at fp-8; (an 8-byte store at fp-12, over half of it); fill r2; *(u64 *)r2 = 1.
    let program = |overwrite: Option<Insn>| {
        let mut p = ld_imm64(1, op::PSEUDO_MAP_VALUE, map).to_vec();
        p.push(stx_dw(10, -8, 1));
        p.extend(overwrite);
        p.extend([ldx_dw(2, 10, -8), st_imm(op::DW, 2, 0, 1), mov_imm(0, 0), exit()]);
        p
    };
    let mut seen = Vec::new();
    for (name, overwrite) in [
        ("spill_whole", None),
        ("spill_dw_at_12", Some(st_imm(op::DW, 10, -12, 0))),
        ("spill_dw_at_4", Some(st_imm(op::DW, 10, -4, 0))),
    ] {
        let result = load_insns(name, &program(overwrite));
        let events = g.take();
        let e = *named(&events, name).first().unwrap_or_else(|| panic!("{name}: no decision"));
        report!("{name}: {result:?}: {}", g.describe(e));
        seen.push((name, result == Err(libc::EPERM), (e.classes | e.maybe_classes) & Capability::MapWrite.bit() != 0));
    }
    // SAFETY: an fd we created and close once.
    unsafe { libc::close(map) };
    assert_eq!(seen, [("spill_whole", true, true), ("spill_dw_at_12", false, false), ("spill_dw_at_4", false, false)]);
}

/// A store through an arena pointer (`addr_space_cast`, mov with off 1) counts `map_write` even with no ld_imm64
/// naming the arena: a loader can bind it through `fd_array` (6.14+). Found by the differential test. The gate
/// decides before the verifier, which refuses both programs here (no arena is bound): the decision is the
/// evidence. The control moves the same scalar without the cast.
#[test]
fn gate_counts_a_store_through_an_arena_cast() {
    let Some(_guard) = live("gate_counts_a_store_through_an_arena_cast") else { return };
    let mut g = Live::new();
    g.install(&crate::evasion::deny_policy(&this_exe(), Capability::MapWrite));
    g.take();
    let write = Capability::MapWrite.bit();
    let mut seen = Vec::new();
    // r2 = 0; r1 = r2 (with off 1: addr_space_cast(r2, 0, 1)); *(u64 *)(r1 + 0) = 1; r0 = 0; exit
    for (name, off) in [("arena_store", 1), ("scalar_store", 0)] {
        let program =
            [mov_imm(2, 0), insn(0xbf, 1, 2, off, i32::from(off)), st_imm(op::DW, 1, 0, 1), mov_imm(0, 0), exit()];
        let result = load_typed_fd(libbpf_sys::BPF_PROG_TYPE_KPROBE, name, &program).map(fd_result);
        let events = g.take();
        let e = *named(&events, name).first().unwrap_or_else(|| panic!("{name}: no decision"));
        report!("{name}: {result:?}: {}", g.describe(e));
        seen.push((name, e.verdict, e.maybe_classes & write != 0, e.evidence[Capability::MapWrite as usize]));
    }
    let at_store = evidence::INSN | 2;
    assert_eq!(seen, [("arena_store", VERDICT_DENY, true, at_store), ("scalar_store", VERDICT_ALLOW, false, 0)]);
}

/// A kernel BTF object by name (`vmlinux`, a module's): a new fd to it and its id.
pub(crate) fn kernel_btf(name: &str) -> Option<(i32, u32)> {
    let (id, _) = bpfgate_gate::kernel_btfs().into_iter().find(|(_, n)| n == name)?;
    // SAFETY: no preconditions; a negative result means the object went away meanwhile.
    let fd = unsafe { libbpf_sys::bpf_btf_get_fd_by_id(id) };
    (fd >= 0).then_some((fd, id))
}

/// The BTF ids of those of `names` that are functions of vmlinux (`module` None: what tracing and lsm programs
/// attach to, and kfunc calls name), or of kernel BTF object `module`'s own (a module's, split on vmlinux).
pub(crate) fn kernel_funcs(
    module: Option<u32>,
    names: impl IntoIterator<Item = &'static str>,
) -> BTreeMap<&'static str, u32> {
    // SAFETY: libbpf parses the running kernel's BTF; the handles are freed below.
    let vmlinux = unsafe { libbpf_sys::btf__load_vmlinux_btf() };
    assert!(!vmlinux.is_null(), "vmlinux BTF");
    let (btf, first) = match module {
        // SAFETY: vmlinux is a live handle; a split BTF's own types follow its base's.
        Some(obj) => unsafe {
            let btf = libbpf_sys::btf__load_from_kernel_by_id_split(obj, vmlinux);
            assert!(!btf.is_null(), "module BTF {obj}");
            (btf, libbpf_sys::btf__type_cnt(vmlinux))
        },
        None => (vmlinux, 0),
    };
    let ids = names
        .into_iter()
        .filter_map(|name| {
            let c = std::ffi::CString::new(name).expect("a function name");
            // SAFETY: btf is a live handle; the name is NUL-terminated.
            let id = unsafe { libbpf_sys::btf__find_by_name_kind(btf, c.as_ptr(), libbpf_sys::BTF_KIND_FUNC) };
            Some((name, u32::try_from(id).ok().filter(|&id| id >= first)?))
        })
        .collect();
    // SAFETY: each freed once, a split one before its base.
    unsafe {
        if module.is_some() {
            libbpf_sys::btf__free(btf);
        }
        libbpf_sys::btf__free(vmlinux);
    }
    ids
}

/// The BTF id of function `func` in kernel BTF object `obj` (a module's own, split on vmlinux).
fn module_func_id(obj: u32, func: &'static str) -> i32 {
    let id = kernel_funcs(Some(obj), [func]).get(func).copied();
    id.unwrap_or_else(|| panic!("{func} in module BTF {obj}")) as i32
}

/// An XDP program that looks a TCP tuple up in conntrack (`bpf_xdp_ct_lookup`, BTF id `lookup`) and releases what
/// it found (`bpf_ct_release`, `release`), both kfuncs named through fd_array slot 1. Returns no verdict yet.
fn ct_lookup_release(lookup: i32, release: i32) -> Vec<Insn> {
    let st = |size: u8, off: i16, imm: i32| st_imm(size, 10, off, imm);
    vec![
        mov(6, 1),          // r6 = ctx
        st(op::DW, -32, 0), // the tuple (ipv4, 12 bytes) at r10 - 32
        st(op::DW, -24, 0),
        st(op::W, -16, -1), // opts at r10 - 16: netns_id -1, error 0, l4proto 6 (TCP)
        st(op::W, -12, 0),
        st(op::W, -8, 6),
        mov(1, 6),
        mov(2, 10),
        add_imm(2, -32),
        mov_imm(3, 12),
        mov(4, 10),
        add_imm(4, -16),
        mov_imm(5, 12),
        call_kfunc(lookup, 1), // both kfuncs from the BTF of fd_array[1]
        jeq_imm(0, 0, 2),
        mov(1, 0),
        call_kfunc(release, 1),
    ]
}

/// A loader that rewrites fd_array while the kernel handles its load gains nothing: the gate judges module
/// kfuncs by the BTF object the scan read from fd_array, and after verification compares it with the one the
/// verifier bound. Here fd_array[1] flips between nf_conntrack's BTF (where the program's kfunc ids are) and
/// nf_nat's, on one CPU under full preemption, while an XDP program calling bpf_xdp_ct_lookup and bpf_ct_release
/// through slot 1 loads again and again. A load the verifier accepts bound nf_conntrack; whenever the scan had read
/// nf_nat (its kfuncs then `unknown` at load), the decision after verification must carry the flag and count
/// unknown and the three conservative classes; otherwise neither. The test runs until it has seen a verified load
/// of each kind.
#[test]
fn gate_checks_module_btfs_against_what_the_verifier_bound() {
    use libbpf_sys::*;
    use std::sync::atomic::AtomicI32;
    let Some(_guard) = live("gate_checks_module_btfs_against_what_the_verifier_bound") else { return };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (Some((ct_fd, ct_id)), Some((nat_fd, _)), true) =
        (kernel_btf("nf_conntrack"), kernel_btf("nf_nat"), cmdline.contains("preempt=full"))
    else {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness loads nf_conntrack and nf_nat");
        report!(
            "SKIPPED gate_checks_module_btfs_against_what_the_verifier_bound: no nf_conntrack/nf_nat or preempt=full"
        );
        return;
    };
    let (lookup, release) = (module_func_id(ct_id, "bpf_xdp_ct_lookup"), module_func_id(ct_id, "bpf_ct_release"));
    let mut insns = ct_lookup_release(lookup, release);
    // A long scan after the calls: the window in which the other thread may run and flip the slot.
    insns.resize(insns.len() + 50_000, mov_imm(7, 0));
    insns.push(mov_imm(0, 2)); // XDP_PASS
    insns.push(exit());

    let exe = this_exe();
    let mut g = Live::new();
    g.install(&format!("version: 1\ndefault: deny\nrules:\n  - name: anything\n    subject:\n      exe: {exe}\n"));
    g.take();
    let fd_array = [AtomicI32::new(ct_fd), AtomicI32::new(ct_fd)];
    let stop = AtomicBool::new(false);
    let unknown = Capability::Unknown.bit();
    let changed = |e: &RawEvent| e.op == OP_PROG_MAPS && e.scan_flags & scan_flags::KFUNC_BTF_CHANGED != 0;
    // (load result, classes at load, the decision after verification if one was reported)
    let mut outcomes: Vec<(Result<(), i32>, u32, Option<RawEvent>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let now = fd_array[1].load(Ordering::SeqCst);
                fd_array[1].store(if now == ct_fd { nat_fd } else { ct_fd }, Ordering::SeqCst);
                std::thread::yield_now();
            }
        });
        for attempt in 0..300 {
            let name = format!("bpfgate_fda{attempt}");
            let opts = bpf_prog_load_opts { fd_array: fd_array.as_ptr().cast(), ..Default::default() };
            let result = load_with_opts(BPF_PROG_TYPE_XDP, &name, &insns, opts).map(fd_result);
            let events = g.take();
            let ours = named(&events, &name);
            let at_load = ours.iter().find(|e| e.op == OP_PROG_LOAD).map_or(0, |e| e.classes | e.maybe_classes);
            let after = ours.iter().find(|e| e.op == OP_PROG_MAPS).map(|e| **e);
            outcomes.push((result.map(drop), at_load, after));
            let seen =
                |flag: bool| outcomes.iter().any(|(r, _, a)| r.is_ok() && a.is_some_and(|a| changed(&a)) == flag);
            if seen(true) && seen(false) || Instant::now() > deadline {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    for fd in [ct_fd, nat_fd] {
        // SAFETY: our fds, closed once.
        unsafe { libc::close(fd) };
    }
    let loaded: Vec<_> = outcomes.iter().filter(|(r, ..)| r.is_ok()).collect();
    let caught: Vec<_> = loaded.iter().filter(|(_, _, a)| a.is_some_and(|a| changed(&a))).collect();
    report!(
        "fd_array flips: {} loads, {} verified, {} of them with the scan's BTF changed{}",
        outcomes.len(),
        loaded.len(),
        caught.len(),
        caught.first().and_then(|(_, _, a)| a.as_ref()).map_or(String::new(), |a| format!(": {}", g.describe(a)))
    );
    let conservative = Capability::KernelRead.bit() | Capability::MapWrite.bit() | Capability::PacketWrite.bit();
    for (_, at_load, after) in &loaded {
        let flagged = after.is_some_and(|a| changed(&a));
        // The scan read nf_nat's BTF exactly when the kfuncs were unknown at load.
        assert_eq!(at_load & unknown != 0, flagged, "classes at load {at_load:#x}, after: {after:?}");
        if let Some(a) = after.filter(|a| changed(a)) {
            assert_eq!(a.classes | a.maybe_classes, unknown | conservative, "{}", g.describe(&a));
        }
    }
    assert!(!caught.is_empty(), "the flip never fell between the scan and the verifier in {} loads", outcomes.len());
    assert!(caught.len() < loaded.len(), "no load read the same BTF as the verifier in {} loads", outcomes.len());
}

/// The gate cannot fault in user memory: a loader's fd_array on a page not mapped yet (here a file mapping no
/// one has touched; in the wild a page being migrated or collapsed into a huge page) cannot be read at load.
/// A module kfunc call through it is then judged by the one module whose BTF has that kfunc at that id, and
/// lsm/bpf_prog checks that the verifier bound that module, as for a slot it read. Both loads (fd_array on the
/// heap and on the untouched mapping) are allowed under a rule that denies `unknown` and packet_write, with no
/// class; only the second is flagged.
#[test]
fn gate_judges_module_kfuncs_through_an_unmapped_fd_array() {
    use libbpf_sys::*;
    let Some(_guard) = live("gate_judges_module_kfuncs_through_an_unmapped_fd_array") else { return };
    let Some((ct_fd, ct_id)) = kernel_btf("nf_conntrack") else {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness loads nf_conntrack");
        report!("SKIPPED gate_judges_module_kfuncs_through_an_unmapped_fd_array: no nf_conntrack");
        return;
    };
    let (lookup, release) = (module_func_id(ct_id, "bpf_xdp_ct_lookup"), module_func_id(ct_id, "bpf_ct_release"));
    let mut insns = ct_lookup_release(lookup, release);
    insns.push(mov_imm(0, 2)); // XDP_PASS
    insns.push(exit());
    let exe = this_exe();
    let mut g = Live::new();
    g.install(&format!(
        "version: 1\ndefault: allow\nrules:\n  - name: no-unknown\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: [unknown, packet_write]\n"
    ));
    g.take();
    let heap = vec![ct_fd; 2];
    let unmapped = UnmappedInts::new(&heap);
    let mut seen = Vec::new();
    for (name, fd_array) in [("bpfgate_fda_heap", heap.as_ptr()), ("bpfgate_fda_unmapped", unmapped.as_ptr())] {
        let opts = bpf_prog_load_opts { fd_array: fd_array.cast(), ..Default::default() };
        let result = load_with_opts(BPF_PROG_TYPE_XDP, name, &insns, opts).map(fd_result);
        let events = g.take();
        let ours = named(&events, name);
        let e = *ours.iter().find(|e| e.op == OP_PROG_LOAD).unwrap_or_else(|| panic!("{name}: no decision"));
        report!("{name}: {result:?}: {}", g.describe(e));
        let after = ours.iter().find(|e| e.op == OP_PROG_MAPS);
        assert!(after.is_none(), "{name}: the decision changed after verification: {}", g.describe(after.unwrap()));
        let unread = e.scan_flags & scan_flags::FD_ARRAY_UNREAD != 0;
        seen.push((name, result, e.verdict, e.classes | e.maybe_classes, unread));
    }
    // SAFETY: our fd, closed once.
    unsafe { libc::close(ct_fd) };
    assert_eq!(
        seen,
        [("bpfgate_fda_heap", Ok(0), VERDICT_ALLOW, 0, false), ("bpfgate_fda_unmapped", Ok(0), VERDICT_ALLOW, 0, true)]
    );
}

/// Integers in a shared file mapping whose page no one has touched (or not since [`UnmappedInts::unmap`]): a read
/// that cannot fault fails on it.
pub(crate) struct UnmappedInts {
    addr: *mut libc::c_void,
    len: usize,
}

impl UnmappedInts {
    pub(crate) fn new(values: &[i32]) -> Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        // SAFETY: a new memfd, written through the syscall (not a mapping), then mapped and never read here.
        unsafe {
            let fd = libc::memfd_create(c"bpfgate-fd-array".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
            let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            assert_eq!(written, bytes.len() as isize, "writing the memfd");
            let addr = libc::mmap(std::ptr::null_mut(), bytes.len(), libc::PROT_READ, libc::MAP_SHARED, fd, 0);
            assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
            libc::close(fd);
            Self { addr, len: bytes.len() }
        }
    }

    pub(crate) fn as_ptr(&self) -> *const i32 {
        self.addr.cast()
    }

    /// Takes the page out of this process' page tables again (the kernel's reads fault it in); the file keeps it.
    pub(crate) fn unmap(&self) {
        // SAFETY: our mapping; MADV_DONTNEED on a shared file mapping drops the page table entries, not the data.
        let r = unsafe { libc::madvise(self.addr, self.len, libc::MADV_DONTNEED) };
        assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
    }
}

impl Drop for UnmappedInts {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}
