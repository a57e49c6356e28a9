//! Live-kernel tests: they load and attach BPF LSM programs, so they need root and a kernel
//! with BPF LSM active (`bpf` listed in /sys/kernel/security/lsm).
//!
//! Elsewhere they skip and say why, so `cargo test` passes on any host without touching its
//! kernel. `cargo xtask vmtest` runs them inside VMs with `BPFGATE_LIVE=1`, which turns every
//! skip into a failure: a harness that silently skipped would prove nothing.
//!
//! LSM programs are global to the kernel, so tests in this binary take `LIVE_LOCK` and must
//! only deny objects with names of their own.

use std::ffi::CString;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use bpfgate_test_support::insn::{exit, mov_imm};
use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

/// Writes a line to stderr directly: libtest hides `eprintln!` of passing tests, and what a live test saw (counts,
/// decisions, each tool's outcome) is its evidence.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// The gate's own live tests (issue 5).
#[path = "live/gate.rs"]
mod gate;

// The evasion suite (issue 6).
#[path = "live/evasion.rs"]
mod evasion;

// The gate's scan against the library's model of it, on random programs.
#[path = "live/differential.rs"]
mod differential;

// The binary as services run it: systemd notifications and --follow (issue 20).
#[path = "live/ops.rs"]
mod ops;
// Many minutes of loads, opens and reloads: the gate's maps and the daemon come back to their baseline (issue 19).
#[path = "live/soak.rs"]
mod soak;
// Real clients under the shipped example policies: libbpf-tools, bpftrace's tools (issue 17).
#[path = "live/clients.rs"]
mod clients;
// `bpfgate enforce`'s kernel preconditions (issue 16).
#[path = "live/preflight.rs"]
mod preflight;
// The user's instruction buffer rewritten during loads (issue 16).
#[path = "live/first_fd.rs"]
mod first_fd;
#[path = "live/race.rs"]
mod race;
// libbpf-tools: `check --gate --btf` against the gate (issue 17).
#[path = "live/tools.rs"]
mod tools;

mod smoke_skel {
    include!(concat!(env!("OUT_DIR"), "/smoke.skel.rs"));
}
use smoke_skel::SmokeSkelBuilder;

/// How a load the gate denies fails: `EPERM`. On a kernel without `security_bpf_prog_load` (6.1) the gate decides
/// after the verifier, so a program the verifier rejects fails with the verifier's errno first (the gate's event
/// still says denied; the program is refused either way): accepted there, and said so in the output.
fn gate_refused(result: Result<(), i32>, what: &str) -> bool {
    match result {
        Err(libc::EPERM) => true,
        Err(e @ (libc::EINVAL | libc::EACCES | libc::E2BIG)) if !has_prog_load_hook() => {
            let _ = writeln!(
                std::io::stderr(),
                "{what}: refused by the verifier (errno {e}) before the gate's decision: this kernel has no \
                 security_bpf_prog_load, so the gate decides after verification (EPERM only for programs the \
                 verifier accepts)"
            );
            true
        }
        _ => false,
    }
}

/// Env var set by the VM harness (and by users on a BPF-LSM host) to make skipping fatal.
const LIVE_ENV: &str = "BPFGATE_LIVE";

static LIVE_LOCK: Mutex<()> = Mutex::new(());

/// Why this process cannot run live tests, or None when it can.
fn not_live_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if list.trim().split(',').any(|lsm| lsm == "bpf") => None,
        Ok(list) => Some(format!("BPF LSM is not active (lsm list: {})", list.trim())),
        Err(err) => Some(format!("cannot read /sys/kernel/security/lsm: {err}")),
    }
}

