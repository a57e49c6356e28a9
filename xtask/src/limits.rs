//! `cargo xtask limits`: generates hostile inputs (`bpfgate_test_support::hostile`) into `target/limits/` and
//! measures `bpfgate inspect` and `bpfgate policy lint` on each: result, wall and CPU time, peak RSS, printed as
//! the Markdown table of docs/limits.md.
//!
//! Each run is one child process under a wall-clock timeout and an address-space limit, so an input that
//! still explodes is reported as such instead of taking the machine down. CPU time and peak RSS come from
//! `wait4(2)`. Exit status (through main): 0 every run ended in a report or an error, 1 some run was killed.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::bench::machine;

#[derive(clap::Args)]
pub struct Args {
    /// Use this bpfgate binary instead of the release build of `cargo xtask dist`.
    #[arg(long)]
    bpfgate: Option<PathBuf>,
    /// Only the cases whose name contains this; repeatable.
    #[arg(long)]
    only: Vec<String>,
    /// Kill a run after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Address-space limit of each run, in MiB.
    #[arg(long, default_value_t = 4096)]
    memory: u64,
}

enum Input {
    /// An object for `inspect --format json`.
    Elf(Vec<u8>),
    /// An object for the text report, which also disassembles each capability's first instruction.
    ElfText(Vec<u8>),
    Yaml(String),
}

struct Case {
    name: &'static str,
    what: String,
    make: Box<dyn Fn() -> Input>,
}

fn elf(name: &'static str, what: impl Into<String>, f: impl Fn() -> Vec<u8> + 'static) -> Case {
    Case { name, what: what.into(), make: Box::new(move || Input::Elf(f())) }
}

fn elf_text(name: &'static str, what: impl Into<String>, f: impl Fn() -> Vec<u8> + 'static) -> Case {
    Case { name, what: what.into(), make: Box::new(move || Input::ElfText(f())) }
}

fn yaml(name: &'static str, what: impl Into<String>, f: impl Fn() -> String + 'static) -> Case {
    Case { name, what: what.into(), make: Box::new(move || Input::Yaml(f())) }
}

