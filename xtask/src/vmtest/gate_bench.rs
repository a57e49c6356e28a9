//! `cargo xtask bench-gate`: the gate's load-latency benchmark (`gate-bpf/src/bin/gate-load-bench.rs`), run
//! inside the same VMs as the live tests, because it attaches the gate to the kernel it runs on.
//!
//! The benchmark binary goes into the guest in place of the live tests and runs as the guest's `exec`
//! command; its exit status (0 target met, 1 missed, 2 could not run) becomes the VM's verdict, and its
//! `BENCH-` lines appear in the summary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

const BIN: &str = "gate-load-bench";
const GUEST_PATH: &str = "/vmtest/bin/gate-load-bench";

#[derive(clap::Args)]
pub struct Args {
    /// Kernels: 6.1, 6.12, sid, all (the three), or a path to a bzImage. Repeatable or comma-separated.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    kernel: Vec<String>,
    /// Program sizes in instructions.
    #[arg(long, default_value = "100,4000,100000")]
    sizes: String,
    /// Rounds; each measures every size without and with the gate.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Adjacent with/without pairs per size and round.
    #[arg(long, default_value_t = 3)]
    per_round: u32,
    /// Program type of the generated programs.
    #[arg(long = "type", default_value = "socket_filter", value_parser = ["socket_filter", "kprobe"])]
    prog_type: String,
    /// The ratio (with / without the gate) the target size must stay under (default 1.05), or with --syscalls
    /// every syscall (default 1.02).
    #[arg(long)]
    target: Option<f64>,
    /// The size the target applies to.
    #[arg(long, default_value_t = 4000)]
    target_size: u32,
    /// Map blocks look values up and write through the pointer (inlined and patched in by the verifier)
    /// instead of calling bpf_map_update_elem.
    #[arg(long)]
    map_lookups: bool,
    /// Measure the hot path instead of loads: map lookup/update/delete/get_next_key and fd-by-id syscalls per
    /// call with and without the gate.
    #[arg(long)]
    syscalls: bool,
    /// Syscalls per timed batch (with --syscalls).
    #[arg(long, default_value_t = 2000)]
    calls: u32,
    /// Skip the pass that reads the gate's own run time from BPF stats.
    #[arg(long)]
    no_stats: bool,
    /// What the guest's clock counts. icount: guest instructions (qemu -icount shift=0: 1 ns per instruction,
    /// TCG only), so timings do not depend on what else runs on the host. wall: real time, as the live tests
    /// run (KVM when it works).
    #[arg(long, default_value = "icount", value_parser = ["icount", "wall"])]
    clock: String,
    /// Per-VM time limit in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Accelerator with --clock wall: auto tries KVM and falls back to TCG when KVM fails.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Guest memory (qemu -m).
    #[arg(long, default_value = "2G")]
    memory: String,
    /// Build the benchmark with the release profile (only the timed syscall matters, so dev is the default:
    /// it shares its build with the live tests).
    #[arg(long)]
    release: bool,
    /// Also echo the kernel's boot messages.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(args: Args) -> Result<bool> {
    let root = crate::workspace_root();
    // The guest shell reads this line as is: refuse anything that is not a plain list of numbers.
    if !args.sizes.chars().all(|c| c.is_ascii_digit() || c == ',') {
        bail!("--sizes must be a comma-separated list of numbers, not {:?}", args.sizes);
    }
    let binary = build(&root, args.release)?;
    let icount = args.clock == "icount";
    if icount && args.accel == "kvm" {
        bail!("--clock icount needs TCG; use --clock wall with --accel kvm");
    }
    // Removed when the run ends.
    let _wrapper = if icount { Some(icount_qemu()?) } else { None };
    let mut cmd = if args.syscalls {
        format!("BPFGATE_LIVE=1 {GUEST_PATH} --syscalls --rounds {} --calls {}", args.rounds, args.calls)
    } else {
        format!(
            "BPFGATE_LIVE=1 {GUEST_PATH} --sizes {} --rounds {} --per-round {} --type {} --target-size {}",
            args.sizes, args.rounds, args.per_round, args.prog_type, args.target_size
        )
    };
    if let Some(target) = args.target {
        cmd.push_str(&format!(" --target {target}"));
    }
    if args.no_stats {
        cmd.push_str(" --no-stats");
    }
    if args.map_lookups {
        cmd.push_str(" --map-lookups");
    }
    let vm = super::Args {
        kernel: args.kernel,
        timeout: args.timeout,
        accel: if icount { "tcg".into() } else { args.accel },
        memory: args.memory,
        // One vCPU, as for the live tests: TCG runs each vCPU on its own host thread, and the cores are shared.
        cpus: 1,
        // One kernel at a time: a benchmark compares runs, and a second guest would share the cores.
        parallel: 1,
        exec: Some(cmd),
        filter: None,
        verbose: args.verbose,
        guest_files: Vec::new(),
        soak_secs: None,
        diff_seed: None,
        diff_programs: None,
        guest_bins: vec![(GUEST_PATH.to_owned(), binary)],
        no_tests: true,
    };
    let met = super::run(vm)?;
    println!(
        "\nbench-gate: {} (BENCH-TARGET lines above; a FAIL without one means the benchmark itself failed)",
        if met { "target met on every kernel" } else { "target missed or the benchmark failed" }
    );
    Ok(met)
}

/// A wrapper around qemu that adds `-icount`, handed to the VM harness through `BPFGATE_QEMU` (the harness
/// reads it when it looks for qemu; its own arguments stay as they are for the live tests).
fn icount_qemu() -> Result<super::TempFile> {
    use std::os::unix::fs::PermissionsExt;
    let qemu = super::qemu::find_qemu()?;
    let qemu = qemu.to_str().filter(|q| !q.contains('\'')).context("qemu's path cannot be quoted for sh")?;
    let path = std::env::temp_dir().join(format!("bpfgate-qemu-icount-{}.sh", std::process::id()));
    let script = format!("#!/bin/sh\nexec '{qemu}' \"$@\" -icount shift=0,sleep=off\n");
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    let wrapper = super::TempFile(path);
    std::fs::set_permissions(&wrapper.0, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", wrapper.0.display()))?;
    // Single-threaded here: nothing reads the environment concurrently.
    std::env::set_var("BPFGATE_QEMU", &wrapper.0);
    Ok(wrapper)
}

/// `cargo build` of the benchmark binary; its path comes from cargo's JSON messages.
fn build(root: &Path, release: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        "bpfgate-gate",
        "--bin",
        BIN,
    ]);
    if release {
        cmd.arg("--release");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("running cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == BIN {
            if let Some(exe) = msg["executable"].as_str() {
                found = Some(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("building {BIN} failed ({status})");
    }
    found.with_context(|| format!("cargo reported no executable for {BIN}"))
}
