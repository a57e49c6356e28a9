//! The preconditions of `bpfgate enforce`, checked before anything is loaded, with messages that say what to do:
//! the kernel exposes its BTF, is built with BPF LSM, has a place the gate can scan the kernel's copy of each
//! program at (the `security_bpf_prog_load` hook, Linux 6.9; before it, an fentry program on `bpf_check` with
//! `bpf_get_func_arg` and `bpf_loop`, Linux 5.17), and has BPF LSM active.
//!
//! [`check`] is a pure function of [`KernelFacts`]; [`KernelFacts::read`] gathers them from `/proc` and `/sys`;
//! [`preflight`] does both.

use std::path::Path;

/// The active LSMs, comma-separated, in the order the kernel calls them.
pub const LSM_FILE: &str = "/sys/kernel/security/lsm";
/// The running kernel's BTF.
pub const BTF_FILE: &str = "/sys/kernel/btf/vmlinux";
/// A BTF function every kernel built with `CONFIG_BPF_LSM=y` has (the attach point of `lsm/bpf`, Linux 5.7).
pub const BPF_LSM_WITNESS: &str = "bpf_lsm_bpf";
/// The attach point of `lsm/bpf_prog_load`, the hook the gate decides loads at (Linux 6.9).
pub const PROG_LOAD_HOOK: &str = "bpf_lsm_bpf_prog_load";
/// What the gate uses on a kernel without [`PROG_LOAD_HOOK`] (6.1): the function it scans at (`fentry/bpf_check`)
/// and the LSM hooks that stand for `bpf_prog_free` and `bpf_map_create` there.
pub const FENTRY_SCAN_FUNCS: [&str; 3] =
    ["bpf_check", "bpf_lsm_bpf_prog_free_security", "bpf_lsm_bpf_map_alloc_security"];
/// The helpers the fentry scan needs (`enum bpf_func_id`): the `bpf_check` argument, and the scan's loops (5.17).
pub const FENTRY_SCAN_HELPERS: [&str; 2] = ["BPF_FUNC_get_func_arg", "BPF_FUNC_loop"];

/// What the kernel's BTF says, as far as the preconditions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfFacts {
    /// No [`BTF_FILE`]: a kernel built without `CONFIG_DEBUG_INFO_BTF`.
    Missing,
    /// It exists but could not be read or parsed (the error).
    Unreadable(String),
    /// Whether it has [`BPF_LSM_WITNESS`] and [`PROG_LOAD_HOOK`], and what the scan at `fentry/bpf_check` needs
    /// ([`FENTRY_SCAN_FUNCS`], [`FENTRY_SCAN_HELPERS`]).
    Read { bpf_lsm: bool, prog_load_hook: bool, fentry_scan: bool },
}

/// The facts [`check`] judges, gathered by [`KernelFacts::read`] (or written by hand in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// `uname -r`, for messages.
    pub release: String,
    /// The contents of [`LSM_FILE`], or why it could not be read.
    pub lsm: Result<String, String>,
    /// The kernel command line (`/proc/cmdline`); empty when unreadable.
    pub cmdline: String,
    pub btf: BtfFacts,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "the kernel exposes no BTF ({BTF_FILE} is missing): the gate reads the kernel's types from it; boot a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (Debian's, Ubuntu's and Fedora's are)"
    )]
    NoBtf,
    #[error("cannot read the kernel's BTF ({BTF_FILE}): {0}")]
    BtfUnreadable(String),
    #[error(
        "kernel {release} is built without BPF LSM (its BTF has no {BPF_LSM_WITNESS}): the gate is a set of BPF LSM \
         programs; boot a kernel built with CONFIG_BPF_LSM=y"
    )]
    NoBpfLsm { release: String },
    #[error(
        "kernel {release} is too old: the gate scans each program in the kernel's own copy of its instructions, \
         at the security_bpf_prog_load LSM hook (Linux 6.9) or, before it, with an fentry program on bpf_check \
         that needs the bpf_get_func_arg and bpf_loop helpers (Linux 5.17; security_bpf_prog_alloc runs before \
         the copy and security_bpf sees only the user's buffer, which another thread can rewrite); this kernel's \
         BTF has neither {PROG_LOAD_HOOK} nor those; the gate is tested on Debian bookworm's 6.1, 6.12 \
         (bookworm-backports) and sid's kernel: boot one of those or later"
    )]
    KernelTooOld { release: String },
    #[error("cannot read the active LSM list ({LSM_FILE}): {0}; is securityfs mounted (mount -t securityfs securityfs /sys/kernel/security)?")]
    LsmUnreadable(String),
    #[error("BPF LSM is not active (active LSMs: {active}): {fix}, then reboot")]
    BpfLsmInactive {
        /// The active list, as the kernel reports it.
        active: String,
        /// What to do: add (or replace) `lsm=` on the kernel command line ([`lsm_fix`]).
        fix: String,
    },
}

