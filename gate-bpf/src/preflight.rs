//! The preconditions of `bpfgate enforce`, checked before anything is loaded, with messages that say what to do:
//! the kernel exposes its BTF, is built with BPF LSM, has the hook the gate decides loads at
//! (`security_bpf_prog_load`, Linux 6.9), and has BPF LSM active.
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

/// What the kernel's BTF says, as far as the preconditions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfFacts {
    /// No [`BTF_FILE`]: a kernel built without `CONFIG_DEBUG_INFO_BTF`.
    Missing,
    /// It exists but could not be read or parsed (the error).
    Unreadable(String),
    /// Whether it has [`BPF_LSM_WITNESS`] and [`PROG_LOAD_HOOK`].
    Read { bpf_lsm: bool, prog_load_hook: bool },
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
        "kernel {release} is too old: the gate decides each load at the security_bpf_prog_load LSM hook, which \
         Linux 6.9 added (the first hook that runs after the kernel copied the program's instructions; older \
         kernels only have security_bpf_prog_alloc, before the copy), and this kernel's BTF has no \
         {PROG_LOAD_HOOK}; boot Linux 6.9 or later (on Debian bookworm: linux-image-cloud-amd64 or \
         linux-image-amd64 from bookworm-backports)"
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
        BtfFacts::Read { prog_load_hook: false, .. } => {
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

/// Looks the two functions up in the BTF at `path`.
pub fn btf_facts(path: &Path) -> BtfFacts {
    use libbpf_rs::btf::{types::Func, Btf};
    if !path.exists() {
        return BtfFacts::Missing;
    }
    match Btf::from_path(path) {
        Ok(btf) => BtfFacts::Read {
            bpf_lsm: btf.type_by_name::<Func<'_>>(BPF_LSM_WITNESS).is_some(),
            prog_load_hook: btf.type_by_name::<Func<'_>>(PROG_LOAD_HOOK).is_some(),
        },
        Err(e) => BtfFacts::Unreadable(e.to_string()),
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
        BtfFacts::Read { bpf_lsm: true, prog_load_hook: true }
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
    fn a_kernel_without_the_hook_is_too_old_even_with_bpf_inactive() {
        // Debian bookworm's own 6.1: BPF LSM built in and active, no security_bpf_prog_load.
        let bookworm = BtfFacts::Read { bpf_lsm: true, prog_load_hook: false };
        for lsm in ["lockdown,capability,landlock,yama,apparmor,tomoyo,bpf", "lockdown,capability,yama"] {
            let err = check(&facts(lsm, bookworm.clone())).unwrap_err();
            assert_eq!(err, PreflightError::KernelTooOld { release: "6.1.0-50-cloud-amd64".into() });
            let msg = err.to_string();
            assert!(msg.starts_with("kernel 6.1.0-50-cloud-amd64 is too old: "), "{msg}");
            assert!(msg.contains("security_bpf_prog_load LSM hook, which Linux 6.9 added"), "{msg}");
            assert!(msg.contains("this kernel's BTF has no bpf_lsm_bpf_prog_load"), "{msg}");
            assert!(msg.contains("boot Linux 6.9 or later"), "{msg}");
        }
    }

    #[test]
    fn a_kernel_without_bpf_lsm_says_so() {
        let err = check(&facts("capability,selinux", BtfFacts::Read { bpf_lsm: false, prog_load_hook: false }));
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
