//! `bpfgate enforce --policy POLICY [--audit] [--json]` (issue 5): load the in-kernel gate, install the policy,
//! and print every decision (the loop is `bpfgate_gate::daemon`). SIGHUP reloads the policy (a bad one is
//! refused and the one in force stays); SIGINT and SIGTERM stop cleanly. The gate's link is bound to this
//! process: when it exits, for any reason, the kernel detaches the gate and loads are no longer decided.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use bpfgate_gate::daemon::{self, Control, Options};

#[derive(clap::Args)]
pub struct Args {
    /// The policy: YAML, or CBOR from `bpfgate policy compile`. Re-read on SIGHUP.
    #[arg(long)]
    policy: PathBuf,
    /// Report instead of deny, whatever the policy's mode says.
    #[arg(long)]
    audit: bool,
    /// Print decisions as JSON Lines instead of text.
    #[arg(long)]
    json: bool,
}

static CONTROL: Control =
    Control { reload: std::sync::atomic::AtomicBool::new(false), stop: std::sync::atomic::AtomicBool::new(false) };

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    if sig == libc::SIGHUP {
        CONTROL.reload.store(true, Ordering::SeqCst);
    } else {
        CONTROL.stop.store(true, Ordering::SeqCst);
    }
}

fn install_signal_handlers() -> anyhow::Result<()> {
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores atomics. No SA_RESTART, so a blocking
        // poll returns EINTR and the loop sees the flag at once.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("installing signal handlers");
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    install_signal_handlers()?;
    let opts = Options { policy: args.policy, audit: args.audit, json: args.json };
    let mut out = std::io::stdout().lock();
    let mut log = std::io::stderr();
    daemon::run(&opts, &CONTROL, &mut out, &mut log, &mut || {}).context("bpfgate enforce")?;
    Ok(ExitCode::SUCCESS)
}
