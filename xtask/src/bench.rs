//! `cargo xtask bench`: inspect throughput against `llvm-objdump -d`, and peak memory.
//!
//! Not a test: wall-clock numbers depend on the machine and on whatever else runs on it. The run
//! alternates the two tools round by round (bpfgate, objdump, bpfgate, objdump, ...) so both see
//! the same background load, and judges the per-round time ratio, never one absolute time.
//!
//! Work is counted in BPF instruction slots: the bytes of every executable (SHF_EXECINSTR) section
//! divided by 8, read here with the `object` crate. That is exactly the code `llvm-objdump -d`
//! disassembles and the code bpfgate decodes, it is known for files bpfgate rejects, and it does not
//! depend on the tool being measured (the report's per-program `insn_count` would leave out
//! unreachable subprograms and every program of a file with errors). A 16-byte `ld_imm64` counts 2.
//!
//! Peak RSS comes from `wait4(2)`, the per-child form of `getrusage(RUSAGE_CHILDREN)`: the latter is
//! a maximum over every child reaped so far, so it could not tell bpfgate from llvm-objdump.
//!
//! Exit status (through main): 0 both targets met, 1 a target missed, 2 the bench could not run.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// bpfgate must be at least this many times faster than `llvm-objdump -d` (median round).
const RATIO_TARGET: f64 = 10.0;
/// Peak RSS of `bpfgate inspect` on the largest object must stay under this.
const RSS_TARGET_KIB: u64 = 64 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Directory searched recursively for *.o and *.elf; repeatable. Default: ../shared/corpus
    /// beside the checkout. tests/fixtures is always added unless --no-fixtures.
    #[arg(long)]
    corpus: Vec<PathBuf>,
    /// Leave tests/fixtures out of the file set.
    #[arg(long)]
    no_fixtures: bool,
    /// Timed rounds; each round runs bpfgate and llvm-objdump over all files, then each on the
    /// smallest file alone (their fixed cost).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Pass the file list this many times to each process, so per-file work outweighs the
    /// fixed cost of starting a process (1 = every file once, as in the throughput target).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Use this bpfgate binary instead of the release build of `cargo xtask dist`.
    #[arg(long)]
    bpfgate: Option<PathBuf>,
    /// The disassembler to compare against.
    #[arg(long, default_value = "llvm-objdump")]
    objdump: PathBuf,
    /// Skip the callgrind instruction-count comparison (run only when valgrind is installed).
    #[arg(long)]
    no_callgrind: bool,
    /// Instead: the time per instruction of synthetic programs of 1k to 1M instructions, five shapes
    /// (xtask/src/bench_scale.rs).
    #[arg(long)]
    scaling: bool,
    /// With --scaling: the largest program, in instructions.
    #[arg(long, default_value_t = 1_000_000)]
    scaling_max: usize,
    /// With --scaling: write the synthetic objects to this directory and keep them (e.g. for callgrind).
    #[arg(long)]
    scaling_keep: Option<PathBuf>,
    /// Instead: every object of 40 KB or more (default corpus: the committed `corpus/`), each alone, bpfgate
    /// with one thread and with all against `llvm-objdump -d`, then all of them in one process.
    #[arg(long)]
    large_objects: bool,
}

/// One finished child process.
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    /// user + system CPU time of the child.
    pub(crate) cpu: Duration,
    /// Of which system time: for the analysis, mostly first touches of fresh memory.
    pub(crate) system: Duration,
    /// Page faults that needed no I/O (`ru_minflt`): first touches of fresh memory, and of the file's pages.
    pub(crate) minor_faults: u64,
    maxrss_kib: u64,
}

struct Input {
    path: PathBuf,
    bytes: u64,
    insns: u64,
}

