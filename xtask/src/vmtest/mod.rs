//! `cargo xtask vmtest`: the live-kernel test suite, run inside qemu VMs.
//!
//! The host kernel cannot run BPF LSM programs, so live tests run in VMs booting Debian's
//! cloud kernels (BPF LSM on by default) from an initramfs that holds busybox, the live test
//! binaries, bpftrace, bpftool and their shared libraries. The guest's init runs every test
//! binary with BPFGATE_LIVE=1 and prints markers the host parses for the verdict.

pub mod gate_bench;
mod initramfs;
mod kernel;
mod qemu;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use initramfs::Initramfs;
use qemu::{Accel, Boot, Outcome};

/// Test targets that hold live tests, as (package, test target). Each is built with
/// `cargo test --no-run` and run in every VM; add new ones here.
const LIVE_TESTS: &[(&str, &str)] = &[("bpfgate-gate", "live")];

/// Binaries of the workspace the live tests run in the guest: (package, binary, guest path).
const LIVE_BINS: &[(&str, &str, &str)] = &[("bpfgate-cli", "bpfgate", "/usr/bin/bpfgate")];

/// Host programs put into the guest (with their libraries) for live tests to use; missing
/// ones are skipped with a warning. (guest path, host path)
const GUEST_TOOLS: &[(&str, &str)] =
    &[("/usr/bin/bpftrace", "/usr/bin/bpftrace"), ("/usr/sbin/bpftool", "/usr/sbin/bpftool")];

/// Debian packages whose executables and scripts (what `dpkg -L` lists under bin and sbin directories) go into
/// the guest at their own paths, ELF files with their shared libraries, for the live tests of real clients
/// (tests/live/clients.rs): the libbpf-tools suite, bpftrace's .bt tools, iproute2's ip and tc. A package not
/// installed on the host is skipped with a warning (scripts/install-deps.sh installs them).
const GUEST_PACKAGES: &[&str] = &["libbpf-tools", "bpftrace", "iproute2"];

const BUSYBOX: &str = "/bin/busybox";

#[derive(clap::Args)]
pub struct Args {
    /// Kernels to test: 6.1 (bookworm's own), 6.12, sid, all (the three), or a path to a bzImage.
    /// Repeatable or comma-separated.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    kernel: Vec<String>,
    /// Per-VM time limit in seconds (boot plus tests); qemu is killed when it runs out.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Accelerator: auto tries KVM and falls back to TCG when KVM fails.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Guest memory (qemu -m).
    #[arg(long, default_value = "2G")]
    memory: String,
    /// Guest CPUs. One by default: the cores are shared, and TCG runs each vCPU on its own
    /// host thread.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Kernels booted at the same time (each guest's vCPU is a host thread: on 2 cores, 2 one-CPU guests).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// A shell command to run in the guest before the tests (e.g. "bpftool prog list");
    /// a non-zero status fails the run. For poking at the guest while writing live tests.
    #[arg(long)]
    exec: Option<String>,
    /// Run only the live tests whose names contain this string (passed to each test binary as
    /// its libtest filter).
    #[arg(long)]
    filter: Option<String>,
    /// Put a host executable into the guest, as GUEST_PATH=HOST_PATH (its shared libraries too), e.g. an
    /// experiment's loader for `--exec`; not under /tmp, which the guest mounts a tmpfs over. Repeatable.
    #[arg(long = "guest-file", value_name = "GUEST=HOST")]
    guest_files: Vec<String>,
    /// Seconds of load stream for the soak test (`soak::gate_soak_returns_to_baseline`, default 60), e.g.
    /// `--filter soak --soak-secs 600` for a long soak.
    #[arg(long)]
    soak_secs: Option<u64>,
    /// The seed of the differential test's random programs (`differential::gate_matches_kernel_view_on_random_programs`,
    /// BPFGATE_DIFF_SEED), to replay a run: e.g. `--filter gate_matches --diff-seed 0x1234`.
    #[arg(long)]
    diff_seed: Option<String>,
    /// How many random programs the differential test judges (BPFGATE_DIFF_PROGRAMS, default 3000).
    #[arg(long)]
    diff_programs: Option<u64>,
    /// Also echo the kernel's boot messages, not only the guest's test output.
    #[arg(long, short)]
    verbose: bool,
    /// Extra executables for the guest, as (guest path, host path), and whether to leave the live tests out:
    /// set by `cargo xtask bench-gate`, which runs its benchmark through `exec`.
    #[arg(skip)]
    guest_bins: Vec<(String, PathBuf)>,
    #[arg(skip)]
    no_tests: bool,
}

