//! `bpfgate enforce`'s preconditions on the kernel under test (issue 16): on a kernel with
//! `security_bpf_prog_load` (6.9+) they pass; on an older one (`cargo xtask vmtest --kernel 6.1`, Debian bookworm's
//! own kernel) `bpfgate enforce` refuses to start, says the kernel is too old and why, and loads nothing.

use std::process::Command;

use bpfgate_gate::preflight::{self, BtfFacts, KernelFacts, PreflightError};
use libbpf_rs::libbpf_sys;

use super::live;

/// The ids of the BPF programs loaded now.
fn prog_ids() -> Vec<u32> {
    let (mut id, mut ids) = (0u32, Vec::new());
    // SAFETY: the out-pointer is valid; the loop ends when the kernel reports no further id.
    while unsafe { libbpf_sys::bpf_prog_get_next_id(id, &mut id) } == 0 {
        ids.push(id);
    }
    ids
}

#[test]
fn preflight_matches_the_kernel_and_enforce_refuses_a_kernel_too_old() {
    let Some(_guard) = live("preflight_matches_the_kernel_and_enforce_refuses_a_kernel_too_old") else { return };
    let facts = KernelFacts::read();
    let BtfFacts::Read { bpf_lsm, prog_load_hook } = facts.btf else {
        panic!("the live kernel has BTF: {facts:?}");
    };
    assert!(bpf_lsm, "BPF LSM is active, so the kernel has it: {facts:?}");
    if prog_load_hook {
        // 6.9 and later: everything the gate needs is there (the other live tests load it).
        assert_eq!(preflight::check(&facts), Ok(()), "{facts:?}");
        return;
    }
    let expected = PreflightError::KernelTooOld { release: facts.release.clone() };
    assert_eq!(preflight::check(&facts), Err(expected.clone()));
    let cli = std::path::Path::new("/usr/bin/bpfgate");
    if !cli.is_file() {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness installs {}", cli.display());
        return;
    }
    let policy = std::env::temp_dir().join(format!("bpfgate-preflight-{}.yaml", std::process::id()));
    std::fs::write(&policy, "version: 1\ndefault: allow\nrules: []\n").expect("writing the policy");
    let before = prog_ids();
    let out = Command::new(cli).args(["enforce", "--policy"]).arg(&policy).output().expect("running bpfgate enforce");
    let _ = std::fs::remove_file(&policy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("bpfgate enforce on {}: {}: {}", facts.release, out.status, stderr.trim());
    assert!(!out.status.success(), "bpfgate enforce started on a kernel without the hook: {stderr}");
    assert!(stderr.contains(&expected.to_string()), "{stderr}");
    assert!(stderr.contains("is too old") && stderr.contains("Linux 6.9"), "{stderr}");
    assert_eq!(prog_ids(), before, "bpfgate enforce loaded programs before refusing");
}