pub fn run(args: Args) -> Result<bool> {
    if args.rounds == 0 || args.repeat == 0 {
        bail!("--rounds and --repeat must be at least 1");
    }
    let root = crate::workspace_root();
    let bpfgate = match &args.bpfgate {
        Some(p) => p.clone(),
        None => crate::dist::build(&root, true)?,
    };
    let objdump_version = tool_version(&args.objdump).with_context(|| {
        format!("running {} --version (install llvm: scripts/install-deps.sh)", args.objdump.display())
    })?;
    if args.scaling || args.large_objects {
        println!("bpfgate bench");
        println!("  machine:   {}", machine());
        println!("  load avg:  {} (start)", loadavg());
        println!("  bpfgate:   {}", bpfgate.display());
        println!("  objdump:   {} ({objdump_version})", args.objdump.display());
        let mut ok = true;
        if args.scaling {
            crate::bench_scale::scaling(&bpfgate, args.rounds, args.scaling_max, args.scaling_keep.as_deref())?;
        }
        if args.large_objects {
            let dirs = if args.corpus.is_empty() { vec![root.join("corpus")] } else { args.corpus.clone() };
            ok = crate::bench_scale::large_objects(&bpfgate, &args.objdump, &dirs, args.rounds)?;
        }
        println!("  load avg:  {} (end)", loadavg());
        return Ok(ok);
    }

    let mut dirs = args.corpus.clone();
    if dirs.is_empty() {
        let shared = root.parent().unwrap_or(&root).join("shared").join("corpus");
        if shared.is_dir() {
            dirs.push(shared);
        } else {
            eprintln!("bench: note: default corpus {} not found; using fixtures only", shared.display());
        }
    }
    if !args.no_fixtures {
        dirs.push(root.join("tests").join("fixtures"));
    }
    let inputs = collect_inputs(&dirs)?;
    if inputs.is_empty() {
        bail!("no *.o or *.elf files under {}", show_list(&dirs));
    }
    let insns_once: u64 = inputs.iter().map(|i| i.insns).sum();
    let bytes_once: u64 = inputs.iter().map(|i| i.bytes).sum();
    let insns = insns_once * args.repeat as u64;
    let mut argv: Vec<&Path> = Vec::with_capacity(inputs.len() * args.repeat);
    for _ in 0..args.repeat {
        argv.extend(inputs.iter().map(|i| i.path.as_path()));
    }
    let largest = inputs.iter().max_by_key(|i| (i.bytes, i.insns)).expect("inputs is not empty");

    let inspect = |files: &[&Path]| {
        let mut c = Command::new(&bpfgate);
        c.args(["inspect", "--format", "json"]).args(files);
        c
    };
    let disassemble = |files: &[&Path]| {
        let mut c = Command::new(&args.objdump);
        c.arg("-d").args(files);
        c
    };

    println!("bpfgate bench");
    println!("  machine:   {}", machine());
    println!("  load avg:  {} (start)", loadavg());
    println!("  bpfgate:   {}", bpfgate.display());
    println!("  objdump:   {} ({objdump_version})", args.objdump.display());
    println!("  corpus:    {}", show_list(&dirs));
    println!(
        "  files:     {} ({} KiB), {insns_once} insns (executable section bytes / 8), repeat x{} = {insns} insns per process",
        inputs.len(),
        bytes_once / 1024,
        args.repeat
    );

    // Warm-up, unmeasured: fills the page cache, and checks both tools really did the work.
    validate_bpfgate(inspect(&argv), argv.len())?;
    validate_objdump(disassemble(&argv))?;

    // The smallest object alone stands for each tool's fixed cost: exec, dynamic linking, option
    // parsing. Subtracting it per round gives the throughput on the corpus itself.
    let smallest = inputs.iter().min_by_key(|i| (i.bytes, i.insns)).expect("inputs is not empty");
    let small = [smallest.path.as_path()];

    println!();
    println!(
        "  {:>5}  {:>11}  {:>11}  {:>6}    {:>11}  {:>11}",
        "round", "bpfgate ms", "objdump ms", "ratio", "bg start ms", "od start ms"
    );
    let (mut gate, mut dump, mut gate0, mut dump0) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let a = measure(inspect(&argv), &[0, 2]).context("bpfgate inspect")?;
        let b = measure(disassemble(&argv), &[0]).context("llvm-objdump -d")?;
        let a0 = measure(inspect(&small), &[0, 2]).context("bpfgate inspect (smallest)")?;
        let b0 = measure(disassemble(&small), &[0]).context("llvm-objdump -d (smallest)")?;
        println!(
            "  {round:>5}  {:>11.2}  {:>11.2}  {:>6.1}    {:>11.2}  {:>11.2}",
            ms(a.wall),
            ms(b.wall),
            ratio(b.wall, a.wall),
            ms(a0.wall),
            ms(b0.wall)
        );
        gate.push(a);
        dump.push(b);
        gate0.push(a0);
        dump0.push(b0);
    }
    let wall = |v: &[Sample]| v.iter().map(|s| ms(s.wall)).collect::<Vec<f64>>();
    let (gate_wall, dump_wall, gate0_wall, dump0_wall) = (wall(&gate), wall(&dump), wall(&gate0), wall(&dump0));
    let wall_ratios: Vec<f64> = gate.iter().zip(&dump).map(|(a, b)| ratio(b.wall, a.wall)).collect();
    let cpu_ratios: Vec<f64> = gate.iter().zip(&dump).map(|(a, b)| ratio(b.cpu, a.cpu)).collect();
    // Per round: (objdump all - objdump smallest) / (bpfgate all - bpfgate smallest). Noisier than the
    // plain ratio, as it is a quotient of differences; a negative or huge value means a noisy round.
    let marginal = |a: &[f64], a0: &[f64]| a.iter().zip(a0).map(|(x, y)| x - y).collect::<Vec<f64>>();
    let (gate_net, dump_net) = (marginal(&gate_wall, &gate0_wall), marginal(&dump_wall, &dump0_wall));
    let net_ratios: Vec<f64> = gate_net.iter().zip(&dump_net).map(|(g, d)| d / g.max(1e-6)).collect();
    let per_sec = |wall_ms: f64| insns as f64 / (wall_ms.max(1e-6) / 1000.0);
    let rate_row = |label: &str, v: &[f64]| {
        // The fastest round has the highest rate: min and max swap.
        println!(
            "  {label:<38} {:>11} {:>11} {:>11}",
            si(per_sec(median(v))),
            si(per_sec(max(v))),
            si(per_sec(min(v)))
        );
    };

    println!();
    println!("  {:<38} {:>11} {:>11} {:>11}", "", "median", "min", "max");
    row("bpfgate wall ms", &gate_wall, 2);
    row("llvm-objdump wall ms", &dump_wall, 2);
    rate_row("bpfgate insns/s", &gate_wall);
    rate_row("llvm-objdump insns/s", &dump_wall);
    row("SPEED-UP, wall (objdump / bpfgate)", &wall_ratios, 1);
    row("speed-up, cpu user+sys", &cpu_ratios, 1);
    row("bpfgate fixed cost ms (smallest file)", &gate0_wall, 2);
    row("objdump fixed cost ms (smallest file)", &dump0_wall, 2);
    rate_row("bpfgate insns/s, fixed cost removed", &gate_net);
    rate_row("objdump insns/s, fixed cost removed", &dump_net);
    row("speed-up, fixed cost removed", &net_ratios, 1);
    println!("  (smallest file: {}, {} bytes, {} insns)", smallest.path.display(), smallest.bytes, smallest.insns);

    if !args.no_callgrind {
        let cg = callgrind_ratio(inspect(&argv), disassemble(&argv)).and_then(|all| {
            Ok(match all {
                Some(all) => Some((all, callgrind_ratio(inspect(&small), disassemble(&small))?.unwrap_or((0, 0)))),
                None => None,
            })
        });
        match cg {
            Ok(Some(((a, b), (a0, b0)))) => {
                println!(
                    "  callgrind Ir, all files:     bpfgate {:>9}  llvm-objdump {:>9}  ratio {:.1}",
                    si(a as f64),
                    si(b as f64),
                    b as f64 / a as f64
                );
                println!(
                    "  callgrind Ir, smallest file: bpfgate {:>9}  llvm-objdump {:>9}",
                    si(a0 as f64),
                    si(b0 as f64)
                );
                println!(
                    "  callgrind Ir, difference:    bpfgate {:>9}  llvm-objdump {:>9}  ratio {:.1}  ({:.0} vs {:.0} Ir per BPF insn)",
                    si(a.saturating_sub(a0) as f64),
                    si(b.saturating_sub(b0) as f64),
                    b.saturating_sub(b0) as f64 / a.saturating_sub(a0).max(1) as f64,
                    a.saturating_sub(a0) as f64 / insns.max(1) as f64,
                    b.saturating_sub(b0) as f64 / insns.max(1) as f64
                );
            }
            Ok(None) => println!("  callgrind: valgrind not installed, skipped"),
            Err(e) => println!("  callgrind: failed: {e:#}"),
        }
    }

    // Memory: the largest object alone, and one process inspecting every file (repeat x1).
    let all: Vec<&Path> = inputs.iter().map(|i| i.path.as_path()).collect();
    let rss_of = |make: &dyn Fn(&[&Path]) -> Command, files: &[&Path], ok: &[i32]| -> Result<u64> {
        let mut peak = 0;
        for _ in 0..3 {
            peak = peak.max(measure(make(files), ok)?.maxrss_kib);
        }
        Ok(peak)
    };
    let largest_rss = rss_of(&inspect, &[largest.path.as_path()], &[0, 2])?;
    let all_rss = rss_of(&inspect, &all, &[0, 2])?;
    let dump_largest_rss = rss_of(&disassemble, &[largest.path.as_path()], &[0])?;
    let dump_all_rss = rss_of(&disassemble, &all, &[0])?;
    println!();
    println!(
        "  peak RSS, largest object ({}, {} KiB, {} insns): bpfgate {}, llvm-objdump {}",
        largest.path.display(),
        largest.bytes / 1024,
        largest.insns,
        mib(largest_rss),
        mib(dump_largest_rss)
    );
    println!(
        "  peak RSS, all {} files in one process:  bpfgate {}, llvm-objdump {}",
        inputs.len(),
        mib(all_rss),
        mib(dump_all_rss)
    );
    println!("  load avg:  {} (end)", loadavg());

    let speed = median(&wall_ratios);
    let speed_ok = speed >= RATIO_TARGET;
    let mem_ok = largest_rss < RSS_TARGET_KIB;
    println!();
    println!(
        "  target speed-up >= {RATIO_TARGET}x (median wall ratio): {speed:.1}x  {}",
        if speed_ok { "ok" } else { "MISSED" }
    );
    println!(
        "  target peak RSS < {} on the largest object: {}  {}",
        mib(RSS_TARGET_KIB),
        mib(largest_rss),
        if mem_ok { "ok" } else { "MISSED" }
    );
    Ok(speed_ok && mem_ok)
}

