//! `cargo xtask bench --scaling` and `--large-objects`: the costs of large inputs (issue 19).
//!
//! - **Scaling**: synthetic programs of 1k to 1M instructions in five shapes (straight-line code, branches,
//!   bounded loops, subprogram calls, map lookups), built with bpfgate-test-support's instruction builders and
//!   ELF writer. Each is inspected by one process given the file `max(1, 1M / n)` times, so every row does about
//!   a million instructions of work and the process start-up is a small part of it; the time per instruction
//!   must stay flat as `n` grows. The best CPU time (user + system) of `--rounds` runs is taken (the machine is
//!   shared: wall time moves with its load far more), each round going over every shape and size in turn.
//! - **Large objects**: every corpus object of 40 KB or more, each inspected alone with one thread and with
//!   all, and disassembled by `llvm-objdump -d`, round by round (the tools alternate, so they see the same
//!   background load); per file the median of each and the ratios. Then all those files in one process, one
//!   thread against all (the speed-up of running files and programs on every core).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::bench::Sample;
use bpfgate_test_support::elf::{Elf, STT_FUNC};
use bpfgate_test_support::insn::{
    add_imm, call_helper, call_local, exit, jeq_imm, jmp_imm, ld_map_fd, ldx_dw, mov, mov_imm, op, stx_dw, Insn,
};

/// The files a large-objects run measures: at least this many bytes.
pub const LARGE_BYTES: u64 = 40 * 1000;

/// Instructions per subprogram in the `calls` shape: 1M instructions stay under the analysis' 4,096 functions.
const FUNC_LEN: usize = 256;

/// The shapes of synthetic programs, by name.
pub const SHAPES: [&str; 5] = ["straight", "branches", "loops", "calls", "maps"];

/// The body a shape repeats: straight-line arithmetic and stack traffic; or with a conditional branch; or a
/// loop of it with a bounded back edge; or a map lookup (raw fd) with a null check and a store through the value.
fn body(shape: &str) -> Vec<Insn> {
    let straight = [mov_imm(1, 5), add_imm(1, 3), stx_dw(10, -8, 1), ldx_dw(2, 10, -8), add_imm(0, 1)];
    match shape {
        "straight" | "calls" => straight.to_vec(),
        "branches" => {
            let mut b = straight.to_vec();
            b.extend([jeq_imm(0, 7, 1), mov_imm(2, 3)]);
            b
        }
        // r3 = 0; head: <straight>; r3 += 1; if r3 < 4 goto head
        "loops" => {
            let mut b = vec![mov_imm(3, 0)];
            b.extend(straight);
            b.push(add_imm(3, 1));
            let back = -(straight.len() as i16 + 2);
            b.push(jmp_imm(op::JLT, 3, 4, back));
            b
        }
        "maps" => {
            let [ld, hi] = ld_map_fd(1, 5);
            vec![
                ld,
                hi,
                mov_imm(3, 0),
                stx_dw(10, -8, 3),
                mov(2, 10),
                add_imm(2, -8),
                call_helper(1),
                jeq_imm(0, 0, 1),
                stx_dw(0, 0, 3),
            ]
        }
        _ => unreachable!("unknown shape {shape}"),
    }
}

/// One program of about `n` instructions (n >= 1,000) of the shape, as an ELF object, and its instructions.
pub fn synthetic(shape: &str, n: usize) -> (Vec<u8>, usize) {
    let b = body(shape);
    if shape == "calls" {
        // main: a call to each subprogram, then r0 = 0; exit. Each subprogram: bodies, r0 = 0; exit.
        let funcs = (n - 2) / (FUNC_LEN + 1);
        let main_len = funcs + 2;
        let mut code = Vec::with_capacity(n);
        for k in 0..funcs {
            let target = main_len + k * FUNC_LEN;
            code.push(call_local((target - k - 1) as i32));
        }
        code.extend([mov_imm(0, 0), exit()]);
        for _ in 0..funcs {
            let start = code.len();
            while code.len() + b.len() + 2 <= start + FUNC_LEN {
                code.extend(&b);
            }
            while code.len() + 2 < start + FUNC_LEN {
                code.push(mov_imm(2, 0));
            }
            code.extend([mov_imm(0, 0), exit()]);
        }
        let (mut e, s) = Elf::program("kprobe/calls", "calls", &code, main_len);
        for k in 0..funcs {
            let f = e.str(format!("f{k}").as_bytes());
            e.symbol_at(f, STT_FUNC, s, (8 * (main_len + k * FUNC_LEN)) as u64, (8 * FUNC_LEN) as u64);
        }
        return (e.finish(), code.len());
    }
    let mut code = Vec::with_capacity(n);
    code.push(mov_imm(0, 0));
    while code.len() + b.len() + 2 <= n {
        code.extend(&b);
    }
    while code.len() + 2 < n {
        code.push(mov_imm(2, 0));
    }
    code.extend([mov_imm(0, 0), exit()]);
    let len = code.len();
    (Elf::program(&format!("kprobe/{shape}"), shape, &code, len).0.finish(), len)
}

