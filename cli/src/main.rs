//! `bpfgate`: inspect BPF objects, check them against a load policy, and enforce the policy in the kernel.
//!
//! Exit codes: 0 success (for `check`: every program allowed), 1 a program was denied, 2 an error.

// The C `main` is ours, not std's: std's start-up installs a stack-overflow handler (it parses /proc/self/maps and
// maps a signal stack), which costs more than inspecting a small object (docs/benchmarks.md). A stack overflow
// still hits the guard page; it is reported as a plain SIGSEGV instead of a message.
#![cfg_attr(not(test), no_main)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod assets;
mod check;
mod enforce;
mod follow;
mod inspect;
mod notify;
mod policy;
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
    /// Write man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets(assets::Args),
}

#[global_allocator]
static ALLOC: alloc::Cached = alloc::Cached;

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // What std's start-up does besides that, kept: fds 0-2 open (so no file we open becomes stdout), and a
    // closed pipe an EPIPE error rather than a killing SIGPIPE.
    let mut std_fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll reads and writes the three pollfds it is given; open and signal have no preconditions.
    unsafe {
        if libc::poll(std_fds.as_mut_ptr(), 3, 0) >= 0 {
            for _closed in std_fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
                // open returns the lowest free fd: this one, as they are visited in order.
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = run();
    // ExitCode has no stable accessor for its value.
    let code = (0..=u8::MAX).find(|&n| ExitCode::from(n) == code).unwrap_or(1);
    // Unlike returning from this function, `exit` flushes std's stdout first.
    std::process::exit(code.into())
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Check(args) => check::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Enforce(args) => enforce::run(args),
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
