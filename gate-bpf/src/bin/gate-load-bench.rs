//! `gate-load-bench`: BPF_PROG_LOAD latency with and without the gate (issue 5), for generated programs of
//! several sizes, as ratios measured in one run. `cargo xtask bench-gate` runs it inside the VM harness;
//! docs/benchmarks.md ("Gate load latency") describes the method and the results.
//!
//! It attaches the gate to the running kernel, so it refuses to run unless `BPFGATE_LIVE=1` says this kernel
//! is a throwaway one (a VM). The installed policy allows the benchmark's loads, so the gate does its full
//! work on each of them: it scans every instruction, evaluates a policy of several rules and emits an event.
//!
//! Exit status: 0 the target ratio is met, 1 it is missed, 2 the benchmark could not run.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bpfgate::policy::compiled;
use bpfgate::policy::Policy;
use bpfgate_gate::event::{flags, Event, RawEvent, VERDICT_ALLOW};
use bpfgate_gate::{EventStream, Gate, HostResolver};
use bpfgate_test_support::insn::{
    alu32_reg, alu64_imm, alu64_reg, call_helper, exit, jmp_imm, ld_map_fd, ldx, op, st_imm, stx, Insn,
};
use libbpf_rs::libbpf_sys as sys;

type Error = Box<dyn std::error::Error>;

const USAGE: &str = "usage: gate-load-bench [--sizes 100,4000,100000] [--rounds N] [--per-round K] \
                     [--type socket_filter|kprobe] [--map-lookups] [--target RATIO] [--target-size INSNS] [--no-stats]\n\
                     gate-load-bench --syscalls [--rounds N] [--calls K] [--target RATIO]";

/// The rule the benchmark's loads must match: its index in `policy()` (first match wins).
const BENCH_RULE: u32 = 2;
/// The cgroup the benchmark moves itself into, so the policy's subject has a cgroup as in a real deployment.
const BENCH_CGROUP: &str = "/system.slice/bpfgate-bench.service";
/// Pause after each measured load: closed programs are freed by deferred work (RCU, workqueue), which should
/// run here rather than inside the next timed load.
const SETTLE: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    SocketFilter,
    Kprobe,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SocketFilter => "socket_filter",
            Kind::Kprobe => "kprobe",
        }
    }

    fn prog_type(self) -> sys::bpf_prog_type {
        match self {
            Kind::SocketFilter => sys::BPF_PROG_TYPE_SOCKET_FILTER,
            Kind::Kprobe => sys::BPF_PROG_TYPE_KPROBE,
        }
    }
}

struct Options {
    sizes: Vec<usize>,
    rounds: usize,
    per_round: usize,
    kind: Kind,
    /// The ratio the target must stay under; by default 1.05 for loads and 1.02 for `--syscalls`.
    target: Option<f64>,
    target_size: usize,
    stats: bool,
    lookups: bool,
    /// Measure the hot path instead: map and fd-by-id syscalls per second with and without the gate.
    syscalls: bool,
    /// Syscalls per timed batch (`--syscalls`).
    calls: usize,
}