/// `cargo build --release -p bpfgate-cli`; the binary's path comes from cargo's JSON messages, so a
/// CARGO_TARGET_DIR or build.target-dir setting is honoured.
fn tool_version(tool: &Path) -> Result<String> {
    let out = Command::new(tool).arg("--version").stderr(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Debian LLVM version 14.0.6" is on the first line that names a version.
    Ok(text.lines().find(|l| l.contains("version")).unwrap_or("unknown version").trim().to_string())
}

/// Every *.o and *.elf under the directories, sorted, each file once.
fn collect_inputs(dirs: &[PathBuf]) -> Result<Vec<Input>> {
    let mut paths = Vec::new();
    for d in dirs {
        if !d.is_dir() {
            bail!("corpus directory {} does not exist", d.display());
        }
        walk(d, &mut paths)?;
    }
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let insns = code_insns(&data).unwrap_or_else(|e| {
                eprintln!("bench: note: {}: not a readable ELF ({e}); counted as 0 insns", path.display());
                0
            });
            Ok(Input { path, bytes: data.len() as u64, insns })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() && matches!(path.extension().and_then(|e| e.to_str()), Some("o" | "elf")) {
            out.push(path);
        }
    }
    Ok(())
}

/// BPF instruction slots in the executable sections: the code `llvm-objdump -d` disassembles.
fn code_insns(data: &[u8]) -> Result<u64> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(data)?;
    Ok(file.sections().filter(|s| s.kind() == object::SectionKind::Text).map(|s| s.size() / 8).sum())
}