struct VmReport {
    label: String,
    origin: String,
    accel: Option<Accel>,
    passed: bool,
    detail: String,
    tests: Vec<String>,
    secs: f64,
}

pub fn run(args: Args) -> Result<bool> {
    let started = Instant::now();
    let root = crate::workspace_root();
    let cache =
        std::env::var_os("BPFGATE_VMTEST_CACHE").map(PathBuf::from).unwrap_or_else(|| root.join(".vmtest-cache"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    let work = target.join("vmtest");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::create_dir_all(cache.join("kernels")).with_context(|| format!("creating {}", cache.display()))?;

    qemu::catch_interrupts();
    remove_stale_initramfs(&work);

    // Cheap checks first, so a missing tool fails in a second, not after a build.
    let qemu = qemu::find_qemu()?;
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} not found: install busybox-static (scripts/install-deps.sh)");
    }

    let t = Instant::now();
    let mut kernels = Vec::new();
    for name in wanted_kernels(&args.kernel)? {
        kernels.push(match name {
            Wanted::Spec(spec) => kernel::fetch(spec, &cache)?,
            Wanted::File(path) => kernel::local(&path)?,
        });
    }
    kernel::prune(&cache);
    eprintln!("vmtest: kernels ready in {:.1}s", t.elapsed().as_secs_f64());

    check_interrupted()?;
    let t = Instant::now();
    let (tests, live_bins) = if args.no_tests { Default::default() } else { build_live_tests(&root)? };
    check_interrupted()?;
    eprintln!("vmtest: {} live test binaries built in {:.1}s", tests.len(), t.elapsed().as_secs_f64());

    let t = Instant::now();
    // Per process, so concurrent runs in one checkout don't overwrite each other's guest.
    let initrd = TempFile(work.join(format!("initramfs-{}.cpio", std::process::id())));
    // Only the live tests use the modules: a benchmark's guest stays as it was.
    let modules: Vec<&Path> =
        if args.no_tests { Vec::new() } else { kernels.iter().filter_map(|k| k.modules.as_deref()).collect() };
    let mut guest_bins = args.guest_bins.clone();
    for spec in &args.guest_files {
        let Some((guest, host)) = spec.split_once('=').filter(|(g, h)| g.starts_with('/') && !h.is_empty()) else {
            bail!("--guest-file {spec:?}: expected GUEST_PATH=HOST_PATH with an absolute guest path");
        };
        if !Path::new(host).is_file() {
            bail!("--guest-file {spec:?}: {host} is not a file");
        }
        guest_bins.push((guest.to_owned(), PathBuf::from(host)));
    }
    guest_bins.extend(live_bins.into_iter().map(|b| (b.name, b.path)));
    if let Some(seed) = &args.diff_seed {
        bpfgate_test_support::random::parse_number(seed)
            .with_context(|| format!("--diff-seed {seed:?}: not a number"))?;
    }
    let env: Vec<(&str, String)> = [
        args.soak_secs.map(|s| ("BPFGATE_SOAK_SECS", s.to_string())),
        args.diff_seed.clone().map(|s| ("BPFGATE_DIFF_SEED", s)),
        args.diff_programs.map(|n| ("BPFGATE_DIFF_PROGRAMS", n.to_string())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let size =
        build_initramfs(&tests, &guest_bins, &modules, args.exec.as_deref(), args.filter.as_deref(), &env, &initrd.0)?;
    eprintln!("vmtest: initramfs {} ({} MiB) in {:.1}s", initrd.0.display(), size >> 20, t.elapsed().as_secs_f64());

    // Once KVM has failed for one kernel, the others go straight to TCG: here /dev/kvm can open and still not
    // run a guest, which costs up to a minute per boot to find out.
    let kvm_ok = std::sync::atomic::AtomicBool::new(match args.accel.as_str() {
        "tcg" => false,
        "kvm" => true,
        _ => qemu::kvm_usable(),
    });
    // One guest per kernel, `--parallel` at a time: each TCG vCPU is a host thread, so two one-CPU guests use two
    // cores. Their console lines carry the kernel's label.
    let parallel = args.parallel.clamp(1, kernels.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(kernel) = kernels.get(i) else { break };
                let report = boot_kernel(&args, &qemu, &initrd.0, &work, kernel, &kvm_ok);
                done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, report));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    let mut reports = Vec::new();
    for (_, report) in done {
        reports.push(report?);
    }

    println!("\nvmtest summary ({:.1}s total):", started.elapsed().as_secs_f64());
    let mut all_passed = true;
    for r in &reports {
        all_passed &= r.passed;
        println!(
            "  {} {} [{}] {} in {:.1}s: {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.label,
            r.accel.map_or("-", Accel::name),
            r.origin,
            r.secs,
            r.detail
        );
        for test in &r.tests {
            println!("      {test}");
        }
    }
    Ok(all_passed)
}

/// Boots one kernel with the live tests (KVM first while `kvm_ok`, TCG when KVM fails under `--accel auto`, which
/// clears `kvm_ok` for the kernels booted after it).
fn boot_kernel(
    args: &Args,
    qemu: &Path,
    initrd: &Path,
    work: &Path,
    kernel: &kernel::Kernel,
    kvm_ok: &std::sync::atomic::AtomicBool,
) -> Result<VmReport> {
    let t = Instant::now();
    let log = work.join(format!("{}.log", sanitize(&kernel.label)));
    let mut report = VmReport {
        label: kernel.label.clone(),
        origin: kernel.origin.clone(),
        accel: None,
        passed: false,
        detail: String::new(),
        tests: Vec::new(),
        secs: 0.0,
    };
    loop {
        let accel = if kvm_ok.load(std::sync::atomic::Ordering::Relaxed) { Accel::Kvm } else { Accel::Tcg };
        eprintln!(
            "vmtest: booting {} ({}) under {}; console log in {}",
            kernel.label,
            kernel.origin,
            accel.name(),
            log.display()
        );
        let boot = Boot {
            qemu,
            kernel: &kernel.vmlinuz,
            initrd,
            accel,
            memory: &args.memory,
            cpus: args.cpus,
            // The live tests need it (a load's scan preempted by another's); the benchmark keeps the default.
            preempt_full: !args.no_tests,
            timeout: Duration::from_secs(args.timeout),
            log: &log,
        };
        let mut echo = args.verbose;
        let prefix = format!("[{}] ", kernel.label);
        let outcome = qemu::boot(&boot, |line| {
            if line.contains(qemu::INIT_MARKER) {
                echo = true;
            }
            if echo {
                println!("{prefix}{line}");
            }
        })?;
        report.accel = Some(accel);
        match outcome {
            Outcome::AccelFailed { reason } if args.accel == "auto" => {
                eprintln!("vmtest: KVM does not work here ({reason}); falling back to TCG");
                kvm_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Outcome::AccelFailed { reason } => {
                report.detail = format!("KVM failed: {reason} (try --accel tcg)");
            }
            Outcome::Finished { rc, lines } => {
                report.tests = test_lines(&lines);
                report.passed = rc == 0;
                report.detail = summary_detail(&lines, rc);
            }
            Outcome::Broken { reason, lines } => {
                report.tests = test_lines(&lines);
                report.detail = reason;
                if !args.verbose {
                    eprintln!("vmtest: last console lines of {}:", kernel.label);
                    for line in lines.iter().rev().take(30).rev() {
                        eprintln!("  {line}");
                    }
                }
            }
        }
        break;
    }
    report.secs = t.elapsed().as_secs_f64();
    Ok(report)
}

/// Removed when the run ends: the archive is 200+ MiB and rebuilt in a fraction of a second.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_interrupted() -> Result<()> {
    if qemu::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Archives left by runs that were killed outright (SIGKILL skips Drop).
fn remove_stale_initramfs(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("initramfs-").and_then(|n| n.strip_suffix(".cpio"));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

enum Wanted {
    Spec(&'static kernel::KernelSpec),
    File(PathBuf),
}

fn wanted_kernels(names: &[String]) -> Result<Vec<Wanted>> {
    let mut wanted = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if name == "all" {
            wanted.extend(kernel::MATRIX.iter().filter(|s| s.in_all).map(Wanted::Spec));
        } else if let Some(spec) = kernel::MATRIX.iter().find(|s| s.label == name) {
            wanted.push(Wanted::Spec(spec));
        } else if name.contains('/') {
            wanted.push(Wanted::File(PathBuf::from(name)));
        } else {
            let known: Vec<_> = kernel::MATRIX.iter().map(|s| s.label).collect();
            bail!("unknown kernel {name:?}: use {}, all, or a path to a bzImage", known.join(", "));
        }
    }
    if wanted.is_empty() {
        bail!("no kernel selected");
    }
    Ok(wanted)
}

/// A built live test binary and its name in the guest.
struct TestBinary {
    name: String,
    path: PathBuf,
}

/// `cargo test --no-run` for each live test target, and `cargo build` of LIVE_BINS (as TestBinary with the
/// guest path for a name); executables come from cargo's JSON.
fn build_live_tests(root: &Path) -> Result<(Vec<TestBinary>, Vec<TestBinary>)> {
    let mut tests = Vec::new();
    for (package, target) in LIVE_TESTS {
        let path = cargo_executable(root, &["test", "--no-run", "-p", package, "--test", target], target)?;
        tests.push(TestBinary { name: format!("{package}.{target}"), path });
    }
    let mut bins = Vec::new();
    for (package, bin, guest) in LIVE_BINS {
        let path = cargo_executable(root, &["build", "-p", package, "--bin", bin], bin)?;
        bins.push(TestBinary { name: (*guest).to_owned(), path });
    }
    Ok((tests, bins))
}

/// Runs cargo with `args` and returns the executable it reports for target `target`.
fn cargo_executable(root: &Path, args: &[&str], target: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .current_dir(root)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != target {
            continue;
        }
        if let Some(exe) = msg["executable"].as_str() {
            found = Some(PathBuf::from(exe));
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    found.with_context(|| format!("cargo {} reported no executable", args.join(" ")))
}

fn build_initramfs(
    tests: &[TestBinary],
    bins: &[(String, PathBuf)],
    modules: &[&Path],
    exec: Option<&str>,
    filter: Option<&str>,
    env: &[(&str, String)],
    out: &Path,
) -> Result<u64> {
    let mut fs = Initramfs::new();
    fs.file("/bin/busybox", Path::new(BUSYBOX))?;
    fs.symlink("/bin/sh", "busybox");
    for (guest, host) in GUEST_TOOLS {
        let host = Path::new(host);
        if host.is_file() {
            fs.executable(guest, host)?;
        } else {
            eprintln!("vmtest: warning: {} not found on the host, the guest will lack it", host.display());
        }
    }
    for package in GUEST_PACKAGES {
        match package_programs(package) {
            Ok(files) => {
                // At the path without the host's merged-/usr symlinks (/sbin/tc is /usr/sbin/tc): the guest's
                // /bin and /sbin are busybox's.
                for path in files {
                    let guest = match (path.parent().and_then(|d| std::fs::canonicalize(d).ok()), path.file_name()) {
                        (Some(dir), Some(name)) => dir.join(name),
                        _ => path.clone(),
                    };
                    fs.program(&guest.to_string_lossy(), &path)?;
                }
            }
            Err(e) => eprintln!("vmtest: warning: {e:#}; the guest will lack {package}'s programs"),
        }
    }
    for test in tests {
        fs.executable(&format!("/vmtest/tests/{}", test.name), &test.path)?;
    }
    for (guest, host) in bins {
        fs.executable(guest, host)?;
    }
    // Each kernel's modules at /lib/modules/RELEASE: the guest loads those of the kernel it booted.
    for dir in modules {
        let release = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            fs.file(&format!("/lib/modules/{release}/{name}"), &entry.path())?;
        }
    }
    if let Some(cmd) = exec {
        // A file, not part of /init, so the command needs no quoting.
        fs.bytes("/vmtest/exec.sh", format!("{cmd}\n").into_bytes(), 0o755);
    }
    if let Some(filter) = filter {
        fs.bytes("/vmtest/filter", filter.as_bytes().to_vec(), 0o644);
    }
    if !env.is_empty() {
        // Sourced by /init before the tests: names and values are the harness's own (numbers), no quoting needed.
        let lines: String = env.iter().map(|(k, v)| format!("export {k}={v}\n")).collect();
        fs.bytes("/vmtest/env", lines.into_bytes(), 0o644);
    }
    fs.bytes("/init", init_script().into_bytes(), 0o755);
    fs.write(out)
}

/// The programs `package` installs: every file or symlink `dpkg -L` lists in a bin or sbin directory.
fn package_programs(package: &str) -> Result<Vec<PathBuf>> {
    let out = Command::new("dpkg").args(["-L", package]).env("LC_ALL", "C").output().context("running dpkg -L")?;
    if !out.status.success() {
        bail!("{package} is not installed on the host ({})", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| {
            p.parent().and_then(|d| d.file_name()).is_some_and(|d| d == "bin" || d == "sbin")
                && p.symlink_metadata().is_ok_and(|m| !m.is_dir())
        })
        .collect())
}

/// The guest's PID 1. Prints INIT_MARKER, the LSM list, each binary's output between
/// VMTEST-BEGIN/VMTEST-END, then RESULT_MARKER, and powers off.
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpffs /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ulimit -l unlimited
echo "{init} kernel=$(uname -r)"
mods=/lib/modules/$(uname -r)
if [ -f "$mods/load-order" ]; then
    for m in $(cat "$mods/load-order"); do
        insmod "$mods/$m.ko" || echo "VMTEST-ERROR insmod $m failed"
    done
    echo "VMTEST-MODULES $(cat "$mods/load-order" | tr '\n' ' ')"
fi
lsm=$(cat /sys/kernel/security/lsm)
echo "VMTEST-LSM $lsm"
rc=0
case ",$lsm," in
*,bpf,*) ;;
*) echo "VMTEST-ERROR bpf is not in the active LSM list"; rc=1 ;;
esac
cd /tmp
[ -f /vmtest/env ] && . /vmtest/env
if [ -f /vmtest/exec.sh ]; then
    echo "VMTEST-BEGIN exec"
    sh /vmtest/exec.sh
    r=$?
    echo "VMTEST-END exec rc=$r"
    [ "$r" -eq 0 ] || rc=1
fi
for t in /vmtest/tests/*; do
    [ -e "$t" ] || continue
    name=${{t##*/}}
    echo "VMTEST-BEGIN $name"
    # One test thread: LSM programs are global, concurrent tests would see each other's. BPFGATE_VMTEST:
    # this guest boots as the tests expect (preempt=full).
    if [ -f /vmtest/filter ]; then
        BPFGATE_LIVE=1 BPFGATE_VMTEST=1 RUST_BACKTRACE=1 "$t" --test-threads=1 "$(cat /vmtest/filter)"
    else
        BPFGATE_LIVE=1 BPFGATE_VMTEST=1 RUST_BACKTRACE=1 "$t" --test-threads=1
    fi
    r=$?
    echo "VMTEST-END $name rc=$r"
    [ "$r" -eq 0 ] || rc=1
