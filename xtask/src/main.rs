//! Project automation: `cargo xtask <command>`.

mod bench;
mod vmtest;

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
    /// Benchmark `bpfgate inspect` against `llvm-objdump -d` over the corpus (docs/benchmarks.md).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vmtest(args) => vmtest::run(args),
        Command::Bench(args) => bench::run(args),
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
