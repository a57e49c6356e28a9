//! The gate's scan against the library's model of it (`bpfgate::kernel_view`) on random programs: the fixtures
//! of the conformance test cover what compilers write, these what the scan's short paths, chunks and join table
//! must get right on any instruction mix (`bpfgate_test_support::random` says what the generator covers).
//!
//! Each program is judged twice: by the library from an object, laid out as libbpf would, and by the gate from
//! the same instructions loaded into the kernel under an audit policy. Most programs do not verify; the gate
//! decides before the verifier runs (at `lsm/bpf_prog_load`, or on 6.1 at `fentry/bpf_check`, which sends the
//! load event there), so every load is judged. `BPFGATE_DIFF_SEED` and `BPFGATE_DIFF_PROGRAMS` choose the
//! programs (`cargo xtask vmtest --diff-seed`, `--diff-programs`); a mismatch prints the seed, the program shrunk
//! to what still differs, and both sides.
//!
//! Module kfuncs (the catalogued ones of nf_conntrack and nf_nat, which the VM harness loads) are called through
//! fd_array slots 1 and 2, as libbpf lays them out; every other program's fd_array is on a page the gate cannot
//! read at load (a shared file mapping whose page table entries were dropped), so both ways the gate finds a
//! module's BTF are compared with the library, which knows kfuncs by name. Every other pair of programs names
//! its map by fd_array index (`BPF_PSEUDO_MAP_IDX`, as libbpf's light skeletons load) instead of by fd.

use std::collections::BTreeMap;
use std::time::Instant;

use bpfgate::metadata::{Capability, ClassSet, ProgramMetadata};
use bpfgate_gate::event::{evidence, scan_flags, RawEvent, VERDICT_AUDIT};
use bpfgate_test_support::insn::op;
use bpfgate_test_support::random::{parse_number, Linked, MapRef, Program, Rng, KINDS};
use libbpf_rs::libbpf_sys;

use super::gate::{
    audit_deny_everything, class_names, fd_result, kernel_btf, kernel_funcs, load_with_opts, named, this_exe, Live,
    UnmappedInts,
};
use super::live;

const SEED_ENV: &str = "BPFGATE_DIFF_SEED";
const PROGRAMS_ENV: &str = "BPFGATE_DIFF_PROGRAMS";
const DEFAULT_SEED: u64 = 0x6a7e_d1ff;
const DEFAULT_PROGRAMS: u64 = 3000;
/// The map fd every map reference names, the same in each run so that printed programs can be replayed.
const MAP_FD: i32 = 900;
/// Loads a shrink may spend: each is a load and an analysis.
const SHRINK_BUDGET: usize = 400;
/// Mismatches shrunk and printed whole; the rest are named (a broken scan would otherwise shrink hundreds).
const SHRUNK: usize = 3;
/// The modules whose catalogued kfuncs programs call, at fd_array indexes 1 and 2 (0 is vmlinux's).
const MODULES: [&str; 2] = ["nf_conntrack", "nf_nat"];

/// What the two sides said about one program.
enum Outcome {
    /// Equal: the program's instruction count, whether the gate counted a conservative class, and whether it
    /// calls a module's kfunc.
    Same { insns: usize, conservative: bool, module: bool },
    /// The library did not analyze the program (its errors).
    Unanalyzed(String),
    /// The gate sent no decision (the load's result).
    Undecided(Result<(), i32>),
    /// Another load's scan took the jump targets (`scan_flags::CONTENDED`): the gate counted by preconditions.
    Contended,
    /// Different: what differs, and both sides.
    Differs(Vec<String>, String),
}