fn cases() -> Vec<Case> {
    use bpfgate_test_support::hostile::*;
    const M: usize = 1_000_000;
    vec![
        elf("sections", "70,000 code sections, one program each (extended numbering)", || many_sections(70_000)),
        elf_text("sections-text", "70,000 code sections, each program with 3 capabilities, text report", || {
            many_sections_printk(70_000)
        }),
        elf("symbols", "1,000,000 symbols", || many_symbols(M)),
        elf("programs", "1,000,000 programs in one section", || many_programs(M)),
        elf("programs-131072", "131,072 programs in one section", || many_programs(1 << 17)),
        elf("programs-long-names", "131,072 programs, 512-byte program and section names", || {
            programs_long_names(1 << 17)
        }),
        elf("insns-1m", "one program of 1,000,000 instructions", || long_program(M)),
        elf("insns-1m+1", "one program of 1,000,001 instructions", || long_program(M + 1)),
        elf("chain-4095", "call chain 4,095 deep (4,096 functions)", || call_chain(4095, false)),
        elf("chain-4095-ptr", "call chain 4,095 deep returning a pointer", || call_chain(4095, true)),
        elf("fan-out-4097", "program calling 4,097 subprograms", || fan_out(4097)),
        elf("cycle-4096", "call cycle of 4,096 functions", || call_cycle(4096)),
        elf("relocs-one-insn", "1,000,000 relocations on one instruction", || relocs_one_insn(M)),
        elf("relocs-out-of-range", "1,000,000 relocations past the section", || relocs_out_of_range(M)),
        elf("relocs-bad-symbol", "1,000,000 relocations against missing symbols", || relocs_bad_symbol(M)),
        elf("kconfig-storm", "500,000 maps, 499,000 relocations against a CONFIG_ extern", || {
            kconfig_storm(500_000, 499_000)
        }),
        elf("shared-subprog", "1,000 programs calling one 1,000,000-instruction subprogram", || {
            shared_subprogram(1000, M - 2)
        }),
        elf("maps-1151", "1,151 maps, 10,000 programs each listing 1,024 of them", || many_maps(1151, 10_000)),
        elf("maps-100k", "100,000 maps, 10,000 programs each touching 99,873 of them", || many_maps(100_000, 10_000)),
        elf("extern-name", "500,000 relocations against one 64 KiB extern name", || {
            long_extern_name(500_000, 64 << 10)
        }),
        elf("extern-name-512", "1,000,000 relocations against one 512-byte extern name", || long_extern_name(M, 512)),
        elf("func-names", "1,000,000 functions sharing one 1 MiB name", || long_func_names(M, 1 << 20, true)),
        elf("func-names-unterminated", "1,000,000 functions named by a 1 MiB unterminated run", || {
            long_func_names(M, 1 << 20, false)
        }),
        elf("section-names", "65,000 code sections sharing one 1 MiB name", || long_section_names(65_000, 1 << 20)),
        elf("stack-slots-64", "64 stack slots live across 1,000,000 blocks", || stack_slots(64, M - 70)),
        elf("stack-slots-100k", "100,000 stack slots live across 600,000 blocks", || stack_slots(100_000, 600_000)),
        elf("stack-slots-loop", "64 stack slots live across 1,000,000 blocks in one loop region", || {
            stack_slots_looped(64, M - 120)
        }),
        elf("slow-fixpoint", "loop moving a pointer along 5,000 stack slots", || slow_fixpoint(5000)),
        elf("fixpoint-frame", "1,000,000-instruction loop moving a pointer along the frame's 64 slots", || {
            slow_fixpoint_in_frame(M - 136, 8)
        }),
        yaml("yaml-deep", "policy nested 100,000 levels", || yaml_deep(100_000)),
        yaml("yaml-laughs", "billion laughs, 9 levels of 10 aliases", || yaml_laughs(9)),
        yaml("yaml-rules", "100,000 rules", || yaml_many_rules(100_000)),
        yaml("yaml-anchors", "100,000 anchors, 100,000 aliases of the first", || yaml_many_anchors(100_000, 100_000)),
        yaml("yaml-nested-anchors", "60 nested anchors around 190,000 scalars", || yaml_nested_anchors(60, 190_000)),
    ]
}

