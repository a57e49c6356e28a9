//! Project automation: `cargo xtask <command>`.

mod bench;
mod bench_scale;
mod deb;
mod dist;
mod limits;
mod vmtest;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "bpfgate project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the live-kernel test suite inside qemu VMs on BPF-LSM kernels.
    Vmtest(vmtest::Args),
    /// Build the release `bpfgate` (static-pie on glibc Linux) into target/dist/release.
    Dist(dist::Args),
    /// Build the Debian package (target/deb/bpfgate_VERSION_ARCH.deb) from the release binary and packaging/.
    Deb(deb::Args),
    /// Benchmark `bpfgate inspect` against `llvm-objdump -d` over the corpus (docs/benchmarks.md).
    Bench(bench::Args),
    /// Measure `bpfgate` on generated hostile inputs: time and peak memory of each (docs/limits.md).
    Limits(limits::Args),
    /// Measure BPF_PROG_LOAD latency with and without the gate, inside VMs (docs/benchmarks.md).
    BenchGate(vmtest::gate_bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vmtest(args) => vmtest::run(args),
        Command::Dist(args) => dist::run(args),
        Command::Deb(args) => deb::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Limits(args) => limits::run(args),
        Command::BenchGate(args) => vmtest::gate_bench::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            // Distinct from test failure (1): the harness itself could not run.
            ExitCode::from(2)
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
