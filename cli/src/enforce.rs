//! `bpfgate enforce --policy POLICY [--audit] [--json] [--persist]` and `bpfgate enforce --stop` (issue 5):
//! load the in-kernel gate, install the policy, and print every decision (the loop is `bpfgate_gate::daemon`).
//! SIGHUP reloads the policy (a bad one is refused and the one in force stays); SIGINT and SIGTERM stop
//! cleanly. By default the gate's links are bound to this process: when it exits, for any reason, the kernel
//! detaches the gate. With `--persist` they are pinned and stay until `bpfgate enforce --stop`. Under systemd
//! (`Type=notify`) it reports readiness, reloads and stopping (`notify`); `--follow` reloads when the policy
//! file's content changes (`follow`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use bpfgate_gate::daemon::{self, Control, Options};

#[derive(clap::Args)]
pub struct Args {
    /// The policy: YAML, or CBOR from `bpfgate policy compile`. Re-read on SIGHUP.
    #[arg(long, required_unless_present = "stop")]
    policy: Option<PathBuf>,
    /// Report instead of deny, whatever the policy's mode says.
    #[arg(long)]
    audit: bool,
    /// Print decisions as JSON Lines instead of text.
    #[arg(long)]
    json: bool,
    /// Pin the gate so enforcement stays when this process exits (killed included); `--stop` removes it.
    #[arg(long, conflicts_with = "stop")]
    persist: bool,
    /// Remove a persisted gate and exit.
    #[arg(long, conflicts_with_all = ["policy", "audit", "json"])]
    stop: bool,
    /// Reload when the policy file's content changes: at once when inotify reports a change to it or to a
    /// symlink it resolves through (a Kubernetes ConfigMap volume swaps them), and checked every
    /// `--follow-interval` seconds in any case. SIGHUP still reloads too.
    #[arg(long, conflicts_with = "stop")]
    follow: bool,
    /// Seconds between two checks of `--follow`.
    #[arg(long, default_value_t = 2, requires = "follow", value_parser = clap::value_parser!(u64).range(1..=3600))]
    follow_interval: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9617; a port of 0 picks one, logged).
    #[arg(long, value_name = "ADDR", conflicts_with = "stop")]
    metrics: Option<std::net::SocketAddr>,
    /// Attach the link guard (`lsm/bpf`, run on every bpf() call) even where a link fd cannot detach the gate or
    /// replace its programs: then nobody but the daemon gets an fd to its links at all. By default it is attached
    /// only where a link fd could do either.
    #[arg(long, conflicts_with = "stop")]
    guard_links: bool,
    /// Where `--persist` pins and `--stop` unpins (a directory on bpffs).
    #[arg(long, default_value = bpfgate_gate::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
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
    if args.stop {
        daemon::stop(&args.pin_dir, &mut std::io::stderr()).context("bpfgate enforce --stop")?;
        return Ok(ExitCode::SUCCESS);
    }
    install_signal_handlers()?;
    let opts = Options {
        policy: args.policy.context("--policy is required")?,
        audit: args.audit,
        json: args.json,
        persist: args.persist.then_some(args.pin_dir),
        metrics: args.metrics,
        link_guard: if args.guard_links { bpfgate_gate::LinkGuard::Always } else { bpfgate_gate::LinkGuard::Auto },
    };
    // Under systemd (Type=notify): READY=1 once enforcing, RELOADING=1/READY=1 around reloads, STOPPING=1.
    let notifier = match crate::notify::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("bpfgate: warning: not notifying systemd: {e}");
            None
        }
    };
    let mut notify_log = std::io::stderr();
    let mut lifecycle = crate::notify::SystemdLifecycle::new(notifier, &opts.policy, &mut notify_log);
    if args.follow {
        // The baseline is taken before the daemon reads the policy (see PolicyWatch::new).
        let watch = crate::follow::PolicyWatch::new(&opts.policy);
        let follower = crate::follow::Follower::new(watch, &mut std::io::stderr());
        let interval = std::time::Duration::from_secs(args.follow_interval);
        // Detached: it ends with the process, or with the loop when CONTROL.stop is set.
        std::thread::spawn(move || follower.run(&CONTROL, interval, &mut std::io::stderr()));
    }
    let mut out = std::io::stdout().lock();
    let mut log = std::io::stderr();
    daemon::run_with(&opts, &CONTROL, &mut out, &mut log, &mut lifecycle).context("bpfgate enforce")?;
    Ok(ExitCode::SUCCESS)
}
