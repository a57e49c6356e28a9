//! `bpfgate enforce`'s preconditions on the kernel under test (issue 16): the kernels of the VM matrix (Debian
//! bookworm's 6.1, 6.12, sid) all pass them: 6.9+ with `security_bpf_prog_load`, 6.1 with the scan at
//! `fentry/bpf_check` (and the daemon's notice says so). A kernel too old for both cannot be booted by the harness;
//! `src/preflight.rs`'s unit tests cover that message.

use bpfgate_gate::preflight::{self, BtfFacts, KernelFacts};

use super::live;

#[test]
fn preflight_matches_the_kernel() {
    let Some(_guard) = live("preflight_matches_the_kernel") else { return };
    let facts = KernelFacts::read();
    let BtfFacts::Read { bpf_lsm, prog_load_hook, fentry_scan } = facts.btf else {
        panic!("the live kernel has BTF: {facts:?}");
    };
    assert!(bpf_lsm, "BPF LSM is active, so the kernel has it: {facts:?}");
    assert_eq!(preflight::check(&facts), Ok(()), "{facts:?}");
    // 6.9+ has the hook; 6.1 has what the scan at fentry/bpf_check needs (6.9 renamed its *_security hooks).
    assert!(prog_load_hook || fentry_scan, "{facts:?}");
    let notice = preflight::notice(&facts);
    if prog_load_hook {
        assert_eq!(notice, None, "{facts:?}");
    } else {
        let notice = notice.expect("a kernel without the hook is announced");
        assert!(notice.contains("scanned at fentry/bpf_check and decided at lsm/bpf_prog"), "{notice}");
    }
    eprintln!("preflight on {}: passes ({})", facts.release, notice_or(&facts));
}

fn notice_or(facts: &KernelFacts) -> String {
    preflight::notice(facts).unwrap_or_else(|| "security_bpf_prog_load present".into())
}