/// The environment's number, or the default.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| parse_number(&v).unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// The program of `index` in the run of `seed`, on its own stream so that each can be generated alone.
fn generate(seed: u64, index: u64, kfuncs: &[&'static str]) -> Program {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03));
    // Mostly short and medium programs, a third long enough for several chunks and a full join table.
    let size = match rng.below(10) {
        0..=2 => rng.range(2, 20),
        3..=6 => rng.range(20, 120),
        _ => rng.range(120, 350),
    };
    Program::generate(&mut rng, size as usize, kfuncs)
}

/// What a program's side-by-side comparison needs besides the program.
struct Bench {
    g: Live,
    /// The BTF ids of the vmlinux functions programs attach to.
    funcs: BTreeMap<&'static str, u32>,
    /// The kfuncs programs call: BTF id and fd_array index of their BTF object.
    kfuncs: BTreeMap<&'static str, (i32, i16)>,
    /// The fd_array the loads pass, with the modules' BTF fds and the map's at their indexes: on the heap, and on
    /// a page the gate cannot read.
    fd_array: Vec<i32>,
    unmapped: UnmappedInts,
    /// The map's index in `fd_array`.
    map_index: i32,
    generation: u64,
    loads: u64,
    verified: u64,
}

/// How a program is loaded: with the fd_array the gate cannot read, and with map references by fd_array index.
#[derive(Clone, Copy, Debug)]
struct Mode {
    unmapped: bool,
    map_index: bool,
}

impl Mode {
    /// Program `index`'s: all four in turn.
    fn of(index: u64) -> Mode {
        Mode { unmapped: index % 2 == 1, map_index: index / 2 % 2 == 1 }
    }
}

impl Bench {
    fn link(&self, prog: &Program, mode: Mode) -> Linked {
        let maps = if mode.map_index { MapRef::Index(self.map_index) } else { MapRef::Fd(MAP_FD) };
        prog.link(maps, &|name| self.kfuncs.get(name).copied().unwrap_or((0, 0)))
    }

    /// Judges `prog` on both sides under the name `name`, loaded as `mode` says.
    fn judge(&mut self, prog: &Program, name: &str, mode: Mode) -> Outcome {
        let Mode { unmapped, .. } = mode;
        let linked = self.link(prog, mode);
        let object = prog.object(name, &linked);
        let options = bpfgate::InspectOptions { target: self.g.target(), ..Default::default() };
        let report = bpfgate::inspect_with(name, &object, &options);
        let Some(p) = report.programs.iter().find(|p| p.name == name) else {
            let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
            return Outcome::Unanalyzed(errors.join("; "));
        };
        let attach = prog.kind.btf_func.map_or(0, |f| self.funcs[f]);
        let fd_array = if unmapped {
            self.unmapped.unmap();
            self.unmapped.as_ptr()
        } else {
            self.fd_array.as_ptr()
        };
        let opts = libbpf_sys::bpf_prog_load_opts {
            expected_attach_type: prog.kind.attach_type,
            attach_btf_id: attach,
            fd_array: fd_array.cast(),
            ..Default::default()
        };
        let result = load_with_opts(prog.kind.prog_type, name, &linked.insns, opts).map(|fd| {
            fd_result(fd);
        });
        self.loads += 1;
        self.verified += u64::from(result.is_ok());
        let events = self.g.take();
        let ours = named(&events, name);
        let Some(e) = ours.first() else { return Outcome::Undecided(result) };
        if e.scan_flags & scan_flags::CONTENDED != 0 {
            return Outcome::Contended;
        }
        let mut bad = compare(p, e, &ours, self.generation, result.is_ok());
        // A module kfunc call's slot is read, or taken from the only module with that kfunc where it cannot be.
        let module =
            linked.insns.iter().any(|i| i.code == op::JMP | op::CALL && i.src() == op::PSEUDO_KFUNC_CALL && i.off != 0);
        if (e.scan_flags & scan_flags::FD_ARRAY_UNREAD != 0) != (module && unmapped) {
            bad.push(format!(
                "fd_array_unread {:#x} (module kfunc calls: {module}, unmapped: {unmapped})",
                e.scan_flags
            ));
        }
        if bad.is_empty() {
            Outcome::Same { insns: linked.insns.len(), conservative: e.maybe_classes != 0, module }
        } else {
            Outcome::Differs(bad, sides(p, e))
        }
    }

    /// `prog` without as much as can go while it still differs: chunks of items, halved until single ones.
    fn shrink(&mut self, prog: &Program, mode: Mode) -> (Program, usize) {
        let mut p = prog.clone();
        let mut tries = 0;
        let mut chunk = p.len().div_ceil(2);
        while chunk > 0 && tries < SHRINK_BUDGET {
            let mut at = 0;
            let mut shrunk = false;
            while at < p.len() && tries < SHRINK_BUDGET {
                let q = p.without(at, at + chunk);
                tries += 1;
                if q.len() < p.len() && matches!(self.judge(&q, &format!("bgs{tries}"), mode), Outcome::Differs(..)) {
                    p = q;
                    shrunk = true;
                } else {
                    at += chunk;
                }
            }
            if !shrunk {
                chunk /= 2;
            }
        }
        (p, tries)
    }
}

/// The differences between the gate's decision `e` (of the decisions `ours` on the load) and the library's view
/// of `p`: the classes proved and conservative, each conservative class's evidence, the instruction count; and,
/// for a program that `verified`, the gate must count every class the library's analysis finds.
fn compare(p: &ProgramMetadata, e: &RawEvent, ours: &[&RawEvent], generation: u64, verified: bool) -> Vec<String> {
    let view = &p.kernel_view;
    let conservative: ClassSet = view.conservative.iter().copied().collect();
    let proved = view.class_set().0 & !conservative.0;
    let lib = p.class_set().0;
    let mut bad = Vec::new();
    if ours.iter().any(|o| o.verdict != VERDICT_AUDIT) || e.generation != generation {
        bad.push(format!("not the audit policy's decision (generation {} of {generation})", e.generation));
    }
    if e.classes != proved {
        bad.push(format!("proved {} != view {}", class_names(e.classes), class_names(proved)));
    }
    if e.maybe_classes != conservative.0 {
        bad.push(format!("conservative {} != view {}", class_names(e.maybe_classes), class_names(conservative.0)));
    }
    for (&c, &at) in &view.evidence {
        let got = e.evidence[c as usize];
        if got != evidence::INSN | at {
            bad.push(format!("{} evidence {got:#x} != view's insn {at}", c.name()));
        }
    }
    // Only where the verifier let the program in: on the rest the two models differ by design (an unaligned
    // pointer spill, which the verifier refuses, is no pointer to the gate; the library follows its bytes).
    if verified && lib & !(e.classes | e.maybe_classes) != 0 {
        bad.push(format!("gate {} misses library's {}", class_names(e.classes | e.maybe_classes), class_names(lib)));
    }
    if e.insn_cnt != p.insn_count {
        bad.push(format!("{} insns, library {}", e.insn_cnt, p.insn_count));
    }
    if ours.iter().any(|o| o.classes != e.classes || o.maybe_classes != e.maybe_classes) {
        bad.push("the load's decisions disagree".to_owned());
    }
    if ours.iter().any(|o| o.scan_flags & scan_flags::KFUNC_BTF_CHANGED != 0) {
        bad.push("the verifier bound other module BTFs than the gate judged".to_owned());
    }
    bad
}

/// Both sides' classes and evidence, for a report.
fn sides(p: &ProgramMetadata, e: &RawEvent) -> String {
    let ev: Vec<String> = Capability::ALL
        .iter()
        .filter(|&&c| e.evidence[c as usize] & evidence::KIND_MASK == evidence::INSN)
        .map(|&c| format!("{}@{}", c.name(), e.evidence[c as usize] & evidence::VALUE_MASK))
        .collect();
    format!(
        "gate: proved {} conservative {} insn evidence [{}]\nview: classes {:?} conservative {:?} evidence {:?}\n\
         library: {:?}",
        class_names(e.classes),
        class_names(e.maybe_classes),
        ev.join(" "),
        p.kernel_view.classes,
        p.kernel_view.conservative,
        p.kernel_view.evidence,
        p.capabilities
    )
}

/// The program as laid out, one instruction a line: index, then `code regs off imm` in hex (dst in the low nibble
/// of regs) and the function starts.
fn listing(prog: &Program, linked: &Linked) -> String {
    let mut out = format!("{} ({} insns, functions at {:?})\n", prog.kind.section, linked.insns.len(), linked.funcs);
    for (k, i) in linked.insns.iter().enumerate() {
        out +=
            &format!("  {k:4}: {:02x} {:x}{:x} {:04x} {:08x}\n", i.code, i.src(), i.dst(), i.off as u16, i.imm as u32);
    }
    out
}

/// An array map at `MAP_FD` for the programs' map references; closed when dropped.
struct FixedMap;

impl FixedMap {
    fn create() -> FixedMap {
        // SAFETY: a valid name; null opts means defaults.
        let fd = unsafe {
            libbpf_sys::bpf_map_create(libbpf_sys::BPF_MAP_TYPE_ARRAY, c"bgd_map".as_ptr(), 4, 64, 1, std::ptr::null())
        };
        assert!(fd >= 0, "creating the array map: errno {}", -fd);
        // SAFETY: fd is ours; MAP_FD is not one this process uses (checked by F_GETFD first).
        let moved = unsafe {
            assert_eq!(libc::fcntl(MAP_FD, libc::F_GETFD), -1, "fd {MAP_FD} is taken");
            let moved = libc::dup2(fd, MAP_FD);
            libc::close(fd);
            moved
        };
        assert_eq!(moved, MAP_FD, "dup2 to fd {MAP_FD}: {}", std::io::Error::last_os_error());
        FixedMap
    }
}

impl Drop for FixedMap {
    fn drop(&mut self) {
        // SAFETY: the fd create() made.
        unsafe { libc::close(MAP_FD) };
    }
}

/// On random programs of every kind the generator makes, the gate's proved and conservative classes, the
/// conservative classes' evidence and the instruction count equal `kernel_view`'s, and on those the verifier
/// accepts the gate counts every class the library's analysis finds.
#[test]
fn gate_matches_kernel_view_on_random_programs() {
    let Some(_guard) = live("gate_matches_kernel_view_on_random_programs") else { return };
    let seed = env_number(SEED_ENV, DEFAULT_SEED);
    let programs = env_number(PROGRAMS_ENV, DEFAULT_PROGRAMS);
    let exe = this_exe();
    let mut g = Live::new();
    let generation = g.install(&audit_deny_everything(&exe));
    g.take();
    let _map = FixedMap::create();
    let catalogue = || bpfgate::helpers::KFUNCS.iter().map(|k| k.name);
    // Every catalogued kfunc of vmlinux, and one vmlinux function no catalogue names (unknown on both sides).
    let mut kfuncs: BTreeMap<&'static str, (i32, i16)> = kernel_funcs(None, catalogue().chain(["do_nanosleep"]))
        .into_iter()
        .map(|(n, id)| (n, (id as i32, 0)))
        .collect();
    // The modules' catalogued kfuncs, through their fd_array slots.
    let mut fd_array = vec![0];
    for module in MODULES {
        let Some((fd, obj)) = kernel_btf(module) else {
            assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness loads {module}");
            report!("no {module} BTF: its kfuncs are not called");
            continue;
        };
        let slot = fd_array.len() as i16;
        fd_array.push(fd);
        kfuncs.extend(kernel_funcs(Some(obj), catalogue()).into_iter().map(|(n, id)| (n, (id as i32, slot))));
    }
    let module_kfuncs = kfuncs.values().filter(|&&(_, slot)| slot != 0).count();
    let kfunc_names: Vec<&'static str> = kfuncs.keys().copied().collect();
    let targets: Vec<&'static str> = KINDS.iter().filter_map(|k| k.btf_func).collect();
    let funcs = kernel_funcs(None, targets.iter().copied());
    assert_eq!(
        funcs.len(),
        targets.iter().collect::<std::collections::BTreeSet<_>>().len(),
        "not all of {targets:?} in vmlinux BTF"
    );
    let map_index = fd_array.len() as i32;
    fd_array.push(MAP_FD);
    let unmapped = UnmappedInts::new(&fd_array);
    let mut bench = Bench { g, funcs, kfuncs, fd_array, unmapped, map_index, generation, loads: 0, verified: 0 };
    let start = Instant::now();
    let (mut same, mut unanalyzed, mut undecided, mut contended) = (0u64, Vec::new(), Vec::new(), 0u64);
    let (mut insns, mut with_conservative, mut with_module) = (0usize, 0u64, [0u64; 2]);
    let mut mismatches = Vec::new();
    for index in 0..programs {
        let prog = generate(seed, index, &kfunc_names);
        let name = format!("bgd{index:05}");
        let mode = Mode::of(index);
        match bench.judge(&prog, &name, mode) {
            Outcome::Same { insns: n, conservative, module } => {
                same += 1;
                insns += n;
                with_conservative += u64::from(conservative);
                with_module[usize::from(mode.unmapped)] += u64::from(module);
            }
            Outcome::Unanalyzed(errors) => unanalyzed.push(format!("{index}: {errors}")),
            Outcome::Undecided(result) => undecided.push(format!("{index}: load {result:?}")),
            Outcome::Contended => contended += 1,
            Outcome::Differs(bad, _) if mismatches.len() >= SHRUNK => {
                mismatches.push(format!("program {index} ({}): {}", prog.kind.section, bad.join("; ")));
            }
            Outcome::Differs(bad, _) => {
                let (small, tries) = bench.shrink(&prog, mode);
                let why = match bench.judge(&small, "bgd_shrunk", mode) {
                    Outcome::Differs(bad, sides) => format!("{}\n{sides}", bad.join("; ")),
                    _ => "(the shrunk program no longer differs)".to_owned(),
                };
                let text = format!(
                    "MISMATCH seed {seed:#x} program {index} ({}, {mode:?}): {}\nshrunk from {} \
                     to {} instructions in {tries} loads: {why}\n{}",
                    prog.kind.section,
                    bad.join("; "),
                    bench.link(&prog, mode).insns.len(),
                    bench.link(&small, mode).insns.len(),
                    listing(&small, &bench.link(&small, mode))
                );
                report!("{text}");
                mismatches.push(text);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    report!(
        "differential (seed {seed:#x}, {SEED_ENV} to change): {programs} programs, {same} the same on both sides \
         ({insns} instructions, {with_conservative} with a conservative class), {} mismatches, {} not analyzed by \
         the library, {} without a decision, {contended} contended; {} loads ({} verified) in {secs:.1}s; {} kfuncs \
         called ({module_kfuncs} of modules: by {} programs with fd_array readable, {} with it not)",
        mismatches.len(),
        unanalyzed.len(),
        undecided.len(),
        bench.loads,
        bench.verified,
        kfunc_names.len(),
        with_module[0],
        with_module[1]
    );
    for line in unanalyzed.iter().chain(&undecided).take(10) {
        report!("  {line}");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {programs} programs differ (seed {seed:#x}):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // Every program analyzed and decided, and the generator's programs not all alike.
    assert!(unanalyzed.is_empty() && undecided.len() as u64 * 50 <= programs, "{unanalyzed:?} {undecided:?}");
    assert!(same * 10 >= programs * 9, "only {same} of {programs} programs compared");
    assert!(with_conservative * 5 >= same && with_conservative * 5 <= same * 4, "{with_conservative} of {same}");
    // Module kfuncs called both ways the gate finds their BTF, where the harness loaded the modules (~3% of the
    // programs each way: 11 of the 139 kfuncs on 6.12).
    if module_kfuncs > 0 && programs >= 1000 {
        assert!(with_module.iter().all(|&n| n * 200 >= programs), "module kfunc programs: {with_module:?}");
    }
    for fd in &bench.fd_array[1..bench.map_index as usize] {
        // SAFETY: our BTF fds, closed once (the map's is FixedMap's).
        unsafe { libc::close(*fd) };
    }
}