/// Runs `cmd` with its output discarded; its times, faults and peak memory (from `wait4`). Exit status 0
/// (or 2: a report with errors) expected.
fn sample(cmd: Command) -> Result<Sample> {
    crate::bench::measure(cmd, &[0, 2])
}

fn inspect(bpfgate: &Path, jobs: usize, files: &[&Path]) -> Command {
    let mut c = Command::new(bpfgate);
    c.args(["inspect", "--format", "json", "-j", &jobs.to_string()]).args(files);
    c
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The scaling table: ns per instruction by shape and size.
pub fn scaling(bpfgate: &Path, rounds: usize, max: usize, keep: Option<&Path>) -> Result<()> {
    let dir = match keep {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("bpfgate-bench-scale-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let sizes: Vec<usize> =
        [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000].into_iter().filter(|&n| n <= max).collect();
    println!(
        "scaling: CPU ns per instruction (best of {rounds}; each run, -j1, inspects max(1, 1M / n) copies of the file); \
         below each shape, that run's system ns per instruction and minor page faults per 1,000 instructions"
    );
    print!("  {:<10}", "shape");
    for n in &sizes {
        print!(" {:>9}", si(*n));
    }
    println!("   max/min");
    let result = (|| -> Result<()> {
        // Every file first, then the rounds over all of them, so that a slow minute of the shared machine
        // lands on one round of every size rather than on every round of one.
        let mut cells = Vec::new();
        for shape in SHAPES {
            for &n in &sizes {
                let path = dir.join(format!("{shape}-{n}.o"));
                let (elf, insns) = synthetic(shape, n);
                std::fs::write(&path, elf)?;
                let copies = (1_000_000 / n).max(1);
                cells.push((path, insns * copies, copies, None::<Sample>));
            }
        }
        for _ in 0..rounds {
            for (path, _, copies, best) in &mut cells {
                let files: Vec<&Path> = std::iter::repeat_n(path.as_path(), *copies).collect();
                // CPU time (user + system): on a shared machine it moves far less than wall time.
                let s = sample(inspect(bpfgate, 1, &files))?;
                if best.as_ref().is_none_or(|b| s.cpu < b.cpu) {
                    *best = Some(s);
                }
            }
        }
        for (shape, row) in SHAPES.iter().zip(cells.chunks(sizes.len())) {
            // Per size: CPU, system and minor faults of the run with the least CPU, per instruction.
            let mut per_insn = Vec::new();
            for (_, insns, _, best) in row {
                let best = best.as_ref().context("no rounds")?;
                let per = |d: Duration| d.as_secs_f64() * 1e9 / *insns as f64;
                per_insn.push((per(best.cpu), per(best.system), best.minor_faults as f64 * 1000.0 / *insns as f64));
            }
            print!("  {shape:<10}");
            per_insn.iter().for_each(|r| print!(" {:>9.1}", r.0));
            let lo = per_insn.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
            let hi = per_insn.iter().map(|r| r.0).fold(0.0, f64::max);
            println!("   {:>7.2}", hi / lo);
            // Where a rise comes from: system time is mostly the first touch of fresh memory (a page fault per
            // 4 KiB), which a run over many copies of a small file does once and reuses.
            print!("  {:<10}", "  system");
            per_insn.iter().for_each(|r| print!(" {:>9.1}", r.1));
            println!();
            print!("  {:<10}", "  faults/k");
            per_insn.iter().for_each(|r| print!(" {:>9.1}", r.2));
            println!();
        }
        Ok(())
    })();
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The per-file table over the corpus' large objects, and the many-files run. Returns whether every file met the
/// 10x target with all threads.
pub fn large_objects(bpfgate: &Path, objdump: &Path, dirs: &[PathBuf], rounds: usize) -> Result<bool> {
    let mut files = Vec::new();
    for d in dirs {
        collect(d, &mut files)?;
    }
    files.retain(|(_, bytes)| *bytes >= LARGE_BYTES);
    files.sort();
    if files.is_empty() {
        bail!("no object of {LARGE_BYTES} bytes or more under the corpus");
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!(
        "large objects: {} files of {LARGE_BYTES} bytes or more; median of {rounds} rounds (bpfgate -j1, bpfgate -j{threads}, llvm-objdump -d alternating)",
        files.len()
    );
    println!(
        "  {:<52} {:>5} {:>7} {:>7} {:>8} {:>6} {:>6} | {:>6} {:>6} {:>8} {:>6}",
        "file (wall ms; CPU ms)",
        "KiB",
        "-j1",
        &format!("-j{threads}"),
        "objdump",
        "x -j1",
        &format!("x -j{threads}"),
        "-j1",
        &format!("-j{threads}"),
        "objdump",
        "x cpu"
    );
    let mut all_ok = true;
    let (mut worst_wall, mut worst_cpu) = (f64::INFINITY, f64::INFINITY);
    for (path, bytes) in &files {
        let mut v: [Vec<f64>; 6] = Default::default();
        for _ in 0..rounds {
            let mut c = Command::new(objdump);
            c.arg("-d").arg(path);
            for (k, cmd) in
                [inspect(bpfgate, 1, &[path]), inspect(bpfgate, threads, &[path]), c].into_iter().enumerate()
            {
                let Sample { wall, cpu, .. } = sample(cmd)?;
                v[k].push(ms(wall));
                v[k + 3].push(ms(cpu));
            }
        }
        let [one, all, od, one_cpu, all_cpu, od_cpu] = v.map(|mut x| median(&mut x));
        let ratio = od / all;
        let cpu_ratio = od_cpu / one_cpu.max(0.01);
        worst_wall = worst_wall.min(ratio);
        worst_cpu = worst_cpu.min(cpu_ratio);
        all_ok &= ratio >= 10.0;
        let name = path.strip_prefix(crate::workspace_root()).unwrap_or(path).display().to_string();
        println!(
            "  {:<52} {:>5} {:>7.2} {:>7.2} {:>8.2} {:>6.1} {:>6.1} | {:>6.2} {:>6.2} {:>8.2} {:>6.1}",
            name,
            bytes / 1024,
            one,
            all,
            od,
            od / one,
            ratio,
            one_cpu,
            all_cpu,
            od_cpu,
            cpu_ratio
        );
    }
    println!(
        "  worst ratio: wall {worst_wall:.1}x with -j{threads}; CPU {worst_cpu:.1}x with -j1 (target >= 10 on every file, wall)"
    );
    // Many files in one process: one thread against all.
    let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    let (mut one, mut all, mut od) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        one.push(ms(sample(inspect(bpfgate, 1, &paths))?.wall));
        all.push(ms(sample(inspect(bpfgate, threads, &paths))?.wall));
        let mut c = Command::new(objdump);
        c.arg("-d").args(&paths);
        od.push(ms(sample(c)?.wall));
    }
    let (one, all, od) = (median(&mut one), median(&mut all), median(&mut od));
    println!(
        "  all {} files in one process (wall): -j1 {one:.1} ms, -j{threads} {all:.1} ms (speed-up {:.2}), llvm-objdump {od:.1} ms (x{:.1} with -j{threads})",
        paths.len(),
        one / all,
        od / all
    );
    Ok(all_ok)
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if kind.is_file() && matches!(path.extension().and_then(|e| e.to_str()), Some("o" | "elf")) {
            out.push((path, entry.metadata()?.len()));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn si(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape gives an object of about the instructions asked for.
    #[test]
    fn synthetic_programs_have_the_size_asked_for() {
        for shape in SHAPES {
            for n in [1_000, 4_096] {
                let (elf, insns) = synthetic(shape, n);
                assert!(insns <= n && insns + FUNC_LEN + 1 >= n, "{shape} {n}: {insns} insns");
                assert!(elf.len() > 8 * insns, "{shape} {n}: {} bytes", elf.len());
            }
        }
    }
}