fn parse_args() -> Result<Options, Error> {
    let mut o = Options {
        sizes: vec![100, 4_000, 100_000],
        rounds: 10,
        per_round: 3,
        kind: Kind::SocketFilter,
        target: None,
        target_size: 4_000,
        stats: true,
        lookups: false,
        syscalls: false,
        calls: 2_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{what} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--sizes" => {
                o.sizes = value("--sizes")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--sizes: {s:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--rounds" => o.rounds = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--per-round" => o.per_round = value("--per-round")?.parse().map_err(|e| format!("--per-round: {e}"))?,
            "--target" => o.target = Some(value("--target")?.parse().map_err(|e| format!("--target: {e}"))?),
            "--target-size" => {
                o.target_size = value("--target-size")?.parse().map_err(|e| format!("--target-size: {e}"))?;
            }
            "--type" => {
                o.kind = match value("--type")?.as_str() {
                    "socket_filter" => Kind::SocketFilter,
                    "kprobe" => Kind::Kprobe,
                    other => return Err(format!("--type: unknown program type {other:?}\n{USAGE}").into()),
                }
            }
            "--no-stats" => o.stats = false,
            "--map-lookups" => o.lookups = true,
            "--syscalls" => o.syscalls = true,
            "--calls" => o.calls = value("--calls")?.parse().map_err(|e| format!("--calls: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    // The generator needs room for its prologue and exit; the kernel takes at most 1M instructions.
    if let Some(bad) = o.sizes.iter().find(|&&n| !(MIN_INSNS..=1_000_000).contains(&n)) {
        return Err(format!("--sizes: {bad} is outside {MIN_INSNS}..=1000000").into());
    }
    if o.sizes.is_empty() || o.rounds == 0 || o.per_round == 0 || o.calls == 0 {
        return Err(format!("--sizes, --rounds and --per-round must not be empty or zero\n{USAGE}").into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gate-load-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if opts.syscalls { run_syscalls(&opts) } else { run(&opts) };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gate-load-bench: error: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Program generation

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const FP: u8 = 10;

/// Stack slots the blocks use (r10-8 .. r10-64), all initialised by the prologue; the map key is at -72 and the
/// value map updates store at -80.
const SLOTS: usize = 8;
const KEY_OFF: i16 = -72;
const VALUE_OFF: i16 = -80;

fn slot(i: usize) -> i16 {
    // i % SLOTS < 8, so the offset is in -64..=-8.
    -8 * ((i % SLOTS) as i16 + 1)
}

const PROLOGUE: usize = 4 + SLOTS + 2;
const EPILOGUE: usize = 2;
const MIN_INSNS: usize = PROLOGUE + EPILOGUE;

/// `r6 = ctx`, accumulators r7-r9 zeroed, every stack slot, the map key and the map value written.
fn prologue(p: &mut Vec<Insn>) {
    p.push(alu64_reg(op::MOV, R6, R1));
    for r in [R7, R8, R9] {
        p.push(alu64_imm(op::MOV, r, 0));
    }
    for i in 0..SLOTS {
        p.push(st_imm(op::DW, FP, slot(i), 0));
    }
    p.push(st_imm(op::DW, FP, KEY_OFF, 0));
    p.push(st_imm(op::DW, FP, VALUE_OFF, 0));
}

/// A context field load: `len`, `mark`, `queue_mapping`, `protocol` of `__sk_buff` (the verifier rewrites each
/// into one load from the `sk_buff`), or a `pt_regs` register (read as is).
fn ctx_load(kind: Kind, dst: u8, v: usize) -> Insn {
    match kind {
        Kind::SocketFilter => ldx(op::W, dst, R6, [0, 8, 12, 16][v % 4]),
        // v % 16 < 16: offsets 0..=120 of the 168-byte pt_regs.
        Kind::Kprobe => ldx(op::DW, dst, R6, 8 * (v % 16) as i16),
    }
}

/// A compute block (25 instructions): a helper call, a context load, stack spills and fills, 64- and 32-bit
/// ALU, and one data-dependent forward branch. r1-r5 are written before they are read (calls clobber them).
fn compute_block(p: &mut Vec<Insn>, kind: Kind, v: usize) {
    let threshold = 1000 + (v % 97) as i32;
    let branch = if v < BRANCHING_BLOCKS { jmp_imm(op::JGT, R3, threshold, 2) } else { alu64_imm(op::ADD, R3, 0) };
    p.extend([
        call_helper(sys::BPF_FUNC_ktime_get_ns as i32),
        alu64_reg(op::ADD, R7, R0),
        ctx_load(kind, R1, v),
        alu64_reg(op::XOR, R8, R1),
        ldx(op::DW, R2, FP, slot(v)),
        alu64_reg(op::ADD, R2, R7),
        alu64_imm(op::AND, R2, 0xffff),
        stx(op::DW, FP, slot(v + 3), R2),
        alu64_reg(op::MOV, R3, R8),
        alu64_imm(op::LSH, R3, 3),
        alu64_imm(op::OR, R3, 5),
        alu64_reg(op::SUB, R3, R2),
        branch,
        alu64_imm(op::ADD, R9, 1),
        alu64_reg(op::XOR, R9, R3),
        ldx(op::DW, R4, FP, slot(v + 5)),
        alu64_imm(op::MUL, R4, 7),
        alu64_imm(op::RSH, R4, 2),
        stx(op::W, FP, slot(v + 6), R4),
        alu32_reg(op::MOV, R5, R7),
        alu32_reg(op::ADD, R5, R8),
        alu64_reg(op::XOR, R5, R9),
        alu64_reg(op::MOV, R7, R5),
        alu64_imm(op::ADD, R8, 13),
        stx(op::DW, FP, slot(v + 1), R8),
    ]);
}
const COMPUTE_BLOCK: usize = 25;

/// A map update block (16 instructions): `bpf_map_update_elem` of a stack value, a branch on its result, and
/// stack work after the join.
fn update_block(p: &mut Vec<Insn>, map_fd: i32, v: usize) {
    p.extend(ld_map_fd(R1, map_fd));
    p.extend([
        alu64_reg(op::MOV, R2, FP),
        alu64_imm(op::ADD, R2, i32::from(KEY_OFF)),
        stx(op::DW, FP, VALUE_OFF, R9),
        alu64_reg(op::MOV, R3, FP),
        alu64_imm(op::ADD, R3, i32::from(VALUE_OFF)),
        alu64_imm(op::MOV, R4, 0), // BPF_ANY
        call_helper(sys::BPF_FUNC_map_update_elem as i32),
        if v < BRANCHING_BLOCKS { jmp_imm(op::JNE, R0, 0, 2) } else { alu64_imm(op::ADD, R0, 0) },
        alu64_imm(op::ADD, R9, 1),
        alu64_reg(op::XOR, R8, R9),
        ldx(op::DW, R3, FP, slot(v + 2)),
        alu64_reg(op::ADD, R3, R8),
        stx(op::DW, FP, slot(v + 4), R3),
        alu64_reg(op::SUB, R9, R3),
    ]);
}
const UPDATE_BLOCK: usize = 16;

/// A map lookup block (14 instructions): a lookup with its null check, a read-modify-write of the value, and
/// stack work after the join. The verifier inlines array lookups by patching the program.
fn lookup_block(p: &mut Vec<Insn>, map_fd: i32, v: usize) {
    p.extend(ld_map_fd(R1, map_fd));
    p.extend([
        alu64_reg(op::MOV, R2, FP),
        alu64_imm(op::ADD, R2, i32::from(KEY_OFF)),
        call_helper(sys::BPF_FUNC_map_lookup_elem as i32),
        jmp_imm(op::JEQ, R0, 0, 4),
        ldx(op::DW, R1, R0, 0),
        alu64_reg(op::ADD, R1, R9),
        alu64_reg(op::XOR, R1, R7),
        stx(op::DW, R0, 0, R1),
        ldx(op::DW, R3, FP, slot(v + 2)),
        alu64_reg(op::ADD, R3, R8),
        stx(op::DW, FP, slot(v + 4), R3),
        alu64_reg(op::SUB, R9, R3),
    ]);
}
const LOOKUP_BLOCK: usize = 14;

/// Straight-line ALU to pad a program to its exact size.
fn filler(v: usize) -> Insn {
    match v % 3 {
        0 => alu64_imm(op::ADD, R7, 1),
        1 => alu64_imm(op::XOR, R8, 0x55),
        _ => alu64_reg(op::ADD, R9, R7),
    }
}

/// Blocks that end their work with a conditional branch: the first 4,500 (about 104,000 instructions, so programs
/// up to 100,000 instructions are as they always were). Later blocks put an ALU instruction in the branch's place:
/// the verifier keeps a pending state for every conditional jump on the path and refuses a program with more than
/// 8,192 of them (BPF_COMPLEXITY_LIMIT_JMP_SEQ; 6.12 reports it as EFAULT), which one branch per 23 instructions
/// reaches at about 190,000 instructions. Larger programs (1,000,000) are therefore straight-line after the first
/// 104,000 instructions: the same helper calls, context loads, spills and ALU, without branches.
const BRANCHING_BLOCKS: usize = 4_500;

/// A program of exactly `n` instructions (ld_imm64 counts two) the verifier accepts for root: repeated units of
/// four compute blocks and one map block (116 or 114 instructions, 5 conditional branches, 5 helper calls),
/// padded with ALU. About one branch per 23 instructions keeps the verifier's pending states for 100,000
/// instructions (~4,400) under its limit of 8,192 (it pushes one per conditional jump on the path,
/// BPF_COMPLEXITY_LIMIT_JMP_SEQ).
///
/// The map block updates the map by default. With `lookups` it looks the value up and writes through the
/// pointer instead; the verifier inlines each such lookup by patching the program, which copies the whole
/// program and its per-instruction data, so the load time of such programs grows with the square of their size
/// and the gate's share shrinks: the update form is the harder case for the gate.
fn generate(n: usize, kind: Kind, map_fd: i32, lookups: bool) -> Vec<Insn> {
    let map_block_len = if lookups { LOOKUP_BLOCK } else { UPDATE_BLOCK };
    let mut p = Vec::with_capacity(n);
    prologue(&mut p);
    let mut v = 0;
    loop {
        let left = n - EPILOGUE - p.len();
        let map = v % 5 == 4;
        let next = if map { map_block_len } else { COMPUTE_BLOCK };
        if left < next {
            break;
        }
        if map && lookups {
            lookup_block(&mut p, map_fd, v);
        } else if map {
            update_block(&mut p, map_fd, v);
        } else {
            compute_block(&mut p, kind, v);
        }
        v += 1;
    }
    let mut f = 0;
    while p.len() < n - EPILOGUE {
        p.push(filler(f));
        f += 1;
    }
    p.push(alu64_imm(op::MOV, R0, 0));
    p.push(exit());
    p
}

// ---------------------------------------------------------------------------------------------------------
// Loading

struct Program {
    name: String,
    cname: CString,
    insns: Vec<Insn>,
    kind: Kind,
}

impl Program {
    fn new(n: usize, kind: Kind, map_fd: i32, lookups: bool) -> Result<Program, Error> {
        // Kernel object names hold 15 bytes: "lbench_1000000" fits.
        let name = format!("lbench_{n}");
        let insns = generate(n, kind, map_fd, lookups);
        if insns.len() != n {
            return Err(format!("generated {} instructions instead of {n}", insns.len()).into());
        }
        Ok(Program { cname: CString::new(name.clone())?, name, insns, kind })
    }

    /// `r0 = 0; exit`, loaded unmeasured after each switch between states.
    fn warm(kind: Kind) -> Result<Program, Error> {
        let insns = vec![alu64_imm(op::MOV, R0, 0), exit()];
        Ok(Program { name: "lbench_warm".into(), cname: CString::new("lbench_warm")?, insns, kind })
    }

    /// One BPF_PROG_LOAD, timed around the syscall only; the program stays loaded until the fd is dropped.
    fn load(&self, opts: Option<&mut sys::bpf_prog_load_opts>) -> Result<(Duration, OwnedFd), std::io::Error> {
        let opts = opts.map_or(std::ptr::null_mut(), |o| o as *mut _);
        let start = Instant::now();
        // SAFETY: name, license and instructions outlive the call (Insn has struct bpf_insn's layout); opts is
        // null or a valid, sized struct.
        let fd = unsafe {
            sys::bpf_prog_load(
                self.kind.prog_type(),
                self.cname.as_ptr(),
                c"GPL".as_ptr(),
                self.insns.as_ptr().cast(),
                self.insns.len() as _,
                opts,
            )
        };
        let took = start.elapsed();
        if fd < 0 {
            // libbpf returns -errno.
            return Err(std::io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: fd is a fresh program fd that nothing else owns.
        Ok((took, unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Instructions the verifier processed for this program (BPF_LOG_STATS). (Its "verification time" is not
    /// reported: with a log the verifier does more work than in the measured loads.)
    fn verifier_processed(&self) -> Result<u64, Error> {
        let mut log = vec![0u8; 1 << 16];
        let mut opts = sys::bpf_prog_load_opts {
            sz: size_of::<sys::bpf_prog_load_opts>() as sys::size_t,
            log_level: 4, // BPF_LOG_STATS
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr().cast(),
            ..Default::default()
        };
        let loaded = self.load(Some(&mut opts));
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]).into_owned();
        if let Err(e) = loaded {
            return Err(format!("the verifier refused {} ({e}):\n{text}", self.name).into());
        }
        let number_after = |key: &str| {
            text.split_once(key)
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()))
                .and_then(|d| d.parse::<u64>().ok())
        };
        Ok(number_after("processed ").ok_or_else(|| format!("no 'processed' in the log: {text}"))?)
    }
}

/// An array map of one u64 the map blocks read and write.
fn create_map() -> Result<OwnedFd, Error> {
    let opts =
        sys::bpf_map_create_opts { sz: size_of::<sys::bpf_map_create_opts>() as sys::size_t, ..Default::default() };
    // SAFETY: the name is NUL-terminated and opts a valid, sized options struct.
    let fd = unsafe { sys::bpf_map_create(sys::BPF_MAP_TYPE_ARRAY, c"lbench_map".as_ptr(), 4, 8, 1, &opts) };
    if fd < 0 {
        return Err(format!("creating the benchmark's map: {}", std::io::Error::from_raw_os_error(-fd)).into());
    }
    // SAFETY: fd is a fresh map fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------------------------------------
// The gate's own run time (BPF stats)

/// The gate's loaded programs (LSM programs named `gate_*`: the `bpf_prog_load` hook and, depending on the
/// gate's version, others such as `bpf`, `bpf_prog` and `bpf_map_create`; on 6.1 the `fentry/bpf_check` scan),
/// with their kernel names.
fn gate_progs() -> Result<Vec<(String, OwnedFd)>, Error> {
    let mut id = 0u32;
    let mut found = Vec::new();
    loop {
        let mut next = 0u32;
        // SAFETY: next is a valid out pointer.
        if unsafe { sys::bpf_prog_get_next_id(id, &mut next) } != 0 {
            break;
        }
        id = next;
        // SAFETY: no pointer arguments.
        let fd = unsafe { sys::bpf_prog_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: fd is a fresh program fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let info = prog_info(&fd)?;
        let name: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        // The 6.1 scan is a tracing program (fentry/bpf_check); the kernel truncates names to 15 bytes.
        let tracing = info.type_ == sys::BPF_PROG_TYPE_TRACING;
        if (info.type_ == sys::BPF_PROG_TYPE_LSM || tracing) && name.starts_with(b"gate_") {
            found.push((String::from_utf8_lossy(&name).into_owned(), fd));
        }
    }
    if !found.iter().any(|(n, _)| n.starts_with("gate_prog_load") || n.starts_with("gate_check_scan")) {
        return Err("the gate's scan program (bpf_prog_load or bpf_check) is not among the loaded programs".into());
    }
    Ok(found)
}

/// `(run_time_ns, run_cnt)` of a program, from /proc rather than bpf(2), so reading them runs no gate hook.
fn run_stats(fd: &OwnedFd) -> Result<(u64, u64), Error> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse::<u64>()))
            .ok_or_else(|| format!("no {key} in fdinfo"))?
            .map_err(|e| format!("{key} in fdinfo: {e}"))
    };
    Ok((field("run_time_ns:")?, field("run_cnt:")?))
}

fn prog_info(fd: &OwnedFd) -> Result<sys::bpf_prog_info, Error> {
    let mut info = sys::bpf_prog_info::default();
    let mut len = size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: info is a writable bpf_prog_info of len bytes.
    let rc = unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(format!("reading program info: {}", std::io::Error::from_raw_os_error(-rc)).into());
    }
    Ok(info)
}

/// Turns on run-time statistics of BPF programs while the returned fd lives (BPF_ENABLE_STATS).
fn enable_stats() -> Result<OwnedFd, Error> {
    // SAFETY: no pointer arguments.
    let fd = unsafe { sys::bpf_enable_stats(sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        return Err(format!("BPF_ENABLE_STATS: {}", std::io::Error::from_raw_os_error(-fd)).into());
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------------------------------------
// Environment

fn refuse_reason() -> Option<String> {
    if std::env::var("BPFGATE_LIVE").ok().as_deref() != Some("1") {
        return Some(
            "BPFGATE_LIVE=1 is not set: this benchmark attaches the gate to the running kernel; run it in a VM \
             with `cargo xtask bench-gate`"
                .into(),
        );
    }
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => None,
        Ok(list) => Some(format!("BPF LSM is not active (lsm list: {})", list.trim())),
        Err(e) => Some(format!("cannot read /sys/kernel/security/lsm: {e}")),
    }
}

/// Moves this process into `BENCH_CGROUP` (created if needed), so the gate walks a real cgroup ancestry.
fn enter_cgroup(resolver: &HostResolver) -> Result<(), std::io::Error> {
    let dir = resolver.cgroup_root().join(BENCH_CGROUP.trim_start_matches('/'));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// A realistic policy: an observability rule, a deny rule, the benchmark's rule (the subject exe, cgroup and
/// uid; own maps only, as for bpftrace in examples/policies/observability.yaml), and an audit rule with
/// attach-target patterns; the default denies.
fn policy(exe: &str, cgroup: Option<&str>) -> String {
    let cgroup = cgroup.map(|c| format!("      cgroup: {c}\n")).unwrap_or_default();
    format!(
        "version: 1
mode: enforce
default: deny
rules:
  - name: bpftrace
    subject:
      exe: /usr/bin/bpftrace
      uid: 0
    capabilities:
      deny: [user_write, send_signal, override_return, destructive, sys_bpf, unknown]
    prog_types: [kprobe, tracepoint, raw_tracepoint, perf_event, tracing]
    max_insns: 1000000
  - name: no-busybox
    subject:
      exe: /bin/busybox
    action: deny
  - name: load-bench
    subject:
      exe: {exe}
{cgroup}      uid: 0
    capabilities:
      deny: [user_write, send_signal, override_return, destructive, sys_bpf, unknown]
    prog_types: [socket_filter, kprobe]
    max_insns: 1000000
    maps:
      write: own
      pinned: deny
  - name: file-audit
    subject:
      uid: 0
    action: audit
    capabilities:
      allow: [kernel_read, map_write]
    prog_types: [kprobe, tracing, tracepoint]
    attach_targets: [\"do_sys_open*\", \"vfs_*\", security_file_open, sched_process_exec]
"
    )
}

// ---------------------------------------------------------------------------------------------------------
// Statistics

fn median_u64(v: &[u64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2] as f64,
        n => (s[n / 2 - 1] as f64 + s[n / 2] as f64) / 2.0,
    }
}

fn median_f64(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Median cost of one `Instant::now()` pair: what every sample carries on top of the syscall.
fn timer_overhead() -> u64 {
    let samples: Vec<u64> = (0..1000)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    median_u64(&samples) as u64
}

fn us(ns: f64) -> String {
    if ns >= 10_000_000.0 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct SizeResult {
    without: Vec<u64>,
    with: Vec<u64>,
    ratios: Vec<f64>,
    gate_ns: Option<f64>,
    gate_parts: String,
    processed: u64,
    event: String,
}

struct Bench<'a> {
    opts: &'a Options,
    gate: Gate,
    stream: EventStream,
    generation: u64,
    foreign_events: usize,
    /// The two-instruction program loaded after each switch of state.
    warm: Program,
    attach_ns: Vec<u64>,
    detach_ns: Vec<u64>,
}

impl Bench<'_> {
    /// Puts the gate in the wanted state, then loads `prog` once and returns the latency. Switching state is
    /// followed by one unmeasured load of a two-instruction program, so the measured load finds the hook path
    /// warm, as it is on a system where the gate stays attached. With the gate, checks that the load got one
    /// decision showing the full scan and an allow by the benchmark's rule.
    fn one(&mut self, prog: &Program, with_gate: bool, event: &mut String) -> Result<u64, Error> {
        let t = Instant::now();
        if with_gate {
            self.gate.attach()?;
            self.attach_ns.push(t.elapsed().as_nanos() as u64);
        } else {
            self.detach()?;
            self.detach_ns.push(t.elapsed().as_nanos() as u64);
        }
        drop(self.warm.load(None).map_err(|e| format!("warm-up load (gate attached: {with_gate}): {e}"))?);
        std::thread::sleep(SETTLE);
        self.drain_foreign()?;
        let (took, fd) =
            prog.load(None).map_err(|e| format!("loading {} (gate attached: {with_gate}): {e}", prog.name))?;
        // Closed outside the timed call; its deferred free runs during the pause below.
        drop(fd);
        let events = self.stream.drain()?;
        let (ours, foreign): (Vec<RawEvent>, Vec<RawEvent>) =
            events.into_iter().partition(|e| c_name(&e.name) == prog.name);
        self.foreign_events += foreign.len();
        if ours.len() != usize::from(with_gate) {
            return Err(format!(
                "a load of {} with the gate {} produced {} decisions",
                prog.name,
                if with_gate { "attached" } else { "detached" },
                ours.len()
            )
            .into());
        }
        let n = prog.insns.len() as u32;
        for e in &ours {
            let full = e.insn_cnt == n && e.scanned == n && e.flags & flags::TRUNCATED == 0;
            if !full || e.verdict != VERDICT_ALLOW || e.rule != BENCH_RULE || e.generation != self.generation {
                return Err(format!(
                    "unexpected decision for {}: {}",
                    prog.name,
                    Event::from_raw(e, self.gate.names())
                )
                .into());
            }
            if event.is_empty() {
                *event = Event::from_raw(e, self.gate.names()).to_string();
            }
        }
        std::thread::sleep(SETTLE);
        Ok(took.as_nanos() as u64)
    }

    fn detach(&mut self) -> Result<(), Error> {
        self.gate.detach();
        Ok(())
    }

    fn drain_foreign(&mut self) -> Result<(), Error> {
        let events = self.stream.drain()?;
        self.foreign_events += events.iter().filter(|e| c_name(&e.name) != self.warm.name).count();
        Ok(())
    }

    /// The gate's own run time per load, summed over its programs that run inside the load, from BPF stats (a
    /// separate pass: stats add two clock reads per run). Returns that sum and a per-program breakdown.
    fn gate_self_time(&mut self, prog: &Program, gate_progs: &[(String, OwnedFd)]) -> Result<(f64, String), Error> {
        let k = self.opts.per_round;
        let stats = enable_stats()?;
        self.gate.attach()?;
        let before: Vec<(u64, u64)> = gate_progs.iter().map(|(_, fd)| run_stats(fd)).collect::<Result<_, _>>()?;
        let mut fds = Vec::with_capacity(k);
        for _ in 0..k {
            fds.push(prog.load(None).map_err(|e| format!("loading {} for stats: {e}", prog.name))?.1);
        }
        // Closed before the second reading, so the hooks that run when a program is freed (deferred work) count.
        drop(fds);
        std::thread::sleep(5 * SETTLE);
        let after: Vec<(u64, u64)> = gate_progs.iter().map(|(_, fd)| run_stats(fd)).collect::<Result<_, _>>()?;
        self.detach()?;
        drop(stats);
        self.stream.drain()?;
        std::thread::sleep(SETTLE);
        let mut in_load = 0.0;
        let mut parts = Vec::new();
        for (((name, _), b), a) in gate_progs.iter().zip(&before).zip(&after) {
            let (ns, runs) = (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1));
            if runs == 0 {
                continue;
            }
            // Freeing happens after the load returned: reported, not part of the load's latency.
            let freeing = name.contains("free");
            if !freeing {
                in_load += ns as f64 / k as f64;
            }
            parts.push(format!(
                "{name}{} {:.1}x{:.0}ns",
                if freeing { " (after the load)" } else { "" },
                runs as f64 / k as f64,
                ns as f64 / runs as f64
            ));
        }
        Ok((in_load, parts.join(", ")))
    }
}

fn c_name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// What both benchmarks start from: the kernel's name, its clock source, and the gate loaded with the
/// benchmark's policy installed (not attached).
struct Setup {
    release: String,
    clock: String,
    gate: Gate,
    generation: u64,
}

fn setup() -> Result<Setup, Error> {
    if let Some(reason) = refuse_reason() {
        return Err(reason.into());
    }
    let release = read_trimmed("/proc/sys/kernel/osrelease");
    let clock = read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    let resolver = HostResolver::new();
    let cgroup = match enter_cgroup(&resolver) {
        Ok(()) => Some(BENCH_CGROUP),
        Err(e) => {
            println!("note: could not enter cgroup {BENCH_CGROUP} ({e}); the benchmark's rule has no cgroup subject");
            None
        }
    };
    let exe = std::env::current_exe()?.canonicalize()?.display().to_string();
    let yaml = policy(&exe, cgroup);
    let parsed = Policy::parse("gate-load-bench.yaml", &yaml)?;
    let compiled = compiled::compile(&parsed, 1)?;

    let mut gate = Gate::load()?;
    let installed = gate.install(&compiled, &resolver, false)?;
    if !installed.unresolved.is_empty() {
        println!("note: policy paths not on this system (their rules cannot match): {:?}", installed.unresolved);
    }
    Ok(Setup { release, clock, gate, generation: installed.generation })
}

fn run(opts: &Options) -> Result<bool, Error> {
    let Setup { release, clock, mut gate, generation } = setup()?;
    // Created while the gate is attached, so the gate records this process as its owner and the rule's
    // `maps.write: own` is decided on every load, as for an agent that creates its own maps.
    gate.attach()?;
    let map = create_map()?;
    gate.detach();
    let progs: Vec<Program> = opts
        .sizes
        .iter()
        .map(|&n| Program::new(n, opts.kind, map.as_raw_fd(), opts.lookups))
        .collect::<Result<_, _>>()?;

    // Warm-up without the gate: libbpf's one-time feature probes, page cache, and the verifier's own account.
    let mut results: Vec<SizeResult> = Vec::new();
    for p in &progs {
        p.load(None).map_err(|e| format!("warm-up load of {}: {e}", p.name))?;
        let processed = p.verifier_processed()?;
        results.push(SizeResult { processed, ..Default::default() });
    }

    let stream = gate.events()?;
    let mut bench = Bench {
        opts,
        gate,
        stream,
        generation,
        foreign_events: 0,
        warm: Program::warm(opts.kind)?,
        attach_ns: Vec::new(),
        detach_ns: Vec::new(),
    };
    let overhead = timer_overhead();
    let map_op = if opts.lookups { "lookup" } else { "update" };

    println!(
        "gate load latency: kernel {release}, clocksource {clock}, {} programs with map {}s, {} rounds x {} \
         loads per size and state, gate variant {:?}, timer overhead {overhead} ns",
        opts.kind.name(),
        map_op,
        opts.rounds,
        opts.per_round,
        bench.gate.variant()
    );
    let started = Instant::now();
    for round in 0..opts.rounds {
        for (i, p) in progs.iter().enumerate() {
            let r = &mut results[i];
            let mut with = Vec::with_capacity(opts.per_round);
            let mut without = Vec::with_capacity(opts.per_round);
            for k in 0..opts.per_round {
                // Adjacent pairs, each in the other order than the last: slow drift (other work on the host,
                // the guest's memory) affects both states alike.
                let gate_first = (round + i + k) % 2 == 1;
                for with_gate in [gate_first, !gate_first] {
                    let ns = bench.one(p, with_gate, &mut r.event)?;
                    if with_gate {
                        with.push(ns);
                    } else {
                        without.push(ns);
                    }
                }
            }
            r.ratios.push(median_u64(&with) / median_u64(&without));
            r.with.extend(with);
            r.without.extend(without);
        }
        eprintln!("round {}/{} done after {:.0}s", round + 1, opts.rounds, started.elapsed().as_secs_f64());
    }
    if opts.stats {
        let gate_progs = gate_progs()?;
        for (p, r) in progs.iter().zip(&mut results) {
            let (ns, parts) = bench.gate_self_time(p, &gate_progs)?;
            r.gate_ns = Some(ns);
            r.gate_parts = parts;
        }
        // How close each program came to the verifier's limit: the scan's chunk loop is walked once per
        // iteration, so what goes into it is paid for here too.
        let mut verified = Vec::new();
        for (name, fd) in &gate_progs {
            verified.push(format!("{name} {}", prog_info(fd)?.verified_insns));
        }
        println!("verifier: instructions processed per gate program (limit 1000000): {}", verified.join(", "));
    }
    bench.drain_foreign()?;

    // The readable table, then one machine-parsable line per size.
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:>8} | {:>11} | {:>11} | {:>6} | {:>5} | {:>5} | {:>10} | {:>12} | {:>9}",
        "insns", "without", "with", "ratio", "min", "max", "gate self", "self/without", "processed"
    );
    let mut lines = Vec::new();
    let mut target_ratio = None;
    for (p, r) in progs.iter().zip(&results) {
        let (without, with) = (median_u64(&r.without), median_u64(&r.with));
        let ratio = median_f64(&r.ratios);
        let (lo, hi) = min_max(&r.ratios);
        let gate = r.gate_ns.map_or("-".into(), us);
        let share = r.gate_ns.map_or("-".into(), |g| format!("{:.2}%", 100.0 * g / without));
        let _ = writeln!(
            table,
            "{:>8} | {:>11} | {:>11} | {ratio:>6.3} | {lo:>5.3} | {hi:>5.3} | {gate:>10} | {share:>12} | {:>9}",
            p.insns.len(),
            us(without),
            us(with),
            r.processed
        );
        lines.push(format!(
            "BENCH-RESULT kernel={release} type={} map={} insns={} rounds={} per_round={} without_ns={without:.0} \
             with_ns={with:.0} ratio={ratio:.4} ratio_min={lo:.4} ratio_max={hi:.4} ratio_of_medians={:.4} \
             gate_self_ns={} processed_insns={}",
            opts.kind.name(),
            map_op,
            p.insns.len(),
            opts.rounds,
            opts.per_round,
            with / without,
            r.gate_ns.map_or("-".into(), |g| format!("{g:.0}")),
            r.processed
        ));
        if p.insns.len() == opts.target_size {
            target_ratio = Some(ratio);
        }
    }
    print!("{table}");
    println!("decisions (one per size, as the gate reported them):");
    for (p, r) in progs.iter().zip(&results) {
        println!("  {:>7}: {}", p.insns.len(), r.event);
    }
    if opts.stats {
        println!("gate self time by program (runs per load x mean ns per run):");
        for (p, r) in progs.iter().zip(&results) {
            println!("  {:>7}: {}", p.insns.len(), r.gate_parts);
        }
    }
    println!(
        "switching: attach {} (median of {}), detach {} (median of {})",
        us(median_u64(&bench.attach_ns)),
        bench.attach_ns.len(),
        us(median_u64(&bench.detach_ns)),
        bench.detach_ns.len()
    );
    if bench.foreign_events > 0 {
        println!("note: {} decisions on other programs' loads were seen and ignored", bench.foreign_events);
    }
    println!("(benchmark took {:.0}s)", started.elapsed().as_secs_f64());
    for l in &lines {
        println!("{l}");
    }
    match target_ratio {
        Some(ratio) => {
            let target = opts.target.unwrap_or(1.05);
            let met = ratio < target;
            println!(
                "BENCH-TARGET kernel={release} insns={} ratio={ratio:.4} target={target} met={}",
                opts.target_size,
                if met { "yes" } else { "no" }
            );
            Ok(met)
        }
        None => {
            println!("BENCH-TARGET insns={} not measured (not in --sizes)", opts.target_size);
            Ok(true)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The hot path (`--syscalls`): what agents do millions of times from user space. lsm/bpf runs on every bpf()
// call, lsm/bpf_map and lsm/bpf_prog on every fd by id.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syscall {
    Lookup,
    Update,
    Delete,
    GetNextKey,
    MapFdById,
    ProgFdById,
}

impl Syscall {
    const ALL: [Syscall; 6] = [
        Syscall::Lookup,
        Syscall::Update,
        Syscall::Delete,
        Syscall::GetNextKey,
        Syscall::MapFdById,
        Syscall::ProgFdById,
    ];

    fn name(self) -> &'static str {
        match self {
            Syscall::Lookup => "map_lookup_elem",
            Syscall::Update => "map_update_elem",
            Syscall::Delete => "map_delete_elem",
            Syscall::GetNextKey => "map_get_next_key",
            Syscall::MapFdById => "map_get_fd_by_id",
            Syscall::ProgFdById => "prog_get_fd_by_id",
        }
    }
}

/// The objects the syscalls work on, all created (and the program loaded) by this process while the gate was
/// attached: its own, as an agent's are, so every call is allowed and decided in full.
struct HotPath {
    array: OwnedFd,
    hash: OwnedFd,
    map_id: u32,
    prog_id: u32,
    _prog: OwnedFd,
}

/// Keys in the hash map while `map_get_next_key` walks it.
const WALK_KEYS: u32 = 64;

fn libbpf_rc(what: &str, rc: i32) -> Result<(), Error> {
    if rc < 0 {
        return Err(format!("{what}: {}", std::io::Error::from_raw_os_error(-rc)).into());
    }
    Ok(())
}

impl HotPath {
    fn new(gate: &mut Gate, kind: Kind) -> Result<Self, Error> {
        gate.attach()?;
        let array = create_map()?;
        let opts =
            sys::bpf_map_create_opts { sz: size_of::<sys::bpf_map_create_opts>() as sys::size_t, ..Default::default() };
        // SAFETY: the name is NUL-terminated and opts a valid, sized options struct.
        let fd = unsafe { sys::bpf_map_create(sys::BPF_MAP_TYPE_HASH, c"lbench_hash".as_ptr(), 4, 8, 1 << 16, &opts) };
        libbpf_rc("creating the hash map", fd)?;
        // SAFETY: fd is a fresh map fd that nothing else owns.
        let hash = unsafe { OwnedFd::from_raw_fd(fd) };
        let (_, prog) = Program::warm(kind)?.load(None).map_err(|e| format!("loading the program to open: {e}"))?;
        gate.detach();
        let mut map_info = sys::bpf_map_info::default();
        let mut len = size_of::<sys::bpf_map_info>() as u32;
        // SAFETY: map_info is a writable bpf_map_info of len bytes.
        libbpf_rc("reading map info", unsafe {
            sys::bpf_map_get_info_by_fd(array.as_raw_fd(), &mut map_info, &mut len)
        })?;
        let prog_id = prog_info(&prog)?.id;
        Ok(HotPath { array, hash, map_id: map_info.id, prog_id, _prog: prog })
    }

    /// Puts the hash map in the state `op` needs: `keys` entries from 0 (untimed).
    fn prepare(&self, op: Syscall, calls: u32) -> Result<(), Error> {
        let keys = match op {
            Syscall::Delete => calls,
            Syscall::GetNextKey => WALK_KEYS,
            _ => return Ok(()),
        };
        let value = 0u64;
        for key in 0..keys {
            // SAFETY: key and value outlive the call and have the map's sizes.
            libbpf_rc("filling the hash map", unsafe {
                sys::bpf_map_update_elem(self.hash.as_raw_fd(), (&raw const key).cast(), (&raw const value).cast(), 0)
            })?;
        }
        Ok(())
    }

    /// `calls` calls of `op`, timed together; every one must succeed.
    fn batch(&self, op: Syscall, calls: u32) -> Result<Duration, Error> {
        let (mut key, mut next, mut value) = (0u32, 0u32, 0u64);
        let start = Instant::now();
        for i in 0..calls {
            // SAFETY (all arms): pointers are to locals of the map's key and value sizes; fds are ours.
            let rc = unsafe {
                match op {
                    Syscall::Lookup => sys::bpf_map_lookup_elem(
                        self.array.as_raw_fd(),
                        (&raw const key).cast(),
                        (&raw mut value).cast(),
                    ),
                    Syscall::Update => {
                        value = u64::from(i);
                        sys::bpf_map_update_elem(
                            self.array.as_raw_fd(),
                            (&raw const key).cast(),
                            (&raw const value).cast(),
                            0,
                        )
                    }
                    Syscall::Delete => {
                        key = i;
                        sys::bpf_map_delete_elem(self.hash.as_raw_fd(), (&raw const key).cast())
                    }
                    Syscall::GetNextKey => {
                        // Walks the map round and round: the last key has no next, and then it restarts.
                        let rc = sys::bpf_map_get_next_key(
                            self.hash.as_raw_fd(),
                            (&raw const key).cast(),
                            (&raw mut next).cast(),
                        );
                        key = if rc == 0 { next } else { u32::MAX };
                        if rc == -libc::ENOENT {
                            0
                        } else {
                            rc
                        }
                    }
                    Syscall::MapFdById => close_fd(sys::bpf_map_get_fd_by_id(self.map_id)),
                    Syscall::ProgFdById => close_fd(sys::bpf_prog_get_fd_by_id(self.prog_id)),
                }
            };
            libbpf_rc(op.name(), rc)?;
        }
        Ok(start.elapsed())
    }
}

/// Runs a timed batch in a forked child and returns its time. This process loaded the gate, so it is the gate's
/// daemon, which `lsm/bpf_prog` lets through before anything else; the child is the same subject (executable,
/// cgroup, uid: the objects stay its own, as an agent's are) but another process, so the hooks take an agent's
/// path. Single-threaded here: the child only makes the batch's syscalls, writes its time and exits.
fn in_child(batch: impl FnOnce() -> Result<Duration, Error>) -> Result<Duration, Error> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is an array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: this process has one thread; the child runs the batch and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()).into());
    }
    if pid == 0 {
        let ns = match batch() {
            Ok(took) => u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1),
            Err(e) => {
                eprintln!("the batch failed in the child: {e}");
                u64::MAX
            }
        };
        // SAFETY: writes 8 bytes from a live u64 to the pipe, then leaves without running the parent's destructors.
        unsafe {
            libc::write(fds[1], (&raw const ns).cast(), 8);
            libc::_exit(0)
        }
    }
    let mut ns = u64::MAX;
    // SAFETY: the pipe's fds are ours; read writes at most 8 bytes into ns; status is a valid int.
    let (n, rc) = unsafe {
        libc::close(fds[1]);
        let n = libc::read(fds[0], (&raw mut ns).cast(), 8);
        libc::close(fds[0]);
        let mut status = 0;
        (n, libc::waitpid(pid, &mut status, 0))
    };
    if n != 8 || ns == u64::MAX || rc != pid {
        return Err("the timed batch failed in its child process".into());
    }
    Ok(Duration::from_nanos(ns))
}

/// Closes an fd a by-id call returned (its cost is part of the measured call, in both states alike).
fn close_fd(fd: i32) -> i32 {
    if fd >= 0 {
        // SAFETY: fd is fresh and ours; OwnedFd closes it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        0
    } else {
        fd
    }
}

mod floor_skel {
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

/// The floor of any gate on the fd-by-id hooks (floor.bpf.c): programs on `lsm/bpf_map` and `lsm/bpf_prog` that
/// only count their calls, attached while measured instead of the gate.
struct Floor<'obj> {
    skel: floor_skel::FloorSkel<'obj>,
    links: Vec<libbpf_rs::Link>,
}

impl<'obj> Floor<'obj> {
    fn load(storage: &'obj mut std::mem::MaybeUninit<libbpf_rs::OpenObject>) -> Result<Self, Error> {
        use libbpf_rs::skel::{OpenSkel as _, SkelBuilder as _};
        let skel = floor_skel::FloorSkelBuilder::default().open(storage)?.load()?;
        Ok(Floor { skel, links: Vec::new() })
    }

    fn attach(&mut self) -> Result<(), Error> {
        self.links = vec![self.skel.progs.floor_map.attach_lsm()?, self.skel.progs.floor_prog.attach_lsm()?];
        Ok(())
    }

    /// Closes the links (fd-bound: the trampolines no longer run the programs when this returns).
    fn detach(&mut self) {
        self.links.clear();
    }

    /// Calls of either program so far.
    fn calls(&self) -> Result<u64, Error> {
        let bss = self.skel.maps.bss_data.as_deref().ok_or("the floor's .bss is not memory-mapped")?;
        // SAFETY: a field of the .bss mapping the skeleton keeps for its life; the programs write it, so it is
        // read with a volatile load.
        Ok(unsafe { std::ptr::read_volatile(&raw const bss.calls) })
    }
}

/// What a batch runs under: nothing, the floor's programs, or the gate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Without,
    Floor,
    Gate,
}

fn run_syscalls(opts: &Options) -> Result<bool, Error> {
    let Setup { release, clock, mut gate, generation: _ } = setup()?;
    let hot = HotPath::new(&mut gate, opts.kind)?;
    let mut storage = std::mem::MaybeUninit::uninit();
    let mut floor = Floor::load(&mut storage)?;
    let mut stream = gate.events()?;
    let calls = u32::try_from(opts.calls).map_err(|_| "--calls is too large")?;
    let target = opts.target.unwrap_or(1.02);
    println!(
        "gate hot path: kernel {release}, clocksource {clock}, {} rounds x {calls} calls per syscall and state",
        opts.rounds
    );
    // Per state (State as index) and syscall: ns per call, one per round.
    let mut per_call = vec![vec![Vec::new(); Syscall::ALL.len()]; 3];
    let started = Instant::now();
    for round in 0..opts.rounds {
        // Each round starts with another state than the last: slow drift affects all three alike.
        let order = [State::Without, State::Floor, State::Gate];
        for k in 0..order.len() {
            let state = order[(round + k) % order.len()];
            gate.detach();
            floor.detach();
            match state {
                State::Without => {}
                State::Floor => floor.attach()?,
                State::Gate => gate.attach()?,
            }
            for (i, &op) in Syscall::ALL.iter().enumerate() {
                hot.prepare(op, calls)?;
                // Warm: the first calls after a switch fault in the hook's paths.
                hot.batch(op, calls.min(64))?;
                hot.prepare(op, calls)?;
                let before = floor.calls()?;
                let took = in_child(|| hot.batch(op, calls))?;
                // The floor ran once per fd made, and only while attached.
                let made = if matches!(op, Syscall::MapFdById | Syscall::ProgFdById) { u64::from(calls) } else { 0 };
                let ran = floor.calls()? - before;
                if ran != if state == State::Floor { made } else { 0 } {
                    return Err(
                        format!("the floor's programs ran {ran} times in {calls} calls of {}", op.name()).into()
                    );
                }
                per_call[state as usize][i].push(took.as_nanos() as f64 / f64::from(calls));
                stream.drain()?;
            }
        }
        eprintln!("round {}/{} done after {:.0}s", round + 1, opts.rounds, started.elapsed().as_secs_f64());
    }
    gate.detach();
    floor.detach();
    // Per round, a state's time over the time without anything.
    let ratios = |state: State, i: usize| -> Vec<f64> {
        let without = &per_call[State::Without as usize][i];
        per_call[state as usize][i].iter().zip(without).map(|(t, wo)| t / wo).collect()
    };

    println!(
        "{:>18} | {:>9} | {:>9} | {:>6} | {:>9} | {:>6} | {:>5} | {:>5}",
        "syscall", "without", "floor", "ratio", "with", "ratio", "min", "max"
    );
    let mut lines = Vec::new();
    let mut worst: f64 = 0.0;
    for (i, op) in Syscall::ALL.iter().enumerate() {
        let median = |state: State| median_f64(&per_call[state as usize][i]);
        let (wo, fl, wi) = (median(State::Without), median(State::Floor), median(State::Gate));
        let gate_ratios = ratios(State::Gate, i);
        let (floor_ratio, ratio) = (median_f64(&ratios(State::Floor, i)), median_f64(&gate_ratios));
        let (lo, hi) = min_max(&gate_ratios);
        worst = worst.max(ratio);
        println!(
            "{:>18} | {wo:>6.0} ns | {fl:>6.0} ns | {floor_ratio:>6.3} | {wi:>6.0} ns | {ratio:>6.3} | {lo:>5.3} | {hi:>5.3}",
            op.name()
        );
        lines.push(format!(
            "BENCH-SYSCALL kernel={release} syscall={} rounds={} calls={calls} without_ns={wo:.0} with_ns={wi:.0} \
             ratio={ratio:.4} ratio_min={lo:.4} ratio_max={hi:.4} floor_ns={fl:.0} floor_ratio={floor_ratio:.4}",
            op.name(),
            opts.rounds
        ));
    }
    println!("(benchmark took {:.0}s)", started.elapsed().as_secs_f64());
    for l in &lines {
        println!("{l}");
    }
    let met = worst < target;
    println!(
        "BENCH-TARGET kernel={release} syscalls worst_ratio={worst:.4} target={target} met={}",
        if met { "yes" } else { "no" }
    );
    Ok(met)
}