/// Writes the object and the `inspect` command that reads it: (path, size, command).
fn object_run(bpfgate: &Path, dir: &Path, name: &str, bytes: &[u8], format: &str) -> Result<(PathBuf, usize, Command)> {
    let path = dir.join(format!("{name}.bpf.o"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    let mut c = Command::new(bpfgate);
    c.args(["inspect", "--format", format]).arg(&path);
    Ok((path, bytes.len(), c))
}

/// What one run printed and how it ended.
struct Outcome {
    status: String,
    wall: Duration,
    /// User and system CPU time.
    cpu: Duration,
    maxrss_kib: u64,
    programs: usize,
    errors: usize,
    first_error: String,
    /// The first 64 KiB of the output.
    head: Vec<u8>,
}

pub fn run(args: Args) -> Result<bool> {
    let root = crate::workspace_root();
    let bpfgate = match &args.bpfgate {
        Some(p) => p.clone(),
        None => crate::dist::build(&root, true)?,
    };
    let dir = root.join("target").join("limits");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let timeout = Duration::from_secs(args.timeout);
    println!("machine: {}", machine());
    println!("limits per run: {} s, {} MiB address space\n", args.timeout, args.memory);
    println!("| input | size | result | wall | CPU | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let mut all_ok = true;
    for case in cases() {
        if !args.only.is_empty() && !args.only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let (path, size, mut cmd) = match (case.make)() {
            Input::Elf(bytes) => object_run(&bpfgate, &dir, case.name, &bytes, "json")?,
            Input::ElfText(bytes) => object_run(&bpfgate, &dir, case.name, &bytes, "text")?,
            Input::Yaml(text) => {
                let path = dir.join(format!("{}.yaml", case.name));
                std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
                let mut c = Command::new(&bpfgate);
                c.args(["policy", "lint", "--format", "json"]).arg(&path);
                (path, text.len(), c)
            }
        };
        let mut out = measure(&mut cmd, &dir.join("output"), timeout, args.memory << 20)?;
        if path.extension().is_some_and(|e| e == "yaml") {
            // `policy lint --format json` reports its errors on stdout.
            let v: serde_json::Value = serde_json::from_slice(&out.head).unwrap_or_default();
            let errors = v["errors"].as_array().cloned().unwrap_or_default();
            out.errors = errors.len();
            out.first_error = errors.first().and_then(|e| e["message"].as_str()).unwrap_or("").to_string();
        }
        // A bounded run ends in a report or a clear error (exit 0 or 2); anything else is a finding.
        let bounded = matches!(out.status.as_str(), "exit 0" | "exit 2");
        all_ok &= bounded;
        let yaml = path.extension().is_some_and(|e| e == "yaml");
        let result = match (out.programs, out.errors) {
            (_, 0) if yaml => "parsed".to_string(),
            (_, e) if yaml => format!("{e} errors: {}", out.first_error.replace('|', "\\|")),
            (p, 0) => format!("{p} programs"),
            (p, e) => {
                let shown = out.first_error.replace(&format!("{}: ", path.display()), "").replace('|', "\\|");
                format!("{p} programs, {e} errors: {shown}")
            }
        };
        let result = if bounded { result } else { format!("**{}** ({result})", out.status) };
        println!(
            "| {} (`{}`) | {} | {} | {:.2} s | {:.2} s | {} |",
            case.what,
            case.name,
            human_bytes(size),
            result,
            out.wall.as_secs_f64(),
            out.cpu.as_secs_f64(),
            mib(out.maxrss_kib)
        );
    }
    Ok(all_ok)
}

/// Runs `cmd` under the limits, its output going to `out`; counts the programs in its JSON report and the error
/// lines it prints.
fn measure(cmd: &mut Command, out: &Path, timeout: Duration, address_space: u64) -> Result<Outcome> {
    // A file, not a pipe: reading a pipe here would time this process, not the child.
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: address_space, rlim_max: address_space };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    // The report can be far larger than memory should hold: stream it, counting programs.
    let mut stderr = child.stderr.take().context("child stderr")?;
    let errors = std::thread::spawn(move || {
        let (mut lines, mut first, mut buf) = (0usize, Vec::new(), vec![0u8; 1 << 16]);
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
            if first.len() < 4096 {
                first.extend_from_slice(&buf[..n.min(4096)]);
            }
        }
        let text = String::from_utf8_lossy(&first).into_owned();
        let line = text.lines().next().unwrap_or("").trim_start_matches("bpfgate: ").to_string();
        (lines, line)
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: pid is our own unreaped child, never waited on through std; status and usage are writable.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).context("wait4");
            }
        }
        if !timed_out && start.elapsed() > timeout {
            timed_out = true;
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = start.elapsed();
    drop(child);
    // A JSON report has a `prog_type` per program, a text report a `  program NAME` line.
    let programs = Command::new("grep")
        .args(["-c", "-E", "\"prog_type\"|^  program "])
        .arg(out)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0);
    let mut head = Vec::new();
    std::fs::File::open(out).and_then(|f| f.take(1 << 16).read_to_end(&mut head)).context("reading the output")?;
    std::fs::remove_file(out).with_context(|| format!("removing {}", out.display()))?;
    let (errors, first_error) = errors.join().unwrap_or_default();
    let status = if timed_out {
        format!("killed after the {} s timeout", timeout.as_secs())
    } else if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else {
        // An allocation past RLIMIT_AS aborts the process.
        format!("killed by signal {} (memory limit?)", libc::WTERMSIG(status))
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    Ok(Outcome { status, wall, cpu, maxrss_kib: usage.ru_maxrss as u64, programs, errors, first_error, head })
}

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.0} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}