/// The `lsm=` value that activates BPF LSM: the active list, then `bpf`, e.g. `lockdown,capability,landlock,yama,
/// apparmor,bpf` for Debian's default `lockdown,capability,landlock,yama,apparmor`.
pub fn lsm_param(active: &str) -> String {
    let mut lsms: Vec<&str> = active.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    if !lsms.contains(&"bpf") {
        lsms.push("bpf");
    }
    lsms.join(",")
}

/// The `lsm=` parameter on a kernel command line, if any (the last one wins, as in the kernel).
fn cmdline_lsm(cmdline: &str) -> Option<&str> {
    cmdline.split_whitespace().filter_map(|w| w.strip_prefix("lsm=")).next_back()
}

/// What to do to activate BPF LSM, given the active list and the kernel command line.
pub fn lsm_fix(active: &str, cmdline: &str) -> String {
    let wanted = lsm_param(active);
    let how = "the kernel command line (on Debian: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)";
    match cmdline_lsm(cmdline) {
        Some(old) => format!("replace lsm={old} with lsm={wanted} on {how}"),
        None => format!("add lsm={wanted} to {how}"),
    }
}

/// Whether `bpf` is among the active LSMs (the contents of [`LSM_FILE`]).
pub fn bpf_lsm_active(lsm: &str) -> bool {
    lsm.split(',').any(|l| l.trim() == "bpf")
}

/// Judges the preconditions, most fundamental first: a kernel that is too old is reported as such even when BPF
/// LSM is also inactive, because activating it would not help.
pub fn check(facts: &KernelFacts) -> Result<(), PreflightError> {
    let release = || facts.release.clone();
    match &facts.btf {
        BtfFacts::Missing => return Err(PreflightError::NoBtf),
        BtfFacts::Unreadable(e) => return Err(PreflightError::BtfUnreadable(e.clone())),
        BtfFacts::Read { bpf_lsm: false, .. } => return Err(PreflightError::NoBpfLsm { release: release() }),
        BtfFacts::Read { prog_load_hook: false, fentry_scan: false, .. } => {
            return Err(PreflightError::KernelTooOld { release: release() })
        }
        BtfFacts::Read { .. } => {}
    }
    let lsm = facts.lsm.as_deref().map_err(|e| PreflightError::LsmUnreadable(e.clone()))?;
    if !bpf_lsm_active(lsm) {
        let active = lsm.trim().to_string();
        let fix = lsm_fix(&active, &facts.cmdline);
        return Err(PreflightError::BpfLsmInactive { active, fix });
    }
    Ok(())
}

