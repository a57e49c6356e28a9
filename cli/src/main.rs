//! `bpfgate`: inspect BPF objects, check them against a load policy, and enforce the policy in the kernel.
//!
//! Exit codes: 0 success (for `check`: every program allowed), 1 a program was denied, 2 an error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod assets;
mod bigalloc;
mod check;
mod enforce;
mod follow;
mod inspect;
mod notify;
mod policy;
mod readbuf;
mod spread;
mod status;
mod suggest;

#[derive(Parser)]
#[command(name = "bpfgate", version, about = "Gate BPF program loads by what the programs can do")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report each program's capabilities, helpers, kfuncs and map accesses.
    Inspect(inspect::Args),
    /// Decide, per program, whether a policy allows loading it.
    Check(check::Args),
    /// Lint or compile a policy file.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Load the in-kernel gate, enforce a policy on every BPF program load, and print each decision.
    Enforce(enforce::Args),
    /// Show the gate loaded in the kernel: attached or not, hooks, policy, decisions per rule, dropped events.
    Status(status::Args),
    /// Write man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets(assets::Args),
}

/// A fresh directory for one unit test, `bpfgate-{tag}-{pid}` in the temporary directory, emptied of what an
/// earlier run left.
#[cfg(test)]
fn test_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bpfgate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[global_allocator]
static ALLOC: bigalloc::BigAlloc = bigalloc::BigAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    spread::install();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Check(args) => check::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Enforce(args) => enforce::run(args),
        Command::Status(args) => status::run(args),
        Command::GenerateAssets(args) => assets::run(args, <Cli as clap::CommandFactory>::command()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bpfgate: {err:#}");
            ExitCode::from(2)
        }
    }
}