/// Returns the lock guard when the live kernel is usable; None (after saying so) to skip.
/// Panics instead of skipping under BPFGATE_LIVE=1.
fn live(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Some(reason) = not_live_reason() {
        if std::env::var(LIVE_ENV).is_ok_and(|v| v == "1") {
            panic!("{test}: {LIVE_ENV}=1 but the live kernel is unusable: {reason}");
        }
        // Written to stderr directly: libtest captures eprintln! and hides it for passing tests.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason} (set {LIVE_ENV}=1 to make this a failure)");
        return None;
    }
    // A panicking test poisons the lock; the kernel state it guards is still fine.
    Some(LIVE_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Loads a trivial socket filter (`r0 = 0; exit`) named `name`: the operation the smoke LSM
/// program denies for one specific name.
fn load_socket_filter(name: &str) -> std::io::Result<OwnedFd> {
    let insns = [mov_imm(0, 0), exit()];
    let name = CString::new(name).map_err(std::io::Error::other)?;
    let license = c"GPL";
    // SAFETY: all pointers are valid for the call (Insn has struct bpf_insn's layout); null opts means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr().cast(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        // libbpf returns -errno.
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: fd is a fresh program fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the kernel has `security_bpf_prog_load` (6.9+); without it (6.1) the gate scans at `fentry/bpf_check`
/// and decides at `lsm/bpf_prog`, and the smoke program sits on `lsm/bpf_prog`.
fn has_prog_load_hook() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let path = std::path::Path::new(bpfgate_gate::preflight::BTF_FILE);
        matches!(
            bpfgate_gate::preflight::btf_facts(path),
            bpfgate_gate::preflight::BtfFacts::Read { prog_load_hook: true, .. }
        )
    })
}

/// The LSM hook the smoke program sits on: `bpf_prog_load`, or `bpf_prog` on a kernel without it.
fn smoke_hook() -> &'static str {
    if has_prog_load_hook() {
        "bpf_prog_load"
    } else {
        "bpf_prog"
    }
}

/// The smoke skeleton opened with only the program for this kernel's hook ([`smoke_hook`]) to load.
fn open_smoke(storage: &mut MaybeUninit<libbpf_rs::OpenObject>) -> libbpf_rs::Result<smoke_skel::OpenSmokeSkel<'_>> {
    let mut open = SmokeSkelBuilder::default().open(storage)?;
    let load_hook = has_prog_load_hook();
    open.progs.bpfgate_smoke_deny.set_autoload(load_hook);
    open.progs.bpfgate_smoke_deny_fd.set_autoload(!load_hook);
    Ok(open)
}

/// Loads (does not attach) the smoke LSM program, which sits on lsm/bpf_prog_load (or lsm/bpf_prog): a program on
/// one of the gate's own hooks. `Err(errno)` when the load fails (EPERM when refused; other failures are EIO).
fn load_smoke() -> Result<(), i32> {
    let mut storage = MaybeUninit::uninit();
    let open = open_smoke(&mut storage).map_err(|_| libc::EIO)?;
    let loaded = match open.load() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::PermissionDenied => Err(libc::EPERM),
        Err(_) => Err(libc::EIO),
    };
    loaded
}

#[test]
fn smoke_lsm_denies_named_prog_load_then_allows_after_detach() {
    let Some(_guard) = live("smoke_lsm_denies_named_prog_load_then_allows_after_detach") else {
        return;
    };

    // Baseline: without the LSM program the load works, so a later EPERM is the hook's doing.
    if let Err(err) = load_socket_filter("bpfgate_smoke") {
        panic!("baseline load of bpfgate_smoke failed before attaching anything: {err}");
    }

    let mut storage = MaybeUninit::uninit();
    let open = open_smoke(&mut storage).unwrap_or_else(|err| panic!("opening the smoke skeleton: {err:#}"));
    let skel = open.load().unwrap_or_else(|err| panic!("loading the smoke LSM program: {err:#}"));
    let prog = if has_prog_load_hook() { &skel.progs.bpfgate_smoke_deny } else { &skel.progs.bpfgate_smoke_deny_fd };
    let link = prog.attach_lsm().unwrap_or_else(|err| panic!("attaching lsm/{}: {err:#}", smoke_hook()));

    match load_socket_filter("bpfgate_smoke") {
        Ok(_) => panic!("load of bpfgate_smoke succeeded while the smoke LSM was attached"),
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc::EPERM), "expected EPERM from the LSM, got {err}"),
    }
    let denied = skel.maps.bss_data.as_deref().map(|bss| bss.denied);
    assert_eq!(denied, Some(1), "the LSM program should have counted one denial");
    // The hook is specific: other names still load.
    if let Err(err) = load_socket_filter("bpfgate_other") {
        panic!("unrelated load failed while the smoke LSM was attached: {err}");
    }

    drop(link);
    if let Err(err) = load_socket_filter("bpfgate_smoke") {
        panic!("load of bpfgate_smoke still failed after detaching the LSM: {err}");
    }
    eprintln!("smoke: lsm/{} denied with EPERM while attached, allowed after detach", smoke_hook());
}