/// Runs the command once with its output discarded; wall time from just before the spawn to the
/// reap, CPU time and peak RSS from `wait4`.
pub(crate) fn measure(mut cmd: Command, ok_codes: &[i32]) -> Result<Sample> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; status and usage are valid for writes. `child` is
        // never waited on through std, so nothing else reaps it.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let wall = start.elapsed();
    drop(child);
    if !libc::WIFEXITED(status) {
        bail!("{:?} was killed by signal {}", cmd.get_program(), libc::WTERMSIG(status));
    }
    let code = libc::WEXITSTATUS(status);
    if !ok_codes.contains(&code) {
        bail!("{:?} exited with status {code}", cmd.get_program());
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        system: tv(usage.ru_stime),
        minor_faults: usage.ru_minflt as u64,
        maxrss_kib: usage.ru_maxrss as u64,
    })
}

/// bpfgate must print one JSON report per file argument (JSON Lines), and exit 0, or 2 when some
/// report has errors (the cilium corpus holds deliberately invalid objects).
fn validate_bpfgate(mut cmd: Command, files: usize) -> Result<()> {
    let out = cmd.stderr(Stdio::null()).output().context("running bpfgate inspect")?;
    if !matches!(out.status.code(), Some(0 | 2)) {
        bail!("bpfgate inspect failed ({})", out.status);
    }
    let lines = if files == 1 {
        usize::from(!out.stdout.is_empty())
    } else {
        out.stdout.lines().filter(|l| l.as_ref().is_ok_and(|l| l.starts_with('{'))).count()
    };
    if lines != files {
        bail!("bpfgate inspect printed {lines} reports for {files} files");
    }
    Ok(())
}

