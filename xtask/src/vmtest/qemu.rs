//! Booting one VM and collecting its serial console, with a hard deadline.
//!
//! Teardown: qemu gets PR_SET_PDEATHSIG(SIGKILL), so it dies with xtask however xtask ends
//! (error, panic, SIGKILL, SIGTERM); it shares our process group, so Ctrl-C reaches it too;
//! and `Vm`'s Drop kills and reaps it on every early return.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

pub struct Boot<'a> {
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub accel: Accel,
    pub memory: &'a str,
    pub cpus: u32,
    /// Boot with `preempt=full`: kernel code, the gate's programs included, can be preempted anywhere (Debian's
    /// kernels default to voluntary preemption, where a BPF program runs to its end).
    pub preempt_full: bool,
    pub timeout: Duration,
    /// Full console log (kernel and guest) goes here.
    pub log: &'a Path,
}

pub enum Outcome {
    /// The guest printed its result marker; `rc` is the guest suite's status.
    Finished { rc: i32, lines: Vec<String> },
    /// KVM could not run this guest (internal error, MSR abort, ...): retry under TCG.
    AccelFailed { reason: String },
    /// Deadline hit, qemu died, or the guest ended without a result marker.
    Broken { reason: String, lines: Vec<String> },
}

/// Printed by the guest's init; see `init_script` in mod.rs.
pub const INIT_MARKER: &str = "VMTEST-INIT";
pub const RESULT_MARKER: &str = "VMTEST-RESULT rc=";

/// Markers in qemu's output that mean KVM itself is failing, not the guest.
const KVM_FAILURES: &[&str] = &["KVM internal error", "kvm_buf_set_msrs", "failed to set MSR", "Could not access KVM"];

/// How long a KVM guest gets to reach init before we call KVM broken (a working KVM boots in
/// about a second; a broken one can hang forever on an emulation failure).
const KVM_INIT_DEADLINE: Duration = Duration::from_secs(60);

/// How long qemu may take to exit after the guest printed its result.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Msg {
    Line(String),
    Eof,
}

pub fn boot(b: &Boot<'_>, mut on_line: impl FnMut(&str)) -> Result<Outcome> {
    let mut cmd = Command::new(b.qemu);
    match b.accel {
        // -cpu host: the guest gets the host's features, as on a real machine.
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        // -cpu max: every feature TCG can emulate, except cmpxchg16b: with it qemu 7.2's TCG
        // corrupted guest state in about 1 boot in 4 here (double faults in SLUB's
        // cmpxchg16b fast path); without it, 96 of 96 boots passed. The kernel then uses
        // SLUB's non-cmpxchg16b path, which BPF does not care about.
        Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max,cx16=off"]),
    };
    cmd.args(["-m", b.memory, "-smp", &b.cpus.to_string()])
        .args(["-nographic", "-nodefaults", "-no-user-config", "-serial", "stdio", "-monitor", "none"])
        // Exit instead of rebooting when the guest panics or powers off.
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init{}",
            if b.preempt_full { " preempt=full" } else { "" }
        ))
        // No terminal for qemu: it must not put the user's tty in raw mode (that would swallow
        // Ctrl-C), and the guest has nothing to read.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We may have died between fork and prctl: then nobody would ever kill qemu.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", b.qemu.display()))?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let vm = Vm(child);
    for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                        if tx.send(Msg::Line(line)).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Eof);
        });
    }
    drop(tx);

    let mut log = File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut seen_init = false;
    let mut eofs = 0;
    let mut result = None;
    let mut result_at = None;
    let reason = loop {
        let deadline = if let Some(at) = result_at {
            // The verdict is in; poweroff should follow at once, but don't wait on a hang.
            at + POWEROFF_GRACE
        } else if b.accel == Accel::Kvm && !seen_init {
            KVM_INIT_DEADLINE.min(b.timeout)
        } else {
            b.timeout
        };
        let Some(left) = deadline.checked_sub(start.elapsed()) else {
            if result.is_some() {
                break String::new();
            }
            if b.accel == Accel::Kvm && !seen_init {
                return Ok(Outcome::AccelFailed {
                    reason: format!("no init after {}s under KVM", KVM_INIT_DEADLINE.as_secs()),
                });
            }
            break format!("timed out after {}s (qemu killed)", b.timeout.as_secs());
        };
        if interrupted() {
            bail!("interrupted; qemu killed");
        }
        // Wake up now and then to notice Ctrl-C.
        match rx.recv_timeout(left.min(Duration::from_millis(250))) {
            Ok(Msg::Line(line)) => {
                let _ = writeln!(log, "{line}");
                if b.accel == Accel::Kvm && !seen_init {
                    if let Some(m) = KVM_FAILURES.iter().find(|m| line.contains(*m)) {
                        return Ok(Outcome::AccelFailed { reason: format!("qemu reported \"{m}\": {line}") });
                    }
                }
                if line.contains(INIT_MARKER) {
                    seen_init = true;
                }
                if let Some(rest) = line.split_once(RESULT_MARKER).map(|(_, r)| r) {
                    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
                    result = digits.parse::<i32>().ok();
                    result_at = Some(start.elapsed());
                }
                on_line(&line);
                lines.push(line);
            }
            Ok(Msg::Eof) => {
                eofs += 1;
                if eofs == 2 {
                    break String::new();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break String::new(),
        }
    };
    drop(vm);
    match result {
        Some(rc) if reason.is_empty() => Ok(Outcome::Finished { rc, lines }),
        _ if !reason.is_empty() => Ok(Outcome::Broken { reason, lines }),
        _ if b.accel == Accel::Kvm && !seen_init => {
            Ok(Outcome::AccelFailed { reason: "qemu exited before the guest's init ran".into() })
        }
        _ => Ok(Outcome::Broken {
            reason: "the VM stopped without printing a result (kernel panic or init crash?)".into(),
            lines,
        }),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT/SIGTERM into a flag checked while a VM runs, so Drop handlers kill qemu and
/// remove temporary files instead of the process vanishing mid-run.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether KVM is worth trying at all: the device must exist and be openable.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// qemu-system-x86_64 from BPFGATE_QEMU or PATH.
pub fn find_qemu() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BPFGATE_QEMU") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("BPFGATE_QEMU={} does not exist", path.display());
        }
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("qemu-system-x86_64");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("qemu-system-x86_64 not found in PATH: install qemu-system-x86 (scripts/install-deps.sh) or set BPFGATE_QEMU")
}