done
echo "{result}$rc"
poweroff -f
"#,
        init = qemu::INIT_MARKER,
        result = qemu::RESULT_MARKER,
    )
}

/// libtest's per-test lines and our per-binary markers, for the summary.
fn test_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            (l.starts_with("test ") && (l.ends_with(" ok") || l.ends_with(" FAILED") || l.ends_with(" ignored")))
                || l.starts_with("VMTEST-END ")
                || l.starts_with("VMTEST-ERROR ")
                || l.starts_with("BENCH-")
        })
        .cloned()
        .collect()
}

fn summary_detail(lines: &[String], rc: i32) -> String {
    let kernel = lines
        .iter()
        .find_map(|l| l.split_once("VMTEST-INIT kernel=").map(|(_, k)| k.trim().to_string()))
        .unwrap_or_default();
    let lsm =
        lines.iter().find_map(|l| l.split_once("VMTEST-LSM ").map(|(_, k)| k.trim().to_string())).unwrap_or_default();
    format!("guest rc={rc}, kernel {kernel}, lsm={lsm}")
}

fn sanitize(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        wanted_kernels(&names)
            .unwrap()
            .into_iter()
            .map(|w| match w {
                Wanted::Spec(spec) => spec.label.to_string(),
                Wanted::File(path) => path.display().to_string(),
            })
            .collect()
    }

    #[test]
    fn all_is_the_ci_matrix_6_1_6_12_and_sid() {
        assert_eq!(labels(&["all"]), ["6.12", "sid", "6.1"]);
        assert_eq!(labels(&["6.1"]), ["6.1"]);
        assert_eq!(labels(&["sid", "/boot/bzImage"]), ["sid", "/boot/bzImage"]);
        assert!(wanted_kernels(&["5.10".to_string()]).is_err());
    }
}