fn validate_objdump(mut cmd: Command) -> Result<()> {
    let out = cmd.output().context("running llvm-objdump -d")?;
    if !out.status.success() {
        bail!("llvm-objdump -d failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    if !out.stdout.windows(14).any(|w| w == b"Disassembly of") {
        bail!("llvm-objdump -d printed no disassembly (is the BPF target built in?)");
    }
    Ok(())
}

/// Instructions executed (callgrind's Ir) by each command, once: a count that does not move with
/// machine load. None when valgrind is missing.
fn callgrind_ratio(a: Command, b: Command) -> Result<Option<(u64, u64)>> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Ok(None);
    }
    Ok(Some((callgrind_ir(a, &[0, 2])?, callgrind_ir(b, &[0])?)))
}

fn callgrind_ir(cmd: Command, ok_codes: &[i32]) -> Result<u64> {
    let log = std::env::temp_dir().join(format!("bpfgate-bench-callgrind-{}.log", std::process::id()));
    let mut vg = Command::new("valgrind");
    vg.arg("--tool=callgrind")
        .arg("--callgrind-out-file=/dev/null")
        .arg(format!("--log-file={}", log.display()))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = vg.status().context("running valgrind")?;
    let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()));
    let _ = std::fs::remove_file(&log);
    let text = text?;
    if !status.code().is_some_and(|c| ok_codes.contains(&c)) {
        bail!("valgrind {:?} exited with {status}", cmd.get_program());
    }
    // "==123== Collected : 4567890"
    text.lines()
        .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim().to_string()))
        .and_then(|n| n.parse().ok())
        .context("no `Collected :` line in callgrind's log")
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cpus} CPUs, Linux {}", kernel.trim())
}

fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn row(label: &str, v: &[f64], prec: usize) {
    println!("  {label:<38} {:>11.prec$} {:>11.prec$} {:>11.prec$}", median(v), min(v), max(v));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(1e-9)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2} G", x / 1e9),
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.2} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn show_list(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}