impl KernelFacts {
    /// Reads the running kernel's facts. Never fails: what cannot be read is recorded as such.
    pub fn read() -> KernelFacts {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
        KernelFacts {
            release: read("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "(unknown)".into()),
            lsm: read(LSM_FILE).map_err(|e| e.to_string()),
            cmdline: read("/proc/cmdline").unwrap_or_default(),
            btf: btf_facts(Path::new(BTF_FILE)),
        }
    }
}

/// Looks the functions and helpers up in the BTF at `path`.
pub fn btf_facts(path: &Path) -> BtfFacts {
    use libbpf_rs::btf::{
        types::{Enum, Func},
        Btf,
    };
    if !path.exists() {
        return BtfFacts::Missing;
    }
    match Btf::from_path(path) {
        Ok(btf) => {
            let func = |name: &str| btf.type_by_name::<Func<'_>>(name).is_some();
            let helpers = btf
                .type_by_name::<Enum<'_>>("bpf_func_id")
                .is_some_and(|e| FENTRY_SCAN_HELPERS.iter().all(|h| e.iter().any(|m| m.name.is_some_and(|n| n == *h))));
            BtfFacts::Read {
                bpf_lsm: func(BPF_LSM_WITNESS),
                prog_load_hook: func(PROG_LOAD_HOOK),
                fentry_scan: helpers && FENTRY_SCAN_FUNCS.iter().all(|f| func(f)),
            }
        }
        Err(e) => BtfFacts::Unreadable(e.to_string()),
    }
}

/// Whether the kernel command line asks for full preemption (`preempt=full`; the last `preempt=` wins).
pub fn full_preemption(cmdline: &str) -> bool {
    cmdline.split_whitespace().filter_map(|w| w.strip_prefix("preempt=")).next_back() == Some("full")
}

/// What the daemon says at start about how this kernel is gated, when it differs from 6.9+: `None` there.
pub fn notice(facts: &KernelFacts) -> Option<String> {
    match facts.btf {
        BtfFacts::Read { prog_load_hook: false, fentry_scan: true, .. } => {
            let mut notice = format!(
                "kernel {} has no security_bpf_prog_load (Linux 6.9): each load is scanned at fentry/bpf_check and \
                 decided at lsm/bpf_prog, after the verifier (a denied program is verified, then refused with \
                 EPERM; one the verifier rejects fails with the verifier's error); no BPF tokens on this kernel, \
                 nothing to gate there",
                facts.release
            );
            if full_preemption(&facts.cmdline) {
                notice.push_str(
                    "; warning: booted with preempt=full, under which this kernel skips a BPF LSM or fentry program \
                     run on a CPU where the same program is preempted (recursion protection, which 6.2 dropped for \
                     LSM programs): a load whose scan is skipped is denied (fail closed), but a program fd or \
                     map open whose decision is skipped is not decided (program and map isolation, \
                     self-protection); boot with Debian's default voluntary preemption (no preempt=full)",
                );
            }
            Some(notice)
        }
        _ => None,
    }
}

/// Checks the running kernel: [`check`] of [`KernelFacts::read`].
pub fn preflight() -> Result<(), PreflightError> {
    check(&KernelFacts::read())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_612: &str = "lockdown,capability,landlock,yama,apparmor,tomoyo,bpf,ima,evm";

    fn facts(lsm: &str, btf: BtfFacts) -> KernelFacts {
        KernelFacts {
            release: "6.1.0-50-cloud-amd64".into(),
            lsm: Ok(lsm.into()),
            cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet".into(),
            btf,
        }
    }

    fn good_btf() -> BtfFacts {
        BtfFacts::Read { bpf_lsm: true, prog_load_hook: true, fentry_scan: true }
    }

    /// Debian bookworm's own 6.1: BPF LSM built in and active, no security_bpf_prog_load, fentry and the helpers.
    fn bookworm_btf() -> BtfFacts {
        BtfFacts::Read { bpf_lsm: true, prog_load_hook: false, fentry_scan: true }
    }

    #[test]
    fn a_kernel_with_the_hook_btf_and_bpf_active_passes() {
        assert_eq!(check(&facts(DEBIAN_612, good_btf())), Ok(()));
        assert_eq!(check(&facts("capability,bpf\n", good_btf())), Ok(()));
    }

    #[test]
    fn inactive_bpf_lsm_says_which_lsm_value_to_add() {
        let err = check(&facts("lockdown,capability,landlock,yama,apparmor", good_btf())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BPF LSM is not active (active LSMs: lockdown,capability,landlock,yama,apparmor): add \
             lsm=lockdown,capability,landlock,yama,apparmor,bpf to the kernel command line (on Debian: \
             GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub), then reboot"
        );
    }

    #[test]
    fn inactive_bpf_lsm_with_an_lsm_parameter_says_what_to_replace() {
        let mut f = facts("capability,selinux", good_btf());
        f.cmdline = "root=/dev/vda lsm=selinux quiet lsm=capability,selinux".into();
        let err = check(&f).unwrap_err();
        assert_eq!(
            err,
            PreflightError::BpfLsmInactive {
                active: "capability,selinux".into(),
                fix: "replace lsm=capability,selinux with lsm=capability,selinux,bpf on the kernel command line (on \
                      Debian: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)"
                    .into(),
            }
        );
    }

    #[test]
    fn lsm_param_appends_bpf_once_and_drops_blanks() {
        assert_eq!(lsm_param("lockdown,capability,yama"), "lockdown,capability,yama,bpf");
        assert_eq!(lsm_param(" capability , yama ,\n"), "capability,yama,bpf");
        assert_eq!(lsm_param(""), "bpf");
        assert_eq!(lsm_param("capability,bpf,yama"), "capability,bpf,yama");
        // "bpf" as part of another name is not bpf.
        assert!(!bpf_lsm_active("capability,notbpf"));
        assert!(bpf_lsm_active("capability, bpf"));
    }

    #[test]
    fn unreadable_lsm_list_says_to_mount_securityfs() {
        let mut f = facts("", good_btf());
        f.lsm = Err("No such file or directory (os error 2)".into());
        assert_eq!(
            check(&f).unwrap_err().to_string(),
            "cannot read the active LSM list (/sys/kernel/security/lsm): No such file or directory (os error 2); is \
             securityfs mounted (mount -t securityfs securityfs /sys/kernel/security)?"
        );
    }

    #[test]
    fn bookworm_61_passes_with_the_fentry_scan_and_says_so() {
        let f = facts("lockdown,capability,landlock,yama,apparmor,tomoyo,bpf", bookworm_btf());
        assert_eq!(check(&f), Ok(()));
        let notice = notice(&f).expect("6.1 is announced");
        assert!(notice.starts_with("kernel 6.1.0-50-cloud-amd64 has no security_bpf_prog_load"), "{notice}");
        assert!(notice.contains("scanned at fentry/bpf_check and decided at lsm/bpf_prog"), "{notice}");
        assert!(!notice.contains("preempt=full"), "{notice}");
        assert_eq!(super::notice(&facts(DEBIAN_612, good_btf())), None);
        let mut full = facts("lockdown,capability,bpf", bookworm_btf());
        full.cmdline = "root=/dev/vda preempt=full quiet".into();
        let notice = super::notice(&full).expect("6.1 is announced");
        assert!(notice.contains("warning: booted with preempt=full"), "{notice}");
        full.cmdline = "preempt=full preempt=voluntary".into();
        assert!(!super::notice(&full).expect("6.1").contains("warning"));
        // BPF LSM inactive on 6.1 is that, not "too old".
        let err = check(&facts("lockdown,capability,yama", bookworm_btf())).unwrap_err();
        assert!(matches!(err, PreflightError::BpfLsmInactive { .. }), "{err}");
    }

    #[test]
    fn a_kernel_without_the_hook_or_the_fentry_scan_is_too_old_even_with_bpf_inactive() {
        // A 5.15 kernel: BPF LSM, no security_bpf_prog_load, no bpf_get_func_arg.
        let old = BtfFacts::Read { bpf_lsm: true, prog_load_hook: false, fentry_scan: false };
        for lsm in ["lockdown,capability,landlock,yama,apparmor,tomoyo,bpf", "lockdown,capability,yama"] {
            let mut f = facts(lsm, old.clone());
            f.release = "5.15.0-91-generic".into();
            let err = check(&f).unwrap_err();
            assert_eq!(err, PreflightError::KernelTooOld { release: "5.15.0-91-generic".into() });
            let msg = err.to_string();
            assert!(msg.starts_with("kernel 5.15.0-91-generic is too old: "), "{msg}");
            assert!(msg.contains("security_bpf_prog_load LSM hook (Linux 6.9)"), "{msg}");
            assert!(msg.contains("bpf_get_func_arg and bpf_loop helpers (Linux 5.17"), "{msg}");
            assert!(msg.contains("tested on Debian bookworm's 6.1"), "{msg}");
            assert_eq!(notice(&f), None);
        }
    }

    #[test]
    fn a_kernel_without_bpf_lsm_says_so() {
        let no_lsm = BtfFacts::Read { bpf_lsm: false, prog_load_hook: false, fentry_scan: true };
        let err = check(&facts("capability,selinux", no_lsm));
        assert_eq!(
            err.unwrap_err().to_string(),
            "kernel 6.1.0-50-cloud-amd64 is built without BPF LSM (its BTF has no bpf_lsm_bpf): the gate is a set of \
             BPF LSM programs; boot a kernel built with CONFIG_BPF_LSM=y"
        );
    }

    #[test]
    fn missing_or_unreadable_btf_comes_first() {
        let err = check(&facts("capability", BtfFacts::Missing)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): the gate reads the kernel's types from \
             it; boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's, Ubuntu's and Fedora's are)"
        );
        let err = check(&facts("capability", BtfFacts::Unreadable("Permission denied".into()))).unwrap_err();
        assert_eq!(err.to_string(), "cannot read the kernel's BTF (/sys/kernel/btf/vmlinux): Permission denied");
    }

    #[test]
    fn btf_facts_of_a_missing_or_bogus_file() {
        assert_eq!(btf_facts(Path::new("/nonexistent/vmlinux")), BtfFacts::Missing);
        let bogus = std::env::temp_dir().join(format!("bpfgate-preflight-{}.btf", std::process::id()));
        std::fs::write(&bogus, b"not BTF").unwrap();
        let facts = btf_facts(&bogus);
        let _ = std::fs::remove_file(&bogus);
        assert!(matches!(facts, BtfFacts::Unreadable(_)), "{facts:?}");
        // This host's own BTF, when it has one, parses (what it holds depends on the host's kernel).
        if Path::new(BTF_FILE).exists() {
            let facts = btf_facts(Path::new(BTF_FILE));
            assert!(matches!(facts, BtfFacts::Read { .. }), "{facts:?}");
        }
    }
}
