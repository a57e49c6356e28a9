//! packaging/: the systemd unit and the packaged policy, checked without building the package (`cargo xtask
//! deb --check` builds it and runs lintian; scripts/test.sh does both).

use std::path::Path;
use std::process::Command;

use crate::support::{bpfgate, repo};

fn unit() -> String {
    std::fs::read_to_string(repo().join("packaging/bpfgate.service")).expect("packaging/bpfgate.service")
}

/// The values of `key=` in the unit, in order.
fn settings<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

#[test]
fn the_packaged_policy_parses_lints_clean_and_audits() {
    let text = std::fs::read_to_string(repo().join("packaging/policy.yaml")).unwrap();
    let policy = bpfgate::policy::Policy::parse("packaging/policy.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(policy.lint().is_empty(), "{:?}", policy.lint());
    assert!(text.contains("\nmode: audit\n"), "the packaged policy starts in audit mode");
    let out = bpfgate(&["policy", "lint", "packaging/policy.yaml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_unit_runs_enforce_with_real_options_and_the_conffile() {
    let unit = unit();
    assert_eq!(settings(&unit, "Type"), ["notify"]);
    assert_eq!(settings(&unit, "Restart"), ["on-failure"]);
    assert_eq!(settings(&unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    let exec = settings(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(&words[..4], ["/usr/bin/bpfgate", "enforce", "--policy", "/etc/bpfgate/policy.yaml"]);
    let help = String::from_utf8(bpfgate(&["enforce", "--help"]).stdout).unwrap();
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "`{flag}` is not an enforce option"
        );
    }
    // The pins of --persist (BPFGATE_OPTS) are the only writes: bpffs must stay writable under ProtectSystem.
    assert_eq!(settings(&unit, "ProtectSystem"), ["strict"]);
    assert_eq!(settings(&unit, "ReadWritePaths"), ["/sys/fs/bpf"]);
    assert_eq!(settings(&unit, "NoNewPrivileges"), ["yes"]);
}

/// `systemd-analyze verify` of the unit as installed, with the debug `bpfgate` standing in for the release one
/// (scripts/install-deps.sh installs systemd; the test says SKIPPED without it).
#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no systemd-analyze (scripts/install-deps.sh installs systemd)");
        return;
    }
    let root = std::env::temp_dir().join(format!("bpfgate-unit-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let place = |rel: &str, from: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        let to = root.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    place("lib/systemd/system/bpfgate.service", &repo().join("packaging/bpfgate.service"), 0o644);
    place("usr/bin/bpfgate", Path::new(env!("CARGO_BIN_EXE_bpfgate")), 0o755);
    // ExecReload's /bin/kill (procps, a dependency of the package): only its presence is checked.
    let kill = root.join("bin/kill");
    std::fs::create_dir_all(kill.parent().unwrap()).unwrap();
    std::fs::write(&kill, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&kill, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(root.join("lib/systemd/system/bpfgate.service"))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&root).unwrap();
    // Misspelled or unknown settings are warnings only, so any output is a failure.
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}
